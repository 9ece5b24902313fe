"""Inverse questions: the largest batch, context or concurrency that fits; the fewest GPUs.

Every answer is checked by substitution with exact integers, the way ``estimate`` computes
a total: ``total(n) <= budget < total(n + 1)`` for a largest value, ``total(n) <= budget <
total(n - 1)`` for a smallest GPU count. The candidate comes from a closed form where the
pinned total allows one, and from an exact integer search otherwise:

- closed form: a total is the ``Max`` of branches (the inference activation peak, the
  training phases) and ``Max(p_1, ..., p_k) <= M`` iff every ``p_i <= M``. When every branch
  is a polynomial of degree <= 2 in the variable with non-negative coefficients (linear in
  ``s`` with fused attention, quadratic with eager scores), the largest value is
  ``floor(min_i root_i(M))``, computed exactly with integer square roots;
- search: doubling, then bisection, over a total that never decreases as the variable grows
  (``Min(s, w)`` of sliding windows, ``ceiling(s / B)`` of paged blocks, ``Max`` of phases).

Budgets are per GPU (:class:`engine.gpus.Budget`); with ``num_gpus`` > 1 the model is split
evenly by :func:`sharded`, the seed article's ``(N x M - weights) / kv`` arithmetic.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Callable, Iterable

import sympy

from engine.errors import InfeasibleError, InputError
from engine.gpus import MAX_NUM_GPUS, Budget
from engine.integer_search import (ADJUST_STEPS, MAX_VALUE, candidate, first_true,  # noqa: F401 (re-exported)
                                   largest_fitting, largest_root)
from engine.model import Evaluation, MemoryModel
from formulas import symbols as S

MAX_BRANCHES = 64  # Max branches distributed before falling back to the search
SOLVABLE = ("batch_size", "seq_len", "concurrency", "num_gpus", "tp")
SERVING_ACTIVATIONS = ("none", "prefill")
PER_DEVICE_OVERHEADS = ("reserve_bytes", "comm_buffer_bytes")  # every GPU pays these in full
FLAGS = {"batch_size": "--batch-size", "seq_len": "--seq-len", "block_size": "--block-size"}


@dataclass(frozen=True)
class Solution:
    """A solved value with its certificate: totals (per GPU) at the value and its neighbour."""

    variable: str
    value: int
    budget_bytes: int
    total_at_value: int
    total_at_neighbour: int | None  # value + 1 (largest value) or value - 1 (smallest count; None at 1)
    method: str  # "closed_form" or "search"
    evaluation: Evaluation
    inputs: dict
    closed_form: sympy.Expr | None = None
    smallest: bool = False
    neighbour: int | None = None  # the value the neighbour total is at, where not value -/+ 1 (tp: the previous divisor)

    def to_dict(self) -> dict:
        """The ``--json`` contract of ``memsym solve``."""
        out = {"variable": self.variable, "value": self.value, "budget_bytes": self.budget_bytes,
               "total_bytes_at_value": self.total_at_value}
        out["total_bytes_at_previous" if self.smallest else "total_bytes_at_next"] = self.total_at_neighbour
        if self.smallest and self.neighbour is not None:
            out["previous_value"] = self.neighbour
        out["method"] = self.method
        if self.closed_form is not None:
            out["closed_form"] = sympy.sstr(self.closed_form)
        out["inputs"] = self.inputs
        out["terms_at_value"] = {n: v for n, v in self.evaluation.terms.items() if "/" not in n}
        return out

    def closed_form_latex(self) -> str | None:
        if self.closed_form is None:
            return None
        return sympy.latex(self.closed_form, symbol_names=S.latex_names())


# --- closed forms -----------------------------------------------------------------------------
def max_branches(expr: sympy.Expr) -> list[sympy.Expr] | None:
    """``expr`` as the Max of Max-free branches: ``A + Max(p, q) = Max(A + p, A + q)``.

    Sums, and products whose other factors are non-negative (every memory term is), are
    distributed over ``Max``; None when that would make more than MAX_BRANCHES branches.
    """
    if isinstance(expr, sympy.Max):
        parts = [max_branches(arg) for arg in expr.args]
        if any(p is None for p in parts):
            return None
        out = [branch for p in parts for branch in p]
        return out if len(out) <= MAX_BRANCHES else None
    if isinstance(expr, (sympy.Add, sympy.Mul)) and expr.has(sympy.Max):
        if isinstance(expr, sympy.Mul) and not all(a.is_nonnegative for a in expr.args if not a.has(sympy.Max)):
            return [expr]
        parts = [max_branches(arg) for arg in expr.args]
        if any(p is None for p in parts) or math.prod(len(p) for p in parts) > MAX_BRANCHES:
            return None
        return [expr.func(*combo) for combo in itertools.product(*parts)]
    return [expr]


def branch_quadratics(expr: sympy.Expr, var: sympy.Symbol) -> list[tuple[sympy.Expr, ...]] | None:
    """``[(a, b, c), ...]``: each branch as ``a n^2 + b n + c`` with ``a, b >= 0``; None if one is not."""
    branches = max_branches(expr)
    if branches is None:
        return None
    out = []
    for branch in branches:
        poly = sympy.expand(branch).as_poly(var)
        if poly is None or poly.degree() > 2:
            return None
        a, b, c = (poly.coeff_monomial(var**k) for k in (2, 1, 0))
        if a.is_nonnegative is not True or b.is_nonnegative is not True:
            return None
        out.append((a, b, c))
    return out


def closed_form(expr: sympy.Expr, variable: str) -> sympy.Expr | None:
    """The largest ``n`` with ``expr(n) <= M`` as a formula in ``M`` (``budget_bytes``), or None.

    ``floor(Min_i r_i)`` over the branches that grow with ``n``: ``r = (M - c) / b`` for a
    linear branch, ``(-b + sqrt(b^2 + 4 a (M - c))) / (2 a)`` for a quadratic one. A branch
    constant in ``n`` only decides whether any ``n`` fits.
    """
    quadratics = branch_quadratics(expr, S.symbol(variable))
    if not quadratics:
        return None
    budget = S.budget_bytes
    roots = []
    for a, b, c in quadratics:
        if a == 0 and b == 0:
            continue
        root = (budget - c) / b if a == 0 else (-b + sympy.sqrt(b**2 + 4 * a * (budget - c))) / (2 * a)
        roots.append(sympy.factor_terms(root))
    return sympy.floor(sympy.Min(*roots)) if roots else None


def _fraction(value: sympy.Expr) -> Fraction | None:
    return Fraction(int(value.p), int(value.q)) if isinstance(value, sympy.Rational) else None


def _candidate(quadratics, budget: int) -> int | None:
    """The closed form evaluated at ``budget``; None where a coefficient is not a number."""
    if quadratics is None:
        return None
    fractions = [tuple(_fraction(x) for x in coefficients) for coefficients in quadratics]
    if any(x is None for coefficients in fractions for x in coefficients):
        return None
    return candidate(fractions, budget)


class _Totals:
    """Exact evaluations of a model at integer values of one variable, each computed once."""

    def __init__(self, mm: MemoryModel, variable: str, fixed: dict):
        self.mm, self.variable, self.fixed, self.cache = mm, variable, fixed, {}

    def at(self, n: int) -> Evaluation:
        if n not in self.cache:
            self.cache[n] = self.mm.evaluate(**self.fixed, **{self.variable: n})
        return self.cache[n]


def _check_free(mm: MemoryModel, expr: sympy.Expr, var: sympy.Symbol, label: str, fixed: dict) -> None:
    free = expr.free_symbols
    if var not in free:
        value = fixed.get(var.name, mm.facts.get(var))
        if value is not None:
            flag = FLAGS.get(var.name, var.name)
            raise InputError(f"{label} is not free: {flag} {value} pins it; leave {flag} out to solve for {label}")
        raise InputError(f"the total does not depend on {label}; nothing to solve")
    others = sorted(s.name for s in free - {var})
    if others:
        raise InputError(f"the total still depends on {', '.join(others)}; give a value for each to solve for {label}")


def _infeasible(label: str, value: int, budget: int, ev: Evaluation) -> InfeasibleError:
    """What needs how much: the total at the smallest value and its two largest terms."""
    top = sorted(((v, n) for n, v in ev.terms.items() if "/" not in n and v), reverse=True)[:2]
    detail = f" ({', '.join(f'{n} {v:,}' for v, n in top)})" if top else ""
    return InfeasibleError(f"budget of {budget:,} bytes per GPU is too small: {label}={value} alone needs "
                           f"{ev.total_bytes:,} bytes per GPU{detail}")


def solve(mm: MemoryModel, variable: str, budget_bytes: int, *, label: str | None = None, **fixed) -> Solution:
    """The largest integer ``variable`` (batch_size, seq_len) with ``total <= budget_bytes``.

    ``fixed`` pins other free symbols; every other symbol must already be pinned. Raises
    InfeasibleError when even 1 does not fit, InputError when the variable is not free.
    """
    label = label or variable
    try:
        var = S.symbol(variable)
    except KeyError:
        raise InputError(f"cannot solve for {variable!r}; choose from {', '.join(SOLVABLE)}") from None
    expr = mm.pinned(mm.total, **fixed)
    _check_free(mm, expr, var, label, fixed)
    totals = _Totals(mm, variable, fixed)

    def fits(n: int) -> bool:
        return totals.at(n).total_bytes <= budget_bytes

    if not fits(1):
        raise _infeasible(label, 1, budget_bytes, totals.at(1))
    quadratics = branch_quadratics(expr, var)
    n, method = largest_fitting(fits, _candidate(quadratics, budget_bytes), label)
    form = closed_form(expr, variable) if method == "closed_form" else None
    return Solution(label, n, budget_bytes, totals.at(n).total_bytes, totals.at(n + 1).total_bytes, method,
                    totals.at(n), {**mm.inputs, "budget_bytes": budget_bytes}, form)


# --- serving and splitting --------------------------------------------------------------------
def serving_model(mm: MemoryModel, activations: str = "none") -> MemoryModel:
    """What a serving engine holds for ``batch_size`` concurrent requests of ``seq_len`` tokens.

    Weights + every request's KV cache (paged when ``block_size`` is set) + overhead, as the
    seed article's concurrency estimate and vLLM's KV sizing (``vllm/worker/worker.py``,
    ``determine_num_available_blocks``: the cache gets ``gpu_memory_utilization x total``
    less the weights and the peak of one profiled forward pass). ``activations``: ``none``
    leaves the activation peak out (the seed's arithmetic); ``prefill`` keeps the peak of one
    forward pass over one request's tokens (batch 1), which does not grow with the number of
    requests, as vLLM's profile run of ``max_num_batched_tokens`` does not. (An
    ``--allocator-fraction`` share is still taken of the full peak, activations included.)
    """
    if mm.mode != "inference":
        raise InputError(f"concurrency is a serving question: it needs --mode inference, got {mm.mode}")
    if activations not in SERVING_ACTIVATIONS:
        raise InputError(f"--serving-activations: unknown value {activations!r} "
                         f"(choose from {', '.join(SERVING_ACTIVATIONS)})")
    terms = {}
    for name, expr in mm.terms.items():
        if name.split("/")[0] == "activations":
            expr = sympy.Integer(0) if activations == "none" else expr.xreplace({S.batch_size: 1})
        terms[name] = expr
    return replace(mm, terms=terms, inputs={**mm.inputs, "serving_activations": activations})


def sharded(mm: MemoryModel, num_gpus: int) -> MemoryModel:
    """One GPU's share when every byte of the model is split evenly over ``num_gpus`` GPUs.

    Each term divides by N except the per-device overheads (``R``, ``C``), which every GPU
    pays. This is the seed article's simplification, ``(N x M - weights) / kv``: a real
    tensor-parallel split replicates norms and (for MLA) the KV latent, and a pipeline split
    is uneven; ``solve tp`` uses the per-rank model of ``formulas/parallelism.py`` instead.
    """
    if num_gpus == 1:
        return mm
    count = sympy.Integer(num_gpus)
    per_device = {S.SYMBOLS[name].symbol: 0 for name in PER_DEVICE_OVERHEADS if name in S.SYMBOLS}

    def share(expr: sympy.Expr) -> sympy.Expr:
        model_part = expr.xreplace(per_device)
        return model_part / count + (expr - model_part)

    return replace(mm, terms={name: share(e) for name, e in mm.terms.items()}, inputs={**mm.inputs, "num_gpus": num_gpus})


def smallest_fitting(memory_for: Callable[[int], MemoryModel], budget_bytes: int, label: str,
                     candidates: Iterable[int] | None = None, **values) -> Solution:
    """The smallest degree ``n`` whose per-GPU model ``memory_for(n)`` fits ``budget_bytes``.

    ``memory_for(n)`` builds the model of one GPU when the work is split ``n`` ways (even
    sharding for ``num_gpus``, the tensor-parallel model for ``tp``); memory must not grow
    with ``n``. ``candidates``: the allowed degrees in increasing order (divisors of the
    heads for TP); None means every integer from 1, searched by doubling and bisection.
    """
    cache: dict[int, Evaluation] = {}

    def at(n: int) -> Evaluation:
        if n not in cache:
            cache[n] = memory_for(n).evaluate(**values)
        return cache[n]

    def fits(n: int) -> bool:
        return at(n).total_bytes <= budget_bytes

    if candidates is not None:
        allowed = list(candidates)
        n = next((d for d in allowed if fits(d)), None)
        if n is None:
            raise _infeasible(f"{label}", allowed[-1], budget_bytes, at(allowed[-1]))
        previous = allowed[allowed.index(n) - 1] if allowed.index(n) else None
    else:
        low, high = 0, 1
        while not fits(high):
            low, high = high, 2 * high
            if high > MAX_NUM_GPUS:
                raise _infeasible(label, MAX_NUM_GPUS, budget_bytes, at(MAX_NUM_GPUS))
        while high - low > 1:
            middle = low + (high - low) // 2
            low, high = (low, middle) if fits(middle) else (middle, high)
        n, previous = high, (high - 1 if high > 1 else None)
    model = memory_for(n)
    return Solution(label, n, budget_bytes, at(n).total_bytes, at(previous).total_bytes if previous else None,
                    "search", at(n), {**model.inputs, "budget_bytes": budget_bytes}, smallest=True,
                    neighbour=previous)


def solve_budget(mm: MemoryModel, variable: str, budget: Budget, *, activations: str = "none",
                 memory_for: Callable[[int], MemoryModel] | None = None, **fixed) -> Solution:
    """``memsym solve``: batch_size, seq_len or concurrency (largest), num_gpus (smallest).

    ``concurrency`` solves the batch of :func:`serving_model`; every solve but ``num_gpus``
    splits the model over ``budget.num_gpus`` with :func:`sharded`. ``memory_for(n)``
    overrides how ``num_gpus`` builds the model of one of ``n`` GPUs.
    """
    variable = variable.replace("-", "_")
    if variable not in SOLVABLE:
        raise InputError(f"cannot solve for {variable!r}; choose from {', '.join(SOLVABLE)}")
    parallel = {k: mm.inputs.get(k) for k in ("tp", "pp", "ep", "cp") if (mm.inputs.get(k) or 1) > 1}
    if parallel and (budget.num_gpus > 1 or variable == "num_gpus"):
        raise InputError(f"--num-gpus splits the model evenly; it does not combine with {parallel}")
    inputs = {**mm.inputs, "budget": budget.as_inputs()}
    if variable == "num_gpus":
        solution = smallest_fitting(memory_for or (lambda n: sharded(mm, n)), budget.per_gpu_bytes, "num_gpus",
                                    **fixed)
        return replace(solution, inputs=inputs)
    model, target = mm, variable
    if variable == "concurrency":
        model, target = serving_model(mm, activations), "batch_size"
        inputs["serving_activations"] = activations
    solution = solve(sharded(model, budget.num_gpus), target, budget.per_gpu_bytes, label=variable, **fixed)
    return replace(solution, inputs=inputs)


def tensor_parallel_degrees(spec, scenario) -> list[int]:
    """Tensor-parallel degrees the model allows: divisors of the heads that pass the builder's checks."""
    from engine.terms import check_degrees

    check_degrees(spec, replace(scenario, tp=1))  # --pp and the rest must fit before any --tp can
    degrees = []
    for t in range(1, spec.num_attention_heads + 1):
        if spec.num_attention_heads % t == 0:
            try:
                check_degrees(spec, replace(scenario, tp=t))
            except InputError:
                continue
            degrees.append(t)
    return degrees


def solve_tensor_parallel(spec, scenario, budget: Budget, **values) -> Solution:
    """The smallest tensor-parallel degree whose per-rank model (``formulas/parallelism.py``) fits.

    Each rank is one GPU of ``budget.per_gpu_bytes``; ``--num-gpus`` does not apply.
    """
    from engine.profiles import build

    if budget.num_gpus != 1:
        raise InputError("solve tp: the tensor-parallel degree is the number of GPUs; leave --num-gpus out")
    solution = smallest_fitting(lambda t: build(spec, replace(scenario, tp=t)), budget.per_gpu_bytes, "tp",
                                candidates=tensor_parallel_degrees(spec, scenario), **values)
    return replace(solution, inputs={**solution.inputs, "budget": budget.as_inputs()})
