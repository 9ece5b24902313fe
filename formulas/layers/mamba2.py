"""Mixer kind ``mamba2``: the Mamba-2 state-space-duality mixer (Dao and Gu 2024,
arXiv:2405.21060, section 7; transformers 5.24 modeling_mamba2.py ``Mamba2Mixer`` and the
hybrids' copies: ``BambaMixer``, ``NemotronHMamba2Mixer``, ``GraniteMoeHybridMambaLayer``,
``FalconH1Mixer``).

Options: ``num_heads`` (``a_m``), ``head_dim`` (``d_m``; the inner width is ``a_m d_m``),
``n_groups`` (``G``), ``state_size`` (``N``), ``conv_kernel`` (``K``), ``proj_bias``,
``conv_bias``, ``out_proj_bias`` and ``gated_norm`` (the gated RMSNorm over the inner width; Falcon-H1's
``mamba_rms_norm: false`` leaves it out). It caches no tokens: a conv state over
``a_m d_m + 2 G N`` channels and an ``a_m x d_m x N`` SSM state per layer and sequence.
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
    mamba_head_dim as head_width,
    mamba_n_groups as groups,
    mamba_num_heads as heads,
    num_mamba2_layers,
    seq_len,
    ssm_state_size as state,
    tensor_parallel,
)

KIND = "mamba2"
LAYERS = num_mamba2_layers
SPLITS_KV_HEADS = False
LORA_COMPONENTS = ("mamba",)
OPTIONS = (("num_heads", heads), ("head_dim", head_width), ("n_groups", groups), ("state_size", state),
           ("conv_kernel", conv_kernel))


def conv_channels() -> sympy.Expr:
    """The x, B and C channels the convolution runs over: ``a_m d_m + 2 G N``."""
    return heads * head_width + 2 * groups * state


def tensors(layers: sympy.Expr, *, proj_bias: bool = False, conv_bias: bool = True, gated_norm: bool = True,
            out_proj_bias: bool | None = None, **sizes) -> list[WeightTensor]:
    """``in_proj: (a_m d_m + conv channels + a_m) x h`` (z, xBC, dt), a depthwise ``conv1d``,
    ``dt_bias``, ``A_log``, ``D`` (``a_m`` each), the gated RMSNorm over ``a_m d_m`` and
    ``out_proj: h x a_m d_m`` (its bias ``out_proj_bias``, else ``proj_bias``: Falcon-H1's
    ``projectors_bias``)."""
    width = heads * head_width
    out: list[WeightTensor] = []
    out += linear("mamba/in_proj", width + conv_channels() + heads, hidden_size, layers, proj_bias)
    out.append(WeightTensor("mamba/conv1d", conv_channels(), conv_kernel, layers, parallel="tensor"))
    if conv_bias:
        out.append(WeightTensor("mamba/conv1d.bias", conv_channels(), ONE, layers, parallel="tensor"))
    for name in ("dt_bias", "A_log", "D"):
        out.append(WeightTensor(f"mamba/{name}", heads, ONE, layers, parallel="tensor"))
    if gated_norm:
        out += norm("norm/mamba_norm", width, layers)
    out += linear("mamba/out_proj", hidden_size, width, layers, proj_bias if out_proj_bias is None else out_proj_bias)
    return out


def facts(**options) -> dict[sympy.Symbol, int]:
    """``a_m``, ``d_m``, ``G``, ``N`` and ``K``."""
    return {sym: options[name] for name, sym in OPTIONS}


cache_elements = no_cached_elements  # no tokens: the state is constant in s (state_elements)
cached_tokens = no_cached_tokens


def state_elements(**options) -> tuple[sympy.Expr, sympy.Expr]:
    """(conv, recurrent) elements per layer and sequence on one tensor-parallel rank:
    ``(a_m d_m / t + 2 ceil(G / t) N) K`` and ``a_m d_m N / t`` (transformers 5.24
    ``conv_states [B, conv_dim, K]``, ``recurrent_states [B, a_m, d_m, N]``; with more ranks
    than groups each rank keeps a copy of its group, as vLLM's ``MambaMixer2`` shards them)."""
    conv = heads * head_width / tensor_parallel + 2 * sympy.ceiling(groups / tensor_parallel) * state
    return conv * conv_kernel, heads * head_width * state / tensor_parallel


def projection_bytes() -> sympy.Expr:
    """``in_proj``'s output on one rank: ``beta_a b s (2 a_m d_m + 2 G N + a_m) / t``."""
    projected = heads * head_width + conv_channels() + heads
    return activation_bytes * batch_size * seq_len * projected / tensor_parallel


def inference_peak(eager: bool) -> sympy.Expr:
    """The layer input and output plus ``in_proj``'s output: ``2 beta_a b s h`` + ``projection_bytes``."""
    return 2 * activation_bytes * batch_size * seq_len * hidden_size + projection_bytes()


def training_row(recompute: str, sequence_parallel: bool, eager: bool) -> sympy.Expr:
    """Not modelled (the profiles refuse training of recurrent mixers first)."""
    raise ValueError("training activations of Mamba-2 layers are not modelled")


def tp_split(**options) -> dict[str, int]:
    """The config fields tensor parallelism splits (each must be a multiple of ``t``): the heads
    (the B/C groups are split or copied, ``state_elements``)."""
    return {"num_heads": options["num_heads"]}
