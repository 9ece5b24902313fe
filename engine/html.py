"""A memory model as one self-contained HTML calculator page (``memsym html``).

The page evaluates the model's own expressions, printed to JavaScript by a subclass of
SymPy's ``JavascriptCodePrinter`` (only the project's expressions, never a user's string),
and answers the solve questions with the same certificate as engine/solve.py
(``f(n) <= B < f(n + 1)``) by an exact integer search (doubling, then bisection).

Numbers (docs/emit.md, "HTML page"): JavaScript numbers are float64. The byte widths that
stay free (``kv_cache_bytes``, ``weight_bytes``: int4 is 1/2 byte) are written as integer
half-bytes (``beta = n / 2``), and every rounding ``ceiling(a)`` whose argument is a
quotient ``n / d`` of integer-valued polynomials becomes one division ``ceil(n / d)``, so
each term is computed from integers only: exact while every intermediate stays below
2^53 (9 PB); above that a value is the nearest float64 (relative error about 1e-16) and
the page says so beside the total.
"""

from __future__ import annotations

import html
import json
from dataclasses import replace
from fractions import Fraction

import sympy
from sympy.printing.jscode import JavascriptCodePrinter

from engine.errors import InputError
from engine.gpus import catalog
from engine.model import MemoryModel
from engine.numeric import CeilDiv, numeric_total, variables_of, whole_bytes
from engine.render import latex_expr, named_form, render_template, shown_terms, term_label, term_symbol
from formulas import symbols as S
from formulas.dtypes import DTYPE_BYTES, canonical_dtype

WIDTHS = {"kv_cache_bytes": "kv_cache_dtype", "weight_bytes": "weight_dtype"}  # free width -> fragment key
DEGREES = {"tensor_parallel": "tp", "data_parallel": "dp", "context_parallel": "cp", "expert_parallel": "ep"}
DEGREE_CHOICES = (1, 2, 4, 8, 16, 32, 64)
DEFAULT_GPU = "h100-80gb"


class FloorDiv(sympy.Function):
    """``floor(n / d)`` for integer-valued ``n`` and ``d``: one division, exact below 2^53."""

    nargs = 2


class _Printer(JavascriptCodePrinter):
    """JavaScript for memsym's expressions: integer literals, one division per rounding."""

    def _print_Integer(self, expr):
        return str(int(expr))

    def _print_Rational(self, expr):
        return f"({int(expr.p)}/{int(expr.q)})"

    def _print_Half(self, expr):
        return "0.5"

    def _print_CeilDiv(self, expr):
        numerator, denominator = expr.args
        return f"Math.ceil(({self._print(numerator)})/({self._print(denominator)}))"

    def _print_FloorDiv(self, expr):
        numerator, denominator = expr.args
        return f"Math.floor(({self._print(numerator)})/({self._print(denominator)}))"

    def _print_Pow(self, expr):
        base, exp = expr.args
        if exp.is_Integer and exp > 0:
            return "(" + "*".join([self.parenthesize(base, 60)] * int(exp)) + ")"
        if exp.is_Integer and exp < 0:
            return f"(1/{self._print(base ** -exp)})"
        return super()._print_Pow(expr)


def exact_roundings(expr: sympy.Expr) -> sympy.Expr:
    """Each ``ceiling(a)``/``floor(a)`` with ``a = n / d`` (n, d integer-valued) as one division."""
    if not expr.args or expr.is_Atom:
        return expr
    expr = expr.func(*(exact_roundings(a) for a in expr.args))
    if isinstance(expr, (sympy.ceiling, sympy.floor)):
        numerator, denominator = (sympy.expand(p) for p in sympy.fraction(sympy.together(expr.args[0])))
        if numerator.is_integer and denominator.is_integer and denominator.is_positive:
            if denominator == 1:
                return numerator
            return (CeilDiv if isinstance(expr, sympy.ceiling) else FloorDiv)(numerator, denominator)
    return expr


def largest_operand(exprs) -> sympy.Expr:
    """The largest value the page's arithmetic meets: each total and each rounding's numerator
    (at most the term times its divisor). Every number is exact while this stays below 2^53."""
    numerators = [d.args[0] for e in exprs for d in e.atoms(CeilDiv, FloorDiv)]
    return sympy.Max(*exprs, *numerators, evaluate=False)


def half_symbol(width: str) -> sympy.Symbol:
    """``kv_cache_bytes`` -> the integer ``kv_cache_half_bytes`` (= 2 x bytes per element)."""
    return sympy.Symbol(width.replace("_bytes", "_half_bytes"), integer=True, positive=True)


def free_widths(mm: MemoryModel) -> tuple[MemoryModel, dict[str, Fraction]]:
    """The model with the byte widths of :data:`WIDTHS` it uses left free as half-bytes (inference)."""
    if mm.mode != "inference":  # training's gradient and master widths follow --dtype: kept pinned
        return mm, {}
    used = set().union(*(e.free_symbols for e in mm.terms.values()))
    defaults, facts, subs = {}, dict(mm.facts), {}
    for name in WIDTHS:
        sym = S.symbol(name)
        if sym in used and sym in facts:
            defaults[name] = Fraction(int(facts[sym].p), int(facts[sym].q))
            facts[sym] = half_symbol(name) / 2
    return replace(mm, facts=facts), defaults


def js_function(name: str, variables: tuple[str, ...], outputs: dict[str, sympy.Expr]) -> str:
    """``function name(v) { ... return {"term": ...}; }`` with shared subexpressions."""
    printer = _Printer()
    replacements, reduced = sympy.cse(list(outputs.values()), symbols=sympy.numbered_symbols("_t"),
                                      optimizations=None)
    lines = [f"function {name}(v) {{"]
    lines += [f"  const {v} = v.{v};" for v in variables]
    lines += [f"  const {sym} = {printer.doprint(sub)};" for sym, sub in replacements]
    body = ", ".join(f"{json.dumps(out)}: {printer.doprint(e)}" for out, e in zip(outputs, reduced))
    lines += [f"  return {{{body}}};", "}"]
    return "\n".join(lines)


def page_functions(mm: MemoryModel) -> tuple[tuple[str, ...], str]:
    """The free variables and the JavaScript of ``memsymTerms`` (every top-level term and the
    total) and, in inference, ``memsymServing`` (the total of engine.solve.serving_model)."""
    from engine.solve import serving_model

    rounded = {n: exact_roundings(whole_bytes(mm.pinned(mm.terms[n]))) for n in mm.top_level}
    outputs = {**rounded, "total_bytes": exact_roundings(numeric_total(mm))}
    outputs["largest_operand"] = largest_operand(outputs.values())
    variables = variables_of(mm)
    source = js_function("memsymTerms", variables, outputs)
    if mm.mode == "inference":
        serving = serving_model(mm, "none")
        source += "\n" + js_function("memsymServing", variables,
                                     {"total_bytes": exact_roundings(numeric_total(serving))})
    else:
        source += "\nconst memsymServing = null;"
    return variables, source


# --- the page ---------------------------------------------------------------------------
PAGE_NOTE = {"training": "the page frees the parallel degrees, a layout the default transformers profile does not model",
             "inference": "the page varies the KV-cache and weight dtypes, which the default transformers profile "
                          "does not model"}


def page_model(model: str | None, config: str | None, **knobs):
    """``(spec, MemoryModel, defaults)``: sizes free (their given values the page's defaults);
    in training the parallel degrees free too."""
    from engine.api import memory_model
    from engine.scenario import Scenario

    if (model is None) == (config is None):
        raise InputError("give one of --model ID and --config PATH")
    defaults = {name: knobs.pop(name, getattr(Scenario(), name)) for name in ("batch_size", "seq_len")}
    for name, value in defaults.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")
    # training: the page frees the parallel degrees (a layout); inference: it varies the KV-cache and weight
    # dtypes, which the transformers profile (the estimate's default) does not model: megatron by default
    note = "" if "profile" in knobs else PAGE_NOTE[knobs.get("mode", "inference")]
    knobs.setdefault("profile", "megatron")
    spec, mm = memory_model(model, config, batch_size=None, seq_len=None, **knobs)
    if note:
        mm.inputs["profile_note"] = note
    if mm.mode == "training":
        mm = mm.with_free(*DEGREES.values())
    return spec, mm, defaults


def degree_options(spec, scenario, knob: str) -> list[int]:
    """The degrees of ``knob`` (tp, dp, cp, ep) offered: those the builder's checks accept;
    for tp, only divisors of the KV heads (a replicated KV head changes the formula)."""
    from engine.terms import check_degrees

    out = []
    for value in DEGREE_CHOICES:
        if knob == "tp" and spec.num_key_value_heads % value:
            continue
        try:
            check_degrees(spec, replace(scenario, **{knob: value}))
        except InputError:
            continue
        out.append(value)
    return out


def controls(spec, mm: MemoryModel, variables: tuple[str, ...], defaults: dict, widths: dict) -> list[dict]:
    """The page's inputs: sizes, byte widths, parallel degrees (only those the model uses)."""
    from engine.scenario import Scenario

    out = [{"key": n, "label": S.SYMBOLS[n].meaning, "kind": "number", "variable": n, "default": str(defaults[n])}
           for n in ("batch_size", "seq_len") if n in variables]
    for width, key in WIDTHS.items():
        if width not in widths:
            continue
        names = [d for d in DTYPE_BYTES if DTYPE_BYTES[d] == widths[width]]
        options = [{"value": d, "label": f"{d} ({DTYPE_BYTES[d]} B)", "x": int(2 * DTYPE_BYTES[d])} for d in DTYPE_BYTES]
        default = canonical_dtype(str(mm.inputs.get(key) or mm.inputs.get("dtype")))
        out.append({"key": key, "label": S.SYMBOLS[width].meaning, "kind": "select",
                    "variable": half_symbol(width).name, "options": options,
                    "default": default if default in names else names[0]})
    scenario = Scenario(**{k: v for k, v in mm.inputs.items() if k in Scenario.__dataclass_fields__
                           and k not in ("batch_size", "seq_len")})
    for symbol_name, knob in DEGREES.items():
        if symbol_name in variables:
            options = [{"value": str(v), "label": str(v), "x": v} for v in degree_options(spec, scenario, knob)]
            out.append({"key": knob, "label": S.SYMBOLS[symbol_name].meaning, "kind": "select",
                        "variable": symbol_name, "options": options, "default": str(getattr(scenario, knob))})
    return out


def term_rows(mm: MemoryModel) -> list[dict]:
    """Each top-level term: what it holds, its formula (LaTeX source), this model's form, source."""
    terms = shown_terms(mm)
    placeholders = {term_symbol(n): term_label(n) for n in mm.top_level}
    return [{"name": n, "description": mm.descriptions.get(n, ""), "source": mm.source(n),
             "formula": term_label(n) + " = " + latex_expr(named_form(mm, n, terms), placeholders),
             "model_formula": sympy.sstr(mm.pinned(mm.terms[n]))} for n in mm.top_level]


def _script_json(value) -> str:
    """JSON safe inside a <script> element: no ``<``, ``>`` or ``&`` left unescaped."""
    text = json.dumps(value, sort_keys=True)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def gpu_rows() -> list[dict]:
    return [{"name": g.name, "product": g.product, "memory_bytes": g.memory_bytes} for g in catalog().values()]


def page_source(model: str | None = None, config: str | None = None, **knobs) -> tuple[str, dict]:
    """``(html, summary)``: the page's text and what it holds (for engine/report.py)."""
    spec, mm, defaults = page_model(model, config, **knobs)
    free, widths = free_widths(mm)
    variables, functions = page_functions(free)
    inputs = {k: str(v) if isinstance(v, Fraction) else v for k, v in mm.inputs.items()}
    page_controls = controls(spec, mm, variables, defaults, widths)
    uncontrolled = sorted(set(variables) - {c["variable"] for c in page_controls})
    if uncontrolled:  # e.g. --profile vllm: the KV cache fills what the GPU's total leaves
        raise InputError(f"html: the memory of {spec.name} under --profile {mm.profile} depends on "
                         f"{', '.join(uncontrolled)}, which the page has no control for (see memsym serve)")
    data = {"model": spec.name, "gpu_aliases": {a: g.name for g in catalog().values() for a in g.aliases}, "mode": mm.mode, "profile": mm.profile, "inputs": inputs,
            "controls": page_controls, "terms": term_rows(mm),
            "phases": {p: list(n) for p, n in mm.phases.items()}, "variables": list(variables), "gpus": gpu_rows(), "default_gpu": DEFAULT_GPU}
    if DEFAULT_GPU not in catalog():
        data["default_gpu"] = next(iter(catalog()))
    text = render_template("page.html.j2", title=html.escape(f"memsym: {spec.name} ({mm.mode})"),
                           data=_script_json(data), functions=functions)
    summary = {"model": spec.name, "mode": mm.mode, "profile": mm.profile, "profile_note": mm.inputs.get("profile_note"),
               "terms": list(mm.top_level),
               "controls": [c["key"] for c in data["controls"]] + ["gpu", "utilization"]}
    return text, summary


def write_page(path: str, model: str | None = None, config: str | None = None, **knobs) -> dict:
    """Write :func:`page_source` to ``path`` (a temporary file and a rename); the summary."""
    from engine.files import check_output, write_text

    check_output(path, "-o")
    text, summary = page_source(model, config, **knobs)
    write_text(path, text, flag="-o")
    return {**summary, "path": path, "bytes": len(text.encode())}
