#!/usr/bin/env python3
"""Peak memory of real transformers models on CPU, for memsym's accuracy tests.

Builds small models of real families (Qwen3- and Llama-shaped: the registry's
``qwen3-0.6b`` and ``llama-3.1-8b`` configs with the sizes shrunk, every other field
kept; random weights, no downloads, never remote code) and measures, over a grid of
attention implementation x dtype x batch x sequence length (x gradient checkpointing):

* **training step**: forward with ``labels`` (transformers' own loss), backward,
  ``torch.optim.AdamW.step()``, ``zero_grad(set_to_none=True)``; measured on the *second*
  iteration so the optimizer state exists. The loop drops the model output before
  backward (``loss = model(...).loss``), as ``Trainer.compute_loss`` does, and passes
  ``use_cache=False``;
* **inference prefill**: ``model(input_ids, use_cache=True, logits_to_keep=k)`` under
  ``torch.no_grad()``, ``k = 0`` (every position's logits) or ``1`` (the last, as
  ``generate`` does).

Two independent methods measure each point:

1. ``torch.distributed._tools.mem_tracker.MemTracker`` (a TorchDispatchMode that follows
   every tensor storage through weak references): the peak, its breakdown (parameters,
   buffers, gradients, activations, temporaries, optimizer) and the phase in which the
   peak was reached (forward, backward, optimizer);
2. the allocator's own reports: ``torch.profiler.profile(profile_memory=True)`` records
   every CPU allocation and free (``[memory]`` events); the peak is the bytes alive at
   the start plus the largest running sum. It also sees buffers that kernels allocate
   internally, which a dispatch mode cannot.

Usage (repository root)::

    python tools/measure/peaks.py                 # full grid -> tests/fixtures/peaks_cpu.json
    python tools/measure/peaks.py --quick --stdout
    python tools/measure/peaks.py --only qwen3-tiny --mode training

Needs torch==2.13.0 (CPU build) and transformers==5.24.0: ``pip install -e '.[validate]'``.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import itertools
import json
import os
import platform
import sys
import time

import torch
import transformers
from torch.distributed._tools.mem_tracker import MemTracker
from transformers import AutoConfig, AutoModelForCausalLM

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
REGISTRY = os.path.join(ROOT, "engine", "registry", "models")
OUT = os.path.join(ROOT, "tests", "fixtures", "peaks_cpu.json")

# Small models of real families: a registry config with only its sizes overridden.
MODELS: dict[str, tuple[str, dict]] = {
    "qwen3-tiny": ("qwen3-0.6b", dict(
        hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, head_dim=64, vocab_size=16384)),
    "llama-tiny": ("llama-3.1-8b", dict(
        hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=8,
        num_key_value_heads=2, vocab_size=16384)),
    # Inference-only probes: wide attention beside a narrow MLP, so that the prefill peaks
    # inside attention's projections (q/k RMSNorm, RoPE) rather than in the MLP or logits.
    "qwen3-probe-gqa": ("qwen3-0.6b", dict(
        hidden_size=256, intermediate_size=256, num_hidden_layers=2, num_attention_heads=8,
        num_key_value_heads=2, head_dim=64, vocab_size=4096)),
    "qwen3-probe-mha": ("qwen3-0.6b", dict(
        hidden_size=256, intermediate_size=256, num_hidden_layers=2, num_attention_heads=8,
        num_key_value_heads=8, head_dim=64, vocab_size=4096)),
}
PROBES = ("qwen3-probe-gqa", "qwen3-probe-mha")  # measured for inference with logits="last" only
ATTENTION = ("sdpa", "eager")
DTYPES = ("float32", "bfloat16")
SHAPES = ((1, 256), (2, 512), (4, 128))  # (batch_size, seq_len)
GRADIENT_CHECKPOINTING = (False, True)
LOGITS_TO_KEEP = {"all": 0, "last": 1}
# AdamW as torch defaults it on CPU: single-tensor (foreach only for CUDA-like devices).
# A few points force foreach=True, the CUDA default, to check its temporaries on CPU.
ADAMW = dict(lr=1e-4, weight_decay=0.01)
FOREACH_SHAPES = ((1, 256),)  # sdpa, no checkpointing, both models and dtypes
SEED = 0

# The subset the live test re-measures (one training and one inference point per family).
QUICK = (
    dict(model="qwen3-tiny", mode="training", attention="sdpa", dtype="bfloat16",
         batch_size=1, seq_len=256, gradient_checkpointing=False, foreach=False),
    dict(model="llama-tiny", mode="training", attention="eager", dtype="float32",
         batch_size=4, seq_len=128, gradient_checkpointing=True, foreach=False),
    dict(model="qwen3-tiny", mode="inference", attention="eager", dtype="bfloat16",
         batch_size=2, seq_len=512, logits="last"),
    dict(model="llama-tiny", mode="inference", attention="sdpa", dtype="float32",
         batch_size=1, seq_len=256, logits="all"),
)


# ------------------------------------------------------------------ models

def model_config(name: str) -> dict:
    """The config dict of a small model: its registry config with the sizes overridden."""
    registry_id, overrides = MODELS[name]
    with open(os.path.join(REGISTRY, f"{registry_id}.json")) as fh:
        config = json.load(fh)["config"]
    config = {k: v for k, v in config.items() if k != "torch_dtype"}
    config.update(overrides)
    return config


def build_model(config: dict, attention: str, dtype: str) -> torch.nn.Module:
    cfg = dict(config)
    model_type = cfg.pop("model_type")
    hf_config = AutoConfig.for_model(model_type, **cfg)
    torch.manual_seed(SEED)
    model = AutoModelForCausalLM.from_config(hf_config, attn_implementation=attention)
    return model.to(getattr(torch, dtype))


def _nbytes(tensors) -> int:
    seen, total = set(), 0
    for t in tensors:
        st = t.untyped_storage()
        if st.data_ptr() not in seen:
            seen.add(st.data_ptr())
            total += st.nbytes()
    return total


def _optimizer_tensors(opt: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [v for state in opt.state.values() for v in state.values() if torch.is_tensor(v)]


# ------------------------------------------------------------------ measuring

class _Phases:
    """Running peak of a MemTracker at the end of each phase, to name the peak's phase."""

    def __init__(self, tracker: MemTracker):
        self.tracker, self.ends = tracker, []

    def mark(self, phase: str) -> None:
        self.ends.append((phase, _total(self.tracker.get_tracker_snapshot("peak"))))

    def peak_phase(self) -> str:
        final = self.ends[-1][1]
        return next(phase for phase, peak in self.ends if peak == final)


def _total(snapshot: dict) -> int:
    (device_snapshot,) = snapshot.values()
    return int(device_snapshot["Total"])


def _breakdown(snapshot: dict) -> dict[str, int]:
    (device_snapshot,) = snapshot.values()
    return {str(getattr(k, "value", k)): int(v) for k, v in device_snapshot.items() if k != "Total"}


def allocator_peak(run, baseline: int) -> int:
    """Peak bytes of ``run()`` from the profiler's allocation events, plus ``baseline``."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]")
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return baseline + peak


def measure_training(point: dict) -> dict:
    config = model_config(point["model"])
    model = build_model(config, point["attention"], point["dtype"])
    model.train()
    if point["gradient_checkpointing"]:
        # transformers 5.24: torch.utils.checkpoint around every decoder layer, use_reentrant=False
        model.activation_checkpointing_enable()
    torch.manual_seed(SEED)
    ids = torch.randint(0, config["vocab_size"], (point["batch_size"], point["seq_len"]))
    opt = torch.optim.AdamW(model.parameters(), foreach=point.get("foreach", False), **ADAMW)
    return measure_step(model, opt, ids)


def measure_step(model: torch.nn.Module, opt: torch.optim.Optimizer, ids: torch.Tensor,
                 tracker_class=MemTracker) -> dict:
    """The second of two training steps of ``model`` on ``ids``, tracked (see the module docstring)."""

    def step(phases: _Phases | None = None):
        loss = model(input_ids=ids, labels=ids, use_cache=False).loss
        phases and phases.mark("forward")
        loss.backward()
        del loss
        phases and phases.mark("backward")
        opt.step()
        opt.zero_grad(set_to_none=True)
        phases and phases.mark("optimizer")

    step()  # first iteration: creates the optimizer state
    tracker = tracker_class()
    tracker.track_external(model, opt, ids)
    phases = _Phases(tracker)
    with tracker:
        step(phases)
    peak = tracker.get_tracker_snapshot("peak")
    state_bytes = _nbytes(_optimizer_tensors(opt))
    baseline = _nbytes(list(model.parameters()) + list(model.buffers())) + state_bytes + _nbytes([ids])
    breakdown = _breakdown(peak)
    breakdown["Optimizer temporaries"] = breakdown.get("Optstate", 0) - state_bytes
    return dict(
        peak_bytes=_total(peak),
        allocator_peak_bytes=allocator_peak(step, baseline),
        peak_phase=phases.peak_phase(),
        phase_peaks=dict(phases.ends),
        breakdown=breakdown,
        parameter_bytes=_nbytes(model.parameters()),
        buffer_bytes=_nbytes(model.buffers()),
        optimizer_state_bytes=state_bytes,
        input_bytes=_nbytes([ids]),
    )


def measure_inference(point: dict) -> dict:
    config = model_config(point["model"])
    model = build_model(config, point["attention"], point["dtype"])
    model.eval()
    torch.manual_seed(SEED)
    ids = torch.randint(0, config["vocab_size"], (point["batch_size"], point["seq_len"]))
    keep = LOGITS_TO_KEEP[point["logits"]]
    holder = {}

    def prefill():
        holder.clear()
        with torch.no_grad():
            holder["out"] = model(input_ids=ids, use_cache=True, logits_to_keep=keep)

    prefill()  # warm-up: lazy initialisation inside torch and transformers
    holder.clear()
    tracker = MemTracker()
    tracker.track_external(model, ids)
    with tracker:
        prefill()
    peak = tracker.get_tracker_snapshot("peak")
    out = holder.pop("out")
    cache = [t for layer in out.cache.layers for t in (layer.keys, layer.values)]
    kv_bytes, logits_bytes = _nbytes(cache), _nbytes([out.logits])
    del out, cache
    baseline = _nbytes(list(model.parameters()) + list(model.buffers())) + _nbytes([ids])
    return dict(
        peak_bytes=_total(peak),
        allocator_peak_bytes=allocator_peak(prefill, baseline),
        peak_phase="forward",
        breakdown=_breakdown(peak),
        parameter_bytes=_nbytes(model.parameters()),
        buffer_bytes=_nbytes(model.buffers()),
        kv_cache_bytes=kv_bytes,
        logits_bytes=logits_bytes,
        input_bytes=_nbytes([ids]),
    )


def measure(point: dict) -> dict:
    """One grid point: its inputs, the model config and what was measured."""
    start = time.perf_counter()
    result = measure_training(point) if point["mode"] == "training" else measure_inference(point)
    return dict(point, measured=result, seconds=round(time.perf_counter() - start, 2))


# ------------------------------------------------------------------ grid

def grid(models=None, modes=("training", "inference")) -> list[dict]:
    points = []
    for model, attention, dtype, (batch, seq) in itertools.product(MODELS, ATTENTION, DTYPES, SHAPES):
        if models and model not in models:
            continue
        base = dict(model=model, attention=attention, dtype=dtype, batch_size=batch, seq_len=seq)
        if model in PROBES:
            points += [dict(base, mode="inference", logits="last")] if "inference" in modes else []
            continue
        if "training" in modes:
            points += [dict(base, mode="training", gradient_checkpointing=gc, foreach=False)
                       for gc in GRADIENT_CHECKPOINTING]
            if attention == "sdpa" and (batch, seq) in FOREACH_SHAPES:
                points.append(dict(base, mode="training", gradient_checkpointing=False, foreach=True))
        if "inference" in modes:
            points += [dict(base, mode="inference", logits=logits) for logits in LOGITS_TO_KEEP]
    return points


def environment() -> dict:
    return dict(
        torch=torch.__version__, transformers=transformers.__version__, python=platform.python_version(),
        platform=platform.platform(), machine=platform.machine(), torch_threads=torch.get_num_threads(),
        device="cpu",
    )


def run(points: list[dict], measure_point=None, env: dict | None = None, log=sys.stderr) -> dict:
    """Measure every point (``measure_point``: :func:`measure`, or the CUDA one) into a fixture dict."""
    measure_point = measure_point or measure
    rows = []
    for i, point in enumerate(points, 1):
        row = measure_point(point)
        rows.append(row)
        m = row["measured"]
        cross = f" (allocator {m['allocator_peak_bytes']:,})" if "allocator_peak_bytes" in m else ""
        print(f"[{i}/{len(points)}] {_label(point)}: {m['peak_bytes']:,} B{cross}, {m['peak_phase']}, "
              f"{row['seconds']} s", file=log)
    return dict(
        format=("memsym peaks fixture v1: environment, the loop, models (name -> registry id, overrides, "
                "config) and points (the grid point's inputs + measured: peak_bytes from MemTracker, "
                "allocator_peak_bytes from the profiler's allocation events, peak_phase, breakdown at the "
                "peak by MemTracker category, and the bytes of parameters, buffers, optimizer state, "
                "inputs, KV cache and logits); every byte count an exact integer"),
        generator="tools/measure/peaks.py",
        environment=env or environment(),
        training_loop=("loss = model(input_ids=ids, labels=ids, use_cache=False).loss; loss.backward(); "
                       f"AdamW({ADAMW}, foreach=<point>).step(); zero_grad(set_to_none=True); "
                       "second iteration measured"),
        inference_call="torch.no_grad(): model(input_ids=ids, use_cache=True, logits_to_keep=0|1)",
        models={name: dict(registry_id=MODELS[name][0], overrides=MODELS[name][1], config=model_config(name))
                for name in sorted({p["model"] for p in points})},
        points=rows,
    )


def _label(point: dict) -> str:
    extra = (f"gc={point['gradient_checkpointing']} foreach={point['foreach']}" if point["mode"] == "training"
             else f"logits={point['logits']}")
    return (f"{point['model']} {point['mode']} {point['attention']} {point['dtype']} "
            f"b={point['batch_size']} s={point['seq_len']} {extra}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", choices=list(MODELS), help="models to measure")
    parser.add_argument("--mode", choices=("training", "inference"), help="one mode only")
    parser.add_argument("--quick", action="store_true", help="the live test's subset only")
    parser.add_argument("--stdout", action="store_true", help="print the JSON instead of writing it")
    parser.add_argument("--out", default=OUT, help="fixture path (default: %(default)s)")
    args = parser.parse_args(argv)
    modes = (args.mode,) if args.mode else ("training", "inference")
    points = [dict(p) for p in QUICK] if args.quick else grid(args.only, modes)
    return write(run(points), args.out, args.stdout, len(points))


def write(data: dict, out: str, stdout: bool, count: int) -> int:
    """The fixture as JSON on stdout, or replacing ``out`` whole (nothing written half-way)."""
    text = json.dumps(data, indent=1) + "\n"
    if stdout:
        sys.stdout.write(text)
        return 0
    tmp = out + ".tmp"
    with open(tmp, "w") as fh:
        fh.write(text)
    os.replace(tmp, out)
    print(f"wrote {os.path.relpath(out, ROOT)} ({count} points)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
