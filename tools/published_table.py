#!/usr/bin/env python3
"""Generate the 'published measurements' table of docs/training.md from
tests/fixtures/published_training.json.

Every expressible row is predicted with its memsym flags and compared in the column its
figure is: ``reserved`` figures against ``reserved_bytes`` (max_memory_reserved),
``allocated`` / ``active`` ones against ``total_bytes`` (max_memory_allocated). The rows are a
validation set, not a fitting target. tests/test_published_training.py checks that the page
holds what this script produces now.

Usage (repository root)::

    python tools/published_table.py            # rewrite the table in docs/training.md
    python tools/published_table.py --check    # exit 1 if it is stale
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

FIXTURE = os.path.join(ROOT, "tests", "fixtures", "published_training.json")
DOC = os.path.join(ROOT, "docs", "training.md")
START, END = "<!-- published-table:start -->", "<!-- published-table:end -->"


def load() -> dict:
    with open(FIXTURE, encoding="utf-8") as handle:
        return json.load(handle)


def predict(record: dict, configs: dict) -> dict:
    """The row's prediction: allocated, reserved, the compared value, its error and peak phase."""
    from engine.families import spec_from_config
    from engine.profiles import build
    from engine.registry import load_spec
    from engine.scenario import Scenario

    name = record["model"]
    if name in configs:
        spec = spec_from_config({k: v for k, v in configs[name].items() if not k.startswith("_")}, name)
    else:
        spec = load_spec(name)
    flags = {k: tuple(v) if isinstance(v, list) else v for k, v in record["flags"].items()}
    ev = build(spec, Scenario(**flags)).evaluate()
    compared = ev.reserved_bytes if record["metric"] == "reserved" else ev.total_bytes
    return {"allocated": ev.total_bytes, "reserved": ev.reserved_bytes, "compared": compared,
            "error": compared / record["measured_bytes"] - 1, "phase": ev.peak_phase}


def flags_text(flags: dict) -> str:
    """The command-line spelling of the row's knobs (engine.scenario.KNOBS)."""
    from engine.scenario import knob

    shown = {k: v for k, v in flags.items() if k not in ("mode", "profile")}
    def value(v) -> str:
        return "" if v is True else " " + (",".join(v) if isinstance(v, list) else str(v))

    return " ".join(knob(k).flag + value(v) for k, v in shown.items())


def table() -> str:
    doc = load()
    lines = ["| row | source | flags (`--profile` the row's framework) | published | metric | memsym allocated "
             "| memsym reserved | error | peak phase |", "|---|---|---|---:|---|---:|---:|---:|---|"]
    errors, skipped = [], []
    for record in doc["records"]:
        if not record["expressible"]:
            skipped.append(record)
            continue
        p = predict(record, doc["configs"])
        errors.append(abs(p["error"]))
        lines.append(f"| {record['id']} | {record['source_location']} | `{flags_text(record['flags'])}` | "
                     f"{record['figure']} {record['unit']} | {record['metric']} | {p['allocated'] / 2**30:.2f} GiB | "
                     f"{p['reserved'] / 2**30:.2f} GiB | {p['error']:+.1%} | {p['phase']} |")
    within = sum(e <= 0.15 for e in errors)
    lines += ["", f"{len(errors)} expressible rows: median |error| {statistics.median(errors):.1%}, "
              f"{within} of {len(errors)} within 15 %, worst {max(errors):.1%}. "
              f"{len(skipped)} rows not expressible:", ""]
    for record in skipped:
        lines.append(f"- {record['id']} ({record['figure']} {record['unit']}, {record['settings']}): {record['note']}")
    return "\n".join(lines)


def render(text: str) -> str:
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{table()}\n{END}{tail}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/training.md is stale")
    args = parser.parse_args()
    with open(DOC, encoding="utf-8") as handle:
        text = handle.read()
    fresh = render(text)
    if args.check:
        return 0 if fresh == text else 1
    with open(DOC, "w", encoding="utf-8") as handle:
        handle.write(fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
