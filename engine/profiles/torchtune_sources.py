"""What each term of the ``torchtune`` profile (engine/profiles/torchtune.py) holds, and its
source: the descriptions and citations the profile attaches to its MemoryModel."""

from __future__ import annotations

from engine import terms as shared

DESCRIPTIONS: dict[str, str] = {
    "input_ids": "int64 tokens, labels and shifted labels",
    "activations/layers": "what every layer saves (its input only with checkpointing; offloaded: the GPU stash)",
    "activations/head": "final RMSNorm and the output projection's input",
    "activations/loss": "the loss's saved logits (fp32 log-softmax, or bf16 chunks when compiled)",
    "loss_forward": "end of the loss's forward: its logits and log-softmax (all bf16 chunks when chunked)",
    "loss_gradients": "start of backward: the loss's gradients (one chunk's when chunked)",
    "recompute": "checkpointing: one layer recomputed, the gradient coming in and SwiGLU's backward",
    "recompute_gradients": "beside the first layer's recompute: every other gradient and its input",
    "down_proj_gradient": "the recomputed layer's w2 weight gradient, made before SwiGLU's MulBackward",
    "head_gradient": "the output projection's weight gradient during the layers' backward",
    "head_backward": "chunked loss: the output weight's chunk gradients summed, the later chunks' logits alive",
    "tied_gradient_sum": "tied embeddings: dense embedding gradient and its sum with the output's",
    "optimizer_temporaries": "torch.optim foreach step: one intermediate the size of what it steps",
    "optimizer_paged": "bitsandbytes paged state (CUDA unified memory, outside max_memory_allocated)",
    "activations_offloaded": "offloaded layer inputs and final-norm tensors (pinned CPU memory)",
}

_RECIPE = "torchtune recipes/full_finetune_single_device.py FullFinetuneRecipeSingleDevice"
_SLICED = ("torchtune <= 0.2.1 (30c75d4) recipes' train: logits[..., :-1, :].contiguous() kept through backward "
           "(del logits came in v0.3.0, 8a98fbaa3 #1235); aten/src/ATen/native/cuda/SoftMax.cu host_softmax")
SOURCES: dict[str, str] = {
    "weights": shared.SOURCES["weights"] + "; torchtune loads them in cfg.dtype (training/precision.py get_dtype)",
    "adapters": "torchtune modules/peft/lora.py LoRALinear.__init__ (lora_a r x in, lora_b out x r); "
                + shared.SOURCES["adapters"],
    "input_ids": _RECIPE + "._loss_step (tokens, labels, torch.hstack of the shifted labels)",
    "gradients": "torch 2.x autograd AccumulateGrad, one .grad per trained parameter in its dtype; "
                 "optimizer_in_bwd: torchtune training/memory.py register_optim_in_bwd_hooks (step and zero_grad "
                 "per parameter in its post-accumulate-grad hook)",
    "optimizer": "torch/optim/adamw.py AdamW._init_group (zeros_like(param): the parameter's dtype); "
                 "bitsandbytes/optim/optimizer.py Optimizer8bit.init_state (uint8 states, fp32 absmax per 256)",
    "optimizer_temporaries": "torch/optim/adamw.py _multi_tensor_adamw (_foreach_sqrt intermediate), "
                             "pytorch/pytorch#97712 (2023)",
    "activations": "torchtune modules/transformer.py TransformerSelfAttentionLayer.forward, modules/rms_norm.py, "
                   "modules/attention.py MultiHeadAttention.forward, modules/loss/ce_chunked_output_loss.py; "
                   "compiled: torch/_functorch/partitioners.py min_cut_rematerialization_partition",
    "loss_forward": "torchtune modules/loss/ce_chunked_output_loss.py CEWithChunkedOutputLoss.forward, "
                    "modules/transformer.py TransformerDecoder.forward (output(h).float()) and chunked_output; "
                    "--torchtune-release 0.2: " + _SLICED,
    "loss_gradients": "torch nll_loss / log_softmax backward (fp32); compiled: torch/_decomp/decompositions.py "
                      "_nll_loss_backward lowered pointwise (torch/_inductor/config.py "
                      "optimize_scatter_upon_const_tensor); --torchtune-release 0.2: " + _SLICED,
    "down_proj_gradient": "torch autograd: w2's MmBackward yields the weight gradient before MulBackward runs "
                          "(measured on CPU, tools/measure/torchtune_peaks.py wide rows)",
    "recompute_gradients": "torch autograd AccumulateGrad (gradients accumulate layer by layer through backward); "
                           "torch/utils/checkpoint.py (each layer input freed after its recompute)",
    "recompute": "torch/utils/checkpoint.py (non-reentrant), torchtune training/_activation_checkpointing.py "
                 "set_activation_checkpointing",
    "head_backward": "torchtune modules/transformer.py TransformerDecoder.chunked_output (one output matmul per "
                     "chunk); torch/csrc/autograd/input_buffer.cpp InputBuffer::accumulate (the chunks' weight "
                     "gradients summed before AccumulateGrad), measured on CPU by tools/measure/torchtune_peaks.py (2026)",
    "head_gradient": "torch autograd: the output Linear's weight gradient (tied: waiting in the input buffer of "
                     "the embedding's AccumulateGrad, torch/csrc/autograd/input_buffer.cpp)",
    "tied_gradient_sum": "torch autograd input_buffer.cpp: the tied weight's two gradients summed out of place "
                         "(measured on CPU, docs/accuracy.md)",
    "zero3_gathered": "FSDP2 torch/distributed/fsdp/_fully_shard/_fsdp_param_group.py FSDPParamGroup.unshard and "
                      "post_backward, _fully_shard.py fully_shard (lazy_init sets the root's "
                      "reshard_after_forward False), "
                      "_fsdp_param.py FSDPParam.init_all_gather_outputs (numel x world size) "
                      "(torchtune training/_distributed.py shard_model; <= 0.2.1: FSDP1 _flat_param.py "
                      "_full_param_padded, _runtime_utils.py _post_forward_reshard)",
}
CONTEXT_SOURCE = ("the user's --reserve: the CUDA context and runtime, device memory outside PyTorch's caching "
                  "allocator (CUDA C Programming Guide, 'Initialization'; c10/cuda/CUDACachingAllocator.cpp "
                  "counts only its own segments in reserved_bytes)")
HOST_SOURCE = ("paged optimizers: Dettmers et al. 2023 (QLoRA), arXiv:2305.14314, sec. 3; bitsandbytes/functional.py "
               "get_paged (cudaMallocManaged, outside torch's caching allocator); "
               "torchtune training/_activation_offloading.py OffloadActivations.pack_tensor (pinned CPU copies); "
               "fsdp_cpu_offload: torch/distributed/fsdp/_fully_shard/_fsdp_api.py CPUOffloadPolicy")
