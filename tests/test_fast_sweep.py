"""``memsym sweep`` through the cached exact evaluator (engine/sweep.py ``sweep_model``) prints
what the compiled NumPy path prints: text, CSV and JSON, on every registry model and on
other profiles and modes; a profile without a sizes-free evaluator keeps the NumPy path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy
import pytest

from engine import fast
from engine.errors import MemsymError
from engine.registry import entries
from engine.report import format_sweep
from engine.sweep import GridOutline, MAX_EXACT_POINTS, grid_model, sweep, sweep_model

ROOT = Path(__file__).resolve().parent.parent
GRID = {"batch_size": "1,3,8", "seq_len": "1,17,1024:131072:x4"}
MODELS = [e.id for e in entries()]


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MEMSYM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(fast, "_MEMORY", {})


def _outputs(mm, result) -> tuple:
    return (format_sweep(mm, result, False), format_sweep(mm, result, True), json.dumps(result.to_dict()),
            {k: v.tolist() for k, v in result.outputs.items()})


def _compare(model: str, grid: dict, **knobs) -> bool:
    """Whether the exact evaluator answered; asserts its outputs (or error) equal the NumPy path's."""
    try:
        axes, real = grid_model(model, None, **grid, **knobs)
        expected = _outputs(real, sweep(real, axes))
    except MemsymError as exc:
        fast._MEMORY.clear()
        with pytest.raises(MemsymError) as again:
            axes, mm = sweep_model(model, None, **grid, **knobs)
            sweep(mm, axes)
        assert str(again.value) == str(exc)
        return False
    fast._MEMORY.clear()  # the evaluator comes from its file
    axes, mm = sweep_model(model, None, **grid, **knobs)
    assert _outputs(mm, sweep(mm, axes)) == expected
    return isinstance(mm, GridOutline)


@pytest.mark.parametrize("model", MODELS)
def test_exact_sweep_equals_the_numpy_sweep(model, fresh_cache):
    try:
        sweep_model(model, None, **GRID)  # the miss stores the evaluator
    except MemsymError:
        pass
    answered = _compare(model, GRID)
    if model in ("qwen3-0.6b", "llama-3.1-8b", "mixtral-8x7b-v0.1"):
        assert answered  # megatron's inference model has a sizes-free evaluator


@pytest.mark.parametrize("knobs", [dict(mode="training"), dict(profile="transformers"), dict(tp=2, kv_cache_dtype="fp8"),
                                   dict(mode="training", profile="deepspeed", zero=3, dp=8),
                                   dict(profile="llamacpp"), dict(profile="vllm")],
                         ids=["training", "transformers", "tp2-kv8", "deepspeed", "llamacpp", "vllm"])
@pytest.mark.parametrize("model", ["qwen3-0.6b", "llama-3.1-8b", "mixtral-8x7b-v0.1", "gemma-2-9b"])
def test_exact_sweep_on_other_profiles(model, knobs, fresh_cache):
    try:
        sweep_model(model, None, **GRID, **knobs)
    except MemsymError:
        pass
    answered = _compare(model, GRID, **knobs)
    if knobs.get("profile") == "vllm":
        assert not answered  # the GPU total stays a symbol: no exact evaluator


def test_a_large_grid_is_compiled(fresh_cache, monkeypatch):
    grid = {"batch_size": "1:64:+1", "seq_len": "1:2048:+1"}
    assert 64 * 2048 > MAX_EXACT_POINTS
    sweep_model("qwen3-0.6b", None, **GRID)
    axes, mm = sweep_model("qwen3-0.6b", None, **grid)
    assert isinstance(mm, GridOutline)
    result = sweep(mm, axes)
    real_axes, real = grid_model("qwen3-0.6b", None, **grid)
    assert numpy.array_equal(result.outputs["total_bytes"], sweep(real, real_axes).outputs["total_bytes"])


def test_warm_sweep_imports_no_sympy(tmp_path):
    argv = ["sweep", "--model", "qwen3-0.6b", "--batch-size", "1,2,4,8", "--seq-len", "1024:131072:x2"]
    code = ("import sys, runpy; sys.argv = ['memsym', *sys.argv[1:]]\n"
            "try:\n    runpy.run_path('cli.py', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "print('NUMPY' if 'numpy' in sys.modules else 'NO-NUMPY')\n"
            "print('SYMPY' if 'sympy' in sys.modules else 'NO-SYMPY')")
    env = {**os.environ, "MEMSYM_CACHE_DIR": str(tmp_path)}
    env.pop("MEMSYM_NO_CACHE", None)
    runs = [subprocess.run([sys.executable, "-c", code, *argv], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=300).stdout for _ in range(2)]
    assert runs[0].strip().endswith("\nSYMPY")
    assert runs[1].strip().endswith("\nNO-NUMPY\nNO-SYMPY"), runs[1][-500:]  # ExactSweep: no NumPy either
    runs = [run.strip().rsplit("\n", 1)[0] for run in runs]
    assert runs[0].rsplit("\n", 1)[0] == runs[1].rsplit("\n", 1)[0]
