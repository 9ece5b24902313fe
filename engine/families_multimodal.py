"""Llama 4 and the multimodal checkpoints: a language model nested under ``text_config``
plus a vision tower and projector.

``llama4_text`` (transformers modeling_llama4.py ``Llama4TextDecoderLayer``): chunked
attention on the RoPE layers, global NoPE layers (``no_rope_layers``), qk-norm without
parameters (``Llama4TextL2Norm``), MoE layers (``moe_layers`` from
``interleave_moe_layer_step``) of ``num_local_experts`` experts of ``intermediate_size``
with one shared expert, dense layers of ``intermediate_size_mlp``.

A multimodal config (``mistral3``, ``llama4``) is read as its ``text_config`` through that
model type's own parser, plus the vision tower's and projector's parameters counted from
``vision_config`` as transformers builds them (``ModelSpec.vision``: the ``vision``
component of the weights). Where the config leaves a vision field out, the default of
transformers' config class applies, as transformers applies it.
"""

from __future__ import annotations

from dataclasses import replace

from engine.errors import ConfigError, UnsupportedModelError
from engine.family_fields import common_fields, layer_groups, layer_types, refuse_window, where
from engine.spec import ModelSpec, config_bool, config_int, config_int_list, shown
from engine.validate import check_layer_indices


# --- llama4_text ----------------------------------------------------------------------

def llama4_default_types(config: dict, layers: int, rope: list[int]) -> list[str]:
    """configuration_llama4.py ``__post_init__``: ``chunked_attention`` where the layer uses
    RoPE and ``attention_chunk_size`` is set, else ``full_attention`` (NoPE layers are global)."""
    chunked = config.get("attention_chunk_size") is not None
    return ["chunked_attention" if chunked and rope[i] else "full_attention" for i in range(layers)]


def _rope_layers(config: dict, layers: int, w: str) -> list[int]:
    """``no_rope_layers`` (1 = the layer uses RoPE), default every ``no_rope_layer_interval``-th NoPE."""
    interval = config_int(config, "no_rope_layer_interval", default=4, where=w)
    rope = config_int_list(config, "no_rope_layers", w) or [int((i + 1) % interval != 0) for i in range(layers)]
    if len(rope) != layers or any(r not in (0, 1) for r in rope):
        raise ConfigError(f"{w}: field 'no_rope_layers' must hold {layers} entries of 0 or 1, got {shown(rope)}")
    return rope


def _moe_layers(config: dict, layers: int, w: str) -> set[int]:
    """``moe_layers``, default ``range(step - 1, L, step)`` with ``interleave_moe_layer_step``."""
    step = config_int(config, "interleave_moe_layer_step", default=1, where=w)
    given = config.get("moe_layers")
    if given is None:
        return set(range(step - 1, layers, step))
    return set(check_layer_indices(w, "moe_layers", config_int_list(config, "moe_layers", w), layers))


def parse_llama4_text(config: dict, name: str) -> ModelSpec:
    """Llama 4's language model (``Llama4ForCausalLM``)."""
    w = where(name)
    fields = common_fields(config, name, head_dim_default=128)
    layers = fields["num_hidden_layers"]
    fields["intermediate_size"] = config_int(config, "intermediate_size_mlp", default=16384, where=w)
    types = layer_types(config, name, llama4_default_types(config, layers, _rope_layers(config, layers, w)))
    unknown = sorted(set(types) - {"chunked_attention", "full_attention"})
    if unknown:
        raise ConfigError(f"{w}: layer_types value {shown(unknown[0])} is not a Llama 4 layer type "
                          "(chunked_attention, full_attention)")
    bias = config_bool(config, "attention_bias", False, w)
    attention = {"qkv_bias": bias, "out_bias": bias}  # Llama4TextL2Norm qk-norm holds no parameter
    mixers = ["chunked_attention" if t == "chunked_attention" else "attention" for t in types]
    mixer_options = {"attention": attention}
    if "chunked_attention" in mixers:
        chunk = config_int(config, "attention_chunk_size", where=w)
        mixer_options["chunked_attention"] = {**attention, "attention_chunk_size": chunk}
    moe = dict(
        num_experts=config_int(config, "num_local_experts", default=16, where=w),
        num_experts_per_tok=config_int(config, "num_experts_per_tok", default=1, where=w),
        moe_intermediate_size=config_int(config, "intermediate_size", default=8192, where=w),
        num_shared_experts=1,  # Llama4TextMoe.shared_expert: one MLP of intermediate_size
    )
    moe_at = _moe_layers(config, layers, w)
    mlps = ["moe" if i in moe_at else "dense" for i in range(layers)]
    return ModelSpec(
        **fields,
        tie_word_embeddings=config_bool(config, "tie_word_embeddings", False, w),
        layers=layer_groups(mixers, mlps, mixer_options, {"dense": {"gated": True}, "moe": moe}),
    )


# --- nested configs: text_config + vision_config ----------------------------------------

def text_spec(config: dict, name: str, default_text_type: str, parsers: dict) -> ModelSpec:
    """The language model of a multimodal config, read by its text model type's parser
    (``parsers``: engine/families.py ``PARSERS``, passed in by the caller)."""
    text = config.get("text_config")
    if not isinstance(text, dict):
        raise ConfigError(f"{where(name)}: field 'text_config' must be an object, got {shown(text)}")
    text = {"model_type": default_text_type, **text}
    if "torch_dtype" not in text and "dtype" not in text:
        text["torch_dtype"] = config.get("torch_dtype", config.get("dtype"))
    if "quantization_config" in config and "quantization_config" not in text:
        text["quantization_config"] = config["quantization_config"]
    parser = parsers.get(text["model_type"]) if isinstance(text["model_type"], str) else None
    if parser is None:
        raise UnsupportedModelError(f"{where(name)}: text_config model_type {shown(text['model_type'])} "
                                    "is not supported")
    return parser(text, name)


def with_vision(spec: ModelSpec, vision: tuple[tuple[str, int], ...], config: dict, tied_default: bool | None) -> ModelSpec:
    """``spec`` with the vision tower's and projector's parameter counts. The head is tied
    as the top-level config says (transformers 5.24 ties by the outer config, whose class
    default differs: configuration_mistral3.py ``Mistral3Config.tie_word_embeddings = True``),
    or, with ``tied_default`` None, as the text config says (Llama 4: measured on the meta
    device, the outer ``tie_word_embeddings`` changes nothing, ``text_config``'s ties)."""
    if tied_default is None:
        tied = spec.tie_word_embeddings
    else:
        tied = config_bool(config, "tie_word_embeddings", tied_default, where(spec.name))
    return replace(spec, model_type=config["model_type"], extra_tensors=spec.extra_tensors + vision,
                   tie_word_embeddings=tied)


def _vision_config(config: dict, name: str) -> tuple[dict, str]:
    vision = config.get("vision_config")
    if not isinstance(vision, dict):
        raise ConfigError(f"{where(name)}: field 'vision_config' must be an object, got {shown(vision)}")
    return vision, f"{where(name)} vision_config"


def pixtral_tower(vision: dict, w: str) -> int:
    """modeling_pixtral.py ``PixtralVisionModel``: ``patch_conv`` (no bias), ``ln_pre``, and per
    layer q, k, v, o (H x H, no bias), a gated MLP (H x I, three), two RMSNorms. Defaults:
    configuration_pixtral.py ``PixtralVisionConfig``."""
    h = config_int(vision, "hidden_size", default=1024, where=w)
    i = config_int(vision, "intermediate_size", default=4096, where=w)
    layers = config_int(vision, "num_hidden_layers", default=24, where=w)
    channels = config_int(vision, "num_channels", default=3, where=w)
    patch = config_int(vision, "patch_size", default=16, where=w)
    return h * channels * patch * patch + h + layers * (4 * h * h + 3 * h * i + 2 * h)


def parse_mistral3(config: dict, name: str, parsers: dict) -> ModelSpec:
    """Mistral-Small-3.1 (``Mistral3ForConditionalGeneration``): a ``mistral`` language model,
    a Pixtral tower, and modeling_mistral3.py ``Mistral3MultiModalProjector``: an RMSNorm,
    the patch merger ``(H_v s^2) -> H_v`` (no bias), ``linear_1`` ``H_v -> H``, ``linear_2``
    ``H -> H`` (bias iff ``multimodal_projector_bias``)."""
    spec = text_spec(config, name, "mistral", parsers)
    vision, w = _vision_config(config, name)
    hv = config_int(vision, "hidden_size", default=1024, where=w)
    merge = config_int(config, "spatial_merge_size", default=2, where=where(name))
    layer = config.get("vision_feature_layer", -1)
    feature_layers = len(layer) if isinstance(layer, list) else 1
    bias = config_bool(config, "multimodal_projector_bias", False, where(name))
    h = spec.hidden_size
    projector = hv + hv * merge * merge * hv + (hv * feature_layers * h + h * bias) + (h * h + h * bias)
    return with_vision(spec, (("vision/tower", pixtral_tower(vision, w)), ("vision/projector", projector)), config, True)


def parse_llama4(config: dict, name: str, parsers: dict) -> ModelSpec:
    """Llama 4 (``Llama4ForConditionalGeneration``): ``llama4_text`` plus its vision model."""
    spec = text_spec(config, name, "llama4_text", parsers)
    vision, w = _vision_config(config, name)
    return with_vision(spec, llama4_vision(vision, spec.hidden_size, w), config, None)


def llama4_vision(vision: dict, text_hidden: int, w: str) -> tuple[tuple[str, int], ...]:
    """modeling_llama4.py ``Llama4VisionModel``: ``class_embedding`` [H], ``positional_embedding_vlm``
    [(image/patch)^2 + 1, H], ``patch_embedding`` (unfold + Linear C p^2 -> H, no bias), LayerNorms
    pre and post (w + b); per layer q, k, v, o with bias, ``fc1``/``fc2`` with bias, two LayerNorms;
    ``vision_adapter`` (``Llama4VisionMLP2``: I -> P_in, P_out -> P_out, no bias); and
    ``Llama4MultiModalProjector.linear_1`` (vision_output_dim -> H_text, no bias). Defaults:
    configuration_llama4.py ``Llama4VisionConfig``."""
    h = config_int(vision, "hidden_size", default=768, where=w)
    i = config_int(vision, "intermediate_size", default=5632, where=w)
    layers = config_int(vision, "num_hidden_layers", default=34, where=w)
    channels = config_int(vision, "num_channels", default=3, where=w)
    patch = config_int(vision, "patch_size", default=14, where=w)
    image = config_int(vision, "image_size", default=448, where=w)
    p_in = config_int(vision, "projector_input_dim", default=4096, where=w)
    p_out = config_int(vision, "projector_output_dim", default=4096, where=w)
    output = config_int(vision, "vision_output_dim", default=7680, where=w)
    embeddings = h + ((image // patch) ** 2 + 1) * h + channels * patch * patch * h + 4 * h
    layer = 4 * (h * h + h) + 2 * h * i + i + h + 4 * h
    tower = embeddings + layers * layer + i * p_in + p_out * p_out
    return (("vision/tower", tower), ("vision/projector", output * text_hidden))


# --- mllama (Llama 3.2 Vision) ----------------------------------------------------------

MLLAMA_EXTRA_EMBEDDING_ROWS = 8  # modeling_mllama.py MllamaTextModel: Embedding(vocab_size + 8, H)
# configuration_mllama.py MllamaTextConfig.__post_init__: cross_attention_layers when absent;
# MllamaTextModel makes layer i cross-attention iff i is in it (indices past the depth do nothing)
MLLAMA_CROSS_ATTENTION_LAYERS = (3, 8, 13, 18, 23, 28, 33, 38)


def parse_mllama_text(config: dict, name: str) -> ModelSpec:
    """``MllamaTextModel``: Llama layers, ``cross_attention_layers`` reading the image
    features (formulas/layers/cross_attention.py), 8 extra embedding rows, an untied head
    whatever ``tie_word_embeddings`` says (``MllamaForCausalLM`` has no ``_tied_weights_keys``;
    measured)."""
    w = where(name)
    refuse_window(config, w)
    fields = common_fields(config, name)
    layers = fields["num_hidden_layers"]
    if config.get("cross_attention_layers") is None:  # MllamaTextConfig's default, the indices below the depth
        cross = {i for i in MLLAMA_CROSS_ATTENTION_LAYERS if i < layers}
    else:
        cross = set(check_layer_indices(w, "cross_attention_layers",
                                        config_int_list(config, "cross_attention_layers", w), layers))
    mixers = ["cross_attention" if i in cross else "attention" for i in range(layers)]
    spec = ModelSpec(
        **fields,
        tie_word_embeddings=False,
        layers=layer_groups(mixers, ["dense"] * layers, {"attention": {}, "cross_attention": {}},
                            {"dense": {"gated": True}}),
    )
    rows = MLLAMA_EXTRA_EMBEDDING_ROWS * fields["hidden_size"]
    return replace(spec, extra_tensors=(("embedding/image_token_rows", rows),))


def mllama_vision(vision: dict, text_hidden: int, w: str) -> tuple[tuple[str, int], ...]:
    """modeling_mllama.py ``MllamaVisionModel``: class embedding, patch conv (no bias), gated
    position embedding ([N + 1, H] and per aspect ratio a tile table [T (N + 1) H]), gated pre-
    and post-tile embeddings ([R + 1, T H]), LayerNorms pre and post; ``num_hidden_layers``
    local and ``num_global_layers`` gated global layers (q, k, v, o without bias, fc1/fc2
    with bias, two LayerNorms); ``multi_modal_projector`` (vision_output_dim -> H, bias).
    Defaults: configuration_mllama.py ``MllamaVisionConfig``."""
    h = config_int(vision, "hidden_size", default=1280, where=w)
    i = config_int(vision, "intermediate_size", default=5120, where=w)
    local = config_int(vision, "num_hidden_layers", default=32, where=w)
    global_layers = config_int(vision, "num_global_layers", default=8, where=w)
    channels = config_int(vision, "num_channels", default=3, where=w)
    patch = config_int(vision, "patch_size", default=14, where=w)
    image = config_int(vision, "image_size", default=448, where=w)
    tiles = config_int(vision, "max_num_tiles", default=4, where=w)
    output = config_int(vision, "vision_output_dim", default=7680, where=w)
    ratios = vision.get("supported_aspect_ratios", [[1, 1], [1, 2], [1, 3], [1, 4], [2, 1], [2, 2], [3, 1], [4, 1]])
    if not isinstance(ratios, list) or not ratios:
        raise ConfigError(f"{w}: field 'supported_aspect_ratios' must be a non-empty list, got {shown(ratios)}")
    positions, ratio_rows = (image // patch) ** 2 + 1, len(ratios) + 1
    embeddings = (h + channels * patch * patch * h + 1 + positions * h + ratio_rows * tiles * positions * h
                  + 2 * (1 + ratio_rows * tiles * h) + 4 * h)
    layer = 4 * h * h + 2 * h * i + i + h + 4 * h
    tower = embeddings + local * layer + global_layers * (layer + 2)
    return (("vision/tower", tower), ("vision/projector", output * text_hidden + text_hidden))


def parse_mllama(config: dict, name: str, parsers: dict) -> ModelSpec:
    """Llama 3.2 Vision (``MllamaForConditionalGeneration``): ``mllama_text_model`` plus its
    vision model; the head is never tied (its ``_tied_weights_keys`` is commented out in
    modeling_mllama.py: measured, neither ``tie_word_embeddings`` changes the count)."""
    spec = text_spec(config, name, "mllama_text_model", parsers)
    vision, w = _vision_config(config, name)
    spec = with_vision(spec, mllama_vision(vision, spec.hidden_size, w), config, None)
    return replace(spec, vision_shape=mllama_vision_shape(vision, w))


def mllama_vision_shape(vision: dict, w: str) -> tuple[tuple[str, int], ...]:
    """The shape fields vLLM's profile run of ``MllamaVisionModel`` reads (vLLM 0.6.3
    vllm/model_executor/models/mllama.py); defaults: configuration_mllama.py ``MllamaVisionConfig``."""
    layers = vision.get("intermediate_layers_indices", [3, 7, 15, 23, 30])
    if not isinstance(layers, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in layers):
        raise ConfigError(f"{w}: field 'intermediate_layers_indices' must be a list of integers, got {shown(layers)}")
    fields = {"hidden_size": 1280, "intermediate_size": 5120, "image_size": 448, "patch_size": 14,
              "max_num_tiles": 4, "num_channels": 3, "vision_output_dim": 7680, "attention_heads": 16}
    shape = {key: config_int(vision, key, default=default, where=w) for key, default in fields.items()}
    shape["intermediate_layers"] = len(set(layers))
    shape["num_hidden_layers"] = config_int(vision, "num_hidden_layers", default=32, where=w)
    shape["num_global_layers"] = config_int(vision, "num_global_layers", default=8, where=w)
    ratios = vision.get("supported_aspect_ratios", [[1, 1], [1, 2], [1, 3], [1, 4], [2, 1], [2, 2], [3, 1], [4, 1]])
    shape["aspect_ratio_rows"] = len(ratios) + 1 if isinstance(ratios, list) else 9  # max_aspect_ratio_id + 1
    return tuple(shape.items())


# --- gemma3 (Gemma-3 with its SigLIP tower) -----------------------------------------------

def siglip_tower(vision: dict, w: str) -> int:
    """modeling_siglip.py ``SiglipVisionTransformer`` without the pooling head: patch conv
    with bias, position embedding [(image/patch)^2, H], per layer q, k, v, out with bias,
    ``fc1``/``fc2`` with bias and two LayerNorms, ``post_layernorm``. Defaults:
    configuration_siglip.py ``SiglipVisionConfig``."""
    if config_bool(vision, "vision_use_head", True, w):
        raise ConfigError(f"{w}: field 'vision_use_head' true (SigLIP's attention-pooling head) is not supported")
    h = config_int(vision, "hidden_size", default=768, where=w)
    i = config_int(vision, "intermediate_size", default=3072, where=w)
    layers = config_int(vision, "num_hidden_layers", default=12, where=w)
    channels = config_int(vision, "num_channels", default=3, where=w)
    patch = config_int(vision, "patch_size", default=16, where=w)
    image = config_int(vision, "image_size", default=224, where=w)
    embeddings = channels * patch * patch * h + h + (image // patch) ** 2 * h + 2 * h
    return embeddings + layers * (4 * (h * h + h) + 2 * h * i + i + h + 4 * h)


def gemma3_vision(vision: dict, text_hidden: int, w: str) -> tuple[tuple[str, int], ...]:
    """The SigLIP tower and modeling_gemma3.py ``Gemma3MultiModalProjector``:
    ``mm_input_projection_weight`` [H_v, H] and ``mm_soft_emb_norm`` [H_v]."""
    hv = config_int(vision, "hidden_size", default=768, where=w)
    return (("vision/tower", siglip_tower(vision, w)), ("vision/projector", hv * text_hidden + hv))


def parse_gemma3(config: dict, name: str, parsers: dict) -> ModelSpec:
    """Gemma-3 (``Gemma3ForConditionalGeneration``): ``gemma3_text`` (its own parser) plus the
    SigLIP tower; tied as ``Gemma3Config`` says (default True)."""
    spec = text_spec(config, name, "gemma3_text", parsers)
    vision, w = _vision_config(config, name)
    return with_vision(spec, gemma3_vision(vision, spec.hidden_size, w), config, True)


# --- llava (LLaVA-1.5 style: CLIP or SigLIP tower, two-layer projector) -------------------

LLAVA_DEFAULT_VISION = {"model_type": "clip_vision_model", "intermediate_size": 4096, "hidden_size": 1024,
                        "patch_size": 14, "image_size": 336, "num_hidden_layers": 24}  # LlavaConfig.__post_init__


def clip_tower(vision: dict, w: str) -> int:
    """modeling_clip.py ``CLIPVisionTransformer``: class embedding, patch conv (no bias),
    position embedding [(image/patch)^2 + 1, H], ``pre_layrnorm`` and ``post_layernorm``
    (w + b), per layer q, k, v, out with bias, ``fc1``/``fc2`` with bias, two LayerNorms.
    Defaults: configuration_clip.py ``CLIPVisionConfig``."""
    h = config_int(vision, "hidden_size", default=768, where=w)
    i = config_int(vision, "intermediate_size", default=3072, where=w)
    layers = config_int(vision, "num_hidden_layers", default=12, where=w)
    channels = config_int(vision, "num_channels", default=3, where=w)
    patch = config_int(vision, "patch_size", default=32, where=w)
    image = config_int(vision, "image_size", default=224, where=w)
    embeddings = h + channels * patch * patch * h + ((image // patch) ** 2 + 1) * h + 4 * h
    return embeddings + layers * (4 * (h * h + h) + 2 * h * i + i + h + 4 * h)


VISION_TOWERS = {"clip_vision_model": clip_tower, "siglip_vision_model": siglip_tower}


def parse_llava(config: dict, name: str, parsers: dict) -> ModelSpec:
    """LLaVA (``LlavaForConditionalGeneration``, modeling_llava.py ``LlavaMultiModalProjector``):
    its text model (default ``llama``), a CLIP or SigLIP tower, ``linear_1`` (H_v x feature
    layers -> H) and ``linear_2`` (H -> H), biased iff ``multimodal_projector_bias`` (default
    true). Tied if the outer config or the text config says so (``LlavaConfig.__post_init__``)."""
    spec = text_spec(config, name, "llama", parsers)
    vision, w = _vision_config(config, name) if "vision_config" in config else (LLAVA_DEFAULT_VISION, where(name))
    tower = VISION_TOWERS.get(vision.get("model_type", "clip_vision_model"))
    if tower is None:
        raise UnsupportedModelError(f"{w}: vision model_type {shown(vision.get('model_type'))} is not supported "
                                    f"(supported: {', '.join(VISION_TOWERS)})")
    hv = config_int(vision, "hidden_size", default=768, where=w)
    layer = config.get("vision_feature_layer", -2)
    features = len(layer) if isinstance(layer, list) else 1
    bias = config_bool(config, "multimodal_projector_bias", True, where(name))
    h = spec.hidden_size
    projector = hv * features * h + h * bias + h * h + h * bias
    tied = config_bool(config, "tie_word_embeddings", False, where(name)) or spec.tie_word_embeddings
    spec = replace(spec, tie_word_embeddings=tied)  # with_vision(None) keeps it: the outer field must not undo it
    return with_vision(spec, (("vision/tower", tower(vision, w)), ("vision/projector", projector)), config, None)
