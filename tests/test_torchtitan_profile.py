"""The torchtitan profile: saved tensors per block, FSDP2 sharding, torchtitan's pipeline split,
float8 all-gather, CPU offload and refusals, each worked by hand from torchtitan's code."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from engine.api import estimate
from engine.errors import InputError
from engine.families import spec_from_config
from engine.profiles import build
from engine.registry import find, load_spec
from engine.scenario import Scenario
from formulas.frameworks import torchtitan as F
from formulas import symbols as S
from formulas.symbols import vocab_size

LLAMA_8B = 8_030_261_248
H, F_, KV, A, L, V = 4096, 14336, 1024, 32, 32, 128_256


def _ev(model_id="llama-3.1-8b", **knobs):
    knobs = {"seq_len": 4096, "batch_size": 1, **knobs}
    return estimate(model_id, mode="training", profile="torchtitan", **knobs).evaluation


@pytest.mark.parametrize("recompute, per_token", [
    # norm inputs and outputs (4h), q + SDPA out (2h), k + v (2 a_kv d), SwiGLU (4f) at 2 B;
    # two fp32 rstd (8 B) and the fp32 logsumexp (4 a)
    ("none", 2 * (4 * H + 2 * H + 2 * KV + 4 * F_) + 8 + 4 * A),
    # block input, wq and wv outputs, SDPA out, w1 and w2 outputs; logsumexp
    ("op", 2 * (H + H + KV + H + F_ + H) + 4 * A),
    ("full", 2 * H),
])
def test_block_rows_by_hand(recompute, per_token):
    terms = _ev(recompute=recompute).terms
    assert terms["activations/layers"] == per_token * 4096 * L


def reference_first_stage_layers(num_stages, num_layers, input_weight=1, output_weight=1):
    """torchtitan/distributed/pipeline_parallel.py _generate_llm_fqn_per_model_part, stage 0."""
    if num_stages == 1:
        return num_layers
    effective = num_layers + input_weight + output_weight
    per_stage, extra = effective // num_stages, effective % num_stages
    return per_stage + (1 if 0 < extra else 0) - input_weight


@pytest.mark.parametrize("layers, stages", [(126, 8), (32, 4), (32, 1), (80, 8), (61, 4), (30, 7)])
def test_first_stage_split_is_torchtitans(layers, stages):
    assert F.first_stage_layers(layers, stages) == reference_first_stage_layers(stages, layers)


def test_126_layers_over_pp_8():
    """A 126-layer model (Llama-3.1-405B's depth) over 8 stages: 128 effective layers, 16 a
    stage, 15 blocks and the embedding on the first one."""
    config = dict(find("llama-3.1-8b").config, num_hidden_layers=126)
    spec = spec_from_config(config, "llama-126")
    mm = build(spec, Scenario(mode="training", profile="torchtitan", pp=8, dp=8, seq_len=4096, batch_size=1))
    terms = mm.evaluate().terms
    per_token = 2 * (4 * H + 2 * H + 2 * KV + 4 * F_) + 8 + 4 * A
    assert terms["activations/layers"] == per_token * 4096 * 15 * 8  # 15 layers, 8 micro-batches in flight
    block = 2 * H * H + 2 * KV * H + 3 * H * F_ + 2 * H  # q, o; k, v; gate, up, down; two norms
    stage = 15 * block + V * H  # the embedding, no head
    assert terms["weights"] == 4 * stage // 8
    assert terms["fsdp_unsharded_gradients"] == 4 * stage
    assert terms["fsdp_gathered"] == 2 * stage  # reshard_after_forward is off with PP


def test_fsdp_shards_fp32_state():
    t = _ev(dp=8).terms
    assert t["weights"] == t["gradients"] == 4 * LLAMA_8B // 8
    assert t["optimizer"] == 8 * LLAMA_8B // 8


def test_gathered_without_pp_is_two_blocks_and_the_head():
    block = 2 * H * H + 2 * KV * H + 3 * H * F_ + 2 * H
    t = _ev(dp=8).terms
    assert t["fsdp_gathered"] == 2 * (2 * block + V * H + H)


def test_float8_all_gather_halves_the_gathered_linears():
    linear = 2 * H * H + 2 * KV * H + 3 * H * F_
    bf16 = _ev(dp=8, float8=True).terms
    fp8 = _ev(dp=8, float8=True, float8_all_gather=True).terms
    # the blocks' linears only: torchtitan keeps the output projection out of float8
    # (9dec370 float8.py module_filter_fn: fqn != "output"), so it is gathered in bf16 either way
    assert bf16["fsdp_gathered"] - fp8["fsdp_gathered"] == 2 * linear
    # torchao's Float8Linear saves its high-precision input: the activations do not change
    assert bf16["activations"] == fp8["activations"] == _ev(dp=8).terms["activations"]


def test_cpu_offload_moves_parameters_gradients_and_the_step():
    ev = _ev(dp=8, zero=3, offload="both")
    assert ev.terms["weights"] == ev.terms["gradients"] == ev.terms["optimizer"] == 0
    assert sum(ev.host.values()) == 16 * LLAMA_8B // 8
    assert ev.terms["fsdp_gathered"] > 0


def test_loss_keeps_fp32_log_softmax_sharded_over_tensor_ranks():
    one, two = _ev().terms, _ev(tp=2).terms
    assert one["activations/logits"] == 4096 * 4 * V
    assert two["activations/logits"] * 2 == one["activations/logits"]


def test_head_input_is_gathered_over_the_sequence_under_tp():
    """ColwiseParallel(input_layouts=Shard(1)) all-gathers the final norm's output: the output
    projection saves all 4096 tokens' 2h bytes on each tensor rank; the norm itself keeps its
    sequence shard's input (2h) and fp32 rstd (4 B)."""
    one, two = _ev().terms, _ev(tp=2).terms
    assert one["activations/head_input"] == two["activations/head_input"] == 4096 * 2 * H
    assert one["activations/final_norm"] == 4096 * (2 * H + 4)
    assert two["activations/final_norm"] == 2048 * (2 * H + 4)


def test_loss_parallel_backward_holds_three_fp32_logits():
    """_nll_loss_and_log_softmax_backward: zeros_like(x), exp(x) and their sum (12 V per token of
    the vocabulary shard) beside the saved log-softmax; without TP nll_loss's and log_softmax's
    gradients (8 V). Llama-3.1-8B, b s = 4096, tp 2: 4096 * 12 * 64128 B."""
    assert _ev().terms["loss_backward"] == 4096 * 8 * V
    assert _ev(tp=2).terms["loss_backward"] == 4096 * 12 * (V // 2) == 3_152_019_456


@pytest.mark.parametrize("knob, values", [("dp", [1, 2, 8, 64]), ("tp", [1, 2, 4, 8]), ("cp", [1, 2, 4])])
def test_per_gpu_memory_never_grows_with_a_degree(knob, values):
    totals = [_ev(seq_len=8192, recompute="op", **{knob: v}).total_bytes for v in values]
    assert totals == sorted(totals, reverse=True)


@pytest.mark.parametrize("knobs, needle", [
    (dict(recompute="selective"), "--recompute selective"),
    (dict(zero=2, dp=8), "--zero 2"),
    (dict(zero=3, dp=8, offload="optimizer"), "--offload optimizer"),
    (dict(float8_all_gather=True), "--float8-all-gather"),
    (dict(attention="eager"), "--attention eager"),
    (dict(compile_components="model"), "--compile-components model"),
])
def test_refusals_name_the_knob(knobs, needle):
    with pytest.raises(InputError, match=f"--profile torchtitan: {needle}"):
        _ev(**knobs)


def test_moe_models_are_refused():
    with pytest.raises(InputError, match="--profile torchtitan: mixtral"):
        _ev("mixtral-8x7b-v0.1")


def test_other_profiles_refuse_the_new_knobs():
    with pytest.raises(InputError, match="--profile megatron: --float8"):
        estimate("llama-3.1-8b", mode="training", float8=True, profile="megatron")
    with pytest.raises(InputError, match="--recompute op"):
        estimate("llama-3.1-8b", mode="training", recompute="op")


def test_short_sequences_peak_in_the_heads_backward():
    """At b s = 256 the head's unsharded gradient (bf16 + its fp32 reduce-scatter copy,
    6 V h B) outweighs the loss's fp32 gradients (8 b s V B)."""
    ev = _ev(dp=8, seq_len=256)
    t = ev.terms
    assert ev.peak_phase == "head_backward"
    assert t["fsdp_head_backward"] == 2 * 256 * V + 6 * V * H
    assert t["loss_backward"] == 8 * 256 * V
    held = t["weights"] + t["optimizer"] + t["fsdp_gathered"] + t["activations"]
    assert ev.total_bytes == held + t["fsdp_head_backward"]


def reference_stage_indices(pp_rank, pp_degree, num_stages):
    """_get_pp_rank_to_stage_indices_mapping, loop style (Interleaved 1F1B)."""
    return tuple(pp_rank + s * pp_degree for s in range(num_stages // pp_degree))


def reference_stage_layers(num_stages, num_layers, input_weight=1, output_weight=1):
    """_generate_llm_fqn_per_model_part: transformer layers of every stage."""
    effective = num_layers + input_weight + output_weight
    per_stage, extra = effective // num_stages, effective % num_stages
    out = []
    for stage_idx in range(num_stages):
        n = per_stage + (1 if stage_idx < extra else 0)
        if stage_idx == 0:
            n -= input_weight
        elif stage_idx == num_stages - 1:
            n -= output_weight
        out.append(n)
    return out


@pytest.mark.parametrize("layers, ranks, virtual", [(32, 4, 2), (126, 8, 2), (80, 4, 5)])
def test_interleaved_rank_0_holds_its_virtual_stages(layers, ranks, virtual):
    counts = reference_stage_layers(ranks * virtual, layers)
    assert F.stage_layers(layers, ranks * virtual) == counts
    expected = sum(counts[i] for i in reference_stage_indices(0, ranks, ranks * virtual))
    assert F.first_stage_layers(layers, ranks, virtual) == expected


BLOCK = 2 * H * H + 2 * KV * H + 3 * H * F_ + 2 * H  # 218,112,000: q, o; k, v; gate, up, down; two norms


def test_stream_pools_and_the_logits_hole_are_reserved_not_allocated():
    """FSDP2's all-gather copy-in pool holds the last block's output while [norm, lm_head]
    (V h + h bf16) is gathered, with that unit's shards cast to bf16 (1/8 of it); the
    reduce-scatter pool the fp32 gradient shards; the freed bf16 logits (2 V per token) stay
    reserved at the start of backward. None is in total_bytes."""
    mm = build(load_spec("llama-3.1-8b"), Scenario(mode="training", profile="torchtitan", dp=8, seq_len=4096, batch_size=1))
    ev = mm.evaluate()
    t = ev.terms
    head = 2 * (V * H + H)
    assert t["reserved_all_gather_pool"] == 2 * BLOCK + head + head // 8 == 1_618_240_512
    assert t["reserved_reduce_scatter_pool"] == t["gradients"] == 4 * LLAMA_8B // 8
    assert t["reserved_logits_hole"] == 2 * V * 4096 == 1_050_673_152
    assert mm.reserved_only["backward"] == ("reserved_all_gather_pool", "reserved_reduce_scatter_pool",
                                            "reserved_logits_hole")
    assert "reserved_reduce_scatter_pool" not in mm.reserved_only["backward_end"]  # its shards are live there
    assert not any(n.startswith("reserved_") for names in mm.phases.values() for n in names)
    backward = sum(t[n] for n in mm.phases["backward"])
    assert ev.total_bytes == backward
    bare = replace(mm, reserved_only={}).evaluate().reserved_bytes
    cached = t["reserved_all_gather_pool"] + t["reserved_reduce_scatter_pool"] + t["reserved_logits_hole"]
    # the large pool is mapped in 20 MiB pages (expandable segments): the sum, to one page
    assert abs(ev.reserved_bytes - bare - cached) < 20 * 2**20


def test_pp_keeps_stage_outputs_and_receive_buffers():
    """First rank, 1F1B, p = 8 micro-batches: 8 in-flight stage outputs and 8 gradient receive
    buffers of b s h bf16 (tp 1: 4096 x 8192 B each); interleaved (v = 2) adds the second
    stage's 8 gradient and 8 input buffers, and its warm-up is capped at every micro-batch."""
    config = dict(find("llama-3.1-8b").config, num_hidden_layers=126)
    spec = spec_from_config(config, "llama-126")
    one = dict(mode="training", profile="torchtitan", pp=8, dp=8, seq_len=4096, batch_size=1, recompute="full")
    flat = build(spec, Scenario(**one)).evaluate().terms
    looped = build(spec, Scenario(**one, vpp=2)).evaluate().terms
    output = 2 * H * 4096
    assert flat["pp_buffers"] == output * (8 + 8) == 536_870_912
    assert looped["pp_buffers"] == output * (8 + 3 * 8)
    # 16 stages of 126 + 2 effective layers: rank 0 holds stages 0 (7 blocks) and 8 (8 blocks)
    assert flat["activations/layers"] == 2 * H * 4096 * 15 * 8
    assert looped["activations/layers"] == 2 * H * 4096 * 15 * 8


@pytest.mark.parametrize("recompute, per_token", [
    # the norms' outputs, k, and SwiGLU's w3 output, silu's and the product, two fp32 rstd
    ("op", 2 * (2 * H + KV + 3 * F_) + 8),
    # everything but the block's input
    ("full", 2 * (3 * H + 2 * H + 2 * KV + 4 * F_) + 8 + 4 * A),
])
def test_a_block_backward_rebuilds_what_the_policy_did_not_save(recompute, per_token):
    """Without PP the rebuilt block lives after the loss's temporaries are freed: its own phase."""
    mm = build(load_spec("llama-3.1-8b"), Scenario(mode="training", profile="torchtitan", dp=8, seq_len=4096, batch_size=1,
                                     recompute=recompute))
    t = mm.evaluate().terms
    assert t["recomputed_block"] == per_token * 4096
    assert "recomputed_block" in mm.phases["block_backward"]
    assert "recomputed_block" not in mm.phases["backward"]


def test_one_data_parallel_rank_has_no_fsdp_stream_pools():
    """torchtitan applies fully_shard only when dp_shard x cp > 1: no FSDP streams to keep pools."""
    t = _ev(dp=1).terms
    assert t["reserved_all_gather_pool"] == t["reserved_reduce_scatter_pool"] == 0
    assert _ev(dp=1, cp=2).terms["reserved_reduce_scatter_pool"] == 4 * LLAMA_8B // 2


def test_loss_peak_matches_the_cpu_measurement():
    """tests/fixtures/titan_loss_cpu.json (tools/measure/titan_loss.py, torch 2.13 CPU): the
    loss's peak beyond the projection's leaves is the saved log-softmax plus loss_backward,
    12 and 16 bytes per token and vocabulary entry; compiled 4 (pred and its bf16 gradient)
    and, torchtitan's TP loss, 10 at its forward peak; the rest is per-token index tensors."""
    data = json.loads((Path(__file__).parent / "fixtures" / "titan_loss_cpu.json").read_text())
    compiled = F.compiled_loss_saved() + F.compiled_loss_backward()
    for point in data["points"]:
        tokens, vocab = point["tokens"], point["vocab"]
        for key, per_token in (("plain_peak_bytes", F.loss_saved() + F.loss_backward()),
                               ("loss_parallel_peak_bytes", F.loss_saved() + F.loss_backward(loss_parallel=True)),
                               ("compiled_peak_bytes", compiled),
                               ("compiled_loss_parallel_peak_bytes",
                                F.compiled_loss_parallel_saved() + F.compiled_loss_parallel_forward())):
            predicted = int(per_token.subs(vocab_size, vocab).subs(S.activation_bytes, 2)) * tokens
            assert 0 <= point[key] - predicted <= 64 * tokens, (point, key)


def test_compiled_loss_keeps_pred_and_writes_a_bf16_gradient():
    """compile.components with "loss" (the default): the compiled graph saves pred (2 V) and two
    fp32 values per token; its backward writes the bf16 gradient (2 V); nothing is freed before
    backward, so no hole. --compile-components model keeps the eager loss (torchtitan 9dec370)."""
    eager, compiled = _ev(compile_components="model", torch_compile=True).terms, _ev(torch_compile=True).terms
    assert compiled["activations/logits"] == 4096 * (2 * V + 8)
    assert compiled["loss_backward"] == 4096 * 2 * V
    assert compiled["reserved_logits_hole"] == 0
    assert eager["activations/logits"] == 4096 * 4 * V and eager["loss_backward"] == 4096 * 8 * V


def test_compiled_tp_loss_peaks_in_its_forward():
    """torchtitan's _LossParallelCrossEntropy compiled: the fp32 sum it saves (4 V per token of
    the vocabulary shard), pred and the one-hot buffer beside it in forward (2 + 4), the bf16
    gradient in backward (2); Llama-3.1-8B, tp 2, b s = 4096: V / 2 = 64,128 per token."""
    mm = build(load_spec("llama-3.1-8b"), Scenario(mode="training", profile="torchtitan", tp=2, seq_len=4096,
                                                   batch_size=1, torch_compile=True))
    t = mm.evaluate().terms
    assert t["activations/logits"] == 4096 * 4 * 64_128
    assert t["loss_forward"] == 4096 * 6 * 64_128 and t["loss_backward"] == 4096 * 2 * 64_128
    assert "loss_forward" in mm.phases["loss_forward"] and "loss_forward" not in mm.phases["backward"]


# --- the other pipeline ranks (torch 2.6.0 torch/distributed/pipelining, torchtitan 9dec370) -------

def _pp126(**knobs):
    """The 8B block at 126 layers (Llama-3.1-405B's depth): 15, 16 x 6, 15 blocks over 8 stages."""
    config = dict(find("llama-3.1-8b").config, num_hidden_layers=126)
    spec = spec_from_config(config, "llama-126")
    scenario = dict(mode="training", profile="torchtitan", pp=8, dp=8, seq_len=4096, batch_size=1,
                    recompute="full", **knobs)
    return build(spec, Scenario(**scenario))


def test_last_rank_keeps_every_microbatchs_logits():
    """The last stage keeps each of its n = p micro-batches' bf16 logits in output_chunks (stage.py
    forward_one_chunk) and runs each micro-batch's loss right after its forward (1F1B warms it up
    with one): at the last one's loss backward, 8 logits, one micro-batch of its 15 blocks, the
    final norm, the gathered head input and the loss (fp32 log-softmax + two fp32 gradients)."""
    mm = _pp126()
    t = mm.evaluate().terms
    tokens = 4096
    assert t["pp_last_rank/output_chunks"] == 8 * 2 * V * tokens
    assert t["pp_last_rank/loss"] == (4 + 8) * V * tokens
    assert t["pp_last_rank/activations"] == 2 * H * tokens * 15 + (2 * H + 4) * tokens + 2 * H * tokens
    # 7 done micro-batches' input buffers and the input gradients left in their .grad
    assert t["pp_last_rank/pp_buffers"] == 2 * H * tokens * 2 * 7
    stage = 15 * BLOCK + V * H + H  # its blocks, the output projection and the final norm; no embedding
    assert t["pp_last_rank/fsdp_unsharded_gradients"] == 4 * stage
    assert t["pp_last_rank/fsdp_gathered"] == 2 * stage
    assert t["pp_last_rank/weights"] == 4 * stage // 8
    parts = [n for n in mm.terms if n.startswith("pp_last_rank/")]
    assert t["pp_last_rank"] == sum(t[n] for n in parts)
    # merge_chunks concatenates the kept logits beside them once every backward is done
    assert t["pp_last_rank_step_end/merged_output"] == t["pp_last_rank/output_chunks"]
    assert mm.phases["last_rank_backward"] == ("pp_last_rank", "overhead")


def test_loss_parallel_keeps_the_last_ranks_logits_sharded():
    t = _pp126(tp=2).evaluate().terms
    assert t["pp_last_rank/output_chunks"] == 8 * 2 * (V // 2) * 4096
    assert t["pp_last_rank/loss"] == (4 + 12) * (V // 2) * 4096


def test_other_ranks_exist_only_under_pp():
    assert not any(n.startswith("pp_") for n in build(load_spec("llama-3.1-8b"), Scenario(
        mode="training", profile="torchtitan", dp=8, seq_len=4096, batch_size=1)).terms)
    two = build(load_spec("llama-3.1-8b"), Scenario(mode="training", profile="torchtitan", pp=2, dp=4,
                                                    seq_len=4096, batch_size=1)).terms
    assert "pp_last_rank" in two and "pp_middle_rank" not in two  # p = 2: a first and a last rank


def test_float8_all_gather_leaves_the_output_projection_in_bf16_on_the_last_rank():
    """torchtitan filters the output out of float8 (module_filter_fn fqn != "output")."""
    t = _pp126(float8=True, float8_all_gather=True).evaluate().terms
    linear = 2 * H * H + 2 * KV * H + 3 * H * F_
    assert t["pp_last_rank/fsdp_gathered"] == 15 * (linear + 2 * 2 * H) + 2 * (V * H + H)


def test_middle_rank_is_rank_1():
    """Rank 1 holds stage 1's 16 blocks and warms up with p - 1 = 7 micro-batches."""
    t = _pp126().evaluate().terms
    rebuilt = 2 * (3 * H + 2 * H + 2 * KV + 4 * F_) + 8 + 4 * A  # one block's backward: all but its input
    assert t["pp_middle_rank/activations"] == 2 * H * 4096 * 16 * 7 + rebuilt * 4096
    assert t["pp_middle_rank/fsdp_unsharded_gradients"] == 4 * 16 * BLOCK
    assert t["pp_middle_rank/pp_buffers"] == 2 * H * 4096 * 2 * 8


def _simulated_in_flight(layers, ranks, virtual, rank):
    """Replays the rank's actions (Schedule1F1B: warm-up forwards, then backward-forward pairs;
    _get_1f1b_rank_ops: warm-up forwards, then forward-backward pairs, then the cooldown) with
    n = p micro-batches and returns the most layer-micro-batches alive at any backward's start."""
    from formulas.frameworks import torchtitan_pp as PP

    stages, n = PP.rank_stages(layers, ranks, virtual, rank), ranks
    total = n * virtual
    if virtual == 1:
        warmup = min(n, ranks - rank)
        order = ["F"] * warmup + ["B", "F"] * (n - warmup) + ["B"] * warmup
    else:
        warmup = min((virtual - 1) * n + 2 * (ranks - 1 - rank), total)
        order = ["F"] * warmup + ["F", "B"] * (total - warmup) + ["B"] * warmup
    fwd = bwd = 0
    alive, peak = [], 0
    for op in order:
        if op == "F":
            alive.append(stages[(fwd // n) % virtual])
            fwd += 1
        else:
            peak = max(peak, sum(alive))
            local = virtual - 1 - (bwd // n) % virtual  # backward_stage_index
            alive.remove(stages[local])
            bwd += 1
    return peak


@pytest.mark.parametrize("layers, ranks, virtual", [(126, 8, 1), (126, 8, 2), (32, 4, 2), (80, 4, 1), (61, 4, 3)])
def test_in_flight_layers_replay_the_schedules(layers, ranks, virtual):
    from formulas.frameworks import torchtitan_pp as PP

    for rank in range(ranks):
        assert PP.in_flight_layers(layers, ranks, virtual, rank) == _simulated_in_flight(layers, ranks, virtual, rank)
    # rank 0's is the p micro-batches of all its layers the first rank's activations count
    assert PP.in_flight_layers(layers, ranks, virtual, 0) == ranks * F.first_stage_layers(layers, ranks, virtual)


def test_interleaved_last_rank_holds_its_earlier_stage():
    """Interleaved 1F1B warms the last rank up with all 8 micro-batches of stage 7 (8 blocks),
    then alternates stage 15's (7 blocks): 8 x 8 + 7 layer-micro-batches; stage 7's outputs and
    gradient receive buffers (8 each) beside stage 15's done buffers."""
    t = _pp126(vpp=2).evaluate().terms
    assert t["pp_last_rank/activations"] == 2 * H * 4096 * (8 * 8 + 7) + (2 * H + 4) * 4096 + 2 * H * 4096
    assert t["pp_last_rank/pp_buffers"] == 2 * H * 4096 * (2 * 7 + 2 * 8)
