"""vLLM 0.6.3's V0 profile run of Llama 3.2 Vision (``mllama``): the dummy images and the
tensors its vision encoder and cross-attention prefill hold at their peaks.

The V0 engine profiles an encoder-decoder model in
vllm/worker/enc_dec_model_runner.py ``EncoderDecoderModelRunner.profile_run``:
``max_num_seqs`` sequences of ``max_num_batched_tokens // max_num_seqs`` decoder tokens,
each with the model's dummy encoder data. For mllama (vllm/model_executor/models/mllama.py
``dummy_encoder_data_for_mllama``) that is ``mm_counts["image"]`` black 1024 x 1024 images
(``dummy_image``) per sequence, ``limit_mm_per_prompt``'s default of one
(vllm/config.py ``MultiModalConfig.limit_per_prompt``: 1 per modality). The image processor
pads every image to ``max_num_tiles`` tiles of ``image_size`` pixels (the logged
``pixel_values`` of a 0.6.3 profile run: ``[256, 1, 1, 4, 3, 560, 560]``, vllm-project/vllm#10569),
and the whole batch runs through ``MllamaVisionModel.forward`` at once.

Every function returns a SymPy expression; the vision shapes are the config's integers
(``ModelSpec.vision_shape``), the batch and widths are symbols. Names: ``N`` images
(``max_num_seqs`` x images per prompt), ``T`` tiles, ``P = (S/p)^2 + 1`` patches per tile
with the class token, ``P8`` that padded to a multiple of 8, ``H_v`` / ``I_v`` the tower's
hidden and MLP widths, ``X = N T P8 H_v beta_a`` one hidden state of the tower.
"""

from __future__ import annotations

from fractions import Fraction

import sympy

from formulas.symbols import (activation_bytes, head_dim, hidden_size, max_num_seqs, num_attention_heads,
                              num_key_value_heads, tensor_parallel, weight_bytes)

# vllm/model_executor/models/mllama.py dummy_image: Image.new("RGB", (1024, 1024))
DUMMY_IMAGE_PIXELS = 1024
# vllm/config.py MultiModalConfig.limit_per_prompt: "Defaults to 1 for each modality"
IMAGES_PER_PROMPT = 1
# MllamaVisionModel.forward: "num_padding_patches = (8 - (hidden_state.shape[-2] % 8)) % 8"
PATCH_PADDING = 8
# _parse_and_validate_image_input: out_images = torch.zeros(..., dtype=torch.float32)
FLOAT32_BYTES = 4
# MllamaTextRMSNorm.forward: hidden_states.to(torch.float32), then ``hidden * rsqrt(...)``:
# two float32 copies of the image keys alive at once
K_NORM_FLOAT32_COPIES = 2


def canvas_tiles(image_size: int, max_tiles: int, pixels: int = DUMMY_IMAGE_PIXELS) -> int:
    """Tiles of a ``pixels`` x ``pixels`` image: transformers image_processing_mllama.py
    ``get_optimal_tiled_canvas`` (the smallest upscale among the ``w x h <= max_tiles``
    arrangements, else the largest downscale; ties to the smallest canvas)."""
    arrangements = [(w, h) for w in range(1, max_tiles + 1) for h in range(1, max_tiles + 1) if w * h <= max_tiles]
    scales = {a: min(Fraction(a[0] * image_size, pixels), Fraction(a[1] * image_size, pixels)) for a in arrangements}
    up = [s for s in scales.values() if s >= 1]
    chosen = min(up) if up else max(scales.values())
    return min(w * h for (w, h), s in scales.items() if s == chosen)


def patches_per_tile(image_size: int, patch: int) -> int:
    """``P = (S / p)^2 + 1``: a tile's patches and its class token (``MllamaVisionModel.num_patches``)."""
    return (image_size // patch) ** 2 + 1


def padded_patches(image_size: int, patch: int) -> int:
    """``P8``: ``P`` padded to a multiple of 8 before the encoder (``MllamaVisionModel.forward``)."""
    return PATCH_PADDING * -(-patches_per_tile(image_size, patch) // PATCH_PADDING)


def dummy_images() -> sympy.Expr:
    """``N = N_seq x 1``: images of the profile batch (one per dummy sequence)."""
    return max_num_seqs * IMAGES_PER_PROMPT


def tower_state(v: dict) -> sympy.Expr:
    """``X = N T P8 H_v beta_a``: one hidden state of the vision tower (replicated over TP:
    ``ps.get_tp_group().all_gather`` after the patch embedding, row-parallel outputs)."""
    tokens = v["max_num_tiles"] * padded_patches(v["image_size"], v["patch_size"])
    return dummy_images() * tokens * v["hidden_size"] * activation_bytes


def pixel_inputs(v: dict) -> sympy.Expr:
    """``N T C S^2 (beta_a + 4)``: the batched ``pixel_values`` on the GPU in the model dtype
    (``MultiModalKwargs.as_kwargs(dtype=...)``) and the float32 ``out_images`` that
    ``_parse_and_validate_image_input`` copies them into; both alive through the forward."""
    pixels = v["max_num_tiles"] * v["num_channels"] * v["image_size"] ** 2
    return dummy_images() * pixels * (activation_bytes + FLOAT32_BYTES)


def patch_embeds(v: dict) -> sympy.Expr:
    """``N T (P - 1) H_v beta_a``: ``patch_embeds``, a local of ``MllamaVisionModel.forward``
    that stays referenced to the end of it."""
    patches = v["max_num_tiles"] * (patches_per_tile(v["image_size"], v["patch_size"]) - 1)
    return dummy_images() * patches * v["hidden_size"] * activation_bytes


def attention_mask(v: dict) -> sympy.Expr:
    """``N (T P8)^2 beta_a``: ``_prepare_aspect_ratio_attention_mask``'s dense
    ``[N, 1, T P8, T P8]`` mask, passed to every local and global layer's SDPA."""
    tokens = v["max_num_tiles"] * padded_patches(v["image_size"], v["patch_size"])
    return dummy_images() * tokens**2 * activation_bytes


def saved_states(v: dict) -> sympy.Expr:
    """``(2 n + 2) X``: during the last global layer, the ``n`` intermediate states the local
    encoder returned (``output[1]``, still referenced by ``output``), their ``torch.stack``
    copy, the local encoder's last state (``output[0]``) and the global encoder's input (the
    caller's ``hidden_state``, distinct from the last layer's input when there are two or
    more global layers)."""
    return (2 * v["intermediate_layers"] + 2) * tower_state(v)


def layer_peak(v: dict) -> sympy.Expr:
    """``(3 + 2 I_v / (H_v t)) X``: a tower layer at GELU (``MllamaVisionEncoderLayer.forward``,
    ``CLIPMLP``): its input (still the encoder loop's ``hidden_states``), the post-attention
    residual, the normed input, ``fc1``'s output and GELU's (column-parallel, ``I_v / t``
    wide) alive together. The attention (``qkv`` ``3 H_v / t``, SDPA's output, ``o_proj``)
    holds less: SDPA with a dense mask runs the memory-efficient kernel, no score matrix (a
    math-path ``[N, heads, T P8, T P8]`` would not fit any GPU at the default batch)."""
    ratio = sympy.Rational(v["intermediate_size"], v["hidden_size"])
    return (3 + 2 * ratio / tensor_parallel) * tower_state(v)


def vision_encoder_peak(v: dict) -> sympy.Expr:
    """The tower's peak, in its last global layer's MLP: inputs + ``patch_embeds`` + mask
    + saved states + the layer's own tensors (the sum of the functions above)."""
    return pixel_inputs(v) + patch_embeds(v) + attention_mask(v) + saved_states(v) + layer_peak(v)


def image_states(v: dict) -> sympy.Expr:
    """``Y = N T_c P h beta_a``: ``cross_attention_states`` after ``multi_modal_projector``
    (column-parallel, ``gather_output=True``) and ``flat_encoder_result`` (the actual tiles
    ``T_c`` of the 1024 x 1024 dummy image, :func:`canvas_tiles`), kept through the decoder."""
    tiles = canvas_tiles(v["image_size"], v["max_num_tiles"])
    return dummy_images() * tiles * patches_per_tile(v["image_size"], v["patch_size"]) * hidden_size * activation_bytes


def cross_attention_prefill_peak(v: dict) -> sympy.Expr:
    """A cross-attention layer on the image states (``MllamaTextCrossAttention.forward``):
    ``Y`` (kept), ``qkv_proj(cross_attention_states)`` (``(a + 2 a_kv) d / t`` per image
    token, all of it although only k and v are used) and ``k_norm``'s two float32 copies of
    the keys (``a_kv d / t``), with the pixel inputs still alive. The profile's dummy prompts
    (one leading image token) skip the dense cross-attention mask (``skip_attention_mask``)."""
    per_token = (num_attention_heads + 2 * num_key_value_heads) * head_dim / tensor_parallel
    keys = K_NORM_FLOAT32_COPIES * FLOAT32_BYTES * num_key_value_heads * head_dim / tensor_parallel
    tokens = image_states(v) / (hidden_size * activation_bytes)
    return pixel_inputs(v) + image_states(v) + tokens * (per_token * activation_bytes + keys)


def tower_replicated_parameters(v: dict) -> int:
    """Parameters of ``MllamaVisionModel`` every TP rank holds whole: the class, gated position
    and tile-position embeddings (``MllamaPrecomputedPositionEmbedding``: ``[P, H_v]`` and
    ``[R, T P H_v]``; two ``MllamaPrecomputedAspectRatioEmbedding`` ``[R, T H_v]``, gates),
    ``layernorm_pre`` / ``layernorm_post``, each layer's two LayerNorms and ``fc2`` bias
    (``RowParallelLinear``), the global layers' two gates. The patch embedding
    (``ColumnParallelConv2dPatch``), ``qkv_proj``, ``o_proj``, ``fc1`` and ``fc2`` weights are split."""
    h, patches = v["hidden_size"], patches_per_tile(v["image_size"], v["patch_size"])
    rows, tiles = v["aspect_ratio_rows"], v["max_num_tiles"]
    embeddings = h + 1 + patches * h + rows * tiles * patches * h + 2 * (rows * tiles * h + 1) + 4 * h
    layers = v["num_hidden_layers"] + v["num_global_layers"]
    return embeddings + layers * 5 * h + 2 * v["num_global_layers"]


def tp_layout_bytes(v: dict) -> sympy.Expr:
    """``(R - (D_v h + h)) (1 - 1/t) beta_w``: what vLLM's TP layout of the tower and projector
    holds beyond memsym's generic one (the whole tower split over ``t``, the projector
    replicated): the replicated tower parameters ``R`` (:func:`tower_replicated_parameters`)
    are whole on every rank, and ``multi_modal_projector`` (``ColumnParallelLinear``,
    ``gather_output=True``: weight and bias split) is not. 0 at ``t = 1``."""
    projector = v["vision_output_dim"] * hidden_size + hidden_size
    return (tower_replicated_parameters(v) - projector) * (1 - 1 / tensor_parallel) * weight_bytes
