"""Layer kinds (formulas/layers/) and the groups that engine/families.py builds from them.

The sums over groups in engine/architecture.py must give the very expressions the memory
model holds: the same KV cache, peaks and saved activations, per GPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sympy

from engine import architecture
from engine.api import memory_model
from engine.families import spec_from_config
from engine.registry import entries, find
from engine.spec import LayerGroup, ModelSpec
from formulas import activations, kv_cache, layers, options
from formulas import symbols as S

FIXTURES = Path(__file__).parent / "fixtures"
MODELS = sorted(e.id for e in entries())
VARIANTS = sorted(p.stem for p in (FIXTURES / "variant_configs").glob("*.json"))
SCENARIOS = [
    {},
    {"tp": 2, "pp": 2, "cp": 2},
    {"block_size": 16, "attention": "eager"},
    {"mla_cache": "decompressed", "tp": 2},
]


def _config(name: str) -> dict:
    if name in VARIANTS:
        return json.loads((FIXTURES / "variant_configs" / f"{name}.json").read_text())["config"]
    return find(name).config


def _shape(spec: ModelSpec) -> list[tuple[str, str, int]]:
    return [(g.mixer, g.mlp, g.count) for g in spec.layers]


def test_gemma2_and_deepseek_v3_groups():
    gemma = spec_from_config(find("gemma-2-9b").config, "g")
    assert _shape(gemma) == [("sliding_attention", "dense", 21), ("attention", "dense", 21)]
    assert gemma.layers[0].mixer_args["sliding_window"] == 4096
    deepseek = spec_from_config(find("deepseek-v3").config, "d")
    assert _shape(deepseek) == [("mla", "dense", 3), ("mla", "moe", 58)]
    assert deepseek.layers[1].mlp_args["num_experts"] == 256


def test_groups_stay_few_for_a_very_deep_model():
    config = {**find("qwen3-30b-a3b").config, "num_hidden_layers": 100_000, "mlp_only_layers": [0, 1]}
    spec = spec_from_config(config, "deep")
    assert _shape(spec) == [("attention", "dense", 2), ("attention", "moe", 99_998)]
    assert architecture.count_parameters(spec)["parameters"] > 0


def test_layer_counts_symbols_and_rest():
    spec = spec_from_config(find("gemma-2-9b").config, "g")
    counts = {entry.KIND: count for entry, _, count in architecture.kinds(spec, "mixer")}
    assert counts == {"attention": S.num_hidden_layers - S.num_sliding_layers, "sliding_attention": S.num_sliding_layers}
    assert architecture.layer_counts(spec) == {S.num_sliding_layers: 21}


def _former_kv_cache(spec: ModelSpec, paged: bool, layout: str) -> sympy.Expr:
    """The cache as engine/compose.py built it from layout flags, before layer kinds."""
    mixers = {g.mixer for g in spec.layers}
    expanded = any(g.mixer_args.get("expanded_kv_cache") for g in spec.layers)
    expr = kv_cache.kv_cache(mla_layout=layout if "mla" in mixers else None, paged=paged, expanded_heads=expanded,
                             has_sliding="sliding_attention" in mixers)
    per_gpu = {S.num_key_value_heads: sympy.ceiling(S.num_key_value_heads / S.tensor_parallel)}
    if expanded or ("mla" in mixers and layout == "decompressed"):
        per_gpu = {S.num_attention_heads: S.num_attention_heads / S.tensor_parallel}
    return expr.xreplace(per_gpu) / S.pipeline_parallel / S.context_parallel


@pytest.mark.parametrize("name", MODELS + VARIANTS)
@pytest.mark.parametrize("knobs", SCENARIOS, ids=lambda k: ",".join(k) or "default")
def test_kv_cache_and_peaks_are_the_former_formulas(name, knobs, tmp_path):
    spec = spec_from_config(_config(name), name)
    if {g.mixer for g in spec.layers} - {"attention", "sliding_attention", "mla"}:
        pytest.skip("a mixer kind the former layout-flag formulas never had (chunked, cross attention)")
    if architecture.has_recurrent_state(spec) or spec.layer_count(mixer="none"):
        pytest.skip("recurrent kinds (issue 13) had no former formula; tests/test_families_recurrent.py checks them")
    if knobs.get("tp", 1) > 1 and spec.num_key_value_heads % 2 and architecture.splits_kv_heads(spec):
        pytest.skip("the degree neither divides nor is a multiple of the KV heads")
    if spec.num_hidden_layers % knobs.get("pp", 1) or spec.num_attention_heads % knobs.get("tp", 1):
        pytest.skip("the degrees do not divide the model")
    path = tmp_path / "config.json"
    path.write_text(json.dumps(_config(name)))
    model = memory_model(None, str(path), **{"profile": "megatron", **knobs})[1]  # the former formulas: megatron's
    paged, layout = "block_size" in knobs, knobs.get("mla_cache", "latent")
    former = _former_kv_cache(spec, paged, layout)
    assert model.pinned(model.terms["kv_cache"]) == model.pinned(former)
    if any(layers.MIXERS[g.mixer].LAYERS is None for g in spec.layers):
        assert architecture.kv_cache_bytes(spec, paged=paged, mla_layout=layout) == former  # the same formula
    eager = knobs.get("attention") == "eager"
    split = {S.num_attention_heads: S.num_attention_heads / S.tensor_parallel}
    assert model.terms["activations/attention"] == activations.attention_peak(eager).xreplace(split)


@pytest.mark.parametrize("name", ["llama-3.1-8b", "gemma-2-9b", "deepseek-v3"])
def test_training_rows_sum_to_the_models_layers(name):
    spec = spec_from_config(find(name).config, name)
    ours = architecture.training_layers(spec, recompute="selective", sequence_parallel=True, eager=True)
    assert ours == S.num_hidden_layers * activations.korthikanti_layer("selective", True, True)


def test_kind_names_match_the_registry_and_protocol():
    assert options.MIXER_KINDS == tuple(layers.MIXERS) and options.MLP_KINDS == tuple(layers.MLPS)
    for entry in layers.MIXERS.values():
        for name in ("LAYERS", "SPLITS_KV_HEADS", "LORA_COMPONENTS", "tensors", "facts", "cache_elements",
                     "cached_tokens", "inference_peak", "training_row"):
            assert hasattr(entry, name), (entry.KIND, name)
    for entry in layers.MLPS.values():
        for name in ("LAYERS", "LORA_COMPONENTS", "tensors", "buffers", "facts", "inference_peak"):
            assert hasattr(entry, name), (entry.KIND, name)
    symbols = [e.LAYERS for e in (*layers.MIXERS.values(), *layers.MLPS.values()) if e.LAYERS is not None]
    assert all(S.is_declared(sym) for sym in symbols) and len(set(symbols)) == len(symbols)


def test_bad_groups_are_refused():
    with pytest.raises(ValueError, match="unknown layer kind"):
        LayerGroup("rwkv", "dense", 1)  # mamba became a kind (issue 13)
    with pytest.raises(ValueError, match="at least one layer"):
        LayerGroup("attention", "dense", 0)
    with pytest.raises(ValueError, match="hold 3 layers"):
        ModelSpec(name="x", model_type="llama", hidden_size=8, num_hidden_layers=2, num_attention_heads=1,
                  num_key_value_heads=1, head_dim=8, intermediate_size=8, vocab_size=8, tie_word_embeddings=True,
                  layers=(LayerGroup("attention", "dense", 3),))


def test_layer_types_of_the_wrong_length_name_the_field():
    from engine.errors import ConfigError

    config = {**find("gemma-2-9b").config, "layer_types": ["sliding_attention"] * 3}
    with pytest.raises(ConfigError, match="layer_types' has 3 entries for 42 layers"):
        spec_from_config(config, "g")


def test_a_mixed_mixer_model_without_count_symbols_is_refused():
    spec = ModelSpec(name="x", model_type="llama", hidden_size=8, num_hidden_layers=2, num_attention_heads=1,
                     num_key_value_heads=1, head_dim=8, intermediate_size=8, vocab_size=8, tie_word_embeddings=True,
                     layers=(LayerGroup("attention", "dense", 1), LayerGroup("mla", "dense", 1, {
                         "q_lora_rank": None, "kv_lora_rank": 4, "qk_nope_head_dim": 4, "qk_rope_head_dim": 4,
                         "v_head_dim": 4})))
    with pytest.raises(ValueError, match="none has a layer-count symbol"):
        architecture.parameter_tensors(spec)


def test_a_new_mixer_kind_is_its_entry_and_a_registry_line(monkeypatch):
    """A chunked-attention kind (Llama-4 style: a layer keeps at most ``c`` tokens) plugged in
    with no engine change: only its entry and the kind registries."""
    from types import SimpleNamespace

    from engine.profiles import build
    from engine.scenario import Scenario
    from formulas.layers import attention

    chunk, chunked_layers = sympy.symbols("chunk_size num_chunked_layers", integer=True, positive=True)
    entry = SimpleNamespace(
        KIND="chunked_attention", LAYERS=chunked_layers, SPLITS_KV_HEADS=True, LORA_COMPONENTS=("attention",),
        tensors=lambda layers, chunk_size, **options: attention.tensors(layers, **options),
        facts=lambda chunk_size, **options: {chunk: chunk_size},
        cache_elements=lambda layout=None, chunk_size=None, **options: attention.cache_elements(layout, **options),
        cached_tokens=lambda paged=False: sympy.Min(S.seq_len, chunk),
        inference_peak=attention.inference_peak, training_row=attention.training_row,
    )
    monkeypatch.setitem(layers.MIXERS, "chunked_attention", entry)
    monkeypatch.setattr("engine.spec.MIXER_KINDS", (*options.MIXER_KINDS, "chunked_attention"))
    spec = ModelSpec(name="chunky", model_type="llama", hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
                     num_key_value_heads=2, head_dim=16, intermediate_size=128, vocab_size=100,
                     tie_word_embeddings=True, layers=(LayerGroup("chunked_attention", "dense", 3, {"chunk_size": 8}),
                                                       LayerGroup("attention", "dense", 1)))
    # pinned: a kind the transformers profile does not know falls back to megatron; the plain spec would not
    model = build(spec, Scenario(batch_size=1, seq_len=100, profile="megatron"))
    per_layer_token = 2 * 2 * 16 * 2  # K and V, 2 heads of 16, bf16
    assert model.evaluate().terms["kv_cache"] == per_layer_token * (3 * 8 + 1 * 100)
    plain = build(spec.__class__(**{**spec.__dict__, "layers": ()}), Scenario(batch_size=1, seq_len=100, profile="megatron"))
    assert model.evaluate().terms["weights"] == plain.evaluate().terms["weights"]
