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
    predicted = _terms(record["config_from"], record["quantization_config"], record["tensor_parallel_size"])["weights"]
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
