"""Mixer kind ``attention``: multi-head, grouped-query or multi-query attention over every
cached token (Vaswani et al. 2017; GQA, Ainslie et al. 2023; MQA when ``a_kv = 1``).

Options: ``qkv_bias``, ``out_bias`` (Llama's ``attention_bias``, Qwen2's q/k/v bias),
``qk_norm`` (Qwen3's RMSNorms on queries and keys), ``fused_qkv`` (Phi-3, GPT-2, Falcon)
and ``expanded_kv_cache`` (transformers' Falcon with ``new_decoder_architecture`` caches
K and V repeated to every query head); ``qk_norm_full`` (OLMo-2: the norms span the whole
query and key projections, ``a d`` and ``a_kv d``, not one head), ``qk_norm_bias`` (Phi's
LayerNorms on queries and keys) and ``sinks`` (gpt-oss: one learned sink logit per head,
``GptOssAttention.sinks`` in transformers' modeling_gpt_oss.py). None changes the cache.
"""

from __future__ import annotations

import sympy

from formulas import activations, kv_cache
from formulas import parallelism as par
from formulas.parameters import ONE, WeightTensor, linear, norm
from formulas.symbols import head_dim, hidden_size, num_attention_heads, num_key_value_heads, tensor_parallel

KIND = "attention"
LAYERS = None  # the layers no other mixer kind claims
SPLITS_KV_HEADS = True
LORA_COMPONENTS = ("attention",)  # PEFT all-linear adapts its projections


def tensors(
    layers: sympy.Expr,
    *,
    qkv_bias: bool = False,
    out_bias: bool = False,
    qk_norm: bool = False,
    fused_qkv: bool = False,
    expanded_kv_cache: bool = False,
    qk_norm_full: bool = False,
    qk_norm_bias: bool = False,
    sinks: bool = False,
) -> list[WeightTensor]:
    """Attention of ``layers`` layers.

    ``W_q: a d x h``, ``W_k, W_v: a_kv d x h``, ``W_o: h x a d`` (Vaswani et al. 2017;
    GQA, Ainslie et al. 2023; MQA when ``a_kv = 1``). Qwen3 adds RMSNorms of width ``d`` on
    queries and keys; Phi-3 and Falcon fuse Q, K and V into one matrix. The expanded cache
    of Falcon changes no parameter.
    """
    q_rows = num_attention_heads * head_dim
    kv_rows = num_key_value_heads * head_dim
    out: list[WeightTensor] = []
    if fused_qkv:
        out += linear("attention/qkv_proj", q_rows + 2 * kv_rows, hidden_size, layers, qkv_bias)
    else:
        out += linear("attention/q_proj", q_rows, hidden_size, layers, qkv_bias)
        out += linear("attention/k_proj", kv_rows, hidden_size, layers, qkv_bias)
        out += linear("attention/v_proj", kv_rows, hidden_size, layers, qkv_bias)
    out += linear("attention/o_proj", hidden_size, q_rows, layers, out_bias)
    if qk_norm:
        q_width, k_width = (q_rows, kv_rows) if qk_norm_full else (head_dim, head_dim)
        out += norm("norm/q_norm", q_width, layers, qk_norm_bias)
        out += norm("norm/k_norm", k_width, layers, qk_norm_bias)
    if sinks:  # one logit per query head, split with the heads
        out.append(WeightTensor("attention/sinks", num_attention_heads, ONE, layers, parallel="tensor"))
    return out


def facts(**options) -> dict[sympy.Symbol, int]:
    """Its options are layout switches, not symbols: nothing to pin."""
    return {}


def cache_elements(mla_layout: str | None = None, *, expanded_kv_cache: bool = False, **layout) -> sympy.Expr:
    """``2 ceil(a_kv / t) d`` values per layer and token on one tensor-parallel rank
    (formulas/kv_cache.py ``kv_values_per_layer_token``; KV heads replicated when ``t > a_kv``,
    formulas/parallelism.py ``kv_heads_per_gpu``); ``2 (a / t) d`` for the expanded cache.
    The bias, norm and fusion options do not change the cache."""
    heads = num_attention_heads / tensor_parallel if expanded_kv_cache else par.kv_heads_per_gpu()
    return kv_cache.attention_values(heads)


def cached_tokens(paged: bool = False) -> sympy.Expr:
    """Every token of the sequence: ``s`` (whole blocks when paged)."""
    return kv_cache.cached_tokens(paged)


def inference_peak(eager: bool) -> sympy.Expr:
    """formulas/activations.py ``attention_peak`` with the ``a / t`` heads of one rank."""
    return activations.attention_peak(eager, heads=num_attention_heads / tensor_parallel)


def training_row(recompute: str, sequence_parallel: bool, eager: bool) -> sympy.Expr:
    """Korthikanti et al. 2022 Table 2 (formulas/activations.py ``korthikanti_layer``)."""
    return activations.korthikanti_layer(recompute, sequence_parallel, eager)
