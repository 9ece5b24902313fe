"""A memory model as LaTeX or Markdown, through the Jinja2 templates in ``templates/``.

Python writes every formula: ``sympy.latex(expr, symbol_names=latex_names())`` with the
short names declared in :mod:`formulas.symbols` (b, s, h, L, ...), the same in every
output. The templates only arrange finished strings. Their delimiters (``<< >>``,
``<% %>``, ``<# #>``) never collide with TeX braces; undefined names raise
(``StrictUndefined``); nothing is autoescaped, so text reaches them escaped for its target
by :func:`tex_escape` or :func:`markdown_escape`.

Rendering follows the model's structure: one row per term (a parent that is the sum or the
``Max`` of its sub-terms is written as such), then the total, or for training each phase's
sum and the ``Max`` over phases. Terms are written in the declared symbols; for a model
with a known shape a second row gives the term with the model's values substituted.
"""

from __future__ import annotations

import functools
import html
import re
from dataclasses import dataclass
from typing import Callable

import sympy

from engine.latex_rows import (FRAGMENT, LINE_WIDTH, PAGE, Wrap, group_digits, latex_expr,  # noqa: F401 (re-exported)
                               addends, max_rows, own_part, pack_rows, relation_rows, shared_part, sum_rows)
from engine.limits import printable
from engine.model import MemoryModel, to_bytes
from engine.units import format_binary, format_bytes
from formulas import symbols as S

# --- templates and files ----------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def environment():
    """The Jinja2 environment over ``templates/`` (imported on first use)."""
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("templates", "."),
        block_start_string="<%", block_end_string="%>",
        variable_start_string="<<", variable_end_string=">>",
        comment_start_string="<#", comment_end_string="#>",
        undefined=jinja2.StrictUndefined, autoescape=False,
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
    )


def render_template(name: str, **context) -> str:
    return environment().get_template(name).render(**context)


# --- text -------------------------------------------------------------------------------
_TEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "<": r"\textless{}", ">": r"\textgreater{}",
}


def tex_escape(text: str) -> str:
    """Plain text for LaTeX: special characters escaped, anything outside printable ASCII -> '?'."""
    return "".join(_TEX_SPECIAL.get(c, c) if c.isascii() and c.isprintable() else "?" for c in str(text))


_MARKDOWN_SPECIAL = frozenset("\\`*_[]|#!~")  # CommonMark's inline markup and GFM's cell separator


def markdown_escape(text: str) -> str:
    """Plain text for a Markdown table cell: one line, control characters escaped, HTML
    (``<``, ``>``, ``&``) as entities and Markdown's markup characters backslash-escaped, so a
    model name cannot open a tag, a link or a new row."""
    plain = html.escape(printable(" ".join(str(text).split())), quote=False)
    return "".join("\\" + c if c in _MARKDOWN_SPECIAL else c for c in plain)


_FLAG = re.compile(r"--([a-z][a-z0-9-]*)")


def tex_text(text: str) -> str:
    r"""Prose for LaTeX: :func:`tex_escape`, with each ``--flag`` set as ``\texttt{-{}-flag}``
    (TeX would ligature ``--`` into an en dash)."""
    return _FLAG.sub(lambda m: r"\texttt{-{}-" + m.group(1) + "}", tex_escape(text))


def term_label(name: str) -> str:
    r"""``kv_cache`` -> ``M_{\mathrm{kv\_cache}}``."""
    return r"M_{\mathrm{" + tex_escape(name) + "}}"


def host_label(name: str) -> str:
    r"""A term held in host (CPU) memory: ``H_{\mathrm{optimizer}}``."""
    return r"H_{\mathrm{" + tex_escape(name) + "}}"


# --- what the templates show ------------------------------------------------------------
def pins_shape(mm: MemoryModel) -> bool:
    """True when the model's facts fix its shape (a registry model or config, not --symbolic)."""
    return S.hidden_size in mm.facts


def shown_terms(mm: MemoryModel) -> dict[str, sympy.Expr]:
    """The terms as written: declared symbols, where a parallel degree of 1 or an overhead
    knob of 0 (``engine.analysis.SCENARIO_PINNED``) drops out; other values stay symbols."""
    knobs = _dropped_knobs(mm)
    return {name: expr.xreplace(knobs) for name, expr in mm.terms.items()}


def _dropped_knobs(mm: MemoryModel) -> dict[sympy.Symbol, sympy.Expr]:
    from engine.analysis import SCENARIO_PINNED

    return {sym: value for sym, value in mm.facts.items() if sym.name in SCENARIO_PINNED and value in (0, 1)}


def named_form(mm: MemoryModel, name: str, terms: dict[str, sympy.Expr] | None = None) -> sympy.Expr:
    """A term with every other top-level term it contains written as that term's symbol.

    ``overhead/allocator = phi (weights + kv_cache + activations)`` reads better than the
    expanded sum. Only what equals a named term is replaced, so the form stays equal to the
    term; the placeholders are :func:`term_symbol`s. ``terms``: default :func:`shown_terms`.
    """
    terms = shown_terms(mm) if terms is None else terms
    own = name.split("/", 1)[0]
    expr = terms[name]
    others = [n for n in mm.top_level if n != own and terms[n].free_symbols]
    for other in sorted(others, key=lambda n: len(terms[n].args), reverse=True):
        expr = _replace_part(expr, terms[other], term_symbol(other))
    return expr


def _replace_part(expr: sympy.Expr, part: sympy.Expr, placeholder: sympy.Symbol) -> sympy.Expr:
    """``expr`` with each subtree equal to ``part``, and each sum holding all of ``part``'s
    addends, rewritten with ``placeholder`` (a structural match: no algebra, so it is fast)."""
    if expr == part:
        return placeholder
    if not expr.args:
        return expr
    expr = expr.func(*(_replace_part(a, part, placeholder) for a in expr.args))
    if expr.is_Add and part.is_Add and set(part.args) <= set(expr.args):
        rest = [a for a in expr.args if a not in part.args]
        return sympy.Add(placeholder, *rest)
    return expr


def term_symbol(name: str) -> sympy.Symbol:
    """The placeholder that stands for a whole term in :func:`named_form`."""
    return sympy.Symbol(name.replace("/", "_"))


@dataclass(frozen=True)
class _Block:
    """What every row of one aligned block is written from."""

    mm: MemoryModel
    terms: dict[str, sympy.Expr]  # shown_terms
    zero: frozenset  # zero_terms: left out
    show_pinned: bool  # a second row with the model's values
    wrap: Wrap
    shared: dict[str, tuple[list[str], sympy.Expr]]  # shared_parts


def _term_rows(block: _Block, name: str) -> list[str]:
    mm, terms, wrap = block.mm, block.terms, block.wrap
    expr, children = terms[name], mm.children(name)
    labels = [term_label(c) for c in children if c not in block.zero]  # a 0 child adds nothing: left out, as its row is
    parent = name.rsplit("/", 1)[0]
    if children and expr == sympy.Add(*(terms[c] for c in children)):
        rights = sum_rows(labels, wrap)
    elif children and expr == sympy.Max(*(terms[c] for c in children)):
        rights = max_rows(labels, wrap)
    elif name in block.shared.get(parent, ((), 0))[0]:  # a moment: the shared part plus its own terms
        own = own_part(expr, block.shared[parent][1])
        rights = pack_rows([shared_label(parent)] + (addends(own, leading=True) if own != 0 else []), wrap=wrap)
    else:
        placeholders = {term_symbol(n): term_label(n) for n in mm.top_level}
        rights = relation_rows(named_form(mm, name, terms), placeholders, wrap)
    return _with_values(block, expr, rights)


def _with_values(block: _Block, expr: sympy.Expr, rights: list[str]) -> list[str]:
    """``rights`` and, where the model pins its shape, the value row (``= 311,164,928``)."""
    pinned = block.mm.pinned(expr)
    if block.show_pinned and pinned != expr:
        values = relation_rows(pinned, wrap=block.wrap)
        if len(values) == 1 and block.wrap.fits(rights[-1], values[0]):  # "= h V beta = 311,164,928"
            rights[-1] = f"{rights[-1]} {values[0]}"
        else:
            rights += values
    return rights


def shared_label(name: str) -> str:
    r"""The part every moment of ``name`` holds, written once: ``M^{\mathrm{shared}}_{\mathrm{activations}}``."""
    return r"M^{\mathrm{shared}}_{\mathrm{" + tex_escape(name) + "}}"


def shared_parts(mm: MemoryModel, terms: dict[str, sympy.Expr] | None = None) -> dict[str, tuple[list[str], sympy.Expr]]:
    """Per top-level ``Max`` of sub-terms (the moments of a peak), the moments that share a
    part and that part (:func:`engine.latex_rows.shared_part`); terms equal to 0 take no part."""
    terms = shown_terms(mm) if terms is None else terms
    zero = set(zero_terms(mm))
    out = {}
    for name in mm.top_level:
        children = mm.children(name)
        if name in zero or not children or terms[name] != sympy.Max(*(terms[c] for c in children)):
            continue
        group, part = shared_part({c: terms[c] for c in children if c not in zero})
        if group:
            out[name] = (group, part)
    return out


def zero_terms(mm: MemoryModel) -> list[str]:
    """Terms that are 0 in this scenario (no reserve given, ...): left out of the rows and tables."""
    terms = shown_terms(mm)
    return [n for n, expr in terms.items() if expr == 0 or (pins_shape(mm) and mm.pinned(expr) == 0)]


def formula_rows(mm: MemoryModel, wrap: Wrap = FRAGMENT) -> list[dict[str, str]]:
    """Rows ``{left, right}`` of the aligned block: every nonzero term (after a ``Max`` of
    moments, the part they share), the phases, the total."""
    terms = shown_terms(mm)
    zero, shared = frozenset(zero_terms(mm)), shared_parts(mm, terms)
    labels = [term_label(n) for n in [*mm.terms, *mm.phases] if n not in zero] + [shared_label(n) for n in shared]
    wrap = wrap.beside(labels + [host_label(n) for n in mm.host_terms])
    block = _Block(mm, terms, zero, pins_shape(mm), wrap, shared)
    named = []
    for name in (n for n in mm.terms if n not in block.zero):
        named.append((term_label(name), _term_rows(block, name)))
        if name in block.shared:
            part = block.shared[name][1]
            named.append((shared_label(name), _with_values(block, part, relation_rows(part, wrap=wrap))))
    if mm.phases:
        for phase, names in mm.phases.items():
            named.append((term_label(phase), sum_rows([term_label(n) for n in names if n not in block.zero], wrap)))
        total = max_rows([term_label(p) for p in mm.phases], wrap)
    else:
        total = sum_rows([term_label(n) for n in mm.top_level if n not in block.zero], wrap)
    if block.show_pinned:
        total += relation_rows(mm.pinned(mm.total), wrap=wrap)
    named.append(("M", total))
    for name, expr in mm.host_terms.items():  # offloaded to CPU memory: not in the GPU total
        shown, pinned = expr.xreplace(_dropped_knobs(mm)), mm.pinned(expr)
        rows = relation_rows(shown, wrap=wrap) + (relation_rows(pinned, wrap=wrap) if block.show_pinned and pinned != shown else [])
        named.append((host_label(name), rows))
    return [{"left": left if i == 0 else "", "right": right}
            for left, rights in named for i, right in enumerate(rights)]


def legend(mm: MemoryModel, escape: Callable[[str], str], values: dict[str, int] | None = None) -> list[dict]:
    """The declared symbols the shown terms use, in declaration order, with their values."""
    zero = set(zero_terms(mm))
    shown = [*(e for n, e in shown_terms(mm).items() if n not in zero),
             *(e.xreplace(_dropped_knobs(mm)) for e in mm.host_terms.values())]
    used = set().union(*(expr.free_symbols for expr in shown))
    values = values or {}
    rows = []
    for name, entry in S.SYMBOLS.items():
        if entry.symbol not in used:
            continue
        if name in values:
            value = latex_expr(sympy.Integer(values[name]))
        elif entry.symbol in mm.facts:
            value = latex_expr(mm.facts[entry.symbol])
        else:
            value = r"\text{free}"
        rows.append({"latex": entry.latex, "meaning": escape(entry.meaning), "unit": escape(entry.unit),
                     "value": value, "free": value == r"\text{free}"})
    return rows


def _evaluation(mm: MemoryModel, values: dict[str, int], halves: bool = False) -> dict:
    """The bytes of every row at ``values``; ``halves`` (the standalone page): also as pairs of
    rows for two side-by-side halves, sizes in binary units."""
    ev = mm.evaluate(**values)
    point = ", ".join(f"${S.SYMBOLS[k].latex} = {v}$" for k, v in sorted(values.items()))
    zero, shared = set(zero_terms(mm)), shared_parts(mm)
    rows = []
    for name in (n for n in mm.terms if n not in zero):
        rows.append((term_label(name), ev.terms[name]))
        if name in shared:
            rows.append((shared_label(name), to_bytes(mm.pinned(shared[name][1], **values), name + " shared part")))
    rows += [(term_label(p), v) for p, v in ev.phases.items()]
    rows.append(("M", ev.total_bytes))
    rows += [(host_label(n), v) for n, v in ev.host.items()]
    size = format_binary if halves else format_bytes
    shown = [{"label": label, "bytes": f"{b:,}", "size": size(b)} for label, b in rows]
    half = (len(shown) + 1) // 2
    pairs = [(shown[i], shown[half + i] if half + i < len(shown) else None) for i in range(half)] if halves else []
    return {"heading": f"Bytes at {point}" if point else "Bytes", "rows": shown, "pairs": pairs}


def title(mm: MemoryModel) -> str:
    """``Memory of NAME (mode, profile P)``; a training model adds its bytes per parameter, a
    default that fell back from transformers why (``inputs["profile_note"]``)."""
    convention = mm.inputs.get("convention") if mm.mode == "training" else None
    note = f" ({mm.inputs['profile_note']})" if mm.inputs.get("profile_note") else ""
    if convention:
        return f"Memory of {mm.name} (training, profile {mm.profile}{note}: {convention})"
    return f"Memory of {mm.name} ({mm.mode}, profile {mm.profile}{note})"


def _shared_notes(mm: MemoryModel, escape: Callable[[str], str]) -> list[dict]:
    """One line per shared part: its label and which moments hold it."""
    notes = []
    for name, (group, _) in shared_parts(mm).items():
        others = [c for c in mm.children(name) if c not in group and c not in zero_terms(mm)]
        but = f" but {', '.join(others)}" if others else ""
        notes.append({"label": shared_label(name), "text": escape(
            f"what every moment of {name}{but} holds, written once")})
    return notes


def _context(mm: MemoryModel, escape: Callable[[str], str], values: dict[str, int] | None,
             environment_name: str, wrap: Wrap = FRAGMENT) -> dict:
    zero = zero_terms(mm)
    return {
        "omitted": escape("Terms equal to 0 here, left out: " + ", ".join(zero) + ".") if zero else "",
        "shared": _shared_notes(mm, escape),
        "title": escape(title(mm)),
        "environment": environment_name,
        "rows": formula_rows(mm, wrap),
        "terms": [{"label": term_label(n), "description": escape(mm.descriptions.get(n, "")),
                   "source": escape(mm.source(n))} for n in mm.top_level if n not in zero]
        + [{"label": host_label(n), "description": escape(f"{n} offloaded to host (CPU) memory, not in M"),
            "source": escape(mm.source("host_terms"))} for n in mm.host_terms],
        "legend": legend(mm, escape, values),
        "show_values": values is not None,
        "page": wrap.visible,  # the standalone page: the legend as one paragraph, the bytes in two halves
        "evaluation": _evaluation(mm, values, wrap.visible) if values is not None else None,
    }


def render_latex(mm: MemoryModel, *, values: dict[str, int] | None = None, standalone: bool = False) -> str:
    """LaTeX: an ``align*`` block, term and symbol tables; a full document if ``standalone``.

    ``values`` (e.g. ``{"batch_size": 1, "seq_len": 2048}``) adds the symbols' values and
    the exact bytes of every term at that point.
    """
    context = _context(mm, tex_text, values, "align*", PAGE if standalone else FRAGMENT)
    return render_template("standalone.tex.j2" if standalone else "memory.tex.j2", **context)


def render_markdown(mm: MemoryModel, *, values: dict[str, int] | None = None) -> str:
    """Markdown with ``$$``-math: the same rows and tables as :func:`render_latex`."""
    return render_template("memory.md.j2", **_context(mm, markdown_escape, values, "aligned"))


def repr_latex(mm: MemoryModel) -> str:
    """The aligned rows between ``$$`` (for Jupyter's ``_repr_latex_``)."""
    block = render_template("formulas.tex.j2", environment="aligned", rows=formula_rows(mm))
    return "$$" + block.strip() + "$$"
