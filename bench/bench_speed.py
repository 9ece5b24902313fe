"""Benchmark of memsym's SymPy-free hot path against a bare start and a peer (not a test).

In one run, as ratios:

1. cold CLI: wall time of fresh processes of ``estimate``, ``solve seq-len``, ``serve``, ``plan`` and ``sweep``
   against a bare ``python -c "import numpy, click"``, each start right after a bare one (the
   ratio is the median of the pairs' ratios, so both see the same machine load); each with a
   warm cache (the exact evaluator stored by an earlier run) and a cold one (an empty
   cache folder per process: the SymPy build, then the store);
2. in-process configs/s on 1,000 distinct inference configs (distinct models, batch sizes
   and lengths; no config repeats) through ``engine.estimate``: with the evaluators on disk
   but none in memory (``warm``), with the process's cache already holding them (``hot``),
   with an empty cache folder (``cold``: every model's first config builds with SymPy) and
   with the cache off (``MEMSYM_NO_CACHE=1``: the SymPy path, as before);
3. llm-analysis 0.2.2 (``LLMAnalysis(...).inference(...)`` per config, the same model
   shapes, batch sizes and lengths), run in its own environment: ``--peer-python`` names
   its interpreter (``python -m venv ENV && ENV/bin/pip install llm-analysis==0.2.2``);
4. a hand-written Python expression of the same formula (Qwen3-0.6B's
   ``W + K b s + max(A b, F b s)``) on 1,000 distinct (b, s) beside memsym on the same ones;
5. the grid benchmark of bench/bench_compiled.py (compiled NumPy vs hand-written NumPy).

Usage: python bench/bench_speed.py [--starts 7] [--peer-python ENV/bin/python] [--json]
Results and the machine they came from: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CONFIGS = 1000
BARE = [sys.executable, "-c", "import numpy, click"]
COMMANDS = {
    "estimate": ["estimate", "--model", "qwen3-0.6b", "--seq-len", "2048"],
    "solve seq-len": ["solve", "seq-len", "--model", "qwen3-0.6b", "--budget", "24GB"],
    "solve seq-len --profile megatron": ["solve", "seq-len", "--model", "qwen3-0.6b", "--budget", "24GB",
                                         "--profile", "megatron"],
    "serve": ["serve", "--model", "Qwen/Qwen3-0.6B", "--gpu", "h100-80gb", "--max-model-len", "8192"],
    "plan": ["plan", "--model", "llama-3.1-70b", "--mode", "training", "--seq-len", "4096", "--gpu", "h100-80gb"],
    "sweep": ["sweep", "--model", "qwen3-0.6b", "--batch-size", "1,2,4,8", "--seq-len", "1024:131072:x2"],
}
PEER = r"""
import json, logging, sys, time
logging.disable(logging.CRITICAL)
from llm_analysis.analysis import LLMAnalysis
from llm_analysis.config import ModelConfig, get_gpu_config_by_name
configs = json.load(sys.stdin)
import dataclasses
gpu = dataclasses.replace(get_gpu_config_by_name("a100-sxm-80gb"), mem_per_GPU_in_GB=1e9)  # no fit assertion
start = time.perf_counter()
out = []
for c in configs:
    model = ModelConfig(name=c["model"], num_layers=c["layers"], n_head=c["heads"], hidden_dim=c["hidden"],
                        vocab_size=c["vocab"], num_key_value_heads=c["kv_heads"], ffn_embed_dim=c["ffn"],
                        expansion_ratio=c["ffn"] / c["hidden"])
    summary = LLMAnalysis(model, gpu).inference(batch_size_per_gpu=c["batch"], seq_len=c["seq"],
                                                num_tokens_to_generate=1)
    out.append(summary["kv_cache_memory_per_gpu"])
elapsed = time.perf_counter() - start
print(json.dumps({"seconds": elapsed, "configs": len(configs), "checksum": sum(out)}))
"""


def timed(command: list[str], env: dict) -> float:
    start = time.perf_counter()
    run = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    elapsed = time.perf_counter() - start
    if run.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed: {run.stderr.strip()[-500:]}")
    return elapsed


def paired(command: list[str], starts: int, env: dict, fresh_cache: bool = False) -> tuple[float, float, float]:
    """(median seconds, median bare seconds, median of the per-pair ratios): each start of
    ``command`` right after one of the bare start, so both see the same machine load."""
    times, bares, ratios = [], [], []
    for _ in range(starts):
        run_env = dict(env)
        if fresh_cache:
            run_env["MEMSYM_CACHE_DIR"] = tempfile.mkdtemp(prefix="memsym-bench-cold-")
        bare = timed(BARE, env)
        elapsed = timed(command, run_env)
        times.append(elapsed)
        bares.append(bare)
        ratios.append(elapsed / bare)
    return statistics.median(times), statistics.median(bares), statistics.median(ratios)


def cold_cli(starts: int, cache: str) -> dict:
    env = {**os.environ, "MEMSYM_CACHE_DIR": cache, "HF_HUB_OFFLINE": "1"}
    env.pop("MEMSYM_NO_CACHE", None)
    out = {"commands": {}}
    for label, args in COMMANDS.items():
        command = [sys.executable, str(ROOT / "cli.py"), *args]
        subprocess.run(command, capture_output=True, env=env, cwd=ROOT)  # store the evaluator
        warm, bare, warm_ratio = paired(command, starts, env)
        cold, _, cold_ratio = paired(command, max(3, starts // 2), env, fresh_cache=True)
        out["commands"][label] = {"warm_seconds": round(warm, 3), "warm_ratio": round(warm_ratio, 2),
                                  "cold_seconds": round(cold, 3), "cold_ratio": round(cold_ratio, 2),
                                  "bare_seconds": round(bare, 3)}
    out["bare_seconds"] = min(row["bare_seconds"] for row in out["commands"].values())
    return out


def distinct_configs() -> list[dict]:
    """1,000 distinct (model, batch, length) over the registry's dense attention models llm-analysis reads."""
    from engine.registry import entries, load_spec

    models = []
    for entry in entries():
        spec = load_spec(entry.id)
        if all(g.mixer == "attention" and g.mlp == "dense" for g in spec.layers) or not spec.layers:
            models.append(spec)
    rng, seen, out = random.Random(16), set(), []
    while len(out) < CONFIGS:
        spec = rng.choice(models)
        batch, seq = rng.randint(1, 64), rng.randint(16, 32768)
        if (spec.name, batch, seq) in seen:
            continue
        seen.add((spec.name, batch, seq))
        out.append({"model": spec.name, "layers": spec.num_hidden_layers, "heads": spec.num_attention_heads,
                    "hidden": spec.hidden_size, "vocab": spec.vocab_size, "kv_heads": spec.num_key_value_heads,
                    "ffn": spec.intermediate_size, "batch": batch, "seq": seq})
    return out


def memsym_rate(configs: list[dict], cache: str | None, reset_memory: bool = True) -> float:
    """configs/s of engine.estimate over ``configs`` (cache None: MEMSYM_NO_CACHE=1)."""
    import engine
    from engine import fast

    if cache is None:
        os.environ["MEMSYM_NO_CACHE"] = "1"
    else:
        os.environ.pop("MEMSYM_NO_CACHE", None)
        os.environ["MEMSYM_CACHE_DIR"] = cache
    if reset_memory:
        fast._MEMORY.clear()
    start = time.perf_counter()
    for c in configs:
        engine.estimate(c["model"], batch_size=c["batch"], seq_len=c["seq"])
    elapsed = time.perf_counter() - start
    os.environ.pop("MEMSYM_NO_CACHE", None)
    return len(configs) / elapsed


def peer_rate(python: str | None, configs: list[dict]) -> dict | None:
    if not python:
        return None
    run = subprocess.run([python, "-c", PEER], input=json.dumps(configs), capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"llm-analysis failed: {run.stderr.strip()[-800:]}")
    result = json.loads(run.stdout)
    return {"configs_per_second": round(result["configs"] / result["seconds"])}


def hand_written_rate(cache: str) -> dict:
    """Qwen3-0.6B's total under ``--profile megatron`` as one Python expression vs engine.estimate, on the
    same distinct (b, s)."""
    import engine
    from engine.architecture import count_parameters
    from engine.registry import load_spec

    spec = load_spec("qwen3-0.6b")
    weights = 2 * count_parameters(spec)["parameters"]
    kv = 2 * spec.num_hidden_layers * spec.num_key_value_heads * spec.head_dim * 2
    logits, mlp = spec.vocab_size * 2, 2 * spec.intermediate_size * 2
    rng = random.Random(4)
    points = list({(rng.randint(1, 256), rng.randint(1, 131072)) for _ in range(2 * CONFIGS)})[:CONFIGS]
    start = time.perf_counter()
    hand = [weights + kv * b * s + max(logits * b, mlp * b * s) for b, s in points]
    hand_seconds = time.perf_counter() - start
    os.environ["MEMSYM_CACHE_DIR"] = cache
    megatron = "megatron"  # the hand-written expression is the megatron profile's (the default is transformers)
    engine.estimate("qwen3-0.6b", batch_size=1, seq_len=1, profile=megatron)  # in memory: the per-config cost only
    start = time.perf_counter()
    ours = [engine.estimate("qwen3-0.6b", batch_size=b, seq_len=s, profile=megatron).evaluation.total_bytes
            for b, s in points]
    ours_seconds = time.perf_counter() - start
    if ours != hand:
        raise SystemExit("the hand-written expression disagrees with engine.estimate")
    return {"hand_written_configs_per_second": round(len(points) / hand_seconds),
            "memsym_configs_per_second": round(len(points) / ours_seconds),
            "ratio_memsym_to_hand_written": round(hand_seconds / ours_seconds, 4)}


def in_process(peer_python: str | None) -> dict:
    configs = distinct_configs()
    warm_cache, cold_cache = tempfile.mkdtemp(prefix="memsym-bench-warm-"), tempfile.mkdtemp(prefix="memsym-bench-")
    cold = memsym_rate(configs, cold_cache)
    memsym_rate(configs, warm_cache)  # store every model's evaluator
    warm = memsym_rate(configs, warm_cache)
    hot = memsym_rate(list(reversed(configs)), warm_cache, reset_memory=False)
    symbolic = memsym_rate(configs[:100], None)
    peer = peer_rate(peer_python, configs)
    out = {"configs": len(configs), "models": len({c["model"] for c in configs}),
           "memsym_configs_per_second": {"warm": round(warm), "hot": round(hot), "cold": round(cold),
                                         "no_cache_sympy": round(symbolic)},
           "llm_analysis": peer, "hand_written": hand_written_rate(warm_cache)}
    if peer:
        out["ratio_to_llm_analysis"] = {k: round(v / peer["configs_per_second"], 2)
                                        for k, v in out["memsym_configs_per_second"].items()}
    return out


def grid() -> dict:
    from bench.bench_compiled import compiled_section

    c = compiled_section(5)
    return {"points": c["points"], "ratio_compiled_to_naive": c["ratio_compiled_to_naive"],
            "ratio_compiled_to_factored": c["ratio_compiled_to_factored"],
            "compiled_points_per_second": c["points_per_second"]["compiled"]}


def machine() -> dict:
    import platform

    return {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "load_average": [round(x, 2) for x in os.getloadavg()]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--starts", type=int, default=7, help="fresh processes per command (median)")
    parser.add_argument("--peer-python", default=None, help="the interpreter of llm-analysis's environment")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    results = {"machine": machine(), "cold_cli": cold_cli(args.starts, tempfile.mkdtemp(prefix="memsym-bench-cli-")),
               "in_process": in_process(args.peer_python), "grid": grid()}
    results["machine"]["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    if args.json:
        print(json.dumps(results, indent=2))
        return
    report(results)


def report(results: dict) -> None:
    m, cli = results["machine"], results["cold_cli"]
    print(f"machine: Python {m['python']}, {m['platform']}, {m['cpus']} CPUs, load {m['load_average']} -> "
          f"{m['load_average_after']}")
    print("cold CLI (fresh processes, each after a bare 'python -c \"import numpy, click\"'; median ratio of the pairs)")
    for label, row in cli["commands"].items():
        print(f"  {label:<34} warm cache {row['warm_seconds']:.3f} s = {row['warm_ratio']:.2f}x bare "
              f"({row['bare_seconds']:.3f} s); empty cache {row['cold_seconds']:.3f} s = {row['cold_ratio']:.2f}x")
    p = results["in_process"]
    print(f"in-process, {p['configs']} distinct inference configs over {p['models']} models:")
    for label, rate in p["memsym_configs_per_second"].items():
        ratio = p.get("ratio_to_llm_analysis", {}).get(label)
        print(f"  memsym {label:<16} {rate:>9,} configs/s" + (f" = {ratio}x llm-analysis" if ratio else ""))
    if p["llm_analysis"]:
        print(f"  llm-analysis 0.2.2      {p['llm_analysis']['configs_per_second']:>9,} configs/s")
    h = p["hand_written"]
    print(f"  qwen3-0.6b, 1,000 distinct (b, s): hand-written Python {h['hand_written_configs_per_second']:,}/s, "
          f"memsym {h['memsym_configs_per_second']:,}/s ({h['ratio_memsym_to_hand_written']}x)")
    g = results["grid"]
    print(f"grid ({g['points']:,} points): compiled / hand-written NumPy = {g['ratio_compiled_to_naive']}x the time "
          f"(naive), {g['ratio_compiled_to_factored']}x (factored)")


if __name__ == "__main__":
    main()
