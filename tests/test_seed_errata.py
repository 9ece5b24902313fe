"""Every worked example of shared/seed/ERRATA.md, exact, and the seed's pseudo-code.

Concurrency here is the seed's own arithmetic on engine terms, floor((budget - weights) /
kv_per_request); tests/test_solve.py checks the solver gives the same answers.
"""

from __future__ import annotations

import sympy

from engine.architecture import count_parameters
from engine.families import spec_from_config
from engine.registry import find
from formulas import activations
from formulas import symbols as S

from engine import api


def estimate(*args, **knobs):
    """``engine.api.estimate`` under ``--profile megatron``, which this file tests (training
    defaults to ``transformers``)."""
    return api.estimate(*args, **{"profile": "megatron", **knobs})


GB, GiB = 10**9, 2**30


def _terms(model, **knobs):
    return estimate(model, **knobs).evaluation.terms


def _concurrency(model, budget, **knobs):
    terms = _terms(model, batch_size=1, seq_len=2048, **knobs)
    return (budget - terms["weights"]) // terms["kv_cache"]


def test_qwen3_0_6b():
    terms = _terms("qwen3-0.6b", batch_size=1, seq_len=2048)
    assert count_parameters(spec_from_config(find("qwen3-0.6b").config))["parameters"] == 596_049_920
    assert terms["weights"] == 1_192_099_840
    assert _terms("qwen3-0.6b", batch_size=1, seq_len=1)["kv_cache"] == 114_688 == 112 * 2**10
    assert terms["kv_cache"] == 234_881_024 == 224 * 2**20
    assert terms["weights"] + terms["kv_cache"] == 1_426_980_864


def test_qwen3_0_6b_on_an_rtx_4090():
    assert _concurrency("qwen3-0.6b", 24 * GB) == 97
    assert _concurrency("qwen3-0.6b", 24 * GiB) == 104


def test_deepseek_v3():
    spec = spec_from_config(find("deepseek-v3").config)
    counts = count_parameters(spec)
    assert counts["parameters"] + counts["buffers"] == 671_026_419_200
    # the checkpoint stores fp8 (its quantization_config); the seed article counts bf16
    assert _terms("deepseek-v3", dtype="bfloat16", weight_quant="none")["weights"] == 2 * 671_026_419_200
    assert _terms("deepseek-v3", weight_quant="w8a8")["weights"] == 671_026_419_200
    assert _terms("deepseek-v3", seq_len=1)["kv_cache"] == 70_272
    assert _terms("deepseek-v3", seq_len=2048)["kv_cache"] == 143_917_056


def test_deepseek_v3_w8a8_on_16_a100s():
    assert _concurrency("deepseek-v3", 16 * 80 * GB, weight_quant="w8a8") == 4_231
    assert _concurrency("deepseek-v3", 16 * 80 * GiB, weight_quant="w8a8") == 4_887


def test_llama_13b():
    assert _terms("llama-2-13b", seq_len=1)["kv_cache"] == 819_200
    assert _terms("llama-2-13b", seq_len=2048)["kv_cache"] == 1_677_721_600
    assert _concurrency("llama-2-13b", 8 * 32 * GB) == 137


def test_seed_pseudo_code_comes_out_with_the_seed_knobs():
    """2 B activations, 4h / 3h MLP widths: the article's memory_intermediate_* lines."""
    b, s, h, a = S.batch_size, S.seq_len, S.hidden_size, S.num_attention_heads
    seed = {S.activation_bytes: 2}
    attention = activations.attention_peak(eager=True).xreplace(seed)
    assert sympy.expand(attention - (2 * b * a * s**2 + 4 * b * s * h)) == 0
    traditional = activations.mlp_peak(gated=False).xreplace({**seed, S.intermediate_size: 4 * h})
    assert sympy.expand(traditional - 2 * b * s * 4 * h) == 0
    swiglu = activations.mlp_peak(gated=True).xreplace({**seed, S.intermediate_size: 3 * h})
    assert sympy.expand(swiglu - 2 * b * s * 3 * h * 2) == 0


def test_optimizer_state_does_not_grow_with_batch():
    """The seed says it does; it depends on the parameters only."""
    small = _terms("qwen3-0.6b", mode="training", batch_size=1, seq_len=512)
    large = _terms("qwen3-0.6b", mode="training", batch_size=8, seq_len=512)
    assert small["optimizer"] == large["optimizer"] == 8 * 596_049_920
    assert large["activations"] > small["activations"]
