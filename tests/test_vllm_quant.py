"""The ``vllm`` profile on quantized checkpoints, read from their own ``quantization_config``
(no ``--weight-quant``): the linears as vLLM's kernels hold them after loading
(engine/profiles/vllm_quant.py), checked against "Model loading took" lines of public GitHub
threads (tests/fixtures/vllm_weights_issues.json, the records with a quantization_config)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from engine.families import spec_from_config
from engine.profiles.vllm import build_worker
from engine.profiles.vllm_settings import VllmSettings
from engine.scenario import Scenario

ROOT = Path(__file__).resolve().parent.parent
GIB = 2**30
H100 = 85_031_714_816  # the catalog's cudaMemGetInfo total of an H100 80GB
RECORDS = [r for r in json.loads((ROOT / "tests" / "fixtures" / "vllm_weights_issues.json").read_text())["records"]
           if "quantization_config" in r]
GPTQ = {"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": False, "sym": True}


def _terms(model: str, quantization: dict | None, tp: int = 1, **flags) -> dict:
    entry = json.loads((ROOT / "engine" / "registry" / "models" / f"{model}.json").read_text())
    config = copy.deepcopy(entry["config"])
    if quantization is not None:
        config["quantization_config"] = quantization
    settings = VllmSettings(cuda_total_bytes=H100, gpu_name="h100-80gb", **flags)
    worker = build_worker(spec_from_config(config, name=model), Scenario(tp=tp), settings)
    return worker.model.evaluate().terms


@pytest.mark.parametrize("record", RECORDS, ids=[r["source_url"].rsplit("/", 1)[-1] for r in RECORDS])
def test_logged_quantized_weights_within_the_stated_tolerance(record):
    version = {"version": record["vllm_flag_version"]} if "vllm_flag_version" in record else {}
    predicted = _terms(record["config_from"], record["quantization_config"], record["tensor_parallel_size"],
                       **version)["weights"]
    logged = float(record["model_loading_took"].split()[0])
    assert abs(predicted / GIB / logged - 1) <= record["tolerance"], (predicted / GIB, logged, record["why_tolerance"])


def test_symmetric_gptq_on_marlin_frees_the_dense_zero_points():
    """Llama-3.1-8B attention: q, k, v, o are 4096 x (4096 + 1024 + 1024) + 4096 x 4096 rows x
    cols over 32 layers; sym=False (GPTQLinearMethod) keeps a 4-bit zero per group of 128."""
    sym, asym = _terms("llama-3.1-8b", GPTQ), _terms("llama-3.1-8b", {**GPTQ, "sym": False})
    groups = 32 * (6144 * 4096 // 128 + 4096 * 4096 // 128)
    assert asym["weights/attention"] - sym["weights/attention"] == groups // 2


def test_gptq_act_order_keeps_sorted_g_idx_and_its_indices():
    """desc_act: int32 g_idx + int32 sort indices per input column of every quantized matrix
    (q/k/v/o, gate/up/down: 4096 x 4 + 4096 x 2 + 14336 input columns per layer)."""
    plain, ordered = _terms("llama-3.1-8b", GPTQ), _terms("llama-3.1-8b", {**GPTQ, "desc_act": True})
    assert ordered["weights"] - plain["weights"] == 32 * 8 * (4 * 4096 + 2 * 4096 + 14336)


def test_gptq_group_size_minus_one_is_one_scale_per_row():
    per_row, grouped = _terms("llama-3.1-8b", {**GPTQ, "group_size": -1}), _terms("llama-3.1-8b", GPTQ)
    rows = 32 * (4096 + 1024 + 1024 + 4096 + 14336 + 14336 + 4096)
    cols_groups = 32 * (6144 * 32 + 4096 * 32 + 2 * 14336 * 32 + 4096 * 112)
    assert grouped["weights"] - per_row["weights"] == 2 * cols_groups - 2 * rows


def test_awq_keeps_its_zero_points_and_fp8_blocks_keep_their_scales():
    """awq_marlin converts the zeros (awq_to_marlin_zero_points, same size); block FP8 keeps one
    float32 weight_scale_inv per 128 x 128 block: both unchanged by vllm_quant."""
    awq = _terms("llama-3.1-8b", {"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True})
    assert awq["weights/attention"] - _terms("llama-3.1-8b", GPTQ)["weights/attention"] == 32 * (6144 + 4096) * 32 // 2
    tensor = _terms("llama-3.1-8b", {"quant_method": "fp8", "activation_scheme": "dynamic"})
    block = _terms("llama-3.1-8b", {"quant_method": "fp8", "weight_block_size": [128, 128]})
    assert block["weights/attention"] - tensor["weights/attention"] == 32 * 4 * (48 * 32 + 32 * 32 - 4)


def test_asymmetric_gptq_act_order_keeps_only_the_argsorted_g_idx():
    """sym=False runs GPTQLinearMethod: act order keeps g_idx as its int32 argsort, 4 bytes
    per input column (no separate sort indices)."""
    asym = {**GPTQ, "sym": False}
    plain, ordered = _terms("llama-3.1-8b", asym), _terms("llama-3.1-8b", {**asym, "desc_act": True})
    assert ordered["weights"] - plain["weights"] == 32 * 4 * (4 * 4096 + 2 * 4096 + 14336)


# --- one small layer by hand: 256 output rows x 512 input columns, every scheme ----------

ROWS, COLS = 256, 512


def _layer_bytes(quantization: dict, parallel: str = "tensor") -> int:
    """Bytes of one 256 x 512 linear as vLLM holds it under ``quantization`` (the format's
    own beta_q, beta_sc and g substituted, as the profile's facts do)."""
    from types import SimpleNamespace

    from engine.profiles import vllm_quant
    from formulas import symbols as S
    from formulas.parameters import WeightTensor

    held = vllm_quant.held_formats(SimpleNamespace(name="layer", quantization=quantization), None)
    fmt = held.experts if parallel == "expert" else held.dense
    tensor = WeightTensor("attention/q_proj", ROWS, COLS, 1, True, parallel)
    facts = {S.quantized_weight_bytes: fmt.value_bytes, S.quant_scale_bytes: fmt.scale_bytes,
             S.quant_group_size: fmt.group or 1}
    return int(held.tensor_bytes(tensor).xreplace(facts))


CT_W8A8 = {"quant_method": "compressed-tensors", "format": "int-quantized", "ignore": ["lm_head"],
           "config_groups": {"group_0": {"targets": ["Linear"],
                                         "weights": {"type": "int", "num_bits": 8, "strategy": "channel",
                                                     "symmetric": True},
                                         "input_activations": {"type": "int", "num_bits": 8, "strategy": "token",
                                                               "dynamic": True, "symmetric": True}}}}
CT_W4A16 = {"quant_method": "compressed-tensors", "format": "pack-quantized", "ignore": ["lm_head"],
            "config_groups": {"group_0": {"targets": ["Linear"], "input_activations": None,
                                          "weights": {"type": "int", "num_bits": 4, "strategy": "group",
                                                      "group_size": 128, "symmetric": True}}}}
CT_FP8_BLOCK = {"quant_method": "compressed-tensors", "format": "float-quantized",
                "config_groups": {"group_0": {"targets": ["Linear"],
                                              "weights": {"type": "float", "num_bits": 8, "strategy": "block",
                                                          "block_structure": [128, 128]},
                                              "input_activations": {"type": "float", "num_bits": 8, "dynamic": True}}}}


@pytest.mark.parametrize("quantization, expected", [
    # AWQ: 4-bit values, per group of 128 inputs a bf16 scale and a 4-bit zero (qzeros int32)
    ({"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True, "version": "gemm"},
     ROWS * COLS // 2 + ROWS * (COLS // 128) * 2 + ROWS * (COLS // 128) // 2),
    # AWQ group -1: one scale and zero per output row
    ({"quant_method": "awq", "bits": 4, "group_size": -1, "zero_point": True}, ROWS * COLS // 2 + ROWS * 2 + ROWS // 2),
    # block FP8: a byte per weight, a float32 weight_scale_inv per 128 x 128 block (2 x 4 blocks)
    ({"quant_method": "fp8", "weight_block_size": [128, 128], "activation_scheme": "dynamic"}, ROWS * COLS + 2 * 4 * 4),
    # per-tensor FP8 with static activations: one float32 weight_scale and one input_scale
    ({"quant_method": "fp8", "activation_scheme": "static"}, ROWS * COLS + 4 + 4),
    ({"quant_method": "fbgemm_fp8"}, ROWS * COLS + ROWS * 4),
    ({"quant_method": "modelopt", "quant_algo": "FP8"}, ROWS * COLS + 4 + 4),
    # NVFP4: two values a byte, an fp8 scale per 16 inputs, float32 global and input scales
    ({"quant_method": "modelopt", "quant_algo": "NVFP4"}, ROWS * COLS // 2 + ROWS * COLS // 16 + 8),
    # compressed-tensors W8A8 int8: int8 weights, a float32 scale per output channel
    (CT_W8A8, ROWS * COLS + ROWS * 4),
    # compressed-tensors W4A16 symmetric on Marlin: no zero points, a bf16 scale per group
    (CT_W4A16, ROWS * COLS // 2 + ROWS * (COLS // 128) * 2),
    (CT_FP8_BLOCK, ROWS * COLS + 2 * 4 * 4),
    # bitsandbytes 4-bit: float32 absmax per 64 weights (double quant dequantized) + the
    # 16-entry float32 code; 8-bit: int8 + float32 SCB per row
    ({"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_use_double_quant": True},
     ROWS * COLS // 2 + ROWS * COLS // 64 * 4 + 64),
    ({"quant_method": "bitsandbytes", "load_in_8bit": True}, ROWS * COLS + ROWS * 4),
    # GPTQ symmetric with act order on Marlin: no zeros, g_idx + sort indices per input column
    ({**GPTQ, "desc_act": True}, ROWS * COLS // 2 + ROWS * (COLS // 128) * 2 + COLS * 8),
])
def test_one_layer_by_hand(quantization, expected):
    assert _layer_bytes(quantization) == expected


def test_symmetric_gptq_experts_keep_their_zero_points():
    dense, experts = _layer_bytes(GPTQ), _layer_bytes(GPTQ, "expert")
    assert experts - dense == ROWS * (COLS // 128) // 2


def _attention(model: str, quantization: dict) -> int:
    return _terms(model, quantization)["weights/attention"]


@pytest.mark.parametrize("quantization, key", [
    ({"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True,
      "modules_to_not_convert": ["self_attn"]}, "modules_to_not_convert"),
    ({**CT_W8A8, "ignore": ["lm_head", "re:.*self_attn.*"]}, "ignore"),
    ({"quant_method": "fp8", "weight_block_size": [128, 128], "ignored_layers": ["self_attn"]}, "ignored_layers"),
    ({"quant_method": "bitsandbytes", "load_in_4bit": True, "llm_int8_skip_modules": ["self_attn"]},
     "llm_int8_skip_modules"),
])
def test_ignore_lists_keep_those_layers_in_the_model_dtype(quantization, key):
    """Llama-3.1-8B's attention left out by the method's ignore list is bf16: 32 layers of
    4096 x 6144 + 4096 x 4096 at 2 bytes, while the MLP stays quantized."""
    terms = _terms("llama-3.1-8b", quantization)
    assert terms["weights/attention"] == 32 * (4096 * 6144 + 4096 * 4096) * 2
    assert terms["weights/mlp"] < 32 * 3 * 4096 * 14336 * 2 * 0.6


def test_an_ignored_router_changes_nothing():
    """``re:.*mlp.gate$`` names the MoE router, which vLLM never quantizes."""
    plain = _terms("qwen3-30b-a3b", CT_W4A16)["weights"]
    assert _terms("qwen3-30b-a3b", {**CT_W4A16, "ignore": ["lm_head", "re:.*mlp.gate$"]})["weights"] == plain


def _write(tmp_path, quantization: dict) -> str:
    entry = json.loads((ROOT / "engine" / "registry" / "models" / "llama-3.1-8b.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**entry["config"], "quantization_config": quantization}))
    return str(tmp_path)


@pytest.mark.parametrize("quantization, needle", [
    ({"quant_method": "hqq", "bits": 4}, "'hqq'"),
    ({"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True, "version": "gemv_fast"}, "version"),
    ({**GPTQ, "checkpoint_format": "marlin"}, "checkpoint_format"),
    ({**GPTQ, "lm_head": True}, "lm_head"),
    ({**CT_W4A16, "format": "marlin-24"}, "format"),
    ({**CT_W4A16, "config_groups": {"group_0": {**CT_W4A16["config_groups"]["group_0"], "targets": ["Embedding"]}}},
     "targets"),
    ({**CT_W4A16, "config_groups": {"a": CT_W4A16["config_groups"]["group_0"],
                                    "b": CT_W4A16["config_groups"]["group_0"]}}, "config_groups"),
    ({**CT_W4A16, "sparsity_config": {"format": "sparse-24-bitmask"}}, "sparsity_config"),
    ({"quant_method": "fp8", "weight_block_size": [128, 64]}, "weight_block_size"),
    ({"quant_method": "modelopt", "quant_algo": "W4A8_AWQ"}, "quant_algo"),
    ({"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_storage": "bfloat16"},
     "bnb_4bit_quant_storage"),
])
def test_an_unread_quantization_field_is_a_one_line_error(run_cli, tmp_path, quantization, needle):
    result = run_cli("serve", "--model", _write(tmp_path, quantization), "--gpu", "h100-80gb")
    assert result.exit_code == 2, result.output
    assert needle in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_the_config_is_read_without_weight_quant(run_cli, tmp_path):
    """``memsym serve`` on an AWQ config: weights as AWQ, not bf16 (no flag given)."""
    result = run_cli("serve", "--model", _write(tmp_path, {"quant_method": "awq", "bits": 4, "group_size": 128,
                                                           "zero_point": True}), "--gpu", "h100-80gb", "--json")
    assert result.exit_code == 0, result.output
    weights = json.loads(result.stdout)["weights_bytes"]
    assert weights == _terms("llama-3.1-8b", {"quant_method": "awq", "bits": 4, "group_size": 128,
                                              "zero_point": True})["weights"]
    assert weights < 6.5 * 10**9


def test_compressed_tensors_nvfp4_is_read():
    """NVFP4 (float 4-bit, group 16): two values a byte and an fp8 scale per 16 inputs on
    Llama-3.1-8B's MLP (3 matrices of 14336 x 4096 per layer, 32 layers), float32 global and
    input scales per matrix."""
    nvfp4 = {"quant_method": "compressed-tensors", "format": "nvfp4-pack-quantized", "ignore": ["lm_head"],
             "config_groups": {"group_0": {"targets": ["Linear"],
                                           "weights": {"type": "float", "num_bits": 4, "strategy": "tensor_group",
                                                       "group_size": 16},
                                           "input_activations": {"type": "float", "num_bits": 4,
                                                                 "strategy": "tensor_group", "group_size": 16,
                                                                 "dynamic": "local"}}}}
    numel = 32 * 3 * 14336 * 4096
    assert _terms("llama-3.1-8b", nvfp4)["weights/mlp"] == numel // 2 + numel // 16 + 32 * 3 * 8


AWQ = {"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True, "version": "gemm"}


def test_vllm_07_keeps_the_absorbed_mla_matrices_by_hand():
    """DeepSeek-V2-Lite (h 2048, 16 heads, r_kv 512, d_r 64, no q_lora_rank, 27 layers), bf16:
    W_Q_UK 2048 x 16*512, W_UV_O 16*512 x 2048, W_QR 2048 x 16*64 per layer (vLLM 0.7.x
    vllm/attention/backends/mla/utils.py MLACommonImpl.process_weights_after_loading)."""
    terms = _terms("deepseek-coder-v2-lite-base", AWQ, version="0.7")
    assert terms["weights/mla_w_q_uk"] == 27 * 2048 * 16 * 512 * 2
    assert terms["weights/mla_w_uv_o"] == 27 * 16 * 512 * 2048 * 2
    assert terms["weights/mla_w_qr"] == 27 * 2048 * 16 * 64 * 2
    assert terms["weights/mla_absorbed"] == 27 * 512 * 16 * 256 * 2  # the dequantized kv_b_proj


def test_vllm_07_absorption_is_only_in_07_and_views_an_unquantized_kv_b_proj():
    default = _terms("deepseek-coder-v2-lite-base", AWQ)
    assert not any(name.startswith("weights/mla_w_") for name in default)
    assert _terms("deepseek-coder-v2-lite-base", AWQ, version="0.6")["weights"] == default["weights"]
    unquantized = _terms("deepseek-coder-v2-lite-base", None, version="0.7")
    assert "weights/mla_absorbed" not in unquantized
    assert unquantized["weights/mla_w_q_uk"] == 27 * 2048 * 16 * 512 * 2


def test_vllm_07_requantizes_the_absorbed_matrices_for_fp8():
    fp8 = {"quant_method": "fp8", "activation_scheme": "dynamic", "weight_block_size": [128, 128]}
    terms = _terms("deepseek-v3", fp8, tp=8, version="0.7")
    assert terms["weights/mla_w_q_uk"] == 61 * 1536 * 128 * 512 // 8  # q_lora_rank 1536, 1 byte
    assert terms["weights/mla_w_qr"] == 61 * 1536 * 128 * 64 * 2 // 8  # never requantized
