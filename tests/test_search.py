"""The discrete search: the fewest GPUs that fit, checked by substitution and brute force."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.api import estimate, memory_model
from engine.errors import InfeasibleError
from engine.registry import load_spec
from engine.scenario import Scenario
from engine.search import plan


def _peak(model, **knobs):
    return estimate(model, **knobs).evaluation.total_bytes


def test_llama_70b_training_on_80gb_cards_is_checked_by_substitution():
    knobs = dict(mode="training", seq_len=4096, batch_size=1)
    budget = 80 * 10**9
    result = plan(load_spec("llama-3.1-70b"), Scenario(**knobs), budget)
    best = result.best
    chosen = dict(tp=best.tp, pp=best.pp, dp=best.dp, zero=best.zero)
    assert _peak("llama-3.1-70b", **knobs, **chosen) == best.per_gpu_bytes <= budget
    if best.dp > 1:
        assert _peak("llama-3.1-70b", **knobs, **{**chosen, "dp": best.dp - 1}) == best.bytes_at_fewer > budget
    assert all(c.num_gpus >= best.num_gpus for c in result.tried if c.fits)


_BUILT = {}


def _peak_by_substitution(mode, s, tp, pp, dp, zero):
    """Build once per structure (ZeRO stage, pipelined), substitute the degrees."""
    key = (mode, s, zero, pp > 1)
    if key not in _BUILT:
        _BUILT[key] = memory_model("gpt2", mode=mode, seq_len=s, batch_size=4, pp=pp, zero=zero, dp=2,
                                   profile="megatron")[1]  # the search's layout profile
    return _BUILT[key].evaluate(tensor_parallel=tp, pipeline_parallel=pp, data_parallel=dp).total_bytes


@settings(max_examples=10, deadline=None, derandomize=True)
@given(
    budget_mb=st.integers(300, 3000),
    mode=st.sampled_from(["inference", "training"]),
    s=st.sampled_from([256, 1024]),
)
def test_search_agrees_with_brute_force_on_gpt2(budget_mb, mode, s):
    """Every (tp, pp, dp, zero) with at most 16 GPUs, evaluated one by one.

    Substituting degrees into one build per structure is what the search does too; the
    Llama test above checks its choice against fresh builds.
    """
    budget = budget_mb * 10**6
    knobs = dict(mode=mode, seq_len=s, batch_size=4, profile="megatron")  # the search's layout profile
    fits = []
    for tp in (1, 2, 3, 4, 6, 12):
        for pp in (1, 2, 3, 4, 6, 12):
            for dp in (range(1, 17) if mode == "training" else [1]):
                for zero in ((0, 1, 2, 3) if mode == "training" else (0,)):
                    if tp * pp * dp > 16 or (tp > 8 and mode == "training"):
                        continue
                    if _peak_by_substitution(mode, s, tp, pp, dp, zero) <= budget:
                        fits.append(tp * pp * dp)
    try:
        best = plan(load_spec("gpt2"), Scenario(**knobs), budget, max_gpus=16).best
    except InfeasibleError:
        assert not fits
        return
    assert best.num_gpus == min(fits)


def test_infeasible_says_what_the_best_needs():
    with pytest.raises(InfeasibleError, match="needs [0-9,]+ bytes per GPU"):
        plan(load_spec("llama-3.1-70b"), Scenario(mode="training", seq_len=4096), 10**9, max_gpus=8)


def test_solve_num_gpus_for_llama_70b_training_with_zero_3(run_cli):
    """Issue 6's command: answered, and checked by substitution with `memsym estimate`."""
    import json

    args = ["--model", "llama-3.1-70b", "--mode", "training", "--seq-len", "4096", "--batch-size", "1",
            "--gpu", "h100-80gb", "--zero", "3"]
    result = run_cli("solve", "num-gpus", *args, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    config = data["inputs"]["configuration"]
    assert config["zero"] == 3
    assert data["value"] == config["tp"] * config["pp"] * config["dp"]
    flags = ["--tp", str(config["tp"]), "--pp", str(config["pp"]), "--zero", "3"]
    base = ["estimate", "--model", "llama-3.1-70b", "--mode", "training", "--seq-len", "4096", *flags, "--json"]
    at_value = json.loads(run_cli(*base, "--dp", str(config["dp"])).stdout)["total_bytes"]
    assert at_value == data["total_bytes_at_value"] <= data["budget_bytes"]
    if config["dp"] > 1:
        fewer = json.loads(run_cli(*base, "--dp", str(config["dp"] - 1)).stdout)["total_bytes"]
        assert fewer == data["total_bytes_at_previous"] > data["budget_bytes"]


def test_plan_lists_what_it_tried(run_cli):
    import json

    result = run_cli("plan", "--model", "gpt2", "--mode", "training", "--budget", "2GB", "--max-gpus", "8", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["best"]["fits"] and data["best"]["per_gpu_bytes"] <= data["budget_bytes"]
    assert len(data["tried"]) > 1
    assert min(r["num_gpus"] for r in data["tried"] if r["fits"]) == data["best"]["num_gpus"]
