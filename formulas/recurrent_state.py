"""Constant-size recurrent state: what Gated DeltaNet and Mamba layers cache per sequence.

A recurrent mixer keeps no tokens. Per layer and sequence it holds a **convolution state**
over the full kernel width (``[conv_dim, K]``, not ``K - 1``: transformers 5.24
cache_utils.py ``LinearAttentionLayer``, measured in tests/fixtures/families_ground_truth.json)
in the model's compute dtype (``beta_a``), and a **recurrent (SSM) state** kept in float32
even in a bf16 model (``beta_st``: transformers 5.24 modeling_qwen3_next.py
``torch_chunk_gated_delta_rule`` computes and returns its final state in float32, and the
Mamba mixers' scans do the same; measured for mamba, mamba2, jamba, bamba, nemotron_h,
granitemoehybrid, falcon_h1 and qwen3_next in the fixture). Both are constant in ``s`` and
linear in ``b``.
"""

from __future__ import annotations

import sympy

from formulas.symbols import activation_bytes, batch_size, pipeline_parallel, state_bytes

# transformers 5.24 keeps every recurrent state in float32 (see the module docstring;
# tests/fixtures/families_ground_truth.json ``recurrent_states[0]`` dtype).
RECURRENT_STATE_DTYPE = "float32"


def no_cached_elements(mla_layout: str | None = None, **options) -> sympy.Expr:
    """A recurrent mixer's ``cache_elements`` (formulas/layers/ protocol): no tokens, the state
    is constant in ``s`` (the kind's ``state_elements``)."""
    return sympy.Integer(0)


def no_cached_tokens(paged: bool = False) -> sympy.Expr:
    """A recurrent mixer's ``cached_tokens``: none."""
    return sympy.Integer(0)


def state_bytes_per_sequence(rows: list[tuple[sympy.Expr, sympy.Expr, sympy.Expr]],
                             conv_bytes: sympy.Expr = activation_bytes,
                             recurrent_bytes: sympy.Expr = state_bytes) -> sympy.Expr:
    """Bytes of one sequence's state on one GPU: ``sum over kinds of layers x (conv beta_a +
    recurrent beta_st)``; ``rows``: (layers of the kind, conv elements per layer, recurrent
    elements per layer) on one tensor-parallel rank."""
    return sympy.Add(*(layers * (conv * conv_bytes + recurrent * recurrent_bytes) for layers, conv, recurrent in rows))


def state_per_gpu(rows: list[tuple[sympy.Expr, sympy.Expr, sympy.Expr]]) -> sympy.Expr:
    """State bytes of ``b`` sequences on one GPU of the first pipeline stage (``L / p`` layers)."""
    return batch_size * state_bytes_per_sequence(rows) / pipeline_parallel
