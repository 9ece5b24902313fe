"""The library calls the CLI makes, one per command."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from engine import fast
from engine.errors import UnknownModelError
from engine.families import spec_from_config
from engine.files import is_dir, shown_path
from engine.profiles import build
from engine.evaluation import Evaluation
from engine.registry import fetch_hub_config, find, load_spec
from engine.scenario import SCENARIO_SYMBOLS, Scenario
from engine.spec import ModelSpec
from formulas import allocator
from formulas.dtypes import DTYPE_BYTES, canonical_dtype

if TYPE_CHECKING:  # imported where used: a cached estimate of a registry model reads no checkpoint, no Hub
    from engine.checkpoint import Checkpoint
    from engine.model import MemoryModel


@dataclass(frozen=True)
class Estimate:
    spec: ModelSpec
    model: "MemoryModel"  # a ModelOutline when the fast path answered (it builds the MemoryModel on demand)
    evaluation: Evaluation
    counts: dict[str, int]

    def reserved_dict(self) -> dict:
        return _reserved_dict(self.model, self.evaluation)

    def to_dict(self) -> dict:
        """The ``--json`` contract: model, inputs, parameters, total_bytes, terms (+ detail)."""
        ev = self.evaluation
        return {
            "model": self.spec.name,
            "architecture": self.spec.architecture,
            "inputs": self.model.inputs,
            "parameters": self.counts["parameters"],
            "active_parameters": self.counts["active_parameters"],
            "buffers": self.counts["buffers"],
            "total_bytes": ev.total_bytes,
            "terms": {name: ev.terms[name] for name in self.model.top_level},
            "breakdown": {name: value for name, value in ev.terms.items() if "/" in name},
            "phases": ev.phases,
            "peak_phase": ev.peak_phase,
            "host_terms": ev.host,
            "host_total_bytes": sum(ev.host.values()),
            **self.reserved_dict(),
            "profile": self.model.profile,
            "sources": {name: self.model.source(name) for name in self.model.top_level},
            "warnings": context_warnings(self.model.inputs),
        }


def _reserved_dict(model: MemoryModel, ev: Evaluation) -> dict:
    """``reserved_bytes`` (max_memory_reserved) beside ``total_bytes`` where the profile models
    the caching allocator, its rule and phase; the device memory outside both (CUDA context)."""
    if not model.allocator:
        return {}
    return {"reserved_bytes": ev.reserved_bytes, "reserved_phase": ev.reserved_phase,
            "reserved_rule": allocator.describe(model.allocator) + " (c10/cuda/CUDACachingAllocator.cpp)",
            "outside_terms": ev.outside,
            "outside_note": "device memory outside PyTorch's allocator: in neither total_bytes nor reserved_bytes"}


def context_warnings(inputs: dict, solved: tuple[str, int] | None = None) -> list[str]:
    """A warning when seq_len (given, or ``solved``) passes the model's context length
    (config.json's max_position_embeddings), with both numbers."""
    limit = inputs.get("context_length")
    variable, value = solved if solved and solved[0] == "seq_len" else ("seq_len", inputs.get("seq_len"))
    if not limit or not isinstance(value, int) or isinstance(value, bool) or value <= limit:
        return []
    return [f"warning: seq_len {value:,} exceeds the model's context length {limit:,} (max_position_embeddings "
            f"of its config.json); memory is computed for {value:,} tokens, the model was trained for {limit:,}"]


def memory_model(model: str | None = None, config: str | None = None, **knobs) -> tuple[ModelSpec, "MemoryModel"]:
    """The memory model of a registry model (or local config.json) under the given knobs."""
    spec = load_spec(model, config)
    return spec, build(spec, Scenario(**knobs))


def estimate(model: str | None = None, config: str | None = None, **knobs) -> Estimate:
    """Exact bytes of every term for one model and scenario (all sizes given), through the
    cached exact evaluator when one is stored (engine/fast.py), else with SymPy."""
    spec = load_spec(model, config)
    return Estimate(spec, *fast.estimate(spec, Scenario(**knobs)))


SYMBOLIC_PROFILE = "megatron"  # --symbolic inference without --profile: Korthikanti et al. 2022 + Pope et al. 2022


def generic_spec() -> ModelSpec:
    """A model-free layout for fully symbolic formulas: a Llama-style dense GQA decoder.

    Untied head, RMSNorms, gated MLP, no biases; its numbers are placeholders that
    :func:`symbolic_model` never substitutes.
    """
    return ModelSpec(
        name="symbolic", model_type="llama", hidden_size=1, num_hidden_layers=1, num_attention_heads=1,
        num_key_value_heads=1, head_dim=1, intermediate_size=1, vocab_size=1, tie_word_embeddings=False,
    )


def symbolic_model(**knobs) -> "MemoryModel":
    """The memory model of :func:`generic_spec` with every shape symbol and byte width free.

    Scenario values given in ``knobs`` (``batch_size``, ``seq_len``, ...) are pinned; pass
    ``batch_size=None, seq_len=None`` to keep them free too. Without ``profile``, inference keeps
    ``megatron`` (:data:`SYMBOLIC_PROFILE`): the model-free formula is the published one, whose
    closed forms ``solve --symbolic`` prints; a model's estimate defaults to ``transformers``.
    """
    scenario = Scenario(**knobs)
    if scenario.profile is None and scenario.mode == "inference":
        scenario = replace(scenario, profile=SYMBOLIC_PROFILE)
    mm = build(generic_spec(), scenario)
    mm.facts = {sym: v for sym, v in mm.facts.items() if sym.name in SCENARIO_SYMBOLS}
    mm.inputs = {**mm.inputs, "model": "symbolic"}
    return mm


@dataclass(frozen=True)
class CheckpointEstimate:
    """An estimate of the checkpoint's config, with the stored bytes beside the formula's."""

    estimate: Estimate
    comparison: dict
    hint: str | None

    def reserved_dict(self) -> dict:
        return _reserved_dict(self.model, self.evaluation)

    def to_dict(self) -> dict:
        out = self.estimate.to_dict()
        out["checkpoint_bytes"] = self.comparison["checkpoint_bytes"]
        out["checkpoint"] = {**self.comparison, "hint": self.hint}
        return out


def estimate_checkpoint(directory: str | Path, **knobs) -> CheckpointEstimate:
    """``memsym estimate --checkpoint DIR``: DIR/config.json's estimate and DIR's stored bytes."""
    from engine.checkpoint import CheckpointError, read_checkpoint

    directory = Path(directory)
    if not is_dir(directory):
        raise CheckpointError(f"--checkpoint {shown_path(directory)}: not a folder")
    result = estimate(None, str(directory / "config.json"), **knobs)
    return compared(result, read_checkpoint(directory))


def compared(result: Estimate, stored: "Checkpoint", as_stored: bool = False) -> CheckpointEstimate:
    """``result`` with the stored bytes of ``stored`` beside its formula's weights.

    ``as_stored``: the weights already are the stored bytes (no float32 tensor is upcast).
    """
    from engine.checkpoint import compare, storage_hint

    inputs = result.model.inputs
    plain = inputs["weight_quant"] == "none" and not as_stored
    width = DTYPE_BYTES[canonical_dtype(inputs["dtype"])] if plain else None
    # llamacpp: the GPU's weights are part of the file (the rest in host memory): compare the file's total;
    # transformers: its rotary inv_freq buffers are non-persistent (never in a checkpoint)
    terms = result.evaluation.terms
    weights = inputs.get("stored_weight_bytes", terms["weights"] - terms.get("weights/rotary_buffers", 0))
    comparison = compare(stored, result.spec.num_hidden_layers, weights, width)
    hint = storage_hint(stored, inputs["dtype"], inputs["weight_quant"])
    return CheckpointEstimate(result, comparison, hint)


def _in_registry(model: str) -> bool:
    try:
        find(model)
    except UnknownModelError:
        return False
    return True


def _hub_ref(model: str) -> tuple[str, str | None, UnknownModelError] | None:
    """(repo id, revision, the registry's refusal) when ``model`` is read from the Hub: not a
    registry id, and not in the local cache."""
    from engine import hf_cache, hub

    try:
        find(model)
        return None
    except UnknownModelError as exc:
        not_in_registry = exc
    ref = hub.split_model_ref(model)
    if ref is None or (ref[1] is None and hf_cache.cached_config(ref[0]) is not None):
        return None
    return ref[0], ref[1], not_in_registry


def _with_cached_weights(model: str, result: Estimate) -> Estimate | CheckpointEstimate:
    """A repo read from the local HF cache: its snapshot's safetensors headers too, when it holds them."""
    from engine import hf_cache, hub
    from engine.checkpoint import INDEX_FILE, CheckpointError, read_checkpoint

    ref = hub.split_model_ref(model)
    config = hf_cache.cached_config(ref[0]) if ref is not None and ref[1] is None else None
    if config is None or result.spec.name != ref[0]:  # a registry model, or not cached
        return result
    snapshot = config.parent
    if not (snapshot / INDEX_FILE).exists() and not any(snapshot.glob("*.safetensors")):
        return result
    try:
        return compared(result, read_checkpoint(snapshot))
    except CheckpointError as exc:  # an incomplete download, say: the estimate stands, and says why
        result.model.inputs.setdefault("notes", []).append(f"stored bytes not read from the cached snapshot: {exc}")
        return result


def estimate_model(model: str, **knobs) -> Estimate | CheckpointEstimate:
    """``memsym estimate --model ID``; a Hub repo (``ORG/NAME[@REVISION]`` outside the registry
    and the local cache) also gets the stored bytes of its safetensors headers."""
    if _in_registry(model):  # its spec is named by its registry id: no cached snapshot is read for it
        return estimate(model, None, **knobs)
    from engine import hf_cache, hub

    ref = _hub_ref(model)
    if ref is None:
        return _with_cached_weights(model, estimate(model, None, **knobs))
    repo_id, revision, not_in_registry = ref
    config, commit = fetch_hub_config(repo_id, revision, f"{not_in_registry}; not in the local Hugging Face "
                                                         f"cache ({hf_cache.cache_dir()}) either")
    spec = spec_from_config(config, model)
    result = Estimate(spec, *fast.symbolic_estimate(spec, Scenario(**knobs)))
    try:
        stored = hub.fetch_checkpoint(repo_id, revision, commit)
    except hub.NoSafetensorsError:
        return result
    return compared(result, stored)


def is_gguf(path: str | Path) -> bool:
    """Whether ``--config PATH`` names a llama.cpp GGUF file (read by :func:`estimate_gguf`)."""
    from engine import gguf_file

    return gguf_file.is_gguf(path)


def estimate_gguf(path: str | Path, **knobs) -> CheckpointEstimate:
    """``memsym estimate --gguf FILE``: the mapped config's estimate and the file's stored bytes per ggml type.

    Under the ``llamacpp`` profile the weights are those stored bytes; under any other the
    formula's weights (``--dtype``/``--weight-quant``) stand beside them.
    """
    from engine import gguf_file

    model = gguf_file.read_gguf(path)
    spec = gguf_file.spec_of(model)
    result = Estimate(spec, *fast.symbolic_estimate(spec, Scenario(**knobs)))
    return compared(result, model.checkpoint, as_stored=result.model.profile == "llamacpp")
