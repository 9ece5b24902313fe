"""Budgets: byte strings, the GPU catalog, utilization and the CLI's budget flags."""

from __future__ import annotations

import json
import re
from fractions import Fraction
from pathlib import Path

import pytest

from engine.errors import InputError
from engine.gpus import Budget, catalog, gpu, make_budget, parse_utilization
from engine.units import parse_bytes

GPU_DATA = Path(__file__).parent.parent / "engine" / "data" / "gpus.json"
REQUIRED_GPUS = ("rtx-3090", "rtx-4090", "rtx-5090", "l4", "l40s", "a10g", "v100-16gb", "v100-32gb",
                 "a100-40gb", "a100-80gb", "h100-80gb", "h200", "b200", "mi300x")


@pytest.mark.parametrize("text, expected", [
    ("24GB", 24 * 10**9),
    ("24GiB", 24 * 2**30),
    ("1.5TB", 15 * 10**11),
    ("80e9", 80 * 10**9),
    ("24 gib", 24 * 2**30),
    ("512MiB", 512 * 2**20),
    ("1e3KB", 10**6),
])
def test_parse_bytes_accepts_decimal_and_binary_units(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["24XB", "", "GB", "-1GB", "24 G", "0", "1e999", "nan", "inf", "24GB!",
                                  "\u0662\u0664GB", "1_000GB", "0x10GB"])
def test_parse_bytes_rejects_everything_else(text):
    with pytest.raises(InputError, match="--budget"):
        parse_bytes(text)


def test_catalog_has_every_required_gpu_with_exact_bytes_and_sources():
    rows = json.loads(GPU_DATA.read_text())
    assert "format" in rows and "convention" in rows
    names = [r["name"] for r in rows["gpus"]]
    assert set(REQUIRED_GPUS) <= set(names)
    spellings = [s for r in rows["gpus"] for s in (r["name"], *r["aliases"])]
    assert len(spellings) == len(set(spellings)), "a name or alias is used twice"
    for r in rows["gpus"]:
        assert r["memory_bytes"] == r["reported_mib"] * 2**20, r["name"]
        assert r["datasheet_url"].startswith("https://"), r["name"]
        assert (r["reported_source"] or "").startswith("https://") or r["estimate"], r["name"]


@pytest.mark.parametrize("name", REQUIRED_GPUS)
def test_reported_memory_lies_between_the_datasheet_in_gb_and_in_gib(name):
    """What the driver reports is at most the datasheet figure read as GiB, and near it read as GB."""
    entry = catalog()[name]
    stated = Fraction(re.match(r"[\d.]+", entry.datasheet_memory).group())
    assert stated * 10**9 * Fraction(9, 10) <= entry.memory_bytes <= stated * 2**30


def test_documented_figures():
    assert gpu("h100-80gb").memory_bytes == 85_520_809_984  # nvidia-smi 81559 MiB
    assert gpu("a100-80gb").memory_bytes == 80 * 2**30


@pytest.mark.parametrize("spelling, name", [("H100", "h100-80gb"), ("RTX 4090", "rtx-4090"), ("rtx_3090", "rtx-3090"),
                                            ("MI300X", "mi300x"), ("v100-16gb", "v100-16gb")])
def test_gpu_names_and_aliases(spelling, name):
    assert gpu(spelling).name == name


def test_unknown_gpu_suggests_close_names():
    with pytest.raises(InputError, match=r"unknown GPU 'h100x'; did you mean h100"):
        gpu("h100x")


@pytest.mark.parametrize("text, expected", [("0.9", Fraction(9, 10)), ("1", Fraction(1)), (".95", Fraction(19, 20))])
def test_utilization_is_an_exact_fraction(text, expected):
    assert parse_utilization(text) == expected


@pytest.mark.parametrize("text", ["0", "1.5", "-0.1", "abc", "1e-1", "0.9x", ""])
def test_utilization_out_of_range_or_unreadable(text):
    with pytest.raises(InputError, match="--gpu-memory-utilization"):
        parse_utilization(text)


def test_per_gpu_bytes_floor_the_usable_fraction():
    budget = make_budget(gpu_name="rtx-4090", utilization="0.9")
    assert budget.per_gpu_bytes == 23_181_498_777  # 25,757,220,864 x 0.9 = 23,181,498,777.6
    assert make_budget("24GB", num_gpus=4).per_gpu_bytes == 24 * 10**9


@pytest.mark.parametrize("kwargs, message", [
    ({}, "exactly one of --budget"),
    ({"budget": "24GB", "gpu_name": "h100"}, "exactly one of --budget"),
    ({"budget": "24GB", "num_gpus": 0}, "--num-gpus"),
    ({"budget": 0}, "--budget"),
])
def test_bad_budgets(kwargs, message):
    with pytest.raises(InputError, match=message):
        make_budget(**kwargs)


def test_budget_is_validated_on_construction():
    with pytest.raises(InputError, match="--num-gpus"):
        Budget(10**9, num_gpus=True)


@pytest.mark.parametrize("args, message", [
    (["--budget", "24XB"], "--budget: cannot read '24XB'"),
    (["--gpu", "rtx4090x"], "did you mean rtx-4090"),
    (["--budget", "24GB", "--num-gpus", "0"], "--num-gpus"),
    (["--budget", "24GB", "--gpu-memory-utilization", "1.5"], "--gpu-memory-utilization"),
    (["--budget", "24GB", "--reserve", "lots"], "--reserve"),
    (["--budget", "1GB"], "too small"),
])
def test_cli_bad_budget_is_one_line_and_exit_2(run_cli, args, message):
    result = run_cli("solve", "seq-len", "--model", "qwen3-0.6b", *args, "--profile", "megatron", "--json")
    assert result.exit_code == 2
    assert message in result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("memsym: error: ")
    assert message in json.loads(result.stdout)["error"]


def test_reserve_is_shown_and_paid_per_gpu(run_cli):
    plain = json.loads(run_cli("solve", "concurrency", "--model", "qwen3-0.6b", "--budget", "24GB",
                                 "--profile", "megatron", "--json").stdout)
    reserved = json.loads(run_cli("solve", "concurrency", "--model", "qwen3-0.6b", "--budget", "24GB",
                                  "--reserve", "1GB", "--profile", "megatron", "--json").stdout)
    assert plain["inputs"]["reserve_bytes"] == 0 and reserved["inputs"]["reserve_bytes"] == 10**9
    assert reserved["terms_at_value"]["overhead"] == 10**9
    assert reserved["value"] < plain["value"]
    assert reserved["total_bytes_at_value"] <= 24 * 10**9 < reserved["total_bytes_at_next"]


def test_gpus_command_lists_the_catalog(run_cli):
    result = run_cli("gpus", "--json")
    assert result.exit_code == 0
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert rows["h100-80gb"]["memory_bytes"] == 85_520_809_984


def test_every_total_is_either_a_linked_log_or_a_stated_estimate():
    """No silent number: each GPU's total has a public log (https) or an estimate with its rule and uncertainty."""
    rows = json.loads(GPU_DATA.read_text())["gpus"]
    for r in rows:
        assert "re-measure" not in (r["note"] or ""), r["name"]
        if r["reported_source"]:
            assert r["reported_source"].startswith("https://") and r["estimate"] is None, r["name"]
        else:
            assert "uncertainty" in r["estimate"] or "bounds" in r["estimate"], r["name"]
        if r["cuda_total_bytes"] is not None:
            assert r["cuda_total_bytes"] <= r["memory_bytes"] and r["cuda_total_source"], r["name"]


def test_an_estimated_gpu_says_so_in_the_answer_and_its_json(run_cli):
    text = run_cli("solve", "--profile", "megatron", "seq-len", "--model", "qwen3-0.6b", "--gpu", "l40").stdout
    assert "estimate: l40: 48,305,799,168 B is an estimate" in text and "uncertainty" in text
    measured = run_cli("solve", "--profile", "megatron", "seq-len", "--model", "qwen3-0.6b", "--gpu", "l40s").stdout
    assert "estimate" not in measured
    data = json.loads(run_cli("solve", "--profile", "megatron", "seq-len", "--model", "qwen3-0.6b", "--gpu", "h20",
                              "--json").stdout)
    assert "GH200" in json.dumps(data)
    served = run_cli("solve", "seq-len", "--model", "qwen3-0.6b", "--gpu", "h20").stdout
    assert "h20: 102,625,181,696 B is an estimate" in served
    assert "* an estimate" in run_cli("gpus").stdout
    unlinked = run_cli("solve", "seq-len", "--model", "qwen3-0.6b", "--gpu", "h200").stdout
    assert "h200: cudaMemGetInfo total 139.80 GiB (an estimate: no public log linked)" in unlinked
    linked = run_cli("solve", "seq-len", "--model", "qwen3-0.6b", "--gpu", "a40").stdout
    assert "a40: cudaMemGetInfo total 44.34 GiB;" in linked  # 47,608,692,736 B from a linked deviceQuery


def test_catalog_figures_from_linked_logs():
    assert gpu("mi300x").memory_bytes == 206_141_652_992  # rocminfo pool 201310208 KB
    assert gpu("a40").cuda_total_bytes == 47_608_692_736  # deviceQuery totalGlobalMem
    assert gpu("gh200").reported_source.startswith("https://github.com/hu-po/warp-ik/")
