"""The profile a model is built with when ``--profile`` is not given, and why.

``transformers`` (what HF transformers + PyTorch allocate: ``model.generate``'s prefill,
``Trainer``'s step; the most common single-GPU stack, measured in docs/accuracy.md) on one
device; ``megatron`` (Korthikanti et al.'s kernels) for a parallel layout, which the
transformers profile does not model, and in inference for anything else it does not model
(a model kind, a knob, a value). A fallback is never silent: :func:`choose` returns the
reason, which engine.profiles.build stores as ``inputs["profile_note"]`` and every report's
profile line prints, e.g. ``profile megatron (the default transformers profile does not model
--kv-cache-dtype float8)``. In training the same holds where megatron
models what the transformers profile refuses (a model kind, ``--recompute selective``); where
neither does, the transformers refusal stands, naming the knob.
"""

from __future__ import annotations

from fractions import Fraction
from typing import TYPE_CHECKING

from engine.errors import InputError

if TYPE_CHECKING:  # annotations only: these layers sit below the profiles
    from engine.scenario import Scenario
    from engine.spec import ModelSpec

# dtypes the transformers profile computes in (``model.to(dtype)``); float8/int8/int4 are storage formats
COMPUTE_DTYPES = ("float32", "float16", "bfloat16")
DEFAULT = "transformers"  # one device without --profile, inference and training: HF transformers + PyTorch
PARALLEL_DEFAULT = "megatron"  # parallel layouts, and inference the transformers profile does not model
# knobs that make a scenario a parallel layout (beside every knob of the "parallelism" group)
PARALLEL_KNOBS = ("zero", "offload")
# data-parallel training the transformers profile models as accelerate runs it (DDP, FSDP1,
# DeepSpeed ZeRO: engine/profiles/transformers_distributed.py)
DATA_PARALLEL_KNOBS = ("dp", "zero", "sharding", "offload")
# training precision conventions only megatron/deepspeed spell (the transformers profile: auto, pure, amp)
MEGATRON_PRECISIONS = ("zero16", "megatron18", "deepspeed20", "fp8")
# knobs its training build reads and its prefill does not: LoRA adapters (megatron counts them in inference)
TRAINING_ONLY = ("lora_rank", "lora_targets", "adapter_dtype")
NOTE = "the default transformers profile does not model {reason}"


def parallel_knob(scenario: "Scenario") -> str:
    """Why ``scenario`` is a layout the transformers profile does not model (``--flag value`` of
    the first such knob, and what it models), or '': any parallel knob in inference; in
    training, one beyond the data parallelism of :data:`DATA_PARALLEL_KNOBS`, or data
    parallelism under a Megatron or DeepSpeed precision convention."""
    from engine.scenario import changed_knobs

    training = scenario.mode == "training"
    for k in changed_knobs(scenario):
        if training and k.name in DATA_PARALLEL_KNOBS:
            continue
        if k.group == "parallelism" or k.name in PARALLEL_KNOBS:
            scope = "one device and data parallelism" if training else "one device"
            return f"{k.shown(getattr(scenario, k.name))}: it models {scope}"
    data_parallel = scenario.dp > 1 or bool(scenario.zero) or scenario.offload != "none"
    if training and data_parallel and scenario.precision in MEGATRON_PRECISIONS:
        return f"--precision {scenario.precision} with data parallelism (it spells auto, pure and amp)"
    return ""


def choose(spec: "ModelSpec | None", scenario: "Scenario", transformers, accepts) -> tuple[str, str]:
    """``(profile name, note)``: the default profile of ``scenario`` (``spec``'s, when given) and,
    when it is not ``transformers``, why (the note for the profile line); ``('transformers', '')``
    when it is. ``transformers`` is that profile's ``Profile`` and ``accepts(name, spec, scenario)``
whether a profile models the scenario (engine.profiles passes both).

    A training scenario the transformers profile refuses (a model kind, ``--recompute
    selective``) falls back to megatron only where megatron models it; otherwise the
    transformers refusal stands, naming the knob."""
    layout = parallel_knob(scenario)
    if layout:
        return PARALLEL_DEFAULT, NOTE.format(reason=layout)
    if scenario.mode == "training":
        reason = gap(spec, scenario, transformers, transformers.knobs)
        if reason and accepts(PARALLEL_DEFAULT, spec, scenario):
            return PARALLEL_DEFAULT, NOTE.format(reason=reason)
        return DEFAULT, ""
    reason = inference_gap(spec, scenario, transformers)
    return (PARALLEL_DEFAULT, NOTE.format(reason=reason)) if reason else (DEFAULT, "")


def gap(spec: "ModelSpec | None", scenario: "Scenario", transformers, knobs) -> str:
    """The first knob of ``scenario`` outside ``knobs``, else what ``transformers.check`` refuses, or ''."""
    from engine.scenario import unread_knobs

    unread = unread_knobs(scenario, knobs | {"mode"})
    if unread:
        value = getattr(scenario, unread[0].name)
        return unread[0].shown(float(value) if isinstance(value, Fraction) else value)  # 0.05, not 1/20
    if spec is None:
        return ""
    try:
        transformers.check(spec, scenario.resolved(spec.torch_dtype, spec.name))
    except InputError as exc:
        return refusal_reason(str(exc), spec)
    return ""


def inference_gap(spec: "ModelSpec | None", scenario: "Scenario", transformers) -> str:
    """What the transformers profile does not model in this inference ``scenario``, a noun phrase, or ''.

    In order: a knob it does not read (in inference: the LoRA knobs, :data:`TRAINING_ONLY`); a dtype it does not compute in; quantized weights
    (``--weight-quant`` or the checkpoint's ``quantization_config``: its prefill is measured on
    unquantized weights); then whatever its own ``check`` refuses (a model kind: MLA, MoE,
    recurrent or multimodal families, sliding windows; a ``--kv-cache-dtype`` other than the
    model's), in the words of that refusal."""
    reason = gap(None, scenario, transformers, transformers.knobs - set(TRAINING_ONLY))
    if reason or spec is None:
        return reason
    resolved = scenario.resolved(spec.torch_dtype, spec.name)
    if resolved.dtype_name() not in COMPUTE_DTYPES:
        return f"--dtype {scenario.dtype} (it computes in {', '.join(COMPUTE_DTYPES)})"
    from engine.terms import weight_format

    quant = weight_format(spec, resolved).name
    if quant != "none":
        given = "--weight-quant" if resolved.weight_quant else "the checkpoint's quantization_config"
        return f"{given} {quant} in inference (its prefill is measured on unquantized weights)"
    return gap(spec, scenario, transformers, transformers.knobs - set(TRAINING_ONLY))


def refusal_reason(message: str, spec: "ModelSpec") -> str:
    """The transformers profile's refusal as a noun phrase: without its ``--profile transformers:``
    prefix, its advice (what follows the first ``;``) and its verb (``model_type 'gemma2' (GQA+
    sliding-window) is not modelled`` -> ``model_type 'gemma2' (GQA+sliding-window)``)."""
    reason = message.split(": ", 1)[1] if message.startswith("--profile ") else message
    reason = reason.split("; ", 1)[0]
    if " is not modelled" in reason:
        return reason.replace(" is not modelled", "", 1)
    if spec.is_moe:  # "... is modelled for full training of all-MoE layers only (not inference ...)"
        return f"the inference of MoE {spec.model_type} models (it models their full training)"
    return f"this scenario ({reason})"
