"""Serving questions default to the vllm profile (issue 11, deliverable 3).

``solve concurrency``, ``solve seq-len`` and ``solve batch-size`` in inference mode answer
what vLLM starts with, name the profile in text and JSON, equal ``engine.serving.serve``
for the same flags, and give the bare-tensor answer with ``--profile megatron``.
"""

from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner

from cli import cli
from engine import questions
from engine.errors import InputError
from engine.gpus import gpu
from engine.serving import serve


def run(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.mark.parametrize("variable", ["concurrency", "seq-len", "batch-size"])
def test_default_profile_is_vllm_and_named(variable):
    sizes = [] if variable == "seq-len" else ["--seq-len", "2048"]
    base = ["solve", variable, "--model", "qwen3-0.6b", "--budget", "24GB", *sizes]
    text, printed = run(*base), run(*base, "--json")
    assert text.exit_code == 0 and printed.exit_code == 0, text.output + printed.output
    assert "(profile: vllm)" in text.stdout.splitlines()[0]
    answer = json.loads(printed.stdout)
    assert answer["profile"] == "vllm" and answer["vllm"]["profile"] == "vllm"
    assert answer["certificate"]["fits"] is True
    megatron = json.loads(run(*base, "--profile", "megatron", "--json").stdout)
    assert megatron["profile"] == "megatron" and "profile: megatron" in run(*base, "--profile", "megatron").stdout


def test_megatron_keeps_the_bare_tensor_answer():
    args = ("solve", "concurrency", "--model", "qwen3-0.6b", "--seq-len", "2048", "--budget", "24GB")
    assert json.loads(run(*args, "--profile", "megatron", "--json").stdout)["value"] == 97  # the seed article's
    assert json.loads(run(*args, "--profile", "paper", "--json").stdout)["value"] == 97
    vllm = json.loads(run(*args, "--json").stdout)
    assert vllm["value"] < 97  # vLLM keeps 10 % back, the profile run's peak and non-torch memory


def test_issue_example_rtx_4090_equals_serve():
    """The issue's `solve concurrency --model llama-3.1-8b --gpu rtx-4090 --seq-len 2048`
    (36 on the bare tensors) is vLLM's max concurrency from the catalog's cudaMemGetInfo total."""
    answer = questions.solve("concurrency", "llama-3.1-8b", gpu="rtx-4090", seq_len=2048)
    predicted = serve("llama-3.1-8b", gpu_name="rtx-4090", max_model_len=2048)
    assert answer.value == math.floor(predicted.values["max_concurrency"]) < 36
    assert answer.to_dict()["max_concurrency"] == float(predicted.values["max_concurrency"])
    assert answer.prediction.values["cuda_total_bytes"] == gpu("rtx-4090").cuda_total_bytes
    bare = questions.solve("concurrency", "llama-3.1-8b", gpu="rtx-4090", seq_len=2048, profile="megatron")
    assert bare.solution.value == 36


def test_flags_map_to_vllms_and_the_answers_equal_serve():
    """--budget is the cudaMemGetInfo total, --num-gpus tensor_parallel_size, utilization applied."""
    answer = questions.solve("batch-size", "llama-3.1-8b", budget="80GiB", num_gpus=2, seq_len=8192,
                             utilization="0.95", kv_cache_dtype="float8")
    predicted = serve("llama-3.1-8b", tp=2, gpu_memory=80 * 2**30, max_model_len=8192,
                      gpu_memory_utilization="0.95", kv_cache_dtype="fp8")
    assert answer.value == math.floor(predicted.values["max_concurrency"])
    assert answer.prediction.values == predicted.values
    out = answer.to_dict()
    assert out["parallel"]["tensor_parallel_size"] == 2 and "--num-gpus 2 -> tensor_parallel_size=2" in out["parallel"]["mapping"]
    assert out["budget"]["cuda_total_bytes"] == 80 * 2**30 and out["budget"]["gpu_memory_utilization"] == 0.95
    c = out["certificate"]
    assert c["at_value"] <= c["num_gpu_blocks"] < c["at_next"]


def test_seq_len_is_the_largest_max_model_len_that_starts():
    answer = questions.solve("seq-len", "llama-3.1-8b", budget="24GB")
    n = answer.value
    assert n == serve("llama-3.1-8b", gpu_memory=24 * 10**9).largest_max_model_len
    assert serve("llama-3.1-8b", gpu_memory=24 * 10**9, max_model_len=n).refusal is None
    assert serve("llama-3.1-8b", gpu_memory=24 * 10**9, max_model_len=n + 1).refusal is not None
    c = answer.certificate
    assert c["at_value"] <= c["available_kv_cache_bytes"] < c["at_next"] and not c["capped_at_context"]
    capped = questions.solve("seq-len", "qwen3-0.6b", budget="80GB")  # the cache outlasts the context
    assert capped.value == 40_960 and capped.certificate["capped_at_context"]


@pytest.mark.parametrize("args, message", [
    (["concurrency", "--attention", "eager"], "add --profile megatron"),
    (["concurrency", "--serving-activations", "prefill"], "add --profile megatron"),
    (["seq-len", "--batch-size", "4"], "--batch-size 4 is not read"),
    (["concurrency", "--num-gpus", "4", "--tp", "2"], "--num-gpus 4 with --tp 2 --pp 1"),
    (["concurrency", "--budget", "1GB"], "vLLM refuses to start"),
])
def test_refusals_are_one_line(args, message):
    budget = [] if "--budget" in args else ["--budget", "24GB"]
    result = CliRunner().invoke(cli, ["solve", *args, "--model", "qwen3-0.6b", *budget])
    assert result.exit_code == 2 and message in result.stderr and result.stderr.count("\n") == 1


def test_training_and_symbolic_keep_their_profiles():
    with pytest.raises(InputError, match="needs --mode inference"):
        questions.solve("concurrency", "qwen3-0.6b", budget="24GB", mode="training")
    assert questions.solve("seq-len", symbolic=True, batch_size=1).variable == "seq_len"


def test_plan_says_what_it_counts_and_flags_full_layouts():
    result = run("plan", "--model", "llama-3.1-8b", "--gpu", "h100-80gb", "--mode", "training", "--seq-len", "4096")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[2].startswith("counted (profile megatron)") and "not counted: the CUDA context" in lines[2]
    answer = questions.plan("llama-3.1-8b", gpu="h100-80gb", mode="training", seq_len=4096)
    budget = answer.budget_bytes
    full = [c for c in answer.plan.tried if c.fits and c.per_gpu_bytes > 0.95 * budget]
    roomy = [c for c in answer.plan.tried if c.fits and c.per_gpu_bytes <= 0.95 * budget]
    assert full and roomy
    assert sum("% full" in line for line in lines[3:]) == len(full)


def test_gpu_without_a_cuda_total_says_it_falls_back():
    result = run("solve", "concurrency", "--model", "qwen3-0.6b", "--gpu", "t4", "--seq-len", "2048")
    assert result.exit_code == 0 and gpu("t4").cuda_total_bytes is None
    assert "no public cudaMemGetInfo total; using nvidia-smi's" in result.stdout
    assert "pass --budget SIZE" in result.stdout
    known = run("solve", "concurrency", "--model", "qwen3-0.6b", "--gpu", "h100-80gb", "--seq-len", "2048")
    assert "h100-80gb: cudaMemGetInfo total 79.19 GiB" in known.stdout


def test_estimate_under_vllm_names_the_question_that_gives_the_gpu():
    """estimate has no --gpu; the vllm profile's KV cache needs the GPU total, and the error says where to ask."""
    result = CliRunner().invoke(cli, ["estimate", "--model", "llama-3.1-8b", "--profile", "vllm"])
    assert result.exit_code == 2
    assert "cuda_total_bytes" in result.output and "memsym serve --gpu NAME" in result.output
    assert "Traceback" not in result.output
