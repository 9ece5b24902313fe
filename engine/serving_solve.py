"""Serving questions answered as vLLM sizes its KV cache: ``solve concurrency``, ``solve
seq-len`` and ``solve batch-size`` in inference mode, with the ``vllm`` profile (the default
for these three; ``--profile megatron`` gives the bare-tensor answer of engine/solve.py).

Each answer is one or two :func:`engine.serving.serve` predictions, so it equals what
``memsym serve`` prints for the same flags:

- concurrency: vLLM's "Maximum concurrency for L tokens per request" (a fraction,
  ``num_gpu_blocks / blocks per request``; vllm/v1/core/kv_cache_utils.py
  ``get_max_concurrency_for_kv_cache_config``) and the whole requests that fit, ``n`` with
  ``n x blocks per request <= num_gpu_blocks < (n + 1) x blocks per request``;
- batch-size: the same ``n`` at ``--seq-len`` (requests of max_model_len tokens at once);
- seq-len: the largest max_model_len that starts, ``KV bytes of one request of n tokens <=
  available KV cache memory < KV bytes at n + 1`` (``check_enough_kv_cache_memory``),
  capped at the model's context (vllm/config/model.py ``_get_and_verify_max_len``).

The budget: ``--gpu NAME`` is the catalog's cudaMemGetInfo total (nvidia-smi's figure where
none is known, said in the note), ``--budget SIZE`` is taken as that total for one GPU;
``--gpu-memory-utilization`` defaults to vLLM's 0.9. ``--num-gpus N`` alone is
``tensor_parallel_size=N``; ``--tp``/``--pp`` are vLLM's tensor/pipeline parallel sizes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from engine.errors import InfeasibleError, InputError
from engine.gpus import parse_utilization
from engine.profiles import refuse_unread_knobs
from engine.profiles.vllm_settings import DEFAULT_UTILIZATION, knob_profile, settings_from
from engine.scenario import Scenario
from engine.serving import ServePrediction, serve
from engine.units import parse_bytes, size_reading

MEGATRON_HINT = "add --profile megatron for the bare-tensor answer"


@dataclass(frozen=True)
class ServingAnswer:
    """A serving question answered by the vllm profile, with its certificate."""

    model: str
    variable: str
    value: int
    prediction: ServePrediction  # at the answer (max_model_len = --seq-len, or the solved length)
    certificate: dict  # quantity at value, at value + 1, and the bound they straddle
    budget_note: str
    parallel_note: str

    def to_dict(self) -> dict:
        p = self.prediction.to_dict()
        return {"model": self.model, "profile": "vllm", "variable": self.variable, "value": self.value,
                "max_concurrency": p["max_concurrency"], "max_model_len": p["max_model_len"],
                "certificate": self.certificate,
                "budget": {"note": self.budget_note, "cuda_total_bytes": self.prediction.values["cuda_total_bytes"],
                           "gpu_memory_utilization": float(self.prediction.settings.gpu_memory_utilization),
                           "requested_bytes": p["requested_bytes"],
                           "available_kv_cache_bytes": p["available_kv_cache_bytes"]},
                "parallel": {"tensor_parallel_size": self.prediction.scenario.tp,
                             "pipeline_parallel_size": self.prediction.scenario.pp, "mapping": self.parallel_note},
                "vllm": p}


def parallel_sizes(num_gpus: int | None, knobs: dict) -> tuple[int, int, str]:
    """(tensor_parallel_size, pipeline_parallel_size, the mapping in words)."""
    tp, pp = knobs.get("tp", 1), knobs.get("pp", 1)
    if num_gpus is None or num_gpus == 1 and "tp" not in knobs and "pp" not in knobs:
        return tp, pp, f"--tp {tp} --pp {pp} -> tensor_parallel_size={tp}, pipeline_parallel_size={pp}"
    if "tp" not in knobs and "pp" not in knobs:
        return num_gpus, 1, (f"--num-gpus {num_gpus} -> tensor_parallel_size={num_gpus}, pipeline_parallel_size=1 "
                             "(vLLM splits a model over the GPUs of one node by tensor parallelism)")
    if tp * pp != num_gpus:
        raise InputError(f"--num-gpus {num_gpus} with --tp {tp} --pp {pp}: vLLM runs on tp x pp = {tp * pp} GPUs; "
                         "give --num-gpus equal to that or leave it out")
    return tp, pp, f"--num-gpus {num_gpus} --tp {tp} --pp {pp} -> tensor_parallel_size={tp}, pipeline_parallel_size={pp}"


def _total(budget, gpu) -> tuple[dict, str | None]:
    """serve's budget arguments for --budget / --gpu, and the note for --budget."""
    if (budget is None) == (gpu is None):
        raise InputError("give exactly one of --budget SIZE and --gpu NAME")
    if gpu is not None:
        return {"gpu_name": gpu}, None
    total = budget if isinstance(budget, int) and not isinstance(budget, bool) else parse_bytes(budget, "--budget")
    if total < 1:
        raise InputError(f"--budget must be at least 1 byte, got {budget!r}")
    reading = size_reading(budget)
    note = f"--budget {total:,} B ({total / 2**30:.2f} GiB) taken as the cudaMemGetInfo total of one GPU"
    return {"gpu_memory": total}, (f"{reading}; {note}" if reading else note)


def _flags(model, config, budget, gpu, num_gpus, utilization, knobs: dict) -> tuple[dict, str, str | None]:
    """serve()'s keyword arguments for solve's flags, the parallel mapping and the budget note."""
    tp, pp, parallel = parallel_sizes(num_gpus, knobs)
    scenario = Scenario(**{**knobs, "profile": "vllm", "tp": tp, "pp": pp})
    try:
        refuse_unread_knobs(knob_profile(), scenario)
        settings = settings_from(scenario)
    except InputError as exc:
        raise InputError(f"{exc}; serving questions default to --profile vllm: {MEGATRON_HINT}") from None
    total, note = _total(budget, gpu)
    util = DEFAULT_UTILIZATION if utilization is None else parse_utilization(utilization)
    flags = {"model": config if model is None else model, "tp": tp, "pp": pp, **total,
             "gpu_memory_utilization": util, "block_size": settings.block_size, "dtype": settings.dtype,
             "kv_cache_dtype": settings.kv_cache_dtype, "quantization": settings.quantization}
    return flags, parallel, note


def _predict(flags: dict, max_model_len) -> ServePrediction:
    try:
        return serve(**flags, max_model_len=max_model_len)
    except InputError as exc:
        if str(exc).startswith("--profile vllm"):
            raise InputError(f"{exc}; {MEGATRON_HINT}") from None
        raise


def solve_serving(target: str, model: str | None, config: str | None, *, budget=None, gpu=None,
                  num_gpus: int | None = None, utilization=None, serving_activations: str | None = None,
                  **knobs) -> ServingAnswer:
    """``memsym solve concurrency|seq-len|batch-size`` with the vllm profile (see the module doc)."""
    if serving_activations is not None:
        raise InputError("--serving-activations: the vllm profile models vLLM's own profile run; "
                         f"{MEGATRON_HINT}")
    if model is None and config is None:
        raise InputError("give --model ID or --config PATH (or --symbolic for the formula alone)")
    if target == "seq_len" and knobs.get("batch_size") not in (None, 1):
        raise InputError(f"solve seq-len --profile vllm: the largest max_model_len that starts is for one request; "
                         f"--batch-size {knobs['batch_size']} is not read (solve batch-size gives the requests at "
                         f"--seq-len); {MEGATRON_HINT}")
    flags, parallel, note = _flags(model, config, budget, gpu, num_gpus, utilization, knobs)
    if target == "seq_len":
        return _largest_length(flags, parallel, note)
    prediction = _predict(flags, knobs.get("seq_len", Scenario.seq_len))
    if prediction.refusal:
        raise InfeasibleError(f"solve {target.replace('_', '-')} --profile vllm: vLLM refuses to start: "
                              f"{prediction.refusal}")
    per_request = int(prediction.worker.value("request_blocks"))
    blocks = prediction.values["num_gpu_blocks"]
    n = math.floor(prediction.values["max_concurrency"])
    certificate = {"quantity": "KV-cache blocks", "blocks_per_request": per_request, "num_gpu_blocks": blocks,
                   "at_value": n * per_request, "at_next": (n + 1) * per_request,
                   "fits": n * per_request <= blocks < (n + 1) * per_request}
    return ServingAnswer(prediction.spec.name, target, n, prediction, certificate, note or _gpu_note(prediction),
                         parallel)


def _largest_length(flags: dict, parallel: str, note: str | None) -> ServingAnswer:
    """The largest max_model_len that starts, capped at the model's context, with its certificate."""
    auto = _predict(flags, None)
    largest, context = auto.largest_max_model_len, auto.spec.context_length
    if largest < 1:
        raise InfeasibleError(f"solve seq-len --profile vllm: vLLM refuses to start: {auto.refusal or 'no KV memory'}")
    n = min(largest, context) if context else largest
    at, above = _predict(flags, n), _predict(flags, n + 1)
    certificate = {"quantity": "KV bytes of one request", "available_kv_cache_bytes": at.values["available_kv_cache_bytes"],
                   "at_value": at.values["request_kv_bytes"], "at_next": above.values["request_kv_bytes"],
                   "available_at_next": above.values["available_kv_cache_bytes"],
                   "capped_at_context": n < largest, "context": context,
                   "fits": at.refusal is None and (n < largest or above.refusal is not None)}
    return ServingAnswer(at.spec.name, "seq_len", n, at, certificate, note or _gpu_note(at), parallel)


def _gpu_note(prediction: ServePrediction) -> str:
    """serve's note on the catalog's total, with solve's flag for giving it directly."""
    return prediction.budget_note.replace("pass --gpu-memory", "pass --budget SIZE, taken as that total")
