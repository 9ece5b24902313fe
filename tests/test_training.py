"""Training terms: Korthikanti et al. 2022 Table 2, bytes-per-parameter conventions, phases."""

from __future__ import annotations

import pytest
import sympy

from formulas import activations
from formulas import symbols as S
from formulas.optimizer import FACTORED_OPTIMIZERS, OPTIMIZER_STATE_BYTES, PRECISION_CONVENTIONS

from engine import api


def estimate(*args, **knobs):
    """``engine.api.estimate`` under ``--profile megatron``, which this file tests (training
    defaults to ``transformers``)."""
    return api.estimate(*args, **{"profile": "megatron", **knobs})


b, s, h, a, L, t = S.batch_size, S.seq_len, S.hidden_size, S.num_attention_heads, S.num_hidden_layers, S.tensor_parallel
PAPER = {S.activation_bytes: 2}  # Table 2 assumes 16-bit activations


@pytest.mark.parametrize(
    "recompute, sequence_parallel, row",
    [
        ("none", False, s * b * h * (10 + 24 / t + 5 * a * s / (h * t))),
        ("none", True, s * b * h / t * (34 + 5 * a * s / h)),
        ("selective", False, s * b * h * (10 + 24 / t)),
        ("selective", True, 34 * s * b * h / t),
        ("full", False, 2 * s * b * h),
        ("full", True, 2 * s * b * h / t),
    ],
)
def test_table_2_rows(recompute, sequence_parallel, row):
    """Korthikanti et al. 2022, Table 2, exactly (16-bit activations)."""
    ours = activations.korthikanti_layer(recompute, sequence_parallel).xreplace(PAPER)
    assert sympy.expand(ours - row) == 0


@pytest.mark.parametrize(
    "recompute, row",
    [("none", s * b * h * (34 + 5 * a * s / h)), ("selective", 34 * s * b * h), ("full", 2 * s * b * h)],
)
def test_single_gpu_rows(recompute, row):
    ours = activations.korthikanti_layer(recompute).xreplace({**PAPER, t: 1})
    assert sympy.expand(ours - row) == 0


def test_fused_attention_keeps_no_score_matrices():
    fused = activations.korthikanti_layer("none", eager=False).xreplace({**PAPER, t: 1})
    assert sympy.expand(fused - 34 * s * b * h) == 0


def test_full_recompute_keeps_inputs_and_rebuilds_one_layer():
    ev = estimate("llama-3.1-8b", mode="training", seq_len=4096, recompute="full", attention="eager").evaluation
    sbh, sbf = 4096 * 1 * 4096, 4096 * 1 * 14336
    assert ev.terms["activations/layers"] == 32 * 2 * sbh
    # one layer rebuilt: Megatron's 10 + 8 + 4 f / h with the 5 a s / h core (eager), and the
    # gate half of the SwiGLU fc1 output (2 s b f)
    assert ev.terms["activations/recomputed"] == sbh * (10 + 8 + 5 * 32 * 4096 // 4096) + 4 * sbf + 2 * sbf


def test_recomputation_is_not_a_fixed_half():
    """Full recompute saves far more than half at long context (seed: 'can halve')."""
    none = estimate("llama-3.1-8b", mode="training", seq_len=4096).evaluation.terms["activations/layers"]
    full = estimate("llama-3.1-8b", mode="training", seq_len=4096, recompute="full").evaluation.terms["activations/layers"]
    assert full < none / 10


@pytest.mark.parametrize("name, total", [("zero16", 16), ("megatron18", 18), ("deepspeed20", 20)])
def test_bytes_per_parameter_conventions(name, total):
    weights, grads, master, optimizer, source = PRECISION_CONVENTIONS[name]
    assert weights + grads + master + optimizer == total
    assert source
    terms = estimate("qwen3-0.6b", mode="training", precision=name).evaluation.terms
    params = 596_049_920
    state = terms["weights"] + terms["gradients"] + terms.get("master_weights", 0) + terms["optimizer"]
    assert state == total * params


def test_fp32_training_has_no_master_copy():
    terms = estimate("qwen3-0.6b", mode="training", dtype="float32").evaluation.terms
    assert "master_weights" not in terms
    assert terms["weights"] == terms["gradients"] == 4 * 596_049_920


GPT2_PARAMETERS = 124_439_808  # transformers GPT2LMHeadModel("gpt2").num_parameters(), tied head

# Optimizer state of gpt2, worked by hand from each optimizer's definition (not from
# formulas/optimizer.py's table, which these rows check).
HAND_WORKED_STATE_BYTES = {
    # Adam / AdamW (Kingma & Ba 2015; Loshchilov & Hutter 2019): fp32 exp_avg + exp_avg_sq,
    # 4 + 4 = 8 B per parameter
    "adamw": 8 * GPT2_PARAMETERS,
    "adam": 8 * GPT2_PARAMETERS,
    # bitsandbytes 8-bit Adam (Dettmers et al. 2021, arXiv:2110.02861): two uint8 states
    # (2 B per parameter) plus one fp32 absmax per block of 2048 values of each state
    # (2 * 4 / 2048 = 1/256 B per parameter): 124_439_808 / 256 = 486_093 exactly
    "adam8bit": 2 * GPT2_PARAMETERS + 486_093,
    # bitsandbytes AdamW8bit as its code allocates (Optimizer8bit.init_state): uint8 states
    # with one fp32 absmax per 256 values: 2 * 4 / 256 = 1/32 B: 124_439_808 / 32 = 3_888_744.
    # The paged variants hold the same bytes in unified memory; this (megatron) profile
    # counts them, the torchtune profile moves them to a host term (tests/test_torchtune.py).
    "adamw8bit": 2 * GPT2_PARAMETERS + 3_888_744,
    "paged-adamw8bit": 2 * GPT2_PARAMETERS + 3_888_744,
    "paged-adamw": 8 * GPT2_PARAMETERS,
    # Lion (Chen et al. 2023, arXiv:2302.06675, Algorithm 2): one fp32 momentum, 4 B
    "lion": 4 * GPT2_PARAMETERS,
    # SGD with momentum: one fp32 momentum buffer, 4 B; plain SGD keeps no state
    "sgd-momentum": 4 * GPT2_PARAMETERS,
    "sgd": 0,
    # Adafactor (Shazeer & Stern 2018, arXiv:1804.04235, Algorithm 4): fp32 row + column
    # statistics (r + c) per matrix, the full vector per bias/norm. gpt2 per layer:
    # c_attn 768+2304, c_proj 768+768, c_fc 768+3072, mlp c_proj 3072+768, biases
    # 2304+768+3072+768, ln_1/ln_2 4 * 768 = 22_272 values; 12 layers 267_264; wte
    # 50_257+768, wpe 1024+768, ln_f 2 * 768: 321_617 values * 4 B
    "adafactor": 4 * 321_617,
}


@pytest.mark.parametrize("optimizer", sorted(HAND_WORKED_STATE_BYTES))
def test_optimizer_state_bytes(optimizer):
    terms = estimate("gpt2", mode="training", optimizer=optimizer).evaluation.terms
    assert terms["optimizer"] == HAND_WORKED_STATE_BYTES[optimizer]


def test_every_optimizer_is_hand_checked():
    """A new optimizer needs its hand-worked row above."""
    assert set(HAND_WORKED_STATE_BYTES) == {*OPTIMIZER_STATE_BYTES, *FACTORED_OPTIMIZERS}


def test_adam_8bit_is_about_a_quarter_of_adamw():
    assert OPTIMIZER_STATE_BYTES["adam8bit"] == sympy.Rational(2) + sympy.Rational(1, 256)


def test_peak_is_the_larger_phase_not_the_sum():
    """Megatron keeps the gradient buffer through forward and backward (param_and_grad_buffer.py):
    the optimizer step holds the same state without the activations."""
    ev = estimate("llama-3.1-8b", mode="training", batch_size=1, seq_len=4096).evaluation
    terms = ev.terms
    assert set(ev.phases) == {"forward_backward", "optimizer_step"}
    assert ev.total_bytes == max(ev.phases.values())
    state = sum(terms[n] for n in ("weights", "master_weights", "gradients", "optimizer"))
    assert ev.phases["optimizer_step"] == state + terms["overhead"]
    assert ev.phases["forward_backward"] == state + terms["activations"] + terms["overhead"]


def test_short_sequences_still_peak_in_backward():
    """Was: short sequences peak at the optimizer step (gradients allocated after forward).
    Megatron's DDP allocates them at wrap time, so forward-backward is the peak at any length."""
    ev = estimate("llama-3.1-8b", mode="training", batch_size=1, seq_len=16).evaluation
    assert ev.peak_phase == "forward_backward"
    assert ev.phases["forward_backward"] - ev.phases["optimizer_step"] == ev.terms["activations"]


def test_training_logits_hold_an_fp32_softmax_for_the_loss():
    """Was 2 + 4 B per logit (bf16 logits and an fp32 copy). Megatron's
    vocab_parallel_cross_entropy keeps one fp32 softmax (4 s b V) beside the 16-bit inputs of
    the final norm and the output layer (4 s b h): compute_activation_memory's pp == 1 rows."""
    terms = estimate("qwen3-0.6b", mode="training", batch_size=2, seq_len=128).evaluation.terms
    assert terms["activations/logits"] == 2 * 128 * (4 * 151_936 + 4 * 1024)


def test_float8_training_is_a_dtype_choice():
    """--dtype float8: FP8 primary weights (1 B), bf16 gradients and activations, fp32 master and moments."""
    ev = estimate("gpt2", mode="training", dtype="float8", seq_len=1024)
    params = 124_439_808
    assert ev.model.inputs["precision"] == "fp8"
    terms = ev.evaluation.terms
    assert (terms["weights"], terms["gradients"], terms["master_weights"], terms["optimizer"]) == (
        params, 2 * params, 4 * params, 8 * params)
    bf16 = estimate("gpt2", mode="training", dtype="bfloat16", seq_len=1024).evaluation.terms
    assert terms["activations"] == bf16["activations"]
