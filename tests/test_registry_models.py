"""The registry's entries: each loads, each copied from tools/measure/configs matches the
transformers 5.24 ground truth, and instruct / base ids resolve to their architecture."""
import json
import os

import pytest

from engine.api import estimate
from engine.architecture import count_parameters
from engine.registry import entries, find, load_spec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "families_ground_truth.json")


def _fixture():
    with open(FIXTURE) as f:
        return json.load(f)["models"]


MEASURED = [e.id for e in entries() if e.id in _fixture()]


def test_registry_holds_every_entry_once():
    ids = [e.id for e in entries()]
    assert len(ids) == len(set(ids)) >= 40
    keys = [k.lower() for e in entries() for k in (e.id, e.hf_repo, *e.aliases)]
    assert len(keys) == len(set(keys)), "an id, repo or alias names two entries"


@pytest.mark.parametrize("model_id", MEASURED)
def test_measured_entries_are_exact(model_id):
    record = _fixture()[model_id]
    entry = find(model_id)
    with open(os.path.join(ROOT, record["config_file"])) as f:
        saved = json.load(f)["config"]
    drop = lambda config: {k: v for k, v in config.items() if k != "model_type"}  # kimi_k2 keeps its published type
    assert drop(entry.config) == drop(saved)  # copied verbatim
    spec = load_spec(model_id)
    assert count_parameters(spec)["parameters"] == record["parameters"]
    terms = estimate(model_id, seq_len=64).evaluation.terms  # below every window (gpt-oss: 128)
    kv = terms["kv_cache"] - terms.get("kv_cache/state", 0)  # the recurrent state is per sequence, not per token
    assert kv == 64 * record["kv_bytes_per_token"]


@pytest.mark.parametrize("alias, model_id", [
    ("meta-llama/Llama-3.1-8B-Instruct", "llama-3.1-8b"),
    ("Qwen/Qwen2.5-7B-Instruct", "qwen2.5-7b"),
    ("meta-llama/Meta-Llama-3-8B", "meta-llama-3-8b-instruct"),
    ("mistralai/Mistral-Nemo-Base-2407", "mistral-nemo-instruct-2407"),
    ("meta-llama/Llama-4-Scout-17B-16E-Instruct", "llama-4-scout-17b-16e-instruct"),  # with its vision model
    ("deepseek-ai/DeepSeek-R1", "deepseek-v3"),  # DeepSeek-V3's architecture
    ("meta-llama/Llama-3.3-70B-Instruct", "llama-3.1-70b"),
    ("meta-llama/Llama-3.2-1B-Instruct", "llama-3.2-1b"),
    ("meta-llama/Llama-3.1-405B", "llama-3.1-405b-instruct"),
    ("Qwen/Qwen2.5-0.5B-Instruct", "qwen2.5-0.5b"),
    ("Qwen/Qwen2.5-1.5B", "qwen2.5-1.5b-instruct"),
    ("Qwen/Qwen2.5-Coder-7B", "qwen2.5-7b"),
    ("google/gemma-3-1b-it", "gemma-3-1b"),
    ("mistralai/Mistral-Small-24B-Base-2501", "mistral-small-24b-instruct-2501"),
    ("ibm-granite/granite-3.3-8b-base", "granite-3.3-8b-instruct"),
    ("deepseek-ai/DeepSeek-V2-Chat", "deepseek-v2"),
    ("mistralai/Mistral-7B-v0.3", "mistral-7b-instruct-v0.3"),
])
def test_instruct_and_base_ids_resolve_to_their_architecture(alias, model_id):
    assert find(alias).id == model_id
    assert load_spec(alias) == load_spec(model_id)


# Popular checkpoints that used to need the Hub (issue 13, deliverable 4): each resolves offline
# to an entry whose file names the published config it copies.
POPULAR = ["meta-llama/Llama-3.3-70B-Instruct", "microsoft/phi-4", "meta-llama/Llama-3.2-1B",
           "meta-llama/Llama-3.2-1B-Instruct", "microsoft/Phi-3.5-MoE-instruct", "Qwen/Qwen2.5-0.5B",
           "Qwen/Qwen2.5-0.5B-Instruct", "Qwen/Qwen2.5-1.5B", "Qwen/Qwen2.5-1.5B-Instruct", "Qwen/Qwen3-1.7B",
           "Qwen/Qwen3-235B-A22B", "google/gemma-3-1b-it", "mistralai/Mistral-Small-24B-Instruct-2501",
           "ibm-granite/granite-3.3-8b-instruct", "meta-llama/Llama-3.1-405B", "deepseek-ai/DeepSeek-V2",
           "meta-llama/Llama-4-Maverick-17B-128E-Instruct", "Qwen/Qwen2.5-Coder-7B", "Qwen/QwQ-32B",
           "meta-llama/Llama-3.2-11B-Vision-Instruct"]


@pytest.mark.parametrize("model_id", POPULAR)
def test_popular_ids_resolve_offline_to_a_cited_entry(monkeypatch, model_id):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", "/nonexistent-memsym-test")  # no local cache to fall back on
    entry = find(model_id)
    assert entry.source.startswith("https://huggingface.co/")
    assert load_spec(model_id).name == entry.id
