"""Mixer kind ``sliding_attention``: attention over the last ``w`` tokens only
(Mistral 7B, arXiv:2310.06825, section 2; Gemma-2's local layers, arXiv:2408.00118).

Options: those of ``attention`` plus ``sliding_window`` (``w``, in tokens). Its tensors,
cache per token, peak and training row are attention's; only the tokens it keeps differ:
``Min(s, w)``. Eager attention still materialises the full ``s x s`` scores and masks
them (transformers' ``eager_attention_forward``), so the peak keeps ``s^2``.
"""

from __future__ import annotations

import sympy

from formulas import kv_cache
from formulas.layers import attention
from formulas.parameters import WeightTensor
from formulas.symbols import num_sliding_layers, sliding_window as window_symbol

KIND = "sliding_attention"
LAYERS = num_sliding_layers
SPLITS_KV_HEADS = True
LORA_COMPONENTS = ("attention",)  # PEFT all-linear adapts its projections
inference_peak = attention.inference_peak
training_row = attention.training_row


def tensors(layers: sympy.Expr, *, sliding_window: int, **attention_options) -> list[WeightTensor]:
    """The tensors of ``attention`` (the window holds no parameter)."""
    return attention.tensors(layers, **attention_options)


def facts(*, sliding_window: int, **attention_options) -> dict[sympy.Symbol, int]:
    """``w``: the window span."""
    return {window_symbol: sliding_window}


def cache_elements(mla_layout: str | None = None, *, sliding_window: int, **attention_options) -> sympy.Expr:
    """Attention's values per layer and token."""
    return attention.cache_elements(mla_layout, **attention_options)


def cached_tokens(paged: bool = False) -> sympy.Expr:
    """``Min(s, w)`` (formulas/kv_cache.py ``cached_tokens``)."""
    return kv_cache.cached_tokens(paged, window=True)
