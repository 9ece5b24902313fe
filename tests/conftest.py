"""Shared fixtures: registry specs, ground-truth measurements, a CLI runner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def ground_truth() -> dict:
    """What transformers instantiated and cached (tools/measure/params_kv.py)."""
    return json.loads((FIXTURES / "transformers_ground_truth.json").read_text())


@pytest.fixture()
def run_cli():
    """Invoke the CLI in-process; returns click's Result (exit_code, stdout, stderr)."""
    from click.testing import CliRunner

    import cli

    def invoke(*args: str):
        return CliRunner().invoke(cli.cli, list(args))

    return invoke
