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
                   "cache_type_k", "cache_type_v", "kv_unified", "flash_attn"})
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


def _weights(spec: ModelSpec, scenario: Scenario) -> tuple[dict[str, sympy.Expr], bool]:
    """(weight terms, whether they are the GGUF's stored bytes)."""
    if spec.stored_bytes_by_type:
        parts = {f"weights/{kind}": sympy.Integer(nbytes) for kind, nbytes in spec.stored_bytes_by_type}
        return {"weights": sympy.Add(*parts.values()), **parts}, True
    return shared.weight_terms(spec, scenario), False


def build(spec: ModelSpec, scenario: Scenario) -> MemoryModel:
    """Weights + KV cache (keys, values) + reserve; inference only."""
    terms, stored = _weights(spec, scenario)
    kv = F.kv_cache(scenario.kv_unified)
    terms["kv_cache"] = kv["kv_cache/keys"] + kv["kv_cache/values"]
    terms.update(kv)
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
                       + ([] if stored else [NOTES["formula_weights"]]))
    inputs["kv_dtype"] = _cache_types(scenario)
    if stored:
        inputs["weights_stored"] = ", ".join(kind for kind, _ in spec.stored_bytes_by_type)
    inputs["cells_per_slot"] = _number(F.cells_per_slot(scenario.kv_unified), facts)
    tensors = architecture.parameter_tensors(spec)
    sources = {**SOURCES, "weights": SOURCES["weights" if stored else "weights (formula)"]}
    return MemoryModel(
        name=spec.name, mode="inference", terms=terms, facts=facts, inputs=inputs,
        descriptions={**shared.DESCRIPTIONS, "kv_cache/keys": "key cache (--cache-type-k)",
                      "kv_cache/values": "value cache (--cache-type-v)",
                      "compute_buffer": "llama.cpp's compute buffer (estimate)"},
        parameters=P.parameter_count(tensors), active_parameters=P.active_parameter_count(tensors),
        sources={name: sources[name] for name in ("weights", "kv_cache", "compute_buffer", "overhead")},
    )


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
    summary="llama.cpp: a GGUF's stored weights, the KV cache of -c/-np/-ctk/-ctv, its compute buffer (estimate)",
    modes=("inference",),
    knobs=KNOBS,
    build=build,
    check=check,
    refusal_note="llama.cpp runs one process per model: no parallel layouts, paged blocks or training knobs",
)
