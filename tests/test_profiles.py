"""The profile plug-ins: registry, refusals of unread knobs, and a source for every term."""

from __future__ import annotations

import re

import pytest

from engine import profiles
from engine.errors import InputError
from engine.profiles import build
from engine.registry import load_spec
from engine.scenario import Scenario

# (model, scenario knobs) each profile can build, in each of its modes, with every optional
# term present somewhere: LoRA adapters, ZeRO-3 gathering, offloaded host terms, recompute.
CASES = {
    "megatron": [
        ("qwen3-0.6b", dict(mode="inference")),
        ("deepseek-v2-lite", dict(mode="inference", lora_rank=8)),
        ("llama-3.1-8b", dict(mode="training")),
        ("llama-3.1-8b", dict(mode="training", zero=3, dp=8, offload="both")),
        ("qwen3-0.6b", dict(mode="training", lora_rank=16, recompute="full")),
    ],
    "transformers": [
        ("qwen3-0.6b", dict(mode="inference")),
        ("qwen3-0.6b", dict(mode="training", recompute="full")),
        ("llama-3.1-8b", dict(mode="training", device="cpu")),
    ],
    "torchtune": [
        ("llama-3.1-8b", dict(mode="training", torch_compile=True, loss_chunks=8)),
        ("llama-3.1-8b", dict(mode="training", recompute="full", activation_offload=True, optimizer_in_backward=True,
                              optimizer="paged-adamw8bit")),
        ("llama-2-13b", dict(mode="training", lora_rank=16, weight_quant="nf4", dp=4, zero=3)),
    ],
    "deepspeed": [
        ("llama-3.1-8b", dict(mode="training", zero=2, dp=8)),
        ("llama-3.1-8b", dict(mode="training", zero=3, dp=8, offload="both", recompute="full")),
    ],
    "torchtitan": [
        ("llama-3.1-8b", dict(mode="training", dp=8, tp=2, recompute="op", float8=True, float8_all_gather=True)),
        ("llama-3.1-8b", dict(mode="training", dp=8, pp=4, zero=3, offload="both", recompute="full")),
    ],
    "vllm": [
        ("llama-3.1-8b", dict(mode="inference", seq_len=8192)),
        ("gemma-2-9b", dict(mode="inference", tp=2)),
        ("deepseek-v2-lite", dict(mode="inference", pp=2, kv_cache_dtype="float8")),
    ],
    "llamacpp": [
        ("llama-3.1-8b", dict(mode="inference")),
        ("qwen3-0.6b", dict(mode="inference", batch_size=4, cache_type_k="q8_0", cache_type_v="q4_0")),
        ("qwen3-0.6b", dict(mode="inference", batch_size=4, kv_unified=True, reserve_bytes=10**9)),
    ],
}
# what a placeholder looks like: a repository path or an empty/one-word line
PLACEHOLDER = re.compile(r"^\s*$|^(formulas|engine)/|\.py\)?$")


def test_every_registered_profile_has_cases():
    assert set(CASES) == set(profiles.REGISTRY)


@pytest.mark.parametrize("name", sorted(profiles.REGISTRY))
def test_profile_module_defines_its_profile(name):
    profile = profiles.get(name)
    assert profile.name == name
    assert profile.summary and profile.modes
    assert profile.knobs <= set(Scenario.__dataclass_fields__)


@pytest.mark.parametrize("name, model, knobs", [(n, m, k) for n, rows in CASES.items() for m, k in rows])
def test_every_term_has_a_real_source(name, model, knobs):
    mm = build(load_spec(model), Scenario(profile=name, **knobs))
    assert mm.profile == name
    for term in mm.terms:
        source = mm.source(term)
        assert not PLACEHOLDER.search(source), (term, source)
        # a citation: an arXiv id or a year, or a framework file and function
        assert re.search(r"arXiv:\d{4}\.\d{4,5}|\b(19|20)\d\d\b|\w+\.(py|h|cpp)\b", source), (term, source)
    if mm.host_terms:  # ZeRO-Offload's paper, or (llamacpp) the framework file that places the layers
        source = mm.source("host_terms")
        assert "arXiv:" in source or (mm.profile == "llamacpp" and re.search(r"\w+\.cpp\b", source)), source


def test_alias_paper_is_megatron():
    spec = load_spec("qwen3-0.6b")
    paper = build(spec, Scenario(profile="paper")).evaluate()
    megatron = build(spec, Scenario(profile="megatron")).evaluate()
    assert paper == megatron
    assert profiles.canonical("paper") == "megatron"


@pytest.mark.parametrize("name, knobs, needle", [
    ("megatron", dict(device="cpu"), "--device cpu"),
    ("transformers", dict(tp=2), "--tp 2"),
    ("transformers", dict(reserve_bytes=0, comm_buffer_bytes=10), "--comm-buffer 10"),
    ("transformers", dict(mode="training", float8=True), "--float8"),  # LoRA is read since AMP/PEFT (issue 12)
])
def test_unread_knobs_are_refused_by_name(name, knobs, needle):
    with pytest.raises(InputError, match=re.escape(f"--profile {name}: {needle}")):
        build(load_spec("qwen3-0.6b"), Scenario(profile=name, **knobs))


def test_unknown_profile_names_the_choices():
    # every profile, then the aliases (the list grows with the registry)
    with pytest.raises(InputError, match=re.escape(", ".join(profiles.names()))):
        build(load_spec("qwen3-0.6b"), Scenario(profile="gpu"))
    assert profiles.names()[:2] == ("megatron", "transformers") and profiles.names()[-1] == "paper"


def test_cli_refuses_device_under_megatron(run_cli):
    # pinned: without --profile, one-device inference is the transformers profile, which reads --device
    result = run_cli("estimate", "--model", "qwen3-0.6b", "--device", "cpu", "--profile", "megatron")
    assert result.exit_code == 2
    assert "--profile megatron: --device cpu is not modelled" in result.stderr


def test_json_and_latex_name_the_profile_and_sources(run_cli):
    import json

    out = json.loads(run_cli("estimate", "--model", "qwen3-0.6b", "--profile", "paper", "--json").stdout)
    assert out["inputs"]["profile"] == "megatron"
    assert out["sources"]["kv_cache"].startswith("Pope et al. 2022")
    tex = run_cli("latex", "--model", "qwen3-0.6b", "--mode", "training", "--profile", "transformers").stdout
    assert "Korthikanti" not in tex and "formulas/" not in tex
    assert "ForCausalLMLoss" in tex
