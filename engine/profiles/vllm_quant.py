"""Quantized checkpoints' linears as vLLM 0.19 holds them after loading, not as stored.

"Model loading took X GiB" is ``torch.cuda`` allocated memory once every layer's
``process_weights_after_loading`` has run (vllm/utils/mem_utils.py DeviceMemoryProfiler,
around GPUModelRunner.load_model), so what a kernel frees there is not counted and what it
adds is. :func:`held_formats` reads the checkpoint's ``quantization_config`` (no
``--weight-quant``) into a :class:`Held`: the format of the dense linears, of the routed
experts, and the tensors the method's ignore list keeps in the model dtype
(``UnquantizedLinearMethod``). Embeddings, the LM head, norms and MoE routers are never
quantized here (they are not ``LinearBase`` layers, or are built with ``quant_config=None``).

- ``gptq`` (:mod:`engine.profiles.vllm_gptq`): Marlin frees the symmetric zeros and g_idx;
- ``awq`` (quantization/awq_marlin.py AWQMarlinLinearMethod.create_weights /
  process_weights_after_loading; AWQMoEMethod): int32 ``qweight`` (``b/8`` bytes per weight),
  int32 ``qzeros`` and ``params_dtype`` ``scales`` per group of ``group_size`` input rows
  (-1: the whole input), repacked to Marlin in place (same sizes); ``qzeros`` is created
  whether or not ``zero_point`` is set; skips ``modules_to_not_convert``;
- ``fp8`` (quantization/fp8.py Fp8Config.from_config, Fp8LinearMethod.create_weights): one
  byte per weight and float32 ``weight_scale_inv`` per ``weight_block_size`` block, or one
  float32 ``weight_scale`` per matrix without blocks; a static ``input_scale`` per matrix;
  skips ``ignored_layers`` (else ``modules_to_not_convert``);
- ``fbgemm_fp8`` (quantization/fbgemm_fp8.py FBGEMMFp8LinearMethod.create_weights): float32
  ``weight_scale`` per output channel;
- ``modelopt`` (quantization/modelopt.py ModelOptFp8LinearMethod / ModelOptNvFp4LinearMethod
  .create_weights): FP8 with float32 per-tensor weight and input scales; NVFP4 with two
  E2M1 values per byte, an fp8 scale per 16 inputs and float32 ``weight_scale_2`` /
  ``input_scale`` per matrix; skips ``exclude_modules``;
- ``compressed-tensors`` (:mod:`engine.profiles.vllm_ct`);
- ``bitsandbytes`` (model_loader/bitsandbytes_loader.py BitsAndBytesModelLoader): 8-bit is
  int8 with the float32 ``SCB`` per row; 4-bit is ``uint8`` pairs with a float32 ``absmax``
  per 64 weights and the 16-entry float32 ``code`` per matrix, double quantization or not:
  ``_dequantize_dq`` turns the nested uint8 absmax back into float32 at load time ("at the
  cost of increased memory usage"); skips ``llm_int8_skip_modules``.

A method, format, version or field that changes what is stored and is not read here is an
error naming it (exit 2), never a silent count.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import sympy

from engine import quantization
from engine.errors import ConfigError
from engine.profiles import vllm_ct, vllm_gptq
from engine.spec import ModelSpec, shown
from formulas import weights as W
from formulas.parameters import WeightTensor
from formulas.weights import StoredFormat

FP32 = Fraction(4)  # float32 scales: weight_scale(_inv), input_scale, SCB, absmax, code
PARAMS_DTYPE = Fraction(2)  # params_dtype (fp16 / bf16) scales: AWQ, GPTQ, compressed-tensors WNA16
AWQ_BITS = (4, 8)  # awq_marlin.py AWQMarlinConfig.TYPE_MAP
AWQ_VERSIONS = (None, "gemm", "GEMM")  # AutoAWQ's GEMM layout: qweight [in, out b/32], what vLLM reads
BNB_BLOCK = 64  # bitsandbytes functional.py quantize_4bit blocksize, the transformers default
BNB_CODE_BYTES = Fraction(16 * 4)  # the 16-entry float32 quant map (QuantState.code) per matrix
NVFP4_GROUP = 16  # modelopt.py ModelOptNvFp4Config group_size; compressed-tensors nvfp4 group
NVFP4_EXTRA = Fraction(8)  # float32 weight_scale_2 (global) + float32 input_scale per matrix


@dataclass(frozen=True)
class Held:
    """How vLLM holds a quantized checkpoint's linears: ``dense`` for attention/MLP/shared
    experts, ``experts`` for the routed experts, ``skipped`` tensor names or components
    (engine/quantization.py ``skipped_tensors``) kept at ``beta_w``."""

    dense: StoredFormat
    experts: StoredFormat
    skipped: frozenset[str] = frozenset()

    @property
    def name(self) -> str:
        return self.dense.name

    def tensor_bytes(self, tensor: WeightTensor) -> sympy.Expr:
        """Bytes of one tensor family as vLLM holds it."""
        if tensor.quantizable and (tensor.name in self.skipped or tensor.component in self.skipped):
            return W.tensor_bytes(tensor, "none")
        return W.tensor_bytes(tensor, self.experts if tensor.parallel == "expert" else self.dense)


def held_formats(spec: ModelSpec, forced: str | None) -> Held | None:
    """The :class:`Held` formats of ``spec``'s checkpoint; None for an unquantized config,
    for MXFP4 (its own Triton layout, engine/profiles/vllm.py) and where ``--quantization``
    names another method than the checkpoint's (vLLM then quantizes online)."""
    config = spec.quantization or {}
    method = config.get("quant_method")
    if not isinstance(method, str) or method == "mxfp4":
        return None
    if forced is not None and not _same_method(method, forced):
        return None
    where = f"config {spec.name}: quantization_config"
    reader = READERS.get(method)
    if reader is None:
        return None  # vllm_settings.quant_scheme names the unmodelled method
    dense, experts, ignored = reader(config, forced, where)
    return Held(dense, experts, quantization.skipped_tensors(ignored, where))


def _same_method(method: str, forced: str) -> bool:
    return forced == method or forced.startswith(method + "_") or forced in FORCED_ALIASES.get(method, ())


FORCED_ALIASES = {"fp8": ("fbgemm_fp8",), "gptq": ("marlin",), "awq": ("marlin",)}


def _ignore(config: dict, where: str, *names: str) -> list[str]:
    for name in names:
        value = config.get(name)
        if value:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{where}.{name} must be a list of module names, got {shown(value)}")
            return value
    return []


def _refuse(config: dict, where: str, field: str, allowed: tuple, why: str) -> None:
    """An error naming ``field`` when its value is not one of ``allowed``."""
    value = config.get(field)
    if value not in allowed:
        raise ConfigError(f"{where}.{field} {shown(value)} is not modelled ({why})")


def _bits(config: dict, where: str, allowed: tuple[int, ...], *names: str) -> int:
    value = next((config[n] for n in names if n in config), 4)
    if value not in allowed or isinstance(value, bool):
        raise ConfigError(f"{where}.{names[0]} {shown(value)} is not modelled (vLLM reads {allowed})")
    return value


def _group(config: dict, where: str) -> int | None:
    """``group_size``: None for -1 (one group spanning the input: one scale per row)."""
    value = config.get("group_size", config.get("q_group_size", 128))
    if value == -1:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{where}.group_size must be a positive integer or -1, got {shown(value)}")
    return value


def _awq(config: dict, forced: str | None, where: str):
    """AWQ: AWQMarlinLinearMethod / AWQLinearMethod and AWQMoEMethod hold the same sizes."""
    _refuse(config, where, "version", AWQ_VERSIONS, "vLLM's AWQ kernels read AutoAWQ's GEMM layout")
    _refuse(config, where, "lm_head", (None, False), "a quantized LM head")
    bits = _bits(config, where, AWQ_BITS, "bits", "w_bit")
    group, value = _group(config, where), Fraction(bits, 8)
    fmt = StoredFormat(f"awq-marlin-int{bits}", value, PARAMS_DTYPE, group, "group" if group else "channel",
                       zero_bytes=value)
    return fmt, fmt, _ignore(config, where, "modules_to_not_convert")


def _fp8(config: dict, forced: str | None, where: str):
    """FP8 checkpoints: block scales (weight_scale_inv) or one scale per matrix."""
    block = config.get("weight_block_size")
    static = config.get("activation_scheme") == "static"
    extra = FP32 if static else Fraction(0)  # Fp8LinearMethod: a float32 input_scale per matrix
    if block is None:
        fmt = StoredFormat("fp8-tensor", Fraction(1), FP32, layout="tensor", per_matrix=extra)
    else:
        if (not isinstance(block, list) or len(block) != 2 or block[0] != block[1]
                or not all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in block)):
            raise ConfigError(f"{where}.weight_block_size {shown(block)} is not modelled (two equal positive "
                              "integers: one float32 weight_scale_inv per square block)")
        fmt = StoredFormat(f"fp8-block{block[0]}", Fraction(1), FP32, block[0], "block", per_matrix=extra)
    return fmt, fmt, _ignore(config, where, "ignored_layers", "modules_to_not_convert")


def _fbgemm_fp8(config: dict, forced: str | None, where: str):
    fmt = StoredFormat("fbgemm-fp8-channel", Fraction(1), FP32, layout="channel")
    return fmt, fmt, _ignore(config, where, "modules_to_not_convert")


def _modelopt(config: dict, forced: str | None, where: str):
    """ModelOpt FP8 (per-tensor) or NVFP4; ``quant_algo`` at the top or under ``quantization``."""
    inner = config.get("quantization") if isinstance(config.get("quantization"), dict) else config
    algo = inner.get("quant_algo")
    if algo == "FP8":
        fmt = StoredFormat("modelopt-fp8", Fraction(1), FP32, layout="tensor", per_matrix=FP32)
    elif algo == "NVFP4":
        group = inner.get("group_size", NVFP4_GROUP)
        if group != NVFP4_GROUP:
            raise ConfigError(f"{where}.group_size {shown(group)} is not modelled (NVFP4 groups of 16)")
        fmt = StoredFormat("modelopt-nvfp4", Fraction(1, 2), Fraction(1), NVFP4_GROUP, per_matrix=NVFP4_EXTRA)
    else:
        raise ConfigError(f"{where}.quant_algo {shown(algo)} is not modelled (modelled: 'FP8', 'NVFP4')")
    return fmt, fmt, _ignore(inner, where, "exclude_modules")


def _bitsandbytes(config: dict, forced: str | None, where: str):
    """bitsandbytes pre-quantized checkpoints as BitsAndBytesModelLoader leaves them."""
    _refuse(config, where, "bnb_4bit_quant_storage", (None, "uint8"), "vLLM packs 4-bit pairs into uint8")
    if config.get("load_in_8bit") is True:
        fmt = StoredFormat("bnb-int8", Fraction(1), FP32, layout="channel")
    elif config.get("load_in_4bit") is True:
        fmt = StoredFormat("bnb-4bit", Fraction(1, 2), FP32, BNB_BLOCK, per_matrix=BNB_CODE_BYTES)
    else:
        raise ConfigError(f"{where}: load_in_4bit / load_in_8bit: neither is true")
    return fmt, fmt, _ignore(config, where, "llm_int8_skip_modules")


READERS = {
    "gptq": vllm_gptq.formats,
    "awq": _awq,
    "fp8": _fp8,
    "fbgemm_fp8": _fbgemm_fp8,
    "modelopt": _modelopt,
    "bitsandbytes": _bitsandbytes,
    "compressed-tensors": vllm_ct.formats,
}
