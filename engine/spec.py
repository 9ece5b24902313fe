"""ModelSpec: the facts of one architecture, read from a plain config.json dict.

A spec holds numbers and layer groups (mixer kind x MLP kind x count, each kind with its
options; formulas/layers/ defines the kinds), nothing symbolic; ``engine.architecture``
sums the kinds' tensors, caches and facts over the groups. Field names follow transformers' configs; a field
is derived only when the config leaves it out, as transformers derives it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from engine import limits
from engine.errors import ConfigError
from formulas.options import MIXER_KINDS, MLP_KINDS


Options = tuple[tuple[str, object], ...]


def _options(value: object) -> Options:
    """A kind's options as sorted (name, value) pairs: frozen, hashable, order-free."""
    items = value.items() if isinstance(value, dict) else value
    return tuple(sorted(items))


@dataclass(frozen=True)
class LayerGroup:
    """``count`` layers of one (mixer kind, MLP kind) pair with the same options.

    Kinds and their options are the entries of formulas/layers/ (``attention`` with its
    biases and qk-norm, ``sliding_attention`` with ``sliding_window``, ``mla`` with its
    ranks; ``dense``, ``moe`` with its experts, ``none``). Options may be given as dicts.
    """

    mixer: str
    mlp: str
    count: int
    mixer_options: Options = ()
    mlp_options: Options = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "mixer_options", _options(self.mixer_options))
        object.__setattr__(self, "mlp_options", _options(self.mlp_options))
        if self.mixer not in MIXER_KINDS or self.mlp not in MLP_KINDS:
            raise ValueError(f"unknown layer kind ({self.mixer!r}, {self.mlp!r}); mixers: "
                             f"{', '.join(MIXER_KINDS)}; MLPs: {', '.join(MLP_KINDS)}")
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1:
            raise ValueError(f"a layer group holds at least one layer, got count {self.count!r}")

    @property
    def mixer_args(self) -> dict[str, object]:
        return dict(self.mixer_options)

    @property
    def mlp_args(self) -> dict[str, object]:
        return dict(self.mlp_options)
from engine.limits import check_config_value, check_list_length


@dataclass(frozen=True)
class ModelSpec:
    """The shapes every layer shares, plus ``layers``: the (mixer, MLP, count) groups.

    ``layers`` left empty means ``num_hidden_layers`` plain Llama-style layers: attention
    without biases and a gated dense MLP. The groups' counts add up to the layer count.
    """

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
    layers: tuple[LayerGroup, ...] = ()
    # what every block holds beside its mixer and MLP
    norms_per_layer: int = 2
    layer_norm_bias: bool = False  # LayerNorm (weight and bias) rather than RMSNorm
    max_position_embeddings: int | None = None  # set only for learned position tables
    lm_head_bias: bool = False  # Phi, PhiMoE: the output projection has a bias
    # rotary position embedding (vLLM's cos/sin cache, formulas/frameworks/vllm.py)
    context_length: int | None = None  # config max_position_embeddings of a rotary model
    rope_cache_positions: int | None = None  # rows of the cos/sin cache (scaled by rope_scaling)
    rotary_dim: int | None = None  # rotary dimensions of one head
    # the checkpoint's own storage, when the config states it
    torch_dtype: str | None = None
    # the recurrent (SSM) state dtype the config asks a server for: Nemotron-H's
    # ``mamba_ssm_cache_dtype``, which vLLM reads (transformers keeps the state in fp32)
    ssm_cache_dtype: str | None = None
    quantization: dict = field(default_factory=dict, compare=False, hash=False)
    # bytes a GGUF file stores per ggml type (("Q4_K", n), ...); set by engine.gguf_file's callers
    stored_bytes_by_type: tuple[tuple[str, int], ...] = ()
    # the same bytes as (block, ggml type, bytes): block "token_embd", "output" (output and
    # output_norm), "blk.N" (layer N) or "input" (anything else); where llama.cpp places each
    stored_bytes_by_block: tuple[tuple[str, str, int], ...] = ()
    # tensors outside the layer groups, as (component/name, parameters): a multimodal
    # checkpoint's vision tower and projector, Mllama's extra embedding rows
    extra_tensors: tuple[tuple[str, int], ...] = ()
    # the vision tower's shape fields a serving profile reads (Mllama: engine/profiles/vllm_mllama.py)
    vision_shape: tuple[tuple[str, int], ...] = ()

    def __post_init__(self) -> None:
        groups = tuple(self.layers) or (LayerGroup("attention", "dense", self.num_hidden_layers),)
        object.__setattr__(self, "layers", groups)
        total = sum(g.count for g in groups)
        if total != self.num_hidden_layers:
            raise ValueError(f"layer groups hold {total} layers, num_hidden_layers is {self.num_hidden_layers}")

    def layer_count(self, *, mixer: str | None = None, mlp: str | None = None) -> int:
        """Layers whose mixer (and/or MLP) is of the given kind."""
        return sum(g.count for g in self.layers if mixer in (None, g.mixer) and mlp in (None, g.mlp))

    @property
    def is_moe(self) -> bool:
        return self.layer_count(mlp="moe") > 0

    @property
    def architecture(self) -> str:
        """A one-word description: MHA, GQA, MQA or MLA, with MoE and sliding window."""
        recurrent = [k for k in ("gated_deltanet", "mamba", "mamba2", "attention_mamba2") if self.layer_count(mixer=k)]
        if recurrent and not self.layer_count(mixer="attention") and recurrent != ["attention_mamba2"]:
            return "+".join([*recurrent, *(["MoE"] if self.is_moe else [])])  # no attention layer (issue 13)
        if self.layer_count(mixer="mla"):
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
        if self.layer_count(mixer="sliding_attention"):
            parts.append("sliding-window")
        return "+".join(parts + recurrent)


# --- reading config values --------------------------------------------------------------

MAX_SHOWN = 60  # characters of a bad value an error message repeats


def shown(value: object) -> str:
    """``repr(value)``, cut to a readable length: a 1 MB string makes no 1 MB error line."""
    return limits.shown(value, MAX_SHOWN)

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
    return check_config_value(where, key, value)  # engine/limits.py: the bound of this kind of field


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
    check_list_length(where, name, value)
    return [config_int({name: v}, name, minimum=minimum, where=where) for v in value]
