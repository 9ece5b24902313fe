"""Recurrent and hybrid families (issue 13) against transformers 5.24's ground truth.

Each record of tests/fixtures/families_ground_truth.json of a family in
engine/families_recurrent.py (published configs and the labelled transformers-default ones)
must come out exact: parameters, persistent buffers, cache bytes per token and the constant
state bytes per sequence (bf16 model, fp32 recurrent state).
"""

from __future__ import annotations

import json
import os

import pytest
import sympy

from engine import architecture
from engine.errors import ConfigError, InputError
from engine.families import spec_from_config
from engine.families_recurrent import PARSERS
from engine.profiles import build
from engine.scenario import Scenario
from formulas import symbols as S

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "families_ground_truth.json")


def _records() -> list[tuple[str, dict]]:
    with open(FIXTURE) as f:
        models = json.load(f)["models"]
    return [(mid, rec) for mid, rec in sorted(models.items()) if rec["model_type"] in PARSERS]


RECORDS = _records()


def _config(rec: dict) -> dict:
    with open(os.path.join(ROOT, rec["config_file"])) as f:
        return json.load(f)["config"]


def _bf16_values(spec) -> dict:
    return {**architecture.facts(spec), S.batch_size: 1, S.kv_cache_bytes: 2, S.activation_bytes: 2,
            S.state_bytes: 4, S.tensor_parallel: 1, S.pipeline_parallel: 1, S.context_parallel: 1}


def test_every_recurrent_family_has_a_record():
    assert {rec["model_type"] for _, rec in RECORDS} == set(PARSERS)
    labelled = [mid for mid, rec in RECORDS if mid.startswith("default-")]
    assert labelled  # transformers-default configs are tested too


@pytest.mark.parametrize("mid,rec", RECORDS, ids=[mid for mid, _ in RECORDS])
def test_parameters_and_buffers_are_exact(mid, rec):
    counts = architecture.count_parameters(spec_from_config(_config(rec), mid))
    assert counts["parameters"] == rec["parameters"]
    buffers = rec["persistent_buffers"]
    assert counts["buffers"] == sum(buffers.values()) if isinstance(buffers, dict) else buffers


@pytest.mark.parametrize("mid,rec", RECORDS, ids=[mid for mid, _ in RECORDS])
def test_cache_per_token_and_state_per_sequence_are_exact(mid, rec):
    spec = spec_from_config(_config(rec), mid)
    values = _bf16_values(spec)
    per_token = architecture.kv_cache_bytes(spec).xreplace({**values, S.seq_len: 1})
    assert per_token == rec["kv_bytes_per_token"]
    assert architecture.recurrent_state_bytes(spec).xreplace(values) == rec["state_bytes_per_sequence"]
    by_layer = architecture.recurrent_state_layers(spec)
    assert sum(count * per_layer for _, count, per_layer in by_layer).xreplace(values) == rec["state_bytes_per_sequence"]


@pytest.mark.parametrize("mid,rec", RECORDS, ids=[mid for mid, _ in RECORDS])
def test_state_sub_term_is_constant_in_seq_len_and_linear_in_batch(mid, rec):
    model = build(spec_from_config(_config(rec), mid), Scenario())
    state = model.terms["kv_cache/state"]
    assert state.free_symbols.isdisjoint({S.seq_len})
    facts = {sym: v for sym, v in model.facts.items() if sym != S.batch_size}
    pinned = state.xreplace(facts)
    one = pinned.xreplace({S.batch_size: 1})
    assert one == rec["state_bytes_per_sequence"] and pinned.xreplace({S.batch_size: 3}) == 3 * one
    tokens = architecture.kv_cache_bytes(spec_from_config(_config(rec), mid))
    assert sympy.expand(model.terms["kv_cache"] - state - tokens) == 0


def test_state_bytes_default_to_fp32_and_follow_the_symbol():
    mid, rec = next((m, r) for m, r in RECORDS if m == "mamba-2.8b-hf")
    model = build(spec_from_config(_config(rec), mid), Scenario())
    assert model.facts[S.state_bytes] == 4
    assert "kv_cache/state" in model.sources


def test_models_without_state_have_no_state_term():
    from engine.registry import load_spec
    model = build(load_spec("llama-3.1-8b"), Scenario())
    assert "kv_cache/state" not in model.terms and S.state_bytes not in model.facts


@pytest.mark.parametrize("profile", ["megatron", "deepspeed"])
def test_training_a_recurrent_model_is_refused(profile):
    mid, rec = RECORDS[0]
    zero = {"zero": 2} if profile == "deepspeed" else {}
    with pytest.raises(InputError, match="recurrent"):
        build(spec_from_config(_config(rec), mid), Scenario(mode="training", profile=profile, **zero))


def _nemotron() -> dict:
    return _config(dict(RECORDS)["default-nemotron-h"])


def test_nemotron_h_pattern_string_is_read():
    config = {k: v for k, v in _nemotron().items() if k != "layers_block_type"}
    spec = spec_from_config({**config, "hybrid_override_pattern": "M-M*ME"}, "x")
    assert spec.num_hidden_layers == 6
    assert spec.layer_count(mixer="mamba2") == 3 and spec.layer_count(mlp="moe") == 1
    assert spec.layer_count(mixer="attention") == 1 and spec.layer_count(mlp="dense") == 1


@pytest.mark.parametrize("change,field", [
    ({"hybrid_override_pattern": "M-X"}, "hybrid_override_pattern"),
    ({"moe_latent_size": 1024}, "moe_latent_size"),
    ({"mlp_bias": True}, "mlp_bias"),  # the default pattern has MoE layers: the frameworks disagree
    ({"n_shared_experts": 2}, "n_shared_experts"),
    ({"block_configs": [{"block_type": "moe"}]}, "block_configs"),
])
def test_nemotron_h_unknown_shape_fields_are_named(change, field):
    config = {k: v for k, v in _nemotron().items() if k != "layers_block_type"}
    with pytest.raises(ConfigError, match=field):
        spec_from_config({**config, **change}, "x")


@pytest.mark.parametrize("change", [{"attention_bias": True}, {"tie_word_embeddings": True}])
def test_nemotron_h_fields_both_frameworks_ignore_change_nothing(change):
    """transformers 5.24 (NemotronHAttention bias=False, _tied_weights_keys = {}) and vLLM
    (QKVParallelLinear bias=False, its own ParallelLMHead) build the same model either way."""
    config = _nemotron()
    base = architecture.count_parameters(spec_from_config(config, "x"))["parameters"]
    assert architecture.count_parameters(spec_from_config({**config, **change}, "x"))["parameters"] == base


def test_nemotron_h_mlp_bias_without_moe_layers_biases_the_dense_mlps():
    """Without MoE layers both frameworks bias the relu2 MLP's up and down projections."""
    config = {k: v for k, v in _nemotron().items() if k != "layers_block_type"}
    config["hybrid_override_pattern"] = "M-*-"
    spec = spec_from_config(config, "x")
    biased = spec_from_config({**config, "mlp_bias": True}, "x")
    extra = architecture.count_parameters(biased)["parameters"] - architecture.count_parameters(spec)["parameters"]
    assert extra == 2 * (config["intermediate_size"] + config["hidden_size"])


def test_unknown_layer_types_are_named():
    rec = dict(RECORDS)["qwen3-next-80b-a3b"]
    config = _config(rec)
    bad = ["sliding_attention"] + config["layer_types"][1:]
    with pytest.raises(ConfigError, match="layer_types"):
        spec_from_config({**config, "layer_types": bad}, "x")


def test_mamba2_heads_must_make_the_inner_width():
    config = _config(dict(RECORDS)["default-mamba2"])
    with pytest.raises(ConfigError, match="num_heads"):
        spec_from_config({**config, "num_heads": 100}, "x")


def test_registry_entries_copy_the_measured_configs():
    """Each registry entry of these families holds the very config its fixture record was measured on."""
    from engine.registry import entries
    by_repo = {rec["hf_repo"]: (mid, rec) for mid, rec in RECORDS}
    found = [e for e in entries() if e.config.get("model_type") in PARSERS]
    assert len(found) >= 4
    for entry in found:
        mid, rec = by_repo[entry.hf_repo]
        assert entry.config == _config(rec), entry.id
        assert architecture.count_parameters(spec_from_config(entry.config, entry.id))["parameters"] == rec["parameters"]


@pytest.mark.parametrize("variable,knobs", [("concurrency", {"seq_len": 32768}), ("seq_len", {"batch_size": 8})])
def test_solve_counts_the_state_of_every_sequence(variable, knobs):
    """solve's answers stay certified with a term constant in ``s``: at the answer the total fits,
    one more does not, and each concurrent request brings its own state."""
    from engine.api import estimate, memory_model
    from engine.gpus import make_budget
    from engine.solve import solve_budget

    free = {"batch_size": None} if variable == "concurrency" else {"seq_len": None}
    _, mm = memory_model("qwen3-next-80b-a3b", **{**knobs, **free})
    solution = solve_budget(mm, variable, make_budget("200GB"))
    assert solution.total_at_value <= solution.budget_bytes < solution.total_at_neighbour
    if variable == "concurrency":
        one = estimate("qwen3-next-80b-a3b", batch_size=1, **knobs).evaluation.terms
        assert one["kv_cache/state"] == 77_856_768  # the fixture's bytes per sequence
        assert (200 * 10**9 - one["weights"]) // one["kv_cache"] == solution.value


def test_tensor_parallelism_splits_the_state_and_checks_what_it_splits():
    from engine.api import estimate
    one = estimate("mamba-2.8b").evaluation.terms["kv_cache/state"]
    assert estimate("mamba-2.8b", tp=2).evaluation.terms["kv_cache/state"] * 2 == one == 23_592_960
    with pytest.raises(InputError, match="intermediate_size 5120"):
        estimate("mamba-2.8b", tp=3)
    with pytest.raises(InputError, match="does not divide"):
        estimate("qwen3-next-80b-a3b", tp=32)


def test_a_sliding_window_in_a_hybrid_is_named():
    config = _config(dict(RECORDS)["jamba-v0.1"])
    with pytest.raises(ConfigError, match="sliding_window"):
        spec_from_config({**config, "sliding_window": 4096}, "x")


def test_granite_hybrid_attention_layer_caches_what_was_measured():
    """The measured Granite-4.0-H copy had one attention layer (the default config has none)."""
    rec = dict(RECORDS)["default-granitemoehybrid"]
    config = _config(rec)
    types = ["attention"] + ["mamba"] * (config["num_hidden_layers"] - 1)
    spec = spec_from_config({**config, "layer_types": types}, "x")
    values = _bf16_values(spec)
    per_layer = rec["cache"]["per_layer_type"]
    assert architecture.kv_cache_bytes(spec).xreplace({**values, S.seq_len: 1}) == per_layer["full_attention"]["bytes_per_token"]
    state = architecture.recurrent_state_bytes(spec).xreplace(values)
    assert state == (config["num_hidden_layers"] - 1) * per_layer["linear_attention"]["constant_bytes"]


@pytest.mark.parametrize("field,state_page", [(None, 61_440 + 4_194_304), ("float32", 61_440 + 4_194_304),
                                              ("bfloat16", 61_440 + 2_097_152), ("float16", 61_440 + 2_097_152),
                                              ("auto", 61_440 + 2_097_152)])
def test_nemotron_h_config_ssm_cache_dtype_sets_vllms_state_dtype(tmp_path, field, state_page):
    """vLLM's NemotronHForCausalLMConfig.update_mamba_ssm_cache_dtype copies the config's
    ``mamba_ssm_cache_dtype`` (absent: float32; auto: the bf16 conv dtype). Default config:
    conv 3 x (128 x 64 + 2 x 8 x 128) x 2 B = 61,440; SSM 128 x 64 x 128 x (4 or 2) B."""
    from engine.serving import serve
    config = {k: v for k, v in _nemotron().items() if k not in ("mamba_ssm_cache_dtype", "time_step_limit")}
    if field is not None:
        config["mamba_ssm_cache_dtype"] = field
    (tmp_path / "config.json").write_text(json.dumps(config))
    values = serve(str(tmp_path), max_model_len=4096, gpu_name="h100-80gb").values
    assert values["state_page_bytes"] == state_page
    flag = serve(str(tmp_path), max_model_len=4096, gpu_name="h100-80gb", mamba_ssm_cache_dtype="float32").values
    assert flag["state_page_bytes"] == 61_440 + 4_194_304  # the flag wins over the config


def test_nemotron_h_ssm_cache_dtype_leaves_transformers_state_in_fp32():
    """transformers' NemotronH cache ignores the field: the recurrent state stays fp32 (measured
    with mamba_ssm_cache_dtype float32, bfloat16 and float16 on a bf16 model)."""
    config = {**_nemotron(), "mamba_ssm_cache_dtype": "bfloat16"}
    model = build(spec_from_config(config, "x"), Scenario())
    assert model.facts[S.state_bytes] == 4


def test_nemotron_h_unknown_ssm_cache_dtype_is_named():
    with pytest.raises(ConfigError, match="mamba_ssm_cache_dtype"):
        spec_from_config({**_nemotron(), "mamba_ssm_cache_dtype": "fp8"}, "x")


# transformers 5.24 parameter counts of XConfig() with one legacy spelling changed (meta device):
# NemotronHConfig.__post_init__ (mamba_n_groups, mamba_d_conv, mamba_conv_bias replace the field),
# GraniteMoeHybridConfig.attribute_map (layers_block_type -> layer_types), JambaConfig.attribute_map
# (num_local_experts -> num_experts)
@pytest.mark.parametrize("mid,change,parameters", [
    ("default-nemotron-h", {"mamba_n_groups": 2}, 1_962_056_576),
    ("default-nemotron-h", {"mamba_d_conv": 8}, 1_968_396_672),
    ("default-nemotron-h", {"mamba_conv_bias": False}, 1_968_345_472),
    ("default-granitemoehybrid", {"num_hidden_layers": 4, "layer_types": None,
                                  "layers_block_type": ["mamba", "attention", "mamba", "attention"]}, 4_982_056_704),
])
def test_legacy_spellings_are_read_as_transformers_reads_them(mid, change, parameters):
    config = {**_config(dict(RECORDS)[mid]), **change}
    assert architecture.count_parameters(spec_from_config(config, "x"))["parameters"] == parameters


def test_jamba_num_local_experts_is_num_experts():
    config = {k: v for k, v in _config(dict(RECORDS)["jamba-v0.1"]).items() if k != "num_experts"}
    four = architecture.count_parameters(spec_from_config({**config, "num_local_experts": 4}, "x"))["parameters"]
    named = architecture.count_parameters(spec_from_config({**config, "num_experts": 4}, "x"))["parameters"]
    assert four == named < architecture.count_parameters(spec_from_config(config, "x"))["parameters"]


def test_nemotron_nano_9b_v2_entry_gives_vllms_logged_block_size():
    """vllm#24280 quotes a 672-token attention block for nvidia/NVIDIA-Nemotron-Nano-9B-v2 when
    NemotronH's SSM cache was float16 (tests/fixtures/vllm_hybrid_logs.json); the registry entry,
    whose shapes come from other copies of the config, gives the same block."""
    from engine.serving import serve
    values = serve("nemotron-nano-9b-v2", max_model_len=8192, gpu_name="h100-80gb", mamba_ssm_cache_dtype="float16").values
    assert values["attention_block_size"] == 672
