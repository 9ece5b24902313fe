"""compressed-tensors checkpoints as vLLM 0.19 holds them after loading.

quantization/compressed_tensors/compressed_tensors.py ``CompressedTensorsConfig
._get_scheme_from_parts`` picks one scheme per config group from the weights' and input
activations' ``QuantizationArgs`` and the checkpoint ``format``; layers matching ``ignore``
get ``UnquantizedLinearMethod`` (``should_ignore_layer``). What each scheme holds:

- int 4/8-bit weights, no input activations, ``pack-quantized``: CompressedTensorsWNA16 on
  Marlin (engine/profiles/vllm_gptq.py ``wna16``); ``actorder`` "group" keeps
  ``weight_g_idx`` (with Marlin's sort indices);
- int 8-bit weights and activations: schemes/compressed_tensors_w8a8_int8.py
  CompressedTensorsW8A8Int8.create_weights: int8 ``weight`` and a float32 ``weight_scale``
  per output channel (``channel``) or per matrix (``tensor``); a float32 ``input_scale`` per
  matrix when the activations are static; experts (compressed_tensors_moe_w8a8_int8.py)
  alike;
- float 8-bit weights: schemes/compressed_tensors_w8a8_fp8.py CompressedTensorsW8A8Fp8
  .create_weights: one byte per weight, float32 ``weight_scale`` per channel, per matrix or
  per ``block_structure`` block, a float32 ``input_scale`` per matrix when static;
- ``nvfp4-pack-quantized`` (schemes/compressed_tensors_w4a4_nvfp4.py CompressedTensorsW4A4Fp4
  .create_weights): ``weight_packed`` uint8 pairs, an fp8 ``weight_scale`` per 16 inputs,
  float32 ``weight_global_scale`` and ``input_global_scale`` per matrix.

Anything else (more than one config group, targets other than ``["Linear"]``, another
format, 2:4 sparsity, transforms, asymmetric int8 activations) is an error naming the field.
"""

from __future__ import annotations

from fractions import Fraction

from engine.errors import ConfigError
from engine.profiles import vllm_gptq
from engine.spec import shown
from formulas.weights import StoredFormat

FP32 = Fraction(4)
FORMATS = ("pack-quantized", "int-quantized", "float-quantized", "naive-quantized", "nvfp4-pack-quantized")
LAYOUTS = {"channel": "channel", "tensor": "tensor", "block": "block", "group": "group", "tensor_group": "group"}
NVFP4_EXTRA = Fraction(8)  # weight_global_scale + input_global_scale, float32, per matrix


def formats(config: dict, forced: str | None, where: str):
    """(dense, experts, ignore entries) of a compressed-tensors checkpoint."""
    groups = config.get("config_groups")
    if not isinstance(groups, dict) or len(groups) != 1:
        count = len(groups) if isinstance(groups, dict) else shown(groups)
        raise ConfigError(f"{where}.config_groups: one group is modelled, got {count}")
    (name, group), = groups.items()
    w = f"{where}.config_groups.{name}"
    if not isinstance(group, dict) or not isinstance(group.get("weights"), dict):
        raise ConfigError(f"{w}.weights must be an object, got {shown(group)}")
    if group.get("targets") != ["Linear"]:  # other targets (Embedding, named modules) change what is quantized
        raise ConfigError(f"{w}.targets {shown(group.get('targets'))} is not modelled (modelled: ['Linear'])")
    fmt_name = group.get("format") or config.get("format") or "naive-quantized"
    if fmt_name not in FORMATS:
        raise ConfigError(f"{where}.format {shown(fmt_name)} is not modelled (modelled: {', '.join(FORMATS)})")
    sparsity = config.get("sparsity_config")
    if isinstance(sparsity, dict) and sparsity.get("format") not in (None, "dense"):
        raise ConfigError(f"{where}.sparsity_config.format {shown(sparsity.get('format'))} is not modelled")
    if config.get("transform_config"):
        raise ConfigError(f"{where}.transform_config is not modelled (online rotations add tensors)")
    weights, acts = group["weights"], group.get("input_activations")
    if acts is not None and not isinstance(acts, dict):
        raise ConfigError(f"{w}.input_activations must be an object or null, got {shown(acts)}")
    dense, experts = _scheme(weights, acts, fmt_name, f"{w}.weights")
    ignored = config.get("ignore") or []
    if not isinstance(ignored, list) or not all(isinstance(v, str) for v in ignored):
        raise ConfigError(f"{where}.ignore must be a list of module names, got {shown(ignored)}")
    return dense, experts, ignored


def _scheme(weights: dict, acts: dict | None, fmt_name: str, w: str) -> tuple[StoredFormat, StoredFormat]:
    kind, bits, strategy = weights.get("type", "int"), weights.get("num_bits"), weights.get("strategy", "tensor")
    if strategy not in LAYOUTS:
        raise ConfigError(f"{w}.strategy {shown(strategy)} is not modelled (modelled: {', '.join(LAYOUTS)})")
    group = _group(weights, strategy, w)
    symmetric = vllm_gptq.flag(weights, "symmetric", True)
    static = acts is not None and not vllm_gptq.flag(acts, "dynamic", False)
    extra = FP32 if static else Fraction(0)  # a float32 input_scale per matrix
    if kind == "int" and bits in vllm_gptq.MARLIN_BITS and acts is None and fmt_name == "pack-quantized":
        act_order = weights.get("actorder") == "group" and group is not None
        zero = Fraction(0) if symmetric else Fraction(bits, 8)
        return vllm_gptq.wna16(bits, group, symmetric, act_order, True, zero)
    if kind == "int" and bits == 8 and acts is not None and strategy in ("channel", "tensor"):
        if not symmetric or not vllm_gptq.flag(acts, "symmetric", True):
            raise ConfigError(f"{w}: asymmetric int8 weights or activations are not modelled")
        fmt = StoredFormat(f"ct-w8a8-int8-{strategy}", Fraction(1), FP32, layout=strategy, per_matrix=extra)
        return fmt, fmt
    if kind == "float" and bits == 8 and strategy in ("channel", "tensor", "block"):
        fmt = StoredFormat(f"ct-fp8-{strategy}", Fraction(1), FP32, group, strategy, per_matrix=extra)
        return fmt, fmt
    if fmt_name == "nvfp4-pack-quantized" and kind == "float" and bits == 4 and group:
        fmt = StoredFormat("ct-nvfp4", Fraction(1, 2), Fraction(1), group, per_matrix=NVFP4_EXTRA)
        return fmt, fmt
    raise ConfigError(f"{w}: type {shown(kind)} num_bits {shown(bits)} strategy {shown(strategy)} "
                      f"(format {fmt_name!r}, activations {'set' if acts else 'none'}) is not modelled")


def _group(weights: dict, strategy: str, w: str) -> int | None:
    if strategy in ("group", "tensor_group"):
        value = weights.get("group_size")
    elif strategy == "block":
        block = weights.get("block_structure")
        if not isinstance(block, list) or len(block) != 2 or block[0] != block[1]:
            raise ConfigError(f"{w}.block_structure {shown(block)} is not modelled (two equal integers)")
        value = block[0]
    else:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{w}: group_size / block_structure must be a positive integer, got {shown(value)}")
    return value
