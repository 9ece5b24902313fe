"""``memsym serve``: what vLLM will print at start-up for one ``vllm serve`` line.

One library call (:func:`serve`) takes vLLM's own flags, builds every pipeline stage's
worker with the ``vllm`` profile (engine/profiles/vllm.py), evaluates the smallest one as
the engine does, and answers the figures vLLM logs: weights, torch peak increase, non-torch
increase, available KV cache memory, GPU KV cache size in tokens and the maximum
concurrency. Without ``--max-model-len`` (or with ``auto``) it answers the largest
``max_model_len`` that starts; when one request of the given length does not fit it
answers vLLM's refusal and the largest length that would start
(vllm/v1/core/kv_cache_utils.py ``check_enough_kv_cache_memory``, ``estimate_max_model_len``).

A prediction already made for the same flags (every one of them in the key) is read back
from engine/serving_cache.py without SymPy; the first one is computed symbolically and stored
(docs/fast-path.md).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

from typing import TYPE_CHECKING

from engine import serving_cache
from engine.errors import InputError
from engine.gpus import gpu as catalog_gpu
from engine.profiles.vllm_settings import V0_VERSIONS, VllmSettings, defaults_for
from engine.registry import load_spec
from engine.scenario import Scenario
from engine.spec import ModelSpec
from engine.units import parse_bytes

if TYPE_CHECKING:  # imported where used: a cached prediction imports no SymPy (engine/serving_cache.py)
    import sympy

    from engine.profiles.vllm import Worker

GIB = 2**30
MAX_MODEL_LEN_LIMIT = 1 << 24  # far beyond any model's context; bounds the search
# what a recurrent model's cache adds (engine/profiles/vllm_hybrid.py quantities)
HYBRID_VALUES = serving_cache.HYBRID_VALUES


@dataclass(frozen=True)
class ServePrediction:
    """The start-up figures of one ``vllm serve`` line (one worker: the smallest)."""

    spec: ModelSpec
    settings: VllmSettings
    scenario: Scenario
    workers: tuple["Worker", ...]  # a cached prediction holds the smallest worker only
    worker: "Worker"
    values: dict[str, int | Fraction]
    budget_note: str
    max_model_len_note: str | None
    refusal: str | None  # vLLM's error when one max_model_len request cannot fit
    largest_max_model_len: int
    slope: float | None = None  # d max_concurrency / d gpu_memory_utilization (None: computed on use)

    def to_dict(self) -> dict:
        """The ``--json`` contract (integers are exact bytes; max_concurrency a float)."""
        v = self.values
        return {
            "model": self.spec.name,
            "profile": "vllm",
            "vllm_version": self.settings.version,
            "inputs": self.worker.model.inputs,
            **{key: v[key] for key in ("weights_bytes", "activation_peak_bytes", "non_torch_bytes",
                                       "cuda_graph_bytes", "requested_bytes", "available_kv_cache_bytes",
                                       "num_gpu_blocks", "kv_cache_tokens")},
            "max_concurrency": float(v["max_concurrency"]),
            "max_model_len": v["max_model_len"],
            "largest_max_model_len": self.largest_max_model_len,
            "starts": self.refusal is None,
            "refusal": self.refusal,
            "terms": self.worker.model.evaluate().terms,
            "sources": self.worker.model.sources,
            "stage": self.worker.stage,
            "d_max_concurrency_d_gpu_memory_utilization": self.slope if self.slope is not None else slope(self),
        }


def slope(prediction: ServePrediction) -> float:
    """d max_concurrency / d gpu_memory_utilization at the prediction's utilization (SymPy)."""
    import sympy

    from formulas import symbols as S

    return float(derivative(prediction.worker, "max_concurrency", "gpu_memory_utilization")
                 .xreplace({S.gpu_memory_utilization: sympy.Rational(prediction.settings.gpu_memory_utilization)}))


def resolve_total(gpu_name: str | None, gpu_memory: str | int | None) -> tuple[int, str | None, str]:
    """(cudaMemGetInfo total bytes, catalog name, a note on where the figure came from)."""
    if (gpu_name is None) == (gpu_memory is None):
        raise InputError("give exactly one of --gpu NAME and --gpu-memory SIZE (the cudaMemGetInfo total)")
    if gpu_memory is not None:
        total = gpu_memory if isinstance(gpu_memory, int) else parse_bytes(gpu_memory, "--gpu-memory")
        if total < 1:
            raise InputError(f"--gpu-memory must be at least 1 byte, got {gpu_memory!r}")
        return total, None, f"--gpu-memory {total / GIB:.2f} GiB"
    entry = catalog_gpu(gpu_name)
    if entry.cuda_total_bytes is not None:
        unlinked = "" if "https://" in (entry.cuda_total_source or "") else " (an estimate: no public log linked)"
        return entry.cuda_total_bytes, entry.name, (f"{entry.name}: cudaMemGetInfo total "
                                                    f"{entry.cuda_total_bytes / GIB:.2f} GiB{unlinked}")
    estimate = f"; {entry.estimate_note}" if entry.estimate_note else ""
    return entry.memory_bytes, entry.name, (f"{entry.name}: no public cudaMemGetInfo total; using nvidia-smi's "
                                            f"{entry.memory_bytes / GIB:.2f} GiB (vLLM sees a few hundred MiB less; "
                                            f"pass --gpu-memory){estimate}")


def parse_max_model_len(text: str) -> int | None:
    """``--max-model-len``: a positive integer, or ``auto`` / ``-1`` (None: the largest that starts)."""
    if text.strip().lower() in ("auto", "-1"):
        return None
    try:
        number = int(text.replace("_", ""))
    except ValueError:
        number = 0
    if number < 1:
        raise InputError(f"--max-model-len must be a positive integer or 'auto', got {text!r}")
    return number


def load_model(model: str) -> ModelSpec:
    """``--model``: a registry id, a Hugging Face repo id, or a local directory / config.json."""
    path = Path(model)
    if path.is_dir() or path.name == "config.json" and path.is_file():
        return load_spec(config_path=path)
    return load_spec(model)


def serve(model: str, *, tp: int = 1, pp: int = 1, gpu_name: str | None = None,
          gpu_memory: str | int | None = None, max_model_len: int | str | None = None, **flags) -> ServePrediction:
    """Predict vLLM's start-up figures; ``flags`` are :class:`VllmSettings` fields."""
    spec = load_model(model)
    total, name, budget_note = resolve_total(gpu_name, gpu_memory)
    if isinstance(max_model_len, str):
        max_model_len = parse_max_model_len(max_model_len)
    auto = max_model_len in (None, "auto", -1)
    if not auto and (isinstance(max_model_len, bool) or not isinstance(max_model_len, int)):
        raise InputError(f"--max-model-len must be a positive integer or 'auto', got {max_model_len!r}")
    scenario = Scenario(tp=tp, pp=pp)
    settings = VllmSettings(cuda_total_bytes=total, gpu_name=(name or "").lower() or None,
                            max_model_len=None if auto else max_model_len, **flags)
    name = serving_cache.key(spec, settings, tp, pp, budget_note)
    data = serving_cache.lookup(name)
    if data is not None:
        return _cached(data, spec, scenario, settings, budget_note)
    prediction = _predicted(spec, scenario, settings, budget_note, auto)
    _record(name, prediction)
    return prediction


def _predicted(spec: ModelSpec, scenario: Scenario, settings: VllmSettings, budget_note: str,
               auto: bool) -> ServePrediction:
    """The symbolic prediction (SymPy): every stage's worker, the auto length, the refusal."""
    from engine.profiles.vllm import build_workers, smallest_worker

    workers = build_workers(spec, scenario, settings)
    largest = min(_largest_len(w, spec) for w in workers)
    note = None
    if auto:
        context = defaults_for(spec, scenario, settings).max_model_len
        chosen = min(largest, context)
        note = f"max_model_len auto: {chosen:,} (the largest that starts; the model's context is {context:,})"
        if chosen >= 1:
            settings = replace(settings, max_model_len=chosen)
            workers = build_workers(spec, scenario, settings)
    worker = smallest_worker(workers)
    values = _values(worker)
    refusal = _refusal(worker, values, largest, settings)
    prediction = ServePrediction(spec, settings, scenario, tuple(workers), worker, values, budget_note, note, refusal,
                                 max(largest, 0))
    return replace(prediction, slope=slope(prediction))


def _record(name: str, prediction: ServePrediction) -> None:
    """Store ``prediction`` when the one read back from its entry equals it."""
    quantities = {}
    for quantity in serving_cache.QUANTITIES:
        value = prediction.worker.value(quantity)
        if getattr(value, "is_Integer", False):
            quantities[quantity] = int(value)
    notes = {"max_model_len_note": prediction.max_model_len_note, "refusal": prediction.refusal,
             "largest": prediction.largest_max_model_len, "slope": prediction.slope,
             "max_model_len": prediction.settings.max_model_len}
    data = serving_cache.data_of(prediction.worker, prediction.values, quantities, notes)
    if data is None:
        return
    settings = prediction.settings
    if prediction.max_model_len_note:  # auto: keyed without the length chosen
        settings = replace(settings, max_model_len=None)
    try:
        checked = serving_cache.check(data)
    except ValueError:
        return
    cached = _cached(checked, prediction.spec, prediction.scenario, settings, prediction.budget_note)
    if (cached.to_dict() == prediction.to_dict() and cached.values == prediction.values
            and cached.settings == prediction.settings
            and cached.worker.model.evaluate() == prediction.worker.model.evaluate()
            and all(cached.worker.value(q) == prediction.worker.value(q) for q in quantities)):
        serving_cache.record(name, data)


def _cached(data: dict, spec: ModelSpec, scenario: Scenario, settings: VllmSettings,
            budget_note: str) -> ServePrediction:
    """The prediction of a cache entry (engine/serving_cache.py)."""
    notes = data["notes"]
    if notes["max_model_len_note"] is not None:  # auto: the length chosen
        settings = replace(settings, max_model_len=notes["max_model_len"])

    def rebuild():
        from engine.profiles.vllm import build_worker

        return build_worker(spec, scenario, settings, data["stage"])

    worker = serving_cache.worker_of(data, rebuild)
    return ServePrediction(spec, settings, scenario, (worker,), worker, dict(data["values"]), budget_note,
                           notes["max_model_len_note"], notes["refusal"], notes["largest"], notes["slope"])


def derivative(worker: Worker, quantity: str, variable: str) -> sympy.Expr:
    """d quantity / d variable with the block floors relaxed (``floor(x) -> x``), pinned
    at the worker's facts except ``variable``: e.g. requests gained per unit of
    ``gpu_memory_utilization``. The exact quantity is a step function; this is its slope."""
    import sympy

    from formulas import symbols as S

    symbol = S.symbol(variable)
    expr = worker.quantities.get(quantity, worker.model.terms.get(quantity))
    if expr is None:
        raise InputError(f"unknown quantity {quantity!r}")
    relaxed = expr.replace(sympy.floor, lambda inner: inner)
    facts = {k: v for k, v in worker.model.facts.items() if k != symbol}
    return sympy.diff(relaxed.xreplace(facts), symbol)


def _values(worker: Worker) -> dict[str, int | Fraction]:
    import sympy

    from formulas import symbols as S

    ev = worker.model.evaluate()
    exact = {name: worker.value(name) for name in ("num_gpu_blocks", "kv_cache_tokens", "max_concurrency",
                                                   "request_kv_bytes", "requested_bytes")}
    return {
        "weights_bytes": ev.terms["weights"], "activation_peak_bytes": ev.terms["activations"],
        "non_torch_bytes": ev.terms["non_torch"], "cuda_graph_bytes": ev.terms["cuda_graphs"],
        "requested_bytes": int(sympy.floor(exact["requested_bytes"])), "available_kv_cache_bytes": ev.terms["kv_cache"],
        "num_gpu_blocks": max(int(exact["num_gpu_blocks"]), 0), "kv_cache_tokens": max(int(exact["kv_cache_tokens"]), 0),
        "max_concurrency": max(Fraction(str(exact["max_concurrency"])), Fraction(0)),
        "request_kv_bytes": int(exact["request_kv_bytes"]),
        "max_model_len": int(worker.model.facts[S.max_model_len]),
        "block_size": int(worker.model.facts[S.block_size]),
        "cuda_total_bytes": int(worker.model.facts[S.cuda_total_bytes]),
        **{name: int(worker.value(name)) for name in HYBRID_VALUES if name in worker.quantities},
    }


def _largest_len(worker: Worker, spec: ModelSpec) -> int:
    """The largest max_model_len whose one request fits this worker's available KV memory."""
    from formulas import symbols as S

    available = worker.model.evaluate().terms["kv_cache"]
    facts = {k: v for k, v in worker.model.facts.items() if k != S.max_model_len}
    if not _fits(worker, facts, 1, available):
        return 0
    low, high = 1, MAX_MODEL_LEN_LIMIT
    while low < high:  # largest L with needed(L) <= available; needed grows with L
        mid = (low + high + 1) // 2
        if _fits(worker, facts, mid, available):
            low = mid
        else:
            high = mid - 1
    return low


def _fits(worker: Worker, facts: dict, length: int, available: int) -> bool:
    """vLLM V1 needs one request's blocks in every layer; V0 needs ``blocks x B_blk >= L``."""
    import sympy

    from formulas import symbols as S

    subs = {**facts, S.max_model_len: sympy.Integer(length)}
    if worker.model.inputs.get("version") in V0_VERSIONS:
        return int(worker.quantities["kv_cache_tokens"].xreplace(subs)) >= length
    return available > 0 and int(worker.quantities["request_kv_bytes"].xreplace(subs)) <= available


def _refusal(worker: Worker, values: dict, largest: int, settings: VllmSettings) -> str | None:
    """vLLM's start-up error when one request of max_model_len cannot be cached, else None."""
    length, available = values["max_model_len"], values["available_kv_cache_bytes"]
    if available <= 0:
        return "No available memory for the cache blocks. Try increasing `gpu_memory_utilization` when initializing the engine."
    if settings.v0:
        if length <= values["kv_cache_tokens"]:
            return None
        return (f"The model's max seq len ({length}) is larger than the maximum number of tokens that can be stored "
                f"in KV cache ({values['kv_cache_tokens']}). Try increasing `gpu_memory_utilization` or decreasing "
                "`max_model_len` when initializing the engine.")
    if values["request_kv_bytes"] <= available:
        return None
    return (f"To serve at least one request with the models's max seq len ({length}), "
            f"({values['request_kv_bytes'] / GIB:.2f} GiB KV cache is needed, which is larger than the available KV "
            f"cache memory ({available / GIB:.2f} GiB). Based on the available memory, the estimated maximum model "
            f"length is {largest}. Try increasing `gpu_memory_utilization` or decreasing `max_model_len` when "
            "initializing the engine.")
