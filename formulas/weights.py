"""Bytes of the stored weights, plain or quantized.

``weights = sum over tensors of numel x bytes``, where a quantization scheme changes the
bytes of the linear layers inside the blocks and adds the scales it stores:

=========  =================================================================  ==========
scheme     bytes of a quantizable ``rows x cols`` linear layer                 scale
=========  =================================================================  ==========
none       ``rows cols beta_w``                                                -
int8       ``rows cols beta_q + rows beta_sc`` (one scale per output channel)  fp32 [1]
int4       ``rows cols beta_q + rows ceil(cols/g) (beta_sc + 1/2)``            fp16 [2]
fp8        ``rows cols beta_q + ceil(rows/g) ceil(cols/g) beta_sc``            fp32 [3]
nf4        ``rows cols (beta_q + beta_sc/g + 4/(256 g))``                      int8 [4]
w8a8       every stored element, embeddings too, at ``beta_q`` (the seed's)    none
=========  =================================================================  ==========

[1] bitsandbytes LLM.int8 (Dettmers et al. 2022, arXiv:2208.07339) keeps one float32
    absmax per output row (``SCB``). [2] GPTQ (arXiv:2210.17323) and AWQ checkpoints store
    one fp16 scale and one packed 4-bit zero point per group of ``g`` (default 128) input
    weights. [3] DeepSeek-V3's checkpoint (``quantization_config.weight_block_size``
    [128, 128]) stores one float32 ``weight_scale_inv`` per 128 x 128 block. [4] QLoRA's
    NF4 with double quantization (Dettmers et al. 2023, arXiv:2305.14314, section 3): one
    8-bit absmax per block of 64 weights and one fp32 constant per 256 such blocks, 0.127
    bits per weight on top of 4. ``w8a8`` is the
    seed article's convention, every parameter and buffer at one byte and scales ignored,
    kept so its 671 GB example reproduces; use ``int8`` for a real per-channel layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import sympy

from formulas.parameters import WeightTensor
from formulas.symbols import quant_group_size, quant_scale_bytes, quantized_weight_bytes, weight_bytes

# scheme -> (bytes per quantized weight, bytes per scale, default group size)
QUANT_SCHEMES: dict[str, tuple[Fraction, Fraction, int | None]] = {
    "none": (Fraction(0), Fraction(0), None),
    "int8": (Fraction(1), Fraction(4), None),
    "int4": (Fraction(1, 2), Fraction(2), 128),
    "fp8": (Fraction(1), Fraction(4), 128),
    "nf4": (Fraction(1, 2), Fraction(1), 64),
    "w8a8": (Fraction(1), Fraction(0), None),
    "mxfp4": (Fraction(1, 2), Fraction(1), 32),  # OCP MX v1.0: E2M1 values, one E8M0 scale per 32
    "gptq": (Fraction(1, 2), Fraction(2), 128),  # 4-bit GPTQ: fp16 scale, 4-bit zero, int32 g_idx
}

# int4 checkpoints (GPTQ/AWQ) store a 4-bit zero point beside each fp16 group scale.
INT4_ZERO_POINT_BYTES = sympy.Rational(1, 2)
# NF4 double quantization: one fp32 second-level constant per 256 first-level blocks.
NF4_SECOND_LEVEL_BLOCKS = 256
NF4_SECOND_LEVEL_BYTES = 4


def quantized_linear_bytes(tensor: WeightTensor, scheme: str) -> sympy.Expr:
    """Bytes of one quantizable linear-layer tensor family under ``scheme``."""
    rows, cols, count = tensor.rows, tensor.cols, tensor.count
    values = rows * cols * count * quantized_weight_bytes
    if scheme == "int8":
        return values + rows * count * quant_scale_bytes
    if scheme == "int4":
        groups = rows * sympy.ceiling(cols / quant_group_size) * count
        return values + groups * (quant_scale_bytes + INT4_ZERO_POINT_BYTES)
    if scheme == "fp8":
        blocks = sympy.ceiling(rows / quant_group_size) * sympy.ceiling(cols / quant_group_size) * count
        return values + blocks * quant_scale_bytes
    if scheme == "nf4":
        numel = rows * cols * count
        second_level = sympy.Rational(NF4_SECOND_LEVEL_BYTES, NF4_SECOND_LEVEL_BLOCKS)
        return values + numel * (quant_scale_bytes + second_level) / quant_group_size
    if scheme == "w8a8":
        return values
    if scheme in STORED_FORMATS:
        return stored_linear_bytes(tensor, STORED_FORMATS[scheme])
    raise ValueError(f"unknown weight quantization scheme {scheme!r}")


def tensor_bytes(tensor: WeightTensor, scheme: "str | StoredFormat" = "none") -> sympy.Expr:
    """Bytes of one tensor family: quantized when the scheme covers it, else ``numel beta_w``."""
    if isinstance(scheme, StoredFormat):
        return stored_linear_bytes(tensor, scheme) if tensor.quantizable else tensor.numel * weight_bytes
    if scheme == "w8a8" or (scheme != "none" and tensor.quantizable):
        return quantized_linear_bytes(tensor, scheme)
    return tensor.numel * weight_bytes


# --- formats read from a checkpoint's quantization_config (engine/quantization.py) -------

@dataclass(frozen=True)
class StoredFormat:
    """How a checkpoint stores one quantized ``rows x cols`` linear layer (``[out, in]``).

    ``rows cols beta_q`` for the packed values, then one scale of ``beta_sc`` bytes (and one
    zero point of ``zero_bytes``) per group of ``g`` input weights of each output row
    (``layout`` "group"), per output row ("channel"), per ``g x g`` block ("block") or per
    matrix ("tensor"); ``per_column``: bytes stored per input column (GPTQ's int32
    ``g_idx``); ``per_matrix``: bytes stored once per matrix (compressed-tensors'
    ``weight_shape``, int64 x 2); ``second_level_groups``/``second_level_bytes``: a double
    quantization's constant per that many groups (torchao's NF4 ``quantization_factor``). The
    values become the facts ``beta_q``, ``beta_sc``, ``g``.
    """

    name: str
    value_bytes: Fraction
    scale_bytes: Fraction
    group: int | None = None
    layout: str = "group"
    zero_bytes: Fraction = Fraction(0)
    per_column: Fraction = Fraction(0)
    per_matrix: Fraction = Fraction(0)
    second_level_groups: int | None = None
    second_level_bytes: Fraction = Fraction(0)


def stored_linear_bytes(tensor: WeightTensor, fmt: StoredFormat) -> sympy.Expr:
    """Bytes of one linear-layer tensor family stored as ``fmt`` (its docstring's layout)."""
    rows, cols, count = tensor.rows, tensor.cols, tensor.count
    per_scale = quant_scale_bytes + sympy.Rational(fmt.zero_bytes.numerator, fmt.zero_bytes.denominator)
    if fmt.layout == "group":
        scales = rows * sympy.ceiling(cols / quant_group_size) * per_scale
    elif fmt.layout == "channel":
        scales = rows * per_scale
    elif fmt.layout == "block":
        scales = sympy.ceiling(rows / quant_group_size) * sympy.ceiling(cols / quant_group_size) * per_scale
    elif fmt.layout == "tensor":
        scales = per_scale
    else:
        raise ValueError(f"unknown scale layout {fmt.layout!r}")
    extra = cols * _rational(fmt.per_column) + _rational(fmt.per_matrix)
    if fmt.second_level_groups:
        groups = rows * sympy.ceiling(cols / quant_group_size)
        extra += groups / fmt.second_level_groups * _rational(fmt.second_level_bytes)
    return count * (rows * cols * quantized_weight_bytes + scales + extra)


def _rational(value: Fraction) -> sympy.Rational:
    return sympy.Rational(value.numerator, value.denominator)


# The flag-selectable stored formats (``--weight-quant mxfp4`` / ``gptq``).
# mxfp4: transformers integrations/mxfp4.py stores ``*_blocks`` (U8, two E2M1 values per
# byte) and ``*_scales`` (U8 E8M0, one per 32 values; OCP Microscaling Formats v1.0 sec. 5):
# 4.25 bits per weight. gptq: AutoGPTQ ``QuantLinear`` (qlinear_cuda_old.py ``__init__``)
# buffers qweight int32 [in b/32, out], qzeros int32 [in/g, out b/32], scales fp16
# [in/g, out] and g_idx int32 [in] (stored with and without desc_act).
GPTQ_G_IDX_BYTES = Fraction(4)
STORED_FORMATS: dict[str, StoredFormat] = {
    "mxfp4": StoredFormat("mxfp4", Fraction(1, 2), Fraction(1), 32),
    "gptq": StoredFormat("gptq", Fraction(1, 2), Fraction(2), 128, zero_bytes=Fraction(1, 2),
                         per_column=GPTQ_G_IDX_BYTES),
}
