"""Mixer kind ``none``: a layer whose MLP is the whole block (Nemotron-H's ``mlp`` and
``moe`` layers, transformers 5.24 modeling_nemotron_h.py ``NemotronHBlock``: one mixer per
layer). No tensors, no cache, no temporaries of its own."""

from __future__ import annotations

import sympy

from formulas.parameters import WeightTensor
from formulas.symbols import num_mixer_free_layers

KIND = "none"
LAYERS = num_mixer_free_layers
SPLITS_KV_HEADS = False
LORA_COMPONENTS = ()


def tensors(layers: sympy.Expr, **options) -> list[WeightTensor]:
    return []


def facts(**options) -> dict[sympy.Symbol, int]:
    return {}


def cache_elements(mla_layout: str | None = None, **options) -> sympy.Expr:
    return sympy.Integer(0)


def cached_tokens(paged: bool = False) -> sympy.Expr:
    return sympy.Integer(0)


def inference_peak(eager: bool) -> sympy.Expr:
    return sympy.Integer(0)


def training_row(recompute: str, sequence_parallel: bool, eager: bool) -> sympy.Expr:
    """Nothing of its own: the layer's MLP is counted by its MLP kind."""
    return sympy.Integer(0)
