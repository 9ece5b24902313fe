#!/usr/bin/env python3
"""Bytes of bitsandbytes AdamW8bit state per tensor, read off the real optimizer on CPU.

One step of ``bitsandbytes.optim.AdamW8bit`` on bf16 parameters of several sizes (around
``min_8bit_size`` = 4096 and the 256-value absmax blocks); records every state tensor's
storage bytes, the ``qmap`` tables (shared by every parameter) once.

Usage: ``python tools/measure/bnb_state.py [--stdout]`` -> tests/fixtures/bnb_state_cpu.json
(needs ``pip install --no-deps bitsandbytes==0.50.2``; torch stays the pinned 2.13).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "tests", "fixtures", "bnb_state_cpu.json")
SIZES = (1, 255, 4095, 4096, 4097, 65_536, 100_000, 1_000_003)


def main() -> int:
    import bitsandbytes as bnb

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stdout", action="store_true")
    args = parser.parse_args()
    params = [torch.nn.Parameter(torch.randn(n, dtype=torch.bfloat16)) for n in SIZES]
    opt = bnb.optim.AdamW8bit(params)
    for p in params:
        p.grad = torch.randn_like(p)
    opt.step()
    shared: dict[int, int] = {}
    rows = []
    for n, p in zip(SIZES, params):
        state = {k: v for k, v in opt.state[p].items() if torch.is_tensor(v) and k != "step"}
        own = 0
        for key, tensor in state.items():
            storage = tensor.untyped_storage()
            if key.startswith("qmap"):
                shared[storage.data_ptr()] = storage.nbytes()
            else:
                own += storage.nbytes()
        rows.append({"numel": n, "state_bytes": own, "keys": sorted(state)})
    doc = {"about": "bitsandbytes AdamW8bit state bytes per bf16 tensor after one step on CPU (qmap tables "
                    "shared, counted once in shared_qmap_bytes)", "bitsandbytes": bnb.__version__,
           "torch": torch.__version__, "rows": rows, "shared_qmap_bytes": sum(shared.values())}
    text = json.dumps(doc, indent=1)
    if args.stdout:
        print(text)
    else:
        with open(OUT, "w") as fh:
            fh.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
