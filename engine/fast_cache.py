"""The cache of exact evaluators (engine/exact.py): keys, an in-process dict and files on disk.

A key is the SHA-256 of three things: the source bytes of every module under engine/ and
formulas/ (the code that builds the expressions: a changed formula never serves a stale
evaluator), the canonical spec (all its fields, quantization included) and the canonical
scenario with the evaluator's free arguments (batch_size, seq_len) removed or kept, as the
caller says. Nothing of the key's text reaches a file name or code: the file is
``<cache>/<sha256>.json``.

The folder: ``$MEMSYM_CACHE_DIR``, else ``$XDG_CACHE_HOME/memsym``, else ``~/.cache/memsym``.
``MEMSYM_NO_CACHE=1`` turns the cache (and the fast path) off; deleting the folder clears
it. Files are written through a temporary file and a rename (engine/files.py), read bounded
and only when regular; a file that is unreadable, not JSON, of another format, for another
key or outside the grammar is ignored (and later overwritten), never a crash.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, fields, is_dataclass
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Callable

from engine import exact, files
from engine.errors import InputError, MemsymError

FORMAT = 1  # bump when the file layout or the program grammar changes
MAX_FILE_BYTES = 16 << 20
# free: a program of (batch_size, seq_len); bound: a program of no arguments (the sizes are in its
# key); sized: no program, look the scenario up with its sizes; symbolic: no exact evaluator
KINDS = ("free", "bound", "sized", "symbolic")


@dataclass(frozen=True)
class Entry:
    """One cached answer shape: the evaluator and everything a report reads besides the bytes.

    ``kind`` "free": ``function(batch_size, seq_len)``; "bound": ``function()`` (the sizes are in
    the key); "sized" and "symbolic": no function (``meta`` is empty), see :data:`KINDS`.
    """

    kind: str
    function: Callable[..., tuple[int, ...]] | None
    meta: dict


def cache_dir(env=None) -> Path | None:
    """The cache folder, or None when ``MEMSYM_NO_CACHE`` is set (to anything but 0 or empty)."""
    env = os.environ if env is None else env
    return _folder(env.get("MEMSYM_NO_CACHE", ""), env.get("MEMSYM_CACHE_DIR", ""), env.get("XDG_CACHE_HOME", ""),
                   env.get("HOME", ""))


@lru_cache(maxsize=8)
def _folder(no_cache: str, cache_dir: str, xdg_cache_home: str, home: str) -> Path | None:
    if no_cache not in ("", "0"):
        return None
    if cache_dir:
        return Path(cache_dir).expanduser()
    base = Path(xdg_cache_home).expanduser() if xdg_cache_home else Path("~/.cache").expanduser()
    return base / "memsym"


@lru_cache(maxsize=4)
def code_digest(root: Path | None = None) -> str:
    """SHA-256 over the relative path and bytes of every .py file under engine/ and formulas/
    (of this source tree, or of ``root``)."""
    root = Path(__file__).resolve().parents[1] if root is None else root
    digest = hashlib.sha256(f"memsym exact evaluator format {FORMAT}\n".encode())
    for package in ("engine", "formulas"):
        for path in sorted((root / package).rglob("*.py")):
            digest.update(path.relative_to(root).as_posix().encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def canonical(value: object):
    """A JSON-able, type-tagged form of a spec or scenario value (dataclasses field by field)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return ["int", str(value)]
    if isinstance(value, float):
        return ["float", value.hex()]
    if isinstance(value, Fraction):
        return ["fraction", str(value)]
    if isinstance(value, (tuple, list)):
        return [type(value).__name__, [canonical(v) for v in value]]
    if isinstance(value, dict):
        return ["dict", sorted([str(k), canonical(v)] for k, v in value.items())]
    if is_dataclass(value) and not isinstance(value, type):
        return [type(value).__name__, [[f.name, canonical(getattr(value, f.name))] for f in fields(value)]]
    raise TypeError(f"no canonical form for {type(value).__name__}")


def digest(form) -> str:
    """SHA-256 of a canonical form's JSON."""
    return hashlib.sha256(json.dumps(form, separators=(",", ":")).encode()).hexdigest()


def key(spec_digest: str, scenario_digest: str) -> str:
    """The cache key (a file name) of a spec and a scenario digest under this source tree."""
    return hashlib.sha256(f"{code_digest()}/{spec_digest}/{scenario_digest}".encode()).hexdigest()


# --- files ----------------------------------------------------------------------------------------
def read(folder: Path | None, name: str) -> Entry | None:
    """The entry stored under ``name``, or None when absent, unreadable or malformed."""
    if folder is None:
        return None
    path = folder / f"{name}.json"
    try:
        data = json.loads(files.read_regular(path, MAX_FILE_BYTES, "a cache file").decode("utf-8"))
        return entry_of(data, name)
    except (OSError, MemsymError, ValueError, TypeError, KeyError, RecursionError):
        return None


def write(folder: Path | None, name: str, kind: str, program: dict | None, meta: dict) -> None:
    """Store an entry; a folder that cannot be written only costs the next run a rebuild."""
    if folder is None:
        return
    text = json.dumps({"format": FORMAT, "key": name, "kind": kind, "program": program, "meta": meta})
    try:
        folder.mkdir(parents=True, exist_ok=True)
        files.write_text(folder / f"{name}.json", text, flag="MEMSYM_CACHE_DIR")
    except (OSError, MemsymError):
        pass


def read_data(folder: Path | None, name: str, check: Callable[[dict], dict]) -> dict | None:
    """A data entry (``write_data``) checked by ``check``, or None when absent or malformed."""
    if folder is None:
        return None
    try:
        data = json.loads(files.read_regular(folder / f"{name}.json", MAX_FILE_BYTES, "a cache file").decode("utf-8"))
        if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("key") != name \
                or data.get("kind") != "data" or not isinstance(data.get("data"), dict):
            return None
        return check(data["data"])
    except (OSError, MemsymError, ValueError, TypeError, KeyError, RecursionError):
        return None


def write_data(folder: Path | None, name: str, data: dict) -> None:
    """Store plain JSON ``data`` under ``name`` (as :func:`write`, never raising)."""
    if folder is None:
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        files.write_text(folder / f"{name}.json", json.dumps({"format": FORMAT, "key": name, "kind": "data",
                                                              "data": data}), flag="MEMSYM_CACHE_DIR")
    except (OSError, MemsymError):
        pass


def entry_of(data: object, name: str) -> Entry:
    """An Entry from a file's JSON, every field checked (ValueError when anything is off)."""
    if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("key") != name:
        raise ValueError("another format or key")
    kind, meta = data.get("kind"), data.get("meta")
    if kind not in KINDS or not isinstance(meta, dict):
        raise ValueError("a malformed entry")
    if kind in ("sized", "symbolic"):
        return Entry(kind, None, {})
    check_meta(meta)
    function = exact.evaluator(data.get("program"))
    if data["program"]["arguments"] != (2 if kind == "free" else 0) \
            or len(data["program"]["outputs"]) != len(meta["term_names"]) + len(meta["host_names"]):
        raise ValueError("a program that does not fit its entry")
    return Entry(kind, function, meta)


def _strings(value, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{what} is not a list of strings")
    return value


def check_meta(meta: dict) -> None:
    """Raise ValueError unless ``meta`` has the fields and types engine/fast.py writes."""
    names = _strings(meta.get("term_names"), "term_names")
    _strings(meta.get("host_names"), "host_names")
    if len(set(names)) != len(names):
        raise ValueError("repeated term names")
    for field in ("name", "mode", "profile"):
        if not isinstance(meta.get(field), str):
            raise ValueError(f"{field} is not a string")
    phases = meta.get("phases")
    if not isinstance(phases, dict) or not all(set(_strings(v, "a phase")) <= set(names) for v in phases.values()):
        raise ValueError("phases name unknown terms")
    for field in ("descriptions", "sources"):
        value = meta.get(field)
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise ValueError(f"{field} is not a dict of strings")
    counts = meta.get("counts")
    if not isinstance(counts, dict) or not all(type(v) is int for v in counts.values()):
        raise ValueError("counts are not integers")
    if not isinstance(meta.get("inputs"), dict):
        raise ValueError("inputs are not a dict")


def loaded(kind: str, program: dict | None, meta: dict) -> Entry:
    """An Entry from a program built in this process (through the same checks as a file's)."""
    if kind in ("sized", "symbolic"):
        return Entry(kind, None, {})
    try:
        return Entry(kind, exact.evaluator(program), meta)
    except exact.CorruptProgram as exc:  # a bug of exact.program, not of the user's input
        raise InputError(f"internal: the exact evaluator's program is malformed ({exc})") from None
