"""Scenario knobs: what is run, at which size, in which precision — and the one table of them.

``KNOBS`` holds one row per ``Scenario`` field: its command-line flag, choices, default,
help, help section, the symbol its value pins and whether ``--free`` may keep it a symbol.
From it come the options every model-building command shares (engine/cli_options.py),
the checks of ``Scenario.__post_init__``, the ``--free`` choices (:data:`FREEABLE_ALIASES`),
the scenario symbols of a model-free formula, and the knobs a profile refuses
(:func:`changed_knobs`, :func:`unread_knobs`). Any of ``batch_size``, ``seq_len``,
``block_size`` left as None stays a free symbol in the memory model. Values are checked
here, so formulas never see a bad one. This module imports no SymPy: ``--help`` reads it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from fractions import Fraction
from typing import Callable

from engine.errors import InputError
from engine.spellings import DTYPE_SPELLINGS, KV_SPELLINGS, LORA_SPELLINGS, WEIGHT_SPELLINGS, read, spellings_help
from engine.units import parse_bytes, parse_fraction
from formulas import options
from engine.limits import check_scenario_values
from formulas.dtypes import DTYPE_BYTES, canonical_dtype

from engine.knob_checks import CHECKS, DTYPE_NAMES

LOSS_DTYPE = "float32"  # transformers' loss upcasts logits: ``logits.float()``
GROUPS = ("model", "scenario", "serving", "training", "parallelism", "output")  # --help sections, in order


@dataclass(frozen=True)
class Shortcut:
    """A second flag that sets its knob to one value (``--gradient-checkpointing`` = ``--recompute full``)."""

    flag: str
    value: object
    help: str

    @property
    def name(self) -> str:
        return self.flag[2:].replace("-", "_")


@dataclass(frozen=True)
class Knob:
    """One scenario knob: a ``Scenario`` field and everything the CLI and the checks need about it.

    ``kind`` says how a value is checked: ``choice`` (one of ``allowed``), ``dtype`` (a
    dtype name or alias), ``count`` (a positive integer), ``bytes`` (a non-negative
    integer), ``fraction`` (in [0, 1)), ``stage`` (a ZeRO stage), ``switch`` (a boolean
    flag), ``names`` (a tuple of module names). ``choices`` are what the command line
    offers; ``parse`` turns the command line's text into the field's value.
    """

    name: str
    flag: str
    default: object
    help: str | None
    group: str
    kind: str = "choice"
    choices: tuple | None = None
    symbol: str | None = None
    freeable: bool = False
    formula_free: bool = False  # a model-free formula keeps its symbol unless a value is given
    parse: Callable[[str], object] | None = None
    metavar: str | None = None
    shortcut: Shortcut | None = None
    allowed: tuple | None = None  # the values Scenario accepts, when wider than ``choices``
    aliases: dict | None = None  # other spellings -> (the value meant, why): engine/spellings.py
    spellings: tuple[str, ...] = ()  # other flags for the knob: a framework's own (llama.cpp's -c, -np)

    @property
    def option_name(self) -> str:
        """The flag as ``--free`` and error messages spell it without dashes (``comm_buffer``)."""
        return self.flag[2:].replace("-", "_")

    @property
    def accepted(self) -> tuple:
        return self.allowed if self.allowed is not None else self.choices

    def shown(self, value) -> str:
        """``--flag value`` as the command line would give it, for messages."""
        if self.kind == "switch":
            return self.flag if value else f"{self.flag} (off)"
        if isinstance(value, (tuple, list)):
            value = ",".join(str(v) for v in value)
        return f"{self.flag} {value}"

    def check(self, value) -> None:
        """Raise InputError naming the flag when ``value`` is not one this knob takes."""
        CHECKS[self.kind](self, value)

    def read(self, value):
        """``(the value meant, how a spelling was read or None)``: ``bf16`` -> ``bfloat16``."""
        if self.aliases is None or value is None:
            return value, None
        return read(self.aliases, value)


def _size(flag: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        return 0 if text in ("0", 0) else parse_bytes(text, flag)

    return parse


def _allocator_fraction(text: str) -> Fraction:
    return parse_fraction(text, "--allocator-fraction", low=Fraction(0), high=Fraction(99, 100))


def _module_names(text: str) -> tuple[str, ...] | None:
    return tuple(t.strip() for t in text.split(",") if t.strip()) if text else None


KNOBS: tuple[Knob, ...] = (
    Knob("mode", "--mode", "inference", None, "scenario", choices=options.MODES),
    Knob("batch_size", "--batch-size", 1, "Sequences at once (llama.cpp: -np/--parallel, its slots; its own "
         "-b/--batch-size is a token batch, not this).", "scenario", "count", symbol="batch_size",
         freeable=True, formula_free=True, spellings=("-np", "--parallel")),
    Knob("seq_len", "--seq-len", 2048, "Tokens per sequence (llama.cpp: -c/--ctx-size, the context all slots "
         "share).", "scenario", "count", symbol="seq_len", freeable=True, formula_free=True,
         spellings=("-c", "--ctx-size")),
    Knob("dtype", "--dtype", "bfloat16", "Weights and activations (float8: fp8 weights, activations and KV "
         f"cache kept 16-bit). Also: {spellings_help(WEIGHT_SPELLINGS)} (auto: the checkpoint's torch_dtype).",
         "scenario", "dtype", choices=options.DTYPES[:4], allowed=DTYPE_NAMES, aliases=WEIGHT_SPELLINGS),
    Knob("kv_cache_dtype", "--kv-cache-dtype", None, "KV-cache elements; also vLLM's auto, fp8, fp8_e4m3, "
         "fp8_e5m2  [default: --dtype, 16-bit for float8 weights]", "scenario", "dtype",
         choices=options.DTYPES, allowed=DTYPE_NAMES, aliases=KV_SPELLINGS),
    Knob("weight_quant", "--weight-quant", None,
         "Weight quantization of the linear layers (w8a8: the seed article's 1 byte for all)  "
         "[default: the config's quantization_config, else none]", "scenario",
         choices=options.QUANT_SCHEMES, allowed=(None, *options.QUANT_SCHEMES)),
    Knob("quant_group_size", "--quant-group-size", None,
         "Weights per int4 scale group / fp8 block side  [default: 128]", "scenario", "count",
         symbol="quant_group_size"),
    Knob("attention", "--attention", "sdpa", "eager materialises the b x a x s x s scores; sdpa/flash does not.",
         "scenario", choices=options.ATTENTION),
    Knob("logits", "--logits", "last", "Inference: logits of every position, or the last only (generation).",
         "scenario", choices=options.LOGITS_MODES),
    Knob("mla_cache", "--mla-cache", "latent",
         "MLA cache: the latent (serving engines, transformers 5) or decompressed K/V (4.x).", "scenario",
         choices=options.MLA_LAYOUTS),
    # kind "profile": the names live in engine/profiles (a layer above), which checks them
    Knob("profile", "--profile", None, "[default: transformers on one device; megatron for a parallel layout "
         "and for an inference the transformers profile does not model, the profile line says why] "
         "megatron (alias paper): Megatron-LM's kernels, Korthikanti et "
         "al. 2022; transformers: what transformers 5.24 + PyTorch allocate (docs/accuracy.md); deepspeed: "
         "ZeRO 1-3 and offload; torchtitan: FSDP2, TP, PP, CP; torchtune: its full/LoRA/QLoRA recipes "
         "(docs/training.md); vllm: vLLM's start-up sizing (docs/serving.md); llamacpp: llama.cpp's KV cache "
         "(-c = --seq-len, -np = --batch-size).", "scenario",
         "profile"),
    Knob("device", "--device", "cuda", "--profile transformers: AdamW is foreach on cuda, single-tensor on cpu.",
         "scenario", choices=options.DEVICES),
    Knob("reserve_bytes", "--reserve", 0, "Memory outside the model (CUDA context), e.g. 500MB.", "scenario",
         "bytes", symbol="reserve_bytes", freeable=True, formula_free=True, parse=_size("--reserve"),
         metavar="SIZE"),
    Knob("allocator_fraction", "--allocator-fraction", Fraction(0),
         "Allocator reserve/fragmentation as a fraction of the peak, e.g. 0.05.", "scenario", "fraction",
         symbol="allocator_fraction", freeable=True, parse=_allocator_fraction, metavar="F"),
    Knob("block_size", "--block-size", None, "Paged KV cache with blocks of N tokens.", "serving", "count",
         symbol="block_size", freeable=True, formula_free=True),
    Knob("mxfp4_backend", "--mxfp4-backend", "auto", "--profile vllm: gpt-oss's MXFP4 MoE backend (auto: vLLM's "
         "rule, an H100's Triton without --gpu; marlin: VLLM_MXFP4_USE_MARLIN=1).", "serving",
         choices=("auto", "marlin", "triton", "flashinfer")),
    Knob("cache_type_k", "--cache-type-k", "f16", "--profile llamacpp: key-cache type (llama.cpp's flag).",
         "serving", choices=options.LLAMACPP_CACHE_TYPES, spellings=("-ctk",)),
    Knob("cache_type_v", "--cache-type-v", "f16", "--profile llamacpp: value-cache type (llama.cpp's flag).",
         "serving", choices=options.LLAMACPP_CACHE_TYPES, spellings=("-ctv",)),
    Knob("flash_attn", "--flash-attn", "auto", "--profile llamacpp: llama.cpp's -fa; auto (its default) is "
         "counted as on, as llama.cpp resolves it on CUDA; off adds the f32 attention scores to the compute buffer.",
         "serving", choices=options.LLAMACPP_FLASH_ATTN, spellings=("-fa",)),
    Knob("gpu_layers", "--n-gpu-layers", None, "--profile llamacpp: llama.cpp's -ngl: the output layer and the last "
         "N-1 layers on the GPU, the rest (and the token embeddings, always) in host memory  [default: all]",
         "serving", "count", spellings=("-ngl",)),
    Knob("kv_unified", "--kv-unified", False, "--profile llamacpp: one KV stream shared by all -np slots "
         "(--batch-size), as llama-server's -np auto.", "serving", "switch"),
    Knob("recompute", "--recompute", "none", "Training: activation recomputation.", "training",
         choices=options.RECOMPUTE_MODES, shortcut=Shortcut(
             "--gradient-checkpointing", "full",
             "Training: recompute each layer in backward, as transformers does (= --recompute full).")),
    Knob("optimizer", "--optimizer", "adamw", None, "training", choices=options.OPTIMIZERS),
    Knob("precision", "--precision", "auto",
         "Training bytes per parameter: zero16, megatron18, deepspeed20, pure, amp (fp32 model + bf16 "
         "autocast), or auto.", "training", choices=options.PRECISIONS),
    Knob("zero", "--zero", 0, "ZeRO stage (FSDP full shard = 3, shard-grad-op = 2).", "training", "stage",
         choices=options.ZERO_STAGES, shortcut=Shortcut(
             "--distributed-optimizer", 1,
             "Training: Megatron-LM's --use-distributed-optimizer, fp32 master and moments sharded over --dp "
             "(= --zero 1).")),
    Knob("sharding", "--sharding", None, "--profile transformers: what accelerate shards --zero with: deepspeed "
         "(ZeRO 1-3) or fsdp (FSDP1: --zero 3 FULL_SHARD, --zero 2 SHARD_GRAD_OP)  [default: deepspeed]",
         "training", choices=("deepspeed", "fsdp"), allowed=(None, "deepspeed", "fsdp")),
    Knob("offload", "--offload", "none", "Move optimizer state and/or parameters to host memory.", "training",
         choices=options.OFFLOAD),
    Knob("float8", "--float8", False, "Training: float8 linears (torchao Float8Linear; --profile torchtitan).",
         "training", "switch"),
    Knob("float8_all_gather", "--float8-all-gather", False,
         "With --float8: FSDP all-gathers the float8 linears' weights in fp8 (--profile torchtitan).", "training",
         "switch"),
    Knob("lora_rank", "--lora-rank", None, "Train LoRA adapters of this rank on a frozen base.", "training",
         "count", symbol="lora_rank", freeable=True),
    Knob("lora_targets", "--lora-targets", None, "Comma-separated modules to adapt (q_proj,v_proj,...)  "
         "lm_head: the output projection; or PEFT's all-linear  [default: all attention/MLP linears]", "training", "names", parse=_module_names,
         metavar="NAMES", aliases=LORA_SPELLINGS),
    Knob("adapter_dtype", "--adapter-dtype", None, "LoRA adapter dtype  [default: --dtype]", "training", "dtype",
         choices=options.DTYPES[:3], allowed=DTYPE_NAMES, aliases=DTYPE_SPELLINGS),
    Knob("torch_compile", "--compile", False, "torch.compile each layer (torchtune, torchtitan) and the loss (torchtune: chunked; torchtitan: see --compile-components).", "training", "switch"),
    Knob("compile_components", "--compile-components", None, "With --compile, what torch.compile covers: "
         "model,loss or model (torchtitan's compile.components)  [default: model,loss]", "training",
         choices=("model,loss", "model"), allowed=(None, "model,loss", "model")),
    Knob("loss_chunks", "--loss-chunks", None, "Chunked cross-entropy in N chunks (torchtune: 8).", "training", "count"),
    Knob("optimizer_in_backward", "--optimizer-in-backward", False, "Step and free each gradient in backward.", "training", "switch"),
    Knob("activation_offload", "--activation-offload", False, "Saved activations to CPU (needs --recompute full).", "training", "switch"),
    Knob("optimizer_impl", "--optimizer-impl", None, "torch.optim AdamW's kernel: fused or foreach  [default: "
         "torchtune fused (its configs; --torchtune-release 0.2: foreach)]", "training", choices=("fused", "foreach"), allowed=(None, "fused", "foreach")),
    Knob("custom_sharded_layers", "--custom-sharded-layers", False, "--profile torchtune with --dp: the configs' "
         "custom_sharded_layers ['tok_embeddings', 'output'] (Llama 3/3.1 8B, 70B full): the embedding and output as "
         "their own FSDP units", "training", "switch"),
    Knob("torchtune_release", "--torchtune-release", None, "--profile torchtune: the recipes' loop as of a "
         "release; 0.2 (<= 0.2.1, until July 2024) keeps the sliced fp32 logits through backward  [default: "
         "Nov 2024 main, 1814feb17]", "training", choices=("0.2",), allowed=(None, "0.2")),
    Knob("tp", "--tp", 1, "Tensor-parallel degree.", "parallelism", "count", symbol="tensor_parallel",
         freeable=True),
    Knob("pp", "--pp", 1, "Pipeline-parallel degree.", "parallelism", "count", symbol="pipeline_parallel",
         freeable=True),
    Knob("dp", "--dp", 1, "Data-parallel degree (ZeRO shards over it).", "parallelism", "count",
         symbol="data_parallel", freeable=True),
    Knob("ep", "--ep", 1, "Expert-parallel degree.", "parallelism", "count", symbol="expert_parallel",
         freeable=True),
    Knob("cp", "--cp", 1, "Context-parallel degree.", "parallelism", "count", symbol="context_parallel",
         freeable=True),
    Knob("sequence_parallel", "--sequence-parallel", False, "Megatron sequence parallelism (with --tp).",
         "parallelism", "switch"),
    Knob("vpp", "--vpp", None, "Model chunks per pipeline stage (interleaved 1F1B).", "parallelism", "count",
         symbol="virtual_pipeline", freeable=True),
    Knob("comm_buffer_bytes", "--comm-buffer", 0, "Communication buffers per GPU, e.g. 25MiB (DDP's default "
         "bucket).", "parallelism", "bytes", symbol="comm_buffer_bytes", freeable=True,
         parse=_size("--comm-buffer"), metavar="SIZE"),
)
KNOB_BY_NAME = {k.name: k for k in KNOBS}
# --free NAME: the flag without dashes (tp, comm_buffer, ...) -> the symbol left free
FREEABLE_ALIASES = {k.option_name: k.symbol for k in KNOBS if k.freeable}
FREEABLE = frozenset(FREEABLE_ALIASES.values())
# Symbols a model-free formula (engine.api.symbolic_model) takes from the scenario; the
# others (shapes, byte widths) stay free.
SCENARIO_SYMBOLS = FREEABLE
# Of those, the ones a generic formula pins to the knob's value (1 or 0 by default, which
# drop out), where sizes and the reserve stay symbols unless given.
SCENARIO_PINNED = tuple(k.symbol for k in KNOBS if k.freeable and not k.formula_free)


def knob(name: str) -> Knob:
    """The row of Scenario field ``name``."""
    return KNOB_BY_NAME[name]


def knob_values(given: dict) -> dict:
    """Command-line values (by Scenario field; shortcut flags by their own name) -> Scenario fields.

    Only what ``given`` holds is converted, so a caller passing the options a user gave
    gets back exactly the knobs the user set.
    """
    out = {}
    for k in KNOBS:
        if k.name in given:
            value = given[k.name]
            out[k.name] = k.parse(value) if k.parse is not None and value is not None else value
        if k.shortcut is not None and given.get(k.shortcut.name):
            current = out.get(k.name, k.default)
            if current not in (k.default, k.shortcut.value):
                raise InputError(f"{k.shortcut.flag} is {k.shown(k.shortcut.value)}; it conflicts with "
                                 f"{k.shown(current)}")
            out[k.name] = k.shortcut.value
    return out


def changed_knobs(scenario: "Scenario") -> list[Knob]:
    """The knobs whose value in ``scenario`` differs from their default, in table order."""
    return [k for k in KNOBS if getattr(scenario, k.name) != k.default]


def unread_knobs(scenario: "Scenario", reads: frozenset[str]) -> list[Knob]:
    """The knobs set away from their default that a profile reading ``reads`` would ignore
    (``--profile`` itself is read by the choice of profile): what engine.profiles refuses."""
    return [k for k in changed_knobs(scenario) if k.name not in reads and k.name != "profile"]


@dataclass(frozen=True)
class Scenario:
    mode: str = "inference"
    batch_size: int | None = 1
    seq_len: int | None = 2048
    dtype: str = "bfloat16"
    kv_cache_dtype: str | None = None  # default: dtype
    weight_quant: str | None = None  # None: the checkpoint's quantization_config (engine/quantization.py)
    quant_group_size: int | None = None  # default: the scheme's (128 for int4 and fp8)
    attention: str = "sdpa"
    logits: str = "last"  # inference: "last" as generation projects; training uses all
    mla_cache: str = "latent"
    block_size: int | None = None  # paged KV cache; None = contiguous
    mxfp4_backend: str = "auto"  # --profile vllm: engine/profiles/vllm_mxfp4.py
    recompute: str = "none"
    optimizer: str = "adamw"
    precision: str = "auto"
    reserve_bytes: int = 0
    # parallelism, per GPU of the most loaded rank (formulas/parallelism.py)
    tp: int = 1
    pp: int = 1
    dp: int = 1
    ep: int = 1
    cp: int = 1
    sequence_parallel: bool = False
    vpp: int | None = None  # model chunks per stage (interleaved 1F1B); None = not interleaved
    zero: int = 0
    offload: str = "none"
    sharding: str | None = None  # transformers profile: accelerate's DeepSpeed (None: deepspeed) or FSDP plugin
    # parameter-efficient fine-tuning (formulas/peft.py)
    lora_rank: int | None = None
    lora_targets: tuple[str, ...] | None = None  # None: every attention and MLP linear layer
    adapter_dtype: str | None = None  # default: dtype
    # overheads beyond reserve_bytes (formulas/overhead.py)
    allocator_fraction: Fraction = Fraction(0)
    comm_buffer_bytes: int = 0
    # float8 linears (torchao Float8Linear) and their FSDP all-gather in fp8 (torchtitan profile)
    float8: bool = False
    float8_all_gather: bool = False
    # which framework's allocations the formulas describe (engine/profiles/, which checks the name)
    profile: str | None = None  # None: engine.profiles.default_for(scenario, spec)
    device: str = "cuda"  # transformers profile: AdamW foreach on CUDA, single-tensor on CPU
    cache_type_k: str = "f16"
    cache_type_v: str = "f16"
    kv_unified: bool = False
    flash_attn: str = "auto"  # llama.cpp -fa: auto (counted as on), on, off
    gpu_layers: int | None = None  # llama.cpp -ngl; None: every layer
    torch_compile: bool = False  # --compile: torch.compile of each decoder layer (and of the chunked loss)
    compile_components: str | None = None  # torchtitan compile.components: "model,loss" (None) or "model"
    loss_chunks: int | None = None  # chunked cross-entropy (torchtune CEWithChunkedOutputLoss: 8)
    optimizer_in_backward: bool = False  # optimizer step fused into backward, one parameter at a time
    activation_offload: bool = False  # saved activations moved to CPU (torchtune OffloadActivations)
    optimizer_impl: str | None = None  # torch.optim AdamW's fused=True / foreach=True (None: the profile's default)
    custom_sharded_layers: bool = False  # torchtune FSDP: tok_embeddings and output as their own fully_shard units
    torchtune_release: str | None = None  # torchtune recipes' loop of an older release ("0.2"); None: Nov 2024

    def __post_init__(self):
        for k in KNOBS:
            k.check(getattr(self, k.name))
        if self.offload in ("parameters", "both") and self.zero != 3:
            raise InputError(f"--offload {self.offload} needs --zero 3 (parameters are offloaded by ZeRO-3), "
                             f"got --zero {self.zero}")
        if self.lora_rank is None and (self.lora_targets or self.adapter_dtype):
            flag = "--lora-targets" if self.lora_targets else "--adapter-dtype"
            raise InputError(f"{flag} needs --lora-rank (the adapters' rank)")
        check_scenario_values(self)  # engine/limits.py: sizes and degrees within their bounds

    # --- derived byte widths ------------------------------------------------------------
    def weight_bytes(self) -> Fraction:
        if self.dtype_name() == "auto":
            raise InputError("--dtype auto is read from the checkpoint's torch_dtype: build the model "
                             "through engine.profiles.build, which resolves it")
        return DTYPE_BYTES[self.dtype_name()]

    def dtype_name(self) -> str:
        """The canonical name of ``--dtype`` (``bf16`` -> ``bfloat16``; ``auto`` until resolved)."""
        return knob("dtype").read(self.dtype)[0]

    def kv_dtype_name(self) -> str:
        """The KV cache's dtype: ``--kv-cache-dtype`` (``auto``: as left out), else the weights'
        dtype, but 16-bit for 1-byte weights: an fp8 checkpoint computes in bf16 and vLLM's
        ``--kv-cache-dtype auto`` then caches bf16 (``vllm/config/cache.py``, ``CacheDType``)."""
        given = knob("kv_cache_dtype").read(self.kv_cache_dtype)[0]
        if given is not None:
            return canonical_dtype(given)
        return self.dtype_name() if self.weight_bytes() >= 2 else "bfloat16"

    def lora_modules(self) -> tuple[str, ...] | None:
        """``--lora-targets`` as module names; None for every linear layer (PEFT's all-linear)."""
        return knob("lora_targets").read(self.lora_targets)[0]

    def adapter_bytes(self) -> Fraction:
        if self.adapter_dtype is None:
            return self.weight_bytes()
        return DTYPE_BYTES[canonical_dtype(knob("adapter_dtype").read(self.adapter_dtype)[0])]

    def kv_bytes(self) -> Fraction:
        return DTYPE_BYTES[self.kv_dtype_name()]

    def readings(self) -> dict[str, str]:
        """``--flag -> how its spelling was read``, for every knob given in another spelling."""
        notes = {k.flag: k.read(getattr(self, k.name))[1] for k in KNOBS if k.aliases is not None}
        return {flag: note for flag, note in notes.items() if note}

    def resolved(self, torch_dtype: str | None, model: str) -> "Scenario":
        """``--dtype auto`` replaced by the checkpoint's ``torch_dtype`` (transformers' ``"auto"``)."""
        if self.dtype_name() != "auto":
            return self
        name = canonical_dtype(torch_dtype) if isinstance(torch_dtype, str) else None
        if name is None:
            raise InputError(f"--dtype auto: the config.json of {model} states no torch_dtype memsym knows "
                             f"(got {torch_dtype!r}); give --dtype bfloat16, float16 or float32")
        return replace(self, dtype=name)

    def training_bytes(self) -> tuple[Fraction, Fraction, Fraction, str]:
        """(weights, gradients, master weights, convention) per parameter for training.

        ``auto``: with 16-bit weights, the ZeRO paper's mixed precision (fp32 master copy,
        gradients in the weights' dtype); with fp32 weights, ``pure`` (no master copy); with
        float8 weights, ``fp8`` (FP8 primary weights, see formulas.optimizer).
        """
        precision = self.precision
        if precision == "auto":
            precision = {4: "pure", 1: "fp8"}.get(self.weight_bytes(), "zero16")
        if precision == "pure":
            width = self.weight_bytes()
            return width, width, Fraction(0), precision
        from formulas.optimizer import PRECISION_CONVENTIONS

        weights, grads, master, _, _ = PRECISION_CONVENTIONS[precision]
        return Fraction(weights), Fraction(grads), Fraction(master), precision

    def as_inputs(self) -> dict[str, object]:
        """The knobs as plain values, for echoing in output."""
        def plain(value):
            if isinstance(value, Fraction):  # a fraction knob: a JSON number (exact: "allocator_fraction_exact")
                return float(value)
            return list(value) if isinstance(value, tuple) else value

        echoed = {k: plain(v) for k, v in asdict(self).items()}
        echoed["allocator_fraction_exact"] = str(self.allocator_fraction)
        echoed["dtype"] = self.dtype_name()
        if self.kv_cache_dtype is not None:
            echoed["kv_cache_dtype"] = knob("kv_cache_dtype").read(self.kv_cache_dtype)[0]
        if self.adapter_dtype is not None:
            echoed["adapter_dtype"] = canonical_dtype(knob("adapter_dtype").read(self.adapter_dtype)[0])
        if self.lora_targets is not None:
            echoed["lora_targets"] = plain(self.lora_modules())
        readings = self.readings()
        if readings:
            echoed["read_as"] = readings
        return echoed
