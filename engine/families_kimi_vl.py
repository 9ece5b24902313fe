"""Kimi-VL (``kimi_vl``, moonshotai/Kimi-VL-A3B-Instruct): a DeepSeek-V3-shaped language model
under ``text_config``, the MoonViT vision tower and a two-layer projector.

transformers 5.24 has no ``kimi_vl`` (the checkpoint ships remote code,
configuration_kimi_vl.py / modeling_kimi_vl.py), so the counts here follow the modeling code
as vLLM carries it and cannot be checked against a transformers instantiation in this project
(one published count agrees: the registry entry's 16,407,654,384 parameters are what
transformers' Trainer printed for the checkpoint's remote code, hiyouga/LlamaFactory#7865):

- the language model: ``text_config`` read by the ``deepseek_v3`` parser (vLLM
  vllm/model_executor/models/kimi_vl.py builds it with ``init_vllm_registered_model`` as a
  DeepSeek-V2/V3 causal LM; ``topk_method noaux_tc`` adds the router's correction bias);
- the tower: vllm/model_executor/models/moonvit.py ``MoonVitPretrainedModel``;
- the projector: kimi_vl.py ``KimiVLMultiModalProjector``.

Defaults of the vision fields are those of ``MoonViTConfig`` (vllm/transformers_utils/configs/
moonvit.py, adapted from the checkpoint's configuration_kimi_vl.py).
"""

from __future__ import annotations

from engine.errors import ConfigError
from engine.family_fields import where
from engine.families_multimodal import text_spec, with_vision
from engine.spec import ModelSpec, config_int, config_int_list, shown

CHANNELS = 3  # MoonVisionPatchEmbed(in_dim=3): RGB patches
LAYER_NORM_TENSORS = 2  # nn.LayerNorm: weight and bias


def moonvit_tower(vision: dict, w: str) -> int:
    """moonvit.py ``MoonVitPretrainedModel``: ``patch_embed.proj`` (Conv2d C p^2 -> H with bias),
    ``patch_embed.pos_emb`` (``Learnable2DInterpPosEmb``: [h0, w0, H]); per encoder layer
    ``norm0`` and ``norm1`` (LayerNorm), ``wqkv`` (H -> 3H, bias: ``attn_bias`` True), ``wo``
    (H -> H, bias), ``mlp.fc0`` (H -> I, bias) and ``mlp.fc1`` (I -> H, bias);
    ``final_layernorm``. ``Rope2DPosEmb`` holds no parameter (a cached property)."""
    h = config_int(vision, "hidden_size", default=1152, where=w)
    i = config_int(vision, "intermediate_size", default=4304, where=w)
    layers = config_int(vision, "num_hidden_layers", default=27, where=w)
    patch = config_int(vision, "patch_size", default=14, where=w)
    pos_h = config_int(vision, "init_pos_emb_height", default=64, where=w)
    pos_w = config_int(vision, "init_pos_emb_width", default=64, where=w)
    heads = config_int(vision, "num_attention_heads", default=16, where=w)
    if h % heads:
        raise ConfigError(f"{w}: hidden_size {h} is not a multiple of num_attention_heads {heads}")
    embed = CHANNELS * patch * patch * h + h + pos_h * pos_w * h
    layer = 2 * LAYER_NORM_TENSORS * h + (3 * h * h + 3 * h) + (h * h + h) + (h * i + i) + (i * h + h)
    return embed + layers * layer + LAYER_NORM_TENSORS * h


def merge_kernel(vision: dict, w: str) -> tuple[int, int]:
    """``merge_kernel_size`` [kh, kw] (default (2, 2)): patches merged into one token."""
    kernel = config_int_list(vision, "merge_kernel_size", w, minimum=1) if "merge_kernel_size" in vision else [2, 2]
    if len(kernel) != 2:
        raise ConfigError(f"{w}: field 'merge_kernel_size' must be two positive integers, got {shown(kernel)}")
    return kernel[0], kernel[1]


def kimi_vl_projector(vision: dict, text_hidden: int, w: str) -> int:
    """kimi_vl.py ``KimiVLMultiModalProjector``: ``pre_norm`` (LayerNorm of H_v), ``linear_1``
    (H_v kh kw -> H_v kh kw, bias) and ``linear_2`` (H_v kh kw -> H_text, bias)."""
    hv = config_int(vision, "hidden_size", default=1152, where=w)
    kh, kw = merge_kernel(vision, w)
    merged = hv * kh * kw
    return LAYER_NORM_TENSORS * hv + (merged * merged + merged) + (merged * text_hidden + text_hidden)


def parse_kimi_vl(config: dict, name: str, parsers: dict) -> ModelSpec:
    """Kimi-VL (``KimiVLForConditionalGeneration``): ``deepseek_v3`` text model, MoonViT and the
    projector. The head is untied unless the config says so (the DeepSeek causal LM of the
    language model keeps its own ``lm_head``; the published text_config says false)."""
    spec = text_spec(config, name, "deepseek_v3", parsers)
    vision = config.get("vision_config", {})
    if not isinstance(vision, dict):
        raise ConfigError(f"{where(name)}: field 'vision_config' must be an object, got {shown(vision)}")
    w = f"{where(name)} vision_config"
    parts = (("vision/tower", moonvit_tower(vision, w)),
             ("vision/projector", kimi_vl_projector(vision, spec.hidden_size, w)))
    return with_vision(spec, parts, config, spec.tie_word_embeddings)
