"""Parameter counts equal what transformers 5.24 instantiates (meta device).

The expected numbers come from tests/fixtures/transformers_ground_truth.json, written by
tools/measure/params_kv.py (see tools/measure/README.md for how to rerun it).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.architecture import count_parameters, parameter_tensors
from engine.families import spec_from_config
from engine.registry import entries, find
from formulas.parameters import parameter_count, parameters_by_component

FIXTURES = Path(__file__).parent / "fixtures"
REGISTRY_IDS = [
    "qwen3-0.6b", "qwen3-8b", "qwen3-30b-a3b", "llama-2-13b", "llama-3.1-8b", "llama-3.1-70b",
    "mistral-7b-v0.1", "mixtral-8x7b-v0.1", "deepseek-v3", "deepseek-v2-lite", "gemma-2-9b", "gpt2",
    "falcon-7b", "phi-3-mini-4k",
]
VARIANTS = sorted(p.stem for p in (FIXTURES / "variant_configs").glob("*.json"))


def _spec(model_id):
    return spec_from_config(find(model_id).config, model_id)


def test_registry_holds_the_fourteen_models():
    """The fourteen measured in transformers_ground_truth.json; the families of issue 13 add
    more (tests/test_families_attention.py checks those against their own fixture)."""
    assert set(REGISTRY_IDS) <= {e.id for e in entries()}


@pytest.mark.parametrize("model_id", REGISTRY_IDS)
def test_registry_parameters_equal_transformers(model_id, ground_truth):
    truth = ground_truth["models"][model_id]
    counts = count_parameters(_spec(model_id))
    assert counts["parameters"] == truth["parameters"]
    assert counts["buffers"] == sum(truth["persistent_buffers"].values())


@pytest.mark.parametrize("model_id", REGISTRY_IDS)
def test_components_equal_transformers(model_id, ground_truth):
    truth = dict(ground_truth["models"][model_id]["by_component"])
    truth["embedding"] = truth.get("embedding", 0) + truth.pop("position_embedding", 0)
    truth = {k: v for k, v in truth.items() if v}
    ours = {k: int(v.xreplace(_facts(model_id))) for k, v in parameters_by_component(parameter_tensors(_spec(model_id))).items()}
    assert ours == truth


def _facts(model_id):
    from engine.architecture import facts

    return facts(_spec(model_id))


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_configs_equal_transformers(variant, ground_truth):
    config = json.loads((FIXTURES / "variant_configs" / f"{variant}.json").read_text())["config"]
    counts = count_parameters(spec_from_config(config, variant))
    assert counts["parameters"] == ground_truth["variants"][variant]["parameters"]


@pytest.mark.parametrize("model_id", ["mixtral-8x7b-v0.1", "deepseek-v3", "qwen3-30b-a3b", "deepseek-v2-lite"])
def test_active_parameters_of_moe_models(model_id, ground_truth):
    """Active = total - the routed experts a token skips, from transformers' own expert tensors."""
    spec = _spec(model_id)
    truth = ground_truth["models"][model_id]
    experts = truth["by_component"]["moe_experts"]
    moe = next(group.mlp_args for group in spec.layers if group.mlp == "moe")
    skipped = experts * (moe["num_experts"] - moe["num_experts_per_tok"]) // moe["num_experts"]
    assert count_parameters(spec)["active_parameters"] == truth["parameters"] - skipped


def test_dense_models_are_all_active():
    counts = count_parameters(_spec("llama-3.1-8b"))
    assert counts["active_parameters"] == counts["parameters"]


def test_tied_head_is_counted_once():
    tied = _spec("qwen3-0.6b")
    untied = spec_from_config({**find("qwen3-0.6b").config, "tie_word_embeddings": False}, "untied")
    diff = count_parameters(untied)["parameters"] - count_parameters(tied)["parameters"]
    assert diff == tied.vocab_size * tied.hidden_size


def test_parameter_formula_is_symbolic_until_pinned():
    expr = parameter_count(parameter_tensors(_spec("llama-3.1-8b")))
    assert {s.name for s in expr.free_symbols} >= {"hidden_size", "num_hidden_layers", "vocab_size"}
