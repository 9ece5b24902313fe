"""Mixer kind ``cross_attention``: a decoder layer whose attention reads the image features
instead of the text (Llama 3.2 Vision; transformers modeling_mllama.py
``MllamaTextCrossAttention``, ``MllamaCrossAttentionDecoderLayer``).

Tensors: attention's q, k, v, o with RMSNorms of width ``d`` on queries and keys, plus two
tanh gates of one element each (``cross_attn_attn_gate``, ``cross_attn_mlp_gate``). The
layer caches the keys and values of the image tokens only, none per text token: measured
0 bytes per text token in transformers 5.24 (tests/fixtures/families_ground_truth.json,
``default-mllama``). Image-token keys and values (a request with images) are not counted.
"""

from __future__ import annotations

import sympy

from formulas.layers import attention
from formulas.parameters import ONE, WeightTensor
from formulas.symbols import num_cross_attention_layers

KIND = "cross_attention"
LAYERS = num_cross_attention_layers
SPLITS_KV_HEADS = True
LORA_COMPONENTS = ("attention",)  # PEFT all-linear adapts its projections
inference_peak = attention.inference_peak
training_row = attention.training_row
CROSS_ATTENTION_GATES = 2  # cross_attn_attn_gate and cross_attn_mlp_gate, one element each


def tensors(layers: sympy.Expr, **attention_options) -> list[WeightTensor]:
    """Attention's tensors with qk-norm, and the two gates."""
    out = attention.tensors(layers, **{**attention_options, "qk_norm": True})
    return out + [WeightTensor("attention/cross_attn_gates", sympy.Integer(CROSS_ATTENTION_GATES), ONE, layers)]


def facts(**attention_options) -> dict[sympy.Symbol, int]:
    return {}


def cache_elements(mla_layout: str | None = None, **attention_options) -> sympy.Expr:
    """Attention's values per cached token (of the image, see ``cached_tokens``)."""
    return attention.cache_elements(mla_layout, **attention_options)


def cached_tokens(paged: bool = False) -> sympy.Expr:
    """No text token: 0."""
    return sympy.Integer(0)
