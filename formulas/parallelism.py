"""Per-GPU shares under tensor, pipeline, expert, context and data (ZeRO) parallelism.

memsym reports the most loaded rank: the first pipeline stage (it holds the embedding and
the most in-flight activations), as Megatron-LM's ``theoretical_memory_usage.py`` does.

Tensor parallelism (Shoeybi et al. 2019, arXiv:1909.08053) splits the attention heads,
the MLP width, the (vocab-parallel) embedding and the output head over ``t`` GPUs; norms,
routers and position tables are replicated (each tensor's ``parallel``, set where it is
defined: formulas/parameters.py and the layer kinds in formulas/layers/). Expert parallelism splits the routed experts
over ``N_e``; shared experts are replicated. Pipeline parallelism gives each stage
``L / p`` layers. Context parallelism splits the sequence over ``N_c``.
"""

from __future__ import annotations

import sympy

from formulas.parameters import WeightTensor
from formulas.symbols import (
    context_parallel,
    data_parallel,
    expert_parallel,
    num_key_value_heads,
    pipeline_parallel,
    tensor_parallel,
    virtual_pipeline,
)

NOT_PER_LAYER = {"embedding", "lm_head"}
ZERO_STAGES = (0, 1, 2, 3)
# FSDP's default backward_prefetch=BACKWARD_PRE all-gathers the next unit while the
# current one computes: two layers' full parameters are alive at once (torch.distributed.fsdp).
ZERO3_LIVE_LAYERS = 2


def is_per_layer(tensor: WeightTensor) -> bool:
    return tensor.component not in NOT_PER_LAYER and tensor.name != "norm/final"


def gpu_share(tensor: WeightTensor, first_stage: bool = True) -> sympy.Expr:
    """Fraction of ``tensor`` one GPU of the first pipeline stage holds.

    ``tensor.parallel`` (set by the layer kind that owns it, formulas/layers/) says which
    degrees split it: ``tensor`` over ``t``, ``expert`` over ``N_e`` and ``t``.
    """
    share = sympy.Integer(1)
    if tensor.parallel in ("tensor", "expert"):
        share /= tensor_parallel
    if tensor.parallel == "expert":
        share /= expert_parallel
    if is_per_layer(tensor):
        share /= pipeline_parallel
    return share


def on_first_stage(tensor: WeightTensor, pipelined: bool) -> bool:
    """Megatron's first stage holds the embedding and its layers; the head and final norm
    live on the last stage once there is more than one."""
    return not (pipelined and (tensor.component == "lm_head" or tensor.name == "norm/final"))


def kv_heads_per_gpu() -> sympy.Expr:
    """KV heads one tensor-parallel rank caches: ``ceil(a_kv / t)``.

    When ``t`` exceeds ``a_kv`` each KV head is replicated so every rank holds one
    (Megatron-LM and vLLM replicate KV heads rather than split a head).
    """
    return sympy.ceiling(num_key_value_heads / tensor_parallel)


def pipeline_in_flight() -> sympy.Expr:
    """Micro-batches whose activations the first stage holds, in units of ``p`` stages'
    layers: 1F1B holds ``p`` micro-batches of ``L/p`` layers, i.e. ``L`` layers' worth;
    the interleaved schedule adds ``1 + (p - 1) / (p v)`` (Narayanan et al. 2021,
    arXiv:2104.04473; Megatron-LM's ``interleaved_schedule_memory_penalty``)."""
    p, v = pipeline_parallel, virtual_pipeline
    return p * (1 + (p - 1) / (p * v))


def sequence_share() -> sympy.Expr:
    """Fraction of the sequence one context-parallel rank holds: ``1 / N_c``."""
    return 1 / context_parallel


def zero_partition(stage: int, what: str) -> sympy.Expr:
    """Fraction of model state one data-parallel rank keeps under ZeRO (Rajbhandari et al.
    2020, arXiv:1910.02054, section 5): stage 1 partitions optimizer state (and the fp32
    master copy), stage 2 also gradients, stage 3 also parameters, each over ``N_d``."""
    first_stage = {"optimizer": 1, "master_weights": 1, "gradients": 2, "weights": 3}[what]
    return 1 / data_parallel if stage >= first_stage else sympy.Integer(1)


def megatron_first_stage_layers(num_layers: int, stages: int) -> int | None:
    """Transformer layers on Megatron-LM's first stage when ``stages`` does not divide
    ``num_layers``: the split with ``--account-for-embedding-in-pipeline-split`` and
    ``--account-for-loss-in-pipeline-split`` (the embedding and the loss count as one layer
    each; ``megatron/core/transformer/transformer_block.py`` ``get_num_layers_to_build``), else
    with the embedding's alone; None when neither divides (Megatron then needs
    ``--decoder-first-pipeline-num-layers``)."""
    for extra in (2, 1):  # embedding and loss, then the embedding only
        if (num_layers + extra) % stages == 0:
            return (num_layers + extra) // stages - 1
    return None
