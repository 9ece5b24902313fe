"""``serve`` on every registry model whose family vLLM V1 serves: a prediction (or vLLM's own
"does not fit" refusal), never an exception; mllama (V1_REMOVED) is refused with its reason.
Two families vLLM serves are not modelled by the profile yet and are refused in one line
(``UNMODELLED``: gpt2, falcon: vllm_settings.check UNMODELLED_TYPES); the list is asserted
exactly, so a new refusal fails here."""

from __future__ import annotations

import pytest

from engine.errors import InputError
from engine.profiles.vllm_settings import V1_REMOVED
from engine.registry import entries, load_spec
from engine.serving import serve

UNMODELLED = {"falcon-7b", "gpt2"}  # vllm_settings.check: "is not modelled"
SERVED = [e.id for e in entries() if load_spec(e.id).model_type not in V1_REMOVED and e.id not in UNMODELLED]
REFUSED = [e.id for e in entries() if load_spec(e.id).model_type in V1_REMOVED]


@pytest.mark.parametrize("model", SERVED)
def test_serve_predicts_every_served_registry_model(model):
    prediction = serve(model, gpu_name="h100-80gb", max_model_len=4096)
    assert prediction.values["weights_bytes"] > 0
    assert prediction.refusal is None or "memory" in prediction.refusal.lower() or "KV" in prediction.refusal


@pytest.mark.parametrize("model", REFUSED)
def test_serve_refuses_the_families_v1_removed(model):
    with pytest.raises(InputError, match="vLLM V1 does not serve it"):
        serve(model, gpu_name="h100-80gb", max_model_len=4096)


def test_the_hybrid_registry_entries_are_served():
    hybrids = {"nemotron-nano-9b-v2", "nemotron-3-nano-30b-a3b", "granite-4.0-h-tiny", "granite-4.0-h-1b",
               "falcon-h1-7b-instruct", "mamba-codestral-7b-v0.1"}
    assert hybrids <= set(SERVED)


@pytest.mark.parametrize("model", sorted(UNMODELLED))
def test_the_unmodelled_families_are_refused_in_one_line(model):
    with pytest.raises(InputError, match="is not modelled"):
        serve(model, gpu_name="h100-80gb", max_model_len=4096)
