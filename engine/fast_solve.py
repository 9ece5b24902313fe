"""``solve seq-len | batch-size | concurrency`` on one GPU through the cached exact evaluator.

The same integer search as engine/solve.py (``largest_fitting`` of engine/integer_search.py,
the certificate ``total(n) <= budget < total(n + 1)`` computed by the evaluator of
engine/fast.py), with the closed-form candidate from the branch quadratics stored beside it:
a *form* entry per (evaluator, variable, the other size, serving activations) holds the
quadratics' exact coefficients and the closed form's text, computed once with SymPy
(:func:`store_form`, after a symbolic solve). Anything else (several GPUs, a budget too
small even for 1, a model without a free evaluator, ``--show-formula`` which prints the
SymPy form) is answered by the SymPy path.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Callable

from engine import fast, fast_cache
from engine.evaluation import Evaluation, combine
from engine.integer_search import candidate, largest_fitting
from engine.registry import load_spec
from engine.scenario import Scenario

SIZES = ("batch_size", "seq_len")
_FORMS: dict[str, dict] = {}  # form key -> checked form, this process


@dataclass(frozen=True)
class CachedSolution:
    """engine.solve.Solution's fields and ``to_dict``; ``closed_form`` is rebuilt with SymPy on demand."""

    variable: str
    value: int
    budget_bytes: int
    total_at_value: int
    total_at_neighbour: int | None
    method: str
    evaluation: Evaluation
    inputs: dict
    closed_form_text: str | None = None
    smallest: bool = False
    rebuild: Callable[[], object] | None = field(default=None, repr=False, compare=False)

    @property
    def closed_form(self):
        return None if self.closed_form_text is None else self.rebuild().closed_form

    def to_dict(self) -> dict:
        out = {"variable": self.variable, "value": self.value, "budget_bytes": self.budget_bytes,
               "total_bytes_at_value": self.total_at_value, "total_bytes_at_next": self.total_at_neighbour,
               "method": self.method}
        if self.closed_form_text is not None:
            out["closed_form"] = self.closed_form_text
        out["inputs"] = self.inputs
        out["terms_at_value"] = {n: v for n, v in self.evaluation.terms.items() if "/" not in n}
        return out


def _solved(target: str) -> str:
    return "batch_size" if target == "concurrency" else target


def _form_key(spec, scenario: Scenario, target: str, activations: str) -> str:
    other = [n for n in SIZES if n != _solved(target)][0]
    free = fast.scenario_digest(scenario, fast.FREE)
    return fast_cache.key(fast.spec_digest(spec), fast_cache.digest(
        ["form", free, target, activations, fast_cache.canonical(getattr(scenario, other))]))


def solve(model, config, target: str, knobs: dict, limits, activations: str, rebuild: Callable[[], object]):
    """``(model name, CachedSolution)`` answered without SymPy, or None (take the SymPy path)."""
    folder = fast_cache.cache_dir()
    if folder is None or limits.num_gpus != 1 or target not in ("seq_len", "batch_size", "concurrency"):
        return None
    spec = load_spec(model, config)
    scenario = Scenario(**knobs)
    entry = fast.cached_entry(spec, scenario)
    name = _form_key(spec, scenario, target, activations)
    form = _FORMS.get(name) or fast_cache.read_data(folder, name, check_form)
    if entry is None or entry.kind != "free" or form is None or not form["depends"]:
        return None
    _FORMS[name] = form
    variable = _solved(target)
    fixed = {n: getattr(scenario, n) for n in SIZES if n != variable}
    budget = limits.per_gpu_bytes
    cache: dict[int, Evaluation] = {}

    def at(n: int) -> Evaluation:
        if n not in cache:
            cache[n] = _evaluate(entry, {**fixed, variable: n}, target, activations, variable)
        return cache[n]

    if at(1).total_bytes > budget:
        return None  # InfeasibleError with its hints: the SymPy path says it
    quadratics = None if form["quadratics"] is None else [tuple(Fraction(p, q) for p, q in branch)
                                                          for branch in form["quadratics"]]
    n, method = largest_fitting(lambda k: at(k).total_bytes <= budget,
                                None if quadratics is None else candidate(quadratics, budget), target)
    inputs = fast.inputs_of(entry, fixed)
    inputs["budget"] = limits.as_inputs()
    if target == "concurrency":
        inputs["serving_activations"] = activations
    text = form["closed_form"] if method == "closed_form" else None
    solution = CachedSolution(target, n, budget, at(n).total_bytes, at(n + 1).total_bytes, method, at(n), inputs,
                              text, rebuild=rebuild)
    return entry.meta["name"], solution


def _evaluate(entry, sizes: dict, target: str, activations: str, variable: str) -> Evaluation:
    """The evaluation at ``sizes``; concurrency: as engine.solve.serving_model holds it."""
    meta = entry.meta
    values = entry.function(sizes["batch_size"], sizes["seq_len"])
    terms = dict(zip(meta["term_names"], values))
    if target == "concurrency":
        at_one = entry.function(1, sizes["seq_len"]) if activations == "prefill" else None
        for i, name in enumerate(meta["term_names"]):
            if name.split("/")[0] == "activations":
                terms[name] = 0 if at_one is None else at_one[i]
    host = dict(zip(meta["host_names"], values[len(meta["term_names"]):]))
    top = [n for n in meta["term_names"] if "/" not in n]
    return combine(terms, top, {k: tuple(v) for k, v in meta["phases"].items()}, host, {variable: sizes[variable]})


def _fraction(value) -> Fraction | None:
    """A SymPy Rational as a Fraction; None for anything else (a coefficient left symbolic)."""
    return Fraction(int(value.p), int(value.q)) if getattr(value, "is_Rational", False) else None


def check_form(data: dict) -> dict:
    """A form entry's fields, checked (ValueError when anything is off)."""
    quadratics, text, depends = data.get("quadratics"), data.get("closed_form"), data.get("depends")
    if not isinstance(depends, bool) or not (text is None or isinstance(text, str)):
        raise ValueError("a malformed form")
    if quadratics is not None:
        if not isinstance(quadratics, list) or not all(
                isinstance(b, list) and len(b) == 3 and all(
                    isinstance(x, list) and len(x) == 2 and all(type(v) is int for v in x) and x[1] > 0 for x in b)
                for b in quadratics):
            raise ValueError("malformed quadratics")
    return {"quadratics": quadratics, "closed_form": text, "depends": depends}


def store_form(model, config, target: str, knobs: dict, activations: str, mm) -> None:
    """After a symbolic solve: the form entry of ``mm`` (the model solved), and the evaluator
    (built at size 1 when the cache has none yet)."""
    import sympy

    from engine import solve as symbolic
    from formulas.symbols import symbol

    folder = fast_cache.cache_dir()
    if folder is None or target not in ("seq_len", "batch_size", "concurrency"):
        return
    spec, scenario = load_spec(model, config), Scenario(**knobs)
    variable = _solved(target)
    solved = symbolic.serving_model(mm, activations) if target == "concurrency" else mm
    expr = solved.pinned(solved.total)
    quadratics = symbolic.branch_quadratics(expr, symbol(variable))
    exact = None if quadratics is None else [[_fraction(x) for x in b] for b in quadratics]
    form = symbolic.closed_form(expr, variable)
    data = {"quadratics": None if exact is None or any(x is None for b in exact for x in b)
            else [[[x.numerator, x.denominator] for x in b] for b in exact],
            "closed_form": None if form is None else sympy.sstr(form),
            "depends": symbol(variable) in expr.free_symbols}
    fast_cache.write_data(folder, _form_key(spec, scenario, target, activations), data)
    if fast.cached_entry(spec, scenario) is None:
        fast.estimate(spec, replace(scenario, **{variable: 1}))
