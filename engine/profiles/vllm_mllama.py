"""Llama 3.2 Vision (``mllama``) on vLLM's V0 engine, as vLLM 0.6.3 sizes it
(``--vllm-version 0.6``; V1 never served it, and 0.7's code is not modelled).

What differs from a decoder-only model (vllm/model_executor/models/mllama.py of v0.6.3):

- **weights**: the whole checkpoint, vision tower and projector included
  (``MllamaForConditionalGeneration.__init__`` builds ``vision_model``, ``language_model``
  and ``multi_modal_projector``; ``load_weights`` loads every tensor). The text embedding is
  ``VocabParallelEmbedding(vocab_size + 8, h)``: its ``V + 8`` rows padded to 64 as one
  table, 56 rows more than memsym's ``pad(V) + 8`` for Llama's vocabulary;
- **KV cache**: vllm/worker/cache_engine.py ``CacheEngine.get_cache_block_size`` sizes a
  block over ``model_config.get_num_layers`` = every text layer, the cross-attention ones
  included (they hold the image tokens' keys and values in the same block pool);
- **profile-run peak**: the vision encoder on ``max_num_seqs`` dummy images of
  ``max_num_tiles`` tiles and the cross-attention prefill on their states
  (formulas/frameworks/vllm_mllama.py), beside the decoder forward and the sampler.
- **quantized checkpoints** (:func:`check_quantization`): ``MllamaForCausalLM`` gets
  ``quant_config`` (every text layer's linears, cross-attention included, counted by
  engine/profiles/vllm_quant.py's readers). The tower and ``multi_modal_projector`` stay in
  the model dtype: the first release's file (vllm-project/vllm#8811) builds them without
  ``quant_config``; later ones pass it (#9217) and the checkpoint's ignore entries keep them
  unquantized once the tower has its ``vision_model.`` prefix (#9628, 2024-10-23).
"""

from __future__ import annotations

import re

import sympy

from engine.errors import InputError
from engine.spec import ModelSpec, shown
from formulas import symbols as S
from formulas.frameworks import vllm as F
from formulas.frameworks import vllm_mllama as M

MODEL_TYPE = "mllama"
MODELLED_VERSION = "0.6"
EXTRA_EMBEDDING_ROWS = 8  # mllama.py MllamaTextModel: VocabParallelEmbedding(config.vocab_size + 8, ...)
MODEL_FILE = "vLLM 0.6.3 vllm/model_executor/models/mllama.py"

SOURCES = {
    "weights/image_token_rows_padding": f"{MODEL_FILE} MllamaTextModel.embed_tokens: VocabParallelEmbedding("
                                        "vocab_size + 8) padded to 64 as one table (pad_vocab_size)",
    "weights/vision_tp_layout": f"{MODEL_FILE} MllamaVisionModel (embeddings, LayerNorms, fc2 biases replicated "
                                "over TP ranks; qkv/o/fc1/fc2 and the patch embedding split) and multi_modal_projector "
                                "(ColumnParallelLinear, split): the difference to the tower split whole and the "
                                "projector replicated",
    "activations/vision_encoder": f"{MODEL_FILE} MllamaVisionModel.forward on max_num_seqs dummy images "
                                  "(enc_dec_model_runner.py EncoderDecoderModelRunner.profile_run, "
                                  "dummy_encoder_data_for_mllama): pixel inputs, patch_embeds, the dense "
                                  "aspect-ratio mask, saved intermediate states, one layer's MLP",
    "activations/cross_attention_prefill": f"{MODEL_FILE} MllamaTextCrossAttention.forward: qkv_proj and "
                                           "k_norm over the projected image states (flat_encoder_result)",
    "activations/image_states": f"{MODEL_FILE} get_cross_attention_states: multi_modal_projector output "
                                "kept through the decoder forward",
}
DESCRIPTIONS = {
    "weights/vision_tp_layout": f"{MODEL_FILE} MllamaVisionModel (embeddings, LayerNorms, fc2 biases replicated "
                                "over TP ranks; qkv/o/fc1/fc2 and the patch embedding split) and multi_modal_projector "
                                "(ColumnParallelLinear, split): the difference to the tower split whole and the "
                                "projector replicated",
    "activations/vision_encoder": "vision tower on the dummy images (its peak)",
    "activations/cross_attention_prefill": "cross-attention layer on the image states",
    "activations/image_states": "projected image states held through the decoder",
}
NOTE = ("mllama on vLLM 0.6.3's V0 profile run: max_num_seqs dummy 1024x1024 images of max_num_tiles tiles "
        "through the vision tower at once (formulas/frameworks/vllm_mllama.py); the caching allocator's "
        "fragmentation under these GB-sized tensors is not modelled")


def is_mllama(spec: ModelSpec) -> bool:
    return spec.model_type == MODEL_TYPE


def check(spec: ModelSpec, version: str, pp: int = 1) -> None:
    """Refuse what is not modelled: any release but 0.6 (V1 never served it; V0 0.7's code
    changed), pipeline parallelism (0.6.3's ``MllamaForConditionalGeneration`` is not
    ``SupportsPP``: vLLM refuses it), and the quantized checkpoints :func:`check_quantization` refuses."""
    if version != MODELLED_VERSION:
        raise InputError(f"--vllm-version {version}: {spec.name} (mllama) is modelled for --vllm-version 0.6 only "
                         "(vLLM 0.6.3's V0 encoder-decoder profile run)")
    if pp > 1:
        raise InputError(f"--pipeline-parallel-size {pp}: vLLM 0.6.3 does not run {spec.name} (mllama) with "
                         "pipeline parallelism (MllamaForConditionalGeneration does not support PP)")
    image = dict(spec.vision_shape).get("image_size", 0)
    if image % 14:  # mllama.py input_processor_for_mllama: "chunk size should be multiple of 14"
        raise InputError(f"--vllm-version 0.6: {spec.name} (mllama): vision_config image_size {image} is not a "
                         "multiple of 14, which vLLM's mllama.py asserts")
    if spec.quantization.get("quant_method"):
        check_quantization(spec)


# quant_methods whose 0.6.3 linear methods hold what engine/profiles/vllm_quant.py's readers count
# for the text model's linears (vLLM 0.6.3 quantization/compressed_tensors/schemes:
# CompressedTensorsW8A8Fp8 / W8A8Int8 / WNA16 create_weights; quantization/fp8.py Fp8LinearMethod)
QUANT_METHODS = ("compressed-tensors", "fp8")
# compressed-tensors formats vLLM 0.6.3's CompressedTensorsConfig reads (nvfp4 came in 2025)
CT_FORMATS = (None, "pack-quantized", "int-quantized", "float-quantized", "naive-quantized")
IGNORE_FIELDS = {"compressed-tensors": ("ignore",), "fp8": ("ignored_layers", "modules_to_not_convert")}
# the tower and projector are counted unquantized: the checkpoint's ignore list must name both
# (vllm-project/vllm#9628: with quant_config they are ignored by these module prefixes)
UNQUANTIZED_MODULES = ("vision_model", "multi_modal_projector")
# the text layers' module names differ across the 0.6 releases' mllama.py (none in #8811's
# file, ``language_model.model.layers.N`` later): an entry naming a text projection is not read
TEXT_PROJECTION = re.compile(r"(self_attn|cross_attn|mlp|_proj)")
REFUSED_METHODS = {
    "bitsandbytes": "vLLM 0.6.3's mllama.py has no bitsandbytes support; vllm-project/vllm#9720 added it "
                    "after 0.6.3, where the tower's linears take quant_config too: not modelled",
}


def check_quantization(spec: ModelSpec) -> None:
    """Refuse a quantized mllama checkpoint vLLM 0.6.3 would hold otherwise than counted: a
    method other than compressed-tensors / fp8, block-scaled fp8, NVFP4, an ignore list that
    leaves the vision tower or projector quantized, or one naming text-model projections."""
    config, where = spec.quantization, f"--vllm-version 0.6: {spec.name} (mllama) quantization_config"
    method = config.get("quant_method")
    if method not in QUANT_METHODS:
        why = REFUSED_METHODS.get(method) if isinstance(method, str) else None
        raise InputError(f"{where}.quant_method {shown(method)} is not modelled "
                         f"({why or 'modelled: ' + ', '.join(QUANT_METHODS)})")
    if method == "fp8" and config.get("weight_block_size") is not None:
        raise InputError(f"{where}.weight_block_size {shown(config.get('weight_block_size'))} is not modelled "
                         "(vLLM 0.6.3's Fp8LinearMethod has per-tensor scales only)")
    if method == "compressed-tensors" and config.get("format") not in CT_FORMATS:
        raise InputError(f"{where}.format {shown(config.get('format'))} is not modelled for vLLM 0.6.3")
    entries = next((config[f] for f in IGNORE_FIELDS[method] if config.get(f)), [])
    entries = entries if isinstance(entries, list) else []
    for module in UNQUANTIZED_MODULES:
        if not any(isinstance(e, str) and module in e for e in entries):
            raise InputError(f"{where}: the ignore list does not name {module} (a quantized vision tower or "
                             "projector is not modelled for mllama)")
    text = [e for e in entries if isinstance(e, str) and "lm_head" not in e
            and not any(m in e for m in UNQUANTIZED_MODULES) and TEXT_PROJECTION.search(e)]
    if text:
        raise InputError(f"{where}: ignore entry {shown(text[0])} is not modelled (vLLM's 0.6 mllama.py names its "
                         "text layers differently across releases)")


def weight_padding() -> sympy.Expr:
    """``(64 ceil((V + 8) / 64) - 64 ceil(V / 64)) h beta_w / t - 8 h beta_w``: what vLLM's single
    padded ``V + 8`` table (split over TP ranks) holds beyond memsym's split padded vocabulary
    plus 8 whole image-token rows (``embedding/image_token_rows``)."""
    rows = F.VOCAB_PADDING * sympy.ceiling((S.vocab_size + EXTRA_EMBEDDING_ROWS) / F.VOCAB_PADDING) - F.padded_vocab()
    return (rows / S.tensor_parallel - EXTRA_EMBEDDING_ROWS) * S.hidden_size * S.weight_bytes


def with_mllama(spec: ModelSpec, terms: dict[str, sympy.Expr]) -> dict[str, sympy.Expr]:
    """``terms`` (the decoder-only worker's) with mllama's weights and profile-run peaks."""
    shape = dict(spec.vision_shape)
    weights = {name: expr for name, expr in terms.items() if name.split("/")[0] == "weights"}
    weights["weights/image_token_rows_padding"] = weight_padding()
    weights["weights/vision_tp_layout"] = M.tp_layout_bytes(shape)
    weights["weights"] = terms["weights"] + weights["weights/image_token_rows_padding"] + weights["weights/vision_tp_layout"]
    out = {**weights, **{name: expr for name, expr in terms.items() if name not in weights}}
    vision = M.vision_encoder_peak(shape)
    cross = M.cross_attention_prefill_peak(shape)
    held = M.pixel_inputs(shape) + M.image_states(shape)
    out["activations/vision_encoder"] = vision
    out["activations/cross_attention_prefill"] = cross
    out["activations/image_states"] = M.image_states(shape)
    cublas = sympy.Integer(F.CUBLAS_WORKSPACE_BYTES)
    out["activations"] = sympy.Max(terms["activations"], vision + cublas, cross + cublas,
                                   terms["activations/forward"] + held + cublas)
    return out
