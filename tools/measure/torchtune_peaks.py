#!/usr/bin/env python3
"""Peak memory of a torchtune-style training step on CPU: chunked CE and optimizer in backward.

torchtune is not a dependency: the model is tools/measure/compile_saved.py's torchtune-shaped
layer (RMSNorm, Llama3 RoPE in fp32, GQA expanded before SDPA, SwiGLU) stacked into a decoder
with torchtune's output (``output(h).float()``, or ``chunked_output`` for the chunked loss),
and the loop is recipes/full_finetune_single_device.py's ``_loss_step`` + ``train``: shifted
labels by ``torch.hstack``, ``CEWithChunkedOutputLoss`` op for op, ``del logits``,
``backward``, ``step``, ``zero_grad(set_to_none=True)``; ``optimizer_in_bwd`` as
torchtune/training/memory.py register_optim_in_bwd_hooks does it (one AdamW per parameter,
stepped and zeroed in its post-accumulate-grad hook). AdamW runs ``foreach=True``, the CUDA
default the profile models. Measured with MemTracker on the second step (optimizer state
exists), as tools/measure/peaks.py does. Points with ``release`` "0.2" run torchtune <= 0.2.1's
loop instead (recipes/full_finetune_single_device.py ``train`` at 30c75d4): the fp32 logits
sliced with ``logits[..., :-1, :].contiguous()``, transposed, ``nn.CrossEntropyLoss`` over
``(b, V, s - 1)``, and ``logits`` still alive through ``backward`` (no ``del``).

Usage: ``python tools/measure/torchtune_peaks.py [--stdout]`` -> tests/fixtures/torchtune_peaks_cpu.json
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributed._tools.mem_tracker import MemTracker

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compile_saved import Layer, RMSNorm  # noqa: E402  (the torchtune-shaped layer)

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "tests", "fixtures", "torchtune_peaks_cpu.json")
CONFIG = dict(model_type="llama", hidden_size=128, intermediate_size=384, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, head_dim=32, vocab_size=4096,
              max_position_embeddings=1024, rms_norm_eps=1e-5, rope_theta=500000.0, tie_word_embeddings=False,
              attention_bias=False, mlp_bias=False, hidden_act="silu", torch_dtype="bfloat16")
# A decoder whose checkpointed layers, not its loss, set the peak (small vocabulary, wide MLP).
WIDE = dict(CONFIG, hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=8,
            num_key_value_heads=2, vocab_size=512)
IGNORE = -100


class Decoder(nn.Module):
    def __init__(self, c: dict):
        super().__init__()
        h, d = c["hidden_size"], c["head_dim"]
        self.tok_embeddings = nn.Embedding(c["vocab_size"], h)
        self.layers = nn.ModuleList(Layer(h, c["num_attention_heads"], c["num_key_value_heads"], d,
                                          c["intermediate_size"]) for _ in range(c["num_hidden_layers"]))
        self.norm = RMSNorm(h)
        self.output = nn.Linear(h, c["vocab_size"], bias=False)
        self.num_output_chunks = 0
        self.checkpointing = False
        self.register_buffer("cache", torch.randn(c["max_position_embeddings"], d // 2, 2), persistent=False)

    def forward(self, tokens):
        h = self.tok_embeddings(tokens)
        cache = self.cache[: tokens.shape[1]]
        for layer in self.layers:
            if self.checkpointing:  # training.set_activation_checkpointing: non-reentrant checkpoint_wrapper
                h = torch.utils.checkpoint.checkpoint(layer, h, cache, use_reentrant=False)
            else:
                h = layer(h, cache)
        h = self.norm(h)
        if self.num_output_chunks:
            return [self.output(chunk) for chunk in h.chunk(self.num_output_chunks, dim=1)]
        return self.output(h).float()


def chunked_ce(logits: list, labels, chunks: int):
    """CEWithChunkedOutputLoss.forward, op for op."""
    total_elements = (labels != IGNORE).sum()
    labels = [t.reshape(-1) for t in labels.chunk(chunks, dim=1)]
    logits = [x.reshape(-1, x.size(-1)) for x in logits]
    total = 0.0
    for x, y in zip(logits, labels):
        total += F.cross_entropy(x.float(), y, ignore_index=IGNORE, reduction="sum")
    return total / total_elements


def measure(point: dict) -> dict:
    torch.manual_seed(0)
    config = WIDE if point.get("config") == "wide" else CONFIG
    model = Decoder(config).to(torch.bfloat16)
    model.cache = model.cache.float()
    chunks, in_backward = point["loss_chunks"], point["optimizer_in_backward"]
    model.num_output_chunks = chunks or 0
    model.checkpointing = point.get("recompute") == "full"
    b, s = point["batch_size"], point["seq_len"]
    tokens = torch.randint(0, config["vocab_size"], (b, s))
    labels_in = tokens.clone()
    ignore = torch.full((b, 1), IGNORE)
    opt, optims = None, {}
    if in_backward:
        optims = {p: torch.optim.AdamW([p], foreach=True) for p in model.parameters()}

        def hook(p):
            optims[p].step()
            optims[p].zero_grad()

        for p in model.parameters():
            p.register_post_accumulate_grad_hook(hook)
    else:
        opt = torch.optim.AdamW(model.parameters(), foreach=True)

    def step():
        if point.get("release") == "0.2":
            return step_sliced()
        logits = model(tokens)
        labels = torch.hstack((labels_in[..., 1:], ignore[:b]))
        if chunks:
            loss = chunked_ce(logits, labels, chunks)
        else:
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=IGNORE)
        del logits
        loss.backward()
        del loss
        if opt is not None:
            opt.step()
            opt.zero_grad(set_to_none=True)

    def step_sliced():
        logits = model(tokens)
        logits = logits[..., :-1, :].contiguous()
        labels = labels_in[..., 1:].contiguous()
        logits = logits.transpose(1, 2)
        loss = nn.CrossEntropyLoss()(logits, labels)
        loss.backward()
        del loss
        if opt is not None:
            opt.step()
            opt.zero_grad(set_to_none=True)

    step()
    tracker = MemTracker()
    tracker.track_external(model, *([opt] if opt else list(optims.values())), tokens)
    with tracker:
        step()
    (snapshot,) = tracker.get_tracker_snapshot("peak").values()
    buffers = sum(t.untyped_storage().nbytes() for t in model.buffers())
    return {**point, "peak_bytes": int(snapshot["Total"]), "buffer_bytes": buffers}


def pack_order(b: int = 2, s: int = 64) -> list[dict]:
    """The saved-tensor pack calls of the last checkpointed layer and the final norm, in order,
    as OffloadActivations.pack_tensor sees them (each call gets the next tensor id): which
    tensors its ``fwd_stash`` of the last five calls holds when backward starts. (The rope
    cache is a checkpoint argument here, a module buffer in torchtune; it comes first.)"""
    torch.manual_seed(0)
    model = Decoder(CONFIG).to(torch.bfloat16)
    layer, norm = model.layers[-1], model.norm
    x = torch.randn(b, s, CONFIG["hidden_size"], dtype=torch.bfloat16, requires_grad=True)
    calls = []

    def pack(t):
        calls.append(dict(bytes=t.untyped_storage().nbytes(), storage=t.untyped_storage().data_ptr(),
                          parameter=isinstance(t, nn.Parameter), layer_input=t is x))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        torch.utils.checkpoint.checkpoint(layer, x, model.cache[:s].float(), use_reentrant=False)
        y = norm(x.detach().requires_grad_())
    names: dict[int, int] = {}  # a storage's first call names it: a tensor saved twice shares it
    for i, c in enumerate(calls):
        c["storage"] = names.setdefault(c["storage"], i)
    del y
    return calls


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stdout", action="store_true")
    args = parser.parse_args()
    points = [dict(batch_size=b, seq_len=s, loss_chunks=c, optimizer_in_backward=o)
              for (b, s), c, o in itertools.product([(2, 64), (1, 256)], [None, 8], [False, True])]
    points += [dict(batch_size=b, seq_len=s, loss_chunks=None, optimizer_in_backward=o, release="0.2")
               for (b, s), o in itertools.product([(2, 64), (1, 256)], [False, True])]
    points += [dict(batch_size=b, seq_len=s, loss_chunks=c, optimizer_in_backward=o, recompute="full")
               for (b, s), c, o in itertools.product([(4, 256), (8, 512)], [None, 8], [False, True])]
    points += [dict(batch_size=b, seq_len=s, loss_chunks=None, optimizer_in_backward=o, recompute="full",
                    config="wide") for (b, s), o in itertools.product([(4, 256), (8, 512)], [False, True])]
    rows = [measure(p) for p in points]
    doc = {"about": "peak bytes (MemTracker, second step) of a torchtune-style bf16 training step on CPU; "
                    "model: CONFIG, a torchtune-shaped decoder (tools/measure/torchtune_peaks.py)",
           "torch": torch.__version__, "config": CONFIG, "wide_config": WIDE, "rows": rows,
           "pack_order": {"b": 2, "s": 64, "calls": pack_order()}}
    text = json.dumps(doc, indent=1)
    if args.stdout:
        print(text)
    else:
        with open(OUT, "w") as fh:
            fh.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
