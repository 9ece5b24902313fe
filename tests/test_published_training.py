"""tests/fixtures/published_training.json: published training peaks held apart from the dev
oracle (torchtitan's own benchmarks, torchtune's tables and tutorials), each compared in the
column its figure is (reserved vs allocated). A validation set, not a fitting target: the test
checks the rows are well-formed and expressible ones build, and that docs/training.md holds the
table tools/published_table.py produces now (the errors are reported there, not bounded here)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UNITS = {"GiB": 2**30, "GB": 10**9}


def _tool():
    spec = importlib.util.spec_from_file_location("published_table", ROOT / "tools" / "published_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_row_names_its_source_metric_and_bytes():
    doc = _tool().load()
    ids = [r["id"] for r in doc["records"]]
    assert len(ids) == len(set(ids))
    for r in doc["records"]:
        assert r["source_url"].startswith("https://github.com/") and r["source_location"], r["id"]
        assert r["metric"].split(" ")[0] in ("reserved", "allocated", "active", "'Peak"), r["id"]
        assert r["measured_bytes"] == round(r["figure"] * UNITS[r["unit"]]), r["id"]
        assert (r["flags"] is not None) == r["expressible"], r["id"]
        if not r["expressible"]:
            assert r["note"].startswith("not expressible"), r["id"]


def test_reserved_rows_compare_against_reserved_bytes():
    tool = _tool()
    doc = tool.load()
    record = next(r for r in doc["records"] if r["id"] == "titan-t1-fsdp")
    predicted = tool.predict(record, doc["configs"])
    assert predicted["compared"] == predicted["reserved"] >= predicted["allocated"]


def test_context_parallel_ranks_share_the_fsdp_shards():
    """torchtitan shards over dp_shard x cp (Table 2's four rows hold the same state per GPU)."""
    tool = _tool()
    doc = tool.load()
    rows = [tool.predict(r, doc["configs"]) for r in doc["records"] if r["id"].startswith("titan-t2-")]
    assert len({p["allocated"] for p in rows}) == 1


def test_docs_table_is_current():
    tool = _tool()
    text = (ROOT / "docs" / "training.md").read_text(encoding="utf-8")
    assert tool.START in text and tool.END in text
    assert tool.render(text) == text, "run python tools/published_table.py"


# --- torchtune's README tables whose settings are stated ------------------------------------

# Each row's error as measured when the rows were made expressible (memsym allocated vs the
# figure), held to within one percentage point: the rows are a validation set, these pin the
# predictions, not a fit. PR #955 (README at 0217d44c2, May 2024) and the April 2024 tables,
# prose and tutorials: --torchtune-release 0.2; PR #1664 (30b8519e8, Sept 2024: batch 2, packed 2048,
# compile): the recipes modelled by default.
TUNE_ERRORS = {
    "tune955-7b-qlora-4090": -0.150, "tune955-7b-lora-4090": -0.062, "tune955-7b-lora-2x4090": -0.126,
    "tune955-7b-full-4090": -0.166, "tune955-7b-full-4x4090": -0.268, "tune955-70b-lora": 0.983,
    "tune955-70b-full": -0.225,
    "tune-readme-8b-full-4090": 0.058, "tune-readme-8b-full-a6000": -0.465, "tune-readme-8b-lora-4090": 0.058,
    "tune-readme-8b-lora-a6000": -0.434, "tune-readme-8b-qlora-4090": 0.026, "tune-readme-70b-full": 0.109,
    "tune-readme-70b-lora": 0.095, "tune-readme-405b-qlora": 0.360,
    "tune-qlora-tut-lora-train": -0.081, "tune-qlora-tut-qlora-train": -0.463, "tune-lora-tut-qv-r8": -0.081,
    "tune-lora-tut-all-r8": -0.091, "tune-lora-tut-qv-r64": -0.086, "tune-lora-tut-all-r64": -0.104,
    "tune775-7b-qlora-4090": -0.441, "tune775-7b-lora-2x4090": -0.316, "tune775-7b-lora-4090": -0.167,
    "tune775-7b-full-4090": -0.044, "tune775-7b-full-4x4090": -0.241, "tune775-7b-qlora-prose": -0.485,
    "tune775-7b-lora-prose": -0.163, "tune793-8b-qlora-prose": -0.088, "tune793-8b-lora-prose": -0.028,
    "tune793-llama3-tut-lora": -0.002,
}
TUNE_DRIFT = 0.01


def test_tune_rows_with_stated_settings_stay_where_measured():
    tool = _tool()
    doc = tool.load()
    rows = {r["id"]: r for r in doc["records"] if r["framework"] == "torchtune" and r["expressible"]}
    assert sorted(rows) == sorted(TUNE_ERRORS)
    for record_id, expected in TUNE_ERRORS.items():
        record = rows[record_id]
        if record_id.startswith("tune955-"):
            assert record["flags"]["torchtune_release"] == "0.2", record_id
            assert record["flags"]["batch_size"] == 4 and record["flags"]["seq_len"] in (2048, 4096), record_id
        elif record_id.startswith(("tune-lora-tut", "tune-qlora-tut", "tune775-", "tune793-")):
            # April 2024 configs: batch 2, alpaca capped at max_seq_len 512
            assert record["flags"]["torchtune_release"] == "0.2", record_id
            assert record["flags"]["batch_size"] == 2 and record["flags"]["seq_len"] == 512, record_id
        else:  # the README's note: batch 2, packed to 2048, compiled
            assert record["flags"]["batch_size"] == 2 and record["flags"]["seq_len"] == 2048, record_id
            assert record["flags"]["torch_compile"] and "torchtune_release" not in record["flags"], record_id
        error = tool.predict(record, doc["configs"])["error"]
        assert abs(error - expected) <= TUNE_DRIFT, f"{record_id}: {error:+.1%} (was {expected:+.1%})"


def test_fsdp_cpu_offload_leaves_the_offloaded_state_out_of_reserved():
    """tune-readme-70b-full (fsdp_cpu_offload): the host-side parameters, gradients and state
    are not device tensors, so the caching allocator's reserved stays near the allocated peak."""
    tool = _tool()
    doc = tool.load()
    predicted = tool.predict(next(r for r in doc["records"] if r["id"] == "tune-readme-70b-full"), doc["configs"])
    assert predicted["allocated"] <= predicted["reserved"] < 1.01 * predicted["allocated"]


def test_tune955_70b_lora_figure_is_below_what_its_stated_settings_hold():
    """80 checkpointed layer inputs of 4 x 4096 x 8192 bf16 and the 1/8 shard of the bf16 weights
    alone exceed 26.4 GB: the row's +96 % is its settings, not a missing term."""
    tool = _tool()
    doc = tool.load()
    record = next(r for r in doc["records"] if r["id"] == "tune955-70b-lora")
    from engine.families import spec_from_config
    from engine.profiles import build
    from engine.scenario import Scenario

    config = {k: v for k, v in doc["configs"]["llama-2-70b"].items() if not k.startswith("_")}
    flags = {k: tuple(v) if isinstance(v, list) else v for k, v in record["flags"].items()}
    terms = build(spec_from_config(config, "llama-2-70b"), Scenario(**flags)).evaluate().terms
    assert terms["activations/layers"] == 80 * 2 * 4 * 4096 * 8192
    assert terms["weights"] + terms["activations/layers"] > record["measured_bytes"]
