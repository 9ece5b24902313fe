"""ModelSpec: the facts of one architecture, read from a plain config.json dict.

A spec holds numbers and layout flags, nothing symbolic; ``engine.architecture`` turns it
into parameter tensors and symbol values. Field names follow transformers' configs; a field
is derived only when the config leaves it out, as transformers derives it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from engine.errors import ConfigError


@dataclass(frozen=True)
class ModelSpec:
    name: str
    model_type: str
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool
    # layout of each layer
    qkv_bias: bool = False
    out_bias: bool = False
    mlp_bias: bool = False
    gated_mlp: bool = True
    fused_qkv: bool = False
    fused_gate_up: bool = False
    qk_norm: bool = False
    norms_per_layer: int = 2
    layer_norm_bias: bool = False  # LayerNorm (weight and bias) rather than RMSNorm
    max_position_embeddings: int | None = None  # set only for learned position tables
    # sliding-window attention
    sliding_window: int | None = None
    num_sliding_layers: int = 0
    # transformers' Falcon (new_decoder_architecture) caches K/V repeated to every query head
    kv_cache_expanded: bool = False
    # mixture of experts
    num_moe_layers: int = 0
    num_experts: int | None = None
    num_experts_per_tok: int | None = None
    moe_intermediate_size: int | None = None
    num_shared_experts: int = 0
    router_correction_bias: bool = False
    # multi-head latent attention
    mla: bool = False
    q_lora_rank: int | None = None
    kv_lora_rank: int | None = None
    qk_nope_head_dim: int | None = None
    qk_rope_head_dim: int | None = None
    v_head_dim: int | None = None
    # the checkpoint's own storage, when the config states it
    torch_dtype: str | None = None
    quantization: dict = field(default_factory=dict, compare=False, hash=False)
    # bytes a GGUF file stores per ggml type (("Q4_K", n), ...); set by engine.gguf_file's callers
    stored_bytes_by_type: tuple[tuple[str, int], ...] = ()

    @property
    def is_moe(self) -> bool:
        return self.num_moe_layers > 0

    @property
    def architecture(self) -> str:
        """A one-word description: MHA, GQA, MQA or MLA, with MoE and sliding window."""
        if self.mla:
            attention = "MLA"
        elif self.num_key_value_heads == self.num_attention_heads:
            attention = "MHA"
        elif self.num_key_value_heads == 1:
            attention = "MQA"
        else:
            attention = "GQA"
        parts = [attention]
        if self.is_moe:
            parts.append("MoE")
        if self.num_sliding_layers:
            parts.append("sliding-window")
        return "+".join(parts)


# --- reading config values --------------------------------------------------------------

MAX_SHOWN = 60  # characters of a bad value an error message repeats


def shown(value: object) -> str:
    """``repr(value)``, cut to a readable length: a 1 MB string makes no 1 MB error line."""
    try:
        text = repr(value)
    except RecursionError:
        text = f"<{type(value).__name__} nested too deep>"
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 3] + "..."

_MISSING = object()


def config_int(config: dict, name: str, *aliases: str, default=_MISSING, minimum: int = 1, where: str = "config"):
    """An integer field (first of ``name`` and ``aliases`` present), checked and named.

    Booleans, floats with a fraction, NaN/Infinity and strings are rejected: a config that
    says ``"hidden_size": "4096"`` or ``true`` is malformed, not a number to guess at.
    """
    for key in (name, *aliases):
        if key in config and config[key] is not None:
            value = config[key]
            break
    else:
        if default is _MISSING:
            raise ConfigError(f"{where}: missing field {name!r}")
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where}: field {key!r} must be an integer, got {shown(value)}")
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise ConfigError(f"{where}: field {key!r} must be an integer, got {shown(value)}")
        value = int(value)
    if value < minimum:
        raise ConfigError(f"{where}: field {key!r} must be >= {minimum}, got {shown(value)}")
    return value


def config_bool(config: dict, name: str, default: bool, where: str = "config") -> bool:
    """A boolean field; null means the default."""
    value = config.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: field {name!r} must be true or false, got {shown(value)}")
    return value


def config_int_list(config: dict, name: str, where: str = "config", minimum: int = 0) -> list[int]:
    """A list of integers (e.g. ``mlp_only_layers``); absent or null is empty."""
    value = config.get(name)
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(f"{where}: field {name!r} must be a list, got {shown(value)}")
    return [config_int({name: v}, name, minimum=minimum, where=where) for v in value]
