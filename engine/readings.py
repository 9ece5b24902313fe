"""Reading a model (engine/analysis.py) from Python with plain arguments: ``formula`` (the
total collected by powers of the free sizes), ``diff``, ``sensitivity`` and ``crossover``.
Each returns an answer whose ``to_dict()`` is the command's ``--json``; engine/questions.py
offers them beside the other questions (``engine.questions.formula`` is this ``formula``).
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.errors import InputError
from engine.question_inputs import DEFAULTS, SIZES, expression_text, flag, json_number, question_model


@dataclass(frozen=True)
class FormulaAnswer:
    model: str
    variables: list[str]
    form: object  # engine.analysis.CanonicalForm
    inputs: dict

    def to_dict(self) -> dict:
        text = expression_text
        return {"model": self.model, "variables": self.variables, "expression": text(self.form.expression),
                "latex": text(self.form.expression, True), "coefficients": coefficient_rows(self.form.rows),
                "peak": [{"branch": b, "coefficients": coefficient_rows(f.rows)} for b, f in self.form.peaks],
                "inputs": self.inputs}


def coefficient_rows(rows) -> list[dict]:
    return [{"monomial": expression_text(r.monomial), "coefficient": expression_text(r.coefficient),
             "meaning": r.meaning, "terms": list(r.terms)} for r in rows]


def formula(model: str | None = None, config: str | None = None, *, symbolic: bool = False,
            **knobs) -> FormulaAnswer:
    """``memsym formula``: the total collected by powers of the sizes left free (not given)."""
    from engine.analysis import canonical_form
    from formulas.symbols import symbol

    name, mm = question_model(model, config, symbolic, knobs, SIZES)
    variables = [v for v in SIZES if mm.facts.get(symbol(v)) is None]
    return FormulaAnswer(name, variables, canonical_form(mm, variables), mm.inputs)


def variable_name(text: str) -> str:
    """``seq-len`` -> ``seq_len``, for a declared symbol; else InputError naming --wrt."""
    from formulas.symbols import SYMBOLS

    name = text.strip().replace("-", "_")
    if name not in SYMBOLS:
        raise InputError(f"--wrt: unknown variable {text!r} (e.g. batch_size, seq_len, hidden_size)")
    return name


@dataclass(frozen=True)
class DiffAnswer:
    model: str
    variable: str
    derivative: object  # engine.analysis.Derivative
    point: dict | None  # batch_size and seq_len, None for the symbolic model

    def to_dict(self) -> dict:
        from engine.analysis import as_decimal

        d = self.derivative
        return {"model": self.model, "variable": self.variable, "derivative": expression_text(d.expression),
                "latex": expression_text(d.expression, True), "at": self.point,
                "value": json_number(d.value), "value_exact": None if d.value is None else str(d.value),
                "value_decimal": None if d.value is None else as_decimal(d.value, 12),
                "finite_difference": d.finite_difference,
                "branches": [expression_text(b) for b in d.branches]}


def diff(wrt: str, model: str | None = None, config: str | None = None, *, symbolic: bool = False,
         **knobs) -> DiffAnswer:
    """``memsym diff``: d total / d ``wrt``, exact at the point of batch_size and seq_len."""
    from engine.analysis import derivative

    variable = variable_name(wrt)
    point = {k: knobs.get(k, DEFAULTS[k]) for k in SIZES}
    knobs.update(batch_size=None, seq_len=None)  # symbols in the derivative, values at the point
    name, mm = question_model(model, config, symbolic, knobs)
    d = derivative(mm, variable, **({} if symbolic else point))
    return DiffAnswer(name, variable, d, None if symbolic else point)


@dataclass(frozen=True)
class SensitivityAnswer:
    model: str
    total: object
    rows: list  # engine.analysis.Elasticity
    inputs: dict

    def to_dict(self) -> dict:
        from engine.analysis import as_decimal

        return {"model": self.model, "total_bytes": json_number(self.total), "inputs": self.inputs,
                "sensitivity": [{"symbol": r.symbol, "value": json_number(r.value),
                                 "derivative": json_number(r.derivative), "elasticity": json_number(r.elasticity),
                                 "derivative_exact": str(r.derivative), "elasticity_decimal": as_decimal(r.elasticity)}
                                for r in self.rows]}


def sensitivity(model: str | None = None, config: str | None = None, **knobs) -> SensitivityAnswer:
    """``memsym sensitivity``: the elasticity of every symbol at one point."""
    from engine.analysis import sensitivity as run_sensitivity
    from engine.api import memory_model

    spec, mm = memory_model(model, config, **knobs)
    total, rows = run_sensitivity(mm)
    return SensitivityAnswer(spec.name, total, rows, mm.inputs)


@dataclass(frozen=True)
class CrossoverAnswer:
    model: str
    crossover: object  # engine.analysis.Crossover
    inputs: dict

    def to_dict(self) -> dict:
        c = self.crossover
        return {"model": self.model, "term_a": c.term_a, "term_b": c.term_b, "variable": c.variable,
                "value": c.value, "a_at_value": c.a_at_value, "b_at_value": c.b_at_value,
                "a_before": c.a_before, "b_before": c.b_before, "method": c.method,
                "closed_form": None if c.closed_form is None else expression_text(c.closed_form),
                "inputs": self.inputs}


def crossover(term_a: str, term_b: str, wrt: str, model: str | None = None, config: str | None = None, *,
              symbolic: bool = False, **knobs) -> CrossoverAnswer:
    """``memsym crossover``: the smallest ``wrt`` at which ``term_a`` reaches ``term_b``."""
    from engine.analysis import crossover as run_crossover

    variable = variable_name(wrt)
    if variable in SIZES and variable in knobs:
        raise InputError(f"crossover --wrt {wrt}: {flag(variable)} pins the variable; leave {flag(variable)} out")
    if variable in SIZES:
        knobs[variable] = None
    name, mm = question_model(model, config, symbolic, knobs, ("batch_size",) if symbolic else ())
    return CrossoverAnswer(name, run_crossover(mm, term_a, term_b, variable), mm.inputs)
