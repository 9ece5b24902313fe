#!/usr/bin/env python3
"""Peak of a transformers training step with bitsandbytes AdamW8bit on CPU.

tools/measure/peaks.py's training step (same tiny models, loop and MemTracker), with
``bitsandbytes.optim.AdamW8bit`` in place of ``torch.optim.AdamW`` (bitsandbytes 0.50.2 has
CPU 8-bit optimizers). Writes tests/fixtures/bnb_peaks_cpu.json in peaks.py's format.

Usage: ``python tools/measure/bnb_peaks.py [--stdout]``
(needs ``pip install --no-deps bitsandbytes==0.50.2``; torch stays the pinned 2.13).
"""
from __future__ import annotations

import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peaks  # noqa: E402

OUT = os.path.join(peaks.ROOT, "tests", "fixtures", "bnb_peaks_cpu.json")
POINTS = [dict(model=m, mode="training", attention="sdpa", dtype="bfloat16", batch_size=b, seq_len=s,
               gradient_checkpointing=gc, foreach=False, optimizer="adamw8bit")
          for m in ("qwen3-tiny", "llama-tiny") for (b, s) in ((1, 256), (2, 128)) for gc in (False, True)]


def main() -> int:
    import bitsandbytes as bnb

    def adamw8bit(params, foreach=False, **kwargs):
        return bnb.optim.AdamW8bit(params, **kwargs)

    peaks.torch.optim.AdamW = adamw8bit  # measure_training builds its optimizer by this name
    data = peaks.run(POINTS, env=dict(peaks.environment(), bitsandbytes=bnb.__version__))
    text = json.dumps(data, indent=1)
    if "--stdout" in sys.argv:
        print(text)
    else:
        with open(OUT, "w") as fh:
            fh.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
