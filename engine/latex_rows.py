"""Right-hand sides of the aligned LaTeX block: formulas as rows, long ones wrapped, and the
part that several rows share written once.

How wide a row may be is a :class:`Wrap`. The fragment a user pastes into a paper
(``memsym latex`` without ``--standalone``, Markdown, Jupyter) wraps at :data:`LINE_WIDTH`
characters of LaTeX source; the standalone page (6.5 in of text) wraps at about
:data:`PAGE_WIDTH` printed characters (:func:`visible_width`), so its rows use the width of
the page and its formulas take fewer lines.

:func:`shared_part` finds the bytes every moment of a ``Max`` holds (the transformers
profile's prefill moments all hold the layer input, the residual, the rotary tables and the
position ids: formulas/frameworks/transformers.py ``prefill_base``), so that each moment can
be written as that shared part plus its own terms. It is exact algebra on expanded
polynomials (no ``simplify``): the shared part plus each moment's own part equals the moment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import sympy

from formulas import symbols as S

LINE_WIDTH = 80  # characters of LaTeX source in one row of the fragment before a long sum wraps
PAGE_WIDTH = 98  # printed characters (visible_width) in one row of the standalone page, its label included


@dataclass(frozen=True)
class Wrap:
    """Where a long row wraps: ``limit`` characters of LaTeX source, or (``visible``) about
    ``limit`` printed characters."""

    limit: int = LINE_WIDTH
    visible: bool = False

    def fits(self, *parts: str, frame: str = "") -> bool:
        """Whether ``parts`` fit one row side by side: the fragment counts their source
        characters (as it always has), the page what prints, with ``frame`` (the row's
        ``= `` and delimiters) and a space between parts."""
        if self.visible:
            return visible_width(frame + " ".join(parts)) <= self.limit
        return sum(map(len, parts)) <= self.limit

    def beside(self, labels: list[str]) -> "Wrap":
        """The room a right-hand side has beside the widest of ``labels`` (the page's rows
        hold both; the fragment's limit counts the right-hand side alone, as it always has)."""
        if not self.visible or not labels:
            return self
        return replace(self, limit=self.limit - max(visible_width(label) for label in labels))


FRAGMENT = Wrap()
PAGE = Wrap(PAGE_WIDTH, visible=True)

_ROMAN = re.compile(r"\\mathrm\{([^{}]*)\}")
_INVISIBLE = re.compile(r"\\(left|right|quad)\b|\s")
_NAMED = re.compile(r"\\(max|min)\b")
_CONTROL = re.compile(r"\\[A-Za-z]+")
_STACKED = re.compile(r"\^\{([^{}]*)\}_\{([^{}]*)\}")  # ``M^{shared}_{activations}``: one above the other
_SCRIPT = re.compile(r"[_^]\{([^{}]*)\}")


def visible_width(tex: str) -> int:
    """About how many characters ``tex`` prints as in math: control words one character
    (``\\max`` three), sub- and superscripts three quarters (stacked ones the longer), spacing and
    delimiter sizing none, a binary operator three (with its spaces)."""
    text = _ROMAN.sub(r"\1", _INVISIBLE.sub("", tex.replace("{,}", ",")))
    text = _CONTROL.sub("x", _NAMED.sub("xxx", text))
    text = _STACKED.sub(lambda m: "_{" + max(m.groups(), key=len) + "}", text)
    scripts = sum(len(m) for m in _SCRIPT.findall(text))
    text = _SCRIPT.sub("", text).replace("{", "").replace("}", "")
    return len(text) + 2 * sum(text.count(op) for op in "+-=") + (3 * scripts + 3) // 4


# --- numbers and expressions -------------------------------------------------------------------
_LONG_NUMBER = re.compile(r"(?<![\\\d.])\d{5,}(?![\d.])")


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


# --- rows ------------------------------------------------------------------------------------
def relation_rows(expr: sympy.Expr, names: dict[sympy.Symbol, str] | None = None,
                  wrap: Wrap = FRAGMENT) -> list[str]:
    """``= expr`` as one row; a long sum or max (or a factor times one) over several rows."""
    text = latex_expr(expr, names)
    if wrap.fits(text, frame="= "):
        return ["= " + text]
    factor, inner = sympy.Integer(1), expr
    if expr.is_Mul:
        long_args = [a for a in expr.args if a.is_Add or isinstance(a, (sympy.Max, sympy.Min))]
        if len(long_args) != 1:
            return ["= " + text]
        factor, inner = expr / long_args[0], long_args[0]
    prefix = "" if factor == 1 else latex_expr(factor, names) + " "
    if inner.is_Add:
        return pack_rows(addends(inner, names), prefix + r"\left(" if prefix else "",
                         r" \right)" if prefix else "", wrap)
    if isinstance(inner, (sympy.Max, sympy.Min)):
        printed = [latex_expr(a, names) for a in inner.args]
        name = r"\max" if isinstance(inner, sympy.Max) else r"\min"
        return pack_rows([p + "," for p in printed[:-1]] + printed[-1:], prefix + name + r"\left(", r"\right)", wrap)
    return ["= " + text]


def addends(expr: sympy.Expr, names: dict[sympy.Symbol, str] | None = None, leading: bool = False) -> list[str]:
    """The addends of a sum as printed pieces: the first bare (``leading``: signed as well,
    for a sum that continues one), the others ``+ x`` or ``- x``."""
    printed = [latex_expr(t, names) for t in (expr.as_ordered_terms() if expr.is_Add else [expr])]
    signed = [p if p.startswith("-") else "+ " + p for p in printed]
    return signed if leading else printed[:1] + signed[1:]


def pack_rows(pieces: list[str], opening: str = "", closing: str = "", wrap: Wrap = FRAGMENT) -> list[str]:
    """Right-hand sides ``= ...`` with ``pieces`` packed into rows of about ``wrap``'s width.

    ``opening``/``closing`` (``\\max\\left(`` and ``\\right)``) enclose the whole; a row
    that breaks inside them closes with ``\\right.`` and the next opens with ``\\left.``,
    so every row is balanced TeX.
    """
    chunks, current = [], ""
    for piece in pieces:
        if current and not wrap.fits(current, piece, frame="= " + opening + closing):
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


def sum_rows(labels: list[str], wrap: Wrap = FRAGMENT) -> list[str]:
    return pack_rows(labels[:1] + ["+ " + label for label in labels[1:]], wrap=wrap)


def max_rows(labels: list[str], wrap: Wrap = FRAGMENT) -> list[str]:
    return pack_rows([label + "," for label in labels[:-1]] + labels[-1:], r"\max\left(", r"\right)", wrap)


# --- the part several rows share ----------------------------------------------------------------
FEWEST_SHARING = 3  # a shared part is written once only where at least this many rows hold it


def _monomials(expr: sympy.Expr) -> dict[sympy.Expr, sympy.Expr]:
    """The expanded polynomial as ``{monomial: coefficient}``."""
    out: dict[sympy.Expr, sympy.Expr] = {}
    for term in sympy.Add.make_args(sympy.expand(expr)):
        coefficient, monomial = term.as_coeff_Mul()
        out[monomial] = out.get(monomial, 0) + coefficient
    return out


def _common(polys: list[dict]) -> dict:
    """The monomials every polynomial holds with a positive coefficient, at the smallest one."""
    keys = set.intersection(*(set(p) for p in polys))
    least = {k: min(p[k] for p in polys) for k in keys}
    return {k: c for k, c in least.items() if c > 0}


def shared_part(exprs: dict[str, sympy.Expr]) -> tuple[list[str], sympy.Expr]:
    """The names of the expressions that share a part, and that part (0 and ``[]`` if none).

    The part is the positive monomials every one of them holds, each at its smallest
    coefficient. Starting from all of ``exprs``, an expression whose removal lets the others
    share more monomials is left out (the prefill's logits, which hold none of a layer's
    tensors), while more than half of them and at least :data:`FEWEST_SHARING` remain. A part
    of fewer than two monomials is not worth a row: none is returned.
    """
    if len(exprs) < FEWEST_SHARING:
        return [], sympy.Integer(0)
    polys = {name: _monomials(expr) for name, expr in exprs.items()}
    group = list(polys)
    common = _common(list(polys.values()))
    while len(group) - 1 >= max(FEWEST_SHARING, len(exprs) // 2 + 1):
        candidates = {n: _common([polys[m] for m in group if m != n]) for n in group}
        leave_out = max(group, key=lambda n: len(candidates[n]))
        if len(candidates[leave_out]) <= len(common):
            break
        group.remove(leave_out)
        common = candidates[leave_out]
    if len(common) < 2:
        return [], sympy.Integer(0)
    return group, sympy.Add(*(c * m for m, c in common.items()))


def own_part(expr: sympy.Expr, shared: sympy.Expr) -> sympy.Expr:
    """What ``expr`` holds beyond ``shared`` (expanded, so the monomials cancel exactly)."""
    return sympy.expand(expr) - shared
