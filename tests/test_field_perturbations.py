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
