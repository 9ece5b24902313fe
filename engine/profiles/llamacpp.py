"""The ``llamacpp`` profile: weights and KV cache as llama.cpp (llama-server, llama-cli) holds them.

- ``weights``: with ``--gguf FILE``, the bytes the file stores, per ggml type (Q4_K, Q6_K,
  F32, ...), which llama.cpp maps or copies to the device as they are; otherwise the
  standard weight formula under ``--dtype`` / ``--weight-quant``, said so in the notes.
- ``kv_cache``: :mod:`formulas.frameworks.llamacpp`: ``--seq-len`` is llama.cpp's ``-c``
  (the context all slots share, padded to 256), ``--batch-size`` its ``-np`` slots,
  ``--cache-type-k/-v`` the element types and ``--kv-unified`` one shared stream.
- ``compute_buffer``: :func:`formulas.frameworks.llamacpp.compute_buffer`, an estimate of the
  buffer ggml-alloc reserves for the worst-case graph (``llama_context::graph_reserve``): the
  largest set of tensors alive at once, at one layer's attention (the f32 scores without
  ``-fa``), one layer's MLP, or the logits. A lower bound: block placement adds a few per
  cent; the notes give the three moments, and what llama.cpp logs ("CUDA0 compute buffer
  size") is the figure to compare.
- ``overhead``: ``--reserve``. The output (logits) buffer llama.cpp keeps on the host is
  not GPU memory.
- placement (``src/llama-model.cpp`` ``load_tensors``): the token embeddings stay in host
  memory (a tied output layer keeps its copy on the GPU); ``-ngl N`` puts the output layer and
  the last N-1 layers on the GPU, the others and their KV cache in ``host_terms``.

The cache holds every layer for every cell, with ``n_head_kv`` heads (llama.cpp's
``llama_kv_cache``); llama and qwen2/qwen3 GGUFs run so even where the HF config names a
sliding window. Other sliding-window models (llama.cpp's iswa cache) and MLA are refused.
"""

from __future__ import annotations

import sympy

from engine import architecture
from engine import terms as shared
from engine.errors import InputError
from engine.model import MemoryModel
from engine.profiles import Profile
from engine.scenario import Scenario
from engine.spec import ModelSpec
from formulas import overhead
from formulas import parameters as P
from formulas import symbols as S
from formulas.frameworks import llamacpp as F

KNOBS = frozenset({"batch_size", "seq_len", "dtype", "weight_quant", "quant_group_size", "reserve_bytes",
                   "cache_type_k", "cache_type_v", "kv_unified", "flash_attn", "gpu_layers"})
# llama.cpp's llama and qwen2/qwen3 graphs keep a full cache of every layer even where the HF
# config names a sliding window (Mistral-7B-v0.1: src/llama-model.cpp gives LLM_ARCH_LLAMA no SWA)
FULL_CACHE_FAMILIES = ("llama", "mistral", "qwen2", "qwen3")
SOURCES = {
    "weights": "the GGUF file's tensors as stored (gguf-py GGUFReader; ggml/src/ggml.c type_traits block sizes)",
    "weights (formula)": shared.SOURCES["weights"],
    "kv_cache": "llama.cpp src/llama-context.cpp llama_context::llama_context (n_ctx, n_ctx_seq padded to "
                "256); src/llama-kv-cache.cpp llama_kv_cache::llama_kv_cache (K and V per layer and stream, "
                "ggml_row_size of --cache-type-k/-v)",
    "compute_buffer": "estimate of ggml-alloc's worst-case graph (llama.cpp src/llama-context.cpp "
                      "llama_context::graph_reserve; src/llama-graph.cpp build_attn_mha, build_ffn, t_logits; "
                      "ggml/src/ggml-alloc.c ggml_op_can_inplace): the largest set of float32 tensors alive at once",
    "overhead": "the user's --reserve, for what llama.cpp holds beyond weights, KV cache and compute buffer "
                "(the CUDA context, cuBLAS workspaces)",
    "host_terms": "llama.cpp src/llama-model.cpp load_tensors (the input layer on the CPU; i_gpu_start = "
                  "max(n_layer + 1 - n_gpu_layers, 0)); src/llama-kv-cache.cpp (each layer's cache on its device)",
}
NOTES = {
    "compute_buffer": "compute_buffer is an estimate, a lower bound: the largest of three moments of the "
                      "worst-case graph of {tokens} tokens ({moments}); ggml-alloc's block placement adds a few per "
                      "cent (llama.cpp logs the real one as 'CUDA0 compute buffer size')",
    "flash_attn": "-fa auto counted as on (llama.cpp enables flash attention where the GPU supports it); "
                  "give --flash-attn off for the f32 attention scores without it",
    "formula_weights": "weights: no GGUF file given, so the standard weight formula under --dtype/--weight-quant, "
                       "not a GGUF's stored bytes (give --gguf FILE for those)",
}


def check(spec: ModelSpec, scenario: Scenario) -> None:
    """Refuse caches llama.cpp keeps otherwise (sliding-window iswa, MLA), unknown cache types, ``-np`` past ``-c``."""
    for group in spec.layers:
        full = group.mixer == "attention" or (group.mixer == "sliding_attention"
                                              and spec.model_type in FULL_CACHE_FAMILIES)
        if not full:
            raise InputError(f"--profile llamacpp: {spec.name} ({spec.architecture}) has {group.mixer} layers, whose "
                             f"cache llama.cpp keeps otherwise (sliding-window or MLA); not modelled: the "
                             f"profile covers full-attention caches")
    for flag, value in (("--cache-type-k", scenario.cache_type_k), ("--cache-type-v", scenario.cache_type_v)):
        if value not in F.CACHE_TYPES:
            raise InputError(f"--profile llamacpp: {flag} {value!r} is not a llama.cpp cache type "
                             f"(choose from {', '.join(F.CACHE_TYPES)})")
    slots, context = scenario.batch_size, scenario.seq_len
    if slots is not None and context is not None and not scenario.kv_unified:
        if slots > int(F.pad(sympy.Integer(context))):
            raise InputError(f"--profile llamacpp: --batch-size (-np) {slots} slots in a context (-c) of {context} "
                             f"leave no cells per slot (llama.cpp: n_ctx_seq == 0)")


def _stored_weights(spec: ModelSpec, on_gpu: int) -> tuple[dict[str, sympy.Expr], dict[str, sympy.Expr]]:
    """(GPU weight terms per ggml type, host weights): the GGUF's blocks placed as llama.cpp places
    them: layers ``>= L - on_gpu`` and the output layer on the GPU, the token embeddings (the input
    layer) on the host, and for tied embeddings the output layer's duplicate of them on the GPU
    (src/llama-model.cpp load_tensors: ``dev_input`` is the CPU; output = token_embd, TENSOR_DUPLICATED)."""
    start = spec.num_hidden_layers - on_gpu
    gpu: dict[str, int] = {}
    host = 0
    for block, kind, nbytes in spec.stored_bytes_by_block:
        if block == "output" or (block.startswith("blk.") and int(block[4:]) >= start):
            gpu[kind] = gpu.get(kind, 0) + nbytes
        else:
            host += nbytes
        if block == "token_embd" and spec.tie_word_embeddings:
            gpu[kind] = gpu.get(kind, 0) + nbytes
    parts = {f"weights/{kind}": sympy.Integer(n) for kind, n in sorted(gpu.items(), key=lambda kv: -kv[1])}
    return {"weights": sympy.Add(*parts.values()), **parts}, ({"weights": sympy.Integer(host)} if host else {})


def _formula_weights(spec: ModelSpec, scenario: Scenario, on_gpu: int):
    """(GPU weight terms, host weights) of the standard formula, placed as :func:`_stored_weights`:
    the embedding on the host (its tied copy as the GPU's output layer), each layer part with
    ``L`` -> the layers on the GPU (the final norm and the LM head stay: the output layer)."""
    parts = {n: e for n, e in shared.weight_terms(spec, scenario).items() if n != "weights"}
    embedding = parts.pop("weights/embedding", sympy.Integer(0))
    host = {"weights/embedding": embedding}
    if spec.tie_word_embeddings and "weights/lm_head" not in parts:
        parts["weights/lm_head"] = embedding
    if on_gpu < spec.num_hidden_layers:
        if len(spec.layers) > 1:
            raise InputError(f"--profile llamacpp: -ngl below every layer of {spec.name} (layer groups of several "
                             "kinds) needs the per-layer bytes of a GGUF file: give --gguf FILE")
        counts = _on_gpu_counts(spec, scenario, on_gpu)
        for name in [n for n in parts if n != "weights/lm_head"]:
            full, parts[name] = parts[name], parts[name].xreplace(counts)
            host[name] = full - parts[name]
    host = {n: e for n, e in host.items() if e != 0}
    return {"weights": sympy.Add(*parts.values()), **parts}, ({"weights": sympy.Add(*host.values())} if host else {})


def _on_gpu_counts(spec: ModelSpec, scenario: Scenario, on_gpu: int) -> dict:
    """Every layer-count symbol (num_hidden_layers and each layer kind's, formulas/layers) -> its count
    among the GPU's layers. One layer group: each count is L or 0, so the GPU's share is exact."""
    from formulas import layers

    facts = shared.facts(spec, scenario)
    symbols = {S.num_hidden_layers} | {m.LAYERS for m in (*layers.MIXERS.values(), *layers.MLPS.values())
                                       if m.LAYERS is not None}
    return {c: sympy.Integer(int(facts[c]) * on_gpu // spec.num_hidden_layers) for c in symbols if c in facts}


def _placed(spec: ModelSpec, scenario: Scenario):
    """(GPU terms, host terms, stored, layers on the GPU): weights and KV cache placed under ``-ngl``."""
    on_gpu = F.offloaded_layers(spec.num_hidden_layers, scenario.gpu_layers)
    stored = bool(spec.stored_bytes_by_block)
    terms, host = _stored_weights(spec, on_gpu) if stored else _formula_weights(spec, scenario, on_gpu)
    kv = F.kv_cache(scenario.kv_unified)
    if on_gpu < spec.num_hidden_layers:  # each layer's cache lives on its layer's device (offload_kqv)
        away = sympy.Integer(spec.num_hidden_layers - on_gpu)
        host["kv_cache"] = sympy.Add(*(e.xreplace({S.num_hidden_layers: away}) for e in kv.values()))
        kv = {n: e.xreplace({S.num_hidden_layers: sympy.Integer(on_gpu)}) for n, e in kv.items()}
    terms["kv_cache"] = kv["kv_cache/keys"] + kv["kv_cache/values"]
    terms.update(kv)
    return terms, host, stored, on_gpu


def build(spec: ModelSpec, scenario: Scenario) -> MemoryModel:
    """Weights + KV cache (keys, values) + compute buffer + reserve on the GPU, the rest on the host; inference only."""
    terms, host, stored, on_gpu = _placed(spec, scenario)
    moe = any(group.mlp == "moe" for group in spec.layers)
    moments = F.compute_buffer(scenario.kv_unified, scenario.flash_attn != "off", moe)
    terms["compute_buffer"] = sympy.Max(*moments.values())
    terms["overhead"] = overhead.reserve()
    facts = shared.facts(spec, scenario)
    facts[S.kv_key_bytes] = sympy.Rational(F.element_bytes(scenario.cache_type_k))
    facts[S.kv_value_bytes] = sympy.Rational(F.element_bytes(scenario.cache_type_v))
    inputs = shared.inputs(spec, scenario)
    inputs["compute_buffer_moments"] = {name: _number(value, facts) for name, value in moments.items()}
    inputs["notes"] = ([_compute_note(inputs["compute_buffer_moments"], _number(F.reserve_tokens(), facts))]
                       + ([NOTES["flash_attn"]] if scenario.flash_attn == "auto" else [])
                       + [_placement_note(spec, scenario, on_gpu)]
                       + ([] if stored else [NOTES["formula_weights"]]))
    inputs["gpu_layers"] = on_gpu
    inputs["kv_dtype"] = _cache_types(scenario)
    if stored:
        inputs["weights_stored"] = ", ".join(kind for kind, _ in spec.stored_bytes_by_type)
        inputs["stored_weight_bytes"] = sum(n for _, _, n in spec.stored_bytes_by_block)
    inputs["cells_per_slot"] = _number(F.cells_per_slot(scenario.kv_unified), facts)
    tensors = architecture.parameter_tensors(spec)
    sources = {**SOURCES, "weights": SOURCES["weights" if stored else "weights (formula)"]}
    return MemoryModel(
        name=spec.name, mode="inference", terms=terms, facts=facts, inputs=inputs,
        descriptions={**shared.DESCRIPTIONS, "kv_cache/keys": "key cache (--cache-type-k)",
                      "kv_cache/values": "value cache (--cache-type-v)",
                      "compute_buffer": "llama.cpp's compute buffer (estimate)"},
        parameters=P.parameter_count(tensors), active_parameters=P.active_parameter_count(tensors),
        sources={name: sources[name] for name in ("weights", "kv_cache", "compute_buffer", "overhead", "host_terms")},
        host_terms=host,
    )


def _placement_note(spec: ModelSpec, scenario: Scenario, on_gpu: int) -> str:
    """Where llama.cpp puts the layers: the token embeddings always on the host, -ngl's layers on the GPU."""
    tied = " (the output layer keeps its tied copy on the GPU)" if spec.tie_word_embeddings else ""
    layers = ("every layer and the output layer on the GPU" if on_gpu == spec.num_hidden_layers else
              f"-ngl {scenario.gpu_layers}: the output layer and layers {spec.num_hidden_layers - on_gpu}.."
              f"{spec.num_hidden_layers - 1} ({on_gpu} of {spec.num_hidden_layers}) on the GPU, the rest and their "
              "KV cache in host memory")
    return (f"placement as llama.cpp's load_tensors: the token embeddings stay in host memory{tied}; {layers}")


def _compute_note(moments: dict, tokens: int | None) -> str:
    """The compute buffer's note: the three moments in bytes, where the point is known."""
    shown = ", ".join(f"{name} {value:,} B" for name, value in moments.items() if value is not None)
    return NOTES["compute_buffer"].format(tokens=f"{tokens:,}" if tokens else "min(-c, 512)",
                                          moments=shown or "attention, MLP, output")


def _cache_types(scenario: Scenario) -> str:
    """The KV element types as the header names them: llama.cpp's, not --dtype."""
    k, v = scenario.cache_type_k, scenario.cache_type_v
    return f"{k} (llama.cpp --cache-type-k/-v)" if k == v else f"K {k}, V {v} (llama.cpp --cache-type-k/-v)"


def _number(expr: sympy.Expr, facts: dict) -> int | None:
    value = expr.xreplace(facts)
    return int(value) if value.is_number else None


PROFILE = Profile(
    name="llamacpp",
    summary="llama.cpp: a GGUF's stored weights placed as -ngl says, the KV cache of -c/-np/-ctk/-ctv, "
            "its compute buffer (estimate)",
    modes=("inference",),
    knobs=KNOBS,
    build=build,
    check=check,
    refusal_note="llama.cpp runs one process per model: no parallel layouts, paged blocks or training knobs",
)
