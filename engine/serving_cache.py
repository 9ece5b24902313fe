"""``memsym serve`` without SymPy: one cached prediction per (source tree, spec, vLLM flags, parallel sizes, budget).

vLLM's start-up figures branch on almost every flag in Python (the defaults of
``max_num_seqs`` and ``max_num_batched_tokens`` on the GPU total, the pipeline stages, the
hybrid block size, the ``auto`` max_model_len search), so every one of them is in the key,
correctness first: the key is engine/fast_cache.py's (SHA-256 of the engine/ and formulas/
sources and the canonical spec) with the canonical :class:`VllmSettings` (GPU total,
utilization, max_model_len, every flag), ``tp``, ``pp`` and the budget's note. The entry is
the symbolic prediction's exact values, written once after it is computed (engine/serving.py)
and stored only when the prediction read back from the entry equals it (every value, term,
input, source, note and the slope line). What the report and ``--json`` read comes from the
entry; anything else of the worker (its expressions, facts, other stages) is rebuilt with
SymPy on demand. A file outside the checked shape is ignored (the answer is rebuilt), as in
engine/fast_cache.py.
"""

from __future__ import annotations

import json
from fractions import Fraction
from typing import Callable

from engine import fast, fast_cache
from engine.evaluation import Evaluation, ModelOutline, combine
from engine.profiles.vllm_settings import VllmSettings
from engine.spec import ModelSpec

# what the report and --json read (engine/serving.py ``_values``, engine/report.py ``format_serve``)
VALUES = ("weights_bytes", "activation_peak_bytes", "non_torch_bytes", "cuda_graph_bytes", "requested_bytes",
          "available_kv_cache_bytes", "num_gpu_blocks", "kv_cache_tokens", "max_concurrency", "request_kv_bytes",
          "max_model_len", "block_size", "cuda_total_bytes")
HYBRID_VALUES = ("attention_block_size", "page_bytes", "state_page_bytes", "state_bytes_per_request")
INPUTS = ("max_num_batched_tokens", "max_num_seqs", "block_size", "kv_layout", "kv_cache_bytes", "quantization",
          "weight_bytes")
QUANTITIES = ("request_blocks",)  # worker quantities read after a prediction (engine/serving_solve.py)
_MEMORY: dict[str, dict] = {}  # key -> checked entry data, this process
MEMORY_ENTRIES = 4096


class CachedModel(ModelOutline):
    """A worker model's outline with its stored evaluation (``evaluate()`` at its facts)."""

    def __init__(self, meta: dict, evaluation: Evaluation, rebuild: Callable[[], object]):
        super().__init__(meta["name"], meta["mode"], meta["inputs"], tuple(meta["term_names"]),
                         {k: tuple(v) for k, v in meta["phases"].items()}, dict(meta["descriptions"]),
                         dict(meta["sources"]), meta["profile"], tuple(meta["host_names"]), rebuild)
        self._evaluation = evaluation

    def evaluate(self, values: dict | None = None) -> Evaluation:
        if values:
            return self.symbolic().evaluate(values)
        return self._evaluation


class CachedWorker:
    """engine.profiles.vllm.Worker's ``stage``, ``model`` and exact ``value`` of the stored
    quantities; ``quantities`` (expressions) rebuilds the symbolic worker."""

    def __init__(self, stage: int, model: CachedModel, values: dict, rebuild: Callable[[], object]):
        self.stage, self.model, self._values, self._rebuild, self._worker = stage, model, values, rebuild, None

    def symbolic(self):
        if self._worker is None:
            self._worker = self._rebuild()
        return self._worker

    @property
    def quantities(self) -> dict:
        return self.symbolic().quantities

    def value(self, name: str):
        if name in self._values:
            return self._values[name]
        return self.symbolic().value(name)


def key(spec: ModelSpec, settings: VllmSettings, tp: int, pp: int, budget_note: str) -> str:
    """The entry's name: every input of ``serve`` after its flags are parsed."""
    form = ["serve", fast_cache.canonical(settings), fast_cache.canonical(tp), fast_cache.canonical(pp), budget_note]
    return fast_cache.key(fast.spec_digest(spec), fast_cache.digest(form))


def lookup(name: str) -> dict | None:
    """The checked data stored under ``name`` (memory, then disk), or None."""
    folder = fast_cache.cache_dir()
    if folder is None:
        return None
    data = _MEMORY.get(name)
    if data is None:
        data = fast_cache.read_data(folder, name, check)
        if data is not None:
            _keep(name, data)
    return data


def record(name: str, data: dict) -> None:
    """Store ``data`` (see :func:`data_of`) under ``name``."""
    folder = fast_cache.cache_dir()
    if folder is None:
        return
    _keep(name, check(data))
    fast_cache.write_data(folder, name, data)


def _keep(name: str, data: dict) -> None:
    if len(_MEMORY) >= MEMORY_ENTRIES:
        _MEMORY.clear()
    _MEMORY[name] = data


# --- the entry's data -----------------------------------------------------------------------------
def _number(value) -> object:
    """An exact value as JSON: an int, or [numerator, denominator] of a Fraction."""
    if type(value) is int:
        return value
    if isinstance(value, Fraction):
        return [value.numerator, value.denominator]
    raise TypeError(f"{type(value).__name__} is not stored")


def _exact(value) -> int | Fraction:
    if type(value) is int:
        return value
    if isinstance(value, list) and len(value) == 2 and all(type(v) is int for v in value) and value[1] > 0:
        return Fraction(value[0], value[1])
    raise ValueError("a value that is neither an integer nor a fraction")


def data_of(worker, values: dict, quantities: dict, notes: dict) -> dict | None:
    """The JSON data of one prediction's worker, values and notes (read back by :func:`check`);
    None when something in it would not come back from JSON as itself (the prediction is then
    recomputed each time)."""
    model, evaluation = worker.model, worker.model.evaluate()
    meta = {"name": model.name, "mode": model.mode, "profile": model.profile, "term_names": list(model.terms),
            "host_names": list(model.host_terms), "phases": {k: list(v) for k, v in model.phases.items()},
            "descriptions": dict(model.descriptions), "sources": dict(model.sources), "counts": {},
            "inputs": model.inputs}
    try:
        data = {"stage": worker.stage, "meta": meta, "terms": dict(evaluation.terms), "host": dict(evaluation.host),
                "values": {k: _number(v) for k, v in values.items()},
                "quantities": {k: _number(v) for k, v in quantities.items()}, "notes": notes}
        return data if json.loads(json.dumps(data)) == data else None
    except (TypeError, ValueError):
        return None


def check(data: dict) -> dict:
    """An entry's data with its exact values decoded, every field checked (ValueError when off)."""
    if not isinstance(data, dict) or type(data.get("stage")) is not int or not isinstance(data.get("meta"), dict):
        raise ValueError("a malformed serve entry")
    fast_cache.check_meta(data["meta"])
    names, hosts = data["meta"]["term_names"], data["meta"]["host_names"]
    for field, expected in (("terms", names), ("host", hosts)):
        part = data.get(field)
        if not isinstance(part, dict) or list(part) != expected or not all(type(v) is int for v in part.values()):
            raise ValueError(f"{field} do not fit the entry")
    for field in ("values", "quantities", "notes"):
        if not isinstance(data.get(field), dict):
            raise ValueError(f"{field} is not a dict")
    # a recurrent model's lines read all four hybrid values and the mamba_cache_mode input
    values, inputs = data["values"], data["meta"]["inputs"]
    hybrid = any(k in values for k in HYBRID_VALUES if k != "page_bytes")
    if not set(VALUES) <= set(values) or not set(INPUTS) <= set(inputs) \
            or hybrid and not (set(HYBRID_VALUES) <= set(values) and "mamba_cache_mode" in inputs):
        raise ValueError("values or inputs are missing")
    notes = data["notes"]
    for field in ("max_model_len_note", "refusal"):
        if not (notes.get(field) is None or isinstance(notes.get(field), str)):
            raise ValueError(f"{field} is not a string")
    if type(notes.get("largest")) is not int or type(notes.get("slope")) is not float \
            or not (notes.get("max_model_len") is None or type(notes.get("max_model_len")) is int):
        raise ValueError("malformed notes")
    return {**data, "values": {k: _exact(v) for k, v in data["values"].items()},
            "quantities": {k: _exact(v) for k, v in data["quantities"].items()}}


def worker_of(data: dict, rebuild_worker: Callable[[], object]) -> CachedWorker:
    """The cached worker of checked ``data``; ``rebuild_worker`` builds the symbolic one."""
    meta = data["meta"]
    top = [n for n in meta["term_names"] if "/" not in n]
    evaluation = combine(dict(data["terms"]), top, {k: tuple(v) for k, v in meta["phases"].items()},
                         dict(data["host"]), {})
    inputs = json.loads(json.dumps(meta["inputs"]))  # a fresh copy: callers may add notes
    model = CachedModel({**meta, "inputs": inputs}, evaluation, lambda: rebuild_worker().model)
    return CachedWorker(data["stage"], model, dict(data["quantities"]), rebuild_worker)
