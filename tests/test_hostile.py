"""Hostile input (issue 15): files that block or never end, output paths that are not files,
numbers past any real model, configs whose fields disagree, names that hold terminal codes.

The contract every case checks: a right answer, or exit status 2 with one stderr line of at
most 300 characters; no traceback, no hang (a FIFO is opened under a 10-second alarm), and
nothing touched outside the named output path. docs/hardening.md lists the bounds.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.errors import MemsymError
from engine.limits import BOUNDS, MAX_MESSAGE, printable
from engine.units import format_bytes, parse_bytes

ROOT = Path(__file__).resolve().parent.parent
TINY = {"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
        "intermediate_size": 128, "vocab_size": 256, "num_hidden_layers": 2}


@contextlib.contextmanager
def deadline(seconds: int = 10):
    """Fails the test (instead of hanging the suite) if the block runs past ``seconds``."""
    def expire(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def refused(result, *words: str) -> str:
    """Exit 2, one stderr line of at most 300 characters holding ``words``; the line."""
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    assert result.exit_code == 2, (result.exit_code, result.output)
    line = result.stderr
    assert line.startswith("memsym: error: ") and line.count("\n") == 1 and len(line.rstrip("\n")) <= MAX_MESSAGE, line
    assert "\x1b" not in line
    for word in words:
        assert word in line, (word, line)
    return line


def write_config(path: Path, **fields) -> Path:
    path.write_text(json.dumps({**TINY, **fields}))
    return path


# --- inputs: regular files only ---------------------------------------------------------

@pytest.fixture()
def fifo(tmp_path) -> Path:
    path = tmp_path / "config.json"
    os.mkfifo(path)
    return path


def test_a_fifo_as_config_is_refused_without_blocking(run_cli, fifo):
    with deadline():
        refused(run_cli("estimate", "--config", str(fifo)), "not a regular file")
        refused(run_cli("estimate", "--config", str(fifo.parent)), "not a regular file")  # the folder's config.json


def test_a_fifo_in_a_checkpoint_folder_is_refused_without_blocking(run_cli, tmp_path, safetensors_writer):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    write_config(folder / "config.json")
    os.mkfifo(folder / "model.safetensors")
    with deadline():
        refused(run_cli("estimate", "--checkpoint", str(folder)), "not a regular file")
        os.unlink(folder / "model.safetensors")
        safetensors_writer.tensors(folder / "model.safetensors", {"a": ("BF16", [2])})
        os.mkfifo(folder / "model.safetensors.index.json")
        refused(run_cli("estimate", "--checkpoint", str(folder)), "index.json", "not a regular file")


def test_a_fifo_in_the_hf_cache_is_no_ref_and_no_config(run_cli, tmp_path, monkeypatch):
    repo = tmp_path / "hub" / "models--acme--tiny"
    (repo / "refs").mkdir(parents=True)
    os.mkfifo(repo / "refs" / "main")
    snapshot = repo / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    os.mkfifo(snapshot / "config.json")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with deadline():
        refused(run_cli("estimate", "--model", "acme/tiny"), "not a regular file")


def test_devices_are_refused_before_reading(run_cli):
    with deadline():
        refused(run_cli("estimate", "--config", "/dev/zero"), "/dev/zero", "not a regular file")
        refused(run_cli("estimate", "--config", "/dev/null"), "not a regular file")


def test_oversized_and_overlong_paths_are_one_line(run_cli, tmp_path):
    big = tmp_path / "big.json"
    with big.open("wb") as handle:
        handle.truncate(64 * 2**20)  # sparse: 64 MiB of zeros on no disk
    refused(run_cli("estimate", "--config", str(big)), "too large")
    refused(run_cli("estimate", "--config", "x" * 5000), "cannot read")
    refused(run_cli("estimate", "--checkpoint", "/" + "d/" * 3000), "not a folder")
    refused(run_cli("codegen", "--model", "gpt2", "-o", str(tmp_path / ("n" * 300 + ".py"))), "-o")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.json"]


# --- outputs: a regular file or a new path ----------------------------------------------

def test_codegen_keeps_permissions_and_leaves_no_temporary(run_cli, tmp_path):
    target = tmp_path / "m.py"
    target.write_text("old\n")
    target.chmod(0o600)
    assert run_cli("codegen", "--model", "gpt2", "-o", str(target)).exit_code == 0
    assert stat.S_IMODE(target.stat().st_mode) == 0o600 and "def total_bytes" in target.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["m.py"]


def test_symlinks_fifos_and_devices_are_never_replaced(run_cli, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep\n")
    link = tmp_path / "link.py"
    link.symlink_to(victim)
    refused(run_cli("codegen", "--model", "gpt2", "-o", str(link)), "symbolic link")
    assert link.is_symlink() and victim.read_text() == "keep\n"
    dangling = tmp_path / "dangling.py"
    dangling.symlink_to(tmp_path / "nowhere.py")
    refused(run_cli("codegen", "--model", "gpt2", "-o", str(dangling)), "symbolic link")
    assert not (tmp_path / "nowhere.py").exists()
    pipe = tmp_path / "pipe.py"
    os.mkfifo(pipe)
    with deadline():
        refused(run_cli("codegen", "--model", "gpt2", "-o", str(pipe)), "not a regular file")
    assert stat.S_ISFIFO(os.lstat(pipe).st_mode)
    refused(run_cli("codegen", "--model", "gpt2", "-o", "/dev/null"), "not a regular file")
    assert stat.S_ISCHR(os.lstat("/dev/null").st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dangling.py", "link.py", "pipe.py", "victim.txt"]


def test_plot_output_follows_the_same_rules(run_cli, tmp_path):
    pytest.importorskip("matplotlib")
    link = tmp_path / "p.png"
    link.symlink_to(tmp_path / "elsewhere.png")
    refused(run_cli("plot", "--model", "gpt2", "--seq-len", "1:64:x2", "-o", str(link)), "symbolic link")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.png"]


# --- numbers: bounded at the input, formatted in range ----------------------------------

@pytest.mark.parametrize("model_type, extra", [
    ("llama", {}), ("gemma2", {}), ("qwen3_moe", {"num_experts": 4, "num_experts_per_tok": 2,
                                                  "moe_intermediate_size": 32}),
])
def test_a_billion_layers_is_refused_fast(run_cli, tmp_path, model_type, extra):
    path = write_config(tmp_path / "c.json", model_type=model_type, num_hidden_layers=10**9, **extra)
    start = time.perf_counter()
    refused(run_cli("estimate", "--config", str(path)), "num_hidden_layers", f"{BOUNDS['layers'].high:,}")
    assert time.perf_counter() - start < 5


@pytest.mark.parametrize("args, words", [
    (("--allocator-fraction", "0." + "9" * 5000), ["--allocator-fraction", "digits"]),
    (("--seq-len", str(10**400)), ["--seq-len", "at most"]),
    (("--batch-size", str(10**300)), ["--batch-size"]),
    (("--cp", str(10**20)), ["--cp", "at most"]),
    (("--budget", "0." + "9" * 40 + "B"), ["--budget"]),
    (("--budget", "24GB", "--gpu-memory-utilization", "0." + "5" * 5000), ["--gpu-memory-utilization"]),
])
def test_huge_numbers_in_flags_are_refused(run_cli, args, words):
    command = "solve" if "--budget" in args else "estimate"
    head = ("solve", "batch-size") if command == "solve" else ("estimate",)
    refused(run_cli(*head, "--model", "qwen3-0.6b", *args), *words)


def test_huge_numbers_in_configs_are_refused_everywhere(run_cli, tmp_path):
    path = write_config(tmp_path / "c.json", hidden_size=10**400)
    for command in (["estimate"], ["codegen", "-o", str(tmp_path / "m.py")], ["sweep", "--seq-len", "1,2"],
                    ["latex", "--values"]):
        refused(run_cli(*command, "--config", str(path)), "hidden_size", "at most")
    assert not (tmp_path / "m.py").exists()


def test_sizes_floor_exactly_and_format_without_overflow():
    with pytest.raises(MemsymError):
        parse_bytes("0." + "9" * 40 + "B")  # 0 bytes, never rounded up to 1
    assert parse_bytes("1." + "9" * 40 + "B") == 1
    for n in (10**400, 2**1000 + 1, 10**4000):
        text = format_bytes(n)
        assert "PB" in text and len(text) < 80
    assert format_bytes(1192099840) == "1.192 GB (1.110 GiB)"


def test_huge_safetensors_numbers_are_one_line(run_cli, tmp_path, safetensors_writer):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    write_config(folder / "config.json")
    safetensors_writer.raw(folder / "model.safetensors", {"a": {"dtype": "BF16", "shape": [10**100] * 64,
                                                                  "data_offsets": [0, 2]}}, 2)
    refused(run_cli("estimate", "--checkpoint", str(folder)), "'shape'")
    name = "model.layers." + "7" * 5000 + ".w"
    safetensors_writer.tensors(folder / "model.safetensors", {name: ("BF16", [1])})
    result = run_cli("estimate", "--checkpoint", str(folder), "--json")
    assert result.exit_code == 0, result.output
    kinds = {g["kind"] for g in json.loads(result.stdout)["checkpoint"]["not_in_formula"]}
    assert kinds == {"extra_layers"}


# --- fields that disagree ---------------------------------------------------------------

@pytest.mark.parametrize("fields, words", [
    ({"layer_types": ["sliding_attention"] * 100, "sliding_window": 16}, ["layer_types", "100 entries"]),
    ({"head_dim": 0}, ["head_dim"]),
    ({"num_attention_heads": 128}, ["head_dim"]),  # 64 // 128 = 0
    ({"model_type": "gpt2", "n_embd": 768, "n_head": 7, "n_layer": 2, "n_positions": 64}, ["n_embd", "n_head"]),
    ({"model_type": "falcon", "new_decoder_architecture": True, "num_kv_heads": 3}, ["key/value heads"]),
    ({"model_type": "mixtral", "num_local_experts": 2, "num_experts_per_tok": 3}, ["num_experts_per_tok"]),
    ({"model_type": "qwen3_moe", "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32,
      "mlp_only_layers": [5]}, ["mlp_only_layers", "layer 5"]),
])
def test_fields_that_disagree_are_named(run_cli, tmp_path, fields, words):
    refused(run_cli("estimate", "--config", str(write_config(tmp_path / "c.json", **fields))), *words)


def test_memory_is_never_negative(run_cli, tmp_path):
    """A layer list of the right length gives every term >= 0 (the old answer was -603,979,776)."""
    path = write_config(tmp_path / "c.json", layer_types=["sliding_attention", "full_attention"], sliding_window=16)
    result = run_cli("estimate", "--config", str(path), "--json")
    assert result.exit_code == 0 and all(v >= 0 for v in json.loads(result.stdout)["terms"].values())


def test_a_deepseek_whose_layers_are_all_dense_is_a_dense_model(run_cli, tmp_path):
    deepseek = {"model_type": "deepseek_v3", "qk_rope_head_dim": 8, "kv_lora_rank": 16, "qk_nope_head_dim": 8,
                "v_head_dim": 8, "n_routed_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32}
    dense = json.loads(run_cli("estimate", "--json", "--config", str(write_config(
        tmp_path / "a.json", **deepseek, first_k_dense_replace=2))).stdout)
    no_experts = {k: v for k, v in deepseek.items() if k not in ("n_routed_experts", "num_experts_per_tok")}
    plain = json.loads(run_cli("estimate", "--json", "--config", str(write_config(tmp_path / "b.json", **no_experts))).stdout)
    assert dense["terms"]["weights"] == plain["terms"]["weights"] > 0


@pytest.mark.parametrize("args, words", [
    (("solve", "tp", "--model", "qwen3-0.6b", "--pp", "3", "--budget", "24GB"), ["--pp 3", "num_hidden_layers 28"]),
    (("estimate", "--model", "qwen3-0.6b", "--mode", "training", "--pp", "2", "--vpp", "5"), ["--vpp", "28"]),
])
def test_parallel_degrees_that_do_not_divide_the_layers(run_cli, args, words):
    refused(run_cli(*args), *words)


def test_a_tensor_in_two_shards_is_not_counted_twice(run_cli, tmp_path, safetensors_writer):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    write_config(folder / "config.json")
    for shard in ("a.safetensors", "b.safetensors"):
        safetensors_writer.tensors(folder / shard, {"model.embed_tokens.weight": ("BF16", [256, 64])})
    refused(run_cli("estimate", "--checkpoint", str(folder)), "stored in both", "a.safetensors", "b.safetensors")


# --- text: one printable line -----------------------------------------------------------

def test_repo_ids_end_at_the_end(run_cli):
    from engine.hf_cache import is_repo_id

    assert is_repo_id("acme/tiny") and not is_repo_id("acme/tiny\n")


def test_names_with_terminal_codes_are_escaped(run_cli, tmp_path, safetensors_writer):
    folder = tmp_path / "evil\x1b[2J\nname"
    folder.mkdir()
    write_config(folder / "config.json")
    result = run_cli("estimate", "--config", str(folder / "config.json"))
    assert result.exit_code == 0 and "\x1b" not in result.stdout and "evil\\x1b[2J\\x0aname" in result.stdout
    safetensors_writer.tensors(folder / "model.safetensors", {"model.layers.9.\x1b[31mx": ("BF16", [1])})
    result = run_cli("estimate", "--checkpoint", str(folder))
    assert result.exit_code == 0 and "\x1b" not in result.stdout
    refused(run_cli("estimate", "--model", "\x1b[31m" + "x" * 2000))


def test_markdown_output_escapes_html_and_markup(run_cli, tmp_path):
    folder = tmp_path / "<script>alert(1)<|script>"
    folder.mkdir()
    write_config(folder / "config.json")
    result = run_cli("latex", "--format", "markdown", "--config", str(folder / "config.json"))
    assert result.exit_code == 0 and "<script>" not in result.stdout and "&lt;script&gt;" in result.stdout


def test_error_lines_are_cut_to_300_characters(run_cli, tmp_path):
    path = tmp_path / ("d" * 200) / ("e" * 200)
    path.mkdir(parents=True)
    write_config(path / "config.json", hidden_size="x" * 10_000)
    refused(run_cli("estimate", "--config", str(path / "config.json")), "hidden_size")
    assert printable("a\x1bb\n") == "a\\x1bb\\x0a"


def test_a_closed_pipe_ends_quietly_with_status_0():
    command = (f"{sys.executable} cli.py sweep --model gpt2 --seq-len 1:100000:+1 --csv | head -1; "
               "exit ${PIPESTATUS[0]}")
    done = subprocess.run(["bash", "-c", command], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("batch_size,") and done.stderr == "", done.stderr
