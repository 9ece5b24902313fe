#!/usr/bin/env python3
"""Peak memory of MoE training steps on CPU (transformers 5.24, torch 2.13).

tools/measure/peaks.py's training step (``peaks.measure_step``: MemTracker on the second
iteration, AdamW single-tensor) on two tiny MoE models of real families, random weights:
``qwen3-moe-tiny`` (the registry's Qwen3-30B-A3B config shrunk: 8 experts, top-2,
``norm_topk_prob``) and ``mixtral-tiny`` (Mixtral-8x7B shrunk: 8 experts, top-2). Their
experts run through transformers' default ``grouped_mm`` (integrations/moe.py
grouped_mm_experts_forward; ``torch.nn.functional.grouped_mm`` has a CPU kernel in torch 2.13);
the run records which implementation the model used. ``output_router_logits`` keeps the
configs' default (False: no auxiliary loss). ``amp`` points: an fp32 model under accelerate's bf16
autocast, as tools/measure/hf_peaks.py runs it (grouped_mm is no autocast op: the experts run in
float32, ``_grouped_mm`` casts their input to the weights' dtype).

Writes tests/fixtures/moe_peaks_cpu.json in peaks.py's format.
Usage: ``python tools/measure/moe_peaks.py [--stdout]``
"""
from __future__ import annotations

import argparse
import sys
import os
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hf_peaks  # noqa: E402
import peaks  # noqa: E402
import torch  # noqa: E402

OUT = os.path.join(peaks.ROOT, "tests", "fixtures", "moe_peaks_cpu.json")
peaks.MODELS["qwen3-moe-tiny"] = ("qwen3-30b-a3b", dict(
    hidden_size=256, intermediate_size=768, moe_intermediate_size=128, num_experts=8, num_experts_per_tok=2,
    num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, head_dim=64, vocab_size=16384,
    max_window_layers=4))
peaks.MODELS["mixtral-tiny"] = ("mixtral-8x7b-v0.1", dict(
    hidden_size=256, intermediate_size=512, num_local_experts=8, num_experts_per_tok=2,
    num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2, vocab_size=16384))
SHAPES = ((1, 256), (2, 128), (2, 256))
AMP_SHAPES = ((2, 512, False), (4, 256, False), (2, 512, True), (1, 256, False))


def _points() -> list[dict]:
    points = []
    for model in ("qwen3-moe-tiny", "mixtral-tiny"):
        for (b, s) in SHAPES:
            for gc in (False, True):
                points.append(dict(model=model, mode="training", batch_size=b, seq_len=s, gradient_checkpointing=gc,
                                   foreach=False, attention="sdpa", dtype="bfloat16", mechanism="moe"))
        for dtype, attention in (("float32", "sdpa"), ("bfloat16", "eager")):
            points.append(dict(model=model, mode="training", batch_size=1, seq_len=256, gradient_checkpointing=False,
                               foreach=False, attention=attention, dtype=dtype, mechanism="moe"))
        # hf_peaks.py's accelerate bf16 AMP; long enough that backward, not the fp32 optimizer step, peaks
        for (b, s, gc) in AMP_SHAPES:
            points.append(dict(model=model, mode="training", batch_size=b, seq_len=s, gradient_checkpointing=gc,
                               foreach=False, attention="sdpa", dtype="bfloat16", mechanism="amp"))
    return points


def measure(point: dict) -> dict:
    start = time.perf_counter()
    measured = hf_peaks.measure_training(point) if point["mechanism"] == "amp" else peaks.measure_training(point)
    model = peaks.build_model(peaks.model_config(point["model"]), point["attention"], point["dtype"])
    measured["experts_implementation"] = model.config._experts_implementation
    return dict(point, measured=measured, seconds=round(time.perf_counter() - start, 2))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stdout", action="store_true")
    args = parser.parse_args(argv)
    points = _points()
    data = peaks.run(points, measure_point=measure, env=peaks.environment())
    data["generator"] = "tools/measure/moe_peaks.py"
    return peaks.write(data, OUT, args.stdout, len(points))


if __name__ == "__main__":
    sys.exit(main())
