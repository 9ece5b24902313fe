"""Never a silent wrong answer (issue 13): each scalar field of each family's transformers
config class, changed one at a time (tests/fixtures/field_perturbations.json, measured on the
meta device by tools/measure/field_perturbations.py), gives memsym the parameter count
transformers 5.24 instantiates, or an error naming the field."""

from __future__ import annotations

import copy
import json
import os

import pytest

from engine.architecture import count_parameters
from engine.errors import ConfigError, UnsupportedModelError
from engine.families import spec_from_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "field_perturbations.json")


def _families() -> dict:
    with open(FIXTURE) as f:
        return json.load(f)["families"]


FAMILIES = _families()


def _changed(config: dict, field: str, value) -> dict:
    out = copy.deepcopy(config)
    *parents, key = field.split(".")
    target = out
    for parent in parents:
        target = target[parent]
    target[key] = value
    return out


def test_the_fixture_covers_the_issue_13_families():
    assert {"gpt_oss", "gemma3", "gemma3_text", "llama4", "qwen3_next", "mamba", "mamba2", "jamba", "nemotron_h",
            "bamba", "granitemoehybrid", "falcon_h1", "phimoe", "phi", "qwen2_moe", "glm4_moe", "olmo2", "smollm3",
            "granite", "granitemoe", "mistral3", "mllama", "llava"} <= set(FAMILIES)
    assert sum(len(f["changes"]) for f in FAMILIES.values()) > 500


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_every_changed_field_is_counted_as_transformers_counts_it_or_named(model_type):
    family = FAMILIES[model_type]
    assert count_parameters(spec_from_config(family["config"], model_type))["parameters"] == family["parameters"]
    wrong = []
    for record in family["changes"]:
        config = _changed(family["config"], record["field"], record["value"])
        try:
            ours = count_parameters(spec_from_config(config, model_type))["parameters"]
        except (ConfigError, UnsupportedModelError) as exc:
            if record["field"].split(".")[-1] not in str(exc):
                wrong.append((record["field"], record["value"], f"refused without naming it: {exc}"))
            continue
        if ours != record["parameters"]:
            wrong.append((record["field"], record["value"], ours - record["parameters"]))
    assert not wrong, wrong


WINDOWED = ("sliding_attention", "chunked_attention")  # transformers' DynamicSlidingWindowLayer / chunked


def _text(config: dict) -> dict:
    text = config.get("text_config")
    return dict(text) if isinstance(text, dict) and "model_type" in text else dict(config)


@pytest.mark.parametrize("model_type", sorted(m for m, f in FAMILIES.items() if f.get("windows")))
def test_a_window_slides_the_layers_transformers_cache_slides_or_is_named(model_type):
    """With sliding_window 4 (and use_sliding_window), memsym's windowed layers are the cache
    layers transformers' DynamicCache makes sliding, or the window is refused by name."""
    family = FAMILIES[model_type]
    for record in family["windows"]:
        config = {**_text(family["config"]), **record["window"]}
        config.setdefault("model_type", model_type)
        for key in ("layer_types", "no_rope_layers", "moe_layers", "cross_attention_layers"):
            config.pop(key, None)
        try:
            spec = spec_from_config(config, model_type)
        except (ConfigError, UnsupportedModelError) as exc:
            assert "sliding_window" in str(exc), exc
            continue
        assert spec.num_hidden_layers == record["layers"]
        assert sum(spec.layer_count(mixer=kind) for kind in WINDOWED) == record["sliding_layers"], record
