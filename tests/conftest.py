"""Shared fixtures: registry specs, ground-truth measurements, a CLI runner."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
# the exact-evaluator cache (engine/fast_cache.py) of this test session: never the user's ~/.cache/memsym
os.environ["MEMSYM_CACHE_DIR"] = tempfile.mkdtemp(prefix="memsym-test-cache-")


@pytest.fixture(scope="session")
def ground_truth() -> dict:
    """What transformers instantiated and cached (tools/measure/params_kv.py)."""
    return json.loads((FIXTURES / "transformers_ground_truth.json").read_text())


@pytest.fixture(autouse=True)
def hub_offline(monkeypatch):
    """No test reaches the network: the Hub is off (HF_HUB_OFFLINE) unless a test serves one on
    the loopback and unsets it (tests/test_hub.py)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)


@pytest.fixture()
def run_cli():
    """Invoke the CLI in-process; returns click's Result (exit_code, stdout, stderr)."""
    from click.testing import CliRunner

    import cli

    def invoke(*args: str):
        return CliRunner().invoke(cli.cli, list(args))

    return invoke


class SafetensorsWriter:
    """Writes real-format safetensors files byte by byte (no package needed; tests/test_checkpoint.py).

    Format: 8-byte little-endian header length, the JSON header padded with spaces to a
    multiple of 8 (as safetensors' ``prepare`` pads it), then the data area (zeros here).
    """

    BITS = {"BOOL": 8, "U8": 8, "I8": 8, "F8_E4M3": 8, "F8_E5M2": 8, "F4": 4, "F6_E2M3": 6,
            "I16": 16, "F16": 16, "BF16": 16, "I32": 32, "F32": 32, "I64": 64, "F64": 64}

    @classmethod
    def nbytes(cls, dtype: str, shape) -> int:
        elements = 1
        for dim in shape:
            elements *= dim
        bits = elements * cls.BITS[dtype]
        assert bits % 8 == 0, (dtype, shape)
        return bits // 8

    def raw(self, path, header, data: bytes | int = b"", length: int | None = None) -> Path:
        """``header``: a dict/list (dumped as JSON) or bytes; ``length`` overrides the prefix."""
        body = header if isinstance(header, bytes) else json.dumps(header).encode()
        body += b" " * (-len(body) % 8)
        data = bytes(data) if isinstance(data, int) else data
        prefix = (len(body) if length is None else length).to_bytes(8, "little")
        Path(path).write_bytes(prefix + body + data)
        return Path(path)

    def tensors(self, path, tensors: dict, metadata: dict | None = None) -> int:
        """``tensors``: name -> (dtype, shape). Returns the data-area size in bytes."""
        header: dict = {"__metadata__": metadata} if metadata is not None else {}
        offset = 0
        for name, (dtype, shape) in tensors.items():
            size = self.nbytes(dtype, shape)
            header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
            offset += size
        self.raw(path, header, offset)
        return offset


@pytest.fixture(scope="session")
def safetensors_writer() -> SafetensorsWriter:
    return SafetensorsWriter()
