"""Training terms per GPU: model state under ZeRO and offload, saved activations, LoRA.

Model state (Rajbhandari et al. 2020): weights ``P beta_w``, fp32 master copy ``P beta_m``,
gradients ``P beta_g`` and optimizer state ``P beta_o``, where ``P`` is what this GPU holds
of the trained parameters (formulas/parallelism.py) and ZeRO stage ``z`` divides the first
``z`` of (optimizer + master, gradients, weights) by ``N_d``. Offloaded state moves to host
memory (ZeRO-Offload, arXiv:2101.06840; ZeRO-Infinity, arXiv:2104.07857).
"""

from __future__ import annotations

import sympy

from engine import architecture
from engine.compose import _first_stage, _overhead_terms, _weight_terms
from engine.errors import InputError
from engine.scenario import Scenario
from engine.spec import ModelSpec
from formulas import activations, optimizer, peft
from formulas import parallelism as par
from formulas import parameters as P
from formulas import symbols as S


def _per_gpu_count(tensors: list[P.WeightTensor]) -> sympy.Expr:
    return sympy.Add(*(t.numel * par.gpu_share(t) for t in tensors))


def training_terms(spec: ModelSpec, scenario: Scenario):
    """(terms, host_terms, phases) of one GPU of the first pipeline stage."""
    zero = scenario.zero
    base = _first_stage(architecture.parameter_tensors(spec), scenario)
    terms = _weight_terms(spec, scenario, par.zero_partition(zero, "weights"))
    lora = scenario.lora_rank is not None
    if lora:
        targets, trained_tensors = _adapters(spec, scenario)
        trained = _per_gpu_count(trained_tensors)
        terms["adapters"] = trained * S.adapter_bytes
    else:
        targets = []
        trained_tensors = base
        trained = _per_gpu_count(base)
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
    terms.update(state)

    host_terms: dict[str, sympy.Expr] = {}
    if scenario.offload in ("optimizer", "both"):
        for name in ("master_weights", "optimizer"):
            if name in terms:
                host_terms[name] = terms[name]
                terms[name] = sympy.Integer(0)
    if zero == 3:  # (1 - 1/N_d) makes it 0 without data parallelism
        terms["zero3_gathered"] = _zero3_gathered(spec, scenario)
    if scenario.offload in ("parameters", "both"):
        host_terms["weights"] = terms["weights"]
        for name in [n for n in terms if n == "weights" or n.startswith("weights/")]:
            terms[name] = sympy.Integer(0)

    terms.update(_activation_terms(spec, scenario, targets))
    persistent = [n for n in ("weights", "adapters", "master_weights") if n in terms]
    forward = [*persistent, "optimizer", "activations", *(["zero3_gathered"] if "zero3_gathered" in terms else [])]
    step = [*persistent, "gradients", "optimizer"]
    sums = [sympy.Add(*(terms[n] for n in names)) for names in (forward, step)]
    terms.update(_overhead_terms(sympy.Max(*sums)))
    phases = {"forward_backward": (*forward, "overhead"), "optimizer_step": (*step, "overhead")}
    return terms, host_terms, phases


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
    layers = S.num_hidden_layers * activations.korthikanti_layer(scenario.recompute, sp, eager) * cp
    if scenario.vpp is not None and scenario.pp > 1:
        layers *= par.pipeline_in_flight() / S.pipeline_parallel
    if scenario.recompute == "full":  # backward rebuilds one layer at a time
        layers += activations.korthikanti_layer("none", sp, eager) * cp
    parts = {"activations/layers": layers}
    if scenario.pp == 1:
        parts["activations/logits"] = activations.training_logits() * par.sequence_share() / S.tensor_parallel
    if lora_targets:
        parts["activations/lora"] = peft.lora_activations(lora_targets) * par.sequence_share()
    return {"activations": sympy.Add(*parts.values()), **parts}


def _check_lora_targets(spec: ModelSpec, asked: tuple[str, ...] | None, targets) -> None:
    """Every module named in ``--lora-targets`` must exist in the model."""
    found = {peft.module_name(t) for t in targets}
    unknown = [name for name in (asked or ()) if name not in found]
    if unknown or not targets:
        known = sorted({peft.module_name(t) for t in peft.lora_targets(architecture.parameter_tensors(spec), None)})
        raise InputError(f"--lora-targets: {', '.join(unknown) or 'nothing'} is not a linear module of "
                         f"{spec.name} (modules: {', '.join(known)})")


def _adapters(spec: ModelSpec, scenario: Scenario):
    """(adapted base tensors, adapter tensors on the first stage) of ``--lora-rank``."""
    targets = peft.lora_targets(architecture.parameter_tensors(spec), scenario.lora_targets)
    _check_lora_targets(spec, scenario.lora_targets, targets)
    return targets, _first_stage(peft.lora_adapter_tensors(targets), scenario)


def adapter_count(spec: ModelSpec, scenario: Scenario) -> sympy.Expr:
    """LoRA parameters one GPU holds."""
    return _per_gpu_count(_adapters(spec, scenario)[1])
