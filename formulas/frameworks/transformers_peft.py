"""What a PEFT LoRA model in transformers keeps for backward: the ``transformers`` profile's LoRA.

``peft.get_peft_model(model, LoraConfig(r, target_modules=...))`` wraps each target
``nn.Linear`` in ``peft/tuners/lora/layer.py`` ``Linear``, whose forward is
``result = base_layer(x); x = self._cast_input_dtype(x, lora_A.weight.dtype);
result = result + lora_B(lora_A(dropout(x))) * scaling; result.to(result_dtype)``.
``lora_A`` is ``r x in`` and ``lora_B`` ``out x r`` (``LoraLayer.update_layer``), kept in
float32 by default: ``get_peft_model(..., autocast_adapter_dtype=True)`` upcasts bf16/fp16
adapters (peft/tuners/tuners_utils.py ``BaseTuner._cast_adapter_dtype``): ``beta_ad``
(:data:`formulas.symbols.adapter_bytes`). ``lora_dropout=0`` (PEFT's default) makes
``dropout`` an ``nn.Identity``.

The base is frozen, so an op saves a tensor only for a gradient that is still needed
(PyTorch's autograd saves an input only when the other operand requires grad, e.g.
``mm``'s ``self`` only for ``mat2``'s gradient: tools/autograd/derivatives.yaml): a frozen
linear saves nothing of its input, RMSNorm's ``weight * x_hat`` does not save ``x_hat``,
and ``lm_head`` keeps no weight gradient. The frozen embedding's output does not require
grad, so the first layer's input RMSNorm saves nothing.

Symbols: ``beta_a`` the base's dtype, ``beta_ad`` the adapters', ``r`` the LoRA rank.
"""

from __future__ import annotations

import sympy

from formulas.frameworks.transformers import attention_saved, rms_norm_saved
from formulas.symbols import (
    activation_bytes,
    adapter_bytes,
    batch_size,
    hidden_size,
    intermediate_size,
    lora_rank,
    num_attention_heads,
    num_hidden_layers,
    num_key_value_heads,
    head_dim,
    seq_len,
    vocab_size,
)

b, s, h, f, L, V = batch_size, seq_len, hidden_size, intermediate_size, num_hidden_layers, vocab_size
a, a_kv, d = num_attention_heads, num_key_value_heads, head_dim
beta, r = activation_bytes, lora_rank


def frozen_norm_saved(rows: sympy.Expr, width: sympy.Expr) -> sympy.Expr:
    """An RMSNorm with a frozen weight: the fp32 input (``pow``) and ``rsqrt``, not ``x_hat``:
    ``4 r n + 4 r``."""
    return rms_norm_saved(rows, width) - beta * rows * width


def base_layer_saved(eager: bool, upcast: bool, qk_norm: bool) -> sympy.Expr:
    """What one decoder layer of the frozen base saves, its adapters apart: two frozen
    RMSNorms (:func:`frozen_norm_saved`), Qwen3's q/k norms, attention as in full
    training (q, k, v and sdpa's output still need their gradients; eager's contiguous
    output is ``o_proj``'s input, saved only by its adapter), and the gated MLP's gate
    output, SiLU output and up output (``down_proj``'s input is saved only by its
    adapter): ``3 beta_a b s f``."""
    bs = b * s
    norms = 2 * frozen_norm_saved(bs, h)
    if qk_norm:
        norms += frozen_norm_saved(bs * a, d) + frozen_norm_saved(bs * a_kv, d)
    attention = attention_saved(eager, upcast) - (beta * bs * a * d if eager else 0)
    return norms + attention + 3 * beta * bs * f


def first_layer_unsaved(qk_norm: bool, adapted: frozenset[str]) -> sympy.Expr:
    """What the first layer does not save, subtracted once from ``L`` layers: its input
    RMSNorm (its input, the frozen embedding's output, needs no gradient) and, with Qwen3's
    q/k norms, the norm of a projection without an adapter (its output needs none either)."""
    unsaved = frozen_norm_saved(b * s, h)
    if qk_norm and "q_proj" not in adapted:
        unsaved += frozen_norm_saved(b * s * a, d)
    if qk_norm and "k_proj" not in adapted:
        unsaved += frozen_norm_saved(b * s * a_kv, d)
    return unsaved


def adapter_saved(inputs: dict[str, sympy.Expr], cast: bool, unshared: frozenset[str]) -> sympy.Expr:
    """What the adapters of one layer save: per target, ``lora_B``'s input (``lora_A``'s
    output, ``beta_ad b s r``) and ``lora_A``'s input.

    ``inputs`` maps each target to its input width (``h`` for q/k/v and gate/up, ``a d``
    for o_proj, ``f`` for down_proj). With ``cast`` (adapters in another dtype than the
    base) each target saves its own ``x.to(beta_ad)`` copy; otherwise ``x`` itself,
    counted once per distinct input and only for the targets in ``unshared`` (inputs no
    other op saves: the norm outputs and the MLP product; ``o_proj``'s input is the
    attention output, already saved).
    """
    bs = b * s
    total = sympy.Add(*(adapter_bytes * bs * r for _ in inputs))
    if cast:
        return total + sympy.Add(*(adapter_bytes * bs * width for width in inputs.values()))
    distinct = {inputs[name] for name in inputs if name in unshared}
    return total + sympy.Add(*(beta * bs * width for width in distinct))


def head_saved() -> sympy.Expr:
    """The final frozen RMSNorm; a frozen ``lm_head`` saves nothing of its input."""
    return frozen_norm_saved(b * s, h)


def head_gradients() -> sympy.Expr:
    """``lm_head`` backward with a frozen weight: the logits' and the hidden gradient,
    ``beta_a b s (V + h)``."""
    return beta * b * s * (V + h)


def recompute_backward() -> sympy.Expr:
    """Checkpointing: the recomputed layer's gradients in and out, ``2 beta_a b s h``."""
    return 2 * beta * b * s * h



# --- QLoRA: the bitsandbytes Linear4bit base -----------------------------------------------

# bitsandbytes 0.50 functional.py quantize_4bit: ``code = get_4bit_type("nf4")``, the 16 NF4
# levels in fp32, one tensor per quantized weight; with double quantization
# (``compress_statistics``, QLoRA's bnb_4bit_use_double_quant) the fp32 ``offset``
# (``absmax.mean()``) and, from quantize_blockwise, ``code=code.to(A.device, copy=True)``: a
# copy of the 256-value fp32 dynamic map per weight. The 8-bit absmax (one per 64 weights)
# and the fp32 second-level absmax (one per 256 blocks) are formulas.weights' ``nf4``.
NF4_CODE_VALUES = 16
DYNAMIC_CODE_VALUES = 256
OFFSET_VALUES = 1
CODE_BYTES = 4  # float32


def bnb_4bit_codes(quantized_tensors: sympy.Expr) -> sympy.Expr:
    """The per-weight constants of bitsandbytes NF4 with double quantization, beyond the
    absmax: ``4 (16 + 256 + 1)`` bytes per quantized matrix (see the constants above)."""
    return CODE_BYTES * (NF4_CODE_VALUES + DYNAMIC_CODE_VALUES + OFFSET_VALUES) * quantized_tensors
