"""The questions memsym answers, callable from Python with plain arguments (cli.py is a thin shell).

Each function takes a model (``model`` id or ``config`` path, or ``symbolic=True`` for the
generic decoder), the scenario knobs the caller sets (``Scenario`` field names; a knob
left out keeps its default, and the sizes a question solves for or collects by stay free
when left out), and returns a result whose ``to_dict()`` is the command's ``--json``;
engine/report.py turns it into text. Knobs given on purpose matter: ``solve seq-len``
refuses a ``seq_len``, ``plan`` keeps a given ``tp``/``pp``/``zero`` fixed.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.errors import InfeasibleError, InputError
from engine.question_inputs import (DEFAULTS, SIZES, expression_text, flag, json_number,  # noqa: F401 (offered here)
                                    question_model)
from engine.readings import (CrossoverAnswer, DiffAnswer, FormulaAnswer, SensitivityAnswer,  # noqa: F401 (offered here)
                             coefficient_rows, crossover, diff, formula, sensitivity, variable_name)
from engine.scenario import Scenario

SOLVED_KNOB = {"seq_len": "seq_len", "batch_size": "batch_size", "concurrency": "batch_size",
               "num_gpus": "num_gpus", "tp": "tp"}  # the knob that would pin each solved variable
PLAN_FIXED = ("tp", "pp", "zero")  # degrees a plan keeps when the caller gives them
LAYOUT_PROFILE = "megatron"  # plan, solve num-gpus/tp without --profile: parallel layouts' default profile


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
        raise InputError(f"solve {variable}: {flag(pinned_by)} pins the variable being solved; "
                         f"leave {flag(pinned_by)} out")
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
            raise InputError(f"Invalid value for {flag(name)}: must be a positive integer, got {value!r}")
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
