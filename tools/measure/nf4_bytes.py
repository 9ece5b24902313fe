#!/usr/bin/env python3
"""Bytes of torchao's NF4Tensor (QLoRA's base in torchtune) for a few bf16 weight shapes.

torchtune's FrozenNF4Linear and LoRALinear(quantize_base=True) call torchao's ``to_nf4``;
this sums the storages of the NF4Tensor's inner tensors (``__tensor_flatten__``). Needs
torchao (not a memsym dependency): ``pip install --no-deps torchao==0.7.0`` in a scratch venv.

Usage: ``python tools/measure/nf4_bytes.py`` -> tests/fixtures/torchao_nf4_cpu.json
"""
from __future__ import annotations

import json
import os
import sys

import torch

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "fixtures",
                   "torchao_nf4_cpu.json")
SHAPES = [(3072, 8192), (8192, 3072), (1024, 3072), (14336, 4096)]


def main() -> int:
    import torchao
    from torchao.dtypes.nf4tensor import to_nf4

    rows = []
    for out_features, in_features in SHAPES:
        nf4 = to_nf4(torch.zeros(out_features, in_features, dtype=torch.bfloat16).normal_())
        names, _ = nf4.__tensor_flatten__()
        parts = {name: getattr(nf4, name).untyped_storage().nbytes() for name in names}
        rows.append({"rows": out_features, "cols": in_features, "bytes": sum(parts.values()), "parts": parts})
    doc = {"about": "bytes of torchao NF4Tensor (to_nf4, bf16 input), tools/measure/nf4_bytes.py",
           "torchao": torchao.__version__, "torch": torch.__version__, "rows": rows}
    with open(OUT, "w") as fh:
        fh.write(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
