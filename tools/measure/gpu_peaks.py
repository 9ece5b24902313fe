#!/usr/bin/env python3
"""The peaks grid of tools/measure/peaks.py on a CUDA GPU, measured by the caching allocator.

Same models, grid, training loop and prefill call as ``peaks.py``; the model, the batch
and the optimizer live on ``cuda:0``. Per phase (forward, backward, optimizer; or the
prefill) it calls ``torch.cuda.reset_peak_memory_stats()`` before and reads
``torch.cuda.max_memory_allocated()`` after, so the peak's phase is known; it also records
``torch.cuda.memory_allocated()`` before the step (weights, optimizer state, batch) and
``torch.cuda.memory_reserved()`` after it (what the caching allocator holds from the
driver: the allocated peak plus its rounding and cached free blocks). Allocated bytes are
rounded by the allocator to multiples of 512; a CUDA context and cuBLAS workspaces are
outside or inside these counters as PyTorch reports them, not corrected here.

torch's defaults on CUDA differ from CPU: AdamW is ``foreach`` (``torch/optim/optimizer.py:
_default_to_fused_or_foreach``), its ``step`` counters stay on the CPU, and SDPA picks a
flash or memory-efficient kernel. Compare with ``memsym estimate --profile transformers
--device cuda``.

Usage on a machine with a CUDA GPU (repository root)::

    python tools/measure/gpu_peaks.py                 # -> tests/fixtures/peaks_cuda.json
    python tools/measure/gpu_peaks.py --quick --stdout

Not run in this repository's CI (no GPU there); commit the fixture it writes.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peaks  # noqa: E402  (same folder: models, grid and loop are shared)

OUT = os.path.join(peaks.ROOT, "tests", "fixtures", "peaks_cuda.json")
DEVICE = "cuda"


def _phase_peak(run) -> int:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    run()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated()


def measure_training(point: dict) -> dict:
    config = peaks.model_config(point["model"])
    model = peaks.build_model(config, point["attention"], point["dtype"]).to(DEVICE)
    model.train()
    if point["gradient_checkpointing"]:
        model.activation_checkpointing_enable()
    torch.manual_seed(peaks.SEED)
    ids = torch.randint(0, config["vocab_size"], (point["batch_size"], point["seq_len"]), device=DEVICE)
    # foreach=None: torch's own default for CUDA tensors (foreach); a point may force it.
    opt = torch.optim.AdamW(model.parameters(), foreach=point.get("foreach") or None, **peaks.ADAMW)
    holder = {}

    def forward():
        holder["loss"] = model(input_ids=ids, labels=ids, use_cache=False).loss

    def backward():
        holder.pop("loss").backward()

    def optimizer():
        opt.step()
        opt.zero_grad(set_to_none=True)

    for run in (forward, backward, optimizer):  # first iteration creates the optimizer state
        run()
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    phase_peaks = {name: _phase_peak(run) for name, run in
                   (("forward", forward), ("backward", backward), ("optimizer", optimizer))}
    phase = max(phase_peaks, key=phase_peaks.get)
    return dict(peak_bytes=phase_peaks[phase], peak_phase=phase, phase_peaks=phase_peaks,
                allocated_before_step_bytes=before, reserved_bytes=torch.cuda.memory_reserved(),
                parameter_bytes=peaks._nbytes(model.parameters()), buffer_bytes=peaks._nbytes(model.buffers()),
                optimizer_state_bytes=peaks._nbytes(peaks._optimizer_tensors(opt)),
                input_bytes=peaks._nbytes([ids]))


def measure_inference(point: dict) -> dict:
    config = peaks.model_config(point["model"])
    model = peaks.build_model(config, point["attention"], point["dtype"]).to(DEVICE)
    model.eval()
    torch.manual_seed(peaks.SEED)
    ids = torch.randint(0, config["vocab_size"], (point["batch_size"], point["seq_len"]), device=DEVICE)
    keep = peaks.LOGITS_TO_KEEP[point["logits"]]
    holder = {}

    def prefill():
        holder.clear()
        with torch.no_grad():
            holder["out"] = model(input_ids=ids, use_cache=True, logits_to_keep=keep)

    prefill()
    holder.clear()
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    peak = _phase_peak(prefill)
    out = holder.pop("out")
    kv = [t for layer in out.cache.layers for t in (layer.keys, layer.values)]
    return dict(peak_bytes=peak, peak_phase="forward", allocated_before_bytes=before,
                reserved_bytes=torch.cuda.memory_reserved(),
                parameter_bytes=peaks._nbytes(model.parameters()), buffer_bytes=peaks._nbytes(model.buffers()),
                kv_cache_bytes=peaks._nbytes(kv), logits_bytes=peaks._nbytes([out.logits]),
                input_bytes=peaks._nbytes([ids]))


def measure(point: dict) -> dict:
    start = time.perf_counter()
    result = measure_training(point) if point["mode"] == "training" else measure_inference(point)
    torch.cuda.empty_cache()
    return dict(point, measured=result, seconds=round(time.perf_counter() - start, 2))


def environment() -> dict:
    env = peaks.environment()
    props = torch.cuda.get_device_properties(0)
    env.update(device="cuda", gpu=props.name, gpu_memory_bytes=props.total_memory, cuda=torch.version.cuda,
               cudnn=torch.backends.cudnn.version(), flash_sdp=torch.backends.cuda.flash_sdp_enabled(),
               mem_efficient_sdp=torch.backends.cuda.mem_efficient_sdp_enabled())
    return env


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the live test's subset only")
    parser.add_argument("--stdout", action="store_true", help="print the JSON instead of writing it")
    parser.add_argument("--out", default=OUT, help="fixture path (default: %(default)s)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_peaks.py: no CUDA device (torch.cuda.is_available() is False)", file=sys.stderr)
        return 2
    points = [dict(p) for p in peaks.QUICK] if args.quick else peaks.grid()
    data = peaks.run(points, measure_point=measure, env=environment())
    data["generator"] = "tools/measure/gpu_peaks.py"
    data["format"] = data["format"].replace("MemTracker", "torch.cuda.max_memory_allocated") + (
        "; allocator_peak_bytes absent: reserved_bytes is torch.cuda.memory_reserved()")
    return peaks.write(data, args.out, args.stdout, len(points))


if __name__ == "__main__":
    sys.exit(main())
