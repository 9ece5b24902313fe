"""The attention-only families of issue 13 (engine/families_attention.py) equal transformers
5.24: parameters, persistent buffers and KV-cache bytes per token of every record of
tests/fixtures/families_ground_truth.json whose model_type they read (measured by
tools/measure/families_kv.py on the configs of tools/measure/configs/)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.architecture import count_parameters
from engine.errors import ConfigError, UnsupportedModelError
from engine.families import spec_from_config
from engine.families_attention import gemma3_language_model
from engine.profiles import build
from engine.registry import entries, find
from engine.scenario import Scenario

ROOT = Path(__file__).parent.parent
FIXTURE = json.loads((ROOT / "tests" / "fixtures" / "families_ground_truth.json").read_text())["models"]
FAMILIES = {"gpt_oss", "gemma3_text", "gemma3", "gemma", "phi", "olmo2", "smollm3", "granite", "granitemoe",
            "glm4_moe", "qwen2_moe", "phimoe"}
RECORDS = sorted(mid for mid, rec in FIXTURE.items() if rec["model_type"] in FAMILIES)
LANGUAGE_MODEL = ("model.language_model", "model.language_model.layers")  # Gemma-3's text part


def _config(model_id: str) -> dict:
    return json.loads((ROOT / FIXTURE[model_id]["config_file"]).read_text())["config"]


def _spec(model_id: str):
    config = _config(model_id)
    if config["model_type"] == "gemma3":
        return gemma3_language_model(config, model_id)
    return spec_from_config(config, model_id)


def _kv_per_token(spec, seq_len: int = 1) -> int:
    return build(spec, Scenario(batch_size=1, seq_len=seq_len)).evaluate().terms["kv_cache"] // seq_len


def test_every_family_has_a_record():
    assert {FIXTURE[mid]["model_type"] for mid in RECORDS} == FAMILIES
    assert len(RECORDS) >= 20


@pytest.mark.parametrize("model_id", RECORDS)
def test_parameters_equal_transformers(model_id):
    record = FIXTURE[model_id]
    counts = count_parameters(_spec(model_id))
    if record["model_type"] == "gemma3":  # the language model; the vision tower is not counted here
        expected = sum(record["parameters_by_top_module"][m] for m in LANGUAGE_MODEL) + record["lm_head_parameters"]
    else:
        expected = record["parameters"]
    assert counts["parameters"] == expected
    assert counts["buffers"] == sum(record["persistent_buffers"].values())


@pytest.mark.parametrize("model_id", RECORDS)
def test_kv_cache_bytes_per_token_equal_transformers(model_id):
    record = FIXTURE[model_id]
    spec = _spec(model_id)
    assert _kv_per_token(spec) == record["kv_bytes_per_token"]
    assert _kv_per_token(spec, seq_len=100) == record["kv_bytes_per_token"]  # below every window (gpt-oss: 128)
    assert record["state_bytes_per_sequence"] == 0


def test_gpt_oss_sliding_layers_stop_at_the_window():
    """12 of gpt-oss-20b's 24 layers keep ``Min(s, w)`` tokens (formulas/kv_cache.py
    ``cached_tokens``; transformers' DynamicSlidingWindowLayer keeps ``w - 1`` between
    steps), the other 12 every token."""
    spec = _spec("gpt-oss-20b")
    per_layer = FIXTURE["gpt-oss-20b"]["kv_bytes_per_token"] // 24
    kv = build(spec, Scenario(batch_size=1, seq_len=4096)).evaluate().terms["kv_cache"]
    assert kv == 12 * per_layer * 4096 + 12 * per_layer * 128


def test_gpt_oss_active_parameters_skip_the_unused_experts():
    record = FIXTURE["gpt-oss-20b"]
    counts = count_parameters(_spec("gpt-oss-20b"))
    config = _config("gpt-oss-20b")
    experts, active = config["num_local_experts"], config["num_experts_per_tok"]
    h, f, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    per_expert = 3 * h * f + 2 * f + h  # gate_up [h, 2f] + bias [2f], down [f, h] + bias [h]
    assert counts["active_parameters"] == record["parameters"] - layers * (experts - active) * per_expert


def test_gpt_oss_keeps_its_quantization_config_for_the_stored_bytes():
    assert _spec("gpt-oss-20b").quantization["quant_method"] == "mxfp4"


def test_kimi_k2_is_deepseek_v3():
    config = {**_config("kimi-k2-instruct"), "model_type": "kimi_k2"}
    spec = spec_from_config(config, "kimi-k2")
    record = FIXTURE["kimi-k2-instruct"]
    assert count_parameters(spec)["parameters"] == record["parameters"]
    assert count_parameters(spec)["buffers"] == sum(record["persistent_buffers"].values())
    assert _kv_per_token(spec) == record["kv_bytes_per_token"]


def test_multimodal_gemma3_is_refused_naming_its_text_config():
    with pytest.raises(UnsupportedModelError, match="text_config"):
        spec_from_config(_config("gemma-3-27b-it"), "gemma-3-27b-it")


@pytest.mark.parametrize("model_id,value", [("gpt-oss-20b", "chunked_attention"), ("gemma-3-270m", "linear_attention"),
                                             ("default-smollm3", "mamba")])
def test_an_unknown_layer_type_is_an_error_naming_it(model_id, value):
    config = _config(model_id)
    layers = config.get("num_hidden_layers", 36)
    config["layer_types"] = ["full_attention"] * (layers - 1) + [value]
    with pytest.raises(ConfigError, match=value):
        spec_from_config(config, model_id)


def test_smollm3_no_rope_layers_must_be_flags():
    config = {**_config("default-smollm3"), "no_rope_layers": [2] * 36}
    with pytest.raises(ConfigError, match="no_rope_layers"):
        spec_from_config(config, "smollm3")


def test_olmo2_qk_norm_spans_the_projections():
    """OLMo-2's q_norm / k_norm are a d and a_kv d wide (not d): 2 x 4096 per layer of 7B."""
    spec = _spec("olmo-2-1124-7b")
    counts = count_parameters(spec)
    assert counts["parameters/norm"] == 32 * (2 * 4096 + 4096 + 4096) + 4096


def test_qwen2_moe_shared_expert_gate_is_one_row_per_layer():
    counts = count_parameters(_spec("qwen1.5-moe-a2.7b"))
    assert counts["parameters/router"] == 24 * (60 * 2048 + 2048)


REGISTERED = sorted(e.id for e in entries() if e.id in FIXTURE and
                    (FIXTURE[e.id]["model_type"] in FAMILIES or e.config["model_type"] == "kimi_k2"))


def test_registry_holds_the_published_configs_of_these_families():
    """Every saved published config of these families but multimodal Gemma-3 (refused) and
    the two transformers-default configs (default-smollm3, default-phimoe: no published model)."""
    left_out = {"gemma-3-27b-it", "default-smollm3", "default-phimoe"}
    assert set(REGISTERED) == set(RECORDS) - left_out | {"kimi-k2-instruct"}


@pytest.mark.parametrize("model_id", REGISTERED)
def test_registry_entries_equal_transformers(model_id):
    record = FIXTURE[model_id]
    spec = spec_from_config(find(model_id).config, model_id)
    assert count_parameters(spec)["parameters"] == record["parameters"]
    assert _kv_per_token(spec) == record["kv_bytes_per_token"]


VARIANT_FIXTURE = json.loads((ROOT / "tests" / "fixtures" / "attention_variants_ground_truth.json").read_text())
VARIANTS = sorted(VARIANT_FIXTURE["variants"])  # tools/measure/attention_variants.py


@pytest.mark.parametrize("variant", VARIANTS)
def test_option_branches_equal_transformers(variant):
    """Parameters and each layer's attention kind and window of configs that switch the
    parsers' options (biases, qk-norms, shared experts, sliding patterns)."""
    record = VARIANT_FIXTURE["variants"][variant]
    spec = spec_from_config(record["config"], variant)
    assert count_parameters(spec)["parameters"] == record["parameters"]
    types = record["layer_types"] or ["full_attention"] * spec.num_hidden_layers
    assert spec.layer_count(mixer="sliding_attention") == types.count("sliding_attention")
    windows = {dict(g.mixer_options)["sliding_window"] for g in spec.layers if g.mixer == "sliding_attention"}
    assert windows <= {record["sliding_window"]}


def test_a_text_config_that_is_not_an_object_is_an_error():
    with pytest.raises(ConfigError, match="text_config"):
        gemma3_language_model({"model_type": "gemma3", "text_config": [1]}, "gemma3")
