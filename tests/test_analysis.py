"""Canonical form, derivatives, sensitivities and crossovers, against hand-worked values."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import sympy

from engine.analysis import as_decimal, canonical_form, crossover, derivative, sensitivity, symbolic
from engine.api import estimate, memory_model
from engine.errors import InputError
from formulas import symbols as S

DOCS = Path(__file__).parent.parent / "docs" / "solve.md"
# Seed ERRATA (recomputed from Qwen3-0.6B's config.json, bf16): weights and KV bytes per token.
QWEN_WEIGHTS, QWEN_KV_PER_TOKEN = 1_192_099_840, 114_688
b, s = S.batch_size, S.seq_len


def rows_by_monomial(form):
    return {r.monomial: r for r in form.rows}


def test_canonical_form_of_qwen3_matches_the_errata():
    """The seed's errata are the megatron profile's (the default transformers profile adds rotary buffers)."""
    _, mm = memory_model("qwen3-0.6b", batch_size=None, seq_len=None, profile="megatron")
    rows = rows_by_monomial(canonical_form(mm, ["batch_size", "seq_len"]))
    assert rows[1].coefficient == QWEN_WEIGHTS and rows[1].terms == ("weights",)
    assert rows[b * s].coefficient == QWEN_KV_PER_TOKEN and rows[b * s].terms == ("kv_cache",)
    assert rows[b * s].meaning == "bytes per sequence per token"
    peak = [m for m in rows if isinstance(m, sympy.Max)]
    assert len(peak) == 1 and rows[peak[0]].terms == ("activations",)


def test_symbolic_kv_coefficient_is_the_gqa_formula():
    """Per sequence and token: 2 L a_kv d beta_kv (Pope et al. 2022, section 3.1)."""
    form = canonical_form(symbolic(batch_size=None, seq_len=None), ["batch_size", "seq_len"])
    expected = 2 * S.num_hidden_layers * S.num_key_value_heads * S.head_dim * S.kv_cache_bytes
    assert sympy.expand(rows_by_monomial(form)[b * s].coefficient - expected) == 0
    branches = dict(form.peaks)
    mlp = rows_by_monomial(branches["activations/mlp"])[b * s].coefficient
    assert sympy.expand(mlp - 2 * S.activation_bytes * S.intermediate_size) == 0


def test_eager_scores_give_a_seq_len_squared_coefficient():
    """Llama-3.1-8B, batch 1, bf16: the score matrix costs beta_a a = 2 x 32 = 64 bytes per token^2."""
    _, mm = memory_model("llama-3.1-8b", batch_size=1, seq_len=None, attention="eager", profile="megatron")
    attention = dict(canonical_form(mm, ["seq_len"]).peaks)["activations/attention"]
    assert rows_by_monomial(attention)[s**2].coefficient == 2 * 32


def test_derivative_matches_the_finite_difference_where_linear():
    """The megatron profile's slopes (pinned: the default transformers profile has other moments)."""
    _, mm = memory_model("qwen3-0.6b", batch_size=None, seq_len=None, profile="megatron")
    d = derivative(mm, "seq_len", batch_size=1, seq_len=2048)
    # KV per token plus the gated MLP's 2 x beta_a x f = 2 x 2 x 3072 bytes (the active branch)
    assert d.value == QWEN_KV_PER_TOKEN + 2 * 2 * 3072 == d.finite_difference
    per_sequence = derivative(mm, "batch_size", batch_size=1, seq_len=2048)
    two = estimate("qwen3-0.6b", batch_size=2, seq_len=2048, profile="megatron").evaluation.total_bytes
    one = estimate("qwen3-0.6b", batch_size=1, seq_len=2048, profile="megatron").evaluation.total_bytes
    assert per_sequence.value == per_sequence.finite_difference == two - one


def test_paged_step_shows_in_the_finite_difference_not_the_derivative():
    _, mm = memory_model("qwen3-0.6b", batch_size=None, seq_len=None, block_size=16)
    d = derivative(mm, "seq_len", batch_size=1, seq_len=2048)  # 2048 fills 128 blocks exactly
    assert d.value == 2 * 2 * 3072  # the KV cache is a step function of seq_len
    assert d.finite_difference == d.value + 16 * QWEN_KV_PER_TOKEN  # token 2049 opens a new block


def test_symbolic_derivative_lists_one_slope_per_branch():
    d = derivative(symbolic(batch_size=None, seq_len=None), "seq_len")
    assert d.value is None and len(d.branches) == 3


def test_byte_width_elasticities_sum_to_one():
    """Without a reserve the total is homogeneous of degree 1 in the byte widths (Euler): the megatron
    profile's (the default transformers profile also counts int64 input ids, no byte-width symbol)."""
    _, mm = memory_model("llama-3.1-8b", batch_size=8, seq_len=8192, profile="megatron")
    total, rows = sensitivity(mm)
    assert total == mm.evaluate().total_bytes
    widths = {r.symbol: r.elasticity for r in rows if r.symbol.endswith("_bytes")}
    assert set(widths) == {"weight_bytes", "kv_cache_bytes", "activation_bytes"}
    assert sum(widths.values()) == 1
    by_name = {r.symbol: r for r in rows}
    assert by_name["batch_size"].elasticity == by_name["batch_size"].derivative * 8 / total
    assert [abs(r.elasticity) for r in rows] == sorted((abs(r.elasticity) for r in rows), reverse=True)


def test_crossover_kv_cache_outgrows_the_weights():
    _, mm = memory_model("qwen3-0.6b", batch_size=1, seq_len=None)
    c = crossover(mm, "kv_cache", "weights", "seq_len")
    assert c.value == -(-QWEN_WEIGHTS // QWEN_KV_PER_TOKEN)  # ceil(weights / KV per token) = 10,395
    assert c.a_at_value >= c.b_at_value and c.a_before < c.b_before


def test_symbolic_crossover_is_weights_over_kv_per_token():
    mm = symbolic(batch_size=None, seq_len=None)
    c = crossover(mm, "kv_cache", "weights", "seq_len")
    per_token = 2 * S.batch_size * S.num_hidden_layers * S.num_key_value_heads * S.head_dim * S.kv_cache_bytes
    weights = mm.pinned(mm.terms["weights"])
    assert c.value is None and c.closed_form == sympy.ceiling(sympy.factor_terms(weights / per_token))


def test_crossover_that_never_happens(run_cli):
    """Mistral-7B slides every layer over 4,096 tokens: its KV cache stops growing below the weights."""
    result = run_cli("crossover", "kv_cache", "weights", "--wrt", "seq-len", "--model", "mistral-7b-v0.1")
    assert result.exit_code == 2 and "kv_cache stays below weights for every seq_len" in result.stderr
    result = run_cli("crossover", "overhead", "weights", "--wrt", "seq-len", "--model", "qwen3-0.6b")
    assert result.exit_code == 2 and "neither overhead nor weights depends on seq_len" in result.stderr


def test_as_decimal_is_exact_to_its_digits():
    assert as_decimal(sympy.Rational(1, 3)) == "0.333333"
    assert as_decimal(sympy.Integer(126976), 12) == "126976"


@pytest.mark.parametrize("args", [
    ["formula", "--symbolic", "--json"],
    ["formula", "--model", "qwen3-0.6b", "--json"],
    ["diff", "--wrt", "batch-size", "--model", "qwen3-0.6b", "--json"],
    ["diff", "--wrt", "seq_len", "--symbolic", "--json"],
    ["sensitivity", "--model", "qwen3-0.6b", "--json"],
    ["crossover", "kv_cache", "weights", "--wrt", "seq-len", "--model", "qwen3-0.6b", "--json"],
    ["solve", "seq-len", "--symbolic", "--json"],
])
def test_cli_analysis_commands_answer_in_json(run_cli, args):
    result = run_cli(*args)
    assert result.exit_code == 0, result.output
    assert isinstance(json.loads(result.stdout), dict)


def test_cli_formula_coefficients(run_cli):
    answer = json.loads(run_cli("formula", "--model", "qwen3-0.6b", "--json", "--profile", "megatron").stdout)
    rows = {r["monomial"]: r for r in answer["coefficients"]}
    assert rows["batch_size*seq_len"]["coefficient"] == str(QWEN_KV_PER_TOKEN)
    assert {p["branch"] for p in answer["peak"]} == {"activations/logits", "activations/mlp"}


@pytest.mark.parametrize("command", ["solve", "formula", "diff", "sensitivity", "crossover", "gpus"])
def test_every_command_help_has_an_example(run_cli, command):
    result = run_cli(command, "--help")
    assert result.exit_code == 0 and "Example" in result.stdout and "memsym " + command in result.stdout


def doc_blocks() -> list[tuple[str, str]]:
    """Every ```text block of docs/solve.md that shows a memsym command and its output."""
    return re.findall(r"```text\n\$ memsym (.*?)\n(.*?)```", DOCS.read_text(), flags=re.S)


def test_docs_show_the_closed_form_for_a_gqa_model():
    commands = [command for command, _ in doc_blocks()]
    assert "solve seq-len --symbolic --batch-size 1" in commands and len(commands) >= 8


@pytest.mark.parametrize("command, shown", doc_blocks())
def test_docs_show_the_engines_own_output(run_cli, command, shown):
    """docs/solve.md pastes CLI output; the test fails when the engine and the docs drift."""
    assert run_cli(*command.split()).stdout.strip() == shown.strip()


@pytest.mark.parametrize("model, mode, knobs", [
    ("llama-3.1-8b", "inference", dict(batch_size=8, seq_len=32768)),
    ("deepseek-v2-lite", "inference", dict(batch_size=2, seq_len=4096)),
    ("gemma-2-9b", "inference", dict(batch_size=1, seq_len=8192)),
    ("qwen3-0.6b", "training", dict(batch_size=2, seq_len=1024)),
])
def test_sensitivity_agrees_with_diff_for_every_symbol(model, mode, knobs):
    """Issue 14: sensitivity's d total / d x equals diff's at the same point, for every symbol."""
    from engine.analysis import derivative, sensitivity
    from engine.api import memory_model

    _, mm = memory_model(model, mode=mode, batch_size=None, seq_len=None)
    _, rows = sensitivity(mm, **knobs)
    assert rows
    for row in rows:
        assert row.derivative == derivative(mm, row.symbol, **knobs).value, row.symbol


def test_sensitivity_agrees_with_diff_through_the_llamacpp_compute_buffers_max():
    """The llamacpp profile's compute buffer is a Max of three moments: sensitivity still equals diff."""
    from engine.analysis import derivative, sensitivity
    from engine.api import memory_model

    _, mm = memory_model("llama-3.1-8b", profile="llamacpp", batch_size=None, seq_len=None)
    _, rows = sensitivity(mm, batch_size=2, seq_len=8192)
    assert {"vocab_size", "hidden_size", "num_key_value_heads"} <= {str(row.symbol) for row in rows}
    for row in rows:
        assert row.derivative == derivative(mm, row.symbol, batch_size=2, seq_len=8192).value, row.symbol
