"""The torchtune profile: published peaks (shared/oracles/training-dev.json) and hand-worked
bytes of each mechanism (chunked CE, optimizer in backward, 8-bit and paged state, compile)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import sympy

from engine.errors import InputError
from engine.families import spec_from_config
from engine.profiles import build
from engine.registry import load_spec
from engine.scenario import Scenario
from formulas import optimizer as O
from formulas import symbols as S
from formulas.frameworks import torchtune as F

ROOT = Path(__file__).resolve().parents[1]
ORACLE = ROOT.parent / "shared" / "oracles" / "training-dev.json"
if not ORACLE.exists():
    ORACLE = Path("/work/shared/oracles/training-dev.json")
FIXTURE = ROOT / "tests" / "fixtures" / "compile_saved_cpu.json"

LORA = dict(lora_rank=64, lora_targets=("q_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"))
# The flags a torchtune user sets for each row: one per technique, cumulative as in the README.
COMPILED_CE = dict(torch_compile=True, loss_chunks=F.DEFAULT_LOSS_CHUNKS)
AC = dict(COMPILED_CE, recompute="full")
V02 = dict(torchtune_release="0.2")  # PR #961's rows ran the May-2024 loop (30c75d4, torchtune 0.2 era)
FLAGS = {
    "tt3b-packed": {},
    "tt3b-compile": dict(torch_compile=True),
    "tt3b-chunkedce": COMPILED_CE,
    "tt3b-ac": AC,
    "tt3b-optinbwd": dict(AC, optimizer_in_backward=True),
    "tt3b-actoffload": dict(AC, optimizer_in_backward=True, activation_offload=True),
    "tt3b-adamw8bit": dict(AC, optimizer_in_backward=True, activation_offload=True, optimizer="adamw8bit"),
    "tt3b-lora": dict(AC, activation_offload=True, **LORA),
    "tt3b-qlora": dict(AC, activation_offload=True, weight_quant="nf4", **LORA),
    "tt961-7b-full-lowmem": dict(V02, recompute="full", optimizer_in_backward=True, optimizer="paged-adamw"),
    "tt961-7b-full-lowmem-a100": dict(V02, recompute="full", optimizer_in_backward=True, optimizer="paged-adamw"),
}
# Why 25 %, from what the profile cannot know rather than from these rows' errors:
# - torch.optim.AdamW on CUDA defaults to foreach, whose step holds one intermediate the size
#   of the parameters (F.foreach_temporaries); a run with fused=True has none. Where the step
#   is the peak (tt3b-ac) that is 2 B of the 8 B per parameter of bf16 AdamW training: 25 %;
# - the same recipe and config measured twice (tt961 on two GPUs) differ by 10 %;
# - compiled layers are counted with the partition torch 2.13 makes on CPU
#   (tests/fixtures/compile_saved_cpu.json); the rows ran torch 2.5 on CUDA.
TOLERANCE = 0.25
MEDIAN_TOLERANCE = 0.07  # issue 12's bound on the median |error|


def _records() -> dict[str, dict]:
    doc = json.loads(ORACLE.read_text())
    return {r["id"]: dict(r, config_fields=doc["configs"][r["config"]]) for r in doc["records"]}


def _predict(record: dict) -> tuple[int, str]:
    config = {k: v for k, v in record["config_fields"].items() if not k.startswith("_")}
    spec = spec_from_config(config, record["config"])
    scenario = Scenario(mode="training", profile="torchtune", batch_size=record["micro_batch"],
                        seq_len=record["seq_len"], **FLAGS[record["id"]])
    evaluation = build(spec, scenario).evaluate()
    return evaluation.total_bytes, evaluation.peak_phase


def _error(record_id: str) -> float:
    record = _records()[record_id]
    return _predict(record)[0] / record["measured_bytes"] - 1


@pytest.mark.skipif(not ORACLE.exists(), reason="shared/oracles/training-dev.json not present")
@pytest.mark.parametrize("record_id", sorted(FLAGS))
def test_published_torchtune_peak(record_id):
    error = _error(record_id)
    print(f"{record_id}: {error:+.1%}")
    assert abs(error) <= TOLERANCE, f"{record_id}: {error:+.1%}"


@pytest.mark.skipif(not ORACLE.exists(), reason="shared/oracles/training-dev.json not present")
def test_published_torchtune_median_error():
    errors = [abs(_error(record_id)) for record_id in FLAGS]
    assert statistics.median(errors) <= MEDIAN_TOLERANCE, sorted(errors)


@pytest.mark.skipif(not ORACLE.exists(), reason="shared/oracles/training-dev.json not present")
def test_unpacked_baseline_lies_between_the_model_state_and_the_longest_batch():
    """tt3b-baseline pads each batch to its longest sample (seq_len not fixed): its figure
    must lie above what the step holds at any length (weights, gradients, AdamW moments)
    and below the prediction at the 4096-token cap.

    (It lies below the foreach step's intermediate on top of that state, as tt3b-ac does:
    see docs/training.md, 'What the rows do not settle'.)"""
    record = _records()["tt3b-baseline"]
    config = {k: v for k, v in record["config_fields"].items() if not k.startswith("_")}
    terms = build(spec_from_config(config, record["config"]),
                  Scenario(mode="training", profile="torchtune", batch_size=2, seq_len=1)).evaluate().terms
    state = terms["weights"] + terms["gradients"] + terms["optimizer"]
    longest, _ = _predict(dict(record, seq_len=4096, id="tt3b-packed"))
    assert state < record["measured_bytes"] < longest


# --- hand-worked mechanisms ---------------------------------------------------------------

TINY = {S.batch_size: 2, S.seq_len: 8, S.vocab_size: 100, S.activation_bytes: 2}


def test_chunked_cross_entropy_bytes():
    # unchunked: fp32 log_softmax 4 * 2*8*100 = 6400 saved; nll and log_softmax grads 12800
    assert F.loss_saved(None, False).subs(TINY) == 6400
    assert F.loss_gradients(None, False).subs(TINY) == 12800
    # eager chunks: every chunk's fp32 log_softmax still saved (6400); one chunk's two grads 1600
    assert F.loss_saved(8, False).subs(TINY) == 6400
    assert F.loss_gradients(8, False).subs(TINY) == 1600
    # compiled chunks: bf16 logits 2*1600 = 3200 + two fp32 row statistics 8*16 = 128;
    # one chunk's bf16 gradient 2*200 (inductor lowers the scatter onto zeros pointwise)
    assert F.loss_saved(8, True).subs(TINY) == 3328
    assert F.loss_gradients(8, True).subs(TINY) == 400


def _tt(model="llama-3.1-8b", **knobs):
    return build(load_spec(model), Scenario(mode="training", profile="torchtune", batch_size=1, seq_len=512, **knobs))


def test_optimizer_in_backward_has_no_full_gradient_buffer():
    full = _tt(optimizer_impl="foreach").evaluate()
    fused = _tt(optimizer_in_backward=True, optimizer_impl="foreach").evaluate()
    parameters = 8_030_261_248
    assert full.terms["gradients"] == 2 * parameters
    # one parameter's gradient at a time: the largest is the 128256 x 4096 embedding (or head)
    assert fused.terms["gradients"] == 2 * 128_256 * 4096
    assert fused.terms["optimizer_temporaries"] == 2 * 128_256 * 4096
    assert "optimizer_step" in fused.phases and fused.total_bytes < full.total_bytes


def test_torchtunes_configs_fused_adamw_makes_no_step_temporaries():
    """torchtune's configs set ``fused: True`` (the profile's default); a bare torch.optim.AdamW
    on CUDA is foreach (``--optimizer-impl foreach``): one parameter-sized intermediate."""
    parameters = 8_030_261_248
    assert _tt().evaluate().terms["optimizer_temporaries"] == 0
    assert _tt(optimizer_impl="foreach").evaluate().terms["optimizer_temporaries"] == 2 * parameters
    assert _tt(optimizer="adamw8bit", optimizer_impl="foreach").evaluate().terms["optimizer_temporaries"] == 0


def test_bitsandbytes_8bit_state_bytes():
    # 4096 elements: 2 uint8 states + 2 fp32 absmax per 256: 2 * (4096 + 4 * 16) = 8320
    assert O.bnb_8bit_state(sympy.Integer(4096)) == 8320
    # below min_8bit_size: two fp32 states, 8 B each element
    assert O.bnb_8bit_state(sympy.Integer(4095)) == 8 * 4095
    # 10^6 elements: ceil(10^6 / 256) = 3907 blocks
    assert O.bnb_8bit_state(sympy.Integer(10**6)) == 2 * (10**6 + 4 * 3907)


def test_paged_state_is_a_host_term_except_small_tensors():
    paged = _tt(optimizer="paged-adamw").evaluate()
    plain = _tt(optimizer="adamw").evaluate()
    # norms (4096 elements) stay on the device; every matrix is paged. bitsandbytes' 32-bit
    # states are fp32 whatever the parameters' dtype: 8 B per element, twice torch's bf16 AdamW.
    norms = (2 * 32 + 1) * 4096
    assert paged.terms["optimizer"] == 8 * norms
    assert paged.terms["optimizer"] + paged.host["optimizer_paged"] == 2 * plain.terms["optimizer"]


def test_paged_8bit_keeps_its_absmax_on_the_device():
    paged = _tt(optimizer="paged-adamw8bit").evaluate()
    eight = _tt(optimizer="adamw8bit").evaluate()
    assert paged.terms["optimizer"] + paged.host["optimizer_paged"] == eight.terms["optimizer"]
    # the 128256 x 4096 embedding: 8 * ceil(525,336,576 / 256) = 16,416,768 bytes of absmax stay
    assert paged.terms["optimizer"] > 8 * (2 * 32 + 1) * 4096 + 16_416_768 - 1


def test_pure_bf16_adamw_moments_are_bf16():
    """--precision pure keeps AdamW moments in the parameters' dtype (torch zeros_like(p))."""
    from engine.api import estimate

    terms = estimate("gpt2", mode="training", precision="pure", profile="megatron").evaluation.terms
    assert terms["optimizer"] == 4 * 124_439_808


def test_compiled_layer_matches_the_measured_partition():
    doc = json.loads(FIXTURE.read_text())
    for row in doc["rows"]:
        values = {S.batch_size: row["b"], S.seq_len: row["s"], S.hidden_size: row["h"],
                  S.num_attention_heads: row["a"], S.head_dim: row["d"], S.intermediate_size: row["f"],
                  S.activation_bytes: 2}
        rope_cache = row["s"] * row["d"] * 4  # the fp32 cache slices RoPE saves: a buffer, not an activation
        assert F.layer_saved(False).subs(values) == row["eager_saved_bytes"] - rope_cache
        assert F.layer_saved(True).subs(values) == row["compiled_saved_bytes"] - rope_cache


def test_lora_leaves_the_frozen_heads_inputs_unsaved():
    """LoRA: the frozen final-norm scale and output weight need no saved x_normed or h (a
    product saves an operand only for the other's gradient; measured with saved-tensor hooks)."""
    values = {S.batch_size: 2, S.seq_len: 8, S.hidden_size: 64, S.activation_bytes: 2}
    # full: fp32 x 4096 + fp32 rsqrt 64 + x_normed 2048 + output input 2048
    assert F.head_saved().subs(values) == 4 * 1024 + 4 * 16 + 2 * 1024 + 2 * 1024
    assert F.head_saved(lora=True).subs(values) == 4 * 1024 + 4 * 16
    assert F.head_saved(lora=True, output_adapter=True).subs(values) == 4 * 1024 + 4 * 16 + 2 * 1024
    terms = _tt(lora_rank=8).evaluate().terms
    assert terms["activations/head"] == 4 * 512 * 4096 + 4 * 512


def test_lora_on_the_output_projection():
    base = _tt(lora_rank=8).evaluate()
    head = _tt(lora_rank=8, lora_targets=("all-linear", "lm_head")).evaluate()
    assert head.terms["adapters"] - base.terms["adapters"] == 2 * 8 * (128_256 + 4096)
    assert _tt(lora_rank=8, lora_targets=("all-linear",)).evaluate().terms == base.terms


@pytest.mark.parametrize("model, knobs, needle", [
    ("llama-3.1-8b", dict(activation_offload=True), "--activation-offload needs --recompute full"),
    ("llama-3.1-8b", dict(dp=8), "--dp 8 --zero 0 is not a recipe"),
    ("llama-3.1-8b", dict(lora_rank=8, optimizer_in_backward=True), "--optimizer-in-backward is not in the LoRA"),
    ("llama-3.1-8b", dict(optimizer="adam8bit"), "--optimizer adam8bit is not modelled"),
    ("llama-3.1-8b", dict(weight_quant="nf4"), "--weight-quant nf4 is not modelled"),
    ("qwen3-0.6b", dict(lora_rank=8, lora_targets=("lm_head",)), "model_type 'qwen3'"),
    ("llama-3.1-8b", dict(tp=2), "--tp 2 is not modelled"),
    ("llama-3.1-8b", dict(torchtune_release="0.2", loss_chunks=8), "--torchtune-release 0.2: --loss-chunks"),
    ("llama-3.1-8b", dict(torchtune_release="0.2", torch_compile=True), "--torchtune-release 0.2: --compile"),
])
def test_torchtune_refuses_by_name(model, knobs, needle):
    with pytest.raises(InputError, match=needle):
        _tt(model, **knobs)


def test_other_profiles_refuse_the_mechanism_knobs():
    spec = load_spec("qwen3-0.6b")
    with pytest.raises(InputError, match="--profile transformers: --compile is not modelled"):
        build(spec, Scenario(mode="training", profile="transformers", torch_compile=True))
    with pytest.raises(InputError, match="--profile megatron: --loss-chunks 8 is not modelled"):
        build(spec, Scenario(mode="training", loss_chunks=8, profile="megatron"))
    with pytest.raises(InputError, match="--profile transformers: --torchtune-release 0.2 is not modelled"):
        build(spec, Scenario(mode="training", torchtune_release="0.2", profile="transformers"))


def test_fsdp2_shards_state_and_gathers_two_layers():
    one = _tt().evaluate()
    eight = _tt(dp=8, zero=3).evaluate()
    assert eight.terms["optimizer"] * 8 == one.terms["optimizer"]
    assert eight.terms["gradients"] * 8 == one.terms["gradients"]
    assert 0 < eight.terms["zero3_gathered/layers"] < one.terms["weights"] / 8
    assert eight.total_bytes < one.total_bytes


def test_output_names_the_bytes_per_parameter_convention():
    inputs = _tt().inputs
    assert inputs["convention"].startswith("torchtune bf16 (pure, no fp32 master)")
    assert inputs["profile"] == "torchtune"


TORCHTUNE_FLAGS = ("--model", "llama-3.1-8b", "--mode", "training", "--profile", "torchtune", "--batch-size", "2",
                   "--compile", "--loss-chunks", "8", "--recompute", "full", "--activation-offload",
                   "--optimizer-in-backward", "--optimizer", "paged-adamw8bit")


def test_cli_mechanism_flags_reach_the_profile(run_cli):
    result = run_cli("estimate", *TORCHTUNE_FLAGS, "--seq-len", "1024", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    scenario = Scenario(mode="training", profile="torchtune", batch_size=2, seq_len=1024, torch_compile=True,
                        loss_chunks=8, recompute="full", activation_offload=True, optimizer_in_backward=True,
                        optimizer="paged-adamw8bit")
    assert data["total_bytes"] == build(load_spec("llama-3.1-8b"), scenario).evaluate().total_bytes
    assert "optimizer_paged" in data["host_terms"]


def test_cli_sweep_agrees_with_estimate_on_sub_term_phases(run_cli):
    """torchtune's recompute phase names a sub-term (activations/layers); the compiled sweep
    must sum it as evaluate does."""
    sweep = run_cli("sweep", *TORCHTUNE_FLAGS, "--seq-len", "2048")
    estimate = run_cli("estimate", *TORCHTUNE_FLAGS, "--seq-len", "2048", "--json")
    assert sweep.exit_code == 0 and estimate.exit_code == 0, sweep.output
    assert f"{json.loads(estimate.output)['total_bytes']:,}" in sweep.output


def test_cli_refuses_a_mechanism_elsewhere_in_one_line(run_cli):
    result = run_cli("estimate", "--model", "llama-3.1-8b", "--mode", "training", "--optimizer-in-backward",
                     "--profile", "megatron")
    assert result.exit_code == 2
    assert "--profile megatron: --optimizer-in-backward is not modelled" in result.output
    assert "Traceback" not in result.output


CPU_PEAKS = ROOT / "tests" / "fixtures" / "torchtune_peaks_cpu.json"


def test_cpu_measured_chunked_loss_and_optimizer_in_backward():
    """tools/measure/torchtune_peaks.py: a torchtune-style step on CPU (MemTracker), unchunked
    and chunked CE, with and without the optimizer in backward and checkpointing, torchtune
    <= 0.2.1's loop (``release`` 0.2) and a layer-bound decoder (``wide``: the recompute
    phases peak). Within ~1 KiB (Python scalars; the rope cache buffer aside) except the
    chunked head's backward (8 KiB), the 0.2 points at b 1, s 256 (14 KiB, 0.05 %) and the
    checkpointed eager chunked loss's forward (33 KiB at b 8 x 512, 0.03 %)."""
    doc = json.loads(CPU_PEAKS.read_text())
    specs = {None: spec_from_config(doc["config"], "torchtune-tiny"),
             "wide": spec_from_config(doc["wide_config"], "torchtune-wide")}
    gaps, phases = [], set()
    for row in doc["rows"]:
        scenario = Scenario(mode="training", profile="torchtune", batch_size=row["batch_size"],
                            seq_len=row["seq_len"], loss_chunks=row["loss_chunks"],
                            optimizer_in_backward=row["optimizer_in_backward"], optimizer_impl="foreach",
                            torchtune_release=row.get("release"), recompute=row.get("recompute", "none"))
        evaluation = build(specs[row.get("config")], scenario).evaluate()
        gaps.append(evaluation.total_bytes - (row["peak_bytes"] - row["buffer_bytes"]))
        phases.add(evaluation.peak_phase)
    assert len(gaps) == 24 and all(abs(gap) <= 33 * 1024 for gap in gaps), gaps
    assert sum(abs(gap) < 1024 for gap in gaps) >= 17, gaps
    assert {"recompute", "recompute_last", "loss_backward", "head_backward"} <= phases


def test_recompute_holds_swiglus_backward_and_the_gradients_so_far():
    """A recomputed layer's backward: its saved tensors, the incoming gradient and SwiGLU's
    ``2 b s f`` net at MulBackward (w2's gradient already made unless stepped in backward);
    the first layer's recompute, last in backward, has every other layer's gradients."""
    values = {S.batch_size: 1, S.seq_len: 512, S.hidden_size: 4096, S.intermediate_size: 14336,
              S.activation_bytes: 2}
    assert F.recompute_backward().subs(values) == 2 * 512 * 4096 + 2 * 2 * 512 * 14336
    plain = _tt(recompute="full").evaluate().terms
    layer = 4096 * (4096 + 2 * 1024 + 4096) + 3 * 4096 * 14336 + 2 * 4096  # one llama-3.1-8b layer
    assert plain["down_proj_gradient"] == 2 * 4096 * 14336
    # every gradient but the first layer's and the embedding's (untied), and that layer's input
    assert plain["recompute_gradients"] == plain["gradients"] - 2 * (layer + 128_256 * 4096) + 2 * 512 * 4096
    stepped = _tt(recompute="full", optimizer_in_backward=True).evaluate()
    assert "recompute_gradients" not in stepped.terms and "head_gradient" not in stepped.terms  # untied: stepped


def test_release_0_2_keeps_the_sliced_fp32_logits():
    """torchtune <= 0.2.1: ``logits[..., :-1, :].contiguous()`` is kept through backward and
    log_softmax runs over the transposed ``(b, V, s - 1)`` (a contiguous copy in its forward)."""
    # b 2, s 8, V 100: one fp32 sliced tensor is 4 * 2 * 7 * 100 = 5600 bytes
    assert F.sliced_logits().subs(TINY) == 5600
    assert F.sliced_loss_saved().subs(TINY) == 5600  # log_softmax's output
    assert F.sliced_loss_forward().subs(TINY) == 16800  # kept logits, log_softmax's input copy, its output
    assert F.sliced_loss_gradients().subs(TINY) == 16800  # kept logits, nll's and log_softmax's gradients
    assert F.sliced_input_ids().subs(TINY) == 8 * (2 * 16 + 14)
    now, then = _tt().evaluate().terms, _tt(torchtune_release="0.2").evaluate().terms
    # llama-3.1-8b, b 1, s 512: the loss's start of backward holds 16 b (s - 1) V instead of 12 b s V
    assert then["activations/loss"] + then["loss_gradients"] == 16 * 511 * 128_256
    assert now["activations/loss"] + now["loss_gradients"] == 12 * 512 * 128_256


def test_activation_offloading_keeps_the_final_norm_not_a_layer_input():
    """OffloadActivations keeps the tensors of the last five pack calls on the GPU until backward
    starts (``fwd_stash``). The measured order of saves (torchtune_peaks.py pack_order): the last
    layer's input, then the final norm's five saves and its scale: the window holds the norm's
    saved tensors, which F.head_saved counts, and no layer input (activations/layers is 0)."""
    calls = json.loads(CPU_PEAKS.read_text())["pack_order"]["calls"]
    window = calls[-F.OFFLOAD_FORWARD_STASH:]
    assert not any(c["layer_input"] for c in window)
    stashed = {c["storage"]: c["bytes"] for c in window if not c["parameter"]}
    b, s, h = 2, 64, 128  # fp32 x (4 b s h) + fp32 rsqrt (4 b s) + bf16 x_normed (2 b s h)
    assert sum(stashed.values()) == 4 * b * s * h + 4 * b * s + 2 * b * s * h
    values = {S.batch_size: b, S.seq_len: s, S.hidden_size: h, S.activation_bytes: 2}
    assert (F.head_saved() - 2 * b * s * h).subs(values) == sum(stashed.values())
    offloaded = _tt(recompute="full", activation_offload=True).evaluate()
    assert offloaded.terms["activations/layers"] == 0
    # the recomputed layer's input and the previous one, brought back: 2 * 2 * 512 * 4096 bytes
    plain = _tt(recompute="full").evaluate()
    assert offloaded.terms["recompute"] - plain.terms["recompute"] == 2 * 2 * 512 * 4096
    # host: 32 layer inputs + the norm's copies (x.float() and rsqrt twice, x_normed once)
    assert offloaded.host["activations_offloaded"] == 512 * (32 * 2 * 4096 + 2 * 4 * 4096 + 2 * 4 + 2 * 4096)


def test_qlora_base_is_torchaos_nf4_layout():
    """torchao's NF4Tensor (tools/measure/nf4_bytes.py, torchao 0.7.0): codes, int8 scalers
    per 64, a bf16 factor per 256 scalers, bf16 scaler_mean and 16-value table, to the byte."""
    from fractions import Fraction

    from formulas import weights as W
    from formulas.parameters import WeightTensor

    doc = json.loads((ROOT / "tests" / "fixtures" / "torchao_nf4_cpu.json").read_text())
    facts = {S.quantized_weight_bytes: sympy.Rational(1, 2), S.quant_scale_bytes: 1, S.quant_group_size: 64}
    for row in doc["rows"]:
        tensor = WeightTensor("w", sympy.Integer(row["rows"]), sympy.Integer(row["cols"]), sympy.Integer(1), True)
        assert W.stored_linear_bytes(tensor, F.torchao_nf4(Fraction(2))).subs(facts) == row["bytes"], row
    # hand-worked 3072 x 8192: 12,582,912 codes + 393,216 scalers + 1,536 x 2 factors + 2 + 32
    assert doc["rows"][0]["bytes"] == 12_582_912 + 393_216 + 3_072 + 34
    qlora = _tt(lora_rank=8, weight_quant="nf4").evaluate().terms
    assert qlora["weights/mlp"] == 32 * 3 * (4096 * 14336 // 2 + 4096 * 14336 // 64 + 4096 * 14336 // 8192 + 34)


def test_bitsandbytes_state_matches_the_library():
    """tools/measure/bnb_state.py: the real AdamW8bit's state bytes per tensor (bitsandbytes
    0.50.2 on CPU), including the fp32 fallback under 4096 elements and partial blocks."""
    doc = json.loads((ROOT / "tests" / "fixtures" / "bnb_state_cpu.json").read_text())
    for row in doc["rows"]:
        assert O.bnb_8bit_state(sympy.Integer(row["numel"])) == row["state_bytes"], row


@pytest.mark.parametrize("knobs, expected", [
    (dict(precision="zero16"), "zero16: 16-bit weights 2 + 16-bit grads 2 + fp32 master 4 + adamw state 8 "
                               "= 16 B/param"),
    (dict(precision="pure"), "pure: 16-bit weights 2 + 16-bit grads 2 + adamw state 4 = 8 B/param"),
    (dict(precision="megatron18"), "megatron18: 16-bit weights 2 + fp32 grads 4 + fp32 master 4 + adamw state 8 "
                                   "= 18 B/param"),
])
def test_every_training_output_names_its_bytes_per_parameter(run_cli, knobs, expected):
    model = build(load_spec("llama-3.1-8b"), Scenario(mode="training", profile="megatron", **knobs))
    assert model.inputs["convention"] == expected
    args = [f"--{k.replace('_', '-')}={v}" for k, v in knobs.items()]
    result = run_cli("estimate", "--model", "llama-3.1-8b", "--mode", "training", "--profile", "megatron", *args)
    assert f"profile megatron: {expected}" in result.output


def test_fsdp2_gathers_layers_by_phase_and_custom_sharded_layers():
    """FSDP2: two layers while one computes and the next is prefetched (forward, recompute), one
    between forward and backward (the one backward prefetches), none after backward; the root's
    output gradient unsharded until the root's reduce-scatter at the end. With the configs'
    custom_sharded_layers the embedding and output are their own units: out of the root,
    gathered only when used (the output in its backward, the embedding and its dense gradient
    at the end)."""
    model = _tt(dp=8, zero=3, recompute="full")
    layer = 2 * (4096 * (4096 + 2 * 1024 + 4096) + 3 * 4096 * 14336 + 2 * 4096)  # bf16, the whole all-gather output
    assert model.evaluate().terms["zero3_gathered/layers"] == model.evaluate().terms["zero3_gathered/next"] == layer
    assert "zero3_gathered/next" in model.phases["recompute"] and "zero3_gathered/layers" not in model.phases[
        "loss_forward"] and "zero3_gathered/layers" in model.phases["loss_backward"]
    assert model.evaluate().terms["head_gradient"] == 2 * 128_256 * 4096  # unsharded until the end
    custom = _tt(dp=8, zero=3, recompute="full", custom_sharded_layers=True)
    terms = custom.evaluate().terms
    assert terms["zero3_gathered/root"] == 2 * 4096  # the final norm only
    assert terms["zero3_gathered/lm_head"] == 2 * 128_256 * 4096
    assert terms["zero3_gathered/embedding"] == 2 * 128_256 * 4096 + 2 * 128_256 * 4096
    assert terms["head_gradient"] == 2 * 128_256 * 4096 // 8  # reduce-scattered after the output's backward
    assert "zero3_gathered/embedding" in custom.phases["backward_end"]
    assert "zero3_gathered/lm_head" in custom.phases["loss_backward"]
    with pytest.raises(InputError, match="--custom-sharded-layers needs --dp N"):
        _tt(custom_sharded_layers=True)


def test_fsdp2_keeps_the_root_unsharded_and_cpu_offload_moves_the_state():
    spec = load_spec("llama-3.1-8b")
    eight = _tt(dp=8, zero=3).evaluate().terms
    # embedding + lm_head + final norm, bf16, whole (FSDPParam.init_all_gather_outputs: numel x world size)
    assert eight["zero3_gathered/root"] == 2 * (2 * 128_256 * 4096 + 4096)
    offload = build(spec, Scenario(mode="training", profile="torchtune", batch_size=1, seq_len=512, dp=8, zero=3,
                                   offload="both")).evaluate()
    assert offload.terms["weights"] == offload.terms["optimizer"] == offload.terms["gradients"] == 0
    assert offload.host["optimizer"] == eight["optimizer"]
    assert offload.terms["zero3_gathered/root"] == 2 * (2 * 128_256 * 4096 + 4096)  # local shard on the host too
    with pytest.raises(InputError, match="--offload optimizer is not modelled"):
        _tt(dp=8, zero=3, offload="optimizer")
