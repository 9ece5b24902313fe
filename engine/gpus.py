"""The GPU catalog and memory budgets: how many bytes a card (or N cards) offers a model.

The catalog (``engine/data/gpus.json``) records, per GPU, the total memory the driver
reports to programs (``nvidia-smi``'s ``memory.total``; ``cudaMemGetInfo``'s total), with
the vendor's datasheet figure and a public log of the reported figure beside it, and where a
public log shows it, the smaller total ``cudaMemGetInfo`` reports (``cuda_total_bytes``:
H100 80GB HBM3 79.19 GiB against nvidia-smi's 79.65 GiB). The cudaMemGetInfo total
is what vLLM multiplies by ``--gpu-memory-utilization`` (``vllm/worker/worker.py``,
``determine_num_available_blocks``: ``total_gpu_memory * gpu_memory_utilization``).

A :class:`Budget` is the memory of one device (from the catalog or ``--budget``), the
fraction a server may use of it, and the number of devices; solves compare one device's
share of the model against :attr:`Budget.per_gpu_bytes`.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from importlib import resources

from engine.errors import InputError
from engine.units import parse_bytes, parse_fraction, size_reading

MAX_NUM_GPUS = 1 << 20  # a bound on searches and on --num-gpus, far beyond any cluster


@dataclass(frozen=True)
class GPU:
    """One catalog entry; ``memory_bytes`` is exact."""

    name: str
    aliases: tuple[str, ...]
    product: str
    memory_bytes: int
    datasheet_memory: str
    datasheet_url: str
    reported_source: str | None
    # what cudaMemGetInfo reports (vLLM's total_memory); None where no public log shows it
    cuda_total_bytes: int | None = None
    cuda_total_source: str | None = None
    # where no public log shows memory_bytes: the rule that chose it and its uncertainty
    estimate: str | None = None
    # CUDA compute capability (major, minor) (None: not a CUDA device)
    compute_capability: tuple[int, int] | None = None

    @property
    def estimate_note(self) -> str | None:
        """One line for the user where ``memory_bytes`` is an estimate, else None."""
        if self.estimate is None:
            return None
        return f"{self.name}: {self.memory_bytes:,} B is an estimate, not a measured total: {self.estimate}"


@lru_cache(maxsize=1)
def catalog() -> dict[str, GPU]:
    """Name -> GPU, read once from the packaged data file."""
    text = resources.files("engine").joinpath("data/gpus.json").read_text(encoding="utf-8")
    out = {}
    for row in json.loads(text)["gpus"]:
        out[row["name"]] = GPU(
            name=row["name"], aliases=tuple(row["aliases"]), product=row["product"],
            memory_bytes=row["memory_bytes"], datasheet_memory=row["datasheet_memory"],
            datasheet_url=row["datasheet_url"], reported_source=row["reported_source"],
            cuda_total_bytes=row.get("cuda_total_bytes"), cuda_total_source=row.get("cuda_total_source"),
            estimate=row.get("estimate"), compute_capability=_capability(row.get("compute_capability")),
        )
    return out


def _capability(value: list | None) -> tuple[int, int] | None:
    return None if value is None else (int(value[0]), int(value[1]))


@lru_cache(maxsize=1)
def ambiguous() -> dict[str, tuple[str, ...]]:
    """Spellings that name several catalog GPUs (``a100``: 40 or 80 GB) -> the choices."""
    text = resources.files("engine").joinpath("data/gpus.json").read_text(encoding="utf-8")
    return {k: tuple(v) for k, v in json.loads(text).get("ambiguous", {}).items()}


def _normalise(name: str) -> str:
    return re.sub(r"[\s_]+", "-", name.strip().lower())


def gpu(name: str) -> GPU:
    """The catalog entry called ``name`` (or one of its aliases); unknown names suggest close ones."""
    key = _normalise(name) if isinstance(name, str) else ""
    spellings = {}
    for entry in catalog().values():
        for spelling in (entry.name, *entry.aliases):
            spellings[spelling] = entry
    if key in spellings:
        return spellings[key]
    choices = ambiguous().get(key)
    if choices:
        raise InputError(f"--gpu {name!r} names several GPUs: choose one of {', '.join(choices)} "
                         "(or give --gpu-memory SIZE)")
    close = difflib.get_close_matches(key, list(spellings), n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise InputError(f"--gpu: unknown GPU {name!r}; {hint}known: {', '.join(catalog())}")


def parse_utilization(text: str | Fraction | int | None) -> Fraction:
    """``--gpu-memory-utilization``: an exact fraction in (0, 1]; ``'0.9'`` -> 9/10."""
    if text is None:
        return Fraction(1)
    return parse_fraction(text, "--gpu-memory-utilization", low=Fraction(0), high=Fraction(1), low_open=True)


@dataclass(frozen=True)
class Budget:
    """Memory for a model: ``num_gpus`` devices of ``device_bytes``, of which a fraction is usable."""

    device_bytes: int
    num_gpus: int = 1
    utilization: Fraction = Fraction(1)
    gpu_name: str | None = None
    reading: str | None = None  # how a --budget spelling such as 24G was read
    estimate: str | None = None  # the catalog's note where the GPU's total is an estimate

    def __post_init__(self):
        if isinstance(self.num_gpus, bool) or not isinstance(self.num_gpus, int) or not 1 <= self.num_gpus <= MAX_NUM_GPUS:
            raise InputError(f"--num-gpus must be an integer from 1 to {MAX_NUM_GPUS}, got {self.num_gpus!r}")

    @property
    def per_gpu_bytes(self) -> int:
        """Usable bytes of one device: ``floor(utilization x device_bytes)``."""
        return math.floor(self.utilization * self.device_bytes)

    def with_num_gpus(self, num_gpus: int) -> "Budget":
        return Budget(self.device_bytes, num_gpus, self.utilization, self.gpu_name, self.reading, self.estimate)

    def as_inputs(self) -> dict[str, object]:
        """Plain JSON values: ints for bytes, a float for the fraction (exact: ``gpu_memory_utilization_exact``)."""
        out = {
            "gpu": self.gpu_name, "device_bytes": self.device_bytes, "num_gpus": self.num_gpus,
            "gpu_memory_utilization": float(self.utilization),
            "gpu_memory_utilization_exact": str(self.utilization), "per_gpu_bytes": self.per_gpu_bytes,
        }
        if self.reading:
            out["budget_read_as"] = self.reading
        if self.estimate:
            out["gpu_memory_estimate"] = self.estimate
        return out


def make_budget(budget: str | int | None = None, gpu_name: str | None = None, num_gpus: int = 1,
                utilization: str | Fraction | None = None) -> Budget:
    """A budget from ``--budget SIZE`` (one device's memory) or ``--gpu NAME``; exactly one of them."""
    if (budget is None) == (gpu_name is None):
        raise InputError("give exactly one of --budget SIZE (or --gpu-memory SIZE) and --gpu NAME")
    if gpu_name is not None:
        entry = gpu(gpu_name)
        return Budget(entry.memory_bytes, num_gpus, parse_utilization(utilization), entry.name,
                      estimate=entry.estimate_note)
    if isinstance(budget, int) and not isinstance(budget, bool):
        if budget < 1:
            raise InputError(f"--budget must be at least 1 byte, got {budget!r}")
        device, name = budget, None
    else:
        device, name = parse_bytes(budget, "--budget"), None
        return Budget(device, num_gpus, parse_utilization(utilization), name, size_reading(budget))
    return Budget(device, num_gpus, parse_utilization(utilization), name)
