"""The ``megatron`` profile: Megatron-LM's allocations and its own estimator's rows, per GPU.

Inference: weights + KV cache + the activation peak of one layer (or the logits) +
overhead. Training: bf16 weights ``P beta_w``, the DDP's fp32 gradient buffer ``P beta_g``
(allocated when the model is wrapped, so alive through forward and backward:
``megatron/core/distributed/param_and_grad_buffer.py``), fp32 master copy ``P beta_m`` and
optimizer state ``P beta_o`` (``--precision auto`` is Megatron's ``megatron18``), where ``P`` is
what this GPU holds of the trained parameters (formulas/parallelism.py); ZeRO stage ``z``
divides the first ``z`` of (optimizer + master, gradients, weights) by ``N_d`` (``--zero 1`` is
``--use-distributed-optimizer``: 6 + 12 / N_d bytes per parameter); offloaded state moves to
host memory (ZeRO-Offload, arXiv:2101.06840; ZeRO-Infinity, arXiv:2104.07857); saved
activations as ``megatron/training/theoretical_memory_usage.py`` counts them (Korthikanti et
al. 2022, Table 2, with the MLP width a variable) plus the gate half of gated MLPs. ``--pp``
that does not divide the layers takes Megatron's uneven split. Two phases: forward-backward
(activations at the start of backward) and the optimizer step (activations freed).
docs/training.md compares it with the estimator.
"""

from __future__ import annotations

from dataclasses import replace

import sympy

from engine import architecture, terms
from engine.errors import InputError
from engine.model import MemoryModel
from engine.profiles import Profile
from engine.scenario import Scenario
from engine.spec import ModelSpec
from formulas import activations, optimizer, peft
from formulas import parallelism as par
from formulas import symbols as S


def check(spec: ModelSpec, scenario: Scenario) -> None:
    uneven = scenario.mode == "training" and spec.num_hidden_layers % scenario.pp != 0
    terms.check_degrees(spec, scenario, uneven_pp=uneven)
    if uneven and (scenario.vpp is not None or not first_stage_layers(spec, scenario)):
        raise InputError(f"--pp {scenario.pp} does not divide num_hidden_layers {spec.num_hidden_layers} of "
                         f"{spec.name}, and Megatron-LM's split counting the embedding and loss as layers "
                         "leaves no layer on the first stage or does not divide either (Megatron then needs "
                         "--decoder-first-pipeline-num-layers, which memsym does not model)")
    if scenario.recompute == "op":
        raise InputError("--profile megatron: --recompute op is not modelled (torchtitan's per-op policy; "
                         "Megatron-LM recomputes none, selective or full)")
    if scenario.mode == "inference" and (scenario.zero or scenario.offload != "none"):
        raise InputError("--zero and --offload partition training state; they do not apply to --mode inference")
    if scenario.mode == "training" and architecture.has_recurrent_state(spec):
        raise InputError(f"--mode training: the saved activations of {spec.name}'s recurrent (Gated DeltaNet / "
                         "Mamba) layers are not modelled; use --mode inference")


def megatron_precision(scenario: Scenario) -> Scenario:
    """``--precision auto`` with 16-bit weights is Megatron-LM's own convention, ``megatron18``:
    bf16 parameters, the fp32 ``main_grad`` buffer (``arguments.py`` turns
    ``accumulate_allreduce_grads_in_fp32`` on for bf16), fp32 main parameters and Adam moments."""
    if scenario.mode == "training" and scenario.precision == "auto" and scenario.weight_bytes() == 2:
        return replace(scenario, precision="megatron18")
    return scenario


def first_stage_layers(spec: ModelSpec, scenario: Scenario) -> int | None:
    """Layers of the first stage: ``L / p``, or Megatron's uneven split when ``p`` does not divide ``L``."""
    if spec.num_hidden_layers % scenario.pp == 0:
        return spec.num_hidden_layers // scenario.pp
    return par.megatron_first_stage_layers(spec.num_hidden_layers, scenario.pp)


def _uneven_split(spec: ModelSpec, scenario: Scenario, built: dict[str, sympy.Expr]) -> None:
    """An uneven split gives the first stage ``n`` of the ``L`` layers, not ``L / p``: the
    per-layer state (written with ``1 / p``) takes ``n / L``, the saved activations (``p``
    micro-batches of ``L / p`` layers) ``p n / L``."""
    layers = spec.num_hidden_layers
    if layers % scenario.pp == 0:
        return
    n = first_stage_layers(spec, scenario)
    for name in list(built):
        if name.split("/", 1)[0] == "activations":
            if name in ("activations", "activations/layers", "activations/glu", "activations/lora"):
                built[name] = built[name] if name == "activations" else built[name] * scenario.pp * n / layers
        elif name.split("/", 1)[0] != "overhead":
            built[name] = built[name].xreplace({S.pipeline_parallel: sympy.Rational(layers, n)})
    parts = [built[n_] for n_ in built if n_.startswith("activations/")]
    built["activations"] = sympy.Add(*parts)


def build(spec: ModelSpec, scenario: Scenario) -> MemoryModel:
    """The inference or training memory model of ``spec`` under ``scenario``."""
    scenario = megatron_precision(scenario)
    if scenario.mode == "training":
        built, host, phases = training_terms(spec, scenario)
    else:
        built, host, phases = inference_terms(spec, scenario), {}, {}
    parameters, active = terms.counts(spec)
    return MemoryModel(
        name=spec.name, mode=scenario.mode, terms=built, facts=terms.facts(spec, scenario), phases=phases,
        descriptions=terms.DESCRIPTIONS, inputs=terms.inputs(spec, scenario), parameters=parameters,
        active_parameters=active, host_terms=host, sources=sources(scenario.mode, built),
    )


def inference_terms(spec: ModelSpec, scenario: Scenario) -> dict[str, sympy.Expr]:
    """Weights + KV cache + the activation peak of one layer (or the logits) + overhead."""
    built = terms.weight_terms(spec, scenario)
    if scenario.lora_rank is not None:  # unmerged adapters served beside the base (PEFT)
        built["adapters"] = terms.adapter_count(spec, scenario) * S.adapter_bytes
    built.update(terms.kv_cache_terms(spec, scenario))  # kv_cache (and kv_cache/state)
    layer = architecture.inference_peaks(spec, eager=scenario.attention == "eager")
    peaks = {
        "activations/attention": layer["attention"],
        "activations/mlp": layer["mlp"],
        "activations/logits": activations.logits(scenario.logits) / S.tensor_parallel,
    }
    built["activations"] = sympy.Max(*peaks.values())
    built.update(peaks)
    held = [n for n in ("weights", "adapters", "kv_cache", "activations") if n in built]
    built.update(terms.overhead_terms(sympy.Add(*(built[n] for n in held))))
    return built


def training_terms(spec: ModelSpec, scenario: Scenario):
    """(terms, host_terms, phases) of one GPU of the first pipeline stage."""
    zero = scenario.zero
    built = terms.weight_terms(spec, scenario, par.zero_partition(zero, "weights"))
    if scenario.lora_rank is not None:
        targets, trained_tensors = terms.lora_adapters(spec, scenario)
        built["adapters"] = terms.per_gpu_count(trained_tensors) * S.adapter_bytes
    else:
        targets, trained_tensors = [], terms.first_stage(architecture.parameter_tensors(spec), scenario)
    built.update(_model_state(scenario, trained_tensors))
    host = _offload(scenario, built, ("master_weights", "optimizer"), ("optimizer", "both"))
    if host:  # HybridDeviceOptimizer copies each step's gradients of its (fp32) CPU params to pinned
        # CPU tensors (megatron/core/optimizer/cpu_offloading/hybrid_optimizer.py, cpu_copy_map_grad);
        # the main_grad buffer stays on the GPU
        host["gradients"] = optimizer.gradients(terms.per_gpu_count(trained_tensors)) * par.zero_partition(
            zero, "master_weights")
    if zero == 3:  # (1 - 1/N_d) makes it 0 without data parallelism
        built["zero3_gathered"] = _zero3_gathered(spec, scenario)
    host.update(_offload(scenario, built, ("weights",), ("parameters", "both")))
    built.update(activation_terms(spec, scenario, targets))
    _uneven_split(spec, scenario, built)
    # Megatron's DDP allocates the gradient buffer (``main_grad``) when it wraps the model
    # (megatron/core/distributed/param_and_grad_buffer.py, _ParamAndGradBuffer.__init__): it
    # lives through forward and backward, not only after them.
    persistent = [n for n in ("weights", "adapters", "master_weights", "gradients", "optimizer") if n in built]
    forward = [*persistent, "activations", *(["zero3_gathered"] if "zero3_gathered" in built else [])]
    step = persistent
    sums = [sympy.Add(*(built[n] for n in names)) for names in (forward, step)]
    built.update(terms.overhead_terms(sympy.Max(*sums)))
    phases = {"forward_backward": (*forward, "overhead"), "optimizer_step": (*step, "overhead")}
    return built, host, phases


def _model_state(scenario: Scenario, trained_tensors) -> dict[str, sympy.Expr]:
    """Master weights, gradients and optimizer state of the trained parameters, ZeRO-partitioned."""
    zero = scenario.zero
    trained = terms.per_gpu_count(trained_tensors)
    if scenario.optimizer in optimizer.FACTORED_OPTIMIZERS:
        shapes = [(t.rows, t.cols, t.count * par.gpu_share(t)) for t in trained_tensors]
        optimizer_state = optimizer.adafactor_state(shapes)
    else:
        optimizer_state = optimizer.optimizer_state(trained)
    state = {
        "master_weights": optimizer.master_weights(trained) * par.zero_partition(zero, "master_weights"),
        "gradients": optimizer.gradients(trained) * par.zero_partition(zero, "gradients"),
        "optimizer": optimizer_state * par.zero_partition(zero, "optimizer"),
    }
    if not scenario.training_bytes()[2]:
        del state["master_weights"]
    return state


def _offload(scenario: Scenario, built: dict[str, sympy.Expr], names: tuple[str, ...],
             when: tuple[str, ...]) -> dict[str, sympy.Expr]:
    """Host terms of the offloaded ``names`` (and their sub-terms, zeroed on the GPU)."""
    if scenario.offload not in when:
        return {}
    host = {name: built[name] for name in names if name in built}
    for name in [n for n in built if n.split("/", 1)[0] in host]:
        built[name] = sympy.Integer(0)
    return host


def _zero3_gathered(spec: ModelSpec, scenario: Scenario) -> sympy.Expr:
    """The other ranks' shards of the layers being gathered: ``n (1 - 1/N_d)`` layers' weights.

    ``n`` = ``Min(2, L/p)`` live layers (FSDP's default backward prefetch, see
    ``formulas.parallelism.ZERO3_LIVE_LAYERS``); a layer is the stage's average layer.
    """
    quant = terms.weight_format(spec, scenario)
    tensors = [t for t in architecture.parameter_tensors(spec) if par.is_per_layer(t)]
    stage_layers = S.num_hidden_layers / S.pipeline_parallel
    stage_bytes = sympy.Add(*(quant.tensor_bytes(t) * par.gpu_share(t) for t in tensors))
    live = sympy.Min(par.ZERO3_LIVE_LAYERS, stage_layers)
    return live * stage_bytes / stage_layers * (1 - 1 / S.data_parallel)


def _mlp_widths(spec: ModelSpec) -> list[tuple[sympy.Expr, sympy.Expr, bool]]:
    """(layers, MLP width a token uses, gated) per MLP kind (formulas/layers/): dense layers
    ``f``; MoE layers the routed and shared experts a token passes through
    (``k_e f_e + E_sh f_e``); layers without an MLP none."""
    groups = []
    for entry, args, count in architecture.kinds(spec, "mlp"):
        if entry.KIND == "dense":
            groups.append((count, S.intermediate_size, bool(args.get("gated", True))))
        elif entry.KIND == "moe":
            width = S.num_experts_per_tok * S.moe_intermediate_size
            if args.get("num_shared_experts"):
                width += S.num_shared_experts * S.moe_intermediate_size
            groups.append((count, width, True))
        else:
            groups.append((count, sympy.Integer(0), False))
    return groups


def _layer_rows(spec: ModelSpec, recompute: str, sp: bool, eager: bool) -> tuple[sympy.Expr, sympy.Expr]:
    """(Megatron's per-layer rows summed over layers, the gate halves of gated MLPs)."""
    layers, glu = sympy.Integer(0), sympy.Integer(0)
    for count, width, gated in _mlp_widths(spec):
        widen = {S.intermediate_size: width}
        layers += count * activations.megatron_layer(recompute, sp, eager).xreplace(widen)
        if gated:
            glu += count * activations.megatron_glu_extra(recompute).xreplace(widen)
    return layers, glu


def _one_layer(spec: ModelSpec, sp: bool, eager: bool) -> sympy.Expr:
    """What the largest layer saves without recomputation (full recompute rebuilds one)."""
    rows = []
    for _, width, gated in _mlp_widths(spec):
        row = activations.megatron_layer("none", sp, eager) + (activations.megatron_glu_extra() if gated else 0)
        rows.append(row.xreplace({S.intermediate_size: width}))
    return sympy.Max(*rows)


def activation_terms(spec: ModelSpec, scenario: Scenario, lora_targets) -> dict[str, sympy.Expr]:
    """Saved activations of the first stage, as Megatron-LM's ``theoretical_memory_usage.py``
    (``compute_activation_memory``) counts them, with the MLP width a variable
    (``formulas.activations.megatron_layer``), the gate half of gated MLPs apart
    (``activations/glu``), t, SP, CP and PP; SDPA/flash attention drops the s x s core.

    1F1B keeps ``p`` micro-batches of ``L / p`` layers on the first stage, ``L`` layers'
    worth; the interleaved schedule multiplies everything by ``1 + (p - 1) / (p v)``. The
    output layer and loss live on the last stage, so they count only without pipeline
    parallelism.
    """
    sp, eager, cp = scenario.sequence_parallel, scenario.attention == "eager", par.sequence_share()
    layers, glu = _layer_rows(spec, scenario.recompute, sp, eager)
    parts = {"activations/layers": layers * cp, "activations/glu": glu * cp,
             "activations/embedding": activations.megatron_embedding(sp) * cp}
    if scenario.vpp is not None and scenario.pp > 1:
        penalty = par.pipeline_in_flight() / S.pipeline_parallel
        parts = {name: expr * penalty for name, expr in parts.items()}
    if scenario.recompute == "full":  # backward rebuilds one layer at a time
        parts["activations/recomputed"] = _one_layer(spec, sp, eager) * cp
    if not glu.free_symbols and glu == 0:
        del parts["activations/glu"]
    if scenario.pp == 1:
        parts["activations/logits"] = activations.megatron_output(sp) * cp
    if lora_targets:
        parts["activations/lora"] = peft.lora_activations(lora_targets) * par.sequence_share()
    return {"activations": sympy.Add(*parts.values()), **parts}


INFERENCE_SOURCES = {
    "activations": "largest temporaries of one layer or the logits; fused attention keeps no s x s scores "
                   "(Dao et al. 2022, arXiv:2205.14135, sec. 3.1)",
}
TRAINING_SOURCES = {
    "activations": "Megatron-LM megatron/training/theoretical_memory_usage.py compute_activation_memory: "
                   "Korthikanti et al. 2022, arXiv:2205.05198, Table 2 with the MLP width f (18 + 4f/h), the "
                   "embedding and output-layer rows; the SwiGLU gate half (megatron/core/transformer/mlp.py); "
                   "tensor, sequence and context parallelism; interleaved 1F1B, sec. 4.2.3",
    "master_weights": "mixed precision: Rajbhandari et al. 2020 (ZeRO), arXiv:1910.02054, sec. 3.1; "
                      "Micikevicius et al. 2018, arXiv:1710.03740",
    "gradients": "Megatron-LM's DDP gradient buffer (main_grad, fp32 for bf16 training), allocated when the "
                 "model is wrapped: megatron/core/distributed/param_and_grad_buffer.py _ParamAndGradBuffer; "
                 "other conventions: ZeRO, arXiv:1910.02054, sec. 3.1",
    "optimizer": "Adam moments (Kingma and Ba 2015, arXiv:1412.6980) or the chosen optimizer's state; "
                 "8-bit: Dettmers et al. 2022, arXiv:2110.02861; Adafactor: Shazeer and Stern 2018, "
                 "arXiv:1804.04235; partitioned by ZeRO stage (arXiv:1910.02054, sec. 5)",
    "zero3_gathered": "ZeRO stage 3 / FSDP gathers a layer's full parameters before use (Rajbhandari et al. "
                      "2020, arXiv:1910.02054, sec. 5; Zhao et al. 2023, arXiv:2304.11277, sec. 3)",
}


OFFLOAD_SOURCE = ("ZeRO-Offload, Ren et al. 2021, arXiv:2101.06840, sec. 4; ZeRO-Infinity, Rajbhandari et al. "
                  "2021, arXiv:2104.07857, sec. 5")


def sources(mode: str, built: dict[str, sympy.Expr]) -> dict[str, str]:
    """The source of every top-level term of ``built`` (sub-terms share their parent's), and
    of the host terms (``host_terms``)."""
    table = {**terms.SOURCES, **(TRAINING_SOURCES if mode == "training" else INFERENCE_SOURCES)}
    found = {name: table[name] for name in built if "/" not in name or name in table}
    if mode == "training":
        found["host_terms"] = OFFLOAD_SOURCE
    return found


PROFILE_KNOBS = frozenset({
    "batch_size", "seq_len", "dtype", "kv_cache_dtype", "weight_quant", "quant_group_size", "attention",
    "logits", "mla_cache", "block_size", "recompute", "optimizer", "precision", "reserve_bytes", "tp", "pp",
    "dp", "ep", "cp", "sequence_parallel", "vpp", "zero", "offload", "lora_rank", "lora_targets",
    "adapter_dtype", "allocator_fraction", "comm_buffer_bytes",
})

PROFILE = Profile(
    name="megatron",
    summary="Megatron-LM: its estimator's activation rows, fp32 gradient buffer, distributed optimizer, uneven PP",
    modes=("inference", "training"),
    knobs=PROFILE_KNOBS,
    build=build,
    check=check,
    refusal_note="another profile reads it: --device transformers; --float8 torchtitan; --compile, "
                 "--loss-chunks torchtune; --cache-type-k/-v llamacpp",
)
