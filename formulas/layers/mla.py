"""Mixer kind ``mla``: multi-head latent attention (DeepSeek-V2, arXiv:2405.04434,
section 2.1.2; DeepSeek-V3).

Options: ``q_lora_rank`` (None: queries are not compressed), ``kv_lora_rank``,
``qk_nope_head_dim``, ``qk_rope_head_dim``, ``v_head_dim`` and ``bias`` (``attention_bias``
on the down-projections and the output). Tensor parallelism splits the heads; the latent
cache is one vector per token, the same on every rank.
"""

from __future__ import annotations

import sympy

from formulas import kv_cache
from formulas.layers import attention
from formulas.parameters import WeightTensor, linear, norm
from formulas.symbols import (
    hidden_size,
    kv_lora_rank as kv_rank,
    num_attention_heads,
    q_lora_rank as q_rank,
    qk_nope_head_dim as nope,
    qk_rope_head_dim as rope,
    tensor_parallel,
    v_head_dim as value_dim,
)

KIND = "mla"
LAYERS = None
SPLITS_KV_HEADS = False  # the latent is replicated, not split by heads
LORA_COMPONENTS = ("attention",)
inference_peak = attention.inference_peak
training_row = attention.training_row
RANKS = (("q_lora_rank", q_rank), ("kv_lora_rank", kv_rank), ("qk_nope_head_dim", nope),
         ("qk_rope_head_dim", rope), ("v_head_dim", value_dim))


def tensors(layers: sympy.Expr, *, q_lora_rank: int | None, bias: bool = False, **ranks) -> list[WeightTensor]:
    """MLA of ``layers`` layers.

    Queries: ``h -> r_q`` (RMSNorm) ``-> a (d_n + d_r)``, or ``h -> a (d_n + d_r)`` when
    ``q_lora_rank`` is null. Keys/values: ``h -> r_kv + d_r`` (the cached latent and the
    shared rotary key), RMSNorm over ``r_kv``, ``r_kv -> a (d_n + d_v)``; output
    ``a d_v -> h``.
    """
    q_head = nope + rope
    out: list[WeightTensor] = []
    if q_lora_rank is not None:
        out += linear("attention/q_a_proj", q_rank, hidden_size, layers, bias)
        out += norm("norm/q_a_layernorm", q_rank, layers)
        out += linear("attention/q_b_proj", num_attention_heads * q_head, q_rank, layers)
    else:
        out += linear("attention/q_proj", num_attention_heads * q_head, hidden_size, layers)
    out += linear("attention/kv_a_proj_with_mqa", kv_rank + rope, hidden_size, layers, bias)
    out += norm("norm/kv_a_layernorm", kv_rank, layers)
    out += linear("attention/kv_b_proj", num_attention_heads * (nope + value_dim), kv_rank, layers)
    out += linear("attention/o_proj", hidden_size, num_attention_heads * value_dim, layers, bias)
    return out


def facts(**options) -> dict[sympy.Symbol, int]:
    """The ranks and head dimensions (``q_lora_rank`` only when queries are compressed)."""
    return {sym: options[name] for name, sym in RANKS if options.get(name) is not None}


def cache_elements(mla_layout: str | None = "latent", **options) -> sympy.Expr:
    """``r_kv + d_r`` per layer and token on every rank (the latent), or the decompressed
    ``(a / t) (d_n + d_r + d_v)`` of transformers 4.x (formulas/kv_cache.py)."""
    return kv_cache.mla_values(mla_layout or "latent", heads=num_attention_heads / tensor_parallel)


def cached_tokens(paged: bool = False) -> sympy.Expr:
    """Every token: ``s``."""
    return kv_cache.cached_tokens(paged)
