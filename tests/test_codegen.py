"""``memsym codegen``: a standalone module that imports only NumPy (engine/numeric.py).

The module is imported in a fresh interpreter, which must not load SymPy (or memsym), and
its functions must agree with ``memsym estimate --json`` at several points.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from engine.errors import InputError
from engine.files import write_atomically

POINTS = [(1, 1), (1, 2048), (3, 4097), (64, 131072), (1000, 1_000_000)]
CASES = [
    ("qwen3-0.6b",),
    ("gemma-2-9b", "--block-size", "16", "--attention", "eager"),
    ("deepseek-v3", "--weight-quant", "int4", "--allocator-fraction", "0.05", "--reserve", "500MB"),
    ("llama-3.1-8b", "--mode", "training", "--recompute", "selective", "--profile", "megatron"),
    ("llama-3.1-8b", "--mode", "training", "--gradient-checkpointing", "--precision", "amp"),  # transformers
    ("mixtral-8x7b-v0.1", "--mode", "training", "--zero", "3", "--dp", "8"),
]

IMPORT_AND_EVALUATE = textwrap.dedent("""
    import importlib.util, json, sys
    spec = importlib.util.spec_from_file_location("generated", sys.argv[1])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    points = json.loads(sys.argv[2])
    out = {
        "sympy_loaded": any(m == "sympy" or m.startswith("sympy.") for m in sys.modules),
        "memsym_loaded": any(m.split(".")[0] in ("engine", "formulas", "cli") for m in sys.modules),
        "variables": list(module.VARIABLES),
        "docs": {name: f.__doc__ for name, f in module.TERMS.items()},
        "values": [{name: float(f(batch_size=b, seq_len=s)) for name, f in module.TERMS.items()} for b, s in points],
    }
    print(json.dumps(out))
""")


@pytest.mark.parametrize("case", CASES, ids=[" ".join(c) for c in CASES])
def test_generated_module_agrees_with_estimate_without_sympy(run_cli, tmp_path, case):
    model, *knobs = case
    path = tmp_path / "memory_model.py"
    result = run_cli("codegen", "--model", model, *knobs, "-o", str(path))
    assert result.exit_code == 0, result.output
    run = subprocess.run([sys.executable, "-c", IMPORT_AND_EVALUATE, str(path), json.dumps(POINTS)],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert not out["sympy_loaded"] and not out["memsym_loaded"]
    assert out["variables"] == ["batch_size", "seq_len"]
    for (batch, seq), values in zip(POINTS, out["values"]):
        estimate = run_cli("estimate", "--model", model, *knobs, "--batch-size", str(batch), "--seq-len", str(seq),
                           "--json")
        expected = json.loads(estimate.stdout)
        exact = {"total_bytes": expected["total_bytes"], **expected["terms"], **expected["breakdown"]}
        assert set(values) == set(exact)
        for name, value in values.items():
            assert abs(value - exact[name]) <= 1e-12 * max(exact[name], 1), (name, batch, seq, value, exact[name])


def test_docstrings_show_formula_and_source(run_cli, tmp_path):
    path = tmp_path / "m.py"
    assert run_cli("codegen", "--model", "qwen3-0.6b", "--allocator-fraction", "0.05", "-o", str(path)).exit_code == 0
    run = subprocess.run([sys.executable, "-c", IMPORT_AND_EVALUATE, str(path), "[]"],
                         capture_output=True, text=True, timeout=60)
    docs = json.loads(run.stdout)["docs"]
    kv = docs["kv_cache"]
    assert "formula:" in kv and "kv_cache_bytes" in kv and "num_key_value_heads" in kv
    assert "this model: 114688*batch_size*seq_len" in kv and "arXiv:2211.05102" in kv
    assert "overhead/allocator" in docs and "allocator_fraction*(activations + kv_cache + weights)" in " ".join(
        docs["overhead/allocator"].split())
    assert all("source:" in doc for name, doc in docs.items() if name != "total_bytes")
    assert "weights + kv_cache + activations + overhead" in docs["total_bytes"]


def test_given_sizes_are_pinned(run_cli, tmp_path):
    path = tmp_path / "m.py"
    assert run_cli("codegen", "--model", "qwen3-0.6b", "--batch-size", "8", "-o", str(path)).exit_code == 0
    assert "def total_bytes(*, seq_len):" in path.read_text()


@pytest.mark.parametrize("where", ["missing/dir/out.py", "a_file.txt/out.py", "."])
def test_unwritable_output_is_one_line_exit_2(run_cli, tmp_path, where):
    (tmp_path / "a_file.txt").write_text("not a directory")
    target = tmp_path / where
    result = run_cli("codegen", "--model", "qwen3-0.6b", "-o", str(target))
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.startswith("memsym: error: -o") and len(result.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file.txt"]


def test_a_failed_run_leaves_an_existing_file_and_no_temporary(run_cli, tmp_path):
    path = tmp_path / "m.py"
    path.write_text("previous = True\n")
    assert run_cli("codegen", "--model", "no-such-model", "-o", str(path)).exit_code == 2
    assert path.read_text() == "previous = True\n"

    def half_then_fail(temporary):
        temporary.write_text("def half(")
        raise OSError(28, "No space left on device")

    with pytest.raises(InputError, match="No space left"):
        write_atomically(path, half_then_fail, flag="-o")
    assert path.read_text() == "previous = True\n" and [p.name for p in tmp_path.iterdir()] == ["m.py"]


def test_codegen_help_has_an_example(run_cli):
    assert "memsym codegen --model" in run_cli("codegen", "--help").stdout
