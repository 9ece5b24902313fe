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
    seq_len,
    tensor_parallel,
    vocab_size,
)

from formulas.options import LOGITS_MODES, RECOMPUTE_MODES


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
    if recompute not in RECOMPUTE_MODES:
        raise ValueError(f"unknown recompute mode {recompute!r}; known: {', '.join(RECOMPUTE_MODES)}")
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
