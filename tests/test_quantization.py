"""A checkpoint's quantization_config sets the stored weight format (engine/quantization.py).

Every expected number is worked by hand from the format's definition on Llama-3.1-8B's
shapes: 32 layers of q, o (4096 x 4096), k, v (1024 x 4096), gate, up (14336 x 4096) and
down (4096 x 14336), i.e. 6,979,321,856 quantized weights in 224 matrices; embeddings and
the untied head (2 x 128256 x 4096) and the 65 norms of 4096 stay bf16.
"""
import json
import subprocess
import sys

import pytest

from engine.api import estimate
from engine.errors import ConfigError
from engine.registry import find

LINEAR = 6_979_321_856            # quantized weights
MATRICES = 224                    # 7 per layer
COLUMNS = 32 * (6 * 4096 + 14336)  # input columns summed over the matrices
BF16_REST = 2 * (2 * 128256 * 4096 + 65 * 4096)  # embed + lm_head + norms, bf16


def _weights(tmp_path, quantization_config=None, base="llama-3.1-8b", **knobs):
    config = dict(find(base).config)
    if quantization_config is not None:
        config["quantization_config"] = quantization_config
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    result = estimate(None, str(path), **knobs)
    return result.evaluation.terms["weights"], result.model.inputs


def test_awq_int4_llama_8b_is_about_5_7_gb(tmp_path):
    weights, inputs = _weights(tmp_path, {"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True,
                                          "version": "gemm"})
    # 4 bits per weight, an fp16 scale and a 4-bit zero per 128 weights of a row
    assert weights == LINEAR // 2 + (LINEAR // 128) * 5 // 2 + BF16_REST == 5_727_854_592
    assert inputs["weight_quant"] == "int4" and "awq" in inputs["weight_quant_source"]


def test_gptq_adds_its_int32_g_idx_per_input_column(tmp_path):
    weights, _ = _weights(tmp_path, {"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": False,
                                     "sym": True})
    assert weights == 5_727_854_592 + 4 * COLUMNS


def test_gptq_8bit_per_channel(tmp_path):
    weights, _ = _weights(tmp_path, {"quant_method": "gptq", "bits": 8, "group_size": -1})
    rows = 32 * (4096 + 2 * 1024 + 4096 + 2 * 14336 + 4096)  # output rows: one scale + 8-bit zero each
    assert weights == LINEAR + rows * 3 + 4 * COLUMNS + BF16_REST


def test_flag_overrides_the_config(tmp_path):
    awq = {"quant_method": "awq", "bits": 4, "group_size": 128}
    weights, inputs = _weights(tmp_path, awq, weight_quant="none")
    # unquantized: the default transformers profile, whose weights add 256 B of rotary inv_freq buffers
    assert weights == 16_060_522_496 + 256
    assert inputs["weight_quant"] == "none"
    weights, inputs = _weights(tmp_path, awq, weight_quant="int8")
    assert inputs["weight_quant_source"] == "--weight-quant"


def test_compressed_tensors_w4a16_group(tmp_path):
    config = {"quant_method": "compressed-tensors", "format": "pack-quantized", "ignore": ["lm_head"],
              "config_groups": {"group_0": {"targets": ["Linear"], "weights": {
                  "num_bits": 4, "type": "int", "strategy": "group", "group_size": 128, "symmetric": True}}}}
    weights, inputs = _weights(tmp_path, config)
    # bf16 scale per group, weight_shape (int64 x 2) per packed matrix
    assert weights == LINEAR // 2 + (LINEAR // 128) * 2 + 16 * MATRICES + BF16_REST
    assert inputs["weight_quant"] == "ct-int4-group"


def test_compressed_tensors_fp8_channel_keeps_ignored_attention_bf16(tmp_path):
    config = {"quant_method": "compressed-tensors", "format": "float-quantized", "ignore": ["lm_head", "re:.*self_attn"],
              "config_groups": {"g": {"targets": ["Linear"], "weights": {"num_bits": 8, "type": "float",
                                                                          "strategy": "channel"},
                                      "input_activations": {"num_bits": 8, "type": "float", "dynamic": True}}}}
    weights, _ = _weights(tmp_path, config)
    attention = 32 * (2 * 4096 * 4096 + 2 * 1024 * 4096)
    mlp = LINEAR - attention
    assert weights == 2 * attention + mlp + 32 * (2 * 14336 + 4096) * 2 + BF16_REST


def test_fp8_blocks(tmp_path):
    weights, _ = _weights(tmp_path, {"quant_method": "fp8", "weight_block_size": [128, 128]})
    blocks = 32 * (32 * 32 * 2 + 8 * 32 * 2 + 3 * 112 * 32)  # 128 x 128 blocks per layer
    assert weights == LINEAR + 4 * blocks + BF16_REST


def test_mxfp4_quantizes_the_routed_experts_only(tmp_path):
    mxfp4 = {"quant_method": "mxfp4", "modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.*.mlp.router",
                                                                 "model.embed_tokens", "lm_head"]}
    # one profile for both (unquantized Mixtral defaults to transformers, whose weights add its rotary buffers)
    plain, _ = _weights(tmp_path, base="mixtral-8x7b-v0.1", profile="megatron")
    weights, inputs = _weights(tmp_path, mxfp4, base="mixtral-8x7b-v0.1", profile="megatron")
    experts = 32 * 8 * 3 * 14336 * 4096
    # two E2M1 values per byte and one E8M0 scale per 32: 4.25 bits per weight
    assert weights == plain - 2 * experts + experts * 17 // 32
    assert inputs["weight_quant"] == "mxfp4"


def test_bitsandbytes_match_the_flag_schemes(tmp_path):
    nf4, _ = _weights(tmp_path, {"quant_method": "bitsandbytes", "load_in_4bit": True,
                                 "bnb_4bit_use_double_quant": True, "bnb_4bit_quant_type": "nf4"})
    assert nf4 == _weights(tmp_path, weight_quant="nf4")[0]
    int8, _ = _weights(tmp_path, {"quant_method": "bitsandbytes", "load_in_8bit": True})
    assert int8 == LINEAR + 4 * 32 * (4096 + 2 * 1024 + 4096 + 2 * 14336 + 4096) + BF16_REST
    single, _ = _weights(tmp_path, {"quant_method": "bitsandbytes", "load_in_4bit": True})
    assert single == LINEAR // 2 + 4 * (LINEAR // 64) + 64 * MATRICES + BF16_REST


def test_torchao_int4_weight_only(tmp_path):
    config = {"quant_method": "torchao", "quant_type": {"default": {"_type": "Int4WeightOnlyConfig",
                                                                    "_data": {"group_size": 64}}}}
    weights, _ = _weights(tmp_path, config)
    assert weights == LINEAR // 2 + (LINEAR // 64) * 4 + BF16_REST  # bf16 scale and zero per group


@pytest.mark.parametrize("config, named", [
    ({"quant_method": "hqq"}, "'hqq'"),
    ({"quant_method": "awq", "bits": 3}, "bits 3"),
    ({"quant_method": "torchao", "quant_type": "fp6_llm"}, "'fp6_llm'"),
    ({"quant_method": "fp8", "weight_block_size": [128, 64]}, "weight_block_size"),
    ({"quant_method": "compressed-tensors", "config_groups": {}}, "config_groups"),
    ({"quant_method": "awq", "modules_to_not_convert": ["model.layers.3.mlp.down_proj"]}, "layers.3"),
])
def test_unknown_or_unplaceable_settings_are_errors_naming_them(tmp_path, config, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.").replace("[", r"\[")):
        _weights(tmp_path, config)


def test_cli_refuses_an_unknown_quant_method_with_status_2(tmp_path):
    config = dict(find("llama-3.1-8b").config, quantization_config={"quant_method": "hqq"})
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    done = subprocess.run([sys.executable, "cli.py", "estimate", "--config", str(path)], capture_output=True, text=True)
    assert done.returncode == 2
    assert "hqq" in done.stderr and "Traceback" not in done.stderr


def test_full_training_dequantizes_while_lora_keeps_the_quantized_base(tmp_path):
    awq = {"quant_method": "awq", "bits": 4, "group_size": 128}
    full, inputs = _weights(tmp_path, awq, mode="training", profile="megatron")
    assert full == 16_060_522_496 and inputs["weight_quant"] == "none"
    lora, inputs = _weights(tmp_path, awq, mode="training", lora_rank=8, profile="megatron")
    assert lora == 5_727_854_592 and inputs["weight_quant"] == "int4"


def test_gpt_oss_20b_as_published_is_about_13_8_gb():
    result = estimate("gpt-oss-20b")
    terms = result.evaluation.terms
    experts = 24 * 32 * 3 * 2880 * 2880  # gate_up [E, H, 2I] + down [E, I, H], I = H = 2880
    biases = 24 * 32 * (2 * 2880 + 2880)  # expert biases stay bf16
    assert terms["weights/moe_experts"] == experts * 17 // 32 + 2 * biases  # MXFP4: 4.25 bits per weight
    assert 13.7e9 < terms["weights"] < 13.8e9
    assert result.model.inputs["weight_quant"] == "mxfp4"
