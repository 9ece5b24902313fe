"""What PyTorch DDP and FSDP1 allocate per GPU when HF Trainer / accelerate train with them.

Read off torch 2.13 (``torch/nn/parallel/distributed.py``, ``torch/distributed/fsdp/
_flat_param.py``, ``_runtime_utils.py``) with the defaults accelerate 1.15 and transformers
5.24 pass (``accelerate/utils/dataclasses.py`` ``DistributedDataParallelKwargs`` and
``FullyShardedDataParallelPlugin.__post_init__``; ``transformers/training_args.py``
``_process_fsdp_args``). ``N_d`` is the data-parallel degree; element counts come in as
expressions (the transformers profile counts them from the model's tensors).

DDP: every rank keeps the whole model, its gradients and the optimizer state, plus the
reducer's gradient buckets. FSDP1 (``FULL_SHARD`` = ``--zero 3``, ``SHARD_GRAD_OP`` =
``--zero 2``): one ``FlatParameter`` per wrapped unit (the root: embeddings, final norm,
``lm_head``; one per decoder layer, transformers' ``_no_split_modules`` auto-wrap), each
sharded into ``ceil(numel / N_d)`` elements; the unit running is all-gathered into a full
copy in the compute dtype (``MixedPrecision.param_dtype``) and freed again as the
strategy says (FULL_SHARD after forward and after backward, SHARD_GRAD_OP after backward
only; the root never after forward: ``_runtime_utils.py`` ``_post_forward_reshard``).
"""

from __future__ import annotations

import sympy

from formulas.frameworks.deepspeed import FP32_BYTES
from formulas.symbols import activation_bytes, data_parallel, gradient_bytes, weight_bytes

# torch/nn/parallel/distributed.py: _DEFAULT_BUCKET_CAP_MB (bucket_cap_mb None -> 25 MiB;
# TrainingArguments.ddp_bucket_cap_mb defaults to None, DistributedDataParallelKwargs to 25).
DDP_BUCKET_CAP_MB = 25
# accelerate DistributedDataParallelKwargs.gradient_as_bucket_view default: the buckets are
# their own storage, .grad another (torch/csrc/distributed/c10d/reducer.cpp Reducer::initialize_buckets).
GRADIENT_AS_BUCKET_VIEW = False
# FSDP1 as accelerate / Trainer configure it (fsdp_version=1): backward_prefetch NO_PREFETCH,
# forward_prefetch False, use_orig_params True (Trainer), limit_all_gathers True.
FSDP_PREFETCHED_UNITS = 0


def ddp_buckets(trained: sympy.Expr) -> sympy.Expr:
    """DDP's gradient buckets: ``beta_g P``.

    ``Reducer::initialize_buckets`` allocates one flat ``bucket.gradients`` tensor per
    bucket when DDP wraps the model; together the buckets cover every parameter that
    requires a gradient (``_compute_bucket_assignment_by_size`` only decides where the
    ``bucket_cap_mb`` = 25 MiB cuts fall, the first bucket 1 MiB). With
    ``gradient_as_bucket_view=False`` each ``.grad`` stays its own tensor and is copied into
    its bucket for the all-reduce, so the buckets are a second copy of the gradients, held
    from the wrap on."""
    if GRADIENT_AS_BUCKET_VIEW:
        return sympy.Integer(0)
    return gradient_bytes * trained


def fsdp_shard(elements: sympy.Expr) -> sympy.Expr:
    """Elements of one rank's shard of a ``FlatParameter`` of ``elements``: ``ceil(n / N_d)``
    (``FlatParamHandle._get_shard``: ``chunk(world_size)``, the last chunks padded)."""
    return sympy.ceiling(elements / data_parallel)


def fsdp_padded(elements: sympy.Expr) -> sympy.Expr:
    """Elements of the all-gathered (padded) flat parameter: ``N_d ceil(n / N_d)``
    (``_full_param_padded``, ``FlatParamHandle._alloc_padded_unsharded_flat_param``)."""
    return data_parallel * fsdp_shard(elements)


def fsdp_sharded(root: sympy.Expr, layer: sympy.Expr, layers: sympy.Expr) -> sympy.Expr:
    """Elements one rank keeps of the root unit and ``layers`` decoder-layer units."""
    return fsdp_shard(root) + layers * fsdp_shard(layer)


def fsdp_sharded_parameters(elements: sympy.Expr) -> sympy.Expr:
    """The sharded ``FlatParameter``s in the parameters' dtype (fp32 under mixed precision):
    ``beta_w x`` the shard elements."""
    return weight_bytes * elements


def fsdp_sharded_gradients(elements: sympy.Expr) -> sympy.Expr:
    """The sharded gradients, cast back to the parameters' dtype after the reduce-scatter
    (``_runtime_utils.py`` ``_post_backward_reshard`` / ``_cast_grad_to_param_dtype``,
    ``_accumulate_sharded_grad``): ``beta_w x`` the shard elements."""
    return weight_bytes * elements


def fsdp_unsharded(elements: sympy.Expr) -> sympy.Expr:
    """A unit's all-gathered parameters in the compute dtype (``MixedPrecision.param_dtype``,
    the activations' width): ``beta_a N_d ceil(n / N_d)``."""
    return activation_bytes * fsdp_padded(elements)


def fsdp_layer_gradient(elements: sympy.Expr) -> sympy.Expr:
    """The running layer's full gradient before its reduce-scatter, in the compute dtype:
    autograd gathers its views' gradients into one flat gradient of the unpadded ``n``
    elements (``split_with_sizes``' backward; ``_use_unsharded_views`` made the views), and the
    reduce-scatter's output shard beside it (``_runtime_utils.py`` ``_reduce_grad``:
    ``new_sharded_grad`` in ``reduce_dtype``): ``beta_g (n + ceil(n / N_d))``."""
    return gradient_bytes * (elements + fsdp_shard(elements))


def fsdp_head_gradients(head: sympy.Expr) -> sympy.Expr:
    """The root's gradients that wait through the decoder layers' backward: ``lm_head``'s and
    the final norm's (``head`` elements) sit in the root's ``split_with_sizes`` backward until
    the embedding's gradient arrives last: ``beta_g x head``."""
    return gradient_bytes * head


def fsdp_root_gradient(root: sympy.Expr, tied_embedding: sympy.Expr | None = None) -> sympy.Expr:
    """The end of backward, the root unit's split backward: every view's gradient (embedding,
    final norm, ``lm_head``) and the flat gradient ``cat`` makes of them: ``2 beta_g n``
    (measured on CPU: the step's peak, tests/fixtures/accelerate_cpu.json). With tied
    embeddings (``tied_embedding`` = ``V h`` elements) the larger moment comes first: the
    embedding's dense gradient, the waiting ``lm_head`` gradient and their out-of-place sum
    beside the final norm's, ``beta_g (n + 2 V h)``."""
    if tied_embedding is not None:
        return gradient_bytes * (root + 2 * tied_embedding)
    return 2 * gradient_bytes * root


def zero_step_temporaries(tile: sympy.Expr) -> sympy.Expr:
    """DeepSpeed ZeRO stepping the client's ``torch.optim.AdamW`` (foreach on CUDA) on its flat
    fp32 partition: ``_foreach_sqrt`` of ``exp_avg_sq`` is one fp32 copy of what a step
    updates (``torch/optim/adam.py`` ``_multi_tensor_adam``): the partition at stages 1-2,
    one ``sub_group_size`` tile at stage 3 (``stage3.py`` ``_optimizer_step``): ``4 x tile``."""
    return FP32_BYTES * tile
