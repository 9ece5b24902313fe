"""What an evaluated memory model holds, without SymPy: exact bytes and the model's outline.

:class:`Evaluation` is the exact integer bytes of every term at one point (the result of
``MemoryModel.evaluate``). :class:`ModelOutline` is everything of a ``MemoryModel`` a report
reads except its expressions: name, mode, inputs, term names, phases, descriptions,
sources and profile. The fast path (engine/fast.py) returns an outline beside the bytes
its cached evaluator computed; any other attribute (``terms``, ``facts``, ``expression``,
``diff`` ...) builds the real MemoryModel on first use, importing SymPy then.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from engine.errors import InputError


@dataclass(frozen=True)
class Evaluation:
    """Exact bytes of every term at one point; ``total_bytes`` is the peak over phases."""

    total_bytes: int
    terms: dict[str, int]
    phases: dict[str, int]
    peak_phase: str | None
    values: dict[str, int]
    host: dict[str, int] = field(default_factory=dict)
    outside: dict[str, int] = field(default_factory=dict)  # device memory outside both counters
    # max_memory_reserved per phase where the profile models the caching allocator
    # (MemoryModel.allocator), computed on first use: solves and sweeps read only total_bytes
    reserved_by_phase: Callable[[], dict[str, int]] | None = field(default=None, repr=False, compare=False)
    _reserved_cache: dict = field(default_factory=dict, repr=False, compare=False)

    def _reserved(self) -> dict[str, int]:
        if self.reserved_by_phase is None:
            return {}
        if "phases" not in self._reserved_cache:
            self._reserved_cache["phases"] = self.reserved_by_phase()
        return self._reserved_cache["phases"]

    @property
    def reserved_bytes(self) -> int | None:
        """The caching allocator's reserve at its largest phase (None where not modelled)."""
        reserved = self._reserved()
        return max(reserved.values()) if reserved else None

    @property
    def reserved_phase(self) -> str | None:
        reserved = self._reserved()
        return max(reserved, key=reserved.get) if reserved else None


def combine(terms: dict[str, int], top_level: list[str], phases: dict[str, tuple[str, ...]],
            host: dict[str, int], values: dict[str, object], outside: dict[str, int] | None = None,
            reserved: Callable[[], dict[str, int]] | None = None) -> Evaluation:
    """The Evaluation of rounded term bytes: phase sums and their peak, or the top-level sum
    (as ``MemoryModel.evaluate`` adds them)."""
    sums = {phase: sum(terms[n] for n in names) for phase, names in phases.items()}
    if sums:
        peak = max(sums, key=sums.get)
        total = sums[peak]
    else:
        peak = None
        total = sum(terms[n] for n in top_level)
    given = {k: v for k, v in values.items() if v is not None}
    return Evaluation(total, terms, sums, peak, given, host, outside or {}, reserved)


class ModelOutline:
    """A MemoryModel's names and metadata; the symbolic model itself is built on demand.

    ``rebuild`` returns the real ``engine.model.MemoryModel`` (the profile's build, SymPy);
    it is called once, the first time an attribute outside the outline is read.
    """

    def __init__(self, name: str, mode: str, inputs: dict, term_names: tuple[str, ...],
                 phases: dict[str, tuple[str, ...]], descriptions: dict[str, str], sources: dict[str, str],
                 profile: str, host_names: tuple[str, ...], rebuild: Callable[[], object]):
        self.name, self.mode, self.inputs, self.profile = name, mode, inputs, profile
        self.term_names, self.host_names = term_names, host_names
        self.phases, self.descriptions, self.sources = phases, descriptions, sources
        self._rebuild, self._model = rebuild, None
        # engine/fast.py stores no model with a caching-allocator rule or terms outside the
        # allocator (their reserve is computed from the symbolic tensor list)
        self.allocator, self.outside_terms = "", {}

    @property
    def top_level(self) -> list[str]:
        return [name for name in self.term_names if "/" not in name]

    def children(self, name: str) -> list[str]:
        prefix = name + "/"
        return [n for n in self.term_names if n.startswith(prefix) and "/" not in n[len(prefix):]]

    def source(self, name: str) -> str:
        """The source of term ``name`` (a sub-term's is its parent's)."""
        try:
            return self.sources[name.split("/", 1)[0]]
        except KeyError:
            raise InputError(f"term {name!r} of {self.name} has no source") from None

    def symbolic(self):
        """The MemoryModel this outline stands for (built once, with SymPy)."""
        if self._model is None:
            self._model = self._rebuild()
        return self._model

    def __getattr__(self, name: str):
        if name.startswith("_"):  # never rebuild for copy/pickle probes of private names
            raise AttributeError(name)
        return getattr(self.symbolic(), name)
