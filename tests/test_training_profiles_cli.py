"""The training-profile knobs on the command line: --profile deepspeed/torchtitan, --float8,
--float8-all-gather, --recompute op, --distributed-optimizer, uneven --pp."""

from __future__ import annotations

import json

import pytest

BASE = ["estimate", "--model", "llama-3.1-8b", "--mode", "training"]


def _json(run_cli, *args):
    result = run_cli(*BASE, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_distributed_optimizer_is_zero_1(run_cli):
    args = ["--profile", "megatron", "--tp", "2", "--pp", "4", "--dp", "8", "--sequence-parallel", "--recompute",
            "selective", "--seq-len", "4096"]
    spelled = _json(run_cli, *args, "--distributed-optimizer")
    assert spelled["total_bytes"] == _json(run_cli, *args, "--zero", "1")["total_bytes"]
    assert round(spelled["total_bytes"] / 1e9, 2) == 19.02


def test_deepspeed_offload_puts_fp32_gradients_on_the_host(run_cli):
    data = _json(run_cli, "--profile", "deepspeed", "--zero", "3", "--dp", "8", "--offload", "both")
    assert data["terms"]["gradients"] == 0
    assert data["host_terms"]["gradients"] == 6 * 8_030_261_248 // 8
    assert data["inputs"]["profile"] == "deepspeed"


def test_torchtitan_float8_all_gather(run_cli):
    plain = _json(run_cli, "--profile", "torchtitan", "--dp", "8", "--float8")
    fp8 = _json(run_cli, "--profile", "torchtitan", "--dp", "8", "--float8", "--float8-all-gather")
    assert fp8["terms"]["fsdp_gathered"] < plain["terms"]["fsdp_gathered"]


def test_torchtitan_uneven_pp(run_cli):
    data = _json(run_cli, "--profile", "torchtitan", "--pp", "5", "--dp", "2")
    assert data["total_bytes"] > 0  # 32 + 2 effective layers over 5 stages: 7 blocks on the first


@pytest.mark.parametrize("args, needle", [
    (["--profile", "megatron", "--float8"], "--profile megatron: --float8 is not modelled"),
    (["--profile", "transformers", "--tp", "2"], "--profile torchtitan"),
    (["--profile", "transformers", "--dp", "2", "--zero", "1", "--sharding", "fsdp"], "--zero 1 with --sharding fsdp"),
    (["--recompute", "op"], "--recompute op"),
    (["--profile", "torchtitan", "--float8-all-gather"], "--float8-all-gather"),
    (["--profile", "deepspeed"], "--zero 0"),
    (["--distributed-optimizer", "--zero", "3", "--dp", "8"], "--distributed-optimizer"),
])
def test_refusals_are_one_line_exit_2(run_cli, args, needle):
    result = run_cli(*BASE, *args)
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert needle in result.stderr, result.stderr


def test_docs_training_tables_are_current():
    """docs/training.md's side-by-side rows carry the numbers the engine and the re-typed
    estimators give now (tests/test_megatron_estimator.py, tests/test_deepspeed_estimator.py)."""
    import re
    from pathlib import Path

    import test_deepspeed_estimator as D
    import test_megatron_estimator as M

    text = (Path(__file__).parents[1] / "docs" / "training.md").read_text().replace("**", "")
    rows = [line for line in text.splitlines() if line.startswith("| Llama")]
    megatron = [r for r in rows if " tp" in r]
    assert len(megatron) == len(M.SP_CONFIGS)
    for (model_id, m, tp, pp, dp, dist, s, b, vpp), row in zip(M.SP_CONFIGS, megatron):
        ev = M._run(model_id, tp, pp, dp, dist, s, b, vpp)
        theirs = M.megatron_parameters(m, tp, pp) * M.megatron_bytes_per_parameter(dist, dp) + \
            M.megatron_activations_sp(m, s, b, tp, pp, vpp)
        assert row.endswith(f"| {float(theirs) / 1e9:.2f} | {ev.total_bytes / 1e9:.2f} |"), row
    deepspeed = [r for r in rows if re.match(r"\| Llama-3\.1-\d+B \| [23] \|", r)]
    assert len(deepspeed) == 10
    for row in deepspeed:
        cells = [c.strip() for c in row.strip("|").split("|")]
        model_id, stage, offload = cells[0].lower(), int(cells[1]), cells[2]
        t = D._terms(model_id, stage, 8, offload).terms
        states = sum(t[n] for n in ("weights", "gradients", "master_weights", "optimizer")) + t.get("zero3_gathered", 0)
        assert cells[4] == f"{states / 1e9:.2f}", row


@pytest.mark.parametrize("profile, knobs", [
    ("torchtitan", dict(dp=8, recompute="op")), ("torchtitan", dict(dp=8, pp=5, recompute="full")),
    ("deepspeed", dict(zero=3, dp=8, offload="both")), ("deepspeed", dict(zero=2, dp=8)),
    ("megatron", dict(tp=2, pp=4, dp=8, zero=1, sequence_parallel=True, recompute="selective")),
])
def test_compiled_matches_exact(profile, knobs):
    """Every phase names top-level terms only, so the compiled function is the exact peak."""
    from engine.api import memory_model
    from engine.numeric import compile_model

    _, mm = memory_model("llama-3.1-8b", mode="training", profile=profile, batch_size=None, seq_len=None, **knobs)
    f = compile_model(mm)
    for batch, seq in [(1, 128), (2, 8192), (16, 32768)]:
        exact = mm.evaluate(batch_size=batch, seq_len=seq).total_bytes
        assert abs(float(f(batch_size=batch, seq_len=seq)) - exact) <= 1e-12 * exact, (batch, seq)


@pytest.mark.parametrize("args", [
    ["--pp", "34"], ["--pp", "1000"], ["--profile", "torchtitan", "--pp", "34"],
    ["--profile", "torchtitan", "--pp", "4", "--vpp", "16"], ["--profile", "torchtitan", "--pp", "100000"],
])
def test_pipeline_degrees_beyond_the_layers_are_refused(run_cli, args):
    """A split that leaves a stage without layers is an error naming --pp, never a traceback."""
    result = run_cli(*BASE, *args)
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "--pp" in result.stderr, result.stderr
