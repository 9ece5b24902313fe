"""Config fields every family parser shares: where an error points, the Llama-like common
fields, ``layer_types`` and the layer groups built from per-layer kinds.

The family parsers (engine/families.py and the ``engine/families_*.py`` modules) read their
configs through these, so a field is checked and named the same way in every family.
"""

from __future__ import annotations

from engine.errors import ConfigError
from engine.spec import LayerGroup, config_int, shown


def where(name: str) -> str:
    return f"config {name}"


def checkpoint_dtype(config: dict) -> str | None:
    value = config.get("torch_dtype", config.get("dtype"))
    return value if isinstance(value, str) else None


def common_fields(config: dict, name: str, *, head_dim_default: int | None = None) -> dict:
    """Fields every Llama-like config shares (transformers' LlamaConfig semantics)."""
    w = where(name)
    hidden = config_int(config, "hidden_size", where=w)
    heads = config_int(config, "num_attention_heads", where=w)
    layers = config_int(config, "num_hidden_layers", where=w)
    kv_heads = config_int(config, "num_key_value_heads", default=heads, where=w)
    if heads % kv_heads:
        raise ConfigError(f"{w}: num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}")
    default_head_dim = head_dim_default if head_dim_default is not None else hidden // heads
    head = config_int(config, "head_dim", default=default_head_dim, where=w)
    return dict(
        name=name,
        model_type=config["model_type"],
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head,
        intermediate_size=config_int(config, "intermediate_size", where=w),
        vocab_size=config_int(config, "vocab_size", where=w),
        torch_dtype=checkpoint_dtype(config),
        quantization=config.get("quantization_config") if isinstance(config.get("quantization_config"), dict) else {},
        **rotary_fields(config, w, head),
    )


# rope_scaling types whose cos/sin cache vLLM extends to max_position x factor
# (vllm/model_executor/layers/rotary_embedding: LinearScalingRotaryEmbedding,
# DynamicNTKScalingRotaryEmbedding, DeepseekScalingRotaryEmbedding, YaRNScalingRotaryEmbedding).
SCALED_ROPE_CACHE = ("linear", "dynamic", "yarn", "deepseek_yarn")


def rotary_fields(config: dict, where_: str, head: int) -> dict:
    """Context length and the rotary cos/sin cache's shape, for serving-engine profiles.

    Only serving profiles read these; a malformed value leaves them unknown (None) rather
    than refusing a config every other profile can use.
    """
    try:
        positions = config_int(config, "max_position_embeddings", default=None, where=where_)
        scaling = config.get("rope_scaling") if isinstance(config.get("rope_scaling"), dict) else {}
        cache, factor = positions, scaling.get("factor")
        kind = scaling.get("rope_type", scaling.get("type"))
        if kind in SCALED_ROPE_CACHE and isinstance(factor, (int, float)) and not isinstance(factor, bool) and factor >= 1:
            base = config_int(scaling, "original_max_position_embeddings", default=positions, where=where_)
            cache = int(base * factor) if base is not None else None
        partial = config.get("partial_rotary_factor", 1)
        if isinstance(partial, bool) or not isinstance(partial, (int, float)) or not 0 < partial <= 1:
            partial = 1
        rope = config_int(config, "qk_rope_head_dim", default=int(head * partial), where=where_)
    except ConfigError:
        return dict(context_length=None, rope_cache_positions=None, rotary_dim=None)
    return dict(context_length=positions, rope_cache_positions=cache, rotary_dim=rope)


def layer_types(config: dict, name: str, default_types: list[str]) -> list[str]:
    """Each layer's attention kind from ``layer_types`` or the family's default."""
    w = where(name)
    types = config.get("layer_types")
    if types is None:
        types = default_types
    if not isinstance(types, list) or not all(isinstance(t, str) for t in types):
        raise ConfigError(f"{w}: field 'layer_types' must be a list of strings, got {shown(types)}")
    if len(types) != len(default_types):
        raise ConfigError(f"{w}: field 'layer_types' has {len(types)} entries for {len(default_types)} layers")
    return types


def mixer_kinds(config: dict, name: str, default_types: list[str], **attention) -> tuple[list[str], dict[str, dict]]:
    """(each layer's mixer kind, each kind's options): ``sliding_attention`` where
    ``layer_types`` says so (it then needs ``sliding_window``), else ``attention``."""
    types = layer_types(config, name, default_types)
    kinds = ["sliding_attention" if t == "sliding_attention" else "attention" for t in types]
    options = {"attention": attention}
    if "sliding_attention" in kinds:
        window = config_int(config, "sliding_window", where=where(name))
        options["sliding_attention"] = {**attention, "sliding_window": window}
    return kinds, options


ATTENTION_LAYER_TYPES = ("full_attention", "sliding_attention")


def attention_kinds(config: dict, name: str, default_types: list[str], **attention) -> tuple[list[str], dict[str, dict]]:
    """``mixer_kinds`` for a family whose layers are all attention: a ``layer_types`` value
    other than ``full_attention`` / ``sliding_attention`` (``chunked_attention``,
    ``linear_attention``, ...) changes shapes or the cache, so it is an error naming it."""
    types = layer_types(config, name, default_types)
    unknown = [t for t in types if t not in ATTENTION_LAYER_TYPES]
    if unknown:
        raise ConfigError(f"{where(name)}: field 'layer_types' holds {shown(unknown[0])}; model_type "
                          f"{shown(config.get('model_type'))} has only {' and '.join(ATTENTION_LAYER_TYPES)} layers")
    return mixer_kinds(config, name, default_types, **attention)


def layer_groups(mixers: list[str], mlps, mixer_options: dict[str, dict], mlp_options: dict[str, dict]):
    """One LayerGroup per distinct (mixer, MLP) pair of the per-layer kinds, first seen first."""
    counts: dict[tuple[str, str], int] = {}
    for pair in zip(mixers, mlps):
        counts[pair] = counts.get(pair, 0) + 1
    return tuple(LayerGroup(m, f, n, mixer_options[m], mlp_options[f]) for (m, f), n in counts.items())


def dense_layers(mixers: list[str], mixer_options: dict[str, dict], **mlp) -> tuple:
    """Groups of a model whose every MLP is dense (``mlp``: its options)."""
    return layer_groups(mixers, ["dense"] * len(mixers), mixer_options, {"dense": {"gated": True, **mlp}})


def all_sliding_if_window(config: dict) -> list[str]:
    """transformers' DynamicCache default: every layer slides when ``sliding_window`` is set."""
    kind = "sliding_attention" if config.get("sliding_window") is not None else "full_attention"
    return [kind] * int(config["num_hidden_layers"])


def qwen_layer_types(config: dict, where: str = "config") -> list[str]:
    """Qwen2/Qwen3: layers from ``max_window_layers`` on slide, if ``use_sliding_window``."""
    layers = int(config["num_hidden_layers"])
    if not config.get("use_sliding_window") or config.get("sliding_window") is None:
        return ["full_attention"] * layers
    first = config_int(config, "max_window_layers", default=layers, minimum=0, where=where)
    return ["sliding_attention" if i >= first else "full_attention" for i in range(layers)]


def local_experts(config: dict, fields: dict, w: str) -> dict:
    """The MoE options of Mixtral-style experts (modeling_mixtral.py ``MixtralSparseMoeBlock``,
    and GraniteMoE / PhiMoE the same): ``num_local_experts`` experts of width
    ``intermediate_size``, ``num_experts_per_tok`` routed per token."""
    return dict(num_experts=config_int(config, "num_local_experts", where=w),
                num_experts_per_tok=config_int(config, "num_experts_per_tok", where=w),
                moe_intermediate_size=fields["intermediate_size"])


def renamed(config: dict, aliases: dict[str, str], w: str) -> dict:
    """``config`` with each alias's value under the field it names (a config class's
    ``attribute_map``: ``{"num_local_experts": "n_routed_experts"}``), so a default for the
    field cannot hide it; an alias and its field that disagree are an error naming both."""
    out = dict(config)
    for alias, field in aliases.items():
        if config.get(alias) is None:
            continue
        if config.get(field) is not None and config[field] != config[alias]:
            raise ConfigError(f"{w}: fields {alias!r} ({shown(config[alias])}) and {field!r} ({shown(config[field])}) "
                              "name one value and disagree")
        out[field] = config[alias]
    return out


def refuse_window(config: dict, w: str) -> None:
    """A family whose attention reads every token: a ``sliding_window`` would still make
    transformers' ``DynamicCache`` keep only the window (``DynamicSlidingWindowLayer``), a model
    no framework runs as configured; an error naming the field rather than either answer."""
    if config.get("sliding_window") is not None:
        raise ConfigError(f"{w}: field 'sliding_window' ({shown(config['sliding_window'])}) is not modelled for "
                          f"model_type {shown(config.get('model_type'))}")
