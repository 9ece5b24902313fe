"""Memory outside the model's tensors, as named terms that are off unless asked for.

``R``: what the CUDA context and runtime take before the first tensor (a few hundred MB,
varying with driver, GPU and loaded kernels; measure it with ``nvidia-smi`` on an idle
process). Default 0 and always shown, so a total never hides a guess.
"""

from __future__ import annotations

import sympy

from formulas.symbols import reserve_bytes


def reserve() -> sympy.Expr:
    """Bytes reserved outside the model: ``R``."""
    return reserve_bytes
