"""Bytes per element of the number formats memsym knows, as exact rationals.

Widths are the IEEE 754 / OCP formats' storage sizes (float32 4, float16 and bfloat16 2,
float8 e4m3/e5m2 1) and packed integers (int8 1, int4 1/2, two values per byte as GPTQ,
AWQ and bitsandbytes pack them). Exact ``Rational`` values: never ``//`` on a width.
"""

from __future__ import annotations

from fractions import Fraction

# name -> bytes per element. Aliases map users' and configs' spellings to one name.
DTYPE_BYTES: dict[str, Fraction] = {
    "float32": Fraction(4),
    "float16": Fraction(2),
    "bfloat16": Fraction(2),
    "float8": Fraction(1),
    "int8": Fraction(1),
    "int4": Fraction(1, 2),
}

DTYPE_ALIASES: dict[str, str] = {
    "fp32": "float32",
    "f32": "float32",
    "fp16": "float16",
    "f16": "float16",
    "half": "float16",
    "bf16": "bfloat16",
    "fp8": "float8",
    "float8_e4m3fn": "float8",
    "float8_e5m2": "float8",
    "e4m3": "float8",
    "e5m2": "float8",
    "i8": "int8",
    "i4": "int4",
}


def canonical_dtype(name: str) -> str | None:
    """The canonical dtype name for ``name`` (any known spelling), or None."""
    key = name.strip().lower()
    key = DTYPE_ALIASES.get(key, key)
    return key if key in DTYPE_BYTES else None
