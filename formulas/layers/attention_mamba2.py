"""Mixer kind ``attention_mamba2``: attention and a Mamba-2 mixer side by side in every layer,
their outputs added (Falcon-H1; transformers 5.24 modeling_falcon_h1.py
``FalconH1DecoderLayer``, cache layer ``LinearAttentionAndFullAttentionLayer``).

Options: those of ``attention`` and, prefixed ``mamba_``, those of ``mamba2``
(``mamba_num_heads``, ``mamba_head_dim``, ...). It caches attention's keys and values per
token and Mamba-2's constant state per sequence.
"""

from __future__ import annotations

import sympy

from formulas.layers import attention, mamba2
from formulas.parameters import WeightTensor

KIND = "attention_mamba2"
LAYERS = None  # the layers no other mixer kind claims
SPLITS_KV_HEADS = True
LORA_COMPONENTS = ("attention", "mamba")
training_row = mamba2.training_row
cached_tokens = attention.cached_tokens
PREFIX = "mamba_"


def split(options: dict) -> tuple[dict, dict]:
    """(attention's options, mamba2's options without their prefix)."""
    ssm = {k[len(PREFIX):]: v for k, v in options.items() if k.startswith(PREFIX)}
    return {k: v for k, v in options.items() if not k.startswith(PREFIX)}, ssm


def tensors(layers: sympy.Expr, **options) -> list[WeightTensor]:
    """Attention's tensors plus Mamba-2's."""
    attn, ssm = split(options)
    return attention.tensors(layers, **attn) + mamba2.tensors(layers, **ssm)


def facts(**options) -> dict[sympy.Symbol, int]:
    return mamba2.facts(**split(options)[1])


def cache_elements(mla_layout: str | None = None, **options) -> sympy.Expr:
    """Attention's keys and values per layer and token."""
    return attention.cache_elements(mla_layout, **split(options)[0])


def state_elements(**options) -> tuple[sympy.Expr, sympy.Expr]:
    """Mamba-2's conv and SSM state."""
    return mamba2.state_elements(**split(options)[1])


def inference_peak(eager: bool) -> sympy.Expr:
    """Attention's temporaries plus Mamba-2's ``in_proj`` output (both branches read one input)."""
    return attention.inference_peak(eager) + mamba2.projection_bytes()


def tp_split(**options) -> dict[str, int]:
    return {PREFIX + k: v for k, v in mamba2.tp_split(**split(options)[1]).items()}
