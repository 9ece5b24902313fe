"""Layer kinds: one entry per mixer kind and per MLP kind.

A decoder layer is a mixer (what mixes tokens: attention, sliding-window attention, MLA;
later chunked, NoPE and linear attention, Mamba) followed by an MLP (dense, MoE, none). A
model's ``layers`` are groups of (mixer kind, MLP kind, count), each kind with its own
options (a window, ranks, expert counts); ``engine.architecture`` sums over the groups.

Each **mixer** module (``attention``, ``sliding_attention``, ``mla``) defines:

- ``KIND``: its name in ``LayerGroup.mixer``;
- ``LAYERS``: the symbol counting its layers when other mixer kinds share the model, or
  None for the kind that takes the rest (``L`` minus the others);
- ``LORA_COMPONENTS``: its components whose linear layers PEFT's ``all-linear`` adapts;
- ``SPLITS_KV_HEADS``: True when tensor parallelism splits its cached heads (the degree must
  then divide ``num_key_value_heads`` or be a multiple of it);
- ``tensors(layers, **options)``: its parameter tensors for ``layers`` layers;
- ``facts(**options)``: symbol -> value of the options that are symbols (``w``, ``r_kv``);
- ``cache_elements(mla_layout, **options)``: values one tensor-parallel rank caches per
  layer and token;
- ``cached_tokens(paged)``: tokens a layer keeps for one sequence of ``s`` tokens;
- ``inference_peak(eager)``: one layer's forward temporaries on one tensor-parallel rank;
- ``training_row(recompute, sequence_parallel, eager)``: what one layer saves for backward
  on one tensor-parallel rank (Korthikanti et al. 2022 Table 2 counts the whole layer, its
  4h MLP included, so MLP kinds add no row of their own yet).

A kind with a constant recurrent state per sequence (Gated DeltaNet, Mamba: issue 13)
adds ``state_elements(**options)`` and caches no tokens (``cache_elements`` 0).

Each **MLP** module (``dense``, ``moe``, ``no_mlp``) defines ``KIND``, ``LAYERS``,
``LORA_COMPONENTS``, ``tensors(layers, **options)``, ``buffers(layers, **options)`` (persistent buffers),
``facts(**options)`` and ``inference_peak(**options)`` (one tensor-parallel rank).

Each tensor a kind returns says how parallelism splits it (``WeightTensor.parallel``) and,
for routed experts, how many of its copies a token uses (``active_count``).

Adding a kind: its module here, its name in ``MIXERS`` or ``MLPS`` and in
formulas/options.py (``MIXER_KINDS``, ``MLP_KINDS``: SymPy-free, for engine/spec.py), the
family parser that builds its groups (engine/families.py) and the registry data.
"""

from __future__ import annotations

from types import ModuleType

from formulas.layers import attention, dense, mla, moe, no_mlp, sliding_attention

MIXERS: dict[str, ModuleType] = {m.KIND: m for m in (attention, sliding_attention, mla)}
MLPS: dict[str, ModuleType] = {m.KIND: m for m in (dense, moe, no_mlp)}


def mixer(kind: str) -> ModuleType:
    """The entry of mixer kind ``kind``; ValueError names the unknown kind."""
    try:
        return MIXERS[kind]
    except KeyError:
        raise ValueError(f"unknown mixer kind {kind!r}; known: {', '.join(MIXERS)}") from None


def mlp(kind: str) -> ModuleType:
    """The entry of MLP kind ``kind``; ValueError names the unknown kind."""
    try:
        return MLPS[kind]
    except KeyError:
        raise ValueError(f"unknown MLP kind {kind!r}; known: {', '.join(MLPS)}") from None
