"""``memsym plot``: the memory terms stacked against seq_len (or batch_size), with a budget.

Terms come from one :func:`engine.sweep.sweep` over the x axis. For training only the
terms of the phase that peaks at each point are stacked (the others are 0 there), so the
stack's top is the total. The budget is drawn as a line and the largest value that fits
is marked where :func:`engine.solve.solve_budget` finds it (checked by substitution, so
it can fall between grid points). matplotlib is an optional extra: ``memsym[plot]``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy

from engine.errors import InfeasibleError, InputError
from engine.model import MemoryModel
from engine.numeric import TOTAL
from engine.sweep import FLAGS, sweep
from engine.units import format_bytes

FORMATS = ("png", "svg")
INSTALL_HINT = "memsym plot needs matplotlib: pip install 'memsym[plot]'"
GB = 10**9  # the y axis is in GB (10^9 bytes), as memsym prints sizes


@dataclass(frozen=True)
class PlotResult:
    path: str
    x: str
    budget_bytes: int | None
    largest: int | None  # the solved largest x that fits, None without a budget or when nothing fits
    note: str


def output_format(path: str, fmt: str | None) -> str:
    """``png`` or ``svg`` from ``--format`` or the file's suffix; anything else is an error."""
    fmt = (fmt or os.path.splitext(str(path))[1].lstrip(".")).lower()
    if fmt not in FORMATS:
        raise InputError(f"--format: unknown plot format {fmt or '(none)'!r} for {str(path)!r}; "
                         f"choose {' or '.join(FORMATS)}")
    return fmt


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise InputError(INSTALL_HINT) from None
    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def stacked_terms(mm: MemoryModel, outputs: dict[str, numpy.ndarray]) -> dict[str, numpy.ndarray]:
    """Top-level terms to stack; in training each is 0 where its phase is not the peak."""
    terms = {name: outputs[name] for name in mm.top_level}
    if not mm.phases:
        return terms
    sums = numpy.stack([sum(terms[n] for n in names) for names in mm.phases.values()])
    peak = numpy.argmax(sums, axis=0)
    phase_names = list(mm.phases.values())
    return {name: numpy.where(numpy.isin(peak, [i for i, names in enumerate(phase_names) if name in names]),
                              values, 0.0) for name, values in terms.items()}


def plot(mm: MemoryModel, x: str, axes: dict[str, tuple[int, ...]], path: str, fmt: str | None = None,
         budget=None, layout=None) -> PlotResult:
    """Draw the stacked terms of ``mm`` over ``axes[x]`` into ``path`` (PNG or SVG).

    ``axes`` gives every free variable's values; all but ``x`` hold one value. ``budget``
    (an :class:`engine.gpus.Budget`) adds the budget line and the solved largest ``x``.
    ``layout`` (an :class:`engine.layout.Layout`) is how ``--num-gpus`` was read, as ``estimate`` and
    ``solve`` read it: ``mm`` is then already built with its degrees and its terms are per GPU; the
    title names the reading. Only where the layout says so (or none is given) are several GPUs an
    even split of every term.
    """
    from engine.files import write_atomically

    fmt = output_format(path, fmt)
    plt = _pyplot()
    others = {name: values for name, values in axes.items() if name != x}
    if any(len(values) != 1 for values in others.values()):
        raise InputError(f"plot draws one axis ({FLAGS.get(x, x)}); give one value for "
                         f"{', '.join(FLAGS.get(n, n) for n in others)}")
    shown = mm
    even = budget is not None and budget.num_gpus > 1 and (layout is None or layout.even_split)
    if even:
        from engine.solve import sharded

        shown = sharded(mm, budget.num_gpus)
    per_gpu = budget.with_num_gpus(1) if budget is not None and not even else budget
    largest, note = _solve(mm, x, others, per_gpu)
    fixed = [f"{n}={v[0]:,}" for n, v in others.items()] + ([f"per GPU of {budget.num_gpus}"] if even else [])
    title = (f"{mm.name} ({mm.mode})" + "".join(", " + f for f in fixed) + "\n" + scenario_title(mm.inputs)
             + (f"\n({mm.inputs['profile_note']})" if mm.inputs.get("profile_note") else "")
             + (f"\n{layout.title}" if layout is not None and layout.title else "") + (f"\n{note}" if note else ""))
    figure = _figure(plt, shown, x, sweep(shown, axes), title, budget, largest)
    try:
        write_atomically(path, lambda tmp: figure.savefig(tmp, format=fmt), flag="--output")
    finally:
        plt.close(figure)
    said = "; ".join(text for text in (layout.title if layout is not None else None, note) if text)
    return PlotResult(str(path), x, budget.per_gpu_bytes if budget else None, largest, said)


def scenario_title(inputs: dict) -> str:
    """One line naming the profile, precision, quantization, KV dtype and layout: bytes per GPU."""
    width = (f"precision {inputs.get('precision')}" if inputs.get("mode") == "training"
             else f"KV {inputs.get('kv_dtype') or inputs.get('dtype')}")
    degrees = " x ".join(f"{k}={inputs.get(k) or 1}" for k in ("tp", "pp", "dp"))
    return (f"{inputs.get('profile', '?')}, {inputs.get('dtype')}, weights {inputs.get('weight_quant', 'none')}, "
            f"{width}, {degrees}, per GPU")


def _figure(plt, mm: MemoryModel, x: str, grid, title: str, budget, largest: int | None):
    xs = numpy.asarray(grid.axes[x], dtype=numpy.float64)
    flat = {name: array.reshape(len(xs)) for name, array in grid.outputs.items()}
    figure, ax = plt.subplots(figsize=(8, 5))
    stacks = stacked_terms(mm, flat)
    ax.stackplot(xs, *(v / GB for v in stacks.values()), labels=list(stacks), alpha=0.8)
    ax.plot(xs, flat[TOTAL] / GB, color="black", linewidth=1, label="total")
    if budget is not None:
        ax.axhline(budget.per_gpu_bytes / GB, color="red", linestyle="--",
                   label=f"budget {format_bytes(budget.per_gpu_bytes)}")
    if largest is not None and xs[0] <= largest <= xs[-1]:
        ax.axvline(largest, color="red", linestyle=":", label=f"largest {x} that fits: {largest:,}")
    if len(xs) > 2 and xs[-1] / xs[0] >= 100:
        ax.set_xscale("log", base=2)
    ax.set_title(title)
    ax.set_xlabel(x)
    ax.set_ylabel("memory (GB = 10^9 bytes)")
    ax.legend(loc="upper left", fontsize="small")
    figure.tight_layout()
    return figure


def _solve(mm: MemoryModel, x: str, others: dict[str, tuple[int, ...]], budget) -> tuple[int | None, str]:
    """The largest ``x`` within the budget (engine/solve.py), or a note saying why there is none."""
    if budget is None:
        return None, ""
    from engine.solve import solve_budget

    try:
        solution = solve_budget(mm, x, budget, **{n: v[0] for n, v in others.items()})
    except InfeasibleError as exc:
        return None, f"nothing fits: {exc}"
    return solution.value, f"largest {x} that fits: {solution.value:,} (solved exactly)"


def plot_grid(output: str, model: str | None = None, config: str | None = None, *, fmt: str | None = None,
              budget=None, gpu=None, num_gpus: int | None = None, utilization=None, **grid) -> PlotResult:
    """``memsym plot``: the grid of :func:`engine.sweep.grid_model` drawn along its one ranged axis,
    against the budget of ``budget``/``gpu`` when one is given."""
    from engine.sweep import grid_model

    output_format(output, fmt)  # a bad format or suffix fails before any work
    layout = None
    if num_gpus is not None and num_gpus > 1:  # the layout estimate and solve read (engine/layout.py)
        from engine.layout import read_num_gpus
        from engine.registry import load_spec

        knobs = {k: v for k, v in grid.items() if k not in ("batch_size", "seq_len")}
        layout = read_num_gpus(load_spec(model, config), knobs, num_gpus)
        grid = {**grid, **layout.knobs}
    axes, mm = grid_model(model, config, **grid)
    ranged = [name for name, values in axes.items() if len(values) > 1]
    if len(ranged) != 1:
        raise InputError("give a list or range for exactly one of --seq-len and --batch-size")
    limits = None
    if budget is not None or gpu is not None:
        from engine.gpus import make_budget

        limits = make_budget(budget, gpu, 1 if num_gpus is None else num_gpus, utilization)
    return plot(mm, ranged[0], axes, output, fmt, limits, layout)
