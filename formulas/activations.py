"""Activation bytes: the inference peak of one layer, and what training keeps for backward.

Inference keeps no activations across layers: the peak is the largest set of temporaries
alive at once inside one layer, or the logits. Training keeps every layer's saved tensors
until backward, per Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large
Transformer Models", arXiv:2205.05198), Table 2.
"""

from __future__ import annotations

import sympy

from formulas.symbols import (
    activation_bytes,
    batch_size,
    hidden_size,
    intermediate_size,
    loss_bytes,
    num_attention_heads,
    num_hidden_layers,
    pipeline_parallel,
    seq_len,
    tensor_parallel,
    vocab_size,
)

from formulas.options import LOGITS_MODES, RECOMPUTE_MODES

# Megatron-LM's (and Korthikanti et al.'s) recomputation modes; RECOMPUTE_MODES adds
# torchtitan's per-op policy "op", whose rows are formulas/frameworks/torchtitan.py's.
KORTHIKANTI_MODES = tuple(m for m in RECOMPUTE_MODES if m != "op")


def attention_peak(eager: bool, heads: sympy.Expr = num_attention_heads) -> sympy.Expr:
    """Temporaries of one attention layer during a forward pass.

    ``beta_a b (a s^2 + 2 s h)`` with eager attention: the materialised ``b x a x s x s``
    score matrix, plus two ``b x s x h`` tensors (the layer input and the values), the
    seed article's ``2 b n_head s^2 + 4 b s h`` with its 2-byte dtype made a symbol.
    Fused kernels (FlashAttention, Dao et al. 2022, arXiv:2205.14135; PyTorch SDPA) never
    materialise the scores: ``2 beta_a b s h``. ``heads``: those one GPU holds (``a / t``).
    """
    tokens = batch_size * seq_len
    scores = batch_size * heads * seq_len**2 if eager else 0
    return activation_bytes * (scores + 2 * tokens * hidden_size)


def mlp_peak(gated: bool, width: sympy.Expr = intermediate_size) -> sympy.Expr:
    """Temporaries of one MLP: ``beta_a b s f``, or ``2 beta_a b s f`` when gated.

    A gated MLP (SwiGLU) holds the gate and up projections together before their product;
    the seed's ``3 x hidden`` width is ``intermediate_size`` here, taken from the config
    (``width``: the experts a token uses, for an MoE layer).
    """
    copies = 2 if gated else 1
    return activation_bytes * copies * batch_size * seq_len * width


def logits(positions: str = "all") -> sympy.Expr:
    """The ``b x s x V`` logits (``b x 1 x V`` when only the last position is projected).

    Generation projects only the last position; a prefill that returns every position's
    logits (or training) holds all of them. For a small model with a large vocabulary
    this is often the largest single activation (Qwen3-0.6B: V = 151,936).
    """
    if positions not in LOGITS_MODES:
        raise ValueError(f"unknown logits mode {positions!r}; known: {', '.join(LOGITS_MODES)}")
    rows = seq_len if positions == "all" else 1
    return activation_bytes * batch_size * rows * vocab_size


def korthikanti_layer(recompute: str = "none", sequence_parallel: bool = False, eager: bool = True) -> sympy.Expr:
    """Bytes one layer keeps for backward on one GPU (Korthikanti et al. 2022,
    arXiv:2205.05198, Table 2), in units of ``s b h``:

    ==============================  ===============================
    no recompute, tensor parallel   ``10 + 24/t + 5 a s/(h t)``
    + sequence parallel             ``(34 + 5 a s/h) / t``
    selective recompute             ``10 + 24/t`` (with SP: ``34/t``)
    full recompute                  ``2`` (with SP: ``2/t``)
    ==============================  ===============================

    With ``t = 1`` the first rows are the single-GPU ``34 + 5 a s / h`` and ``34``. The
    ``5 a s / h`` term is the attention core (scores, softmax, dropout mask): fused
    attention (``eager=False``: FlashAttention, SDPA) keeps none of it and recomputes it in
    backward, as selective recomputation does. The paper assumes 16-bit activations, a
    ``4h`` MLP and 1-byte dropout masks; the row scales by ``beta_a / 2`` so that
    ``beta_a = 2`` gives the paper's form exactly.
    """
    if recompute not in KORTHIKANTI_MODES:
        raise ValueError(f"unknown recompute mode {recompute!r}; known: {', '.join(KORTHIKANTI_MODES)}")
    t = tensor_parallel
    core = 5 * num_attention_heads * seq_len / hidden_size if eager and recompute == "none" else 0
    if recompute == "full":
        row = 2 / t if sequence_parallel else sympy.Integer(2)
    elif sequence_parallel:
        row = (34 + core) / t
    else:
        row = 10 + 24 / t + core / t
    return activation_bytes / 2 * seq_len * batch_size * hidden_size * row


def training_logits() -> sympy.Expr:
    """Logits at the start of backward: ``b s V (beta_a + beta_l)``.

    The loss upcasts the logits (transformers' ``ForCausalLMLoss`` calls
    ``logits.float()``), so an fp32 copy (``beta_l`` = 4) lives beside the
    ``beta_a``-byte logits.
    """
    return batch_size * seq_len * vocab_size * (activation_bytes + loss_bytes)


# Megatron-LM's estimator (megatron/training/theoretical_memory_usage.py) counts Korthikanti's
# saved tensors with the MLP width ``f`` as a variable. Per layer, in units of ``s b h`` at
# 16-bit activations (compute_activation_memory's ``18 + 4 f / h`` is their sum with SP):
# tensors every tensor rank keeps whole without sequence parallelism: the two layer-norm
# inputs (4), the QKV input (2), the MLP input (2), two 1-byte dropout masks (2).
MEGATRON_REPLICATED_SBH = 10
# tensors split over tensor ranks in the attention block: Q and K (4), V (2), the output
# projection's input (2); the estimator counts K and V at full width whatever a_kv is.
MEGATRON_ATTENTION_SPLIT_SBH = 8
# compute_activation_memory's embedding rows: 8 bytes of input per token ("Input to
# embedding") and a 1-byte dropout mask per element of its output, p micro-batches in flight.
MEGATRON_EMBEDDING_INPUT_BYTES = 8
MEGATRON_EMBEDDING_DROPOUT_BYTES = 1
# compute_activation_memory, pp == 1 ("Inputs to output layer and CE loss"): 4 s b h (1 + V / h)
MEGATRON_OUTPUT_SBH = 4
MEGATRON_LOSS_BYTES_PER_LOGIT = 4


def megatron_layer(recompute: str = "none", sequence_parallel: bool = False, eager: bool = True) -> sympy.Expr:
    """Bytes one layer keeps for backward on one GPU, as Megatron-LM's estimator counts them
    with the MLP width as a variable (``theoretical_memory_usage.py``,
    ``compute_activation_memory``; Korthikanti et al. 2022, arXiv:2205.05198, Table 2):

    ``s b h (10 + (8 + 4 f / h + 5 a s / h) / t)``, with sequence parallelism
    ``s b h (18 + 4 f / h + 5 a s / h) / t``; the MLP keeps its ``f``-wide first output and
    the second linear's ``f``-wide input (``4 s b f``). Selective recomputation and fused
    attention drop the ``5 a s / h`` core; full recomputation keeps the layer input ``2 s b h``
    (``/ t`` with SP). With ``f = 4 h`` it is :func:`korthikanti_layer` exactly. A gated MLP
    keeps one more ``f``-wide tensor: :func:`megatron_glu_extra`. Scales by ``beta_a / 2``.
    """
    if recompute not in KORTHIKANTI_MODES:
        raise ValueError(f"unknown recompute mode {recompute!r}; known: {', '.join(KORTHIKANTI_MODES)}")
    t = tensor_parallel
    core = 5 * num_attention_heads * seq_len / hidden_size if eager and recompute == "none" else 0
    split = MEGATRON_ATTENTION_SPLIT_SBH + 4 * intermediate_size / hidden_size + core
    if recompute == "full":
        row = 2 / t if sequence_parallel else sympy.Integer(2)
    elif sequence_parallel:
        row = (MEGATRON_REPLICATED_SBH + split) / t
    else:
        row = MEGATRON_REPLICATED_SBH + split / t
    return activation_bytes / 2 * seq_len * batch_size * hidden_size * row


def megatron_glu_extra(recompute: str = "none") -> sympy.Expr:
    """The gate half a gated MLP (SwiGLU) keeps beyond :func:`megatron_layer`: ``2 s b f / t``.

    Megatron-core's ``MLP`` with ``gated_linear_unit`` makes ``linear_fc1`` ``2 f`` wide and
    its ``bias_swiglu_impl`` saves that whole input for backward
    (``megatron/core/transformer/mlp.py``, ``megatron/core/fusions/fused_bias_swiglu.py``),
    where the estimator counts ``f`` (its ``4 f / h`` has no swiglu term). The tensor is split
    over tensor ranks with or without SP; full recomputation keeps none of it.
    """
    if recompute == "full":
        return sympy.Integer(0)
    return activation_bytes / 2 * 2 * seq_len * batch_size * intermediate_size / tensor_parallel


def megatron_embedding(sequence_parallel: bool) -> sympy.Expr:
    """The first stage's embedding activations, ``p`` micro-batches in flight:
    ``p s b (8 + h)`` bytes (``/ t`` with SP), as ``compute_activation_memory`` counts the
    embedding's input and its dropout mask."""
    row = (MEGATRON_EMBEDDING_INPUT_BYTES + MEGATRON_EMBEDDING_DROPOUT_BYTES * hidden_size)
    row *= seq_len * batch_size * pipeline_parallel
    return row / tensor_parallel if sequence_parallel else row


def megatron_output(sequence_parallel: bool) -> sympy.Expr:
    """The output layer's and the loss's saved tensors (one pipeline stage only):
    ``4 s b h + 4 s b V / t``: the final norm's and the output layer's 16-bit inputs and the
    fp32 softmax ``vocab_parallel_cross_entropy`` keeps (``logits.float()`` in
    ``megatron/core/tensor_parallel/cross_entropy.py``); ``compute_activation_memory`` divides
    the whole by ``t`` (sequence parallel)."""
    tokens = seq_len * batch_size
    inputs = MEGATRON_OUTPUT_SBH * tokens * hidden_size
    loss = MEGATRON_LOSS_BYTES_PER_LOGIT * tokens * vocab_size / tensor_parallel
    return inputs / tensor_parallel + loss if sequence_parallel else inputs + loss
