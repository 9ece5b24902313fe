"""Composing formulas into the memory model of one model and scenario, per GPU.

``build(spec, scenario)`` returns a :class:`MemoryModel` whose terms are expressions in the
declared symbols and whose facts pin the model's shape, the scenario's byte widths and its
parallel degrees. With every degree 1 the per-GPU model is the single-GPU model. With
parallelism it is the most loaded rank: the first pipeline stage (formulas/parallelism.py).
"""

from __future__ import annotations

import sympy

from engine import architecture
from engine.errors import InputError
from engine.model import MemoryModel
from engine.scenario import LOSS_DTYPE, Scenario
from engine.spec import ModelSpec
from formulas import activations, kv_cache, optimizer, overhead, peft, weights
from formulas import parallelism as par
from formulas import parameters as P
from formulas import symbols as S
from formulas.dtypes import DTYPE_BYTES
from formulas.optimizer import OPTIMIZER_STATE_BYTES
from formulas.weights import QUANT_SCHEMES


def build(spec: ModelSpec, scenario: Scenario) -> MemoryModel:
    """The inference or training memory model of ``spec`` under ``scenario``."""
    if scenario.profile == "transformers":  # what transformers + PyTorch allocate: engine/profile.py
        from engine import profile

        return profile.build(spec, scenario)
    check_degrees(spec, scenario)
    if scenario.mode == "training":
        return build_training(spec, scenario)
    if scenario.zero or scenario.offload != "none":
        raise InputError("--zero and --offload partition training state; they do not apply to --mode inference")
    return build_inference(spec, scenario)


def check_degrees(spec: ModelSpec, scenario: Scenario) -> None:
    """Parallel degrees must divide what they split (Megatron-LM's own checks)."""
    checks = [
        ("--tp", scenario.tp, "num_attention_heads", spec.num_attention_heads),
        ("--pp", scenario.pp, "num_hidden_layers", spec.num_hidden_layers),
        ("--pp x --vpp", scenario.pp * (scenario.vpp or 1), "num_hidden_layers", spec.num_hidden_layers),
    ]
    if scenario.ep > 1:
        checks.append(("--ep", scenario.ep, "num_experts", spec.num_experts or 1))
    for flag, degree, field, value in checks:
        if value % degree:
            raise InputError(f"{flag} {degree} does not divide {field} {value} of {spec.name}")
    kv = spec.num_key_value_heads
    if not spec.mla and kv % scenario.tp and scenario.tp % kv:
        raise InputError(f"--tp {scenario.tp} neither divides nor is a multiple of num_key_value_heads {kv}")


def _first_stage(tensors: list[P.WeightTensor], scenario: Scenario) -> list[P.WeightTensor]:
    return [t for t in tensors if par.on_first_stage(t, scenario.pp > 1)]


def _weight_terms(spec: ModelSpec, scenario: Scenario, share: sympy.Expr = sympy.Integer(1)):
    """weights and weights/<component>: bytes on one GPU of the first stage."""
    tensors = _first_stage(architecture.parameter_tensors(spec) + architecture.buffer_tensors(spec), scenario)
    parts: dict[str, sympy.Expr] = {}
    for t in tensors:
        parts[t.component] = parts.get(t.component, 0) + weights.tensor_bytes(t, scenario.weight_quant) * par.gpu_share(t)
    terms = {"weights": sympy.Add(*parts.values()) * share}
    terms.update({f"weights/{component}": expr * share for component, expr in parts.items()})
    return terms


def _kv_cache(spec: ModelSpec, scenario: Scenario) -> sympy.Expr:
    expr = kv_cache.kv_cache(
        mla_layout=scenario.mla_cache if spec.mla else None,
        has_sliding=spec.num_sliding_layers > 0,
        paged=scenario.block_size is not None,
        expanded_heads=spec.kv_cache_expanded,
    )
    # Per GPU: KV heads over tensor ranks (the MLA latent is replicated on every rank),
    # layers over pipeline stages, tokens over context-parallel ranks.
    per_gpu = {S.num_key_value_heads: par.kv_heads_per_gpu()}
    if spec.kv_cache_expanded or (spec.mla and scenario.mla_cache == "decompressed"):
        per_gpu = {S.num_attention_heads: S.num_attention_heads / S.tensor_parallel}
    return expr.xreplace(per_gpu) / S.pipeline_parallel * par.sequence_share()


def _facts(spec: ModelSpec, scenario: Scenario) -> dict[sympy.Symbol, sympy.Expr]:
    values = dict(architecture.facts(spec))
    quant_bytes, scale_bytes, group = QUANT_SCHEMES[scenario.weight_quant]
    widths = {
        S.weight_bytes: scenario.weight_bytes(),
        S.kv_cache_bytes: scenario.kv_bytes(),
        S.activation_bytes: max(scenario.weight_bytes(), 2),  # fp8 models compute in bf16
        S.quantized_weight_bytes: quant_bytes or None,
        S.quant_scale_bytes: scale_bytes or None,
        S.quant_group_size: scenario.quant_group_size or group,
        S.batch_size: scenario.batch_size,
        S.seq_len: scenario.seq_len,
        S.block_size: scenario.block_size,
        S.reserve_bytes: scenario.reserve_bytes,
        S.allocator_fraction: scenario.allocator_fraction,
        S.comm_buffer_bytes: scenario.comm_buffer_bytes,
        S.tensor_parallel: scenario.tp,
        S.pipeline_parallel: scenario.pp,
        S.data_parallel: scenario.dp,
        S.expert_parallel: scenario.ep,
        S.context_parallel: scenario.cp,
        S.virtual_pipeline: scenario.vpp,
        S.lora_rank: scenario.lora_rank,
        S.adapter_bytes: scenario.adapter_bytes() if scenario.lora_rank else None,
    }
    if scenario.mode == "training":
        weight_width, grad, master, _ = scenario.training_bytes()
        # Activations are kept in the weights' dtype, at least 16-bit: FP8 training (and a
        # 4-bit QLoRA base) compute and save activations in bf16.
        widths.update({
            S.weight_bytes: weight_width,
            S.activation_bytes: max(weight_width, 2),
            S.gradient_bytes: grad,
            S.master_weight_bytes: master or None,
            S.optimizer_bytes: OPTIMIZER_STATE_BYTES.get(scenario.optimizer),
            S.loss_bytes: DTYPE_BYTES[LOSS_DTYPE],
        })
        if scenario.lora_rank:
            widths[S.gradient_bytes] = scenario.adapter_bytes()
    for sym, value in widths.items():
        if value is not None:
            values[sym] = sympy.Rational(value)
    return values


def _inputs(spec: ModelSpec, scenario: Scenario) -> dict[str, object]:
    inputs = {"model": spec.name, **scenario.as_inputs()}
    if scenario.mode == "training":
        inputs["precision"] = scenario.training_bytes()[3]
    return inputs


def _overhead_terms(peak_without_overhead: sympy.Expr) -> dict[str, sympy.Expr]:
    parts = {
        "overhead/reserve": overhead.reserve(),
        "overhead/comm_buffers": overhead.comm_buffers(),
        "overhead/allocator": overhead.allocator(peak_without_overhead),
    }
    return {"overhead": sympy.Add(*parts.values()), **parts}


def build_inference(spec: ModelSpec, scenario: Scenario) -> MemoryModel:
    """Weights + KV cache + the activation peak of one layer (or the logits) + overhead."""
    terms = _weight_terms(spec, scenario)
    if scenario.lora_rank is not None:  # unmerged adapters served beside the base (PEFT)
        from engine.training import adapter_count

        terms["adapters"] = adapter_count(spec, scenario) * S.adapter_bytes
    terms["kv_cache"] = _kv_cache(spec, scenario)
    eager = scenario.attention == "eager"
    t = S.tensor_parallel
    split_heads = {S.num_attention_heads: S.num_attention_heads / t}
    peaks = {
        "activations/attention": activations.attention_peak(eager).xreplace(split_heads),
        "activations/mlp": _mlp_peak(spec) / t,
        "activations/logits": activations.logits(scenario.logits) / t,
    }
    terms["activations"] = sympy.Max(*peaks.values())
    terms.update(peaks)
    terms.update(_overhead_terms(sympy.Add(*(terms[n] for n in ("weights", "adapters", "kv_cache", "activations")
                                             if n in terms))))
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
    from engine.training import training_terms

    terms, host_terms, phases = training_terms(spec, scenario)
    tensors = architecture.parameter_tensors(spec)
    return MemoryModel(
        name=spec.name,
        mode="training",
        terms=terms,
        facts=_facts(spec, scenario),
        phases=phases,
        descriptions=DESCRIPTIONS,
        inputs=_inputs(spec, scenario),
        parameters=P.parameter_count(tensors),
        active_parameters=P.active_parameter_count(tensors),
        host_terms=host_terms,
    )


DESCRIPTIONS: dict[str, str] = {
    "weights": "stored parameters and persistent buffers",
    "kv_cache": "keys and values of every cached token",
    "activations": "activation peak (inference: one layer or the logits; training: saved for backward)",
    "activations/attention": "one attention layer's temporaries",
    "activations/mlp": "one MLP's temporaries",
    "activations/logits": "the logits",
    "activations/layers": "tensors every layer saves for backward",
    "activations/lora": "LoRA adapters' saved outputs",
    "master_weights": "fp32 master copy of the trained weights",
    "gradients": "one gradient per trained parameter",
    "optimizer": "optimizer state",
    "zero3_gathered": "ZeRO-3 / FSDP: full parameters of the layers being gathered",
    "adapters": "LoRA adapter weights",
    "overhead": "memory outside the model's tensors",
    "overhead/reserve": "CUDA context and runtime",
    "overhead/comm_buffers": "communication buffers",
    "overhead/allocator": "allocator reserve and fragmentation",
}
