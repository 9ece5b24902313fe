"""The CLI contract, for every command in ``cli.cli.commands`` (enumerated when the tests run).

- ``--help`` exits 0 and shows at least one ``memsym NAME ...`` example; every example
  parses, and every example that needs no local file runs with exit status 0 (and prints
  JSON when it asks for ``--json``);
- bad input exits 2 with exactly one line on stderr, ``memsym: error: ...``, never a
  traceback; with ``--json`` stdout holds ``{"error": ...}``;
- ``--help`` imports no SymPy; docs/cli.md is what tools/gen_cli_docs.py generates.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import cli

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = sorted(cli.cli.commands)


def run(*args: str):
    return CliRunner().invoke(cli.cli, list(args), prog_name="memsym")


def examples(name: str) -> list[list[str]]:
    """Argument lists of the ``memsym NAME ...`` lines in the command's --help output."""
    call = f"memsym {name}"
    lines = [line.strip() for line in run(name, "--help").stdout.splitlines()]
    return [command_words(line) for line in lines if line == call or line.startswith(call + " ")]


SHELL_OPERATORS = {">", ">>", "<", "|", "&&", "||", ";", "2>", "&"}


def command_words(line: str) -> list[str]:
    """The arguments of one example line, up to a shell redirection or pipe (``> memory.tex``)."""
    words = shlex.split(line)[2:]
    cut = next((i for i, w in enumerate(words) if w in SHELL_OPERATORS), len(words))
    return words[:cut]


def needs_local_file(args: list[str]) -> bool:
    """An example naming a file or folder of the reader's own (./Qwen3-0.6B, config.json)."""
    return any(a.startswith(("./", "/", "~")) or a.endswith((".json", ".safetensors")) for a in args)


@pytest.mark.parametrize("name", COMMANDS)
def test_help_has_an_example_that_parses(name):
    result = run(name, "--help")
    assert result.exit_code == 0 and result.stdout.startswith(f"Usage: memsym {name}")
    assert "Example" in result.stdout, f"memsym {name} --help shows no example"
    found = examples(name)
    assert found, f"memsym {name} --help has no 'memsym {name} ...' line"
    command = cli.cli.commands[name]
    for args in found:
        with click.Context(cli.cli, info_name="memsym") as parent:
            command.make_context(name, list(args), parent=parent)  # raises on an unknown option or bad value


# command -> (optional module it needs to run, the extra that installs it)
NEEDS = {"plot": ("matplotlib", "memsym[plot]")}


def require_optional(name: str) -> None:
    """Skip a command that needs an optional package absent here; in CI (env CI set) fail."""
    if name not in NEEDS:
        return
    module, extra = NEEDS[name]
    try:
        importlib.import_module(module)
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail(f"{module} is missing in CI: install {extra} (.ci/run should)")
        pytest.skip(f"memsym {name} needs {module}, not installed here: pip install '{extra}'")


@pytest.mark.parametrize("name", COMMANDS)
def test_examples_run(name, tmp_path, monkeypatch):
    """What --help shows works (examples that name a reader's local files are parsed above)."""
    require_optional(name)
    monkeypatch.chdir(tmp_path)
    ran = 0
    for args in examples(name):
        if needs_local_file(args):
            continue
        result = run(name, *args)
        assert result.exit_code == 0, (name, args, result.output)
        assert result.stdout.strip(), (name, args)
        if "--json" in args:
            json.loads(result.stdout)
        ran += 1
    assert ran or all(needs_local_file(a) for a in examples(name))


def test_top_level_help_and_version():
    result = run("--help")
    assert result.exit_code == 0 and "Example" in result.stdout
    assert all(name in result.stdout for name in COMMANDS)
    version = run("--version")
    assert version.exit_code == 0 and version.stdout.startswith("memsym, version ")


def bad_inputs(command: click.Command) -> list[list[str]]:
    """Command lines that must fail cleanly, built from the command's own parameters."""
    cases = [["--no-such-option"], ["--no-such-option", "--json"]]
    names = {p.name: p for p in command.params}
    if "model_id" in names:
        cases += [["--model", "no-such-model"], ["--model", "no-such-model", "--json"], ["--model", "acme/absent"]]
    if "config_path" in names:
        cases += [["--config", "/no/such/config.json"]]
    for param in command.params:
        if isinstance(param, click.Option) and isinstance(param.type, click.types.IntParamType):
            cases.append([param.opts[0], "not-a-number"])
        if isinstance(param, click.Option) and isinstance(param.type, click.Choice):
            cases.append([param.opts[0], "no-such-choice"])
    if any(isinstance(p, click.Argument) for p in command.params):
        cases.append(["no-such-argument"] * 5)
    else:
        cases.append(["an-extra-argument"])
    return cases


@pytest.mark.parametrize("name", COMMANDS)
def test_bad_input_is_one_stderr_line_and_exit_2(name, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    for args in bad_inputs(cli.cli.commands[name]):
        result = run(name, *args)
        where = f"memsym {name} {' '.join(args)}"
        assert result.exit_code == 2, (where, result.output)
        assert result.exception is None or isinstance(result.exception, SystemExit), where
        assert result.stderr.startswith("memsym: error: ") and result.stderr.count("\n") == 1, (where, result.stderr)
        assert "Traceback" not in result.output
        if "--json" in args:
            error = json.loads(result.stdout)
            assert list(error) == ["error"] and error["error"] in result.stderr, where
        else:
            assert result.stdout == "", where


def test_a_real_process_prints_one_line_and_json():
    """Through the interpreter, as a user runs it: no traceback, stdout JSON, exit 2."""
    proc = subprocess.run([sys.executable, "-c", "import cli; cli.main()", "estimate", "--model", "no-such-model",
                           "--json"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("memsym: error: --model")
    assert "no-such-model" in json.loads(proc.stdout)["error"]


def test_help_does_not_import_sympy():
    code = ("import sys\nfrom click.testing import CliRunner\nimport cli\n"
            "for name in [None, *cli.cli.commands]:\n"
            "    args = [name, '--help'] if name else ['--help']\n"
            "    assert CliRunner().invoke(cli.cli, args).exit_code == 0, name\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sympy', 'numpy')))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", "--help imported: " + proc.stdout[:300]


def test_docs_cli_md_matches_help():
    spec = importlib.util.spec_from_file_location("gen_cli_docs", ROOT / "tools" / "gen_cli_docs.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    expected = tool.render()
    assert all(f"## memsym {name}\n" in expected for name in COMMANDS)
    current = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    assert tool.normalized(current) == tool.normalized(expected), \
        "docs/cli.md is stale: run python tools/gen_cli_docs.py"


def test_docs_cli_md_check_ignores_only_click_layout():
    """The drift check forgives click's shortening and wrapping, not a changed option."""
    spec = importlib.util.spec_from_file_location("gen_cli_docs", ROOT / "tools" / "gen_cli_docs.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    listing = "Commands:\n  crossover    The smallest integer VAR at which TERM_A reaches TERM_B (e.g. where...\n"
    shortened = "Commands:\n  crossover    The smallest integer VAR at which TERM_A reaches TERM_B (e.g.\n"
    assert tool.normalized(listing) == tool.normalized(shortened)
    option = "Options:\n  --seq-len INTEGER  Tokens per sequence.  [default:\n                     2048]\n"
    assert tool.normalized(option) == tool.normalized(option.replace("\n                     ", " "))
    assert tool.normalized(option) != tool.normalized(option.replace("2048", "4096"))
    assert tool.normalized(option) != tool.normalized(option.replace("--seq-len", "--seq-length"))
