"""The questions memsym answers, callable from Python with plain arguments (cli.py is a thin shell).

Each function takes a model (``model`` id or ``config`` path, or ``symbolic=True`` for the
generic decoder), the scenario knobs the caller sets (``Scenario`` field names; a knob
left out keeps its default, and the sizes a question solves for or collects by stay free
when left out), and returns a result whose ``to_dict()`` is the command's ``--json``;
engine/report.py turns it into text. Knobs given on purpose matter: ``solve seq-len``
refuses a ``seq_len``, ``plan`` keeps a given ``tp``/``pp``/``zero`` fixed.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from engine.errors import InfeasibleError, InputError
from engine.scenario import Scenario

SOLVED_KNOB = {"seq_len": "seq_len", "batch_size": "batch_size", "concurrency": "batch_size",
               "num_gpus": "num_gpus", "tp": "tp"}  # the knob that would pin each solved variable
SIZES = ("batch_size", "seq_len")
DEFAULTS = {f.name: f.default for f in fields(Scenario)}
PLAN_FIXED = ("tp", "pp", "zero")  # degrees a plan keeps when the caller gives them
LAYOUT_PROFILE = "megatron"  # plan, solve num-gpus/tp without --profile: parallel layouts' default profile


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


def _flag(name: str) -> str:
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


def estimate(model: str | None = None, config: str | None = None, checkpoint: str | None = None, **knobs):
    """``memsym estimate``: an :class:`engine.api.Estimate`, or a CheckpointEstimate for ``checkpoint``."""
    if checkpoint is not None:
        if model is not None or config is not None:
            raise InputError("--checkpoint DIR reads DIR/config.json: give it without --model or --config")
        from engine.api import estimate_checkpoint

        return estimate_checkpoint(checkpoint, **knobs)
    from engine import api

    if config is not None and api.is_gguf(config):
        return api.estimate_gguf(config, **knobs)
    if model is not None:
        return api.estimate_model(model, **knobs)  # a Hub repo also gets its stored bytes
    return api.estimate(model, config, **knobs)


def model_table() -> list[dict]:
    """``memsym models``: one row per registry entry, with its parameter counts."""
    from engine.architecture import count_parameters
    from engine.families import spec_from_config
    from engine.registry import entries

    rows = []
    for entry in entries():
        spec = spec_from_config(entry.config, entry.id)
        counts = count_parameters(spec)
        rows.append({"id": entry.id, "hf_repo": entry.hf_repo, "architecture": spec.architecture,
                     "parameters": counts["parameters"], "active_parameters": counts["active_parameters"],
                     "source": entry.source})
    return rows


def gpu_table() -> list[dict]:
    """``memsym gpus``: the catalog as plain rows."""
    from engine.gpus import catalog

    return [vars(g) | {"aliases": list(g.aliases)} for g in catalog().values()]


# --- solve ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SolveAnswer:
    model: str
    solution: object  # engine.solve.Solution
    limits: object  # engine.gpus.Budget
    layout: object = None  # engine.layout.Layout: how --num-gpus was read (None: not given)

    def to_dict(self) -> dict:
        from engine.api import context_warnings

        s = self.solution
        out = {"model": self.model, "profile": s.inputs.get("profile"), **s.to_dict(),
               "warnings": context_warnings(s.inputs, (s.variable, s.value))}
        if self.layout is not None:
            out["layout"] = self.layout.to_dict(s.value if s.variable == "num_gpus" else self.limits.num_gpus)
        return out


@dataclass(frozen=True)
class ClosedFormAnswer:
    """``solve --symbolic``: the largest value as a formula in the budget, and the branches it comes from."""

    variable: str
    solved: str  # the symbol solved for (batch_size for concurrency)
    closed_form: object
    branches: list  # (C2, C1, C0) of each branch
    inputs: dict

    def to_dict(self) -> dict:
        text = expression_text
        return {"variable": self.variable, "closed_form": text(self.closed_form),
                "latex": text(self.closed_form, True),
                "branches": [{"C0": text(c), "C1": text(b), "C2": text(a)} for a, b, c in self.branches],
                "inputs": {**self.inputs, "budget_bytes": "budget_bytes"}}


def solve(variable: str, model: str | None = None, config: str | None = None, *, budget=None, gpu=None,
          num_gpus: int | None = None, utilization=None, symbolic: bool = False,
          serving_activations: str | None = None, **knobs):
    """``memsym solve VARIABLE``: the largest seq-len, batch-size or concurrency that fits, or the
    fewest GPUs (num-gpus) or smallest tensor-parallel degree (tp); see engine.solve. In
    inference mode the three serving variables use the vllm profile unless ``profile`` is
    given (engine.serving_solve); ``profile="megatron"`` is the bare-tensor answer."""
    target = variable.replace("-", "_")
    if target not in SOLVED_KNOB:
        raise InputError(f"cannot solve for {variable!r}; choose from {', '.join(SOLVED_KNOB)}")
    pinned_by = SOLVED_KNOB[target]
    if pinned_by in knobs or (pinned_by == "num_gpus" and num_gpus is not None):
        raise InputError(f"solve {variable}: {_flag(pinned_by)} pins the variable being solved; "
                         f"leave {_flag(pinned_by)} out")
    if serving_activations is not None and target != "concurrency":
        raise InputError("--serving-activations applies to 'solve concurrency' only")
    activations = serving_activations or "none"
    if target in ("seq_len", "batch_size", "concurrency"):
        knobs[pinned_by] = None
    from engine.profiles.vllm_settings import uses_vllm

    if uses_vllm(target, knobs, symbolic):  # serving questions default to --profile vllm
        from engine.serving_solve import solve_serving

        return solve_serving(target, model, config, budget=budget, gpu=gpu, num_gpus=num_gpus,
                             utilization=utilization, serving_activations=serving_activations, **knobs)
    if symbolic:
        return solve_symbolic(variable, target, knobs, activations)
    if model is None and config is None:
        raise InputError("give --model ID or --config PATH (or --symbolic for the formula alone)")
    from engine.gpus import make_budget

    limits = make_budget(budget, gpu, 1 if num_gpus is None else num_gpus, utilization)
    if target in ("tp", "num_gpus"):
        knobs = {"profile": LAYOUT_PROFILE, **knobs}  # every candidate layout under one profile
    if target == "tp" or (target == "num_gpus" and knobs.get("mode") == "training"):
        from engine.registry import load_spec
        from engine.search import solve_degree
        spec = load_spec(model, config)
        fixed = {k: knobs[k] for k in (*PLAN_FIXED, "dp") if k in knobs}  # --dp given: kept, as tp and pp are
        return SolveAnswer(spec.name, solve_degree(target, spec, Scenario(**knobs), limits, fixed), limits)
    from engine import fast_solve

    cached = fast_solve.solve(model, config, target, knobs, limits, activations,
                              lambda: _symbolic_solution(model, config, target, knobs, limits, activations))
    if cached is not None:  # one GPU: the cached exact evaluator held this model (engine/fast_solve.py)
        return SolveAnswer(cached[0], cached[1], limits)
    return _solve_numeric(model, config, target, knobs, limits, activations)


def _solve_numeric(model, config, target: str, knobs: dict, limits, activations: str):
    """The SymPy path of solve seq-len/batch-size/concurrency/num-gpus over a model."""
    from engine.solve import solve_budget

    if target == "num_gpus":  # inference: the layout --num-gpus N reads (engine/layout.py), not a silent even split
        from engine.layout import smallest_layout
        from engine.registry import load_spec

        name, mm = question_model(model, config, False, knobs)
        solution, layout = smallest_layout(load_spec(model, config), knobs, limits,
                                           lambda: solve_budget(mm, target, limits, activations=activations))
        return SolveAnswer(name, solution, limits, layout)

    layout = None
    if target != "num_gpus" and limits.num_gpus > 1:  # a layout, computed as the same degrees would be
        from engine.layout import read_num_gpus
        from engine.registry import load_spec

        layout = read_num_gpus(load_spec(model, config), knobs, limits.num_gpus)
        knobs = {**knobs, **layout.knobs}
    name, mm = question_model(model, config, False, knobs)
    split = limits if layout is None or layout.even_split else limits.with_num_gpus(1)
    try:
        answer = solve_budget(mm, target, split, activations=activations)
    except InfeasibleError as exc:
        from engine.layout import budget_hints

        raise InfeasibleError(f"{exc}{budget_hints(model, config, knobs, split, target)}") from None
    if layout is None and limits.num_gpus == 1:
        from engine import fast_solve

        fast_solve.store_form(model, config, target, knobs, activations, mm)
    if split is not limits:
        from dataclasses import replace

        answer = replace(answer, inputs={**answer.inputs, "budget": limits.as_inputs()})
    return SolveAnswer(name, answer, limits, layout)


def _symbolic_solution(model, config, target: str, knobs: dict, limits, activations: str):
    """The SymPy path's Solution (what a cached one rebuilds for its closed form)."""
    from engine.solve import solve_budget

    return solve_budget(question_model(model, config, False, knobs)[1], target, limits, activations=activations)


def solve_symbolic(variable: str, target: str, knobs: dict, activations: str = "none") -> ClosedFormAnswer:
    """The closed form of a largest size for the generic dense decoder (every shape a symbol)."""
    from engine.solve import branch_quadratics, closed_form, serving_model
    from formulas.symbols import symbol

    if target not in ("seq_len", "batch_size", "concurrency"):
        raise InputError(f"solve {variable} --symbolic: a GPU count has no closed form; give --model")
    _, mm = question_model(None, None, True, knobs, SIZES)
    if target == "concurrency":
        mm = serving_model(mm, activations)
    solved = "batch_size" if target == "concurrency" else target
    expr = mm.pinned(mm.total)
    form = closed_form(expr, solved)
    if form is None:
        raise InputError(f"no closed form for {variable} here (sliding windows and paged blocks need a model)")
    return ClosedFormAnswer(target, solved, form, branch_quadratics(expr, symbol(solved)), mm.inputs)


# --- plan ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PlanAnswer:
    model: str
    inputs: dict
    plan: object  # engine.search.Plan
    budget_bytes: int

    def to_dict(self) -> dict:
        return {"model": self.model, "inputs": self.inputs, **self.plan.to_dict()}


def plan(model: str | None = None, config: str | None = None, *, budget=None, gpu=None, utilization=None,
         max_gpus: int = 4096, num_gpus: int | None = None, **knobs) -> PlanAnswer:
    """``memsym plan``: the fewest GPUs over TP/PP degrees and ZeRO stages (engine.search.plan);
    ``tp``, ``pp`` and ``zero`` given in ``knobs`` stay fixed."""
    from engine.gpus import make_budget
    from engine.registry import load_spec
    from engine.search import plan as run_plan

    if num_gpus is not None:
        raise InputError("plan: the GPU count is what is searched; leave --num-gpus out (see --max-gpus)")
    scenario = Scenario(**{"profile": LAYOUT_PROFILE, **knobs})  # every candidate layout under one profile
    limits = make_budget(budget, gpu, 1, utilization)
    spec = load_spec(model, config)
    fixed = {k: knobs[k] for k in PLAN_FIXED if k in knobs}
    result = run_plan(spec, scenario, limits.per_gpu_bytes, max_gpus=max_gpus,
                      tp_choices=[fixed["tp"]] if "tp" in fixed else None,
                      pp_choices=[fixed["pp"]] if "pp" in fixed else None,
                      zero_stages=(fixed["zero"],) if "zero" in fixed else None)
    inputs = scenario.as_inputs() | ({"gpu_memory_estimate": limits.estimate} if limits.estimate else {})
    return PlanAnswer(spec.name, inputs, result, limits.per_gpu_bytes)


# --- emit: the models that latex and codegen write out ------------------------------------------
def document_model(model: str | None = None, config: str | None = None, *, symbolic: bool = False,
                   with_values: bool = False, free=(), **knobs):
    """``(MemoryModel, values)`` for ``memsym latex``: sizes free; ``values`` the point to show (or None)."""
    if symbolic == (model is not None or config is not None):
        raise InputError("give one of --model ID, --config PATH or --symbolic")
    if symbolic and with_values:
        raise InputError("--values needs a model's values: give --model or --config instead of --symbolic")
    values = {name: knobs.pop(name, DEFAULTS[name]) for name in SIZES}
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"Invalid value for {_flag(name)}: must be a positive integer, got {value!r}")
    knobs.update(batch_size=None, seq_len=None)
    if symbolic:
        from engine.analysis import symbolic as symbolic_model

        mm = symbolic_model(**knobs)
    else:
        from engine.api import memory_model

        mm = memory_model(model, config, **knobs)[1]
    return mm.with_free(*free), values if with_values else None


def codegen_model(model: str | None = None, config: str | None = None, *, free=(), **knobs):
    """The MemoryModel ``memsym codegen`` writes: sizes free unless given, ``free`` knobs symbols."""
    if model is None and config is None:
        raise InputError("give --model ID or --config PATH")
    return question_model(model, config, False, knobs, SIZES)[1].with_free(*free)


# --- reading a model: formula, diff, sensitivity, crossover (engine/analysis.py) ----------------
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
        raise InputError(f"crossover --wrt {wrt}: {_flag(variable)} pins the variable; leave {_flag(variable)} out")
    if variable in SIZES:
        knobs[variable] = None
    name, mm = question_model(model, config, symbolic, knobs, ("batch_size",) if symbolic else ())
    return CrossoverAnswer(name, run_crossover(mm, term_a, term_b, variable), mm.inputs)
