"""Config parsers of the recurrent and hybrid families (issue 13): Qwen3-Next (Gated DeltaNet),
Mamba-1, Mamba-2 and the hybrids Jamba, Nemotron-H, Bamba, Granite-4.0-H
(``granitemoehybrid``) and Falcon-H1.

Each reads the field names of its transformers 5.24 config class
(``configuration_<family>.py``) with that class's defaults, and builds the layer groups:
which mixer kind (``attention``, ``gated_deltanet``, ``mamba``, ``mamba2``,
``attention_mamba2``, ``none``) and MLP kind (``dense``, ``moe``, ``none``) each layer has
(formulas/layers/). A layer pattern value it does not know is an error naming the field.
"""

from __future__ import annotations

import math

from engine.errors import ConfigError
from engine.family_fields import checkpoint_dtype, common_fields, layer_groups, where
from engine.spec import ModelSpec, config_bool, config_int, config_int_list, shown
from engine.validate import check_layer_indices

GATED = {"gated": True}


def _rank(config: dict, name: str, field: str, hidden: int, default: object = "auto") -> int:
    """A Mamba time-step rank: an integer, or ``"auto"`` = ``ceil(h / 16)`` (MambaConfig, JambaConfig)."""
    value = config.get(field, default)
    if value == "auto" or value is None:
        return math.ceil(hidden / 16)
    return config_int(config, field, where=where(name))


def _types(config: dict, name: str, field: str, default: list[str], known: dict[str, str]) -> list[str]:
    """Per-layer kinds from the list ``field`` (or ``default``), mapped through ``known``;
    an unknown value is an error naming the field and the value."""
    value = config.get(field)
    types = default if value is None else value
    if not isinstance(types, list) or not all(isinstance(t, str) for t in types):
        raise ConfigError(f"{where(name)}: field {field!r} must be a list of strings, got {shown(types)}")
    for t in types:
        if t not in known:
            raise ConfigError(f"{where(name)}: field {field!r} holds layer type {shown(t)}; known: {', '.join(known)}")
    return [known[t] for t in types]


def _no_window(config: dict, name: str) -> None:
    """These families' attention layers read every token; a ``sliding_window`` (or Qwen's
    ``use_sliding_window``) would change the cache, and is not modelled here: an error naming it."""
    for field in ("sliding_window", "use_sliding_window"):
        if config.get(field) not in (None, False):
            raise ConfigError(f"{where(name)}: field {field!r} ({shown(config[field])}) is not modelled for "
                              f"model_type {shown(config['model_type'])}")


def _mamba2(config: dict, name: str, hidden: int, fields: dict[str, str], defaults: dict[str, int],
            inner: int | None = None) -> dict:
    """Mamba-2 options from a family's field names (``fields``: option -> config field); the
    heads times their width must be the mixer's inner width (``inner``, when the family sets it)."""
    w = where(name)
    sizes = {opt: config_int(config, field, default=defaults.get(opt), where=w)
             for opt, field in fields.items() if opt in ("num_heads", "head_dim", "n_groups", "state_size", "conv_kernel")}
    if inner is not None and sizes["num_heads"] * sizes["head_dim"] != inner:
        raise ConfigError(f"{w}: {fields['num_heads']} {sizes['num_heads']:,} x {fields['head_dim']} "
                          f"{sizes['head_dim']:,} is not the Mamba-2 inner width {inner:,}")
    flags = {opt: config_bool(config, field, defaults.get(opt, False), w)
             for opt, field in fields.items() if opt in ("proj_bias", "conv_bias", "gated_norm", "out_proj_bias")}
    return {**sizes, **flags}


def _no_attention_fields(config: dict, name: str, *, hidden: int, layers: int, inner: int) -> dict:
    """The ModelSpec fields of an attention-free model (Mamba): one nominal head of width 1,
    ``intermediate_size`` = the mixer's inner width."""
    w = where(name)
    return dict(name=name, model_type=config["model_type"], hidden_size=hidden, num_hidden_layers=layers,
                num_attention_heads=1, num_key_value_heads=1, head_dim=1, intermediate_size=inner,
                vocab_size=config_int(config, "vocab_size", where=w), torch_dtype=checkpoint_dtype(config))


def parse_mamba(config: dict, name: str) -> ModelSpec:
    """Mamba-1 (MambaConfig): ``d_in = expand h``, one RMSNorm per layer, tied head."""
    w = where(name)
    hidden = config_int(config, "hidden_size", "d_model", where=w)
    layers = config_int(config, "num_hidden_layers", "n_layer", where=w)
    inner = config_int(config, "intermediate_size", default=int(config_int(config, "expand", default=2, where=w) * hidden), where=w)
    mixer = dict(intermediate_size=inner, state_size=config_int(config, "state_size", default=16, where=w),
                 time_step_rank=_rank(config, name, "time_step_rank", hidden),
                 conv_kernel=config_int(config, "conv_kernel", default=4, where=w),
                 proj_bias=config_bool(config, "use_bias", False, w), conv_bias=config_bool(config, "use_conv_bias", True, w))
    return ModelSpec(**_no_attention_fields(config, name, hidden=hidden, layers=layers, inner=inner),
                     tie_word_embeddings=config_bool(config, "tie_word_embeddings", True, w), norms_per_layer=1,
                     layers=layer_groups(["mamba"] * layers, ["none"] * layers, {"mamba": mixer}, {"none": {}}))


MAMBA2_FIELDS = {"num_heads": "num_heads", "head_dim": "head_dim", "n_groups": "n_groups", "state_size": "state_size",
                 "conv_kernel": "conv_kernel", "proj_bias": "use_bias", "conv_bias": "use_conv_bias"}
MAMBA2_DEFAULTS = {"num_heads": 128, "head_dim": 64, "n_groups": 8, "state_size": 128, "conv_kernel": 4, "conv_bias": True}


def parse_mamba2(config: dict, name: str) -> ModelSpec:
    """Mamba-2 (Mamba2Config): ``num_heads x head_dim = expand h``, one RMSNorm per layer."""
    w = where(name)
    hidden = config_int(config, "hidden_size", where=w)
    layers = config_int(config, "num_hidden_layers", where=w)
    inner = int(config_int(config, "expand", default=2, where=w) * hidden)
    mixer = _mamba2(config, name, hidden, MAMBA2_FIELDS, MAMBA2_DEFAULTS, inner)
    return ModelSpec(**_no_attention_fields(config, name, hidden=hidden, layers=layers, inner=inner),
                     tie_word_embeddings=config_bool(config, "tie_word_embeddings", False, w), norms_per_layer=1,
                     layers=layer_groups(["mamba2"] * layers, ["none"] * layers, {"mamba2": mixer}, {"none": {}}))


def _qwen3_next_moe(config: dict, name: str, layers: int) -> tuple[list[str], dict]:
    """(each layer's MLP kind, MoE options): MoE unless in ``mlp_only_layers`` or off
    ``decoder_sparse_step`` (modeling_qwen3_next.py ``Qwen3NextDecoderLayer``)."""
    w = where(name)
    moe = dict(num_experts=config_int(config, "num_experts", default=512, where=w),
               num_experts_per_tok=config_int(config, "num_experts_per_tok", default=10, where=w),
               moe_intermediate_size=config_int(config, "moe_intermediate_size", default=512, where=w),
               shared_expert_intermediate_size=config_int(config, "shared_expert_intermediate_size", default=512, where=w),
               shared_expert_gate=True)
    step = config_int(config, "decoder_sparse_step", default=1, where=w)
    dense = set(check_layer_indices(w, "mlp_only_layers", config_int_list(config, "mlp_only_layers", w), layers))
    return ["moe" if i not in dense and (i + 1) % step == 0 else "dense" for i in range(layers)], moe


def parse_qwen3_next(config: dict, name: str) -> ModelSpec:
    """Qwen3-Next: Gated DeltaNet layers, every ``full_attention_interval``-th layer output-gated
    attention with qk-norm; MoE with a gated shared expert."""
    w = where(name)
    _no_window(config, name)
    fields = common_fields(config, name, head_dim_default=256)
    layers = fields["num_hidden_layers"]
    interval = config_int(config, "full_attention_interval", default=4, where=w)
    default = ["full_attention" if (i + 1) % interval == 0 else "linear_attention" for i in range(layers)]
    mixers = _types(config, name, "layer_types", default, {"full_attention": "attention", "linear_attention": "gated_deltanet"})
    if len(mixers) != layers:
        raise ConfigError(f"{w}: field 'layer_types' has {len(mixers)} entries for {layers} layers")
    bias = config_bool(config, "attention_bias", False, w)
    linear = {opt: config_int(config, opt, default=d, where=w) for opt, d in (
        ("linear_num_key_heads", 16), ("linear_num_value_heads", 32), ("linear_key_head_dim", 128),
        ("linear_value_head_dim", 128), ("linear_conv_kernel_dim", 4))}
    mixer_options = {"attention": {"qkv_bias": bias, "out_bias": bias, "qk_norm": True, "output_gate": True},
                     "gated_deltanet": linear}
    mlps, moe = _qwen3_next_moe(config, name, layers)
    return ModelSpec(**fields, tie_word_embeddings=config_bool(config, "tie_word_embeddings", False, w),
                     layers=layer_groups(mixers, mlps, mixer_options, {"dense": GATED, "moe": moe}))


def parse_jamba(config: dict, name: str) -> ModelSpec:
    """Jamba: Mamba-1 layers (with inner RMSNorms), attention at layer i when
    ``i % attn_layer_period == attn_layer_offset``; MoE when ``i % expert_layer_period ==
    expert_layer_offset`` and ``num_experts > 1`` (configuration_jamba.py ``layers_block_type``,
    ``layers_num_experts``)."""
    w = where(name)
    _no_window(config, name)
    fields = common_fields(config, name)
    hidden, layers = fields["hidden_size"], fields["num_hidden_layers"]
    period = {f: config_int(config, f, default=d, minimum=m, where=w) for f, d, m in (
        ("attn_layer_period", 8, 1), ("attn_layer_offset", 4, 0), ("expert_layer_period", 2, 1), ("expert_layer_offset", 1, 0))}
    experts = config_int(config, "num_experts", "num_local_experts", default=16, where=w)  # JambaConfig.attribute_map
    mixers = ["attention" if i % period["attn_layer_period"] == period["attn_layer_offset"] else "mamba" for i in range(layers)]
    mlps = ["moe" if experts > 1 and i % period["expert_layer_period"] == period["expert_layer_offset"] else "dense"
            for i in range(layers)]
    mamba = dict(intermediate_size=config_int(config, "mamba_expand", default=2, where=w) * hidden,
                 state_size=config_int(config, "mamba_d_state", default=16, where=w),
                 time_step_rank=_rank(config, name, "mamba_dt_rank", hidden),
                 conv_kernel=config_int(config, "mamba_d_conv", default=4, where=w),
                 proj_bias=config_bool(config, "mamba_proj_bias", False, w),
                 conv_bias=config_bool(config, "mamba_conv_bias", True, w), inner_layernorms=True)
    moe = dict(num_experts=experts, num_experts_per_tok=config_int(config, "num_experts_per_tok", default=2, where=w),
               moe_intermediate_size=fields["intermediate_size"])
    return ModelSpec(**fields, tie_word_embeddings=config_bool(config, "tie_word_embeddings", False, w),
                     layers=layer_groups(mixers, mlps, {"attention": {}, "mamba": mamba}, {"dense": GATED, "moe": moe}))


BAMBA_FIELDS = {"num_heads": "mamba_n_heads", "head_dim": "mamba_d_head", "n_groups": "mamba_n_groups",
                "state_size": "mamba_d_state", "conv_kernel": "mamba_d_conv", "proj_bias": "mamba_proj_bias",
                "conv_bias": "mamba_conv_bias"}
BAMBA_DEFAULTS = {"num_heads": 128, "head_dim": 64, "n_groups": 1, "state_size": 256, "conv_kernel": 4, "conv_bias": True}


def parse_bamba(config: dict, name: str) -> ModelSpec:
    """Bamba: Mamba-2 layers, attention at ``attn_layer_indices``; gated dense MLP in every layer."""
    w = where(name)
    _no_window(config, name)
    fields = common_fields(config, name)
    hidden, layers = fields["hidden_size"], fields["num_hidden_layers"]
    attention_at = set(check_layer_indices(w, "attn_layer_indices", config_int_list(config, "attn_layer_indices", w), layers))
    inner = config_int(config, "mamba_expand", default=2, where=w) * hidden
    mamba = _mamba2(config, name, hidden, BAMBA_FIELDS, BAMBA_DEFAULTS, inner)
    bias = config_bool(config, "attention_bias", False, w)
    mixers = ["attention" if i in attention_at else "mamba2" for i in range(layers)]
    return ModelSpec(**fields, tie_word_embeddings=config_bool(config, "tie_word_embeddings", False, w),
                     layers=layer_groups(mixers, ["dense"] * layers, {"attention": {"qkv_bias": bias, "out_bias": bias},
                                                                      "mamba2": mamba},
                                         {"dense": {"gated": True, "bias": config_bool(config, "mlp_bias", False, w)}}))


def parse_granitemoehybrid(config: dict, name: str) -> ModelSpec:
    """Granite-4.0-H: ``layer_types`` of ``mamba`` / ``attention`` (default all mamba); every
    layer's MLP is ``num_local_experts`` experts plus the gated ``shared_mlp``, or only the
    shared MLP when there are no experts (modeling_granitemoehybrid.py ``GraniteMoeHybridDecoderLayer``)."""
    w = where(name)
    _no_window(config, name)
    fields = common_fields(config, name)
    hidden, layers = fields["hidden_size"], fields["num_hidden_layers"]
    known = {"mamba": "mamba2", "linear_attention": "mamba2", "attention": "attention", "full_attention": "attention"}
    field = "layers_block_type" if config.get("layer_types") is None and "layers_block_type" in config else "layer_types"
    mixers = _types(config, name, field, ["mamba"] * layers, known)  # attribute_map: layers_block_type -> layer_types
    if len(mixers) != layers:
        raise ConfigError(f"{w}: field 'layer_types' has {len(mixers)} entries for {layers} layers")
    inner = config_int(config, "mamba_expand", default=2, where=w) * hidden
    mamba = _mamba2(config, name, hidden, BAMBA_FIELDS, BAMBA_DEFAULTS, inner)
    bias = config_bool(config, "attention_bias", False, w)
    shared = config_int(config, "shared_intermediate_size", default=1024, where=w)
    experts = config_int(config, "num_local_experts", default=8, minimum=0, where=w)
    if experts:
        moe = dict(num_experts=experts, num_experts_per_tok=config_int(config, "num_experts_per_tok", default=2, where=w),
                   moe_intermediate_size=fields["intermediate_size"], shared_expert_intermediate_size=shared)
        mlps, mlp_options = ["moe"] * layers, {"moe": moe}
    else:  # only the shared MLP: a gated dense MLP of its width
        fields["intermediate_size"] = shared
        mlps, mlp_options = ["dense"] * layers, {"dense": GATED}
    return ModelSpec(**fields, tie_word_embeddings=config_bool(config, "tie_word_embeddings", False, w),
                     layers=layer_groups(mixers, mlps, {"attention": {"qkv_bias": bias, "out_bias": bias}, "mamba2": mamba},
                                         mlp_options))


FALCON_H1_FIELDS = {"num_heads": "mamba_n_heads", "head_dim": "mamba_d_head", "n_groups": "mamba_n_groups",
                    "state_size": "mamba_d_state", "conv_kernel": "mamba_d_conv", "proj_bias": "mamba_proj_bias",
                    "conv_bias": "mamba_conv_bias", "gated_norm": "mamba_rms_norm", "out_proj_bias": "projectors_bias"}
FALCON_H1_DEFAULTS = {"num_heads": 128, "head_dim": 64, "n_groups": 1, "state_size": 256, "conv_kernel": 4,
                      "conv_bias": True}


def parse_falcon_h1(config: dict, name: str) -> ModelSpec:
    """Falcon-H1: every layer runs attention and Mamba-2 side by side (``attention_mamba2``),
    Mamba-2's inner width ``mamba_d_ssm`` (else ``mamba_expand h``); a gated dense MLP."""
    w = where(name)
    _no_window(config, name)
    fields = common_fields(config, name)
    hidden, layers = fields["hidden_size"], fields["num_hidden_layers"]
    inner = config_int(config, "mamba_d_ssm", default=config_int(config, "mamba_expand", default=2, where=w) * hidden, where=w)
    mamba = _mamba2(config, name, hidden, FALCON_H1_FIELDS, FALCON_H1_DEFAULTS, inner)
    bias = config_bool(config, "attention_bias", False, w)
    mixer = {"qkv_bias": bias, "out_bias": bias, **{f"mamba_{k}": v for k, v in mamba.items()}}
    return ModelSpec(**fields, tie_word_embeddings=config_bool(config, "tie_word_embeddings", False, w),
                     layers=layer_groups(["attention_mamba2"] * layers, ["dense"] * layers, {"attention_mamba2": mixer},
                                         {"dense": {"gated": True, "bias": config_bool(config, "mlp_bias", False, w)}}))


NEMOTRON_H_BLOCKS = {  # layer type -> (mixer kind, MLP kind): one mixer per NemotronHBlock
    "linear_attention": ("mamba2", "none"), "mamba": ("mamba2", "none"), "full_attention": ("attention", "none"),
    "attention": ("attention", "none"), "mlp": ("none", "dense"), "moe": ("none", "moe"),
}
NEMOTRON_H_PATTERN = {"M": "linear_attention", "*": "full_attention", "-": "mlp", "E": "moe"}
# vllm/config/cache.py MambaDType: the values vLLM's NemotronHForCausalLMConfig
# (model_executor/models/config.py update_mamba_ssm_cache_dtype) copies from the config's
# ``mamba_ssm_cache_dtype``; NemotronHConfig's default (and vLLM's when it is absent) is float32
SSM_CACHE_DTYPES = ("auto", "float32", "float16", "bfloat16")
NEMOTRON_H_FIELDS = {"num_heads": "mamba_num_heads", "head_dim": "mamba_head_dim", "n_groups": "n_groups",
                     "state_size": "ssm_state_size", "conv_kernel": "conv_kernel", "proj_bias": "use_bias",
                     "conv_bias": "use_conv_bias"}


# configuration_nemotron_h.py NemotronHConfig.__post_init__: legacy spellings that, when present,
# replace the field (mamba_n_groups -> n_groups, ...)
NEMOTRON_H_ALIASES = {"mamba_n_groups": "n_groups", "mamba_d_conv": "conv_kernel", "mamba_expand": "expand",
                      "mamba_conv_bias": "use_conv_bias", "mamba_chunk_size": "chunk_size"}


def _nemotron_h_types(config: dict, name: str) -> list[str]:
    """``layers_block_type`` (alias ``layer_types``), else the legacy ``hybrid_override_pattern``
    (``M`` mamba, ``*`` attention, ``-`` MLP, ``E`` MoE; configuration_nemotron_h.py ``_pattern_to_list``)."""
    for field in ("layers_block_type", "layer_types"):
        if config.get(field) is not None:
            return _types(config, name, field, [], {t: t for t in NEMOTRON_H_BLOCKS})
    pattern = config.get("hybrid_override_pattern")
    if pattern is None:
        return ["linear_attention", "moe", "full_attention", "mlp"]
    if not isinstance(pattern, str) or not pattern or any(c not in NEMOTRON_H_PATTERN for c in pattern):
        raise ConfigError(f"{where(name)}: field 'hybrid_override_pattern' must be a string of M, *, - and E, "
                          f"got {shown(pattern)}")
    return [NEMOTRON_H_PATTERN[c] for c in pattern]


def _ssm_cache_dtype(config: dict, name: str) -> str:
    """Nemotron-H's ``mamba_ssm_cache_dtype`` (default float32): the SSM state dtype vLLM serves
    with; transformers' own cache ignores it and keeps the state in fp32 (measured)."""
    value = config.get("mamba_ssm_cache_dtype")
    if value is None:
        return "float32"
    if value not in SSM_CACHE_DTYPES:
        raise ConfigError(f"{where(name)}: field 'mamba_ssm_cache_dtype' is {shown(value)}; "
                          f"known: {', '.join(SSM_CACHE_DTYPES)}")
    return value


def _nemotron_h_refusals(config: dict, name: str, types: list[str]) -> None:
    """Fields transformers 5.24 and vLLM build differently, or that neither reads into memsym's
    shapes: an error naming the field rather than one framework's answer."""
    w = where(name)
    if not types:
        raise ConfigError(f"{w}: the layer pattern is empty")
    if config.get("moe_latent_size") is not None:
        raise ConfigError(f"{w}: field 'moe_latent_size' ({shown(config['moe_latent_size'])}) adds latent "
                          "projections to the MoE layers; it is not modelled")
    if config.get("block_configs") is not None:  # vLLM get_nemotron_h_config_for_layer: per-layer shapes
        raise ConfigError(f"{w}: field 'block_configs' gives per-layer shapes; it is not modelled")
    if "moe" not in types:
        return
    if config_bool(config, "mlp_bias", False, w):  # NemotronHMoE: transformers biases the shared expert, vLLM not
        raise ConfigError(f"{w}: field 'mlp_bias' true with MoE layers: transformers 5.24 gives the shared expert "
                          "biases, vLLM does not; not modelled")
    shared = config.get("n_shared_experts", 1)
    if shared != 1:  # transformers builds one shared expert whatever it says; vLLM widens it n times
        raise ConfigError(f"{w}: field 'n_shared_experts' is {shown(shared)}: transformers 5.24 builds one shared "
                          "expert, vLLM that many; only 1 is modelled")


def parse_nemotron_h(config: dict, name: str) -> ModelSpec:
    """Nemotron-H: one mixer per layer (Mamba-2, attention, a relu2 MLP or a non-gated MoE with a
    shared expert and a correction-bias buffer) behind one RMSNorm; ``num_hidden_layers`` is the
    pattern's length (configuration_nemotron_h.py). Attention has no biases and the head is never
    tied, whatever ``attention_bias`` and ``tie_word_embeddings`` say: transformers 5.24's
    ``NemotronHAttention`` (bias=False) and ``NemotronHForCausalLM`` (``_tied_weights_keys = {}``),
    as vLLM's nemotron_h.py (``QKVParallelLinear(bias=False)``, its own ``ParallelLMHead``)."""
    w = where(name)
    _no_window(config, name)
    config = {**config, **{field: config[alias] for alias, field in NEMOTRON_H_ALIASES.items() if alias in config}}
    types = _nemotron_h_types(config, name)
    _nemotron_h_refusals(config, name, types)
    fields = common_fields({**config, "num_hidden_layers": len(types)}, name, head_dim_default=128)
    mamba = _mamba2(config, name, fields["hidden_size"], NEMOTRON_H_FIELDS, {**MAMBA2_DEFAULTS, "n_groups": 8})
    moe = dict(num_experts=config_int(config, "n_routed_experts", "num_local_experts", default=8, where=w),
               num_experts_per_tok=config_int(config, "num_experts_per_tok", default=2, where=w),
               moe_intermediate_size=config_int(config, "moe_intermediate_size", default=7688, where=w),
               shared_expert_intermediate_size=config_int(config, "moe_shared_expert_intermediate_size", default=7688, where=w),
               gated=False, router_correction_bias=True)
    mlp_bias = config_bool(config, "mlp_bias", False, w)
    blocks = [NEMOTRON_H_BLOCKS[t] for t in types]
    return ModelSpec(**fields, tie_word_embeddings=False, norms_per_layer=1, ssm_cache_dtype=_ssm_cache_dtype(config, name),
                     layers=layer_groups([b[0] for b in blocks], [b[1] for b in blocks],
                                         {"attention": {}, "mamba2": mamba, "none": {}},
                                         {"dense": {"gated": False, "bias": mlp_bias}, "moe": moe, "none": {}}))


PARSERS = {
    "qwen3_next": parse_qwen3_next,
    "mamba": parse_mamba,
    "mamba2": parse_mamba2,
    "jamba": parse_jamba,
    "nemotron_h": parse_nemotron_h,
    "bamba": parse_bamba,
    "granitemoehybrid": parse_granitemoehybrid,
    "falcon_h1": parse_falcon_h1,
}
