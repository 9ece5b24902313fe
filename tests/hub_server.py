"""A Hugging Face Hub on the loopback for tests: http.server in a thread, synthetic repos in memory.

It answers what ``huggingface_hub`` asks of the Hub for file downloads, as the Hub does
(huggingface_hub ``file_download.py`` and ``utils/_http.py``, ``hf_raise_for_status``):

- ``HEAD|GET /<org>/<name>/resolve/<revision>/<file>``: ``X-Repo-Commit``, ``ETag``,
  ``Content-Length`` (and ``X-Linked-Size``/``X-Linked-Etag`` for .safetensors files, as
  for LFS files); ``Range: bytes=a-b`` answered with 206 and ``Content-Range``;
- errors with the Hub's ``X-Error-Code``: ``RepoNotFound`` (401, as the Hub answers for
  missing and private repos), ``GatedRepo`` (401 without a token, 403 with a wrong one),
  ``RevisionNotFound`` and ``EntryNotFound`` (404).

Every request is logged as (method, path, Range header or None).
"""

from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


@dataclass
class Repo:
    files: dict[str, bytes]
    commit: str = "c0ffee" + "0" * 34
    token: str | None = None  # gated: only "Authorization: Bearer <token>" may read it
    ignores_range: bool = False  # answers every GET with the whole file (a server that ignores Range)
    wrong_range: bool = False  # answers a Range request with 206 for bytes from 0, whatever was asked


@dataclass
class HubState:
    repos: dict[str, Repo] = field(default_factory=dict)
    log: list[tuple[str, str, str | None]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(BaseHTTPRequestHandler):
    state: HubState  # set on the subclass made per server

    def log_message(self, *args):  # quiet
        pass

    def do_HEAD(self):
        self._answer(body=False)

    def do_GET(self):
        self._answer(body=True)

    def _error(self, status: int, code: str, body: bool):
        payload = ('{"error": "%s"}' % code).encode()
        self.send_response(status)
        self.send_header("X-Error-Code", code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if body:
            self.wfile.write(payload)

    def _answer(self, body: bool):
        with self.state.lock:
            self.state.log.append((self.command, self.path, self.headers.get("Range")))
        match = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", self.path)
        repo = self.state.repos.get(match.group(1)) if match else None
        if repo is None:
            return self._error(401, "RepoNotFound", body)
        if repo.token is not None and self.headers.get("Authorization") != f"Bearer {repo.token}":
            return self._error(401 if self.headers.get("Authorization") is None else 403, "GatedRepo", body)
        if match.group(2) not in ("main", repo.commit):
            return self._error(404, "RevisionNotFound", body)
        data = repo.files.get(match.group(3))
        if data is None:
            return self._error(404, "EntryNotFound", body)
        self._send_file(repo, match.group(3), data, body)

    def _send_file(self, repo: Repo, name: str, data: bytes, body: bool):
        etag = hashlib.sha256(data).hexdigest()
        wanted = _RANGE.fullmatch(self.headers.get("Range") or "")
        first, last, status = 0, len(data) - 1, 200
        if wanted and body and not repo.ignores_range:
            first = 0 if repo.wrong_range else int(wanted.group(1))
            last = min(int(wanted.group(2)) if wanted.group(2) else len(data) - 1, len(data) - 1)
            status = 206
        self.send_response(status)
        self.send_header("X-Repo-Commit", repo.commit)
        self.send_header("ETag", f'"{etag}"')
        if name.endswith(".safetensors"):  # LFS files: the Hub names their size and hash apart
            self.send_header("X-Linked-Size", str(len(data)))
            self.send_header("X-Linked-Etag", f'"{etag}"')
        if status == 206:
            self.send_header("Content-Range", f"bytes {first}-{last}/{len(data)}")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(last - first + 1))
        self.end_headers()
        if body:
            try:
                self.wfile.write(data[first:last + 1])
            except (BrokenPipeError, ConnectionResetError):  # the client stopped reading, as it should
                pass


class LoopbackHub:
    """``with LoopbackHub() as hub``: ``hub.endpoint`` is its URL, ``hub.repos`` and ``hub.log`` its state."""

    def __init__(self):
        self.state = HubState()
        handler = type("Handler", (_Handler,), {"state": self.state})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def repos(self) -> dict[str, Repo]:
        return self.state.repos

    @property
    def log(self) -> list[tuple[str, str, str | None]]:
        return list(self.state.log)

    def __enter__(self) -> "LoopbackHub":
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
