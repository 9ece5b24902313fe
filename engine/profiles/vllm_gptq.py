"""GPTQ and compressed-tensors WNA16 checkpoints as vLLM 0.19's Marlin kernels hold them.

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
- anything else (``sym`` false: GPTQLinearMethod keeps ``qzeros``; with act order
  gptq.py GPTQLinearMethod.process_weights_after_loading turns g_idx into its int32
  argsort in place) keeps the stored zeros.

Scales are ``params_dtype`` (the model dtype, 2 bytes for fp16/bf16): the ``beta_sc`` fact.
"""

from __future__ import annotations

from fractions import Fraction

from engine.errors import ConfigError
from engine.spec import shown
from formulas.weights import StoredFormat

MARLIN_ACT_ORDER_BYTES = Fraction(8)  # int32 g_idx + int32 g_idx_sort_indices per input column
GPTQ_ACT_ORDER_BYTES = Fraction(4)  # GPTQLinearMethod: the int32 argsorted g_idx per input column
MARLIN_BITS = (4, 8)  # gptq_marlin.py GPTQMarlinConfig.TYPE_MAP: (4, True), (8, True)
GPTQ_BITS = (2, 3, 4, 8)  # gptq.py GPTQConfig: weight_bits in [2, 3, 4, 8]
GPTQ_FORMATS = (None, "gptq", "gptq_v2")  # qweight/qzeros/scales/g_idx as AutoGPTQ stores them
PARAMS_DTYPE = Fraction(2)


def flag(config: dict, name: str, default: bool) -> bool:
    value = config.get(name, default)
    return value if isinstance(value, bool) else default


def wna16(bits: int, group: int | None, symmetric: bool, act_order: bool, marlin: bool,
          expert_zero: Fraction) -> tuple[StoredFormat, StoredFormat]:
    """(dense, experts) of a ``bits``-bit weight-only checkpoint on Marlin (or GPTQ's kernel)."""
    value = Fraction(bits, 8)
    layout = "group" if group else "channel"
    dense_zero = Fraction(0) if marlin and symmetric else value
    per_column = Fraction(0) if not act_order else MARLIN_ACT_ORDER_BYTES if marlin else GPTQ_ACT_ORDER_BYTES
    dense = StoredFormat(f"gptq-marlin-int{bits}", value, PARAMS_DTYPE, group, layout, dense_zero, per_column)
    experts = StoredFormat(f"gptq-marlin-moe-int{bits}", value, PARAMS_DTYPE, group, layout, expert_zero, per_column)
    return dense, experts


def formats(config: dict, forced: str | None, where: str):
    """(dense, experts, ignore entries) of a ``gptq`` checkpoint."""
    for field, allowed, why in (("checkpoint_format", GPTQ_FORMATS, "AutoGPTQ's qweight/qzeros layout"),
                                ("is_marlin_format", (None, False), "a checkpoint already in Marlin's layout"),
                                ("lm_head", (None, False), "a quantized LM head")):
        if config.get(field) not in allowed:
            raise ConfigError(f"{where}.{field} {shown(config.get(field))} is not modelled ({why})")
    if config.get("dynamic"):
        raise ConfigError(f"{where}.dynamic {shown(config.get('dynamic'))} is not modelled "
                          "(per-module bits or group sizes)")
    bits = config.get("bits", 4)
    if bits not in GPTQ_BITS or isinstance(bits, bool):
        raise ConfigError(f"{where}.bits {shown(bits)} is not modelled (vLLM reads {GPTQ_BITS})")
    group = config.get("group_size", 128)
    if group != -1 and (not isinstance(group, int) or isinstance(group, bool) or group <= 0):
        raise ConfigError(f"{where}.group_size must be a positive integer or -1, got {shown(group)}")
    group = None if group == -1 else group
    symmetric = flag(config, "sym", True)
    act_order = flag(config, "desc_act", False) and group is not None
    marlin = symmetric and bits in MARLIN_BITS and forced in (None, "gptq_marlin", "marlin")
    dense, experts = wna16(bits, group, symmetric, act_order, marlin, Fraction(bits, 8))
    ignored = config.get("modules_to_not_convert") or []
    if not isinstance(ignored, list) or not all(isinstance(v, str) for v in ignored):
        raise ConfigError(f"{where}.modules_to_not_convert must be a list of module names, got {shown(ignored)}")
    return dense, experts, ignored
