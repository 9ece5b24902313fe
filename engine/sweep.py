"""Grids of scenarios through a compiled memory model: value lists, ranges, the sweep itself.

``--seq-len 1024:131072:x2`` and ``--batch-size 1,2,4,8`` are read by :func:`parse_values`,
a small parser of digits, commas and colons (never ``eval``). :func:`sweep` evaluates the
whole grid with one call of the model's compiled NumPy function (engine/numeric.py): the
axes broadcast against each other, so a 1000 x 10,000 grid costs a few array operations.
``memsym sweep`` reads its model through :func:`sweep_model`: a grid of up to
MAX_EXACT_POINTS points of a model with a cached sizes-free exact evaluator (engine/fast.py)
is evaluated point by point by it (:class:`ExactSweep`: no SymPy, no NumPy); see
docs/fast-path.md.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Iterator

from engine import fast
from engine.errors import InputError, MemsymError
from engine.evaluation import ModelOutline

if TYPE_CHECKING:  # imported where used: a sweep answered by a cached evaluator imports no SymPy (nor NumPy)
    import numpy

    from engine.model import MemoryModel

MAX_AXIS_VALUES = 100_000  # values one axis may hold
MAX_VALUE = 2**53  # float64 holds every integer up to here exactly
MAX_POINTS = 1_000_000  # grid points a sweep prints (CSV of about 100 MB at most)
MAX_EXACT_POINTS = 50_000  # larger grids compile NumPy (one vectorised call beats a Python loop there)
TOTAL = "total_bytes"  # engine.numeric.TOTAL
GRID_VARIABLES = ("batch_size", "seq_len")
FLAGS = {"batch_size": "--batch-size", "seq_len": "--seq-len"}

_INTEGER = re.compile(r"^[0-9]{1,16}$")
_STEP = re.compile(r"^([x+])([0-9]{1,16})$")


def parse_values(text: str, flag: str) -> tuple[int, ...]:
    """``'1,2,4,8'``, ``'1024:131072:x2'`` (geometric), ``'0:4096:+512'`` (arithmetic), or a mix.

    A range ``a:b:xK`` holds ``a, aK, aK^2, ...`` up to ``b``; ``a:b:+K`` holds ``a, a+K, ...``
    up to ``b``. Values are positive integers, returned sorted without repeats.
    """
    values: set[int] = set()
    for item in str(text).split(","):
        item = item.strip()
        values.update(_parse_range(item, flag) if ":" in item else (_parse_integer(item, flag, text),))
        if len(values) > MAX_AXIS_VALUES:
            raise InputError(f"{flag}: {text!r} holds more than {MAX_AXIS_VALUES:,} values")
    return tuple(sorted(values))


def _parse_integer(item: str, flag: str, text: str) -> int:
    if not _INTEGER.match(item) or not 1 <= int(item) <= MAX_VALUE:
        raise InputError(f"{flag}: cannot read {item!r} in {text!r}; use positive integers, "
                         f"a:b:xK (geometric) or a:b:+K (arithmetic), joined by commas")
    return int(item)


def _parse_range(item: str, flag: str) -> list[int]:
    parts = item.split(":")
    step = _STEP.match(parts[2].strip()) if len(parts) == 3 else None
    if step is None:
        raise InputError(f"{flag}: cannot read range {item!r}; use a:b:xK (geometric) or a:b:+K (arithmetic)")
    start, stop = (_parse_integer(p.strip(), flag, item) for p in parts[:2])
    kind, size = step.group(1), int(step.group(2))
    if stop < start:
        raise InputError(f"{flag}: range {item!r} ends before it starts")
    if (kind == "x" and size < 2) or (kind == "+" and size < 1):
        raise InputError(f"{flag}: range {item!r} needs a factor of at least 2 (xK) or a step of at least 1 (+K)")
    if kind == "+" and (stop - start) // size >= MAX_AXIS_VALUES:
        raise InputError(f"{flag}: range {item!r} holds more than {MAX_AXIS_VALUES:,} values")
    if kind == "+":
        return list(range(start, stop + 1, size))
    out, value = [], start
    while value <= stop:
        out.append(value)
        value *= size
    return out


@dataclass(frozen=True)
class Sweep:
    """Bytes of the total and every top-level term over a grid of ``axes`` (C order)."""

    model: str
    inputs: dict
    axes: dict[str, tuple[int, ...]]
    outputs: dict[str, numpy.ndarray]  # name -> float64 array of shape (len(axis) for axis in axes)

    @property
    def points(self) -> int:
        return math.prod(len(v) for v in self.axes.values())

    def rows(self) -> Iterator[dict[str, int]]:
        """One dict per grid point: the axis values, ``total_bytes`` and each term, as ints."""
        import numpy

        names = list(self.axes)
        flat = {name: array.ravel() for name, array in self.outputs.items()}
        for i, index in enumerate(numpy.ndindex(*(len(v) for v in self.axes.values()))):
            row = {name: self.axes[name][k] for name, k in zip(names, index)}
            row.update({name: int(values[i]) for name, values in flat.items()})
            yield row

    def to_dict(self) -> dict:
        """The ``--json`` form: model, inputs, axes and one record per point."""
        return {"model": self.model, "inputs": self.inputs, "axes": {k: list(v) for k, v in self.axes.items()},
                "points": list(self.rows())}


def sweep(mm: "MemoryModel", axes: dict[str, tuple[int, ...]], max_points: int = MAX_POINTS) -> "Sweep | ExactSweep":
    """Evaluate the total and top-level terms of ``mm`` over the grid ``axes`` (name -> values).

    Every free variable of ``mm`` needs an axis; an axis of a pinned variable is an error.
    A :class:`GridOutline` (:func:`sweep_model`) is evaluated point by point by its cached
    exact evaluator when the grid is small enough, else compiled as the MemoryModel it stands for.
    """
    if isinstance(mm, GridOutline):
        exact = _exact_sweep(mm, axes, max_points)
        if exact is not None:
            return exact
        mm = mm.symbolic()
    import numpy

    from engine.numeric import compile_terms

    function = compile_terms(mm)
    missing = [v for v in function.variables if v not in axes]
    pinned = [v for v in axes if v not in function.variables]
    if missing or pinned:
        raise InputError("; ".join(filter(None, (
            f"give values for {', '.join(FLAGS.get(v, v) for v in missing)}" if missing else "",
            f"{', '.join(FLAGS.get(v, v) for v in pinned)} is pinned by the model" if pinned else ""))))
    ordered = {name: tuple(axes[name]) for name in function.variables}
    points = int(numpy.prod([len(v) for v in ordered.values()], dtype=numpy.int64))
    if points > max_points:
        raise InputError(f"the grid holds {points:,} points; at most {max_points:,} (narrow "
                         f"{' or '.join(FLAGS.get(v, v) for v in ordered)})")
    arrays = {}
    for i, (name, values) in enumerate(ordered.items()):
        shape = [1] * len(ordered)
        shape[i] = len(values)
        arrays[name] = numpy.asarray(values, dtype=numpy.float64).reshape(shape)
    outputs = function(**arrays)
    outputs = {TOTAL: outputs.pop(TOTAL), **outputs}
    return Sweep(mm.name, mm.inputs, ordered, outputs)


def grid_model(model: str | None = None, config: str | None = None, *, batch_size: str = "1",
               seq_len: str = "2048", **knobs) -> tuple[dict[str, tuple[int, ...]], MemoryModel]:
    """``(axes, MemoryModel)`` of ``memsym sweep`` and ``plot``: batch_size and seq_len free, their
    values parsed from lists or ranges (``1,2,4``, ``1024:131072:x2``, ``512:8192:+512``)."""
    from engine.api import memory_model

    axes = {"batch_size": parse_values(batch_size, "--batch-size"), "seq_len": parse_values(seq_len, "--seq-len")}
    return axes, memory_model(model, config, **knobs, batch_size=None, seq_len=None)[1]


class GridOutline(ModelOutline):
    """The outline of a sweep's model (both sizes free) with the cached exact evaluator behind it."""

    def __init__(self, entry, rebuild):
        meta = entry.meta
        super().__init__(meta["name"], meta["mode"], fast.inputs_of(entry, {}), tuple(meta["term_names"]),
                         {k: tuple(v) for k, v in meta["phases"].items()}, dict(meta["descriptions"]),
                         dict(meta["sources"]), meta["profile"], tuple(meta["host_names"]), rebuild)
        self.entry = entry


def sweep_model(model: str | None = None, config: str | None = None, *, batch_size: str = "1",
                seq_len: str = "2048", **knobs) -> tuple[dict[str, tuple[int, ...]], "MemoryModel | GridOutline"]:
    """``(axes, model)`` of ``memsym sweep``: as :func:`grid_model`, the model a :class:`GridOutline`
    when a sizes-free exact evaluator is cached for it (or is stored now, by one estimate at the
    grid's first point), else the MemoryModel (SymPy)."""
    from engine.registry import load_spec
    from engine.scenario import Scenario

    axes = {"batch_size": parse_values(batch_size, "--batch-size"), "seq_len": parse_values(seq_len, "--seq-len")}
    spec = load_spec(model, config)
    scenario = Scenario(**knobs, batch_size=None, seq_len=None)
    entry = fast.cached_entry(spec, scenario)
    if entry is None:
        try:  # the miss: an estimate at the first point stores the entry when the profile allows one
            fast.estimate(spec, replace(scenario, batch_size=axes["batch_size"][0], seq_len=axes["seq_len"][0]))
        except MemsymError:
            pass  # said by the symbolic build below, as before
        entry = fast.cached_entry(spec, scenario)
    if entry is None:
        return axes, grid_model(model, config, batch_size=batch_size, seq_len=seq_len, **knobs)[1]
    return axes, GridOutline(entry, lambda: grid_model(model, config, batch_size=batch_size, seq_len=seq_len,
                                                       **knobs)[1])


def _exact_sweep(mm: GridOutline, axes: dict[str, tuple[int, ...]], max_points: int) -> "ExactSweep | None":
    """The sweep by the exact evaluator (exact ints stored as float64, as the NumPy path's), or
    None (the grid too large, or a value beyond 2**53 where float64 would round)."""
    if set(axes) != set(fast.FREE):
        return None
    ordered = {name: tuple(axes[name]) for name in fast.FREE}
    points = len(ordered["batch_size"]) * len(ordered["seq_len"])
    if points > max_points:
        raise InputError(f"the grid holds {points:,} points; at most {max_points:,} (narrow "
                         f"{' or '.join(FLAGS.get(v, v) for v in ordered)})")
    if points > MAX_EXACT_POINTS:
        return None
    names = list(mm.term_names)
    top = [names.index(n) for n in mm.top_level]
    phases = [[names.index(n) for n in members] for members in mm.phases.values()]
    columns: dict[str, list[int]] = {TOTAL: [], **{n: [] for n in mm.top_level}}
    function = mm.entry.function
    for b in ordered["batch_size"]:
        for s in ordered["seq_len"]:
            values = function(b, s)
            columns[TOTAL].append(max(sum(values[i] for i in p) for p in phases) if phases
                                  else sum(values[i] for i in top))
            for name, i in zip(mm.top_level, top):
                columns[name].append(values[i])
    if any(abs(v) > MAX_VALUE for column in columns.values() for v in column):
        return None
    return ExactSweep(mm.name, mm.inputs, ordered, columns)


@dataclass(frozen=True)
class ExactSweep:
    """A :class:`Sweep` from the exact evaluator's whole bytes (C order): the same ``rows``,
    ``points`` and ``to_dict``; ``outputs`` gives Sweep's float64 arrays on demand (NumPy)."""

    model: str
    inputs: dict
    axes: dict[str, tuple[int, ...]]
    columns: dict[str, list[int]]  # name -> the values at every point, C order (all below 2**53)

    @property
    def outputs(self) -> dict[str, "numpy.ndarray"]:
        import numpy

        shape = tuple(len(v) for v in self.axes.values())
        return {name: numpy.asarray(column, dtype=numpy.float64).reshape(shape)
                for name, column in self.columns.items()}

    @property
    def points(self) -> int:
        return math.prod(len(v) for v in self.axes.values())

    def rows(self) -> Iterator[dict[str, int]]:
        (first, outer), (second, inner) = self.axes.items()
        i = 0
        for a in outer:
            for b in inner:
                row = {first: a, second: b}
                row.update({name: column[i] for name, column in self.columns.items()})
                i += 1
                yield row

    to_dict = Sweep.to_dict
