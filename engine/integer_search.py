"""Exact integer searches behind every solve, without SymPy: closed-form roots and bisection.

``largest_root`` is the exact largest integer under a quadratic; ``first_true`` checks a
closed-form candidate at ``n`` and ``n - 1`` and falls back to doubling and bisection;
``largest_fitting`` is the largest ``n`` that fits a budget. engine/solve.py (the SymPy
side) and engine/fast_solve.py (the cached evaluators) both search with these.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Callable

from engine.errors import InputError

MAX_VALUE = 1 << 62  # bound of the doubling search: no budget reaches a batch or length this large
ADJUST_STEPS = 4  # a closed-form candidate may sit a step off: estimate rounds each term up to a byte


def largest_root(a: Fraction, b: Fraction, c: Fraction, budget: int) -> int | None:
    """The largest integer ``n >= 0`` with ``a n^2 + b n + c <= budget``; None: every n; -1: none.

    Exact: with the coefficients scaled to integers, ``floor((isqrt(D) - b) / 2a)`` equals the
    floor of the real root, since no integer lies between ``isqrt(D)`` and ``sqrt(D)``.
    """
    if a == 0 and b == 0:
        return None if c <= budget else -1
    if c > budget:
        return -1
    if a == 0:
        return math.floor((budget - c) / b)
    scale = math.lcm(a.denominator, b.denominator, c.denominator)
    qa, qb, qc = int(a * scale), int(b * scale), int((c - budget) * scale)
    return math.floor(Fraction(math.isqrt(qb * qb - 4 * qa * qc) - qb, 2 * qa))


# --- exact integer search ---------------------------------------------------------------------
def first_true(predicate: Callable[[int], bool], candidate: int | None, never: str) -> tuple[int, str]:
    """The smallest ``n >= 1`` with ``predicate(n)``, for a predicate false up to a point and
    true from there: a closed-form ``candidate`` checked at ``n`` and ``n - 1`` (moved a few
    steps if rounding put it off), else doubling and bisection. ``never`` says what holds
    when no ``n`` up to 2^62 makes it true.
    """
    if predicate(1):
        return 1, "closed_form" if candidate == 1 else "search"
    if candidate is not None and candidate >= 2:
        n = candidate
        for _ in range(ADJUST_STEPS):
            if not predicate(n):
                n += 1
            elif predicate(n - 1):
                n -= 1
            else:
                return n, "closed_form"
    low, high = 1, 2
    while not predicate(high):
        low, high = high, 2 * high
        if high > MAX_VALUE:
            raise InputError(f"{never} up to 2^62")
    while high - low > 1:
        middle = low + (high - low) // 2
        low, high = (low, middle) if predicate(middle) else (middle, high)
    return high, "search"


def largest_fitting(fits: Callable[[int], bool], candidate: int | None, label: str) -> tuple[int, str]:
    """The largest ``n >= 1`` with ``fits(n)``, given ``fits(1)`` and ``fits`` true up to a point."""
    first_over, method = first_true(
        lambda n: not fits(n), None if candidate is None else candidate + 1,
        f"the total stays within the budget for every {label}: nothing bounds it",
    )
    return first_over - 1, method


def candidate(quadratics: list[tuple[Fraction, Fraction, Fraction]], budget: int) -> int | None:
    """The closed form at ``budget``: the least of each branch's largest root (None: no branch bounds n)."""
    best = None
    for a, b, c in quadratics:
        n = largest_root(a, b, c, budget)
        if n is not None:
            best = n if best is None else min(best, n)
    return best
