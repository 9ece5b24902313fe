"""Mixer kind ``chunked_attention``: attention within chunks of ``C_ch`` tokens (Llama 4's
local layers, ``attention_chunk_size``; transformers modeling_llama4.py
``Llama4TextAttention``, the chunked mask of masking_utils.py ``chunked_causal_mask_function``).

Options: those of ``attention`` plus ``attention_chunk_size``. Its tensors, cache per token,
peak and training row are attention's; only the tokens it keeps differ. transformers 5.24
gives a chunked layer a ``DynamicSlidingWindowLayer`` with window ``C_ch`` (cache_utils.py
``DynamicCache.__init__``, ``get_layer_types_and_kwargs``), whose ``update`` keeps the last
``C_ch - 1`` tokens (``full_key_states[:, :, -self.sliding_window + 1:, :]``): ``Min(s, C_ch - 1)``
(measured: 8,191 kept for Scout, docs notes/families.md). A paged cache (vLLM v1
kv_cache_interface.py ``ChunkedLocalAttentionSpec``) holds at most the current chunk's
blocks: ``B_blk ceil(Min(s, C_ch) / B_blk)``.
"""

from __future__ import annotations

import sympy

from formulas.layers import attention
from formulas.parameters import WeightTensor
from formulas.symbols import attention_chunk_size as chunk_symbol
from formulas.symbols import block_size, num_chunked_layers, seq_len

KIND = "chunked_attention"
LAYERS = num_chunked_layers
SPLITS_KV_HEADS = True
LORA_COMPONENTS = ("attention",)  # PEFT all-linear adapts its projections
inference_peak = attention.inference_peak
training_row = attention.training_row


def tensors(layers: sympy.Expr, *, attention_chunk_size: int, **attention_options) -> list[WeightTensor]:
    """The tensors of ``attention`` (the chunking holds no parameter)."""
    return attention.tensors(layers, **attention_options)


def facts(*, attention_chunk_size: int, **attention_options) -> dict[sympy.Symbol, int]:
    """``C_ch``: the chunk span."""
    return {chunk_symbol: attention_chunk_size}


def cache_elements(mla_layout: str | None = None, *, attention_chunk_size: int, **attention_options) -> sympy.Expr:
    """Attention's values per layer and token."""
    return attention.cache_elements(mla_layout, **attention_options)


def cached_tokens(paged: bool = False) -> sympy.Expr:
    """``Min(s, C_ch - 1)`` (transformers' sliding-window layer); paged: the chunk's blocks."""
    if paged:
        return block_size * sympy.ceiling(sympy.Min(seq_len, chunk_symbol) / block_size)
    return sympy.Min(seq_len, chunk_symbol - 1)
