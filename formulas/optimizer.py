"""Training state per parameter: master weights, gradients and optimizer state.

Each is ``P x bytes``, where ``P`` counts the trained parameters. Optimizer state depends
on the parameters only, not on batch size (the seed article says otherwise; see
docs/formulas.md). Which precision each tensor is kept in decides the bytes per
parameter; the common conventions are named in :data:`PRECISION_CONVENTIONS`.
"""

from __future__ import annotations

from fractions import Fraction

import sympy

from formulas.symbols import gradient_bytes, master_weight_bytes, optimizer_bytes

# optimizer -> bytes of state per trained parameter (fp32 states unless named otherwise)
OPTIMIZER_STATE_BYTES: dict[str, Fraction] = {
    # Adam/AdamW (Kingma & Ba 2015; Loshchilov & Hutter 2019): fp32 exp_avg and exp_avg_sq.
    "adamw": Fraction(8),
    "adam": Fraction(8),
    # bitsandbytes 8-bit Adam (Dettmers et al. 2021, arXiv:2110.02861): two uint8 states,
    # block-wise quantized with one fp32 absmax per block of 2048 values.
    "adam8bit": 2 * (Fraction(1) + Fraction(4, 2048)),
    # bitsandbytes AdamW8bit as its code allocates (bitsandbytes/optim/optimizer.py
    # Optimizer8bit.init_state, block_wise): two uint8 states and one fp32 absmax per block of
    # BNB_STATE_BLOCK values each; tensors under BNB_MIN_8BIT_SIZE elements keep fp32 states
    # (see bnb_8bit_state). Paged variants (PagedAdamW, PagedAdamW8bit) allocate the same
    # state in CUDA unified memory (bitsandbytes/functional.py get_paged), outside PyTorch's
    # caching allocator: see PAGED_OPTIMIZERS.
    "adamw8bit": 2 * (Fraction(1) + Fraction(4, 256)),
    "paged-adamw8bit": 2 * (Fraction(1) + Fraction(4, 256)),
    "paged-adamw": Fraction(8),
    # Lion (Chen et al. 2023, arXiv:2302.06675, Algorithm 2): one fp32 momentum.
    "lion": Fraction(4),
    # SGD with momentum: one fp32 momentum buffer; plain SGD keeps nothing.
    "sgd-momentum": Fraction(4),
    "sgd": Fraction(0),
}

# bitsandbytes Optimizer8bit.init_state: ``blocksize = 256`` for block-wise 8-bit states, and
# ``p.numel() < min_8bit_size`` (4096 by default) keeps 32-bit states.
BNB_STATE_BLOCK = 256
BNB_MIN_8BIT_SIZE = 4096
# bitsandbytes Optimizer8bit/Optimizer2State.get_state_buffer: a paged optimizer pages only
# tensors of at least 1e5 elements; smaller ones get ordinary device tensors.
BNB_PAGED_MIN_NUMEL = 100_000
# Optimizer8bit.fill_qmap: the "dynamic" and "udynamic" quantization maps, 256 fp32 values
# each, on the device once per optimizer object (every state of that optimizer shares them).
BNB_QMAP_BYTES = 2 * 256 * 4
# optimizer name -> bitsandbytes class (8-bit and paged states are bitsandbytes')
BNB_OPTIMIZERS = {"adamw8bit": "bitsandbytes.optim.AdamW8bit", "paged-adamw8bit": "bitsandbytes.optim.PagedAdamW8bit",
                  "paged-adamw": "bitsandbytes.optim.PagedAdamW"}
PAGED_OPTIMIZERS = ("paged-adamw8bit", "paged-adamw")
# torch.optim optimizers whose state is zeros_like(param): its dtype is the parameters' dtype
# (torch/optim/adamw.py AdamW._init_group, sgd.py, and Lion's reference code alike); the
# bytes above are for fp32 parameters.
# (bitsandbytes' 32-bit optimizers, PagedAdamW included, keep fp32 states whatever the
# parameters' dtype: Optimizer2State.init_state, ``optim_bits == 32``.)
PARAMETER_DTYPE_STATE = ("adamw", "adam", "lion", "sgd-momentum", "sgd")
FLOAT32_STATE_BYTES = 4

# Adafactor (Shazeer & Stern 2018, arXiv:1804.04235, Algorithm 4) keeps, for an r x c
# matrix, a row and a column of second-moment statistics (r + c values), for a vector its
# full second moment; no first moment (beta1 = 0, the paper's and transformers' default).
FACTORED_OPTIMIZERS = ("adafactor",)
ADAFACTOR_STATE_BYTES = 4  # fp32 statistics

# Bytes per parameter of mixed-precision training with Adam, as three sources count them:
# name -> (weights, gradients, master weights, optimizer state, where it comes from)
PRECISION_CONVENTIONS: dict[str, tuple[int, int, int, int, str]] = {
    "zero16": (2, 2, 4, 8, "ZeRO, Rajbhandari et al. 2020, arXiv:1910.02054, section 3.1: 2 + 2 + 12"),
    "megatron18": (
        2, 4, 4, 8,
        "Megatron-LM megatron/training/theoretical_memory_usage.py: 18 bytes without the "
        "distributed optimizer (bf16 weights, fp32 gradients, fp32 master and Adam moments)",
    ),
    "fp8": (
        1, 2, 4, 8,
        "Transformer Engine fp8_model_init(heuristic='memory'): FP8 primary weights without the "
        "cached transpose (NVIDIA/TransformerEngine PR #1300); gradients in the bf16 compute "
        "dtype; fp32 master copy and Adam moments. Activations stay 16-bit here",
    ),
    "amp": (
        4, 4, 0, 8,
        "torch.amp autocast as accelerate's Accelerator.prepare_model applies it (Trainer bf16=True on an fp32 "
        "model): the fp32 parameters are the master, fp32 gradients and AdamW moments; bf16 casts of the weights "
        "live only through forward and backward (formulas/frameworks/transformers.py autocast_weight_copies)",
    ),
    "deepspeed20": (
        2, 6, 4, 8,
        "DeepSpeed estimate_zero2_model_states_mem_needs: 4 P + 16 P on one GPU "
        "(fp16 weights and gradients, fp32 master, moments and gradient copy)",
    ),
}


def adafactor_state(tensors) -> sympy.Expr:
    """Adafactor's factored second moments: ``4 (r + c)`` bytes per matrix, ``4 r`` per vector.

    ``tensors`` are ``(rows, cols, count)`` triples of what this GPU trains.
    """
    total = sympy.Integer(0)
    for rows, cols, count in tensors:
        values = rows if cols == 1 else rows + cols
        total += values * count * ADAFACTOR_STATE_BYTES
    return total


def gradients(trained_parameters: sympy.Expr) -> sympy.Expr:
    """Gradient bytes: ``P beta_g``."""
    return trained_parameters * gradient_bytes


def master_weights(trained_parameters: sympy.Expr) -> sympy.Expr:
    """fp32 master copy of the trained weights under mixed precision: ``P beta_m``."""
    return trained_parameters * master_weight_bytes


def optimizer_state(trained_parameters: sympy.Expr) -> sympy.Expr:
    """Optimizer state bytes: ``P beta_o`` (8 for AdamW's two fp32 moments)."""
    return trained_parameters * optimizer_bytes


def state_bytes_per_parameter(name: str, parameter_bytes: Fraction | None = None) -> Fraction | None:
    """Optimizer state bytes per parameter when the optimizer keeps its state in the
    parameters' dtype (``--precision pure``: torch's ``zeros_like(p)``): the fp32 figure of
    :data:`OPTIMIZER_STATE_BYTES` scaled by ``parameter_bytes / 4``; 8-bit states stay 8-bit.
    ``parameter_bytes`` None: the fp32 convention (a master copy holds the fp32 values)."""
    base = OPTIMIZER_STATE_BYTES.get(name)
    if base is None or parameter_bytes is None or name not in PARAMETER_DTYPE_STATE:
        return base
    return base * Fraction(parameter_bytes) / FLOAT32_STATE_BYTES


def bnb_8bit_state(numel: sympy.Expr) -> sympy.Expr:
    """Bytes of bitsandbytes' two block-wise 8-bit Adam states for one tensor of ``numel``
    elements: ``2 (n + 4 ceil(n / 256))``, or ``8 n`` (two fp32 states) below 4096 elements
    (bitsandbytes/optim/optimizer.py Optimizer8bit.init_state)."""
    eight_bit = 2 * numel + bnb_absmax(numel)
    return sympy.Piecewise((2 * FLOAT32_STATE_BYTES * numel, numel < BNB_MIN_8BIT_SIZE), (eight_bit, True))


def bnb_absmax(numel: sympy.Expr) -> sympy.Expr:
    """The fp32 ``absmax1`` and ``absmax2`` of one 8-bit tensor's states, ``8 ceil(n / 256)``:
    always ordinary device tensors (``torch.zeros(..., device=p.device)``), paged or not."""
    return 2 * FLOAT32_STATE_BYTES * sympy.ceiling(numel / BNB_STATE_BLOCK)
