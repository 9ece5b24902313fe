#!/usr/bin/env python3
"""DDP and FSDP1 on CPU (gloo, 2 processes): what they allocate, for the transformers profile.

The same small Llama as tools/measure/peaks.py (``llama-tiny``: the registry's
``llama-3.1-8b`` config with h = 256, 4 layers, V = 16,384; random weights, no downloads),
wrapped as accelerate 1.15 / Trainer 5.24 wrap it by default:

* **DDP**: ``DistributedDataParallel(model)`` with accelerate's ``DistributedDataParallelKwargs``
  defaults (``bucket_cap_mb=25``, ``gradient_as_bucket_view=False``). Measured: the bytes the
  wrap keeps (profiler allocation events of the ``DDP(...)`` call, net: the reducer's
  buckets), ``_get_ddp_logging_data()``'s bucket sizes, and the peak of the second training
  step;
* **FSDP1**: ``FullyShardedDataParallel`` with ``transformer_auto_wrap_policy`` on
  the model's ``_no_split_modules`` (its decoder layer: Trainer's default auto-wrap),
  ``use_orig_params=True``, no backward / forward prefetch, ``limit_all_gathers=True``,
  FULL_SHARD or SHARD_GRAD_OP, with ``MixedPrecision(bf16, bf16, bf16)`` on an fp32 model
  (accelerate's ``mixed_precision="bf16"``) or none on a bf16 model. Measured: each unit's
  flat-parameter shard and unsharded sizes, and the peak of the second training step.

A step is ``loss = model(input_ids=ids, labels=ids, use_cache=False).loss; loss.backward();
AdamW.step(); zero_grad(set_to_none=True)`` (single-tensor AdamW, the CPU default). Its peak
is the bytes alive before it (every parameter, optimizer-state and input storage, plus
DDP's net wrap bytes) plus the largest running sum of the profiler's ``[memory]`` events
during it (tools/measure/peaks.py ``allocator_peak``). Each point runs in fresh processes
(the profiler's table of block sizes outlives its session: a second session in the same
process sees frees of the first one's blocks and reads low), twice: gloo runs collectives
on threads of its own and the readings of FSDP SHARD_GRAD_OP vary from run to run by up to
one root unit; the fixture keeps every reading and their minimum. Rank 0 reports.

Usage (repository root)::

    python tools/measure/accelerate_peaks.py            # -> tests/fixtures/accelerate_cpu.json
    python tools/measure/accelerate_peaks.py --stdout
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peaks import ADAMW, SEED, _nbytes, _optimizer_tensors, allocator_peak, build_model, model_config  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "tests", "fixtures", "accelerate_cpu.json")
WORLD = 2
MODEL = "llama-tiny"
POINTS = (
    dict(layout="ddp", dtype="float32", precision="pure", batch_size=1, seq_len=256),
    dict(layout="ddp", dtype="bfloat16", precision="pure", batch_size=2, seq_len=128),
    dict(layout="fsdp", strategy="FULL_SHARD", dtype="bfloat16", precision="amp", batch_size=1, seq_len=256),
    dict(layout="fsdp", strategy="FULL_SHARD", dtype="bfloat16", precision="pure", batch_size=1, seq_len=256),
    dict(layout="fsdp", strategy="SHARD_GRAD_OP", dtype="bfloat16", precision="amp", batch_size=1, seq_len=256),
    dict(layout="fsdp", strategy="FULL_SHARD", dtype="bfloat16", precision="amp", batch_size=2, seq_len=512),
    # short sequences: the peak moves off the loss to the gradients and the optimizer step
    dict(layout="ddp", dtype="float32", precision="pure", batch_size=1, seq_len=16),
    dict(layout="fsdp", strategy="FULL_SHARD", dtype="bfloat16", precision="amp", batch_size=1, seq_len=16),
    dict(layout="fsdp", strategy="SHARD_GRAD_OP", dtype="bfloat16", precision="amp", batch_size=1, seq_len=16),
    dict(layout="fsdp", strategy="FULL_SHARD", dtype="bfloat16", precision="pure", batch_size=1, seq_len=16),
    # tied embeddings (Qwen3's shape): the root holds one V x h matrix for both
    dict(layout="fsdp", strategy="FULL_SHARD", dtype="bfloat16", precision="amp", batch_size=1, seq_len=16,
         model="qwen3-tiny"),
    dict(layout="ddp", dtype="bfloat16", precision="pure", batch_size=1, seq_len=16, model="qwen3-tiny"),
)
REPEATS = 2  # fresh process pairs per point; the fixture keeps each reading and their minimum


def _profiled_net(run) -> tuple[object, int]:
    """``run()``'s result and the bytes its allocations leave alive (profiler events)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = run()
    net = sum(e.nbytes() for e in prof.profiler.kineto_results.events() if e.name() == "[memory]")
    return result, net


def _wrap_fsdp(model, point):
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    from torch.distributed.fsdp import MixedPrecision, ShardingStrategy
    from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy
    # Trainer's default: transformer_layer_cls_to_wrap = model._no_split_modules (the decoder layer)
    layers = {type(m) for m in model.modules() if type(m).__name__ in model._no_split_modules}
    policy = functools.partial(transformer_auto_wrap_policy, transformer_layer_cls=layers)
    mixed = (MixedPrecision(param_dtype=torch.bfloat16, reduce_dtype=torch.bfloat16, buffer_dtype=torch.bfloat16)
             if point["precision"] == "amp" else None)
    return FSDP(model, auto_wrap_policy=policy, mixed_precision=mixed, use_orig_params=True,
                sharding_strategy=ShardingStrategy[point["strategy"]], backward_prefetch=None,
                forward_prefetch=False, limit_all_gathers=True, device_id=torch.device("cpu"))


def _units(wrapped) -> list[dict]:
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    found = []
    for name, module in wrapped.named_modules():
        if isinstance(module, FSDP):
            flat = module._flat_param
            found.append(dict(unit=name or "root", shard_numel=flat.numel(),
                              unpadded_unsharded_numel=int(flat._unpadded_unsharded_size.numel()),
                              dtype=str(flat.dtype).replace("torch.", "")))
    return found


def measure(point: dict) -> dict:
    config = model_config(point.get("model", MODEL))
    dtype = "float32" if point["precision"] == "amp" else point["dtype"]
    model = build_model(config, "sdpa", dtype)
    model.train()
    result = {}
    if point["layout"] == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        wrapped, net = _profiled_net(lambda: DDP(model, bucket_cap_mb=25, gradient_as_bucket_view=False))
        logging = wrapped._get_ddp_logging_data()
        result.update(wrap_net_bytes=net, bucket_sizes=[int(x) for x in str(logging.get("bucket_sizes")).split(", ")],
                      parameter_bytes=_nbytes(model.parameters()))
    else:
        wrapped, net = _wrap_fsdp(model, point), 0
        result["units"] = _units(wrapped)
    torch.manual_seed(SEED)
    ids = torch.randint(0, config["vocab_size"], (point["batch_size"], point["seq_len"]))
    opt = torch.optim.AdamW(wrapped.parameters(), foreach=False, **ADAMW)

    def step():
        loss = wrapped(input_ids=ids, labels=ids, use_cache=False).loss
        loss.backward()
        del loss
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # the optimizer state exists from here on
    state = _nbytes(_optimizer_tensors(opt))
    baseline = _nbytes(list(wrapped.parameters()) + list(wrapped.buffers())) + state + _nbytes([ids]) + net
    result.update(baseline_bytes=baseline, optimizer_state_bytes=state,
                  allocator_peak_bytes=allocator_peak(step, baseline))
    return result


def _worker(rank: int, port: int, point: dict, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    row = dict({"model": MODEL, **point}, world_size=WORLD, **measure(point))
    dist.barrier()
    if rank == 0:
        queue.put(row)
    dist.destroy_process_group()


def measure_point(point: dict, port: int) -> dict:
    """``point`` measured ``REPEATS`` times, each in two fresh processes (the profiler's table of
    block sizes outlives a session, so one process measures one step)."""
    ctx = mp.get_context("spawn")
    rows = []
    for repeat in range(REPEATS):
        queue = ctx.SimpleQueue()
        mp.spawn(_worker, args=(port + repeat, point, queue), nprocs=WORLD)
        rows.append(queue.get())
    row = rows[0]
    row["allocator_peaks"] = [r["allocator_peak_bytes"] for r in rows]
    row["allocator_peak_bytes"] = min(row["allocator_peaks"])
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stdout", action="store_true")
    parser.add_argument("--port", type=int, default=29541)
    parser.add_argument("--only", type=int, nargs="*", help="indices into POINTS; the others are kept from the fixture")
    args = parser.parse_args(argv)
    kept = []
    if args.only:
        with open(OUT) as fh:
            kept = json.load(fh)["points"]
    points = [measure_point(point, args.port + REPEATS * i) if not args.only or i in args.only else kept[i]
              for i, point in enumerate(POINTS)]
    models = sorted({p.get("model", MODEL) for p in POINTS})
    data = {"torch": torch.__version__, "configs": {m: model_config(m) for m in models}, "points": points}
    text = json.dumps(data, indent=1) + "\n"
    if args.stdout:
        sys.stdout.write(text)
    else:
        with open(OUT, "w") as fh:
            fh.write(text)
        print(f"wrote {OUT} ({len(data['points'])} points)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
