"""MLP kind ``moe``: a mixture of experts (Mixtral, arXiv:2401.04088; Qwen3-MoE;
DeepSeekMoE, arXiv:2401.06066).

Options: ``num_experts`` (``E`` routed experts of width ``moe_intermediate_size``),
``num_experts_per_tok`` (``k_e``), ``num_shared_experts`` (``E_sh``, always active) and
``router_correction_bias`` (DeepSeek-V3's ``e_score_correction_bias`` buffer);
``expert_bias`` and ``router_bias`` (gpt-oss: biases on every expert's projections and on
the router, transformers' modeling_gpt_oss.py ``GptOssExperts``, ``GptOssTopKRouter``);
``shared_expert_intermediate_size`` (``f_sh``: one shared expert of its own width) and
``shared_expert_gate`` (its sigmoid gate ``1 x h``; Qwen2-MoE, transformers'
modeling_qwen2_moe.py ``Qwen2MoeSparseMoeBlock``).
"""

from __future__ import annotations

import sympy

from formulas import activations
from formulas.layers.dense import mlp_tensors
from formulas.parameters import ONE, WeightTensor, linear
from formulas.symbols import (
    hidden_size,
    moe_intermediate_size as expert_width,
    num_experts as experts_symbol,
    num_experts_per_tok as active_symbol,
    num_moe_layers,
    num_shared_experts as shared_symbol,
    shared_expert_intermediate_size as shared_width,
    tensor_parallel,
)

KIND = "moe"
LAYERS = num_moe_layers
LORA_COMPONENTS = ("moe_shared_experts",)  # routed experts are fused 3-D parameters, not nn.Linear


def tensors(layers: sympy.Expr, *, num_shared_experts: int = 0, expert_bias: bool = False,
            router_bias: bool = False, shared_expert_intermediate_size: int | None = None,
            shared_expert_gate: bool = False, **options) -> list[WeightTensor]:
    """Mixture-of-experts MLPs of ``layers`` layers.

    ``E`` gated experts of width ``f_e`` and a router ``E x h`` per layer (Mixtral,
    arXiv:2401.04088; Qwen3-MoE); DeepSeekMoE (arXiv:2401.06066) adds shared experts,
    which transformers builds as one gated MLP of width ``E_sh f_e``; Qwen2-MoE one shared
    expert of width ``f_sh`` behind a gate ``1 x h``. A token passes through ``k_e`` of
    the ``E`` routed experts; expert parallelism splits them.
    """
    out = [
        WeightTensor(t.name, t.rows, t.cols, t.count, t.quantizable, "expert", layers * active_symbol)
        for t in mlp_tensors(layers * experts_symbol, gated=True, bias=expert_bias, width=expert_width,
                             prefix="moe_experts")
    ]
    out += linear("router/gate", experts_symbol, hidden_size, layers, router_bias, quantizable=False,
                  parallel="replicated")
    if num_shared_experts:
        out += mlp_tensors(layers, gated=True, width=shared_symbol * expert_width, prefix="moe_shared_experts")
    if shared_expert_intermediate_size is not None:
        out += mlp_tensors(layers, gated=True, width=shared_width, prefix="moe_shared_experts")
    if shared_expert_gate:
        out += linear("router/shared_expert_gate", ONE, hidden_size, layers, quantizable=False, parallel="replicated")
    return out


def buffers(layers: sympy.Expr, *, router_correction_bias: bool = False, **options) -> list[WeightTensor]:
    """State that is saved with the weights but is not a parameter.

    DeepSeek-V3's ``e_score_correction_bias`` (``E`` values per MoE layer; arXiv:2412.19437
    section 2.1.2, auxiliary-loss-free balancing) is a persistent buffer in transformers.
    """
    if not router_correction_bias:
        return []
    return [WeightTensor("router/e_score_correction_bias", experts_symbol, ONE, layers)]


def facts(*, num_experts: int, num_experts_per_tok: int, moe_intermediate_size: int,
          num_shared_experts: int = 0, shared_expert_intermediate_size: int | None = None,
          **options) -> dict[sympy.Symbol, int]:
    """``E``, ``k_e``, ``f_e`` and, when there are shared experts, ``E_sh`` or ``f_sh``."""
    values = {experts_symbol: num_experts, active_symbol: num_experts_per_tok, expert_width: moe_intermediate_size}
    if num_shared_experts:
        values[shared_symbol] = num_shared_experts
    if shared_expert_intermediate_size is not None:
        values[shared_width] = shared_expert_intermediate_size
    return values


def inference_peak(*, num_shared_experts: int = 0, shared_expert_intermediate_size: int | None = None,
                   **options) -> sympy.Expr:
    """The routed and shared experts one token uses, as one gated MLP of width
    ``k_e f_e (+ E_sh f_e or f_sh)`` (formulas/activations.py ``mlp_peak``), over ``t`` ranks."""
    width = active_symbol * expert_width
    if num_shared_experts:
        width += shared_symbol * expert_width
    if shared_expert_intermediate_size is not None:
        width += shared_width
    return activations.mlp_peak(True, width=width) / tensor_parallel
