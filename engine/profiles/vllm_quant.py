"""Quantized checkpoints' linears as vLLM 0.19 holds them after loading, not as stored.

"Model loading took X GiB" is ``torch.cuda`` allocated memory once every layer's
``process_weights_after_loading`` has run (vllm/utils/mem_utils.py DeviceMemoryProfiler,
around GPUModelRunner.load_model), so the tensors a kernel frees there are not counted:

- ``gptq`` checkpoints with ``sym`` true and 4 or 8 bits run on Marlin/Machete
  (quantization/gptq_marlin.py GPTQMarlinConfig.override_quantization_method,
  is_gptq_marlin_compatible). The dense linears' kernel
  (kernels/mixed_precision/marlin.py MarlinLinearKernel.process_weights_after_loading)
  repacks qweight and permutes the scales in place (same sizes), replaces ``qzeros`` with an
  empty tensor (symmetric types uint4b8 / uint8b128 carry their zero in the type) and
  ``g_idx`` with an empty tensor unless act order is on; with act order it keeps the sorted
  int32 ``g_idx`` plus int32 ``g_idx_sort_indices`` (``marlin_sort_g_idx``): 8 bytes per
  input column. ``desc_act`` with ``group_size`` -1 is no act order (GPTQMarlinConfig.__init__).
- the routed experts (gptq_marlin.py GPTQMarlinMoEMethod.create_weights /
  process_weights_after_loading) keep ``w13_qzeros`` / ``w2_qzeros`` (int32, ``b/8`` bytes
  per group and output column) even when symmetric, and empty the ``g_idx`` tensors
  without act order.
- compressed-tensors ``pack-quantized`` int weights (schemes/compressed_tensors_wNa16.py
  CompressedTensorsWNA16) reach the same MPLinearKernel: zero points only when asymmetric;
  their experts (compressed_tensors_moe_wna16_marlin.py CompressedTensorsWNA16MarlinMoEMethod
  create_weights) create ``w13_weight_zero_point`` only when asymmetric.
- anything else (``sym`` false: GPTQLinearMethod keeps ``qzeros``) keeps the stored zeros.

Scales are ``params_dtype`` (the model dtype, 2 bytes for fp16/bf16): the ``beta_sc`` fact.

FP8 without block scales (``fp8`` with no ``weight_block_size``: quantization/fp8.py
Fp8LinearMethod.create_weights, one float32 ``weight_scale`` per logical matrix; compressed-tensors
float 8-bit, schemes/compressed_tensors_w8a8_fp8.py: float32 per output channel or per tensor)
is one byte per weight and those scales, not 128 x 128 blocks.
"""

from __future__ import annotations

from fractions import Fraction

from engine.spec import ModelSpec
from formulas.weights import StoredFormat

MARLIN_ACT_ORDER_BYTES = Fraction(8)  # int32 g_idx + int32 g_idx_sort_indices per input column
# gptq.py GPTQLinearMethod.process_weights_after_loading: with act order g_idx becomes its
# int32 argsort in place (4 bytes per input column), without it an empty tensor
GPTQ_ACT_ORDER_BYTES = Fraction(4)
MARLIN_BITS = (4, 8)  # gptq_marlin.py GPTQMarlinConfig.TYPE_MAP: (4, True), (8, True)


def _flag(config: dict, name: str, default: bool) -> bool:
    value = config.get(name, default)
    return value if isinstance(value, bool) else default


def _positive(config: dict, *names: str) -> int | None:
    for name in names:
        value = config.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


FP8_SCALE_BYTES = Fraction(4)  # float32 weight_scale (Fp8LinearMethod, CompressedTensorsW8A8Fp8)


def linear_formats(spec: ModelSpec, forced: str | None) -> tuple[StoredFormat, StoredFormat] | None:
    """(dense linears, routed experts) formats vLLM holds, where they differ from the
    scheme's own (:func:`gptq_formats`, per-tensor / per-channel FP8); None otherwise."""
    config = spec.quantization or {}
    if forced not in (None, "fp8") and config.get("quant_method") == "fp8":
        return None
    if config.get("quant_method") == "fp8" and config.get("weight_block_size") is None:
        fmt = StoredFormat("fp8-tensor", Fraction(1), FP8_SCALE_BYTES, layout="tensor")
        return fmt, fmt
    if config.get("quant_method") == "compressed-tensors":
        weights = _ct_weights(config, "float", (8,))
        if weights is not None and weights.get("strategy") in ("channel", "tensor"):
            fmt = StoredFormat("fp8-" + weights["strategy"], Fraction(1), FP8_SCALE_BYTES, layout=weights["strategy"])
            return fmt, fmt
    return gptq_formats(spec, forced)


def gptq_formats(spec: ModelSpec, forced: str | None) -> tuple[StoredFormat, StoredFormat] | None:
    """(dense linears, routed experts) of a ``gptq`` or packed compressed-tensors int
    checkpoint as vLLM holds them; None for every other method (their own scheme applies).
    ``forced``: vLLM's ``--quantization`` when given (``gptq`` keeps GPTQLinearMethod)."""
    config = spec.quantization or {}
    method = config.get("quant_method")
    if method == "gptq":
        bits = _positive(config, "bits") or 4
        group = _positive(config, "group_size")
        symmetric = _flag(config, "sym", True)
        act_order = _flag(config, "desc_act", False) and group != -1
        marlin = symmetric and bits in MARLIN_BITS and forced in (None, "gptq_marlin")
        expert_zero = Fraction(bits, 8)  # GPTQMarlinMoEMethod keeps w13_qzeros / w2_qzeros
    elif method == "compressed-tensors":
        weights = _ct_weights(config, "int", MARLIN_BITS)
        if weights is None or config.get("format") != "pack-quantized":
            return None
        bits, group = weights["num_bits"], _positive(weights, "group_size")
        symmetric, act_order, marlin = _flag(weights, "symmetric", True), False, True
        group = group if weights.get("strategy") == "group" else -1
        expert_zero = Fraction(0) if symmetric else Fraction(bits, 8)  # WNA16MarlinMoE: zp when asymmetric
    else:
        return None
    value = Fraction(bits, 8)
    layout, group = ("channel", None) if group in (None, -1) else ("group", group)
    dense_zero = Fraction(0) if marlin and symmetric else value
    per_column = Fraction(0) if not act_order else MARLIN_ACT_ORDER_BYTES if marlin else GPTQ_ACT_ORDER_BYTES
    dense = StoredFormat(f"gptq-marlin-int{bits}", value, Fraction(2), group, layout, dense_zero, per_column)
    experts = StoredFormat(f"gptq-marlin-moe-int{bits}", value, Fraction(2), group, layout, expert_zero, per_column)
    return dense, experts


def _ct_weights(config: dict, kind: str, bits: tuple[int, ...]) -> dict | None:
    """The weights scheme of a compressed-tensors config's single group when it is ``kind``
    with one of ``bits``; None otherwise."""
    groups = config.get("config_groups")
    if not isinstance(groups, dict) or len(groups) != 1:
        return None
    group = next(iter(groups.values()))
    weights = group.get("weights") if isinstance(group, dict) else None
    if not isinstance(weights, dict) or weights.get("type", "int") != kind or weights.get("num_bits") not in bits:
        return None
    return weights
