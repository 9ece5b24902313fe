"""Finding a model's config.json in the local Hugging Face cache: offline, never the network.

The cache layout is huggingface_hub's (``file_download.py``, ``constants.py``)::

    <cache>/models--ORG--NAME/refs/main               the commit hash "main" points to
    <cache>/models--ORG--NAME/snapshots/<commit>/config.json

``<cache>`` is the first of ``$HF_HUB_CACHE``, ``$HUGGINGFACE_HUB_CACHE`` (its older name),
``$HF_HOME/hub``, ``$XDG_CACHE_HOME/huggingface/hub`` and ``~/.cache/huggingface/hub``, the
order ``huggingface_hub.constants`` resolves them in. The snapshot is the one ``refs/main``
names (what huggingface_hub itself resolves offline for revision "main"); without a usable
ref, the snapshot whose config.json was written last. Repo ids are checked against the Hub's
rules before they become a folder name, so an id cannot reach outside the cache.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Mapping

from engine.errors import MemsymError
from engine.files import exists, is_dir, read_regular

# huggingface_hub.utils._validators.validate_repo_id: word characters, '-', '.', one '/',
# at most 96 characters, no '--' or '..'; ASCII only here.
_REPO_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*/[A-Za-z0-9_][A-Za-z0-9_.-]*")  # fullmatch: no trailing newline
MAX_REPO_ID_LENGTH = 96
_COMMIT = re.compile(r"[0-9a-f]{40}")  # fullmatch  # a git commit hash, as refs/main holds it
MAX_REF_BYTES = 256


def cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """The hub cache folder the environment names (it need not exist)."""
    env = os.environ if env is None else env
    for key in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if env.get(key):
            return Path(env[key]).expanduser()
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]).expanduser() / "hub"
    base = Path(env["XDG_CACHE_HOME"]).expanduser() if env.get("XDG_CACHE_HOME") else Path("~/.cache").expanduser()
    return base / "huggingface" / "hub"


def is_repo_id(text: object) -> bool:
    """True for a well-formed ``ORG/NAME`` Hub repo id."""
    return (isinstance(text, str) and len(text) <= MAX_REPO_ID_LENGTH and bool(_REPO_ID.fullmatch(text))
            and "--" not in text and ".." not in text and not text.endswith((".", "-")))


def _repo_folder(cache: Path, repo_id: str) -> Path | None:
    """``models--ORG--NAME``, matched exactly or else case-insensitively (Hub ids are)."""
    name = "models--" + repo_id.replace("/", "--")
    exact = cache / name
    if is_dir(exact):
        return exact
    try:
        for entry in sorted(cache.iterdir()):
            if entry.name.lower() == name.lower() and is_dir(entry):
                return entry
    except OSError:
        return None
    return None


def _ref_snapshot(repo: Path) -> Path | None:
    try:  # a regular file only, never a FIFO or device; anything unusable is no ref
        commit = read_regular(repo / "refs" / "main", MAX_REF_BYTES, "a ref").decode("ascii").strip()
    except (MemsymError, UnicodeDecodeError):
        return None
    if not _COMMIT.fullmatch(commit):
        return None
    config = repo / "snapshots" / commit / "config.json"
    return config if exists(config) else None


def _newest_snapshot(repo: Path) -> Path | None:
    try:
        configs = [d / "config.json" for d in (repo / "snapshots").iterdir() if exists(d / "config.json")]
        return max(configs, key=lambda p: (p.stat().st_mtime_ns, p.parent.name)) if configs else None
    except OSError:
        return None


def cached_config(repo_id: str, env: Mapping[str, str] | None = None) -> Path | None:
    """The path of ``repo_id``'s cached config.json, or None when it is not cached here."""
    if not is_repo_id(repo_id):
        return None
    repo = _repo_folder(cache_dir(env), repo_id)
    if repo is None:
        return None
    return _ref_snapshot(repo) or _newest_snapshot(repo)
