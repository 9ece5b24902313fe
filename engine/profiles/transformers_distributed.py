"""Data-parallel training in the ``transformers`` profile: HF Trainer / accelerate with DDP,
FSDP1 or DeepSpeed ZeRO, per GPU.

The layout follows the knobs: ``--dp N`` alone is DDP (full replicas plus the reducer's
gradient buckets, :mod:`formulas.frameworks.accelerate`); ``--zero 1|2|3`` shards through
accelerate's DeepSpeed plugin (``--sharding deepspeed``, the default: ZeRO's model states as
:mod:`engine.profiles.deepspeed` counts them, with the DeepSpeed defaults of the config
accelerate writes, ``accelerate/utils/dataclasses.py`` ``DeepSpeedPlugin.__post_init__``) or
its FSDP plugin (``--sharding fsdp``: FSDP1, ``--zero 3`` FULL_SHARD, ``--zero 2``
SHARD_GRAD_OP, auto-wrapped by decoder layer). The saved activations are the one-device
profile's; under FSDP and ZeRO the layers compute with 16-bit parameters (FSDP's
``MixedPrecision.param_dtype``; DeepSpeed's ``module.bfloat16()``), so autocast has no fp32
weights to cast and they are the ``--precision pure`` rows.

``--offload``: ZeRO-Offload moves the fp32 master, the moments and the fp32 gradients to the
host (``--offload parameters|both`` at ZeRO-3 also the 16-bit partition); FSDP1's
``CPUOffload(offload_params=True)`` (``--offload both``) moves the sharded parameters, their
gradients and the optimizer step. Host bytes are ``host_terms``, outside ``total_bytes``.
"""

from __future__ import annotations

import sympy

from engine import architecture
from engine.errors import InputError
from engine.profiles import deepspeed as ds
from engine.scenario import Scenario
from engine.spec import ModelSpec
from formulas import parallelism as par
from formulas import parameters as P
from formulas import symbols as S
from formulas.optimizer import state_bytes_per_parameter
from formulas.frameworks import accelerate as A
from formulas.frameworks import deepspeed as DS
from formulas.frameworks import transformers as F

FLOAT32 = DS.FP32_BYTES
BACKWARD = ("loss_backward", "head_backward", "recompute", "backward_end", "layer_backward", "root_backward")
FSDP_STRATEGY = {3: "FULL_SHARD", 2: "SHARD_GRAD_OP"}


def layout(scenario: Scenario) -> str | None:
    """None (one device), ``ddp``, ``fsdp`` or ``deepspeed``."""
    if scenario.zero:
        return scenario.sharding or "deepspeed"
    return "ddp" if scenario.dp > 1 else None


def sharded(scenario: Scenario) -> bool:
    return scenario.mode == "training" and layout(scenario) in ("fsdp", "deepspeed")


def check(spec: ModelSpec, scenario: Scenario) -> None:
    """Refuse the data-parallel settings this module does not model, naming the flag."""
    where = layout(scenario)
    if scenario.sharding and not scenario.zero:
        raise InputError(f"--profile transformers: --sharding {scenario.sharding} needs --zero (FSDP: --zero 3 "
                         "FULL_SHARD or 2 SHARD_GRAD_OP; DeepSpeed: --zero 1, 2 or 3)")
    if scenario.mode != "training" and where is not None:
        raise InputError(f"--profile transformers: --dp {scenario.dp} / --zero {scenario.zero} is modelled for "
                         "training only")
    if where == "ddp" and scenario.offload != "none":
        raise InputError(f"--profile transformers: --offload {scenario.offload} needs --zero (DDP keeps every "
                         "state on the GPU; ZeRO-Offload or FSDP's CPUOffload move it)")
    if not sharded(scenario):
        return
    if where == "fsdp" and scenario.zero == 1:
        raise InputError("--profile transformers: --zero 1 with --sharding fsdp is not modelled; FSDP1 shards "
                         "FULL_SHARD (--zero 3) or SHARD_GRAD_OP (--zero 2); ZeRO-1 is --sharding deepspeed")
    if where == "fsdp" and scenario.offload not in ("none", "both"):
        raise InputError(f"--profile transformers: --offload {scenario.offload} with --sharding fsdp is not "
                         "modelled; FSDP1's CPUOffload moves parameters, gradients and the step together: "
                         "--offload both")
    if where == "deepspeed" and scenario.weight_bytes() != 2:
        raise InputError(f"--profile transformers: --dtype {scenario.dtype} with --zero is not modelled; DeepSpeed "
                         "trains bf16/fp16 with an fp32 master copy")
    if where == "deepspeed" and scenario.precision == "pure":
        raise InputError("--profile transformers: --precision pure with --zero is not modelled; DeepSpeed's bf16 "
                         "keeps an fp32 master copy (--precision auto or amp)")
    unmodelled = [(scenario.lora_rank is not None, f"--lora-rank {scenario.lora_rank}"),
                  (scenario.optimizer not in ("adamw", "adam"), f"--optimizer {scenario.optimizer}"),
                  ((scenario.weight_quant or "none") != "none", f"--weight-quant {scenario.weight_quant}")]
    for refused, named in unmodelled:
        if refused:
            raise InputError(f"--profile transformers: {named} with --zero {scenario.zero} ({where}) is not "
                             "modelled (data parallel without --zero is DDP, modelled)")


def units(tensors: list[P.WeightTensor]) -> tuple[sympy.Expr, sympy.Expr]:
    """(the root unit's elements, one decoder layer's): FSDP's auto-wrap puts each decoder
    layer in its own unit, the embeddings, final norm and ``lm_head`` in the root."""
    layers = sympy.Add(*(t.numel for t in tensors if par.is_per_layer(t)))
    root = sympy.Add(*(t.numel for t in tensors if not par.is_per_layer(t)))
    return root, sympy.expand(layers / S.num_hidden_layers)


def state_terms(spec: ModelSpec, scenario: Scenario, terms: dict[str, sympy.Expr],
                tensors: list[P.WeightTensor]) -> dict[str, sympy.Expr]:
    """Replace the one-device ``weights``, ``gradients``, ``optimizer`` and step temporaries in
    ``terms`` by the layout's; return the host terms (``--offload``)."""
    where = layout(scenario) if scenario.mode == "training" else None
    if where is None:
        return {}
    if where == "ddp":
        terms["ddp_buckets"] = A.ddp_buckets(P.parameter_count(tensors))
        return {}
    rotary = terms["weights/rotary_buffers"]
    for name in [n for n in terms if n == "weights" or n.startswith("weights/")]:
        del terms[name]
    if where == "deepspeed":
        states = ds.model_states(spec, scenario)
        host = ds.offload_states(scenario, states)
        partition = P.parameter_count(tensors) / S.data_parallel
        tile = sympy.Min(DS.SUB_GROUP_SIZE, partition) if scenario.zero == 3 else partition
        terms["optimizer_temporaries"] = sympy.Integer(0) if "optimizer" in host else A.zero_step_temporaries(tile)
    else:
        states, host = _fsdp_states(spec, scenario, tensors)
        terms.pop("tied_gradient_sum", None)  # inside fsdp_root_gradient: the root's split backward
    states["weights/rotary_buffers"] = rotary  # buffers are not sharded
    states["weights"] += rotary
    rest = {k: v for k, v in terms.items() if k not in states}
    terms.clear()
    terms.update({k: v for k, v in states.items() if k.startswith("weights")} | rest | states)
    return host


def _fsdp_states(spec: ModelSpec, scenario: Scenario, tensors: list[P.WeightTensor]) -> tuple[dict, dict]:
    """FSDP1's flat parameters: shards, the unsharded root and layer, their gradients."""
    root, layer = units(tensors)
    tied = S.vocab_size * S.hidden_size if spec.tie_word_embeddings else None
    shards = A.fsdp_sharded(root, layer, S.num_hidden_layers)
    held = sum((t.count for t in tensors), sympy.Integer(0))
    counters = F.step_counters(held, on_device=scenario.device == "cpu")
    grads = {"gradients/root": A.fsdp_sharded_gradients(A.fsdp_shard(root)),
             "gradients/layers": A.fsdp_sharded_gradients(S.num_hidden_layers * A.fsdp_shard(layer))}
    states = {"weights": A.fsdp_sharded_parameters(shards), "gradients": sympy.Add(*grads.values()), **grads,
              "optimizer": S.optimizer_bytes * shards + counters,
              "fsdp_root": A.fsdp_unsharded(root), "fsdp_layer": A.fsdp_unsharded(layer),
              "fsdp_head_gradients": A.fsdp_head_gradients(S.vocab_size * S.hidden_size + S.hidden_size),
              "fsdp_layer_gradient": A.fsdp_layer_gradient(layer), "fsdp_root_gradient": A.fsdp_root_gradient(root, tied)}
    if scenario.zero == 2:  # SHARD_GRAD_OP: every layer stays gathered from its forward to its backward
        states["fsdp_layers_kept"] = (S.num_hidden_layers - 1) * A.fsdp_unsharded(layer)
    largest = sympy.Max(*(t.rows * t.cols for t in tensors))
    states["optimizer_temporaries"] = F.adamw_temporaries(scenario.device == "cuda", sympy.Min(largest, A.fsdp_shard(
        sympy.Max(root, layer))), shards)
    host = {}
    if scenario.offload == "both":  # CPUOffload(offload_params=True): shards, gradients and the step on the host
        host = {name: states[name] for name in ("weights", "gradients", "optimizer")}
        states.update({name: sympy.Integer(0) for name in (*host, *grads, "optimizer_temporaries")})
    return states, host


def phases(scenario: Scenario, terms: dict[str, sympy.Expr], base: dict[str, tuple[str, ...]]) -> dict:
    """The one-device phases with the layout's buffers added where they are alive; FSDP adds the
    end of the first layer's backward and the root's (the embedding's gradient last)."""
    where = layout(scenario)
    out = dict(base)
    if where is None:
        return out
    if where == "fsdp":  # the root's split backward ends backward, tied embeddings' sum included
        out.pop("backward_end", None)
        held = tuple(n for n in out["optimizer_step"] if n not in ("gradients", "optimizer_temporaries", "overhead"))
        out["layer_backward"] = (*held, "gradients/layers", "fsdp_layer", "fsdp_layer_gradient", "overhead")
        out["root_backward"] = (*held, "gradients/layers", "fsdp_root_gradient", "overhead")
    for name, members in out.items():
        extra = dict.fromkeys(e for e in _alive(where, scenario, name, terms) if e not in members)
        out[name] = (*members[:-1], *extra, members[-1])
    return out


def _alive(where: str, scenario: Scenario, phase: str, terms: dict[str, sympy.Expr]) -> tuple[str, ...]:
    """The layout's buffers alive in ``phase``."""
    backward = phase in BACKWARD
    if where == "ddp":
        return ("ddp_buckets",)
    if where == "deepspeed":
        stage3 = ("gradients", "zero3_gathered") if scenario.zero == 3 and backward else ()
        return ("master_weights", *stage3, *(("reduce_buckets",) if backward else ()))
    if not backward:
        return ()
    forward_kept = phase in ("loss_backward", "head_backward", "recompute")
    kept = ("fsdp_layers_kept", "fsdp_layer") if "fsdp_layers_kept" in terms and forward_kept else ()
    gathered = ("fsdp_layer",) if phase == "recompute" else ()
    waiting = ("fsdp_head_gradients",) if phase in ("recompute", "layer_backward") else ()
    return ("fsdp_root", *gathered, *kept, *waiting)


def update_facts(scenario: Scenario, facts: dict[sympy.Symbol, sympy.Expr]) -> None:
    """Byte widths under the layout: FSDP's autograd gradients are in the compute dtype;
    DeepSpeed keeps 16-bit parameters and gradients, fp32 master and moments."""
    width = facts[S.activation_bytes]
    if layout(scenario) == "fsdp":
        facts[S.gradient_bytes] = width
    elif layout(scenario) == "deepspeed":
        facts.update({S.weight_bytes: width, S.gradient_bytes: width,
                      S.optimizer_bytes: sympy.Rational(state_bytes_per_parameter(scenario.optimizer, FLOAT32))})


def convention(scenario: Scenario, facts: dict[sympy.Symbol, sympy.Expr], one_device: str) -> str:
    """The layout's bytes per parameter in words (``one_device``: the one-device convention)."""
    where, n = layout(scenario), scenario.dp
    if where == "ddp":
        return f"DDP over {n} GPUs, each a full replica: {one_device} + DDP's gradient buckets (a second copy of the grads)"
    if where == "fsdp":
        master = int(facts[S.weight_bytes])
        state = master + master + int(facts[S.optimizer_bytes])
        place = "on the host (CPUOffload)" if scenario.offload == "both" else f"= {state / n:g} B/param per GPU"
        return (f"accelerate FSDP1 {FSDP_STRATEGY[scenario.zero]} over {n} GPUs: {_width(master)} sharded params + "
                f"{_width(master)} sharded grads + 2 {_width(master)} {scenario.optimizer} moments = {state} B/param "
                f"/ {n} {place}, + the running units' {_width(int(facts[S.activation_bytes]))} unsharded copies")
    host = {"optimizer": "master, moments and fp32 grads on the host (ZeRO-Offload)",
            "parameters": "16-bit params on the host", "both": "all of it on the host (ZeRO-Offload + offload_param)",
            "none": ""}[scenario.offload]
    sharded_part = {1: "fp32 master + fp32 grads + 2 fp32 moments (16 B)", 2: "bf16 grads + fp32 master + fp32 "
                    "grads + 2 fp32 moments (18 B)", 3: "all of it (20 B)"}[scenario.zero]
    return (f"accelerate DeepSpeed ZeRO-{scenario.zero} over {n} GPUs: bf16 params (2 B) + bf16 grads (2 B) + fp32 "
            f"master (4 B) + fp32 grads (4 B) + 2 fp32 {scenario.optimizer} moments (8 B) = 20 B/param, "
            f"{sharded_part} sharded / {n}" + (f"; {host}" if host else ""))


def _width(width: int) -> str:
    return {4: "fp32", 2: "bf16"}.get(width, f"{width}-byte")


_TORCH = "torch 2.13 torch/distributed/fsdp/"
SOURCES = {
    "ddp_buckets": "torch 2.13 torch/nn/parallel/distributed.py DistributedDataParallel (bucket_cap_mb 25, "
                   "gradient_as_bucket_view=False: accelerate DistributedDataParallelKwargs) and "
                   "torch/csrc/distributed/c10d/reducer.cpp Reducer::initialize_buckets",
    "fsdp_root": _TORCH + "_runtime_utils.py _post_forward_reshard (the root unit is not resharded after forward), "
                 "_flat_param.py FlatParamHandle.unshard (_full_param_padded in MixedPrecision.param_dtype)",
    "fsdp_layer": _TORCH + "_runtime_utils.py _pre_backward_hook / _post_backward_hook: the running decoder layer "
                  "gathered (accelerate's FSDP plugin: backward_prefetch NO_PREFETCH, forward_prefetch False)",
    "fsdp_layers_kept": _TORCH + "_runtime_utils.py _post_forward_reshard: SHARD_GRAD_OP keeps each unit gathered "
                        "until its backward",
    "fsdp_head_gradients": _TORCH + "_flat_param.py _use_unsharded_views: lm_head's and the final norm's "
                           "gradients wait in the root's split_with_sizes backward until the embedding's arrives",
    "fsdp_root_gradient": _TORCH + "_flat_param.py _use_unsharded_views: the root's views' gradients and the flat "
                          "gradient their split backward concatenates (the end of backward)",
    "fsdp_layer_gradient": _TORCH + "_runtime_utils.py _reduce_grad: the layer's full gradient and the "
                           "reduce-scatter's output shard",
    "master_weights": ds.SOURCES["master_weights"],
    "reduce_buckets": ds.SOURCES["reduce_buckets"] + "; accelerate's DeepSpeedPlugin writes no bucket sizes, so "
                      "DeepSpeed's defaults hold",
    "zero3_gathered": ds.SOURCES["zero3_gathered"],
}
LAYOUT_SOURCES = {
    "fsdp": {"weights": _TORCH + "_flat_param.py FlatParamHandle._get_shard: one FlatParameter per decoder layer "
                        "and one for the root (transformer_auto_wrap_policy by _no_split_modules), ceil(n / N_d) "
                        "elements a rank, in the parameters' dtype",
             "gradients": _TORCH + "_runtime_utils.py _post_backward_reshard: sharded gradients cast to the "
                          "parameters' dtype",
             "optimizer": "torch 2.13 torch/optim/adamw.py on the sharded original parameters (use_orig_params=True, "
                          "transformers' fsdp_config default)"},
    "deepspeed": {name: ds.SOURCES[name] for name in ("weights", "gradients", "optimizer")},
}
HOST_SOURCE = {"fsdp": _TORCH + "api.py CPUOffload(offload_params=True): sharded parameters and gradients on the "
                       "CPU, the optimizer step there",
               "deepspeed": ds.SOURCES["host_terms"]}
DESCRIPTIONS = {
    "ddp_buckets": "DDP's flat gradient buckets (every trained parameter, in 25 MiB buckets)",
    "fsdp_root": "FSDP: the root unit (embeddings, final norm, lm_head) gathered, forward to end of backward",
    "fsdp_layer": "FSDP: the running decoder layer gathered",
    "fsdp_layers_kept": "FSDP SHARD_GRAD_OP: the other layers kept gathered until their backward",
    "fsdp_head_gradients": "FSDP: lm_head's and the final norm's gradients, waiting for the embedding's",
    "fsdp_root_gradient": "FSDP: the root's view gradients and the flat gradient made of them",
    "fsdp_layer_gradient": "FSDP: the running layer's full gradient and its reduce-scatter shard",
    **ds.DESCRIPTIONS,
}
