"""``memsym plan`` from the cache (engine/search.py: a plan is a pure function of its inputs,
every one in the key) prints what the search prints, and a warm plan imports no SymPy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.errors import MemsymError
from engine.questions import plan
from engine.report import format_plan

ROOT = Path(__file__).resolve().parent.parent
CASES = [dict(model="llama-3.1-70b", mode="training", seq_len=4096, gpu="h100-80gb"),
         dict(model="qwen3-8b", mode="training", seq_len=2048, budget="24GB", zero=1),
         dict(model="mixtral-8x7b-v0.1", mode="training", seq_len=4096, gpu="a100-80gb", tp=2),
         dict(model="llama-3.1-8b", seq_len=131072, batch_size=8, budget="16GB"),
         dict(model="deepseek-v2-lite", mode="training", seq_len=4096, budget="40GB", max_gpus=64),
         dict(model="qwen3-0.6b", mode="training", budget="1GB", max_gpus=2)]  # infeasible


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MEMSYM_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _answer(monkeypatch, no_cache: bool, case: dict):
    if no_cache:
        monkeypatch.setenv("MEMSYM_NO_CACHE", "1")
    else:
        monkeypatch.delenv("MEMSYM_NO_CACHE", raising=False)
    try:
        answer = plan(**case)
    except MemsymError as exc:
        return str(exc)
    return format_plan(answer), json.dumps(answer.to_dict())


@pytest.mark.parametrize("case", CASES, ids=[c["model"] for c in CASES])
def test_cached_plan_prints_what_the_search_prints(case, cache, monkeypatch):
    symbolic = _answer(monkeypatch, True, case)
    first, cached = _answer(monkeypatch, False, case), _answer(monkeypatch, False, case)
    assert first == symbolic and cached == symbolic
    assert len(list(cache.glob("*.json"))) == (0 if isinstance(symbolic, str) else 1)


def test_a_corrupt_plan_entry_is_ignored(cache, monkeypatch):
    case = CASES[1]
    expected = _answer(monkeypatch, False, case)
    (path,) = cache.glob("*.json")
    data = json.loads(path.read_text())
    data["data"]["best"] = len(data["data"]["tried"])  # out of range
    path.write_text(json.dumps(data))
    assert _answer(monkeypatch, False, case) == expected
    assert json.loads(path.read_text())["data"]["best"] < len(data["data"]["tried"])  # rewritten


def test_warm_plan_imports_no_sympy(tmp_path):
    argv = ["plan", "--model", "llama-3.1-70b", "--mode", "training", "--seq-len", "4096", "--gpu", "h100-80gb"]
    code = ("import sys, runpy; sys.argv = ['memsym', *sys.argv[1:]]\n"
            "try:\n    runpy.run_path('cli.py', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "print('SYMPY' if 'sympy' in sys.modules else 'NO-SYMPY')")
    env = {**os.environ, "MEMSYM_CACHE_DIR": str(tmp_path)}
    env.pop("MEMSYM_NO_CACHE", None)
    runs = [subprocess.run([sys.executable, "-c", code, *argv], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=300).stdout.strip() for _ in range(2)]
    assert runs[0].endswith("\nSYMPY") and runs[1].endswith("\nNO-SYMPY"), runs[1][-300:]
    assert runs[0].rsplit("\n", 1)[0] == runs[1].rsplit("\n", 1)[0]
