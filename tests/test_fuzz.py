"""Fuzzing the untrusted inputs (hypothesis, derandomized) and the numeric extremes.

Every target either succeeds or raises memsym's own error (``MemsymError``: one line, exit
status 2 at the CLI); anything else, a traceback, fails. Runs are reproducible
(``derandomize=True``) and bounded; ``MEMSYM_FUZZ_EXAMPLES=N`` raises every test's example
count for a longer local run (docs/hardening.md), e.g.::

    MEMSYM_FUZZ_EXAMPLES=5000 python -m pytest tests/test_fuzz.py -q

The CLI fuzz enumerates ``cli.cli.commands`` when it runs, so commands added later are
fuzzed too, with arguments generated from each option's click type.
"""

from __future__ import annotations

import json
import math
import os
from fractions import Fraction

import click
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cli
from engine.checkpoint import SAFETENSORS_DTYPE_BITS, CheckpointError, read_safetensors
from engine.errors import MemsymError
from engine.numeric import compile_model
from engine.families import spec_from_config
from engine.registry import entries, read_config
from engine.spec import ModelSpec
from engine.units import MAX_BYTES, UNITS, parse_bytes

LONG_RUN = int(os.environ.get("MEMSYM_FUZZ_EXAMPLES", "0"))


def fuzz(examples: int):
    """Derandomized (fixed seed), bounded; ``MEMSYM_FUZZ_EXAMPLES`` overrides the bound."""
    return settings(max_examples=LONG_RUN or examples, derandomize=True, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large])


# Text a real command line or file can hold: no NUL (argv is C strings), no lone surrogates.
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=24)
JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                         st.floats(allow_nan=True, allow_infinity=True), TEXT)
JUNK = st.recursive(JSON_SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                          st.dictionaries(TEXT, inner, max_size=4)), max_leaves=12)


def deep(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


# --- budget parser ----------------------------------------------------------------------

SIZE_LIKE = st.from_regex(r"\A\s?-?\d{0,24}(\.\d{0,12})?([eE][+-]?\d{0,6})?\s?[A-Za-z]{0,4}\s?\Z")


@fuzz(150)
@given(st.one_of(TEXT, SIZE_LIKE))
def test_parse_bytes_returns_an_exact_int_in_range_or_a_clean_error(text):
    try:
        value = parse_bytes(text, "--budget")
    except MemsymError as exc:
        assert "--budget" in str(exc) and "\n" not in str(exc)
        return
    assert type(value) is int and 1 <= value <= MAX_BYTES


@fuzz(200)
@given(st.integers(1, 10**9), st.sampled_from(sorted(UNITS)), st.sampled_from(["", " "]))
def test_parse_bytes_is_exact_for_whole_numbers(number, unit, space):
    if (number + 1) * UNITS[unit] > MAX_BYTES:
        return
    assert parse_bytes(f"{number}{space}{unit.lower()}") == number * UNITS[unit]
    assert parse_bytes(f"{number}.5{unit}") == math.floor(Fraction(2 * number + 1, 2) * UNITS[unit])


# --- config loader ----------------------------------------------------------------------

REGISTRY_CONFIGS = [e.config for e in entries()]
EXTRA_KEYS = ["head_dim", "sliding_window", "layer_types", "mlp_only_layers", "model_type", "num_key_value_heads",
              "quantization_config", "use_sliding_window", "max_window_layers", "n_routed_experts", "q_lora_rank"]


@st.composite
def mutated_configs(draw):
    config = dict(draw(st.sampled_from(REGISTRY_CONFIGS)))
    keys = draw(st.lists(st.sampled_from(sorted(config) + EXTRA_KEYS), min_size=1, max_size=4, unique=True))
    for key in keys:
        config[key] = draw(st.one_of(JUNK, st.integers(-3, 3), st.just(deep(200)), st.just(None)))
    if draw(st.booleans()):
        config.pop(draw(st.sampled_from(sorted(config))))
    return config


@fuzz(300)
@given(mutated_configs())
def test_spec_from_config_accepts_or_names_the_field(config):
    try:
        spec = spec_from_config(config, "fuzz")
    except MemsymError as exc:
        assert str(exc).startswith("config fuzz") and "\n" not in str(exc)
        return
    assert isinstance(spec, ModelSpec)
    assert spec.hidden_size >= 1 and spec.num_hidden_layers >= 1 and spec.vocab_size >= 1


def _dump(value) -> bytes:
    try:
        return json.dumps(value).encode()
    except (ValueError, RecursionError):
        return b"[]"


@fuzz(200)
@given(st.one_of(st.binary(max_size=256), JUNK.map(_dump), mutated_configs().map(_dump),
                 st.sampled_from([b"[" * 100_000, b'{"a": NaN}', b'{"a": -Infinity}', b"\xef\xbb\xbf{}", b"1" * 5000])))
def test_read_config_returns_an_object_or_names_the_file(tmp_path, raw):
    path = tmp_path / "config.json"
    path.write_bytes(raw)
    try:
        config = read_config(path)
    except MemsymError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc)
        return
    assert isinstance(config, dict)


# --- safetensors reader -----------------------------------------------------------------

DTYPES = sorted(SAFETENSORS_DTYPE_BITS)


@st.composite
def valid_safetensors(draw):
    """(header, data size, bytes per tensor): well-formed, tensors in a shuffled header order."""
    count = draw(st.integers(0, 6))
    entries, offset = [], 0
    for i in range(count):
        dtype = draw(st.sampled_from(DTYPES))
        shape = draw(st.lists(st.integers(0, 9), max_size=4))
        bits = math.prod(shape) * SAFETENSORS_DTYPE_BITS[dtype]
        if bits % 8:
            shape = shape + [8]
            bits *= 8
        size = bits // 8
        entries.append((f"t{i}", {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}, size))
        offset += size
    order = draw(st.permutations(entries))
    header = {name: info for name, info, _ in order}
    if draw(st.booleans()):
        header["__metadata__"] = {"format": "pt"}
    return header, offset, {name: size for name, _, size in entries}


@fuzz(200)
@given(valid_safetensors())
def test_valid_headers_give_exact_bytes(tmp_path, safetensors_writer, case):
    header, data_size, sizes = case
    path = safetensors_writer.raw(tmp_path / "x.safetensors", header, data_size)
    tensors = read_safetensors(path)
    assert {t.name: t.nbytes for t in tensors} == sizes
    assert sum(t.nbytes for t in tensors) == data_size


@st.composite
def broken_safetensors(draw):
    """A valid header with one field replaced by junk, or raw junk, with a random length prefix."""
    header, data_size, _ = draw(valid_safetensors())
    names = [n for n in header if n != "__metadata__"]
    if names and draw(st.booleans()):
        name = draw(st.sampled_from(names))
        field = draw(st.sampled_from(["dtype", "shape", "data_offsets", None]))
        entry = dict(header[name])
        if field is None:
            header[name] = draw(JUNK)
        else:
            entry[field] = draw(st.one_of(JUNK, st.lists(st.integers(-(2**65), 2**65), max_size=3)))
            header[name] = entry
    elif draw(st.booleans()):
        header = draw(JUNK)
    body = draw(st.one_of(st.just(_dump(header)), st.binary(max_size=64), st.just(b"[" * 50_000)))
    data_size = draw(st.one_of(st.just(data_size), st.integers(0, 64)))
    length = draw(st.one_of(st.none(), st.integers(0, 2**64 - 1), st.integers(0, 200)))
    return body, data_size, length


@fuzz(300)
@given(broken_safetensors())
def test_malformed_headers_raise_one_clean_error(tmp_path, safetensors_writer, case):
    body, data_size, length = case
    path = safetensors_writer.raw(tmp_path / "x.safetensors", body, data_size, length)
    try:
        tensors = read_safetensors(path)
    except CheckpointError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc) and len(str(exc)) < 600
        return
    size = path.stat().st_size
    assert sum(t.nbytes for t in tensors) <= size


@fuzz(100)
@given(st.binary(max_size=300))
def test_random_bytes_never_crash_the_reader(tmp_path, raw):
    path = tmp_path / "x.safetensors"
    path.write_bytes(raw)
    try:
        read_safetensors(path)
    except CheckpointError as exc:
        assert "\n" not in str(exc)


# --- every CLI command ------------------------------------------------------------------

REGISTRY_IDS = [e.id for e in entries()]
PLAUSIBLE = ["gpt2", "qwen3-0.6b", "llama-3.1-8b", "deepseek-v3", "acme/absent", "24GB", "80GiB", "1", "0", "-1",
             "1e30", "nan", "inf", "batch_size", "seq_len", "total", "weights", "kv_cache", "h100-80gb", "rtx-4090",
             "a100-80gb", "1:8", "1,2,4", "x", "", "__import__('os').getcwd()"]


@pytest.fixture()
def fuzz_paths(tmp_path, safetensors_writer):
    """Files a path-taking option is given: good and malformed configs and checkpoints."""
    good = {"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
            "intermediate_size": 128, "vocab_size": 256, "num_hidden_layers": 2}
    files = {"good.json": json.dumps(good), "strings.json": json.dumps({**good, "hidden_size": "64"}),
             "nan.json": json.dumps({**good, "vocab_size": float("nan")}), "array.json": "[1, 2]",
             "deep.json": "[" * 100_000, "bool.json": json.dumps({**good, "num_hidden_layers": True})}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text(json.dumps(good))
    safetensors_writer.tensors(ckpt / "model.safetensors", {"model.embed_tokens.weight": ("BF16", [256, 64])})
    bad = tmp_path / "badckpt"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps(good))
    safetensors_writer.raw(bad / "model.safetensors", {"a": {"dtype": "F99", "shape": [1], "data_offsets": [0, 1]}}, 1)
    others = [tmp_path / n for n in files if n != "good.json"] + [bad, tmp_path / "absent", tmp_path]
    return [str(tmp_path / "good.json"), str(ckpt), *map(str, others), "-"]  # the two good ones first


def _is_path(param: click.Parameter) -> bool:
    return isinstance(param.type, (click.Path, click.File)) or any(
        word in (param.name or "") for word in ("path", "file", "dir", "output", "config", "checkpoint"))


SOUND_STRINGS = ["24GB", "80GiB", "500MB", "1", "0", "0.9", "h100-80gb", "rtx-4090", "batch_size", "seq_len",
                 "kv_cache", "weights", "1:8", "attention,mlp"]
SOURCES = ("model_id", "config_path", "checkpoint_dir")  # --model / --config / --checkpoint: one at a time


def _junk_values(param: click.Parameter, paths: list[str]):
    if _is_path(param):
        return st.sampled_from(paths)
    numbers = st.one_of(st.integers(-2, 64), st.sampled_from([0, -1, 2**63, -(2**70)])).map(str)
    floats = st.floats(allow_nan=True, allow_infinity=True).map(repr)
    return st.one_of(numbers, floats, st.sampled_from(PLAUSIBLE), TEXT)


def _sound_values(param: click.Parameter, paths: list[str]):
    """Values of the right kind, so generated command lines get past parsing into the engine."""
    kind = param.type
    if param.name in ("model_id", "model"):
        return st.sampled_from(REGISTRY_IDS)
    if _is_path(param):
        return st.sampled_from(paths[:2])  # the good config, the good checkpoint
    if isinstance(kind, click.Choice):
        return st.sampled_from([str(c) for c in kind.choices])
    if isinstance(kind, click.IntRange):
        low = kind.min if kind.min is not None else 1
        high = kind.max if kind.max is not None else low + 64
        return st.integers(low, high).map(str)
    if isinstance(kind, (click.types.IntParamType, click.types.FloatParamType)):
        return st.one_of(st.integers(1, 64), st.sampled_from([10**4, 10**5, 10**7])).map(str)
    return st.sampled_from(SOUND_STRINGS)


@st.composite
def command_lines(draw, command: click.Command, paths: list[str]):
    """(argv, whether --json was given as a flag) for one command.

    One line in four is junk throughout; the others hold values of the right kind (and
    exactly one of --model/--config/--checkpoint), so the engine behind parsing is reached.
    """
    junk = draw(st.integers(0, 3)) == 3
    options = [p for p in command.params if isinstance(p, click.Option)]
    chosen = draw(st.lists(st.sampled_from(options), max_size=min(len(options), 6), unique_by=id)) if options else []
    if not junk:
        sources = [p for p in options if p.name in SOURCES]
        chosen = [p for p in chosen if p.name not in SOURCES] + ([draw(st.sampled_from(sources))] if sources else [])
    argv, as_json = [], False
    for param in chosen:
        if param.is_flag or param.count:
            flag = draw(st.sampled_from(param.opts + param.secondary_opts))
            argv.append(flag)
            as_json = as_json or flag == "--json"
            continue
        values = _junk_values(param, paths) if junk else _sound_values(param, paths)
        argv.append(draw(st.sampled_from(param.opts)))
        argv += [draw(values) for _ in range(max(param.nargs, 1))]
    for param in command.params:
        if isinstance(param, click.Argument) and (junk or param.required or draw(st.booleans())):
            values = _junk_values(param, paths) if junk else _sound_values(param, paths)
            argv += [draw(values) for _ in range(max(param.nargs, 1))]
    if junk and draw(st.booleans()):
        argv.insert(draw(st.integers(0, len(argv))), draw(TEXT))
    return argv, as_json


def check_cli_run(name: str, argv: list[str], as_json: bool) -> None:
    """Exit 0 or 2, never a traceback; errors one stderr line; --json errors are JSON."""
    result = CliRunner().invoke(cli.cli, [name, *argv], prog_name="memsym")
    where = f"memsym {name} {argv!r}"
    assert result.exception is None or isinstance(result.exception, SystemExit), (where, result.exc_info)
    assert result.exit_code in (0, 2), (where, result.exit_code, result.output)
    if result.exit_code == 2:
        assert result.stderr.startswith("memsym: error: ") and result.stderr.count("\n") == 1, (where, result.stderr)
        assert len(result.stderr) <= 301 and "\x1b" not in result.stderr, (where, result.stderr)  # 300 + newline
        if "--json" in argv:
            assert "error" in json.loads(result.stdout), (where, result.stdout)
    elif as_json and not {"-h", "--help", "--version"} & set(argv) and result.stdout.strip():
        json.loads(result.stdout)


def test_cli_fuzz_covers_every_command():
    """The parametrization below is built from cli.cli.commands: new commands join it."""
    assert {"models", "estimate"} <= set(cli.cli.commands)


@pytest.mark.parametrize("name", sorted(cli.cli.commands))
def test_cli_commands_never_traceback(name, fuzz_paths, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # anything a command writes lands here
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    command = cli.cli.commands[name]

    @fuzz(30)
    @given(command_lines(command, fuzz_paths))
    def run(case):
        check_cli_run(name, *case)

    run()


# --- numeric extremes -------------------------------------------------------------------

SEQ, BATCH, GPUS = 10**7, 10**5, 10**4


def python_kv_bytes(spec: ModelSpec, batch: int, seq: int, width: int = 2) -> int:
    """KV-cache bytes from the spec with Python ints (docs/formulas.md's formula, written again)."""
    per_sequence = state = 0
    for group in spec.layers:  # each layer group's mixer kind and options (formulas/layers/)
        options = group.mixer_args
        state += group.count * python_state_bytes(group.mixer, options, width)
        if group.mixer in ("gated_deltanet", "mamba", "mamba2", "none"):  # no tokens cached
            continue
        if group.mixer == "mla":
            per_layer_token = options["kv_lora_rank"] + options["qk_rope_head_dim"]
        else:
            heads = spec.num_attention_heads if options.get("expanded_kv_cache") else spec.num_key_value_heads
            per_layer_token = 2 * heads * spec.head_dim
        tokens = min(seq, options["sliding_window"]) if group.mixer == "sliding_attention" else seq
        if group.mixer == "chunked_attention":  # transformers keeps the last chunk - 1 tokens
            tokens = min(seq, options["attention_chunk_size"] - 1)
        if group.mixer == "cross_attention":  # image tokens only
            tokens = 0
        per_sequence += group.count * per_layer_token * tokens
    return batch * (width * per_sequence + state)


def python_state_bytes(mixer: str, o: dict, width: int) -> int:
    """One layer's recurrent state per sequence (issue 13): conv state in the model dtype, the
    recurrent state in float32 (4 bytes), with Python ints."""
    if mixer == "gated_deltanet":
        conv = 2 * o["linear_num_key_heads"] * o["linear_key_head_dim"] + o["linear_num_value_heads"] * o["linear_value_head_dim"]
        return conv * o["linear_conv_kernel_dim"] * width + o["linear_num_value_heads"] * o["linear_key_head_dim"] * o["linear_value_head_dim"] * 4
    if mixer == "mamba":
        return o["intermediate_size"] * (o["conv_kernel"] * width + o["state_size"] * 4)
    if mixer in ("mamba2", "attention_mamba2"):
        p = "mamba_" if mixer == "attention_mamba2" else ""
        inner = o[p + "num_heads"] * o[p + "head_dim"]
        conv = inner + 2 * o[p + "n_groups"] * o[p + "state_size"]
        return conv * o[p + "conv_kernel"] * width + inner * o[p + "state_size"] * 4
    return 0


@pytest.mark.parametrize("model", REGISTRY_IDS)
def test_kv_cache_is_exact_at_ten_million_tokens_and_a_hundred_thousand_sequences(model):
    from engine.api import estimate

    result = estimate(model, batch_size=BATCH, seq_len=SEQ)
    kv = result.evaluation.terms["kv_cache"]
    assert type(kv) is int and kv == python_kv_bytes(result.spec, BATCH, SEQ)


HUGE = {"model_type": "llama", "hidden_size": 65536, "num_attention_heads": 512, "num_key_value_heads": 64,
        "head_dim": 128, "intermediate_size": 262144, "vocab_size": 262144, "num_hidden_layers": 256}


def python_llama_parameters(c: dict) -> int:
    h, a, kv, d, f = (c[k] for k in ("hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim",
                                     "intermediate_size"))
    per_layer = h * a * d * 2 + 2 * h * kv * d + 3 * h * f + 2 * h
    return 2 * c["vocab_size"] * h + c["num_hidden_layers"] * per_layer + h


def test_ten_trillion_parameters_are_counted_exactly():
    from engine.architecture import count_parameters
    from engine.profiles import build
    from engine.scenario import Scenario

    spec = spec_from_config(HUGE, "huge")
    params = python_llama_parameters(HUGE)
    assert params > 10**13
    assert count_parameters(spec)["parameters"] == params
    ev = build(spec, Scenario(batch_size=BATCH, seq_len=SEQ)).evaluate()
    # the default transformers profile: bf16 parameters + the rotary inv_freq buffers (head_dim values)
    assert ev.terms["weights"] - ev.terms["weights/rotary_buffers"] == 2 * params
    assert ev.terms["kv_cache"] == python_kv_bytes(spec, BATCH, SEQ)


def test_ten_thousand_gpus_shard_state_exactly():
    """ZeRO-3 over 10^4 data-parallel GPUs: each sharded term is the unsharded one / 10^4, rounded up."""
    from engine.profiles import build
    from engine.scenario import Scenario

    spec = spec_from_config(HUGE, "huge")
    knobs = dict(mode="training", batch_size=1, seq_len=4096, recompute="full", profile="megatron")
    one = build(spec, Scenario(**knobs)).evaluate()
    many = build(spec, Scenario(**knobs, dp=GPUS, zero=3)).evaluate()
    for term in ("optimizer", "master_weights", "gradients"):
        assert many.terms[term] == math.ceil(Fraction(one.terms[term], GPUS)), term
    assert all(type(v) is int for v in many.terms.values())
    assert many.total_bytes < one.total_bytes


@pytest.mark.parametrize("model, knobs", [
    ("llama-3.1-70b", {}), ("deepseek-v3", {}), ("gemma-2-9b", {"block_size": 16}),
    ("qwen3-0.6b", {"attention": "eager", "logits": "all"}),
])
def test_compiled_matches_exact_at_the_extremes(model, knobs):
    from engine.api import memory_model

    _, mm = memory_model(model, batch_size=None, seq_len=None, **knobs)
    f = compile_model(mm)
    for batch, seq in [(BATCH, SEQ), (1, SEQ), (BATCH, 1), (7, 3_999_999)]:
        exact = mm.evaluate(batch_size=batch, seq_len=seq).total_bytes
        got = float(f(batch_size=batch, seq_len=seq))
        assert abs(got - exact) <= 1e-12 * exact, (batch, seq, got, exact)


def test_compiled_matches_exact_for_ten_trillion_parameters_on_ten_thousand_gpus():
    from engine.profiles import build
    from engine.scenario import Scenario

    spec = spec_from_config(HUGE, "huge")
    mm = build(spec, Scenario(mode="training", batch_size=None, seq_len=None, dp=GPUS, zero=3, tp=8))
    f = compile_model(mm)
    for batch, seq in [(BATCH, SEQ), (1, 4096)]:
        exact = mm.evaluate(batch_size=batch, seq_len=seq).total_bytes
        assert abs(float(f(batch_size=batch, seq_len=seq)) - exact) <= 1e-12 * exact
