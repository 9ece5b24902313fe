"""KV-cache bytes.

Per layer and token a standard attention layer caches one key and one value vector per
KV head: ``2 a_kv d beta_kv`` bytes (Pope et al. 2022, arXiv:2211.05102, section 3.1;
GQA/MQA shrink ``a_kv``). ``head_dim`` comes from the config where given (Qwen3-0.6B:
128, not ``h / a`` = 64). The seed article's ``2 n_head hidden_dim`` leaves out the layers
and puts the hidden size where the head dimension belongs; see docs/formulas.md.

A sliding-window layer keeps at most ``w`` tokens: ``Min(s, w)``. MLA caches one latent of
``r_kv + d_r`` values per layer and token, shared by K and V (DeepSeek-V2,
arXiv:2405.04434, section 2.1.2; what vLLM, SGLang and transformers >= 5 hold);
transformers 4.x cached the decompressed per-head K (``d_n + d_r``) and V (``d_v``).
"""

from __future__ import annotations

import sympy

from formulas.symbols import (
    batch_size,
    block_size,
    head_dim,
    kv_cache_bytes,
    kv_lora_rank,
    num_attention_heads,
    num_hidden_layers,
    num_key_value_heads,
    num_sliding_layers,
    pipeline_parallel,
    qk_nope_head_dim,
    qk_rope_head_dim,
    seq_len,
    sliding_window,
    v_head_dim,
)

from formulas.options import MLA_LAYOUTS
from formulas.parallelism import sequence_share


def cached_tokens(paged: bool = False, window: bool = False) -> sympy.Expr:
    """Tokens a layer holds for one sequence: ``s``, ``Min(s, w)`` for a sliding layer.

    Paged (vLLM, Kwon et al. 2023, arXiv:2309.06180) rounds up to whole blocks:
    ``B_blk ceil(tokens / B_blk)``.
    """
    tokens = sympy.Min(seq_len, sliding_window) if window else seq_len
    if paged:
        return block_size * sympy.ceiling(tokens / block_size)
    return tokens


def token_layers(has_sliding: bool, paged: bool = False) -> sympy.Expr:
    """Sum over layers of cached tokens: ``(L - L_w) s + L_w Min(s, w)``."""
    full = cached_tokens(paged)
    if not has_sliding:
        return num_hidden_layers * full
    return (num_hidden_layers - num_sliding_layers) * full + num_sliding_layers * cached_tokens(paged, True)


def kv_values_per_layer_token(mla_layout: str | None = None, expanded_heads: bool = False) -> sympy.Expr:
    """Elements cached per layer and token of one sequence.

    ``expanded_heads``: the cache holds K and V repeated to all ``a`` query heads, as
    transformers' Falcon with ``new_decoder_architecture`` does (measured, 5.24), instead of
    the ``a_kv`` heads a GQA-aware engine keeps.
    """
    if mla_layout is None:
        return attention_values(num_attention_heads if expanded_heads else num_key_value_heads)
    return mla_values(mla_layout)


def attention_values(heads: sympy.Expr = num_key_value_heads) -> sympy.Expr:
    """A key and a value vector per cached head: ``2 a_kv d`` (``heads`` of them; one
    tensor-parallel rank holds ``ceil(a_kv / t)``, formulas/parallelism.py)."""
    return 2 * heads * head_dim


def mla_values(mla_layout: str, heads: sympy.Expr = num_attention_heads) -> sympy.Expr:
    """MLA: the latent ``r_kv + d_r`` (the same on every rank), or transformers 4.x's
    decompressed per-head K and V, ``a (d_n + d_r + d_v)`` (``heads`` of them)."""
    if mla_layout == "latent":
        return kv_lora_rank + qk_rope_head_dim
    if mla_layout == "decompressed":
        return heads * (qk_nope_head_dim + qk_rope_head_dim + v_head_dim)
    raise ValueError(f"unknown MLA cache layout {mla_layout!r}; known: {', '.join(MLA_LAYOUTS)}")


def kv_cache(
    mla_layout: str | None = None, has_sliding: bool = False, paged: bool = False, expanded_heads: bool = False
) -> sympy.Expr:
    """KV-cache bytes of ``b`` sequences of ``s`` tokens.

    ``b beta_kv [2 a_kv d] [(L - L_w) s + L_w Min(s, w)]`` for MHA/GQA/MQA,
    ``b beta_kv (r_kv + d_r) L s`` for MLA's latent cache.
    """
    per_layer_token = kv_values_per_layer_token(mla_layout, expanded_heads)
    return batch_size * kv_cache_bytes * per_layer_token * token_layers(has_sliding, paged)


def kv_cache_per_gpu(rows: list[tuple[sympy.Expr, sympy.Expr, sympy.Expr]]) -> sympy.Expr:
    """KV-cache bytes on one GPU, summed over a model's layer kinds.

    ``rows`` holds (values per layer and token on one tensor-parallel rank, layers of the
    kind, tokens a layer keeps) per mixer kind (formulas/layers/). Kinds that cache the
    same values per token share one factor, so a Gemma-2 model reads
    ``b beta_kv [2 a_kv d] [(L - L_w) s + L_w Min(s, w)]`` as :func:`kv_cache` writes it.
    Pipeline stages hold ``L / p`` layers each, context-parallel ranks ``s / N_c`` tokens.
    """
    by_values: dict[sympy.Expr, sympy.Expr] = {}
    for values, layers, tokens in rows:
        by_values[values] = by_values.get(values, sympy.Integer(0)) + layers * tokens
    per_sequence = sympy.Add(*(values * token_layers for values, token_layers in by_values.items()))
    return batch_size * kv_cache_bytes * per_sequence / pipeline_parallel * sequence_share()
