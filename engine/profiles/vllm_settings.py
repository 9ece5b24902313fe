"""vLLM's own settings for the ``vllm`` profile: flags, their defaults, and what they resolve to.

Defaults are vLLM's where a flag is not given (vLLM 0.19 for the V1 engine, 0.6 for V0):
``vllm/engine/arg_utils.py`` ``EngineArgs`` (block size 16, ``gpu_memory_utilization``
0.9) and ``get_batch_defaults`` for ``vllm serve`` (usage context OPENAI_API_SERVER):
``max_num_batched_tokens`` 8192 and ``max_num_seqs`` 1024 on a GPU of at least 70 GiB
that is not an A100, else 2048 and 256. ``max_model_len`` defaults to the model's
``max_position_embeddings`` (``vllm/config/model.py`` ``_get_and_verify_max_len``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from fractions import Fraction

from engine.errors import InputError
from engine.scenario import Scenario
from engine.spec import ModelSpec, shown
from formulas.dtypes import DTYPE_BYTES

GIB = 2**30
MXFP4_BACKENDS = ("auto", "marlin", "triton", "flashinfer")  # --mxfp4-backend (engine/profiles/vllm_mxfp4.py)
VERSIONS = ("0.19", "0.6", "0.7")  # V1 (0.8 and later; 0.19 is the reference), V0 0.6.x, V0 0.7.1-0.7.3
V0_VERSIONS = ("0.6", "0.7")  # the V0 engine (V1 became the default in 0.8.0); 0.7: MLA matrix absorption
DTYPES = ("auto", "bfloat16", "half", "float16", "float32")
KV_CACHE_DTYPES = ("auto", "fp8", "fp8_e4m3", "fp8_e5m2")
# vllm/config/cache.py CacheConfig: MambaDType ("auto": the model dtype, then the conv dtype)
# and mamba_cache_mode ("all" is not modelled: engine/profiles/vllm_hybrid.py)
MAMBA_DTYPES = ("auto", "float32", "float16", "bfloat16")
MAMBA_CACHE_MODES = ("none", "align")
# vLLM --quantization method -> memsym weight scheme (formulas/weights.py)
QUANTIZATION = {
    "awq": "int4", "awq_marlin": "int4", "gptq": "int4", "gptq_marlin": "int4", "compressed-tensors": "int4",
    "fp8": "fp8", "fbgemm_fp8": "fp8", "modelopt": "fp8", "bitsandbytes": "nf4",
    "mxfp4": "mxfp4",  # gpt-oss: routed experts only (quantization/mxfp4.py Mxfp4Config.get_quant_method)
}
DEFAULT_BLOCK_SIZE = 16  # vllm/config/cache.py CacheConfig.block_size on CUDA
DEFAULT_UTILIZATION = Fraction(9, 10)  # vllm/config/cache.py CacheConfig.gpu_memory_utilization
# vllm/engine/arg_utils.py get_batch_defaults (OPENAI_API_SERVER): (tokens, seqs) on large / other GPUs
LARGE_GPU_BYTES = 70 * GIB
LARGE_GPU_DEFAULTS = (8192, 1024)
OTHER_GPU_DEFAULTS = (2048, 256)
V0_MAX_NUM_SEQS = 256  # vllm 0.6 EngineArgs.max_num_seqs
V0_MIN_BATCHED_TOKENS = 2048  # vllm 0.6 SchedulerConfig: max(max_model_len, 2048) without chunked prefill

# Memory outside torch's allocator grown from the worker's init snapshot to the end of the
# profile run (memory_profiling's non_torch_increase): CUDA modules loaded by the first
# kernels, cuBLAS/cuDNN handles, and with more than one GPU NCCL communicators and the
# custom all-reduce IPC buffers. Nothing in vLLM's code fixes these sizes; they are what
# vLLM 0.19 printed on H100 80GB HBM3 ("non-torch forward increase memory": 0.25-0.26 GiB
# at TP 1, 2.07 GiB at TP 2; llm-d-planner accuracy sweep, PR llm-d-incubation/llm-d-planner#205)
# and V0's non_torch_memory (it counts the CUDA context too) on an RTX 3090 (0.35 GiB,
# vllm-project/vllm#10517). Uncertainty: +-0.05 GiB on one GPU; at TP/PP >= 2 the NCCL
# share depends on the interconnect and the degree (the TP 2 figure is used for all).
NON_TORCH_ONE_GPU = GIB // 4
NON_TORCH_MULTI_GPU = 207 * GIB // 100
NON_TORCH_V0 = 35 * GIB // 100

# The V0 engine's own start-up code for the terms whose V1 source is cited in
# engine/profiles/vllm.py SOURCES: V0 logs and measures them there; memsym applies the same
# formulas (approximate for V0's profile run and sampler: docs/serving.md, "Limits").
V0_SOURCES = {
    "weights": "vLLM 0.6 vllm/worker/model_runner.py GPUModelRunnerBase.load_model ('Loading model weights "
               "took', DeviceMemoryProfiler): parameters as the vLLM model classes allocate them",
    "activations": "vLLM 0.6 vllm/worker/worker.py Worker.determine_num_available_blocks: the torch peak of "
                   "GPUModelRunnerBase.profile_run (0.6.4: vllm/utils.py memory_profiling); V1's terms applied",
    "activations/forward": "vLLM 0.6 GPUModelRunnerBase.profile_run: max_num_seqs dummy sequences sharing "
                           "max_num_batched_tokens, the largest layer's tensors (V1's _dummy_run formula)",
    "activations/sampler": "vLLM 0.6 GPUModelRunnerBase.profile_run: the sampler over the dummy sequences' last "
                           "tokens (SamplingParams top_k = vocab_size - 1; V1's _dummy_sampler_run formula)",
    "non_torch": "vLLM 0.6 Worker.determine_num_available_blocks: memory outside torch since init (NON_TORCH_V0, "
                 "which counts the CUDA context)",
    "cuda_graphs": "vLLM 0.6 vllm/worker/worker.py: CUDA graphs are captured after the KV cache is sized "
                   "(Worker.initialize_cache, then capture_model), so nothing is subtracted",
    "kv_cache": "vLLM 0.6 vllm/worker/worker.py Worker.determine_num_available_blocks: gpu_memory_utilization x "
                "total - (weights + torch peak + non-torch), floored to CacheEngine.get_cache_block_size blocks",
}


@dataclass(frozen=True)
class VllmSettings:
    """The flags of one ``vllm serve`` line that size memory (None: vLLM's default)."""

    gpu_memory_utilization: Fraction = DEFAULT_UTILIZATION
    cuda_total_bytes: int | None = None  # None: stays a symbol
    gpu_name: str | None = None
    max_model_len: int | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    block_size: int = DEFAULT_BLOCK_SIZE
    dtype: str = "auto"
    kv_cache_dtype: str = "auto"
    quantization: str | None = None
    enforce_eager: bool = False
    version: str = VERSIONS[0]
    mamba_cache_dtype: str = "auto"
    mamba_ssm_cache_dtype: str = "auto"
    mamba_cache_mode: str = "none"  # effective only with prefix caching (engine/profiles/vllm_hybrid.py)
    enable_prefix_caching: bool = False  # vLLM's default for hybrid models (arg_utils.py: opt-in)
    mxfp4_backend: str = "auto"  # gpt-oss's MoE backend (engine/profiles/vllm_mxfp4.py; auto: vLLM's rule)

    def __post_init__(self):
        if not 0 < Fraction(self.gpu_memory_utilization) <= 1:
            raise InputError(f"--gpu-memory-utilization must be in (0, 1], got {self.gpu_memory_utilization}")
        for flag, value in (("--max-model-len", self.max_model_len), ("--max-num-seqs", self.max_num_seqs),
                            ("--max-num-batched-tokens", self.max_num_batched_tokens),
                            ("--block-size", self.block_size), ("--gpu-memory", self.cuda_total_bytes)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise InputError(f"{flag} must be a positive integer, got {value!r}")
        if self.mamba_cache_mode == "all":  # Platform._align_hybrid_block_size's chunk-aligned blocks
            raise InputError("--mamba-cache-mode all is not modelled (modelled: none, align)")
        for flag, value, allowed in (("--dtype", self.dtype, DTYPES), ("--kv-cache-dtype", self.kv_cache_dtype,
                                     KV_CACHE_DTYPES), ("--vllm-version", self.version, VERSIONS),
                                    ("--mamba-cache-dtype", self.mamba_cache_dtype, MAMBA_DTYPES),
                                    ("--mamba-ssm-cache-dtype", self.mamba_ssm_cache_dtype, MAMBA_DTYPES),
                                    ("--mamba-cache-mode", self.mamba_cache_mode, MAMBA_CACHE_MODES),
                                    ("--mxfp4-backend", self.mxfp4_backend, MXFP4_BACKENDS)):
            if value not in allowed:
                raise InputError(f"{flag}: unknown value {value!r} (choose from {', '.join(allowed)})")
        if self.quantization is not None and self.quantization not in QUANTIZATION:
            raise InputError(f"--quantization: {self.quantization!r} is not modelled "
                             f"(choose from {', '.join(QUANTIZATION)})")

    @property
    def v0(self) -> bool:
        return self.version in V0_VERSIONS


@dataclass(frozen=True)
class Resolved:
    """Settings with vLLM's defaults filled in (None where a value stays a symbol)."""

    gpu_memory_utilization: Fraction
    cuda_total_bytes: int | None
    max_model_len: int | None
    max_num_seqs: int
    max_num_batched_tokens: int
    block_size: int
    enforce_eager: bool
    version: str

    def non_torch_bytes(self, scenario: Scenario) -> int:
        if self.version in V0_VERSIONS:
            return NON_TORCH_V0
        return NON_TORCH_MULTI_GPU if scenario.tp * scenario.pp > 1 else NON_TORCH_ONE_GPU

    def as_inputs(self) -> dict[str, object]:
        out = asdict(self)
        out["gpu_memory_utilization"] = float(self.gpu_memory_utilization)
        return out


def defaults_for(spec: ModelSpec, scenario: Scenario, settings: VllmSettings) -> Resolved:
    """vLLM's value of every setting the formulas read."""
    max_len = settings.max_model_len or spec.context_length
    if settings.v0:
        seqs = settings.max_num_seqs or V0_MAX_NUM_SEQS
        tokens = settings.max_num_batched_tokens or max(max_len or 0, V0_MIN_BATCHED_TOKENS)
    else:
        large = (settings.cuda_total_bytes or 0) >= LARGE_GPU_BYTES and "a100" not in (settings.gpu_name or "")
        default_tokens, default_seqs = LARGE_GPU_DEFAULTS if large else OTHER_GPU_DEFAULTS
        tokens = settings.max_num_batched_tokens or default_tokens
        seqs = settings.max_num_seqs or default_seqs
    return Resolved(Fraction(settings.gpu_memory_utilization), settings.cuda_total_bytes, max_len, seqs, tokens,
                    settings.block_size, settings.enforce_eager, settings.version)


def serving_dtypes(spec: ModelSpec, scenario: Scenario, settings: VllmSettings) -> tuple[Fraction, Fraction]:
    """(bytes per weight/activation element, bytes per KV element) as vLLM resolves them.

    ``--dtype auto`` keeps a 16-bit checkpoint's dtype and runs a float32 one in bfloat16
    (vllm/config/model.py ``_resolve_auto_dtype``); ``--kv-cache-dtype auto`` is the model
    dtype, ``fp8*`` one byte (vllm/utils/torch_utils.py ``STR_DTYPE_TO_TORCH_DTYPE``).
    """
    width = DTYPE_BYTES["float32"] if settings.dtype == "float32" else DTYPE_BYTES["bfloat16"]
    kv = width if settings.kv_cache_dtype == "auto" else DTYPE_BYTES["float8"]
    return width, kv


def quant_scheme(spec: ModelSpec, settings: VllmSettings) -> str:
    """The weight scheme: ``--quantization``, else the checkpoint's ``quant_method``."""
    method = settings.quantization or spec.quantization.get("quant_method")
    if method is None:
        return "none"
    if method not in QUANTIZATION:
        raise InputError(f"--quantization: checkpoint quant_method {method!r} is not modelled "
                         f"(modelled: {', '.join(QUANTIZATION)})")
    if method == "compressed-tensors":
        return _compressed_tensors_scheme(spec.quantization)
    bits = spec.quantization.get("bits", spec.quantization.get("w_bit"))
    if QUANTIZATION[method] == "int4" and bits == 8:
        return "int8"
    return QUANTIZATION[method]


def _compressed_tensors_scheme(config: dict) -> str:
    """compressed-tensors checkpoints name their weights' format per config group:
    ``{"weights": {"num_bits": 8, "type": "float"}}`` is FP8, ``int`` 4 / 8 bits are the
    packed int4 (group scales) and int8 (per-channel) layouts."""
    groups = config.get("config_groups")
    weights = {}
    if isinstance(groups, dict) and groups:
        first = next(iter(groups.values()))
        weights = first.get("weights") if isinstance(first, dict) and isinstance(first.get("weights"), dict) else {}
    bits, kind = weights.get("num_bits"), weights.get("type")
    if kind == "float" and bits == 8:
        return "fp8"
    if kind == "int" and bits in (4, 8):
        return "int4" if bits == 4 else "int8"
    if kind == "float" and bits == 4:  # NVFP4: the layout is engine/profiles/vllm_ct.py's
        return "int4"
    raise InputError(f"--quantization compressed-tensors: weights {shown(weights)} are not modelled "
                     "(modelled: 4- and 8-bit float, 4- and 8-bit int)")


def kv_layout(spec: ModelSpec) -> str:
    """The KV-cache spec vLLM gives the model's layers (vllm/v1/kv_cache_interface.py)."""
    from engine.profiles import vllm_hybrid  # lazily: it builds expressions (SymPy)

    if vllm_hybrid.recurrent_kind(spec):
        return "FullAttentionSpec + MambaSpec" if vllm_hybrid.layer_counts(spec)[0] else "MambaSpec"
    if spec.layer_count(mixer="mla"):
        return "MLAAttentionSpec"
    for mixer, name in (("sliding_attention", "SlidingWindowSpec"), ("chunked_attention", "ChunkedLocalAttentionSpec")):
        local = spec.layer_count(mixer=mixer)
        if local == spec.num_hidden_layers:
            return name
        if local:
            return f"FullAttentionSpec + {name}"
    return "FullAttentionSpec"


UNMODELLED_TYPES = ("falcon", "gpt2")  # learned positions / ALiBi-era layouts vLLM sizes differently
# the recurrent kinds are engine/profiles/vllm_hybrid.py RECURRENT_KINDS (the keys of
# formulas/frameworks/vllm_mamba.py STATE_SHAPES), spelled out here so that this module, on
# the SymPy-free solve path (uses_vllm), does not import the formulas; a test checks they agree
RECURRENT_MIXERS = ("mamba", "mamba2", "attention_mamba2", "gated_deltanet")
MODELLED_MIXERS = ("attention", "sliding_attention", "chunked_attention", "mla", *RECURRENT_MIXERS, "none")
# vllm/model_executor/models/registry.py _PREVIOUSLY_SUPPORTED_MODELS: encoder-decoder models
# but Whisper were removed with V0 ("MllamaForConditionalGeneration": "0.10.2").
V1_REMOVED = {"mllama": "MllamaForConditionalGeneration (last served by vLLM 0.10.2; "
                        "vllm/model_executor/models/registry.py _PREVIOUSLY_SUPPORTED_MODELS)"}


# Model types released after vLLM 0.6.x (the V0 reference, late 2024), so absent from its
# vllm/model_executor/models/registry.py: Gemma-3 (March 2025), Mistral-Small-3.1
# (March 2025), Llama 4 and Kimi-VL (April 2025), gpt-oss (August 2025).
NOT_IN_V0 = ("gemma3", "gemma3_text", "mistral3", "llama4", "llama4_text", "kimi_vl", "gpt_oss")


def _other_mixers(spec: ModelSpec) -> bool:
    modelled = MODELLED_MIXERS + (("cross_attention",) if spec.model_type in V1_REMOVED else ())  # V0 mllama
    return any(group.mixer not in modelled for group in spec.layers)


def check(spec: ModelSpec, scenario: Scenario, settings: VllmSettings) -> None:
    """Refuse what the profile does not describe, naming the flag and value."""
    if scenario.mode != "inference":
        raise InputError(f"--profile vllm: --mode {scenario.mode} is not modelled; vLLM serves (inference)")
    from engine.profiles import vllm_hybrid  # lazily: it builds expressions (SymPy)

    attention_free = vllm_hybrid.recurrent_kind(spec) and not vllm_hybrid.layer_counts(spec)[0]
    if spec.num_attention_heads % scenario.tp and not attention_free:  # vllm/config/parallel.py: even split
        raise InputError(f"--tensor-parallel-size {scenario.tp} does not divide num_attention_heads "
                         f"{spec.num_attention_heads} of {spec.name}")
    if scenario.pp > spec.num_hidden_layers:  # get_pp_indices gives every stage a layer at least
        raise InputError(f"--pipeline-parallel-size {scenario.pp} exceeds num_hidden_layers "
                         f"{spec.num_hidden_layers} of {spec.name}")
    if spec.model_type in V1_REMOVED and not settings.v0:
        raise InputError(f"--vllm-version {settings.version}: {spec.name} ({spec.model_type}): vLLM V1 does not "
                         f"serve it: {V1_REMOVED[spec.model_type]}; --vllm-version 0.6 models V0's")
    if spec.model_type in V1_REMOVED:  # V0: engine/profiles/vllm_mllama.py (vLLM 0.6.3)
        from engine.profiles import vllm_mllama  # lazily: it builds expressions (SymPy)

        vllm_mllama.check(spec, settings.version, scenario.pp)
    if settings.v0 and spec.model_type in NOT_IN_V0:
        raise InputError(f"--vllm-version 0.6: {spec.name} ({spec.model_type}) was released after vLLM 0.6, "
                         "whose model registry does not have it; use --vllm-version 0.19")
    if spec.layer_count(mixer="sliding_attention") and spec.layer_count(mixer="chunked_attention"):
        raise InputError(f"--profile vllm: {spec.name} has sliding-window and chunked layers, which vLLM refuses "
                         "(kv_cache_interface.py FullAttentionSpec.merge)")
    if spec.model_type in UNMODELLED_TYPES or spec.max_position_embeddings is not None or _other_mixers(spec):
        raise InputError(f"--profile vllm: {spec.name} ({spec.model_type}) is not modelled: memsym's vLLM "
                         "profile covers rotary decoders (Llama, Mistral, Qwen, Gemma-2, Phi-3, MoE, MLA) "
                         "and Mamba/Gated DeltaNet hybrids")
    vllm_hybrid.check(spec, scenario)
    if settings.max_model_len is None and spec.context_length is None:
        raise InputError(f"--max-model-len: {spec.name}'s config has no max_position_embeddings; give one")


# memsym weight schemes -> the vLLM --quantization that stores them so
SCHEME_METHODS = {None: None, "none": None, "int4": "gptq", "fp8": "fp8", "nf4": "bitsandbytes"}  # None: not given
KNOBS = frozenset({"batch_size", "seq_len", "dtype", "kv_cache_dtype", "weight_quant", "block_size", "tp", "pp",
                   "mxfp4_backend"})


def settings_from(scenario: Scenario) -> VllmSettings:
    """vLLM's settings for memsym's knobs: ``--seq-len`` is ``max_model_len``; the GPU's
    total (``cuda_total_bytes``) stays a symbol, the other flags take vLLM's defaults."""
    if scenario.weight_quant not in SCHEME_METHODS:
        raise InputError(f"--profile vllm: --weight-quant {scenario.weight_quant} is not modelled "
                         f"(choose from {', '.join(k for k in SCHEME_METHODS if k)})")
    return VllmSettings(
        max_model_len=scenario.seq_len, block_size=scenario.block_size or VllmSettings.block_size,
        dtype="float32" if scenario.weight_bytes() == 4 else "auto",
        kv_cache_dtype="fp8" if scenario.kv_bytes() == 1 else "auto",
        quantization=SCHEME_METHODS[scenario.weight_quant], mxfp4_backend=scenario.mxfp4_backend,
    )


SUMMARY = "what vLLM 0.19 (V1) computes at start-up: weights, profile-run peak, available KV cache"
REFUSAL_NOTE = "vLLM's own flags are on 'memsym serve'"
MODES = ("inference",)


def knob_profile():
    """The vllm profile as ``refuse_unread_knobs`` reads it (name, modes, knobs, note) without
    importing its SymPy build (engine/profiles/vllm.py ``PROFILE`` is built from the same names)."""
    from engine.profiles import Profile

    return Profile(name="vllm", summary=SUMMARY, modes=MODES, knobs=KNOBS, build=_build, refusal_note=REFUSAL_NOTE)


def _build(spec: ModelSpec, scenario: Scenario):
    from engine.profiles import get

    return get("vllm").build(spec, scenario)  # the registered plug-in (engine/profiles/vllm.py)


SERVING_VARIABLES = ("concurrency", "seq_len", "batch_size")  # answered as vLLM sizes its cache


def uses_vllm(target: str, knobs: dict, symbolic: bool) -> bool:
    """Whether ``solve target`` is answered by the vllm profile (engine/serving_solve.py; SymPy-free,
    so a solve answered by a cached evaluator imports no SymPy): a
    serving variable in inference mode, with no ``--profile`` or ``--profile vllm``."""
    from engine.profiles import canonical

    return (not symbolic and target in SERVING_VARIABLES and knobs.get("mode", "inference") == "inference"
            and canonical(knobs.get("profile", "vllm")) == "vllm")
