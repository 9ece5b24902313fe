"""The commands that write a model's formulas out: ``latex``, ``codegen``, ``sweep``, ``plot``
and ``html`` (docs/emit.md). Each parses, makes one library call and writes its output, as
every command of cli.py does; cli.py adds them to its group. The engine (and SymPy) is
imported inside each command, so ``memsym --help`` starts fast.
"""

from __future__ import annotations

import click

from engine import report
from engine.cli_options import (GENERIC, SectionedCommand, budget_options, emit, free_option, given, grid_options,
                                json_option, model_options, option, scenario_options, symbolic_option)


@click.command(cls=SectionedCommand)
@model_options
@scenario_options
@symbolic_option(GENERIC)
@option("--values", "with_values", is_flag=True,
        help="Add the model's values and the exact bytes at --batch-size and --seq-len.")
@option("--standalone", is_flag=True, help="A complete document (amsmath only) that pdflatex compiles.")
@option("--format", "fmt", type=click.Choice(("tex", "markdown")), default="tex", show_default=True,
        help="LaTeX, or Markdown with $$-math (GitHub, Jupyter).")
@free_option
def latex(standalone, fmt, **kw):
    """The memory terms as LaTeX: an align* block with one named row per term and the
    total (training: each phase and their max), what each term holds and its source, and
    a legend of the symbols (LaTeX name, meaning, unit). Formulas keep b and s free.

    \b
    Examples:
      memsym latex --model qwen3-0.6b --values
      memsym latex --model llama-3.1-8b --mode training --standalone > memory.tex
      memsym latex --symbolic --format markdown
    """
    from engine.questions import document_model
    from engine.render import render_latex, render_markdown

    if standalone and fmt != "tex":
        raise click.UsageError("--standalone makes a LaTeX document; leave it out with --format markdown")
    mm, values = document_model(**given(kw))
    if fmt == "markdown":
        click.echo(render_markdown(mm, values=values), nl=False)
    else:
        click.echo(render_latex(mm, values=values, standalone=standalone), nl=False)


@click.command(cls=SectionedCommand)
@model_options
@scenario_options
@option("-o", "--output", required=True, metavar="FILE.py", help="Where to write the module.")
@free_option
def codegen(output, **kw):
    """Write a standalone Python module that imports only NumPy: one function per term
    and total_bytes(...), each with its formula and source in the docstring. batch_size
    and seq_len stay arguments unless given.

    \b
    Example:
      memsym codegen --model qwen3-0.6b -o qwen3_memory.py
      memsym codegen --model llama-3.1-70b --mode training --tp 8 --free tp -o llama_tp.py
      python -c "import qwen3_memory as m; print(m.total_bytes(batch_size=8, seq_len=4096))"
    """
    from engine.files import check_output, shown_path
    from engine.numeric import variables_of, write_module
    from engine.questions import codegen_model

    check_output(output, "-o")  # a device, FIFO, symlink or folder fails before any work
    mm = codegen_model(**given(kw))
    write_module(mm, output)
    click.echo(f"wrote {shown_path(output)}: {len(mm.terms) + 1} functions of ({', '.join(variables_of(mm))})")


@click.command(cls=SectionedCommand)
@model_options
@grid_options
@option("--csv", "as_csv", is_flag=True, help="Comma-separated values, one row per point.")
@json_option
def sweep(as_csv, as_json, **kw):
    """Bytes of the total and every term over a grid of batch sizes and sequence lengths,
    through the compiled NumPy function (exact integers below 2^53 bytes).

    \b
    Examples:
      memsym sweep --model qwen3-0.6b --batch-size 1,2,4,8 --seq-len 1024:131072:x2
      memsym sweep --model llama-3.1-8b --seq-len 512:8192:+512 --csv > grid.csv
    """
    from engine.sweep import sweep as run_sweep, sweep_model

    if as_csv and as_json:
        raise click.UsageError("give one of --csv and --json")
    axes, mm = sweep_model(**given(kw))
    result = run_sweep(mm, axes)
    emit(result, as_json, None if as_json else report.format_sweep(mm, result, as_csv))


@click.command(cls=SectionedCommand)
@model_options
@grid_options
@budget_options
@option("-o", "--output", required=True, metavar="FILE", help="FILE.png or FILE.svg.")
@option("--format", "fmt", default=None, metavar="png|svg", help="Image format  [default: from FILE]")
def plot(output, **kw):
    """Draw the memory terms stacked against seq_len or batch_size (whichever is given as
    a list or range), with the budget as a line and the largest value that fits marked
    (solved exactly). Needs matplotlib: pip install 'memsym[plot]'.

    \b
    Example:
      memsym plot --model qwen3-0.6b --batch-size 8 --seq-len 1024:131072:x2 --budget 24GB -o kv.png
    """
    from engine.files import check_output, shown_path
    from engine.plot import plot_grid

    check_output(output, "--output")
    result = plot_grid(output, **given(kw))
    click.echo(f"wrote {shown_path(result.path)}" + (f": {result.note}" if result.note else ""))


@click.command(cls=SectionedCommand)
@model_options
@scenario_options
@option("-o", "--output", required=True, metavar="FILE.html", help="Where to write the page.")
def html(output, **kw):
    """Write a self-contained HTML calculator page: the terms against a GPU, what fits, the formulas.

    \b
    Example:
      memsym html --model qwen3-0.6b -o qwen3.html
    """
    from engine.html import write_page
    click.echo(report.format_page(write_page(output, **given(kw))))
