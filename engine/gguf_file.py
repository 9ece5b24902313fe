"""``--gguf FILE``: a llama.cpp GGUF file's architecture and every tensor's stored bytes, from its header.

Read with the ``gguf`` package (llama.cpp's gguf-py; the optional ``memsym[gguf]`` extra):
``GGUFReader`` maps the file and parses the key/value metadata and the tensor infos; no
tensor data is read. Before it runs, :func:`check_bounds` walks the same header (GGUF v2/v3,
``gguf/gguf_reader.py``, ``GGUFReader._build_fields``) and checks that every count and
length fits in the file, so a hostile count cannot make the reader loop for ever.

Stored bytes per tensor are ggml's: ``n_elements / block_size x type_size`` with the block
sizes of ``gguf.GGML_QUANT_SIZES`` (``ggml/src/ggml.c``, ``type_traits``): a Q4_K_M file mixes
Q4_K, Q6_K and F32 tensors, and each is counted as stored.

The metadata become the config.json fields the family parsers read (llama.cpp's own names
are in ``gguf/constants.py``, ``Keys.LLM`` and ``Keys.Attention``):

| GGUF key | config.json field |
|---|---|
| ``general.architecture`` | ``model_type`` (llama, mistral, qwen2, qwen3) |
| ``<arch>.block_count`` | ``num_hidden_layers`` |
| ``<arch>.embedding_length`` | ``hidden_size`` |
| ``<arch>.feed_forward_length`` | ``intermediate_size`` |
| ``<arch>.attention.head_count`` / ``head_count_kv`` | ``num_attention_heads`` / ``num_key_value_heads`` |
| ``<arch>.attention.key_length`` | ``head_dim`` |
| ``<arch>.context_length`` | ``max_position_embeddings`` |
| ``<arch>.attention.sliding_window`` | ``sliding_window`` |
| ``token_embd.weight`` shape, else ``<arch>.vocab_size``, else ``tokenizer.ggml.tokens`` | ``vocab_size`` |
| no ``output.weight`` tensor | ``tie_word_embeddings`` |
| ``<arch>.expert_count``, ``.expert_used_count`` (llama) | ``model_type`` mixtral, ``num_local_experts``, ``num_experts_per_tok`` |
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import mmap
import os
from dataclasses import dataclass
from pathlib import Path

from engine.checkpoint import Checkpoint, StoredTensor
from engine.errors import ConfigError
from engine.files import open_regular, shown_path
from engine.limits import cut, printable, shown
from engine.families import spec_from_config
from engine.spec import ModelSpec

# general.architecture -> the config.json model_type whose parser reads the mapped fields
ARCHITECTURES = {"llama": "llama", "mistral": "mistral", "qwen2": "qwen2", "qwen3": "qwen3"}
MAGIC = b"GGUF"
VERSIONS = (2, 3)  # GGUF v1 had 32-bit counts; gguf-py reads v2 and v3
MAX_DIMS = 4  # GGML_MAX_DIMS (ggml/include/ggml.h)
# GGUFValueType -> bytes of one scalar (gguf/constants.py, GGUFValueType); 8 = STRING, 9 = ARRAY
SCALAR_BYTES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
STRING, ARRAY = 8, 9


class GgufError(ConfigError):
    """A GGUF file that is not readable, malformed, or of an architecture memsym does not map."""


@dataclass(frozen=True)
class GgufModel:
    """What a GGUF header says: its architecture, the config.json it maps to, every stored tensor."""

    path: str
    architecture: str
    config: dict
    checkpoint: Checkpoint
    metadata: dict  # the scalar keys used, for echoing


def _u(data: bytes, offset: int, size: int, path: str) -> int:
    if offset + size > len(data):
        raise GgufError(f"{path}: header runs past the end of the file (at byte {offset})")
    return int.from_bytes(data[offset:offset + size], "little")


def _skip_value(data: bytes, offset: int, kind: int, path: str, depth: int = 0) -> int:
    """The offset after one value of GGUF type ``kind`` at ``offset``; every length is checked."""
    if kind in SCALAR_BYTES:
        return offset + SCALAR_BYTES[kind]
    if kind == STRING:
        length = _u(data, offset, 8, path)
        if offset + 8 + length > len(data):
            raise GgufError(f"{path}: a string of {length} bytes runs past the end of the file")
        return offset + 8 + length
    if kind == ARRAY and depth < 2:
        item, count = _u(data, offset, 4, path), _u(data, offset + 4, 8, path)
        offset += 12
        if item in SCALAR_BYTES:
            if offset + count * SCALAR_BYTES[item] > len(data):
                raise GgufError(f"{path}: an array of {count} values runs past the end of the file")
            return offset + count * SCALAR_BYTES[item]
        if count * 8 > len(data) - offset:  # a string or array element takes at least 8 bytes
            raise GgufError(f"{path}: an array of {count} values runs past the end of the file")
        for _ in range(count):
            offset = _skip_value(data, offset, item, path, depth + 1)
        return offset
    raise GgufError(f"{path}: unknown metadata value type {kind}")


def check_bounds(data: bytes, path: str) -> None:
    """Magic, version, and every count and length of the header within the file's bytes."""
    if data[:4] != MAGIC:
        raise GgufError(f"{path}: not a GGUF file (it does not start with 'GGUF')")
    version = _u(data, 4, 4, path)
    if version not in VERSIONS:
        raise GgufError(f"{path}: GGUF version {version} is not read (versions: 2, 3)")
    tensors, keys = _u(data, 8, 8, path), _u(data, 16, 8, path)
    if keys * 12 > len(data) or tensors * 24 > len(data):
        raise GgufError(f"{path}: header counts ({keys} keys, {tensors} tensors) do not fit in the file")
    offset = 24
    for _ in range(keys):
        offset = _skip_value(data, offset, STRING, path)  # the key
        offset = _skip_value(data, offset + 4, _u(data, offset, 4, path), path)
    for _ in range(tensors):
        offset = _skip_value(data, offset, STRING, path)
        dims = _u(data, offset, 4, path)
        if dims > MAX_DIMS:
            raise GgufError(f"{path}: a tensor with {dims} dimensions (ggml allows {MAX_DIMS})")
        offset += 4 + 8 * dims + 4 + 8
        if offset > len(data):
            raise GgufError(f"{path}: header runs past the end of the file")


@contextlib.contextmanager
def _mapped(path: Path):
    """The file mapped read-only (pages are read only where the header is walked); FIFOs and devices
    are refused without blocking (engine.files.open_regular)."""
    with open_regular(path, GgufError) as (handle, size):
        if size < 24:
            raise GgufError(f"--gguf {shown_path(path)}: {size} bytes is too short for a GGUF header")
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            yield data


def is_gguf(path: str | os.PathLike) -> bool:
    """True when ``path`` is a regular file that starts with the GGUF magic (never blocks on a FIFO)."""
    try:
        with open_regular(path, GgufError) as (handle, _):
            return handle.read(len(MAGIC)) == MAGIC
    except (GgufError, OSError):
        return False


def _gguf():
    try:
        import gguf
    except ImportError:
        raise GgufError("--gguf needs the gguf package (llama.cpp's gguf-py): pip install 'memsym[gguf]'") from None
    return gguf


def _stored(gguf, tensor, size: int, path: str) -> StoredTensor:
    """One tensor's bytes from its type's block size, checked against the file."""
    kind = gguf.GGMLQuantizationType(int(tensor.tensor_type))
    block, type_size = gguf.GGML_QUANT_SIZES[kind]
    shape = tuple(int(d) for d in tensor.shape)  # ggml order: ne[0] (the row) first
    elements = math.prod(shape)
    if shape and shape[0] % block:
        raise GgufError(f"{path}: tensor {shown(str(tensor.name))}: rows of {shape[0]} are not whole {kind.name} "
                        f"blocks of {block}")
    nbytes = elements // block * type_size
    if int(tensor.data_offset) + nbytes > size:
        raise GgufError(f"{path}: tensor {shown(str(tensor.name))}: its {nbytes} bytes run past the end of the file")
    return StoredTensor(str(tensor.name), kind.name, shape, nbytes, Path(path).name)


def read_gguf(path: str | os.PathLike) -> GgufModel:
    """The architecture, mapped config and stored tensors of a GGUF file; errors name the file."""
    path = Path(path)
    with _mapped(path) as data:
        check_bounds(data, f"--gguf {shown_path(path)}")
    gguf = _gguf()
    try:
        reader = gguf.GGUFReader(path, "r")
        values = {name: _scalar(field) for name, field in reader.fields.items()}
        size = path.stat().st_size
        tensors = tuple(_stored(gguf, t, size, f"--gguf {shown_path(path)}") for t in reader.tensors)
        tokens = reader.fields.get("tokenizer.ggml.tokens")
        token_count = len(tokens.data) if tokens is not None else None
    except GgufError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever gguf-py raises on a malformed file is one line
        raise GgufError(f"--gguf {shown_path(path)}: not a readable GGUF file ({cut(printable(exc), 120)})") from None
    config = config_from_metadata(values, tensors, token_count, str(path))
    checkpoint = Checkpoint(str(path), (path.name,), tensors)
    used = {k: v for k, v in values.items() if k.startswith(values.get("general.architecture", "?") + ".")}
    return GgufModel(str(path), config["model_type"], config, checkpoint, used)


def _scalar(field) -> object:
    """A field's value when it is one number or string; None for arrays (not needed here)."""
    if len(field.types) != 1 or field.types[0] == ARRAY:
        return None
    value = field.contents()
    return value if isinstance(value, (int, float, str)) else None


def _count(values: dict, key: str, path: str, default: int | None = None) -> int | None:
    value = values.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise GgufError(f"{path}: metadata {key!r} must be a non-negative integer, got {shown(value)}")
    return value


def config_from_metadata(values: dict, tensors: tuple[StoredTensor, ...], token_count: int | None,
                         path: str) -> dict:
    """The config.json fields of the table above, from a GGUF header's metadata and tensors."""
    arch = values.get("general.architecture")
    if arch not in ARCHITECTURES:
        raise GgufError(f"--gguf {shown_path(path)}: general.architecture {shown(arch)} is not mapped "
                        f"(mapped: {', '.join(ARCHITECTURES)})")
    names = {t.name: t for t in tensors}
    config = {"model_type": ARCHITECTURES[arch], "tie_word_embeddings": "output.weight" not in names}
    for key, field in (("block_count", "num_hidden_layers"), ("embedding_length", "hidden_size"),
                       ("feed_forward_length", "intermediate_size"),
                       ("attention.head_count", "num_attention_heads"),
                       ("attention.head_count_kv", "num_key_value_heads"), ("attention.key_length", "head_dim"),
                       ("context_length", "max_position_embeddings"),
                       ("attention.sliding_window", "sliding_window")):
        value = _count(values, f"{arch}.{key}", path)
        if value is not None:
            config[field] = value
    if config["model_type"] in ("llama", "mistral"):
        config["attention_bias"] = "blk.0.attn_q.bias" in names  # Llama's attention_bias: q, k, v, o
    experts = _count(values, f"{arch}.expert_count", path)
    if experts:  # llama.cpp stores Mixtral as arch llama with experts (ffn_*_exps tensors)
        if config["model_type"] not in ("llama", "mistral"):
            raise GgufError(f"--gguf {shown_path(path)}: {arch} with {experts} experts is not mapped "
                            f"(MoE: llama/Mixtral only)")
        config.update(model_type="mixtral", num_local_experts=experts,
                      num_experts_per_tok=_count(values, f"{arch}.expert_used_count", path))
        config.pop("attention_bias")
    embedding = names.get("token_embd.weight")
    vocab = (embedding.shape[1] if embedding is not None and len(embedding.shape) == 2
             else _count(values, f"{arch}.vocab_size", path, token_count))
    if vocab is not None:
        config["vocab_size"] = vocab
    return config


def block_of(name: str) -> str:
    """Where a GGUF tensor belongs in llama.cpp's placement (src/llama-model.cpp load_tensors):
    ``token_embd`` (the input layer), ``output`` (output.weight, output_norm), ``blk.N``, or ``input``."""
    if name.startswith("blk."):
        return ".".join(name.split(".")[:2])
    if name.startswith("token_embd."):
        return "token_embd"
    return "output" if name.startswith("output") else "input"


def spec_of(model: GgufModel) -> ModelSpec:
    """The ModelSpec of the mapped config, carrying the file's stored bytes per ggml type and per block."""
    spec = spec_from_config(model.config, model.path)
    blocks: dict[tuple[str, str], int] = {}
    for t in model.checkpoint.tensors:
        key = (block_of(t.name), t.dtype)
        blocks[key] = blocks.get(key, 0) + t.nbytes
    return dataclasses.replace(spec, stored_bytes_by_type=tuple(model.checkpoint.bytes_by_dtype().items()),
                               stored_bytes_by_block=tuple((b, k, n) for (b, k), n in blocks.items()))
