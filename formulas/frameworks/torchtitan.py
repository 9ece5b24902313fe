"""What torchtitan allocates per GPU: the ``torchtitan`` profile.

Read off pytorch/torchtitan at b5bcd76c (2026-08-21): the Llama-3 block
(``torchtitan/models/llama3/model.py``, ``models/common/attention.py`` ``QKVLinear``,
``models/common/feed_forward.py``, ``models/common/rope.py``), FSDP2 as
``torchtitan/distributed/fsdp.py`` ``apply_fsdp_to_decoder`` applies it (parameters kept in
fp32 and sharded, ``MixedPrecisionPolicy(param_dtype=bfloat16, reduce_dtype=float32)`` from
``config/configs.py`` ``mixed_precision_param`` / ``mixed_precision_reduce``), the loss
(``components/loss.py`` ``cross_entropy_loss``: ``pred.float()``), activation checkpointing
(``distributed/activation_checkpoint.py``) and the pipeline split
(``distributed/pipeline_parallel.py``). What each op saves for backward is PyTorch's
(``tools/autograd/derivatives.yaml``); torchao's ``Float8Linear``
(``torchao/float8/float8_linear.py``, pytorch/ao at 36027d82) saves its high-precision input
and weight (``ctx.save_for_backward(input_hp, weight_hp_t)``), so float8 linears save what
bf16 ones do.

Every row below is bytes per token of one layer on one GPU before tensor parallelism (with
TP torchtitan shards every row with sequence parallelism: ``/ t``).
"""

from __future__ import annotations

import sympy

from formulas.symbols import (
    activation_bytes,
    batch_size,
    head_dim,
    hidden_size,
    intermediate_size,
    num_attention_heads,
    num_key_value_heads,
    seq_len,
    vocab_size,
)

FP32_BYTES = 4  # fp32: FSDP2 sharded parameters, reduce dtype, RMSNorm rstd, SDPA logsumexp, the loss
FP8_BYTES = 1  # float8 e4m3 all-gather (torchao WeightWithDynamicFloat8CastTensor)
# config/configs.py ParallelismConfig: the first and last stages count the embedding and the
# norm + output as one layer each when splitting (pipeline_parallel_first/last_stage_less_layers).
FIRST_STAGE_LESS_LAYERS = 1
LAST_STAGE_LESS_LAYERS = 1
AC_MODES = ("none", "op", "full")


def block_saved(recompute: str, compiled: bool = False) -> sympy.Expr:
    """Bytes per token one Llama-3 block keeps for backward.

    ``none``: both RMSNorms' inputs (``beta_a h``) and fp32 ``rstd`` (4), their outputs (the
    linears' shared input), SDPA's q, k, v and output and fp32 logsumexp (``4 a``; RoPE saves
    only its frequency table), and SwiGLU's ``w1``/``w3`` outputs, ``silu``'s output and the
    product ``w2`` reads (``4 beta_a f``): ``beta_a (4 h + 2 a d + 2 a_kv d + 4 f) + 8 + 4 a``.

    ``op`` (``SelectiveAC``): the block's input plus what the policy must save: every other
    matmul's output (``wq``, ``wv``, ``w1``, ``w2`` of the seven in order), SDPA's outputs:
    ``beta_a (2 h + 2 a d + a_kv d + f) + 4 a``.

    ``full`` (``FullAC``): the block's input ``beta_a h``.

    ``compiled`` (``compile.enable``: ``distributed/compile.py`` ``apply_compile`` compiles
    each TransformerBlock, ``fullgraph=True``): without AC inductor's min-cut partitioner
    (torch/_functorch/partitioners.py ``min_cut_rematerialization_partition``) recomputes the
    SwiGLU product in backward, ``beta_a f`` fewer (the partition torch 2.13 makes of a Llama
    layer, tests/fixtures/compile_saved_cpu.json); under ``op`` and ``full`` the policy's
    ``MUST_SAVE`` / ``PREFER_RECOMPUTE`` marks decide the partition, so nothing changes.
    """
    h, f, q, kv = hidden_size, intermediate_size, num_attention_heads * head_dim, num_key_value_heads * head_dim
    lse = FP32_BYTES * num_attention_heads
    if recompute == "full":
        return activation_bytes * h
    if recompute == "op":
        return activation_bytes * (2 * h + 2 * q + kv + f) + lse
    if recompute == "none":
        swiglu = (3 if compiled else 4) * f
        return activation_bytes * (2 * h + 2 * h + 2 * q + 2 * kv + swiglu) + 2 * FP32_BYTES + lse
    raise ValueError(f"unknown recompute mode {recompute!r}; torchtitan has {', '.join(AC_MODES)}")


def loss_saved() -> sympy.Expr:
    """Bytes per token of this GPU's vocabulary shard the loss keeps: ``cross_entropy``'s fp32
    log-softmax of ``pred.float()`` (``4 V``; loss parallel keeps it sharded over tensor ranks)."""
    return FP32_BYTES * vocab_size


def final_norm_saved() -> sympy.Expr:
    """Bytes per token of this GPU's sequence shard the final RMSNorm keeps: its input and fp32
    ``rstd`` (``nn.RMSNorm`` -> ``torch.rms_norm``; the norm runs outside the compiled blocks, so
    this holds with ``--compile`` too): ``beta_a h + 4``."""
    return activation_bytes * hidden_size + FP32_BYTES


def head_input_saved() -> sympy.Expr:
    """Bytes per token of the *whole* sequence (``b s / N_c``) the output projection keeps: its
    input, the final norm's output, ``beta_a h``. Under TP the plan's ``ColwiseParallel(
    input_layouts=Shard(1))`` all-gathers it over the sequence first, so it is not divided by
    ``t`` (torchtitan ``apply_tp``; torch ``ColwiseParallel._prepare_input_fn`` redistributes to
    ``Replicate``; ``mm`` saves the gathered input)."""
    return activation_bytes * hidden_size


def loss_backward(loss_parallel: bool = False) -> sympy.Expr:
    """Bytes per token made at the start of backward, while the saved log-softmax lives.

    Without TP: ``nll_loss``'s fp32 gradient and ``_log_softmax_backward_data``'s fp32 result
    (``8 V``); the cast back to ``beta_a`` comes after the first is freed (``4 V + beta_a V`` is
    less). torchtitan deletes ``pred`` before ``loss.backward()`` (``train.py``).

    With loss parallel (TP: the logits sharded over the vocabulary, ``loss_parallel()``):
    ``torch/distributed/tensor/parallel/loss.py`` ``_nll_loss_and_log_softmax_backward`` does
    both backwards at once, ``grad_input = zeros_like(x)`` then ``(grad_input + torch.exp(x)) *
    grad_output``: the zeros, ``exp(x)`` and their sum are alive together (``12 V``); the product
    takes ``exp``'s freed block (``_log_softmax_backward_handler`` only casts)."""
    return (3 if loss_parallel else 2) * FP32_BYTES * vocab_size


def compiled_loss_saved() -> sympy.Expr:
    """Bytes per token of the vocabulary shard the *compiled* loss keeps (``compile.components``
    with ``"loss"``, torchtitan's default: ``components/loss.py`` ``_maybe_compile``): inductor's
    partition of ``cross_entropy(pred.float())`` saves ``pred`` itself (``beta_a V``; ``del pred``
    frees nothing then) and two fp32 values per token (``amax``, ``log`` of the sum:
    ``compiled_loss_stats``), no fp32 copy (the graph torch 2.13 makes, tools/measure/titan_loss.py)."""
    return activation_bytes * vocab_size


def compiled_loss_stats() -> sympy.Expr:
    """Bytes per token (of the whole sequence) the compiled loss saves beside ``pred``: fp32
    ``amax`` and ``log(sum(exp))``."""
    return 2 * FP32_BYTES


def compiled_loss_backward() -> sympy.Expr:
    """Bytes per token of the vocabulary shard the compiled loss's backward makes: one fused
    kernel writes the logits' gradient in ``beta_a`` (the graph's last ``convert_element_type``)."""
    return activation_bytes * vocab_size


def compiled_loss_parallel_saved() -> sympy.Expr:
    """Bytes per token of the vocabulary shard torchtitan's TP loss keeps when compiled
    (``components/loss.py`` ``_LossParallelCrossEntropy`` under ``torch.compile``): the
    partitioner moves ``grad_input + exp(log_probs)``, which does not depend on the incoming
    gradient, into the forward and saves it in fp32 (``4 V``)."""
    return FP32_BYTES * vocab_size


def compiled_loss_parallel_forward() -> sympy.Expr:
    """Bytes per token of the vocabulary shard beside that saved sum at the compiled TP loss's
    forward peak: ``pred`` (``beta_a V``) and the fp32 one-hot buffer ``index_put`` fills
    (``4 V``); both are freed before backward, whose bf16 gradient (``compiled_loss_backward``)
    fits in their blocks. 10 B per token and vocabulary entry measured on CPU."""
    return (activation_bytes + FP32_BYTES) * vocab_size


def logits_hole() -> sympy.Expr:
    """Bytes per token reserved but free at the start of backward: ``pred`` (``beta_a V``).

    The loss allocates ``pred`` (``beta_a V``), its fp32 copy (``4 V``) and the log-softmax
    (``4 V``) in that order; the copy is freed after the loss and ``pred`` by ``del pred``
    (``train.py``), one free block of ``(beta_a + 4) V`` below the saved log-softmax. Best fit
    (``CUDACachingAllocator.cpp`` ``get_free_block``) puts the first fp32 gradient (``4 V``) in
    it; the second no longer fits and the segment grows (expandable segments map pages at its
    end): ``beta_a V`` per token stays reserved with nothing in it. With loss parallel the
    three-way backward above fills the same way and leaves the same block."""
    return activation_bytes * vocab_size


def head_backward(tokens_per_gpu: sympy.Expr, head_parameters: sympy.Expr) -> sympy.Expr:
    """Bytes beside the saved activations while ``[norm, lm_head]`` runs its backward: the
    logits' gradient in ``beta_a`` (``beta_a V`` per token of this GPU) is alive
    with the head's unsharded weight gradient in ``beta_a`` and the fp32 reduce-scatter copy
    FSDP2 makes of it (``(beta_a + 4) V h`` elements' bytes: ``head_parameters``)."""
    return activation_bytes * vocab_size * tokens_per_gpu + (activation_bytes + FP32_BYTES) * head_parameters


def tokens() -> sympy.Expr:
    return batch_size * seq_len


def stage_layers(num_layers: int, stages: int) -> list[int]:
    """Transformer layers of each stage as ``_generate_llm_fqn_per_model_part`` splits them:
    ``L + 2`` effective layers (the embedding and the norm + output count one each) over the
    stages, the remainder to the first ones, the embedding's and the output's share taken
    off the first and the last."""
    if stages == 1:
        return [num_layers]
    effective = num_layers + FIRST_STAGE_LESS_LAYERS + LAST_STAGE_LESS_LAYERS
    per_stage, extra = divmod(effective, stages)
    counts = [per_stage + (1 if i < extra else 0) for i in range(stages)]
    counts[0] -= FIRST_STAGE_LESS_LAYERS
    counts[-1] -= LAST_STAGE_LESS_LAYERS
    return counts


def first_stage_layers(num_layers: int, ranks: int, virtual: int = 1) -> int:
    """Layers pipeline rank 0 holds: its stages 0, p, 2p, ... of ``p v`` (torchtitan places
    virtual stage ``i`` on rank ``i % p``: ``pipeline_parallel.py`` ``_get_pp_rank_to_stage_indices_mapping``
    for the loop-style interleaved schedules)."""
    counts = stage_layers(num_layers, ranks * virtual)
    return sum(counts[::ranks])


def fsdp_parameter_shard(trained: sympy.Expr, shard: sympy.Expr) -> sympy.Expr:
    """fp32 parameters, sharded over the FSDP degree: ``4 P / N_d``."""
    return FP32_BYTES * trained / shard


def fsdp_gradient_shard(trained: sympy.Expr, shard: sympy.Expr) -> sympy.Expr:
    """Sharded gradients in the parameters' dtype (fp32, reduce-scattered in fp32): ``4 P / N_d``."""
    return FP32_BYTES * trained / shard


def reduce_scatter_block(block_parameters: sympy.Expr) -> sympy.Expr:
    """One block's unsharded gradients in backward: ``beta_a`` from autograd, and the fp32
    reduce-scatter input ``foreach_reduce`` casts them to (``reduce_dtype=float32``)."""
    return (activation_bytes + FP32_BYTES) * block_parameters


def all_gather_pool(held: sympy.Expr, gathered: sympy.Expr, shard_degree: sympy.Expr) -> sympy.Expr:
    """Bytes the all-gather copy-in stream's pool keeps while unit ``gathered`` is all-gathered
    and the previous unit's output (``held``) still lives.

    FSDP2 allocates each unit's flat all-gather output (its unsharded parameters, ``param_dtype``,
    fp8 for float8-gathered linears) on ``all_gather_copy_in_stream`` with the shards cast to
    ``param_dtype`` in one flat buffer beside it (``_fsdp_collectives.py`` ``foreach_all_gather``,
    ``_get_param_all_gather_inputs``: ``gathered / N_d``), and holds the previous unit's output
    until this copy-in has been made (``FSDPParamGroup.wait_for_unshard``:
    ``comm_ctx.all_gather_state``). The caching allocator never lends one stream's blocks to
    another (``get_free_block`` matches the stream), so the pool stays reserved."""
    return held + gathered + gathered / shard_degree


def reduce_scatter_pool(gradient_shards: sympy.Expr) -> sympy.Expr:
    """Bytes the reduce-scatter stream's pool keeps: every fp32 gradient shard.

    ``foreach_reduce`` allocates the reduce-scatter output on ``reduce_scatter_stream`` and the
    sharded gradient is a view of it ("The RS output is allocated in the RS stream and used in
    the default stream"); ``optimizers.zero_grad()`` frees them before the next forward, back
    into that stream's pool, which the forward and the loss (default stream) cannot use."""
    return gradient_shards


def pp_buffers(stage_output: sympy.Expr, in_flight: sympy.Expr, microbatches: sympy.Expr,
               local_stages: int) -> sympy.Expr:
    """Bytes ``torch.distributed.pipelining`` keeps on the first pipeline rank besides the saved
    activations (``stage.py`` ``_PipelineStageBase``), in units of one stage output
    (``beta_a h b s / (t N_c)``): each in-flight micro-batch's output of each local stage
    (``fwd_cache``, for ``stage_backward``; nothing in the stage saves it), one receive buffer
    per micro-batch and local stage for the output's gradient (``_create_grad_recv_info``,
    allocated once for all micro-batches) and, for the rank's later stages, for the input
    (``_create_act_recv_info``). An in-flight input buffer is what that stage's first block
    saves, already in the activations: ``in_flight (v - 1)`` of them are not counted twice."""
    recv = (2 * local_stages - 1) * microbatches
    return stage_output * (in_flight + recv)
