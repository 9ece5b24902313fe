"""The torchtitan profile's per-stage parts: what one pipeline stage's tensors come to (FSDP2
units, stream pools, the loss), and the last pipeline rank's own peak.

The first rank is :mod:`engine.profiles.torchtitan`'s main model. Under PP the benchmarks
report the maximum over ranks, so the profile also builds the last rank
(:func:`last_rank`, formulas in :mod:`formulas.frameworks.torchtitan_pp`): its blocks with
``[norm, output]`` instead of the embedding, one micro-batch in flight (1F1B), and every
micro-batch's logits kept by ``torch.distributed.pipelining`` until the step ends.
"""

from __future__ import annotations

import sympy

from engine import architecture
from engine.scenario import Scenario
from engine.spec import ModelSpec
from formulas import parallelism as par
from formulas import symbols as S
from formulas.frameworks import torchtitan as F
from formulas.frameworks import torchtitan_pp as PP
from formulas.parameters import WeightTensor


def tp_share(t: WeightTensor) -> sympy.Expr:
    """Fraction of one tensor (all its layers) a tensor rank holds: the share without PP."""
    return par.gpu_share(t) * (S.pipeline_parallel if par.is_per_layer(t) else 1)


def count(tensors, fraction, per_layer: bool | None = None, linear_only: bool = False) -> sympy.Expr:
    """Elements of ``tensors`` on one GPU, ``fraction`` of the per-layer ones."""
    total = sympy.Integer(0)
    for t in tensors:
        if per_layer is not None and par.is_per_layer(t) != per_layer:
            continue
        if linear_only and not t.quantizable:
            continue
        total += t.numel * tp_share(t) * (fraction if par.is_per_layer(t) else 1)
    return total


def units(spec: ModelSpec, scenario: Scenario, tensors) -> tuple[sympy.Expr, list[tuple[str, sympy.Expr]]]:
    """(one block's all-gathered bytes, [(component, bytes)] of the units outside the blocks):
    bf16 ``param_dtype``, fp8 for float8-gathered linears. torchtitan leaves the output
    projection out of float8 (9dec370 ``float8.py``: ``module_filter_fn=lambda mod, fqn: fqn !=
    "output"``; b5bcd76c's Llama-3 configs ``filter_fqns=["lm_head"]``), so it is gathered in
    bf16 on every rank, with or without PP."""
    width = S.weight_bytes
    linear_width = F.FP8_BYTES if scenario.float8_all_gather else width
    block = count(tensors, 1 / S.num_hidden_layers, per_layer=True)
    block_linear = count(tensors, 1 / S.num_hidden_layers, per_layer=True, linear_only=True)
    per_block = width * (block - block_linear) + linear_width * block_linear
    outer = [(t.component, width * t.numel * tp_share(t))
             for t in tensors if not par.is_per_layer(t)]
    return per_block, outer


def pools(spec: ModelSpec, scenario: Scenario, tensors, gradient_shards) -> dict[str, sympy.Expr]:
    """The FSDP2 streams' pools (``F.all_gather_pool``, ``F.reduce_scatter_pool``): reserved,
    never allocated at the peak. Forward all-gathers the embedding, the blocks in order, then
    ``[norm, lm_head]`` (units of their own: ``apply_fsdp_to_decoder``; tied: one unit with both);
    the largest of the consecutive pairs is the pool."""
    per_block, outer = units(spec, scenario, tensors)
    heads = {}
    for name, size in outer:
        unit = "embedding" if name == "embedding" or spec.tie_word_embeddings else "head"
        heads[unit] = heads.get(unit, sympy.Integer(0)) + size
    shard = S.data_parallel * S.context_parallel
    pairs = [F.all_gather_pool(heads.get("embedding", per_block), per_block, shard),
             F.all_gather_pool(per_block, per_block, shard)]
    if "head" in heads:
        pairs.append(F.all_gather_pool(per_block, heads["head"], shard))
    if scenario.offload == "both":  # CPUOffloadPolicy copies each shard to the host: one block's in flight
        gradient_shards = F.FP32_BYTES * count(tensors, 1 / S.num_hidden_layers, per_layer=True) / shard
    built = {"reserved_all_gather_pool": sympy.Max(*pairs),
             "reserved_reduce_scatter_pool": F.reduce_scatter_pool(gradient_shards)}
    if scenario.dp * scenario.cp == 1:  # no fully_shard (parallel_dims fsdp_enabled): no FSDP streams
        return {name: sympy.Integer(0) for name in built}
    return built


def compiled_loss(scenario: Scenario) -> bool:
    """``--compile`` compiles the loss too unless ``--compile-components model``."""
    return scenario.torch_compile and scenario.compile_components != "model"


def logits_saved(scenario: Scenario, tokens: sympy.Expr) -> sympy.Expr:
    """What the loss keeps for backward: eager, the fp32 log-softmax; compiled, ``pred`` and two
    fp32 values per token, or under TP the fp32 sum the partitioner moved into the forward."""
    if not compiled_loss(scenario):
        return F.loss_saved() * tokens
    if scenario.tp > 1:
        return F.compiled_loss_parallel_saved() * tokens
    return F.compiled_loss_saved() * tokens + F.compiled_loss_stats() * F.tokens() / S.context_parallel


def stage_tensors(spec: ModelSpec, rank: int, ranks: int) -> list[WeightTensor]:
    """Pipeline rank ``rank``'s tensors: its blocks; the first the embedding, the last the final
    norm and the output projection (tied: the embedding's weight serves as the output's)."""
    kept = []
    for t in architecture.parameter_tensors(spec):
        head = t.component == "lm_head" or t.name == "norm/final"
        if par.is_per_layer(t) or (rank == 0 and t.component == "embedding") or (rank == ranks - 1 and (
                head or (t.component == "embedding" and spec.tie_word_embeddings))):
            kept.append(t)
    return kept


def _rank_state(spec: ModelSpec, scenario: Scenario, rank: int) -> tuple[dict, list, sympy.Expr]:
    """({weights, optimizer, fsdp_gathered, fsdp_unsharded_gradients} of pipeline rank ``rank``
    during its backward, its tensors, its gradient shards). Under PP ``reshard_after_forward`` is
    off: every block of the rank stays gathered; gradients accumulate unsharded in fp32."""
    virtual = scenario.vpp or 1
    layers = sum(PP.rank_stages(spec.num_hidden_layers, scenario.pp, virtual, rank))
    tensors = stage_tensors(spec, rank, scenario.pp)
    trained = count(tensors, sympy.Rational(layers, spec.num_hidden_layers))
    shard = S.data_parallel * S.context_parallel
    per_block, outer = units(spec, scenario, tensors)
    state = {"weights": F.fsdp_parameter_shard(trained, shard), "optimizer": S.optimizer_bytes * trained / shard,
             "fsdp_gathered": layers * per_block + sympy.Add(*(size for _, size in outer)),
             "fsdp_unsharded_gradients": F.FP32_BYTES * trained}
    shards = F.fsdp_gradient_shard(trained, shard)
    if scenario.offload == "both":  # CPUOffloadPolicy: the shards and the step on the host, as on the first rank
        state.update(weights=sympy.Integer(0), optimizer=sympy.Integer(0))
        return state, tensors, sympy.Integer(0)
    return state, tensors, shards


def _named(prefix: str, parts: dict) -> dict:
    return {prefix: sympy.Add(*parts.values()), **{f"{prefix}/{k}": v for k, v in parts.items()}}


def middle_rank(spec: ModelSpec, scenario: Scenario) -> tuple[dict, dict, dict]:
    """(terms, phases, reserved_only) of pipeline rank 1, the most loaded between the first and
    the last (``p > 2``): the most in-flight micro-batches of them and, as the split gives the
    remainder to the first stages, the most layers. ``pp_middle_rank`` at its first backward."""
    virtual = scenario.vpp or 1
    state, tensors, shards = _rank_state(spec, scenario, 1)
    tokens = F.tokens() / (S.tensor_parallel * S.context_parallel)
    saved = F.block_saved(scenario.recompute, scenario.torch_compile)
    in_flight = PP.in_flight_layers(spec.num_hidden_layers, scenario.pp, virtual, 1)
    parts = {**state, "activations": saved * tokens * in_flight,
             "pp_buffers": PP.middle_rank_buffers(S.activation_bytes * S.hidden_size * tokens,
                                                  S.pipeline_parallel, virtual)}
    if scenario.recompute != "none":  # a block's backward rebuilds what the policy did not save
        parts["activations"] += (F.block_saved("none", scenario.torch_compile) - saved) * tokens
    cached = pools(spec, scenario, tensors, shards)
    built = {**_named("pp_middle_rank", parts),
             **{name.replace("reserved_", "reserved_middle_rank_"): size for name, size in cached.items()}}
    return built, {"middle_rank_backward": ["pp_middle_rank"]}, {
        "middle_rank_backward": ("reserved_middle_rank_all_gather_pool", "reserved_middle_rank_reduce_scatter_pool")}


def _loss_peak(scenario: Scenario, tokens: sympy.Expr) -> sympy.Expr:
    """The last micro-batch's loss at its peak beside ``pred`` (kept in ``output_chunks``)."""
    if not compiled_loss(scenario):
        return (F.loss_saved() + F.loss_backward(loss_parallel=scenario.tp > 1)) * tokens
    if scenario.tp > 1:  # the compiled TP loss peaks in its forward (F.compiled_loss_parallel_forward)
        return F.compiled_loss_parallel_saved() * tokens + sympy.Max(
            F.compiled_loss_parallel_forward(), F.compiled_loss_backward()) * tokens
    # the compiled loss saves pred itself, already kept: its two fp32 values and the bf16 gradient
    return F.compiled_loss_stats() * F.tokens() / S.context_parallel + F.compiled_loss_backward() * tokens


def last_rank(spec: ModelSpec, scenario: Scenario) -> tuple[dict, dict, dict]:
    """(terms, phases, reserved_only) of the last pipeline rank: ``pp_last_rank`` (its last
    micro-batch's loss backward) and ``pp_last_rank_step_end`` (``merge_chunks``' moment)."""
    virtual, last = scenario.vpp or 1, scenario.pp - 1
    state, tensors, shards = _rank_state(spec, scenario, last)
    tokens = F.tokens() / (S.tensor_parallel * S.context_parallel)
    n, stage_output = S.pipeline_parallel, S.activation_bytes * S.hidden_size * tokens
    in_flight = PP.in_flight_layers(spec.num_hidden_layers, scenario.pp, virtual, last)
    logits = PP.logits_kept() * tokens
    parts = {
        **state,
        "activations": F.block_saved(scenario.recompute, scenario.torch_compile) * tokens * in_flight
        + F.final_norm_saved() * tokens + F.head_input_saved() * F.tokens() / S.context_parallel,
        "output_chunks": PP.output_chunks(logits, n),
        "loss": _loss_peak(scenario, tokens),
        "pp_buffers": PP.last_rank_buffers(stage_output, n, virtual),
    }
    # every backward done: the gradients reduce-scattered into shards, the blocks resharded
    ends = {"state": state["weights"] + state["optimizer"] + shards,
            "output_chunks": parts["output_chunks"], "merged_output": PP.merged_output(logits, n),
            "pp_buffers": PP.step_end_buffers(stage_output, n, virtual)}
    cached = pools(spec, scenario, tensors, shards)
    built = {**_named("pp_last_rank", parts), **_named("pp_last_rank_step_end", ends),
             **{name.replace("reserved_", "reserved_last_rank_"): size for name, size in cached.items()}}
    phases = {"last_rank_backward": ["pp_last_rank"], "last_rank_step_end": ["pp_last_rank_step_end"]}
    reserved = {"last_rank_backward": ("reserved_last_rank_all_gather_pool", "reserved_last_rank_reduce_scatter_pool"),
                "last_rank_step_end": ("reserved_last_rank_all_gather_pool",)}
    return built, phases, reserved
