"""The ``megatron`` profile: Megatron-LM's kernels and the ZeRO conventions, per GPU.

Inference: weights + KV cache + the activation peak of one layer (or the logits) +
overhead. Training (Rajbhandari et al. 2020, ZeRO): weights ``P beta_w``, fp32 master copy
``P beta_m``, gradients ``P beta_g`` and optimizer state ``P beta_o``, where ``P`` is what this
GPU holds of the trained parameters (formulas/parallelism.py) and ZeRO stage ``z`` divides
the first ``z`` of (optimizer + master, gradients, weights) by ``N_d``; offloaded state moves
to host memory (ZeRO-Offload, arXiv:2101.06840; ZeRO-Infinity, arXiv:2104.07857); saved
activations per Korthikanti et al. 2022, Table 2. Two phases: the start of backward (no
gradients yet: ``zero_grad(set_to_none=True)``) and the optimizer step (activations freed).
"""

from __future__ import annotations

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
    terms.check_degrees(spec, scenario)
    if scenario.mode == "inference" and (scenario.zero or scenario.offload != "none"):
        raise InputError("--zero and --offload partition training state; they do not apply to --mode inference")


def build(spec: ModelSpec, scenario: Scenario) -> MemoryModel:
    """The inference or training memory model of ``spec`` under ``scenario``."""
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
    built["kv_cache"] = terms.kv_cache_term(spec, scenario)
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
    if zero == 3:  # (1 - 1/N_d) makes it 0 without data parallelism
        built["zero3_gathered"] = _zero3_gathered(spec, scenario)
    host.update(_offload(scenario, built, ("weights",), ("parameters", "both")))
    built.update(_activation_terms(spec, scenario, targets))
    persistent = [n for n in ("weights", "adapters", "master_weights") if n in built]
    forward = [*persistent, "optimizer", "activations", *(["zero3_gathered"] if "zero3_gathered" in built else [])]
    step = [*persistent, "gradients", "optimizer"]
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
    from formulas.weights import tensor_bytes

    tensors = [t for t in architecture.parameter_tensors(spec) if par.is_per_layer(t)]
    stage_layers = S.num_hidden_layers / S.pipeline_parallel
    stage_bytes = sympy.Add(*(tensor_bytes(t, scenario.weight_quant) * par.gpu_share(t) for t in tensors))
    live = sympy.Min(par.ZERO3_LIVE_LAYERS, stage_layers)
    return live * stage_bytes / stage_layers * (1 - 1 / S.data_parallel)


def _activation_terms(spec: ModelSpec, scenario: Scenario, lora_targets) -> dict[str, sympy.Expr]:
    """Saved activations of the first stage: Korthikanti's rows with t, SP, CP and PP
    (``formulas.activations.korthikanti_layer``; SDPA/flash attention drops the s x s core).

    1F1B keeps ``p`` micro-batches of ``L / p`` layers on the first stage, ``L`` layers'
    worth; the interleaved schedule multiplies by ``1 + (p - 1) / (p v)``. Logits live on
    the last stage, so they count only without pipeline parallelism.
    """
    sp, eager, cp = scenario.sequence_parallel, scenario.attention == "eager", par.sequence_share()
    layers = architecture.training_layers(spec, recompute=scenario.recompute, sequence_parallel=sp, eager=eager) * cp
    if scenario.vpp is not None and scenario.pp > 1:
        layers *= par.pipeline_in_flight() / S.pipeline_parallel
    if scenario.recompute == "full":  # backward rebuilds one layer at a time
        layers += architecture.recomputed_layer(spec, sequence_parallel=sp, eager=eager) * cp
    parts = {"activations/layers": layers}
    if scenario.pp == 1:
        parts["activations/logits"] = activations.training_logits() * par.sequence_share() / S.tensor_parallel
    if lora_targets:
        parts["activations/lora"] = peft.lora_activations(lora_targets) * par.sequence_share()
    return {"activations": sympy.Add(*parts.values()), **parts}


INFERENCE_SOURCES = {
    "activations": "largest temporaries of one layer or the logits; fused attention keeps no s x s scores "
                   "(Dao et al. 2022, arXiv:2205.14135, sec. 3.1)",
}
TRAINING_SOURCES = {
    "activations": "Korthikanti et al. 2022, arXiv:2205.05198, Table 2 (with tensor, sequence and context "
                   "parallelism; interleaved 1F1B, sec. 4.2.3); logits in fp32 for the loss",
    "master_weights": "mixed precision: Rajbhandari et al. 2020 (ZeRO), arXiv:1910.02054, sec. 3.1; "
                      "Micikevicius et al. 2018, arXiv:1710.03740",
    "gradients": "bytes per gradient by the chosen convention: ZeRO, arXiv:1910.02054, sec. 3.1; "
                 "Megatron-LM distributed optimizer; DeepSpeed fp32 gradient accumulation",
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
    found = {name: table[name] for name in built if "/" not in name}
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
    summary="Megatron-LM's kernels (Korthikanti et al. 2022) and the ZeRO conventions",
    modes=("inference", "training"),
    knobs=PROFILE_KNOBS,
    build=build,
    check=check,
    refusal_note="the megatron profile has no device choice; --device is read by --profile transformers",
)
