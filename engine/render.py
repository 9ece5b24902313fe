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
from typing import Callable

import sympy

from engine.limits import printable
from engine.model import MemoryModel
from engine.units import format_bytes
from formulas import symbols as S

LINE_WIDTH = 80  # characters of LaTeX in one row before a long sum wraps

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
_LONG_NUMBER = re.compile(r"(?<![\\\d.])\d{5,}(?![\d.])")


def tex_text(text: str) -> str:
    r"""Prose for LaTeX: :func:`tex_escape`, with each ``--flag`` set as ``\texttt{-{}-flag}``
    (TeX would ligature ``--`` into an en dash)."""
    return _FLAG.sub(lambda m: r"\texttt{-{}-" + m.group(1) + "}", tex_escape(text))


def group_digits(tex: str) -> str:
    r"""``1192099840`` -> ``1{,}192{,}099{,}840`` in LaTeX math: grouped without siunitx."""
    def grouped(match: re.Match) -> str:
        digits = match.group(0)
        head = len(digits) % 3 or 3
        return "{,}".join([digits[:head]] + [digits[i:i + 3] for i in range(head, len(digits), 3)])

    return _LONG_NUMBER.sub(grouped, tex)


def latex_expr(expr: sympy.Expr, names: dict[sympy.Symbol, str] | None = None) -> str:
    """``sympy.latex`` with the declared short names (and ``names`` for placeholders), digits grouped."""
    return group_digits(sympy.latex(expr, symbol_names={**S.latex_names(), **(names or {})}))


def term_label(name: str) -> str:
    r"""``kv_cache`` -> ``M_{\mathrm{kv\_cache}}``."""
    return r"M_{\mathrm{" + tex_escape(name) + "}}"


def host_label(name: str) -> str:
    r"""A term held in host (CPU) memory: ``H_{\mathrm{optimizer}}``."""
    return r"H_{\mathrm{" + tex_escape(name) + "}}"


def _relation_rows(expr: sympy.Expr, names: dict[sympy.Symbol, str] | None = None) -> list[str]:
    """``= expr`` as one row; a long sum or max (or a factor times one) over several rows."""
    text = latex_expr(expr, names)
    if len(text) <= LINE_WIDTH:
        return ["= " + text]
    factor, inner = sympy.Integer(1), expr
    if expr.is_Mul:
        long_args = [a for a in expr.args if a.is_Add or isinstance(a, (sympy.Max, sympy.Min))]
        if len(long_args) != 1:
            return ["= " + text]
        factor, inner = expr / long_args[0], long_args[0]
    prefix = "" if factor == 1 else latex_expr(factor, names) + " "
    if inner.is_Add:
        return _rows(_addends(inner, names), prefix + r"\left(" if prefix else "", r" \right)" if prefix else "")
    if isinstance(inner, (sympy.Max, sympy.Min)):
        printed = [latex_expr(a, names) for a in inner.args]
        name = r"\max" if isinstance(inner, sympy.Max) else r"\min"
        return _rows([p + "," for p in printed[:-1]] + printed[-1:], prefix + name + r"\left(", r"\right)")
    return ["= " + text]


def _addends(expr: sympy.Add, names: dict[sympy.Symbol, str] | None) -> list[str]:
    printed = [latex_expr(t, names) for t in expr.as_ordered_terms()]
    return printed[:1] + [p if p.startswith("-") else "+ " + p for p in printed[1:]]


def _rows(pieces: list[str], opening: str = "", closing: str = "") -> list[str]:
    """Right-hand sides ``= ...`` with ``pieces`` packed into rows of about LINE_WIDTH.

    ``opening``/``closing`` (``\\max\\left(`` and ``\\right)``) enclose the whole; a row
    that breaks inside them closes with ``\\right.`` and the next opens with ``\\left.``,
    so every row is balanced TeX.
    """
    chunks, current = [], ""
    for piece in pieces:
        if current and len(current) + len(piece) > LINE_WIDTH:
            chunks.append(current)
            current = piece
        else:
            current = f"{current} {piece}" if current else piece
    chunks.append(current)
    delimited = bool(opening)
    rows = []
    for i, chunk in enumerate(chunks):
        first, last = i == 0, i == len(chunks) - 1
        left = "= " + opening if first else (r"\quad \left. " if delimited else r"\quad ")
        right = closing if last else (r" \right." if delimited else "")
        rows.append(left + chunk + right)
    return rows


def _sum_rows(labels: list[str]) -> list[str]:
    return _rows(labels[:1] + ["+ " + label for label in labels[1:]])


def _max_rows(labels: list[str]) -> list[str]:
    return _rows([label + "," for label in labels[:-1]] + labels[-1:], r"\max\left(", r"\right)")


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


def _term_rows(mm: MemoryModel, name: str, terms: dict[str, sympy.Expr], show_pinned: bool,
               zero: frozenset = frozenset()) -> list[str]:
    expr, children = terms[name], mm.children(name)
    labels = [term_label(c) for c in children if c not in zero]  # a 0 child adds nothing: left out, as its row is
    if children and expr == sympy.Add(*(terms[c] for c in children)):
        rights = _sum_rows(labels)
    elif children and expr == sympy.Max(*(terms[c] for c in children)):
        rights = _max_rows(labels)
    else:
        placeholders = {term_symbol(n): term_label(n) for n in mm.top_level}
        rights = _relation_rows(named_form(mm, name, terms), placeholders)
    pinned = mm.pinned(expr)
    if show_pinned and pinned != expr:
        values = _relation_rows(pinned)
        if len(values) == 1 and len(rights[-1]) + len(values[0]) <= LINE_WIDTH:  # "= h V beta = 311,164,928"
            rights[-1] = f"{rights[-1]} {values[0]}"
        else:
            rights += values
    return rights


def zero_terms(mm: MemoryModel) -> list[str]:
    """Terms that are 0 in this scenario (no reserve given, ...): left out of the rows and tables."""
    terms = shown_terms(mm)
    return [n for n, expr in terms.items() if expr == 0 or (pins_shape(mm) and mm.pinned(expr) == 0)]


def formula_rows(mm: MemoryModel) -> list[dict[str, str]]:
    """Rows ``{left, right}`` of the aligned block: every nonzero term, the phases, the total."""
    show_pinned = pins_shape(mm)
    terms = shown_terms(mm)
    zero = set(zero_terms(mm))
    named = [(term_label(n), _term_rows(mm, n, terms, show_pinned, frozenset(zero))) for n in mm.terms if n not in zero]
    if mm.phases:
        for phase, names in mm.phases.items():
            named.append((term_label(phase), _sum_rows([term_label(n) for n in names if n not in zero])))
        total = _max_rows([term_label(p) for p in mm.phases])
    else:
        total = _sum_rows([term_label(n) for n in mm.top_level if n not in zero])
    if show_pinned:
        total += _relation_rows(mm.pinned(mm.total))
    named.append(("M", total))
    for name, expr in mm.host_terms.items():  # offloaded to CPU memory: not in the GPU total
        shown, pinned = expr.xreplace(_dropped_knobs(mm)), mm.pinned(expr)
        rows = _relation_rows(shown) + (_relation_rows(pinned) if show_pinned and pinned != shown else [])
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
                     "value": value})
    return rows


def _evaluation(mm: MemoryModel, values: dict[str, int]) -> dict:
    ev = mm.evaluate(**values)
    point = ", ".join(f"${S.SYMBOLS[k].latex} = {v}$" for k, v in sorted(values.items()))
    zero = set(zero_terms(mm))
    rows = [(term_label(n), ev.terms[n]) for n in mm.terms if n not in zero]
    rows += [(term_label(p), v) for p, v in ev.phases.items()]
    rows.append(("M", ev.total_bytes))
    rows += [(host_label(n), v) for n, v in ev.host.items()]
    return {"heading": f"Bytes at {point}" if point else "Bytes",
            "rows": [{"label": label, "bytes": f"{b:,}", "size": format_bytes(b)} for label, b in rows]}


def title(mm: MemoryModel) -> str:
    """``Memory of NAME (mode, profile P)``; a training model adds its bytes per parameter, a
    default that fell back from transformers why (``inputs["profile_note"]``)."""
    convention = mm.inputs.get("convention") if mm.mode == "training" else None
    note = f" ({mm.inputs['profile_note']})" if mm.inputs.get("profile_note") else ""
    if convention:
        return f"Memory of {mm.name} (training, profile {mm.profile}{note}: {convention})"
    return f"Memory of {mm.name} ({mm.mode}, profile {mm.profile}{note})"


def _context(mm: MemoryModel, escape: Callable[[str], str], values: dict[str, int] | None,
             environment_name: str) -> dict:
    zero = zero_terms(mm)
    return {
        "omitted": escape("Terms equal to 0 here, left out: " + ", ".join(zero) + ".") if zero else "",
        "title": escape(title(mm)),
        "environment": environment_name,
        "rows": formula_rows(mm),
        "terms": [{"label": term_label(n), "description": escape(mm.descriptions.get(n, "")),
                   "source": escape(mm.source(n))} for n in mm.top_level if n not in zero]
        + [{"label": host_label(n), "description": escape(f"{n} offloaded to host (CPU) memory, not in M"),
            "source": escape(mm.source("host_terms"))} for n in mm.host_terms],
        "legend": legend(mm, escape, values),
        "show_values": values is not None,
        "evaluation": _evaluation(mm, values) if values is not None else None,
    }


def render_latex(mm: MemoryModel, *, values: dict[str, int] | None = None, standalone: bool = False) -> str:
    """LaTeX: an ``align*`` block, term and symbol tables; a full document if ``standalone``.

    ``values`` (e.g. ``{"batch_size": 1, "seq_len": 2048}``) adds the symbols' values and
    the exact bytes of every term at that point.
    """
    context = _context(mm, tex_text, values, "align*")
    return render_template("standalone.tex.j2" if standalone else "memory.tex.j2", **context)


def render_markdown(mm: MemoryModel, *, values: dict[str, int] | None = None) -> str:
    """Markdown with ``$$``-math: the same rows and tables as :func:`render_latex`."""
    return render_template("memory.md.j2", **_context(mm, markdown_escape, values, "aligned"))


def repr_latex(mm: MemoryModel) -> str:
    """The aligned rows between ``$$`` (for Jupyter's ``_repr_latex_``)."""
    block = render_template("formulas.tex.j2", environment="aligned", rows=formula_rows(mm))
    return "$$" + block.strip() + "$$"
