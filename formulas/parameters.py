"""Parameter tensors of a decoder-only transformer, by component.

A model is a list of :class:`WeightTensor` rows keyed like nanoGPT's sizing notebook
(``'attention/q_proj'``, ``'mlp/down_proj'``); the parameter count is their sum. Each
function below returns the tensors of one component for one layout, with shapes in the
declared symbols, so a count stays a formula until a model's facts are substituted.

Layouts follow the module definitions in transformers 5.x (``modeling_llama.py``,
``modeling_qwen3.py``, ``modeling_deepseek_v3.py``, ``modeling_gpt2.py``,
``modeling_falcon.py``, ``modeling_gemma2.py``, ``modeling_phi3.py``,
``modeling_mixtral.py``, ``modeling_qwen3_moe.py``); tests check the counts against what
transformers instantiates on the ``meta`` device.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy

from formulas.symbols import (
    head_dim,
    hidden_size,
    intermediate_size,
    kv_lora_rank,
    max_position_embeddings,
    moe_intermediate_size,
    num_attention_heads,
    num_experts,
    num_experts_per_tok,
    num_hidden_layers,
    num_key_value_heads,
    num_moe_layers,
    num_shared_experts,
    q_lora_rank,
    qk_nope_head_dim,
    qk_rope_head_dim,
    v_head_dim,
    vocab_size,
)

ONE = sympy.Integer(1)


@dataclass(frozen=True)
class WeightTensor:
    """``count`` identical tensors of ``rows x cols`` elements.

    ``quantizable`` marks the linear layers inside the transformer blocks, the tensors
    that weight-only quantization (int8, int4, fp8) replaces; embeddings, norms, biases,
    routers and the output head keep the model's dtype.
    """

    name: str
    rows: sympy.Expr
    cols: sympy.Expr
    count: sympy.Expr
    quantizable: bool = False

    @property
    def component(self) -> str:
        return self.name.split("/", 1)[0]

    @property
    def numel(self) -> sympy.Expr:
        return self.rows * self.cols * self.count


def _linear(name, out_features, in_features, count, bias=False, quantizable=True):
    tensors = [WeightTensor(name, out_features, in_features, count, quantizable)]
    if bias:
        tensors.append(WeightTensor(name + ".bias", out_features, ONE, count))
    return tensors


def _norm(name, width, count, bias=False):
    """RMSNorm holds a weight vector; LayerNorm a weight and a bias."""
    tensors = [WeightTensor(name, width, ONE, count)]
    if bias:
        tensors.append(WeightTensor(name + ".bias", width, ONE, count))
    return tensors


def embedding_tensors(learned_positions: bool = False) -> list[WeightTensor]:
    """Token embedding ``V x h``; GPT-2's learned position table ``P x h`` when present."""
    tensors = [WeightTensor("embedding/tokens", vocab_size, hidden_size, ONE)]
    if learned_positions:
        tensors.append(WeightTensor("embedding/positions", max_position_embeddings, hidden_size, ONE))
    return tensors


def lm_head_tensors(tied: bool) -> list[WeightTensor]:
    """Output projection ``V x h``; none when tied to the token embedding."""
    return [] if tied else [WeightTensor("lm_head", vocab_size, hidden_size, ONE)]


def attention_tensors(
    *,
    qkv_bias: bool = False,
    out_bias: bool = False,
    qk_norm: bool = False,
    fused_qkv: bool = False,
    layers: sympy.Expr = num_hidden_layers,
) -> list[WeightTensor]:
    """Multi-head / grouped-query / multi-query attention of ``layers`` layers.

    ``W_q: a d x h``, ``W_k, W_v: a_kv d x h``, ``W_o: h x a d`` (Vaswani et al. 2017;
    GQA, Ainslie et al. 2023; MQA when ``a_kv = 1``). Qwen3 adds RMSNorms of width ``d`` on
    queries and keys; Phi-3 and Falcon fuse Q, K and V into one matrix.
    """
    q_rows = num_attention_heads * head_dim
    kv_rows = num_key_value_heads * head_dim
    tensors: list[WeightTensor] = []
    if fused_qkv:
        tensors += _linear("attention/qkv_proj", q_rows + 2 * kv_rows, hidden_size, layers, qkv_bias)
    else:
        tensors += _linear("attention/q_proj", q_rows, hidden_size, layers, qkv_bias)
        tensors += _linear("attention/k_proj", kv_rows, hidden_size, layers, qkv_bias)
        tensors += _linear("attention/v_proj", kv_rows, hidden_size, layers, qkv_bias)
    tensors += _linear("attention/o_proj", hidden_size, q_rows, layers, out_bias)
    if qk_norm:
        tensors += _norm("norm/q_norm", head_dim, layers)
        tensors += _norm("norm/k_norm", head_dim, layers)
    return tensors


def mla_attention_tensors(*, compressed_q: bool, bias: bool = False) -> list[WeightTensor]:
    """Multi-head latent attention (DeepSeek-V2, arXiv:2405.04434, section 2.1.2).

    Queries: ``h -> r_q`` (RMSNorm) ``-> a (d_n + d_r)``, or ``h -> a (d_n + d_r)`` when
    ``q_lora_rank`` is null. Keys/values: ``h -> r_kv + d_r`` (the cached latent and the
    shared rotary key), RMSNorm over ``r_kv``, ``r_kv -> a (d_n + d_v)``; output
    ``a d_v -> h``.
    """
    layers = num_hidden_layers
    q_head = qk_nope_head_dim + qk_rope_head_dim
    tensors: list[WeightTensor] = []
    if compressed_q:
        tensors += _linear("attention/q_a_proj", q_lora_rank, hidden_size, layers, bias)
        tensors += _norm("norm/q_a_layernorm", q_lora_rank, layers)
        tensors += _linear("attention/q_b_proj", num_attention_heads * q_head, q_lora_rank, layers)
    else:
        tensors += _linear("attention/q_proj", num_attention_heads * q_head, hidden_size, layers)
    tensors += _linear("attention/kv_a_proj_with_mqa", kv_lora_rank + qk_rope_head_dim, hidden_size, layers, bias)
    tensors += _norm("norm/kv_a_layernorm", kv_lora_rank, layers)
    tensors += _linear(
        "attention/kv_b_proj", num_attention_heads * (qk_nope_head_dim + v_head_dim), kv_lora_rank, layers
    )
    tensors += _linear("attention/o_proj", hidden_size, num_attention_heads * v_head_dim, layers, bias)
    return tensors


def mlp_tensors(
    *,
    gated: bool,
    bias: bool = False,
    fused_gate_up: bool = False,
    layers: sympy.Expr = num_hidden_layers,
    width: sympy.Expr = intermediate_size,
    prefix: str = "mlp",
) -> list[WeightTensor]:
    """A dense MLP: classic ``h -> f -> h`` or gated ``(gate, up): h -> f``, ``down: f -> h``.

    Gated MLPs (SwiGLU, GeGLU; Shazeer 2020) hold three matrices; Phi-3 fuses gate and up.
    """
    tensors: list[WeightTensor] = []
    if not gated:
        tensors += _linear(f"{prefix}/up_proj", width, hidden_size, layers, bias)
    elif fused_gate_up:
        tensors += _linear(f"{prefix}/gate_up_proj", 2 * width, hidden_size, layers, bias)
    else:
        tensors += _linear(f"{prefix}/gate_proj", width, hidden_size, layers, bias)
        tensors += _linear(f"{prefix}/up_proj", width, hidden_size, layers, bias)
    tensors += _linear(f"{prefix}/down_proj", hidden_size, width, layers, bias)
    return tensors


def moe_tensors(*, shared_experts: bool) -> list[WeightTensor]:
    """Mixture-of-experts MLPs of the ``L_e`` MoE layers.

    ``E`` gated experts of width ``f_e`` and a router ``E x h`` per layer (Mixtral,
    arXiv:2401.04088; Qwen3-MoE); DeepSeekMoE (arXiv:2401.06066) adds shared experts,
    which transformers builds as one gated MLP of width ``E_sh f_e``. DeepSeek-V3's router
    correction bias is a buffer, not a parameter: see :func:`persistent_buffer_tensors`.
    """
    experts = num_moe_layers * num_experts
    tensors = mlp_tensors(gated=True, layers=experts, width=moe_intermediate_size, prefix="moe_experts")
    tensors += _linear("router/gate", num_experts, hidden_size, num_moe_layers, quantizable=False)
    if shared_experts:
        tensors += mlp_tensors(
            gated=True,
            layers=num_moe_layers,
            width=num_shared_experts * moe_intermediate_size,
            prefix="moe_shared_experts",
        )
    return tensors


def persistent_buffer_tensors(router_correction_bias: bool) -> list[WeightTensor]:
    """State that is saved with the weights but is not a parameter.

    DeepSeek-V3's ``e_score_correction_bias`` (``E`` values per MoE layer; arXiv:2412.19437
    section 2.1.2, auxiliary-loss-free balancing) is a persistent buffer in transformers.
    """
    if not router_correction_bias:
        return []
    return [WeightTensor("router/e_score_correction_bias", num_experts, ONE, num_moe_layers)]


def norm_tensors(per_layer: int, *, bias: bool = False, final: bool = True) -> list[WeightTensor]:
    """``per_layer`` norms of width ``h`` in every layer, plus the final norm."""
    tensors: list[WeightTensor] = []
    if per_layer:
        tensors += _norm("norm/layers", hidden_size, per_layer * num_hidden_layers, bias)
    if final:
        tensors += _norm("norm/final", hidden_size, ONE, bias)
    return tensors


def parameter_count(tensors: list[WeightTensor]) -> sympy.Expr:
    """Total elements of ``tensors``."""
    return sympy.Add(*(t.numel for t in tensors))


def parameters_by_component(tensors: list[WeightTensor]) -> dict[str, sympy.Expr]:
    """Elements per component (``embedding``, ``attention``, ``mlp``, ...), in order."""
    out: dict[str, sympy.Expr] = {}
    for t in tensors:
        out[t.component] = out.get(t.component, sympy.Integer(0)) + t.numel
    return out


def active_parameter_count(tensors: list[WeightTensor]) -> sympy.Expr:
    """Parameters one token passes through: ``k_e`` of the ``E`` routed experts per layer."""
    return sympy.Add(
        *(
            t.rows * t.cols * t.count.subs(num_experts, num_experts_per_tok)
            if t.component == "moe_experts"
            else t.numel
            for t in tensors
        )
    )
