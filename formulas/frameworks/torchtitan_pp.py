"""What the pipeline ranks after the first allocate under torchtitan's pipeline parallelism:
the last rank, and rank 1 for the ranks between.

torchtitan's benchmarks report "the maximum across all GPUs" ("Different PP ranks can have
different peak memory usages": ``benchmarks/llama3_h100_202412_torchtitan.md``, footnote 1),
and the first rank (:mod:`formulas.frameworks.torchtitan`) is not always that maximum: the
last rank runs the output projection and the loss for every micro-batch, and
``torch.distributed.pipelining`` keeps each micro-batch's stage output until the step ends.
Read off ``torch/distributed/pipelining`` of torch 2.6.0 (git 2236df17), the release nearest
the torch 1963fc8 (2024-12-23) the benchmarks ran:

- ``stage.py`` ``_PipelineStageBase.forward_one_chunk`` appends every micro-batch's output to
  ``self.output_chunks`` on every stage (``get_fwd_send_ops`` reads the output from it), and
  only ``clear_runtime_states``, at the start of the next ``step()``, empties it. On the last
  stage that output is the model's: the logits (``Transformer.forward``: ``self.output(h)``,
  bf16 under FSDP2's ``param_dtype``; torchtitan 9dec370 casts them in the loss,
  ``pred.flatten(0, 1).float()``), a vocabulary shard under loss parallel (``apply_tp``:
  ``ColwiseParallel(output_layouts=Shard(-1), use_local_output=False)``);
- ``schedules.py`` ``PipelineScheduleSingle.step`` / ``PipelineScheduleMulti.step`` return
  ``self._merge_outputs(stage.output_chunks)`` on the last stage: ``microbatch.py``
  ``merge_chunks`` ``torch.cat``\\s every micro-batch's logits into a new tensor while the
  chunks still live (torchtitan's ``train.py`` drops the result);
- ``_backward.py`` ``stage_backward`` reads the input gradients as ``val.grad`` of the receive
  buffers (leaves, ``requires_grad_(True)``): each stays in ``.grad`` until
  ``clear_runtime_states`` sets it to ``None``;
- ``Schedule1F1B._step_microbatches``: the last stage warms up with one micro-batch
  (``min(n, num_stages - stage_index)``), so each of its forwards is followed by that
  micro-batch's backward; ``ScheduleInterleaved1F1B._get_warmup_ops``: the last rank warms up
  with ``(v - 1) * microbatches_per_round`` forwards, every micro-batch of its earlier local
  stages, then alternates one forward and one backward of its last stage.

Later torch keeps ``output_chunks`` on the last stage only (pytorch/pytorch#153383, May 2025) and
lets the caller keep none (``step(return_outputs=False)``, after pytorch/pytorch#159251; torchtitan
b5bcd76c ``trainer.py`` passes it): :func:`output_chunks` and :func:`merged_output` are the
torch of the benchmarks', 2024 to early 2025.

Units: ``stage_output`` is one micro-batch's stage output (``beta_a h b s / (t N_c)``), ``n``
the micro-batches (torchtitan's default ``pipeline_parallel_microbatches`` = ``p``:
``pipeline_llama.py`` / ``pipelining_utils.py`` ``build_pipeline_schedule`` at 9dec370).
"""

from __future__ import annotations

import sympy

from formulas.frameworks.torchtitan import stage_layers
from formulas.symbols import activation_bytes, vocab_size


def rank_stages(num_layers: int, ranks: int, virtual: int, rank: int) -> list[int]:
    """Transformer layers of pipeline rank ``rank``'s local stages ``rank, rank + p, ...`` (loop
    style: ``stage_ids_this_rank``), in schedule order."""
    return stage_layers(num_layers, ranks * virtual)[rank::ranks]


def in_flight_layers(num_layers: int, ranks: int, virtual: int, rank: int) -> int:
    """Layer-micro-batches whose activations rank ``rank`` holds at its first backward, with
    ``n = p`` micro-batches. 1F1B (``Schedule1F1B``): ``min(n, p - rank)`` warm-up forwards, then
    a backward first. Interleaved 1F1B (``_get_1f1b_rank_ops``): ``min((v - 1) n + 2 (p - 1 -
    rank), n v)`` warm-up forwards in rounds of ``n`` per local stage (``forward_stage_index``),
    then one forward before each backward. On the last rank this is also what lives at its last
    micro-batch's loss: the earlier local stages' backwards all come after it (cooldown)."""
    stages, n = rank_stages(num_layers, ranks, virtual, rank), ranks
    if virtual == 1:
        return min(n, ranks - rank) * stages[0]
    warmup = min((virtual - 1) * n + 2 * (ranks - 1 - rank), n * virtual)
    forwards = warmup + (1 if warmup < n * virtual else 0)
    return sum(stages[(op // n) % virtual] for op in range(forwards))


def middle_rank_buffers(stage_output: sympy.Expr, microbatches: sympy.Expr, local_stages: int) -> sympy.Expr:
    """Pipelining buffers on a rank between the first and the last at its first backward, in
    stage outputs: per local stage the ``n`` gradient receive buffers (``_create_grad_recv_info``)
    and ``n`` input receive buffers (``_create_act_recv_info``); the in-flight micro-batches'
    outputs (``output_chunks``) stand for the input buffers that are their first blocks' saved
    inputs, counted with the activations: ``2 v n``."""
    return stage_output * 2 * local_stages * microbatches


def logits_kept() -> sympy.Expr:
    """Bytes per token (of this GPU's vocabulary shard) of one micro-batch's logits the last
    stage keeps in ``output_chunks``: ``pred`` in ``beta_a`` (``beta_a V``)."""
    return activation_bytes * vocab_size


def output_chunks(logits: sympy.Expr, microbatches: sympy.Expr) -> sympy.Expr:
    """Every micro-batch's logits, kept in ``output_chunks`` to the end of the step: ``n`` of them
    by the last micro-batch's loss."""
    return microbatches * logits


def merged_output(logits: sympy.Expr, microbatches: sympy.Expr) -> sympy.Expr:
    """``merge_chunks``' ``torch.cat`` of the ``n`` kept logits at the end of ``step()``: a copy
    beside them."""
    return microbatches * logits


def last_rank_buffers(stage_output: sympy.Expr, microbatches: sympy.Expr, local_stages: int) -> sympy.Expr:
    """Pipelining buffers on the last rank at its last micro-batch's loss backward, in stage
    outputs: ``n - 1`` input receive buffers of the last stage whose micro-batches are done (the
    in-flight one is its first block's saved input, counted there), the ``n - 1`` input
    gradients their backwards left in ``.grad``, and for each earlier local stage the ``n``
    outputs in ``output_chunks`` and the ``n`` gradient receive buffers (``_create_grad_recv_info``).
    Those stages' input buffers are their in-flight micro-batches' saved inputs."""
    return stage_output * (2 * (microbatches - 1) + 2 * (local_stages - 1) * microbatches)


def step_end_buffers(stage_output: sympy.Expr, microbatches: sympy.Expr, local_stages: int) -> sympy.Expr:
    """The same buffers once every backward is done (``merge_chunks``' moment): ``n`` input
    receive buffers and ``n`` retained input gradients per local stage (none is the first), and
    the earlier local stages' ``n`` outputs and ``n`` gradient receive buffers each."""
    return stage_output * microbatches * (2 * local_stages + 2 * (local_stages - 1))
