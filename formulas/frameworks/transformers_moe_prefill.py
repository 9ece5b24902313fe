"""What a transformers 5.24 MoE MLP holds at once in a no-grad prefill (the ``transformers``
profile's MoE inference).

Read off ``integrations/moe.py`` ``grouped_mm_experts_forward`` (the experts' default
implementation) and the sparse blocks' ``forward`` (``Qwen3MoeSparseMoeBlock``,
``MixtralSparseMoeBlock``, ``Qwen2MoeSparseMoeBlock``, ``Glm4MoeMoE``), following which tensors
are bound to a name (alive until the function returns) and which are temporaries; measured with
tools/measure/moe_peaks.py ``--inference``. ``T = b s`` tokens, ``R = T k_e`` expert rows.

Alive through the experts' call: the block's router outputs (the logits bound to ``_``, the
routing weights, the indices) and, from the sort on, ``expert_ids_g`` and ``perm`` (int64 ``R``
each), the gathered routing weights, ``histc``'s float input (``4 R``), ``tokens_per_expert``
(fp32 ``E``), the int32 ``offsets`` and the gathered tokens ``selected_hidden_states_g``
(``beta_a R h``). The candidate peaks (their maximum is the MLP's):

- ``moe_gate``: ``_default_apply_gate``'s product beside the fused gate/up output and SiLU's
  output (``4 beta_a R f_e``);
- ``moe_unpermute``: ``weighted_out[inv_perm]`` beside ``weighted_out``, the down output
  (still bound to ``proj_out``) and ``inv_perm``;
- ``moe_sum``: the per-token sum beside the un-permuted rows (and its ``.to(dtype)`` copy when
  fp32 routing weights promoted the rows to fp32); it beats ``moe_unpermute`` only for top-1.

The returned sum is ``beta_a T h``; a shared expert adds its own moments (see
:func:`shared_moments`).
"""

from __future__ import annotations

import sympy

from formulas.frameworks.transformers import BOOL_BYTES, FLOAT32_BYTES, INT64_BYTES
from formulas.frameworks.transformers_moe import INT32_BYTES, ROUTING_WEIGHTS_FP32, SIGMOID_ROUTERS
from formulas.symbols import (
    activation_bytes as beta,
    batch_size,
    hidden_size,
    moe_intermediate_size,
    num_experts,
    num_experts_per_tok,
    seq_len,
)

# model_type of the models whose forward builds a sliding-window mask whatever the layers: Qwen2MoeModel.forward
# calls create_sliding_window_causal_mask always, and Qwen2MoeConfig.__post_init__ sets sliding_window = 0
# without use_sliding_window, so the mask is built (no layer reads it)
ZERO_WINDOW_MASK = frozenset({"qwen2_moe"})

T, h, E, k, f_e = batch_size * seq_len, hidden_size, num_experts, num_experts_per_tok, moe_intermediate_size
R = T * k


def _widths(model_type: str) -> tuple[sympy.Expr, sympy.Expr]:
    """(router logits' bytes, routing weights' bytes): GLM's linear runs in fp32; Mixtral's and
    GLM's weights stay fp32 (``ROUTING_WEIGHTS_FP32``), Qwen's are cast to the logits' dtype."""
    logits = FLOAT32_BYTES if model_type in SIGMOID_ROUTERS else beta
    weights = FLOAT32_BYTES if ROUTING_WEIGHTS_FP32[model_type] else beta
    return logits, weights


def router_outputs(model_type: str) -> sympy.Expr:
    """The block's three router outputs, bound until it returns: logits ``T x E``, weights and
    int64 indices ``T x k_e``."""
    logits, weights = _widths(model_type)
    return logits * T * E + weights * R + INT64_BYTES * R


def routed_moments(model_type: str, weighted_bytes: sympy.Expr) -> dict[str, sympy.Expr]:
    """The experts' candidate peaks (module docstring), router outputs included, beyond the
    block's input. ``weighted_bytes``: the dtype of ``proj_out * sample_weights_g`` (fp32 when
    the routing weights are, by type promotion; else ``beta_a``)."""
    _, weights = _widths(model_type)
    sorted_ = 2 * INT64_BYTES * R + weights * R + FLOAT32_BYTES * R + FLOAT32_BYTES * E + INT32_BYTES * E
    held = router_outputs(model_type) + sorted_ + beta * R * h
    unpermuted = held + INT64_BYTES * R + beta * R * h + weighted_bytes * R * h
    cast = beta * T * h if weighted_bytes != beta else 0
    return {
        "moe_gate": held + 4 * beta * R * f_e,
        "moe_unpermute": unpermuted + weighted_bytes * R * h,
        "moe_sum": unpermuted + weighted_bytes * T * h + cast,
    }


def shared_mlp_peak(width: sympy.Expr) -> sympy.Expr:
    """A dense gated MLP of width ``width`` over ``T`` tokens: SiLU's output, up and their
    product, or later the product and the down output: ``beta_a T max(3 w, w + h)``."""
    return beta * T * sympy.Max(3 * width, width + h)


def moe_moments(model_type: str, shared_width: sympy.Expr | None) -> dict[str, sympy.Expr]:
    """Every candidate peak of one MoE MLP beyond its input. Qwen2-MoE runs its shared expert
    first, so its ``T x h`` output is alive through the routed experts; GLM-4.5 runs it after,
    beside the routed output and the router outputs."""
    _, weights = _widths(model_type)
    moments = routed_moments(model_type, weights)
    if shared_width is None:
        return moments
    if model_type in SIGMOID_ROUTERS:  # Glm4MoeMoE.forward: experts, then shared_experts(residuals)
        moments["moe_shared"] = router_outputs(model_type) + beta * T * h + shared_mlp_peak(shared_width)
        return moments
    moments = {name: expr + beta * T * h for name, expr in moments.items()}  # Qwen2MoeSparseMoeBlock.forward
    moments["moe_shared"] = shared_mlp_peak(shared_width)
    return moments


def zero_window_mask(eager: bool) -> sympy.Expr:
    """Qwen2-MoE's unused sliding-window mask (:data:`ZERO_WINDOW_MASK`), alive through the
    layers of a prefill: sdpa's bool ``(1, 1, s, s)`` expanded to the batch (a view), ``s^2``;
    eager's additive mask in the model dtype, ``beta_a b s^2`` (masking_utils.py
    ``sdpa_mask``, ``eager_mask``). A training step frees it with the forward."""
    return beta * batch_size * seq_len**2 if eager else BOOL_BYTES * seq_len**2
