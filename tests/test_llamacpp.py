"""The llamacpp profile: the KV cache as llama.cpp allocates it, worked by hand here.

Llama-3.1-8B: 32 layers, 8 KV heads of 128, so n_embd_k_gqa = 1024 elements per layer and
cell. llama.cpp logs for ``-c 8192``: "llama_kv_cache: size = 1024.00 MiB (8192 cells, 32
layers, 1/1 seqs), K (f16): 512.00 MiB, V (f16): 512.00 MiB".
"""

from __future__ import annotations

import pytest

from engine import api
from engine.errors import InputError

LAYERS, ROW = 32, 1024  # Llama-3.1-8B: layers, a_kv * d


def kv(**knobs) -> dict:
    result = api.estimate("llama-3.1-8b", profile="llamacpp", **knobs)
    return {name: value for name, value in result.evaluation.terms.items() if name.startswith("kv_cache")} | {
        "cells_per_slot": result.model.inputs["cells_per_slot"], "notes": result.model.inputs["notes"]}


def test_f16_cache_at_8192_is_the_gib_llama_cpp_logs():
    out = kv(seq_len=8192, batch_size=1)
    assert out["kv_cache/keys"] == out["kv_cache/values"] == 512 * 2**20
    assert out["kv_cache"] == 2**30 and out["cells_per_slot"] == 8192


def test_slots_split_the_padded_context_and_each_pads_again():
    # -c 5000 -np 3: n_ctx = pad(5000) = 5120; n_ctx_seq = pad(5120 // 3 = 1706) = 1792; 3 streams: 5376 cells.
    # K q8_0: 1024 / 32 * 34 = 1088 bytes a row; V q4_0: 1024 / 32 * 18 = 576 bytes a row.
    out = kv(seq_len=5000, batch_size=3, cache_type_k="q8_0", cache_type_v="q4_0")
    assert out["cells_per_slot"] == 1792
    assert out["kv_cache/keys"] == LAYERS * 1088 * 5376 == 187_170_816
    assert out["kv_cache/values"] == LAYERS * 576 * 5376 == 99_090_432


def test_unified_cache_is_one_stream_of_the_padded_context():
    out = kv(seq_len=5000, batch_size=3, kv_unified=True)
    assert out["cells_per_slot"] == 5120
    assert out["kv_cache"] == 2 * LAYERS * ROW * 2 * 5120 == 671_088_640


def compute_buffer(model: str = "llama-3.1-8b", **knobs) -> int:
    return api.estimate(model, profile="llamacpp", **knobs).evaluation.terms["compute_buffer"]


def test_compute_buffer_of_llama_3_8b_is_the_258_5_mib_llama_cpp_logs():
    """Meta-Llama-3-8B at -c 2048, -ub 512: llama.cpp logs "compute buffer size = 258.50 MiB" with or
    without -fa. By hand: the output moment, float32 logits of 512 tokens over 128,256 tokens plus the
    final norm of 4,096, 4 x 512 x (128,256 + 4,096) bytes; the scores 4 x 512 x 32 x 2048 are smaller."""
    for fa in ("off", "on"):
        assert compute_buffer("meta-llama-3-8b-instruct", seq_len=2048, flash_attn=fa) == 4 * 512 * (128_256 + 4_096)
    assert 4 * 512 * (128_256 + 4_096) == 258.5 * 2**20


def test_compute_buffer_without_flash_attention_holds_the_scores(tmp_path):
    """ggml-org/llama.cpp#10052: Llama-3.2-1B at its 131,072-token context without -fa logs
    "allocating 8849.72 MiB" for the compute buffer. The estimate (scores 4 x 512 x 32 x 131072,
    the f32 mask 4 x 512 x 131072, the residual, q and the attention output) is a lower bound within 5 %."""
    import json

    config = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 2048,
              "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
              "num_key_value_heads": 8, "head_dim": 64, "vocab_size": 128256, "max_position_embeddings": 131072,
              "tie_word_embeddings": True, "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "torch_dtype": "bfloat16"}
    (tmp_path / "config.json").write_text(json.dumps(config))
    result = api.estimate(None, str(tmp_path / "config.json"), profile="llamacpp", seq_len=131072, flash_attn="off")
    value = result.evaluation.terms["compute_buffer"]
    assert value == 4 * 512 * (32 * 131072 + 131072 + 2048 + 2 * 32 * 64)
    logged = 8849.72 * 2**20
    assert 0.95 * logged < value < logged
    with_fa = api.estimate(None, str(tmp_path / "config.json"), profile="llamacpp", seq_len=131072).evaluation
    # with -fa: no scores; the MLP moment leads: the mask in f32 and f16, the residual, gate and up
    assert with_fa.terms["compute_buffer"] == 6 * 512 * 131072 + 4 * 512 * (2048 + 2 * 8192)


def test_compute_buffer_notes_and_small_contexts():
    notes = kv(seq_len=4096)["notes"]
    assert any("compute_buffer is an estimate, a lower bound" in n and "output 271,056,896 B" in n for n in notes)
    assert any("-fa auto counted as on" in n for n in notes)
    assert any("standard weight formula" in n for n in notes)
    # -c 300 pads to 512, so the worst-case graph still has 512 tokens (min(n_ctx, n_ubatch))
    assert compute_buffer(seq_len=300) == compute_buffer(seq_len=512)
    moe = api.estimate("qwen3-30b-a3b", profile="llamacpp", seq_len=4096).model.inputs["compute_buffer_moments"]
    assert moe["mlp"] == 6 * 512 * 4096 + 4 * 512 * (2048 + 2 * 8 * 768)  # k x moe_intermediate = 8 x 768


@pytest.mark.parametrize("knobs,message", [
    ({"seq_len": 256, "batch_size": 257}, "leave no cells per slot"),
    ({"tp": 2}, "--tp 2 is not modelled"),
    ({"mode": "training"}, "--mode training is not modelled"),
])
def test_refusals_name_the_flag(knobs, message):
    with pytest.raises(InputError, match=message):
        api.estimate("llama-3.1-8b", profile="llamacpp", **knobs)


def test_sliding_window_models_are_refused_but_mistral_keeps_a_full_cache():
    with pytest.raises(InputError, match="sliding-window or MLA"):
        api.estimate("gemma-2-9b", profile="llamacpp")
    with pytest.raises(InputError, match="sliding-window or MLA"):
        api.estimate("deepseek-v3", profile="llamacpp")
    mistral = api.estimate("mistral-7b-v0.1", profile="llamacpp", seq_len=8192).evaluation.terms
    assert mistral["kv_cache"] == 2 * 32 * 8 * 128 * 2 * 8192  # every layer, past its 4096 window


def test_gguf_weights_are_the_stored_bytes(tmp_path):
    gguf = pytest.importorskip("gguf")  # tests/test_gguf.py requires it in CI
    from test_gguf import hand_bytes, model_tensors, write_gguf

    path = tmp_path / "tiny.gguf"
    write_gguf(path, model_tensors())
    result = api.estimate_gguf(path, profile="llamacpp", seq_len=512, batch_size=1)
    evaluation = result.estimate.evaluation
    terms = evaluation.terms
    stored = sum(hand_bytes(kind, shape) for kind, shape in model_tensors().values())
    embedding = hand_bytes("Q4_K", (300, 256))  # token_embd: llama.cpp keeps the input layer on the CPU
    assert terms["weights"] + evaluation.host["weights"] == stored == result.comparison["checkpoint_bytes"]
    assert evaluation.host["weights"] == embedding and result.comparison["matches_formula"]
    assert terms["weights/Q6_K"] == sum(hand_bytes(k, s) for k, s in model_tensors().values() if k == "Q6_K")
    assert terms["kv_cache"] == 2 * 2 * (2 * 64) * 2 * 512  # 2 layers, K and V, a_kv d = 128, f16, 512 cells
    assert gguf is not None


def test_ngl_places_the_output_and_the_last_layers_on_the_gpu(tmp_path):
    """src/llama-model.cpp load_tensors: i_gpu_start = max(n_layer + 1 - ngl, 0); -ngl 2 of 2 layers puts the
    output layer and layer 1 on the GPU, layer 0 (and its KV cache) and the token embeddings in host memory;
    tied embeddings keep the output layer's copy of them on the GPU."""
    pytest.importorskip("gguf")
    from test_gguf import hand_bytes, layer_tensors, model_tensors, write_gguf

    path = tmp_path / "tiny.gguf"
    write_gguf(path, model_tensors())
    layer = sum(hand_bytes(k, s) for k, s in layer_tensors(0).values())
    embedding, output = hand_bytes("Q4_K", (300, 256)), hand_bytes("Q6_K", (300, 256)) + 4 * 256
    one = api.estimate_gguf(path, profile="llamacpp", seq_len=512, gpu_layers=2).estimate.evaluation
    assert one.terms["weights"] == layer + output and one.host["weights"] == layer + embedding
    assert one.terms["kv_cache"] == one.host["kv_cache"] == 2 * (2 * 64) * 2 * 512  # one layer each
    every = api.estimate_gguf(path, profile="llamacpp", seq_len=512, gpu_layers=99).estimate.evaluation
    assert every.terms["weights"] == 2 * layer + output and "kv_cache" not in every.host
    tied = tmp_path / "tied.gguf"
    write_gguf(tied, model_tensors(tied=True))
    copy = api.estimate_gguf(tied, profile="llamacpp", seq_len=512).estimate.evaluation
    assert copy.terms["weights"] == 2 * layer + 4 * 256 + embedding and copy.host["weights"] == embedding


def test_ngl_on_the_formula_path_scales_each_layer_kind():
    """Without a GGUF the layer parts count the GPU's layers: Llama-3.1-8B -ngl 17 is 16 of 32 layers,
    Qwen3-30B-A3B -ngl 25 is 24 of 48 (its experts count num_moe_layers, scaled too)."""
    full = api.estimate("llama-3.1-8b", profile="llamacpp", seq_len=8192).evaluation
    half = api.estimate("llama-3.1-8b", profile="llamacpp", seq_len=8192, gpu_layers=17).evaluation
    embedding = 128_256 * 4096 * 2
    assert full.host == {"weights": embedding}
    assert half.terms["weights"] + half.host["weights"] == full.terms["weights"] + embedding
    assert half.terms["kv_cache"] == full.terms["kv_cache"] // 2 == half.host["kv_cache"]
    moe_full = api.estimate("qwen3-30b-a3b", profile="llamacpp", seq_len=4096).evaluation.terms["weights"]
    moe_half = api.estimate("qwen3-30b-a3b", profile="llamacpp", seq_len=4096, gpu_layers=25).evaluation
    head = 151_936 * 2048 * 2 + 2048 * 2  # lm_head and the final norm: the output layer, on the GPU
    assert moe_half.terms["weights"] - head == (moe_full - head) // 2


def test_cache_type_choices_are_the_sized_ones():
    from formulas import options
    from formulas.frameworks import llamacpp

    assert options.LLAMACPP_CACHE_TYPES == tuple(llamacpp.CACHE_TYPES)
    assert llamacpp.element_bytes("q8_0") == llamacpp.element_bytes("q4_0") * 34 / 18


def test_solve_context_lands_on_a_padding_step():
    from engine.gpus import make_budget
    from engine.solve import solve_budget

    at = api.estimate("llama-3.1-8b", profile="llamacpp", seq_len=12288).evaluation.terms
    mm = api.memory_model("llama-3.1-8b", None, profile="llamacpp", seq_len=None)[1]
    assert at["kv_cache"] == 2 * LAYERS * ROW * 2 * 12288  # the f16 KV cache of exactly 12288 cells
    budget = at["weights"] + at["kv_cache"] + at["compute_buffer"]
    answer = solve_budget(mm, "seq_len", make_budget(str(budget), None, 1, None))
    assert answer.value == 12288  # 48 x 256 fits exactly; 12289 pads to 12544 cells
    assert answer.total_at_value == budget


def test_llama_cpp_spellings_are_the_same_knobs(run_cli):
    """-c/--ctx-size, -np/--parallel, -ctk, -ctv, -fa: llama.cpp's flags give the same answer as memsym's."""
    import json

    base = ["estimate", "--profile", "llamacpp", "--model", "qwen3-0.6b", "--json"]
    long = run_cli(*base, "--seq-len", "5000", "--batch-size", "3", "--cache-type-k", "q8_0", "--cache-type-v",
                   "q4_0", "--flash-attn", "off")
    long_ngl = run_cli(*base, "--seq-len", "5000", "--n-gpu-layers", "10")
    assert json.loads(run_cli(*base, "-c", "5000", "-ngl", "10").stdout) == json.loads(long_ngl.stdout)
    for spelled in (["-c", "5000", "-np", "3", "-ctk", "q8_0", "-ctv", "q4_0", "-fa", "off"],
                    ["--ctx-size", "5000", "--parallel", "3", "-ctk", "q8_0", "-ctv", "q4_0", "-fa", "off"]):
        short = run_cli(*base, *spelled)
        assert short.exit_code == 0, short.output
        assert json.loads(short.stdout) == json.loads(long.stdout)
    assert json.loads(long.stdout)["terms"]["kv_cache"] == 28 * 5376 * (1088 + 576)  # q8_0 and q4_0 rows of 1024
    bad = run_cli(*base, "-ctk", "q3_k")
    assert bad.exit_code == 2 and "--cache-type-k" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
