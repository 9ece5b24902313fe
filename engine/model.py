"""MemoryModel: named memory terms, the facts that pin them, and the total (or phase peak).

Terms are an ordered mapping ``name -> expression``; sub-terms are named
``parent/child`` (``weights/attention``). A top-level term is its children's sum, except
where the builder says the children peak at different moments (inference activations:
``Max`` of one layer's attention, its MLP and the logits). Where memory peaks at different
moments of a step (training: the start of backward vs the optimizer step), the model keeps
one sum per phase and the total is their ``Max``.

Expressions stay in the declared symbols; ``facts`` (model shape, byte widths and whatever
scenario values were given) are substituted on demand, and every symbol not pinned is a
free variable of the result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import sympy

from engine.errors import InputError
from engine.evaluation import Evaluation, combine  # noqa: F401 (Evaluation: re-exported)
from engine.scenario import FREEABLE, FREEABLE_ALIASES  # --free: the knob table's freeable rows
from formulas import allocator
from formulas import symbols as S


# symbols no estimate flag gives, and the question that supplies them
NO_FLAG_HINTS = {
    "cuda_total_bytes": "the vllm profile sizes the KV cache from the GPU's cudaMemGetInfo total: "
                        "ask 'memsym serve --gpu NAME' or 'memsym solve concurrency --gpu NAME'",
}


def to_bytes(value: sympy.Expr, what: str) -> int:
    """An exact, fully substituted byte count as an int, rounded up to a whole byte."""
    if not value.is_number:
        names = sorted(s.name for s in value.free_symbols)
        hints = [NO_FLAG_HINTS[name] for name in names if name in NO_FLAG_HINTS]
        if hints:
            raise InputError(f"{what} depends on {', '.join(names)}; {hints[0]}")
        raise InputError(f"{what} still depends on {', '.join(names)}; give a value for each")
    return int(sympy.ceiling(value))


@dataclass
class MemoryModel:
    """Named memory terms of one model and scenario."""

    name: str
    mode: str
    terms: dict[str, sympy.Expr]
    facts: dict[sympy.Symbol, sympy.Expr]
    phases: dict[str, tuple[str, ...]] = field(default_factory=dict)
    descriptions: dict[str, str] = field(default_factory=dict)
    inputs: dict[str, object] = field(default_factory=dict)
    parameters: sympy.Expr = sympy.Integer(0)
    active_parameters: sympy.Expr = sympy.Integer(0)
    # CPU (host) memory of offloaded state; not part of the GPU total
    host_terms: dict[str, sympy.Expr] = field(default_factory=dict)
    # where each top-level term's formula comes from (paper + table/equation, or framework
    # file + function); sub-terms share their parent's; "host_terms" names the source of the
    # offloaded (host) terms. Set by the profile that builds the model.
    sources: dict[str, str] = field(default_factory=dict)
    profile: str = ""  # the profile that built it (engine/profiles/)
    # the caching allocator (formulas/allocator.py): its rule ("native", "expandable"; "" where
    # the profile does not model it) and the tensors terms are made of, as (count, bytes each)
    # pairs; a term without a list, and without children that have one, is one tensor
    allocator: str = ""
    tensors: dict[str, tuple[tuple[sympy.Expr, sympy.Expr], ...]] = field(default_factory=dict)
    # device memory outside PyTorch's allocator (the CUDA context): in neither total
    outside_terms: dict[str, sympy.Expr] = field(default_factory=dict)
    # per phase, terms the caching allocator keeps reserved while no live tensor uses them
    # (another stream's pool, a freed block the next request does not fit): they count in
    # that phase's reserved_bytes, never in total_bytes (in no phase of ``phases``)
    reserved_only: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def source(self, name: str) -> str:
        """The source of term ``name`` (a sub-term's is its parent's)."""
        top = name.split("/", 1)[0]
        try:
            return self.sources[top]
        except KeyError:
            raise InputError(f"term {name!r} of {self.name} has no source") from None

    # --- structure ---------------------------------------------------------------------
    @property
    def top_level(self) -> list[str]:
        return [name for name in self.terms if "/" not in name]

    def children(self, name: str) -> list[str]:
        prefix = name + "/"
        return [n for n in self.terms if n.startswith(prefix) and "/" not in n[len(prefix):]]

    def phase_sums(self) -> dict[str, sympy.Expr]:
        return {phase: sympy.Add(*(self.terms[n] for n in names)) for phase, names in self.phases.items()}

    def tensor_list(self, name: str) -> list[tuple[sympy.Expr, sympy.Expr]]:
        """The (count, bytes each) tensors of term ``name``: its own list, else its children's
        (where every child has one), else the term as one tensor."""
        if name in self.tensors:
            return list(self.tensors[name])
        kids = self.children(name)
        if kids and all(k in self.tensors or self.children(k) for k in kids):
            return [pair for k in kids for pair in self.tensor_list(k)]
        return [(sympy.Integer(1), self.terms[name])]

    def reserved_tensors(self) -> dict[str, list[tuple[sympy.Expr, sympy.Expr]]]:
        """Per phase, the (count, bytes each) tensors live in it, for the caching allocator's
        rule (formulas/allocator.py); empty where the profile does not model the allocator."""
        if not self.allocator:
            return {}
        phases = self.phases or {"total": tuple(self.top_level)}
        return {phase: [p for n in (*names, *self.reserved_only.get(phase, ())) for p in self.tensor_list(n)]
                for phase, names in phases.items()}

    @property
    def total(self) -> sympy.Expr:
        """The symbolic total: the sum of top-level terms, or the Max over phase sums."""
        if self.phases:
            return sympy.Max(*self.phase_sums().values())
        return sympy.Add(*(self.terms[n] for n in self.top_level))

    # --- substitution ------------------------------------------------------------------
    def pinned(self, expr: sympy.Expr, **values: int) -> sympy.Expr:
        """``expr`` with the model's facts and the given ``values`` substituted."""
        subs = dict(self.facts)
        subs.update(self._symbol_values(values))
        return expr.xreplace(subs)

    def _symbol_values(self, values: dict[str, object]) -> dict[sympy.Symbol, sympy.Expr]:
        out = {}
        for name, value in values.items():
            if value is None:
                continue
            try:
                sym = S.symbol(name)
            except KeyError:
                raise InputError(f"unknown variable {name!r}") from None
            out[sym] = sympy.Rational(value) if not isinstance(value, sympy.Basic) else value
        return out

    @property
    def free_symbols(self) -> list[sympy.Symbol]:
        """Symbols left free once the facts are pinned, sorted by name."""
        return sorted(self.pinned(self.total).free_symbols, key=lambda s: s.name)

    def expression(self, name: str | None = None, pinned: bool = True) -> sympy.Expr:
        """One term (or the total, ``name=None``), with or without the facts substituted."""
        if name is None:
            expr = self.total
        elif name in self.terms:
            expr = self.terms[name]
        else:
            raise InputError(f"unknown term {name!r}; known: {', '.join(self.terms)}")
        return self.pinned(expr) if pinned else expr

    # --- exact evaluation --------------------------------------------------------------
    def evaluate(self, **values: int) -> Evaluation:
        """Exact integer bytes of every term and the total at ``values`` (names -> numbers)."""
        subs = dict(self.facts)
        subs.update(self._symbol_values(values))
        terms = {name: to_bytes(expr.xreplace(subs), f"term {name!r}") for name, expr in self.terms.items()}
        host = {name: to_bytes(expr.xreplace(subs), f"host term {name!r}") for name, expr in self.host_terms.items()}
        outside = {name: to_bytes(expr.xreplace(subs), f"term {name!r}") for name, expr in self.outside_terms.items()}
        reserved = (lambda: self._reserved_at(subs)) if self.allocator else None
        return combine(terms, self.top_level, self.phases, host, values, outside, reserved)

    def _reserved_at(self, subs: dict) -> dict[str, int]:
        """Each phase's reserve (formulas/allocator.py) with ``subs`` substituted."""
        def exact(value, phase: str) -> int:
            value = value.xreplace(subs) if isinstance(value, sympy.Basic) else sympy.Rational(value)
            return to_bytes(value, f"tensors of phase {phase!r}")

        return {phase: allocator.reserved([(exact(n, phase), exact(x, phase)) for n, x in pairs], self.allocator)
                for phase, pairs in self.reserved_tensors().items()}

    def with_free(self, *names: str) -> "MemoryModel":
        """A copy with the scenario knobs ``names`` (``tensor_parallel``, ``tp``, ``lora_rank``,
        ...) left as symbols. The model's structure follows the values it was built with
        (e.g. the first stage holds no head once ``--pp`` > 1); only their values go free.
        """
        from dataclasses import replace

        facts = dict(self.facts)
        for name in names:
            key = FREEABLE_ALIASES.get(name.replace("-", "_"), name.replace("-", "_"))
            if key not in FREEABLE:
                raise InputError(f"--free: {name!r} is not a scenario knob that can stay free "
                                 f"(choose from {', '.join(sorted(FREEABLE_ALIASES))})")
            facts.pop(S.symbol(key), None)
        return replace(self, facts=facts)

    def diff(self, variable: str, name: str | None = None) -> sympy.Expr:
        """Partial derivative of a term (or the total) with respect to ``variable``."""
        return sympy.diff(self.expression(name), S.symbol(variable))

    def _repr_latex_(self) -> str:
        """Jupyter shows the terms and total as LaTeX (:func:`engine.render.repr_latex`)."""
        from engine.render import repr_latex

        return repr_latex(self)
