"""What Hugging Face transformers 5.24 and PyTorch 2.13 keep alive: the ``transformers`` profile.

Every formula below is read off the sequence of operations in
``transformers/models/qwen3/modeling_qwen3.py`` and ``models/llama/modeling_llama.py``
(``RMSNorm.forward``, ``apply_rotary_pos_emb``, ``eager_attention_forward``,
``integrations/sdpa_attention.py``, ``MLP.forward``, ``loss/loss_utils.py:ForCausalLMLoss``)
and from what each PyTorch op saves for backward (``tools/autograd/derivatives.yaml``), not
fitted to measurements; ``tests/test_accuracy.py`` compares them with what
``tools/measure/peaks.py`` measured (docs/accuracy.md).

Conventions: ``beta_a`` is the model's dtype (the profile trains in that dtype, as
``model.to(dtype)`` plus ``torch.optim.AdamW`` do); ``upcast`` is true when that dtype is
narrower than float32, so that ``.to(torch.float32)`` / ``.float()`` makes a copy (for an
fp32 model they return the tensor itself and no copy exists). Some tensors are float32
whatever the model dtype (RMSNorm's ``rsqrt``, softmax with ``dtype=torch.float32``,
``log_softmax`` inside the loss, SDPA's logsumexp): :data:`FLOAT32_BYTES`.
Formulas cover dense Llama-style decoders (RMSNorm, rotary embeddings, gated SiLU MLP,
no sliding window); ``qk_norm`` adds Qwen3's RMSNorm on queries and keys.

AMP (``amp=True``): the parameters stay float32 and the forward runs under
``torch.autocast(dtype=bfloat16)`` (accelerate/accelerator.py ``Accelerator.prepare_model``,
utils/modeling.py ``get_mixed_precision_context_manager``; transformers' Trainer with
``bf16=True``). The residual stream then keeps the weights' dtype (the embedding is not an
autocast op, and ``hidden + bf16`` promotes to float32): :func:`residual` is ``beta_w``
where it is ``beta_a`` in pure training. Each ``linear`` casts its input to bf16 itself
(aten/src/ATen/autocast_mode.cpp ``cached_cast`` caches only leaf tensors that require
grad: the weights), so q/k/v and gate/up save one bf16 copy each of the normed input; the
weights' bf16 casts are cached for the forward (``torch.autocast``'s ``cache_enabled=True``)
and saved by every linear for its backward: :func:`autocast_weight_copies`.
"""

from __future__ import annotations

import sympy

from formulas.symbols import (
    activation_bytes,
    batch_size,
    gradient_bytes,
    head_dim,
    hidden_size,
    intermediate_size,
    kv_cache_bytes,
    num_attention_heads,
    num_hidden_layers,
    num_key_value_heads,
    seq_len,
    sliding_window,
    vocab_size,
    weight_bytes,
)

# Widths fixed by the code, whatever the model dtype.
FLOAT32_BYTES = 4  # torch.float32: rsqrt in RMSNorm, softmax(dtype=float32), log_softmax, logsumexp
INT64_BYTES = 8  # torch.long: position_ids, the shifted labels the loss keeps

b, s, h, a, a_kv, d, f, V, L = (batch_size, seq_len, hidden_size, num_attention_heads, num_key_value_heads,
                               head_dim, intermediate_size, vocab_size, num_hidden_layers)
beta = activation_bytes


# --- training: what the forward pass saves for backward ------------------------------------

def rms_norm_saved(rows: sympy.Expr, width: sympy.Expr) -> sympy.Expr:
    """Bytes one RMSNorm saves: ``4 r n + 4 r + beta_a r n``.

    ``hidden.to(float32).pow(2)`` saves its fp32 input (the copy, or the input itself in
    fp32), ``rsqrt`` its ``r x 1`` fp32 result, and ``weight * x_hat.to(dtype)`` the
    normalised ``x_hat`` for the weight's gradient. The norm's output is counted with
    whatever consumes it (a linear layer saves its input; RoPE does not).
    """
    return FLOAT32_BYTES * rows * width + FLOAT32_BYTES * rows + beta * rows * width


def attention_saved(eager: bool, upcast: bool) -> sympy.Expr:
    """Bytes one attention call saves for backward, from the rotated q, k and v on.

    sdpa (``scaled_dot_product_attention``, ``enable_gqa=True`` since the causal mask is
    None): q, k, v, the output and the fp32 logsumexp ``b a s``; the output is laid out
    ``(b, s, a, d)``, so ``transpose(1, 2).contiguous()`` before ``o_proj`` copies nothing
    and ``o_proj``'s saved input is the same storage. eager: ``matmul`` saves q and the
    repeated keys, softmax its fp32 output ``b a s^2``, ``.to(dtype)`` a 16-bit copy of it
    (only with ``upcast``), the second ``matmul`` that copy and the repeated values, and
    ``o_proj`` the contiguous output. RoPE saves only ``cos`` and ``sin`` (see
    :func:`rope_tables`): they do not require grad, so ``q * cos`` keeps no copy of q.
    """
    q = beta * b * s * a * d
    if not eager:
        kv = 2 * beta * b * s * a_kv * d
        logsumexp = FLOAT32_BYTES * b * a * s
        return 2 * q + kv + logsumexp
    scores = b * a * s**2
    probabilities = (FLOAT32_BYTES + (beta if upcast else 0)) * scores
    return 4 * q + probabilities


def partial_rotary_sdpa_copy() -> sympy.Expr:
    """sdpa after a partial rotary embedding (GLM-4.5): ``apply_rotary_pos_emb`` ends in
    ``torch.cat([q_embed, q_pass], dim=-1)``, a query contiguous as ``(b, a, s, d)`` where the
    full rotation's elementwise ops keep ``q_proj``'s ``(b, s, a, d)`` strides; sdpa's output
    follows the query's layout, so ``attn_output.reshape(...).contiguous()`` copies it and
    ``o_proj`` saves the copy beside sdpa's own output: ``beta_a b s a d`` per layer more."""
    return beta * b * s * a * d


def mlp_saved() -> sympy.Expr:
    """Gated SiLU MLP: gate output (SiLU's input), SiLU output, up output, their product
    (``down_proj``'s input): ``4 beta_a b s f``."""
    return 4 * beta * b * s * f


def residual(amp: bool) -> sympy.Expr:
    """Bytes per element of the residual stream: the weights' dtype under AMP (float32),
    the activations' otherwise."""
    return weight_bytes if amp else beta


def rms_norm_residual_saved(rows: sympy.Expr, amp: bool) -> sympy.Expr:
    """An RMSNorm over the residual stream (``h`` wide): :func:`rms_norm_saved`, its
    normalised ``x_hat`` in the residual's dtype (``hidden.to(input_dtype)``)."""
    return FLOAT32_BYTES * rows * h + FLOAT32_BYTES * rows + residual(amp) * rows * h


def layer_saved(eager: bool, upcast: bool, qk_norm: bool, amp: bool = False) -> sympy.Expr:
    """Bytes one decoder layer keeps for backward.

    Two RMSNorms over ``h`` plus their outputs (saved by q/k/v and gate/up projections:
    one tensor they share, or under AMP one bf16 cast per projection, 3 + 2), Qwen3's
    RMSNorms over q and k heads, attention, MLP. Residual adds save nothing.
    """
    bs = b * s
    consumers = 5 if amp else 2
    norms = 2 * rms_norm_residual_saved(bs, amp) + consumers * beta * bs * h
    if qk_norm:
        norms += rms_norm_saved(bs * a, d) + rms_norm_saved(bs * a_kv, d)
    return norms + attention_saved(eager, upcast) + mlp_saved()


def checkpointed_layer_saved(amp: bool = False) -> sympy.Expr:
    """Gradient checkpointing (``torch.utils.checkpoint``, ``use_reentrant=False``, as
    ``activation_checkpointing_enable`` sets it): each layer keeps only its input,
    ``beta_a b s h`` (in the residual's dtype); backward recomputes the layer."""
    return residual(amp) * b * s * h


def checkpoint_shared_inputs(eager: bool, amp: bool = False) -> sympy.Expr:
    """The other arguments every checkpointed layer keeps for its recomputation, shared by
    all layers: the int64 ``position_ids`` (``8 s``) and, with eager attention, the additive
    ``(b, 1, s, s)`` causal mask (``beta_a b s^2``, the embeddings' dtype; sdpa passes no mask)."""
    return INT64_BYTES * s + (residual(amp) * b * s**2 if eager else 0)


def input_ids() -> sympy.Expr:
    """The batch of token ids on the device, int64: ``8 b s`` (the loop passes the same
    tensor as ``labels``)."""
    return INT64_BYTES * b * s


def head_saved(amp: bool = False) -> sympy.Expr:
    """The final RMSNorm and ``lm_head``'s saved input (under AMP its bf16 cast):
    ``rms(bs, h) + beta_a b s h``."""
    return rms_norm_residual_saved(b * s, amp) + beta * b * s * h


def rope_tables(amp: bool = False, width: sympy.Expr = d) -> sympy.Expr:
    """``cos`` and ``sin`` of shape ``(1, s, d)``, built once per forward and saved by every
    layer's RoPE multiply: ``2 beta_a s d`` (``.to(x.dtype)``: the residual's dtype). ``width``:
    the rotary part of a head where it is partial (GLM-4.5, ``apply_rotary_pos_emb`` rotates
    ``q[..., :rotary_dim]`` and concatenates the rest, saving nothing more)."""
    return 2 * residual(amp) * s * width


def loss_saved() -> sympy.Expr:
    """What ``ForCausalLMLoss`` keeps at the start of backward: the fp32 ``log_softmax`` of
    the ``b s x V`` logits: ``4 b s V``.

    ``nll_loss`` also saves the shifted int64 labels, but its backward runs (and releases
    them) before ``log_softmax``'s, where the peak is. ``logits.float()`` (a copy when
    ``upcast``) is saved by nothing and freed when the loss returns; the 16-bit logits go
    with the model output, which the loop drops before backward (as
    ``Trainer.compute_loss`` does).
    """
    return FLOAT32_BYTES * b * s * V


def loss_gradients() -> sympy.Expr:
    """Start of backward: ``nll_loss``'s gradient and ``log_softmax``'s gradient, both fp32
    ``b s x V``, alive together with the saved ``log_softmax`` output: ``8 b s V``."""
    return 2 * FLOAT32_BYTES * b * s * V


def head_gradients() -> sympy.Expr:
    """``lm_head`` backward: the logits' gradient in the model dtype, the hidden gradient,
    and ``lm_head``'s weight gradient (``V h``; with tied embeddings it waits in autograd's
    input buffer until the embedding's gradient arrives): ``beta_a b s (V + h) + beta_g V h``."""
    return beta * b * s * (V + h) + gradient_bytes * V * h


def recompute(eager: bool, upcast: bool, qk_norm: bool, amp: bool = False) -> sympy.Expr:
    """Gradient checkpointing, backward of the last layer: its recomputed saved tensors,
    the gradient flowing in and out (``2 beta_a b s h``) and ``lm_head``'s weight gradient.

    The layer's own backward temporaries are not modelled (none of the measured points
    peaks here; see docs/accuracy.md).
    """
    return layer_saved(eager, upcast, qk_norm, amp) + 2 * residual(amp) * b * s * h + gradient_bytes * V * h


def autocast_weight_copies(linear_parameters: sympy.Expr) -> sympy.Expr:
    """AMP: the bf16 casts of the linear layers' weights, ``beta_a P_linear``.

    ``torch.autocast`` caches the cast of a leaf tensor that requires grad for the rest of
    the autocast region (torch/amp/autocast_mode.py ``autocast(cache_enabled=True)``;
    aten/src/ATen/autocast_mode.cpp ``cached_cast``), and each ``linear`` saves its bf16
    weight for the input's gradient, so every copy lives until its layer's backward: at the
    start of backward all of them (with checkpointing only ``lm_head``'s, the layers' saved
    tensors being dropped). The embedding lookup and the norms' ``weight *`` are not
    autocast ops.
    """
    return beta * linear_parameters


def tied_embedding_gradient_sum() -> sympy.Expr:
    """End of backward with tied embeddings: the embedding's dense ``V x h`` gradient and
    its out-of-place sum with the waiting ``lm_head`` gradient: ``2 beta_g V h``."""
    return 2 * gradient_bytes * V * h


# --- optimizer ------------------------------------------------------------------------

def adamw_temporaries(foreach: bool, largest_tensor: sympy.Expr, parameters: sympy.Expr) -> sympy.Expr:
    """Temporaries of ``torch.optim.AdamW.step`` (``torch/optim/adam.py``).

    Single-tensor (the default on CPU): per parameter, ``exp_avg_sq.sqrt()`` and its
    division by the bias correction are alive together, so two copies of the largest
    tensor: ``2 beta_w max(numel)``. foreach (the default on CUDA): ``_foreach_sqrt`` of
    every ``exp_avg_sq`` at once, a full parameter-size copy: ``beta_w P``.
    """
    return weight_bytes * (parameters if foreach else 2 * largest_tensor)


def step_counters(parameter_tensors: sympy.Expr, on_device: bool) -> sympy.Expr:
    """AdamW's ``state['step']``: one fp32 scalar per parameter tensor, on the CPU unless
    ``capturable`` or ``fused`` (so it costs device memory only when the device is the CPU)."""
    return FLOAT32_BYTES * parameter_tensors if on_device else sympy.Integer(0)


# --- inference prefill: temporaries alive at each moment ------------------------------------

def rms_norm_transient(rows: sympy.Expr, width: sympy.Expr, upcast: bool) -> sympy.Expr:
    """Most bytes one RMSNorm holds at once in a no-grad forward, beyond its input.

    At ``hidden * rsqrt(variance + eps)``: the fp32 input copy (``upcast`` only), the
    product, and the ``r x 1`` fp32 ``variance`` and ``rsqrt``; without ``upcast`` the later
    ``weight * x_hat`` moment (product, output, ``variance``) is larger. Either way
    ``8 r n`` plus ``8 r`` (``upcast``) or ``4 r``.
    """
    return 2 * FLOAT32_BYTES * rows * width + FLOAT32_BYTES * rows * (2 if upcast else 1)


def one_layer_kv_cache() -> sympy.Expr:
    """K and V of one full-attention layer: ``2 b s a_kv d beta_kv``."""
    return 2 * b * s * a_kv * d * kv_cache_bytes


def prefill_base(eager: bool, rope_width: sympy.Expr = d) -> sympy.Expr:
    """Alive through every layer of a prefill: ``inputs_embeds`` (held by the model's
    forward), the last layer's input (held by the loop; the same tensor when L = 1, hence
    ``min(L - 1, 1)``), ``cos``/``sin``, the int64 ``position_ids``; eager also holds the
    additive ``(b, 1, s, s)`` causal mask in the model dtype (sdpa passes ``is_causal``).
    ``rope_width``: the rotary part of a head (:func:`rope_tables`)."""
    layer_input = sympy.Min(L - 1, 1) * beta * b * s * h
    base = beta * b * s * h + layer_input + rope_tables(width=rope_width) + INT64_BYTES * s
    return base + (beta * b * s**2 if eager else 0)


def prefill_moments(eager: bool, upcast: bool, grouped: bool, qk_norm: bool) -> dict[str, sympy.Expr]:
    """Bytes alive above the weights and the full KV cache at each candidate peak of the
    last layer (before adding :func:`prefill_base`); the peak is their maximum.

    ``norm``: the post-attention RMSNorm's transient beside the residual (see
    :func:`rms_norm_transient`). ``q_norm``/``k_norm`` (Qwen3): the normed input, the
    projection and its norm's transient, before the layer's cache update (one layer's K/V
    still absent).
    ``rope_q``: q, k, v plus ``q*cos``, ``rotate_half(q)``, ``rotate_half(q)*sin``;
    ``rope_k``: the same three temporaries for k, beside the rotated q, k and v.
    ``attention``: sdpa holds q, its output and ``o_proj``'s output; eager holds q, the
    repeated K/V (copies only when ``a > a_kv``), the masked scores, their fp32 copy and the
    fp32 softmax. ``mlp``: residual, normed input, SiLU(gate), up, product. After eager
    attention, ``norm`` and ``mlp`` also hold the probabilities the attention returned.
    """
    bs = b * s
    q, kv = b * s * a * d, b * s * a_kv * d
    before_update = -one_layer_kv_cache()
    # eager_attention_forward returns its probabilities (model dtype) with the output; the
    # decoder layer binds them to ``_`` and so holds them until the layer returns.
    returned = beta * b * a * s**2 if eager else 0
    moments = {"norm": beta * bs * h + rms_norm_transient(bs, h, upcast) + returned}
    if qk_norm:
        q_norm = rms_norm_transient(bs * a, d, upcast)
        k_norm = rms_norm_transient(bs * a_kv, d, upcast)
        moments["q_norm"] = beta * (bs * h + q) + q_norm + before_update
        moments["k_norm"] = beta * (bs * h + q + kv) + k_norm + before_update
    moments["rope_q"] = beta * (bs * h + 4 * q + 2 * kv) + before_update
    moments["rope_k"] = beta * (bs * h + 2 * q + 5 * kv) + before_update
    if eager:
        repeated = 2 * beta * q if grouped else 0
        scores = (beta + (FLOAT32_BYTES if upcast else 0) + FLOAT32_BYTES) * b * a * s**2
        moments["attention"] = beta * (bs * h + q) + repeated + scores
    else:
        moments["attention"] = beta * (2 * bs * h + 2 * q)
    moments["mlp"] = beta * (2 * bs * h + 3 * bs * f) + returned
    return moments


def prefill_logits(positions: str) -> sympy.Expr:
    """The last moment: the final norm's output and the logits (``logits_to_keep=0`` keeps
    every position, ``1`` the last, as ``generate`` asks): ``beta_a b (s h + k V)``."""
    kept = s if positions == "all" else 1
    return beta * b * (s * h + kept * V)


# --- sliding-window attention (Mistral) -------------------------------------------------------

BOOL_BYTES = 1  # torch.bool: the mask masking_utils.sdpa_mask builds


def sliding_window_masked() -> sympy.Expr:
    """True once the sequence reaches the window: ``masking_utils._ignore_causal_mask_sdpa``
    skips the mask (sdpa runs ``is_causal``) only while ``kv_length < sliding_window``."""
    return sympy.GreaterThan(s, sliding_window)


def sliding_sdpa_saved() -> sympy.Expr:
    """sdpa past the window, per layer, beyond :func:`attention_saved`: with a mask
    ``integrations/sdpa_attention.py use_gqa_in_sdpa`` is false, so ``repeat_kv`` copies k
    and v to every query head and sdpa saves the copies (``2 beta_a b s (a - a_kv) d`` more),
    and the CPU flash kernel saves the bool mask converted to the query's dtype
    (``beta_a b s^2``). Eager attention adds its mask without saving it."""
    extra = 2 * beta * b * s * (a - a_kv) * d + beta * b * s**2
    return sympy.Piecewise((extra, sliding_window_masked()), (0, True))


def sliding_checkpoint_mask() -> sympy.Expr:
    """Checkpointing past the window (sdpa): the bool mask, an argument every checkpointed
    layer keeps for its recomputation. sdpa_mask builds it ``(1, 1, s, s)`` by broadcasting
    and ``expand``s it to the batch (a view): ``s^2``."""
    return sympy.Piecewise((BOOL_BYTES * s**2, sliding_window_masked()), (0, True))
