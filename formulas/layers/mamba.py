"""Mixer kind ``mamba``: the Mamba-1 selective state-space mixer (Gu and Dao 2023,
arXiv:2312.00752, section 3; transformers 5.24 modeling_mamba.py ``MambaMixer``, and
modeling_jamba.py ``JambaMambaMixer`` with its inner RMSNorms).

Options: ``intermediate_size`` (``d_in = expand h``), ``state_size`` (``N``),
``time_step_rank`` (``R``), ``conv_kernel`` (``K``), ``proj_bias`` (in/out projections),
``conv_bias`` and ``inner_layernorms`` (Jamba's ``dt_layernorm``, ``b_layernorm``,
``c_layernorm``). It caches no tokens: a ``d_in x K`` conv state and a ``d_in x N``
SSM state per layer and sequence (formulas/recurrent_state.py).
"""

from __future__ import annotations

import sympy

from formulas.parameters import ONE, WeightTensor, linear, norm
from formulas.recurrent_state import no_cached_elements, no_cached_tokens
from formulas.symbols import (
    activation_bytes,
    batch_size,
    conv_kernel,
    hidden_size,
    mamba_d_inner as inner,
    num_mamba_layers,
    seq_len,
    ssm_state_size as state,
    tensor_parallel,
    time_step_rank as rank,
)

KIND = "mamba"
LAYERS = num_mamba_layers
SPLITS_KV_HEADS = False
LORA_COMPONENTS = ("mamba",)
OPTIONS = (("intermediate_size", inner), ("state_size", state), ("time_step_rank", rank), ("conv_kernel", conv_kernel))


def tensors(layers: sympy.Expr, *, proj_bias: bool = False, conv_bias: bool = True,
            inner_layernorms: bool = False, **sizes) -> list[WeightTensor]:
    """``in_proj: 2 d_in x h``, a depthwise ``conv1d`` (``d_in x K``), ``x_proj: (R + 2N) x d_in``,
    ``dt_proj: d_in x R`` with bias, ``A_log: d_in x N``, ``D: d_in``, ``out_proj: h x d_in``."""
    out: list[WeightTensor] = []
    out += linear("mamba/in_proj", 2 * inner, hidden_size, layers, proj_bias)
    out.append(WeightTensor("mamba/conv1d", inner, conv_kernel, layers, parallel="tensor"))
    if conv_bias:
        out.append(WeightTensor("mamba/conv1d.bias", inner, ONE, layers, parallel="tensor"))
    out += linear("mamba/x_proj", rank + 2 * state, inner, layers)
    out += linear("mamba/dt_proj", inner, rank, layers, bias=True)
    out.append(WeightTensor("mamba/A_log", inner, state, layers, parallel="tensor"))
    out.append(WeightTensor("mamba/D", inner, ONE, layers, parallel="tensor"))
    out += linear("mamba/out_proj", hidden_size, inner, layers, proj_bias)
    if inner_layernorms:
        out += norm("norm/mamba_dt_layernorm", rank, layers)
        out += norm("norm/mamba_bc_layernorms", 2 * state, layers)
    return out


def facts(**options) -> dict[sympy.Symbol, int]:
    """``d_in``, ``N``, ``R`` and ``K``."""
    return {sym: options[name] for name, sym in OPTIONS}


cache_elements = no_cached_elements  # no tokens: the state is constant in s (state_elements)
cached_tokens = no_cached_tokens


def state_elements(**options) -> tuple[sympy.Expr, sympy.Expr]:
    """(conv, recurrent) elements per layer and sequence on one tensor-parallel rank:
    ``d_in K / t`` and ``d_in N / t`` (transformers 5.24 ``conv_states [B, d_in, K]``,
    ``recurrent_states [B, d_in, N]``)."""
    return inner * conv_kernel / tensor_parallel, inner * state / tensor_parallel


def inference_peak(eager: bool) -> sympy.Expr:
    """The layer input and output plus ``in_proj``'s output: ``beta_a b s (2 h + 2 d_in / t)``."""
    return activation_bytes * batch_size * seq_len * (2 * hidden_size + 2 * inner / tensor_parallel)


def training_row(recompute: str, sequence_parallel: bool, eager: bool) -> sympy.Expr:
    """Not modelled (the profiles refuse training of recurrent mixers first)."""
    raise ValueError("training activations of Mamba layers are not modelled")


def tp_split(**options) -> dict[str, int]:
    """The config fields tensor parallelism splits (each must be a multiple of ``t``)."""
    return {"intermediate_size": options["intermediate_size"]}
