#!/usr/bin/env python3
"""Peak memory of MoE training steps on CPU (transformers 5.24, torch 2.13).

tools/measure/peaks.py's training step (``peaks.measure_step``: MemTracker on the second
iteration, AdamW single-tensor) on four tiny MoE models of real families, random weights, 8
experts, top-2: ``qwen3-moe-tiny`` (the registry's Qwen3-30B-A3B config shrunk,
``norm_topk_prob``), ``mixtral-tiny`` (Mixtral-8x7B), ``qwen2-moe-tiny`` (Qwen1.5-MoE-A2.7B: a
shared expert of width 512 behind a sigmoid gate, no renormalisation) and ``glm4-moe-tiny``
(GLM-4.5-Air: sigmoid router with the correction bias, one shared expert, the first layer dense,
q/k/v biases, ``partial_rotary_factor`` 0.5). Their
experts run through transformers' default ``grouped_mm`` (integrations/moe.py
grouped_mm_experts_forward; ``torch.nn.functional.grouped_mm`` has a CPU kernel in torch 2.13);
the run records which implementation the model used. ``output_router_logits`` keeps the
configs' default (False: no auxiliary loss). ``amp`` points: an fp32 model under accelerate's bf16
autocast, as tools/measure/hf_peaks.py runs it (grouped_mm is no autocast op: the experts run in
float32, ``_grouped_mm`` casts their input to the weights' dtype). ``lora`` points: hf_peaks.py's
PEFT LoRA (rank 8, fp32 adapters) on the attention projections of the frozen bf16 model.

Writes tests/fixtures/moe_peaks_cpu.json in peaks.py's format.
Usage: ``python tools/measure/moe_peaks.py [--stdout] [--only MODEL ...] [--mechanism moe|amp|lora ...]
[--no-allocator]`` (``--only``/``--mechanism`` measure a subset and merge it into the fixture;
``--no-allocator`` skips the profiler's cross-check, which doubles each point's time).
"""
from __future__ import annotations

import argparse
import json
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
peaks.MODELS["qwen2-moe-tiny"] = ("qwen1.5-moe-a2.7b", dict(
    hidden_size=256, intermediate_size=768, moe_intermediate_size=128, shared_expert_intermediate_size=512,
    num_experts=8, num_experts_per_tok=2, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
    vocab_size=16384, max_window_layers=4))
peaks.MODELS["glm4-moe-tiny"] = ("glm-4.5-air", dict(
    hidden_size=256, intermediate_size=768, moe_intermediate_size=128, n_routed_experts=8, num_experts_per_tok=2,
    n_shared_experts=1, first_k_dense_replace=1, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
    head_dim=64, vocab_size=16384, pad_token_id=0, eos_token_id=[1, 2]))
MOE_MODELS = ("qwen3-moe-tiny", "mixtral-tiny", "qwen2-moe-tiny", "glm4-moe-tiny")
SHAPES = ((1, 256), (2, 128), (2, 256))
AMP_SHAPES = ((2, 512, False), (4, 256, False), (2, 512, True), (1, 256, False))
ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
PREFILL_SHAPES = ((1, 256, "last", "sdpa", "bfloat16"), (2, 512, "last", "sdpa", "bfloat16"),
                  (1, 256, "all", "sdpa", "bfloat16"), (2, 256, "last", "eager", "bfloat16"),
                  (2, 256, "last", "sdpa", "float32"))
LORA_SHAPES = ((1, 256, False, ATTENTION), (2, 128, True, ATTENTION), (2, 256, False, ("q_proj", "v_proj")))


def _points() -> list[dict]:
    points = []
    for model in MOE_MODELS:
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
    for model in MOE_MODELS:  # peaks.py's no-grad prefill into a DynamicCache
        for (b, s, logits, attention, dtype) in PREFILL_SHAPES:
            points.append(dict(model=model, mode="inference", batch_size=b, seq_len=s, logits=logits,
                               attention=attention, dtype=dtype, mechanism="prefill"))
    for model in MOE_MODELS:  # hf_peaks.py's PEFT LoRA (fp32 adapters) on the attention of a frozen MoE model
        for (b, s, gc, targets) in LORA_SHAPES[:3 if model == "qwen3-moe-tiny" else 2]:
            points.append(dict(model=model, mode="training", batch_size=b, seq_len=s, gradient_checkpointing=gc,
                               foreach=False, attention="sdpa", dtype="bfloat16", mechanism="lora",
                               lora_rank=hf_peaks.LORA_RANK, lora_targets=list(targets)))
    return points


def measure(point: dict) -> dict:
    start = time.perf_counter()
    if point["mode"] == "inference":
        measured = peaks.measure_inference(point)
    elif point["mechanism"] in ("amp", "lora"):
        measured = hf_peaks.measure_training(point)
    else:
        measured = peaks.measure_training(point)
    model = peaks.build_model(peaks.model_config(point["model"]), point["attention"], point["dtype"])
    measured["experts_implementation"] = model.config._experts_implementation
    return dict(point, measured=measured, seconds=round(time.perf_counter() - start, 2))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stdout", action="store_true")
    parser.add_argument("--only", nargs="*", choices=MOE_MODELS,
                        help="measure these models' points and replace them in the existing fixture")
    parser.add_argument("--mechanism", nargs="*", choices=("moe", "amp", "lora", "prefill"),
                        help="measure these mechanisms' points and replace them in the existing fixture")
    parser.add_argument("--no-allocator", action="store_true",
                        help="skip the profiler's allocator cross-check (allocator_peak_bytes left out)")
    args = parser.parse_args(argv)
    points = [p for p in _points() if (not args.only or p["model"] in args.only)
              and (not args.mechanism or p["mechanism"] in args.mechanism)]
    if args.no_allocator:
        peaks.allocator_peak = _no_allocator_peak
    data = peaks.run(points, measure_point=measure, env=peaks.environment())
    data["generator"] = "tools/measure/moe_peaks.py"
    for row in data["points"] if args.no_allocator else ():
        row["measured"].pop("allocator_peak_bytes")
    if args.only or args.mechanism:
        data = _merged(data)
    return peaks.write(data, OUT, args.stdout, len(data["points"]))


def _no_allocator_peak(run, baseline: int) -> int:
    return 0


def _key(point: dict) -> str:
    return json.dumps({k: v for k, v in point.items() if k not in ("measured", "seconds")}, sort_keys=True)


def _merged(data: dict) -> dict:
    """The existing fixture with ``data``'s points added or replacing the same points, in
    :func:`_points` order (points no longer in the grid dropped)."""
    with open(OUT) as fh:
        old = json.load(fh)
    rows = {_key(p): p for p in old["points"]} | {_key(p): p for p in data["points"]}
    order = [_key(p) for p in _points()]
    points = [rows[key] for key in order if key in rows]
    models = {name: spec for name, spec in {**old["models"], **data["models"]}.items()
              if name in {p["model"] for p in points}}
    return dict(old, environment=data["environment"], models=models, points=points)


if __name__ == "__main__":
    sys.exit(main())
