"""What DeepSpeed's ZeRO optimizers allocate per GPU: the ``deepspeed`` profile.

Read off ``deepspeed/runtime/zero/stage_1_and_2.py`` (``DeepSpeedZeroOptimizer``) and
``deepspeed/runtime/zero/stage3.py`` (``DeepSpeedZeroOptimizer_Stage3``), deepspeedai/DeepSpeed
at edaa7221 (2026-08-22), with the defaults of ``deepspeed/runtime/zero/config.py``
(``DeepSpeedZeroConfig``). ``P`` is what one GPU trains before ZeRO partitions it, ``N_d``
the data-parallel degree; the model is bf16/fp16 (``beta_w = beta_g = 2``, the engine's
``grad_accum_dtype`` defaults to the model dtype: ``engine.py`` ``get_data_types``).

=====================  =========================  ============================================
buffer                 stages 1 / 2               stage 3
=====================  =========================  ============================================
16-bit parameters      ``2 P`` (``bit16_groups``) ``2 P / N_d`` (``fp16_partitioned_groups_flat``)
16-bit gradients       stage 1: ``2 P`` (``.grad``  ``2 P / N_d`` (``grad_partitions_flat_buffer``,
                       until reduced); stage 2:   allocated at init; on the CPU with
                       ``2 P / N_d`` (``grads_in_  ``offload_optimizer``)
                       partition``, from backward)
fp32 gradients         ``4 P / N_d`` in ``step``  ``4 min(sub_group_size, P / N_d)``
                       (``single_grad_partition``) (``initialize_optimizer_states``'s buffer)
fp32 master, moments   ``(4 + beta_o) P / N_d``   ``(4 + beta_o) P / N_d``
reduce bucket          ``reduce_bucket_size`` elements, twice with ``overlap_comm``
gathered parameters    none                       the largest module + ``prefetch_bucket_size``
=====================  =========================  ============================================

ZeRO-Offload (``offload_optimizer``, Ren et al. 2021, arXiv:2101.06840, sec. 4) puts the
fp32 master, the moments and the fp32 gradients on the CPU, where the step runs; stage 3
also its 16-bit gradient partition. ``offload_param`` (ZeRO-Infinity) puts the 16-bit
parameter partition there.
"""

from __future__ import annotations

import sympy

from formulas.symbols import data_parallel, gradient_bytes, optimizer_bytes, weight_bytes

# deepspeed/runtime/zero/config.py, DeepSpeedZeroConfig defaults (elements, not bytes):
REDUCE_BUCKET_SIZE = 500_000_000  # reduce_bucket_size: gradients reduced at a time (the ipg buffer)
ALLGATHER_BUCKET_SIZE = 500_000_000  # allgather_bucket_size: stage 1/2 gather updated partitions in place, no buffer
PREFETCH_BUCKET_SIZE = 50_000_000  # stage3_prefetch_bucket_size: parameters fetched ahead of use
MAX_LIVE_PARAMETERS = 1_000_000_000  # stage3_max_live_parameters: cap on gathered parameters kept
PARAM_PERSISTENCE_THRESHOLD = 100_000  # stage3_param_persistence_threshold: smaller tensors stay gathered
SUB_GROUP_SIZE = 1_000_000_000  # sub_group_size: stage 3 optimizer step tile
# DeepSpeedZeroConfig.overlap_comm_valid: overlap_comm defaults to True for stage 3 only;
# with it, stage 1/2 allocate two ipg buffers (stage_1_and_2.py, "double buffers"), stage 3 one.
CONTIGUOUS_GRADIENTS = True  # contiguous_gradients default
IPG_BUFFERS = {1: 1, 2: 1, 3: 1}  # stage -> ipg buffers with the default overlap_comm
FP32_BYTES = 4  # single_partition_of_fp32_groups / fp32_partitioned_groups_flat dtype


def parameters16(stage: int, P: sympy.Expr) -> sympy.Expr:
    """16-bit parameters one GPU keeps: ``beta_w P``, ``beta_w P / N_d`` at stage 3."""
    return weight_bytes * P / (data_parallel if stage == 3 else 1)


def gradients16(stage: int, P: sympy.Expr) -> sympy.Expr:
    """16-bit gradients: stage 1 keeps every ``.grad`` until the reduction after backward;
    stages 2 and 3 keep this rank's partition (``grads_in_partition`` /
    ``grad_partitions_flat_buffer``)."""
    return gradient_bytes * P / (1 if stage == 1 else data_parallel)


def gradients32(stage: int, P: sympy.Expr, offload: bool) -> sympy.Expr:
    """fp32 gradients of this rank's partition: ``4 P / N_d`` (stages 1-2 build it in
    ``step``; offloaded, ``initialize_optimizer_states`` pins it on the CPU). Stage 3 on the GPU
    keeps one buffer of the largest sub-group: ``4 min(sub_group_size, P / N_d)``."""
    partition = P / data_parallel
    if stage == 3 and not offload:
        return FP32_BYTES * sympy.Min(SUB_GROUP_SIZE, partition)
    return FP32_BYTES * partition


def master_weights(P: sympy.Expr) -> sympy.Expr:
    """fp32 master partition (``single_partition_of_fp32_groups`` / ``fp32_partitioned_groups_flat``)."""
    return FP32_BYTES * P / data_parallel


def optimizer_state(P: sympy.Expr) -> sympy.Expr:
    """Optimizer state of this rank's fp32 partition: ``beta_o P / N_d``."""
    return optimizer_bytes * P / data_parallel


def reduce_buckets(stage: int) -> sympy.Expr:
    """The ipg buffer gradients are copied into before their reduction: ``reduce_bucket_size``
    16-bit elements, a fixed size whatever the model. Stages 1-2 allocate a second one only
    with ``overlap_comm``, which defaults off there (:data:`IPG_BUFFERS`)."""
    if not CONTIGUOUS_GRADIENTS:
        return sympy.Integer(0)
    return gradient_bytes * REDUCE_BUCKET_SIZE * IPG_BUFFERS[stage]


def gathered_parameters(largest_module: sympy.Expr, persistent: sympy.Expr,
                        parameters: sympy.Expr | None = None) -> sympy.Expr:
    """Stage 3's full parameters alive at once: the module running (the largest one bounds
    it), what the prefetcher fetched ahead (``prefetch_bucket_size`` elements, within
    ``max_live_parameters``, and no more than the ``parameters`` it gathers on demand: a
    model smaller than the bucket), and the tensors below ``param_persistence_threshold``
    that stay gathered on every rank (``persistent``, elements)."""
    ahead = sympy.Min(PREFETCH_BUCKET_SIZE, sympy.Max(0, MAX_LIVE_PARAMETERS - largest_module))
    if parameters is not None:
        ahead = sympy.Min(ahead, sympy.Max(0, parameters - persistent - largest_module))
    return weight_bytes * (largest_module + ahead + persistent)


def gathered_gradients(largest_module: sympy.Expr) -> sympy.Expr:
    """Stage 3: a module's full 16-bit gradients exist until its reduce-scatter, the largest
    module's at most (DeepSpeed's estimator counts these and the gathered parameters as
    ``4 largest_layer_params``)."""
    return gradient_bytes * largest_module
