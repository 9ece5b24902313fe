"""Fuzzing hostile input (issue 15): file kinds, digit limits, layer lists, output targets.

Part of the fuzz suite (tests/test_fuzz.py has the parsers and the CLI at large); the same
rules: derandomized, bounded, ``MEMSYM_FUZZ_EXAMPLES=N`` for a long local run. The contract
each example checks: exit 0 with a right answer, or exit 2 with one stderr line of at most
300 characters; no traceback, nothing past a 10-second alarm, nothing touched but the
named output path.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cli
from engine.errors import MemsymError
from engine.families import spec_from_config
from engine.limits import MAX_MESSAGE
from test_hostile import TINY, deadline

LONG_RUN = int(os.environ.get("MEMSYM_FUZZ_EXAMPLES", "0"))


def fuzz(examples: int):
    return settings(max_examples=LONG_RUN or examples, derandomize=True, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large])


def contract(argv: list[str]) -> object:
    """Run ``memsym argv`` in-process under a 10 s alarm; exit 0, or 2 with one short line."""
    with deadline(10):
        result = CliRunner().invoke(cli.cli, argv, prog_name="memsym")
    assert result.exception is None or isinstance(result.exception, SystemExit), (argv, result.exc_info)
    assert result.exit_code in (0, 2), (argv, result.exit_code, result.output)
    if result.exit_code == 2:
        line = result.stderr
        assert line.startswith("memsym: error: ") and line.count("\n") == 1, (argv, line)
        assert len(line) - 1 <= MAX_MESSAGE and "\x1b" not in line, (argv, line)
    return result


# --- file kinds -------------------------------------------------------------------------

FILE_KINDS = ("good", "junk", "fifo", "/dev/zero", "/dev/null", "folder", "link-good", "link-dangling",
              "missing", "sparse-huge", "long-name")


def make_input(folder: Path, kind: str, name: str = "config.json") -> str:
    """A path of the given kind in ``folder`` (or a device), for --config and checkpoint files."""
    path = folder / name
    if kind in ("/dev/zero", "/dev/null"):
        return kind
    if kind == "good":
        path.write_text(json.dumps(TINY))
    elif kind == "junk":
        path.write_bytes(b"\xff{" * 50)
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    elif kind == "link-good":
        (folder / "real.json").write_text(json.dumps(TINY))
        path.symlink_to(folder / "real.json")
    elif kind == "link-dangling":
        path.symlink_to(folder / "nowhere")
    elif kind == "sparse-huge":
        with path.open("wb") as handle:
            handle.truncate(2**40)
    elif kind == "long-name":
        return str(folder / ("n" * 5000))
    return str(path)


@fuzz(40)
@given(st.sampled_from(FILE_KINDS), st.sampled_from(FILE_KINDS), st.booleans())
def test_every_kind_of_input_file_ends_in_an_answer_or_one_line(tmp_path_factory, config_kind, shard_kind, folder):
    where = tmp_path_factory.mktemp("in")
    if folder:  # a checkpoint folder: its config.json and its one shard
        make_input(where, config_kind)
        make_input(where, shard_kind, "model.safetensors")
        contract(["estimate", "--checkpoint", str(where)])
    else:
        contract(["estimate", "--config", make_input(where, config_kind)])


# --- digit limits -----------------------------------------------------------------------

NUMERIC_FLAGS = ["--seq-len", "--batch-size", "--tp", "--pp", "--cp", "--dp", "--vpp", "--block-size",
                 "--allocator-fraction", "--reserve", "--comm-buffer", "--lora-rank", "--quant-group-size"]


@st.composite
def long_numbers(draw) -> str:
    """Numbers as text with 0 to 6,000 digits: whole, decimal, with units or exponents."""
    digits = draw(st.sampled_from([1, 2, 15, 16, 17, 29, 30, 31, 60, 400, 4300, 4301, 6000]))
    whole = draw(st.sampled_from("123456789")) + "0" * (digits - 1)
    shape = draw(st.sampled_from(["{w}", "0.{n}", "{w}.{n}", "{w}e{e}", "{w}GB", "0.{n}B", "-{w}", "{w}{w}"]))
    nines = "9" * draw(st.sampled_from([1, 28, 29, 30, 31, 5000]))
    return shape.format(w=whole, n=nines, e=draw(st.integers(0, 999)))


@fuzz(60)
@given(st.lists(st.tuples(st.sampled_from(NUMERIC_FLAGS), long_numbers()), min_size=1, max_size=3),
       st.sampled_from(["estimate", "codegen", "sweep"]), st.booleans())
def test_numbers_of_any_length_are_answered_or_refused_in_one_line(tmp_path, flags, command, training):
    argv = [command, "--model", "qwen3-0.6b"] + (["--mode", "training"] if training else [])
    if command == "codegen":
        argv += ["-o", str(tmp_path / "m.py")]
    for flag, value in flags:
        argv += [flag, value]
    contract(argv)


@fuzz(40)
@given(long_numbers(), st.sampled_from(["--budget", "--gpu-memory-utilization"]))
def test_budget_numbers_of_any_length(number, flag):
    extra = [flag, number] + (["--budget", "24GB"] if flag != "--budget" else [])
    contract(["solve", "batch-size", "--model", "qwen3-0.6b", *extra])


# --- layer lists ------------------------------------------------------------------------

LAYER_COUNTS = st.one_of(st.integers(1, 12), st.sampled_from([10**5, 10**5 + 1, 10**9, 2**63, 10**30]))
LAYER_TYPES = st.sampled_from(["full_attention", "sliding_attention", "chunked_attention", "", "x"])


@st.composite
def layer_configs(draw) -> dict:
    family = draw(st.sampled_from(["llama", "gemma2", "qwen3", "qwen3_moe", "mistral", "phi3"]))
    config = {**TINY, "model_type": family, "num_hidden_layers": draw(LAYER_COUNTS)}
    if draw(st.booleans()):
        config["layer_types"] = draw(st.lists(LAYER_TYPES, max_size=16))
    if draw(st.booleans()):
        config["sliding_window"] = draw(st.integers(1, 4096))
    if family == "qwen3_moe":
        config.update(num_experts=4, num_experts_per_tok=draw(st.integers(1, 6)), moe_intermediate_size=32,
                      mlp_only_layers=draw(st.lists(st.integers(-2, 20), max_size=6)),
                      decoder_sparse_step=draw(st.integers(1, 4)))
    if family.startswith("qwen3"):
        config.update(use_sliding_window=draw(st.booleans()), max_window_layers=draw(st.integers(0, 20)))
    return config


@fuzz(150)
@given(layer_configs())
def test_layer_lists_give_a_consistent_spec_or_name_the_field(config):
    with deadline(10):
        try:
            spec = spec_from_config(config, "fuzz")
        except MemsymError as exc:
            assert str(exc).startswith("config fuzz") and "\n" not in str(exc)
            return
    assert 0 <= spec.layer_count(mixer="sliding_attention") <= spec.num_hidden_layers <= 10**5
    assert 0 <= spec.layer_count(mlp="moe") <= spec.num_hidden_layers and spec.head_dim >= 1


@fuzz(25)
@given(layer_configs().filter(lambda c: isinstance(c["num_hidden_layers"], int) and c["num_hidden_layers"] < 100))
def test_memory_is_never_negative_for_any_layer_list(tmp_path, config):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(config))
    result = contract(["estimate", "--config", str(path), "--json", "--seq-len", "8192"])
    if result.exit_code == 0:
        out = json.loads(result.stdout)
        assert all(v >= 0 for v in out["terms"].values()) and out["total_bytes"] > 0


# --- output targets ---------------------------------------------------------------------

TARGETS = ("new", "existing-0600", "link-file", "link-dangling", "fifo", "folder", "/dev/null", "long-name",
           "missing-folder", "under-a-file")


def make_target(folder: Path, kind: str) -> str:
    path = folder / "out.py"
    if kind == "existing-0600":
        path.write_text("old\n")
        path.chmod(0o600)
    elif kind == "link-file":
        (folder / "victim").write_text("keep\n")
        path.symlink_to(folder / "victim")
    elif kind == "link-dangling":
        path.symlink_to(folder / "nowhere")
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    elif kind == "long-name":
        return str(folder / ("n" * 300 + ".py"))
    elif kind == "missing-folder":
        return str(folder / "no" / "out.py")
    elif kind == "under-a-file":
        (folder / "file").write_text("x")
        return str(folder / "file" / "out.py")
    return "/dev/null" if kind == "/dev/null" else str(path)


def snapshot(folder: Path) -> dict:
    out = {}
    for entry in sorted(folder.iterdir()):
        info = os.lstat(entry)
        body = entry.read_bytes() if stat.S_ISREG(info.st_mode) else os.readlink(entry) if entry.is_symlink() else b""
        out[entry.name] = (stat.S_IFMT(info.st_mode), stat.S_IMODE(info.st_mode), body)
    return out


@fuzz(30)
@given(st.sampled_from(TARGETS), st.sampled_from(["gpt2", "no-such-model"]))
def test_outputs_touch_only_a_regular_file_at_the_named_path(tmp_path_factory, kind, model):
    folder = tmp_path_factory.mktemp("out")
    target = make_target(folder, kind)
    before = snapshot(folder)
    result = contract(["codegen", "--model", model, "-o", target])
    after = snapshot(folder)
    assert stat.S_ISCHR(os.lstat("/dev/null").st_mode)
    if result.exit_code == 2:
        assert after == before, (kind, before, after)
        return
    assert kind in ("new", "existing-0600"), kind
    assert set(after) == set(before) | {"out.py"}
    mode = after["out.py"]
    assert mode[0] == stat.S_IFREG and b"def total_bytes" in mode[2]
    if kind == "existing-0600":
        assert mode[1] == 0o600

