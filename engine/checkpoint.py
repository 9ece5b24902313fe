"""Stored bytes of a local checkpoint, read from its safetensors headers without loading tensors.

The format (https://huggingface.co/docs/safetensors; ``safetensors/src/tensor.rs``,
``SafeTensors::read_metadata`` and ``Metadata::validate``): 8 bytes holding the header
length ``N`` as a little-endian unsigned 64-bit integer, then ``N`` bytes of UTF-8 JSON,
then the data area. The JSON is an object mapping each tensor name to
``{"dtype": D, "shape": [d0, d1, ...], "data_offsets": [begin, end]}``, plus an optional
``"__metadata__"`` map of strings to strings. Offsets count from the start of the data area;
sorted by offset, each tensor begins where the previous one ended and the last ends at the
end of the file; ``end - begin = prod(shape) x bits(D) / 8``.

A sharded checkpoint lists its files in ``model.safetensors.index.json``
(``{"metadata": {"total_size": ...}, "weight_map": {tensor: file}}``, as transformers'
``save_pretrained`` writes it); without an index every ``*.safetensors`` file of the folder is
read. Every value read from a file is checked before it is used (lengths against the file
size, offsets against the data area, shapes against the offsets, dtypes against the format's
list); a malformed file raises :class:`CheckpointError` naming the file and the field.
No SymPy here: reading headers is plain Python on exact integers.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path, PurePath

from engine.files import exists, is_dir, open_regular, read_regular, shown_path
from engine.errors import ConfigError
from engine.limits import number_shown, printable, shown

# Bits per element of every dtype the safetensors format defines (safetensors 0.8,
# ``Dtype::bitsize``). Sub-byte types (F4, F6) must fill whole bytes.
SAFETENSORS_DTYPE_BITS: dict[str, int] = {
    "BOOL": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "U8": 8, "I8": 8,
    "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32,
    "C64": 64, "F64": 64, "I64": 64, "U64": 64,
}
# memsym's dtype name for the stored formats a ``--dtype`` can describe (for hints only).
STORED_TO_SCENARIO_DTYPE = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F8_E4M3": "float8",
                            "F8_E5M2": "float8", "I8": "int8"}

MAX_HEADER_BYTES = 100_000_000  # safetensors' MAX_HEADER_SIZE (tensor.rs): larger headers are refused
MAX_INDEX_BYTES = MAX_HEADER_BYTES  # an index lists the same tensors as the headers it points to
MAX_RANK = 64  # NumPy 2's NPY_MAXDIMS; no checkpoint tensor comes near it
MAX_DIMENSION = 2**64  # a dimension is a Rust usize in safetensors (tensor.rs, ``TensorInfo::shape``)
LENGTH_PREFIX_BYTES = 8  # the u64 header length
INDEX_FILE = "model.safetensors.index.json"  # transformers' SAFE_WEIGHTS_INDEX_NAME


class CheckpointError(ConfigError):
    """A checkpoint file that is missing, truncated or malformed; the message names file and field."""


@dataclass(frozen=True)
class StoredTensor:
    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int
    file: str


@dataclass(frozen=True)
class Checkpoint:
    """Every tensor a checkpoint folder stores, with its exact bytes."""

    directory: str
    files: tuple[str, ...]
    tensors: tuple[StoredTensor, ...]

    @property
    def total_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    def bytes_by_dtype(self) -> dict[str, int]:
        out: Counter[str] = Counter()
        for t in self.tensors:
            out[t.dtype] += t.nbytes
        return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))

    def tensors_by_dtype(self) -> dict[str, int]:
        return dict(sorted(Counter(t.dtype for t in self.tensors).items()))


def _show(value: object, limit: int = 60) -> str:
    """A short repr for an error message: untrusted values can be megabytes long, or hold ESC."""
    return shown(value, limit)


def _exact_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def _unique_object(pairs: list[tuple[str, object]]) -> dict:
    """``json`` object hook: a repeated key is an error, not a silent overwrite."""
    out = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"key {_show(key)} appears twice")
        out[key] = value
    return out


def parse_json(raw: bytes, where: str) -> object:
    """Strict JSON: UTF-8, no NaN/Infinity, no repeated keys; nesting too deep is an error."""
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_reject_constant, object_pairs_hook=_unique_object)
    except UnicodeDecodeError:
        raise CheckpointError(f"{where}: not UTF-8 text") from None
    except RecursionError:
        raise CheckpointError(f"{where}: JSON nested too deeply") from None
    except ValueError as exc:
        raise CheckpointError(f"{where}: not valid JSON ({_show(str(exc), 120)})") from None


# --- one safetensors file ---------------------------------------------------------------

def read_header(path: str | Path) -> tuple[dict, int]:
    """The parsed JSON header of one safetensors file and the size of its data area."""
    path = Path(path)
    try:
        with open_regular(path, CheckpointError) as (handle, size):  # a FIFO or device never blocks
            prefix = handle.read(LENGTH_PREFIX_BYTES)
            if len(prefix) < LENGTH_PREFIX_BYTES:
                raise CheckpointError(f"{path}: header length: file has {size} bytes, fewer than the 8-byte prefix")
            length = int.from_bytes(prefix, "little", signed=False)
            if length > MAX_HEADER_BYTES:
                raise CheckpointError(f"{path}: header length: {length} bytes is more than the format allows "
                                      f"({MAX_HEADER_BYTES}); not a safetensors file?")
            if LENGTH_PREFIX_BYTES + length > size:
                raise CheckpointError(f"{path}: header length: {length} bytes runs past the end of the "
                                      f"{size}-byte file")
            raw = handle.read(length)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror or exc})") from None
    header = parse_json(raw, f"{path}: header")
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: header: expected a JSON object, got {type(header).__name__}")
    return header, size - LENGTH_PREFIX_BYTES - length


def _check_metadata(path: Path, value: object) -> None:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise CheckpointError(f"{path}: field '__metadata__' must map strings to strings, got {_show(value)}")


def _tensor(path: Path, name: str, info: object) -> tuple[StoredTensor, int, int]:
    """One header entry, checked: (tensor, begin, end)."""
    field = f"{path}: tensor {_show(name)}"
    if not isinstance(info, dict):
        raise CheckpointError(f"{field}: expected an object with dtype, shape, data_offsets, got {_show(info)}")
    for key in ("dtype", "shape", "data_offsets"):
        if key not in info:
            raise CheckpointError(f"{field}: missing field {key!r}")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if not isinstance(dtype, str) or dtype not in SAFETENSORS_DTYPE_BITS:
        raise CheckpointError(f"{field}: field 'dtype': unknown dtype {_show(dtype)} "
                              f"(known: {', '.join(SAFETENSORS_DTYPE_BITS)})")
    if (not isinstance(shape, list) or len(shape) > MAX_RANK
            or not all(_exact_int(d) and 0 <= d < MAX_DIMENSION for d in shape)):
        raise CheckpointError(f"{field}: field 'shape' must be a list of at most {MAX_RANK} integers in "
                              f"[0, 2^64), got {_show(shape)}")
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(_exact_int(o) and o >= 0 for o in offsets) or offsets[0] > offsets[1]):
        raise CheckpointError(f"{field}: field 'data_offsets' must be [begin, end] with 0 <= begin <= end, "
                              f"got {_show(offsets)}")
    nbytes, stray_bits = divmod(math.prod(shape) * SAFETENSORS_DTYPE_BITS[dtype], 8)  # exact for F4, F6
    begin, end = offsets
    if stray_bits or nbytes != end - begin:
        bits = 8 * nbytes + stray_bits
        raise CheckpointError(f"{field}: fields 'shape' and 'data_offsets' disagree: {_show(shape)} of {dtype} "
                              f"is {number_shown(bits)} bits, the offsets span {number_shown(end - begin)} bytes")
    return StoredTensor(name, dtype, tuple(shape), end - begin, path.name), begin, end


def read_safetensors(path: str | Path) -> list[StoredTensor]:
    """Every tensor of one safetensors file, its header checked against the file's size."""
    path = Path(path)
    header, data_bytes = read_header(path)
    return tensors_from_header(path, header, data_bytes)


def tensors_from_header(path: PurePath, header: dict, data_bytes: int) -> list[StoredTensor]:
    """The tensors a parsed header lists, checked against a data area of ``data_bytes``.

    ``path`` names the file in messages (its ``name`` becomes each tensor's ``file``); a
    remote file is named by a ``PurePosixPath`` such as ``ORG/NAME@commit/model.safetensors``.
    """
    entries = []
    for name, info in header.items():
        if name == "__metadata__":
            _check_metadata(path, info)
            continue
        entries.append(_tensor(path, name, info))
    entries.sort(key=lambda e: (e[1], e[2]))
    position = 0
    for tensor, begin, end in entries:
        if begin != position:
            what = "overlaps the tensor before it" if begin < position else f"leaves a gap after byte {position}"
            raise CheckpointError(f"{path}: tensor {_show(tensor.name)}: field 'data_offsets' "
                                  f"[{begin}, {end}] {what}")
        position = end
    if position != data_bytes:
        raise CheckpointError(f"{path}: field 'data_offsets': the tensors cover {position} bytes of a "
                              f"{data_bytes}-byte data area")
    return [e[0] for e in entries]


# --- a checkpoint folder ----------------------------------------------------------------

_SHARD_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\.safetensors$")


def _read_index(directory: Path) -> dict[str, str]:
    """tensor -> shard file name, from ``model.safetensors.index.json``."""
    path = directory / INDEX_FILE
    raw = read_regular(path, MAX_INDEX_BYTES, "an index", CheckpointError)
    return parse_index(raw, path)


def parse_index(raw: bytes, path: PurePath) -> dict[str, str]:
    """tensor -> shard file name from an index's bytes; ``path`` names it in messages."""
    index = parse_json(raw, str(path))
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{path}: field 'weight_map' must be a non-empty object, got {_show(weight_map)}")
    for tensor, shard in weight_map.items():
        # a plain file name in this folder: no paths, so an index cannot point outside it
        if not isinstance(shard, str) or not _SHARD_NAME.match(shard):
            raise CheckpointError(f"{path}: field 'weight_map' entry {_show(tensor)}: {_show(shard)} is not "
                                  f"a .safetensors file name in this folder")
    return weight_map


def read_checkpoint(directory: str | Path) -> Checkpoint:
    """Every tensor stored in ``directory`` (sharded through its index, or all ``*.safetensors``)."""
    directory = Path(directory)
    if not is_dir(directory):
        raise CheckpointError(f"--checkpoint {shown_path(directory)}: not a folder")
    weight_map = _read_index(directory) if exists(directory / INDEX_FILE) else None
    files = sorted(set(weight_map.values())) if weight_map else sorted(p.name for p in directory.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"--checkpoint {directory}: no *.safetensors files and no {INDEX_FILE}")
    def read(name: str) -> list[StoredTensor]:
        if weight_map is not None and not exists(directory / name):
            raise CheckpointError(f"{directory / INDEX_FILE}: field 'weight_map': {name} is not a file in "
                                  f"{directory}")
        return read_safetensors(directory / name)

    return Checkpoint(str(directory), tuple(files), gather_shards(directory, files, weight_map, read))


def gather_shards(where, files, weight_map: dict | None, read) -> tuple[StoredTensor, ...]:
    """Every shard's tensors (``read(file name)``), each checked against the index and stored
    once, and the index's every tensor found: a local folder's and a Hub repo's shards alike."""
    tensors: list[StoredTensor] = []
    for name in files:
        stored = read(name)
        if weight_map is not None:
            check_against_index(where, name, stored, weight_map)
        check_stored_once(where, name, stored, tensors)
        tensors += stored
    if weight_map is not None and len(tensors) != len(weight_map):
        found = {t.name for t in tensors}
        missing = next(n for n in weight_map if n not in found)
        raise CheckpointError(f"{where / INDEX_FILE}: field 'weight_map': tensor {_show(missing)} is not "
                              f"in {weight_map[missing]}")
    return tuple(tensors)


def check_stored_once(directory: PurePath, name: str, stored: list[StoredTensor],
                      before: list[StoredTensor]) -> None:
    """A tensor stored in two files would be counted twice: refused, naming both files."""
    seen = {t.name: t.file for t in before}
    for tensor in stored:
        if tensor.name in seen:
            raise CheckpointError(f"--checkpoint {shown_path(directory)}: tensor {_show(tensor.name)} is "
                                  f"stored in both {_show(seen[tensor.name])} and {_show(name)}")


def check_against_index(directory: PurePath, name: str, stored: list[StoredTensor], weight_map: dict) -> None:
    for tensor in stored:
        listed = weight_map.get(tensor.name)
        if listed != name:
            where = "is not listed" if listed is None else f"is listed in {listed}"
            raise CheckpointError(f"{directory / INDEX_FILE}: field 'weight_map': tensor {_show(tensor.name)} "
                                  f"of {name} {where}")


# --- stored bytes against the formula ---------------------------------------------------

_LAYER_INDEX = re.compile(r"(?:^|\.)(?:layers|h|blocks)\.(\d+)\.")

# Tensors a checkpoint may store that the weight formula does not model (or not at this width), and why.
EXTRA_KINDS = {
    "extra_layers": "layers past num_hidden_layers (e.g. DeepSeek-V3's multi-token-prediction layer)",
    "gptq_g_idx": "GPTQ act-order indices (g_idx, int32 per input channel)",
    "rotary_inv_freq": "rotary inv_freq buffers (recomputed at load, not persistent in transformers)",
    "kept_in_float32": "tensors stored in float32 where the formula uses --dtype (e.g. router gates); "
                       "bytes = the excess over --dtype",
}
FLOAT32_BYTES = 4


def _extra_kind(tensor: StoredTensor, num_hidden_layers: int, upcast: bool) -> str | None:
    match = _LAYER_INDEX.search(tensor.name)
    if match and (len(match.group(1)) > 9 or int(match.group(1)) >= num_hidden_layers):  # never int() of 5,000 digits
        return "extra_layers"
    if tensor.name.endswith(".g_idx"):
        return "gptq_g_idx"
    if tensor.name.endswith("rotary_emb.inv_freq"):
        return "rotary_inv_freq"
    if upcast and tensor.dtype == "F32":
        return "kept_in_float32"
    return None


def compare(checkpoint: Checkpoint, num_hidden_layers: int, formula_bytes: int,
            formula_width: Fraction | None = None) -> dict:
    """Stored bytes next to the formula's weights, and the stored tensors the formula leaves out.

    ``formula_width``: bytes per element the formula gives unquantized tensors; when it is
    below float32's, float32 tensors explain ``nbytes (1 - width / 4)`` of the difference.
    """
    upcast = formula_width is not None and formula_width < FLOAT32_BYTES
    groups: dict[str, list[StoredTensor]] = {}
    for tensor in checkpoint.tensors:
        kind = _extra_kind(tensor, num_hidden_layers, upcast)
        if kind is not None:
            groups.setdefault(kind, []).append(tensor)
    not_in_formula = []
    for kind, ts in groups.items():
        stored = sum(t.nbytes for t in ts)
        explained = stored * (1 - formula_width / FLOAT32_BYTES) if kind == "kept_in_float32" else stored
        not_in_formula.append({"kind": kind, "what": EXTRA_KINDS[kind], "tensors": len(ts),
                               "bytes": math.ceil(explained), "examples": [printable(t.name) for t in ts[:3]]})
    difference = checkpoint.total_bytes - formula_bytes
    return {
        "directory": printable(checkpoint.directory),  # names safe to print on a terminal
        "files": [printable(f) for f in checkpoint.files],
        "tensors": len(checkpoint.tensors),
        "checkpoint_bytes": checkpoint.total_bytes,
        "bytes_by_dtype": checkpoint.bytes_by_dtype(),
        "tensors_by_dtype": checkpoint.tensors_by_dtype(),
        "formula_weights_bytes": formula_bytes,
        "difference_bytes": difference,
        "matches_formula": difference == 0,
        "not_in_formula": not_in_formula,
        "unexplained_bytes": difference - sum(g["bytes"] for g in not_in_formula),
    }


def storage_hint(checkpoint: Checkpoint, dtype: str, weight_quant: str) -> str | None:
    """A hint when the checkpoint's main storage dtype is not the scenario's ``--dtype``."""
    by_dtype = checkpoint.bytes_by_dtype()
    if not by_dtype or weight_quant != "none":
        return None
    stored = STORED_TO_SCENARIO_DTYPE.get(next(iter(by_dtype)))
    if stored is None or stored == dtype:
        return None
    flag = {"float8": "--weight-quant fp8", "int8": "--weight-quant int8"}.get(stored, f"--dtype {stored}")
    return f"most bytes are stored as {next(iter(by_dtype))}: try {flag}"
