"""Llama 3.2 Vision (``mllama``) on vLLM 0.6.3's V0 engine (engine/profiles/vllm_mllama.py,
formulas/frameworks/vllm_mllama.py), checked against the public start-up logs in
tests/fixtures/vllm_mllama_logs.json. Each error asserted is the one measured (memsym minus
the log), not a tolerance widened to pass."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.architecture import count_parameters
from engine.errors import InputError
from engine.families import spec_from_config
from engine.profiles.vllm import build_worker
from engine.profiles.vllm_settings import VllmSettings
from engine.scenario import Scenario
from formulas.frameworks import vllm_mllama as M

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = json.loads((ROOT / "tests" / "fixtures" / "vllm_mllama_logs.json").read_text())
RECORDS = {r["id"]: r for r in FIXTURE["records"]}
GIB = 2**30
SWAP_SPACE = 4 * GIB  # vLLM 0.6 EngineArgs.swap_space (GiB): "# CPU blocks" = swap // block bytes


def _spec():
    return spec_from_config(FIXTURE["config"]["config"], "llama-3.2-11b-vision-instruct")


def _worker(total, seqs, max_len, version="0.6"):
    settings = VllmSettings(cuda_total_bytes=total, max_model_len=max_len, max_num_seqs=seqs, version=version)
    return build_worker(_spec(), Scenario(), settings)


def test_published_config_counts_the_model_cards_parameters():
    assert count_parameters(_spec())["parameters"] == 10_670_220_835  # "10.6B"


def test_weights_are_the_whole_checkpoint_with_vllms_padded_tables():
    """2 B x 10,670,220,835 + the V + 8 embedding padded to 128,320 rows (56 more than
    pad(V) + 8) + the llama3 rotary cache [131072, 128] in bf16."""
    w = _worker(102_135_857_152, 128, 512)
    terms = w.model.evaluate().terms
    assert terms["weights/image_token_rows_padding"] == 56 * 4096 * 2
    assert terms["weights/rotary_cache"] == 131072 * 128 * 2
    assert terms["weights"] == 2 * 10_670_220_835 + 56 * 4096 * 2 + 131072 * 128 * 2 == 21_374_454_854


@pytest.mark.parametrize("record, error_percent", [("vllm-10569-l20-0.6.3", -0.004), ("vllm-9630-gh200-0.6.3", 0.256),
                                                   ("vllm-pr12126-h100-main-2025-01", 0.234)])
def test_weights_against_the_logs(record, error_percent):
    """Measured: L20 -0.004 %, GH200 +0.256 % (that log is 0.05 GiB below the L20's for the
    same checkpoint and release: the platform's load-time measurement), H100 +0.23 % (the
    log rounds to 0.01 GiB)."""
    terms = _worker(102_135_857_152, 128, 512).model.evaluate().terms
    logged = RECORDS[record]["log"]["weights_gib"]
    assert round(100 * (terms["weights"] / GIB - logged) / logged, 3) == error_percent


def test_kv_block_spans_every_text_layer_as_the_cpu_block_count_shows():
    """CacheEngine.get_cache_block_size over all 40 text layers (cross-attention included):
    2 x 16 x 8 x 128 x 2 B x 40 = 2,621,440 B; 4 GiB of swap // that = 1638, the "# CPU
    blocks" both logs print (32 self-attention layers alone would give 2048)."""
    w = _worker(102_135_857_152, 128, 512)
    block = int(w.value("page_bytes")) * int(w.value("layers_per_block"))
    assert block == 2_621_440
    for record in ("vllm-9630-gh200-0.6.3", "vllm-pr12126-h100-main-2025-01"):
        assert SWAP_SPACE // block == RECORDS[record]["log"]["num_cpu_blocks"]


def test_vision_encoder_peak_by_hand():
    """N = 128 images, 4 tiles of 1608 padded patches, H_v 1280: X = 128 x 4 x 1608 x 1280 x 2.
    23 X (12 saved states, 11 in the last global layer) + mask 128 x 6432^2 x 2 + patch_embeds
    128 x 4 x 1600 x 1280 x 2 + pixels 128 x 4 x 3 x 560^2 x (2 + 4)."""
    x = 128 * 4 * 1608 * 1280 * 2
    expected = 23 * x + 128 * 6432**2 * 2 + 128 * 4 * 1600 * 1280 * 2 + 128 * 4 * 3 * 560**2 * 6
    terms = _worker(102_135_857_152, 128, 512).model.evaluate().terms
    assert terms["activations/vision_encoder"] == expected
    assert terms["activations"] == expected + 32 * 2**20  # the tower's peak is the run's, + cuBLAS workspace


def test_gh200_log_blocks_within_the_measured_error():
    """vllm-project/vllm#9630 (0.6.3, 128 sequences, --max-model-len 512): 2252 blocks logged,
    2321 predicted (+3.06 %) under the assumed GH200 total (+-180 blocks of uncertainty)."""
    record = RECORDS["vllm-9630-gh200-0.6.3"]
    w = _worker(record["cuda_total_bytes"], 128, 512)
    predicted, logged = int(w.value("num_gpu_blocks")), record["log"]["num_gpu_blocks"]
    assert predicted == 2321
    assert round(100 * (predicted - logged) / logged, 2) == 3.06
    assert round(float(w.value("max_concurrency")), 2) == 72.53  # logged 70.38x


def test_default_batch_does_not_start_where_the_logs_ran_out_of_memory():
    """256 dummy images (vLLM's default max_num_seqs) exceed the GH200 (#9630, --max-model-len
    32) and the L20 (#10569); max_num_seqs 2 starts on the L20, as that issue's fix did."""
    gh200 = RECORDS["vllm-9630-gh200-0.6.3"]["cuda_total_bytes"]
    assert _worker(gh200, 256, 32).model.evaluate().terms["kv_cache"] < 0
    l20 = 48_305_799_168  # engine/data/gpus.json l20 (nvidia-smi's figure)
    assert _worker(l20, 256, 8192).model.evaluate().terms["kv_cache"] < 0
    assert _worker(l20, 2, 8192).value("num_gpu_blocks") > 0


def test_later_main_branch_is_outside_the_modelled_release():
    """vllm-project/vllm#12126 (main of 2025-01-16, H100, 128 sequences, 64k): the log's torch
    peak is 36.63 GiB; vLLM 0.6.3's tensors give 59.69 GiB (+23.06 GiB), so that code's vision
    path holds less than 0.6.3's (not modelled: --vllm-version 0.7 refuses mllama)."""
    record = RECORDS["vllm-pr12126-h100-main-2025-01"]
    terms = _worker(record["cuda_total_bytes"], 128, 65536).model.evaluate().terms
    assert round(terms["activations"] / GIB - record["log"]["activation_peak_gib"], 2) == 23.06
    with pytest.raises(InputError, match="modelled for --vllm-version 0.6 only"):
        _worker(record["cuda_total_bytes"], 128, 65536, version="0.7")


def test_v1_still_refuses_mllama_with_its_reason():
    with pytest.raises(InputError, match="last served by vLLM 0.10.2"):
        _worker(85_031_714_816, 16, 8192, version="0.19")


@pytest.mark.parametrize("image_size, tiles, expected", [(560, 4, 4), (448, 4, 4), (560, 1, 1), (1120, 4, 1)])
def test_dummy_image_tiles_follow_get_optimal_tiled_canvas(image_size, tiles, expected):
    assert M.canvas_tiles(image_size, tiles) == expected


def _quantized(quantization_config, name="mllama-quantized"):
    config = json.loads(json.dumps(FIXTURE["config"]["config"]))
    config["quantization_config"] = quantization_config
    spec = spec_from_config(config, name)
    settings = VllmSettings(cuda_total_bytes=85_031_714_816, max_model_len=8192, max_num_seqs=16, version="0.6")
    return build_worker(spec, Scenario(), settings).model.evaluate().terms


def _fp8_dynamic(**changes):
    return {**json.loads(json.dumps(FIXTURE["quantized_configs"]["fp8-dynamic"]["quantization_config"])), **changes}


def test_fp8_dynamic_quantizes_the_text_linears_and_keeps_tower_projector_and_head_bf16():
    """neuralmagic/Llama-3.2-11B-Vision-Instruct-FP8-dynamic (compressed-tensors, channel fp8):
    every text layer's q/k/v/o (cross-attention included) and MLP one byte per weight plus a
    float32 scale per output row; the tower, projector, embedding and LM head as in bf16.
    Attention 40 x (2 x 4096^2 + 2 x 1024 x 4096) B + 40 x 10240 x 4 B (+ 32 B of gates); MLP
    40 x 3 x 14336 x 4096 B + 40 x 32768 x 4 B."""
    terms, bf16 = _quantized(_fp8_dynamic()), _quantized(None, "mllama")
    assert terms["weights/attention"] == 40 * (2 * 4096**2 + 2 * 1024 * 4096) + 40 * 10240 * 4 + 32
    assert terms["weights/mlp"] == 40 * 3 * 14336 * 4096 + 40 * 32768 * 4
    for unchanged in ("vision", "embedding", "lm_head", "image_token_rows_padding", "rotary_cache"):
        assert terms[f"weights/{unchanged}"] == bf16[f"weights/{unchanged}"]
    assert terms["weights"] == 12_657_183_814  # 11.79 GiB against 19.91 GiB in bf16


def test_w4a16_group_128_holds_half_bytes_and_bf16_scales_per_group():
    """compressed-tensors pack-quantized int4, group 128, symmetric (CompressedTensorsWNA16 on
    Marlin): 0.5 B per weight and a 2-byte scale per 128 inputs of every output row, no zeros."""
    config = _fp8_dynamic(format="pack-quantized")
    config["config_groups"] = {"group_0": {"targets": ["Linear"], "input_activations": None, "weights": {
        "num_bits": 4, "type": "int", "strategy": "group", "group_size": 128, "symmetric": True}}}
    terms = _quantized(config)
    attention_groups = (2 * 4096 + 2 * 1024) * 4096 // 128
    assert terms["weights/attention"] == 40 * (2 * 4096**2 + 2 * 1024 * 4096) // 2 + 40 * attention_groups * 2 + 32
    assert terms["weights/mlp"] == 40 * 3 * 14336 * 4096 // 2 + 40 * (2 * 14336 * 32 + 4096 * 112) * 2


@pytest.mark.parametrize("config, message", [
    ({"quant_method": "bitsandbytes", "load_in_4bit": True}, "quant_method .bitsandbytes.*#9720 added it"),
    ({"quant_method": "awq", "bits": 4}, "quant_method 'awq' is not modelled"),
    ({"quant_method": ["fp8"]}, r"quant_method \['fp8'\] is not modelled"),
    ({"quant_method": "fp8", "weight_block_size": [128, 128],
      "ignored_layers": ["vision_model", "multi_modal_projector"]}, "weight_block_size"),
    (_fp8_dynamic(format="nvfp4-pack-quantized"), "format 'nvfp4-pack-quantized'"),
    (_fp8_dynamic(ignore=["re:.*lm_head", "re:vision_model.*"]), "does not name multi_modal_projector"),
    (_fp8_dynamic(ignore=["re:.*lm_head", "re:multi_modal_projector.*", "re:vision_model.*", "re:.*down_proj"]),
     "ignore entry 're:.*down_proj'"),
])
def test_quantized_checkpoints_not_modelled_are_refused_by_name(config, message):
    with pytest.raises(InputError, match=message):
        _quantized(config)


def test_a100_peak_lies_between_the_two_misreadings_of_pr_9352():
    """vllm-project/vllm#9352 (A100 80GB, --max-num-seqs 70): 0.6.3's profiler read 50.56 GB,
    "about 8GB" under the true peak (about 58.6 GB); 69 read 83.46 GB, far over. memsym's
    weights + torch peak + non-torch at 70: 56.81 GB, -1.75 GB (-3.0 %) from 58.6 GB."""
    record = RECORDS["vllm-pr9352-a100-0.6.3"]
    terms = _worker(record["cuda_total_bytes"], 70, 131072).model.evaluate().terms
    peak = terms["weights"] + terms["activations"] + terms["non_torch"]
    assert record["log"]["peak_bytes_70"] < peak < record["log"]["peak_bytes_69"]
    assert round((peak - (record["log"]["peak_bytes_70"] + 8e9)) / 1e9, 2) == -1.75


def test_tensor_parallel_layout_of_tower_projector_and_embedding_by_hand():
    """TP 2: the tower's 76,177,939 replicated parameters (embeddings, LayerNorms, fc2 biases,
    gates) whole, the rest of it and the projector (ColumnParallelLinear) halved; the
    embedding's 128,320 padded rows halved."""
    spec = _spec()
    assert M.tower_replicated_parameters(dict(spec.vision_shape)) == 76_177_939
    settings = VllmSettings(cuda_total_bytes=85_031_714_816, max_model_len=8192, max_num_seqs=16, version="0.6")
    terms = build_worker(spec, Scenario(tp=2), settings).model.evaluate().terms
    tower, projector = 863_567_379, 7680 * 4096 + 4096
    vision = 76_177_939 + (tower - 76_177_939) // 2 + projector // 2
    assert terms["weights/vision"] + terms["weights/vision_tp_layout"] == 2 * vision
    embedding = terms["weights/embedding"] + terms["weights/image_token_rows_padding"]
    assert embedding == 128_320 // 2 * 4096 * 2  # one table of V + 8 rows padded to 64, split


def test_image_size_vllm_asserts_on_is_one_line():
    config = json.loads(json.dumps(FIXTURE["config"]["config"]))
    config["vision_config"]["image_size"] = 561
    spec = spec_from_config(config, "mllama-561")  # transformers reads it; vLLM's mllama.py asserts
    settings = VllmSettings(cuda_total_bytes=85_031_714_816, max_model_len=8192, version="0.6")
    with pytest.raises(InputError, match="image_size 561 is not a multiple of 14"):
        build_worker(spec, Scenario(), settings)


def test_pipeline_parallelism_is_refused_as_vllm_refuses_it():
    settings = VllmSettings(cuda_total_bytes=85_031_714_816, max_model_len=8192, version="0.6")
    with pytest.raises(InputError, match="--pipeline-parallel-size 2"):
        build_worker(_spec(), Scenario(pp=2), settings)
