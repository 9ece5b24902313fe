"""The ``transformers`` profile: a memory model of what transformers 5.24 + PyTorch 2.13 allocate.

``build(spec, scenario)`` composes :mod:`formulas.frameworks.transformers` into a :class:`MemoryModel`.
Training trains in the model's dtype (``model.to(dtype)``, ``torch.optim.AdamW``: moments
in the parameters' dtype, no master copy) and peaks at one of these moments:

- ``loss_backward``: the start of backward, every saved activation plus three fp32
  ``b s x V`` tensors (the saved log-softmax, its gradient and the NLL gradient);
- ``head_backward``: ``lm_head``'s backward, with its ``V x h`` weight gradient;
- ``recompute`` (gradient checkpointing): the last layer recomputed for its backward;
- ``backward_end`` (tied embeddings): every gradient plus the embedding's dense gradient
  and its out-of-place sum with the waiting ``lm_head`` gradient;
- ``optimizer_step``: gradients plus AdamW's temporaries (single-tensor on CPU, foreach
  on CUDA).

Between these, activations fall and gradients grow linearly layer by layer, so the peak
of the backward pass is at one of its ends. Inference is a prefill that fills a
``DynamicCache``: weights + KV cache + the largest of the last layer's moments or the
logits. tools/measure/peaks.py measures the same runs; docs/accuracy.md compares.

Data parallelism (``--dp``, ``--zero``, ``--sharding``, ``--offload``: accelerate's DDP, FSDP1
and DeepSpeed ZeRO) changes what each rank keeps, not what the layers save:
engine/profiles/transformers_distributed.py (measured: tools/measure/accelerate_peaks.py).
"""

from __future__ import annotations

import sympy

from engine import architecture
from engine import terms as shared
from engine.errors import InputError
from engine.model import MemoryModel
from engine.profiles import Profile
from engine.profiles import transformers_distributed as D
from engine.profiles import transformers_sources as W
from engine.profiles.transformers_sources import BNB, STATE_COPIES
from engine.scenario import Scenario
from engine.spec import LayerGroup, ModelSpec
from formulas.frameworks import transformers as F
from formulas.frameworks import transformers_moe as M
from engine.profiles import transformers_moe as TM
from formulas.frameworks import transformers_peft as FP
from formulas import peft
from formulas import optimizer as O
from formulas import overhead
from formulas import parameters as P
from formulas import symbols as S
from formulas.dtypes import DTYPE_BYTES, canonical_dtype

# model_type values whose decoder layer is the Llama layout the profile's formulas read.
FAMILIES = ("llama", "qwen2", "qwen3", "mistral")
MOE_FAMILIES = TM.MOE_FAMILIES  # routed experts through grouped_mm (engine/profiles/transformers_moe.py)
FLOAT32 = DTYPE_BYTES["float32"]


# Scenario fields the profile reads; every other knob (parallelism, PEFT, quantization, paged
# cache, allocator overheads) must keep its default, since nothing of it was measured.
KNOBS = frozenset({"batch_size", "seq_len", "dtype", "kv_cache_dtype", "attention", "logits", "mla_cache",
                   "quant_group_size", "recompute", "optimizer", "precision", "reserve_bytes", "device",
                   "lora_rank", "lora_targets", "adapter_dtype", "weight_quant", "dp", "zero", "offload", "sharding"})


def _modelled(group: LayerGroup) -> bool:
    """The layer kinds the profile's formulas describe: (sliding) attention, a gated dense MLP or
    routed experts without biases (engine/profiles/transformers_moe.py)."""
    return group.mixer in ("attention", "sliding_attention") and TM.modelled_mlp(group)


def _sliding(spec: ModelSpec, scenario: Scenario) -> bool:
    """Sliding-window layers under sdpa (Mistral): their mask once ``s`` reaches the window."""
    return scenario.attention != "eager" and any(g.mixer == "sliding_attention" for g in spec.layers)


def _qk_norm(spec: ModelSpec) -> bool:
    """Qwen3's RMSNorms on queries and keys (the attention option every group shares)."""
    return bool(spec.layers[0].mixer_args.get("qk_norm", False))


def check(spec: ModelSpec, scenario: Scenario) -> None:
    """Refuse what the profile's formulas do not describe, naming the value."""
    if spec.model_type not in (*FAMILIES, *MOE_FAMILIES) or not all(_modelled(group) for group in spec.layers):
        raise InputError(f"--profile transformers: model_type {spec.model_type!r} ({spec.architecture}) is not "
                         f"modelled; it covers dense {', '.join(FAMILIES)} and MoE {', '.join(MOE_FAMILIES)} "
                         "decoders (no MLA) "
                         "(--profile megatron models any layout with Megatron-LM's kernels)")
    TM.check(spec, scenario)
    if scenario.mode == "inference" and any(g.mixer == "sliding_attention" for g in spec.layers):
        raise InputError(f"--profile transformers: the sliding-window prefill of {spec.name} is not modelled "
                         "(training is); use --profile megatron or vllm")
    if scenario.mode == "inference" and (scenario.weight_quant or "none") != "none":
        raise InputError(f"--profile transformers: --weight-quant {scenario.weight_quant} is not modelled for "
                         "inference (the profile's prefill is measured on unquantized weights)")
    D.check(spec, scenario)
    kv = scenario.kv_cache_dtype
    if kv is not None and scenario.kv_dtype_name() != scenario.dtype_name():
        raise InputError(f"--profile transformers: --kv-cache-dtype {kv} is not modelled; DynamicCache keeps "
                         f"keys and values in the model dtype ({scenario.dtype})")
    if scenario.mode == "training":
        if scenario.optimizer not in (*STATE_COPIES, *BNB):
            raise InputError(f"--profile transformers: --optimizer {scenario.optimizer} is not modelled "
                             f"(choose from {', '.join((*STATE_COPIES, *BNB))})")
        if scenario.precision not in ("auto", "pure", "amp"):
            raise InputError(f"--profile transformers: --precision {scenario.precision} is not modelled; the "
                             "profile trains in the model's dtype (pure) or an fp32 model under autocast (amp)")
        if scenario.precision == "amp" and canonical_dtype(scenario.dtype) not in ("bfloat16", "float16"):
            raise InputError(f"--profile transformers: --precision amp autocasts to a 16-bit --dtype "
                             f"(bfloat16 or float16), got --dtype {scenario.dtype}")
        _check_peft(spec, scenario)
        if scenario.recompute in ("selective", "op"):
            raise InputError(f"--profile transformers: --recompute {scenario.recompute} does not exist in transformers; "
                             "use none or full (--gradient-checkpointing)")


def _check_peft(spec: ModelSpec, scenario: Scenario) -> None:
    """LoRA on a plain or bitsandbytes-NF4 base (QLoRA); full training of unquantized weights."""
    quant = shared.weight_format(spec, scenario).name
    if scenario.lora_rank is None and (scenario.lora_targets or scenario.adapter_dtype):
        flag = "--lora-targets" if scenario.lora_targets else "--adapter-dtype"
        raise InputError(f"--profile transformers: {flag} needs --lora-rank (PEFT LoRA)")
    if quant not in ("none", "nf4") or (quant == "nf4" and scenario.lora_rank is None):
        raise InputError(f"--profile transformers: --weight-quant {quant} is not modelled in training (QLoRA: "
                         "--weight-quant nf4 with --lora-rank, bitsandbytes Linear4bit)")


def build(spec: ModelSpec, scenario: Scenario) -> MemoryModel:
    if scenario.mode == "training":
        return build_training(spec, scenario)
    return build_inference(spec, scenario)


def _upcast(scenario: Scenario) -> bool:
    """True when ``.float()`` copies: activations narrower than float32."""
    return DTYPE_BYTES[canonical_dtype(scenario.dtype)] < FLOAT32


def _amp(scenario: Scenario) -> bool:
    """``--precision amp``: fp32 parameters, the forward under ``torch.autocast(--dtype)``."""
    return scenario.mode == "training" and scenario.precision == "amp"


def _autocast(scenario: Scenario) -> bool:
    """AMP whose layers compute under autocast from fp32 weights: not under FSDP or ZeRO, whose
    layers run on 16-bit parameters (engine/profiles/transformers_distributed.py)."""
    return _amp(scenario) and not D.sharded(scenario)


def _linear_count(tensors: list[P.WeightTensor]) -> tuple[sympy.Expr, sympy.Expr]:
    """(every linear layer's weights, one decoder layer's): the bf16 casts autocast keeps saved.

    The projections' weights and ``lm_head`` (the embedding's ``V x h`` when tied); a bias's
    cast is saved by nothing (its gradient is the output gradient's sum; measured on Qwen2-MoE)."""
    linear = [t for t in tensors if M.autocast_linear(t) and not t.name.endswith(".bias")]
    layers = sympy.Add(*(t.numel for t in linear))
    head = S.vocab_size * S.hidden_size
    return layers + head, layers / S.num_hidden_layers


def _weights(spec: ModelSpec, scenario: Scenario) -> dict[str, sympy.Expr]:
    """Parameters and persistent buffers, plus the rotary ``inv_freq`` and
    ``original_inv_freq`` (``d / 2`` values each, non-persistent, cast by ``.to(dtype)``;
    float32 when loaded quantized by ``from_pretrained``) and, for a bitsandbytes NF4 base,
    its per-matrix codes (formulas/frameworks/transformers_peft.py bnb_4bit_codes)."""
    terms = shared.weight_terms(spec, scenario)
    if shared.weight_format(spec, scenario).name == "nf4":  # QLoRA: from_pretrained keeps the buffers fp32
        quantized = sum((t.count for t in architecture.parameter_tensors(spec) if t.quantizable), sympy.Integer(0))
        terms["weights/quant_codes"] = FP.bnb_4bit_codes(quantized)
        terms["weights/rotary_buffers"] = TM.rotary_width(spec) * FLOAT32
    else:
        terms["weights/rotary_buffers"] = TM.rotary_width(spec) * S.weight_bytes
    terms["weights"] = sympy.Add(*(v for k, v in terms.items() if k != "weights"))
    return terms


def _model(spec, scenario, mode, terms, facts, phases=None) -> MemoryModel:
    tensors = architecture.parameter_tensors(spec)
    inputs = shared.inputs(spec, scenario)
    if mode == "training":
        inputs["precision"] = "zero16" if D.layout(scenario) == "deepspeed" else "amp" if _amp(scenario) else "pure"
        inputs["convention"] = W.convention(spec, scenario, facts, _autocast(scenario))
        if D.layout(scenario):
            inputs["convention"] = D.convention(scenario, facts, inputs["convention"])
    terms["overhead"] = overhead.reserve()
    sources = {**W.SOURCES, **D.SOURCES, **D.LAYOUT_SOURCES.get(D.layout(scenario) if mode == "training" else None, {})}
    return MemoryModel(
        name=spec.name, mode=mode, terms=terms, facts=facts, phases=phases or {},
        descriptions={**shared.DESCRIPTIONS, **W.PROFILE_DESCRIPTIONS, **TM.DESCRIPTIONS, **D.DESCRIPTIONS},
        inputs=inputs,
        parameters=P.parameter_count(tensors), active_parameters=P.active_parameter_count(tensors),
        sources={name: sources[name] for name in terms if "/" not in name},
    )



def build_inference(spec: ModelSpec, scenario: Scenario) -> MemoryModel:
    """Weights + KV cache + the largest moment of the prefill (see module docstring)."""
    terms = _weights(spec, scenario)
    terms["input_ids"] = F.input_ids()
    terms.update(shared.kv_cache_terms(spec, scenario))  # recurrent families are refused by check
    eager = scenario.attention == "eager"
    base = F.prefill_base(eager, TM.rotary_width(spec)) + TM.prefill_masks(spec, eager)
    moments = F.prefill_moments(eager, _upcast(scenario), grouped=spec.num_attention_heads > spec.num_key_value_heads,
                                qk_norm=_qk_norm(spec))
    if TM.is_moe(spec):  # the last layer's MoE MLP in place of the dense one
        del moments["mlp"]
        moments.update(TM.prefill_mlp_moments(spec, eager))
    peaks = {f"activations/{name}": base + expr for name, expr in moments.items()}
    peaks["activations/logits"] = F.prefill_logits(scenario.logits)
    terms["activations"] = sympy.Max(*peaks.values())
    terms.update(peaks)
    return _model(spec, scenario, "inference", terms, {**shared.facts(spec, scenario), **TM.rotary_facts(spec)})


def build_training(spec: ModelSpec, scenario: Scenario) -> MemoryModel:
    """Weights, gradients, AdamW state, saved activations and each moment's temporaries.

    With ``--lora-rank`` (PEFT LoRA) only the adapters are trained: gradients, state and
    temporaries are theirs, and the frozen base saves less (formulas/frameworks/transformers_peft.py)."""
    tensors = architecture.parameter_tensors(spec)
    lora = scenario.lora_rank is not None
    targets, trained = shared.lora_adapters(spec, scenario) if lora else ([], tensors)
    terms = _weights(spec, scenario)
    if lora:
        terms["adapters"] = shared.per_gpu_count(trained) * S.adapter_bytes
    terms["input_ids"] = F.input_ids()
    host = _state_terms(terms, trained, scenario)
    terms.update(_lora_saved(spec, scenario, targets) if lora else _saved(spec, scenario, tensors))
    if spec.tie_word_embeddings and not lora:
        terms["tied_gradient_sum"] = F.tied_embedding_gradient_sum()
    terms["optimizer_temporaries"] = _optimizer_temporaries(trained, scenario)
    offloaded = D.state_terms(spec, scenario, terms, trained)  # --dp/--zero: DDP, FSDP or DeepSpeed (accelerate)
    phases = D.phases(scenario, terms, _phases(terms))
    model = _model(spec, scenario, "training", terms, _training_facts(spec, scenario), phases)
    if host or offloaded:
        model.host_terms = {**host, **offloaded}
        model.sources["host_terms"] = D.HOST_SOURCE[D.layout(scenario)] if offloaded else W.HOST_SOURCE
    return model


def _state_terms(terms: dict[str, sympy.Expr], trained: list[P.WeightTensor], scenario: Scenario) -> dict:
    """``gradients`` and ``optimizer`` of the trained tensors into ``terms``; the paged host part."""
    count = P.parameter_count(trained)
    terms["gradients"] = count * S.gradient_bytes
    held = sum((t.count for t in M.held_tensors(trained)), sympy.Integer(0))  # fused experts: 2 tensors a layer
    counters = F.step_counters(held, on_device=scenario.device == "cpu")
    terms["optimizer"] = count * S.optimizer_bytes + (counters if scenario.optimizer in ("adamw", "adam") else 0)
    if scenario.optimizer not in BNB:
        return {}
    terms["optimizer"], paged = shared.optimizer_state(M.held_tensors(trained), scenario.optimizer)
    return {"optimizer_paged": paged} if scenario.optimizer in O.PAGED_OPTIMIZERS else {}


def _saved(spec: ModelSpec, scenario: Scenario, tensors: list[P.WeightTensor]) -> dict[str, sympy.Expr]:
    """Full training: what the forward saves, the loss's and lm_head's gradients, the recomputed layer."""
    eager, upcast, amp, qk = scenario.attention == "eager", _upcast(scenario), _autocast(scenario), _qk_norm(spec)
    checkpointing = scenario.recompute == "full"
    sliding = _sliding(spec, scenario)
    if checkpointing:
        layers = S.num_hidden_layers * F.checkpointed_layer_saved(amp) + F.checkpoint_shared_inputs(eager, amp)
        layers += F.sliding_checkpoint_mask() if sliding else 0
    else:
        layer = F.layer_saved(eager, upcast, qk, amp) + (F.sliding_sdpa_saved() if sliding else 0)
        layer += TM.rotary_layer_saved(spec, eager)
        layers = S.num_hidden_layers * layer + TM.layers_saved(spec, amp, upcast)
    saved = {"activations/layers": layers, "activations/head": F.head_saved(amp),
             "activations/rope": F.rope_tables(amp, TM.rotary_width(spec)), "activations/loss": F.loss_saved()}
    every, per_layer = _linear_count(tensors)
    if amp:
        head_only = S.vocab_size * S.hidden_size
        saved["activations/autocast_weights"] = F.autocast_weight_copies(head_only if checkpointing else every)
    terms = {"activations": sympy.Add(*saved.values()), **saved,
             "loss_gradients": F.loss_gradients(), "head_gradients": F.head_gradients()}
    if checkpointing:
        terms["recompute"] = (F.recompute(eager, upcast, qk, amp) + TM.last_layer_saved(spec, amp, upcast)
                              + TM.rotary_layer_saved(spec, eager)
                              + (F.sliding_sdpa_saved() if sliding else 0))
        if amp:  # the recomputed layer casts its weights again
            terms["recompute"] += F.autocast_weight_copies(per_layer)
    return terms


def _lora_saved(spec: ModelSpec, scenario: Scenario, targets: list[P.WeightTensor]) -> dict[str, sympy.Expr]:
    """PEFT LoRA on a frozen base: the base's saved tensors, the adapters', the head's."""
    eager, upcast, qk = scenario.attention == "eager", _upcast(scenario), _qk_norm(spec)
    cast = _adapter_width(scenario) != DTYPE_BYTES[canonical_dtype(scenario.dtype)]
    unshared = frozenset({"q_proj", "k_proj", "v_proj", "gate_proj", "up_proj", "down_proj", peft.OUTPUT_HEAD}
                         | ({"o_proj"} if eager or TM.partial_rotary(spec) else set()))
    per_layer = {peft.module_name(t): t.cols for t in targets if t.count != 1}
    head = {peft.module_name(t): t.cols for t in targets if t.count == 1}
    layer = FP.base_layer_saved(eager, upcast, qk) + FP.adapter_saved(per_layer, cast, unshared)
    sliding = _sliding(spec, scenario)
    layer += F.sliding_sdpa_saved() if sliding else 0
    if scenario.recompute == "full":
        layers = S.num_hidden_layers * F.checkpointed_layer_saved() + F.checkpoint_shared_inputs(eager)
        layers += F.sliding_checkpoint_mask() if sliding else 0
    else:
        layers = S.num_hidden_layers * layer - FP.first_layer_unsaved(qk, frozenset(per_layer))
        layers += TM.frozen_layers_saved(spec, upcast)
    saved = {"activations/layers": layers, "activations/head": FP.head_saved() + FP.adapter_saved(head, cast, unshared),
             "activations/rope": F.rope_tables(width=TM.rotary_width(spec)), "activations/loss": F.loss_saved()}
    terms = {"activations": sympy.Add(*saved.values()), **saved,
             "loss_gradients": F.loss_gradients(), "head_gradients": FP.head_gradients()}
    if scenario.recompute == "full":
        terms["recompute"] = layer + FP.recompute_backward() + TM.frozen_last_layer_saved(spec, upcast)
    return terms


def _adapter_width(scenario: Scenario) -> int:
    """The adapters' bytes per element: ``--adapter-dtype``, else float32 (PEFT's
    ``autocast_adapter_dtype=True`` upcasts bf16/fp16 adapters)."""
    if scenario.adapter_dtype is None:
        return FLOAT32
    return int(scenario.adapter_bytes())


def _optimizer_temporaries(tensors: list[P.WeightTensor], scenario: Scenario) -> sympy.Expr:
    if scenario.optimizer not in ("adamw", "adam"):
        return sympy.Integer(0)  # torch.optim.SGD updates momentum and parameters in place
    largest = sympy.Max(*(t.rows * t.cols for t in M.held_tensors(tensors)))
    return F.adamw_temporaries(scenario.device == "cuda", largest, P.parameter_count(tensors))


def _phases(terms: dict[str, sympy.Expr]) -> dict[str, tuple[str, ...]]:
    held = ("weights", *(n for n in ("adapters",) if n in terms), "input_ids", "optimizer")
    layers = ("activations/layers", "activations/rope", *(n for n in ("activations/autocast_weights",) if n in terms))
    phases = {
        "loss_backward": (*held, "activations", "loss_gradients", "overhead"),
        "head_backward": (*held, *layers, "activations/head", "head_gradients", "overhead"),
    }
    if "recompute" in terms:
        phases["recompute"] = (*held, *layers, "recompute", "overhead")
    if "tied_gradient_sum" in terms:
        phases["backward_end"] = (*held, "gradients", "tied_gradient_sum", "overhead")
    phases["optimizer_step"] = (*held, "gradients", "optimizer_temporaries", "overhead")
    return phases


def _training_facts(spec: ModelSpec, scenario: Scenario) -> dict[sympy.Symbol, sympy.Expr]:
    """Everything in the model's dtype: weights, activations, gradients, AdamW moments; under
    AMP the parameters, gradients and moments in float32 and the activations in ``--dtype``."""
    facts = {**shared.facts(spec, scenario), **TM.rotary_facts(spec)}
    width = sympy.Rational(DTYPE_BYTES[canonical_dtype(scenario.dtype)])
    parameter = sympy.Rational(FLOAT32) if _amp(scenario) else width
    trained = sympy.Rational(_adapter_width(scenario)) if scenario.lora_rank is not None else parameter
    facts.pop(S.master_weight_bytes, None)
    facts.update({S.weight_bytes: parameter, S.activation_bytes: width, S.gradient_bytes: trained,
                  S.optimizer_bytes: sympy.Rational(O.state_bytes_per_parameter(scenario.optimizer, trained))})
    if scenario.lora_rank is not None:
        facts[S.adapter_bytes] = trained
    D.update_facts(scenario, facts)
    return facts



PROFILE = Profile(
    name="transformers",
    summary="what transformers 5.24 + PyTorch 2.13 allocate, AMP, PEFT LoRA/QLoRA (measured: docs/accuracy.md)",
    modes=("inference", "training"),
    knobs=KNOBS,
    build=build,
    check=check,
    refusal_note=("the transformers profile models data parallelism through accelerate (--dp, --zero, --sharding, "
                  "--offload): for --tp/--pp/--cp or FSDP2 use --profile torchtitan, for Megatron-LM --profile megatron"),
)
