"""Byte quantities: parsing budgets and printing sizes.

GB = 10^9 bytes, GiB = 2^30 bytes (IEC 80000-13); both are accepted and printed as such,
never "MB" for MiB. Budgets are parsed by a regular expression into exact integers: no
string ever reaches ``eval`` or ``sympify``.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

from engine.errors import InputError
from engine.limits import BOUNDS, MAX_DIGITS, check_digits, number_shown, shown

UNITS: dict[str, int] = {
    "": 1, "B": 1,
    "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "PB": 10**15,
    "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40, "PIB": 2**50,
}

# A bare K/M/G/T/P (no B): uppercase is binary and lowercase decimal, as vLLM's
# human_readable_int reads them (vllm/engine/arg_utils.py: '1K' -> 1,024, '1k' -> 1,000);
# GPU memory is reported in binary units (nvidia-smi's MiB, PyTorch's and vLLM's GiB logs).
SHORT_UNITS: dict[str, tuple[int, str]] = {
    **{p: (2 ** (10 * i), p + "iB") for i, p in enumerate("KMGTP", 1)},
    **{p.lower(): (10 ** (3 * i), p + "B") for i, p in enumerate("KMGTP", 1)},
}
_BUDGET = re.compile(r"^\s*(\d+(?:\.\d+)?(?:[eE][+]?\d{1,3})?)\s*([A-Za-z]{0,3})\s*$", re.ASCII)  # ASCII digits only
_BARE = re.compile(r"^\s*[\d.eE+]+[KMGTPkmgtp]\s*$", re.ASCII)  # a bare suffix right after the number
MAX_BYTES = BOUNDS["bytes"].high  # a zettabyte: no budget a user means is larger (engine/limits.py)


def parse_bytes(text: str, flag: str = "--budget") -> int:
    """``24GB`` -> 24 * 10^9, ``24GiB`` -> 24 * 2^30, ``80e9`` -> 80 * 10^9 (whole bytes, floored).

    The number is read exactly (a Fraction of at most 64 characters of text), then floored:
    ``0.9999...B`` is 0 bytes and so out of range, never rounded up to 1.
    """
    match = _BUDGET.match(text) if isinstance(text, str) and len(text) < 64 else None
    unit = match.group(2).upper() if match else None
    if match is not None and match.group(2) in SHORT_UNITS and _BARE.match(text):  # 24G, never "24 G"
        scale = SHORT_UNITS[match.group(2)][0]
    elif match is None or unit not in UNITS:
        raise InputError(f"{flag}: cannot read {shown(text)} as a size; use e.g. 24GB, 24GiB, 1.5TB or 80e9 (bytes)")
    else:
        scale = UNITS[unit]
    number = math.floor(Fraction(match.group(1)) * scale)
    if number < 1 or number > MAX_BYTES:
        raise InputError(f"{flag}: {text!r} is out of range (1 byte to 10^21 bytes)")
    return number


def size_reading(text) -> str | None:
    """How a bare-suffix size was read (``24G`` -> GiB), or None when the unit says it itself."""
    match = _BUDGET.match(text) if isinstance(text, str) and len(text) < 64 else None
    if match is None or match.group(2) not in SHORT_UNITS or not _BARE.match(text):
        return None
    unit = SHORT_UNITS[match.group(2)][1]
    why = ("uppercase is binary, as vLLM's human_readable_int and nvidia-smi's MiB" if unit.endswith("iB")
           else "lowercase is decimal, as vLLM's human_readable_int")
    return f"{text.strip()} read as {match.group(1)} {unit} = {parse_bytes(text):,} B ({why}; write GB or GiB to choose)"


def _scaled(n: int, size: int) -> str:
    """``n / size`` to 3 decimals: through float while it is exact enough, else exact integers."""
    if n < 2**53 * size:
        return f"{n / size:.3f}"
    thousandths = (2 * n * 1000 + size) // (2 * size)  # round half up, exactly
    whole, part = divmod(thousandths, 1000)
    if whole < 10**MAX_DIGITS:
        return f"{whole}.{part:03d}"
    exponent = max(whole.bit_length() * 3 // 10 - 1, 0)  # log10 from below: never str() of a huge int
    while 10 ** (exponent + 1) <= whole:
        exponent += 1
    mantissa = whole * 1000 // 10**exponent
    return f"{mantissa // 1000}.{mantissa % 1000:03d}e{exponent}"


def format_bytes(n: int) -> str:
    """``1192099840`` -> ``'1.192 GB (1.110 GiB)'``; small values in plain bytes. Never overflows."""
    if n < 1000:
        return f"{number_shown(n)} B"
    for unit, size in (("PB", 10**15), ("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if n >= size:
            decimal = f"{_scaled(n, size)} {unit}"
            break
    binary = format_binary(n)
    return decimal if binary.endswith(" B") else f"{decimal} ({binary})"


def format_binary(n: int) -> str:
    """``1192099840`` -> ``'1.110 GiB'``: the binary half of :func:`format_bytes`; below 1 KiB plain bytes."""
    for unit, size in (("PiB", 2**50), ("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{_scaled(n, size)} {unit}"
    return f"{number_shown(n)} B"


_DECIMAL_FRACTION = re.compile(r"\s*\d*\.?\d+\s*", flags=re.ASCII)


def parse_fraction(text, flag: str, *, low: Fraction, high: Fraction, low_open: bool = False) -> Fraction:
    """A decimal like ``0.9`` as an exact Fraction in ``[low, high]`` (``(low, high]`` if ``low_open``).

    Only ASCII digits and one point are read: never ``eval``, never a float.
    """
    if isinstance(text, (Fraction, int)) and not isinstance(text, bool):
        value = Fraction(text)
    elif isinstance(text, str) and _DECIMAL_FRACTION.fullmatch(text):
        value = Fraction(check_digits(text, flag).strip())
    else:
        raise InputError(f"{flag}: cannot read {shown(text)} as a number such as 0.9")
    if value > high or value < low or (low_open and value == low):
        bounds = f"{'(' if low_open else '['}{low}, {high}]"
        raise InputError(f"{flag} must be in {bounds}, got {shown(text)}")
    return value
