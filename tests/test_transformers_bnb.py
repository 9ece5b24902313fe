"""The transformers profile with bitsandbytes optimizers, against CPU measurements
(tools/measure/bnb_peaks.py: peaks.py's training step with AdamW8bit, bitsandbytes 0.50.2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.families import spec_from_config
from engine.profiles import build
from engine.registry import load_spec
from engine.scenario import Scenario

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "bnb_peaks_cpu.json"
POINTS = json.loads(FIXTURE.read_text())


def _predict(point: dict) -> int:
    config = POINTS["models"][point["model"]]["config"]
    scenario = Scenario(mode="training", profile="transformers", device="cpu", optimizer=point["optimizer"],
                        dtype=point["dtype"], attention=point["attention"], batch_size=point["batch_size"],
                        seq_len=point["seq_len"], recompute="full" if point["gradient_checkpointing"] else "none")
    return build(spec_from_config(config, point["model"]), scenario).evaluate().total_bytes


@pytest.mark.parametrize("index", range(len(POINTS["points"])))
def test_adamw8bit_training_peak_measured_on_cpu(index):
    point = POINTS["points"][index]
    measured = point["measured"]["peak_bytes"]
    # the profile's CPU points are exact to a few bytes (docs/accuracy.md); 64 B of slack
    assert abs(_predict(point) - measured) <= 64, (_predict(point), measured)


def test_paged_state_leaves_the_device_total():
    spec = load_spec("qwen3-0.6b")
    paged = build(spec, Scenario(mode="training", profile="transformers", optimizer="paged-adamw8bit")).evaluate()
    eight = build(spec, Scenario(mode="training", profile="transformers", optimizer="adamw8bit")).evaluate()
    assert paged.terms["optimizer"] + paged.host["optimizer_paged"] == eight.terms["optimizer"]
    assert paged.total_bytes < eight.total_bytes
    assert "paged" in build(spec, Scenario(mode="training", profile="transformers",
                                           optimizer="paged-adamw")).inputs["convention"]


def test_transformers_names_its_bytes_per_parameter():
    model = build(load_spec("qwen3-0.6b"), Scenario(mode="training", profile="transformers"))
    assert model.inputs["convention"].endswith("= 8 B/param")
