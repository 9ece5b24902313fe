"""The knob table (engine.scenario.KNOBS) is the one place a scenario knob is written.

Each Scenario field has exactly one row; every row becomes an option of every command that
builds a model; the ``--free`` choices, the symbolic model's scenario symbols and the
checks of ``Scenario`` come from the rows; ``--help`` lists options in the table's sections.
"""

from __future__ import annotations

import json
from dataclasses import fields
from fractions import Fraction

import click
import pytest
from click.testing import CliRunner

import cli
from engine import questions
from engine.errors import InputError
from engine.scenario import (FREEABLE, FREEABLE_ALIASES, GROUPS, KNOBS, SCENARIO_PINNED, SCENARIO_SYMBOLS, Scenario,
                             changed_knobs, knob, knob_values, unread_knobs)
from formulas import symbols as S

FIELDS = [f for f in fields(Scenario)]
MODEL_COMMANDS = sorted(name for name, c in cli.cli.commands.items() if any(p.name == "model_id" for p in c.params))
GRID_COMMANDS = {"sweep", "plot"}  # --batch-size and --seq-len take lists there


def run(*args):
    return CliRunner().invoke(cli.cli, list(args), prog_name="memsym", terminal_width=100)


def test_each_scenario_field_has_exactly_one_row_with_its_default():
    names = [k.name for k in KNOBS]
    assert sorted(names) == sorted(f.name for f in FIELDS) and len(set(names)) == len(names)
    for f in FIELDS:
        assert knob(f.name).default == f.default, f.name
    flags = [k.flag for k in KNOBS] + [k.shortcut.flag for k in KNOBS if k.shortcut]
    assert len(set(flags)) == len(flags)
    assert {k.group for k in KNOBS} <= set(GROUPS)


@pytest.mark.parametrize("name", MODEL_COMMANDS)
def test_the_table_generates_every_option_of_every_model_command(name):
    params = {p.name: p for p in cli.cli.commands[name].params if isinstance(p, click.Option)}
    for k in KNOBS:
        if name in GRID_COMMANDS and k.name in ("batch_size", "seq_len"):
            assert k.flag in params[k.name + "_values"].opts
            continue
        option = params[k.name]
        assert option.opts == [k.flag, *k.spellings] and option.help == k.help and option.group == k.group, k.name
        if k.choices and k.kind != "stage":
            assert tuple(option.type.choices) == tuple(k.choices), k.name
        if k.shortcut:
            assert params[k.shortcut.name].opts == [k.shortcut.flag] and params[k.shortcut.name].is_flag


def test_free_choices_are_the_freeable_rows():
    freeable = [k for k in KNOBS if k.freeable]
    assert FREEABLE_ALIASES == {k.flag[2:].replace("-", "_"): k.symbol for k in freeable}
    assert FREEABLE == SCENARIO_SYMBOLS == {k.symbol for k in freeable}
    assert set(SCENARIO_PINNED) < FREEABLE and "tensor_parallel" in SCENARIO_PINNED and "seq_len" not in SCENARIO_PINNED
    assert all(S.is_declared(S.symbol(k.symbol)) for k in KNOBS if k.symbol)
    free = next(p for p in cli.cli.commands["latex"].params if p.name == "free")
    help_text = free.help
    for k in freeable:
        if k.name not in ("batch_size", "seq_len"):
            assert k.flag[2:] + "," in help_text or k.flag[2:] + " (repeatable)" in help_text, k.flag
    result = run("latex", "--model", "qwen3-0.6b", "--free", "hidden-size")
    assert result.exit_code == 2 and ", ".join(sorted(FREEABLE_ALIASES)) in result.stderr


@pytest.mark.parametrize("name", sorted(cli.cli.commands))
def test_help_shows_the_option_sections_in_order(name):
    text = run(name, "--help").stdout
    headings = [line[:-1].lower() for line in text.splitlines() if line.endswith(":") and not line.startswith(" ")]
    sections = [h for h in headings if h in GROUPS]
    assert sections and sections == [g for g in GROUPS if g in sections], (name, headings)
    assert "options" not in headings  # every option sits in a section
    if name in MODEL_COMMANDS:
        assert {"model", "scenario", "training", "parallelism", "output"} <= set(sections), name
        assert text.index("\nParallelism:") < text.index("  --tp INTEGER") < text.index("\nOutput:")


@pytest.mark.parametrize("k", [k for k in KNOBS if k.kind == "count"], ids=lambda k: k.name)
def test_a_count_knob_refuses_zero_naming_its_flag(k):
    with pytest.raises(InputError, match=f"^{k.flag} must be a positive integer, got 0$"):
        Scenario(**{k.name: 0})


@pytest.mark.parametrize("k", [k for k in KNOBS if k.kind in ("choice", "dtype")], ids=lambda k: k.name)
def test_a_choice_knob_refuses_an_unknown_value_naming_its_flag(k):
    with pytest.raises(InputError, match=f"^{k.flag}: unknown"):
        Scenario(**{k.name: "no-such-value"})


def test_changed_knobs_and_shown():
    assert changed_knobs(Scenario()) == []
    changed = changed_knobs(Scenario(tp=2, sequence_parallel=True, lora_rank=8, lora_targets=("q_proj", "v_proj"),
                                     allocator_fraction=Fraction(1, 20)))
    assert [k.name for k in changed] == ["allocator_fraction", "lora_rank", "lora_targets", "tp", "sequence_parallel"]
    assert [k.name for k in unread_knobs(Scenario(tp=2, profile="transformers"), frozenset({"mode"}))] == ["tp"]
    assert [k.shown(v) for k, v in zip(changed, (Fraction(1, 20), 8, ("q_proj", "v_proj"), 2, True))] == [
        "--allocator-fraction 1/20", "--lora-rank 8", "--lora-targets q_proj,v_proj", "--tp 2", "--sequence-parallel"]


def test_knob_values_convert_the_command_line_text():
    assert knob_values({"reserve_bytes": "500MB", "allocator_fraction": "0.05", "lora_targets": "q_proj, v_proj",
                        "gradient_checkpointing": True}) == {
        "reserve_bytes": 500 * 10**6, "allocator_fraction": Fraction(1, 20), "lora_targets": ("q_proj", "v_proj"),
        "recompute": "full"}
    assert knob_values({"gradient_checkpointing": False, "tp": 2}) == {"tp": 2}
    with pytest.raises(InputError, match="^--gradient-checkpointing is --recompute full; it conflicts with "
                                         "--recompute selective$"):
        knob_values({"recompute": "selective", "gradient_checkpointing": True})


def test_questions_answer_from_python_as_the_cli_does():
    answer = questions.solve("seq-len", "qwen3-0.6b", budget="24GB", batch_size=1, profile="megatron")
    printed = json.loads(run("solve", "seq-len", "--model", "qwen3-0.6b", "--budget", "24GB", "--profile", "megatron",
                             "--json").stdout)
    assert answer.to_dict() == printed and answer.solution.value == 179_623
    with pytest.raises(InputError, match="^solve seq-len: --seq-len pins the variable being solved"):
        questions.solve("seq-len", "qwen3-0.6b", budget="24GB", seq_len=2048)
    plan = questions.plan("llama-3.1-8b", budget="80GB", mode="training", tp=2)
    assert {c.tp for c in plan.plan.tried} == {2}
