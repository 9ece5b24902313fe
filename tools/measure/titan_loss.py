#!/usr/bin/env python3
"""Peak memory of torchtitan's loss on CPU: the output projection, ``cross_entropy(pred.float())``,
``del pred`` and ``loss.backward()``: eager, under loss parallel, and compiled.

torchtitan's step (``train.py``; ``components/loss.py`` ``cross_entropy_loss``) computes
``pred = model(tokens)``, ``loss = cross_entropy(pred.flatten(0, 1).float(), labels)``, deletes
``pred`` and calls ``loss.backward()``; under TP the output projection is
``ColwiseParallel(output_layouts=Shard(-1), use_local_output=False)`` and the loss runs inside
``torch.distributed.tensor.parallel.loss_parallel()`` (run here on a one-rank gloo mesh: the
loss-parallel ops, ``_log_softmax`` and ``_nll_loss_and_log_softmax_backward``, run whatever the
degree); with ``compile.components = ["model", "loss"]`` (torchtitan's default since 2025) the
loss function is ``torch.compile``-d (inductor). Each variant runs once, then is measured by
the allocator's own reports (``torch.profiler`` ``[memory]`` events: the largest running sum of
live bytes), the leaves (the projection's input and weight) allocated before. In units of
``tokens x vocabulary`` bytes: memsym's ``activations/logits`` + ``loss_backward``
(formulas/frameworks/torchtitan.py ``loss_saved`` + ``loss_backward``, ``compiled_loss_*``).

Usage (repository root)::

    python tools/measure/titan_loss.py            # -> tests/fixtures/titan_loss_cpu.json
    python tools/measure/titan_loss.py --stdout

Needs torch==2.13.0 (CPU build).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "tests", "fixtures", "titan_loss_cpu.json")
POINTS = ((1024, 64, 8192), (2048, 32, 4096))  # (tokens, hidden, vocabulary): the head's own bytes stay small


def allocator_peak(run) -> int:
    """The largest running sum of the allocator's ``[memory]`` events during ``run()``."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]")
    live = top = 0
    for _, nbytes in events:
        live += nbytes
        top = max(top, live)
    return top


def measure(tokens: int, hidden: int, vocab: int, mesh) -> dict:
    from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_tensor
    from torch.distributed.tensor.parallel import loss_parallel

    torch.manual_seed(0)
    x = torch.randn(tokens, hidden, dtype=torch.bfloat16, requires_grad=True)
    weight = torch.randn(vocab, hidden, dtype=torch.bfloat16, requires_grad=True)
    sharded = distribute_tensor(weight.detach(), mesh, [Shard(0)]).requires_grad_()
    labels = torch.randint(0, vocab, (tokens,))

    def plain():
        pred = x @ weight.t()
        loss = F.cross_entropy(pred.float(), labels)
        del pred
        loss.backward()
        x.grad = weight.grad = None

    def parallel():
        pred = F.linear(DTensor.from_local(x, mesh, [Replicate()]), sharded)  # Shard(-1) logits
        with loss_parallel():
            loss = F.cross_entropy(pred.float(), labels)
            del pred
            loss.backward()
        x.grad = sharded.grad = None

    compiled_ce = torch.compile(lambda pred, labels: F.cross_entropy(pred.float(), labels, reduction="sum"))

    def compiled():  # compile.components with "loss" (torchtitan's default since 2025)
        pred = x @ weight.t()
        loss = compiled_ce(pred, labels)
        del pred
        loss.backward()
        x.grad = weight.grad = None

    out = {"tokens": tokens, "hidden": hidden, "vocab": vocab}
    for name, run in (("plain", plain), ("loss_parallel", parallel), ("compiled", compiled)):
        run()  # warm: lazy initialisations outside the measured run
        out[f"{name}_peak_bytes"] = allocator_peak(run)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stdout", action="store_true", help="print the fixture instead of writing it")
    args = parser.parse_args(argv)
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29533")
    dist.init_process_group("gloo", rank=0, world_size=1)
    try:
        from torch.distributed.device_mesh import init_device_mesh

        mesh = init_device_mesh("cpu", (1,))
        points = [measure(*point, mesh) for point in POINTS]
    finally:
        dist.destroy_process_group()
    data = {"what": "peak bytes of torchtitan's loss step (projection, cross_entropy(pred.float()), del pred, "
                    "backward): eager, loss parallel and compiled, CPU (tools/measure/titan_loss.py)",
            "method": "torch.profiler [memory] events, largest running sum during the measured run; the "
                      "projection's input and weight allocated before it",
            "environment": {"torch": torch.__version__, "python": platform.python_version()},
            "points": points}
    text = json.dumps(data, indent=1) + "\n"
    if args.stdout:
        sys.stdout.write(text)
    else:
        with open(OUT, "w", encoding="utf-8") as handle:
            handle.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
