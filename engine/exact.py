"""Exact numeric evaluators of a MemoryModel: integer and Fraction arithmetic, no SymPy at run time.

:func:`program` (SymPy, run once per cache key) turns a model's pinned terms into a
*program*: plain JSON data, a list of shared subexpressions (``sympy.cse``) and one
expression per output, each node a small list (``["+", a, b]``, ``["max", a, b]``,
``["q", 17, 4]`` for the rational 17/4, ``["x", 0]`` for the first argument). Only the
operations SymPy can leave in a byte count are accepted (+, *, integer powers, Max, Min,
ceiling, floor, Mod, Abs, Piecewise and its relations); anything else (a float, a free
symbol that is not an argument) raises :class:`NotExact` and the caller keeps the symbolic path.

:func:`evaluator` (no SymPy) checks a program node by node and prints it as the source of
one Python function with fixed identifiers (``x0``, ``t3``, ``k1``) and integer literals
printed here, then compiles it. A program read back from a cache file is data: a node
outside the grammar is a :class:`CorruptProgram`, never code, so no string from a config
file or a cache file reaches the compiler. Every output is rounded up to a whole byte
(``math.ceil`` of an exact int or Fraction), as ``engine.model.to_bytes`` rounds.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Callable

NARY = {"+": " + ", "*": " * "}
CALLS = {"max": "max", "min": "min", "ceil": "ceil", "floor": "floor", "abs": "abs"}
RELATIONS = {"<": "<", "<=": "<=", ">": ">", ">=": ">=", "==": "==", "!=": "!="}
MAX_NODES = 200_000  # a program larger than any model's terms is refused as corrupt


class NotExact(ValueError):
    """The expression holds something the exact evaluator does not compute."""


class CorruptProgram(ValueError):
    """A program (read from a cache file) outside the grammar of :func:`program`."""


# --- SymPy -> program (at a cache miss) -------------------------------------------------------
def program(outputs: list, arguments: tuple) -> dict:
    """The program computing ``outputs`` (pinned SymPy expressions) of ``arguments`` (symbols)."""
    import sympy

    if any(not isinstance(e, sympy.Basic) for e in outputs):
        raise NotExact("an output is not a SymPy expression")
    temps, reduced = sympy.cse(outputs, symbols=sympy.numbered_symbols("_exact_t"), optimizations=None)
    names = {sym: ["x", i] for i, sym in enumerate(arguments)}
    encoded = []
    for i, (sym, expr) in enumerate(temps):
        encoded.append(_node(expr, names))
        names[sym] = ["t", i]
    return {"arguments": len(arguments), "temps": encoded, "outputs": [_node(e, names) for e in reduced]}


def _node(expr, names: dict):
    import sympy

    if expr in names:
        return names[expr]
    if expr is sympy.true or expr is sympy.false:
        return [str(bool(expr)).lower()]
    if expr.is_Integer:
        return int(expr)
    if expr.is_Rational:
        return ["q", int(expr.p), int(expr.q)]
    if expr.is_Symbol:
        raise NotExact(f"free symbol {expr.name}")
    op = _operator(expr)
    if op == "pow":
        base, exponent = expr.args
        if not exponent.is_Integer:
            raise NotExact("a non-integer power")
        return ["pow", _node(base, names), int(exponent)]
    if op == "pw":
        flat = []
        for value, condition in expr.args:
            flat += [_node(condition, names), _node(value, names)]
        return ["pw", *flat]
    return [op, *(_node(a, names) for a in expr.args)]


def _operator(expr) -> str:
    import sympy

    table = {sympy.Add: "+", sympy.Mul: "*", sympy.Pow: "pow", sympy.Max: "max", sympy.Min: "min",
             sympy.ceiling: "ceil", sympy.floor: "floor", sympy.Mod: "mod", sympy.Abs: "abs",
             sympy.Piecewise: "pw", sympy.StrictLessThan: "<", sympy.LessThan: "<=",
             sympy.StrictGreaterThan: ">", sympy.GreaterThan: ">=", sympy.Equality: "==",
             sympy.Unequality: "!=", sympy.And: "and", sympy.Or: "or", sympy.Not: "not"}
    op = table.get(type(expr))
    if op is None:
        raise NotExact(f"{type(expr).__name__} is not computed exactly")
    return op


# --- program -> Python function (no SymPy) -----------------------------------------------------
class _Printer:
    """Python source of one program; rational constants become globals ``k0, k1, ...``."""

    def __init__(self, arguments: int):
        self.arguments, self.temps, self.constants, self.nodes = arguments, 0, [], 0

    def expr(self, node) -> str:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise CorruptProgram("too many nodes")
        if isinstance(node, bool) or node is None:
            raise CorruptProgram(f"a bare {node!r}")
        if isinstance(node, int):
            return f"({int(node)!r})" if node < 0 else repr(int(node))
        if not isinstance(node, list) or not node or not isinstance(node[0], str):
            raise CorruptProgram("a node that is neither an integer nor a list naming an operation")
        op, args = node[0], node[1:]
        if op in ("x", "t"):
            return self._name(op, args)
        if op == "q":
            return self._rational(args)
        if op in ("true", "false") and not args:
            return op.capitalize()
        return self._operation(op, args)

    def _name(self, op: str, args: list) -> str:
        limit = self.arguments if op == "x" else self.temps
        if len(args) != 1 or isinstance(args[0], bool) or not isinstance(args[0], int) or not 0 <= args[0] < limit:
            raise CorruptProgram(f"a reference {op}{args!r} out of range")
        return f"{op}{int(args[0])}"

    def _rational(self, args: list) -> str:
        if len(args) != 2 or any(isinstance(a, bool) or not isinstance(a, int) for a in args) or args[1] < 1:
            raise CorruptProgram("a rational that is not two integers over a positive denominator")
        self.constants.append(Fraction(int(args[0]), int(args[1])))
        return f"k{len(self.constants) - 1}"

    def _operation(self, op: str, args: list) -> str:
        parts = [self.expr(a) for a in args] if op not in ("pow", "pw") else None
        if op in NARY and len(args) >= 2:
            return "(" + NARY[op].join(parts) + ")"
        if op in ("max", "min") and len(args) >= 2 or op in ("ceil", "floor", "abs") and len(args) == 1:
            return f"{CALLS[op]}({', '.join(parts)})"
        if op == "mod" and len(args) == 2:
            return f"({parts[0]} % {parts[1]})"
        if op in RELATIONS and len(args) == 2:
            return f"({parts[0]} {RELATIONS[op]} {parts[1]})"
        if op in ("and", "or") and len(args) >= 2:
            return "(" + f" {op} ".join(parts) + ")"
        if op == "not" and len(args) == 1:
            return f"(not {parts[0]})"
        if op == "pow" and len(args) == 2 and type(args[1]) is int and abs(args[1]) <= 64:
            base = self.expr(args[0])
            return f"({base} ** {args[1]})" if args[1] >= 0 else f"(ONE / {base} ** {-args[1]})"
        if op == "pw" and args and len(args) % 2 == 0:
            out = "undefined()"
            for i in range(len(args) - 2, -1, -2):
                out = f"({self.expr(args[i + 1])} if {self.expr(args[i])} else {out})"
            return out
        raise CorruptProgram(f"operation {op[:20]!r} with {len(args)} arguments is not in the grammar")


def _undefined():
    raise ValueError("no branch of a Piecewise holds")


def source(data: object) -> tuple[str, list[Fraction]]:
    """The Python source of ``evaluator(x0, ...)`` for ``data`` and its rational constants."""
    if not isinstance(data, dict) or not {"arguments", "temps", "outputs"} <= set(data):
        raise CorruptProgram("not a program")
    arguments, temps, outputs = data["arguments"], data["temps"], data["outputs"]
    if type(arguments) is not int or not 0 <= arguments <= 16 or not isinstance(temps, list) \
            or not isinstance(outputs, list):
        raise CorruptProgram("a program's header is malformed")
    printer = _Printer(arguments)
    lines = [f"def evaluator({', '.join(f'x{i}' for i in range(arguments))}):"]
    for node in temps:
        lines.append(f"    t{printer.temps} = {printer.expr(node)}")
        printer.temps += 1
    rounded = [printer.expr(node) if type(node) is int else f"ceil({printer.expr(node)})" for node in outputs]
    lines.append("    return (" + "".join(f"{code}, " for code in rounded) + ")")
    return "\n".join(lines) + "\n", printer.constants


def evaluator(data: object) -> Callable[..., tuple[int, ...]]:
    """The compiled function of a program: positional arguments in, whole bytes of each output out."""
    try:
        text, constants = source(data)
    except RecursionError:
        raise CorruptProgram("nested too deeply") from None
    namespace: dict[str, object] = {"__builtins__": {}, "ceil": math.ceil, "floor": math.floor, "max": max,
                                    "min": min, "abs": abs, "ONE": Fraction(1), "undefined": _undefined}
    namespace.update({f"k{i}": c for i, c in enumerate(constants)})
    # ``text`` holds only the identifiers and integer literals printed above (see the module doc)
    exec(compile(text, "<memsym exact evaluator>", "exec"), namespace)  # noqa: S102
    return namespace["evaluator"]
