"""Benchmark of memsym's compiled NumPy functions and of the CLI's cold start (not a test).

In one run:

1. the compiled total of Qwen3-0.6B (inference, bf16) over a 1000 x 10,000 grid of
   (batch_size, seq_len), a column against a row: points per second, best of --repeat;
2. the same formula hand-written in NumPy in the same process, twice: as one would first
   write it (``W + K b s + maximum(A b, F b s)``) and factored by hand
   (``W + b (K s + maximum(A, F s))``), with the compiled/hand-written time ratio; the three
   results are checked equal;
3. the compiled totals of a training model and of a sliding-window, paged model on the
   same grid (no hand-written baseline);
4. the cold start of ``memsym --help``, ``memsym estimate`` and ``memsym solve``: wall time
   of a fresh process, median of --starts.

Usage: python bench/bench_compiled.py [--repeat 7] [--starts 5] [--json]
Results and the machine they came from: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time

import numpy

BATCHES, SEQ_LENS = 1000, 10_000


def best_time(function, repeat: int) -> float:
    function()  # warm up: first-touch page faults, caches
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def grid():
    batch = numpy.arange(1, BATCHES + 1, dtype=numpy.int64)[:, None]
    seq = 16 * numpy.arange(1, SEQ_LENS + 1, dtype=numpy.int64)[None, :]  # 16 .. 160,000 tokens
    return batch, seq


def hand_written_qwen3():
    """Qwen3-0.6B's inference total written out by hand from its config.json (bf16 = 2 bytes)."""
    from engine.architecture import count_parameters
    from engine.registry import load_spec

    spec = load_spec("qwen3-0.6b")
    weights = 2 * count_parameters(spec)["parameters"]
    kv = 2 * spec.num_hidden_layers * spec.num_key_value_heads * spec.head_dim * 2  # K and V, bytes per token
    logits = spec.vocab_size * 2  # the last position's logits
    mlp = 2 * spec.intermediate_size * 2  # gate and up projections of one token

    def naive(b, s):
        b, s = b.astype(numpy.float64), s.astype(numpy.float64)
        return weights + kv * b * s + numpy.maximum(logits * b, mlp * b * s)

    def factored(b, s):
        b, s = b.astype(numpy.float64), s.astype(numpy.float64)
        return weights + b * (kv * s + numpy.maximum(logits, mlp * s))

    return naive, factored


def compiled_section(repeat: int) -> dict:
    from engine.api import memory_model
    from engine.numeric import compile_model

    batch, seq = grid()
    points = batch.size * seq.size
    _, mm = memory_model("qwen3-0.6b", batch_size=None, seq_len=None, profile="megatron")  # the hand-written formula
    start = time.perf_counter()
    total = compile_model(mm)
    compile_seconds = time.perf_counter() - start
    naive, factored = hand_written_qwen3()
    reference = total(batch_size=batch, seq_len=seq)
    for other in (naive(batch, seq), factored(batch, seq)):
        if not numpy.allclose(reference, other, rtol=1e-15, atol=0):
            raise SystemExit("the hand-written formulas disagree with the compiled one")
    seconds = {
        "compiled": best_time(lambda: total(batch_size=batch, seq_len=seq), repeat),
        "hand_written_naive": best_time(lambda: naive(batch, seq), repeat),
        "hand_written_factored": best_time(lambda: factored(batch, seq), repeat),
    }
    out = {"grid": [BATCHES, SEQ_LENS], "points": points, "compile_seconds": round(compile_seconds, 3),
           "source": total.source, "seconds": {k: round(v, 5) for k, v in seconds.items()},
           "points_per_second": {k: round(points / v) for k, v in seconds.items()},
           "ratio_compiled_to_naive": round(seconds["compiled"] / seconds["hand_written_naive"], 3),
           "ratio_compiled_to_factored": round(seconds["compiled"] / seconds["hand_written_factored"], 3)}
    others = {"llama-3.1-8b training": ("llama-3.1-8b", {"mode": "training"}),
              "gemma-2-9b paged (block 16)": ("gemma-2-9b", {"block_size": 16}),
              "deepseek-v3 eager attention": ("deepseek-v3", {"attention": "eager"})}
    out["other_models_points_per_second"] = {}
    for label, (model, knobs) in others.items():
        function = compile_model(memory_model(model, batch_size=None, seq_len=None, **knobs)[1])
        elapsed = best_time(lambda: function(batch_size=batch, seq_len=seq), repeat)
        out["other_models_points_per_second"][label] = round(points / elapsed)
    return out


def cold_starts(starts: int) -> dict:
    launcher = [shutil.which("memsym")] if shutil.which("memsym") else [sys.executable, "-c",
                                                                         "import cli; cli.main()"]
    commands = {
        "memsym --help": ["--help"],
        "memsym estimate --model qwen3-0.6b --seq-len 2048": ["estimate", "--model", "qwen3-0.6b", "--seq-len", "2048"],
        "memsym solve seq-len --model qwen3-0.6b --budget 24GB": ["solve", "seq-len", "--model", "qwen3-0.6b",
                                                                 "--budget", "24GB"],
    }
    out = {}
    for label, args in commands.items():
        times = []
        for _ in range(starts):
            start = time.perf_counter()
            run = subprocess.run(launcher + args, capture_output=True, text=True)
            times.append(time.perf_counter() - start)
            if run.returncode != 0:
                raise SystemExit(f"{label} failed: {run.stderr.strip()}")
        out[label] = {"median_seconds": round(statistics.median(times), 3), "min_seconds": round(min(times), 3)}
    return out


def machine() -> dict:
    return {"python": platform.python_version(), "numpy": numpy.__version__, "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(), "cpus": os.cpu_count()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7, help="timed runs per function (best is kept)")
    parser.add_argument("--starts", type=int, default=5, help="fresh processes per CLI command (median)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    results = {"machine": machine(), "compiled": compiled_section(args.repeat), "cold_start": cold_starts(args.starts)}
    if args.json:
        print(json.dumps(results, indent=2))
        return
    c = results["compiled"]
    print(f"machine: {results['machine']}")
    print(f"grid {BATCHES} x {SEQ_LENS:,} = {c['points']:,} points; compile() took {c['compile_seconds']} s")
    for name, rate in c["points_per_second"].items():
        print(f"  {name:<24} {c['seconds'][name] * 1e3:8.1f} ms  {rate / 1e6:8.1f} M points/s")
    print(f"  compiled / naive hand-written: {c['ratio_compiled_to_naive']}x the time; "
          f"compiled / factored by hand: {c['ratio_compiled_to_factored']}x")
    for label, rate in c["other_models_points_per_second"].items():
        print(f"  {label:<32} {rate / 1e6:8.1f} M points/s")
    print("cold start (fresh process):")
    for label, t in results["cold_start"].items():
        print(f"  {label:<56} median {t['median_seconds']:.3f} s  min {t['min_seconds']:.3f} s")
    print("compiled source:\n" + c["source"])


if __name__ == "__main__":
    main()
