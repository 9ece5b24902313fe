"""The library calls the CLI makes, one per command."""

from __future__ import annotations

from dataclasses import dataclass

from pathlib import Path

from engine import architecture
from engine.checkpoint import CheckpointError, compare, read_checkpoint, storage_hint
from engine.files import is_dir, shown_path
from engine.profiles import build
from engine.model import Evaluation, MemoryModel
from engine.registry import load_spec
from engine.scenario import SCENARIO_SYMBOLS, Scenario
from engine.spec import ModelSpec
from formulas.dtypes import DTYPE_BYTES, canonical_dtype


@dataclass(frozen=True)
class Estimate:
    spec: ModelSpec
    model: MemoryModel
    evaluation: Evaluation
    counts: dict[str, int]

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
            "profile": self.model.profile,
            "sources": {name: self.model.source(name) for name in self.model.top_level},
        }


def memory_model(model: str | None = None, config: str | None = None, **knobs) -> tuple[ModelSpec, MemoryModel]:
    """The memory model of a registry model (or local config.json) under the given knobs."""
    spec = load_spec(model, config)
    return spec, build(spec, Scenario(**knobs))


def estimate(model: str | None = None, config: str | None = None, **knobs) -> Estimate:
    """Exact bytes of every term for one model and scenario (all sizes given)."""
    spec, mm = memory_model(model, config, **knobs)
    return Estimate(spec, mm, mm.evaluate(), architecture.count_parameters(spec))


def generic_spec() -> ModelSpec:
    """A model-free layout for fully symbolic formulas: a Llama-style dense GQA decoder.

    Untied head, RMSNorms, gated MLP, no biases; its numbers are placeholders that
    :func:`symbolic_model` never substitutes.
    """
    return ModelSpec(
        name="symbolic", model_type="llama", hidden_size=1, num_hidden_layers=1, num_attention_heads=1,
        num_key_value_heads=1, head_dim=1, intermediate_size=1, vocab_size=1, tie_word_embeddings=False,
    )


def symbolic_model(**knobs) -> MemoryModel:
    """The memory model of :func:`generic_spec` with every shape symbol and byte width free.

    Scenario values given in ``knobs`` (``batch_size``, ``seq_len``, ...) are pinned; pass
    ``batch_size=None, seq_len=None`` to keep them free too.
    """
    mm = build(generic_spec(), Scenario(**knobs))
    mm.facts = {sym: v for sym, v in mm.facts.items() if sym.name in SCENARIO_SYMBOLS}
    mm.inputs = {**mm.inputs, "model": "symbolic"}
    return mm


@dataclass(frozen=True)
class CheckpointEstimate:
    """An estimate of the checkpoint's config, with the stored bytes beside the formula's."""

    estimate: Estimate
    comparison: dict
    hint: str | None

    def to_dict(self) -> dict:
        out = self.estimate.to_dict()
        out["checkpoint_bytes"] = self.comparison["checkpoint_bytes"]
        out["checkpoint"] = {**self.comparison, "hint": self.hint}
        return out


def estimate_checkpoint(directory: str | Path, **knobs) -> CheckpointEstimate:
    """``memsym estimate --checkpoint DIR``: DIR/config.json's estimate and DIR's stored bytes."""
    directory = Path(directory)
    if not is_dir(directory):
        raise CheckpointError(f"--checkpoint {shown_path(directory)}: not a folder")
    result = estimate(None, str(directory / "config.json"), **knobs)
    stored = read_checkpoint(directory)
    inputs = result.model.inputs
    width = DTYPE_BYTES[canonical_dtype(inputs["dtype"])] if inputs["weight_quant"] == "none" else None
    comparison = compare(stored, result.spec.num_hidden_layers, result.evaluation.terms["weights"], width)
    hint = storage_hint(stored, inputs["dtype"], inputs["weight_quant"])
    return CheckpointEstimate(result, comparison, hint)
