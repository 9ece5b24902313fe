"""KV-cache bytes equal what transformers 5.24's cache holds (tools/measure/params_kv.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sympy

from engine.api import estimate
from engine.profiles import build
from engine.families import spec_from_config
from engine.registry import find
from engine.scenario import Scenario
from formulas import symbols as S
from formulas.kv_cache import kv_cache

FIXTURES = Path(__file__).parent / "fixtures"
MODELS = sorted(json.loads((FIXTURES / "transformers_ground_truth.json").read_text())["models"])
VARIANTS = sorted(p.stem for p in (FIXTURES / "variant_configs").glob("*.json"))


def _kv_bytes(config, name, **knobs):
    return build(spec_from_config(config, name), Scenario(**knobs)).evaluate().terms["kv_cache"]


@pytest.mark.parametrize("model_id", MODELS)
def test_kv_per_token_equals_transformers(model_id, ground_truth):
    expected = ground_truth["models"][model_id]["kv"]["kv_cache_bytes_per_token_bf16"]
    assert _kv_bytes(find(model_id).config, model_id, batch_size=1, seq_len=1) == expected


@pytest.mark.parametrize("variant", VARIANTS)
def test_kv_per_token_of_variants_equals_transformers(variant, ground_truth):
    config = json.loads((FIXTURES / "variant_configs" / f"{variant}.json").read_text())["config"]
    expected = ground_truth["variants"][variant]["kv"]["kv_cache_bytes_per_token_bf16"]
    assert _kv_bytes(config, variant, batch_size=1, seq_len=1) == expected


def test_kv_is_linear_in_batch_and_tokens_without_windows():
    one = _kv_bytes(find("llama-3.1-8b").config, "l", batch_size=1, seq_len=1)
    assert _kv_bytes(find("llama-3.1-8b").config, "l", batch_size=3, seq_len=4096) == 3 * 4096 * one


def test_sliding_layers_stop_growing_at_the_window():
    """Gemma-2-9B: 21 sliding layers of window 4096 and 21 full layers."""
    config = find("gemma-2-9b").config
    per_layer_token = 2 * 8 * 256 * 2
    for s in (100, 4096, 10_000):
        expected = per_layer_token * (21 * s + 21 * min(s, 4096))
        assert _kv_bytes(config, "g", batch_size=1, seq_len=s) == expected


def test_mla_latent_and_decompressed_layouts():
    """DeepSeek-V3: latent (512 + 64) x 61 x 2 B; transformers 4.x: 128 x (192 + 128) x 2 B per layer."""
    config = find("deepseek-v3").config
    assert _kv_bytes(config, "d", seq_len=1) == (512 + 64) * 61 * 2 == 70_272
    assert _kv_bytes(config, "d", seq_len=1, mla_cache="decompressed") == 128 * (192 + 128) * 2 * 61


@pytest.mark.parametrize("dtype, width", [("float32", 4), ("float16", 2), ("float8", 1), ("int8", 1)])
def test_kv_dtype_scales_the_cache(dtype, width):
    config = find("qwen3-0.6b").config
    assert _kv_bytes(config, "q", seq_len=1, kv_cache_dtype=dtype) == 2 * 28 * 8 * 128 * width


def test_int4_kv_is_half_a_byte_per_value():
    assert _kv_bytes(find("qwen3-0.6b").config, "q", seq_len=1, kv_cache_dtype="int4") == 28 * 8 * 128


def test_paged_cache_rounds_up_to_whole_blocks():
    config = find("qwen3-0.6b").config
    per_token = 114_688
    assert _kv_bytes(config, "q", seq_len=17, block_size=16) == 32 * per_token
    assert _kv_bytes(config, "q", seq_len=32, block_size=16) == 32 * per_token


def test_formula_shape_for_gqa():
    expected = 2 * S.batch_size * S.kv_cache_bytes * S.num_key_value_heads * S.head_dim * S.num_hidden_layers * S.seq_len
    assert sympy.expand(kv_cache() - expected) == 0


def test_estimate_keeps_kv_cache_term_name():
    assert "kv_cache" in estimate("qwen3-0.6b").evaluation.terms
