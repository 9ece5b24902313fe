"""Llama 4 and multimodal checkpoints (engine/families_multimodal.py) against the
transformers 5.24 ground truth (tests/fixtures/families_ground_truth.json)."""
import json
import os

import pytest

from engine.api import estimate
from engine.architecture import count_parameters
from engine.errors import ConfigError, UnsupportedModelError
from engine.families import spec_from_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "families_ground_truth.json")


def _record(model_id):
    with open(FIXTURE) as f:
        record = json.load(f)["models"][model_id]
    with open(os.path.join(ROOT, record["config_file"])) as f:
        return record, json.load(f)["config"]


def _kv(tmp_path, config, seq_len):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return estimate(None, str(path), seq_len=seq_len).evaluation.terms["kv_cache"]


@pytest.mark.parametrize("model_id", ["llama-4-scout-17b-16e-text", "mistral-small-3.1-24b-instruct-2503"])
def test_parameters_and_cache_per_token_are_exact(tmp_path, model_id):
    record, config = _record(model_id)
    counts = count_parameters(spec_from_config(config, model_id))
    assert counts["parameters"] == record["parameters"]
    assert _kv(tmp_path, config, 4096) == 4096 * record["kv_bytes_per_token"]


def test_mistral3_vision_tower_and_projector_are_exact():
    record, config = _record("mistral-small-3.1-24b-instruct-2503")
    spec = spec_from_config(config, "m")
    counts = count_parameters(spec)
    top = record["parameters_by_top_module"]
    assert counts["parameters/vision"] == (top["model.vision_tower"] + top["model.vision_tower.transformer.layers"]
                                           + top["model.multi_modal_projector"])
    assert spec.tie_word_embeddings and record["lm_head_parameters"] == 0  # Mistral3Config's default: tied


def test_llama4_scout_layer_groups():
    _, config = _record("llama-4-scout-17b-16e-text")
    spec = spec_from_config(config, "scout")
    assert spec.layer_count(mixer="chunked_attention") == 36  # every 4th layer is NoPE and global
    assert spec.layer_count(mixer="attention") == 12
    assert spec.layer_count(mlp="moe") == 48  # interleave_moe_layer_step 1


def test_llama4_chunked_layers_keep_chunk_minus_one_tokens(tmp_path):
    _, config = _record("llama-4-scout-17b-16e-text")
    per_layer_token = 2 * 8 * 128 * 2  # K and V, 8 KV heads of 128, bf16
    # transformers' DynamicSlidingWindowLayer keeps the last attention_chunk_size - 1 tokens
    assert _kv(tmp_path, config, 32768) == per_layer_token * (12 * 32768 + 36 * 8191)


def test_llama4_interleaved_moe_uses_intermediate_size_mlp_for_dense_layers():
    _, config = _record("llama-4-scout-17b-16e-text")
    maverick_like = dict(config, interleave_moe_layer_step=2, num_hidden_layers=4, no_rope_layers=None)
    counts = count_parameters(spec_from_config(maverick_like, "m"))
    h, dense, expert = 5120, 16384, 8192
    assert counts["parameters/mlp"] == 2 * 3 * h * dense  # layers 0 and 2
    assert counts["parameters/moe_shared_experts"] == 2 * 3 * h * expert  # layers 1 and 3


def test_llama4_multimodal_vision_matches_transformers_meta_count():
    _, text = _record("llama-4-scout-17b-16e-text")
    config = {"model_type": "llama4", "text_config": text, "vision_config": {}}
    counts = count_parameters(spec_from_config(config, "l4"))
    # Llama4ForConditionalGeneration(Llama4Config(text_config=..., vision_config={})) on the
    # meta device, transformers 5.24: 108,225,039,360 parameters, 455,178,240 of them vision
    assert counts["parameters"] == 108_225_039_360
    assert counts["parameters/vision"] == 455_178_240


@pytest.mark.parametrize("change, error, named", [
    ({"layer_types": ["sliding_attention"] * 48}, ConfigError, "sliding_attention"),
    ({"no_rope_layers": [2] * 48}, ConfigError, "no_rope_layers"),
    ({"moe_layers": [99]}, ConfigError, "moe_layers"),
])
def test_llama4_bad_pattern_fields_are_errors_naming_them(change, error, named):
    _, config = _record("llama-4-scout-17b-16e-text")
    with pytest.raises(error, match=named):
        spec_from_config(dict(config, **change), "bad")


def test_nested_text_config_of_an_unknown_type_is_refused():
    config = {"model_type": "mistral3", "text_config": {"model_type": "nope"}, "vision_config": {}}
    with pytest.raises(UnsupportedModelError, match="nope"):
        spec_from_config(config, "x")
    with pytest.raises(ConfigError, match="text_config"):
        spec_from_config({"model_type": "mistral3", "text_config": 3}, "x")


def test_mllama_text_model_is_exact_and_caches_no_text_token_in_cross_layers(tmp_path):
    record, config = _record("default-mllama")
    text = config["text_config"]
    spec = spec_from_config(text, "mllama-text")
    assert count_parameters(spec)["parameters"] == record["parameters"]  # MllamaForCausalLM
    assert spec.layer_count(mixer="cross_attention") == 8
    assert _kv(tmp_path, text, 1024) == 1024 * record["kv_bytes_per_token"]  # 32 self-attention layers


def test_mllama_with_vision_matches_transformers_meta_count():
    _, config = _record("default-mllama")
    counts = count_parameters(spec_from_config(config, "mllama"))
    # MllamaForConditionalGeneration(MllamaConfig()) on the meta device, transformers 5.24:
    # 10,642,941,475 parameters; vision model 836,288,019 + projector 31,461,376
    assert counts["parameters"] == 10_642_941_475
    assert counts["parameters/vision"] == 836_288_019 + 31_461_376


def test_gemma3_siglip_tower_and_projector_are_exact():
    from engine.families_multimodal import gemma3_vision

    record, config = _record("gemma-3-27b-it")
    vision = dict(gemma3_vision(config["vision_config"], 5376, "gemma3"))
    top = record["parameters_by_top_module"]
    assert vision["vision/tower"] == top["model.vision_tower"] + top["model.vision_tower.encoder.layers"]
    assert vision["vision/projector"] == top["model.multi_modal_projector"]


def test_gemma3_whole_model_when_its_text_parser_is_present():
    from engine.families import PARSERS

    record, config = _record("gemma-3-27b-it")
    if "gemma3_text" not in PARSERS:
        with pytest.raises(UnsupportedModelError, match="gemma3_text"):
            spec_from_config(config, "g")
        return
    assert count_parameters(spec_from_config(config, "g"))["parameters"] == record["parameters"]


LLAVA_TEXT = {"model_type": "llama", "hidden_size": 1024, "intermediate_size": 2816, "num_hidden_layers": 4,
              "num_attention_heads": 16, "num_key_value_heads": 16, "vocab_size": 32064}
CLIP = {"model_type": "clip_vision_model", "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
        "patch_size": 14, "image_size": 336, "num_attention_heads": 16}
SIGLIP = {"model_type": "siglip_vision_model", "hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27,
          "patch_size": 14, "image_size": 384, "vision_use_head": False, "num_attention_heads": 16}


@pytest.mark.parametrize("vision, total, tower_and_projector", [
    (None, 423_711_744, 306_655_232),  # LlavaConfig's default CLIP-L/336 tower
    (CLIP, 423_711_744, 306_655_232),
    (SIGLIP, 533_453_680, 416_397_168),
])
def test_llava_matches_transformers_meta_count(vision, total, tower_and_projector):
    # LlavaForConditionalGeneration(LlavaConfig(text_config=LLAVA_TEXT, vision_config=vision,
    # vision_feature_layer=[-2, -5])) on the meta device, transformers 5.24
    config = {"model_type": "llava", "text_config": LLAVA_TEXT, "vision_feature_layer": [-2, -5]}
    if vision:
        config["vision_config"] = vision
    counts = count_parameters(spec_from_config(config, "llava"))
    assert counts["parameters"] == total
    assert counts["parameters/vision"] == tower_and_projector


def test_llava_unknown_vision_tower_is_refused():
    config = {"model_type": "llava", "text_config": LLAVA_TEXT, "vision_config": {"model_type": "dinov2"}}
    with pytest.raises(UnsupportedModelError, match="dinov2"):
        spec_from_config(config, "llava")


def test_llama4_head_is_tied_by_its_text_config():
    """transformers 5.24 (meta device, Llama4Config()): the outer tie_word_embeddings changes
    nothing; text_config's true drops the head, 202,048 x 5,120 = 1,034,485,760 parameters."""
    from engine.registry import find
    config = find("llama-4-scout-17b-16e-instruct").config
    base = count_parameters(spec_from_config(config, "x"))["parameters"]
    outer = {**config, "tie_word_embeddings": True}
    inner = {**config, "text_config": {**config["text_config"], "tie_word_embeddings": True}}
    assert count_parameters(spec_from_config(outer, "x"))["parameters"] == base
    assert count_parameters(spec_from_config(inner, "x"))["parameters"] == base - 1_034_485_760


def test_mllama_head_is_never_tied():
    """MllamaForConditionalGeneration's _tied_weights_keys is commented out and MllamaForCausalLM
    has none: measured, neither tie_word_embeddings changes the count."""
    _, config = _record("default-mllama")
    base = count_parameters(spec_from_config(config, "x"))["parameters"]
    for changed in ({**config, "tie_word_embeddings": True},
                    {**config, "text_config": {**config["text_config"], "tie_word_embeddings": True}}):
        assert count_parameters(spec_from_config(changed, "x"))["parameters"] == base
    text = {**config["text_config"], "model_type": "mllama_text_model", "tie_word_embeddings": True}
    assert spec_from_config(text, "x").tie_word_embeddings is False
