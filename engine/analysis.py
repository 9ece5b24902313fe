"""Reading a memory model: canonical form, derivatives, sensitivities, crossovers.

- :func:`canonical_form`: the total expanded and collected by the free variables, so a reader
  sees ``C0 + C1 b s + C2 b s^2`` (plus any ``Max`` peak, each branch collected the same way)
  and which terms pay for each coefficient. Targeted ``expand`` and grouping, never
  ``simplify()``, so the printed form is stable.
- :func:`derivative`: ``d total / d x`` at a point; ``Max`` and ``Min`` are resolved to the
  branch active there, and the step of a paged ``ceiling`` counts as 0 (its derivative almost
  everywhere); the exact finite difference ``total(x + 1) - total(x)`` sits beside it.
- :func:`sensitivity`: elasticities ``(d total / d x) x / total`` of every symbol at a point.
- :func:`crossover`: the smallest integer value of a variable at which one term reaches another.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal, localcontext
from fractions import Fraction

import sympy

from engine.errors import InputError
from engine.model import MemoryModel
from engine.scenario import SCENARIO_PINNED
from engine.solve import first_true, largest_root, max_branches
from formulas import symbols as S


def as_decimal(value: sympy.Expr, digits: int = 6) -> str:
    """An exact rational printed with ``digits`` significant digits (Decimal, no float)."""
    value = sympy.Rational(value)
    with localcontext() as ctx:
        ctx.prec = digits
        return str(Decimal(int(value.p)) / Decimal(int(value.q)))


def variables_of(names) -> tuple[sympy.Symbol, ...]:
    try:
        return tuple(S.symbol(n) for n in names)
    except KeyError as exc:
        raise InputError(f"unknown variable: {exc.args[0]}") from None


# --- canonical form ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Coefficient:
    """One collected group: ``coefficient x monomial``, what it means and which terms pay it."""

    monomial: sympy.Expr
    coefficient: sympy.Expr
    meaning: str
    terms: tuple[str, ...]
    branches: tuple[tuple[str, "CanonicalForm"], ...] = ()  # a Max group's branches, by name


@dataclass(frozen=True)
class CanonicalForm:
    variables: tuple[sympy.Symbol, ...]
    rows: tuple[Coefficient, ...]
    expression: sympy.Expr

    @property
    def peaks(self) -> tuple[tuple[str, "CanonicalForm"], ...]:
        """Every Max group's branches, by name."""
        return tuple(branch for row in self.rows for branch in row.branches)


def collect_by_variables(expr: sympy.Expr, variables) -> dict[sympy.Expr, sympy.Expr]:
    """``{monomial: coefficient}`` of ``expand(expr)``, grouped by the part that holds the variables."""
    groups: dict[sympy.Expr, sympy.Expr] = {}
    for term in sympy.Add.make_args(sympy.expand(expr)):
        coefficient, monomial = term.as_independent(*variables, as_Add=False)
        groups[monomial] = groups.get(monomial, sympy.Integer(0)) + coefficient
    return {m: c for m, c in groups.items() if c != 0}


def _order(monomial: sympy.Expr, variables) -> tuple:
    poly = monomial.as_poly(*variables) if monomial.free_symbols else None
    if monomial == 1:
        return (0, 0, ())
    if poly is not None and len(poly.terms()) == 1:
        degrees = poly.terms()[0][0]
        return (1, sum(degrees), degrees)
    return (2, 0, (str(monomial),))


def meaning(monomial: sympy.Expr, variables) -> str:
    """``batch_size*seq_len`` -> ``bytes per sequence per token``."""
    names = ", ".join(v.name for v in variables)
    if monomial == 1:
        return f"bytes independent of {names}" if names else "bytes (every variable given)"
    if isinstance(monomial, sympy.Max):
        return "bytes at the peak of the branches below"
    powers = monomial.as_powers_dict()
    if all(isinstance(base, sympy.Symbol) and S.is_declared(base) for base in powers):
        parts = []
        for base, power in sorted(powers.items(), key=lambda item: item[0].name):
            unit = S.info(base).unit.rstrip("s")
            parts.append(f"per {unit}" + (f"^{power}" if power != 1 else ""))
        return "bytes " + " ".join(parts)
    return f"bytes per unit of {monomial}"


def canonical_form(mm: MemoryModel, variables, expr: sympy.Expr | None = None) -> CanonicalForm:
    """The total (or ``expr``) collected by powers of ``variables``; ``Max`` groups split into branches."""
    variables = variables_of(variables) if variables and isinstance(next(iter(variables)), str) else tuple(variables)
    expr = mm.pinned(mm.total) if expr is None else expr
    groups = collect_by_variables(expr, variables)
    term_groups = {name: collect_by_variables(mm.pinned(mm.terms[name]), variables) for name in mm.top_level}
    rows = []
    for monomial in sorted(groups, key=lambda m: _order(m, variables)):
        payers = tuple(name for name, g in term_groups.items() if monomial in g)
        branches = []
        if isinstance(monomial, sympy.Max):
            names = _branch_names(mm)
            for i, branch in enumerate(monomial.args):
                label = names.get(sympy.expand(branch), f"branch {i + 1}")
                branches.append((label, canonical_form(mm, variables, branch)))
        rows.append(Coefficient(monomial, sympy.factor_terms(groups[monomial]), meaning(monomial, variables), payers,
                                tuple(branches)))
    collected = sympy.Add(*(r.coefficient * r.monomial for r in rows))
    return CanonicalForm(variables, tuple(rows), collected)


def _branch_names(mm: MemoryModel) -> dict[sympy.Expr, str]:
    """Pinned phase sums and activation sub-terms, expanded, by name: labels for Max branches."""
    names = {sympy.expand(mm.pinned(e)): f"phase {p}" for p, e in mm.phase_sums().items()}
    for child in mm.children("activations"):
        names.setdefault(sympy.expand(mm.pinned(mm.terms[child])), child)
    return names


# --- derivatives and sensitivities ----------------------------------------------------------------
def resolve_at(expr: sympy.Expr, point: dict) -> sympy.Expr:
    """``expr`` with every ``Max``/``Min`` replaced by its argument active at ``point`` (ties: first)."""
    if not expr.has(sympy.Max, sympy.Min):
        return expr
    args = [resolve_at(a, point) for a in expr.args]
    if isinstance(expr, (sympy.Max, sympy.Min)):
        values = [a.xreplace(point) for a in args]
        if not all(v.is_number for v in values):
            missing = sorted({s.name for v in values for s in v.free_symbols})
            raise InputError(f"a value is needed for {', '.join(missing)} to pick the active branch")
        pick = max if isinstance(expr, sympy.Max) else min
        return args[values.index(pick(values))]
    return expr.func(*args)


def _smooth_derivative(expr: sympy.Expr, var: sympy.Symbol) -> sympy.Expr:
    """``d expr / d var``; a ``ceiling`` step contributes 0 (its derivative almost everywhere)."""
    derivative = sympy.diff(expr, var)
    return derivative.replace(lambda e: isinstance(e, (sympy.Subs, sympy.Derivative)), lambda e: sympy.Integer(0))


def _point(mm: MemoryModel, values: dict) -> dict:
    point = dict(mm.facts)
    point.update({S.symbol(k): sympy.Rational(v) for k, v in values.items() if v is not None})
    return point


@dataclass(frozen=True)
class Derivative:
    variable: str
    expression: sympy.Expr  # at the active branch when a point pins every symbol
    value: sympy.Expr | None  # the derivative at the point, exact
    finite_difference: int | None  # total(x + 1) - total(x), exact bytes
    branches: tuple[sympy.Expr, ...]  # one derivative per Max branch, when no point resolves them


def derivative(mm: MemoryModel, variable: str, **values) -> Derivative:
    """``d total / d variable`` with the facts pinned, at the point ``values`` where it is complete."""
    var = variables_of([variable])[0]
    unpinned = {k: v for k, v in mm.facts.items() if k != var}
    expr = mm.total.xreplace(unpinned)
    if var not in expr.free_symbols:
        raise InputError(f"the total does not depend on {variable}")
    point = _point(mm, values)
    if not all(s in point for s in expr.free_symbols):
        branches = tuple(dict.fromkeys(_smooth_derivative(b, var) for b in max_branches(expr) or [expr]))
        return Derivative(variable, branches[0], None, None, branches)
    local = _smooth_derivative(resolve_at(expr, point), var)
    step = None
    if var.is_integer and point[var].is_integer:
        at = {k: v for k, v in values.items() if v is not None}
        x = int(point[var])
        step = mm.evaluate(**{**at, variable: x + 1}).total_bytes - mm.evaluate(**{**at, variable: x}).total_bytes
    return Derivative(variable, local, local.xreplace(point), step, (local,))


@dataclass(frozen=True)
class Elasticity:
    symbol: str
    value: sympy.Expr  # the symbol's value at the point
    derivative: sympy.Expr  # d total / d symbol there, exact
    elasticity: sympy.Expr  # derivative x value / total, exact


def sensitivity(mm: MemoryModel, **values) -> tuple[sympy.Expr, list[Elasticity]]:
    """The exact total at the point and the elasticity of every symbol in it, largest first.

    Symbols at 0 (elasticity 0) and parallel degrees at 1 (knobs not in use) are left out.
    """
    point = _point(mm, values)
    missing = sorted(s.name for s in mm.total.free_symbols if s not in point)
    if missing:
        raise InputError(f"give a value for {', '.join(missing)} to evaluate sensitivities")
    total = resolve_at(mm.total, point).xreplace(point)
    rows = []
    for sym in sorted(mm.total.free_symbols, key=lambda s: s.name):
        if point[sym] == 0 or (sym.name in SCENARIO_PINNED and point[sym] == 1):
            continue  # elasticity 0 at x = 0; a parallel degree of 1 is a knob not in use
        # as derivative() does: every other symbol pinned first, so a step such as
        # ceiling(a_kv / t) at t = 1 is the smooth a_kv it equals there
        others = {k: v for k, v in point.items() if k != sym}
        slope = _smooth_derivative(resolve_at(mm.total.xreplace(others), point), sym).xreplace(point)
        rows.append(Elasticity(sym.name, point[sym], slope, slope * point[sym] / total))
    rows.sort(key=lambda r: (-abs(r.elasticity), r.symbol))
    return total, rows


# --- crossovers -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Crossover:
    term_a: str
    term_b: str
    variable: str
    value: int | None  # smallest integer with a >= b (None: symbolic model, see closed_form)
    a_at_value: int | None
    b_at_value: int | None
    a_before: int | None  # at value - 1 (None when value is 1)
    b_before: int | None
    method: str
    closed_form: sympy.Expr | None


def _crossover_quadratic(difference: sympy.Expr, var: sympy.Symbol):
    """``(a, b, c)`` of ``difference = a n^2 + b n + c`` with ``a, b >= 0`` and a or b non-zero, or None."""
    poly = sympy.expand(difference).as_poly(var)
    if poly is None or poly.degree() not in (1, 2):
        return None
    a, b, c = (poly.coeff_monomial(var**k) for k in (2, 1, 0))
    if a.is_nonnegative is not True or b.is_nonnegative is not True:
        return None
    return a, b, c


def _crossover_closed_form(quadratic) -> sympy.Expr | None:
    """The smallest ``n`` with ``a n^2 + b n + c >= 0`` as a formula: the ceiling of the larger root."""
    if quadratic is None:
        return None
    a, b, c = quadratic
    root = -c / b if a == 0 else (-b + sympy.sqrt(b**2 - 4 * a * c)) / (2 * a)
    return sympy.ceiling(sympy.factor_terms(root))


def _crossover_candidate(quadratic) -> int | None:
    """The closed form at numeric coefficients, exactly: one past the largest ``m`` with ``D(m) < 0``.

    With ``D`` scaled to integer coefficients, ``D(m) < 0`` iff ``D(m) <= -1`` at integers.
    """
    if quadratic is None or not all(isinstance(x, sympy.Rational) for x in quadratic):
        return None
    scale = math.lcm(*(int(x.q) for x in quadratic))
    a, b, c = (Fraction(int(x.p) * scale, int(x.q)) for x in quadratic)
    below = largest_root(a, b, c, -1)
    return None if below is None else below + 1


def crossover(mm: MemoryModel, term_a: str, term_b: str, variable: str, **fixed) -> Crossover:
    """The smallest integer ``variable`` at which term ``a`` reaches term ``b`` (``a >= b``).

    Assumes ``a - b`` changes sign once (``a`` grows faster); checked by substitution:
    ``a(n) >= b(n)`` and ``a(n - 1) < b(n - 1)``.
    """
    var = variables_of([variable])[0]
    a_expr, b_expr = (mm.pinned(mm.expression(t, pinned=False), **fixed) for t in (term_a, term_b))
    difference = a_expr - b_expr
    if var not in difference.free_symbols:
        raise InputError(f"neither {term_a} nor {term_b} depends on {variable} once the facts are pinned")
    quadratic = _crossover_quadratic(difference, var)
    form = _crossover_closed_form(quadratic)
    if difference.free_symbols - {var}:
        if form is None:
            others = ", ".join(sorted(s.name for s in difference.free_symbols - {var}))
            raise InputError(f"no closed form; give a value for {others} to search")
        return Crossover(term_a, term_b, variable, None, None, None, None, None, "closed_form", form)

    def terms_at(n: int) -> tuple[int, int]:
        ev = mm.evaluate(**fixed, **{variable: n})
        return ev.terms[term_a], ev.terms[term_b]

    def reached(n: int) -> bool:
        a, b = terms_at(n)
        return a >= b

    n, method = first_true(reached, _crossover_candidate(quadratic), f"{term_a} stays below {term_b} for every {variable}")
    before = terms_at(n - 1) if n > 1 else (None, None)
    return Crossover(term_a, term_b, variable, n, *terms_at(n), *before, method,
                     form if method == "closed_form" else None)


# --- the model-free form --------------------------------------------------------------------------
def symbolic(keep_reserve_free: bool = True, **knobs) -> MemoryModel:
    """:func:`engine.api.symbolic_model`, optionally with ``R`` left a symbol.

    ``keep_reserve_free``: leave ``R`` a symbol (the default ``--reserve 0`` would drop it).
    """
    from engine.api import symbolic_model

    mm = symbolic_model(**knobs)
    if keep_reserve_free:
        mm.facts.pop(S.reserve_bytes, None)
    return mm
