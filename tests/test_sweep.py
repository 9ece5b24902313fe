"""Value ranges, sweeps through the compiled function, and plots (engine/sweep.py, engine/plot.py).

Plots need matplotlib (``memsym[plot]``): in CI (env CI set) its absence is a failure,
locally those tests are skipped.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.api import memory_model
from engine.errors import InputError
from engine.sweep import parse_values, sweep


def _model(model="qwen3-0.6b", **knobs):
    return memory_model(model, None, batch_size=None, seq_len=None, **knobs)[1]


# --- ranges ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("1,2,4,8", (1, 2, 4, 8)),
    ("1024:131072:x2", tuple(2**k for k in range(10, 18))),
    ("512:2048:+512", (512, 1024, 1536, 2048)),
    ("8, 1:4:x2 ,3", (1, 2, 3, 4, 8)),
    ("5:5:x3", (5,)),
    ("1:10:x3", (1, 3, 9)),
])
def test_parse_values(text, expected):
    assert parse_values(text, "--seq-len") == expected


@pytest.mark.parametrize("text", ["", "0", "-1", "1e3", "1.5", "a", "1:10", "1:10:x1", "1:10:+0", "10:1:x2",
                                  "1:10:*2", "1:10:x2:3", "__import__('os')", "2**10", "1:100000000:+1",
                                  str(2**53 + 1)])
def test_parse_values_rejects_with_the_flag_named(text):
    with pytest.raises(InputError, match="^--batch-size: "):
        parse_values(text, "--batch-size")


@settings(max_examples=50, derandomize=True, deadline=None)
@given(start=st.integers(1, 10**6), span=st.integers(0, 10**9), factor=st.integers(2, 16))
def test_geometric_ranges_hold_every_power_up_to_the_end(start, span, factor):
    values = parse_values(f"{start}:{start + span}:x{factor}", "--seq-len")
    assert values[0] == start and values[-1] <= start + span < values[-1] * factor
    assert all(b == a * factor for a, b in zip(values, values[1:]))


# --- sweeps ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("model, knobs", [("qwen3-0.6b", {}), ("gemma-2-9b", {"block_size": 16}),
                                          ("llama-3.1-8b", {"mode": "training"})])
def test_sweep_equals_exact_evaluation_at_every_point(model, knobs):
    mm = _model(model, **knobs)
    result = sweep(mm, {"seq_len": (1, 4095, 4096, 131072), "batch_size": (1, 3, 64)})
    rows = list(result.rows())
    assert result.points == len(rows) == 12 and list(result.axes) == ["batch_size", "seq_len"]
    for row in rows:
        ev = mm.evaluate(batch_size=row["batch_size"], seq_len=row["seq_len"])
        assert row["total_bytes"] == ev.total_bytes
        assert {n: row[n] for n in mm.top_level} == {n: ev.terms[n] for n in mm.top_level}


def test_sweep_checks_its_axes():
    with pytest.raises(InputError, match="give values for --seq-len"):
        sweep(_model(), {"batch_size": (1,)})
    pinned = memory_model("qwen3-0.6b", None, batch_size=None, seq_len=2048)[1]
    with pytest.raises(InputError, match="--seq-len is pinned"):
        sweep(pinned, {"batch_size": (1,), "seq_len": (1,)})
    with pytest.raises(InputError, match="at most 10"):
        sweep(_model(), {"batch_size": tuple(range(1, 5)), "seq_len": tuple(range(1, 5))}, max_points=10)


def test_cli_sweep_csv_json_and_table(run_cli):
    args = ("sweep", "--model", "qwen3-0.6b", "--batch-size", "1,2,4,8", "--seq-len", "1024:131072:x2")
    table = run_cli(*args)
    # the default profile, named in the header: transformers (its int64 input_ids a term of their own)
    assert table.exit_code == 0 and table.stdout.startswith("qwen3-0.6b (inference, profile transformers): 32 points")
    rows = list(csv.DictReader(io.StringIO(run_cli(*args, "--csv").stdout)))
    assert len(rows) == 32 and list(rows[0]) == ["batch_size", "seq_len", "total_bytes", "weights", "input_ids",
                                                 "kv_cache", "activations", "overhead"]
    estimate = json.loads(run_cli("estimate", "--model", "qwen3-0.6b", "--batch-size", "8", "--seq-len", "131072",
                                  "--json").stdout)
    assert int(rows[-1]["total_bytes"]) == estimate["total_bytes"]
    assert int(rows[-1]["kv_cache"]) == estimate["terms"]["kv_cache"]
    points = json.loads(run_cli(*args, "--json").stdout)["points"]
    assert points[-1] == {k: int(v) for k, v in rows[-1].items()}
    assert "memsym sweep --model" in run_cli("sweep", "--help").stdout


@pytest.mark.parametrize("args", [
    ("--seq-len", "1:10:x1"),
    ("--batch-size", "eval('1')"),
    ("--csv", "--json"),
    ("--batch-size", "1:100000:+1", "--seq-len", "1:100:+1"),
])
def test_cli_sweep_bad_input(run_cli, args):
    result = run_cli("sweep", "--model", "qwen3-0.6b", *args)
    assert result.exit_code == 2 and result.stderr.startswith("memsym: error: ")
    assert len(result.stderr.strip().splitlines()) == 1


# --- plots -----------------------------------------------------------------------------------------
def _matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("matplotlib is missing in CI: install memsym[plot] (.ci/run should)")
        pytest.skip("matplotlib not installed here: pip install 'memsym[plot]'")


def test_plot_png_with_budget_and_solved_maximum(run_cli, tmp_path):
    _matplotlib()
    path = tmp_path / "kv.png"
    result = run_cli("plot", "--model", "qwen3-0.6b", "--batch-size", "8", "--seq-len", "1024:131072:x2",
                     "--budget", "24GB", "-o", str(path))
    assert result.exit_code == 0, result.output
    # the plot's model is the default profile's (transformers); solve without --profile would be vllm's
    solved = json.loads(run_cli("solve", "seq-len", "--model", "qwen3-0.6b", "--batch-size", "8", "--budget", "24GB",
                                "--profile", "transformers", "--json").stdout)["value"]
    assert f"largest seq_len that fits: {solved:,}" in result.stdout
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["kv.png"]


def test_plot_svg_training_stacks_the_peak_phase(tmp_path):
    _matplotlib()
    import numpy

    from engine.gpus import make_budget
    from engine.numeric import compile_terms
    from engine.plot import plot, stacked_terms

    mm = _model("llama-3.1-8b", mode="training", profile="megatron")
    result = plot(mm, "batch_size", {"batch_size": tuple(range(1, 33)), "seq_len": (4096,)},
                  str(tmp_path / "t.svg"), budget=make_budget("80GB"))
    svg = (tmp_path / "t.svg").read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg and "budget 80.000 GB" in svg
    outputs = compile_terms(mm)(batch_size=numpy.arange(1, 33), seq_len=4096)
    stacked = stacked_terms(mm, outputs)
    assert numpy.array_equal(sum(stacked.values()), outputs["total_bytes"])  # the stack's top is the peak
    assert result.largest is None and result.note.startswith("nothing fits")  # 8B training needs > 80 GB


@pytest.mark.parametrize("args, message", [
    (("-o", "{tmp}/x.pdf"), "unknown plot format 'pdf'"),
    (("-o", "{tmp}/x.png", "--format", "gif"), "unknown plot format 'gif'"),
    (("--batch-size", "1,2", "-o", "{tmp}/x.png"), "exactly one of --seq-len and --batch-size"),
    (("-o", "{tmp}/missing/x.png"), "cannot write"),
])
def test_plot_bad_input_is_one_line_and_writes_nothing(run_cli, tmp_path, args, message):
    if "cannot write" in message:
        _matplotlib()
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = run_cli("plot", "--model", "qwen3-0.6b", "--seq-len", "1024:4096:x2", *args)
    assert result.exit_code == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_plot_without_matplotlib_says_how_to_install(run_cli, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    result = run_cli("plot", "--model", "qwen3-0.6b", "--seq-len", "1024:4096:x2", "-o", str(tmp_path / "x.png"))
    assert result.exit_code == 2
    assert result.stderr.strip() == "memsym: error: memsym plot needs matplotlib: pip install 'memsym[plot]'"
    assert list(tmp_path.iterdir()) == []


def test_plot_num_gpus_is_the_layout_solve_reads_and_the_title_says_it(run_cli, tmp_path):
    """--num-gpus 2 is --tp 2 (engine/layout.py) in plot as in solve, never a silent even split."""
    _matplotlib()
    args = ["--profile", "megatron", "--model", "qwen3-0.6b", "--budget", "2GB"]
    path = tmp_path / "tp.svg"
    result = run_cli("plot", *args, "--num-gpus", "2", "--seq-len", "1024:1048576:x2", "-o", str(path))
    assert result.exit_code == 0, result.output
    by_count = json.loads(run_cli("solve", "seq-len", *args, "--num-gpus", "2", "--json").stdout)["value"]
    by_degree = json.loads(run_cli("solve", "seq-len", *args, "--tp", "2", "--json").stdout)["value"]
    assert by_count == by_degree and f"largest seq_len that fits: {by_count:,}" in result.stdout
    svg = re.sub(r"- -(?=\w)", "--", path.read_text())  # an SVG comment cannot hold "--"
    assert "--num-gpus 2 read as --tp 2" in result.stdout and "--num-gpus 2 read as --tp 2" in svg
    assert "per GPU of 2" not in svg  # the even split's label
    even = run_cli("plot", "--profile", "megatron", "--model", "llama-2-13b", "--budget", "32e9", "--num-gpus", "3",
                   "--seq-len", "1024:131072:x2", "-o", str(tmp_path / "even.png"))
    assert "read as an even split" in even.stdout
