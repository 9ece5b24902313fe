"""MLP kind ``none``: a layer whose mixer is the whole block (Mamba-only layers of hybrid
models, issue 13). No tensors, no buffers, no temporaries."""

from __future__ import annotations

import sympy

from formulas.parameters import WeightTensor
from formulas.symbols import num_mlp_free_layers

KIND = "none"
LAYERS = num_mlp_free_layers
LORA_COMPONENTS = ()


def tensors(layers: sympy.Expr, **options) -> list[WeightTensor]:
    return []


def buffers(layers: sympy.Expr, **options) -> list[WeightTensor]:
    return []


def facts(**options) -> dict[sympy.Symbol, int]:
    return {}


def inference_peak(**options) -> sympy.Expr:
    return sympy.Integer(0)
