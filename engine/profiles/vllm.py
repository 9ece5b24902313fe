"""The ``vllm`` profile: one vLLM V1 worker's start-up memory, as vLLM 0.19 computes it.

``build_worker(spec, scenario, settings, stage)`` gives one pipeline stage's worker as a
:class:`MemoryModel` whose top-level terms sum to the requested memory: ``weights``,
``activations`` (the profile run's torch peak increase), ``non_torch``, ``cuda_graphs``
and ``kv_cache`` (what is left: "Available KV cache memory"). Beside it, the quantities
vLLM prints from the KV-cache configuration (blocks, "GPU KV cache size" tokens,
"Maximum concurrency") as expressions in the same symbols. Every formula is in
formulas/frameworks/vllm.py with the vLLM file and function it follows; every term carries
its source in ``MemoryModel.sources``.

What each worker holds under tensor (``t``) and pipeline (``p``) parallelism follows
vLLM's model code: heads, MLP and the vocab-parallel embedding/head split over ``t``;
layers split by ``vllm/distributed/utils.py`` ``get_pp_indices`` (the remainder goes to
the stages before the last); the first stage holds the embedding, the last the final norm,
the LM head (its own copy when tied) and the sampler. The engine sizes every worker's
cache from the smallest worker (``vllm/v1/core/kv_cache_utils.py`` ``get_kv_cache_configs``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from fractions import Fraction

import sympy

from engine import architecture
from engine.errors import InputError
from engine.model import MemoryModel
from engine.profiles import Profile, vllm_hybrid, vllm_mllama, vllm_mxfp4, vllm_quant
from engine.profiles.vllm_settings import (KNOBS, MODES, REFUSAL_NOTE, SCHEME_METHODS, SUMMARY, V0_SOURCES, VllmSettings, check, defaults_for,  # noqa: F401
                                           kv_layout, quant_scheme, serving_dtypes, settings_from)
from engine.quantization import Quantization
from engine.scenario import Scenario
from engine.spec import ModelSpec
from formulas import parameters as P
from formulas import symbols as S
from formulas import weights as W
from formulas.frameworks import vllm as F
from formulas.parallelism import is_per_layer
from formulas.weights import STORED_FORMATS

SOURCES = {
    "weights": "vllm/v1/worker/gpu_model_runner.py GPUModelRunner.load_model ('Model loading took'): "
               "parameters as the vLLM model classes allocate them",
    "weights/embedding": "vllm/model_executor/layers/vocab_parallel_embedding.py VocabParallelEmbedding "
                         "(rows padded to 64, split over tensor-parallel ranks)",
    "weights/lm_head": "vocab_parallel_embedding.py ParallelLMHead (rows padded to 64; the last stage's own copy "
                       "when tied under pipeline parallelism)",
    "weights/rotary_cache": "vllm/model_executor/layers/rotary_embedding/base.py RotaryEmbedding.__init__ (cos_sin_cache)",
    "weights/mla_absorbed": "MLACommonImpl.process_weights_after_loading (W_UK_T / W_UV from kv_b_proj)",
    "weights/mla_w_q_uk": "vLLM 0.7.1-0.7.3 vllm/attention/backends/mla/utils.py MLACommonImpl."
                          "process_weights_after_loading (W_Q_UK, VLLM_MLA_PERFORM_MATRIX_ABSORPTION=1)",
    "weights/mla_w_uv_o": "vLLM 0.7.1-0.7.3 vllm/attention/backends/mla/utils.py MLACommonImpl."
                          "process_weights_after_loading (W_UV_O, VLLM_MLA_PERFORM_MATRIX_ABSORPTION=1)",
    "weights/mla_w_qr": "vLLM 0.7.1-0.7.3 vllm/attention/backends/mla/utils.py MLACommonImpl."
                        "process_weights_after_loading (W_QR, the contiguous rope slice of q_proj)",
    "activations": "vllm/utils/mem_utils.py memory_profiling (torch_peak_increase) around GPUModelRunner.profile_run",
    "activations/forward": "GPUModelRunner._dummy_run(max_num_batched_tokens): the largest layer's tensors",
    "activations/sampler": "GPUModelRunner._dummy_sampler_run over min(max_num_seqs, max_num_batched_tokens) requests",
    "activations/encoder_cache": "GPUModelRunner.profile_run: dummy multimodal embeddings of the encoder budget "
                                 "(max_num_batched_tokens) kept in encoder_cache through the dummy forward and sampler",
    "activations/cublas_workspace": "PyTorch CublasHandlePool.cpp getChosenWorkspaceSize (caching allocator, kept)",
    "non_torch": "vllm/utils/mem_utils.py memory_profiling (non_torch_increase since the worker's init snapshot)",
    "cuda_graphs": "vllm/v1/worker/gpu_worker.py determine_available_memory: 0.19 subtracts the CUDA-graph "
                   "estimate only with VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=1",
    "kv_cache": "vllm/v1/worker/gpu_worker.py determine_available_memory: requested - non_kv_cache_memory",
}

DESCRIPTIONS = {
    "weights": "weights as vLLM loads them (padded vocab, rotary cache)",
    "activations": "torch peak increase of the profile run",
    "activations/forward": "dummy forward of max_num_batched_tokens tokens",
    "activations/sampler": "dummy sampler: logits and float32 temporaries",
    "activations/encoder_cache": "dummy image embeddings held during the profile run",
    "activations/cublas_workspace": "cuBLAS workspace from the caching allocator",
    "non_torch": "memory outside torch grown during start-up (CUDA modules, NCCL)",
    "cuda_graphs": "CUDA-graph memory subtracted before the KV cache",
    "kv_cache": "available KV cache memory",
}


@dataclass(frozen=True)
class Worker:
    """One worker's memory model and the KV-cache quantities vLLM prints for it."""

    stage: int
    model: MemoryModel
    quantities: dict[str, sympy.Expr]

    def value(self, name: str):
        """An exact quantity (int or Rational) with the model's facts substituted."""
        return self.model.pinned(self.quantities[name])


def is_multimodal(spec: ModelSpec) -> bool:
    """A checkpoint with a vision tower (engine/families_multimodal.py ``with_vision``)."""
    return any(name.startswith("vision/") for name, _ in spec.extra_tensors)


def is_mla(spec: ModelSpec) -> bool:
    return spec.layer_count(mixer="mla") > 0


def stage_layer_counts(num_layers: int, pp: int) -> list[int]:
    """Layers per pipeline stage: vllm/distributed/utils.py ``get_pp_indices``."""
    per_stage = [num_layers // pp] * pp
    for i in range(2, num_layers % pp + 2):
        per_stage[-i] += 1
    return per_stage


def _stage_tensors(spec: ModelSpec, first: bool, last: bool) -> list[P.WeightTensor]:
    tensors = architecture.parameter_tensors(spec) + architecture.buffer_tensors(spec)
    keep = [t for t in tensors if (t.component != "embedding" or first)
            and (t.component != "lm_head" and t.name != "norm/final" or last)]
    if last and spec.tie_word_embeddings and not first:  # the last stage's own head
        keep.append(P.WeightTensor("lm_head", S.vocab_size, S.hidden_size, sympy.Integer(1), parallel="tensor"))
    return keep


# The vision towers' attention and MLP are vLLM parallel linears split over TP ranks
# (siglip.py SiglipAttention/SiglipMLP, pixtral.py PixtralHFAttention/PixtralHFMLP,
# mllama4.py Llama4VisionAttention, moonvit.py MoonVitEncoderLayer: QKVParallelLinear,
# Column/RowParallelLinear); the patch and position embeddings and norms (1-2 % of a tower)
# are replicated, which this share splits too. The projectors are counted replicated. Every
# pipeline stage builds the tower (the model classes create it unconditionally).
TP_SPLIT_EXTRAS = ("vision/tower",)


def _share(tensor: P.WeightTensor) -> sympy.Expr:
    share = sympy.Integer(1)
    if tensor.parallel in ("tensor", "expert") or tensor.name in TP_SPLIT_EXTRAS:  # experts too (no EP)
        share /= S.tensor_parallel
    if is_per_layer(tensor):
        share *= S.stage_layers / S.num_hidden_layers
    return share


# vllm/model_executor/layers/quantization/mxfp4.py Mxfp4MoEMethod.create_weights: the routed
# experts as uint8 E2M1 pairs (w13 [E, 2 f_e, h/2], w2 [E, h, f_e/2]), uint8 E8M0 scales per 32
# and bf16 biases; every other layer UnquantizedLinearMethod (Mxfp4Config.get_quant_method).
MXFP4_EXPERTS = Quantization(STORED_FORMATS["mxfp4"], "vLLM Mxfp4MoEMethod", experts_only=True)


def _tensor_bytes(tensor: P.WeightTensor, scheme: str, marlin=None, mxfp4=None) -> sympy.Expr:
    """One tensor as vLLM holds it under ``scheme``. ``marlin``: the checkpoint's formats as
    vLLM's kernels hold them (engine/profiles/vllm_quant.py ``Held``). MXFP4 experts as the chosen
    backend (``mxfp4``, engine/profiles/vllm_mxfp4.py ``Backend``; Triton without one) keeps them:
    padded rank width (and hidden size on Marlin), the scale copies (the ``beta_sc`` fact,
    :func:`_facts`), the backend's bias dtype."""
    if marlin is not None:
        return marlin.tensor_bytes(tensor)
    if scheme != "mxfp4":
        return W.tensor_bytes(tensor, scheme)
    stored = MXFP4_EXPERTS.tensor_bytes(tensor)
    if tensor.parallel != "expert":
        return stored
    backend = mxfp4 or vllm_mxfp4.choose("auto", None)
    return vllm_mxfp4.expert_bytes(stored, not tensor.quantizable, tensor.numel, backend)


def weight_terms(spec: ModelSpec, scheme: str, first: bool, last: bool, marlin=None,
                 mxfp4=None, version: str = "0.19") -> dict[str, sympy.Expr]:
    """weights and weights/<component> of one stage's worker, vocab padded to 64."""
    padded = {S.vocab_size: F.padded_vocab()}
    parts: dict[str, sympy.Expr] = {}
    for t in _stage_tensors(spec, first, last):
        if t.component in ("embedding", "lm_head"):
            t = replace(t, rows=t.rows.xreplace(padded))
        parts[t.component] = parts.get(t.component, 0) + _tensor_bytes(t, scheme, marlin, mxfp4) * _share(t)
    if spec.rope_cache_positions and spec.rotary_dim:
        parts["rotary_cache"] = F.rotary_cache_bytes()
    if is_mla(spec):
        if version != "0.7" or scheme != "none":  # 0.7: an unquantized kv_b_proj's W_UK / W_UV are views
            parts["mla_absorbed"] = S.stage_layers * F.mla_absorbed_bytes()
        if version == "0.7":
            parts.update(mla_v07_parts(spec, scheme))
    terms = {"weights": sympy.Add(*parts.values())}
    terms.update({f"weights/{name}": expr for name, expr in parts.items()})
    return terms


def mla_v07_parts(spec: ModelSpec, scheme: str) -> dict[str, sympy.Expr]:
    """vLLM 0.7.1-0.7.3's decode matrices per MLA layer (formulas/frameworks/vllm.py ``mla_v07_*``).

    Matrix absorption (``VLLM_MLA_PERFORM_MATRIX_ABSORPTION``, default 1 in those releases'
    vllm/envs.py) came with vllm-project/vllm#12528 ("[Attention] MLA decode optimizations",
    merged 2025-01-31, first in v0.7.1) and was removed by #14770 ("[Attention] MLA get rid of
    materialization", 2025-03-13, first in v0.8.0: only ``W_UK_T`` / ``W_UV`` are kept since). ``W_Q_UK`` and ``W_UV_O`` are requantized
    to FP8 for FP8 checkpoints (scales left out: one per 128 x 128 block at most). The
    dequantized ``kv_b_proj`` copy (``mla_absorbed``) is kept by ``self.W_UK`` / ``self.W_UV``
    for quantized checkpoints only (an unquantized one's are views of its weight).
    """
    rank = next(g for g in spec.layers if g.mixer == "mla").mixer_options
    query = S.hidden_size if dict(rank).get("q_lora_rank") is None else S.q_lora_rank
    beta = sympy.Integer(1) if scheme == "fp8" else S.weight_bytes
    return {"mla_w_q_uk": S.stage_layers * F.mla_v07_q_uk_bytes(query, beta),
            "mla_w_uv_o": S.stage_layers * F.mla_v07_uv_o_bytes(beta),
            "mla_w_qr": S.stage_layers * F.mla_v07_qr_bytes(query)}


def activation_terms(spec: ModelSpec, last: bool, float32: bool = False) -> dict[str, sympy.Expr]:
    """The profile run's torch peak: the larger of the forward and (last stage) the sampler."""
    dense = spec.layer_count(mlp="dense") > 0
    forwards = ([F.dense_forward_peak()] if dense else []) + ([F.moe_forward_peak()] if spec.is_moe else [])
    forwards += vllm_hybrid.forward_peaks(spec)  # recurrent layers' input projections
    forward = sympy.Max(*forwards)
    kept = F.moe_workspace() if spec.is_moe else sympy.Integer(0)  # the workspace manager keeps it
    terms = {"activations/forward": forward}
    v1_encoder = is_multimodal(spec) and not vllm_mllama.is_mllama(spec)  # mllama: engine/profiles/vllm_mllama.py
    encoder = F.encoder_cache_bytes() if v1_encoder else sympy.Integer(0)
    if v1_encoder:
        terms["activations/encoder_cache"] = encoder
    peaks = [forward + encoder]
    if last:
        terms["activations/sampler"] = F.kept_hidden_states() + kept + F.sampler_peak(float32)
        peaks.append(terms["activations/sampler"] + encoder)
    terms["activations/cublas_workspace"] = sympy.Integer(F.CUBLAS_WORKSPACE_BYTES)
    return {"activations": sympy.Max(*peaks) + F.CUBLAS_WORKSPACE_BYTES, **terms}


def kv_quantities(spec: ModelSpec, available: sympy.Expr, sliding_layers: sympy.Expr,
                  kinds: tuple[bool, bool], local_blocks: sympy.Expr | None = None) -> dict[str, sympy.Expr]:
    """Blocks, tokens and concurrency of one worker's KV cache (kv_cache_utils.py).

    One KV-cache group per spec when all layers share one; a hybrid model (full and
    local layers, same page size) gets groups of ``min(full, local)`` layers
    (``_get_kv_cache_groups_uniform_page_size``) and a block spans one layer per group slot.
    The local layers are sliding-window ones (``local_blocks`` None: ``SlidingWindowSpec``)
    or chunked ones (``local_blocks`` = ``ChunkedLocalAttentionSpec``'s blocks per request).
    """
    local_request = F.sliding_window_request_blocks() if local_blocks is None else local_blocks
    page = F.mla_page_bytes() if is_mla(spec) else F.attention_page_bytes()
    full_layers = S.stage_layers - sliding_layers
    has_full, has_sliding = kinds  # which specs the stage's layers use (structure, from the counts)
    if not (has_full and has_sliding):
        group_size, full_groups, sliding_groups = S.stage_layers, sympy.Integer(has_full), sympy.Integer(has_sliding)
    else:
        group_size = sympy.Min(full_layers, sliding_layers)
        full_groups = sympy.ceiling(full_layers / group_size)
        sliding_groups = sympy.ceiling(sliding_layers / group_size)
    blocks = F.num_gpu_blocks(available, page, group_size)
    request = full_groups * F.full_attention_request_blocks()
    if has_sliding:
        request += sliding_groups * local_request
    needed = page * full_layers * F.full_attention_request_blocks() if has_full else sympy.Integer(0)
    if has_sliding:
        needed += page * sliding_layers * local_request
    return {
        "page_bytes": page, "layers_per_block": group_size, "num_groups": full_groups + sliding_groups,
        "num_gpu_blocks": blocks, "kv_cache_tokens": F.kv_cache_tokens(blocks, full_groups + sliding_groups),
        "request_blocks": request, "max_concurrency": F.max_concurrency(blocks, request),
        "request_kv_bytes": needed,
    }


def local_layers(spec: ModelSpec) -> tuple[str, sympy.Symbol, sympy.Expr | None]:
    """(mixer kind, layer-count symbol, blocks per request) of the model's local layers.

    Sliding-window layers get ``SlidingWindowSpec``; Llama 4's chunked layers get
    ``ChunkedLocalAttentionSpec`` (vllm/model_executor/layers/attention/chunked_local_attention.py
    ``ChunkedLocalAttention.get_kv_cache_spec``), kept apart from the full layers because
    0.19 runs the hybrid KV-cache manager for chunked attention by default
    (vllm/envs.py ``VLLM_ALLOW_CHUNKED_LOCAL_ATTN_WITH_HYBRID_KV_CACHE`` "1" since
    vllm-project/vllm#29627; the off-by-default of #21761 is history, see #46553). With that
    variable 0 vLLM unifies them into full attention (``unify_hybrid_kv_cache_specs``).
    """
    if spec.layer_count(mixer="chunked_attention"):
        return "chunked_attention", S.num_chunked_layers, F.chunked_local_request_blocks()
    return "sliding_attention", S.num_sliding_layers, None


def build_worker(spec: ModelSpec, scenario: Scenario, settings: VllmSettings, stage: int = 0) -> Worker:
    """The memory model of pipeline stage ``stage``'s worker (every TP rank of it is alike)."""
    check(spec, scenario, settings)
    counts = stage_layer_counts(spec.num_hidden_layers, scenario.pp)
    if not 0 <= stage < scenario.pp:
        raise InputError(f"stage {stage} is not one of the {scenario.pp} pipeline stages")
    first, last = stage == 0, stage == scenario.pp - 1
    marlin = vllm_quant.held_formats(spec, settings.quantization)
    terms = weight_terms(spec, quant_scheme(spec, settings), first, last, marlin, mxfp4_backend(spec, settings),
                         settings.version)
    terms.update(activation_terms(spec, last, settings.dtype == "float32"))
    if vllm_mllama.is_mllama(spec):
        terms = vllm_mllama.with_mllama(spec, terms)
    terms["non_torch"] = S.non_torch_bytes
    terms["cuda_graphs"] = sympy.Integer(0)
    rest = terms["weights"] + terms["activations"] + terms["non_torch"] + terms["cuda_graphs"]
    terms["kv_cache"] = sympy.floor(F.requested_memory() - rest)
    local, local_symbol, local_blocks = local_layers(spec)
    num_sliding = spec.layer_count(mixer=local)
    stage_sliding = num_sliding * counts[stage] // spec.num_hidden_layers
    if num_sliding == spec.num_hidden_layers:
        stage_sliding = counts[stage]
    sliding = local_symbol if scenario.pp == 1 and num_sliding else sympy.Integer(stage_sliding)
    kinds = (stage_sliding < counts[stage], stage_sliding > 0)
    facts, inputs = _facts(spec, scenario, settings, counts[stage]), _inputs(spec, scenario, settings)
    if vllm_hybrid.recurrent_kind(spec):  # MambaSpec layers: engine/profiles/vllm_hybrid.py
        cache = vllm_hybrid.quantities(spec, terms["kv_cache"], vllm_hybrid.effective_mode(spec, settings))
        terms.update(vllm_hybrid.state_terms(terms["kv_cache"], cache))
        facts.update(vllm_hybrid.facts(spec, settings, serving_dtypes(spec, scenario, settings)[0]))
        inputs.update(vllm_hybrid.inputs(spec, settings))
    else:
        cache = kv_quantities(spec, terms["kv_cache"], sliding, kinds, local_blocks)
    quantities = {"requested_bytes": F.requested_memory(), **cache}
    model = MemoryModel(
        name=spec.name, mode="inference", terms=terms, facts=facts,
        descriptions={**DESCRIPTIONS, **vllm_hybrid.DESCRIPTIONS, **vllm_mllama.DESCRIPTIONS}, inputs=inputs,
        parameters=P.parameter_count(architecture.parameter_tensors(spec)),
        active_parameters=P.active_parameter_count(architecture.parameter_tensors(spec)),
        sources=sources(terms, settings),
    )
    return Worker(stage, model, quantities)


def sources(terms: dict, settings: VllmSettings) -> dict[str, str]:
    """Every term's source: the V1 code, or the V0 engine's own under ``--vllm-version 0.6/0.7``."""
    cited = {**SOURCES, **(V0_SOURCES if settings.v0 else {}), **vllm_hybrid.SOURCES, **vllm_mllama.SOURCES}
    return {name: cited.get(name, cited.get(name.split("/")[0], "")) for name in terms}


def build_workers(spec: ModelSpec, scenario: Scenario, settings: VllmSettings) -> list[Worker]:
    """Every pipeline stage's worker, first to last."""
    return [build_worker(spec, scenario, settings, stage) for stage in range(scenario.pp)]


def _facts(spec: ModelSpec, scenario: Scenario, settings: VllmSettings, layers: int) -> dict:
    values: dict[sympy.Symbol, sympy.Expr] = dict(architecture.facts(spec))
    weight_width, kv_width = serving_dtypes(spec, scenario, settings)
    quant_bytes, scale_bytes, group = W.QUANT_SCHEMES[quant_scheme(spec, settings)]
    if quant_scheme(spec, settings) == "mxfp4":
        scale_bytes *= vllm_mxfp4.scale_factor(mxfp4_backend(spec, settings))
    configured = spec.quantization.get("group_size", spec.quantization.get("q_group_size"))
    if group and isinstance(configured, int) and not isinstance(configured, bool) and configured > 0:
        group = configured  # the checkpoint's own group size (GPTQ/AWQ quantization_config)
    marlin = vllm_quant.held_formats(spec, settings.quantization)
    if marlin is not None:  # the linears as vLLM's kernels hold them (vllm_quant.py)
        quant_bytes, scale_bytes, group = marlin.dense.value_bytes, marlin.dense.scale_bytes, marlin.dense.group
    resolved = defaults_for(spec, scenario, settings)
    widths = {
        S.weight_bytes: weight_width, S.activation_bytes: weight_width, S.kv_cache_bytes: kv_width,
        S.quantized_weight_bytes: quant_bytes or None, S.quant_scale_bytes: scale_bytes or None,
        S.quant_group_size: group, S.tensor_parallel: scenario.tp, S.pipeline_parallel: scenario.pp,
        S.block_size: resolved.block_size, S.stage_layers: layers,
        S.max_num_batched_tokens: resolved.max_num_batched_tokens, S.max_num_seqs: resolved.max_num_seqs,
        S.max_model_len: resolved.max_model_len, S.gpu_memory_utilization: resolved.gpu_memory_utilization,
        S.cuda_total_bytes: resolved.cuda_total_bytes, S.non_torch_bytes: resolved.non_torch_bytes(scenario),
        S.rotary_positions: spec.rope_cache_positions, S.rotary_dim: spec.rotary_dim,
    }
    values.update({sym: sympy.Rational(v) for sym, v in widths.items() if v is not None})
    return values


def _number(width) -> int | float:
    """A byte width as a JSON number (issue 14): an int when whole, else a float."""
    return int(width) if Fraction(width).denominator == 1 else float(width)


def _inputs(spec: ModelSpec, scenario: Scenario, settings: VllmSettings) -> dict[str, object]:
    resolved = defaults_for(spec, scenario, settings)
    weight_width, kv_width = serving_dtypes(spec, scenario, settings)
    return {"model": spec.name, "profile": "vllm", "tp": scenario.tp, "pp": scenario.pp,
            **resolved.as_inputs(), "weight_bytes": _number(weight_width), "kv_cache_bytes": _number(kv_width),
            "quantization": _quant_name(spec, settings), "kv_layout": kv_layout(spec),
            "assumptions": model_assumptions(spec, settings)}


def mxfp4_backend(spec: ModelSpec, settings: VllmSettings):
    """The MXFP4 MoE backend vLLM picks for ``settings`` (None: no MXFP4 experts)."""
    if quant_scheme(spec, settings) != "mxfp4":
        return None
    return vllm_mxfp4.choose(settings.mxfp4_backend, settings.gpu_name)


def _quant_name(spec: ModelSpec, settings: VllmSettings) -> str:
    """The held format's name (vllm_quant.py) where the checkpoint has one, else the scheme."""
    held = vllm_quant.held_formats(spec, settings.quantization)
    return held.name if held is not None else quant_scheme(spec, settings)


def model_assumptions(spec: ModelSpec, settings: VllmSettings) -> list[str]:
    """What the prediction takes for granted about this model's path through vLLM."""
    notes = []
    if spec.layer_count(mixer="chunked_attention"):
        notes.append("chunked layers in their own KV groups (VLLM_ALLOW_CHUNKED_LOCAL_ATTN_WITH_HYBRID_KV_CACHE=1, "
                     "0.19's default)")
    held = vllm_quant.held_formats(spec, settings.quantization)
    if held is not None:
        notes.append(f"quantized linears as vLLM's kernels hold them after loading: {held.name}, read from the "
                     f"config's quantization_config (quant_method {spec.quantization.get('quant_method')!r}; "
                     "engine/profiles/vllm_quant.py)")
    if quant_scheme(spec, settings) == "mxfp4":
        notes.append(mxfp4_backend(spec, settings).note)
    if vllm_mllama.is_mllama(spec):
        notes.append(vllm_mllama.NOTE)
    elif is_multimodal(spec):
        notes.append("the vision encoder's own profile-run peak is not modelled (its dummy-image "
                     "embeddings are)")
    return notes


def smallest_worker(workers: list[Worker]) -> Worker:
    """The worker with the fewest blocks (the engine sizes every cache from it); the last
    stage when blocks are still symbolic."""
    try:
        return min(workers, key=lambda w: int(w.value("num_gpu_blocks")))
    except TypeError:
        return workers[-1]


def check_scenario(spec: ModelSpec, scenario: Scenario) -> None:
    check(spec, scenario, settings_from(scenario))


def build(spec: ModelSpec, scenario: Scenario) -> MemoryModel:
    """The profile plug-in's entry: the smallest worker under vLLM's defaults."""
    return smallest_worker(build_workers(spec, scenario, settings_from(scenario))).model


PROFILE = Profile(
    name="vllm",
    summary=SUMMARY,
    modes=MODES,
    knobs=KNOBS,
    build=build,
    check=check_scenario,
    refusal_note=REFUSAL_NOTE,
)
