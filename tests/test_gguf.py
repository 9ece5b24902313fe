"""--gguf FILE: GGUF files written here with gguf-py's GGUFWriter, tiny Llama-shaped tensors in
several llama.cpp quant types. Expected bytes are worked by hand from ggml's block sizes
(ggml/src/ggml.c ``type_traits``: Q4_K 256 elements in 144 bytes, Q6_K 256 in 210, Q8_0 32
in 34, F32 4 bytes each), not from gguf-py's tables.
"""

from __future__ import annotations

import os

import pytest

if os.environ.get("CI"):  # CI installs the [gguf] extra: a missing package fails there
    import gguf
else:
    gguf = pytest.importorskip("gguf")
import numpy as np

from engine.families import spec_from_config
from engine.gguf_file import GgufError, read_gguf, spec_of

H, A, KV, D, F, V, L, CTX = 256, 4, 2, 64, 512, 300, 2, 8192
BYTES = {"Q4_K": (256, 144), "Q6_K": (256, 210), "Q8_0": (32, 34)}


def layer_tensors(i: int) -> dict:
    """name -> (ggml type, (rows, row length)) as llama.cpp names a Q4_K_M Llama layer."""
    p = f"blk.{i}."
    return {p + "attn_norm.weight": ("F32", (H,)), p + "attn_q.weight": ("Q4_K", (A * D, H)),
            p + "attn_k.weight": ("Q4_K", (KV * D, H)), p + "attn_v.weight": ("Q8_0", (KV * D, H)),
            p + "attn_output.weight": ("Q4_K", (H, A * D)), p + "ffn_norm.weight": ("F32", (H,)),
            p + "ffn_gate.weight": ("Q4_K", (F, H)), p + "ffn_up.weight": ("Q4_K", (F, H)),
            p + "ffn_down.weight": ("Q6_K", (H, F))}


def model_tensors(tied: bool = False) -> dict:
    out = {"token_embd.weight": ("Q4_K", (V, H)), "output_norm.weight": ("F32", (H,))}
    if not tied:
        out["output.weight"] = ("Q6_K", (V, H))
    for i in range(L):
        out.update(layer_tensors(i))
    return out


def hand_bytes(kind: str, shape) -> int:
    elements = int(np.prod(shape))
    if kind == "F32":
        return 4 * elements
    block, size = BYTES[kind]
    return elements // block * size


def write_gguf(path, tensors: dict, arch: str = "llama", **extra) -> None:
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(L)
    writer.add_embedding_length(H)
    writer.add_feed_forward_length(F)
    writer.add_head_count(A)
    writer.add_head_count_kv(KV)
    writer.add_context_length(CTX)
    writer.add_token_list([f"t{i}" for i in range(V)])
    for key, value in extra.items():
        writer.add_uint32(key, value)
    for name, (kind, shape) in tensors.items():
        if kind == "F32":
            writer.add_tensor(name, np.zeros(shape, dtype=np.float32))
        else:
            block, size = BYTES[kind]
            rows, row = shape
            writer.add_tensor(name, np.zeros((rows, row // block * size), dtype=np.uint8),
                              raw_dtype=gguf.GGMLQuantizationType[kind])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.fixture()
def q4_k_m(tmp_path):
    path = tmp_path / "tiny-Q4_K_M.gguf"
    write_gguf(path, model_tensors())
    return path


def test_exact_stored_bytes_per_quant_type(q4_k_m):
    model = read_gguf(q4_k_m)
    tensors = model_tensors()
    by_type: dict[str, int] = {}
    for kind, shape in tensors.values():
        by_type[kind] = by_type.get(kind, 0) + hand_bytes(kind, shape)
    assert model.checkpoint.bytes_by_dtype() == dict(sorted(by_type.items(), key=lambda kv: (-kv[1], kv[0])))
    assert model.checkpoint.total_bytes == sum(by_type.values())
    # one layer by hand: q 256*256/256*144, k and o likewise, v in Q8_0, the MLP, two F32 norms
    q = 256 * 256 // 256 * 144
    assert hand_bytes("Q8_0", (128, 256)) == 128 * 256 // 32 * 34 == 34_816
    assert {t.name: t.nbytes for t in model.checkpoint.tensors}["blk.0.attn_q.weight"] == q == 36_864
    assert len(model.checkpoint.tensors) == len(tensors)


def test_metadata_maps_to_config_fields(q4_k_m):
    model = read_gguf(q4_k_m)
    assert model.config == {"model_type": "llama", "tie_word_embeddings": False, "num_hidden_layers": L,
                            "hidden_size": H, "intermediate_size": F, "num_attention_heads": A,
                            "num_key_value_heads": KV, "max_position_embeddings": CTX, "attention_bias": False,
                            "vocab_size": V}
    spec = spec_from_config(model.config, str(q4_k_m))
    assert (spec.head_dim, spec.vocab_size, spec.num_key_value_heads) == (H // A, V, KV)


def test_tied_embeddings_and_qwen3_head_dim(tmp_path):
    path = tmp_path / "qwen3.gguf"
    write_gguf(path, model_tensors(tied=True), arch="qwen3", **{"qwen3.attention.key_length": 128})
    model = read_gguf(path)
    assert model.config["tie_word_embeddings"] is True and model.config["head_dim"] == 128
    assert model.architecture == "qwen3"


def test_unmapped_architecture_is_one_line(tmp_path):
    path = tmp_path / "mamba.gguf"
    write_gguf(path, {"token_embd.weight": ("F32", (V, H))}, arch="mamba")
    with pytest.raises(GgufError, match=r"^--gguf .*mamba.gguf: general.architecture 'mamba' is not mapped "
                                        r"\(mapped: llama, mistral, qwen2, qwen3\)$"):
        read_gguf(path)


def test_hostile_counts_and_non_gguf_files(tmp_path, q4_k_m):
    data = bytearray(q4_k_m.read_bytes())
    bad = tmp_path / "count.gguf"
    bad.write_bytes(bytes(data[:16]) + (2**62).to_bytes(8, "little") + bytes(data[24:]))  # 2^62 keys
    with pytest.raises(GgufError, match="do not fit in the file"):
        read_gguf(bad)
    truncated = tmp_path / "cut.gguf"
    truncated.write_bytes(bytes(data[:1500]))
    with pytest.raises(GgufError, match="runs past the end of the file"):
        read_gguf(truncated)
    other = tmp_path / "x.gguf"
    other.write_bytes(b"PK\x03\x04" + b"\0" * 64)
    with pytest.raises(GgufError, match="not a GGUF file"):
        read_gguf(other)
    fifo = tmp_path / "fifo.gguf"
    os.mkfifo(fifo)
    with pytest.raises(GgufError, match="not a regular file"):
        read_gguf(fifo)


def test_tensor_data_past_the_end_is_refused(tmp_path, q4_k_m):
    data = q4_k_m.read_bytes()
    cut = tmp_path / "short.gguf"
    cut.write_bytes(data[: len(data) - 4096])  # header intact, the last tensor's data cut short
    with pytest.raises(GgufError, match=r"^--gguf .*short.gguf: (not a readable GGUF file|.*past the end)") as info:
        read_gguf(cut)
    assert "\n" not in str(info.value)


def test_cli_estimate_gguf_uses_the_llamacpp_profile(q4_k_m, run_cli):
    import json

    result = run_cli("estimate", "--gguf", str(q4_k_m), "--seq-len", "1000", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    stored = sum(hand_bytes(kind, shape) for kind, shape in model_tensors().values())
    placed = out["terms"]["weights"] + out["host_terms"]["weights"]  # token_embd in host memory, as llama.cpp
    assert out["profile"] == "llamacpp" and placed == out["checkpoint_bytes"] == stored
    assert out["terms"]["kv_cache"] == 2 * L * KV * D * 2 * 1024  # -c 1000 pads to 1024 cells, f16
    assert out["checkpoint"]["matches_formula"] and out["checkpoint"]["not_in_formula"] == []
    text = run_cli("estimate", "--gguf", str(q4_k_m)).stdout
    assert "note: compute_buffer is an estimate, a lower bound" in text and "  Q6_K " in text
    assert "weights as the GGUF stores them (Q4_K, Q6_K" in text and "KV cache f16 (llama.cpp" in text


@pytest.mark.parametrize("args,message", [
    (("--config", "x.json"), "give one of --config PATH and --gguf FILE"),
    (("--cache-type-k", "q3_k"), "--cache-type-k"),
])
def test_cli_gguf_refusals_are_one_line(q4_k_m, run_cli, args, message):
    result = run_cli("estimate", "--gguf", str(q4_k_m), *args)
    assert result.exit_code == 2 and message in result.stderr and result.stderr.count("\n") == 1


def test_cli_bad_gguf_file_is_one_line(tmp_path, run_cli):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + (3).to_bytes(4, "little") + (2**60).to_bytes(8, "little") + b"\0" * 16)
    result = run_cli("estimate", "--gguf", str(bad))
    assert result.exit_code == 2 and "bad.gguf" in result.stderr and result.stderr.count("\n") == 1


def test_a_hostile_array_length_is_refused_before_gguf_py_loops_over_it(tmp_path, q4_k_m):
    data = bytearray(q4_k_m.read_bytes())
    key = b"tokenizer.ggml.tokens"
    at = data.index(key) + len(key) + 4 + 4  # past the key, the value type (ARRAY) and the item type (STRING)
    assert int.from_bytes(data[at:at + 8], "little") == V
    data[at:at + 8] = (2**40).to_bytes(8, "little")
    bad = tmp_path / "tokens.gguf"
    bad.write_bytes(bytes(data))
    with pytest.raises(GgufError, match="an array of 1099511627776 values runs past the end of the file"):
        read_gguf(bad)


def test_llama_with_experts_maps_to_mixtral(tmp_path):
    path = tmp_path / "mixtral.gguf"
    write_gguf(path, model_tensors(), **{"llama.expert_count": 8, "llama.expert_used_count": 2})
    model = read_gguf(path)
    assert (model.config["model_type"], model.config["num_local_experts"], model.config["num_experts_per_tok"]) == (
        "mixtral", 8, 2)
    spec = spec_from_config(model.config, str(path))
    assert spec.is_moe and spec.layer_count(mlp="moe") == L


def test_mutated_headers_give_a_spec_or_one_line_error(tmp_path_factory):
    """Bytes of a valid file's header overwritten at random (derandomized): memsym's own error or a
    result, never another exception and never a hang (gguf-py parses only what check_bounds allowed)."""
    from hypothesis import HealthCheck, given, settings, strategies as st

    from engine.errors import MemsymError

    folder = tmp_path_factory.mktemp("mutated")
    source = folder / "base.gguf"
    write_gguf(source, model_tensors())
    base = source.read_bytes()
    header_end = base.index(b"blk.1.ffn_down.weight") + 64  # the metadata and every tensor info

    @settings(derandomize=True, max_examples=int(os.environ.get("MEMSYM_FUZZ_EXAMPLES", "0")) or 120, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.lists(st.tuples(st.integers(0, header_end), st.binary(min_size=1, max_size=8)), min_size=1, max_size=4))
    def run(patches):
        data = bytearray(base)
        for at, chunk in patches:
            data[at:at + len(chunk)] = chunk
        path = folder / "m.gguf"
        path.write_bytes(bytes(data))
        try:
            spec_of(read_gguf(path))
        except MemsymError as exc:
            assert "\n" not in str(exc)

    run()
