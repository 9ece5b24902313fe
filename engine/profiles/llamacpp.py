"""The ``llamacpp`` profile: weights and KV cache as llama.cpp (llama-server, llama-cli) holds them.

- ``weights``: with ``--gguf FILE``, the bytes the file stores, per ggml type (Q4_K, Q6_K,
  F32, ...), which llama.cpp maps or copies to the device as they are; otherwise the
  standard weight formula under ``--dtype`` / ``--weight-quant``, said so in the notes.
- ``kv_cache``: :mod:`formulas.frameworks.llamacpp`: ``--seq-len`` is llama.cpp's ``-c``
  (the context all slots share, padded to 256), ``--batch-size`` its ``-np`` slots,
  ``--cache-type-k/-v`` the element types and ``--kv-unified`` one shared stream.
- ``overhead``: ``--reserve``. llama.cpp's compute buffer is sized by a graph reservation at
  start-up (``llama_context::sched_reserve``) and its output (logits) buffer lives on the
  host; neither is modelled: the notes say so, and the compute buffer llama.cpp logs
  ("CUDA0 compute buffer size") can be given as ``--reserve``.

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
                   "cache_type_k", "cache_type_v", "kv_unified"})
# llama.cpp's llama and qwen2/qwen3 graphs keep a full cache of every layer even where the HF
# config names a sliding window (Mistral-7B-v0.1: src/llama-model.cpp gives LLM_ARCH_LLAMA no SWA)
FULL_CACHE_FAMILIES = ("llama", "mistral", "qwen2", "qwen3")
SOURCES = {
    "weights": "the GGUF file's tensors as stored (gguf-py GGUFReader; ggml/src/ggml.c type_traits block sizes)",
    "weights (formula)": shared.SOURCES["weights"],
    "kv_cache": "llama.cpp src/llama-context.cpp llama_context::llama_context (n_ctx, n_ctx_seq padded to "
                "256); src/llama-kv-cache.cpp llama_kv_cache::llama_kv_cache (K and V per layer and stream, "
                "ggml_row_size of --cache-type-k/-v)",
    "overhead": "the user's --reserve; llama.cpp's compute buffer (llama_context::sched_reserve) is not modelled",
}
NOTES = {
    "compute_buffer": "llama.cpp's compute buffer is not modelled (sized by a graph reservation at start-up, "
                      "llama_context::sched_reserve, and logged as 'compute buffer size'): add it with --reserve",
    "logits_floor": "it holds at least one ubatch's float32 logits, 4 V min(-c, 512) = {:,} bytes here",
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
    terms["overhead"] = overhead.reserve()
    facts = shared.facts(spec, scenario)
    facts[S.kv_key_bytes] = sympy.Rational(F.element_bytes(scenario.cache_type_k))
    facts[S.kv_value_bytes] = sympy.Rational(F.element_bytes(scenario.cache_type_v))
    inputs = shared.inputs(spec, scenario)
    floor = _number(F.logits_floor(), facts)
    inputs["notes"] = ([NOTES["compute_buffer"]] + ([NOTES["logits_floor"].format(floor)] if floor else [])
                       + ([] if stored else [NOTES["formula_weights"]]))
    inputs["cells_per_slot"] = _number(F.cells_per_slot(scenario.kv_unified), facts)
    tensors = architecture.parameter_tensors(spec)
    sources = {**SOURCES, "weights": SOURCES["weights" if stored else "weights (formula)"]}
    return MemoryModel(
        name=spec.name, mode="inference", terms=terms, facts=facts, inputs=inputs,
        descriptions={**shared.DESCRIPTIONS, "kv_cache/keys": "key cache (--cache-type-k)",
                      "kv_cache/values": "value cache (--cache-type-v)"},
        parameters=P.parameter_count(tensors), active_parameters=P.active_parameter_count(tensors),
        sources={name: sources[name] for name in ("weights", "kv_cache", "overhead")},
    )


def _number(expr: sympy.Expr, facts: dict) -> int | None:
    value = expr.xreplace(facts)
    return int(value) if value.is_number else None


PROFILE = Profile(
    name="llamacpp",
    summary="llama.cpp: a GGUF's stored weights, the KV cache of -c/-np/--cache-type-k/-v (no compute buffer)",
    modes=("inference",),
    knobs=KNOBS,
    build=build,
    check=check,
    refusal_note="llama.cpp runs one process per model: no parallel layouts, paged blocks or training knobs",
)
