"""The embedded model registry, and loading a model by id or from a local config.json.

Each file in ``models/`` holds one model's published config.json values and where they
come from (format: ``id``, ``name``, ``hf_repo``, ``source``, ``retrieved_from``,
``config``; optional ``aliases``: other repo ids with the same shapes, e.g. the instruct
checkpoint of a base model). Files are read only when asked for; nothing is loaded at import time and
nothing is fetched from the network.
"""

from __future__ import annotations

import difflib
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from engine import files
from engine.errors import ConfigError, UnknownModelError
from engine.families import spec_from_config
from engine.limits import cut, printable, shown
from engine.spec import ModelSpec

MODELS_DIR = Path(__file__).parent / "models"
MAX_CONFIG_BYTES = 16 * 2**20  # a config.json is a few KB; refuse anything absurd


@dataclass(frozen=True)
class RegistryEntry:
    id: str
    name: str
    hf_repo: str
    source: str
    config: dict
    aliases: tuple[str, ...] = ()


@lru_cache(maxsize=1)
def entries() -> tuple[RegistryEntry, ...]:
    """Every registry entry, sorted by id."""
    out = []
    for path in sorted(MODELS_DIR.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        out.append(RegistryEntry(data["id"], data["name"], data["hf_repo"], data["source"], data["config"],
                                 tuple(data.get("aliases", ()))))
    return tuple(out)


@lru_cache(maxsize=1)
def _index() -> dict[str, RegistryEntry]:
    """Lower-cased id, HF repo id, name and aliases -> entry (the first entry by id wins)."""
    index: dict[str, RegistryEntry] = {}
    for entry in entries():
        for name in (entry.id, entry.hf_repo.lower(), entry.name.lower(), *(a.lower() for a in entry.aliases)):
            index.setdefault(name, entry)
    return index


@lru_cache(maxsize=256)
def _entry_spec(entry_id: str) -> ModelSpec:
    """The spec of the entry ``entry_id``, parsed once (entries and specs are frozen)."""
    entry = next(e for e in entries() if e.id == entry_id)
    return spec_from_config(entry.config, entry.id)


def find(model_id: str) -> RegistryEntry:
    """The entry whose id or HF repo id is ``model_id`` (case-insensitive)."""
    key = model_id.strip().lower()
    entry = _index().get(key)
    if entry is not None:
        return entry
    names = [e.id for e in entries()] + [e.hf_repo for e in entries()]
    close = difflib.get_close_matches(model_id, names, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else "; run 'memsym models' for the list"
    raise UnknownModelError(f"--model: unknown model {shown(model_id)}{hint}")


def read_config(path: str | os.PathLike) -> dict:
    """A local config.json as a dict; errors name the file."""
    path = Path(path)
    if files.is_dir(path):
        path = path / "config.json"
    raw = files.read_regular(path, MAX_CONFIG_BYTES, "a config.json", ConfigError)  # no FIFO, no device
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{files.shown_path(path)}: not UTF-8 text") from None
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise ConfigError(f"{files.shown_path(path)}: not valid JSON ({cut(printable(exc), 120)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{files.shown_path(path)}: expected a JSON object, got {type(data).__name__}")
    return data


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def load_spec(model: str | None = None, config_path: str | os.PathLike | None = None,
              gguf_path: str | os.PathLike | None = None) -> ModelSpec:
    """A ModelSpec from a registry id / HF repo id, a local config.json, or a GGUF file's header."""
    if sum(given is not None for given in (model, config_path, gguf_path)) != 1:
        raise UnknownModelError("give exactly one of --model ID, --config PATH or --gguf FILE")
    if gguf_path is not None or config_path is not None:  # a registry id reads no file header
        from engine import gguf_file

        if gguf_path is not None or gguf_file.is_gguf(config_path):
            return gguf_file.spec_of(gguf_file.read_gguf(gguf_path or config_path))
    if config_path is not None:
        return spec_from_config(read_config(config_path), files.shown_path(config_path))  # a name safe to print, cut
    try:
        entry = find(model)
    except UnknownModelError as exc:
        return _load_cached(model, exc)
    return _entry_spec(entry.id)


def _load_cached(model: str, not_in_registry: UnknownModelError) -> ModelSpec:
    """``--model ORG/NAME[@REVISION]`` outside the registry: the local HF cache first, offline, then the Hub."""
    from engine import hf_cache, hub

    ref = hub.split_model_ref(model)
    if ref is None:
        raise not_in_registry
    repo_id, revision = ref
    path = hf_cache.cached_config(repo_id) if revision is None else None
    if path is None:
        config, _ = fetch_hub_config(repo_id, revision, f"{not_in_registry}; not in the local Hugging Face cache "
                                                        f"({hf_cache.cache_dir()}) either")
        return spec_from_config(config, model)
    try:
        return spec_from_config(read_config(path), repo_id)
    except ConfigError as exc:
        raise ConfigError(f"{files.shown_path(path)}: {exc}") from None


def fetch_hub_config(repo_id: str, revision: str | None, not_found: str) -> tuple[dict, str]:
    """config.json from the Hub; offline, ``not_found`` says where else memsym looked."""
    from engine import hub

    if hub.offline():
        raise UnknownModelError(f"{not_found}, and HF_HUB_OFFLINE is set, so memsym does not ask the Hub: "
                                f"unset it, or use --config PATH/TO/config.json") from None
    return hub.fetch_config(repo_id, revision)
