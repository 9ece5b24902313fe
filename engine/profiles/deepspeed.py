"""The ``deepspeed`` profile: DeepSpeed's ZeRO stages 1-3, with optimizer and parameter offload.

Model state per GPU as ``DeepSpeedZeroOptimizer`` (stages 1-2) and
``DeepSpeedZeroOptimizer_Stage3`` allocate it, with the defaults of ``DeepSpeedZeroConfig``
(:mod:`formulas.frameworks.deepspeed`). Two phases:

- ``backward``: the start of backward, every saved activation alive; stage 3 also holds its
  gradient partition and fp32 gradient buffer (allocated at init), the gathered parameters of
  the running module plus the prefetched ones, and that module's full gradients; the reduce
  bucket (``reduce_bucket_size``) is allocated;
- ``optimizer_step``: activations freed, every gradient buffer of this rank filled (stages
  1-2 build the fp32 gradient partition here).

``--offload optimizer`` moves the fp32 master, the moments and the fp32 gradients (stage 3:
its 16-bit gradient partition too) to host memory; ``--offload parameters`` (stage 3) the
16-bit parameter partition. Activations: Megatron-LM's rows (the megatron profile), as
DeepSpeed wraps the user's model and keeps what its layers save.
"""

from __future__ import annotations

import sympy

from engine import architecture, terms
from engine.errors import InputError
from engine.model import MemoryModel
from engine.profiles import Profile
from engine.profiles.megatron import activation_terms
from engine.scenario import Scenario
from engine.spec import ModelSpec
from formulas import parallelism as par
from formulas import symbols as S
from formulas.frameworks import deepspeed as F
from formulas.optimizer import FACTORED_OPTIMIZERS


def check(spec: ModelSpec, scenario: Scenario) -> None:
    terms.check_degrees(spec, scenario)
    if architecture.has_recurrent_state(spec):  # issue 13: no saved-activation formula for these mixers
        raise InputError(f"--profile deepspeed: {spec.name}'s recurrent (Gated DeltaNet / Mamba) layers are not "
                         "modelled in training")
    if scenario.recompute == "op":
        raise InputError("--profile deepspeed: --recompute op is not modelled (torchtitan's per-op policy)")
    if scenario.zero not in (1, 2, 3):
        raise InputError(f"--profile deepspeed: --zero {scenario.zero} is not modelled; give the ZeRO stage, "
                         "--zero 1, 2 or 3")
    if scenario.weight_bytes() != 2:
        raise InputError(f"--profile deepspeed: --dtype {scenario.dtype} is not modelled; ZeRO trains bf16/fp16 "
                         "with an fp32 master copy")
    if scenario.precision not in ("auto", "zero16"):
        raise InputError(f"--profile deepspeed: --precision {scenario.precision} is not modelled; DeepSpeed keeps "
                         "16-bit weights and gradients with fp32 master and moments (zero16)")
    if scenario.optimizer in FACTORED_OPTIMIZERS:
        raise InputError(f"--profile deepspeed: --optimizer {scenario.optimizer} is not modelled")
    if scenario.pp > 1 and scenario.zero > 1:
        raise InputError(f"--profile deepspeed: --pp {scenario.pp} with --zero {scenario.zero}: DeepSpeed's "
                         "PipelineEngine supports ZeRO stage 1 only (deepspeed/runtime/pipe/engine.py)")


def module_sizes(spec: ModelSpec, scenario: Scenario) -> tuple[sympy.Expr, sympy.Expr]:
    """(elements of the largest parameter tensor on one GPU, elements of the tensors below
    ``param_persistence_threshold`` on one GPU) of the trained tensors.

    DeepSpeed's ``model_to_params`` takes the largest module's own parameters; a module
    here is one weight matrix (the embedding or the head in most LLMs), or one layer's routed
    experts, which transformers 5 fuses into 3-D parameters of one module."""
    tensors = terms.first_stage(architecture.parameter_tensors(spec), scenario)
    facts = architecture.facts(spec)
    largest, persistent, experts = [], sympy.Integer(0), sympy.Integer(0)
    for t in tensors:
        one = t.rows * t.cols * par.gpu_share(t) * (S.pipeline_parallel if par.is_per_layer(t) else 1)
        if t.component == "moe_experts":  # count = L_e x E: one layer's module holds E of each
            experts += one * t.count / S.num_moe_layers
        else:
            largest.append(one)
        if (t.rows * t.cols).xreplace(facts) < F.PARAM_PERSISTENCE_THRESHOLD:
            persistent += t.numel * par.gpu_share(t)
    return sympy.Max(*largest, *([experts] if experts != 0 else [])), persistent


def model_states(spec: ModelSpec, scenario: Scenario) -> dict[str, sympy.Expr]:
    """ZeRO's model states on one GPU (16-bit parameters and gradients, fp32 master, moments and
    gradients, the ipg bucket, stage 3's gathered modules), before offload: also what the
    transformers profile counts for DeepSpeed through accelerate."""
    stage, offload = scenario.zero, scenario.offload in ("optimizer", "both")
    P = terms.per_gpu_count(terms.first_stage(architecture.parameter_tensors(spec), scenario))
    share = 1 / S.data_parallel if stage == 3 else sympy.Integer(1)
    built = terms.weight_terms(spec, scenario, share)
    grads = {"gradients/16bit": F.gradients16(stage, P), "gradients/fp32": F.gradients32(stage, P, offload)}
    built.update({"master_weights": F.master_weights(P), "optimizer": F.optimizer_state(P),
                  "gradients": sympy.Add(*grads.values()), **grads, "reduce_buckets": F.reduce_buckets(stage)})
    if stage == 3:
        largest, persistent = module_sizes(spec, scenario)
        gathered = {"zero3_gathered/parameters": F.gathered_parameters(largest, persistent, P),
                    "zero3_gathered/gradients": F.gathered_gradients(largest)}
        built.update({"zero3_gathered": sympy.Add(*gathered.values()), **gathered})
    return built


def offload_states(scenario: Scenario, built: dict[str, sympy.Expr]) -> dict[str, sympy.Expr]:
    """Host terms of ``--offload`` (ZeRO-Offload, ZeRO-Infinity); the offloaded GPU terms in ``built`` become 0."""
    moved = []
    if scenario.offload in ("optimizer", "both"):
        moved += ["master_weights", "optimizer", "gradients/fp32"]
        if scenario.zero == 3:
            moved.append("gradients/16bit")
    if scenario.offload in ("parameters", "both"):
        moved.append("weights")
    host = {name: built[name] for name in moved}
    if "gradients/16bit" in host:
        host["gradients/fp32"] += host.pop("gradients/16bit")
    if scenario.zero == 2 and "optimizer" in moved:
        # copy_grads_in_partition: with cpu_offload the reduced gradients go straight into the
        # fp32 CPU partition (async_inplace_copy_grad_to_fp32_buffer_from_gpu); no GPU partition
        moved.append("gradients/16bit")
    for name in [n for n in built if n in moved or n.split("/", 1)[0] in moved]:
        built[name] = sympy.Integer(0)
    built["gradients"] = built["gradients/16bit"] + built["gradients/fp32"]
    return {("gradients" if n == "gradients/fp32" else n): expr for n, expr in host.items()}


def build(spec: ModelSpec, scenario: Scenario) -> MemoryModel:
    built = model_states(spec, scenario)
    host = offload_states(scenario, built)
    built.update(activation_terms(spec, scenario, []))
    held = ["weights", "master_weights", "optimizer"]
    backward = [*held, *(["gradients", "zero3_gathered"] if scenario.zero == 3 else []), "reduce_buckets",
                "activations"]
    step = [*held, "gradients"]
    sums = [sympy.Add(*(built[n] for n in names)) for names in (backward, step)]
    built.update(terms.overhead_terms(sympy.Max(*sums)))
    parameters, active = terms.counts(spec)
    return MemoryModel(
        name=spec.name, mode=scenario.mode, terms=built, facts=terms.facts(spec, scenario),
        phases={"backward": (*backward, "overhead"), "optimizer_step": (*step, "overhead")},
        descriptions={**terms.DESCRIPTIONS, **DESCRIPTIONS}, inputs=terms.inputs(spec, scenario),
        parameters=parameters, active_parameters=active, host_terms=host,
        sources={name: SOURCES.get(name, terms.SOURCES.get(name, "")) for name in built if "/" not in name}
        | {"host_terms": SOURCES["host_terms"]},
    )


_STAGES = "deepspeed/runtime/zero/stage_1_and_2.py (DeepSpeedZeroOptimizer) and stage3.py (DeepSpeedZeroOptimizer_Stage3)"
SOURCES = {
    "weights": f"16-bit parameters, partitioned at stage 3: {_STAGES}",
    "master_weights": f"fp32 master partition (single_partition_of_fp32_groups / fp32_partitioned_groups_flat): {_STAGES}",
    "optimizer": f"optimizer state of the fp32 partition: {_STAGES}",
    "gradients": f"16-bit gradients (.grad, grads_in_partition, grad_partitions_flat_buffer) and the fp32 partition "
                 f"gradients of the step: {_STAGES}; grad_accum_dtype = model dtype (runtime/engine.py get_data_types)",
    "reduce_buckets": "ipg buffer of reduce_bucket_size = 5e8 elements (deepspeed/runtime/zero/config.py "
                      "DeepSpeedZeroConfig; stage_1_and_2.py and stage3.py allocate it with contiguous_gradients)",
    "zero3_gathered": "stage 3 gathered parameters: the running module, stage3_prefetch_bucket_size = 5e7 ahead "
                      "(within stage3_max_live_parameters = 1e9), tensors below stage3_param_persistence_threshold "
                      "= 1e5 kept whole, and the module's full gradients before reduce-scatter: "
                      "deepspeed/runtime/zero/partitioned_param_coordinator.py and stage3.py, with the defaults of config.py DeepSpeedZeroConfig",
    "activations": "Megatron-LM's per-layer rows with the MLP width, megatron/training/theoretical_memory_usage.py "
                   "compute_activation_memory (Korthikanti et al. 2022, arXiv:2205.05198, Table 2), as the megatron "
                   "profile builds them",
    "host_terms": "ZeRO-Offload, Ren et al. 2021, arXiv:2101.06840, sec. 4 (fp32 master, moments and gradients on "
                  "the CPU); offload_param, ZeRO-Infinity arXiv:2104.07857; stage3.py pins the 16-bit gradient "
                  "partition on the CPU with offload_optimizer",
}
DESCRIPTIONS = {
    "gradients/16bit": "16-bit gradients (stage 1: all; stages 2-3: this rank's partition)",
    "gradients/fp32": "fp32 gradients of this rank's partition for the optimizer step",
    "reduce_buckets": "gradient reduce bucket (reduce_bucket_size elements)",
    "zero3_gathered/parameters": "stage 3: full parameters of the running and prefetched modules",
    "zero3_gathered/gradients": "stage 3: a module's full gradients before reduce-scatter",
}

KNOBS = frozenset({"batch_size", "seq_len", "dtype", "attention", "recompute", "optimizer", "precision",
                   "reserve_bytes", "tp", "pp", "dp", "sequence_parallel", "zero", "offload",
                   "allocator_fraction", "comm_buffer_bytes"})

PROFILE = Profile(
    name="deepspeed",
    summary="DeepSpeed ZeRO 1-3 and ZeRO-Offload as stage_1_and_2.py / stage3.py allocate",
    modes=("training",),
    knobs=KNOBS,
    build=build,
    check=check,
)
