#!/usr/bin/env python3
"""Print docs/training.md's torchtune table: every published row of tests/test_torchtune.py
(shared/oracles/training-dev.json) with memsym's prediction, error, peak phase and reserve.

Usage: ``python tools/torchtune_table.py`` (from the repository root) -> Markdown rows on stdout.
"""
from __future__ import annotations

import os
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from engine.families import spec_from_config  # noqa: E402
from engine.profiles import build  # noqa: E402
from engine.scenario import Scenario  # noqa: E402


def _unit(record: dict) -> tuple[str, int]:
    return ("GiB", 2**30) if record["measured"]["unit"] == "GiB" else ("GB", 10**9)


def main() -> int:
    import test_torchtune as T  # the rows' flags live with their test

    records = T._records()
    print("| row | measured | memsym | error | peak phase | memsym reserved |")
    print("|---|---:|---:|---:|---|---:|")
    for record_id in T.FLAGS:
        record = records[record_id]
        config = {k: v for k, v in record["config_fields"].items() if not k.startswith("_")}
        scenario = Scenario(mode="training", profile="torchtune", batch_size=record["micro_batch"],
                            seq_len=record["seq_len"], **T.FLAGS[record_id])
        evaluation = build(spec_from_config(config, record["config"]), scenario).evaluate()
        unit, size = _unit(record)
        error = evaluation.total_bytes / record["measured_bytes"] - 1
        print(f"| {record_id} | {record['measured']['value']} {unit} | {evaluation.total_bytes / size:.2f} {unit} "
              f"| {error:+.1%} | {evaluation.peak_phase} | {evaluation.reserved_bytes / size:.2f} {unit} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
