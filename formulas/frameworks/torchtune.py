"""What torchtune's fine-tuning recipes keep alive on the GPU: the ``torchtune`` profile.

Read off torchtune's code (pytorch/torchtune at 1814feb17, Nov 2024; the modules have not
changed in these respects since): the decoder layer
(torchtune/modules/transformer.py TransformerSelfAttentionLayer.forward), its pieces
(modules/rms_norm.py RMSNorm.forward, modules/attention.py MultiHeadAttention.forward,
modules/feed_forward.py FeedForward.forward, models/llama3_1/_position_embeddings.py
Llama3ScaledRoPE.forward), the output and loss (TransformerDecoder.forward and
chunked_output, modules/loss/ce_chunked_output_loss.py CEWithChunkedOutputLoss), and the
recipes' loop (recipes/full_finetune_single_device.py FullFinetuneRecipeSingleDevice
._loss_step and train: ``del logits`` before backward, ``zero_grad(set_to_none=True)``).
What each op saves for backward is PyTorch's (tools/autograd/derivatives.yaml).

Symbols: ``beta_a`` the model dtype (torchtune's ``dtype: bf16`` trains weights, gradients
and optimizer state in it, no fp32 master), ``b s`` tokens, ``V`` vocabulary. fp32 pieces
are :data:`FLOAT32_BYTES` whatever the dtype.
"""

from __future__ import annotations

import sympy

from fractions import Fraction

from formulas.frameworks.transformers import FLOAT32_BYTES, INT64_BYTES, rms_norm_saved
from formulas.weights import StoredFormat
from formulas.symbols import (
    activation_bytes,
    batch_size,
    head_dim,
    hidden_size,
    intermediate_size,
    num_attention_heads,
    num_hidden_layers,
    seq_len,
    vocab_size,
)

b, s, h, a, d, f, V, L = (batch_size, seq_len, hidden_size, num_attention_heads, head_dim, intermediate_size,
                          vocab_size, num_hidden_layers)
beta = activation_bytes

# CEWithChunkedOutputLoss.__init__(num_output_chunks=8): the recipes' default chunk count.
DEFAULT_LOSS_CHUNKS = 8
# torchtune/training/_activation_offloading.py OffloadActivations.__init__: with streams the
# forward keeps the tensors of the last ``max_fwd_stash_size`` pack calls on the GPU until the
# first backward node that unpacks one has run (pack_tensor's ``fwd_stash``); tensors under
# ``min_offload_size`` bytes are not offloaded.
OFFLOAD_FORWARD_STASH = 5
OFFLOAD_MIN_BYTES = 1024
# unpack_tensor_with_streams: a tensor brought back stays in ``bwd_tensor_stash`` until the
# hook of the next node that unpacks: the layer being recomputed and the one before it.
OFFLOAD_BACKWARD_INPUTS = 2


# --- what one decoder layer saves for backward --------------------------------------------

def layer_saved(compiled: bool) -> sympy.Expr:
    """Bytes one decoder layer saves for backward (parameters excluded).

    Eager: two RMSNorms (each ``4 r h + 4 r + beta r h``: the fp32 ``x.float()`` saved by
    ``pow``, the fp32 ``rsqrt``, ``x_normed`` saved by ``* scale``) and their outputs
    (saved by the q/k/v and w1/w3 projections, ``beta b s h`` each); attention: q, the keys
    and values after GQA expansion (``k.unsqueeze(2).expand(...).flatten(1, 2)`` copies
    them to every query head), SDPA's (or flex attention's) output, also ``output_proj``'s
    input, and its fp32 logsumexp ``b a s``; RoPE saves only slices of its cache buffer;
    SwiGLU: w1's output, SiLU's output, w3's output and their product, ``4 beta b s f``.

    Compiled (``compile: True``: training.compile_model compiles every layer with
    inductor): the min-cut partitioner (torch/_functorch/partitioners.py
    min_cut_rematerialization_partition) recomputes the norms' fp32 copies, ``x_normed``
    and the SwiGLU product in backward and saves four ``b s h`` tensors (the layer input,
    both norm outputs, the attention output before ``output_proj``), the two fp32 ``rsqrt``
    rows, q/k/v/out and the logsumexp, and three ``b s f`` tensors. Measured, not assumed:
    tools/measure/compile_saved.py (tests/fixtures/compile_saved_cpu.json, torch 2.13,
    ``aot_eager_decomp_partition``: inductor's decompositions and partitioner); inductor's
    code generation on CUDA and other torch versions may save differently.
    """
    bs = b * s
    attention = 4 * beta * bs * a * d + FLOAT32_BYTES * b * a * s
    if compiled:
        return 4 * beta * bs * h + 2 * FLOAT32_BYTES * bs + attention + 3 * beta * bs * f
    norms = 2 * (rms_norm_saved(bs, h) + beta * bs * h)
    return norms + attention + 4 * beta * bs * f


def layer_saved_tensors(compiled: bool) -> list[tuple[sympy.Expr, sympy.Expr]]:
    """:func:`layer_saved` as the tensors it is made of, ``(count, bytes each)``, for the
    caching allocator (formulas/allocator.py); the bytes sum to :func:`layer_saved`."""
    bs = b * s
    attention = [(4, beta * bs * a * d), (1, FLOAT32_BYTES * b * a * s)]
    if compiled:
        return [(4, beta * bs * h), (2, FLOAT32_BYTES * bs), *attention, (3, beta * bs * f)]
    norm = [(1, FLOAT32_BYTES * bs * h), (1, FLOAT32_BYTES * bs), (1, beta * bs * h), (1, beta * bs * h)]
    return [*norm, *norm, *attention, (4, beta * bs * f)]


def checkpointed_layer_saved() -> sympy.Expr:
    """``enable_activation_checkpointing``: training.set_activation_checkpointing wraps every
    layer in ``checkpoint_wrapper`` (non-reentrant ``torch.utils.checkpoint``), which keeps
    only the layer's input: ``beta b s h``."""
    return beta * b * s * h


def offload_recompute_inputs() -> sympy.Expr:
    """``enable_activation_offloading`` (it requires checkpointing): every layer input goes to
    pinned CPU memory, none stays on the GPU at the start of backward (the final norm's five
    saved-tensor packs come after the last layer's input and push it out of the
    ``min(5, .)``-pack ``fwd_stash``: see :func:`head_saved`). In backward a checkpointed
    layer's recompute unpacks its input, brought back to the GPU and held in
    ``bwd_tensor_stash`` beside the previous layer's until the next unpacking node's hook:
    ``2 beta b s h`` beside :func:`recompute_backward`."""
    return OFFLOAD_BACKWARD_INPUTS * checkpointed_layer_saved()


def offloaded_host_bytes(lora: bool = False) -> sympy.Expr:
    """The pinned CPU copies: one per pack call (pack_tensor copies every saved tensor, even
    one saved twice): ``L`` layer inputs and the final norm's ``x.float()`` (saved by ``pow``
    and by ``*``), ``rsqrt`` (saved by itself and by ``*``) and, unless its scale is frozen
    (:func:`head_saved`), ``x_normed``."""
    bs = b * s
    normed = 0 if lora else beta * bs * h
    return L * checkpointed_layer_saved() + 2 * FLOAT32_BYTES * bs * h + 2 * FLOAT32_BYTES * bs + normed


def recompute_backward() -> sympy.Expr:
    """Checkpointing, backward of one recomputed layer, beside its saved tensors
    (:func:`layer_saved`): the gradient coming in, ``beta b s h``, and SwiGLU's backward at its
    product (``w2(silu(w1 x) * w3 x)``): ``w2``'s backward makes the product's gradient
    (``b s f``), then ``MulBackward`` both factors' (``2 b s f``) before the product and factors
    saved for it are released, ``2 beta b s f`` net. Measured on CPU with a layer-bound decoder
    (tools/measure/torchtune_peaks.py, ``wide`` rows)."""
    return beta * b * s * h + 2 * beta * b * s * f


def recompute_backward_tensors() -> tuple[tuple[sympy.Expr, sympy.Expr], ...]:
    """:func:`recompute_backward` as its tensors, ``(count, bytes each)``."""
    return ((1, beta * b * s * h), (2, beta * b * s * f))


# --- the output projection and the loss ---------------------------------------------------

def head_saved(lora: bool = False, output_adapter: bool = False) -> sympy.Expr:
    """The final RMSNorm's saved tensors and the output projection's saved input. With
    activation offloading both stay on the GPU until backward reaches them: the output
    projection runs under NoOpManager (get_act_offloading_ctx_manager), and the norm's
    tensors are the last pack calls, kept in OffloadActivations' ``fwd_stash`` (measured
    order of saves: tools/measure/torchtune_peaks.py ``pack_order``).

    LoRA: autograd saves a product's operand only for the other operand's gradient
    (tools/autograd/derivatives.yaml ``mul``, ``mm``), so the frozen norm scale leaves
    ``x_normed`` unsaved (the norm keeps its fp32 ``x`` and ``rsqrt``, ``4 b s h + 4 b s``)
    and the frozen output weight ``h``, unless an adapter on the output saves it."""
    norm = rms_norm_saved(b * s, h) - (beta * b * s * h if lora else 0)
    return norm + (beta * b * s * h if output_adapter or not lora else 0)


def input_ids() -> sympy.Expr:
    """int64 tokens and labels, and the shifted labels (``torch.hstack`` in _loss_step):
    ``3 x 8 b s``."""
    return 3 * INT64_BYTES * b * s


def loss_saved(chunks: int | None, compiled: bool) -> sympy.Expr:
    """What the loss keeps for backward.

    Unchunked: TransformerDecoder.forward returns ``self.output(h).float()`` and
    ``cross_entropy`` saves its fp32 ``log_softmax``, ``4 b s V`` (the fp32 logits are
    freed by ``del logits``; the recipe does not keep compile_loss's return value, so this
    loss is never compiled). Chunked, eager: every chunk's fp32 log_softmax, ``4 b s V``
    in all. Chunked and compiled (compile_loss compiles ``compute_cross_entropy``): each
    chunk's graph saves its bf16 input and two fp32 row statistics (max, logsumexp):
    ``beta b s V + 8 b s`` (tools/measure/compile_saved.py measures the same partition).
    """
    if chunks is not None and compiled:
        return beta * b * s * V + 2 * FLOAT32_BYTES * b * s
    return FLOAT32_BYTES * b * s * V


def loss_forward(chunks: int | None, compiled: bool) -> sympy.Expr:
    """The loss's bytes at the end of its forward (the layers' and head's saved tensors apart).

    Unchunked: the fp32 logits and their log_softmax, ``8 b s V`` (``.float()`` before it
    holds ``(beta + 4) b s V``, less). Chunked, eager: every bf16 chunk (the list lives until
    the loss returns), the fp32 log_softmax of the chunks before the last, and the last
    chunk's fp32 copy and log_softmax: ``beta b s V + 4 b s V + 4 b s V / n``. Chunked and
    compiled: the bf16 chunks and their row statistics (:func:`loss_saved`)."""
    if chunks is None:
        return 2 * FLOAT32_BYTES * b * s * V
    if compiled:
        return loss_saved(chunks, compiled)
    return beta * b * s * V + FLOAT32_BYTES * b * s * V + FLOAT32_BYTES * b * s * V / chunks


def loss_gradients(chunks: int | None, compiled: bool) -> sympy.Expr:
    """Start of backward, beside :func:`loss_saved`: ``nll_loss``'s gradient and
    ``log_softmax``'s gradient (fp32, ``b s V`` each, or one chunk's ``b s V / n``).

    Compiled, one chunk's bf16 gradient only: the decomposed ``nll_loss_backward``
    (torch/_decomp/decompositions.py ``_nll_loss_backward``: ``zeros_like`` + ``scatter``)
    is a scatter onto a constant tensor, which inductor lowers to a pointwise kernel
    (torch/_inductor/config.py ``optimize_scatter_upon_const_tensor``, on by default;
    fx_passes/joint_graph.py), fused with the softmax gradient and the cast to bf16.
    """
    if chunks is None:
        return 2 * FLOAT32_BYTES * b * s * V
    chunk = b * s * V / chunks
    return beta * chunk if compiled else 2 * FLOAT32_BYTES * chunk


def chunked_head_backward(chunks: int) -> sympy.Expr:
    """The chunked output projection's backward, beside the layers' and head's saved tensors.

    ``chunked_output`` runs one ``output`` matmul per chunk, made in the model's forward, so
    before every loss node: autograd's ready queue runs the later-made nodes first
    (torch/csrc/autograd/engine.cpp ReadyQueue, by sequence number), so every chunk's loss
    backward runs (freeing its saved logits) before the first matmul's, leaving each chunk's
    logits gradient in ``beta`` (``beta b s V / n``). The output weight then gets one ``V x h``
    gradient per chunk, summed in the input buffer of its AccumulateGrad before ``.grad`` or
    the optimizer-in-backward hook sees them (torch/csrc/autograd/input_buffer.cpp
    InputBuffer::accumulate, out of place for the transposed matmul gradient): the waiting sum,
    the new gradient and their sum, ``3 beta V h``. The largest moment is the second sum: the
    ``n - 2`` chunks not yet reached keep their logits' gradients, and the two done their ``h``
    gradients (``beta b s h / n`` each) until the chunks' are concatenated. Measured on CPU
    (tools/measure/torchtune_peaks.py, chunked with the optimizer in backward: within 8 KiB).
    """
    waiting = beta * b * s * V * sympy.Rational(chunks - 2, chunks)
    return waiting + 3 * beta * V * h + 2 * beta * b * s * h / chunks


def chunked_head_backward_tensors(chunks: int) -> tuple[tuple[sympy.Expr, sympy.Expr], ...]:
    """:func:`chunked_head_backward` as its tensors, ``(count, bytes each)``."""
    return ((3, beta * V * h), (chunks - 2, beta * b * s * V / chunks), (2, beta * b * s * h / chunks))


# --- QLoRA's base: torchao's NF4Tensor ------------------------------------------------------

# torchao/dtypes/nf4tensor.py to_nf4 / NF4Tensor.from_tensor (torchtune modules/low_precision
# FrozenNF4Linear and LoRALinear(quantize_base=True) call to_nf4 on every block linear): 4-bit
# codes, one int8 scaler per block of 64, one quantization_factor per 256 scalers, a
# scaler_mean and the 16-value NF4 table, those three in the input tensor's dtype.
NF4_BLOCK_SIZE = 64
NF4_SCALER_BLOCK_SIZE = 256
NF4_TABLE_VALUES = 16


def torchao_nf4(weight_width: Fraction) -> StoredFormat:
    """torchao's NF4 layout of a ``rows x cols`` weight of ``weight_width`` bytes per element:
    ``n / 2`` code bytes, ``n / 64`` int8 scalers, ``n / (64 x 256)`` factors and
    ``1 + 16`` values per tensor in ``weight_width`` (measured: a bf16 3072 x 8192 weight is
    12,979,234 bytes in torchao 0.7.0; bitsandbytes' double quantization keeps fp32 there)."""
    return StoredFormat("nf4", Fraction(1, 2), Fraction(1), NF4_BLOCK_SIZE,
                        per_matrix=(1 + NF4_TABLE_VALUES) * weight_width,
                        second_level_groups=NF4_SCALER_BLOCK_SIZE, second_level_bytes=weight_width)


# --- torchtune <= 0.2.1: the loop kept the sliced fp32 logits ---------------------------------

# The release whose recipes' loop is modelled by the ``sliced_*`` functions below: every
# recipe's ``train`` up to v0.2.1 (2024-07-25; pytorch/torchtune 30c75d4, May 2024) sliced the
# fp32 logits and kept them through backward; #1235 (8a98fbaa3, 2024-07-28, in v0.3.0) added
# ``del logits`` and #1390 (4fba6cd44, in v0.3.0) shifted the labels instead.
RELEASE_SLICED_LOGITS = "0.2"


def sliced_logits() -> sympy.Expr:
    """One fp32 tensor over the sliced logits, ``4 b (s - 1) V``: torchtune <= 0.2.1's loop
    (recipes/full_finetune_single_device.py ``train`` at 30c75d4) runs
    ``logits = logits[..., :-1, :].contiguous()`` on the model's fp32 ``output(h).float()``,
    then ``logits.transpose(1, 2)`` and ``nn.CrossEntropyLoss`` over ``(b, V, s - 1)``."""
    return FLOAT32_BYTES * b * (s - 1) * V


def sliced_loss_saved() -> sympy.Expr:
    """What the loss saves: ``log_softmax``'s fp32 output (one :func:`sliced_logits`)."""
    return sliced_logits()


def sliced_loss_forward() -> sympy.Expr:
    """The loss's bytes at the end of ``log_softmax``'s forward, ``3 x 4 b (s - 1) V``: the
    sliced logits (the loop's ``logits`` still names them), the contiguous copy ``log_softmax``
    makes of its transposed input (aten/src/ATen/native/cuda/SoftMax.cu ``host_softmax``:
    ``input_.contiguous()``; SoftMax.cpp on CPU) and its output. (The moment before, the full
    fp32 logits and their sliced copy, ``4 b s V + 4 b (s - 1) V``, is smaller.)"""
    return 3 * sliced_logits()


def sliced_loss_gradients() -> sympy.Expr:
    """Start of backward, beside :func:`sliced_loss_saved`: the sliced logits the loop still
    holds (no ``del logits`` before ``loss.backward()``), ``nll_loss2d``'s gradient
    (``zeros_like``) and ``log_softmax``'s, ``3 x 4 b (s - 1) V``."""
    return 3 * sliced_logits()


def sliced_input_ids() -> sympy.Expr:
    """int64 tokens and labels, and ``labels[..., 1:].contiguous()``: ``8 (2 b s + b (s - 1))``."""
    return INT64_BYTES * (2 * b * s + b * (s - 1))


# --- optimizer --------------------------------------------------------------------------

def foreach_temporaries(numel: sympy.Expr, weight_width: sympy.Expr) -> sympy.Expr:
    """torch.optim.AdamW's default on CUDA (foreach, torch/optim/adamw.py _multi_tensor_adamw):
    ``_foreach_sqrt(exp_avg_sqs)`` is one intermediate the size of the parameters it steps,
    in their dtype (pytorch/pytorch#97712: 'a minimum budget of 1 intermediate')."""
    return numel * weight_width
