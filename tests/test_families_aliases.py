"""Config spellings transformers 5.24 reads as another field (a config class's ``attribute_map``
or a derivation in its modeling file) are read the same way, never silently defaulted.

Each renamed config must give the parameters of the published one; an alias that disagrees with
its field is an error naming both. Found by comparing memsym with transformers on the meta
device for each config class's attribute_map (tools/measure/README.md).
"""

from __future__ import annotations

import pytest

from engine.architecture import count_parameters
from engine.errors import ConfigError
from engine.families import spec_from_config
from engine.registry import find


def _parameters(config: dict) -> int:
    return count_parameters(spec_from_config(config, "x"))["parameters"]


@pytest.mark.parametrize("model_id,field,alias", [
    ("glm-4.5-air", "n_routed_experts", "num_local_experts"),  # Glm4MoeConfig.attribute_map
    ("deepseek-v3", "n_routed_experts", "num_local_experts"),  # DeepseekV3Config.attribute_map
    ("deepseek-v2-lite", "n_routed_experts", "num_experts"),  # DeepseekV2Config.attribute_map
    ("qwen3-30b-a3b", "num_experts", "num_local_experts"),  # Qwen3MoeConfig.attribute_map
    ("mixtral-8x7b-v0.1", "num_local_experts", "num_experts"),  # MixtralConfig.attribute_map
])
def test_an_alias_gives_the_fields_parameters(model_id, field, alias):
    config = find(model_id).config
    renamed = {k: v for k, v in config.items() if k != field}
    renamed[alias] = config[field]
    assert _parameters(renamed) == _parameters(config)


@pytest.mark.parametrize("model_id,field,alias", [
    ("glm-4.5-air", "n_routed_experts", "num_local_experts"),
    ("deepseek-v2-lite", "n_routed_experts", "num_experts"),
    ("mixtral-8x7b-v0.1", "num_local_experts", "num_experts"),
])
def test_an_alias_that_disagrees_with_its_field_is_named(model_id, field, alias):
    config = find(model_id).config
    with pytest.raises(ConfigError, match=f"{alias}.*{field}"):
        spec_from_config({**config, alias: config[field] + 1}, "x")


def test_qwen3_moe_without_head_dim_derives_it_from_the_hidden_size():
    """Qwen3MoeConfig has no head_dim field (modeling_qwen3_moe.py: getattr(config, "head_dim",
    h / a)): without it Qwen3-30B-A3B's heads are 2048 / 32 = 64 wide; transformers 5.24 on the
    meta device: 30,079,131,648 parameters."""
    config = {k: v for k, v in find("qwen3-30b-a3b").config.items() if k != "head_dim"}
    assert _parameters(config) == 30_079_131_648
    assert spec_from_config(config, "x").head_dim == 64


def test_qwen3_moe_with_a_window_slides_every_layer():
    """Qwen3MoeConfig has no max_window_layers: use_sliding_window makes every layer's cache a
    window (transformers 5.24 DynamicCache: 4 of 4 DynamicSlidingWindowLayer), unlike Qwen3."""
    config = {**find("qwen3-30b-a3b").config, "use_sliding_window": True, "sliding_window": 4096}
    spec = spec_from_config(config, "x")
    assert spec.layer_count(mixer="sliding_attention") == spec.num_hidden_layers == 48


def test_a_window_on_deepseek_is_named():
    with pytest.raises(ConfigError, match="sliding_window"):
        spec_from_config({**find("deepseek-v3").config, "sliding_window": 4096}, "x")
