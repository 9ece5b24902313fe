"""Byte quantities: parsing budgets and printing sizes.

GB = 10^9 bytes, GiB = 2^30 bytes (IEC 80000-13); both are accepted and printed as such,
never "MB" for MiB. Budgets are parsed by a regular expression into exact integers: no
string ever reaches ``eval`` or ``sympify``.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from fractions import Fraction

from engine.errors import InputError

UNITS: dict[str, int] = {
    "": 1, "B": 1,
    "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "PB": 10**15,
    "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40, "PIB": 2**50,
}

_BUDGET = re.compile(r"^\s*(\d+(?:\.\d+)?(?:[eE][+]?\d{1,3})?)\s*([A-Za-z]{0,3})\s*$", re.ASCII)  # ASCII digits only
MAX_BYTES = 10**21  # a zettabyte: no budget a user means is larger


def parse_bytes(text: str, flag: str = "--budget") -> int:
    """``24GB`` -> 24 * 10^9, ``24GiB`` -> 24 * 2^30, ``80e9`` -> 80 * 10^9 (whole bytes, floored)."""
    match = _BUDGET.match(text) if isinstance(text, str) and len(text) < 64 else None
    unit = match.group(2).upper() if match else None
    if match is None or unit not in UNITS:
        raise InputError(f"{flag}: cannot read {text!r} as a size; use e.g. 24GB, 24GiB, 1.5TB or 80e9 (bytes)")
    try:
        number = Decimal(match.group(1)) * UNITS[unit]
    except InvalidOperation:
        raise InputError(f"{flag}: cannot read {text!r} as a size") from None
    if number < 1 or number > MAX_BYTES:
        raise InputError(f"{flag}: {text!r} is out of range (1 byte to 10^21 bytes)")
    return int(number)


def format_bytes(n: int) -> str:
    """``1192099840`` -> ``'1.192 GB (1.110 GiB)'``; small values in plain bytes."""
    if n < 1000:
        return f"{n} B"
    for unit, size in (("PB", 10**15), ("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if n >= size:
            decimal = f"{n / size:.3f} {unit}"
            break
    for unit, size in (("PiB", 2**50), ("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{decimal} ({n / size:.3f} {unit})"
    return decimal


_DECIMAL_FRACTION = re.compile(r"\s*\d*\.?\d+\s*", flags=re.ASCII)


def parse_fraction(text, flag: str, *, low: Fraction, high: Fraction, low_open: bool = False) -> Fraction:
    """A decimal like ``0.9`` as an exact Fraction in ``[low, high]`` (``(low, high]`` if ``low_open``).

    Only ASCII digits and one point are read: never ``eval``, never a float.
    """
    if isinstance(text, (Fraction, int)) and not isinstance(text, bool):
        value = Fraction(text)
    elif isinstance(text, str) and _DECIMAL_FRACTION.fullmatch(text):
        value = Fraction(text.strip())
    else:
        raise InputError(f"{flag}: cannot read {text!r} as a number such as 0.9")
    if value > high or value < low or (low_open and value == low):
        bounds = f"{'(' if low_open else '['}{low}, {high}]"
        raise InputError(f"{flag} must be in {bounds}, got {text!r}")
    return value
