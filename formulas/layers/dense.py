"""MLP kind ``dense``: one MLP per layer, classic ``h -> f -> h`` or gated (SwiGLU, GeGLU;
Shazeer 2020, arXiv:2002.05202).

Options: ``gated`` (gate and up projections), ``bias`` (GPT-2, Falcon, Llama's
``mlp_bias``), ``fused_gate_up`` (Phi-3's ``gate_up_proj``).
"""

from __future__ import annotations

import sympy

from formulas import activations
from formulas.parameters import WeightTensor, linear
from formulas.symbols import hidden_size, intermediate_size, tensor_parallel

KIND = "dense"
LAYERS = None  # the layers no other MLP kind claims
LORA_COMPONENTS = ("mlp",)


def mlp_tensors(
    layers: sympy.Expr,
    *,
    gated: bool,
    bias: bool = False,
    fused_gate_up: bool = False,
    width: sympy.Expr = intermediate_size,
    prefix: str = "mlp",
) -> list[WeightTensor]:
    """A dense MLP: classic ``h -> f -> h`` or gated ``(gate, up): h -> f``, ``down: f -> h``.

    Gated MLPs (SwiGLU, GeGLU; Shazeer 2020) hold three matrices; Phi-3 fuses gate and up.
    """
    out: list[WeightTensor] = []
    if not gated:
        out += linear(f"{prefix}/up_proj", width, hidden_size, layers, bias)
    elif fused_gate_up:
        out += linear(f"{prefix}/gate_up_proj", 2 * width, hidden_size, layers, bias)
    else:
        out += linear(f"{prefix}/gate_proj", width, hidden_size, layers, bias)
        out += linear(f"{prefix}/up_proj", width, hidden_size, layers, bias)
    out += linear(f"{prefix}/down_proj", hidden_size, width, layers, bias)
    return out


def tensors(layers: sympy.Expr, *, gated: bool = True, bias: bool = False, fused_gate_up: bool = False):
    """The MLP of ``layers`` layers, of width ``f``."""
    return mlp_tensors(layers, gated=gated, bias=bias, fused_gate_up=fused_gate_up)


def buffers(layers: sympy.Expr, **options) -> list[WeightTensor]:
    return []


def facts(**options) -> dict[sympy.Symbol, int]:
    return {}


def inference_peak(*, gated: bool = True, **options) -> sympy.Expr:
    """formulas/activations.py ``mlp_peak`` over the ``f / t`` columns of one rank."""
    return activations.mlp_peak(gated) / tensor_parallel
