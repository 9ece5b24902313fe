"""``--model ORG/NAME[@REVISION]`` from the Hugging Face Hub: config.json and safetensors headers only.

Requests go through ``huggingface_hub`` (the optional ``memsym[hub]`` extra): its HTTP
session, URLs (``hf_hub_url``), auth headers (``build_hf_headers``: ``HF_TOKEN`` or the
saved token) and error classes (``hf_raise_for_status``). ``HF_ENDPOINT`` and
``HF_HUB_OFFLINE`` are read when the call is made (huggingface_hub's ``constants`` reads
them once, at its import). Nothing is written to the cache.

What is fetched, and how much at most:

1. ``HEAD resolve/<revision>/config.json``: the commit the revision points to
   (``X-Repo-Commit``, as ``huggingface_hub.file_download.get_hf_file_metadata`` reads it);
   every later request names that commit, so all files come from one snapshot;
2. ``GET resolve/<commit>/config.json`` (at most :data:`MAX_CONFIG_BYTES`);
3. ``model.safetensors.index.json`` when the repo has one (at most ``MAX_INDEX_BYTES``),
   else ``model.safetensors``;
4. per safetensors file two range requests: ``bytes=0-7`` (the header length ``N``) and
   ``bytes=8-(8+N-1)`` (the header), ``N`` capped at safetensors' ``MAX_HEADER_SIZE``. The
   file size comes from ``Content-Range``. A server that ignores ``Range`` is read only up
   to the bytes asked for, then the connection is closed: no weights are downloaded.

Server data is parsed as strict JSON by :mod:`engine.checkpoint` and checked like a local
checkpoint's; nothing from a server is ever evaluated.
"""

from __future__ import annotations

import os
import re
from pathlib import PurePosixPath

from engine.checkpoint import (INDEX_FILE, LENGTH_PREFIX_BYTES, MAX_HEADER_BYTES, MAX_INDEX_BYTES, Checkpoint,
                               CheckpointError, StoredTensor, gather_shards, parse_index,
                               parse_json, tensors_from_header)
from engine.limits import cut, printable
from engine.errors import UnknownModelError
from engine.hf_cache import is_repo_id

MAX_CONFIG_BYTES = 16 * 2**20  # engine.registry's cap for a local config.json
SINGLE_FILE = "model.safetensors"  # transformers' SAFE_WEIGHTS_NAME
DEFAULT_ENDPOINT = "https://huggingface.co"  # huggingface_hub.constants._HF_DEFAULT_ENDPOINT
TIMEOUT_SECONDS = 10  # huggingface_hub.constants.DEFAULT_REQUEST_TIMEOUT
CHUNK_BYTES = 1 << 16
ERROR_BODY_BYTES = 1 << 16  # of an error response, enough for the Hub's JSON message
# git ref names the Hub resolves: branches, tags ("v1.0"), "refs/pr/1", 40-hex commits
_REVISION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,127}")
_CONTENT_RANGE = re.compile(r"bytes (\d{1,20})-(\d{1,20})/(\d{1,20})")
_TRUE = {"1", "ON", "YES", "TRUE"}  # huggingface_hub.constants._is_true


class HubError(UnknownModelError):
    """The Hub could not give a repo's files: gated, missing, unreachable, offline or malformed."""


class NoSafetensorsError(HubError):
    """A repo without ``model.safetensors`` or its index (weights as .bin, .gguf, ... or none)."""


def split_model_ref(text: str) -> tuple[str, str | None] | None:
    """``ORG/NAME[@REVISION]`` -> (repo id, revision or None); None when ``text`` is not one."""
    repo_id, _, revision = text.partition("@")
    if not is_repo_id(repo_id):
        return None
    if not revision:
        return repo_id, None
    if not _REVISION.fullmatch(revision) or ".." in revision or revision.endswith(("/", ".lock")):
        return None
    return repo_id, revision


def offline(env=None) -> bool:
    """``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) set to a true value, as huggingface_hub reads it."""
    env = os.environ if env is None else env
    return (env.get("HF_HUB_OFFLINE") or env.get("TRANSFORMERS_OFFLINE") or "").upper() in _TRUE


def endpoint(env=None) -> str:
    env = os.environ if env is None else env
    return (env.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def _hub():
    """huggingface_hub, or a one-line error saying how to install it."""
    try:
        import huggingface_hub
    except ImportError:
        raise HubError("--model ORG/NAME outside the registry and the local cache needs huggingface_hub: "
                       "pip install 'memsym[hub]' (or use --config PATH/TO/config.json)") from None
    return huggingface_hub


class _Repo:
    """One repo at one revision: URLs, auth headers and errors that name it."""

    def __init__(self, repo_id: str, revision: str | None):
        if offline():
            raise HubError(f"--model {repo_id}: not in the local Hugging Face cache, and HF_HUB_OFFLINE is set "
                           f"(memsym reads the Hub only when it is unset)")
        self.hub = _hub()
        self.repo_id, self.revision = repo_id, revision or "main"
        self.endpoint = endpoint()
        self.label = f"{repo_id}@{self.revision}" if revision else repo_id
        from huggingface_hub.utils import build_hf_headers

        self.headers = build_hf_headers(library_name="memsym")  # HF_TOKEN, or the token huggingface_hub saved
        self.headers["Accept-Encoding"] = "identity"  # byte ranges of the stored file, never of a compressed body

    def url(self, filename: str, revision: str | None = None) -> str:
        return self.hub.hf_hub_url(self.repo_id, filename, revision=revision or self.revision,
                                   endpoint=self.endpoint)

    def error(self, exc: BaseException, filename: str) -> HubError:
        """One line naming the repo for whatever went wrong fetching ``filename``."""
        from huggingface_hub import errors

        where = f"--model {self.label}"
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if isinstance(exc, errors.GatedRepoError):
            return HubError(f"{where}: the Hub refused access ({status}): a gated or private repo; accept its "
                            f"terms on the Hub and set HF_TOKEN to a token that may read it")
        if isinstance(exc, errors.RevisionNotFoundError):
            return HubError(f"{where}: revision {self.revision!r} not found on {self.endpoint}")
        if isinstance(exc, errors.EntryNotFoundError):
            return HubError(f"{where}: the repo has no {filename}")
        if isinstance(exc, errors.RepositoryNotFoundError) or status == 404:
            return HubError(f"{where}: no such model repo on {self.endpoint} (or a private one: set HF_TOKEN)")
        if status in (401, 403):
            return HubError(f"{where}: the Hub refused access ({status}): a gated or private repo; set HF_TOKEN "
                            f"to a token that may read it")
        if isinstance(exc, errors.OfflineModeIsEnabled):
            return HubError(f"{where}: HF_HUB_OFFLINE is set; memsym reads the Hub only when it is unset")
        if status is not None:
            return HubError(f"{where}: the Hub answered HTTP {status} for {filename}")
        reason = cut(printable(" ".join(str(exc).split())), 120) or type(exc).__name__
        return HubError(f"{where}: cannot reach the Hub at {self.endpoint} ({reason})")

    def request(self, method: str, filename: str, revision: str | None = None, first: int | None = None,
                count: int | None = None, cap: int = 0, missing_ok: bool = False):
        """(response headers, body of at most ``cap + 1`` bytes) of one request; errors name the repo.

        ``missing_ok``: a file the repo does not have gives None instead of an error.
        """
        from huggingface_hub import errors, get_session
        from huggingface_hub.utils import hf_raise_for_status

        headers = dict(self.headers)
        if first is not None:
            headers["Range"] = f"bytes={first}-{first + count - 1}"
        try:
            with get_session().stream(method, self.url(filename, revision), headers=headers,
                                      follow_redirects=True, timeout=TIMEOUT_SECONDS) as response:
                if response.status_code >= 400:  # classified by huggingface_hub from a bounded copy
                    hf_raise_for_status(type(response)(response.status_code, headers=response.headers,
                                                       content=_bounded(response, ERROR_BODY_BYTES),
                                                       request=response.request))
                if method != "GET":
                    return response.headers, b""
                skip = (first or 0) if response.status_code == 200 else 0  # a server that ignored Range
                sent = _CONTENT_RANGE.fullmatch((response.headers.get("Content-Range") or "").strip())
                if response.status_code == 206 and (sent is None or int(sent.group(1)) != first):
                    raise HubError(f"--model {self.label}: {filename}: the server answered Range bytes={first}- "
                                   f"with {cut(printable(response.headers.get('Content-Range')), 60)}")
                return response.headers, _bounded(response, skip + cap)[skip:]
        except HubError:
            raise
        except errors.EntryNotFoundError:
            if missing_ok:
                return None
            raise self.error(errors.EntryNotFoundError(), filename) from None
        except Exception as exc:  # noqa: BLE001 - every transport and HTTP failure becomes one line
            raise self.error(exc, filename) from None


def _bounded(response, cap: int) -> bytes:
    """At most ``cap + 1`` bytes of the body (one more than allowed shows that there was more)."""
    chunks, size = [], 0
    for chunk in response.iter_bytes(CHUNK_BYTES):
        chunks.append(chunk)
        size += len(chunk)
        if size > cap:
            break
    return b"".join(chunks)[: cap + 1]


def _commit(repo: _Repo) -> str:
    """The commit ``repo.revision`` points to (``X-Repo-Commit``), else the revision itself."""
    headers, _ = repo.request("HEAD", "config.json")
    commit = headers.get("X-Repo-Commit") or ""
    return commit if re.fullmatch(r"[0-9a-f]{40}", commit) else repo.revision


def _json_file(repo: _Repo, commit: str, filename: str, cap: int) -> object:
    _, body = repo.request("GET", filename, commit, cap=cap)
    where = f"--model {repo.label}: {filename}"
    if len(body) > cap:
        raise HubError(f"{where}: more than {cap} bytes; not a {filename}?")
    return parse_json(body, where)


def fetch_config(repo_id: str, revision: str | None = None) -> tuple[dict, str]:
    """(config.json as a dict, the commit it was read at) of a Hub repo."""
    repo = _Repo(repo_id, revision)
    commit = _commit(repo)
    config = _json_file(repo, commit, "config.json", MAX_CONFIG_BYTES)
    if not isinstance(config, dict):
        raise HubError(f"--model {repo.label}: config.json: expected a JSON object, got {type(config).__name__}")
    return config, commit


def _total_size(headers, where: str) -> int | None:
    match = _CONTENT_RANGE.fullmatch((headers.get("Content-Range") or "").strip())
    if match:
        return int(match.group(3))
    length = headers.get("Content-Length") or ""
    return int(length) if length.isdigit() and len(length) <= 20 else None


def remote_safetensors(repo: _Repo, commit: str, filename: str) -> list[StoredTensor]:
    """One remote file's tensors, from two range requests for its header bytes only."""
    label = PurePosixPath(f"{repo.repo_id}@{commit}") / filename
    answer = repo.request("GET", filename, commit, 0, LENGTH_PREFIX_BYTES, LENGTH_PREFIX_BYTES, missing_ok=True)
    if answer is None:
        raise NoSafetensorsError(f"--model {repo.label}: the repo has no {filename}")
    headers, prefix = answer
    size = _total_size(headers, str(label))
    prefix = prefix[:LENGTH_PREFIX_BYTES]
    if len(prefix) < LENGTH_PREFIX_BYTES:
        raise CheckpointError(f"{label}: header length: the server sent {len(prefix)} bytes, fewer than the "
                              f"8-byte prefix")
    length = int.from_bytes(prefix, "little", signed=False)
    if length > MAX_HEADER_BYTES:
        raise CheckpointError(f"{label}: header length: {length} bytes is more than the format allows "
                              f"({MAX_HEADER_BYTES}); not a safetensors file?")
    if size is None:
        raise CheckpointError(f"{label}: the server gave no file size (Content-Range or Content-Length)")
    if LENGTH_PREFIX_BYTES + length > size:
        raise CheckpointError(f"{label}: header length: {length} bytes runs past the end of the {size}-byte file")
    _, raw = repo.request("GET", filename, commit, LENGTH_PREFIX_BYTES, length, length) if length else ({}, b"")
    if len(raw) < length:
        raise CheckpointError(f"{label}: header: the server sent {len(raw)} of its {length} bytes")
    header = parse_json(raw[:length], f"{label}: header")
    if not isinstance(header, dict):
        raise CheckpointError(f"{label}: header: expected a JSON object, got {type(header).__name__}")
    return tensors_from_header(label, header, size - LENGTH_PREFIX_BYTES - length)


def _weight_map(repo: _Repo, commit: str) -> dict[str, str] | None:
    """The index's tensor -> shard map, or None when the repo has no index (one file)."""
    answer = repo.request("GET", INDEX_FILE, commit, cap=MAX_INDEX_BYTES, missing_ok=True)
    if answer is None:
        return None
    body = answer[1]
    if len(body) > MAX_INDEX_BYTES:
        raise HubError(f"--model {repo.label}: {INDEX_FILE}: more than {MAX_INDEX_BYTES} bytes")
    return parse_index(body, PurePosixPath(f"{repo.repo_id}@{commit}") / INDEX_FILE)


def fetch_checkpoint(repo_id: str, revision: str | None = None, commit: str | None = None) -> Checkpoint:
    """Every tensor a Hub repo stores in safetensors, read from the headers alone."""
    repo = _Repo(repo_id, revision)
    commit = commit or _commit(repo)
    weight_map = _weight_map(repo, commit)
    files = sorted(set(weight_map.values())) if weight_map else [SINGLE_FILE]
    where = PurePosixPath(f"{repo_id}@{commit}")
    tensors = gather_shards(where, files, weight_map, lambda name: remote_safetensors(repo, commit, name))
    return Checkpoint(f"{repo.endpoint}/{repo_id}@{commit}", tuple(files), tensors)
