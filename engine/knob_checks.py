"""The check of each kind of knob (engine.scenario.KNOBS rows): one function per ``Knob.kind``.

A check takes the row (an ``engine.scenario.Knob``: its flag, accepted values, aliases) and
the value, and raises an InputError naming the flag and the value; it never guesses a meaning.
"""

from __future__ import annotations

from fractions import Fraction
from engine.errors import InputError
from formulas import options
from formulas.dtypes import DTYPE_BYTES, canonical_dtype

DTYPE_NAMES = tuple(DTYPE_BYTES)


def _is_count(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and value >= 1


def _check_choice(k, value) -> None:
    if value not in k.accepted:
        raise InputError(f"{k.flag}: unknown value {value!r} (choose from {', '.join(map(str, k.accepted))})")


def _check_dtype(k, value) -> None:
    meant = k.read(value)[0] if isinstance(value, str) else value
    if meant is None or (meant == "auto" and "auto" in (k.aliases or {})):
        return
    if not isinstance(meant, str) or canonical_dtype(meant) is None:
        raise InputError(f"{k.flag}: unknown dtype {value!r} (known: {', '.join(DTYPE_NAMES)})")


def _check_count(k, value) -> None:
    if value is not None and not _is_count(value):
        raise InputError(f"{k.flag} must be a positive integer, got {value!r}")


def _check_bytes(k, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InputError(f"{k.flag} must be a non-negative number of bytes, got {value!r}")


def _check_fraction(k, value) -> None:
    if not 0 <= Fraction(value) < 1:
        raise InputError(f"{k.flag} must be in [0, 1), got {value!r}")


def _check_stage(k, value) -> None:
    if value not in options.ZERO_STAGES:
        raise InputError(f"{k.flag} must be a ZeRO stage 0, 1, 2 or 3, got {value!r}")


def _unchecked(k, value) -> None:
    """Switches and name lists take any value of their type."""


def _check_profile(k, value) -> None:
    """Profile names are checked by engine.profiles.canonical when the model is built."""


CHECKS = {"profile": _check_profile, "choice": _check_choice, "dtype": _check_dtype, "count": _check_count,
          "bytes": _check_bytes, "fraction": _check_fraction, "stage": _check_stage, "switch": _unchecked, "names": _unchecked}
