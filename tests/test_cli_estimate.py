"""`memsym models` and `memsym estimate`: the JSON contract, the table, bad input."""

from __future__ import annotations

import json

import pytest


def test_estimate_json_contract_for_qwen3(run_cli):
    result = run_cli("estimate", "--model", "qwen3-0.6b", "--batch-size", "1", "--seq-len", "2048", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["parameters"] == 596_049_920
    # the default transformers profile: the parameters' 1,192,099,840 B + 256 B of rotary inv_freq buffers
    assert data["terms"]["weights"] == 1_192_099_840 + 256 and data["inputs"]["profile"] == "transformers"
    assert data["terms"]["kv_cache"] == 234_881_024
    assert data["total_bytes"] == sum(data["terms"].values())
    assert data["inputs"]["batch_size"] == 1 and data["inputs"]["seq_len"] == 2048
    assert data["model"] == "qwen3-0.6b"


def test_hf_repo_id_is_accepted(run_cli):
    by_id = json.loads(run_cli("estimate", "--model", "qwen3-0.6b", "--json").stdout)
    by_repo = json.loads(run_cli("estimate", "--model", "Qwen/Qwen3-0.6B", "--json").stdout)
    assert by_id["total_bytes"] == by_repo["total_bytes"]


def test_training_json_has_phases(run_cli):
    result = run_cli("estimate", "--model", "gpt2", "--mode", "training", "--seq-len", "1024", "--json",
                     "--profile", "megatron")
    data = json.loads(result.stdout)
    assert {"gradients", "optimizer", "master_weights", "activations"} <= set(data["terms"])
    assert data["total_bytes"] == max(data["phases"].values())
    assert data["peak_phase"] in data["phases"]


def test_table_shows_exact_bytes_and_both_units(run_cli):
    out = run_cli("estimate", "--model", "qwen3-0.6b").stdout
    assert "1,192,100,096" in out and "1.192 GB" in out and "1.110 GiB" in out  # transformers: + rotary buffers
    assert out.splitlines()[-1].startswith("total")


def test_config_file_works_like_the_registry(run_cli, tmp_path):
    from engine.registry import find

    path = tmp_path / "config.json"
    path.write_text(json.dumps(find("llama-3.1-8b").config))
    a = json.loads(run_cli("estimate", "--config", str(path), "--json").stdout)
    b = json.loads(run_cli("estimate", "--model", "llama-3.1-8b", "--json").stdout)
    assert a["terms"] == b["terms"]
    assert json.loads(run_cli("estimate", "--config", str(tmp_path), "--json").stdout)["terms"] == b["terms"]


def test_models_lists_the_registry(run_cli):
    rows = json.loads(run_cli("models", "--json").stdout)
    assert {"qwen3-0.6b", "deepseek-v3", "gpt2"} <= {r["id"] for r in rows}
    assert all(r["source"].startswith("https://huggingface.co/") for r in rows)


def _one_line_error(result, *needles):
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize(
    "args, needles",
    [
        (["--model", "qwen3-0.6"], ["qwen3-0.6", "did you mean", "qwen3-0.6b"]),
        (["--model", "qwen3-0.6b", "--batch-size", "0"], ["--batch-size", "0"]),
        (["--model", "qwen3-0.6b", "--seq-len", "-5"], ["--seq-len", "-5"]),
        (["--model", "qwen3-0.6b", "--batch-size", "many"], ["--batch-size", "many"]),
        (["--model", "qwen3-0.6b", "--dtype", "float64"], ["--dtype", "float64"]),
        (["--model", "qwen3-0.6b", "--reserve", "lots"], ["--reserve", "lots"]),
        ([], ["--model", "--config"]),
    ],
)
def test_bad_flags_are_one_line_exit_2(run_cli, args, needles):
    _one_line_error(run_cli("estimate", *args), *needles)


@pytest.mark.parametrize(
    "content, needles",
    [
        ("{not json", ["not valid JSON"]),
        ("[1, 2]", ["JSON object"]),
        ('{"model_type": "bert", "hidden_size": 8}', ["model_type 'bert'", "not supported"]),
        ('{"model_type": "llama", "hidden_size": -4}', ["hidden_size", "-4"]),
        ('{"model_type": "llama", "hidden_size": "4096"}', ["hidden_size", "'4096'"]),
        ('{"model_type": "llama", "hidden_size": true}', ["hidden_size", "True"]),
        ('{"model_type": "llama", "hidden_size": NaN}', ["NaN"]),
        ('{"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4}', ["missing field 'num_hidden_layers'"]),
    ],
)
def test_bad_config_is_one_line_exit_2(run_cli, tmp_path, content, needles):
    path = tmp_path / "config.json"
    path.write_text(content)
    _one_line_error(run_cli("estimate", "--config", str(path)), str(path), *needles)


def test_missing_config_file(run_cli, tmp_path):
    _one_line_error(run_cli("estimate", "--config", str(tmp_path / "nope.json")), "nope.json", "cannot read")


def test_json_error_is_json(run_cli):
    result = run_cli("estimate", "--model", "nope", "--json")
    assert result.exit_code == 2
    assert "unknown model" in json.loads(result.stdout)["error"]


def test_huge_bad_values_are_cut_in_messages(run_cli, tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_type": "llama", "hidden_size": "x" * 100_000}))
    result = run_cli("estimate", "--config", str(path))
    assert result.exit_code == 2 and len(result.stderr) < 400


def test_readme_shows_the_real_estimate_output(run_cli):
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    command = "$ memsym estimate --model qwen3-0.6b --seq-len 2048\n"
    shown = readme.split(command, 1)[1].split("```", 1)[0]
    assert shown == run_cli("estimate", "--model", "qwen3-0.6b", "--seq-len", "2048").stdout
