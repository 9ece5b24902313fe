"""Issue 14: the spellings people type are read and echoed; JSON numbers are numbers."""

from __future__ import annotations

import json
import re

import pytest

from engine.gpus import make_budget
from engine.scenario import Scenario
from engine.units import parse_bytes, size_reading

NUMBER_TEXT = re.compile(r"^-?\d+(?:/\d+|\.\d+)?$")
# keys whose strings are expressions or exact/decimal renderings beside a JSON number
TEXT_KEYS = {"derivative", "latex", "closed_form", "expression", "coefficient", "monomial", "C0", "C1", "C2",
             "branches", "value_decimal", "elasticity_decimal", "aliases"}


@pytest.mark.parametrize("args, flag, meant", [
    (["--dtype", "bf16"], "--dtype", "bfloat16"),
    (["--dtype", "half"], "--dtype", "float16"),
    (["--dtype", "fp16"], "--dtype", "float16"),
    (["--dtype", "fp32"], "--dtype", "float32"),
    (["--dtype", "auto"], "--dtype", "bfloat16"),  # Qwen3-0.6B's torch_dtype
    (["--kv-cache-dtype", "fp8"], "--kv-cache-dtype", "float8"),
    (["--kv-cache-dtype", "fp8_e4m3"], "--kv-cache-dtype", "float8"),
    (["--kv-cache-dtype", "fp8_e5m2"], "--kv-cache-dtype", "float8"),
])
def test_dtype_spellings_are_accepted_and_echoed(run_cli, args, flag, meant):
    data = json.loads(run_cli("estimate", "--model", "qwen3-0.6b", *args, "--json").stdout)
    key = "dtype" if flag == "--dtype" else "kv_cache_dtype"
    assert data["inputs"][key] == meant
    assert data["inputs"]["read_as"][flag].startswith(f"{args[1]} read as {meant}")
    canonical = json.loads(run_cli("estimate", "--model", "qwen3-0.6b", flag, meant, "--json").stdout)
    assert canonical["total_bytes"] == data["total_bytes"] and "read_as" not in canonical["inputs"]
    text = run_cli("estimate", "--model", "qwen3-0.6b", *args).stdout
    assert f"read as: {flag} {args[1]} read as {meant}" in text


def test_kv_auto_and_all_linear_read_as_their_defaults(run_cli):
    auto = json.loads(run_cli("estimate", "--model", "qwen3-0.6b", "--kv-cache-dtype", "auto", "--json").stdout)
    plain = json.loads(run_cli("estimate", "--model", "qwen3-0.6b", "--json").stdout)
    assert auto["total_bytes"] == plain["total_bytes"] and "vLLM's auto" in auto["inputs"]["read_as"]["--kv-cache-dtype"]
    lora = ["estimate", "--model", "qwen3-0.6b", "--mode", "training", "--lora-rank", "8", "--json"]
    linear = json.loads(run_cli(*lora, "--lora-targets", "all-linear").stdout)
    assert linear["total_bytes"] == json.loads(run_cli(*lora).stdout)["total_bytes"]
    assert "lm_head excepted" in linear["inputs"]["read_as"]["--lora-targets"]


def test_dtype_auto_without_a_torch_dtype_is_one_line(run_cli, tmp_path):
    config = json.loads(run_cli("estimate", "--model", "qwen3-0.6b", "--json").stdout)  # a model that works
    from engine.registry import find

    body = dict(find("qwen3-0.6b").config)
    body.pop("torch_dtype", None)
    body.pop("dtype", None)
    (tmp_path / "config.json").write_text(json.dumps(body))
    result = run_cli("estimate", "--config", str(tmp_path / "config.json"), "--dtype", "auto")
    assert result.exit_code == 2 and "--dtype auto" in result.stderr and "torch_dtype" in result.stderr
    assert config["total_bytes"] > 0


def test_bare_size_suffixes_follow_vllm_and_say_so(run_cli):
    assert parse_bytes("24G") == 24 * 2**30 and parse_bytes("24g") == 24 * 10**9
    assert parse_bytes("512M") == 512 * 2**20 and size_reading("24GB") is None
    assert "GiB" in size_reading("24G") and "binary" in size_reading("24G")
    assert make_budget("24G").as_inputs()["budget_read_as"].startswith("24G read as 24 GiB")
    result = run_cli("solve", "seq-len", "--model", "qwen3-0.6b", "--budget", "24G")
    assert result.exit_code == 0 and "24G read as 24 GiB = 25,769,803,776 B" in result.stdout
    data = json.loads(run_cli("solve", "seq-len", "--model", "qwen3-0.6b", "--budget", "24G", "--json").stdout)
    assert data["budget_bytes"] == 24 * 2**30


def test_float8_weights_keep_a_16_bit_kv_cache_unless_told():
    assert Scenario(dtype="float8").kv_bytes() == 2 and Scenario(dtype="float8").kv_dtype_name() == "bfloat16"
    assert Scenario(dtype="float8", kv_cache_dtype="fp8").kv_bytes() == 1
    assert Scenario(dtype="float32").kv_bytes() == 4


def _strings_that_are_numbers(node, key=None, path=""):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _strings_that_are_numbers(v, k, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _strings_that_are_numbers(v, key, f"{path}[{i}]")
    elif isinstance(node, str) and NUMBER_TEXT.match(node) and key not in TEXT_KEYS and not key.endswith("_exact"):
        yield f"{path} = {node!r}"


JSON_COMMANDS = [
    ["models"], ["gpus"],
    ["estimate", "--model", "qwen3-0.6b", "--allocator-fraction", "0.05"],
    ["estimate", "--model", "llama-3.1-8b", "--mode", "training", "--zero", "3", "--dp", "8"],
    ["solve", "seq-len", "--model", "qwen3-0.6b", "--gpu", "h100-80gb", "--gpu-memory-utilization", "0.9"],
    ["solve", "concurrency", "--model", "qwen3-0.6b", "--budget", "24G"],
    ["solve", "tp", "--model", "llama-3.1-70b", "--gpu", "h100-80gb"],
    ["solve", "num-gpus", "--model", "llama-3.1-8b", "--mode", "training", "--gpu", "a100-80gb"],
    ["solve", "seq-len", "--symbolic"],
    ["plan", "--model", "gpt2", "--mode", "training", "--budget", "2GB", "--max-gpus", "4"],
    ["formula", "--model", "qwen3-0.6b"],
    ["diff", "--wrt", "batch-size", "--model", "qwen3-0.6b"],
    ["sensitivity", "--model", "llama-3.1-8b", "--seq-len", "32768", "--batch-size", "8"],
    ["crossover", "kv_cache", "weights", "--wrt", "seq-len", "--model", "qwen3-0.6b"],
    ["sweep", "--model", "qwen3-0.6b", "--batch-size", "1,2", "--seq-len", "128,256"],
]


@pytest.mark.parametrize("args", JSON_COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_no_json_number_is_a_string(run_cli, args):
    result = run_cli(*args, "--json")
    assert result.exit_code == 0, result.output
    assert list(_strings_that_are_numbers(json.loads(result.stdout))) == []


def test_fractions_are_floats_in_json(run_cli):
    data = json.loads(run_cli("solve", "seq-len", "--model", "qwen3-0.6b", "--gpu", "h100-80gb",
                              "--gpu-memory-utilization", "0.9", "--allocator-fraction", "0.05", "--json").stdout)
    assert data["inputs"]["budget"]["gpu_memory_utilization"] == 0.9
    assert data["inputs"]["allocator_fraction"] == 0.05
    sens = json.loads(run_cli("sensitivity", "--model", "qwen3-0.6b", "--json").stdout)
    assert isinstance(sens["total_bytes"], int)
    assert all(isinstance(r["elasticity"], (int, float)) and isinstance(r["derivative"], (int, float))
               for r in sens["sensitivity"])
