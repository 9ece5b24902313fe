"""The SymPy-free hot path: an estimate answered by a cached exact evaluator.

The symbolic model stays the only source of the numbers. On a cache miss the profile
builds it (SymPy), engine/exact.py turns its pinned terms into an exact integer program,
and engine/fast_cache.py stores that program with the model's names, inputs, sources and
parameter counts; a hit runs the compiled program and imports no SymPy.

Which entry a scenario gets, correctness first:

- **free** in ``batch_size`` and ``seq_len`` (one entry for every size): only when the
  profile reads both knobs, its ``check`` and ``build`` never compute or branch on them in
  Python (:func:`sizes_stay_symbolic` runs both with traced integers), the model built
  with both sizes free evaluates, at the caller's sizes, to exactly the bytes, inputs and
  names of the model built with them, and the inputs survive a JSON round trip;
- else **bound**: one entry for the whole scenario, sizes included (checked the same way);
- else **symbolic**: (a float, a free symbol left over, an operation outside the
  grammar): the entry only says so, and the SymPy path answers each time.
"""

from __future__ import annotations

import copy
import json
import sys
from dataclasses import fields, replace
from operator import attrgetter
from pathlib import Path

from engine import fast_cache
from engine.evaluation import Evaluation, ModelOutline, combine
from engine.profiles import build, default_for, get
from engine.scenario import Scenario
from engine.spec import ModelSpec

FREE = ("batch_size", "seq_len")  # the evaluator's arguments, in this order
_MEMORY: dict[str, fast_cache.Entry] = {}  # key -> entry, this process
MEMORY_ENTRIES = 4096
_SPEC_DIGESTS: dict[ModelSpec, tuple[dict, str]] = {}  # spec -> (its quantization, its digest)
_SCENARIO_DIGESTS: dict[tuple, str] = {}
_ALL_FIELDS = tuple(f.name for f in fields(Scenario))
_SCENARIO_FIELDS = tuple(n for n in _ALL_FIELDS if n not in FREE)
_GETTERS = {(): attrgetter(*_ALL_FIELDS), FREE: attrgetter(*_SCENARIO_FIELDS)}
_NESTED = (dict, list)


def estimate(spec: ModelSpec, scenario: Scenario):
    """``(model, evaluation, counts)``: the model a ModelOutline on a cache hit, else the MemoryModel."""
    folder = fast_cache.cache_dir()
    if folder is None:
        return symbolic_estimate(spec, scenario)
    spec_key = spec_digest(spec)
    free_key = fast_cache.key(spec_key, scenario_digest(scenario, FREE))
    entry = _lookup(folder, free_key, ("free", "sized", "symbolic"))
    sized = entry is not None and entry.kind == "sized"
    if sized:
        entry = _lookup(folder, fast_cache.key(spec_key, scenario_digest(scenario, ())), ("bound", "symbolic"))
    if entry is None:
        return _miss(folder, free_key, spec_key, spec, scenario, try_free=not sized)
    if entry.kind == "symbolic":
        return symbolic_estimate(spec, scenario)
    return answer(entry, spec, scenario)


def cached_entry(spec: ModelSpec, scenario: Scenario) -> fast_cache.Entry | None:
    """The stored entry of ``scenario``'s sizes-free key (memory, then disk), or None; builds nothing."""
    folder = fast_cache.cache_dir()
    if folder is None:
        return None
    return _lookup(folder, fast_cache.key(spec_digest(spec), scenario_digest(scenario, FREE)), ("free",))


def inputs_of(entry: fast_cache.Entry, sizes: dict) -> dict:
    """A fresh copy of a free entry's inputs with ``sizes`` (name -> value) filled in."""
    inputs = _fresh(entry.meta["inputs"])
    inputs.update(sizes)
    return inputs


def symbolic_estimate(spec: ModelSpec, scenario: Scenario):
    """The SymPy path: the profile's MemoryModel, its exact evaluation and the parameter counts."""
    from engine.architecture import count_parameters

    mm = build(spec, scenario)
    return mm, mm.evaluate(), count_parameters(spec)


def answer(entry: fast_cache.Entry, spec: ModelSpec, scenario: Scenario) -> tuple[ModelOutline, Evaluation, dict]:
    """The outline, evaluation and counts of ``entry`` at ``scenario``'s sizes."""
    meta = entry.meta
    sizes = tuple(getattr(scenario, n) for n in FREE)
    if entry.kind == "free":
        if any(type(v) is not int for v in sizes):
            return symbolic_estimate(spec, scenario)  # a size left free: the answer is a formula
        values = entry.function(*sizes)
    else:
        values = entry.function()
    names, hosts = meta["term_names"], meta["host_names"]
    terms = dict(zip(names, values))
    host = dict(zip(hosts, values[len(names):]))
    inputs = inputs_of(entry, dict(zip(FREE, sizes)) if entry.kind == "free" else {})
    outline = ModelOutline(meta["name"], meta["mode"], inputs, tuple(names), {k: tuple(v) for k, v in meta["phases"].items()},
                           dict(meta["descriptions"]), dict(meta["sources"]), meta["profile"], tuple(hosts),
                           lambda: build(spec, scenario))
    evaluation = combine(terms, outline.top_level, outline.phases, host, {})
    return outline, evaluation, dict(meta["counts"])


def _fresh(value):
    """A deep copy of JSON data (callers add notes to an estimate's inputs)."""
    if type(value) is dict:
        return {k: _fresh(v) if type(v) in _NESTED else v for k, v in value.items()}
    if type(value) is list:
        return [_fresh(v) if type(v) in _NESTED else v for v in value]
    return value


def _lookup(folder: Path, name: str, kinds: tuple[str, ...]) -> fast_cache.Entry | None:
    """The entry under ``name`` when it is of one of ``kinds`` (a sizes-free key never holds a
    bound program, whatever a file says), from memory or disk."""
    entry = _MEMORY.get(name)
    if entry is None:
        entry = fast_cache.read(folder, name)
        if entry is not None:
            _keep(name, entry)
    return entry if entry is not None and entry.kind in kinds else None


def _keep(name: str, entry: fast_cache.Entry) -> None:
    """Hold ``entry`` in this process (at most MEMORY_ENTRIES: a long search starts over, from disk)."""
    if len(_MEMORY) >= MEMORY_ENTRIES:
        _MEMORY.clear()
    _MEMORY[name] = entry


def spec_digest(spec: ModelSpec) -> str:
    """The digest of ``spec``'s canonical form (memoized: a spec's hash skips its quantization dict)."""
    try:
        known = _SPEC_DIGESTS.get(spec)
    except TypeError:  # an unhashable option value: no memo
        return fast_cache.digest(fast_cache.canonical(spec))
    if known is not None and known[0] == spec.quantization:
        return known[1]
    digest = fast_cache.digest(fast_cache.canonical(spec))
    if len(_SPEC_DIGESTS) > 4096:
        _SPEC_DIGESTS.clear()
    _SPEC_DIGESTS[spec] = (copy.deepcopy(spec.quantization), digest)
    return digest


def scenario_digest(scenario: Scenario, left_out: tuple[str, ...]) -> str:
    """The digest of ``scenario``'s fields but ``left_out`` (memoized on the typed values)."""
    names = _SCENARIO_FIELDS if left_out else _ALL_FIELDS
    values = _GETTERS[left_out](scenario)
    memo = (left_out, tuple(map(type, values)), values)
    try:
        known = _SCENARIO_DIGESTS.get(memo)
    except TypeError:
        known, memo = None, None
    if known is None:
        known = fast_cache.digest([[n, fast_cache.canonical(v)] for n, v in zip(names, values)])
        if memo is not None:
            if len(_SCENARIO_DIGESTS) > 4096:
                _SCENARIO_DIGESTS.clear()
            _SCENARIO_DIGESTS[memo] = known
    return known


def _jsonable(value) -> bool:
    try:
        return json.loads(json.dumps(value)) == value
    except (TypeError, ValueError):
        return False


# --- a miss: build with SymPy, choose the entry's kind, store it ---------------------------------
def _miss(folder: Path, free_key: str, spec_key: str, spec: ModelSpec, scenario: Scenario, try_free: bool):
    """Build the symbolic answer, then store the entry that reproduces it (see the module doc)."""
    real, evaluation, counts = symbolic_estimate(spec, scenario)  # errors surface as on the SymPy path
    if try_free and _free_sizes_allowed(spec, scenario):
        free = build(spec, replace(scenario, batch_size=None, seq_len=None))
        if _store(folder, free_key, "free", free, real, evaluation, counts, scenario):
            return real, evaluation, counts
    bound_key = fast_cache.key(spec_key, scenario_digest(scenario, ()))
    kind = "bound" if _store(folder, bound_key, "bound", real, real, evaluation, counts, scenario) else "symbolic"
    _remember(folder, free_key, "sized" if kind == "bound" else "symbolic", None, {})
    if kind == "symbolic":
        _remember(folder, bound_key, "symbolic", None, {})
    return real, evaluation, counts


def _free_sizes_allowed(spec: ModelSpec, scenario: Scenario) -> bool:
    sizes = [getattr(scenario, n) for n in FREE]
    if any(type(v) is not int for v in sizes) or not set(FREE) <= get(scenario.profile or default_for(scenario, spec)).knobs:
        return False
    return sizes_stay_symbolic(spec, scenario)


def _store(folder, name, kind, model, real, evaluation, counts, scenario) -> bool:
    """Store ``model``'s program under ``name`` when it reproduces ``real`` exactly at ``scenario``."""
    from engine import exact
    from formulas.symbols import symbol

    if model.allocator or model.outside_terms:  # the reserve is computed from the symbolic tensor list
        return False  # (formulas/allocator.py): such profiles answer on the SymPy path
    arguments = tuple(symbol(n) for n in FREE) if kind == "free" else ()
    outputs = [model.pinned(e) for e in (*model.terms.values(), *model.host_terms.values())]
    try:
        program = exact.program(outputs, arguments)
    except (exact.NotExact, RecursionError):
        return False
    meta = _meta(model, counts)
    if meta is None:
        return False
    entry = fast_cache.loaded(kind, program, meta)
    try:
        outline, fast = answer(entry, None, scenario)[:2]
    except (ValueError, TypeError, ZeroDivisionError, ArithmeticError):
        return False
    if not _same(outline, fast, real, evaluation):
        return False
    _remember(folder, name, kind, program, meta, entry)
    return True


def _meta(model, counts: dict) -> dict | None:
    meta = {"name": model.name, "mode": model.mode, "profile": model.profile, "term_names": list(model.terms),
            "host_names": list(model.host_terms), "phases": {k: list(v) for k, v in model.phases.items()},
            "descriptions": dict(model.descriptions), "sources": dict(model.sources), "counts": dict(counts),
            "inputs": model.inputs}
    if not _jsonable(meta):  # a tuple, a Fraction or a set would come back from the file as something else
        return None
    fast_cache.check_meta(meta)
    return meta


def _same(outline: ModelOutline, fast: Evaluation, real, evaluation: Evaluation) -> bool:
    """Every byte, phase, name, input and source of the fast answer equals the symbolic one."""
    return (list(fast.terms.items()) == list(evaluation.terms.items()) and fast == evaluation
            and list(fast.host.items()) == list(evaluation.host.items())
            and outline.inputs == real.inputs and outline.term_names == tuple(real.terms)
            and outline.phases == {k: tuple(v) for k, v in real.phases.items()}
            and outline.descriptions == real.descriptions and outline.sources == real.sources
            and (outline.name, outline.mode, outline.profile) == (real.name, real.mode, real.profile))


def _remember(folder, name, kind, program, meta, entry=None) -> None:
    _keep(name, entry or fast_cache.loaded(kind, program, meta))
    fast_cache.write(folder, name, kind, program, meta)


# --- the trace: do check and build use the sizes as Python numbers? ------------------------------
ROOT = Path(__file__).resolve().parents[1]
# modules whose use of a size is validation the fast path repeats (Scenario(...) checks every knob)
VALIDATION = {ROOT / "engine" / n for n in ("scenario.py", "limits.py", "knob_checks.py", "units.py", "spellings.py",
                                           "fast.py")}


class _Traced(int):
    """An int that records any arithmetic, comparison, truth test, hash or formatting done on
    it by any code but SymPy's (reading it into an expression is not use) and the knob
    validation the fast path repeats."""

    used = False


_UNTRACED: list[Path] = []  # SymPy's and mpmath's folders, set when a trace runs


def _touch(frame) -> None:
    path = Path(frame.f_code.co_filename)
    if path not in VALIDATION and not any(folder in path.parents for folder in _UNTRACED):
        _Traced.used = True


def _traced(name: str):
    original = getattr(int, name)

    def method(self, *args):
        _touch(sys._getframe(1))
        return original(int.__index__(self), *args)

    return method


for _name in ("__lt__", "__le__", "__gt__", "__ge__", "__eq__", "__ne__", "__bool__", "__hash__", "__add__",
              "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__", "__truediv__", "__rtruediv__",
              "__floordiv__", "__rfloordiv__", "__mod__", "__rmod__", "__divmod__", "__pow__", "__rpow__",
              "__neg__", "__pos__", "__abs__", "__index__", "__int__", "__float__", "__str__", "__repr__",
              "__format__", "__and__", "__or__", "__xor__", "__lshift__", "__rshift__", "__round__",
              "__trunc__", "__floor__", "__ceil__"):
    setattr(_Traced, _name, _traced(_name))


def sizes_stay_symbolic(spec: ModelSpec, scenario: Scenario) -> bool:
    """Whether the profile's check and build treat batch_size and seq_len only as values to
    substitute: run with traced integers, no code but SymPy's may compute or branch on them."""
    import mpmath
    import sympy

    _UNTRACED[:] = [Path(sympy.__file__).resolve().parent, Path(mpmath.__file__).resolve().parent]
    traced = Scenario.__new__(Scenario)
    for f in fields(Scenario):
        value = getattr(scenario, f.name)
        object.__setattr__(traced, f.name, _Traced(value) if f.name in FREE else value)
    _Traced.used = False
    try:
        build(spec, traced)
    except Exception:  # noqa: BLE001 (any failure under the trace: keep the sizes in the key)
        return False
    return not _Traced.used
