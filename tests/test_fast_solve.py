"""``solve`` through the cached exact evaluator (engine/fast_solve.py) equals the SymPy solve.

The first solve of a model builds with SymPy and stores the form; later ones, at other
budgets, are answered by the evaluator: value, certificate, method, closed form, inputs and
terms equal the symbolic answer's (``MEMSYM_NO_CACHE=1``) on registry models, variables,
training mode and a property test over budgets.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import fast, fast_solve
from engine.errors import MemsymError
from engine.questions import solve
from engine.registry import entries

from tests.test_fast_path import ROOT, imported

MODELS = [e.id for e in entries()][::4]
CASES = {
    "seq_len": ("seq_len", {"batch_size": 2}),
    "batch_size": ("batch_size", {"seq_len": 4096}),
    "concurrency": ("concurrency", {"seq_len": 2048}),
    "concurrency-prefill": ("concurrency", {"seq_len": 2048, "serving_activations": "prefill"}),
    "training-seq_len": ("seq_len", {"mode": "training", "batch_size": 1}),
}


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MEMSYM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("MEMSYM_NO_CACHE", raising=False)
    monkeypatch.setattr(fast, "_MEMORY", {})
    monkeypatch.setattr(fast_solve, "_FORMS", {})
    return tmp_path / "cache"


def answers(monkeypatch, variable: str, model: str, budget: int, knobs: dict):
    """(the answer with the cache on, the SymPy answer), or None twice when SymPy refuses."""
    args = dict(model=model, budget=budget, profile="megatron", **knobs)
    monkeypatch.setenv("MEMSYM_NO_CACHE", "1")
    try:
        expected = solve(variable, **dict(args))
    except MemsymError as exc:
        monkeypatch.delenv("MEMSYM_NO_CACHE")
        with pytest.raises(type(exc)):
            solve(variable, **dict(args))
        return None, None
    monkeypatch.delenv("MEMSYM_NO_CACHE")
    return solve(variable, **dict(args)), expected


def check(monkeypatch, variable, model, knobs, budgets) -> list[bool]:
    cached = []
    for budget in budgets:
        result, expected = answers(monkeypatch, variable, model, budget, knobs)
        if result is not None:
            assert result.to_dict() == expected.to_dict()
            cached.append(isinstance(result.solution, fast_solve.CachedSolution))
    return cached


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("case", list(CASES))
def test_cached_solve_equals_symbolic(cache, monkeypatch, model, case):
    variable, knobs = CASES[case]
    cached = check(monkeypatch, variable, model, knobs, [24 * 10**9, 80 * 10**9, 141 * 10**9 + 7])
    assert all(cached[1:])  # after the first solve of a model, the evaluator answers


@settings(max_examples=25, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(model=st.sampled_from(MODELS), case=st.sampled_from(sorted(CASES)), budget=st.integers(10**8, 10**12))
def test_property_cached_solve_equals_symbolic(cache, monkeypatch, model, case, budget):
    variable, knobs = CASES[case]
    check(monkeypatch, variable, model, knobs, [budget, budget // 3 + 1])


def test_a_cached_solve_rebuilds_its_closed_form_for_show_formula(cache, monkeypatch):
    solve("seq_len", model="qwen3-0.6b", budget=24 * 10**9, profile="megatron")
    answer = solve("seq_len", model="qwen3-0.6b", budget=30 * 10**9, profile="megatron")
    assert isinstance(answer.solution, fast_solve.CachedSolution)
    assert str(answer.solution.closed_form) == answer.solution.to_dict()["closed_form"]


def test_a_warm_solve_imports_no_sympy(tmp_path):
    env_args = ["solve", "seq-len", "--model", "qwen3-0.6b", "--profile", "megatron", "--budget"]
    run = lambda budget: subprocess.run(  # noqa: E731
        [sys.executable, "-X", "importtime", str(ROOT / "cli.py"), *env_args, budget], capture_output=True, text=True,
        timeout=120, cwd=ROOT, env={**__import__("os").environ, "MEMSYM_CACHE_DIR": str(tmp_path)})
    cold, warm = run("24GB"), run("30GB")
    assert cold.returncode == 0 and warm.returncode == 0, warm.stderr[-2000:]
    assert "sympy" in imported(cold.stderr)
    assert not {m for m in imported(warm.stderr) if m.split(".")[0] == "sympy"}
    assert "seq_len = 226,876" in warm.stdout
