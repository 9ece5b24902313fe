"""From a memory model's expressions to NumPy functions: ``compile()`` and codegen.

One code generator serves both: :func:`function_source` turns named expressions into the
source of one Python function that imports only NumPy. :func:`compile_model` executes that
source (as ``sympy.lambdify`` does, and only on the project's own expressions, never on a
user's string); :func:`module_source` places the same functions in a standalone module.

Numbers (see docs/emit.md):

- every input is cast to float64 before any arithmetic, so no integer product overflows
  (``b a s^2`` reaches 10^21 at ``s = 10^7``, ``b = 10^5``);
- a term whose value SymPy cannot prove to be an integer is rounded up to whole bytes, as
  :meth:`MemoryModel.evaluate` does; the total sums the rounded top-level terms (or takes
  the ``Max`` over phase sums), so it agrees with the exact evaluation term for term;
- before common-subexpression elimination (``sympy.cse``), positive common factors are
  pulled out of ``Max``/``Min`` and sums are collected by the free variables, so
  ``W + K b s + Max(A b, B b s)`` runs as ``W + b (K s + maximum(A, B s))``: on a
  ``(batch, 1) x (1, seq)`` grid only two operations touch the full grid.
"""

from __future__ import annotations

import keyword
import textwrap
from dataclasses import dataclass
from typing import Callable

import numpy
import sympy
from sympy.printing.numpy import NumPyPrinter

from engine.errors import InputError
from engine.model import MemoryModel

TOTAL = "total_bytes"


class _Printer(NumPyPrinter):
    """NumPy code for memsym's expressions: float64 literals, element-wise max/min.

    SymPy's own printer writes ``Max`` as ``functools.reduce(numpy.maximum, [...])``;
    nested ``numpy.maximum`` calls broadcast arrays of different shapes without the reduce.
    """

    def _print_Integer(self, expr):
        try:
            value = float(expr)
        except OverflowError:
            value = float("inf")
        if not numpy.isfinite(value):  # never emit `inf`: refused (inputs are bounded, engine/limits.py)
            raise InputError(f"a constant of about 2^{int(abs(expr.p)).bit_length()} is too large for float64 "
                             f"code; the model's sizes are out of range")
        return repr(value)

    _print_Rational = _print_Integer

    def _print_Half(self, expr):
        return "0.5"

    def _nested(self, func: str, args) -> str:
        printed = [self._print(a) for a in args]
        out = printed[-1]
        for arg in reversed(printed[:-1]):
            out = f"{func}({arg}, {out})"
        return out

    def _print_CeilDiv(self, expr):
        numerator, denominator = expr.args
        return f"numpy.ceil(({self._print(numerator)})/{self._print(denominator)})"

    def _print_Max(self, expr):
        return self._nested("numpy.maximum", expr.args)

    def _print_Min(self, expr):
        return self._nested("numpy.minimum", expr.args)

    def _print_Pow(self, expr, rational=False):
        base, exp = expr.args
        if exp.is_Integer and exp > 0:
            return f"{self.parenthesize(base, sympy.printing.precedence.PRECEDENCE['Pow'])}**{int(exp)}"
        if exp.is_Integer and exp < 0:
            return f"(1.0/{self._print(base ** -exp)})"
        return super()._print_Pow(expr, rational=rational)


# --- numeric forms of a model's terms ---------------------------------------------------
def variables_of(mm: MemoryModel) -> tuple[str, ...]:
    """The free variables of every term and the total, sorted by name."""
    free = set(mm.pinned(mm.total).free_symbols)
    for expr in mm.terms.values():
        free |= mm.pinned(expr).free_symbols
    return tuple(sorted(s.name for s in free))


class CeilDiv(sympy.Function):
    """``ceiling(n / q)`` for an integer-valued ``n`` and a positive integer ``q``.

    Printed as ``numpy.ceil(n / q)``: ``n`` is exact in float64 below 2**53 and one
    correctly rounded division cannot cross an integer (the true quotient is an integer or
    at least ``1/q`` from one), so the rounding is exact where ``ceil(0.05 * n)`` is not.
    """

    nargs = 2


def whole_bytes(expr: sympy.Expr) -> sympy.Expr:
    """``expr`` rounded up to whole bytes, as ``MemoryModel.evaluate`` rounds each term.

    Constants are rounded exactly here; an expression SymPy proves integer-valued (after
    ``expand``) needs no rounding; a rational one (``phi = 1/20`` of the peak) becomes
    ``CeilDiv(q expr, q)`` over its common denominator ``q``. Anything else (rational byte
    widths left free) is wrapped in ``ceiling`` and may be off by one byte near an integer.
    """
    if not expr.free_symbols:
        return sympy.ceiling(expr)
    expanded = sympy.expand(expr)
    if expanded.is_integer:
        return expr
    denominator = sympy.ilcm(1, 1, *(r.q for r in expanded.atoms(sympy.Rational)))  # ilcm needs two
    numerator = sympy.expand(denominator * expanded)
    if denominator > 1 and numerator.is_integer:
        return CeilDiv(numerator, denominator)
    return sympy.ceiling(expr)


def numeric_total(mm: MemoryModel) -> sympy.Expr:
    """The total as evaluate computes it: rounded top-level terms, summed (or Max of phases)."""
    # a phase may name a sub-term (transformers, torchtune: ``activations/layers``)
    named = {*mm.top_level, *(n for names in mm.phases.values() for n in names)}
    tops = {name: whole_bytes(mm.pinned(mm.terms[name])) for name in mm.terms if name in named}
    if mm.phases:
        return sympy.Max(*(sympy.Add(*(tops[n] for n in names)) for names in mm.phases.values()))
    return sympy.Add(*tops.values())


def numeric_output(mm: MemoryModel, name: str) -> sympy.Expr:
    """``"total_bytes"`` or one term (``"kv_cache"``, ``"weights/attention"``), pinned and rounded."""
    if name == TOTAL:
        return numeric_total(mm)
    if name not in mm.terms:
        raise InputError(f"unknown term {name!r}; known: {', '.join([TOTAL, *mm.terms])}")
    return whole_bytes(mm.pinned(mm.terms[name]))


def broadcast_form(expr: sympy.Expr) -> sympy.Expr:
    """An equal expression that does less work on broadcast grids.

    Bottom-up: a positive factor common to every argument of ``Max``/``Min`` moves outside
    (``Max(k x, k y) = k Max(x, y)`` for ``k > 0``; every declared symbol is positive), and a
    sum is collected by its free symbols, so each variable multiplies once.
    """
    if not expr.args or expr.is_Atom:
        return expr
    expr = expr.func(*(broadcast_form(a) for a in expr.args))
    if isinstance(expr, (sympy.Max, sympy.Min)):
        common = _common_positive_factor(expr.args)
        if common != 1:
            return common * expr.func(*(sympy.factor_terms(a) / common for a in expr.args))
    if expr.is_Add:
        return sympy.collect(expr, sorted(expr.free_symbols, key=lambda s: s.name))
    return expr


def _common_positive_factor(args) -> sympy.Expr:
    """The product of positive symbol powers that divides every argument (a Mul or symbol)."""
    common = None
    for arg in args:
        powers = {b: e for b, e in sympy.factor_terms(arg).as_powers_dict().items()
                  if b.is_Symbol and b.is_positive and e.is_Integer and e > 0}
        common = powers if common is None else {b: min(e, powers[b]) for b, e in common.items() if b in powers}
    return sympy.Mul(*(b**e for b, e in (common or {}).items()))


# --- one function's source --------------------------------------------------------------
def python_name(term: str) -> str:
    """``weights/attention`` -> ``weights_attention``; checked to be a usable identifier."""
    name = term.replace("/", "_")
    if not name.isidentifier() or keyword.iskeyword(name) or name.startswith("_") or name == "numpy":
        raise InputError(f"term name {term!r} cannot name a Python function")
    return name


def function_source(name: str, variables: tuple[str, ...], outputs: dict[str, sympy.Expr],
                    docstring: str = "") -> str:
    """Source of ``def name(*, <variables>)`` computing ``outputs`` with shared subexpressions.

    One output returns an array; several return a dict ``name -> array``. Every returned
    array has the broadcast shape of the inputs.
    """
    printer = _Printer({"fully_qualified_modules": True, "inline": True, "allow_unknown_functions": False})
    exprs = [broadcast_form(e) for e in outputs.values()]
    replacements, reduced = sympy.cse(exprs, symbols=sympy.numbered_symbols("_t"), optimizations=None)
    signature = f"*, {', '.join(variables)}" if variables else ""
    lines = [f"def {name}({signature}):"]
    if docstring:
        lines.append(textwrap.indent(f'"""{docstring}\n"""', "    "))
    lines += [f"    {v} = numpy.asarray({v}, dtype=numpy.float64)" for v in variables]
    lines += [f"    {sym} = {printer.doprint(sub)}" for sym, sub in replacements]
    results = []
    for out_name, expr, original in zip(outputs, reduced, outputs.values()):
        code = printer.doprint(expr)
        if {s.name for s in original.free_symbols} != set(variables):  # give it the inputs' shape
            shape = f"numpy.broadcast({', '.join(variables)}).shape" if variables else "()"
            code = f"numpy.broadcast_to({code}, {shape}).astype(numpy.float64)"
        results.append((out_name, code))
    if len(results) == 1:
        lines.append(f"    return {results[0][1]}")
    else:
        lines.append("    return {")
        lines += [f"        {out!r}: {code}," for out, code in results]
        lines.append("    }")
    return "\n".join(lines) + "\n"


# --- compile ----------------------------------------------------------------------------
@dataclass(frozen=True)
class CompiledFunction:
    """A NumPy function of a memory model's free variables (keyword arguments, broadcast).

    ``f(batch_size=numpy.arange(1, 9)[:, None], seq_len=[1024, 2048])`` returns float64
    bytes of shape (8, 2); several outputs come back as a dict ``name -> array``.
    """

    name: str
    variables: tuple[str, ...]
    outputs: tuple[str, ...]
    source: str
    function: Callable

    def __call__(self, **values):
        missing = [v for v in self.variables if v not in values]
        unknown = [v for v in values if v not in self.variables]
        if missing or unknown:
            what = "; ".join(part for part in (
                f"missing {', '.join(missing)}" if missing else "",
                f"unknown {', '.join(unknown)}" if unknown else "") if part)
            raise InputError(f"{self.name}: {what} (variables: {', '.join(self.variables) or 'none'})")
        return self.function(**values)


def _compiled(name: str, variables: tuple[str, ...], outputs: dict[str, sympy.Expr]) -> CompiledFunction:
    source = function_source(name, variables, outputs)
    namespace: dict[str, object] = {"numpy": numpy}
    # The source comes from the model's own expressions through _Printer (as lambdify's does).
    exec(compile(source, f"<memsym {name}>", "exec"), namespace)  # noqa: S102
    return CompiledFunction(name, variables, tuple(outputs), source, namespace[name])


def compile_model(mm: MemoryModel, term: str | None = None) -> CompiledFunction:
    """NumPy function of the total bytes (or of one term) over the model's free variables."""
    name = TOTAL if term is None else term
    return _compiled(python_name(name), variables_of(mm), {name: numeric_output(mm, name)})


def compile_terms(mm: MemoryModel, names: tuple[str, ...] | None = None) -> CompiledFunction:
    """One NumPy function returning a dict of several outputs (default: total and top-level terms)."""
    names = names or (TOTAL, *mm.top_level)
    return _compiled("memory_terms", variables_of(mm), {n: numeric_output(mm, n) for n in names})


# --- codegen: a standalone module -------------------------------------------------------
def module_source(mm: MemoryModel) -> str:
    """Python source of a module that imports only NumPy: one function per term, ``total_bytes``.

    Each function's docstring gives the term's formula in the declared symbols (other
    terms it contains by name), the formula with this model's values, and its source.
    """
    from engine.render import render_template

    variables = variables_of(mm)
    names = {term: python_name(term) for term in mm.terms}
    if len(set(names.values())) != len(names) or TOTAL in names.values():
        raise InputError(f"term names {', '.join(mm.terms)} do not give distinct Python names")
    functions = [function_source(names[t], variables, {t: numeric_output(mm, t)}, _term_doc(mm, t))
                 for t in mm.terms]
    functions.append(function_source(TOTAL, variables, {TOTAL: numeric_total(mm)}, _total_doc(mm)))
    return render_template(
        "module.py.j2",
        title=_doc_text(f"Memory of {mm.name} ({mm.mode}) in bytes, as NumPy functions."),
        version=_version(),
        variables_text=", ".join(variables) or "none",
        scenario=[_doc_text(f"{k}: {v}") for k, v in mm.inputs.items() if v is not None],
        model_repr=repr(str(mm.name)), mode_repr=repr(mm.mode),
        variables_repr=repr(variables),
        inputs_repr=repr({k: _plain(v) for k, v in mm.inputs.items()}),
        functions=[f.rstrip("\n") for f in functions],
        terms=[{"key": repr(t), "function": names[t]} for t in mm.terms] + [{"key": repr(TOTAL), "function": TOTAL}],
    )


def write_module(mm: MemoryModel, path: str) -> str:
    """Write :func:`module_source` to ``path`` through a temporary file and a rename."""
    from engine.files import write_text

    source = module_source(mm)
    write_text(path, source, flag="-o")
    return source


def _term_doc(mm: MemoryModel, term: str) -> str:
    from engine.render import named_form

    parent, _, part = term.rpartition("/")
    what = mm.descriptions.get(term) or f"the {part} part of {parent}"
    lines = _wrapped("", f"{term}: {what} (bytes).") + [""]
    lines += _wrapped("formula:    ", sympy.sstr(named_form(mm, term)))
    lines += _wrapped("this model: ", sympy.sstr(mm.pinned(mm.terms[term])))
    lines += _wrapped("source:     ", mm.source(term))
    return "\n".join(lines)


def _total_doc(mm: MemoryModel) -> str:
    if mm.phases:
        lines = ["Peak bytes: the larger of the phases (each term rounded up to whole bytes).", ""]
        for phase, names in mm.phases.items():
            lines += _wrapped(f"{phase} = ", " + ".join(names))
    else:
        lines = ["Total bytes: the sum of the top-level terms (each rounded up to whole bytes).", ""]
        lines += _wrapped("total = ", " + ".join(mm.top_level))
    lines += _wrapped("this model: ", sympy.sstr(mm.pinned(mm.total)))
    return "\n".join(lines)


def _wrapped(head: str, text: str, width: int = 84) -> list[str]:
    return textwrap.wrap(_doc_text(text), width, initial_indent=head, subsequent_indent=" " * len(head),
                         break_on_hyphens=False, break_long_words=False) or [head.rstrip()]


def _doc_text(text: str) -> str:
    """Text safe inside a generated docstring: printable ASCII, no backslash or triple quote."""
    safe = "".join(c if c.isascii() and c.isprintable() else "?" for c in str(text))
    return safe.replace("\\", "/").replace('"""', "'''")


def _plain(value):
    """A scenario input as a Python literal (Fractions as their text)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return str(value)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("memsym")
    except PackageNotFoundError:
        return "(source tree)"
