"""Search over discrete parallel configurations: the smallest setup that fits.

"How many GPUs, which tensor-parallel degree and which ZeRO stage does this run need?"
For every (ZeRO stage, TP, PP) the model shape allows, the smallest data-parallel degree
whose per-GPU peak fits is found by bisection (per-GPU memory never grows with ``N_d``,
tests/test_parallelism.py) and checked by substitution: it fits at ``N_d`` and not at
``N_d - 1``. The answer is the candidate with the fewest GPUs (then the smallest TP, PP
and ZeRO stage), with the table of every candidate tried.

Degrees are substituted into one built model per structure (ZeRO stage, pipelined or
not), so a search costs one SymPy build per structure and cheap exact evaluations.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from engine import fast, fast_cache
from engine.profiles import build
from engine.errors import InfeasibleError, InputError
from engine.scenario import Scenario
from engine.spec import ModelSpec

# Training keeps tensor parallelism inside one node (NVLink): 8 GPUs in DGX/HGX systems.
MAX_TRAINING_TENSOR_PARALLEL = 8


@dataclass(frozen=True)
class Candidate:
    tp: int
    pp: int
    dp: int
    zero: int
    per_gpu_bytes: int  # at this dp; the smallest per-GPU peak tried when it does not fit
    fits: bool
    bytes_at_fewer: int | None = None  # at dp - 1 (the substitution check), when dp > 1

    @property
    def num_gpus(self) -> int:
        return self.tp * self.pp * self.dp


@dataclass
class Plan:
    budget_bytes: int
    best: Candidate | None
    tried: list[Candidate] = field(default_factory=list)

    def to_dict(self) -> dict:
        def row(c: Candidate) -> dict:
            keys = ("tp", "pp", "dp", "zero", "per_gpu_bytes", "fits", "bytes_at_fewer")
            return {"num_gpus": c.num_gpus, **{k: getattr(c, k) for k in keys}}

        return {"budget_bytes": self.budget_bytes, "best": row(self.best) if self.best else None,
                "tried": [row(c) for c in self.tried]}


def _divisors(n: int, limit: int) -> list[int]:
    return [d for d in range(1, min(n, limit) + 1) if n % d == 0]


class _Evaluator:
    """One built model per (ZeRO stage, pipelined); degrees substituted per candidate."""

    def __init__(self, spec: ModelSpec, scenario: Scenario):
        self.spec, self.scenario, self.models = spec, scenario, {}

    def peak(self, tp: int, pp: int, dp: int, zero: int) -> int:
        key = (zero, pp > 1)
        if key not in self.models:
            self.models[key] = build(self.spec, replace(self.scenario, tp=tp, pp=pp, dp=dp, zero=zero))
        degrees = {"tensor_parallel": tp, "pipeline_parallel": pp, "data_parallel": dp}
        return self.models[key].evaluate(**degrees).total_bytes


def _smallest_dp(ev: _Evaluator, budget: int, tp: int, pp: int, zero: int, max_dp: int,
                 dp: int | None = None) -> Candidate:
    """Bisection for the smallest data-parallel degree that fits (ZeRO 0: dp does not matter);
    ``dp`` given: that degree only."""
    if dp is not None:
        at = ev.peak(tp, pp, dp, zero)
        fewer = ev.peak(tp, pp, dp - 1, zero) if dp > 1 and at <= budget else None
        return Candidate(tp, pp, dp, zero, at, at <= budget, fewer)
    top = max_dp if zero else 1
    at_top = ev.peak(tp, pp, top, zero)
    if at_top > budget:
        return Candidate(tp, pp, top, zero, at_top, False)
    lo, hi = 0, top  # peak(lo) > budget (or lo = 0), peak(hi) <= budget
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ev.peak(tp, pp, mid, zero) <= budget:
            hi = mid
        else:
            lo = mid
    fewer = ev.peak(tp, pp, hi - 1, zero) if hi > 1 else None
    return Candidate(tp, pp, hi, zero, ev.peak(tp, pp, hi, zero), True, fewer)


def plan(
    spec: ModelSpec,
    scenario: Scenario,
    budget_bytes: int,
    *,
    max_gpus: int = 4096,
    tp_choices: list[int] | None = None,
    pp_choices: list[int] | None = None,
    zero_stages: tuple[int, ...] | None = None,
    dp: int | None = None,
) -> Plan:
    """The configuration with the fewest GPUs whose per-GPU peak fits ``budget_bytes``.

    Unset choices are searched: TP over the divisors of the head count (up to 8 for
    training), PP over the divisors of the layer count, ZeRO stages 0-3 (training only).
    """
    if budget_bytes < 1 or max_gpus < 1:
        raise InputError(f"budget and GPU count must be positive, got {budget_bytes} and {max_gpus}")
    name = _plan_key(spec, scenario, [budget_bytes, max_gpus, tp_choices, pp_choices, zero_stages, dp])
    folder = fast_cache.cache_dir()
    stored = fast_cache.read_data(folder, name, _checked_plan) if folder is not None else None
    if stored is not None:
        return Plan(budget_bytes, stored.tried[stored.best], stored.tried)
    result = _search(spec, scenario, budget_bytes, max_gpus, tp_choices, pp_choices, zero_stages, dp)
    fast_cache.write_data(folder, name, {"best": result.tried.index(result.best),
                                         "tried": [_row(c) for c in result.tried]})
    return result


def _search(spec, scenario, budget_bytes, max_gpus, tp_choices, pp_choices, zero_stages, dp) -> Plan:
    """The search itself (SymPy: one built model per structure)."""
    from engine.terms import check_degrees

    training = scenario.mode == "training"
    tp_limit = MAX_TRAINING_TENSOR_PARALLEL if training else max_gpus
    tps = tp_choices or _divisors(spec.num_attention_heads, tp_limit)
    pps = pp_choices or _divisors(spec.num_hidden_layers, max_gpus)
    zeros = zero_stages if zero_stages is not None else ((0, 1, 2, 3) if training else (0,))
    ev, result = _Evaluator(spec, scenario), Plan(budget_bytes, None)
    for zero in zeros:
        for tp in tps:
            for pp in pps:
                if tp * pp > max_gpus:
                    continue
                try:
                    check_degrees(spec, replace(scenario, tp=tp, pp=pp))
                except InputError:
                    continue
                max_dp = max_gpus // (tp * pp) if training else 1
                result.tried.append(_smallest_dp(ev, budget_bytes, tp, pp, zero, max_dp, dp))
    fitting = [c for c in result.tried if c.fits]
    if not fitting:
        smallest = min((c.per_gpu_bytes for c in result.tried), default=None)
        need = f"; the best of {len(result.tried)} configurations needs {smallest:,} bytes per GPU" if smallest else ""
        raise InfeasibleError(f"no configuration of up to {max_gpus} GPUs fits {budget_bytes:,} bytes per GPU{need}")
    result.best = min(fitting, key=lambda c: (c.num_gpus, c.tp, c.pp, c.zero))
    return result


# --- the cache: a plan is a pure function of its inputs (every one in the key), stored as data ----
CANDIDATE_FIELDS = ("tp", "pp", "dp", "zero", "per_gpu_bytes", "fits", "bytes_at_fewer")


def _plan_key(spec: ModelSpec, scenario: Scenario, arguments: list) -> str:
    form = ["plan", fast.scenario_digest(scenario, ()), fast_cache.canonical(arguments)]
    return fast_cache.key(fast.spec_digest(spec), fast_cache.digest(form))


def _row(c: Candidate) -> list:
    return [getattr(c, f) for f in CANDIDATE_FIELDS]


@dataclass(frozen=True)
class _Stored:
    best: int
    tried: list[Candidate]


def _checked_plan(data: dict) -> _Stored:
    """A stored plan's candidates, every field checked (ValueError when anything is off)."""
    rows, best = data.get("tried"), data.get("best")
    if not isinstance(rows, list) or type(best) is not int or not 0 <= best < len(rows):
        raise ValueError("a malformed plan")
    tried = []
    for row in rows:
        if not isinstance(row, list) or len(row) != len(CANDIDATE_FIELDS) or type(row[5]) is not bool \
                or not all(type(v) is int for v in row[:5]) or not (row[6] is None or type(row[6]) is int):
            raise ValueError("a malformed candidate")
        tried.append(Candidate(*row))
    if not tried[best].fits:
        raise ValueError("a best candidate that does not fit")
    return _Stored(best, tried)


def smallest_num_gpus(spec: ModelSpec, scenario: Scenario, budget_bytes: int, *, fixed: dict, max_gpus: int = 4096):
    """``memsym solve num-gpus`` for training: :func:`plan` with the user's degrees fixed.

    ``fixed`` holds what the user pinned (``tp``, ``pp``, ``zero``, ``dp``); the rest is searched.
    Returns ``(Solution, Plan)``; the solution's certificate is the chosen configuration at
    ``N_d`` and at ``N_d - 1``.
    """
    from engine.solve import Solution

    result = plan(
        spec, scenario, budget_bytes, max_gpus=max_gpus,
        tp_choices=[fixed["tp"]] if "tp" in fixed else None,
        pp_choices=[fixed["pp"]] if "pp" in fixed else None,
        zero_stages=(fixed["zero"],) if "zero" in fixed else None, dp=fixed.get("dp"),
    )
    best = result.best
    chosen = replace(scenario, tp=best.tp, pp=best.pp, dp=best.dp, zero=best.zero)
    model = build(spec, chosen)
    evaluation = model.evaluate()
    inputs = {**model.inputs, "configuration": {"tp": best.tp, "pp": best.pp, "dp": best.dp, "zero": best.zero}}
    solution = Solution("num_gpus", best.num_gpus, budget_bytes, evaluation.total_bytes, best.bytes_at_fewer,
                        "search", evaluation, inputs, smallest=True)
    return solution, result


def solve_degree(target: str, spec: ModelSpec, scenario: Scenario, limits, fixed: dict):
    """``solve tp``: the smallest tensor-parallel degree; ``solve num-gpus`` in training: the
    fewest GPUs of a layout search keeping the ``fixed`` degrees (tp, pp, zero, dp given)."""
    if target == "tp":
        from engine.solve import solve_tensor_parallel

        return solve_tensor_parallel(spec, scenario, limits)
    if limits.num_gpus != 1:
        raise InputError("solve num-gpus: --num-gpus is what is solved; leave it out")
    return smallest_num_gpus(spec, scenario, limits.per_gpu_bytes, fixed=fixed)[0]
