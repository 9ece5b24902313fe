"""The ``transformers`` profile's mixture-of-experts layers and partial rotary embeddings.

What a MoE layer saves in place of a dense MLP is :mod:`formulas.frameworks.transformers_moe`
(routed experts through ``grouped_mm``, the softmax and sigmoid routers, Qwen2-MoE's gated
shared expert, GLM-4.5's shared experts); this module decides which models it describes,
refuses the rest, and sums it over the MoE layers. Measured: tests/fixtures/moe_peaks_cpu.json
(tools/measure/moe_peaks.py).
"""

from __future__ import annotations

import sympy

from engine.errors import InputError
from engine.scenario import Scenario
from engine.spec import LayerGroup, ModelSpec
from formulas import symbols as S
from formulas.frameworks import transformers as F
from formulas.frameworks import transformers_moe as M
from formulas.frameworks import transformers_moe_prefill as MP

MOE_FAMILIES = tuple(M.ROUTING_WEIGHTS_FP32)
# families whose dense layers come first (Glm4MoeDecoderLayer: MoE from first_k_dense_replace on), so
# that the last layer, the one gradient checkpointing recomputes first, is a MoE layer
DENSE_FIRST = frozenset({"glm4_moe"})
MOE_OPTIONS = frozenset({"num_experts", "num_experts_per_tok", "moe_intermediate_size", "norm_topk_prob",
                         "shared_expert_intermediate_size", "shared_expert_gate", "num_shared_experts",
                         "router_correction_bias"})
# PEFT target_modules measured on MoE models: the attention projections (the fused experts are 3-D
# parameters, nn.Linear only in the shared experts and Qwen2-MoE's gate)
ATTENTION_TARGETS = frozenset({"q_proj", "k_proj", "v_proj", "o_proj"})


DESCRIPTIONS = {
    "activations/moe_gate": "prefill: the experts' gate/up output, SiLU and product (grouped_mm)",
    "activations/moe_unpermute": "prefill: the weighted expert rows put back in token order",
    "activations/moe_sum": "prefill: the per-token sum of the expert rows",
    "activations/moe_shared": "prefill: the shared expert's MLP",
}


def is_moe(spec: ModelSpec) -> bool:
    return spec.model_type in MOE_FAMILIES


def modelled_mlp(group: LayerGroup) -> bool:
    """A gated dense MLP, or routed experts (with shared experts) without expert or router biases."""
    return (group.mlp == "dense" and group.mlp_args.get("gated", True)
            or group.mlp == "moe" and set(group.mlp_args) <= MOE_OPTIONS)


def _moe_group(spec: ModelSpec) -> LayerGroup:
    return next(g for g in spec.layers if g.mlp == "moe")


def check(spec: ModelSpec, scenario: Scenario) -> None:
    """Refuse the MoE settings nothing was measured for, naming them."""
    if not is_moe(spec):
        return
    mixed = any(g.mlp != "moe" for g in spec.layers) and spec.model_type not in DENSE_FIRST
    if mixed:
        raise InputError(f"--profile transformers: {spec.name} ({spec.model_type}) is modelled with MoE layers "
                         f"only (dense layers among MoE ones only in {', '.join(sorted(DENSE_FIRST))}, whose "
                         "last layer is a MoE one); use --profile megatron")
    if (scenario.weight_quant or "none") != "none":
        raise InputError(f"--profile transformers: --weight-quant {scenario.weight_quant} is not modelled on the MoE "
                         f"model {spec.name} (bitsandbytes quantizes nn.Linear layers, not the fused 3-D experts)")
    modules = scenario.lora_modules()
    if scenario.lora_rank is not None and (modules is None or not set(modules) <= ATTENTION_TARGETS):
        raise InputError(f"--profile transformers: --lora-targets {','.join(modules or ('all-linear',))} is not "
                         f"modelled on the MoE model {spec.name}; LoRA on its attention only is "
                         f"(--lora-targets {','.join(sorted(ATTENTION_TARGETS))} or a subset)")


def _in_place_of_dense(spec: ModelSpec, amp: bool, upcast: bool) -> sympy.Expr:
    return M.moe_in_place_of_dense(spec.model_type, _moe_group(spec).mlp_args, amp, upcast)


def layers_saved(spec: ModelSpec, amp: bool, upcast: bool) -> sympy.Expr:
    """What the MoE layers save beyond the dense layers that ``layer_saved`` counts: ``L_e`` x
    :func:`formulas.frameworks.transformers_moe.moe_in_place_of_dense`; 0 for a dense model."""
    return S.num_moe_layers * _in_place_of_dense(spec, amp, upcast) if is_moe(spec) else sympy.Integer(0)


def last_layer_saved(spec: ModelSpec, amp: bool, upcast: bool) -> sympy.Expr:
    """The recomputed last layer's MoE MLP in place of a dense one (every layer of an all-MoE
    model, or a :data:`DENSE_FIRST` family's last); 0 for a dense model."""
    return _in_place_of_dense(spec, amp, upcast) if is_moe(spec) else sympy.Integer(0)


def frozen_layers_saved(spec: ModelSpec, upcast: bool) -> sympy.Expr:
    """PEFT LoRA on the attention: the frozen MoE layers beyond frozen dense MLPs, ``L_e`` x
    :func:`formulas.frameworks.transformers_moe.frozen_in_place_of_dense`; 0 for a dense model."""
    return S.num_moe_layers * frozen_last_layer_saved(spec, upcast) if is_moe(spec) else sympy.Integer(0)


def frozen_last_layer_saved(spec: ModelSpec, upcast: bool) -> sympy.Expr:
    """The frozen last layer's MoE MLP beyond a frozen dense one (recomputed first); 0 if dense."""
    if not is_moe(spec):
        return sympy.Integer(0)
    return M.frozen_in_place_of_dense(spec.model_type, _moe_group(spec).mlp_args, upcast)


def prefill_mlp_moments(spec: ModelSpec, eager: bool) -> dict[str, sympy.Expr]:
    """The last layer's MoE MLP moments of a prefill in place of the dense ``mlp`` one
    (formulas/frameworks/transformers.py ``prefill_moments``): the residual and the normed
    input, :func:`formulas.frameworks.transformers_moe_prefill.moe_moments`, and eager's returned
    probabilities. A dense first layer (GLM) peaks with one layer's cache, not all: not counted."""
    options = _moe_group(spec).mlp_args
    returned = S.activation_bytes * S.batch_size * S.num_attention_heads * S.seq_len**2 if eager else 0
    around = 2 * S.activation_bytes * S.batch_size * S.seq_len * S.hidden_size + returned
    moments = MP.moe_moments(spec.model_type, M.shared_expert_width(options))
    return {name: around + expr for name, expr in moments.items()}


def prefill_masks(spec: ModelSpec, eager: bool) -> sympy.Expr:
    """Masks a prefill holds that no layer reads (Qwen2-MoE's zero-window sliding mask)."""
    return MP.zero_window_mask(eager) if spec.model_type in MP.ZERO_WINDOW_MASK else sympy.Integer(0)


def partial_rotary(spec: ModelSpec) -> bool:
    """Rotary embeddings on ``rotary_dim < head_dim`` of each head (GLM-4.5's
    ``partial_rotary_factor``; family_fields.rotary_fields)."""
    return spec.rotary_dim is not None and spec.rotary_dim != spec.head_dim


def rotary_layer_saved(spec: ModelSpec, eager: bool) -> sympy.Expr:
    """Per layer, what a partial rotary embedding adds under sdpa
    (:func:`formulas.frameworks.transformers.partial_rotary_sdpa_copy`); eager attention copies
    its output for ``o_proj`` anyway."""
    return F.partial_rotary_sdpa_copy() if partial_rotary(spec) and not eager else sympy.Integer(0)


def rotary_width(spec: ModelSpec) -> sympy.Expr:
    """The width of ``cos``/``sin`` and of the two ``inv_freq`` buffers together: ``d_rope``
    (``Glm4MoeRotaryEmbedding.compute_default_rope_parameters``: ``dim = head_dim *
    partial_rotary_factor``), else ``d``."""
    return S.rotary_dim if partial_rotary(spec) else S.head_dim


def rotary_facts(spec: ModelSpec) -> dict[sympy.Symbol, int]:
    return {S.rotary_dim: spec.rotary_dim} if partial_rotary(spec) else {}
