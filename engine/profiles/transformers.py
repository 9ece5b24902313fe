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
"""

from __future__ import annotations

import sympy

from engine import architecture
from engine import terms as shared
from engine.errors import InputError
from engine.model import MemoryModel
from engine.profiles import Profile
from engine.scenario import Scenario
from engine.spec import LayerGroup, ModelSpec
from formulas.frameworks import transformers as F
from formulas import optimizer as O
from formulas import overhead
from formulas import parameters as P
from formulas import symbols as S
from formulas.dtypes import DTYPE_BYTES, canonical_dtype

# model_type values whose decoder layer is the Llama layout the profile's formulas read.
FAMILIES = ("llama", "qwen2", "qwen3")
# optimizer -> moments kept per parameter, in the parameters' dtype (torch.optim)
STATE_COPIES = {"adamw": 2, "adam": 2, "sgd-momentum": 1, "sgd": 0}
# bitsandbytes optimizers (Trainer's optim="adamw_bnb_8bit", "paged_adamw_8bit", "paged_adamw_32bit"):
# state per tensor (engine.terms.optimizer_state), updated in place, no step temporaries
BNB = tuple(O.BNB_OPTIMIZERS)
FLOAT32 = DTYPE_BYTES["float32"]


# Scenario fields the profile reads; every other knob (parallelism, PEFT, quantization, paged
# cache, allocator overheads) must keep its default, since nothing of it was measured.
KNOBS = frozenset({"batch_size", "seq_len", "dtype", "kv_cache_dtype", "attention", "logits", "mla_cache",
                   "quant_group_size", "recompute", "optimizer", "precision", "reserve_bytes", "device"})


def _modelled(group: LayerGroup) -> bool:
    """The one layer kind the profile's formulas describe: full attention, gated dense MLP."""
    return group.mixer == "attention" and group.mlp == "dense" and group.mlp_args.get("gated", True)


def _qk_norm(spec: ModelSpec) -> bool:
    """Qwen3's RMSNorms on queries and keys (the attention option every group shares)."""
    return bool(spec.layers[0].mixer_args.get("qk_norm", False))


def check(spec: ModelSpec, scenario: Scenario) -> None:
    """Refuse what the profile's formulas do not describe, naming the value."""
    if spec.model_type not in FAMILIES or not all(_modelled(group) for group in spec.layers):
        raise InputError(f"--profile transformers: model_type {spec.model_type!r} ({spec.architecture}) is not "
                         f"modelled; it covers dense {', '.join(FAMILIES)} decoders without sliding window")
    kv = scenario.kv_cache_dtype
    if kv is not None and scenario.kv_dtype_name() != scenario.dtype_name():
        raise InputError(f"--profile transformers: --kv-cache-dtype {kv} is not modelled; DynamicCache keeps "
                         f"keys and values in the model dtype ({scenario.dtype})")
    if scenario.mode == "training":
        if scenario.optimizer not in (*STATE_COPIES, *BNB):
            raise InputError(f"--profile transformers: --optimizer {scenario.optimizer} is not modelled "
                             f"(choose from {', '.join((*STATE_COPIES, *BNB))})")
        if scenario.precision not in ("auto", "pure"):
            raise InputError(f"--profile transformers: --precision {scenario.precision} is not modelled; the "
                             "profile trains in the model's dtype (pure)")
        if scenario.recompute in ("selective", "op"):
            raise InputError(f"--profile transformers: --recompute {scenario.recompute} does not exist in transformers; "
                             "use none or full (--gradient-checkpointing)")


def build(spec: ModelSpec, scenario: Scenario) -> MemoryModel:
    if scenario.mode == "training":
        return build_training(spec, scenario)
    return build_inference(spec, scenario)


def _upcast(scenario: Scenario) -> bool:
    """True when ``.float()`` copies: activations narrower than float32."""
    return DTYPE_BYTES[canonical_dtype(scenario.dtype)] < FLOAT32


def _weights(spec: ModelSpec, scenario: Scenario) -> dict[str, sympy.Expr]:
    """Parameters and persistent buffers, plus the rotary ``inv_freq`` and
    ``original_inv_freq`` (``d / 2`` values each, non-persistent, cast by ``.to(dtype)``)."""
    terms = shared.weight_terms(spec, scenario)
    terms["weights/rotary_buffers"] = S.head_dim * S.weight_bytes
    terms["weights"] = terms["weights"] + terms["weights/rotary_buffers"]
    return terms


def _model(spec, scenario, mode, terms, facts, phases=None) -> MemoryModel:
    tensors = architecture.parameter_tensors(spec)
    inputs = shared.inputs(spec, scenario)
    if mode == "training":
        inputs["precision"] = "pure"
        inputs["convention"] = convention(scenario)
    terms["overhead"] = overhead.reserve()
    return MemoryModel(
        name=spec.name, mode=mode, terms=terms, facts=facts, phases=phases or {},
        descriptions={**shared.DESCRIPTIONS, **PROFILE_DESCRIPTIONS}, inputs=inputs,
        parameters=P.parameter_count(tensors), active_parameters=P.active_parameter_count(tensors),
        sources={name: SOURCES[name] for name in terms if "/" not in name},
    )


def convention(scenario: Scenario) -> str:
    """The bytes-per-parameter convention of a training model, in words, for the output."""
    width = DTYPE_BYTES[canonical_dtype(scenario.dtype)]
    name = canonical_dtype(scenario.dtype)
    if scenario.optimizer in BNB:
        state = {"adamw8bit": "2 bitsandbytes 8-bit moments (2 B + fp32 absmax per 256)",
                 "paged-adamw8bit": "2 bitsandbytes 8-bit moments, paged (unified memory, not counted)",
                 "paged-adamw": "2 fp32 moments, paged (unified memory, not counted)"}[scenario.optimizer]
        return f"transformers {name} (model.to(dtype), pure): {name} weights + {name} grads + {state}"
    copies = STATE_COPIES.get(scenario.optimizer, 0)
    total = int(width) * (2 + copies)
    return (f"transformers {name} (model.to(dtype), pure): {name} weights + {name} grads + {copies} {name} "
            f"{scenario.optimizer} moments = {total} B/param")


def build_inference(spec: ModelSpec, scenario: Scenario) -> MemoryModel:
    """Weights + KV cache + the largest moment of the prefill (see module docstring)."""
    terms = _weights(spec, scenario)
    terms["input_ids"] = F.input_ids()
    terms.update(shared.kv_cache_terms(spec, scenario))  # recurrent families are refused by check
    eager = scenario.attention == "eager"
    base = F.prefill_base(eager)
    moments = F.prefill_moments(eager, _upcast(scenario), grouped=spec.num_attention_heads > spec.num_key_value_heads,
                                qk_norm=_qk_norm(spec))
    peaks = {f"activations/{name}": base + expr for name, expr in moments.items()}
    peaks["activations/logits"] = F.prefill_logits(scenario.logits)
    terms["activations"] = sympy.Max(*peaks.values())
    terms.update(peaks)
    return _model(spec, scenario, "inference", terms, shared.facts(spec, scenario))


def build_training(spec: ModelSpec, scenario: Scenario) -> MemoryModel:
    """Weights, gradients, AdamW state, saved activations and each moment's temporaries."""
    tensors = architecture.parameter_tensors(spec)
    trained = P.parameter_count(tensors)
    eager, upcast = scenario.attention == "eager", _upcast(scenario)
    terms = _weights(spec, scenario)
    terms["gradients"] = trained * S.gradient_bytes
    on_cpu = scenario.device == "cpu"
    counters = F.step_counters(sum((t.count for t in tensors), sympy.Integer(0)), on_device=on_cpu)
    terms["optimizer"] = trained * S.optimizer_bytes + (counters if scenario.optimizer in ("adamw", "adam") else 0)
    host = {}
    if scenario.optimizer in BNB:
        terms["optimizer"], paged = shared.optimizer_state(tensors, scenario.optimizer)
        host = {"optimizer_paged": paged} if scenario.optimizer in O.PAGED_OPTIMIZERS else {}
    checkpointing = scenario.recompute == "full"
    if checkpointing:
        layers = S.num_hidden_layers * F.checkpointed_layer_saved() + F.checkpoint_shared_inputs(eager)
    else:
        layers = S.num_hidden_layers * F.layer_saved(eager, upcast, _qk_norm(spec))
    terms["input_ids"] = F.input_ids()
    saved = {
        "activations/layers": layers,
        "activations/head": F.head_saved(),
        "activations/rope": F.rope_tables(),
        "activations/loss": F.loss_saved(),
    }
    terms["activations"] = sympy.Add(*saved.values())
    terms.update(saved)
    terms["loss_gradients"] = F.loss_gradients()
    terms["head_gradients"] = F.head_gradients()
    if checkpointing:
        terms["recompute"] = F.recompute(eager, upcast, _qk_norm(spec))
    if spec.tie_word_embeddings:
        terms["tied_gradient_sum"] = F.tied_embedding_gradient_sum()
    terms["optimizer_temporaries"] = _optimizer_temporaries(tensors, scenario)
    model = _model(spec, scenario, "training", terms, _training_facts(spec, scenario), _phases(terms))
    if host:
        model.host_terms, model.sources["host_terms"] = host, HOST_SOURCE
    return model


def _optimizer_temporaries(tensors: list[P.WeightTensor], scenario: Scenario) -> sympy.Expr:
    if scenario.optimizer not in ("adamw", "adam"):
        return sympy.Integer(0)  # torch.optim.SGD updates momentum and parameters in place
    largest = sympy.Max(*(t.rows * t.cols for t in tensors))
    return F.adamw_temporaries(scenario.device == "cuda", largest, P.parameter_count(tensors))


def _phases(terms: dict[str, sympy.Expr]) -> dict[str, tuple[str, ...]]:
    held = ("weights", "input_ids", "optimizer")
    layers = ("activations/layers", "activations/rope")
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
    """Everything in the model's dtype: weights, activations, gradients, AdamW moments."""
    facts = shared.facts(spec, scenario)
    width = sympy.Rational(DTYPE_BYTES[canonical_dtype(scenario.dtype)])
    facts.pop(S.master_weight_bytes, None)
    facts.update({S.weight_bytes: width, S.activation_bytes: width, S.gradient_bytes: width,
                  S.optimizer_bytes: sympy.Rational(O.state_bytes_per_parameter(scenario.optimizer, width))})
    return facts


HOST_SOURCE = ("paged optimizers: Dettmers et al. 2023 (QLoRA), arXiv:2305.14314, sec. 3; bitsandbytes/functional.py "
               "get_paged (cudaMallocManaged, outside torch's caching allocator)")

PROFILE_DESCRIPTIONS: dict[str, str] = {
    "optimizer_paged": "bitsandbytes paged state (CUDA unified memory, outside max_memory_allocated)",
    "input_ids": "the batch of int64 token ids on the device",
    "weights/rotary_buffers": "rotary inv_freq and original_inv_freq (non-persistent buffers)",
    "activations/layers": "what every decoder layer saves for backward (its input only with checkpointing)",
    "activations/head": "final RMSNorm and lm_head input",
    "activations/rope": "cos and sin tables shared by every layer",
    "activations/loss": "fp32 log-softmax of the logits and the shifted labels",
    "loss_gradients": "start of backward: NLL and log-softmax gradients (fp32, b s V each)",
    "head_gradients": "lm_head backward: logits gradient, hidden gradient, V x h weight gradient",
    "recompute": "checkpointing: the last layer recomputed, its gradients in and out, lm_head gradient",
    "tied_gradient_sum": "tied embeddings: dense embedding gradient and its sum with lm_head's",
    "optimizer_temporaries": "AdamW step temporaries (2 x largest tensor single-tensor; P foreach)",
    "activations/norm": "prefill: post-attention RMSNorm's fp32 copies",
    "activations/q_norm": "prefill: q projection and its RMSNorm's fp32 copies",
    "activations/k_norm": "prefill: k projection and its RMSNorm's fp32 copies",
    "activations/rope_q": "prefill: rotary embedding of q",
    "activations/rope_k": "prefill: rotary embedding of k",
    "activations/attention": "prefill: attention of the last layer",
    "activations/mlp": "prefill: gated MLP of the last layer",
}


_MODELING = "transformers 5.24 models/llama/modeling_llama.py and models/qwen3/modeling_qwen3.py"
SOURCES: dict[str, str] = {
    "weights": shared.SOURCES["weights"] + "; plus rotary inv_freq buffers (" + _MODELING
               + ", LlamaRotaryEmbedding.__init__)",
    "input_ids": "int64 token ids on the device: transformers 5.24 trainer.py Trainer._prepare_inputs, "
                 "generation/utils.py GenerationMixin.generate",
    "kv_cache": "transformers 5.24 cache_utils.py DynamicCache.update: key and value states per layer "
                "in the model dtype",
    "activations": "tensors autograd saves, read off " + _MODELING + " DecoderLayer.forward, and "
                   "loss/loss_utils.py ForCausalLMLoss (fp32 logits.float(), log_softmax)",
    "gradients": "torch 2.13 autograd AccumulateGrad (torch/csrc/autograd/functions/accumulate_grad.h): one "
                 ".grad per trained parameter, in the parameter's dtype",
    "optimizer": "torch 2.13 torch/optim/adamw.py AdamW._init_group: exp_avg and exp_avg_sq in the "
                 "parameter's dtype, one step counter per parameter (fp32); bitsandbytes 0.50 "
                 "optim/optimizer.py Optimizer8bit.init_state (measured: tests/fixtures/bnb_state_cpu.json)",
    "loss_gradients": "torch 2.13 backward of nll_loss and log_softmax (fp32, b s x V each), "
                      "transformers loss/loss_utils.py ForCausalLMLoss",
    "head_gradients": "torch 2.13 backward of lm_head (torch/nn/modules/linear.py Linear.forward, addmm's "
                      "derivative in tools/autograd/derivatives.yaml): logits, hidden and weight gradients",
    "recompute": "torch 2.13 torch/utils/checkpoint.py (use_reentrant=False), as transformers "
                 "gradient_checkpointing_enable sets it: the last layer recomputed in backward",
    "tied_gradient_sum": "torch 2.13 autograd accumulation of the tied embedding's two gradients "
                         "(out of place, torch/csrc/autograd/input_buffer.cpp)",
    "optimizer_temporaries": "torch 2.13 torch/optim/adam.py _single_tensor_adam (CPU) and "
                             "_multi_tensor_adam (foreach, CUDA) step temporaries",
    "overhead": shared.SOURCES["overhead"],
}

PROFILE = Profile(
    name="transformers",
    summary="what transformers 5.24 + PyTorch 2.13 allocate (measured: docs/accuracy.md)",
    modes=("inference", "training"),
    knobs=KNOBS,
    build=build,
    check=check,
    refusal_note="measured: one device, no parallelism, PEFT or quantization",
)
