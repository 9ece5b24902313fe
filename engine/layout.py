"""``--num-gpus N`` as a named layout (tp x pp x dp), computed as the same degrees would be.

A GPU count alone does not say how a model is split; memsym reads it as the layout the
frameworks use for that count and names the reading, so ``--num-gpus 8`` never differs
silently from the same layout given as degrees:

- inference: one model replica over N GPUs by tensor parallelism, as vLLM's
  ``--tensor-parallel-size N`` (``vllm/config/parallel.py``, ``ParallelConfig``); with
  ``--tp``/``--pp`` given, N must be ``tp x pp``. When no tensor-parallel degree N fits the
  heads, the even split of the seed article (``(N x M - weights) / KV``, every term / N;
  :func:`engine.solve.sharded`) is used and said so;
- training: N = ``tp x pp x dp``; the remaining factor is data parallelism, so
  ``--batch-size`` stays the micro-batch of one GPU (Megatron-LM's ``--micro-batch-size``),
  never a global batch divided by N. ZeRO shards only what ``--zero`` says.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from engine.errors import InfeasibleError, InputError
from engine.scenario import Scenario
from engine.terms import check_degrees


@dataclass(frozen=True)
class Layout:
    """How ``--num-gpus`` was read: the knobs it sets, whether the even split is used, and why."""

    knobs: dict
    even_split: bool
    note: str | None
    title: str | None = None  # the reading in a few words, for a plot's title

    def to_dict(self, num_gpus: int) -> dict:
        return {"num_gpus": num_gpus, "even_split": self.even_split, **self.knobs, "read_as": self.note}


def read_num_gpus(spec, knobs: dict, num_gpus: int) -> Layout:
    """The layout ``--num-gpus num_gpus`` means for ``spec`` under ``knobs`` (Scenario fields)."""
    if num_gpus == 1:
        return Layout({}, False, None)
    tp, pp = knobs.get("tp", 1), knobs.get("pp", 1)
    if knobs.get("mode") == "training":
        return _training(knobs, num_gpus, tp, pp)
    if "tp" in knobs or "pp" in knobs:
        if tp * pp != num_gpus:
            raise InputError(f"--num-gpus {num_gpus} is the layout's GPU count, but --tp {tp} x --pp {pp} = "
                             f"{tp * pp}; give --num-gpus {tp * pp} or leave it out")
        reading = f"--num-gpus {num_gpus} = --tp {tp} x --pp {pp}"
        return Layout({}, False, reading, reading)
    from engine import profiles

    try:
        name = knobs.get("profile") or profiles.default_for(replace(Scenario(**knobs), tp=num_gpus))
        if "tp" not in profiles.get(name).knobs:
            raise InputError(f"--profile {name} does not model tensor parallelism")
        check_degrees(spec, replace(Scenario(**knobs), tp=num_gpus))
    except InputError as exc:
        return Layout({}, True, f"--num-gpus {num_gpus} read as an even split (every term / {num_gpus}, the seed "
                                f"article's (N x M - weights) / KV), since no --tp {num_gpus} fits: {exc}",
                      f"--num-gpus {num_gpus} read as an even split (every term / {num_gpus}; no --tp {num_gpus} fits)")
    return Layout({"tp": num_gpus}, False, f"--num-gpus {num_gpus} read as --tp {num_gpus} (one replica over "
                                           f"{num_gpus} GPUs, vLLM's --tensor-parallel-size)",
                  f"--num-gpus {num_gpus} read as --tp {num_gpus} (one replica, vLLM's --tensor-parallel-size)")


def _training(knobs: dict, num_gpus: int, tp: int, pp: int) -> Layout:
    if num_gpus % (tp * pp):
        raise InputError(f"--num-gpus {num_gpus} is not a multiple of --tp {tp} x --pp {pp}")
    dp = num_gpus // (tp * pp)
    if "dp" in knobs and knobs["dp"] != dp:
        raise InputError(f"--num-gpus {num_gpus} = --tp {tp} x --pp {pp} x --dp {dp}, but --dp {knobs['dp']} "
                         "was given; give one of them")
    zero = knobs.get("zero", 0)
    shards = f"ZeRO stage {zero} shards over them" if zero else "ZeRO stage 0 shards nothing (see --zero)"
    return Layout({"dp": dp}, False, f"--num-gpus {num_gpus} read as tp={tp} x pp={pp} x dp={dp}: --batch-size "
                                     f"is per GPU (global batch = {dp} x batch_size); {shards}",
                  f"--num-gpus {num_gpus} read as tp={tp} x pp={pp} x dp={dp} (batch_size per GPU)")


def smallest_layout(spec, knobs: dict, limits, even_split):
    """``solve num-gpus`` in inference: ``(Solution, Layout)`` for the fewest GPUs whose
    ``--num-gpus N`` layout fits, read as :func:`read_num_gpus` reads N: ``--tp N`` (the smallest
    tensor-parallel degree that fits, :func:`engine.solve.solve_tensor_parallel`; counts between
    two degrees are no layout, the heads do not divide). ``even_split()`` (every term / N) answers
    only where no ``--tp`` is a layout (a profile without tensor parallelism, or no degree
    fitting); the Layout says which. With ``--tp``/``--pp`` given the count is fixed: refused."""
    from engine import profiles
    from engine.solve import solve_tensor_parallel

    if "tp" in knobs or "pp" in knobs:
        raise InputError("solve num-gpus: with --tp/--pp given the GPU count is tp x pp; leave them out to solve "
                         "it, or use 'memsym plan' for layouts with fixed degrees")
    if "tp" not in profiles.get(knobs.get("profile", profiles.PARALLEL_DEFAULT)).knobs:
        return even_split(), Layout({}, True, f"num_gpus is an even split (every term / N): --profile "
                                              f"{knobs.get('profile')} models no tensor parallelism")
    try:
        solution = solve_tensor_parallel(spec, Scenario(**knobs), limits)
    except InfeasibleError as exc:
        return even_split(), Layout({}, True, f"num_gpus is an even split (every term / N), since no --tp fits: {exc}")
    n = solution.value
    return replace(solution, variable="num_gpus"), Layout(
        {"tp": n}, False, f"num_gpus {n} read as --tp {n} (one replica over {n} GPUs, vLLM's --tensor-parallel-size, "
                          f"as --num-gpus {n} is read); GPU counts between tensor-parallel degrees divide no heads")


def fit_hints(spec, knobs: dict, budget_bytes: int, variable: str) -> str:
    """What would make the smallest case fit: the smallest ``--tp``, a 4-bit quantization, or a
    shorter context; '' when none of them is known to help."""
    from engine.profiles import build
    from engine.solve import tensor_parallel_degrees

    smallest = {"seq_len": 1, "batch_size": 1, "concurrency": 1}
    point = {"batch_size" if variable == "concurrency" else variable: smallest.get(variable, 1)}
    scenario = Scenario(**knobs)

    def fits(changed: Scenario) -> bool:
        try:
            return build(spec, changed).evaluate(**point).total_bytes <= budget_bytes
        except InputError:
            return False

    hints = []
    if "tp" not in knobs and "pp" not in knobs:
        tp = next((t for t in tensor_parallel_degrees(spec, scenario)[1:] if fits(replace(scenario, tp=t))), None)
        if tp is not None:
            hints.append(f"--tp {tp} (the smallest that fits)")
    if scenario.weight_quant in (None, "none") and fits(replace(scenario, weight_quant="int4")):
        hints.append("--weight-quant int4")
    if variable != "seq_len" and scenario.seq_len and scenario.seq_len > 1 and fits(replace(scenario, seq_len=1)):
        hints.append("a shorter --seq-len")
    return "; would fit with " + " or ".join(hints) if hints else ""


def budget_hints(model, config, knobs: dict, limits, target: str) -> str:
    """What would help a budget too small for even one (:func:`fit_hints`); single GPU only."""
    if limits.num_gpus != 1 or target == "num_gpus":
        return ""
    from engine.registry import load_spec

    return fit_hints(load_spec(model, config), knobs, limits.per_gpu_bytes, target)
