#!/usr/bin/env python3
"""Bytes a torchtune-shaped Llama layer saves for backward, eager vs torch.compile'd.

The layer mirrors torchtune's modules op for op (torchtune/modules/rms_norm.py RMSNorm:
``x.float()``, ``rsqrt(mean(x^2) + eps)``, ``type_as``, ``* scale``;
torchtune/models/llama3_1/_position_embeddings.py Llama3ScaledRoPE: ``x.float()``,
pairwise rotation, ``type_as``; torchtune/modules/attention.py MultiHeadAttention: GQA
keys/values expanded with ``expand(...).flatten(1, 2)`` before SDPA;
torchtune/modules/feed_forward.py FeedForward: ``w2(silu(w1 x) * w3 x)``;
torchtune/modules/transformer.py TransformerSelfAttentionLayer: two residual adds).

Compiled runs use ``backend="aot_eager_decomp_partition"``: the decompositions and the
``min_cut_rematerialization_partition`` inductor uses to choose what the forward saves,
without inductor's code generation (so no C++ compiler is needed on CPU). Saved bytes
are counted with ``torch.autograd.graph.saved_tensors_hooks`` (the hook torchtune's
activation offloading uses), unique storages once. Parameters are excluded.

Usage: ``python tools/measure/compile_saved.py [--stdout]`` -> tests/fixtures/compile_saved_cpu.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch
import torch.nn.functional as F
from torch import nn

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "tests", "fixtures", "compile_saved_cpu.json")
# b, s, h, heads, kv heads, head dim, intermediate (Llama-3.2-3B's ratios, shrunk)
SHAPES = [dict(b=2, s=64, h=96, a=6, a_kv=2, d=16, f=256), dict(b=1, s=128, h=128, a=4, a_kv=4, d=32, f=384)]


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps, self.scale = eps, nn.Parameter(torch.ones(dim))

    def forward(self, x):
        x_fp32 = x.float()
        x_normed = (x_fp32 * torch.rsqrt(x_fp32.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x)
        return x_normed * self.scale


def rope(x, cache):
    xshaped = x.float().reshape(*x.shape[:-1], -1, 2)
    cache = cache.view(1, xshaped.size(1), 1, xshaped.size(3), 2)
    out = torch.stack([xshaped[..., 0] * cache[..., 0] - xshaped[..., 1] * cache[..., 1],
                       xshaped[..., 1] * cache[..., 0] + xshaped[..., 0] * cache[..., 1]], -1)
    return out.flatten(3).type_as(x)


class Layer(nn.Module):
    def __init__(self, h, a, a_kv, d, f):
        super().__init__()
        self.a, self.a_kv, self.d = a, a_kv, d
        self.sa_norm, self.mlp_norm = RMSNorm(h), RMSNorm(h)
        self.q, self.k = nn.Linear(h, a * d, bias=False), nn.Linear(h, a_kv * d, bias=False)
        self.v, self.o = nn.Linear(h, a_kv * d, bias=False), nn.Linear(a * d, h, bias=False)
        self.w1, self.w3 = nn.Linear(h, f, bias=False), nn.Linear(h, f, bias=False)
        self.w2 = nn.Linear(f, h, bias=False)

    def attention(self, x, cache):
        b, s, _ = x.shape
        q = rope(self.q(x).view(b, s, self.a, self.d), cache).transpose(1, 2)
        k = rope(self.k(x).view(b, s, self.a_kv, self.d), cache).transpose(1, 2)
        v = self.v(x).view(b, s, self.a_kv, self.d).transpose(1, 2)
        if self.a != self.a_kv:
            shape = (b, self.a_kv, self.a // self.a_kv, -1, self.d)
            k = k.unsqueeze(2).expand(shape).flatten(1, 2)
            v = v.unsqueeze(2).expand(shape).flatten(1, 2)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o(out.transpose(1, 2).contiguous().view(b, s, -1))

    def forward(self, x, cache):
        h = x + self.attention(self.sa_norm(x), cache)
        normed = self.mlp_norm(h)
        return h + self.w2(F.silu(self.w1(normed)) * self.w3(normed))


def saved_bytes(layer, x, cache) -> int:
    params = {p.untyped_storage().data_ptr() for p in layer.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = layer(x, cache)
    out.sum().backward()
    return sum(seen.values())


def measure(shape: dict) -> dict:
    torch.manual_seed(0)
    b, s, h, a, a_kv, d, f = (shape[k] for k in ("b", "s", "h", "a", "a_kv", "d", "f"))
    layer = Layer(h, a, a_kv, d, f).to(torch.bfloat16)
    cache = torch.randn(s, d // 2, 2, dtype=torch.float32)
    x = torch.randn(b, s, h, dtype=torch.bfloat16, requires_grad=True)
    eager = saved_bytes(layer, x, cache)
    compiled = saved_bytes(torch.compile(layer, backend="aot_eager_decomp_partition"), x, cache)
    return {**shape, "eager_saved_bytes": eager, "compiled_saved_bytes": compiled}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stdout", action="store_true")
    args = parser.parse_args()
    rows = [measure(shape) for shape in SHAPES]
    doc = {"about": "bytes saved for backward by one torchtune-shaped bf16 Llama layer (parameters excluded); "
                    "compiled = aot_eager_decomp_partition (inductor's decompositions and min-cut partitioner)",
           "torch": torch.__version__, "rows": rows}
    text = json.dumps(doc, indent=1)
    if args.stdout:
        print(text)
    else:
        with open(OUT, "w") as fh:
            fh.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
