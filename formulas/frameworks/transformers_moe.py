"""What a transformers 5.24 mixture-of-experts MLP saves for backward (Qwen3-MoE, Mixtral).

Read off ``transformers/models/qwen3_moe/modeling_qwen3_moe.py`` (``Qwen3MoeTopKRouter.forward``,
``Qwen3MoeSparseMoeBlock.forward``), ``models/mixtral/modeling_mixtral.py``
(``MixtralTopKRouter.forward``) and ``integrations/moe.py`` ``grouped_mm_experts_forward``,
the experts' default implementation (``torch.nn.functional.grouped_mm``, which has a CPU kernel
in torch 2.13), with what each op saves (torch ``tools/autograd/derivatives.yaml``). Not fitted:
``tests/test_transformers_moe.py`` compares the profile with tools/measure/moe_peaks.py.

``T = b s`` tokens, each routed to ``k_e`` of ``E`` experts: the experts see ``T k_e`` rows
whatever the routing, so nothing here depends on which experts the router picks. The
post-attention RMSNorm's output (saved by the router's ``F.linear``) is counted by
:func:`formulas.frameworks.transformers.layer_saved` as for a dense MLP.
"""

from __future__ import annotations

import sympy

from formulas.frameworks.transformers import FLOAT32_BYTES, INT64_BYTES, mlp_saved
from formulas.parameters import WeightTensor
from formulas.symbols import (
    activation_bytes as beta,
    batch_size,
    hidden_size,
    moe_intermediate_size,
    num_experts,
    num_experts_per_tok,
    seq_len,
    weight_bytes,
)

INT32_BYTES = 4  # torch.int32: grouped_mm's offsets (torch.cumsum(..., dtype=torch.int32))
# model_type -> whether its router hands the experts fp32 routing weights: MixtralTopKRouter.forward
# keeps softmax's fp32, Qwen3MoeTopKRouter.forward casts them to the logits' dtype
ROUTING_WEIGHTS_FP32 = {"qwen3_moe": False, "mixtral": True}

T, h, E, k, f_e = batch_size * seq_len, hidden_size, num_experts, num_experts_per_tok, moe_intermediate_size


def router_saved(renormalized: bool) -> sympy.Expr:
    """The router after its linear: ``softmax(logits, dtype=float)`` saves its fp32 output
    ``T x E``; ``topk`` its int64 indices ``T x k_e``; the in-place renormalisation
    ``router_top_value /= router_top_value.sum(-1, keepdim=True)`` (Mixtral always, Qwen3 with
    ``norm_topk_prob``) the fp32 divisor ``T`` and the original values ``T x k_e`` (``div_``
    saves self's value before it overwrites it)."""
    kept = FLOAT32_BYTES * T * E + INT64_BYTES * T * k
    return kept + (FLOAT32_BYTES * (T + T * k) if renormalized else 0)


def experts_saved(fp32_weights: bool, width: sympy.Expr = beta) -> sympy.Expr:
    """``grouped_mm_experts_forward``: the int64 sort permutation ``perm`` (saved by the
    routing weights' gather), ``perm // k_e`` (by the tokens' gather) and ``inv_perm`` (by the
    un-permuting gather), ``3 x 8 T k_e``; the int32 ``offsets`` ``E`` (both grouped_mm); the
    gathered tokens ``T k_e x h`` (up grouped_mm's input); the fused gate/up output ``2 f_e``
    wide (SiLU's and the product's input), SiLU's output and the product (down grouped_mm's
    input), ``4 beta_a T k_e f_e`` as a dense gated MLP of ``T k_e`` rows; the down output
    ``T k_e x h`` and the gathered routing weights ``T k_e`` (the weighting multiply saves both).
    The routing weights are fp32 when the router keeps them so (``fp32_weights``: Mixtral does
    not cast; Qwen3 casts to the logits' dtype). ``width``: the experts' bytes per element, the
    model dtype, or under AMP the fp32 weights' (grouped_mm is no autocast op, and ``_grouped_mm``
    casts its input to the weight's dtype)."""
    rows = T * k
    indices = 3 * INT64_BYTES * rows + INT32_BYTES * E
    weights = (FLOAT32_BYTES if fp32_weights else beta) * rows
    return indices + 2 * width * rows * h + 4 * width * rows * f_e + weights


def moe_saved(renormalized: bool, fp32_weights: bool) -> sympy.Expr:
    """Bytes one MoE MLP saves beyond its input: :func:`router_saved` + :func:`experts_saved`."""
    return router_saved(renormalized) + experts_saved(fp32_weights)


def moe_in_place_of_dense(model_type: str, options: dict, amp: bool) -> sympy.Expr:
    """What a MoE layer of ``model_type`` (its layer ``options``: ``norm_topk_prob``) saves minus
    what :func:`formulas.frameworks.transformers.layer_saved` counts for a dense MLP
    (``mlp_saved``). Under AMP the experts are float32 (``weight_bytes``) and only the router
    casts the normed input to bf16: one autocast copy fewer than gate and up."""
    renormalized = model_type == "mixtral" or options.get("norm_topk_prob", True)
    fp32_weights = ROUTING_WEIGHTS_FP32[model_type]
    width = weight_bytes if amp else beta
    fewer_casts = beta * T * h if amp else 0
    return router_saved(renormalized) + experts_saved(fp32_weights, width) - mlp_saved() - fewer_casts


def autocast_linear(tensor: WeightTensor) -> bool:
    """Whether AMP casts ``tensor``'s weight to bf16: ``F.linear`` weights (the router's too),
    not the fused experts, which grouped_mm reads as they are."""
    return not tensor.name.startswith(EXPERT_PREFIX) and (tensor.quantizable or tensor.name.startswith("router/"))


EXPERT_PREFIX = "moe_experts/"  # formulas/layers/moe.py: the routed experts' per-expert tensors


def held_tensors(tensors: list[WeightTensor]) -> list[WeightTensor]:
    """The parameters as transformers holds them: the routed experts of a layer fused into
    ``gate_up_proj`` ``E x 2 f_e x h`` and ``down_proj`` ``E x h x f_e``, two tensors per MoE
    layer (``Qwen3MoeExperts.__init__``, ``MixtralExperts.__init__``), the sizes and the tensor
    count AdamW's single-tensor step and its step counters see."""
    experts = [t for t in tensors if t.name.startswith(EXPERT_PREFIX)]
    if not experts:
        return tensors
    layers = experts[0].count / E
    fused = [WeightTensor("moe_experts/gate_up_proj", E * 2 * f_e, h, layers),
             WeightTensor("moe_experts/down_proj", E * h, f_e, layers)]
    return [t for t in tensors if not t.name.startswith(EXPERT_PREFIX)] + fused
