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

from formulas.symbols import (batch_size, head_dim, hidden_size, intermediate_size, kv_key_bytes, kv_value_bytes,
                              moe_intermediate_size, num_attention_heads, num_experts_per_tok, num_hidden_layers,
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
F32 = 4  # the graph's activations are float32 (ggml_mul_mat's result type); the FA mask copy is f16
F16 = 2  # src/llama-graph.cpp build_attn_inp_kq_mask: self_kq_mask_cnv = ggml_cast(mask, GGML_TYPE_F16) with -fa


def offloaded_layers(n_layer: int, gpu_layers: int | None) -> int:
    """Repeating layers on the GPU under ``-ngl``: ``n_layer - max(n_layer + 1 - ngl, 0)``.

    src/llama-model.cpp ``load_tensors``: ``i_gpu_start = max(n_layer + 1 - n_gpu_layers, 0)``;
    layer ``il`` is on the GPU when ``il >= i_gpu_start``, the output layer (``il = n_layer``)
    whenever ``ngl >= 1``, and the input layer (token embeddings) never. None: every layer.
    """
    if gpu_layers is None:
        return n_layer
    return n_layer - max(n_layer + 1 - gpu_layers, 0)


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


def reserve_tokens() -> sympy.Expr:
    """``n_tokens`` of the worst-case graph: ``min(n_ctx, n_ubatch) = min(pad(s), 512)``, every one an output
    (src/llama-context.cpp, llama_context::llama_context: ``n_tokens = std::min(cparams.n_ctx, cparams.n_ubatch)``)."""
    return sympy.Min(pad(seq_len), UBATCH)


def compute_buffer(unified: bool, flash_attention: bool, moe: bool) -> dict[str, sympy.Expr]:
    """The compute buffer llama.cpp reserves, estimated as the largest set of tensors alive at once.

    llama.cpp sizes it by allocating the worst-case graph with ggml-alloc
    (``llama_context::graph_reserve`` -> ``ggml_backend_sched_reserve`` -> ``ggml_gallocr_reserve``):
    a tensor's memory is reused once its last consumer has run, and soft_max, rope, add, mul
    and the unary ops run in place (ggml/src/ggml-alloc.c, ``ggml_op_can_inplace``). With
    ``u`` = :func:`reserve_tokens` tokens, ``n`` = the cells of one slot, all float32
    (``F = 4`` bytes), three moments hold the most:

    - attention of one layer: the mask ``F u n`` (input of every layer, alive until the last;
      with flash attention also its f16 copy ``2 u n``), the residual ``F u H``, q and the
      attention output ``2 F u a d``, and without flash attention the scores
      ``KQ = ggml_mul_mat(k, q)``, ``F u a n`` (src/llama-graph.cpp, ``build_attn_mha``;
      soft_max reuses them in place);
    - the MLP of one layer: the mask, the residual and gate and up, ``2 F u w`` (``w`` the
      intermediate size; for MoE ``max(I, k I_e)``, build_moe_ffn's selected experts);
    - the output: the logits ``F u V`` (``t_logits``) and the final norm ``F u H``.

    The buffer is the largest of them. It is a lower bound of what ggml-alloc reserves: the
    placement of blocks adds to it (4.4 % in the one long-context log checked,
    ggml-org/llama.cpp#10052; Meta-Llama-3-8B at -c 2048 matches its logged 258.50 MiB exactly;
    tests/test_llamacpp.py); a model's own extra tensors (biases, q/k norms) are small.
    """
    u, n = reserve_tokens(), cells_per_slot(unified)
    width = sympy.Max(intermediate_size, num_experts_per_tok * moe_intermediate_size) if moe else intermediate_size
    mask = F32 * u * n + (F16 * u * n if flash_attention else 0)
    scores = 0 if flash_attention else F32 * u * num_attention_heads * n
    attention = mask + F32 * u * (hidden_size + 2 * num_attention_heads * head_dim) + scores
    mlp = mask + F32 * u * (hidden_size + 2 * width)
    output = LOGIT_BYTES * u * (vocab_size + hidden_size)
    return {"attention": attention, "mlp": mlp, "output": output}
