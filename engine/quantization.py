"""A checkpoint's own quantization: ``quantization_config`` read into a weight format.

transformers writes the method a checkpoint was quantized with into ``config.json``'s
``quantization_config`` (``quant_method`` plus that method's fields; transformers
``utils/quantization_config.py``). :func:`resolve` turns it into the storage format of
formulas/weights.py, so ``weights`` equals the bytes the checkpoint stores; ``--weight-quant``
overrides it (then the flag is the source). The result names the scheme and its source.

Bytes per format (each derived from what the format stores per ``[out, in]`` linear layer):

- ``awq`` (AutoAWQ ``WQLinear_GEMM``: qweight int32 [in, out/8], qzeros int32 [in/g, out/8],
  scales fp16 [in/g, out]): formulas/weights.py ``int4``, ``g`` = ``group_size``;
- ``gptq`` (AutoGPTQ ``QuantLinear``): ``b/8`` per weight, an fp16 scale and a ``b``-bit zero
  per group, int32 ``g_idx`` per input column; ``group_size`` -1 is one group per row;
- ``compressed-tensors`` (compressed_tensors ``PackedQuantizationCompressor``,
  ``IntQuantizationCompressor``, ``FloatQuantizationCompressor``): ``num_bits/8`` per weight,
  one scale in the checkpoint's dtype per group / channel / block / tensor
  (``initialize.py`` ``_initialize_scale_zero_point``: scale dtype = the weight's), a zero point
  when asymmetric, ``weight_shape`` (int64 x 2) per packed matrix; a static input scale per
  matrix;
- ``fp8`` (transformers ``FineGrainedFP8Config``): one byte per weight and one float32
  ``weight_scale_inv`` per ``weight_block_size`` block: formulas/weights.py ``fp8``;
- ``mxfp4`` (transformers integrations/mxfp4.py ``replace_with_mxfp4_linear`` replaces the
  experts only): formulas/weights.py ``mxfp4`` on the routed experts;
- ``bitsandbytes``: 8-bit is ``int8`` (``SCB``, one float32 per row); 4-bit with double
  quantization ``nf4``; 4-bit without it one float32 absmax per 64 weights
  (bitsandbytes functional.py ``quantize_4bit``, blocksize 64) and the 16-entry float32
  ``quant_map`` per matrix;
- ``torchao``: ``Int4WeightOnlyConfig`` (tinygemm: bf16 scale and zero per group, torchao
  ``TensorCoreTiledLayout``), ``Int8WeightOnlyConfig`` / ``Int8DynamicActivationInt8WeightConfig``
  (int8, one scale per row in the model dtype).

An unknown ``quant_method``, type, strategy or an ignore entry memsym cannot place is a
ConfigError naming it: never a silent bf16 count.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fractions import Fraction

import sympy

from engine.errors import ConfigError
from engine.spec import ModelSpec, config_bool, config_int, shown
from formulas import symbols as S
from formulas.dtypes import DTYPE_BYTES
from formulas.parameters import WeightTensor
from formulas.weights import QUANT_SCHEMES, STORED_FORMATS, StoredFormat, tensor_bytes as formula_bytes

FLAG = "--weight-quant"


@dataclass(frozen=True)
class Quantization:
    """The weight format of a model: a formulas/weights.py scheme name or StoredFormat,
    the tensors it leaves unquantized and where it came from."""

    scheme: str | StoredFormat
    source: str
    value_bytes: Fraction | None = None
    scale_bytes: Fraction | None = None
    group: int | None = None
    experts_only: bool = False
    skipped: frozenset[str] = field(default_factory=frozenset)  # "component/name" kept unquantized

    @property
    def name(self) -> str:
        return self.scheme.name if isinstance(self.scheme, StoredFormat) else self.scheme

    def covers(self, tensor: WeightTensor) -> bool:
        """True when ``tensor`` is stored quantized."""
        if self.name == "w8a8":
            return True
        if not tensor.quantizable or tensor.name in self.skipped or tensor.component in self.skipped:
            return False
        return not self.experts_only or tensor.parallel == "expert"

    def tensor_bytes(self, tensor: WeightTensor) -> sympy.Expr:
        """Bytes of ``tensor``: the format's when it covers the tensor, else ``numel beta_w``."""
        if self.name == "none" or not self.covers(tensor):
            return formula_bytes(tensor, "none")
        return formula_bytes(tensor, self.scheme)

    def facts(self) -> dict[sympy.Symbol, object]:
        """``beta_q``, ``beta_sc``, ``g`` of the format (None where it has none)."""
        return {S.quantized_weight_bytes: self.value_bytes or None, S.quant_scale_bytes: self.scale_bytes or None,
                S.quant_group_size: self.group}


def from_flag(weight_quant: str, group_size: int | None) -> Quantization:
    """``--weight-quant SCHEME`` (and ``--quant-group-size``)."""
    value, scale, group = QUANT_SCHEMES[weight_quant]
    fmt = STORED_FORMATS.get(weight_quant, weight_quant)
    return Quantization(fmt, FLAG, value, scale, group_size or group)


def resolve(spec: ModelSpec, weight_quant: str | None, group_size: int | None = None) -> Quantization:
    """The flag when given, else the checkpoint's ``quantization_config``, else none."""
    if weight_quant is not None:
        return from_flag(weight_quant, group_size)
    config = spec.quantization
    if not config:
        return from_flag("none", None)
    return from_config(config, spec.torch_dtype, f"config {spec.name}: quantization_config")


def from_config(config: dict, torch_dtype: str | None, where: str) -> Quantization:
    """A ``quantization_config`` dict read into a Quantization; errors name the field."""
    method = config.get("quant_method")
    if not isinstance(method, str):
        raise ConfigError(f"{where}: missing or non-string field 'quant_method' ({shown(method)})")
    reader = METHODS.get(method.lower())
    if reader is None:
        raise ConfigError(f"{where}: quant_method {shown(method)} is not supported "
                          f"(supported: {', '.join(sorted(METHODS))})")
    dtype_bytes = DTYPE_BYTES.get(torch_dtype or "bfloat16", Fraction(2))
    scheme, value, scale, group, experts_only, ignored = reader(config, dtype_bytes, f"{where}.")
    name = scheme.name if isinstance(scheme, StoredFormat) else scheme
    source = f"the config's quantization_config (quant_method {method!r})"
    return Quantization(scheme, source, value, scale, group, experts_only, skipped_tensors(ignored, where))


# --- ignore lists: module names or "re:" patterns ---------------------------------------

# Module names that are never quantized here (routers, embeddings, norms, head, vision).
UNQUANTIZED = re.compile(r"(lm_head|embed|norm|router|\bgate$|\.gate\b(?!_)|vision|visual|multi_modal|mm_proj|patch)")
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "qkv_proj", "gate_proj", "up_proj", "down_proj", "gate_up_proj")
LAYER_INDEX = re.compile(r"layers\.\d+\.")


def skipped_tensors(entries: list[str], where: str) -> frozenset[str]:
    """The memsym tensor names an ignore list keeps unquantized.

    An entry for a module memsym never quantizes (``lm_head``, routers, norms, vision) is
    accepted; one naming a projection of every layer maps to its tensor names; one naming a
    projection of a single layer (``model.layers.3.mlp.down_proj``) is an error, since a
    layer group holds every layer of its kind alike.
    """
    out: set[str] = set()
    for entry in entries:
        text = entry[3:] if entry.startswith("re:") else entry
        if UNQUANTIZED.search(text):
            continue
        if LAYER_INDEX.search(text):
            raise ConfigError(f"{where}: ignore entry {shown(entry)} names one layer's module; "
                              "memsym quantizes every layer of a kind alike")
        names = _tensor_names(text)
        if not names:
            raise ConfigError(f"{where}: ignore entry {shown(entry)} names no module memsym knows")
        out |= names
    return frozenset(out)


def _tensor_names(text: str) -> set[str]:
    """``self_attn`` / ``attn`` -> every attention tensor; ``mlp.experts.down_proj`` ->
    ``moe_experts/down_proj``; a bare projection -> it in every component."""
    if re.search(r"(self_attn|attn|attention)\W*\$?$", text):
        return {"attention"}
    if re.search(r"(mlp|feed_forward)\W*\$?$", text):
        return {"mlp", "moe_shared_experts", "moe_experts"}
    proj = next((p for p in sorted(PROJECTIONS, key=len, reverse=True) if re.search(p + r"\W*\$?$", text)), None)
    if proj is None:
        return set()
    if "shared_expert" in text:
        return {f"moe_shared_experts/{proj}"}
    if "experts" in text:
        return {f"moe_experts/{proj}"}
    return {f"{component}/{proj}" for component in ("attention", "mlp", "moe_experts", "moe_shared_experts")}


# --- one reader per quant_method ----------------------------------------------------------
# Each returns (scheme, beta_q, beta_sc, g, experts_only, ignore entries).

def _ignore(config: dict, where: str, *names: str) -> list[str]:
    for name in names:
        value = config.get(name)
        if value is None:
            continue
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}{name} must be a list of module names, got {shown(value)}")
        return value
    return []


def _bits(config: dict, where: str, allowed: tuple[int, ...], *names: str) -> int:
    bits = config_int(config, names[0], *names[1:], default=4, where=where.rstrip("."))
    if bits not in allowed:
        raise ConfigError(f"{where}{names[0]} {bits} is not supported (supported: {', '.join(map(str, allowed))})")
    return bits


def _read_awq(config: dict, dtype_bytes: Fraction, where: str):
    """AutoAWQ GEMM/GEMV: 4-bit values, fp16 scale and 4-bit zero per group (``int4``)."""
    _bits(config, where, (4,), "bits", "w_bit")
    group = config_int(config, "group_size", "q_group_size", default=128, where=where.rstrip("."))
    ignored = _ignore(config, where, "modules_to_not_convert")
    if config_bool(config, "zero_point", True, where.rstrip(".")):
        return "int4", Fraction(1, 2), Fraction(2), group, False, ignored
    fmt = StoredFormat("awq-symmetric", Fraction(1, 2), Fraction(2), group)
    return fmt, fmt.value_bytes, fmt.scale_bytes, group, False, ignored


def _read_gptq(config: dict, dtype_bytes: Fraction, where: str):
    """AutoGPTQ / GPTQModel: ``b``-bit values, fp16 scales, ``b``-bit zeros, int32 g_idx."""
    bits = _bits(config, where, (2, 3, 4, 8), "bits")
    group = config.get("group_size", 128)
    per_row = group == -1
    if not per_row:
        group = config_int(config, "group_size", default=128, where=where.rstrip("."))
    value = Fraction(bits, 8)
    fmt = StoredFormat(f"gptq-int{bits}", value, Fraction(2), None if per_row else group,
                       "channel" if per_row else "group", zero_bytes=value, per_column=Fraction(4))
    return fmt, value, fmt.scale_bytes, fmt.group, False, _ignore(config, where, "modules_to_not_convert")


def _read_fp8(config: dict, dtype_bytes: Fraction, where: str):
    """transformers FineGrainedFP8: float8 values, one float32 scale per square block."""
    block = config.get("weight_block_size", [128, 128])
    ignored = _ignore(config, where, "modules_to_not_convert")
    if block is None:
        fmt = StoredFormat("fp8-tensor", Fraction(1), Fraction(4), layout="tensor")
        return fmt, fmt.value_bytes, fmt.scale_bytes, None, False, ignored
    if (not isinstance(block, list) or len(block) != 2 or block[0] != block[1]
            or not all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in block)):
        raise ConfigError(f"{where}weight_block_size must be two equal positive integers, got {shown(block)}")
    return "fp8", Fraction(1), Fraction(4), block[0], False, ignored


def _read_mxfp4(config: dict, dtype_bytes: Fraction, where: str):
    """gpt-oss: MXFP4 routed experts (values and E8M0 scales per 32), the rest unquantized."""
    fmt = STORED_FORMATS["mxfp4"]
    return fmt, fmt.value_bytes, fmt.scale_bytes, fmt.group, True, _ignore(config, where, "modules_to_not_convert")


def _read_bitsandbytes(config: dict, dtype_bytes: Fraction, where: str):
    """bitsandbytes: LLM.int8 (``int8``) or 4-bit (``nf4`` with double quantization)."""
    w = where.rstrip(".")
    ignored = _ignore(config, where, "llm_int8_skip_modules")
    if config_bool(config, "load_in_8bit", False, w):
        return "int8", Fraction(1), Fraction(4), None, False, ignored
    if not config_bool(config, "load_in_4bit", False, w):
        raise ConfigError(f"{where}load_in_4bit / load_in_8bit: neither is true")
    if config_bool(config, "bnb_4bit_use_double_quant", False, w):
        return "nf4", Fraction(1, 2), Fraction(1), 64, False, ignored
    fmt = StoredFormat("bnb-4bit", Fraction(1, 2), Fraction(4), 64, per_matrix=Fraction(64))
    return fmt, fmt.value_bytes, fmt.scale_bytes, 64, False, ignored


TORCHAO_TYPES = {"int4_weight_only": "Int4WeightOnlyConfig", "int8_weight_only": "Int8WeightOnlyConfig",
                 "int8_dynamic_activation_int8_weight": "Int8DynamicActivationInt8WeightConfig"}


def _read_torchao(config: dict, dtype_bytes: Fraction, where: str):
    """torchao: int4 weight-only (bf16 scale + zero per group) or int8 per-row."""
    quant_type, kwargs = config.get("quant_type"), config.get("quant_type_kwargs") or {}
    if isinstance(quant_type, dict):  # {"default": {"_type": ..., "_data": {...}}}
        entry = quant_type.get("default") if isinstance(quant_type.get("default"), dict) else {}
        quant_type, kwargs = entry.get("_type"), entry.get("_data") or {}
    name = TORCHAO_TYPES.get(quant_type, quant_type)
    ignored = _ignore(config, where, "modules_to_not_convert")
    if name == "Int4WeightOnlyConfig":
        group = config_int(kwargs, "group_size", default=128, where=where + "quant_type")
        fmt = StoredFormat("torchao-int4", Fraction(1, 2), Fraction(2), group, zero_bytes=Fraction(2))
        return fmt, fmt.value_bytes, fmt.scale_bytes, group, False, ignored
    if name in ("Int8WeightOnlyConfig", "Int8DynamicActivationInt8WeightConfig"):
        fmt = StoredFormat("torchao-int8", Fraction(1), dtype_bytes, layout="channel")
        return fmt, fmt.value_bytes, fmt.scale_bytes, None, False, ignored
    raise ConfigError(f"{where}quant_type {shown(quant_type)} is not supported "
                      f"(supported: {', '.join(sorted(set(TORCHAO_TYPES.values())))})")


CT_FORMATS = ("pack-quantized", "int-quantized", "float-quantized", "naive-quantized", "nvfp4-pack-quantized")
CT_LAYOUTS = {"group": "group", "channel": "channel", "block": "block", "tensor": "tensor", "tensor_group": "group"}


def _read_compressed_tensors(config: dict, dtype_bytes: Fraction, where: str):
    """compressed-tensors: one config group targeting ``Linear``; its weights' num_bits, type,
    strategy and symmetry; the checkpoint ``format`` decides packing and scale dtype."""
    groups = config.get("config_groups")
    if not isinstance(groups, dict) or len(groups) != 1:
        count = len(groups) if isinstance(groups, dict) else shown(groups)
        raise ConfigError(f"{where}config_groups: memsym reads exactly one group targeting Linear, got {count}")
    (name, group), = groups.items()
    w = f"{where}config_groups.{name}"
    if not isinstance(group, dict) or group.get("targets") != ["Linear"]:
        raise ConfigError(f"{w}.targets must be ['Linear'], got {shown(group.get('targets') if isinstance(group, dict) else group)}")
    weights = group.get("weights")
    if not isinstance(weights, dict):
        raise ConfigError(f"{w}.weights must be an object, got {shown(weights)}")
    fmt_name = group.get("format") or config.get("format") or "naive-quantized"
    if fmt_name not in CT_FORMATS:
        raise ConfigError(f"{where}format {shown(fmt_name)} is not supported (supported: {', '.join(CT_FORMATS)})")
    fmt = _ct_format(weights, fmt_name, dtype_bytes, f"{w}.weights")
    activations = group.get("input_activations")
    if isinstance(activations, dict) and not activations.get("dynamic", False):  # a static input_scale per matrix
        fmt = StoredFormat(fmt.name, fmt.value_bytes, fmt.scale_bytes, fmt.group, fmt.layout, fmt.zero_bytes,
                           fmt.per_column, fmt.per_matrix + fmt.scale_bytes)
    return fmt, fmt.value_bytes, fmt.scale_bytes, fmt.group, False, _ignore(config, where, "ignore")


def _ct_format(weights: dict, fmt_name: str, dtype_bytes: Fraction, w: str) -> StoredFormat:
    """The StoredFormat of one compressed-tensors weight scheme."""
    bits = config_int(weights, "num_bits", where=w)
    kind, strategy = weights.get("type", "int"), weights.get("strategy", "tensor")
    if kind not in ("int", "float") or strategy not in CT_LAYOUTS:
        raise ConfigError(f"{w}: type {shown(kind)} / strategy {shown(strategy)} is not supported "
                          f"(types int, float; strategies {', '.join(CT_LAYOUTS)})")
    value = Fraction(bits, 8)
    packed = fmt_name.endswith("pack-quantized")
    scale, per_matrix = dtype_bytes, Fraction(16 if packed else 0)  # weight_shape: int64 x 2
    if fmt_name == "nvfp4-pack-quantized":  # fp8 (e4m3) group scales + a float32 global scale
        scale, per_matrix = Fraction(1), per_matrix + 4
    symmetric = config_bool(weights, "symmetric", True, w)
    zero = Fraction(0) if symmetric else (value if packed else Fraction(1))
    group = None
    if strategy in ("group", "tensor_group"):
        group = config_int(weights, "group_size", where=w)
    elif strategy == "block":
        block = weights.get("block_structure")
        if not isinstance(block, list) or len(block) != 2 or block[0] != block[1]:
            raise ConfigError(f"{w}: block_structure must be two equal integers, got {shown(block)}")
        group = config_int({"block_structure": block[0]}, "block_structure", where=w)
    return StoredFormat(f"ct-{kind}{bits}-{strategy}", value, scale, group, CT_LAYOUTS[strategy], zero,
                        per_matrix=per_matrix)


METHODS = {
    "awq": _read_awq,
    "gptq": _read_gptq,
    "fp8": _read_fp8,
    "mxfp4": _read_mxfp4,
    "bitsandbytes": _read_bitsandbytes,
    "compressed-tensors": _read_compressed_tensors,
    "torchao": _read_torchao,
}
