"""--model ORG/NAME[@REVISION] against a real HTTP server on the loopback (tests/hub_server.py).

huggingface_hub's own HTTP client talks to the server; nothing is mocked. Repos are written
by the tests: a config.json and safetensors files from conftest's SafetensorsWriter. The
expected bytes come from the shapes written, not from memsym.
"""

from __future__ import annotations

import json
import os
import socket

import pytest

if os.environ.get("CI"):  # CI installs the [hub] extra: a missing package fails there
    import huggingface_hub  # noqa: F401
else:
    pytest.importorskip("huggingface_hub")

from hub_server import LoopbackHub, Repo

from engine import api, hub
from engine.checkpoint import CheckpointError
from engine.errors import MemsymError
from engine.registry import load_spec

H, A, KV, D, F, V, L = 64, 4, 2, 16, 192, 256, 2
COMMIT = "1234abcd" * 5


def config(**overrides) -> bytes:
    values = {"model_type": "llama", "hidden_size": H, "num_attention_heads": A, "num_key_value_heads": KV,
              "head_dim": D, "intermediate_size": F, "vocab_size": V, "num_hidden_layers": L,
              "tie_word_embeddings": False, "torch_dtype": "bfloat16"}
    values.update(overrides)
    return json.dumps(values).encode()


def llama_tensors(layers=range(L)) -> dict:
    """name -> (dtype, shape) of the tiny Llama, bf16 throughout."""
    out = {}
    for i in layers:
        p = f"model.layers.{i}."
        for name, shape in (("self_attn.q_proj", (A * D, H)), ("self_attn.k_proj", (KV * D, H)),
                            ("self_attn.v_proj", (KV * D, H)), ("self_attn.o_proj", (H, A * D)),
                            ("mlp.gate_proj", (F, H)), ("mlp.up_proj", (F, H)), ("mlp.down_proj", (H, F))):
            out[p + name + ".weight"] = ("BF16", shape)
        out[p + "input_layernorm.weight"] = ("BF16", (H,))
        out[p + "post_attention_layernorm.weight"] = ("BF16", (H,))
    return out


def outer_tensors() -> dict:
    return {"model.embed_tokens.weight": ("BF16", (V, H)), "model.norm.weight": ("BF16", (H,)),
            "lm_head.weight": ("BF16", (V, H))}


def stored_bytes(tensors: dict) -> int:
    total = 0
    for _, shape in tensors.values():
        n = 2
        for d in shape:
            n *= d
        total += n
    return total


def safetensors_bytes(writer, tmp_path, name, tensors) -> bytes:
    path = tmp_path / name
    writer.tensors(path, tensors)
    return path.read_bytes()


@pytest.fixture()
def loopback(monkeypatch, tmp_path):
    """A running loopback Hub; HF_ENDPOINT points at it, HF_HUB_OFFLINE is unset, the cache is empty."""
    with LoopbackHub() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        monkeypatch.delenv("HF_HUB_OFFLINE")
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
        yield server


@pytest.fixture()
def single(loopback, safetensors_writer, tmp_path):
    tensors = {**outer_tensors(), **llama_tensors()}
    loopback.repos["acme/tiny"] = Repo({"config.json": config(), "model.safetensors":
                                        safetensors_bytes(safetensors_writer, tmp_path, "m.safetensors", tensors)},
                                       commit=COMMIT)
    return stored_bytes(tensors)


def safetensors_gets(server) -> list[tuple[str, str, str | None]]:
    return [entry for entry in server.log if entry[1].endswith(".safetensors") and entry[0] == "GET"]


def test_repo_id_gives_exact_stored_bytes_from_two_ranges_per_file(single, loopback):
    result = api.estimate_model("acme/tiny")
    c = result.comparison
    assert c["checkpoint_bytes"] == single
    assert c["formula_weights_bytes"] == single and c["matches_formula"]
    assert c["tensors"] == 2 * 9 + 3 and c["files"] == ["model.safetensors"]
    gets = safetensors_gets(loopback)
    assert [g[2] for g in gets][:1] == ["bytes=0-7"] and len(gets) == 2
    assert gets[1][2].startswith("bytes=8-")  # the header, and nothing past it
    assert all(g[1].startswith(f"/acme/tiny/resolve/{COMMIT}/") for g in gets)  # pinned to one commit
    header_end = int(gets[1][2].split("-")[-1]) + 1
    assert header_end < single  # never the data area


def test_sharded_repo_through_its_index(loopback, safetensors_writer, tmp_path):
    first, second = {**outer_tensors(), **llama_tensors([0])}, llama_tensors([1])
    weight_map = {**{n: "model-00001-of-00002.safetensors" for n in first},
                  **{n: "model-00002-of-00002.safetensors" for n in second}}
    loopback.repos["acme/sharded"] = Repo({
        "config.json": config(),
        "model.safetensors.index.json": json.dumps({"metadata": {}, "weight_map": weight_map}).encode(),
        "model-00001-of-00002.safetensors": safetensors_bytes(safetensors_writer, tmp_path, "a.safetensors", first),
        "model-00002-of-00002.safetensors": safetensors_bytes(safetensors_writer, tmp_path, "b.safetensors", second),
    })
    result = api.estimate_model("acme/sharded")
    assert result.comparison["checkpoint_bytes"] == stored_bytes(first) + stored_bytes(second)
    assert result.comparison["files"] == sorted(set(weight_map.values()))
    gets = safetensors_gets(loopback)
    assert len(gets) == 4 and all(g[2] is not None for g in gets)  # no whole-file GET


def test_a_server_ignoring_range_is_read_only_as_far_as_needed(loopback, safetensors_writer, tmp_path):
    tensors = {**outer_tensors(), **llama_tensors(), "model.extra_big": ("BF16", (1024, 4096))}  # 8 MiB of data
    loopback.repos["acme/norange"] = Repo({"config.json": config(), "model.safetensors": safetensors_bytes(
        safetensors_writer, tmp_path, "m.safetensors", tensors)}, ignores_range=True)
    stored = hub.fetch_checkpoint("acme/norange")
    assert stored.total_bytes == stored_bytes(tensors)


def test_registry_path_reads_config_only(single, loopback):
    spec = load_spec("acme/tiny")
    assert (spec.name, spec.num_hidden_layers, spec.hidden_size) == ("acme/tiny", L, H)
    assert safetensors_gets(loopback) == []


def test_revision_in_the_id(single, loopback):
    assert load_spec(f"acme/tiny@{COMMIT}").num_hidden_layers == L
    with pytest.raises(MemsymError, match=r"^--model acme/tiny@v9: revision 'v9' not found"):
        load_spec("acme/tiny@v9")


def test_gated_repo_needs_hf_token(single, loopback, monkeypatch):
    loopback.repos["acme/tiny"].token = "hf_right"
    with pytest.raises(MemsymError, match=r"^--model acme/tiny: the Hub refused access \(401\)") as info:
        api.estimate_model("acme/tiny")
    assert "\n" not in str(info.value)
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    with pytest.raises(MemsymError, match=r"refused access \(403\)"):
        api.estimate_model("acme/tiny")
    monkeypatch.setenv("HF_TOKEN", "hf_right")
    assert api.estimate_model("acme/tiny").comparison["checkpoint_bytes"] == single


def test_missing_repo_and_missing_config(loopback):
    with pytest.raises(MemsymError, match=r"^--model acme/absent: no such model repo on http://127\.0\.0\.1:"):
        load_spec("acme/absent")
    loopback.repos["acme/empty"] = Repo({"README.md": b"hello"})
    with pytest.raises(MemsymError, match=r"^--model acme/empty: the repo has no config.json$"):
        load_spec("acme/empty")


def test_repo_without_safetensors_still_estimates_from_config(loopback):
    loopback.repos["acme/bin-only"] = Repo({"config.json": config(), "pytorch_model.bin": b"\0" * 64})
    result = api.estimate_model("acme/bin-only")
    assert isinstance(result, api.Estimate) and result.spec.num_hidden_layers == L


def test_unreachable_hub_is_one_line(monkeypatch, tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(MemsymError, match=rf"^--model acme/tiny: cannot reach the Hub at http://127\.0\.0\.1:{port} "):
        load_spec("acme/tiny")


def test_offline_never_asks_the_server(single, loopback, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MemsymError, match="HF_HUB_OFFLINE is set"):
        api.estimate_model("acme/tiny")
    with pytest.raises(MemsymError, match="not in the local Hugging Face cache .* HF_HUB_OFFLINE is set"):
        load_spec("acme/tiny")
    assert loopback.log == []


def test_local_cache_comes_first(single, loopback, tmp_path):
    snapshot = tmp_path / "cache" / "models--acme--tiny" / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_bytes(config(num_hidden_layers=1))
    assert load_spec("acme/tiny").num_hidden_layers == 1
    assert isinstance(api.estimate_model("acme/tiny"), api.Estimate)
    assert loopback.log == []


def test_hostile_header_length_is_refused_after_eight_bytes(loopback):
    loopback.repos["acme/hostile"] = Repo({"config.json": config(),
                                           "model.safetensors": (10**12).to_bytes(8, "little") + b"{}"})
    with pytest.raises(CheckpointError, match=r"header length: 1000000000000 bytes is more than the format allows"):
        hub.fetch_checkpoint("acme/hostile")
    assert [g[2] for g in safetensors_gets(loopback)] == ["bytes=0-7"]


def test_oversized_and_malformed_server_json(loopback, monkeypatch):
    loopback.repos["acme/big"] = Repo({"config.json": b" " * 4096 + config()})
    monkeypatch.setattr(hub, "MAX_CONFIG_BYTES", 1024)
    with pytest.raises(MemsymError, match=r"^--model acme/big: config.json: more than 1024 bytes"):
        load_spec("acme/big")
    loopback.repos["acme/nan"] = Repo({"config.json": b'{"hidden_size": NaN}'})
    with pytest.raises(MemsymError, match=r"^--model acme/nan: config.json: not valid JSON"):
        load_spec("acme/nan")


@pytest.mark.parametrize("text,ref", [("acme/x", ("acme/x", None)), ("acme/x@main", ("acme/x", "main")),
                                      ("acme/x@refs/pr/1", ("acme/x", "refs/pr/1")), ("acme/x@../../a", None),
                                      ("acme/x@", ("acme/x", None)), ("../x@main", None), ("acme/x@a b", None)])
def test_model_refs(text, ref):
    assert hub.split_model_ref(text) == ref


def test_cli_estimate_repo_id_shows_stored_bytes(single, loopback, run_cli):
    result = run_cli("estimate", "--model", "acme/tiny", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    # the default transformers profile counts the non-persistent rotary inv_freq buffers, never stored
    assert out["checkpoint_bytes"] == single == out["terms"]["weights"] - out["breakdown"]["weights/rotary_buffers"]
    text = run_cli("estimate", "--model", "acme/tiny").stdout
    assert f"checkpoint {loopback.endpoint}/acme/tiny@{COMMIT}: 1 file(s), 21 tensors" in text
    assert all(g[2] is not None for g in safetensors_gets(loopback))


def test_cli_gated_repo_is_one_line_exit_2(single, loopback, run_cli):
    loopback.repos["acme/tiny"].token = "hf_right"
    result = run_cli("solve", "seq-len", "--model", "acme/tiny", "--budget", "24GB")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert result.stderr.startswith("memsym: error: --model acme/tiny: the Hub refused access (401)")


def test_a_cached_snapshot_with_safetensors_gives_stored_bytes_offline(tmp_path, monkeypatch, safetensors_writer):
    snapshot = tmp_path / "cache" / "models--acme--cached" / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_bytes(config())
    tensors = {**outer_tensors(), **llama_tensors()}
    safetensors_writer.tensors(snapshot / "model.safetensors", tensors)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))  # HF_HUB_OFFLINE stays set (conftest)
    result = api.estimate_model("acme/cached")
    assert result.comparison["checkpoint_bytes"] == stored_bytes(tensors) and result.comparison["matches_formula"]
    (snapshot / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"x": "model-2.safetensors"}}))
    partial = api.estimate_model("acme/cached")
    assert isinstance(partial, api.Estimate)
    assert any("stored bytes not read from the cached snapshot" in n for n in partial.model.inputs["notes"])


def test_a_206_for_other_bytes_is_refused(loopback, safetensors_writer, tmp_path):
    loopback.repos["acme/shifty"] = Repo({"config.json": config(), "model.safetensors": safetensors_bytes(
        safetensors_writer, tmp_path, "m.safetensors", outer_tensors())}, wrong_range=True)
    with pytest.raises(MemsymError, match=r"^--model acme/shifty: model.safetensors: the server answered Range "
                                          r"bytes=8- with bytes 0-"):
        hub.fetch_checkpoint("acme/shifty")
