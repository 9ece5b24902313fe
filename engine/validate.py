"""Cross-field checks of a config: values that are each in range but disagree with each other.

Each check is one transformers (or Megatron-LM) itself makes, or one without which a
formula would count something that cannot exist (a negative number of full-attention
layers, a zero-width head). Single values are bounded by ``engine.limits``; these run on
the lists as read and on the finished :class:`~engine.spec.ModelSpec`.
"""

from __future__ import annotations

from engine.errors import ConfigError
from engine.limits import shown
from engine.spec import ModelSpec


def check_layer_types(where: str, types: list, layers: int) -> list:
    """``layer_types`` holds one entry per layer (transformers' ``configuration_utils.layer_type_validation``)."""
    if len(types) != layers:
        raise ConfigError(f"{where}: field 'layer_types' has {len(types):,} entries for num_hidden_layers "
                          f"{layers:,}; it needs one per layer")
    return types


def check_layer_indices(where: str, field: str, indices: list[int], layers: int) -> list[int]:
    """Layer indices (``mlp_only_layers``) each in ``[0, num_hidden_layers)``."""
    outside = [i for i in indices if i >= layers]
    if outside:
        raise ConfigError(f"{where}: field {field!r} names layer {shown(outside[0])}, but the model has "
                          f"num_hidden_layers {layers:,} (indices 0 to {layers - 1:,})")
    return indices


def check_heads_divide(where: str, hidden: int, heads: int, hidden_field: str, heads_field: str) -> None:
    """Where the family derives head_dim = hidden / heads, the heads must divide the width
    (transformers' ``GPT2Attention.__init__`` and ``FalconAttention.__init__`` raise otherwise)."""
    if hidden % heads:
        raise ConfigError(f"{where}: field {hidden_field!r} {hidden:,} is not a multiple of {heads_field!r} "
                          f"{heads:,}; the head width is {hidden_field} / {heads_field}")


def check_spec(spec: ModelSpec, where: str) -> ModelSpec:
    """A finished spec whose parts agree: heads, key/value heads, experts per layer group.

    (The groups' layer counts add up to ``num_hidden_layers``: ModelSpec checks that itself.)
    """
    if spec.head_dim < 1:
        raise ConfigError(f"{where}: head_dim is {spec.head_dim} (hidden_size {spec.hidden_size:,} over "
                          f"num_attention_heads {spec.num_attention_heads:,}); a head needs a width of at least 1")
    heads, kv = spec.num_attention_heads, spec.num_key_value_heads
    if not spec.layer_count(mixer="mla") and (kv > heads or heads % kv):
        raise ConfigError(f"{where}: num_attention_heads {heads:,} is not a multiple of the {kv:,} key/value heads")
    for group in spec.layers:
        options = group.mlp_args
        experts, per_token = options.get("num_experts"), options.get("num_experts_per_tok")
        if experts is not None and (per_token or 0) > experts:
            raise ConfigError(f"{where}: num_experts_per_tok {per_token:,} is more than the {experts:,} experts")
    return spec
