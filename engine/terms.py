"""Term builders every profile shares: weights, KV cache, facts, echoed inputs, overheads.

A profile (``engine/profiles/``) composes these with its own terms into a
:class:`MemoryModel`. Everything here is per GPU of the most loaded rank (the first
pipeline stage, formulas/parallelism.py); with every degree 1 it is the single-GPU model.
"""

from __future__ import annotations

from fractions import Fraction

import sympy

from engine import architecture, quantization
from engine.errors import InputError
from engine.scenario import LOSS_DTYPE, Scenario
from engine.spec import ModelSpec
from formulas import overhead, peft
from formulas import parallelism as par
from formulas import parameters as P
from formulas import symbols as S
from formulas.dtypes import DTYPE_BYTES
from formulas.recurrent_state import RECURRENT_STATE_DTYPE
from formulas import optimizer as O
from formulas.optimizer import state_bytes_per_parameter


def check_degrees(spec: ModelSpec, scenario: Scenario, uneven_pp: bool = False) -> None:
    """Parallel degrees must divide what they split (Megatron-LM's own checks); ``uneven_pp``:
    the profile splits layers unevenly (its own rule), so ``--pp`` need not divide them."""
    checks = [("--tp", scenario.tp, "num_attention_heads", spec.num_attention_heads)]
    if not uneven_pp:
        checks += [
            ("--pp", scenario.pp, "num_hidden_layers", spec.num_hidden_layers),
            ("--pp x --vpp", scenario.pp * (scenario.vpp or 1), "num_hidden_layers", spec.num_hidden_layers),
        ]
    if scenario.ep > 1:
        checks.append(("--ep", scenario.ep, "num_experts", int(architecture.facts(spec).get(S.num_experts, 1))))
    checks += [("--tp", scenario.tp, field, value) for field, value in architecture.recurrent_tp_splits(spec).items()]
    if not architecture.has_attention(spec):  # an attention-free model (Mamba) has no heads to split
        checks = [c for c in checks if c[2] != "num_attention_heads"]
    for flag, degree, field, value in checks:
        if value % degree:
            raise InputError(f"{flag} {degree} does not divide {field} {value} of {spec.name}")
    kv = spec.num_key_value_heads
    if architecture.splits_kv_heads(spec) and kv % scenario.tp and scenario.tp % kv:
        raise InputError(f"--tp {scenario.tp} neither divides nor is a multiple of num_key_value_heads {kv}")


def first_stage(tensors: list[P.WeightTensor], scenario: Scenario) -> list[P.WeightTensor]:
    """The tensors the first pipeline stage holds (all of them without pipeline parallelism)."""
    return [t for t in tensors if par.on_first_stage(t, scenario.pp > 1)]


def per_gpu_count(tensors: list[P.WeightTensor]) -> sympy.Expr:
    """Elements of ``tensors`` one GPU holds."""
    return sympy.Add(*(t.numel * par.gpu_share(t) for t in tensors))


def weight_terms(spec: ModelSpec, scenario: Scenario, share: sympy.Expr = sympy.Integer(1),
                 quant: quantization.Quantization | None = None) -> dict[str, sympy.Expr]:
    """weights and weights/<component>: bytes on one GPU of the first stage (in ``quant``, a
    profile's own layout of the format, or :func:`weight_format`'s)."""
    tensors = first_stage(architecture.parameter_tensors(spec) + architecture.buffer_tensors(spec), scenario)
    quant = quant or weight_format(spec, scenario)
    parts: dict[str, sympy.Expr] = {}
    for t in tensors:
        parts[t.component] = parts.get(t.component, 0) + quant.tensor_bytes(t) * par.gpu_share(t)
    terms = {"weights": sympy.Add(*parts.values()) * share}
    terms.update({f"weights/{component}": expr * share for component, expr in parts.items()})
    return terms


def weight_format(spec: ModelSpec, scenario: Scenario) -> quantization.Quantization:
    """``--weight-quant`` when given, else the config's ``quantization_config`` (engine/quantization.py).

    Full training (no LoRA) trains dequantized weights, so a checkpoint's own format applies
    to inference and to adapters on a quantized base (PEFT on GPTQ/AWQ/bitsandbytes) only.
    """
    if scenario.weight_quant is None and scenario.mode == "training" and not scenario.lora_rank:
        return quantization.from_flag("none", None)
    return quantization.resolve(spec, scenario.weight_quant, scenario.quant_group_size)


def kv_cache_term(spec: ModelSpec, scenario: Scenario) -> sympy.Expr:
    """Keys and values (or the MLA latent) of every cached token, per GPU: each mixer kind's
    cache summed over the layer groups (engine/architecture.py ``kv_cache_bytes``)."""
    return architecture.kv_cache_bytes(spec, paged=scenario.block_size is not None, mla_layout=scenario.mla_cache)


def kv_cache_terms(spec: ModelSpec, scenario: Scenario) -> dict[str, sympy.Expr]:
    """``kv_cache`` (and, for a model with recurrent mixers, its sub-term ``kv_cache/state``:
    the conv and recurrent state of every sequence, constant in ``s``, engine/architecture.py
    ``recurrent_state_bytes``). ``kv_cache`` is the tokens' cache plus the state."""
    tokens = kv_cache_term(spec, scenario)
    if not architecture.has_recurrent_state(spec):
        return {"kv_cache": tokens}
    state = architecture.recurrent_state_bytes(spec)
    return {"kv_cache": tokens + state, "kv_cache/state": state}


def lora_adapters(spec: ModelSpec, scenario: Scenario) -> tuple[list[P.WeightTensor], list[P.WeightTensor]]:
    """(adapted base tensors, adapter tensors on the first stage) of ``--lora-rank``.

    Every module named in ``--lora-targets`` must exist in the model.
    """
    modules = scenario.lora_modules()
    targets = peft.lora_targets(architecture.parameter_tensors(spec), modules)
    found = {peft.module_name(t) for t in targets}
    unknown = [name for name in (modules or ()) if name not in found and name != peft.ALL_LINEAR]
    if unknown or not targets:
        known = sorted({peft.module_name(t) for t in peft.lora_targets(architecture.parameter_tensors(spec), None)})
        raise InputError(f"--lora-targets: {', '.join(unknown) or 'nothing'} is not a linear module of "
                         f"{spec.name} (modules: {', '.join(known)})")
    return targets, first_stage(peft.lora_adapter_tensors(targets), scenario)


def adapter_count(spec: ModelSpec, scenario: Scenario) -> sympy.Expr:
    """LoRA parameters one GPU holds."""
    return per_gpu_count(lora_adapters(spec, scenario)[1])


def optimizer_state(trained: list[P.WeightTensor], optimizer: str,
                    share: sympy.Expr = sympy.Integer(1)) -> tuple[sympy.Expr, sympy.Expr]:
    """(device bytes, paged bytes) of the optimizer state of ``trained``, tensor by tensor,
    each tensor holding ``share`` of its elements (an FSDP/ZeRO shard).

    bitsandbytes 8-bit: :func:`formulas.optimizer.bnb_8bit_state` per tensor; otherwise
    ``numel beta_o``. Paged optimizers page a tensor's state only from ``1e5`` elements on
    (bitsandbytes Optimizer8bit.get_state_buffer); smaller states, and the 8-bit absmax,
    are device tensors. The paged bytes live in CUDA unified memory, outside PyTorch's
    allocator (bitsandbytes/functional.py get_paged). 8-bit optimizers add their two
    quantization maps once (one optimizer object).
    """
    eight_bit = optimizer in ("adamw8bit", "paged-adamw8bit")
    device, paged = sympy.Integer(O.BNB_QMAP_BYTES if eight_bit else 0), sympy.Integer(0)
    for t in trained:
        numel = t.rows * t.cols * share
        state = O.bnb_8bit_state(numel) if eight_bit else numel * S.optimizer_bytes
        if optimizer in O.PAGED_OPTIMIZERS:
            kept = O.bnb_absmax(numel) if eight_bit else 0
            small = sympy.StrictLessThan(numel, O.BNB_PAGED_MIN_NUMEL)
            device += sympy.Piecewise((state, small), (kept, True)) * t.count
            paged += sympy.Piecewise((0, small), (state - kept, True)) * t.count
        else:
            device += state * t.count
    return device, paged


def facts(spec: ModelSpec, scenario: Scenario) -> dict[sympy.Symbol, sympy.Expr]:
    """Symbol -> value: the model's shape, the scenario's byte widths, sizes and degrees."""
    values = dict(architecture.facts(spec))
    widths = {
        S.weight_bytes: scenario.weight_bytes(),
        S.kv_cache_bytes: scenario.kv_bytes(),
        S.activation_bytes: max(scenario.weight_bytes(), 2),  # fp8 models compute in bf16
        **weight_format(spec, scenario).facts(),
        S.batch_size: scenario.batch_size,
        S.seq_len: scenario.seq_len,
        S.block_size: scenario.block_size,
        S.reserve_bytes: scenario.reserve_bytes,
        S.allocator_fraction: scenario.allocator_fraction,
        S.comm_buffer_bytes: scenario.comm_buffer_bytes,
        S.tensor_parallel: scenario.tp,
        S.pipeline_parallel: scenario.pp,
        S.data_parallel: scenario.dp,
        S.expert_parallel: scenario.ep,
        S.context_parallel: scenario.cp,
        S.virtual_pipeline: scenario.vpp,
        S.lora_rank: scenario.lora_rank,
        S.adapter_bytes: scenario.adapter_bytes() if scenario.lora_rank else None,
    }
    if architecture.has_recurrent_state(spec):  # formulas/recurrent_state.py: fp32 in transformers
        widths[S.state_bytes] = DTYPE_BYTES[RECURRENT_STATE_DTYPE]
    if scenario.mode == "training":
        widths.update(_training_widths(scenario))
    for sym, value in widths.items():
        if value is not None:
            values[sym] = sympy.Rational(value)
    return values


def _training_widths(scenario: Scenario) -> dict[sympy.Symbol, object]:
    weight_width, grad, master, precision = scenario.training_bytes()
    # Activations are kept in the weights' dtype, at least 16-bit: FP8 training (and a
    # 4-bit QLoRA base) compute and save activations in bf16.
    return {
        S.weight_bytes: weight_width,
        S.activation_bytes: max(weight_width, 2),
        S.gradient_bytes: scenario.adapter_bytes() if scenario.lora_rank else grad,
        S.master_weight_bytes: master or None,
        # pure: torch keeps the moments in the parameters' dtype (no fp32 master to hold them)
        S.optimizer_bytes: state_bytes_per_parameter(scenario.optimizer, weight_width if precision == "pure" else None),
        S.loss_bytes: DTYPE_BYTES[LOSS_DTYPE],
    }


def inputs(spec: ModelSpec, scenario: Scenario) -> dict[str, object]:
    """The knobs as plain values, with the model and the precision convention used."""
    echoed = {"model": spec.name, **scenario.as_inputs(), "kv_dtype": scenario.kv_dtype_name(),
              "context_length": spec.context_length or spec.max_position_embeddings}
    quant = weight_format(spec, scenario)
    echoed["weight_quant"] = quant.name
    echoed["weight_quant_source"] = quant.source if quant.name != "none" else "none"
    if scenario.mode == "training":
        echoed["precision"] = scenario.training_bytes()[3]
        echoed["convention"] = convention(scenario)
    return echoed


def _width(nbytes) -> str:
    return {Fraction(4): "fp32", Fraction(2): "16-bit", Fraction(1): "8-bit"}.get(Fraction(nbytes), f"{nbytes}-byte")


def convention(scenario: Scenario) -> str:
    """The bytes-per-parameter convention of a training scenario, in words: each piece and
    the sum, e.g. ``zero16: 16-bit weights 2 + 16-bit grads 2 + fp32 master 4 + adamw state 8
    = 16 B/param``. LoRA: the adapters' state; the frozen base is weights only."""
    weight, grad, master, name = scenario.training_bytes()
    if scenario.lora_rank is not None:
        grad = scenario.adapter_bytes()
    state = state_bytes_per_parameter(scenario.optimizer, weight if name == "pure" else None)
    parts = [f"{_width(weight)} weights {weight}", f"{_width(grad)} grads {grad}"]
    if master:
        parts.append(f"fp32 master {master}")
    if state is not None:
        parts.append(f"{scenario.optimizer} state {float(state):g}")
        total = f" = {float(weight + grad + master + state):g} B/param"
    else:
        parts.append(f"{scenario.optimizer} state (factored)")
        total = ""
    trained = " (LoRA: grads and state of the adapters only)" if scenario.lora_rank is not None else ""
    return f"{name}: " + " + ".join(parts) + total + trained


def overhead_terms(peak_without_overhead: sympy.Expr) -> dict[str, sympy.Expr]:
    """overhead = reserve + communication buffers + the allocator's fraction of the peak."""
    parts = {
        "overhead/reserve": overhead.reserve(),
        "overhead/comm_buffers": overhead.comm_buffers(),
        "overhead/allocator": overhead.allocator(peak_without_overhead),
    }
    return {"overhead": sympy.Add(*parts.values()), **parts}


def counts(spec: ModelSpec) -> tuple[sympy.Expr, sympy.Expr]:
    """(parameters, active parameters per token) of the whole model, as expressions."""
    tensors = architecture.parameter_tensors(spec)
    return P.parameter_count(tensors), P.active_parameter_count(tensors)


# Where the shared terms come from; a profile adds its own and may override these.
SOURCES: dict[str, str] = {
    "weights": "parameter and buffer shapes as transformers 5.x defines each family, times bytes per "
               "element of the storage format (int4 group scales: Frantar et al. 2022, arXiv:2210.17323)",
    "kv_cache": "Pope et al. 2022, arXiv:2211.05102, sec. 3.1; MLA latent: DeepSeek-AI 2024, "
                "arXiv:2405.04434, sec. 2.1.2; paged blocks: Kwon et al. 2023, arXiv:2309.06180, sec. 4.2",
    "kv_cache/state": "recurrent state: conv state over the full kernel in the model dtype, recurrent state in "
                      "float32 (transformers 5.24 cache_utils.py LinearAttentionLayer; Gated DeltaNet, "
                      "arXiv:2412.06464; Mamba, arXiv:2312.00752; Mamba-2, arXiv:2405.21060)",
    "adapters": "LoRA, Hu et al. 2021, arXiv:2106.09685, sec. 4.1; QLoRA, Dettmers et al. 2023, "
                "arXiv:2305.14314, sec. 3",
    "overhead": "the user's --reserve (CUDA context, CUDA C Programming Guide sec. 'Initialization'), "
                "--comm-buffer (e.g. DDP's 25 MiB buckets, torch/nn/parallel/distributed.py bucket_cap_mb) and "
                "--allocator-fraction of the peak (c10/cuda/CUDACachingAllocator.cpp), each 0 unless given",
}

DESCRIPTIONS: dict[str, str] = {
    "weights": "stored parameters and persistent buffers",
    "kv_cache": "keys and values of every cached token",
    "kv_cache/state": "recurrent state of every sequence (conv and SSM state), constant in the sequence length",
    "activations": "activation peak (inference: one layer or the logits; training: saved for backward)",
    "activations/attention": "one attention layer's temporaries",
    "activations/mlp": "one MLP's temporaries",
    "activations/logits": "the logits",
    "activations/layers": "tensors every layer saves for backward",
    "activations/lora": "LoRA adapters' saved outputs",
    "master_weights": "fp32 master copy of the trained weights",
    "gradients": "one gradient per trained parameter",
    "optimizer": "optimizer state",
    "zero3_gathered": "ZeRO-3 / FSDP: full parameters of the layers being gathered",
    "adapters": "LoRA adapter weights",
    "overhead": "memory outside the model's tensors",
    "overhead/reserve": "CUDA context and runtime",
    "overhead/comm_buffers": "communication buffers",
    "overhead/allocator": "allocator reserve and fragmentation",
}
