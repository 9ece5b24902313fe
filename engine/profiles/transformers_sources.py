"""The words of the ``transformers`` profile: its bytes-per-parameter convention, and each
term's source and description (engine/profiles/transformers.py builds the terms).

The convention is generated from the same byte widths the terms use (``facts``), so the
words cannot drift from the numbers; ``SOURCES`` cites the file and function of
transformers 5.24 / PyTorch 2.13 / PEFT / bitsandbytes each term models.
"""

from __future__ import annotations

import sympy

from engine import terms as shared
from engine.scenario import Scenario
from engine.spec import ModelSpec
from formulas import optimizer as O
from formulas import symbols as S
from formulas.dtypes import DTYPE_BYTES, canonical_dtype

FLOAT32 = DTYPE_BYTES["float32"]
# optimizer -> moments kept per parameter, in the parameters' dtype (torch.optim)
STATE_COPIES = {"adamw": 2, "adam": 2, "sgd-momentum": 1, "sgd": 0}
# bitsandbytes optimizers (Trainer's optim="adamw_bnb_8bit", "paged_adamw_8bit", "paged_adamw_32bit"):
# state per tensor (engine.terms.optimizer_state), updated in place, no step temporaries
BNB = tuple(O.BNB_OPTIMIZERS)


def convention(spec: ModelSpec, scenario: Scenario, facts: dict[sympy.Symbol, sympy.Expr], amp: bool) -> str:
    """The bytes-per-parameter convention of a training model, in words, from the widths in
    ``facts`` that its terms use, e.g. ``AMP bf16: fp32 master + fp32 grads + 2 fp32 adamw
    moments = 16 B/param + a bf16 working copy``."""
    dtype = short_dtype(DTYPE_BYTES[canonical_dtype(scenario.dtype)], scenario.dtype)
    weight, grad = facts[S.weight_bytes], facts[S.gradient_bytes]
    state, name = facts[S.optimizer_bytes], scenario.optimizer
    if scenario.optimizer in BNB:
        moments = {"adamw8bit": "2 bitsandbytes 8-bit moments (2 B + fp32 absmax per 256)",
                   "paged-adamw8bit": "2 bitsandbytes 8-bit moments, paged (unified memory, not counted)",
                   "paged-adamw": "2 fp32 moments, paged (unified memory, not counted)"}[name]
    else:
        moments = f"{STATE_COPIES[name]} {short_dtype(grad, scenario.dtype)} {name} moments"
    paged = name in O.PAGED_OPTIMIZERS
    if scenario.lora_rank is not None:
        adapter = facts[S.adapter_bytes]
        total = "" if paged else f" = {float(adapter + grad + state):g} B per adapter parameter"
        quant = shared.weight_format(spec, scenario).name
        base = f"{quant} 4-bit (bitsandbytes Linear4bit)" if quant == "nf4" else f"{short_dtype(weight, dtype)}"
        return (f"PEFT LoRA on a frozen {base} base ({short_dtype(weight, dtype)} embeddings and norms): "
                f"{short_dtype(adapter, dtype)} adapters + {short_dtype(grad, dtype)} grads + {moments}{total}")
    total = "" if paged else f" = {float(weight + grad + state):g} B/param"
    if amp:
        return (f"AMP {dtype}: fp32 master (the weights) + {short_dtype(grad, dtype)} grads + {moments}{total} "
                f"+ a {dtype} working copy of the linear weights (autocast)")
    return (f"pure {dtype} (model.to(dtype)): {short_dtype(weight, dtype)} weights + {short_dtype(grad, dtype)} grads + "
            f"{moments}{total}")


def short_dtype(width, dtype: str) -> str:
    """fp32 for 4 bytes, else the 16-bit dtype's short name (bf16, fp16)."""
    if int(width) == FLOAT32:
        return "fp32"
    return {"bfloat16": "bf16", "float16": "fp16"}.get(canonical_dtype(dtype), canonical_dtype(dtype))


HOST_SOURCE = ("paged optimizers: Dettmers et al. 2023 (QLoRA), arXiv:2305.14314, sec. 3; bitsandbytes/functional.py "
               "get_paged (cudaMallocManaged, outside torch's caching allocator)")

PROFILE_DESCRIPTIONS: dict[str, str] = {
    "optimizer_paged": "bitsandbytes paged state (CUDA unified memory, outside max_memory_allocated)",
    "input_ids": "the batch of int64 token ids on the device",
    "weights/rotary_buffers": "rotary inv_freq and original_inv_freq (non-persistent buffers)",
    "weights/quant_codes": "bitsandbytes NF4: per-matrix fp32 codes and offset (quant_state)",
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
    "adapters": "peft 0.21 tuners/lora/layer.py LoraLayer.update_layer (lora_A r x in, lora_B out x r), kept in "
                "float32 by get_peft_model(autocast_adapter_dtype=True) (tuners/tuners_utils.py "
                "BaseTuner._cast_adapter_dtype); " + shared.SOURCES["adapters"],
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
