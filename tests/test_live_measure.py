"""Re-measure a small subset with torch + transformers, against the fixture and the engine.

Runs tools/measure/peaks.py's ``QUICK`` points (a training step and a prefill per family)
live. With the fixture's torch and transformers versions the measurement must equal the
fixture to the byte (it is deterministic); with other versions it must stay within the
accuracy aims, so a change in transformers shows. Either way the engine's prediction must
be within the aims of the live number. Without torch the test skips locally and fails in
CI (``CI`` set), where ``pip install -e '.[validate]'`` provides it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from fractions import Fraction
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MEASURE = ROOT / "tools" / "measure"


def _require_torch():
    missing = [name for name in ("torch", "transformers") if importlib.util.find_spec(name) is None]
    if not missing:
        return
    message = f"{', '.join(missing)} not installed: pip install -e '.[validate]'"
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the live measurement, but {message}")
    pytest.skip(message)


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def live():
    """(peaks module, fixture, accuracy tool, measured rows) for the QUICK subset."""
    _require_torch()
    sys.path.insert(0, str(MEASURE))
    try:
        peaks = _load("peaks", MEASURE / "peaks.py")
    finally:
        sys.path.remove(str(MEASURE))
    fixture = json.loads((ROOT / "tests" / "fixtures" / "peaks_cpu.json").read_text())
    tool = _load("accuracy_table", ROOT / "tools" / "accuracy_table.py")
    rows = [peaks.measure(dict(point)) for point in peaks.QUICK]
    return peaks, fixture, tool, rows


def _inputs(point: dict) -> dict:
    return {k: v for k, v in point.items() if k not in ("measured", "seconds")}


@pytest.mark.parametrize("index", range(4))
def test_live_matches_fixture(live, index):
    peaks, fixture, tool, rows = live
    row = rows[index]
    (recorded,) = [p for p in fixture["points"] if _inputs(p) == _inputs(row)]
    same_versions = (fixture["environment"]["torch"], fixture["environment"]["transformers"]) == (
        peaks.torch.__version__, peaks.transformers.__version__)
    live_bytes, fixture_bytes = row["measured"]["peak_bytes"], recorded["measured"]["peak_bytes"]
    if same_versions:
        assert live_bytes == fixture_bytes
        assert row["measured"]["peak_phase"] == recorded["measured"]["peak_phase"]
    else:  # a new torch/transformers: the fixture is stale if this moves past the aim
        assert abs(Fraction(live_bytes - fixture_bytes, fixture_bytes)) <= tool.AIMS[row["mode"]]


@pytest.mark.parametrize("index", range(4))
def test_live_matches_engine(live, index):
    _, fixture, tool, rows = live
    row = rows[index]
    predicted = tool.predict(row, fixture["models"][row["model"]]["config"], "cpu")
    measured = row["measured"]["peak_bytes"]
    assert abs(Fraction(predicted["bytes"] - measured, measured)) <= tool.AIMS[row["mode"]]
    assert predicted["phase"] == row["measured"]["peak_phase"]


def test_live_methods_agree(live):
    for row in live[3]:
        m = row["measured"]
        assert 0 <= m["allocator_peak_bytes"] - m["peak_bytes"] <= m["peak_bytes"] // 100
