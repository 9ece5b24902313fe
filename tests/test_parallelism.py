"""Per-GPU memory under TP/PP/DP(ZeRO)/EP/CP, offload, LoRA and QLoRA."""

from __future__ import annotations

from fractions import Fraction

import pytest
import sympy
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.profiles import build
from engine.families import spec_from_config
from engine.registry import find
from engine.scenario import Scenario
from formulas import parallelism as par
from formulas import symbols as S
from formulas.optimizer import PRECISION_CONVENTIONS

from engine import api


def estimate(*args, **knobs):
    """``engine.api.estimate`` under ``--profile megatron``, which this file tests (training
    defaults to ``transformers``)."""
    return api.estimate(*args, **{"profile": "megatron", **knobs})


@pytest.mark.parametrize("stage, gigabytes", [(0, 120), (1, 31.4), (2, 16.6), (3, 1.9)])
def test_zero_paper_example(stage, gigabytes):
    """ZeRO (arXiv:1910.02054) Figure 1: 7.5B parameters, N_d = 64, K = 12, fp16 Adam."""
    weights, grads, master, optimizer, _ = PRECISION_CONVENTIONS["zero16"]
    psi = 7_500_000_000
    per_gpu = psi * (
        weights * par.zero_partition(stage, "weights")
        + grads * par.zero_partition(stage, "gradients")
        + master * par.zero_partition(stage, "master_weights")
        + optimizer * par.zero_partition(stage, "optimizer")
    )
    exact = per_gpu.xreplace({S.data_parallel: 64})
    assert round(float(exact) / 1e9, 1) == gigabytes


def test_zero_stages_in_the_engine_partition_model_state():
    base = estimate("llama-3.1-8b", mode="training", dp=64).evaluation.terms
    for stage, names in [(1, ("optimizer", "master_weights")), (2, ("gradients",)), (3, ("weights",))]:
        terms = estimate("llama-3.1-8b", mode="training", dp=64, zero=stage).evaluation.terms
        for name in names:
            assert terms[name] == sympy.ceiling(sympy.Rational(base[name], 64))


# --- monotonicity (Megatron's own test idea) and the single-GPU limit -------------------------

DEGREES = {
    "llama-3.1-8b": {"tp": [1, 2, 4, 8], "pp": [1, 2, 4, 8], "cp": [1, 2, 4]},
    "mixtral-8x7b-v0.1": {"tp": [1, 2, 4, 8], "pp": [1, 2, 4], "ep": [1, 2, 4, 8]},
    "qwen3-30b-a3b": {"tp": [1, 2, 4], "ep": [1, 2, 4, 8, 16]},
    "deepseek-v2-lite": {"tp": [1, 2, 4], "ep": [1, 2, 4, 8]},
    "falcon-7b": {"tp": [1, 71]},
    "gemma-2-9b": {"tp": [1, 2, 4, 8, 16], "pp": [1, 2, 3, 6]},
}


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    model_id=st.sampled_from(sorted(DEGREES)),
    mode=st.sampled_from(["inference", "training"]),
    knob_index=st.integers(0, 2),
    zero=st.sampled_from([0, 1, 2, 3]),
    recompute=st.sampled_from(["none", "selective", "full"]),
    sequence_parallel=st.booleans(),
    s=st.sampled_from([128, 2048, 8192]),
)
def test_per_gpu_memory_never_grows_with_a_degree(model_id, mode, knob_index, zero, recompute, sequence_parallel, s):
    knobs = DEGREES[model_id]
    knob = sorted(knobs)[knob_index % len(knobs)]
    zero = zero if mode == "training" else 0  # ZeRO partitions training state only
    base = dict(mode=mode, seq_len=s, recompute=recompute, sequence_parallel=sequence_parallel, zero=zero, dp=8)
    totals = [estimate(model_id, **base, **{knob: d}).evaluation.total_bytes for d in knobs[knob]]
    assert totals == sorted(totals, reverse=True), (knob, knobs[knob], totals)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(model_id=st.sampled_from(sorted(DEGREES)), dp=st.sampled_from([2, 8, 64]), s=st.sampled_from([256, 4096]))
def test_per_gpu_memory_never_grows_with_the_zero_stage(model_id, dp, s):
    totals = [estimate(model_id, mode="training", seq_len=s, dp=dp, zero=z).evaluation.total_bytes for z in range(4)]
    assert totals == sorted(totals, reverse=True)


@pytest.mark.parametrize("mode", ["inference", "training"])
@pytest.mark.parametrize("model_id", ["deepseek-v3", "gpt2", "phi-3-mini-4k", "qwen3-30b-a3b"])
def test_degrees_of_one_are_the_single_gpu_model(model_id, mode):
    spec = spec_from_config(find(model_id).config, model_id)
    mm = build(spec, Scenario(mode=mode, batch_size=None, seq_len=None, profile="megatron"))
    single = mm.expression().xreplace({S.tensor_parallel: 1, S.pipeline_parallel: 1, S.data_parallel: 1,
                                       S.expert_parallel: 1, S.context_parallel: 1})
    for b, s in [(1, 1), (3, 1000), (16, 32768)]:
        ours = mm.evaluate(batch_size=b, seq_len=s).total_bytes
        assert ours == sympy.ceiling(single.xreplace({S.batch_size: b, S.seq_len: s}))


def test_kv_heads_are_replicated_not_split_beyond_their_count():
    """Falcon-7B (MQA): one KV head, so every tensor rank caches the whole cache."""
    one = estimate("falcon-7b", seq_len=4096).evaluation.terms["kv_cache"]
    assert estimate("falcon-7b", seq_len=4096, tp=71).evaluation.terms["kv_cache"] == one
    llama = estimate("llama-3.1-8b", seq_len=4096).evaluation.terms["kv_cache"]
    assert estimate("llama-3.1-8b", seq_len=4096, tp=4).evaluation.terms["kv_cache"] == llama // 4
    assert estimate("llama-3.1-8b", seq_len=4096, tp=32).evaluation.terms["kv_cache"] == llama // 8


def test_mla_latent_is_replicated_over_tensor_ranks():
    one = estimate("deepseek-v3", seq_len=4096).evaluation.terms["kv_cache"]
    assert estimate("deepseek-v3", seq_len=4096, tp=8).evaluation.terms["kv_cache"] == one


def test_pipeline_first_stage_holds_embedding_not_head():
    terms = estimate("llama-3.1-8b", pp=4).evaluation.terms
    assert "weights/lm_head" not in terms
    assert terms["weights/embedding"] == 128_256 * 4096 * 2


def test_expert_parallel_splits_routed_experts_only():
    one = estimate("deepseek-v3", ep=1, weight_quant="w8a8").evaluation.terms
    eight = estimate("deepseek-v3", ep=8, weight_quant="w8a8").evaluation.terms
    assert eight["weights/moe_experts"] * 8 == one["weights/moe_experts"]
    assert eight["weights/moe_shared_experts"] == one["weights/moe_shared_experts"]


def test_lora_trains_only_the_adapters():
    """Llama-3.1-8B, rank 16 on every attention and MLP matrix: r (rows + cols) each."""
    h, kv, f, L, r = 4096, 1024, 14336, 32, 16
    per_layer = r * ((h + h) + 2 * (h + kv) + (h + h) + 2 * (h + f) + (f + h))
    adapters = L * per_layer
    terms = estimate("llama-3.1-8b", mode="training", lora_rank=16).evaluation.terms
    assert terms["adapters"] == 2 * adapters
    assert terms["gradients"] == 2 * adapters
    assert terms["optimizer"] == 8 * adapters
    assert terms["weights"] == 2 * 8_030_261_248


def test_lora_targets_by_module_name():
    terms = estimate("llama-3.1-8b", mode="training", lora_rank=8, lora_targets=("q_proj", "v_proj")).evaluation.terms
    assert terms["adapters"] == 2 * 32 * 8 * ((4096 + 4096) + (4096 + 1024))


def test_qlora_base_is_4_127_bits_per_weight():
    """QLoRA section 3: NF4 plus double-quantized constants, 0.127 bits per parameter."""
    plain = estimate("llama-3.1-8b", mode="training", lora_rank=16).evaluation.terms
    qlora = estimate("llama-3.1-8b", mode="training", lora_rank=16, weight_quant="nf4").evaluation.terms
    linear = sum(plain[f"weights/{c}"] for c in ("attention", "mlp")) // 2  # parameters of the linear layers
    quantized = sum(qlora[f"weights/{c}"] for c in ("attention", "mlp"))
    assert Fraction(quantized, linear) == Fraction(1, 2) + Fraction(1, 64) + Fraction(4, 64 * 256)
    assert round(Fraction(quantized * 8, linear), 3) == Fraction(4127, 1000)


def test_offload_moves_state_to_host():
    ev = estimate("llama-3.1-8b", mode="training", zero=3, dp=8, offload="both").evaluation
    assert ev.terms["optimizer"] == ev.terms["master_weights"] == ev.terms["weights"] == 0
    assert ev.host["optimizer"] == 8 * 8_030_261_248 // 8
    assert ev.host["weights"] == 2 * 8_030_261_248 // 8


@pytest.mark.parametrize(
    "args, needles",
    [
        (["--tp", "3"], ["--tp 3", "num_attention_heads 32"]),
        (["--pp", "5"], ["--pp 5", "num_hidden_layers 32"]),
        (["--zero", "4"], ["--zero"]),
        (["--lora-rank", "0"], ["--lora-rank", "0"]),
        (["--offload", "parameters"], ["--zero 3"]),
        (["--allocator-fraction", "lots"], ["--allocator-fraction", "lots"]),
    ],
)
def test_bad_degrees_are_one_line_exit_2(run_cli, args, needles):
    result = run_cli("estimate", "--model", "llama-3.1-8b", "--mode", "training", *args)
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert all(n in result.stderr for n in needles), result.stderr


def test_expert_degree_must_divide_experts(run_cli):
    result = run_cli("estimate", "--model", "mixtral-8x7b-v0.1", "--ep", "3")
    assert result.exit_code == 2 and "num_experts 8" in result.stderr


def test_unknown_lora_target_is_an_error(run_cli):
    result = run_cli("estimate", "--model", "llama-3.1-8b", "--mode", "training", "--lora-rank", "8",
                     "--lora-targets", "bogus,q_proj")
    assert result.exit_code == 2
    assert "bogus" in result.stderr and "q_proj" in result.stderr


def test_offloaded_state_is_reported_apart(run_cli):
    import json

    args = ["estimate", "--model", "llama-3.1-8b", "--mode", "training", "--zero", "3", "--dp", "8", "--offload", "both"]
    data = json.loads(run_cli(*args, "--json").stdout)
    assert data["host_terms"]["optimizer"] == 8 * 8_030_261_248 // 8
    assert data["host_total_bytes"] == sum(data["host_terms"].values())
    assert "offloaded to host memory" in run_cli(*args).stdout


def test_inference_serves_unmerged_adapters():
    training = estimate("llama-3.1-8b", mode="training", lora_rank=16).evaluation.terms["adapters"]
    assert estimate("llama-3.1-8b", lora_rank=16).evaluation.terms["adapters"] == training


def test_zero_is_a_training_knob(run_cli):
    result = run_cli("estimate", "--model", "llama-3.1-8b", "--zero", "3", "--dp", "8")
    assert result.exit_code == 2 and "--mode inference" in result.stderr


def test_codegen_and_latex_keep_parallel_degrees_symbolic(run_cli, tmp_path):
    """--free tp --free dp: the generated module takes the degrees as arguments."""
    import importlib.util
    import json

    import numpy as np

    out = tmp_path / "llama_tp.py"
    args = ["--model", "llama-3.1-8b", "--mode", "training", "--profile", "megatron", "--zero", "3", "--dp", "2",
            "--tp", "2"]
    result = run_cli("codegen", *args, "--free", "tp", "--free", "dp", "-o", str(out))
    assert result.exit_code == 0, result.output
    spec = importlib.util.spec_from_file_location("llama_tp", out)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    degrees = [(1, 8), (2, 4), (4, 2), (8, 8)]
    got = module.total_bytes(batch_size=2, seq_len=4096, tensor_parallel=np.array([t for t, _ in degrees]),
                             data_parallel=np.array([d for _, d in degrees]))
    for (tp, dp), value in zip(degrees, got):
        expected = json.loads(run_cli("estimate", "--model", "llama-3.1-8b", "--mode", "training", "--profile",
                                      "megatron", "--zero", "3",
                                      "--batch-size", "2", "--seq-len", "4096", "--tp", str(tp), "--dp", str(dp),
                                      "--json").stdout)["total_bytes"]
        assert abs(value - expected) <= 1e-12 * expected
    latex = run_cli("latex", *args, "--free", "tp").stdout
    assert r"\frac{525{,}336{,}576}{t}" in latex  # (digits grouped, issue 14) the embedding on one GPU (ZeRO-3 over dp = 2), t left free


def test_free_rejects_what_is_not_a_knob(run_cli):
    result = run_cli("latex", "--model", "gpt2", "--free", "hidden_size")
    assert result.exit_code == 2 and "hidden_size" in result.stderr
