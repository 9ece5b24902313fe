"""Composing formulas into the memory model of one model and scenario.

``build(spec, scenario)`` returns a :class:`MemoryModel` whose terms are expressions in the
declared symbols and whose facts pin the model's shape and the scenario's byte widths.
"""

from __future__ import annotations

import sympy

from engine import architecture
from engine.model import MemoryModel
from engine.scenario import LOSS_DTYPE, Scenario
from engine.spec import ModelSpec
from formulas import activations, kv_cache, optimizer, overhead, weights
from formulas import parameters as P
from formulas import symbols as S
from formulas.dtypes import DTYPE_BYTES
from formulas.optimizer import OPTIMIZER_STATE_BYTES
from formulas.weights import QUANT_SCHEMES


def build(spec: ModelSpec, scenario: Scenario) -> MemoryModel:
    """The inference or training memory model of ``spec`` under ``scenario``."""
    if scenario.mode == "training":
        return build_training(spec, scenario)
    return build_inference(spec, scenario)


def _weight_terms(spec: ModelSpec, scenario: Scenario) -> dict[str, sympy.Expr]:
    tensors = architecture.parameter_tensors(spec) + architecture.buffer_tensors(spec)
    parts = weights.weight_bytes_by_component(tensors, scenario.weight_quant)
    terms = {"weights": sympy.Add(*parts.values())}
    terms.update({f"weights/{component}": expr for component, expr in parts.items()})
    return terms


def _kv_cache(spec: ModelSpec, scenario: Scenario) -> sympy.Expr:
    return kv_cache.kv_cache(
        mla_layout=scenario.mla_cache if spec.mla else None,
        has_sliding=spec.num_sliding_layers > 0,
        paged=scenario.block_size is not None,
        expanded_heads=spec.kv_cache_expanded,
    )


def _facts(spec: ModelSpec, scenario: Scenario) -> dict[sympy.Symbol, sympy.Expr]:
    values = dict(architecture.facts(spec))
    quant_bytes, scale_bytes, group = QUANT_SCHEMES[scenario.weight_quant]
    widths = {
        S.weight_bytes: scenario.weight_bytes(),
        S.kv_cache_bytes: scenario.kv_bytes(),
        S.activation_bytes: scenario.weight_bytes(),
        S.quantized_weight_bytes: quant_bytes or None,
        S.quant_scale_bytes: scale_bytes or None,
        S.quant_group_size: scenario.quant_group_size or group,
        S.batch_size: scenario.batch_size,
        S.seq_len: scenario.seq_len,
        S.block_size: scenario.block_size,
        S.reserve_bytes: scenario.reserve_bytes,
    }
    if scenario.mode == "training":
        weight_width, grad, master, _ = scenario.training_bytes()
        widths.update({
            S.weight_bytes: weight_width,
            S.activation_bytes: weight_width,
            S.gradient_bytes: grad,
            S.master_weight_bytes: master or None,
            S.optimizer_bytes: OPTIMIZER_STATE_BYTES[scenario.optimizer],
            S.loss_bytes: DTYPE_BYTES[LOSS_DTYPE],
        })
    for sym, value in widths.items():
        if value is not None:
            values[sym] = sympy.Rational(value.numerator, value.denominator)
    return values


def _inputs(spec: ModelSpec, scenario: Scenario) -> dict[str, object]:
    inputs = {"model": spec.name, **scenario.as_inputs()}
    if scenario.mode == "training":
        inputs["precision"] = scenario.training_bytes()[3]
    return inputs


def build_inference(spec: ModelSpec, scenario: Scenario) -> MemoryModel:
    """Weights + KV cache + the activation peak of one layer (or the logits) + overhead."""
    terms = _weight_terms(spec, scenario)
    terms["kv_cache"] = _kv_cache(spec, scenario)
    eager = scenario.attention == "eager"
    peaks = {
        "activations/attention": activations.attention_peak(eager),
        "activations/mlp": _mlp_peak(spec),
        "activations/logits": activations.logits(scenario.logits),
    }
    terms["activations"] = sympy.Max(*peaks.values())
    terms.update(peaks)
    terms["overhead"] = overhead.reserve()
    tensors = architecture.parameter_tensors(spec)
    return MemoryModel(
        name=spec.name,
        mode="inference",
        terms=terms,
        facts=_facts(spec, scenario),
        descriptions=DESCRIPTIONS,
        inputs=_inputs(spec, scenario),
        parameters=P.parameter_count(tensors),
        active_parameters=P.active_parameter_count(tensors),
    )


def _mlp_peak(spec: ModelSpec) -> sympy.Expr:
    """Dense layers: the MLP's width; MoE layers: the routed and shared experts a token uses."""
    peak = activations.mlp_peak(spec.gated_mlp)
    if not spec.is_moe:
        return peak
    width = S.num_experts_per_tok * S.moe_intermediate_size
    if spec.num_shared_experts:
        width += S.num_shared_experts * S.moe_intermediate_size
    moe = activations.mlp_peak(True).xreplace({S.intermediate_size: width})
    return moe if spec.num_moe_layers == spec.num_hidden_layers else sympy.Max(peak, moe)


def build_training(spec: ModelSpec, scenario: Scenario) -> MemoryModel:
    """Weights, master copy, gradients, optimizer state and saved activations, in two phases.

    forward_backward (the start of backward): weights, master copy, optimizer state (from
    the previous step), every saved activation and the logits; no gradients yet (PyTorch's
    ``zero_grad(set_to_none=True)``). optimizer_step: weights, master copy, gradients and
    optimizer state, activations freed. The peak is the larger of the two.
    """
    tensors = architecture.parameter_tensors(spec)
    trained = P.parameter_count(tensors)
    terms = _weight_terms(spec, scenario)
    if scenario.training_bytes()[2]:
        terms["master_weights"] = optimizer.master_weights(trained)
    terms["gradients"] = optimizer.gradients(trained)
    terms["optimizer"] = optimizer.optimizer_state(trained)
    layers = activations.training_activations(scenario.recompute)
    logits = activations.training_logits()
    terms["activations"] = layers + logits
    terms["activations/layers"] = layers
    terms["activations/logits"] = logits
    terms["overhead"] = overhead.reserve()
    state = [n for n in ("weights", "master_weights") if n in terms]
    phases = {
        "forward_backward": (*state, "optimizer", "activations", "overhead"),
        "optimizer_step": (*state, "gradients", "optimizer", "overhead"),
    }
    return MemoryModel(
        name=spec.name,
        mode="training",
        terms=terms,
        facts=_facts(spec, scenario),
        phases=phases,
        descriptions=DESCRIPTIONS,
        inputs=_inputs(spec, scenario),
        parameters=trained,
        active_parameters=P.active_parameter_count(tensors),
    )


DESCRIPTIONS: dict[str, str] = {
    "weights": "stored parameters and persistent buffers",
    "kv_cache": "keys and values of every cached token",
    "activations": "activation peak (inference: one layer or the logits; training: saved for backward)",
    "activations/attention": "one attention layer's temporaries",
    "activations/mlp": "one MLP's temporaries",
    "activations/logits": "the logits",
    "activations/layers": "tensors every layer saves for backward",
    "master_weights": "fp32 master copy of the weights",
    "gradients": "one gradient per trained parameter",
    "optimizer": "optimizer state",
    "overhead": "reserved outside the model (CUDA context, runtime)",
}
