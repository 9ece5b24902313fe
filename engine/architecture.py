"""From a ModelSpec to formulas: its tensors, cache, peaks and facts, summed over layer groups.

Each group of ``spec.layers`` is (mixer kind, MLP kind, count); every kind is an entry of
formulas/layers/. A kind's layers count as its own symbol (``L_w`` sliding, ``L_e`` MoE)
when it declares one, and the one kind per axis that declares none takes the rest
(``L - L_w``), so a Gemma-2 cache reads ``(L - L_w) s + L_w Min(s, w)`` and a single-kind
model ``L``. Nothing here reads a layout flag: what differs between kinds is in their entry.
"""

from __future__ import annotations

from types import ModuleType

import sympy

from engine.spec import ModelSpec
from formulas import kv_cache, layers
from formulas import parameters as P
from formulas import symbols as S

AXES = {"mixer": layers.MIXERS, "mlp": layers.MLPS}


def kinds(spec: ModelSpec, axis: str) -> list[tuple[ModuleType, dict, sympy.Expr]]:
    """(entry, options, layers as a symbolic count) of each kind on ``axis`` ("mixer" or
    "mlp") that ``spec`` has, in the order of formulas/layers/ (``MIXERS``, ``MLPS``)."""
    options: dict[str, dict] = {}
    for group in spec.layers:
        kind, args = (group.mixer, group.mixer_args) if axis == "mixer" else (group.mlp, group.mlp_args)
        if options.setdefault(kind, args) != args:
            raise ValueError(f"{spec.name}: {axis} kind {kind!r} appears with two sets of options "
                             f"({options[kind]} and {args}); each needs its own layer-count symbol")
    present = [(entry, options[kind]) for kind, entry in AXES[axis].items() if kind in options]
    own = [entry.LAYERS for entry, _ in present if entry.LAYERS is not None]
    rest = [entry.KIND for entry, _ in present if entry.LAYERS is None]
    if len(rest) > 1:
        raise ValueError(f"{spec.name}: {axis} kinds {rest} share a model and none has a layer-count symbol")
    remainder = S.num_hidden_layers - sympy.Add(*own)
    return [(entry, args, remainder if entry.LAYERS is None else entry.LAYERS) for entry, args in present]


def layer_counts(spec: ModelSpec) -> dict[sympy.Symbol, int]:
    """The value of each kind's own layer-count symbol (``L_w``, ``L_e``, ...)."""
    out: dict[sympy.Symbol, int] = {}
    for axis in AXES:
        for entry, _, _ in kinds(spec, axis):
            if entry.LAYERS is not None:
                out[entry.LAYERS] = sum(g.count for g in spec.layers if getattr(g, axis) == entry.KIND)
    return out


def parameter_tensors(spec: ModelSpec) -> list[P.WeightTensor]:
    """Every parameter tensor family of ``spec``, keyed ``component/name``."""
    tensors = P.embedding_tensors(learned_positions=spec.max_position_embeddings is not None)
    for axis in AXES:
        for entry, args, count in kinds(spec, axis):
            tensors += entry.tensors(count, **args)
    tensors += P.norm_tensors(spec.norms_per_layer, bias=spec.layer_norm_bias)
    tensors += P.lm_head_tensors(tied=spec.tie_word_embeddings, bias=spec.lm_head_bias)
    return P.merged(tensors)


def buffer_tensors(spec: ModelSpec) -> list[P.WeightTensor]:
    """Persistent buffers: saved with the weights, not parameters."""
    return P.merged([t for entry, args, count in kinds(spec, "mlp") for t in entry.buffers(count, **args)])


def facts(spec: ModelSpec) -> dict[sympy.Symbol, sympy.Integer]:
    """Symbol -> value for every shape fact the spec pins."""
    values: dict[sympy.Symbol, int | None] = {
        S.hidden_size: spec.hidden_size,
        S.num_hidden_layers: spec.num_hidden_layers,
        S.num_attention_heads: spec.num_attention_heads,
        S.num_key_value_heads: spec.num_key_value_heads,
        S.head_dim: spec.head_dim,
        S.intermediate_size: spec.intermediate_size,
        S.vocab_size: spec.vocab_size,
        S.max_position_embeddings: spec.max_position_embeddings,
    }
    kind_facts = [layer_counts(spec)]
    kind_facts += [entry.facts(**args) for axis in AXES for entry, args, _ in kinds(spec, axis)]
    for pinned in kind_facts:
        for sym, value in pinned.items():
            if values.setdefault(sym, value) != value:
                raise ValueError(f"{spec.name}: {sym.name} is {values[sym]} in one layer kind, {value} in another")
    return {sym: sympy.Integer(v) for sym, v in values.items() if v is not None}


def count_parameters(spec: ModelSpec) -> dict[str, int]:
    """Exact parameter counts: total, active per token, buffers and each component."""
    tensors = parameter_tensors(spec)
    pinned = facts(spec)
    out = {
        "parameters": int(P.parameter_count(tensors).xreplace(pinned)),
        "active_parameters": int(P.active_parameter_count(tensors).xreplace(pinned)),
        "buffers": int(P.parameter_count(buffer_tensors(spec)).xreplace(pinned)),
    }
    for component, expr in P.parameters_by_component(tensors).items():
        out[f"parameters/{component}"] = int(expr.xreplace(pinned))
    return out


# --- per-GPU terms summed over the groups (the profiles' building blocks) ------------------

def kv_cache_bytes(spec: ModelSpec, *, paged: bool = False, mla_layout: str = "latent") -> sympy.Expr:
    """KV-cache bytes on one GPU of ``b`` sequences of ``s`` tokens (formulas/kv_cache.py
    ``kv_cache_per_gpu``; each mixer kind gives its values per token and tokens kept)."""
    rows = [(entry.cache_elements(mla_layout, **args), count, entry.cached_tokens(paged))
            for entry, args, count in kinds(spec, "mixer")]
    return kv_cache.kv_cache_per_gpu(rows)


def inference_peaks(spec: ModelSpec, *, eager: bool) -> dict[str, sympy.Expr]:
    """One layer's forward temporaries on one GPU: the largest mixer's and MLP's."""
    return {
        "attention": sympy.Max(*(entry.inference_peak(eager) for entry, _, _ in kinds(spec, "mixer"))),
        "mlp": sympy.Max(*(entry.inference_peak(**args) for entry, args, _ in kinds(spec, "mlp"))),
    }


def training_layers(spec: ModelSpec, *, recompute: str, sequence_parallel: bool, eager: bool) -> sympy.Expr:
    """What every layer saves for backward on one GPU: ``sum over kinds of layers x row``,
    kinds with the same row summed first (``L x row`` when they all agree)."""
    by_row: dict[sympy.Expr, sympy.Expr] = {}
    for entry, _, count in kinds(spec, "mixer"):
        row = entry.training_row(recompute, sequence_parallel, eager)
        by_row[row] = by_row.get(row, sympy.Integer(0)) + count
    return sympy.Add(*(count * row for row, count in by_row.items()))


def splits_kv_heads(spec: ModelSpec) -> bool:
    """True when tensor parallelism splits some mixer's cached KV heads."""
    return any(entry.SPLITS_KV_HEADS for entry, _, _ in kinds(spec, "mixer"))


def recomputed_layer(spec: ModelSpec, *, sequence_parallel: bool, eager: bool) -> sympy.Expr:
    """With full recomputation backward rebuilds one layer at a time: the largest
    mixer kind's row without recomputation."""
    return sympy.Max(*(entry.training_row("none", sequence_parallel, eager) for entry, _, _ in kinds(spec, "mixer")))
