"""--checkpoint DIR: exact stored bytes from real-format safetensors headers; HF-cache lookup.

Checkpoints are written byte by byte by the ``safetensors_writer`` fixture (conftest.py), so
CI needs no extra package; where the ``safetensors`` package is installed, one test checks
that it reads our files and that we read its files. Expected bytes are computed here from
the shapes written, independently of engine.checkpoint and of the formulas.
"""

from __future__ import annotations

import json
import math
import socket

import pytest

from engine import hf_cache
from engine.checkpoint import CheckpointError, read_checkpoint, read_safetensors

# A tiny Llama: 4 heads of 16, 2 KV heads, MLP width 192 (not a multiple of 128: fp8 blocks round up).
H, A, KV, D, F, V, L = 64, 4, 2, 16, 192, 256, 2


def llama_config(**overrides) -> dict:
    config = {"model_type": "llama", "hidden_size": H, "num_attention_heads": A, "num_key_value_heads": KV,
              "head_dim": D, "intermediate_size": F, "vocab_size": V, "num_hidden_layers": L,
              "tie_word_embeddings": False, "torch_dtype": "bfloat16"}
    config.update(overrides)
    return config


def linears(layer: int):
    p = f"model.layers.{layer}."
    return [(p + "self_attn.q_proj", A * D, H), (p + "self_attn.k_proj", KV * D, H),
            (p + "self_attn.v_proj", KV * D, H), (p + "self_attn.o_proj", H, A * D),
            (p + "mlp.gate_proj", F, H), (p + "mlp.up_proj", F, H), (p + "mlp.down_proj", H, F)]


def plain(dtype):
    return lambda name, out, inp: {name + ".weight": (dtype, [out, inp])}


def fp8_blocks(name, out, inp):
    """DeepSeek-V3 layout: fp8 weight, one float32 weight_scale_inv per 128 x 128 block."""
    return {name + ".weight": ("F8_E4M3", [out, inp]),
            name + ".weight_scale_inv": ("F32", [math.ceil(out / 128), math.ceil(inp / 128)])}


def awq(group):
    """AutoAWQ GEMM layout: qweight [in, out/8], qzeros [in/g, out/8] int32, scales [in/g, out] fp16."""
    return lambda name, out, inp: {name + ".qweight": ("I32", [inp, out // 8]),
                                   name + ".qzeros": ("I32", [inp // group, out // 8]),
                                   name + ".scales": ("F16", [inp // group, out])}


def gptq(group):
    """AutoGPTQ layout: qweight [in/8, out], qzeros [in/g, out/8] int32, scales fp16, g_idx [in] int32."""
    return lambda name, out, inp: {name + ".qweight": ("I32", [inp // 8, out]),
                                   name + ".qzeros": ("I32", [inp // group, out // 8]),
                                   name + ".scales": ("F16", [inp // group, out]),
                                   name + ".g_idx": ("I32", [inp])}


def llama_tensors(linear=plain("BF16"), dtype="BF16", layers=L) -> dict:
    tensors = {"model.embed_tokens.weight": (dtype, [V, H])}
    for i in range(layers):
        tensors[f"model.layers.{i}.input_layernorm.weight"] = (dtype, [H])
        tensors[f"model.layers.{i}.post_attention_layernorm.weight"] = (dtype, [H])
        for name, out, inp in linears(i):
            tensors.update(linear(name, out, inp))
    tensors["model.norm.weight"] = (dtype, [H])
    tensors["lm_head.weight"] = (dtype, [V, H])
    return tensors


def expected_bytes(writer, tensors: dict) -> int:
    return sum(writer.nbytes(dtype, shape) for dtype, shape in tensors.values())


def make_checkpoint(tmp_path, writer, tensors, config=None, shards=1):
    folder = tmp_path / "ckpt"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config or llama_config()))
    names = list(tensors)
    if shards == 1:
        writer.tensors(folder / "model.safetensors", tensors, metadata={"format": "pt"})
        return folder
    weight_map = {}
    for k in range(shards):
        shard = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: tensors[n] for n in names[k::shards]}
        writer.tensors(folder / shard, part, metadata={"format": "pt"})
        weight_map.update({n: shard for n in part})
    index = {"metadata": {"total_size": expected_bytes(writer, tensors)}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    return folder


def checkpoint_json(run_cli, folder, *flags) -> dict:
    result = run_cli("estimate", "--checkpoint", str(folder), "--json", *flags)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


# --- exact bytes ------------------------------------------------------------------------

@pytest.mark.parametrize("shards", [1, 3])
def test_bf16_checkpoint_bytes_are_exact_and_match_the_formula(tmp_path, safetensors_writer, run_cli, shards):
    tensors = llama_tensors()
    folder = make_checkpoint(tmp_path, safetensors_writer, tensors, shards=shards)
    out = checkpoint_json(run_cli, folder)
    want = expected_bytes(safetensors_writer, tensors)
    assert out["checkpoint_bytes"] == want
    assert out["checkpoint"]["bytes_by_dtype"] == {"BF16": want}
    assert out["checkpoint"]["tensors"] == len(tensors)
    assert len(out["checkpoint"]["files"]) == shards
    # the default transformers profile counts the non-persistent rotary inv_freq buffers, never stored
    stored_terms = out["terms"]["weights"] - out["breakdown"]["weights/rotary_buffers"]
    assert stored_terms == want == out["checkpoint"]["formula_weights_bytes"]
    assert out["checkpoint"]["matches_formula"] and out["checkpoint"]["difference_bytes"] == 0


def test_dtype_mismatch_is_flagged_with_a_hint(tmp_path, safetensors_writer, run_cli):
    folder = make_checkpoint(tmp_path, safetensors_writer, llama_tensors())
    out = checkpoint_json(run_cli, folder, "--dtype", "float32")
    want = expected_bytes(safetensors_writer, llama_tensors())
    assert out["checkpoint"]["formula_weights_bytes"] == 2 * want
    assert out["checkpoint"]["difference_bytes"] == -want and not out["checkpoint"]["matches_formula"]
    assert "--dtype bfloat16" in out["checkpoint"]["hint"]
    text = run_cli("estimate", "--checkpoint", str(folder), "--dtype", "float32")
    assert text.exit_code == 0
    assert f"{want:,}" in text.stdout and f"{-want:+,}" in text.stdout and "differs" in text.stdout


def test_fp8_block_scaled_checkpoint_matches_the_fp8_formula(tmp_path, safetensors_writer, run_cli):
    tensors = llama_tensors(fp8_blocks)
    folder = make_checkpoint(tmp_path, safetensors_writer, tensors, shards=2)
    out = checkpoint_json(run_cli, folder, "--weight-quant", "fp8")
    want = expected_bytes(safetensors_writer, tensors)
    scales = sum(safetensors_writer.nbytes(*v) for k, v in tensors.items() if k.endswith("weight_scale_inv"))
    assert out["checkpoint_bytes"] == want
    assert out["checkpoint"]["bytes_by_dtype"]["F32"] == scales
    assert out["checkpoint"]["formula_weights_bytes"] == want


def test_awq_int4_matches_the_int4_formula_and_gptq_g_idx_is_named(tmp_path, safetensors_writer, run_cli):
    group = 32
    knobs = ("--dtype", "float16", "--weight-quant", "int4", "--quant-group-size", str(group))
    awq_tensors = llama_tensors(awq(group), dtype="F16")
    out = checkpoint_json(run_cli, make_checkpoint(tmp_path, safetensors_writer, awq_tensors), *knobs)
    assert out["checkpoint_bytes"] == expected_bytes(safetensors_writer, awq_tensors)
    assert out["checkpoint"]["matches_formula"]

    gptq_tensors = llama_tensors(gptq(group), dtype="F16")
    (tmp_path / "ckpt" / "model.safetensors").unlink()
    out = checkpoint_json(run_cli, make_checkpoint(tmp_path, safetensors_writer, gptq_tensors), *knobs)
    g_idx = sum(safetensors_writer.nbytes(*v) for k, v in gptq_tensors.items() if k.endswith(".g_idx"))
    assert out["checkpoint_bytes"] == expected_bytes(safetensors_writer, gptq_tensors)
    assert out["checkpoint"]["difference_bytes"] == g_idx > 0
    (extra,) = out["checkpoint"]["not_in_formula"]
    assert extra["kind"] == "gptq_g_idx" and extra["bytes"] == g_idx and extra["tensors"] == 7 * L
    assert out["checkpoint"]["unexplained_bytes"] == 0


def test_mtp_layer_past_num_hidden_layers_is_named(tmp_path, safetensors_writer, run_cli):
    tensors = llama_tensors()
    mtp = {f"model.layers.{L}.eh_proj.weight": ("BF16", [H, 2 * H]),
           f"model.layers.{L}.enorm.weight": ("BF16", [H]),
           f"model.layers.{L}.mlp.down_proj.weight": ("BF16", [H, F])}
    folder = make_checkpoint(tmp_path, safetensors_writer, {**tensors, **mtp}, shards=2)
    out = checkpoint_json(run_cli, folder)
    mtp_bytes = expected_bytes(safetensors_writer, mtp)
    assert out["checkpoint"]["difference_bytes"] == mtp_bytes
    (extra,) = out["checkpoint"]["not_in_formula"]
    assert extra["kind"] == "extra_layers" and extra["bytes"] == mtp_bytes and extra["tensors"] == 3
    assert out["checkpoint"]["unexplained_bytes"] == 0
    text = run_cli("estimate", "--checkpoint", str(folder))
    assert "multi-token-prediction" in text.stdout and f"model.layers.{L}." in text.stdout


def test_float32_tensors_in_a_bf16_checkpoint_explain_their_excess(tmp_path, safetensors_writer, run_cli):
    """transformers 5 keeps e.g. DeepSeek-V3's router gate in float32 (measured on a tiny model)."""
    tensors = llama_tensors()
    tensors["model.norm.weight"] = ("F32", [H])
    out = checkpoint_json(run_cli, make_checkpoint(tmp_path, safetensors_writer, tensors))
    assert out["checkpoint"]["difference_bytes"] == 2 * H
    (extra,) = out["checkpoint"]["not_in_formula"]
    assert extra["kind"] == "kept_in_float32" and extra["bytes"] == 2 * H and extra["tensors"] == 1
    assert out["checkpoint"]["unexplained_bytes"] == 0


def test_sub_byte_and_every_width(tmp_path, safetensors_writer):
    tensors = {"f4": ("F4", [6, 4]), "f6": ("F6_E2M3", [4, 4]), "b": ("BOOL", [3]), "i64": ("I64", [5]),
               "f64": ("F64", [2, 3]), "i16": ("I16", [7]), "empty": ("F32", [0, 4]), "scalar": ("F32", [])}
    path = tmp_path / "x.safetensors"
    safetensors_writer.tensors(path, tensors)
    got = {t.name: t.nbytes for t in read_safetensors(path)}
    assert got == {"f4": 12, "f6": 12, "b": 3, "i64": 40, "f64": 48, "i16": 14, "empty": 0, "scalar": 4}


def test_our_files_and_the_safetensors_package_agree(tmp_path, safetensors_writer):
    """Cross-check of the hand-written format against the reference implementation."""
    safetensors = pytest.importorskip("safetensors", reason="optional cross-check: safetensors not installed")
    numpy = pytest.importorskip("numpy")
    from safetensors.numpy import save_file

    ours = tmp_path / "ours.safetensors"
    safetensors_writer.tensors(ours, {"a": ("F32", [3, 5]), "b": ("BF16", [7]), "c": ("I32", [2, 2])})
    with safetensors.safe_open(str(ours), "np") as handle:
        assert sorted(handle.keys()) == ["a", "b", "c"]
    theirs = tmp_path / "theirs.safetensors"
    save_file({"x": numpy.zeros((3, 5), numpy.float32), "y": numpy.zeros(9, numpy.int8),
               "z": numpy.zeros((2, 3), numpy.float64)}, str(theirs), metadata={"format": "np"})
    assert {t.name: t.nbytes for t in read_safetensors(theirs)} == {"x": 60, "y": 9, "z": 48}


# --- malformed files: one line naming the file and the field, exit 2 ---------------------

GOOD = {"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
        "b": {"dtype": "BF16", "shape": [4], "data_offsets": [16, 24]}}


def _with(name, **changes):
    header = json.loads(json.dumps(GOOD))
    header[name].update(changes)
    return header


MALFORMED = {
    # id: (header or raw bytes, data bytes, length prefix override, fragments the message must hold)
    "short-file": (None, 0, None, ["header length", "fewer than the 8-byte prefix"]),
    "length-past-eof": (GOOD, 24, 10_000, ["header length", "runs past the end"]),
    "length-huge": (GOOD, 24, 2**63 + 5, ["header length", "more than the format allows"]),
    "length-all-ones": (GOOD, 24, 2**64 - 1, ["header length"]),
    "not-json": (b"{this is not json", 0, None, ["header", "not valid JSON"]),
    "not-utf8": (b'{"\xff\xfe": 1}', 0, None, ["header", "not UTF-8"]),
    "json-array": ([1, 2, 3], 0, None, ["header", "expected a JSON object, got list"]),
    "json-string": (b'"hello"', 0, None, ["header", "expected a JSON object, got str"]),
    "deep-nesting": (b'{"a": ' + b"[" * 200_000 + b"]" * 200_000 + b"}", 0, None, ["header", "nested too deeply"]),
    "nan-shape": (b'{"a": {"dtype": "F32", "shape": [NaN], "data_offsets": [0, 4]}}', 4, None, ["NaN"]),
    "infinity": (b'{"a": {"dtype": "F32", "shape": [Infinity], "data_offsets": [0, 4]}}', 4, None, ["Infinity"]),
    "duplicate-name": (b'{"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}, '
                       b'"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}', 1, None, ["appears twice"]),
    "unknown-dtype": (_with("a", dtype="F17"), 24, None, ["tensor 'a'", "'dtype'", "'F17'"]),
    "dtype-not-string": (_with("a", dtype=4), 24, None, ["tensor 'a'", "'dtype'"]),
    "payload-dtype": (_with("a", dtype="__import__('os')"), 24, None, ["'dtype'", "unknown dtype"]),
    "negative-shape": (_with("a", shape=[-2, -2]), 24, None, ["tensor 'a'", "'shape'"]),
    "bool-shape": (_with("a", shape=[True, 4]), 24, None, ["tensor 'a'", "'shape'"]),
    "float-shape": (_with("a", shape=[2.0, 2]), 24, None, ["tensor 'a'", "'shape'"]),
    "string-shape": (_with("a", shape="2x2"), 24, None, ["tensor 'a'", "'shape'"]),
    "rank-too-high": (_with("a", shape=[1] * 65), 24, None, ["tensor 'a'", "'shape'", "64"]),
    "absurd-shape": (_with("a", shape=[10**18, 10**18]), 24, None, ["tensor 'a'", "'shape' and 'data_offsets'"]),
    "shape-span-mismatch": (_with("a", shape=[2, 3]), 24, None, ["tensor 'a'", "disagree"]),
    "offsets-past-data": (_with("b", shape=[8], data_offsets=[16, 32]), 24, None, ["'data_offsets'", "24-byte"]),
    "negative-offsets": (_with("a", data_offsets=[-16, 0]), 24, None, ["tensor 'a'", "'data_offsets'"]),
    "reversed-offsets": (_with("a", data_offsets=[16, 0]), 24, None, ["tensor 'a'", "'data_offsets'"]),
    "three-offsets": (_with("a", data_offsets=[0, 8, 16]), 24, None, ["tensor 'a'", "'data_offsets'"]),
    "overlap": (_with("b", shape=[8], data_offsets=[8, 24]), 24, None, ["'data_offsets'", "overlaps"]),
    "gap": (_with("b", shape=[2], data_offsets=[20, 24]), 24, None, ["'data_offsets'", "gap"]),
    "trailing-bytes": (GOOD, 40, None, ["'data_offsets'", "cover 24 bytes of a 40-byte data area"]),
    "missing-field": ({"a": {"dtype": "F32", "shape": [1]}}, 4, None, ["tensor 'a'", "'data_offsets'"]),
    "entry-not-object": ({"a": [1, 2]}, 0, None, ["tensor 'a'", "expected an object"]),
    "metadata-not-strings": ({"__metadata__": {"format": 1}}, 0, None, ["'__metadata__'"]),
    "f4-half-byte": ({"a": {"dtype": "F4", "shape": [3], "data_offsets": [0, 2]}}, 2, None, ["12 bits", "disagree"]),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_safetensors_give_one_line_naming_file_and_field(tmp_path, safetensors_writer, run_cli, case):
    header, data, length, fragments = MALFORMED[case]
    folder = make_checkpoint(tmp_path, safetensors_writer, {"x": ("BF16", [1])})
    target = folder / "model.safetensors"
    if header is None:
        target.write_bytes(b"\x01\x02\x03")
    else:
        safetensors_writer.raw(target, header, data, length)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(folder)
    message = str(info.value)
    assert "\n" not in message and str(target) in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    result = run_cli("estimate", "--checkpoint", str(folder), "--json")
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("memsym: error: ")
    assert "model.safetensors" in result.stderr and len(result.stderr) < 400
    assert json.loads(result.stdout)["error"] in result.stderr


def _index(folder, weight_map):
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


@pytest.mark.parametrize("weight_map, fragment", [
    ({"x": "../../etc/passwd"}, "not a .safetensors file name in this folder"),
    ({"x": "/abs/model.safetensors"}, "not a .safetensors file name"),
    ({"x": 7}, "not a .safetensors file name"),
    ({"x": "missing.safetensors"}, "missing.safetensors is not a file"),
    ({"x": "model.safetensors", "y": "model.safetensors"}, "tensor 'y' is not in model.safetensors"),
    ({"z": "model.safetensors"}, "tensor 'x' of model.safetensors is not listed"),
    ({}, "'weight_map' must be a non-empty object"),
    ([], "'weight_map' must be a non-empty object"),
])
def test_malformed_index(tmp_path, safetensors_writer, run_cli, weight_map, fragment):
    folder = make_checkpoint(tmp_path, safetensors_writer, {"x": ("BF16", [1])})
    if isinstance(weight_map, list):
        (folder / "model.safetensors.index.json").write_text("[]")
    else:
        _index(folder, weight_map)
    with pytest.raises(CheckpointError, match="model.safetensors") as info:
        read_checkpoint(folder)
    assert fragment in str(info.value)
    result = run_cli("estimate", "--checkpoint", str(folder))
    assert result.exit_code == 2 and result.stderr.count("\n") == 1


@pytest.mark.parametrize("field, value", [
    ("hidden_size", "4096"), ("num_hidden_layers", True), ("vocab_size", float("nan")),
    ("intermediate_size", -5), ("num_attention_heads", [4]), ("head_dim", {"x": 1}), ("hidden_size", 64.5),
])
def test_bad_config_in_checkpoint_names_file_and_field(tmp_path, safetensors_writer, run_cli, field, value):
    folder = make_checkpoint(tmp_path, safetensors_writer, llama_tensors())
    text = json.dumps(llama_config(**{field: value}))  # NaN is written as JSON's non-standard NaN
    (folder / "config.json").write_text(text)
    result = run_cli("estimate", "--checkpoint", str(folder))
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert "config.json" in result.stderr
    assert field in result.stderr or "NaN" in result.stderr


def test_checkpoint_folder_errors(tmp_path, run_cli):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text(json.dumps(llama_config()))
    for args, fragment in [(("--checkpoint", str(empty)), "no *.safetensors"),
                           (("--checkpoint", str(tmp_path / "nope")), "nope: not a folder"),
                           (("--checkpoint", str(empty), "--model", "gpt2"), "without --model")]:
        result = run_cli("estimate", *args)
        assert result.exit_code == 2 and fragment in result.stderr and result.stderr.count("\n") == 1


# --- the local Hugging Face cache -------------------------------------------------------

COMMIT_OLD, COMMIT_NEW = "a" * 40, "b" * 40


def _cache(root, repo_id="acme/Tiny-Llama", commits=(COMMIT_OLD, COMMIT_NEW), ref=None, **overrides):
    repo = root / ("models--" + repo_id.replace("/", "--"))
    for layers, commit in enumerate(commits, start=1):
        snap = repo / "snapshots" / commit
        snap.mkdir(parents=True)
        (snap / "config.json").write_text(json.dumps(llama_config(num_hidden_layers=layers, **overrides)))
    if ref is not None:
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(ref)
    return repo


@pytest.fixture()
def no_network(monkeypatch):
    """Any socket opened during the test fails it: the cache lookup must stay offline."""
    def refuse(*args, **kwargs):
        raise AssertionError("memsym opened a network socket")
    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _layers(run_cli, model):
    result = run_cli("estimate", "--model", model, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_model_org_name_found_in_hf_cache(tmp_path, monkeypatch, run_cli, no_network):
    _cache(tmp_path / "hub", ref=COMMIT_OLD + "\n")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    out = _layers(run_cli, "acme/Tiny-Llama")
    assert out["model"] == "acme/Tiny-Llama"
    one_layer = _layers(run_cli, "ACME/tiny-llama")  # Hub ids are case-insensitive
    assert out["parameters"] == one_layer["parameters"]
    assert out["parameters"] == V * H * 2 + H + 1 * (2 * A * D * H + 2 * KV * D * H + 3 * H * F + 2 * H)


def test_newest_snapshot_without_ref_and_hf_home(tmp_path, monkeypatch, no_network):
    repo = _cache(tmp_path / "home" / "hub", ref="../../../../etc")  # a ref that is not a commit is ignored
    old, new = (repo / "snapshots" / c / "config.json" for c in (COMMIT_OLD, COMMIT_NEW))
    import os
    os.utime(old, ns=(2_000_000_000 * 10**9,) * 2)
    os.utime(new, ns=(1_000_000_000 * 10**9,) * 2)
    env = {"HF_HOME": str(tmp_path / "home")}
    assert hf_cache.cached_config("acme/Tiny-Llama", env) == old
    assert hf_cache.cache_dir({}).parts[-3:] == (".cache", "huggingface", "hub")
    assert hf_cache.cache_dir({"XDG_CACHE_HOME": "/x"}) == hf_cache.Path("/x/huggingface/hub")
    assert hf_cache.cache_dir({"HF_HUB_CACHE": "/a", "HF_HOME": "/b"}) == hf_cache.Path("/a")


@pytest.mark.parametrize("repo_id", ["../etc", "acme/../../x", "acme--x/y", "/abs/path", "acme/x/y", "a" * 97,
                                     "acme/", "acme/x.", "__import__('os').system('id')/x", "acme/Tiny-Llama\n"])
def test_bad_repo_ids_never_reach_the_filesystem(tmp_path, run_cli, monkeypatch, repo_id):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    assert hf_cache.cached_config(repo_id) is None
    result = run_cli("estimate", "--model", repo_id)
    assert result.exit_code == 2 and result.stderr.count("\n") == 1


def test_not_cached_says_where_it_looked(tmp_path, monkeypatch, run_cli, no_network):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    result = run_cli("estimate", "--model", "acme/absent-model")
    assert result.exit_code == 2
    assert "not in the local Hugging Face cache" in result.stderr and str(tmp_path / "hub") in result.stderr


def test_bad_cached_config_names_the_cached_file(tmp_path, monkeypatch, run_cli):
    _cache(tmp_path / "hub", commits=(COMMIT_OLD,), hidden_size="64")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    result = run_cli("estimate", "--model", "acme/Tiny-Llama")
    assert result.exit_code == 2 and "hidden_size" in result.stderr
    assert f"snapshots/{COMMIT_OLD}/config.json" in result.stderr


def test_fifo_named_like_a_shard_is_refused_without_blocking(tmp_path, safetensors_writer):
    import os

    folder = make_checkpoint(tmp_path, safetensors_writer, {"x": ("BF16", [1])})
    os.mkfifo(folder / "model-fifo.safetensors")
    with pytest.raises(CheckpointError, match="model-fifo.safetensors: not a regular file"):
        read_checkpoint(folder)
