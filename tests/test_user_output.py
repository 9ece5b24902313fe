"""Issue 14: --num-gpus is a named layout, headers say the scenario, "doesn't fit" says what
helps, and the LaTeX is what a reviewer would accept."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

H200_32K = ["--model", "deepseek-v3", "--dtype", "float8", "--gpu", "h200", "--seq-len", "32768"]


def _solve(run_cli, *args):
    result = run_cli("solve", "--profile", "megatron", *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_num_gpus_and_the_same_degrees_agree(run_cli):
    """The issue's case: DeepSeek-V3 fp8 on 8 x H200 at 32k gave 179 (--num-gpus 8) vs 22 (--tp 8)."""
    by_count = _solve(run_cli, "concurrency", *H200_32K, "--num-gpus", "8")
    by_degree = _solve(run_cli, "concurrency", *H200_32K, "--tp", "8")
    assert by_count["value"] == by_degree["value"] > 0
    assert by_count["layout"]["tp"] == 8 and "--tp 8" in by_count["layout"]["read_as"]
    text = run_cli("solve", "--profile", "megatron", "concurrency", *H200_32K, "--num-gpus", "8").stdout
    assert "layout tp=8 x pp=1 x dp=1" in text and "read as: --num-gpus 8 read as --tp 8" in text


def test_num_gpus_says_when_it_is_an_even_split(run_cli):
    data = _solve(run_cli, "concurrency", "--model", "llama-2-13b", "--budget", "32e9", "--num-gpus", "3")
    assert data["layout"]["even_split"] and "no --tp 3 fits" in data["layout"]["read_as"]
    bad = run_cli("solve", "--profile", "megatron", "concurrency", "--model", "llama-2-13b", "--budget", "32e9", "--num-gpus", "4",
                  "--tp", "2")
    assert bad.exit_code == 2 and "--tp 2 x --pp 1 = 2" in bad.stderr


def test_training_num_gpus_is_data_parallel_with_a_per_gpu_batch(run_cli):
    args = ["batch-size", "--model", "qwen3-0.6b", "--mode", "training", "--seq-len", "2048", "--gpu", "h100-80gb"]
    by_count = _solve(run_cli, *args, "--num-gpus", "8", "--zero", "3")
    by_degree = _solve(run_cli, *args, "--dp", "8", "--zero", "3")
    assert by_count["value"] == by_degree["value"]
    assert by_count["layout"]["dp"] == 8 and "per GPU" in by_count["layout"]["read_as"]
    assert _solve(run_cli, *args, "--num-gpus", "8")["value"] == _solve(run_cli, *args)["value"]  # ZeRO 0


def test_solve_num_gpus_in_training_keeps_the_given_dp(run_cli):
    args = ["num-gpus", "--model", "llama-3.1-8b", "--mode", "training", "--seq-len", "4096", "--gpu", "a100-40gb",
            "--zero", "3"]
    data = _solve(run_cli, *args, "--dp", "4")
    assert data["inputs"]["configuration"]["dp"] == 4 and data["value"] % 4 == 0


def test_the_header_names_the_scenario(run_cli):
    text = run_cli("estimate", "--model", "llama-3.1-8b", "--weight-quant", "int4", "--kv-cache-dtype", "float8",
                   "--tp", "2", "--block-size", "16").stdout
    # the default falls back from transformers for --tp 2 (the first reason), and says so
    assert ("profile megatron (the default transformers profile does not model --tp 2: it models one device), dtype "
            "bfloat16, weights quantized int4 (from --weight-quant), KV cache float8, paged blocks of 16") in text
    assert "layout tp=2 x pp=1 x dp=1 (ep=1, cp=1) = 2 GPUs; bytes are per GPU" in text
    training = run_cli("estimate", "--model", "qwen3-0.6b", "--mode", "training").stdout
    precision = json.loads(run_cli("estimate", "--model", "qwen3-0.6b", "--mode", "training", "--json").stdout)[
        "inputs"]["precision"]
    assert f"precision {precision} (training bytes per parameter)" in training


def test_past_the_context_length_warns_with_both_numbers(run_cli):
    data = _solve(run_cli, "seq-len", "--model", "qwen3-0.6b", "--gpu", "h100-80gb")
    assert data["value"] > 40960 and "exceeds the model's context length 40,960" in data["warnings"][0]
    assert f"{data['value']:,}" in data["warnings"][0]
    assert json.loads(run_cli("estimate", "--model", "qwen3-0.6b", "--json").stdout)["warnings"] == []


def test_doesnt_fit_says_what_needs_how_much_and_what_helps(run_cli):
    result = run_cli("solve", "--profile", "megatron", "concurrency", "--model", "llama-3.1-70b", "--gpu", "h100-80gb", "--seq-len", "8192")
    line = result.stderr.strip()
    assert result.exit_code == 2 and "\n" not in line and len(line) <= 300
    assert re.search(r"needs [0-9,]+ bytes per GPU \(weights [0-9,]+, kv_cache [0-9,]+\)", line)
    assert "--tp 2 (the smallest that fits)" in line and "--weight-quant int4" in line
    long = run_cli("solve", "--profile", "megatron", "batch-size", "--model", "llama-3.1-8b", "--budget", "17GB", "--seq-len", "131072")
    assert "a shorter --seq-len" in long.stderr


def test_latex_flags_sources_digits_and_formula(run_cli):
    # pinned: the seed's megatron numbers (the default transformers profile adds rotary buffers and input ids)
    tex = run_cli("latex", "--model", "qwen3-0.6b", "--values", "--standalone", "--reserve", "1GB", "--profile",
                  "megatron").stdout
    assert r"\texttt{-{}-reserve}" in tex and "(--" not in tex.replace(r"\texttt{-{}-", "")
    assert "formulas/" not in tex and "engine/" not in tex
    assert "1{,}192{,}099{,}840" in tex
    formula = run_cli("formula", "--model", "qwen3-0.6b", "--latex", "--profile", "megatron").stdout
    assert "*" not in formula and r"114{,}688 \, b s" in formula and "1{,}192{,}099{,}840" in formula


@pytest.mark.skipif(shutil.which("pdflatex") is None or shutil.which("pdfinfo") is None,
                    reason="needs pdflatex and pdfinfo (texlive-latex-base, poppler-utils)")
def test_a_dense_models_inference_document_is_one_page(run_cli, tmp_path):
    """The default (transformers) profile's eight prefill moments: their shared part is one row
    (engine/latex_rows.py shared_part), the page's rows as wide as the page, its bytes in two halves."""
    (tmp_path / "m.tex").write_text(run_cli("latex", "--model", "qwen3-0.6b", "--values", "--standalone").stdout)
    subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "m.tex"], cwd=tmp_path,
                   check=True, capture_output=True, timeout=120)
    info = subprocess.run(["pdfinfo", str(tmp_path / "m.pdf")], capture_output=True, text=True, check=True).stdout
    assert re.search(r"^Pages:\s+1$", info, re.M), info
    assert "Overfull \\hbox" not in (tmp_path / "m.log").read_text(errors="replace")  # rows and tables inside the text


@pytest.mark.skipif(shutil.which("pdflatex") is None or shutil.which("pdfinfo") is None,
                    reason="needs pdflatex and pdfinfo (texlive-latex-base, poppler-utils)")
@pytest.mark.parametrize("args", [["llama-3.1-8b"], ["mistral-7b-v0.1"], ["gemma-2-9b"],
                                  ["qwen3-0.6b", "--reserve", "1GB"], ["qwen3-0.6b", "--attention", "eager"],
                                  # the default's qwen3-30b-a3b (eleven moments, three MoE weights) takes two pages
                                  ["qwen3-30b-a3b", "--profile", "megatron"]])
def test_larger_dense_models_inference_is_one_page_too(run_cli, tmp_path, args):
    """The tables are \\footnotesize (templates/memory.tex.j2), the formulas' lines tighter and the running
    head's space text (templates/standalone.tex.j2): these took two pages before. Under the default
    profile the prefill moments' shared part is one row (docs/emit.md lists what fits)."""
    (tmp_path / "m.tex").write_text(run_cli("latex", "--model", *args, "--values", "--standalone").stdout)
    subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "m.tex"], cwd=tmp_path,
                   check=True, capture_output=True, timeout=120)
    info = subprocess.run(["pdfinfo", str(tmp_path / "m.pdf")], capture_output=True, text=True, check=True).stdout
    assert re.search(r"^Pages:\s+1$", info, re.M), info


def test_the_catalog_holds_thirty_gpus_each_with_a_source():
    from engine.gpus import catalog

    rows = catalog()
    assert len(rows) >= 30
    for name in ("h100-pcie", "h100-nvl", "h200", "h20", "gh200", "b200", "a100-40gb", "a100-80gb", "a10",
                 "rtx-a6000", "l4", "l40s", "rtx-3090", "rtx-4090", "rtx-5090", "v100-16gb", "v100-32gb", "t4",
                 "mi300x", "mi250x"):
        entry = rows[name]
        assert entry.datasheet_url.startswith("https://") and entry.memory_bytes > 0, name
        stated = float(re.match(r"[\d.]+", entry.datasheet_memory).group())
        assert stated * 0.9e9 <= entry.memory_bytes <= stated * 2**30, name


@pytest.mark.parametrize("spelling, choices", [("a100", "a100-40gb, a100-80gb"), ("v100", "v100-16gb, v100-32gb")])
def test_ambiguous_gpu_names_answer_with_the_choices(run_cli, spelling, choices):
    result = run_cli("solve", "--profile", "megatron", "seq-len", "--model", "qwen3-0.6b", "--gpu", spelling)
    assert result.exit_code == 2 and f"choose one of {choices}" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_gpu_memory_sizes_a_gpu_the_catalog_lacks(run_cli):
    by_memory = _solve(run_cli, "seq-len", "--model", "qwen3-0.6b", "--gpu-memory", "48GiB")
    by_budget = _solve(run_cli, "seq-len", "--model", "qwen3-0.6b", "--budget", "48GiB")
    assert by_memory["value"] == by_budget["value"] and by_memory["budget_bytes"] == 48 * 2**30
    both = run_cli("solve", "--profile", "megatron", "seq-len", "--model", "qwen3-0.6b", "--gpu-memory", "48GiB", "--budget", "48GiB")
    assert both.exit_code == 2


def test_solve_num_gpus_in_inference_is_the_layout_num_gpus_reads(run_cli):
    """solve num-gpus answers the N whose --num-gpus N layout (--tp N) fits, its header names that layout,
    and its certificate's neighbour is the previous tensor-parallel degree, not N - 1."""
    args = ["--profile", "megatron", "--model", "llama-3.1-70b", "--gpu", "rtx-4090", "--batch-size", "8",
            "--seq-len", "8192"]
    count = _solve(run_cli, "num-gpus", *args)
    degree = _solve(run_cli, "tp", *args)
    assert count["value"] == degree["value"] == 8 and count["previous_value"] == 4
    assert count["total_bytes_at_value"] == degree["total_bytes_at_value"]
    assert count["layout"]["tp"] == 8 and count["layout"]["num_gpus"] == 8
    text = run_cli("solve", "num-gpus", *args).stdout
    assert "layout tp=8 x pp=1 x dp=1 (ep=1, cp=1) = 8 GPUs" in text and "total per GPU at 4:" in text
    fits = run_cli("solve", "batch-size", *args[:-4], "--seq-len", "8192", "--num-gpus", "8", "--json")
    assert json.loads(fits.stdout)["value"] >= 8  # --num-gpus 8 holds the batch solve num-gpus sized it for
    fixed = run_cli("solve", "num-gpus", *args, "--tp", "2")
    assert fixed.exit_code == 2 and "the GPU count is tp x pp" in fixed.stderr
