"""What llama.cpp allocates for the KV cache: the ``llamacpp`` profile's formulas.

Read off llama.cpp (ggml-org/llama.cpp, ``src/llama-context.cpp``, the
``llama_context::llama_context`` constructor; ``src/llama-kv-cache.cpp``, the
``llama_kv_cache::llama_kv_cache`` constructor; ``src/llama-model.cpp``,
``llama_model::create_memory``):

- the context ``-c`` (``n_ctx``) is padded: ``n_ctx = GGML_PAD(n_ctx, 256)``;
- with a unified cache (``--kv-unified``; llama-server's default when ``-np`` is left on
  auto, ``tools/server/server.cpp``: 4 slots) one stream of ``n_ctx`` cells serves every
  slot: ``n_ctx_seq = n_ctx``;
- otherwise each of the ``-np`` slots (``n_seq_max``) gets its own stream of
  ``n_ctx_seq = GGML_PAD(n_ctx / n_seq_max, 256)`` cells (integer division), and
  ``n_ctx = n_ctx_seq n_seq_max``;
- ``create_memory`` passes ``kv_size = n_ctx_seq`` and ``n_pad = 1``; the cache has
  ``n_stream = unified ? 1 : n_seq_max`` streams, and per layer and stream a K tensor of
  ``ggml_row_size(type_k, n_embd_k_gqa) kv_size`` bytes and a V tensor likewise with
  ``type_v``, ``n_embd_k_gqa = n_head_kv d``.

``ggml_row_size(type, n) = type_size n / block_size`` (``ggml/src/ggml.c``, ``type_traits``),
so a cache element of type ``t`` takes ``type_size / block_size`` bytes exactly: the
rational widths of :data:`CACHE_TYPES`. Here ``s`` is ``-c`` and ``b`` is ``-np``.
"""

from __future__ import annotations

from fractions import Fraction

import sympy

from formulas.symbols import (batch_size, head_dim, kv_key_bytes, kv_value_bytes, num_hidden_layers,
                              num_key_value_heads, seq_len, vocab_size)

CONTEXT_PAD = 256  # llama-context.cpp: cparams.n_ctx = GGML_PAD(cparams.n_ctx, 256), and n_ctx_seq likewise
# --cache-type-k/-v values (common/arg.cpp, kv_cache_types) -> (block size, bytes per block),
# ggml/src/ggml.c type_traits: blck_size and type_size of each ggml type.
CACHE_TYPES: dict[str, tuple[int, int]] = {
    "f32": (1, 4), "f16": (1, 2), "bf16": (1, 2),
    "q8_0": (32, 34),  # block_q8_0: fp16 scale + 32 int8
    "q4_0": (32, 18),  # block_q4_0: fp16 scale + 16 bytes of nibbles
    "q4_1": (32, 20),  # block_q4_1: fp16 scale and min + 16 bytes
    "iq4_nl": (32, 18),  # block_iq4_nl: fp16 scale + 16 bytes
    "q5_0": (32, 22),  # block_q5_0: fp16 scale + 4 bytes of high bits + 16 bytes
    "q5_1": (32, 24),  # block_q5_1: fp16 scale and min + 4 + 16 bytes
}
DEFAULT_CACHE_TYPE = "f16"  # common/common.h: cache_type_k = cache_type_v = GGML_TYPE_F16
DEFAULT_SLOTS = 4  # tools/server/server.cpp: -np auto -> n_parallel = 4 with kv_unified = true
UBATCH = 512  # common/common.h: n_ubatch = 512 (and n_batch = 2048), the -ub / -b defaults
LOGIT_BYTES = 4  # the logits are float32: ggml_mul_mat's result type (src/llama-graph.h, t_logits)


def element_bytes(cache_type: str) -> Fraction:
    """Bytes per cache element of a ``--cache-type-k/-v`` value: ``type_size / block_size``."""
    block, size = CACHE_TYPES[cache_type]
    return Fraction(size, block)


def pad(n: sympy.Expr) -> sympy.Expr:
    """``GGML_PAD(n, 256) = 256 ceil(n / 256)``."""
    return CONTEXT_PAD * sympy.ceiling(n / CONTEXT_PAD)


def kv_cells(unified: bool) -> sympy.Expr:
    """Cells over all streams: ``pad(s)`` unified, else ``b pad(floor(pad(s) / b))``."""
    if unified:
        return pad(seq_len)
    return batch_size * pad(sympy.floor(pad(seq_len) / batch_size))


def cells_per_slot(unified: bool) -> sympy.Expr:
    """``n_ctx_seq``: the cells one slot may fill (the whole padded context when unified)."""
    if unified:
        return pad(seq_len)
    return pad(sympy.floor(pad(seq_len) / batch_size))


def kv_cache(unified: bool) -> dict[str, sympy.Expr]:
    """K and V bytes: ``L a_kv d beta_k cells`` and ``L a_kv d beta_v cells``."""
    per_layer_cell = num_hidden_layers * num_key_value_heads * head_dim * kv_cells(unified)
    return {"kv_cache/keys": kv_key_bytes * per_layer_cell, "kv_cache/values": kv_value_bytes * per_layer_cell}


def logits_floor() -> sympy.Expr:
    """A floor under the compute buffer: the logits of one ubatch, ``4 V min(s, 512)`` bytes.

    ``llama_context::sched_reserve`` sizes the compute buffer by reserving the prompt graph of
    ``n_tokens = min(n_ctx, n_ubatch)`` tokens with every token an output, so the float32
    ``[n_vocab, n_tokens]`` logits are among its tensors; the rest (attention scores, MLP
    temporaries, reused by ggml-alloc) is not modelled.
    """
    return LOGIT_BYTES * vocab_size * sympy.Min(seq_len, UBATCH)
