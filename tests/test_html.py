"""``memsym html``: the calculator page, loaded in a real headless browser.

Debian's chromium opens the generated file from disk at several URL fragments, with every
network request sent to a closed port (the network off), and dumps
the DOM after the page's scripts ran; every number with a stable id (``total_bytes``,
``term-<name>``, ``budget_bytes``, ``solve-seq_len``, ``solve-batch_size``,
``solve-concurrency``) must equal ``memsym estimate --json`` and the library's solve
exactly. In CI (env CI set) a missing chromium is a failure; locally those tests are skipped.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import pytest
import sympy
from click.testing import CliRunner

import cli
from engine.errors import InfeasibleError
from engine.html import exact_roundings, page_source, write_page
from engine.numeric import CeilDiv
from engine.questions import solve
from formulas import symbols as S

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
NUMBER_ID = re.compile(r'id="(total_bytes|budget_bytes|term-[A-Za-z0-9_]+|solve-[a-z_]+)"[^>]*>([^<]*)<')
MODELS = ("qwen3-0.6b", "deepseek-v2-lite", "gemma-2-9b")  # dense GQA, MLA + MoE, sliding window
# (model, mode, fragment): the page's state, as a shared link gives it
CASES = [
    ("qwen3-0.6b", "inference", {"batch_size": "4", "seq_len": "8192", "gpu": "h100-80gb"}),
    ("qwen3-0.6b", "inference", {"batch_size": "1", "seq_len": "32768", "gpu": "rtx-4090", "utilization": "0.9",
                                 "kv_cache_dtype": "float8"}),
    ("qwen3-0.6b", "training", {"batch_size": "2", "seq_len": "4096", "gpu": "a100-40gb", "tp": "2"}),
    ("deepseek-v2-lite", "inference", {"batch_size": "2", "seq_len": "4096", "gpu": "a100-80gb"}),
    ("deepseek-v2-lite", "inference", {"batch_size": "8", "seq_len": "65536", "gpu": "h100-80gb",
                                       "utilization": "0.85", "kv_cache_dtype": "int4"}),
    ("gemma-2-9b", "inference", {"batch_size": "1", "seq_len": "2048", "gpu": "rtx-4090"}),
    ("gemma-2-9b", "inference", {"batch_size": "3", "seq_len": "16384", "gpu": "h100-80gb", "utilization": "0.95"}),
    ("gemma-2-9b", "inference", {"batch_size": "1", "seq_len": "4096", "gpu": "h100-80gb", "weight_dtype": "int4"}),
]
DEGREE_FLAGS = ("tp", "dp", "cp", "ep")


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing (CI is set): apt-get install chromium")
        pytest.skip("chromium not installed")
    return CHROMIUM


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pages")
    out = {}
    for model in MODELS:
        for mode in ("inference", "training"):
            path = folder / f"{model}-{mode}.html"
            write_page(str(path), model, mode=mode)
            out[model, mode] = path
    return out


def dump_dom(browser: str, path: Path, fragment: dict, profile: Path) -> str:
    url = path.resolve().as_uri() + ("#" + "&".join(f"{k}={v}" for k, v in fragment.items()) if fragment else "")
    args = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=<-loopback>",  # network off: every fetch fails
            f"--user-data-dir={profile}", "--dump-dom", url]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, check=True)
    return done.stdout


def page_numbers(dom: str) -> dict[str, str]:
    return dict(NUMBER_ID.findall(dom))


def knobs_of(mode: str, fragment: dict) -> dict:
    knobs = {"mode": mode, "profile": "megatron"}  # the page's profile without --profile (engine/html.py PAGE_NOTE)
    if "kv_cache_dtype" in fragment:
        knobs["kv_cache_dtype"] = fragment["kv_cache_dtype"]
    knobs.update({k: int(fragment[k]) for k in DEGREE_FLAGS if k in fragment})
    return knobs


def cli_estimate(model: str, fragment: dict, knobs: dict) -> dict:
    args = ["estimate", "--model", model, "--batch-size", fragment["batch_size"], "--seq-len", fragment["seq_len"],
            "--json"] + [a for k, v in knobs.items() for a in (f"--{k.replace('_', '-')}", str(v))]
    result = CliRunner().invoke(cli.cli, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def library_estimate(model: str, fragment: dict, knobs: dict) -> dict:
    """The weight width as the page sets it: ``weight_bytes`` alone changes (no --flag does that)."""
    from engine.api import memory_model
    from formulas.dtypes import DTYPE_BYTES

    _, mm = memory_model(model, batch_size=int(fragment["batch_size"]), seq_len=int(fragment["seq_len"]), **knobs)
    ev = mm.evaluate(weight_bytes=DTYPE_BYTES[fragment["weight_dtype"]])
    return {"total_bytes": ev.total_bytes, "terms": {n: ev.terms[n] for n in mm.top_level}}


def expected_solve(variable: str, model: str, fragment: dict, knobs: dict) -> str:
    sizes = {"seq-len": {"batch_size"}, "batch-size": {"seq_len"}, "concurrency": {"seq_len"}}[variable]
    if knobs["mode"] == "training" and variable == "concurrency":
        return "n/a"
    given = {k: int(fragment[k]) for k in sizes}
    try:
        if "weight_dtype" in fragment:
            return str(weight_width_solve(variable, model, fragment, {**knobs, **given}))
        # the page solves its own (megatron) model: the bare-tensor answer, not serving's vllm default
        answer = solve(variable, model, gpu=fragment["gpu"], utilization=fragment.get("utilization"),
                       **{"profile": "megatron", **knobs}, **given)
    except InfeasibleError:
        return "none"
    return str(answer.solution.value)


def weight_width_solve(variable: str, model: str, fragment: dict, knobs: dict) -> int:
    """engine.solve.solve_budget over the model with only ``weight_bytes`` changed, as the page does."""
    from dataclasses import replace

    from engine.api import memory_model
    from engine.gpus import make_budget
    from engine.solve import solve_budget
    from formulas.dtypes import DTYPE_BYTES

    solved = "batch_size" if variable == "concurrency" else variable.replace("-", "_")
    _, mm = memory_model(model, **{**knobs, solved: None})
    mm = replace(mm, facts={**mm.facts, S.weight_bytes: sympy.Rational(DTYPE_BYTES[fragment["weight_dtype"]])})
    budget = make_budget(gpu_name=fragment["gpu"], utilization=fragment.get("utilization"))
    return solve_budget(mm, variable, budget).value


@pytest.mark.parametrize("model, mode, fragment", CASES, ids=lambda c: c if isinstance(c, str) else None)
def test_page_shows_the_estimate_and_the_solves(browser, pages, tmp_path, model, mode, fragment):
    dom = dump_dom(browser, pages[model, mode], fragment, tmp_path / "profile")
    shown = page_numbers(dom)
    assert re.search(r'id="precision"[^>]*>Exact: every operand is an integer below 2\^53', dom)
    knobs = knobs_of(mode, fragment)
    expected = (library_estimate if "weight_dtype" in fragment else cli_estimate)(model, fragment, knobs)
    assert shown["total_bytes"] == str(expected["total_bytes"])
    assert {k[5:]: v for k, v in shown.items() if k.startswith("term-")} == {
        name: str(value) for name, value in expected["terms"].items()}
    for variable in ("seq-len", "batch-size", "concurrency"):
        key = "solve-" + variable.replace("-", "_")
        assert shown[key] == expected_solve(variable, model, fragment, knobs), key
    if "weight_dtype" not in fragment:
        from engine.gpus import make_budget

        limits = make_budget(gpu_name=fragment["gpu"], utilization=fragment.get("utilization"))
        assert shown["budget_bytes"] == str(limits.per_gpu_bytes)


def test_page_reads_no_network_and_escapes_its_data():
    text, summary = page_source("qwen3-0.6b")
    assert not re.search(r"<(link|img|iframe)\b|\bsrc=|@import|url\(", text)
    data = re.search(r'<script type="application/json" id="memsym-data">(.*?)</script>', text, re.S).group(1)
    assert "<" not in data and json.loads(data)["model"] == "qwen3-0.6b"
    assert summary["controls"] == ["batch_size", "seq_len", "kv_cache_dtype", "weight_dtype", "gpu", "utilization"]


def test_roundings_become_one_division():
    t, b, s = S.tensor_parallel, S.batch_size, S.seq_len
    rounded = exact_roundings(sympy.ceiling(28672 * b * s * (10 + 20 / t)))
    assert isinstance(rounded, CeilDiv) and sympy.simplify(rounded.args[0] / rounded.args[1] - 28672 * b * s * (10 + 20 / t)) == 0
    assert exact_roundings(sympy.ceiling(4 * b * Fraction(1, 1))) == 4 * b


def test_cli_writes_the_page(tmp_path):
    out = tmp_path / "page.html"
    result = CliRunner().invoke(cli.cli, ["html", "--model", "gemma-2-9b", "-o", str(out)])
    assert result.exit_code == 0 and "wrote" in result.output and out.read_text().startswith("<!DOCTYPE html>")
    bad = CliRunner().invoke(cli.cli, ["html", "--model", "gemma-2-9b", "--seq-len", "0", "-o", str(out)])
    assert bad.exit_code == 2
    vllm = CliRunner().invoke(cli.cli, ["html", "--model", "qwen3-0.6b", "--profile", "vllm", "-o", str(out)])
    assert vllm.exit_code == 2 and "cuda_total_bytes" in vllm.output


def test_defaults_are_the_command_line_scenario(browser, tmp_path):
    """No fragment: the page shows the scenario ``memsym html`` was given (kv dtype, sizes)."""
    out = tmp_path / "page.html"
    flags = ["--model", "deepseek-v2-lite", "--kv-cache-dtype", "float8", "--batch-size", "3", "--seq-len", "1000"]
    assert CliRunner().invoke(cli.cli, ["html", *flags, "-o", str(out)]).exit_code == 0
    shown = page_numbers(dump_dom(browser, out, {}, tmp_path / "profile"))
    expected = json.loads(CliRunner().invoke(cli.cli, ["estimate", *flags, "--json"]).output)
    assert shown["total_bytes"] == str(expected["total_bytes"])
    assert shown["term-kv_cache"] == str(expected["terms"]["kv_cache"])


def test_a_hostile_config_path_reaches_the_page_as_text_only(tmp_path):
    """A folder named like markup: the page's title is escaped and its data holds no ``<``."""
    from engine.registry import entries

    folder = tmp_path / "<script>alert(1)<x"
    folder.mkdir()
    config = next(e.config for e in entries() if e.id == "qwen3-0.6b")
    (folder / "config.json").write_text(json.dumps(config))
    text, _ = page_source(config=str(folder / "config.json"))
    assert "<script>alert" not in text and text.count("<script") == 3  # the page's own three scripts
