"""``memsym serve`` and the default serving ``solve`` from the cache (engine/serving_cache.py)
print exactly what the symbolic path prints: text and ``--json``, on every registry model
(the hybrid/Mamba and chunked ones included; a refused one refuses alike), with several
flag sets, and on the start-up records of tests/fixtures/vllm_startup_dev.json."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest

from engine import serving_cache
from engine.errors import MemsymError
from engine.registry import entries
from engine.report import format_serve, format_serving_answer
from engine.serving import serve
from engine.serving_solve import solve_serving

ROOT = Path(__file__).resolve().parent.parent
H100 = dict(gpu_name="h100-80gb")
# flag sets: vLLM's auto length, a fixed one, a refusal-sized one, tensor and pipeline parallel, V0
VARIANTS = [dict(**H100), dict(max_model_len=8192, **H100), dict(max_model_len=4096, gpu_memory="24GiB"),
            dict(tp=2, max_model_len=16384, gpu_memory_utilization=Fraction(7, 10), **H100),
            dict(pp=2, max_model_len=4096, gpu_name="a100-40gb"), dict(version="0.6", max_model_len=2048, **H100),
            dict(max_model_len=8192, mamba_cache_mode="align", enable_prefix_caching=True, **H100)]
MODELS = [e.id for e in entries()]


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """An empty cache folder and an empty in-process cache for this test."""
    monkeypatch.setenv("MEMSYM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(serving_cache, "_MEMORY", {})
    return tmp_path / "cache"


def _outputs(prediction) -> tuple[str, str]:
    return format_serve(prediction), json.dumps(prediction.to_dict(), indent=2)


def _symbolic_then_cached(call):
    """(symbolic result or its error, the cached one read back from disk or the same error)."""
    for path in Path(os.environ["MEMSYM_CACHE_DIR"]).glob("*.json"):  # the first answer is a miss
        path.unlink()
    serving_cache._MEMORY.clear()
    try:
        symbolic = call()
    except MemsymError as exc:
        serving_cache._MEMORY.clear()
        with pytest.raises(MemsymError) as again:
            call()
        assert str(again.value) == str(exc)
        return None, None
    serving_cache._MEMORY.clear()  # the second answer comes from the file
    return symbolic, call()


def _assert_same_serve(kwargs: dict) -> bool:
    symbolic, cached = _symbolic_then_cached(lambda: serve(**kwargs))
    if symbolic is None:
        return False
    assert not isinstance(symbolic.worker, serving_cache.CachedWorker)
    assert isinstance(cached.worker, serving_cache.CachedWorker), "the entry was not stored or not read"
    assert _outputs(cached) == _outputs(symbolic)
    assert cached.values == symbolic.values and cached.settings == symbolic.settings
    return True


@pytest.mark.parametrize("model", MODELS)
def test_cached_serve_prints_what_the_symbolic_path_prints(model, fresh_cache):
    for variant in VARIANTS[:2]:
        _assert_same_serve({"model": model, **variant})


@pytest.mark.parametrize("variant", VARIANTS[2:], ids=["24gib", "tp2", "pp2", "v0", "align"])
@pytest.mark.parametrize("model", ["llama-3.1-8b", "bamba-9b", "mamba-2.8b", "llama-4-scout-17b-16e-text",
                                   "qwen3-next-80b-a3b", "gemma-2-9b", "deepseek-v2-lite"])
def test_cached_serve_with_other_flags(model, variant, fresh_cache):
    if model not in MODELS:
        pytest.skip(f"{model} is not in this registry")
    _assert_same_serve({"model": model, **variant})


def _load_tool():
    spec = importlib.util.spec_from_file_location("serving_table", ROOT / "tools" / "serving_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cached_serve_on_the_startup_records(fresh_cache, tmp_path):
    tool = _load_tool()
    data = tool.load()
    for record in data["records"]:
        assert _assert_same_serve(tool.serve_arguments(record, data["configs"], str(tmp_path)))


@pytest.mark.parametrize("target", ["seq_len", "concurrency", "batch_size"])
@pytest.mark.parametrize("model", ["qwen3-0.6b", "bamba-9b", "llama-4-scout-17b-16e-text"])
def test_cached_serving_solve_answers_alike(model, target, fresh_cache):
    knobs = {"seq_len": 8192} if target != "seq_len" else {}
    call = lambda: solve_serving(target, model, None, gpu="h100-80gb", **knobs)  # noqa: E731
    symbolic, cached = _symbolic_then_cached(call)
    if symbolic is None:
        return
    assert isinstance(cached.prediction.worker, serving_cache.CachedWorker)
    assert format_serving_answer(cached) == format_serving_answer(symbolic)
    assert json.dumps(cached.to_dict()) == json.dumps(symbolic.to_dict())


CORRUPTIONS = {"a string stage": lambda d: d.update(stage="0"),
               "a value missing": lambda d: d["values"].pop("num_gpu_blocks"),
               "a float value": lambda d: d["values"].update(kv_cache_tokens=1.5),
               "an input missing": lambda d: d["meta"]["inputs"].pop("kv_layout"),
               "a term missing": lambda d: d["terms"].pop("kv_cache")}


@pytest.mark.parametrize("corrupt", CORRUPTIONS.values(), ids=CORRUPTIONS)
def test_a_corrupt_entry_is_ignored_and_rewritten(corrupt, fresh_cache):
    first = serve("qwen3-0.6b", max_model_len=4096, **H100)
    (path,) = fresh_cache.glob("*.json")
    stored = json.loads(path.read_text())
    corrupt(stored["data"])
    path.write_text(json.dumps(stored))
    serving_cache._MEMORY.clear()
    again = serve("qwen3-0.6b", max_model_len=4096, **H100)
    assert not isinstance(again.worker, serving_cache.CachedWorker)  # rebuilt with SymPy
    assert _outputs(again) == _outputs(first)
    serving_cache._MEMORY.clear()
    assert isinstance(serve("qwen3-0.6b", max_model_len=4096, **H100).worker, serving_cache.CachedWorker)


def test_the_key_holds_every_flag(fresh_cache):
    base = serve("qwen3-0.6b", max_model_len=4096, **H100)
    other = serve("qwen3-0.6b", max_model_len=4096, gpu_memory_utilization=Fraction(8, 10), **H100)
    assert other.values["requested_bytes"] < base.values["requested_bytes"]
    assert len(list(fresh_cache.glob("*.json"))) == 2


def _imports_sympy(argv: list[str], cache: Path) -> tuple[bool, str]:
    code = ("import sys, runpy; sys.argv = ['memsym', *sys.argv[1:]]\n"
            "try:\n    runpy.run_path('cli.py', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "print('SYMPY' if 'sympy' in sys.modules else 'NO-SYMPY')")
    env = {**os.environ, "MEMSYM_CACHE_DIR": str(cache)}
    env.pop("MEMSYM_NO_CACHE", None)
    out = subprocess.run([sys.executable, "-c", code, *argv], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    return out.stdout.strip().endswith("NO-SYMPY"), out.stdout


@pytest.mark.parametrize("argv", [["serve", "--model", "qwen3-0.6b", "--gpu", "h100-80gb"],
                                  ["solve", "seq-len", "--model", "qwen3-0.6b", "--gpu", "h100-80gb"],
                                  ["solve", "concurrency", "--model", "qwen3-0.6b", "--gpu", "h100-80gb",
                                   "--seq-len", "4096"]])
def test_warm_serve_and_serving_solve_import_no_sympy(argv, tmp_path):
    cold, _ = _imports_sympy(argv, tmp_path)
    warm, text = _imports_sympy(argv, tmp_path)
    assert not cold  # the first answer is symbolic
    assert warm, text
    assert "vLLM" in text


WEIGHT_RECORDS = json.loads((ROOT / "tests" / "fixtures" / "vllm_weights_issues.json").read_text())["records"]


@pytest.mark.parametrize("record", WEIGHT_RECORDS, ids=[f"{i}-{r['model']}" for i, r in enumerate(WEIGHT_RECORDS)])
def test_cached_serve_on_the_logged_weights_records(record, fresh_cache):
    for length in (None, 8192):
        _assert_same_serve({"model": record["model"], "tp": record["tensor_parallel_size"], "max_model_len": length,
                            **H100})
