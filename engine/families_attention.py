"""Attention-only families of issue 13: gpt-oss, Gemma-1/3, Phi-1/2, OLMo-2, SmolLM3,
Granite (dense and MoE), GLM-4.5 MoE, Qwen2-MoE and PhiMoE.

One function per ``model_type``, reading the field names of that family's transformers
5.24 config class (``transformers/models/<family>/configuration_<family>.py``) and
building its layer groups from formulas/layers/ kinds; the tensor lists each follows are
the family's ``modeling_<family>.py`` module definitions. Where a config class's own
default differs from the Llama-style derivation of engine/family_fields.py
(``head_dim = h / a``, ``num_key_value_heads = a``), the class default is filled in
first (the ``*_DEFAULTS`` tables, each naming its class).
"""

from __future__ import annotations

from engine.errors import ConfigError, UnsupportedModelError
from engine.family_fields import (all_sliding_if_window, attention_kinds, common_fields, dense_layers, layer_groups,
                                  local_experts, renamed, where)
from engine.spec import ModelSpec, config_bool, config_int, config_int_list, shown
from engine.validate import check_layer_indices

# configuration_gpt_oss.py GptOssConfig: class defaults of the shape fields
GPT_OSS_DEFAULTS = {"head_dim": 64, "num_key_value_heads": 8, "sliding_window": 128, "num_experts_per_tok": 4}
# configuration_gemma3.py Gemma3TextConfig: every shape field (a text_config often states few)
GEMMA3_TEXT_DEFAULTS = {
    "vocab_size": 262_208, "hidden_size": 2304, "intermediate_size": 9216, "num_hidden_layers": 26,
    "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256, "sliding_window": 4096,
}
GEMMA3_SLIDING_PATTERN = 6  # Gemma3TextConfig.__post_init__: kwargs.get("sliding_window_pattern", 6)
# configuration_gemma.py GemmaConfig
GEMMA_DEFAULTS = {"head_dim": 256, "num_key_value_heads": 16}
# configuration_smollm3.py SmolLM3Config (4 KV heads; its __post_init__ sets a when null)
SMOLLM3_DEFAULTS = {"num_key_value_heads": 4}
SMOLLM3_NOPE_INTERVAL = 4  # SmolLM3Config.no_rope_layer_interval
# configuration_glm4_moe.py Glm4MoeConfig, configuration_qwen2_moe.py, configuration_phimoe.py
GLM4_MOE_DEFAULTS = {"num_key_value_heads": 8, "first_k_dense_replace": 1, "n_routed_experts": 128,
                     "num_experts_per_tok": 8, "moe_intermediate_size": 1408, "n_shared_experts": 1}
QWEN2_MOE_DEFAULTS = {"num_key_value_heads": 16, "max_window_layers": 28}
PHIMOE_DEFAULTS = {"num_key_value_heads": 8}


def with_defaults(config: dict, defaults: dict) -> dict:
    """``config`` with a config class's defaults for the fields it leaves out (a field
    given as null stays null: the class's ``__post_init__`` derivation then applies)."""
    return {**defaults, **config}


def _tied(config: dict, name: str, default: bool) -> bool:
    return config_bool(config, "tie_word_embeddings", default, where(name))


def parse_gpt_oss(config: dict, name: str) -> ModelSpec:
    """gpt-oss (modeling_gpt_oss.py): biased q/k/v/o with one sink logit per head
    (``GptOssAttention.sinks``), sliding window on layer i iff ``(i + 1) % 2``
    (``GptOssConfig.__post_init__``), every layer a MoE of ``num_local_experts`` biased
    experts of width ``intermediate_size`` behind a biased router.

    Parameters are logical elements, as transformers counts them; the published checkpoint
    stores the experts as MXFP4 blocks (``quantization_config`` is kept in
    ``ModelSpec.quantization`` for the stored-bytes formula of issue 13 deliverable 3).
    """
    w = where(name)
    config = with_defaults(config, GPT_OSS_DEFAULTS)
    fields = common_fields(config, name)
    layers = fields["num_hidden_layers"]
    default_types = ["sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(layers)]
    bias = config_bool(config, "attention_bias", True, w)
    mixers, options = attention_kinds(config, name, default_types, qkv_bias=bias, out_bias=bias, sinks=True)
    moe = dict(
        num_experts=config_int(config, "num_local_experts", "num_experts", where=w),  # GptOssConfig.attribute_map
        num_experts_per_tok=config_int(config, "num_experts_per_tok", where=w),
        moe_intermediate_size=fields["intermediate_size"],
        expert_bias=True,
        router_bias=True,
    )
    return ModelSpec(**fields, tie_word_embeddings=_tied(config, name, False),
                     layers=layer_groups(mixers, ["moe"] * layers, options, {"moe": moe}))


def parse_gemma3_text(config: dict, name: str) -> ModelSpec:
    """Gemma-3's language model (modeling_gemma3.py ``Gemma3TextModel``): q/k/v/o, RMSNorms
    of width ``d`` on queries and keys, four RMSNorms per layer, tied head; layer i slides
    iff ``(i + 1) % sliding_window_pattern`` (5 local : 1 global) unless ``layer_types``
    says otherwise. ``use_bidirectional_attention`` narrows the window to ``w // 2 + 1``
    (``Gemma3TextConfig.__post_init__``)."""
    w = where(name)
    config = with_defaults(config, GEMMA3_TEXT_DEFAULTS)
    if config_bool(config, "use_bidirectional_attention", False, w):
        config = {**config, "sliding_window": config_int(config, "sliding_window", where=w) // 2 + 1}
    fields = common_fields(config, name)
    pattern = config_int(config, "sliding_window_pattern", default=GEMMA3_SLIDING_PATTERN, where=w)
    default_types = ["sliding_attention" if (i + 1) % pattern else "full_attention"
                     for i in range(fields["num_hidden_layers"])]
    bias = config_bool(config, "attention_bias", False, w)
    mixers, options = attention_kinds(config, name, default_types, qkv_bias=bias, out_bias=bias, qk_norm=True)
    return ModelSpec(**fields, tie_word_embeddings=_tied(config, name, True), norms_per_layer=4,
                     layers=dense_layers(mixers, options))


def gemma3_language_model(config: dict, name: str) -> ModelSpec:
    """The language model of a multimodal Gemma-3 (``Gemma3ForConditionalGeneration``):
    its ``text_config`` read as ``gemma3_text``, with the checkpoint dtype and the head tie
    of the outer config (``Gemma3Config.tie_word_embeddings``, default true). The SigLIP
    vision tower and the projector are not part of this spec."""
    text = config.get("text_config")
    if text is None:
        text = {}
    if not isinstance(text, dict):
        raise ConfigError(f"{where(name)}: field 'text_config' must be an object, got {shown(text)}")
    outer = {key: config[key] for key in ("torch_dtype", "dtype", "tie_word_embeddings") if key in config}
    return parse_gemma3_text({**text, **outer, "model_type": "gemma3_text"}, name)


def parse_gemma3(config: dict, name: str) -> ModelSpec:
    """Multimodal Gemma-3 always holds a SigLIP vision tower (``Gemma3Config`` fills a
    default ``vision_config``), which memsym does not count yet: refused, naming the
    language model's way in (``gemma3_language_model``; model_type ``gemma3_text``)."""
    raise UnsupportedModelError(
        f"{where(name)}: model_type 'gemma3' (Gemma3ForConditionalGeneration) includes a SigLIP vision tower "
        f"and projector that memsym does not count yet; its language model alone is the 'text_config' "
        f"(model_type 'gemma3_text')")


def parse_gemma(config: dict, name: str) -> ModelSpec:
    """Gemma-1 (modeling_gemma.py): the Llama layout with ``head_dim`` 256 by default
    (``a d`` may differ from ``h``), a tied head and no biases."""
    w = where(name)
    config = with_defaults(config, GEMMA_DEFAULTS)
    fields = common_fields(config, name)
    bias = config_bool(config, "attention_bias", False, w)
    mixers, options = attention_kinds(config, name, all_sliding_if_window(config), qkv_bias=bias, out_bias=bias)
    return ModelSpec(**fields, tie_word_embeddings=_tied(config, name, True), layers=dense_layers(mixers, options))


def parse_phi(config: dict, name: str) -> ModelSpec:
    """Phi-1/2 (modeling_phi.py ``PhiDecoderLayer``): a parallel block under one LayerNorm,
    biased q/k/v and ``dense`` output, a classic biased ``fc1``/``fc2`` MLP, a biased final
    LayerNorm and a biased, untied head; ``qk_layernorm`` adds LayerNorms of width ``d`` on
    queries and keys. ``partial_rotary_factor`` changes no shape."""
    w = where(name)
    fields = common_fields(config, name)
    qk_norm = config_bool(config, "qk_layernorm", False, w)
    attention = dict(qkv_bias=True, out_bias=True, qk_norm=qk_norm, qk_norm_bias=qk_norm)
    mixers, options = attention_kinds(config, name, all_sliding_if_window(config), **attention)
    return ModelSpec(**fields, tie_word_embeddings=_tied(config, name, False), norms_per_layer=1,
                     layer_norm_bias=True, lm_head_bias=True,
                     layers=dense_layers(mixers, options, gated=False, bias=True))


def parse_olmo2(config: dict, name: str) -> ModelSpec:
    """OLMo-2 (modeling_olmo2.py): post-norms (two RMSNorms per layer, after attention and
    MLP) and RMSNorms over the whole query and key projections (``a d``, ``a_kv d``)."""
    w = where(name)
    fields = common_fields(config, name)
    bias = config_bool(config, "attention_bias", False, w)
    mixers, options = attention_kinds(config, name, all_sliding_if_window(config), qkv_bias=bias, out_bias=bias,
                                      qk_norm=True, qk_norm_full=True)
    return ModelSpec(**fields, tie_word_embeddings=_tied(config, name, False), layers=dense_layers(mixers, options))


def _no_rope_layers(config: dict, name: str, layers: int) -> list[int]:
    """SmolLM3's ``no_rope_layers``: 1 where the layer uses RoPE, 0 where it is NoPE;
    by default every ``no_rope_layer_interval``-th layer is NoPE."""
    w = where(name)
    if config.get("no_rope_layers") is None:
        interval = config_int(config, "no_rope_layer_interval", default=SMOLLM3_NOPE_INTERVAL, where=w)
        return [int((i + 1) % interval != 0) for i in range(layers)]
    flags = config_int_list(config, "no_rope_layers", w)
    if len(flags) != layers or any(f not in (0, 1) for f in flags):
        raise ConfigError(f"{w}: field 'no_rope_layers' must hold one 0 or 1 per layer ({layers:,}), "
                          f"got {shown(config['no_rope_layers'])}")
    return flags


def parse_smollm3(config: dict, name: str) -> ModelSpec:
    """SmolLM3 (modeling_smollm3.py): the Llama layout, tied by default; NoPE layers
    (``no_rope_layers``) hold the same tensors and cache as any attention layer. With
    ``use_sliding_window`` the NoPE layers slide (``SmolLM3Config.__post_init__``)."""
    w = where(name)
    config = with_defaults(config, SMOLLM3_DEFAULTS)
    fields = common_fields(config, name)
    rope = _no_rope_layers(config, name, fields["num_hidden_layers"])
    slide = config_bool(config, "use_sliding_window", False, w) and config.get("sliding_window") is not None
    default_types = ["sliding_attention" if slide and not r else "full_attention" for r in rope]
    bias = config_bool(config, "attention_bias", False, w)
    mixers, options = attention_kinds(config, name, default_types, qkv_bias=bias, out_bias=bias)
    return ModelSpec(**fields, tie_word_embeddings=_tied(config, name, True),
                     layers=dense_layers(mixers, options, bias=config_bool(config, "mlp_bias", False, w)))


def parse_granite(config: dict, name: str) -> ModelSpec:
    """Granite (modeling_granite.py): the Llama layout; its multipliers
    (``embedding_multiplier``, ``attention_multiplier``, ``residual_multiplier``,
    ``logits_scaling``) scale activations and change no shape."""
    w = where(name)
    fields = common_fields(config, name)
    bias = config_bool(config, "attention_bias", False, w)
    mixers, options = attention_kinds(config, name, all_sliding_if_window(config), qkv_bias=bias, out_bias=bias)
    return ModelSpec(**fields, tie_word_embeddings=_tied(config, name, False),
                     layers=dense_layers(mixers, options, bias=config_bool(config, "mlp_bias", False, w)))


def parse_granitemoe(config: dict, name: str) -> ModelSpec:
    """Granite-MoE (modeling_granitemoe.py ``GraniteMoeMoE``): every layer's MLP is
    ``num_local_experts`` experts of width ``intermediate_size`` behind a bias-free router."""
    w = where(name)
    fields = common_fields(config, name)
    bias = config_bool(config, "attention_bias", False, w)
    mixers, options = attention_kinds(config, name, all_sliding_if_window(config), qkv_bias=bias, out_bias=bias)
    moe = local_experts(config, fields, w)
    return ModelSpec(**fields, tie_word_embeddings=_tied(config, name, False),
                     layers=layer_groups(mixers, ["moe"] * len(mixers), options, {"moe": moe}))


def parse_glm4_moe(config: dict, name: str) -> ModelSpec:
    """GLM-4.5 MoE (modeling_glm4_moe.py): DeepSeek-style MoE on GQA. q/k/v biased iff
    ``attention_bias`` (o never), RMSNorms of width ``d`` on queries and keys iff
    ``use_qk_norm``; layers below ``first_k_dense_replace`` dense, the rest
    ``n_routed_experts`` experts plus ``n_shared_experts`` shared ones and the router's
    ``e_score_correction_bias`` buffer (``Glm4MoeTopkRouter``). The next-n (MTP) layer is
    not instantiated by transformers and is not counted."""
    w = where(name)
    config = with_defaults(renamed(config, {"num_local_experts": "n_routed_experts"}, w), GLM4_MOE_DEFAULTS)  # attribute_map
    fields = common_fields(config, name)
    attention = dict(qkv_bias=config_bool(config, "attention_bias", False, w),
                     qk_norm=config_bool(config, "use_qk_norm", False, w))
    mixers, options = attention_kinds(config, name, all_sliding_if_window(config), **attention)
    first = config_int(config, "first_k_dense_replace", minimum=0, where=w)
    moe = dict(
        num_experts=config_int(config, "n_routed_experts", where=w),
        num_experts_per_tok=config_int(config, "num_experts_per_tok", where=w),
        moe_intermediate_size=config_int(config, "moe_intermediate_size", where=w),
        num_shared_experts=config_int(config, "n_shared_experts", minimum=0, where=w),
        router_correction_bias=True,
    )
    if not config_bool(config, "norm_topk_prob", True, w):  # Glm4MoeTopkRouter.forward: no renormalisation
        moe["norm_topk_prob"] = False
    mlps = ["moe" if i >= first else "dense" for i in range(len(mixers))]
    return ModelSpec(**fields, tie_word_embeddings=_tied(config, name, False),
                     layers=layer_groups(mixers, mlps, options, {"dense": {"gated": True}, "moe": moe}))


def _qwen2_moe_types(config: dict, name: str, layers: int) -> list[str]:
    """``Qwen2MoeConfig.__post_init__``: with ``use_sliding_window``, layer i slides iff
    ``(i + 1) % 2`` and ``i < max_window_layers``."""
    w = where(name)
    if not config_bool(config, "use_sliding_window", False, w):
        return ["full_attention"] * layers
    first = config_int(config, "max_window_layers", minimum=0, where=w)
    return ["sliding_attention" if (i + 1) % 2 and i < first else "full_attention" for i in range(layers)]


def parse_qwen2_moe(config: dict, name: str) -> ModelSpec:
    """Qwen2-MoE / Qwen1.5-MoE (modeling_qwen2_moe.py): q/k/v biased iff ``qkv_bias``
    (default true), layer i MoE unless in ``mlp_only_layers`` or off
    ``decoder_sparse_step``; a MoE layer adds one shared expert of width
    ``shared_expert_intermediate_size`` behind a sigmoid gate ``shared_expert_gate``."""
    w = where(name)
    config = with_defaults(config, QWEN2_MOE_DEFAULTS)
    fields = common_fields(config, name)
    layers = fields["num_hidden_layers"]
    mixers, options = attention_kinds(config, name, _qwen2_moe_types(config, name, layers),
                                      qkv_bias=config_bool(config, "qkv_bias", True, w))
    moe = dict(
        num_experts=config_int(config, "num_experts", where=w),
        num_experts_per_tok=config_int(config, "num_experts_per_tok", where=w),
        moe_intermediate_size=config_int(config, "moe_intermediate_size", where=w),
        shared_expert_intermediate_size=config_int(config, "shared_expert_intermediate_size", where=w),
        shared_expert_gate=True,
    )
    if config_bool(config, "norm_topk_prob", False, w):  # Qwen2MoeTopKRouter.forward: renormalise top-k
        moe["norm_topk_prob"] = True
    step = config_int(config, "decoder_sparse_step", default=1, where=w)
    dense_only = set(check_layer_indices(w, "mlp_only_layers", config_int_list(config, "mlp_only_layers", w), layers))
    mlps = ["moe" if i not in dense_only and (i + 1) % step == 0 else "dense" for i in range(layers)]
    return ModelSpec(**fields, tie_word_embeddings=_tied(config, name, False),
                     layers=layer_groups(mixers, mlps, options, {"dense": {"gated": True}, "moe": moe}))


def parse_phimoe(config: dict, name: str) -> ModelSpec:
    """PhiMoE / Phi-3.5-MoE (modeling_phimoe.py): q/k/v/o biased iff ``attention_bias``,
    LayerNorms with bias, every layer ``num_local_experts`` experts of width
    ``intermediate_size`` behind a bias-free router, a head biased iff ``lm_head_bias``."""
    w = where(name)
    config = with_defaults(config, PHIMOE_DEFAULTS)
    fields = common_fields(config, name)
    bias = config_bool(config, "attention_bias", False, w)
    mixers, options = attention_kinds(config, name, all_sliding_if_window(config), qkv_bias=bias, out_bias=bias)
    moe = local_experts(config, fields, w)
    return ModelSpec(**fields, tie_word_embeddings=_tied(config, name, False), layer_norm_bias=True,
                     lm_head_bias=config_bool(config, "lm_head_bias", False, w),
                     layers=layer_groups(mixers, ["moe"] * len(mixers), options, {"moe": moe}))
