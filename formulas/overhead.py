"""Memory outside the model's tensors, as named terms that are off unless asked for.

Each is a symbol whose default is 0 and which is always shown, so a total never hides a
guess:

- ``R`` (``--reserve``): what the CUDA context and runtime take before the first tensor.
  It varies with driver, GPU and the kernels loaded (commonly a few hundred MB; PyTorch's
  notes on CUDA memory management say the context is not reported by
  ``memory_allocated``); measure it with ``nvidia-smi`` on an idle process.
- ``C`` (``--comm-buffer``): communication buffers, e.g. PyTorch DDP's gradient buckets
  (``bucket_cap_mb=25`` by default, torch.nn.parallel.DistributedDataParallel) or
  DeepSpeed's ``reduce_bucket_size`` (5e8 elements by default).
- ``phi`` (``--allocator-fraction``): what the caching allocator reserves beyond what is
  allocated (fragmentation, rounding to its 2 MiB / 20 MiB blocks), as a fraction of the
  peak; ``torch.cuda.memory_reserved() / max_memory_allocated() - 1`` on a real run.
"""

from __future__ import annotations

import sympy

from formulas.symbols import allocator_fraction, comm_buffer_bytes, reserve_bytes


def reserve() -> sympy.Expr:
    """Bytes reserved outside the model: ``R``."""
    return reserve_bytes


def comm_buffers() -> sympy.Expr:
    """Communication buffers: ``C``."""
    return comm_buffer_bytes


def allocator(peak: sympy.Expr) -> sympy.Expr:
    """Allocator reserve on top of the tensors' peak: ``phi x peak``."""
    return allocator_fraction * peak
