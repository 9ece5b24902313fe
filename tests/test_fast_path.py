"""The SymPy-free hot path (engine/fast.py): the cached exact evaluator equals the symbolic path.

Every registry model and fixture config, under several profiles and modes, at sizes other
than the one the cache entry was built (and checked) at; a property test over models,
profiles and sizes; a stale key (the code changes) and hostile cache files; and a CLI run
in a fresh process that, on a warm cache, never imports SymPy.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
import sympy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import fast, fast_cache
from engine.api import Estimate
from engine.errors import MemsymError
from engine.evaluation import ModelOutline
from engine.registry import entries, load_spec, read_config
from engine.families import spec_from_config
from engine.scenario import Scenario

ROOT = Path(__file__).resolve().parents[1]
FIXTURE_CONFIGS = sorted((ROOT / "tests" / "fixtures" / "variant_configs").glob("*.json"))
MODELS = [e.id for e in entries()]
SCENARIOS = {
    "megatron-inference": {},
    "megatron-training": {"mode": "training", "recompute": "selective"},
    "transformers-inference": {"profile": "transformers"},
    "transformers-training": {"profile": "transformers", "mode": "training"},
    "torchtune-lora": {"profile": "torchtune", "mode": "training", "lora_rank": 8},
    "torchtitan": {"profile": "torchtitan", "mode": "training"},
    "deepspeed-zero3": {"profile": "deepspeed", "mode": "training", "zero": 3, "dp": 8},
    "llamacpp": {"profile": "llamacpp"},
    "megatron-tp-paged": {"tp": 2, "block_size": 16, "kv_cache_dtype": "fp8"},
}
SAMPLE = MODELS[::5]  # the other profiles: every fifth model (all of them under megatron)


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    """A fresh cache folder and an empty in-process cache."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("MEMSYM_CACHE_DIR", str(folder))
    monkeypatch.delenv("MEMSYM_NO_CACHE", raising=False)
    monkeypatch.setattr(fast, "_MEMORY", {})
    return folder


def both(spec, knobs: dict):
    """(fast path's Estimate dict, symbolic path's), or the same error twice."""
    scenario = Scenario(**knobs)
    try:
        expected = Estimate(spec, *fast.symbolic_estimate(spec, scenario))
    except MemsymError as exc:
        with pytest.raises(type(exc), match="^" + __import__("re").escape(str(exc)) + "$"):
            fast.estimate(spec, scenario)
        return None, None
    return Estimate(spec, *fast.estimate(spec, scenario)), expected


def same(result: Estimate, expected: Estimate) -> None:
    assert result.to_dict() == expected.to_dict()
    assert list(result.evaluation.terms.items()) == list(expected.evaluation.terms.items())
    assert result.evaluation == expected.evaluation
    assert result.counts == expected.counts


def check_sizes(spec, knobs: dict, sizes) -> list:
    """The first size builds the entry (a miss), the others are answered by it: each equals SymPy's."""
    hits = []
    for batch, seq in sizes:
        result, expected = both(spec, {**knobs, "batch_size": batch, "seq_len": seq})
        if result is not None:
            same(result, expected)
            hits.append(isinstance(result.model, ModelOutline))
    return hits


SIZES = [(1, 2048), (3, 1000), (16, 32768), (1, 1)]


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("scenario", ["megatron-inference", "megatron-training"])
def test_every_registry_model_fast_equals_symbolic(cache, model, scenario):
    hits = check_sizes(load_spec(model), SCENARIOS[scenario], SIZES)
    assert not hits or hits[1:] == [True] * (len(hits) - 1)  # after the first, a cached answer


@pytest.mark.parametrize("model", SAMPLE)
@pytest.mark.parametrize("scenario", [s for s in SCENARIOS if not s.startswith("megatron-i")])
def test_profiles_fast_equals_symbolic(cache, model, scenario):
    check_sizes(load_spec(model), SCENARIOS[scenario], SIZES[:3])


@pytest.mark.parametrize("path", FIXTURE_CONFIGS, ids=lambda p: p.stem)
def test_fixture_configs_fast_equal_symbolic(cache, path):
    data = read_config(path)
    spec = spec_from_config(data.get("config", data), path.stem)
    for scenario in ("megatron-inference", "transformers-training"):
        check_sizes(spec, SCENARIOS[scenario], SIZES[:3])


@settings(max_examples=40, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(model=st.sampled_from(MODELS), scenario=st.sampled_from(sorted(SCENARIOS)),
       batch=st.integers(1, 512), seq=st.integers(1, 1 << 20))
def test_property_fast_equals_symbolic(cache, model, scenario, batch, seq):
    spec = load_spec(model)
    check_sizes(spec, SCENARIOS[scenario], [(batch, seq), (max(1, batch // 2), seq + 7)])


# --- which entry a scenario gets --------------------------------------------------------------------
def kind_of(spec, scenario: Scenario) -> str:
    return fast._MEMORY[fast_cache.key(fast.spec_digest(spec), fast.scenario_digest(scenario, fast.FREE))].kind


def test_sizes_are_free_for_megatron_and_sized_where_a_check_compares_them(cache):
    spec = load_spec("qwen3-0.6b")
    plain, llamacpp = Scenario(seq_len=100), Scenario(profile="llamacpp", seq_len=100)
    fast.estimate(spec, plain)
    fast.estimate(spec, llamacpp)  # llama.cpp's check compares -np with -c in Python
    assert kind_of(spec, plain) == "free"
    assert kind_of(spec, llamacpp) == "sized"


def test_a_profile_that_branches_on_seq_len_gets_no_free_evaluator(cache, monkeypatch):
    """A plug-in that adds a term above 4096 tokens in Python: the trace sees the comparison."""
    from engine import profiles
    from engine.profiles import megatron

    def build(spec, scenario):
        mm = megatron.build(spec, scenario)
        if scenario.seq_len is not None and scenario.seq_len > 4096:
            mm.terms["long_context"] = sympy.Integer(10**6)
            mm.sources["long_context"] = "a test"
        return mm

    module = types.ModuleType("branchy_profile")
    module.PROFILE = profiles.Profile("branchy", "test", ("inference",), megatron.PROFILE.knobs, build)
    monkeypatch.setitem(sys.modules, "branchy_profile", module)
    monkeypatch.setitem(profiles.REGISTRY, "branchy", "branchy_profile")
    spec = load_spec("qwen3-0.6b")
    knobs = {"profile": "branchy"}
    check_sizes(spec, knobs, [(1, 100), (1, 5000), (1, 200)])
    assert kind_of(spec, Scenario(profile="branchy", seq_len=100)) == "sized"


# --- the key: a changed source, a changed spec ---------------------------------------------------------
def test_a_changed_formula_source_changes_the_key(tmp_path):
    for package in ("engine", "formulas"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    digest = fast_cache.code_digest.__wrapped__  # not memoized: the tree changes under the test
    before = digest(tmp_path)
    assert before == digest(ROOT)
    kv = tmp_path / "formulas" / "kv_cache.py"
    kv.write_text(kv.read_text() + "\n# edited\n")
    assert digest(tmp_path) != before


def test_a_stale_entry_is_never_served_after_the_code_changes(cache, monkeypatch):
    spec, scenario = load_spec("qwen3-0.6b"), Scenario(seq_len=512)
    fast.estimate(spec, scenario)
    old = fast_cache.key(fast.spec_digest(spec), fast.scenario_digest(scenario, fast.FREE))
    poison(cache / f"{old}.json", 12345)
    monkeypatch.setattr(fast, "_MEMORY", {})
    assert fast.estimate(spec, scenario)[1].terms["weights"] == 12345  # the poisoned file is what a hit reads
    monkeypatch.setattr(fast_cache, "code_digest", lambda root=None: "another source tree")
    monkeypatch.setattr(fast, "_MEMORY", {})
    model, evaluation, _ = fast.estimate(spec, scenario)
    assert evaluation == fast.symbolic_estimate(spec, scenario)[1]
    assert not isinstance(model, ModelOutline)  # a miss under the new key


def test_the_spec_quantization_is_part_of_the_key(cache):
    spec = load_spec("qwen3-0.6b")
    other = type(spec)(**{**{f: getattr(spec, f) for f in spec.__dataclass_fields__}, "quantization": {"x": 1}})
    assert other == spec  # ModelSpec's equality skips quantization; the key does not
    assert fast.spec_digest(other) != fast.spec_digest(spec)


def poison(path: Path, weights: int) -> None:
    """Rewrite a cache file's program so that every output is ``weights``: valid, wrong numbers."""
    data = json.loads(path.read_text())
    data["program"]["temps"] = []
    data["program"]["outputs"] = [weights] * len(data["program"]["outputs"])
    path.write_text(json.dumps(data))


# --- hostile cache files ------------------------------------------------------------------------------
HOSTILE = {
    "not json": b"{{{",
    "not utf-8": b"\xff\xfe",
    "a list": b"[]",
    "code in a node": None,  # filled in below from a real entry
    "an import node": None,
    "an argument out of range": None,
    "nested too deeply": None,
    "a bool for an int": None,
    "a bound program at a free key": None,
}


def hostile_text(real: dict, case: str) -> bytes:
    if HOSTILE[case] is not None:
        return HOSTILE[case]
    data = json.loads(json.dumps(real))
    outputs = data["program"]["outputs"]
    if case == "a bound program at a free key":  # valid, of no arguments: it would answer every size alike
        data["kind"], data["program"] = "bound", {"arguments": 0, "temps": [], "outputs": [12345] * len(outputs)}
        return json.dumps(data).encode()
    outputs[0] = {"code in a node": "__import__('os').system('false')",
                  "an import node": ["__import__", "os"],
                  "an argument out of range": ["x", 7],
                  "nested too deeply": "NESTED",
                  "a bool for an int": True}[case]
    return json.dumps(data).replace('"NESTED"', "[" * 5000 + "1" + "]" * 5000).encode()


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_cache_file_is_rebuilt_not_run(cache, monkeypatch, case):
    spec, scenario = load_spec("qwen3-0.6b"), Scenario(seq_len=777)
    expected = fast.symbolic_estimate(spec, scenario)[1]
    fast.estimate(spec, scenario)
    name = fast_cache.key(fast.spec_digest(spec), fast.scenario_digest(scenario, fast.FREE))
    path = cache / f"{name}.json"
    path.write_bytes(hostile_text(json.loads(path.read_text()), case))
    monkeypatch.setattr(fast, "_MEMORY", {})
    monkeypatch.setattr(os, "system", lambda *a: pytest.fail("a cache file ran code"))
    assert fast.estimate(spec, scenario)[1] == expected
    assert fast_cache.read(cache, name) is not None  # rewritten with a good entry
    assert fast.estimate(spec, scenario)[1] == expected


def test_a_cache_folder_that_cannot_be_written_costs_only_speed(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("MEMSYM_CACHE_DIR", str(blocker / "cache"))
    monkeypatch.setattr(fast, "_MEMORY", {})
    spec, scenario = load_spec("qwen3-0.6b"), Scenario()
    assert fast.estimate(spec, scenario)[1] == fast.symbolic_estimate(spec, scenario)[1]


def test_no_cache_turns_the_fast_path_off(cache, monkeypatch):
    monkeypatch.setenv("MEMSYM_NO_CACHE", "1")
    spec = load_spec("qwen3-0.6b")
    model, _, _ = fast.estimate(spec, Scenario())
    assert not isinstance(model, ModelOutline)
    assert not cache.exists()


def test_an_outline_builds_the_symbolic_model_on_demand(cache):
    spec = load_spec("qwen3-0.6b")
    fast.estimate(spec, Scenario(seq_len=64))
    model = fast.estimate(spec, Scenario(seq_len=128))[0]
    assert isinstance(model, ModelOutline)
    assert model.expression("kv_cache") == fast.symbolic_estimate(spec, Scenario(seq_len=128))[0].expression("kv_cache")


# --- a fresh process on a warm cache never imports SymPy ---------------------------------------------
def run_cli(cache: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MEMSYM_CACHE_DIR": str(cache)}
    env.pop("MEMSYM_NO_CACHE", None)
    return subprocess.run([sys.executable, "-X", "importtime", str(ROOT / "cli.py"), *args], env=env,
                          capture_output=True, text=True, timeout=120, cwd=ROOT)


def imported(stderr: str) -> set[str]:
    return {line.split("|")[-1].strip() for line in stderr.splitlines() if line.startswith("import time:")}


@pytest.mark.parametrize("args", [("estimate", "--model", "qwen3-0.6b", "--seq-len", "2048"),
                                  ("estimate", "--model", "llama-3.1-8b", "--mode", "training", "--json")])
def test_a_warm_estimate_imports_no_sympy(tmp_path, args):
    cold = run_cli(tmp_path, *args)
    assert cold.returncode == 0, cold.stderr[-2000:]
    assert "sympy" in imported(cold.stderr)  # the miss built the model
    warm = run_cli(tmp_path, *args[:-1], str(int(args[-1]) * 2) if args[-1].isdigit() else args[-1])
    assert warm.returncode == 0, warm.stderr[-2000:]
    assert not {m for m in imported(warm.stderr) if m.split(".")[0] == "sympy"}
    if args[-1] != "--json":
        assert "234,881,024" not in warm.stdout and "kv_cache" in warm.stdout  # seq_len 4096: twice the KV
