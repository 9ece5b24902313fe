"""What vLLM V1 computes at start-up to size its KV cache (vLLM 0.19 as the reference).

The start-up sequence of one worker (``vllm/v1/worker/gpu_worker.py``):

1. ``requested = gpu_memory_utilization x total`` (``Worker.init_device``: the
   ``cudaMemGetInfo`` total of the worker's GPU, ``MemorySnapshot.total_memory``);
2. ``load_model``: the weights as vLLM allocates them ("Model loading took X GiB");
3. ``determine_available_memory`` runs ``GPUModelRunner.profile_run`` (a dummy forward of
   ``max_num_batched_tokens`` tokens, then ``_dummy_sampler_run`` over
   ``min(max_num_seqs, max_num_batched_tokens)`` requests) inside
   ``vllm/utils/mem_utils.py`` ``memory_profiling``: the torch allocator's peak increase
   and the growth of memory outside torch since the worker started;
4. ``available KV = requested - (weights + torch peak increase + non-torch increase)``;
   0.19 estimates the CUDA-graph pool but subtracts it only with
   ``VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=1`` (graphs are captured after the KV cache
   is allocated, out of the memory left over);
5. ``vllm/v1/core/kv_cache_utils.py`` ``get_kv_cache_config``: blocks of
   ``page_size_bytes`` per layer (``vllm/v1/kv_cache_interface.py``), grouped per
   KV-cache spec; ``_report_kv_cache_config`` prints "GPU KV cache size: N tokens" and
   "Maximum concurrency for L tokens per request: Cx".

Every function returns a SymPy expression in the declared symbols; floors and ceilings are
explicit so the results stay formulas (``d concurrency / d gpu_memory_utilization``).
"""

from __future__ import annotations

import sympy

from formulas.symbols import (
    activation_bytes,
    attention_chunk_size,
    block_size,
    cuda_total_bytes,
    gpu_memory_utilization,
    head_dim,
    hidden_size,
    intermediate_size,
    kv_cache_bytes,
    kv_lora_rank,
    max_model_len,
    max_num_batched_tokens,
    max_num_seqs,
    moe_intermediate_size,
    num_attention_heads,
    num_experts_per_tok,
    num_key_value_heads,
    qk_nope_head_dim,
    qk_rope_head_dim,
    rotary_dim,
    rotary_positions,
    sliding_window,
    tensor_parallel,
    v_head_dim,
    vocab_size,
    weight_bytes,
)

# vllm/model_executor/layers/vocab_parallel_embedding.py: DEFAULT_VOCAB_PADDING_SIZE; the
# embedding and the LM head hold pad_vocab_size(vocab_size, 64) rows.
VOCAB_PADDING = 64
# Bytes of a float32 element: the sampler works on float32 logits.
FLOAT32_BYTES = 4
# float32 [requests x vocab] tensors alive at once in the dummy sampler:
# vllm/v1/sample/sampler.py Sampler.forward ``logits.to(torch.float32)``; then with the
# dummy top_k = vocab - 1 and top_p = 0.9 that GPUModelRunner._dummy_sampler_run sets,
# vllm/v1/sample/ops/topk_topp_sampler.py forward_cuda -> flashinfer
# top_k_top_p_sampling_from_logits: the top-k masked logits and their softmax probs.
SAMPLER_FLOAT32_COPIES = 3
# PyTorch's cuBLAS workspace, taken from the caching allocator at the first matmul (the
# profile run) and kept: aten/src/ATen/cuda/CublasHandlePool.cpp getChosenWorkspaceSize,
# default CUBLAS_WORKSPACE_CONFIG ":4096:8" on sm90 = 8 x 4096 KiB. Older GPUs use
# ":4096:2:16:8" (8.1 MiB); the 24 MiB difference is below vLLM's printed precision.
CUBLAS_WORKSPACE_BYTES = 8 * 4096 * 1024


def requested_memory() -> sympy.Expr:
    """``u M_cuda``: the memory vLLM may use on one GPU.

    vllm/v1/worker/gpu_worker.py ``Worker.init_device``: ``requested_memory =
    init_snapshot.total_memory * cache_config.gpu_memory_utilization``.
    """
    return gpu_memory_utilization * cuda_total_bytes


def padded_vocab() -> sympy.Expr:
    """``64 ceil(V / 64)``: rows of the embedding and LM head as vLLM allocates them.

    vllm/model_executor/layers/vocab_parallel_embedding.py ``pad_vocab_size``.
    """
    return VOCAB_PADDING * sympy.ceiling(vocab_size / VOCAB_PADDING)


# vllm/model_executor/layers/quantization/mxfp4.py Mxfp4MoEMethod.create_weights: with the
# Triton backend ``round_up(intermediate_size_per_partition, 64)`` (Marlin: 128 and the
# hidden size to 256; FlashInfer SM100: 256).
MXFP4_TRITON_PADDING = 64
# Mxfp4MoEMethod.process_weights_after_loading (Triton backend, H100's default): the E2M1
# values are swizzled in place of the originals (``del layer.w13_weight``), but the
# swizzled E8M0 scales go into ``w13_precision_config`` while ``layer.w13_weight_scale``
# stays registered: two uint8 copies of every scale. The expert biases are replaced by
# float32 copies (``layer.w13_bias.to(torch.float32)``). Checked against the one public
# Triton-backend log found: gpt-oss-120b on one H100, vLLM 0.14.1, "Model loading took
# 64.38 GiB" (vllm-project/vllm#33155): this layout gives 64.19 GiB (-0.3 %; the swizzle's
# own padding of the Hopper scale layout is not modelled).
MXFP4_RESIDENT_SCALE_COPIES = 2
MXFP4_RESIDENT_BIAS_BYTES = FLOAT32_BYTES


# Mxfp4MoEMethod.create_weights, Marlin backend: "The moe marlin kernel requires that for each
# linear n % 256 == 0 and k % 128 == 0": ``round_up(intermediate_size_per_partition, 128)`` and
# ``round_up(hidden_size, 256)``; prepare_moe_fp4_layer_for_marlin repacks the values and the
# E8M0 scales in place of the originals (one copy each) and keeps the biases in bf16.
MXFP4_MARLIN_INTERMEDIATE_PADDING = 128
MXFP4_MARLIN_HIDDEN_PADDING = 256


def mxfp4_padded_expert_width(padding: int = MXFP4_TRITON_PADDING) -> sympy.Expr:
    """``p ceil(f_e / (p t))``: one rank's expert width as vLLM's MXFP4 experts hold it
    (p = 64 Triton, 128 Marlin)."""
    return padding * sympy.ceiling(moe_intermediate_size / (padding * tensor_parallel))


def mxfp4_marlin_hidden() -> sympy.Expr:
    """``256 ceil(h / 256)``: the hidden size of the Marlin backend's MXFP4 experts."""
    return MXFP4_MARLIN_HIDDEN_PADDING * sympy.ceiling(hidden_size / MXFP4_MARLIN_HIDDEN_PADDING)


def rotary_cache_bytes() -> sympy.Expr:
    """``P_rope d_rope beta_w``: the cos/sin cache, one buffer shared by every layer.

    vllm/model_executor/layers/rotary_embedding/base.py ``RotaryEmbedding.__init__``:
    ``cos_sin_cache`` of shape ``[max_position, rotary_dim]`` in the model dtype, kept
    once by ``get_rope``'s cache of instances. Scaled variants (linear, dynamic NTK,
    DeepSeek YaRN) hold ``max_position x scaling_factor`` rows.
    """
    return rotary_positions * rotary_dim * weight_bytes


def mla_absorbed_bytes() -> sympy.Expr:
    """``r_kv a (d_n + d_v) beta_w / t`` per MLA layer: the copy of ``kv_b_proj`` vLLM keeps.

    vllm/model_executor/layers/attention/mla_attention.py ``MLACommonImpl.
    process_weights_after_loading``: ``get_and_maybe_dequant_weights(kv_b_proj).T`` is a
    new tensor whose splits become ``W_UK_T`` and ``W_UV`` (views, kept for decode).
    """
    return kv_lora_rank * num_attention_heads * (qk_nope_head_dim + v_head_dim) * weight_bytes / tensor_parallel


def mla_v07_q_uk_bytes(query_rank: sympy.Expr, beta: sympy.Expr = weight_bytes) -> sympy.Expr:
    """``r_in a r_kv beta / t`` per MLA layer: vLLM 0.7's absorbed ``W_Q_UK``.

    vllm/attention/backends/mla/utils.py ``MLACommonImpl.process_weights_after_loading``
    (v0.7.1-v0.7.3: from vllm-project/vllm#12528 until #14770 removed it for v0.8.0;
    ``VLLM_MLA_PERFORM_MATRIX_ABSORPTION`` on by default):
    ``einsum("qnd,lnd -> qnl", W_Q, W_UK).flatten(start_dim=1).contiguous()``, ``[r_in, a r_kv]``
    (``r_in``: ``q_lora_rank``, or ``h`` when queries are not compressed), kept in the
    activation dtype (requantized to FP8 for FP8 checkpoints: ``beta`` 1).
    """
    return query_rank * num_attention_heads * kv_lora_rank * beta / tensor_parallel


def mla_v07_uv_o_bytes(beta: sympy.Expr = weight_bytes) -> sympy.Expr:
    """``a r_kv h beta / t`` per MLA layer: vLLM 0.7's absorbed ``W_UV_O``.

    Same function: ``einsum("lnd,hnd -> nlh", W_UV, W_O).flatten(start_dim=0, end_dim=1)
    .contiguous()``, ``[a r_kv, h]`` in the activation dtype (FP8: ``beta`` 1).
    """
    return num_attention_heads * kv_lora_rank * hidden_size * beta / tensor_parallel


def mla_v07_qr_bytes(query_rank: sympy.Expr) -> sympy.Expr:
    """``r_in a d_r beta_w / t`` per MLA layer: vLLM 0.7's ``W_QR``, the rope slice of ``q_proj``
    made contiguous and cast to the activation dtype (same function; never requantized)."""
    return query_rank * num_attention_heads * qk_rope_head_dim * weight_bytes / tensor_parallel


def profile_tokens() -> sympy.Expr:
    """``T_b``: tokens of V1's profile forward (``GPUModelRunner.profile_run`` ->
    ``_dummy_run(self.max_num_tokens)``, ``max_num_tokens = max_num_batched_tokens``)."""
    return max_num_batched_tokens


def sampler_requests() -> sympy.Expr:
    """``min(N_seq, T_b)``: requests of the dummy sampler (``GPUModelRunner.profile_run``)."""
    return sympy.Min(max_num_seqs, max_num_batched_tokens)


def dense_forward_peak(tokens: sympy.Expr = max_num_batched_tokens) -> sympy.Expr:
    """``T beta_a (2 h + 3 f / t)``: the largest dense layer's tensors during the forward.

    The residual stream and the normed input (``2 h`` per token), the MLP's merged
    gate/up output (``2 f / t``, ``MergedColumnParallelLinear``) and ``SiluAndMul``'s output
    (``f / t``) are alive together (vllm/model_executor/models/llama.py ``LlamaMLP``).
    """
    return tokens * activation_bytes * (2 * hidden_size + 3 * intermediate_size / tensor_parallel)


def moe_workspace(tokens: sympy.Expr = max_num_batched_tokens) -> sympy.Expr:
    """``T k beta_a (max(2 f_e / t, h) + f_e / t)``: the fused-MoE workspaces.

    vllm/model_executor/layers/fused_moe/fused_moe.py ``TritonExperts.workspace_shapes``:
    ``workspace13 = (M, topk, max(N, K))`` (the gate/up output and the down output share
    it) and ``workspace2 = (M, topk, N // 2)`` with ``N = 2 f_e / t``, ``K = h``. vLLM's
    workspace manager (vllm/v1/worker/workspace.py) keeps them after the forward.
    """
    width = sympy.Max(2 * moe_intermediate_size / tensor_parallel, hidden_size)
    return tokens * num_experts_per_tok * activation_bytes * (width + moe_intermediate_size / tensor_parallel)


def moe_forward_peak(tokens: sympy.Expr = max_num_batched_tokens) -> sympy.Expr:
    """``3 T h beta_a`` + the workspaces: an MoE layer's residual, input and output, at its peak."""
    return 3 * tokens * hidden_size * activation_bytes + moe_workspace(tokens)


def kept_hidden_states(tokens: sympy.Expr = max_num_batched_tokens) -> sympy.Expr:
    """``T h beta_a``: the forward's output, held by ``profile_run`` while the sampler runs."""
    return tokens * hidden_size * activation_bytes


def encoder_cache_bytes(tokens: sympy.Expr = max_num_batched_tokens) -> sympy.Expr:
    """``T_b h beta_a``: the dummy multimodal embeddings held through the profile run.

    vllm/v1/worker/gpu_model_runner.py ``GPUModelRunner.profile_run``: a model that takes
    multimodal inputs first runs its encoder on ``max_items_per_batch`` dummy items of the
    largest size (``MultiModalBudget``: ``encoder_compute_budget // max_tokens_per_item``,
    the budget ``max(max_num_encoder_input_tokens, max_tokens_per_item)`` and
    ``max_num_encoder_input_tokens`` = ``max_num_batched_tokens`` by default,
    vllm/v1/core/encoder_cache_manager.py ``compute_encoder_budget``), and keeps their
    embeddings (``self.encoder_cache["tmp"]``) until after the dummy forward and sampler.
    Uncertainty: the items fill the budget only to a multiple of the item's tokens
    (at most one item's tokens fewer; more when one item exceeds ``T_b``). The encoder's
    own forward peak (the vision tower on those items) is not modelled: it is taken not to
    exceed the decoder's dummy forward or the sampler, an assumption that can fail badly
    where the tower's attention is materialized (Kimi-VL's MoonViT under SDPA: users
    reported the dummy-image profiling allocating 7-64 GB, MoonshotAI/Kimi-VL#57).
    """
    return tokens * hidden_size * activation_bytes


def sampler_peak(float32_logits: bool = False) -> sympy.Expr:
    """``N (64 ceil(V/64) beta_a + 3 x 4 V)``: the dummy sampler's logits and temporaries.

    ``LogitsProcessor`` returns ``[N, V_pad]`` logits in the model dtype (sliced to ``V``);
    the sampler then holds :data:`SAMPLER_FLOAT32_COPIES` float32 ``[N, V]`` tensors
    (vllm/v1/worker/gpu_model_runner.py ``_dummy_sampler_run``). A float32 model's logits
    are already float32: ``logits.to(torch.float32)`` returns them, one copy fewer.
    """
    copies = SAMPLER_FLOAT32_COPIES - 1 if float32_logits else SAMPLER_FLOAT32_COPIES
    per_request = padded_vocab() * activation_bytes + copies * FLOAT32_BYTES * vocab_size
    return sampler_requests() * per_request


def kv_heads_per_worker() -> sympy.Expr:
    """``max(1, floor(a_kv / t))``: KV heads one tensor-parallel worker caches.

    vllm/config/model.py ``ModelConfig.get_num_kv_heads``; a head is replicated, not split,
    once ``t`` exceeds ``a_kv``.
    """
    return sympy.Max(1, sympy.floor(num_key_value_heads / tensor_parallel))


def attention_page_bytes() -> sympy.Expr:
    """``2 B_blk a_kv d beta_kv``: one block of one attention layer (full or sliding window).

    vllm/v1/kv_cache_interface.py ``AttentionSpec.page_size_bytes``:
    ``2 * block_size * num_kv_heads * head_size * get_dtype_size(dtype)``.
    """
    return 2 * block_size * kv_heads_per_worker() * head_dim * kv_cache_bytes


def mla_page_bytes() -> sympy.Expr:
    """``B_blk (r_kv + d_r) beta_kv``: one block of one MLA layer (``MLAAttentionSpec``:
    one latent "head" of ``kv_lora_rank + qk_rope_head_dim`` shared by K and V)."""
    return block_size * (kv_lora_rank + qk_rope_head_dim) * kv_cache_bytes


def num_gpu_blocks(available: sympy.Expr, page: sympy.Expr, layers_per_block: sympy.Expr) -> sympy.Expr:
    """``floor(available / (page x layers))``.

    vllm/v1/core/kv_cache_utils.py ``get_num_blocks``: ``available_memory // page_size //
    num_layers``, where a block spans one layer of every KV-cache group's ``group_size``.
    """
    return sympy.floor(available / (page * layers_per_block))


def kv_cache_tokens(blocks: sympy.Expr, num_groups: sympy.Expr) -> sympy.Expr:
    """``floor(blocks / groups) B_blk``: "GPU KV cache size" (``_report_kv_cache_config``)."""
    return sympy.floor(blocks / num_groups) * block_size


def full_attention_request_blocks() -> sympy.Expr:
    """``ceil(L_max / B_blk)``: blocks one request of ``max_model_len`` tokens needs in a
    full-attention group (``FullAttentionSpec.max_memory_usage_bytes``)."""
    return sympy.ceiling(max_model_len / block_size)


def sliding_window_request_blocks() -> sympy.Expr:
    """``ceil(min(w - 1 + T_b, L_max) / B_blk) + 1`` (``SlidingWindowSpec.max_memory_usage_bytes``).

    A sliding layer keeps the window plus the tokens of one scheduled chunk, and one more
    block because the window need not start on a block boundary.
    """
    tokens = sympy.Min(sliding_window - 1 + max_num_batched_tokens, max_model_len)
    return sympy.ceiling(tokens / block_size) + 1


def chunked_local_request_blocks() -> sympy.Expr:
    """``ceil(min(C_ch + T_b, L_max) / B_blk)`` (``ChunkedLocalAttentionSpec.max_memory_usage_bytes``).

    A chunked-attention layer keeps at most the computed tokens of the current chunk plus
    the tokens of one scheduled step; unlike the sliding window, no extra block.
    """
    tokens = sympy.Min(attention_chunk_size + max_num_batched_tokens, max_model_len)
    return sympy.ceiling(tokens / block_size)


def max_concurrency(blocks: sympy.Expr, request_blocks: sympy.Expr) -> sympy.Expr:
    """``blocks / blocks per request``: "Maximum concurrency for L tokens per request".

    vllm/v1/core/kv_cache_utils.py ``get_max_concurrency_for_kv_cache_config``:
    ``num_blocks / cdiv(max_memory_usage_per_request, memory_per_block)``; with
    ``group_size`` layers per group both sides carry the same factor, which cancels.
    """
    return blocks / request_blocks
