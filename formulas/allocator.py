"""PyTorch's CUDA caching allocator: what ``max_memory_reserved`` holds for the live tensors.

Read off pytorch/pytorch ``c10/cuda/CUDACachingAllocator.cpp`` (``round_size``,
``get_allocation_size``, ``should_split``, ``get_pool``, Note [Expandable Segments]):

- every request is rounded up to ``kMinBlockSize`` = 512 B (``round_size``);
- requests of at most ``kSmallSize`` = 1 MiB come from the small pool, packed into 2 MiB
  segments (``kSmallBuffer``);
- requests between 1 MiB and ``kMinLargeAlloc`` = 10 MiB split a 20 MiB segment
  (``kLargeBuffer``) when no cached block fits;
- larger requests get a segment of their size rounded up to ``kRoundLarge`` = 2 MiB, whose
  tail is split off for later requests only when more than 1 MiB is left (``should_split``);
- ``expandable_segments:True`` (``PYTORCH_CUDA_ALLOC_CONF``): one segment per stream and pool
  that grows in pages, 2 MiB for the small pool and 20 MiB for the large one.

``reserved`` here is what a phase's live tensors need in fresh segments: each pool's blocks
packed without gaps. The allocator never returns a segment unless asked to
(``torch.cuda.empty_cache``) or after a failed ``cudaMalloc``, so ``max_memory_reserved`` is at
least this for every phase; what earlier phases left cached and could not reuse
(fragmentation) comes on top and is not modelled. The CUDA context is outside both counters.
"""

from __future__ import annotations

MIN_BLOCK_BYTES = 512  # kMinBlockSize: "all sizes are rounded to at least 512 bytes"
SMALL_SIZE_BYTES = 1_048_576  # kSmallSize: "largest 'small' allocation is 1 MiB"
SMALL_SEGMENT_BYTES = 2_097_152  # kSmallBuffer: "'small' allocations are packed in 2 MiB blocks"
LARGE_SEGMENT_BYTES = 20_971_520  # kLargeBuffer: "'large' allocations may be packed in 20 MiB blocks"
MIN_LARGE_ALLOC_BYTES = 10_485_760  # kMinLargeAlloc: "allocations between 1 and 10 MiB may use kLargeBuffer"
ROUND_LARGE_BYTES = 2_097_152  # kRoundLarge: "round up large allocations to 2 MiB"
RULES = ("native", "expandable")


def block_bytes(size: int) -> int:
    """``round_size``: a request's block, ``max(512, 512 ceil(n / 512))``."""
    return max(MIN_BLOCK_BYTES, _round_up(size, MIN_BLOCK_BYTES))


def _round_up(total: int, step: int) -> int:
    return -(-total // step) * step


def reserved(tensors: list[tuple[int, int]], rule: str = "native") -> int:
    """Bytes of the segments that hold ``tensors`` (``(count, bytes each)`` pairs) at once.

    ``native``: small blocks (at most 1 MiB) packed in 2 MiB segments, medium ones (to
    10 MiB) in 20 MiB segments, each large request in its own segment rounded to 2 MiB
    (``get_allocation_size``). ``expandable``: the small pool's blocks in 2 MiB pages, the large
    pool's (medium and large blocks, 512-rounded) in 20 MiB pages. Exact integers; the sizes
    are a phase's evaluated tensors, so the rule is applied to numbers, not expressions.
    """
    if rule not in RULES:
        raise ValueError(f"unknown allocator rule {rule!r}; known: {', '.join(RULES)}")
    small = medium = large = pages = 0
    for count, size in tensors:
        if count <= 0 or size <= 0:
            continue
        block = block_bytes(size)
        if size <= SMALL_SIZE_BYTES:
            small += count * block
        elif size < MIN_LARGE_ALLOC_BYTES:
            medium += count * block
        else:
            large += count * _round_up(size, ROUND_LARGE_BYTES)
        if size > SMALL_SIZE_BYTES:
            pages += count * block
    if rule == "native":
        return _round_up(small, SMALL_SEGMENT_BYTES) + _round_up(medium, LARGE_SEGMENT_BYTES) + large
    return _round_up(small, SMALL_SEGMENT_BYTES) + _round_up(pages, LARGE_SEGMENT_BYTES)


def describe(rule: str) -> str:
    """The rule in words, for the output."""
    if rule == "expandable":
        return ("expandable_segments: small blocks (<= 1 MiB, 512 B-rounded) in 2 MiB pages, the rest in "
                "20 MiB pages; fragmentation not modelled")
    return ("caching allocator: blocks rounded to 512 B; <= 1 MiB packed in 2 MiB segments, 1-10 MiB in 20 MiB "
            "segments, larger each in its own segment rounded to 2 MiB; fragmentation not modelled")
