#!/usr/bin/env python3
"""Generate the table of docs/serving.md: the ``vllm`` profile against real vLLM start-up logs.

Reads tests/fixtures/vllm_startup_dev.json (public vLLM start-up records: flags and every
figure vLLM printed), predicts each with :func:`engine.serving.serve` from the record's
own flags, and writes one row per record between the markers of docs/serving.md. The
table is generated, never typed: tests/test_vllm_serving.py checks it is current.

Usage (repository root)::

    python tools/serving_table.py            # rewrite the table in docs/serving.md
    python tools/serving_table.py --check    # exit 1 if docs/serving.md is stale
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from fractions import Fraction

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

FIXTURE = os.path.join(ROOT, "tests", "fixtures", "vllm_startup_dev.json")
DOC = os.path.join(ROOT, "docs", "serving.md")
BEGIN, END = "<!-- serving-table:begin -->", "<!-- serving-table:end -->"
GIB = 2**30
# the record's GPU name -> the catalog id (the oracle's note)
GPUS = {"NVIDIA H100 80GB HBM3": "h100-80gb", "NVIDIA GeForce RTX 3090": "rtx-3090"}


def load() -> dict:
    with open(FIXTURE, encoding="utf-8") as handle:
        return json.load(handle)


def gib(text: str) -> float:
    """'61.66 GiB' / '14.9888 GB' (vLLM's GB is GiB) -> 61.66."""
    return float(text.replace("GiB", "").replace("GB", "").strip())


def logged_tokens(record: dict) -> int:
    logged = record["logged"]
    if "gpu_kv_cache_size_tokens" in logged:
        return int(logged["gpu_kv_cache_size_tokens"].replace(",", ""))
    return int(logged["gpu_blocks"]) * record["block_size"]


def serve_arguments(record: dict, configs: dict, workdir: str) -> dict:
    """The keyword arguments of engine.serving.serve for one record's flags."""
    model = record["model"]
    if model in configs:  # a model the registry lacks: its config.json from the fixture
        path = os.path.join(workdir, model.replace("/", "--"))
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, "config.json"), "w", encoding="utf-8") as handle:
            json.dump(configs[model], handle)
        model = path
    return dict(
        model=model, tp=record["tensor_parallel_size"], pp=record["pipeline_parallel_size"],
        gpu_name=GPUS[record["gpu"]], max_model_len=record["max_model_len"],
        gpu_memory_utilization=Fraction(str(record["gpu_memory_utilization"])),
        kv_cache_dtype=record["kv_cache_dtype"], block_size=record["block_size"],
        version="0.6" if record["vllm_version"].startswith("0.6") else "0.19",
    )


def predict_all() -> list[tuple[dict, object]]:
    """(record, prediction) for every record, in fixture order."""
    from engine.serving import serve

    data = load()
    with tempfile.TemporaryDirectory() as workdir:
        return [(r, serve(**serve_arguments(r, data["configs"], workdir))) for r in data["records"]]


def row(record: dict, prediction) -> tuple[str, dict[str, float]]:
    logged, v = record["logged"], prediction.values
    kv_logged, kv = gib(logged["available_kv_cache_memory"]), v["available_kv_cache_bytes"] / GIB
    tokens_logged, tokens = logged_tokens(record), v["kv_cache_tokens"]
    conc_logged, conc = float(logged["max_concurrency"].rstrip("x")), float(v["max_concurrency"])
    weights_logged = gib(logged.get("weights_memory") or logged["loading_model_weights_took"])
    errors = {"kv_gib": kv - kv_logged, "tokens": tokens / tokens_logged - 1, "concurrency": conc / conc_logged - 1}
    name = record.get("log_file", "").replace(".log", "") or f"{record['model']} ({record['gpu']}, V0)"
    text = (f"| {name} | {record['vllm_version'].split(' ')[0]} | {record['tensor_parallel_size']} | "
            f"{record['kv_cache_dtype']} | {record['max_model_len']:,} | "
            f"{v['weights_bytes'] / GIB:.2f} / {weights_logged:.2f} | {kv:.2f} / {kv_logged:.2f} "
            f"({errors['kv_gib']:+.2f}) | {tokens:,} / {tokens_logged:,} ({100 * errors['tokens']:+.2f} %) | "
            f"{conc:.2f} / {conc_logged:.2f} ({100 * errors['concurrency']:+.2f} %) |")
    return text, errors


def render_table() -> str:
    rows, errors = [], []
    for record, prediction in predict_all():
        text, err = row(record, prediction)
        rows.append(text)
        errors.append(err)
    head = ["| record | vLLM | TP | KV dtype | max_model_len | weights GiB (memsym / log) | "
            "available KV GiB (error) | KV tokens (error) | max concurrency (error) |",
            "|---|---|---|---|---|---|---|---|---|"]
    worst = {key: max(abs(e[key]) for e in errors) for key in errors[0]}
    median = {key: statistics.median(abs(e[key]) for e in errors) for key in errors[0]}
    summary = (f"\nAbsolute error over the {len(rows)} records: available KV median {median['kv_gib']:.2f} GiB, "
               f"worst {worst['kv_gib']:.2f} GiB; KV tokens median {100 * median['tokens']:.2f} %, worst "
               f"{100 * worst['tokens']:.2f} %; max concurrency median {100 * median['concurrency']:.2f} %, "
               f"worst {100 * worst['concurrency']:.2f} %.")
    return "\n".join(head + rows) + "\n" + summary + "\n"


# hybrid and recurrent registry models on one H100 at 32k tokens (engine/profiles/vllm_hybrid.py)
HYBRID_BEGIN, HYBRID_END = "<!-- hybrid-table:begin -->", "<!-- hybrid-table:end -->"
HYBRID_RUNS = (("qwen3-next-80b-a3b", 4), ("jamba-v0.1", 2), ("bamba-9b", 1), ("mamba-2.8b", 1),
               ("nemotron-nano-9b-v2", 1), ("nemotron-3-nano-30b-a3b", 1), ("granite-4.0-h-tiny", 1),
               ("granite-4.0-h-1b", 1), ("falcon-h1-7b-instruct", 1), ("mamba-codestral-7b-v0.1", 1))
HYBRID_LEN = 32768


def render_hybrid_table() -> str:
    """One row per recurrent registry model: pages, groups and the start-up figures."""
    from engine.serving import serve

    rows = ["| model | TP | recurrent kind | state page B | attention block | page B | groups x layers | "
            "KV tokens | max concurrency @ 32k | state per request MiB |", "|---|---|---|---|---|---|---|---|---|---|"]
    for model, tp in HYBRID_RUNS:
        p = serve(model, tp=tp, gpu_name="h100-80gb", max_model_len=HYBRID_LEN)
        v, q = p.values, p.worker
        block = v["attention_block_size"] or "none (MambaSpec only)"
        rows.append(f"| {model} | {tp} | {q.model.inputs['recurrent_kind']} | {v['state_page_bytes']:,} | {block} | "
                    f"{v['page_bytes']:,} | {q.value('num_groups')} x {q.value('layers_per_block')} | "
                    f"{v['kv_cache_tokens']:,} | {float(v['max_concurrency']):.2f} | "
                    f"{v['state_bytes_per_request'] / 2**20:.1f} |")
    return "\n".join(rows) + "\n"


def _splice(text: str, begin: str, end: str, body: str) -> str:
    before, rest = text.split(begin, 1)
    _, after = rest.split(end, 1)
    return f"{before}{begin}\n{body}{end}{after}"


def render() -> str:
    """docs/serving.md with its tables regenerated."""
    with open(DOC, encoding="utf-8") as handle:
        text = handle.read()
    text = _splice(text, BEGIN, END, render_table())
    return _splice(text, HYBRID_BEGIN, HYBRID_END, render_hybrid_table()) if HYBRID_BEGIN in text else text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/serving.md is not up to date")
    args = parser.parse_args()
    text = render()
    with open(DOC, encoding="utf-8") as handle:
        current = handle.read()
    if args.check:
        if current != text:
            print("docs/serving.md is stale: run python tools/serving_table.py", file=sys.stderr)
            return 1
        return 0
    with open(DOC, "w", encoding="utf-8") as handle:
        handle.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
