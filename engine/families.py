"""Reading each architecture family's config.json into a ModelSpec.

One function per family, each reading the field names that family's transformers config
class uses, and deriving a value only where that class derives it (``head_dim``,
``num_key_value_heads``, ``layer_types``). Each builds the model's layer groups: which
mixer kind (attention, sliding_attention, mla) and MLP kind (dense, moe) each layer has,
with the kind's options (formulas/layers/), counted per distinct pair. A ``model_type`` with no function here is an
error that names it: memsym does not guess at an architecture it has no formulas for.
"""

from __future__ import annotations

from typing import Callable

from engine import families_attention as attention_families
from engine import families_kimi_vl
from engine import families_multimodal as multimodal_families
from engine import families_recurrent
from engine.errors import ConfigError, UnsupportedModelError
from engine.family_fields import (all_sliding_if_window, checkpoint_dtype, common_fields, dense_layers, layer_groups,
                                  local_experts, mixer_kinds, qwen_layer_types, refuse_window, renamed, where)
from engine.spec import LayerGroup, ModelSpec, config_bool, config_int, config_int_list, shown
from engine.validate import check_heads_divide, check_layer_indices, check_spec


def parse_llama(config: dict, name: str) -> ModelSpec:
    """Llama, Mistral: ``attention_bias`` on q, k, v, o; ``mlp_bias`` on the MLP."""
    w = where(name)
    fields = common_fields(config, name)
    bias = config_bool(config, "attention_bias", False, w)
    mixers, options = mixer_kinds(config, name, all_sliding_if_window(config), qkv_bias=bias, out_bias=bias)
    return ModelSpec(
        **fields,
        tie_word_embeddings=config_bool(config, "tie_word_embeddings", False, w),
        layers=dense_layers(mixers, options, bias=config_bool(config, "mlp_bias", False, w)),
    )


def parse_qwen2(config: dict, name: str) -> ModelSpec:
    """Qwen2: bias on q, k and v (not o); optional sliding window from ``max_window_layers``."""
    fields = common_fields(config, name)
    mixers, options = mixer_kinds(config, name, qwen_layer_types(config, where(name)), qkv_bias=True)
    return ModelSpec(
        **fields,
        tie_word_embeddings=config_bool(config, "tie_word_embeddings", False, where(name)),
        layers=dense_layers(mixers, options),
    )


def _qwen3_fields(config: dict, name: str, moe: bool = False) -> tuple[dict, list[str], dict[str, dict]]:
    """Qwen3: RMSNorm on queries and keys; ``head_dim`` defaults to 128 (Qwen3Config), not h / a.
    Qwen3-MoE's config class has neither ``head_dim`` (modeling_qwen3_moe.py: ``getattr(config,
    "head_dim", hidden_size // num_attention_heads)``) nor ``max_window_layers``: with
    ``use_sliding_window`` every layer slides (Qwen3MoeConfig.__post_init__, DynamicCache)."""
    w = where(name)
    fields = common_fields(config, name, head_dim_default=None if moe else 128)
    bias = config_bool(config, "attention_bias", False, w)
    if moe:
        windowed = config_bool(config, "use_sliding_window", False, w) and config.get("sliding_window") is not None
        default = ["sliding_attention" if windowed else "full_attention"] * fields["num_hidden_layers"]
    else:
        default = qwen_layer_types(config, w)
    mixers, options = mixer_kinds(config, name, default, qkv_bias=bias, out_bias=bias, qk_norm=True)
    fields["tie_word_embeddings"] = config_bool(config, "tie_word_embeddings", False, w)
    return fields, mixers, options


def parse_qwen3(config: dict, name: str) -> ModelSpec:
    fields, mixers, options = _qwen3_fields(config, name)
    return ModelSpec(**fields, layers=dense_layers(mixers, options))


def parse_qwen3_moe(config: dict, name: str) -> ModelSpec:
    """Qwen3-MoE: layer i is MoE unless in ``mlp_only_layers`` or off ``decoder_sparse_step``."""
    w = where(name)
    fields, mixers, options = _qwen3_fields(config, name, moe=True)
    moe = dict(
        num_experts=config_int(config, "num_experts", "num_local_experts", where=w),  # Qwen3MoeConfig.attribute_map
        num_experts_per_tok=config_int(config, "num_experts_per_tok", where=w),
        moe_intermediate_size=config_int(config, "moe_intermediate_size", where=w),
    )
    if not config_bool(config, "norm_topk_prob", False, w):  # Qwen3MoeTopKRouter.forward: no renormalisation
        moe["norm_topk_prob"] = False
    step = config_int(config, "decoder_sparse_step", default=1, where=w)
    dense_only = set(check_layer_indices(w, "mlp_only_layers", config_int_list(config, "mlp_only_layers", w),
                                         fields["num_hidden_layers"]))
    mlps = ("moe" if i not in dense_only and (i + 1) % step == 0 else "dense" for i in range(len(mixers)))
    return ModelSpec(**fields, layers=layer_groups(mixers, mlps, options, {"dense": {"gated": True}, "moe": moe}))


def parse_mixtral(config: dict, name: str) -> ModelSpec:
    """Mixtral: every layer's MLP is ``num_local_experts`` experts of ``intermediate_size``."""
    w = where(name)
    config = renamed(config, {"num_experts": "num_local_experts"}, w)  # MixtralConfig.attribute_map
    fields = common_fields(config, name)
    mixers, options = mixer_kinds(config, name, all_sliding_if_window(config))
    moe = local_experts(config, fields, w)
    return ModelSpec(
        **fields,
        tie_word_embeddings=config_bool(config, "tie_word_embeddings", False, w),
        layers=layer_groups(mixers, ["moe"] * len(mixers), options, {"moe": moe}),
    )


def _deepseek_moe(config: dict, name: str, layers: int) -> tuple[dict | None, list[str]]:
    """(MoE options or None, each layer's MLP kind): MoE from ``first_k_dense_replace``
    every ``moe_layer_freq`` layers when ``n_routed_experts`` is set."""
    w = where(name)
    alias = "num_experts" if config["model_type"] == "deepseek_v2" else "num_local_experts"  # attribute_map
    config = renamed(config, {alias: "n_routed_experts"}, w)
    experts = config_int(config, "n_routed_experts", default=None, where=w)
    if experts is None:
        return None, ["dense"] * layers
    first = config_int(config, "first_k_dense_replace", default=0, minimum=0, where=w)
    freq = config_int(config, "moe_layer_freq", default=1, where=w)
    moe = dict(
        num_experts=experts,
        num_experts_per_tok=config_int(config, "num_experts_per_tok", where=w),
        moe_intermediate_size=config_int(config, "moe_intermediate_size", where=w),
        num_shared_experts=config_int(config, "n_shared_experts", default=0, minimum=0, where=w),
        router_correction_bias=config["model_type"] in ("deepseek_v3", "kimi_k2"),  # kimi_k2: DeepSeek-V3
    )
    return moe, ["moe" if i >= first and i % freq == 0 else "dense" for i in range(layers)]


def parse_deepseek(config: dict, name: str) -> ModelSpec:
    """DeepSeek-V2/V3: MLA attention; MoE from ``first_k_dense_replace`` every ``moe_layer_freq``.
    A ``sliding_window`` is refused: the attention has none (modeling_deepseek_v3.py: "no
    sliding" mask) while transformers' DynamicCache would keep only the window."""
    w = where(name)
    refuse_window(config, w)
    if config_bool(config, "mlp_bias", False, w):  # DeepseekV2MLP: bias=config.mlp_bias on every MLP linear
        raise ConfigError(f"{w}: field 'mlp_bias' true (biased MLP and expert projections) is not modelled")
    fields = common_fields(config, name)
    rope = config_int(config, "qk_rope_head_dim", where=w)
    mla = dict(
        q_lora_rank=config_int(config, "q_lora_rank", default=None, where=w),
        kv_lora_rank=config_int(config, "kv_lora_rank", where=w),
        qk_nope_head_dim=config_int(config, "qk_nope_head_dim", where=w),
        qk_rope_head_dim=rope,
        v_head_dim=config_int(config, "v_head_dim", where=w),
        bias=config_bool(config, "attention_bias", False, w),
    )
    layers = fields["num_hidden_layers"]
    moe, mlps = _deepseek_moe(config, name, layers)
    fields["head_dim"] = rope  # transformers sets head_dim = qk_rope_head_dim for MLA
    mlp_options = {"dense": {"gated": True}, "moe": moe}
    return ModelSpec(
        **fields,
        tie_word_embeddings=config_bool(config, "tie_word_embeddings", False, w),
        layers=layer_groups(["mla"] * layers, mlps, {"mla": mla}, mlp_options),
    )


def parse_gemma2(config: dict, name: str) -> ModelSpec:
    """Gemma-2: four RMSNorms per layer, tied head, sliding window on every other layer."""
    w = where(name)
    fields = common_fields(config, name)
    layers = fields["num_hidden_layers"]
    default_types = ["sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(layers)]
    bias = config_bool(config, "attention_bias", False, w)
    mixers, options = mixer_kinds(config, name, default_types, qkv_bias=bias, out_bias=bias)
    return ModelSpec(
        **fields,
        tie_word_embeddings=config_bool(config, "tie_word_embeddings", True, w),
        norms_per_layer=4,
        layers=dense_layers(mixers, options),
    )


def parse_phi3(config: dict, name: str) -> ModelSpec:
    """Phi-3: fused ``qkv_proj`` and ``gate_up_proj``; sliding window on every layer if set."""
    w = where(name)
    fields = common_fields(config, name)
    mixers, options = mixer_kinds(config, name, all_sliding_if_window(config), fused_qkv=True)
    return ModelSpec(
        **fields,
        tie_word_embeddings=config_bool(config, "tie_word_embeddings", False, w),
        layers=dense_layers(mixers, options, fused_gate_up=True),
    )


def parse_gpt2(config: dict, name: str) -> ModelSpec:
    """GPT-2: ``n_embd``/``n_layer``/``n_head``; learned positions, LayerNorm, biases, tied.
    ``add_cross_attention`` (an encoder-decoder's cross-attention in every block,
    modeling_gpt2.py ``GPT2Block``) is refused: it is not modelled."""
    w = where(name)
    refuse_window(config, w)
    if config_bool(config, "add_cross_attention", False, w):
        raise ConfigError(f"{w}: field 'add_cross_attention' true (cross-attention in every block) is not modelled")
    hidden = config_int(config, "n_embd", "hidden_size", where=w)
    heads = config_int(config, "n_head", "num_attention_heads", where=w)
    layers = config_int(config, "n_layer", "num_hidden_layers", where=w)
    check_heads_divide(w, hidden, heads, "n_embd", "n_head")
    attention = {"qkv_bias": True, "out_bias": True, "fused_qkv": True}
    return ModelSpec(
        name=name,
        model_type="gpt2",
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        head_dim=hidden // heads,
        intermediate_size=config_int(config, "n_inner", default=4 * hidden, where=w),
        vocab_size=config_int(config, "vocab_size", where=w),
        tie_word_embeddings=config_bool(config, "tie_word_embeddings", True, w),
        layers=(LayerGroup("attention", "dense", layers, attention, {"gated": False, "bias": True}),),
        layer_norm_bias=True,
        max_position_embeddings=config_int(config, "n_positions", "max_position_embeddings", where=w),
        torch_dtype=checkpoint_dtype(config),
    )


def parse_falcon(config: dict, name: str) -> ModelSpec:
    """Falcon: fused QKV, LayerNorms, MQA (``multi_query``) or ``num_kv_heads`` (new arch); no window."""
    w = where(name)
    refuse_window(config, w)
    hidden = config_int(config, "hidden_size", "n_embd", where=w)
    heads = config_int(config, "num_attention_heads", "n_head", where=w)
    check_heads_divide(w, hidden, heads, "hidden_size", "num_attention_heads")
    new_arch = config_bool(config, "new_decoder_architecture", False, w)
    if new_arch:
        kv_heads = config_int(config, "num_kv_heads", "n_head_kv", default=heads, where=w)
        norms = config_int(config, "num_ln_in_parallel_attn", default=2, where=w)
    else:
        kv_heads = 1 if config_bool(config, "multi_query", True, w) else heads
        norms = 1 if config_bool(config, "parallel_attn", True, w) else 2
    bias = config_bool(config, "bias", False, w)
    layers = config_int(config, "num_hidden_layers", "n_layer", where=w)
    attention = {"qkv_bias": bias, "out_bias": bias, "fused_qkv": True, "expanded_kv_cache": new_arch}
    return ModelSpec(
        name=name,
        model_type="falcon",
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=hidden // heads,
        intermediate_size=config_int(config, "ffn_hidden_size", default=4 * hidden, where=w),
        vocab_size=config_int(config, "vocab_size", where=w),
        tie_word_embeddings=config_bool(config, "tie_word_embeddings", True, w),
        layers=(LayerGroup("attention", "dense", layers, attention, {"gated": False, "bias": bias}),),
        norms_per_layer=norms,
        layer_norm_bias=True,
        torch_dtype=checkpoint_dtype(config),
    )


PARSERS: dict[str, Callable[[dict, str], ModelSpec]] = {
    "llama": parse_llama,
    "mistral": parse_llama,
    "qwen2": parse_qwen2,
    "qwen3": parse_qwen3,
    "qwen3_moe": parse_qwen3_moe,
    "mixtral": parse_mixtral,
    "deepseek_v2": parse_deepseek,
    "deepseek_v3": parse_deepseek,
    "gemma2": parse_gemma2,
    "phi3": parse_phi3,
    "gpt2": parse_gpt2,
    "falcon": parse_falcon,
    "gpt_oss": attention_families.parse_gpt_oss,
    "gemma3_text": attention_families.parse_gemma3_text,
    "gemma": attention_families.parse_gemma,
    "phi": attention_families.parse_phi,
    "olmo2": attention_families.parse_olmo2,
    "smollm3": attention_families.parse_smollm3,
    "granite": attention_families.parse_granite,
    "granitemoe": attention_families.parse_granitemoe,
    "glm4_moe": attention_families.parse_glm4_moe,
    "qwen2_moe": attention_families.parse_qwen2_moe,
    "phimoe": attention_families.parse_phimoe,
    "kimi_k2": parse_deepseek,  # Kimi-K2 is DeepSeek-V3's architecture (DeepseekV3ForCausalLM)
    "llama4_text": multimodal_families.parse_llama4_text,
    "llama4": lambda config, name: multimodal_families.parse_llama4(config, name, PARSERS),
    "mistral3": lambda config, name: multimodal_families.parse_mistral3(config, name, PARSERS),
    "mllama_text_model": multimodal_families.parse_mllama_text,
    "mllama": lambda config, name: multimodal_families.parse_mllama(config, name, PARSERS),
    "gemma3": lambda config, name: multimodal_families.parse_gemma3(config, name, PARSERS),
    "llava": lambda config, name: multimodal_families.parse_llava(config, name, PARSERS),
    "kimi_vl": lambda config, name: families_kimi_vl.parse_kimi_vl(config, name, PARSERS),
}
PARSERS.update(families_recurrent.PARSERS)  # qwen3_next, mamba, mamba2 and the hybrids


def spec_from_config(config: object, name: str = "config.json") -> ModelSpec:
    """A ModelSpec from a plain config.json dict; errors name the field and its value."""
    if not isinstance(config, dict):
        raise ConfigError(f"{where(name)}: expected a JSON object, got {type(config).__name__}")
    model_type = config.get("model_type")
    if not isinstance(model_type, str):
        raise ConfigError(f"{where(name)}: missing or non-string field 'model_type' ({shown(model_type)})")
    parser = PARSERS.get(model_type)
    if parser is None:
        known = ", ".join(sorted(PARSERS))
        raise UnsupportedModelError(f"{where(name)}: model_type {shown(model_type)} is not supported (supported: {known})")
    return check_spec(parser(config, name), where(name))
