"""From a ModelSpec to formulas: which parameter tensors it has and what its symbols equal."""

from __future__ import annotations

import sympy

from engine.spec import ModelSpec
from formulas import parameters as P
from formulas import symbols as S


def parameter_tensors(spec: ModelSpec) -> list[P.WeightTensor]:
    """Every parameter tensor family of ``spec``, keyed ``component/name``."""
    tensors = P.embedding_tensors(learned_positions=spec.max_position_embeddings is not None)
    if spec.mla:
        tensors += P.mla_attention_tensors(compressed_q=spec.q_lora_rank is not None, bias=spec.qkv_bias)
    else:
        tensors += P.attention_tensors(
            qkv_bias=spec.qkv_bias, out_bias=spec.out_bias, qk_norm=spec.qk_norm, fused_qkv=spec.fused_qkv
        )
    dense_layers = S.num_hidden_layers - S.num_moe_layers if spec.is_moe else S.num_hidden_layers
    if spec.num_moe_layers < spec.num_hidden_layers:
        tensors += P.mlp_tensors(
            gated=spec.gated_mlp, bias=spec.mlp_bias, fused_gate_up=spec.fused_gate_up, layers=dense_layers
        )
    if spec.is_moe:
        tensors += P.moe_tensors(shared_experts=spec.num_shared_experts > 0)
    tensors += P.norm_tensors(spec.norms_per_layer, bias=spec.layer_norm_bias)
    tensors += P.lm_head_tensors(tied=spec.tie_word_embeddings)
    return tensors


def buffer_tensors(spec: ModelSpec) -> list[P.WeightTensor]:
    """Persistent buffers: saved with the weights, not parameters."""
    return P.persistent_buffer_tensors(router_correction_bias=spec.router_correction_bias)


def facts(spec: ModelSpec) -> dict[sympy.Symbol, sympy.Integer]:
    """Symbol -> value for every shape fact the spec pins."""
    values = {
        S.hidden_size: spec.hidden_size,
        S.num_hidden_layers: spec.num_hidden_layers,
        S.num_attention_heads: spec.num_attention_heads,
        S.num_key_value_heads: spec.num_key_value_heads,
        S.head_dim: spec.head_dim,
        S.intermediate_size: spec.intermediate_size,
        S.vocab_size: spec.vocab_size,
        S.max_position_embeddings: spec.max_position_embeddings,
        S.sliding_window: spec.sliding_window,
        S.num_sliding_layers: spec.num_sliding_layers or None,
        S.num_moe_layers: spec.num_moe_layers or None,
        S.num_experts: spec.num_experts,
        S.num_experts_per_tok: spec.num_experts_per_tok,
        S.num_shared_experts: spec.num_shared_experts or None,
        S.moe_intermediate_size: spec.moe_intermediate_size,
        S.q_lora_rank: spec.q_lora_rank,
        S.kv_lora_rank: spec.kv_lora_rank,
        S.qk_nope_head_dim: spec.qk_nope_head_dim,
        S.qk_rope_head_dim: spec.qk_rope_head_dim,
        S.v_head_dim: spec.v_head_dim,
    }
    return {sym: sympy.Integer(v) for sym, v in values.items() if v is not None}


def count_parameters(spec: ModelSpec) -> dict[str, int]:
    """Exact parameter counts: total, active per token, buffers and each component."""
    tensors = parameter_tensors(spec)
    pinned = facts(spec)
    out = {
        "parameters": int(P.parameter_count(tensors).xreplace(pinned)),
        "active_parameters": int(P.active_parameter_count(tensors).xreplace(pinned)),
        "buffers": int(P.parameter_count(buffer_tensors(spec)).xreplace(pinned)),
    }
    for component, expr in P.parameters_by_component(tensors).items():
        out[f"parameters/{component}"] = int(expr.xreplace(pinned))
    return out
