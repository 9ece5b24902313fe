"""No user or config text is ever evaluated: a source scan, and payloads through every input.

``sympify``, ``parse_expr``, ``lambdify``, ``eval``, ``exec`` and ``compile`` run code.
The scan below allows them only in named places; the payload tests pass code-shaped text
through every string-taking flag of every command (enumerated from ``cli.cli.commands``
when the test runs), every config.json field, safetensors header fields and file names,
with ``eval``/``exec``/``compile``/``os.system`` watched, and check that nothing ran.
"""

from __future__ import annotations

import ast
import builtins
import io
import json
import os
import re
import shlex
import subprocess
import sys
import tokenize
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import cli

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ["engine", "formulas", "templates", "cli.py"]

# Names that evaluate text as code. A bare ``compile`` is the builtin; ``re.compile`` and a
# method named compile are attribute accesses / definitions and are not flagged.
DANGEROUS = {"sympify", "parse_expr", "parse_latex", "lambdify", "eval", "exec", "compile", "__import__",
             "exec_module", "runpy"}
# file -> the dangerous names it may use, and why.
ALLOWED = {
    # compile()/exec() of the source numeric.function_source prints from the model's own
    # SymPy expressions (what lambdify does), never of a user's string.
    "engine/numeric.py": {"exec", "compile", "lambdify"},
    # compile()/exec() of the source engine.exact prints from a checked program of integers and
    # fixed identifiers (built from the model's own SymPy expressions), never of a string read.
    "engine/exact.py": {"exec", "compile"},
}


def _python_hits(path: Path) -> list[tuple[str, int]]:
    """(name, line) of every dangerous NAME token, plus ``sympy.S("...")`` / ``S(...)`` calls."""
    hits = []
    tokens = [t for t in tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
              if t.type not in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT)]
    for before, token, after in zip([None, *tokens], tokens, [*tokens[1:], None]):
        if token.type != tokenize.NAME:
            continue
        attribute = before is not None and before.string == "."
        defined = before is not None and before.string in ("def", "class")
        if token.string in DANGEROUS and not (token.string == "compile" and (attribute or defined)):
            hits.append((token.string, token.start[0]))
        if token.string == "S" and after is not None and after.string == "(":  # sympy.S(...) is sympify
            hits.append(("S(", token.start[0]))
    return hits


def _scanned_files() -> list[Path]:
    files = []
    for entry in SCANNED:
        path = ROOT / entry
        files += [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return [p for p in files if p.suffix in (".py", ".j2") and "__pycache__" not in p.parts]


def test_code_evaluating_names_appear_only_in_the_allow_list():
    found: dict[str, set[str]] = {}
    for path in _scanned_files():
        rel = path.relative_to(ROOT).as_posix()
        if path.suffix == ".py":
            names = {name for name, _ in _python_hits(path)}
        else:  # a template: Jinja expressions calling these names
            names = {n for n in DANGEROUS if re.search(rf"\b{re.escape(n)}\s*\(", path.read_text())}
        if names:
            found[rel] = names
    unexpected = {f: sorted(n - ALLOWED.get(f, set())) for f, n in found.items() if n - ALLOWED.get(f, set())}
    assert not unexpected, f"code-evaluating calls outside the allow-list: {unexpected}"


def test_the_scan_catches_what_it_looks_for(tmp_path):
    """The scanner itself can fail: a file with each pattern is flagged, comments are not."""
    bad = tmp_path / "bad.py"
    bad.write_text("import sympy\n# eval(x) in a comment is fine\n'exec(x) in a string is fine'\n"
                   "a = sympy.sympify(text)\nb = eval(text)\nc = sympy.S('x')\nd = re.compile('x')\n"
                   "e = compile(text, 'f', 'exec')\nfrom sympy.parsing.sympy_parser import parse_expr\n")
    names = [name for name, _ in _python_hits(bad)]
    assert names == ["sympify", "eval", "S(", "compile", "parse_expr"]


# --- payloads ---------------------------------------------------------------------------

MARKER = "memsym_pwned_marker"


def payloads(marker: Path) -> list[str]:
    """Code-shaped text; each would create ``marker`` (or print a marker) if evaluated anywhere."""
    touch = f"__import__('os').system('touch {marker}')"
    return [
        touch,
        f"exec(\"open('{marker}', 'w').close()\")",
        f"eval(\"{touch}\")",
        f"lambda: {touch}",
        f"1e9 + {touch}",
        f"{{{{ cycler.__init__.__globals__.os.system('touch {marker}') }}}}",  # Jinja template injection
        f"x\"\"\"\n{touch}\n\"\"\"",  # breaks out of a docstring in generated code
        f"x'\n{touch}\n#",  # breaks out of a string or comment line
        f"x\"\n{touch}\n#",
        f"{{0.__class__.__mro__}} {MARKER}",  # str.format injection
        f"Symbol('{MARKER}') + {touch}",
    ]


def install_watch(monkeypatch) -> list[tuple[str, str]]:
    """Spies on eval/exec/compile/os.system: each call whose text holds the marker is recorded
    (and os.system is not run). Parsing to a tree (``ast.parse``) runs nothing and is let through."""
    seen: list[tuple[str, str]] = []

    def spy(label, real):
        def wrapper(source, *args, **kwargs):
            text = source.decode(errors="replace") if isinstance(source, bytes) else str(source)
            flags = args[2] if len(args) > 2 else kwargs.get("flags", 0)
            parse_only = label == "compile" and flags & ast.PyCF_ONLY_AST
            if MARKER in text and not parse_only:
                seen.append((label, text[:200]))
                if label == "os.system":
                    return 0
            return real(source, *args, **kwargs)
        return wrapper

    for name in ("eval", "exec", "compile"):
        monkeypatch.setattr(builtins, name, spy(name, getattr(builtins, name)))
    monkeypatch.setattr(os, "system", spy("os.system", os.system))
    return seen


@pytest.fixture()
def watch(monkeypatch, tmp_path):
    """Payload runs in a scratch folder; afterwards nothing may have been evaluated or created."""
    seen = install_watch(monkeypatch)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    marker = tmp_path / MARKER
    yield marker, seen
    assert not marker.exists(), "a payload was executed"
    assert not seen, f"text holding a payload reached a code evaluator: {seen}"


def test_the_watch_sees_an_evaluation(monkeypatch, tmp_path):
    """The detector can fail: sympify of a payload is caught at eval and at os.system."""
    import sympy

    seen = install_watch(monkeypatch)
    marker = tmp_path / MARKER
    sympy.sympify(payloads(marker)[0])
    assert {"eval", "os.system"} <= {label for label, _ in seen}
    assert not marker.exists()


def invoke(name: str, argv: list[str]):
    result = CliRunner().invoke(cli.cli, [name, *argv], prog_name="memsym")
    assert result.exception is None or isinstance(result.exception, SystemExit), (name, argv, result.exc_info)
    assert result.exit_code in (0, 2), (name, argv, result.output)
    return result


def examples(command: click.Command) -> list[list[str]]:
    """The argument lists of the ``memsym NAME ...`` example lines in the command's help."""
    lines = [line.strip() for line in (command.help or "").splitlines()]
    call = f"memsym {command.name}"
    operators = {">", ">>", "<", "|", "&&", "||", ";", "2>", "&"}  # cut at a shell redirection or pipe
    out = []
    for line in lines:
        if line == call or line.startswith(call + " "):
            words = shlex.split(line)[2:]
            out.append(words[:next((i for i, w in enumerate(words) if w in operators), len(words))])
    return out


def baseline(command: click.Command) -> list[str]:
    """A command line that succeeds: the first example that runs here (with its model swapped
    for a small one where that still runs, to keep the many payload runs fast), else ``--model gpt2``."""
    def runs(argv: list[str]) -> bool:
        return CliRunner().invoke(cli.cli, [command.name, *argv], prog_name="memsym").exit_code == 0

    for argv in examples(command):
        if "--model" in argv[:-1]:
            small = list(argv)
            small[small.index("--model") + 1] = "qwen3-0.6b"
            if runs(small):
                return small
        if runs(argv):
            return argv
    return ["--model", "gpt2"] if any(p.name == "model_id" for p in command.params) else []


def _value_options(command: click.Command) -> list[click.Option]:
    return [p for p in command.params if isinstance(p, click.Option) and not p.is_flag and not p.count]


def with_value(argv: list[str], option: click.Option, value: str) -> list[str]:
    """``argv`` with ``option`` set to ``value`` (replacing its value if present)."""
    out = list(argv)
    for i, token in enumerate(out[:-1]):
        if token in option.opts:
            out[i + 1] = value
            return out
    return out + [option.opts[0], value]


def positional_indices(command: click.Command, argv: list[str]) -> list[int]:
    """Indices of the positional tokens of ``argv`` (not options, not option values)."""
    takes_value = {o for p in _value_options(command) for o in p.opts}
    out, skip = [], False
    for i, token in enumerate(argv):
        if skip:
            skip = False
        elif token.startswith("-"):
            skip = token in takes_value
        else:
            out.append(i)
    return out


def string_inputs(command: click.Command) -> list[click.Parameter]:
    """Parameters that take text: strings, paths, choices (numbers are parsed by click types)."""
    numeric = (click.types.IntParamType, click.types.FloatParamType, click.types.BoolParamType)
    return [p for p in command.params if not isinstance(p.type, numeric) and not getattr(p, "is_flag", False)]


@pytest.mark.parametrize("name", sorted(cli.cli.commands))
def test_payloads_in_every_text_flag_and_argument_are_inert(name, watch):
    marker, _ = watch
    command = cli.cli.commands[name]
    base = baseline(command)
    params = string_inputs(command)
    every = payloads(marker)
    for param in params:
        # a choice is matched against its list by click: two payloads show it; free text gets one
        # of each shape (call, exec, template, format string; break-outs: the generated-code test)
        for text in every[:2] if isinstance(param.type, click.Choice) else [every[i] for i in (0, 1, 5, 9)]:
            if isinstance(param, click.Option):
                invoke(name, with_value(base, param, text))
                continue
            for i in positional_indices(command, base) or [len(base)]:
                invoke(name, [*base[:i], text, *base[i + 1:]])


TINY = {"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
        "intermediate_size": 128, "vocab_size": 256, "num_hidden_layers": 2, "rope_scaling": {"type": "linear"},
        "quantization_config": {"quant_method": "fp8"}, "torch_dtype": "bfloat16", "architectures": ["X"]}


def test_payloads_in_every_config_field_are_inert(watch, tmp_path):
    marker, _ = watch
    config_path = tmp_path / "config.json"
    shapes = [payloads(marker)[i] for i in (0, 1, 5, 9)]  # call, exec, template, format string
    for key in [*TINY, "head_dim", "sliding_window", "layer_types", "hidden_act"]:
        for text in shapes:
            for value in (text, [text], {"quant_method": text}):
                config_path.write_text(json.dumps({**TINY, key: value}))
                invoke("estimate", ["--config", str(config_path)])
    for text in payloads(marker):
        config_path.write_text(json.dumps({**TINY, text: text}))  # a payload as a key
        invoke("estimate", ["--config", str(config_path), "--json"])


def test_payloads_in_safetensors_headers_are_inert(watch, tmp_path, safetensors_writer):
    marker, _ = watch
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(TINY))
    for text in payloads(marker):
        for header in ({text: {"dtype": "BF16", "shape": [1], "data_offsets": [0, 2]}},
                       {"a": {"dtype": text, "shape": [1], "data_offsets": [0, 2]}},
                       {"a": {"dtype": "BF16", "shape": [text], "data_offsets": [0, 2]}},
                       {"__metadata__": {"format": text}, "a": {"dtype": "BF16", "shape": [1], "data_offsets": [0, 2]}}):
            safetensors_writer.raw(folder / "model.safetensors", header, 2)
            invoke("estimate", ["--checkpoint", str(folder), "--json"])
        (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": text}}))
        invoke("estimate", ["--checkpoint", str(folder)])
        (folder / "model.safetensors.index.json").unlink()


def _payload_folder(tmp_path: Path, text: str) -> Path | None:
    """A folder named by the payload (no '/' allowed in a file name), holding a good config."""
    folder = tmp_path / text.replace("/", "_")
    try:
        folder.mkdir()
    except OSError:
        return None
    (folder / "config.json").write_text(json.dumps(TINY))
    return folder


def _python_outputs(result, cwd: Path) -> list[str]:
    """Generated Python a command wrote (*.py: must parse) or printed (stdout, if it parses)."""
    out = []
    for path in cwd.glob("*.py"):
        text = path.read_text(errors="replace")
        ast.parse(text, str(path))  # a model's name must not break the generated module
        out.append(text)
    try:
        ast.parse(result.stdout)
    except (SyntaxError, ValueError):
        return out
    return out + [result.stdout] if "def " in result.stdout else out


@pytest.mark.parametrize("name", sorted(cli.cli.commands))
def test_payload_model_names_do_not_break_out_of_generated_code(name, watch, tmp_path):
    """A config in a folder named like code: the name reaches output (model name), never code."""
    marker, _ = watch
    command = cli.cli.commands[name]
    config_option = next((p for p in command.params if p.name == "config_path"), None)
    if config_option is None:
        return  # the command takes no config; nothing of a model's name reaches it
    base = [t for t in baseline(command)]
    if "--model" in base:
        i = base.index("--model")
        del base[i:i + 2]
    breakouts = [p for p in payloads(Path(MARKER)) if "\n" in p]  # plain text cannot end a string literal
    for text in payloads(Path(MARKER))[:1] + breakouts:  # relative: a folder name cannot hold '/'; cwd is tmp_path
        folder = _payload_folder(tmp_path, text)
        if folder is None:
            continue
        result = invoke(name, with_value(base, config_option, str(folder / "config.json")))
        sources = _python_outputs(result, tmp_path)
        if not sources:
            return  # the command generates no Python: a name cannot break out of code it does not write
        for source in sources:
            module = tmp_path / "generated_module.py"
            module.write_text(source)
            subprocess.run([sys.executable, str(module)], cwd=tmp_path, capture_output=True, timeout=60)
            assert not marker.exists(), f"generated code ran a payload from a model name ({name})"
