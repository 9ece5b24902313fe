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
loss function is ``torch.compile``-d (inductor), plainly and as torchtitan's own TP loss
(``_LossParallelCrossEntropy``, its algorithm re-written in ``_VocabParallelCE``). Each variant runs once, then is measured by
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
import torch.distributed._functional_collectives as funcol
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


IGNORE_INDEX = -100  # torchtitan components/loss.py IGNORE_INDEX (PyTorch's default)


class _VocabParallelCE(torch.autograd.Function):
    """The algorithm of torchtitan's ``_LossParallelCrossEntropy`` (``components/loss.py`` at
    b5bcd76c, its TP loss since 2026), re-written here for one rank: forward saves the fp32
    log-probabilities and the labels; backward is ``(one_hot * -1 + exp(log_probs)) * grad``
    with ignored labels masked, in the logits' dtype (fp32: the caller casts with ``.float()``).
    Its all-reduces run on the one-rank group (identities, but they split inductor's kernels as
    on a real TP group)."""

    @staticmethod
    def forward(ctx, logits, labels):
        group = dist.group.WORLD  # the TP group: three all-reduces, as torchtitan's forward makes
        top = funcol.all_reduce(torch.amax(logits, dim=-1, keepdim=True), reduceOp="max", group=group)
        shifted = logits - top
        total = funcol.all_reduce(torch.sum(torch.exp(shifted), dim=-1, keepdim=True), reduceOp="sum", group=group)
        log_probs = shifted - torch.log(total)
        kept = labels != IGNORE_INDEX
        picked = torch.gather(log_probs, -1, torch.where(kept, labels, 0).unsqueeze(-1))
        picked = funcol.all_reduce(picked, reduceOp="sum", group=group).squeeze(-1)
        ctx.save_for_backward(log_probs, labels)
        return torch.where(kept, -picked, 0).sum()

    @staticmethod
    def backward(ctx, grad):
        log_probs, labels = ctx.saved_tensors
        kept = labels != IGNORE_INDEX
        one_hot = torch.zeros_like(log_probs)
        one_hot[torch.arange(labels.shape[0]), torch.where(kept, labels, 0)] = -1.0
        grad = torch.where(kept.unsqueeze(-1), grad, 0)
        return (one_hot + torch.exp(log_probs)) * grad, None


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

    compiled_vocab_parallel = torch.compile(lambda pred, labels: _VocabParallelCE.apply(pred.float(), labels))

    def compiled_parallel():  # torchtitan's TP loss, compiled
        pred = x @ weight.t()
        loss = compiled_vocab_parallel(pred, labels)
        del pred
        loss.backward()
        x.grad = weight.grad = None

    out = {"tokens": tokens, "hidden": hidden, "vocab": vocab}
    for name, run in (("plain", plain), ("loss_parallel", parallel), ("compiled", compiled),
                      ("compiled_loss_parallel", compiled_parallel)):
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
                    "backward): eager, loss parallel, compiled, and torchtitan's TP loss compiled, CPU "
                    "(tools/measure/titan_loss.py)",
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
