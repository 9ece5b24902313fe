"""Mixer kind ``gated_deltanet``: Gated DeltaNet linear attention (Yang et al. 2024,
arXiv:2412.06464; Qwen3-Next's ``linear_attention`` layers, transformers 5.24
modeling_qwen3_next.py ``Qwen3NextGatedDeltaNet``).

Options: ``linear_num_key_heads``, ``linear_num_value_heads``, ``linear_key_head_dim``,
``linear_value_head_dim``, ``linear_conv_kernel_dim``. It caches no tokens: a conv state over
the query, key and value channels and a recurrent ``d_lk x d_lv`` state per value head
(formulas/recurrent_state.py).
"""

from __future__ import annotations

import sympy

from formulas.parameters import ONE, WeightTensor, linear, norm
from formulas.recurrent_state import no_cached_elements, no_cached_tokens
from formulas.symbols import (
    batch_size,
    activation_bytes,
    conv_kernel,
    hidden_size,
    linear_key_head_dim as key_dim,
    linear_num_key_heads as key_heads,
    linear_num_value_heads as value_heads,
    linear_value_head_dim as value_dim,
    num_linear_attention_layers,
    seq_len,
    tensor_parallel,
)

KIND = "gated_deltanet"
LAYERS = num_linear_attention_layers
SPLITS_KV_HEADS = False
LORA_COMPONENTS = ("linear_attention",)
OPTIONS = (("linear_num_key_heads", key_heads), ("linear_num_value_heads", value_heads),
           ("linear_key_head_dim", key_dim), ("linear_value_head_dim", value_dim),
           ("linear_conv_kernel_dim", conv_kernel))


def conv_channels() -> sympy.Expr:
    """Channels the causal convolution runs over: queries, keys and values, ``2 a_lk d_lk + a_lv d_lv``."""
    return 2 * key_heads * key_dim + value_heads * value_dim


def tensors(layers: sympy.Expr, **options) -> list[WeightTensor]:
    """``in_proj_qkvz: (2 a_lk d_lk + 2 a_lv d_lv) x h``, ``in_proj_ba: 2 a_lv x h``, a depthwise
    ``conv1d`` of ``K`` taps per channel (no bias), ``dt_bias`` and ``A_log`` (``a_lv``
    each), the gated RMSNorm over ``d_lv`` and ``out_proj: h x a_lv d_lv``."""
    values = value_heads * value_dim
    out: list[WeightTensor] = []
    out += linear("linear_attention/in_proj_qkvz", 2 * key_heads * key_dim + 2 * values, hidden_size, layers)
    out += linear("linear_attention/in_proj_ba", 2 * value_heads, hidden_size, layers)
    out.append(WeightTensor("linear_attention/conv1d", conv_channels(), conv_kernel, layers, parallel="tensor"))
    out.append(WeightTensor("linear_attention/dt_bias", value_heads, ONE, layers, parallel="tensor"))
    out.append(WeightTensor("linear_attention/A_log", value_heads, ONE, layers, parallel="tensor"))
    out += norm("norm/linear_attention_norm", value_dim, layers)
    out += linear("linear_attention/out_proj", hidden_size, values, layers)
    return out


def facts(**options) -> dict[sympy.Symbol, int]:
    """The head counts, head widths and kernel width."""
    return {sym: options[name] for name, sym in OPTIONS}


cache_elements = no_cached_elements  # no tokens: the state is constant in s (state_elements)
cached_tokens = no_cached_tokens


def state_elements(**options) -> tuple[sympy.Expr, sympy.Expr]:
    """(conv, recurrent) elements per layer and sequence on one tensor-parallel rank:
    ``(2 a_lk d_lk + a_lv d_lv) K / t`` and ``a_lv d_lk d_lv / t`` (transformers 5.24
    ``conv_states [B, conv_dim, K]``, ``recurrent_states [B, a_lv, d_lk, d_lv]``)."""
    return conv_channels() * conv_kernel / tensor_parallel, value_heads * key_dim * value_dim / tensor_parallel


def inference_peak(eager: bool) -> sympy.Expr:
    """The layer input and output plus its widest projection's output:
    ``beta_a b s (2 h + (2 a_lk d_lk + 2 a_lv d_lv) / t)``."""
    widest = 2 * key_heads * key_dim + 2 * value_heads * value_dim
    return activation_bytes * batch_size * seq_len * (2 * hidden_size + widest / tensor_parallel)


def training_row(recompute: str, sequence_parallel: bool, eager: bool) -> sympy.Expr:
    """Not modelled: Korthikanti et al.'s rows describe attention layers (the profiles refuse
    training of recurrent mixers first)."""
    raise ValueError("training activations of Gated DeltaNet layers are not modelled")


def tp_split(**options) -> dict[str, int]:
    """The config fields tensor parallelism splits (each must be a multiple of ``t``)."""
    return {name: options[name] for name in ("linear_num_key_heads", "linear_num_value_heads")}
