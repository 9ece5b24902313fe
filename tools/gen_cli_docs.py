"""Generate docs/cli.md from the real ``--help`` output of memsym and every command.

Usage (from the repository root)::

    python tools/gen_cli_docs.py           # rewrite docs/cli.md
    python tools/gen_cli_docs.py --check   # exit 1 if docs/cli.md is out of date

``--check`` and the test compare :func:`normalized` texts, so the file generated with one
click 8.x passes under another (they differ only in how they shorten and wrap help).

Commands are read from ``cli.cli`` when this runs, so a new command appears on the next run;
tests/test_cli_contract.py fails while docs/cli.md differs from what this prints. Help is
rendered at a fixed width so the file does not depend on the terminal it was made in.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "docs" / "cli.md"
HELP_WIDTH = 88  # columns; fixed so the output is the same on every machine

HEADER = """\
# memsym command-line reference

Generated from the real `--help` output of every command by `python tools/gen_cli_docs.py`;
do not edit by hand (tests/test_cli_contract.py checks that this file matches).
Every command exits with status 0 on success and 2 on bad input, with one line on stderr
(`memsym: error: ...`) and, when `--json` was given, `{"error": "..."}` on stdout.
"""


def help_text(*args: str) -> str:
    """``memsym ARGS --help`` as a user sees it, at ``HELP_WIDTH`` columns."""
    from click.testing import CliRunner

    import cli

    result = CliRunner().invoke(cli.cli, [*args, "--help"], prog_name="memsym", terminal_width=HELP_WIDTH)
    if result.exit_code != 0:
        raise SystemExit(f"memsym {' '.join(args)} --help exited {result.exit_code}: {result.output}")
    return result.stdout.rstrip() + "\n"


def normalized(text: str) -> str:
    """``text`` without what click 8.x lays out differently from version to version.

    Command lists keep each command's name only: click shortens the one-line summary by
    its own rule (click 8.1 and 8.4 cut "... (e.g. where ..." at "e.g.", 8.5 at the width),
    and each command's full help has its own section. All other whitespace runs (line
    wrapping, column padding) count as one space. Option names, metavars, help words and
    ``[default: ...]`` annotations still have to agree.
    """
    kept, in_commands = [], False
    for line in text.splitlines():
        if line.strip() in ("Commands:", "Commands"):
            in_commands = True
        elif in_commands and line.startswith("  ") and line.strip():
            line = line.split()[0]
        else:
            in_commands = False
        kept.append(line)
    return " ".join("\n".join(kept).split())


def render() -> str:
    """The whole of docs/cli.md."""
    import cli

    names = sorted(cli.cli.commands)
    parts = [HEADER, "Commands: " + ", ".join(f"[`{n}`](#memsym-{n})" for n in names) + ".\n",
             "## memsym\n", "```text\n" + help_text() + "```\n"]
    for name in names:
        parts += [f"## memsym {name}\n", "```text\n" + help_text(name) + "```\n"]
    return "\n".join(parts)


def main(argv: list[str]) -> int:
    sys.path.insert(0, str(ROOT))
    text = render()
    if "--check" in argv:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else ""
        if normalized(current) != normalized(text):
            print(f"{OUTPUT.relative_to(ROOT)} is out of date: run python tools/gen_cli_docs.py", file=sys.stderr)
            return 1
        return 0
    OUTPUT.parent.mkdir(exist_ok=True)
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT.relative_to(ROOT)} ({len(text.splitlines())} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
