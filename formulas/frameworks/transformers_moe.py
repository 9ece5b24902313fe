"""What a transformers 5.24 mixture-of-experts MLP saves for backward (Qwen3-MoE, Mixtral,
Qwen2-MoE's gated shared expert, GLM-4.5's sigmoid router and shared experts).

Read off ``transformers/models/qwen3_moe/modeling_qwen3_moe.py`` (``Qwen3MoeTopKRouter.forward``,
``Qwen3MoeSparseMoeBlock.forward``), ``models/mixtral/modeling_mixtral.py``
(``MixtralTopKRouter.forward``), ``models/qwen2_moe/modeling_qwen2_moe.py``
(``Qwen2MoeSparseMoeBlock.forward``: a shared expert behind a sigmoid gate),
``models/glm4_moe/modeling_glm4_moe.py`` (``Glm4MoeTopkRouter.forward``, ``Glm4MoeMoE.forward``)
and ``integrations/moe.py`` ``grouped_mm_experts_forward``, the experts' default implementation
(``torch.nn.functional.grouped_mm``, which has a CPU kernel in torch 2.13), with what each op
saves (torch ``tools/autograd/derivatives.yaml``). Not fitted:
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
    intermediate_size,
    moe_intermediate_size,
    num_experts,
    num_experts_per_tok,
    num_shared_experts,
    seq_len,
    shared_expert_intermediate_size,
    weight_bytes,
)

INT32_BYTES = 4  # torch.int32: grouped_mm's offsets (torch.cumsum(..., dtype=torch.int32))
# model_type -> whether its router hands the experts fp32 routing weights: MixtralTopKRouter.forward
# keeps softmax's fp32, Qwen3MoeTopKRouter.forward casts them to the logits' dtype
# (GLM-4.5's sigmoid router keeps fp32 scores unless autocast ran its linear in bf16: see sigmoid_router_saved)
ROUTING_WEIGHTS_FP32 = {"qwen3_moe": False, "mixtral": True, "qwen2_moe": False, "glm4_moe": True}
# model_type -> its router's norm_topk_prob default (Qwen3MoeConfig, Glm4MoeConfig: True; Qwen2MoeConfig:
# False; Mixtral always renormalises)
RENORMALIZED_DEFAULT = {"qwen3_moe": True, "mixtral": True, "qwen2_moe": False, "glm4_moe": True}
SIGMOID_ROUTERS = frozenset({"glm4_moe"})  # Glm4MoeTopkRouter: sigmoid scores, grouped top-k, fp32 linear

T, h, E, k, f_e = batch_size * seq_len, hidden_size, num_experts, num_experts_per_tok, moe_intermediate_size
f = intermediate_size


def router_saved(renormalized: bool) -> sympy.Expr:
    """The router after its linear: ``softmax(logits, dtype=float)`` saves its fp32 output
    ``T x E``; ``topk`` its int64 indices ``T x k_e``; the in-place renormalisation
    ``router_top_value /= router_top_value.sum(-1, keepdim=True)`` (Mixtral always, Qwen3 with
    ``norm_topk_prob``) the fp32 divisor ``T`` and the original values ``T x k_e`` (``div_``
    saves self's value before it overwrites it)."""
    kept = FLOAT32_BYTES * T * E + INT64_BYTES * T * k
    return kept + (FLOAT32_BYTES * (T + T * k) if renormalized else 0)


def sigmoid_router_saved(renormalized: bool, amp: bool, upcast: bool) -> sympy.Expr:
    """``Glm4MoeTopkRouter.forward``: ``F.linear(x.type(float32), weight.type(float32))`` saves
    both fp32 casts (``4 T h + 4 E h``, copies only when the model is narrower than fp32 and
    not under AMP, where autocast casts them to bf16 instead); ``sigmoid`` its ``T x E``
    output; the chosen indices ``T x k_e`` int64 (kept by ``scores.gather``); the
    renormalisation ``/= sum + 1e-20`` the divisor ``T`` and the original values ``T x k_e``.
    The group top-k, the correction-bias sum and the ``masked_fill`` feed only ``topk``
    indices, so their saved tensors die with their unreachable nodes. The scores are fp32,
    or bf16 when autocast ran the linear in bf16."""
    width = beta if amp else FLOAT32_BYTES
    kept = width * T * E + INT64_BYTES * T * k + (width * (T + T * k) if renormalized else 0)
    return kept + (FLOAT32_BYTES * (T * h + E * h) if upcast and not amp else 0)


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


def shared_expert_width(options: dict) -> sympy.Expr | None:
    """The shared expert's width: Qwen2-MoE's ``f_sh`` (``shared_expert_intermediate_size``),
    DeepSeek-style ``E_sh f_e`` (``Glm4MoeMLP(intermediate_size=moe_intermediate_size *
    n_shared_experts)``), None without one."""
    if options.get("shared_expert_intermediate_size") is not None:
        return shared_expert_intermediate_size
    if options.get("num_shared_experts"):
        return num_shared_experts * f_e
    return None


def shared_expert_saved(width: sympy.Expr, gated: bool, amp: bool) -> sympy.Expr:
    """The shared expert, a dense gated SiLU MLP over all ``T`` tokens of width ``width``
    (``Qwen2MoeMLP.forward``): gate output, SiLU output, up output and their product,
    ``4 beta_a T width`` (formulas/frameworks/transformers.py ``mlp_saved``); its input is the
    normed input the router's linear saves too. Behind Qwen2-MoE's gate
    (``F.sigmoid(self.shared_expert_gate(x)) * shared_expert_output``) the multiply saves
    the ``T x 1`` sigmoid output (also sigmoid's own saved result) and the shared MLP's
    ``T x h`` output. The sum with the routed output saves nothing. Under AMP each
    ``F.linear`` casts the fp32 normed input to bf16 itself (gate_proj, up_proj and the gate:
    one ``beta_a T h`` copy each); their outputs are bf16."""
    saved = 4 * beta * T * width
    if gated:
        saved += beta * T * h + beta * T
    casts = (3 if gated else 2) * beta * T * h if amp else 0
    return saved + casts


def moe_in_place_of_dense(model_type: str, options: dict, amp: bool, upcast: bool = True) -> sympy.Expr:
    """What a MoE layer of ``model_type`` (its layer ``options``: ``norm_topk_prob``, a shared
    expert) saves minus what :func:`formulas.frameworks.transformers.layer_saved` counts for a
    dense MLP (``mlp_saved``). Under AMP the experts are float32 (``weight_bytes``) and only the
    router casts the normed input to bf16: one autocast copy fewer than gate and up. ``upcast``:
    the model is narrower than float32 (GLM's router then copies to fp32)."""
    renormalized = model_type == "mixtral" or options.get("norm_topk_prob", RENORMALIZED_DEFAULT[model_type])
    fp32_weights = ROUTING_WEIGHTS_FP32[model_type]
    if model_type in SIGMOID_ROUTERS:
        router, fp32_weights = sigmoid_router_saved(renormalized, amp, upcast), not amp
    else:
        router = router_saved(renormalized)
    width = weight_bytes if amp else beta
    fewer_casts = beta * T * h if amp else 0
    routed = router + experts_saved(fp32_weights, width) - mlp_saved() - fewer_casts
    shared = shared_expert_width(options)
    if shared is None:
        return routed
    return routed + shared_expert_saved(shared, bool(options.get("shared_expert_gate")), amp)


def frozen_in_place_of_dense(model_type: str, options: dict, upcast: bool) -> sympy.Expr:
    """PEFT LoRA on the attention only (``target_modules`` q/k/v/o; the fused experts are
    3-D parameters, no ``nn.Linear``): what a frozen MoE layer saves, its input requiring grad,
    minus the frozen dense MLP's ``3 beta_a T f`` (formulas/frameworks/transformers_peft.py
    ``base_layer_saved``). With frozen weights an op keeps only what the input's gradient needs:
    the router's linear saves no input (GLM's still its fp32 weight copy ``4 E h``), the up
    ``grouped_mm`` not the gathered tokens and the down one not the product (``T k_e (h +
    f_e)`` fewer than :func:`experts_saved`), the shared expert its gate, SiLU and up outputs
    (``3 beta_a T width``) and, behind Qwen2-MoE's gate, the sigmoid and the shared output."""
    renormalized = model_type == "mixtral" or options.get("norm_topk_prob", RENORMALIZED_DEFAULT[model_type])
    fp32_weights = ROUTING_WEIGHTS_FP32[model_type]
    router = router_saved(renormalized)
    if model_type in SIGMOID_ROUTERS:
        router = sigmoid_router_saved(renormalized, False, upcast) - (FLOAT32_BYTES * T * h if upcast else 0)
    experts = experts_saved(fp32_weights) - beta * T * k * (h + f_e)
    saved = router + experts - 3 * beta * T * f
    shared = shared_expert_width(options)
    if shared is None:
        return saved
    return saved + 3 * beta * T * shared + (beta * T * h + beta * T if options.get("shared_expert_gate") else 0)


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
