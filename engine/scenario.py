"""Scenario knobs: what is run, at which size, in which precision.

Any of ``batch_size``, ``seq_len``, ``block_size`` left as None stays a free symbol in the
memory model. Values are checked here, so formulas never see a bad one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from fractions import Fraction

from engine.errors import InputError
from formulas.activations import LOGITS_MODES, RECOMPUTE_MODES
from formulas.dtypes import DTYPE_BYTES, canonical_dtype
from formulas.kv_cache import MLA_LAYOUTS
from formulas.optimizer import FACTORED_OPTIMIZERS, OPTIMIZER_STATE_BYTES, PRECISION_CONVENTIONS
from formulas.weights import QUANT_SCHEMES

from formulas.options import ATTENTION, MODES, OFFLOAD, PRECISIONS, ZERO_STAGES
from formulas.options import DEVICES
LOSS_DTYPE = "float32"  # transformers' loss upcasts logits: ``logits.float()``


@dataclass(frozen=True)
class Scenario:
    mode: str = "inference"
    batch_size: int | None = 1
    seq_len: int | None = 2048
    dtype: str = "bfloat16"
    kv_cache_dtype: str | None = None  # default: dtype
    weight_quant: str = "none"
    quant_group_size: int | None = None  # default: the scheme's (128 for int4 and fp8)
    attention: str = "sdpa"
    logits: str = "last"  # inference: "last" as generation projects; training uses all
    mla_cache: str = "latent"
    block_size: int | None = None  # paged KV cache; None = contiguous
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
    # parameter-efficient fine-tuning (formulas/peft.py)
    lora_rank: int | None = None
    lora_targets: tuple[str, ...] | None = None  # None: every attention and MLP linear layer
    adapter_dtype: str | None = None  # default: dtype
    # overheads beyond reserve_bytes (formulas/overhead.py)
    allocator_fraction: Fraction = Fraction(0)
    comm_buffer_bytes: int = 0
    # which framework's allocations the formulas describe (engine/profiles/; checked there)
    profile: str = "megatron"
    device: str = "cuda"  # transformers profile: AdamW foreach on CUDA, single-tensor on CPU
    # training mechanisms (read by the profiles whose framework offers them; refused elsewhere)
    torch_compile: bool = False  # --compile: torch.compile of each decoder layer (and of the chunked loss)
    loss_chunks: int | None = None  # chunked cross-entropy (torchtune CEWithChunkedOutputLoss: 8)
    optimizer_in_backward: bool = False  # optimizer step fused into backward, one parameter at a time
    activation_offload: bool = False  # saved activations moved to CPU (torchtune OffloadActivations)

    def __post_init__(self):
        _choice("--mode", self.mode, MODES)
        for flag, value in (("--batch-size", self.batch_size), ("--seq-len", self.seq_len),
                            ("--block-size", self.block_size), ("--quant-group-size", self.quant_group_size)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise InputError(f"{flag} must be a positive integer, got {value!r}")
        for flag, value in (("--dtype", self.dtype), ("--kv-cache-dtype", self.kv_cache_dtype)):
            if value is not None and canonical_dtype(value) is None:
                raise InputError(f"{flag}: unknown dtype {value!r} (known: {', '.join(DTYPE_BYTES)})")
        _choice("--weight-quant", self.weight_quant, tuple(QUANT_SCHEMES))
        _choice("--attention", self.attention, ATTENTION)
        _choice("--logits", self.logits, LOGITS_MODES)
        _choice("--mla-cache", self.mla_cache, MLA_LAYOUTS)
        _choice("--recompute", self.recompute, RECOMPUTE_MODES)
        _choice("--optimizer", self.optimizer, (*OPTIMIZER_STATE_BYTES, *FACTORED_OPTIMIZERS))
        _choice("--precision", self.precision, PRECISIONS)
        _choice("--device", self.device, DEVICES)
        for flag, value in (("--reserve", self.reserve_bytes), ("--comm-buffer", self.comm_buffer_bytes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InputError(f"{flag} must be a non-negative number of bytes, got {value!r}")
        for flag, value in (("--tp", self.tp), ("--pp", self.pp), ("--dp", self.dp), ("--ep", self.ep),
                            ("--cp", self.cp), ("--vpp", self.vpp), ("--lora-rank", self.lora_rank),
                            ("--loss-chunks", self.loss_chunks)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise InputError(f"{flag} must be a positive integer, got {value!r}")
        if self.zero not in ZERO_STAGES:
            raise InputError(f"--zero must be a ZeRO stage 0, 1, 2 or 3, got {self.zero!r}")
        _choice("--offload", self.offload, OFFLOAD)
        if self.offload in ("parameters", "both") and self.zero != 3:
            raise InputError(f"--offload {self.offload} needs --zero 3 (parameters are offloaded by ZeRO-3), got --zero {self.zero}")
        if self.adapter_dtype is not None and canonical_dtype(self.adapter_dtype) is None:
            raise InputError(f"--adapter-dtype: unknown dtype {self.adapter_dtype!r}")
        if not 0 <= Fraction(self.allocator_fraction) < 1:
            raise InputError(f"--allocator-fraction must be in [0, 1), got {self.allocator_fraction!r}")

    # --- derived byte widths ------------------------------------------------------------
    def weight_bytes(self) -> Fraction:
        return DTYPE_BYTES[canonical_dtype(self.dtype)]

    def adapter_bytes(self) -> Fraction:
        return DTYPE_BYTES[canonical_dtype(self.adapter_dtype or self.dtype)]

    def kv_bytes(self) -> Fraction:
        return DTYPE_BYTES[canonical_dtype(self.kv_cache_dtype or self.dtype)]

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
        weights, grads, master, _, _ = PRECISION_CONVENTIONS[precision]
        return Fraction(weights), Fraction(grads), Fraction(master), precision

    def as_inputs(self) -> dict[str, object]:
        """The knobs as plain values, for echoing in output."""
        def plain(value):
            if isinstance(value, Fraction):
                return str(value)
            return list(value) if isinstance(value, tuple) else value

        return {k: plain(v) for k, v in asdict(self).items()}


def _choice(flag: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise InputError(f"{flag}: unknown value {value!r} (choose from {', '.join(allowed)})")
