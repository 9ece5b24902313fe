"""How every question (engine/questions.py, engine/readings.py) reads its inputs and writes its
numbers: the model a question is asked of, the sizes it may leave free, and exact numbers
and expressions as JSON and text.
"""

from __future__ import annotations

from dataclasses import fields

from engine.errors import InputError
from engine.scenario import Scenario

SIZES = ("batch_size", "seq_len")
DEFAULTS = {f.name: f.default for f in fields(Scenario)}


def expression_text(expr, latex: bool = False) -> str:
    """SymPy's plain string of ``expr``, or LaTeX with the project's short symbol names."""
    import sympy

    from formulas.symbols import latex_names

    return sympy.latex(expr, symbol_names=latex_names()) if latex else sympy.sstr(expr)


def json_number(value):
    """An exact SymPy/Fraction number for JSON: an int when whole (bytes), else a float; None stays None."""
    if value is None:
        return None
    import sympy

    value = sympy.Rational(value) if not isinstance(value, sympy.Basic) else value
    if value.is_Integer:
        return int(value)
    return float(value)


def flag(name: str) -> str:
    """``seq_len`` -> ``--seq-len``."""
    return "--" + name.replace("_", "-")


def question_model(model: str | None, config: str | None, symbolic: bool, knobs: dict, free=()):
    """``(name, MemoryModel)``; the ``free`` knobs stay symbols unless ``knobs`` gives them."""
    knobs = {**{name: None for name in free}, **knobs}
    if symbolic:
        if model is not None or config is not None:
            raise InputError("--symbolic is model-free: give it without --model or --config")
        from engine.analysis import symbolic as symbolic_model

        return "symbolic", symbolic_model(keep_reserve_free="reserve_bytes" not in knobs, **knobs)
    from engine.api import memory_model

    spec, mm = memory_model(model, config, **knobs)
    return spec.name, mm
