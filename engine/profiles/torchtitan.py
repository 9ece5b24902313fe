"""The ``torchtitan`` profile: FSDP2 with mixed precision, TP/SP, PP with torchtitan's split,
CP, per-op selective and full activation checkpointing, float8 linears.

Per GPU of the first pipeline stage (:mod:`formulas.frameworks.torchtitan`):

- ``weights``, ``gradients``, ``optimizer``: fp32 parameters, their fp32 gradients and the
  AdamW moments, sharded over the FSDP mesh ``N_d N_c`` (``fully_shard`` per block, the
  embedding, norm + output);
- ``fsdp_gathered``: bf16 unsharded parameters alive at the start of backward: without PP the
  last block and the prefetched one, and ``[norm, lm_head]`` (never resharded after forward);
  with PP every block of the stage and the embedding (``reshard_after_forward`` is off with
  PP: ``get_fsdp_reshard_after_forward_policy``); ``--float8-all-gather`` gathers linear
  weights in fp8;
- ``fsdp_unsharded_gradients`` (PP): gradients accumulated unsharded in fp32 over the
  micro-batches until the last one reduce-scatters (``set_requires_gradient_sync(False)``);
- ``activations``: what each block saves (``--recompute none|op|full``), the first rank's
  in-flight micro-batches (``p`` for 1F1B and Interleaved 1F1B), without PP the final norm's,
  the output projection's (TP: its input all-gathered over the sequence) and the loss's fp32
  log-softmax; ``recomputed_block`` / ``activations/recomputed``: what a block's backward
  rebuilds; ``pp_buffers``: the pipelining stage outputs and receive buffers;
- ``loss_backward``: the logits' fp32 gradients (loss parallel under TP: three of them);
- ``fsdp_reduce_scatter``: one block's unsharded gradients and their fp32 reduce-scatter copy.

With PP the benchmarks report the maximum over ranks, so the last rank (``pp_last_rank``: every
micro-batch's logits kept by the pipelining stage, one micro-batch's loss; ``pp_last_rank_step_end``:
``merge_chunks``' concatenation) and rank 1 (``pp_middle_rank``) are built beside the first, each
in phases of its own (:mod:`engine.profiles.torchtitan_stages`).

Reserved only (``MemoryModel.reserved_only``, in ``reserved_bytes`` and never in
``total_bytes``): the FSDP2 all-gather and reduce-scatter streams' pools and the freed bf16
logits the loss's gradients do not fit (``reserved_*``).

Phases: ``backward`` (its start: activations and the loss's gradients at their peak),
``head_backward`` (no PP: the loss's temporaries freed, the head's gradients made),
``block_backward`` (no PP, with AC: the last block rebuilt) and ``backward_end`` (every
gradient shard, one reduce-scatter in flight). The fused AdamW step (``implementation =
"fused"``) makes no temporaries. ``--offload both`` is FSDP2's ``CPUOffloadPolicy``
(``training.enable_cpu_offload``): parameters, gradients and the step on the CPU.
"""

from __future__ import annotations

import sympy

from engine import architecture, terms
from engine.errors import InputError
from engine.model import MemoryModel
from engine.profiles import Profile
from engine.profiles import torchtitan_stages as ST
from engine.scenario import Scenario
from engine.spec import ModelSpec
from formulas import parallelism as par
from formulas import symbols as S
from formulas.frameworks import torchtitan as F
from formulas.optimizer import FACTORED_OPTIMIZERS
from formulas.parameters import WeightTensor


def check(spec: ModelSpec, scenario: Scenario) -> None:
    terms.check_degrees(spec, scenario, uneven_pp=True)
    llama_like = all(g.mixer == "attention" and g.mlp == "dense" and g.mlp_args.get("gated", True)
                     for g in spec.layers)
    if not llama_like:
        raise InputError(f"--profile torchtitan: {spec.name} ({spec.architecture}) is not modelled; the profile "
                         "covers dense Llama-3-style decoders (SwiGLU, no sliding window)")
    refusals = [
        (scenario.recompute not in F.AC_MODES, f"--recompute {scenario.recompute}", "torchtitan has none, op, full"),
        (scenario.attention == "eager", "--attention eager", "torchtitan runs SDPA or flex attention"),
        (scenario.zero not in (0, 3), f"--zero {scenario.zero}", "FSDP2 fully_shard is ZeRO-3 (--zero 3 or none)"),
        (scenario.offload not in ("none", "both"), f"--offload {scenario.offload}",
         "FSDP2's CPUOffloadPolicy moves parameters, gradients and the step together: --offload both"),
        (scenario.precision != "auto", f"--precision {scenario.precision}",
         "FSDP2 keeps fp32 parameters and casts to --dtype (mixed_precision_param)"),
        (scenario.optimizer in FACTORED_OPTIMIZERS, f"--optimizer {scenario.optimizer}", "not a torch.optim choice"),
        (scenario.float8_all_gather and not scenario.float8, "--float8-all-gather", "it needs --float8"),
        (scenario.compile_components is not None and not scenario.torch_compile,
         f"--compile-components {scenario.compile_components}", "it needs --compile"),
        (scenario.pp > 1 and not _splits(spec, scenario),
         f"--pp {scenario.pp}" + (f" --vpp {scenario.vpp}" if scenario.vpp else ""),
         f"torchtitan's split (_generate_llm_fqn_per_model_part) leaves a stage no layer of "
         f"{spec.num_hidden_layers}"),
    ]
    for refused, what, why in refusals:
        if refused:
            raise InputError(f"--profile torchtitan: {what} is not modelled ({why})")


def _splits(spec: ModelSpec, scenario: Scenario) -> bool:
    """torchtitan's own checks: at least one effective layer per stage, and the embedding's
    and output's weights within the smallest stage; rank 0 keeps a transformer layer."""
    stages = scenario.pp * (scenario.vpp or 1)
    per_stage = (spec.num_hidden_layers + F.FIRST_STAGE_LESS_LAYERS + F.LAST_STAGE_LESS_LAYERS) // stages
    limit = max(F.FIRST_STAGE_LESS_LAYERS, F.LAST_STAGE_LESS_LAYERS)
    return per_stage >= limit and per_stage >= 1 and _rank_layers(spec, scenario) >= 1


def _rank_layers(spec: ModelSpec, scenario: Scenario) -> int:
    virtual = scenario.vpp if scenario.pp > 1 and scenario.vpp is not None else 1
    return F.first_stage_layers(spec.num_hidden_layers, scenario.pp, virtual)


def _stage_tensors(spec: ModelSpec, scenario: Scenario) -> tuple[list[WeightTensor], sympy.Expr]:
    """(tensors on the first stage, the fraction of the per-layer tensors it holds)."""
    tensors = terms.first_stage(architecture.parameter_tensors(spec), scenario)
    layers = _rank_layers(spec, scenario)
    return tensors, sympy.Rational(layers, spec.num_hidden_layers)


def _gathered(spec: ModelSpec, scenario: Scenario, tensors, fraction) -> sympy.Expr:
    """bf16 (fp8 for float8-gathered linears) unsharded parameters at the start of backward."""
    per_block, outer = ST.units(spec, scenario, tensors)
    blocks = _rank_layers(spec, scenario) if scenario.pp > 1 else par.ZERO3_LIVE_LAYERS
    blocks = sympy.Min(blocks, S.num_hidden_layers)
    # pp == 1: [norm, lm_head] is never resharded after forward (tied: with the embedding);
    # pp > 1: the first stage's embedding unit is not resharded either
    if scenario.pp == 1 and not spec.tie_word_embeddings:
        outer = [(name, size) for name, size in outer if name != "embedding"]
    return blocks * per_block + sympy.Add(*(size for _, size in outer))


def _activations(spec: ModelSpec, scenario: Scenario) -> dict[str, sympy.Expr]:
    tokens = F.tokens() / (S.tensor_parallel * S.context_parallel)
    layers = _rank_layers(spec, scenario)
    # 1F1B holds p micro-batches on the first rank; Interleaved 1F1B's warm-up is capped at
    # every micro-batch of every local stage (schedules.py _get_warmup_ops), p of them with
    # torchtitan's default p micro-batches: p micro-batches of all the rank's layers either way
    in_flight = S.pipeline_parallel if scenario.pp > 1 else sympy.Integer(1)
    saved = F.block_saved(scenario.recompute, scenario.torch_compile)
    parts = {"activations/layers": saved * tokens * layers * in_flight,
             "activations/input_ids": 8 * F.tokens() / S.context_parallel * in_flight}
    # a block's backward rebuilds what the policy did not save (the saved ones are the same
    # tensors); with PP while other micro-batches are in flight, without PP after the loss
    rebuilt = (F.block_saved("none", scenario.torch_compile) - saved) * tokens
    if scenario.recompute != "none" and scenario.pp > 1:
        parts["activations/recomputed"] = rebuilt
    compiled_loss = ST.compiled_loss(scenario)
    if scenario.pp == 1:  # loss parallel keeps the vocabulary sharded over tensor ranks
        parts["activations/final_norm"] = F.final_norm_saved() * tokens
        parts["activations/head_input"] = F.head_input_saved() * F.tokens() / S.context_parallel
        parts["activations/logits"] = ST.logits_saved(scenario, tokens)
    built = {"activations": sympy.Add(*parts.values()), **parts}
    if scenario.pp == 1:
        if scenario.recompute != "none":
            built["recomputed_block"] = rebuilt
        built["loss_backward"] = (F.compiled_loss_backward() if compiled_loss
                                  else F.loss_backward(loss_parallel=scenario.tp > 1)) * tokens
        if compiled_loss and scenario.tp > 1:  # its peak is in forward (F.compiled_loss_parallel_forward)
            built["loss_forward"] = F.compiled_loss_parallel_forward() * tokens
        # compiled: the graph keeps pred, or (TP) frees more than the backward's gradient needs
        built["reserved_logits_hole"] = sympy.Integer(0) if compiled_loss else F.logits_hole() * tokens
    else:
        stage_output = S.activation_bytes * S.hidden_size * tokens
        built["pp_buffers"] = F.pp_buffers(stage_output, in_flight, S.pipeline_parallel, scenario.vpp or 1)
    return built


def _head_backward(spec: ModelSpec, scenario: Scenario) -> sympy.Expr:
    """The head's backward (no PP): the logits' gradient and the head's full gradient."""
    tensors = terms.first_stage(architecture.parameter_tensors(spec), scenario)
    name = "embedding" if spec.tie_word_embeddings else "lm_head"
    head = sympy.Add(*(t.numel * ST.tp_share(t) for t in tensors if t.component == name))
    return F.head_backward(F.tokens() / (S.tensor_parallel * S.context_parallel), head)


def _state(spec: ModelSpec, scenario: Scenario) -> tuple[dict[str, sympy.Expr], dict[str, sympy.Expr]]:
    tensors, fraction = _stage_tensors(spec, scenario)
    # FSDP shards over dp_shard x cp: the "fsdp" mesh is dp_shard * cp wide
    # (distributed/parallel_dims.py ParallelDims, expected_sizes["fsdp"]; models/llama3/parallelize.py
    # resolve_fsdp_mesh); CP ranks hold different tokens of the same sequences
    trained, shard = ST.count(tensors, fraction), S.data_parallel * S.context_parallel
    block = ST.count(tensors, 1 / S.num_hidden_layers, per_layer=True)
    built = {
        "weights": F.fsdp_parameter_shard(trained, shard),
        "gradients": F.fsdp_gradient_shard(trained, shard),
        "optimizer": S.optimizer_bytes * trained / shard,
        "fsdp_gathered": _gathered(spec, scenario, tensors, fraction),
        "fsdp_reduce_scatter": F.reduce_scatter_block(block),
        **ST.pools(spec, scenario, tensors, F.fsdp_gradient_shard(trained, shard)),
    }
    if scenario.pp > 1:
        built["fsdp_unsharded_gradients"] = F.FP32_BYTES * ST.count(tensors, fraction)
    host = {}
    if scenario.offload == "both":
        host = {name: built[name] for name in ("weights", "gradients", "optimizer")}
        built.update({name: sympy.Integer(0) for name in host})
    return built, host


def build(spec: ModelSpec, scenario: Scenario) -> MemoryModel:
    built, host = _state(spec, scenario)
    built.update(_activations(spec, scenario))
    held = ["weights", "optimizer"]
    last = ["loss_backward"] if scenario.pp == 1 else ["fsdp_unsharded_gradients", "pp_buffers"]
    phases = {"backward": [*held, "fsdp_gathered", "activations", *last],
              "backward_end": [*held, "gradients", "fsdp_reduce_scatter"]}
    if scenario.pp == 1:  # the loss's temporaries are freed; the head's gradients are made
        built["fsdp_head_backward"] = _head_backward(spec, scenario)
        phases["head_backward"] = [*held, "fsdp_gathered", "activations", "fsdp_head_backward"]
        if "loss_forward" in built:  # the compiled TP loss: its forward is its peak
            phases["loss_forward"] = [*held, "fsdp_gathered", "activations", "loss_forward"]
        if "recomputed_block" in built:  # the last block's backward: the loss and head are freed
            phases["block_backward"] = [*held, "fsdp_gathered", "activations/layers", "activations/input_ids",
                                        "recomputed_block", "fsdp_reduce_scatter"]
    pools = ("reserved_all_gather_pool", "reserved_reduce_scatter_pool")
    cached = {"backward": (*pools, *(["reserved_logits_hole"] if scenario.pp == 1 else [])),
              "backward_end": pools[:1], "head_backward": pools, "block_backward": pools, "loss_forward": pools}
    # the benchmarks report the maximum over ranks: the last rank and rank 1 are built too
    others = [ST.last_rank] if scenario.pp > 1 else []
    for rank in others + ([ST.middle_rank] if scenario.pp > 2 else []):
        rank_terms, rank_phases, rank_cached = rank(spec, scenario)
        built.update(rank_terms)
        phases.update(rank_phases)
        cached.update(rank_cached)
    sums = [sympy.Add(*(built[n] for n in names)) for names in phases.values()]
    built.update(terms.overhead_terms(sympy.Max(*sums)))
    built["overhead"] -= built.pop("overhead/reserve")  # the CUDA context: outside both totals
    parameters, active = terms.counts(spec)
    sources = {name: SOURCES.get(name, terms.SOURCES.get(name, "")) for name in built if "/" not in name}
    return MemoryModel(
        name=spec.name, mode=scenario.mode, terms=built, facts=terms.facts(spec, scenario),
        phases={name: (*names, "overhead") for name, names in phases.items()},
        descriptions={**terms.DESCRIPTIONS, **DESCRIPTIONS}, inputs=terms.inputs(spec, scenario),
        parameters=parameters, active_parameters=active, host_terms=host,
        sources={**sources, "host_terms": SOURCES["host_terms"], "outside_terms": SOURCES["outside_terms"]},
        allocator="expandable", outside_terms={"cuda_context": S.reserve_bytes},
        reserved_only={name: names for name, names in cached.items() if name in phases},
    )


_LAST = ("the last pipeline rank: torch 2.6.0 torch/distributed/pipelining stage.py forward_one_chunk keeps "
         "every micro-batch's output in output_chunks until clear_runtime_states, _backward.py stage_backward "
         "leaves the input gradients in the receive buffers' .grad; Schedule1F1B warms the last stage up with one "
         "micro-batch; logits self.output(h) (torchtitan 9dec370 models/llama/model.py)")
_FSDP = "torchtitan/distributed/fsdp.py apply_fsdp_to_decoder (FSDP2 fully_shard, MixedPrecisionPolicy)"
SOURCES = {
    "weights": f"fp32 parameters sharded over the FSDP degree: {_FSDP}; Zhao et al. 2023, arXiv:2304.11277",
    "gradients": f"fp32 gradient shards, reduce_dtype float32 (config/configs.py mixed_precision_reduce): {_FSDP}",
    "optimizer": "AdamW (fused) moments of the fp32 shards: torchtitan/components/optimizer.py; Loshchilov and "
                 "Hutter 2019, arXiv:1711.05101",
    "fsdp_gathered": f"bf16 unsharded parameters (param_dtype), reshard_after_forward as "
                     f"get_fsdp_reshard_after_forward_policy sets it: {_FSDP}; fp8 all-gather: torchao "
                     "torchao/float8/fsdp_utils.py WeightWithDynamicFloat8CastTensor",
    "fsdp_unsharded_gradients": "unsharded gradients accumulated in reduce_dtype across micro-batches without "
                                "gradient sync (torch.distributed.pipelining stage.py, FSDP2 "
                                "_fsdp_param.py to_accumulated_grad_if_needed), torchtitan 2026",
    "fsdp_reduce_scatter": "one block's unsharded gradients and the fp32 reduce-scatter input (FSDP2 "
                           "_fsdp_collectives.py foreach_reduce), torchtitan 2026",
    "loss_backward": "nll_loss's and log_softmax's fp32 gradients of the logits (torchtitan components/loss.py "
                     "cross_entropy_loss; derivatives.yaml); loss parallel: torch/distributed/tensor/parallel/loss.py "
                     "_nll_loss_and_log_softmax_backward, 2026",
    "loss_forward": "torchtitan components/loss.py _LossParallelCrossEntropy compiled (compile.components "
                    "with loss): the partition torch 2.13 makes, measured on CPU (tools/measure/titan_loss.py)",
    "recomputed_block": "what a block's backward rebuilds under activation checkpointing (SelectiveAC's and "
                        "FullAC's recompute, distributed/activation_checkpoint.py), per op as block_saved counts it",
    "fsdp_head_backward": "the logits' gradient (loss parallel) and the [norm, lm_head] unit's unsharded "
                          "gradient with its fp32 reduce-scatter copy (FSDP2 _fsdp_collectives.py foreach_reduce), "
                          "torchtitan 2026",
    "activations": "what torchtitan's Llama-3 block saves per op (models/llama3/model.py; SelectiveAC "
                   "and FullAC in distributed/activation_checkpoint.py; loss: components/loss.py "
                   "cross_entropy_loss); first stage of _generate_llm_fqn_per_model_part, 2026",
    "reserved_all_gather_pool": "reserved only: FSDP2 allocates all-gather outputs on all_gather_copy_in_stream "
                                 "(torch/distributed/fsdp/_fully_shard/_fsdp_collectives.py foreach_all_gather) "
                                 "and holds one until the next copy-in (_fsdp_param_group.py wait_for_unshard); "
                                 "c10/cuda/CUDACachingAllocator.cpp get_free_block never lends a block across "
                                 "streams",
    "reserved_reduce_scatter_pool": "reserved only: the fp32 gradient shards are views of reduce-scatter outputs "
                                     "allocated on reduce_scatter_stream (_fsdp_collectives.py foreach_reduce), freed "
                                     "into that stream's pool by optimizers.zero_grad() before the forward",
    "reserved_logits_hole": "reserved only: pred (bf16) freed by `del pred` before loss.backward() (torchtitan "
                             "train.py) leaves a block the fp32 gradients of the logits do not fit "
                             "(CUDACachingAllocator.cpp get_free_block best fit, expandable segments grow at the end)",
    "pp_buffers": "torch/distributed/pipelining/stage.py _PipelineStageBase: fwd_cache stage outputs, "
                  "_create_grad_recv_info and _create_act_recv_info buffers per micro-batch (torchtitan's "
                  "default: pipeline_parallel_microbatches = p)",
    "pp_last_rank": _LAST + "; the benchmarks report the maximum over ranks (torchtitan "
                    "benchmarks/llama3_h100_202412_torchtitan.md, footnote 1)",
    "pp_last_rank_step_end": _LAST + "; schedules.py PipelineScheduleSingle.step returns "
                             "_merge_outputs(output_chunks): microbatch.py merge_chunks torch.cat",
    "pp_middle_rank": "pipeline rank 1, the most loaded of the middle ranks (the most in-flight micro-batches, "
                      "the split's remainder on the first stages): its blocks gathered, fp32 unsharded gradients, "
                      "the in-flight activations (Schedule1F1B, _get_1f1b_rank_ops warm-up) and the pipelining "
                      "buffers (torch 2.6.0 pipelining/stage.py _PipelineStageBase)",
    "reserved_middle_rank_all_gather_pool": "reserved only: rank 1's FSDP2 all-gather stream pool "
                                            "(_fsdp_collectives.py foreach_all_gather, as reserved_all_gather_pool)",
    "reserved_middle_rank_reduce_scatter_pool": "reserved only: rank 1's gradient shards in the reduce-scatter "
                                                "stream's pool (_fsdp_collectives.py foreach_reduce)",
    "reserved_last_rank_all_gather_pool": "reserved only: the last rank's FSDP2 all-gather stream pool (its blocks "
                                          "and [norm, output]; _fsdp_collectives.py foreach_all_gather)",
    "reserved_last_rank_reduce_scatter_pool": "reserved only: the last rank's gradient shards in the reduce-scatter "
                                              "stream's pool (_fsdp_collectives.py foreach_reduce)",
    "outside_terms": "the user's --reserve: the CUDA context, outside the caching allocator's counters; torchtitan "
                     "runs with PYTORCH_ALLOC_CONF=expandable_segments:True (run_train.sh), whose rule "
                     "c10/cuda/CUDACachingAllocator.cpp Note [Expandable Segments] gives reserved_bytes",
    "host_terms": "FSDP2 CPUOffloadPolicy (training.enable_cpu_offload); ZeRO-Offload, Ren et al. 2021, "
                  "arXiv:2101.06840",
}
DESCRIPTIONS = {
    "fsdp_gathered": "FSDP2: unsharded bf16 parameters alive at the start of backward",
    "fsdp_unsharded_gradients": "FSDP2 with PP: unsharded fp32 gradients accumulated over micro-batches",
    "fsdp_reduce_scatter": "FSDP2: one block's unsharded gradients and their fp32 reduce-scatter copy",
    "fsdp_head_backward": "the head's backward: the logits' gradient, the head's unsharded gradient and its fp32 copy",
    "activations/input_ids": "token ids (int64) of the in-flight micro-batches",
    "loss_backward": "the loss's fp32 gradients at the start of backward (loss parallel: three)",
    "activations/recomputed": "one block's tensors its backward rebuilds (those --recompute did not save)",
    "recomputed_block": "one block's tensors its backward rebuilds (those --recompute did not save)",
    "loss_forward": "the compiled TP loss's forward: pred and the fp32 one-hot buffer beside what it saves",
    "activations/final_norm": "the final RMSNorm's input and fp32 rstd (outside the compiled blocks)",
    "activations/head_input": "the output projection's input, all-gathered over the sequence under TP",
    "reserved_all_gather_pool": "reserved, not allocated: FSDP2's all-gather stream pool (two consecutive units)",
    "reserved_reduce_scatter_pool": "reserved, not allocated: the reduce-scatter stream's pool (the gradient shards)",
    "reserved_logits_hole": "reserved, not allocated: the freed bf16 logits the fp32 gradients do not fit",
    "pp_buffers": "PP: stage outputs of the in-flight micro-batches and the receive buffers of every micro-batch",
    "pp_last_rank": "PP, the last rank at its last micro-batch's loss backward (its own state and activations)",
    "pp_last_rank/output_chunks": "every micro-batch's logits, kept by the pipelining stage until the step ends",
    "pp_last_rank/loss": "the last micro-batch's loss: its saved log-softmax and its backward's fp32 gradients",
    "pp_last_rank/pp_buffers": "done micro-batches' input buffers and their retained .grad; earlier local stages' "
                               "outputs and gradient receive buffers",
    "pp_last_rank_step_end": "PP, the last rank after its last backward: merge_chunks concatenates the kept logits",
    "pp_last_rank_step_end/merged_output": "merge_chunks' torch.cat of every micro-batch's logits",
    "pp_middle_rank": "PP, rank 1 at its first backward (its own state, in-flight activations, buffers)",
    "reserved_middle_rank_all_gather_pool": "reserved, not allocated: rank 1's all-gather stream pool",
    "reserved_middle_rank_reduce_scatter_pool": "reserved, not allocated: rank 1's reduce-scatter stream pool",
    "reserved_last_rank_all_gather_pool": "reserved, not allocated: the last rank's all-gather stream pool",
    "reserved_last_rank_reduce_scatter_pool": "reserved, not allocated: the last rank's reduce-scatter stream pool",
}

KNOBS = frozenset({"batch_size", "seq_len", "dtype", "attention", "recompute", "optimizer", "precision",
                   "reserve_bytes", "tp", "pp", "dp", "cp", "vpp", "sequence_parallel", "zero", "offload",
                   "float8", "float8_all_gather", "allocator_fraction", "comm_buffer_bytes", "torch_compile",
                   "compile_components"})

PROFILE = Profile(
    name="torchtitan",
    summary="torchtitan: FSDP2 mixed precision, TP/SP, PP (its uneven split), CP, op/full AC, float8",
    modes=("training",),
    knobs=KNOBS,
    build=build,
    check=check,
)
