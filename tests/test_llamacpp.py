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


def test_registry_model_says_its_weights_are_the_formula_and_compute_buffer_is_not_modelled():
    notes = kv(seq_len=4096)["notes"]
    assert any("compute buffer is not modelled" in n for n in notes)
    # Llama-3.1-8B's vocabulary of 128,256 tokens, float32, 512 tokens of one ubatch
    assert f"4 V min(-c, 512) = {4 * 128_256 * 512:,} bytes here" in " ".join(notes)
    assert f"= {4 * 128_256 * 300:,} bytes" in " ".join(kv(seq_len=300)["notes"])
    assert any("standard weight formula" in n for n in notes)


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
    terms = result.estimate.evaluation.terms
    stored = sum(hand_bytes(kind, shape) for kind, shape in model_tensors().values())
    assert terms["weights"] == stored == result.comparison["checkpoint_bytes"]
    assert terms["weights/Q6_K"] == sum(hand_bytes(k, s) for k, s in model_tensors().values() if k == "Q6_K")
    assert terms["kv_cache"] == 2 * 2 * (2 * 64) * 2 * 512  # 2 layers, K and V, a_kv d = 128, f16, 512 cells
    assert gguf is not None


def test_cache_type_choices_are_the_sized_ones():
    from formulas import options
    from formulas.frameworks import llamacpp

    assert options.LLAMACPP_CACHE_TYPES == tuple(llamacpp.CACHE_TYPES)
    assert llamacpp.element_bytes("q8_0") == llamacpp.element_bytes("q4_0") * 34 / 18


def test_solve_context_lands_on_a_padding_step():
    from engine.gpus import make_budget
    from engine.solve import solve_budget

    weights = api.estimate("llama-3.1-8b", profile="llamacpp").evaluation.terms["weights"]
    mm = api.memory_model("llama-3.1-8b", None, profile="llamacpp", seq_len=None)[1]
    budget = weights + 2 * LAYERS * ROW * 2 * 12288  # the f16 KV cache of exactly 12288 cells
    answer = solve_budget(mm, "seq_len", make_budget(str(budget), None, 1, None))
    assert answer.value == 12288  # 48 x 256 fits exactly; 12289 pads to 12544 cells
    assert answer.total_at_value == budget
