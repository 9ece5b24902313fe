"""Plain-text reports of engine results, for the CLI's human output (``--json`` aside).

Each function takes what one engine call returned and gives finished lines: exact bytes
beside GB (10^9) and GiB (2^30), never "MB" for MiB.
"""

from __future__ import annotations

import sys

from engine.report_serving import format_serve, format_serving_answer, vllm_startup_lines  # noqa: F401
from engine.units import format_bytes

FULL_FRACTION = 0.95  # plan: a layout above this share of the budget is flagged "N % full"


def show(expr, latex: bool) -> str:
    """An expression as SymPy's plain string, or as LaTeX with the project's short names."""
    import sympy

    from engine.render import group_digits
    from formulas.symbols import latex_names

    return group_digits(sympy.latex(expr, symbol_names=latex_names())) if latex else sympy.sstr(expr)


DEGREES = ("tp", "pp", "dp", "ep", "cp")


def layout_text(inputs: dict) -> str:
    """``tp=2 x pp=1 x dp=1 (ep=1, cp=1) = 2 GPUs``: the parallel layout a model was built for."""
    degree = {k: inputs.get(k) or 1 for k in DEGREES}
    gpus = degree["tp"] * degree["pp"] * degree["dp"] * degree["cp"]
    split = (inputs.get("budget") or {}).get("num_gpus", 1)
    if gpus == 1 and split > 1:
        return f"even split over {split} GPUs (every term / {split}, no tp/pp layout)"
    sp = ", sequence parallel" if inputs.get("sequence_parallel") else ""
    return (f"tp={degree['tp']} x pp={degree['pp']} x dp={degree['dp']} (ep={degree['ep']}, cp={degree['cp']}"
            f"{sp}) = {gpus} GPU{'s' if gpus > 1 else ''}")


def precision_text(inputs: dict) -> str:
    """Weights, quantization, KV cache and (training) the bytes-per-parameter convention."""
    parts = [f"dtype {inputs['dtype']}"]
    if inputs.get("weights_stored"):
        parts.append(f"weights as the GGUF stores them ({inputs['weights_stored']})")
    elif inputs.get("weight_quant", "none") not in ("none", None):
        source = inputs.get("weight_quant_source")
        parts.append(f"weights quantized {inputs['weight_quant']}" + (f" (from {source})" if source else ""))
    else:
        parts.append("weights unquantized")
    if inputs.get("mode") == "training" and inputs.get("precision"):
        parts.append(f"precision {inputs['precision']} (training bytes per parameter)")
    else:
        kv = inputs.get("kv_dtype") or inputs.get("kv_cache_dtype") or inputs["dtype"]
        paged = f", paged blocks of {inputs['block_size']}" if inputs.get("block_size") else ""
        parts.append(f"KV cache {kv}{paged}")
    return ", ".join(parts)


def context_warnings(inputs: dict, solved=None) -> list[str]:
    from engine.api import context_warnings as warnings  # SymPy: not at --help time

    return warnings(inputs, solved)


def profile_text(inputs: dict) -> str:
    """``profile NAME``, and why when the default fell back from transformers (engine/profiles/default.py)."""
    note = f" ({inputs['profile_note']})" if inputs.get("profile_note") else ""
    return f"profile {inputs.get('profile', '?')}{note}"


def scenario_lines(inputs: dict) -> list[str]:
    """The header every report shares: profile, precision, layout, per GPU, and how spellings were read."""
    lines = [f"{profile_text(inputs)}, {precision_text(inputs)}",
             f"layout {layout_text(inputs)}; bytes are per GPU (the most loaded rank)"]
    for flag, note in (inputs.get("read_as") or {}).items():
        lines.append(f"read as: {flag} {note}")
    return lines


def format_checkpoint(checked) -> str:
    """The checkpoint's stored bytes per dtype, beside the formula's weights."""
    c = checked.comparison
    lines = ["", f"checkpoint {c['directory']}: {len(c['files'])} file(s), {c['tensors']} tensors"]
    for dtype, value in c["bytes_by_dtype"].items():
        lines.append(f"{'  ' + dtype:<28} {value:>20,}  {format_bytes(value)}")
    lines.append(f"{'checkpoint_bytes':<28} {c['checkpoint_bytes']:>20,}  {format_bytes(c['checkpoint_bytes'])}")
    lines.append(f"{'formula weights':<28} {c['formula_weights_bytes']:>20,}")
    verdict = "matches the formula" if c["matches_formula"] else "differs from the formula"
    lines.append(f"{'difference':<28} {c['difference_bytes']:>+20,}  {verdict}")
    for extra in c["not_in_formula"]:
        lines.append(f"  not in the formula: {extra['what']}: {extra['tensors']} tensors, {extra['bytes']:,} bytes"
                     f" (e.g. {extra['examples'][0]})")
    if checked.hint:
        lines.append(f"  hint: {checked.hint}")
    return "\n".join(lines)


def format_estimate(result) -> str:
    """A table of terms with exact bytes, GB and GiB."""
    mm, ev = result.model, result.evaluation
    inputs = mm.inputs
    head = (f"{result.spec.name} ({result.spec.architecture}), {mm.mode}, batch_size={inputs['batch_size']}, "
            f"seq_len={inputs['seq_len']}, dtype={inputs['dtype']}")
    lines = [head, *scenario_lines(inputs), *context_warnings(inputs),
             f"parameters: {result.counts['parameters']:,}"
             + (f" ({result.counts['active_parameters']:,} active per token)" if result.spec.is_moe else ""), ""]
    if "convention" in inputs:  # the profile's bytes per parameter, in words
        lines.insert(2, f"profile {mm.profile}: {inputs['convention']}")
    lines.append(f"{'term':<28} {'bytes':>20}  size")
    for name in ev.terms:  # the model's term order (a cached estimate's model holds no expressions)
        depth = name.count("/")
        label = ("  " * depth) + name.rsplit("/", 1)[-1]
        if name == "activations" and mm.mode == "inference":
            label += " (peak)"
        value = ev.terms[name]
        lines.append(f"{label:<28} {value:>20,}  {format_bytes(value)}")
    for phase, value in ev.phases.items():
        mark = "  <- peak" if phase == ev.peak_phase else ""
        lines.append(f"{'phase ' + phase:<28} {value:>20,}  {format_bytes(value)}{mark}")
    lines.append(f"{'total':<28} {ev.total_bytes:>20,}  {format_bytes(ev.total_bytes)}")
    lines += reserved_lines(result.to_dict())
    lines += [f"note: {note}" for note in inputs.get("notes", ())]
    if ev.host:
        lines += ["", "offloaded to host memory (not in the GPU total):"]
        for name, value in ev.host.items():
            lines.append(f"{'  ' + name:<28} {value:>20,}  {format_bytes(value)}")
    return "\n".join(lines)


def reserved_lines(data: dict) -> list[str]:
    """``reserved_bytes`` (max_memory_reserved) and what lies outside both totals, where modelled."""
    if "reserved_bytes" not in data:
        return []
    value = data["reserved_bytes"]
    lines = [f"{'reserved':<28} {value:>20,}  {format_bytes(value)}  (max_memory_reserved, phase "
             f"{data['reserved_phase']})", f"  rule: {data['reserved_rule']}"]
    for name, value in data["outside_terms"].items():
        lines.append(f"{'outside ' + name:<28} {value:>20,}  {format_bytes(value)}  (in neither total: --reserve)")
    return lines


def format_solution(name: str, solution, limits, show_formula: bool, latex: bool, layout=None) -> str:
    """The answer, its certificate (totals at the value and its neighbour) and the budget."""
    s = solution
    device = f"{limits.gpu_name} " if limits.gpu_name else ""
    even = limits.num_gpus > 1 and (layout is None or layout.even_split)
    split = f"; the model split evenly over {limits.num_gpus} GPUs" if even else ""
    lines = [f"{name}: {'smallest' if s.smallest else 'largest'} {s.variable} that fits",
             *scenario_lines(s.inputs),
             f"budget per GPU: {s.budget_bytes:,} B ({format_bytes(s.budget_bytes)}) = {limits.utilization} x "
             f"{device}{limits.device_bytes:,} B{split}"]
    if limits.reading:
        lines.append(f"read as: --budget {limits.reading}")
    if limits.estimate:
        lines.append(f"estimate: {limits.estimate}")
    if layout is not None and layout.note:
        lines.append(f"read as: {layout.note}")
    lines += [f"{s.variable} = {s.value:,}", *context_warnings(s.inputs, (s.variable, s.value))]
    neighbour = s.value - 1 if s.smallest else s.value + 1
    if s.smallest and getattr(s, "neighbour", None) is not None:
        neighbour = s.neighbour  # tp: the previous degree that divides the heads
    config = s.inputs.get("configuration")
    if config:  # training: the search's configuration; its neighbour has one data-parallel rank less
        lines.append("  configuration: " + ", ".join(f"{k}={v}" for k, v in config.items()))
        neighbour = config["tp"] * config["pp"] * (config["dp"] - 1)
    lines.append(f"  total per GPU at {s.value:,}: {s.total_at_value:>20,} B  fits")
    if s.total_at_neighbour is not None:
        lines.append(f"  total per GPU at {neighbour:,}: {s.total_at_neighbour:>20,} B  exceeds")
    lines.append(f"  method: {s.method.replace('_', ' ')}, checked by substitution")
    if show_formula and s.closed_form is not None:
        lines.append(f"  closed form: {s.variable} = {show(s.closed_form, latex)}")
    return "\n".join(lines)


def format_answer(answer, show_formula: bool = False, latex: bool = False) -> str:
    """``memsym solve``: a checked solution, or the closed form of ``--symbolic``."""
    from engine.questions import ClosedFormAnswer

    serving = sys.modules.get("engine.serving_solve")  # not imported (SymPy): the answer is not a ServingAnswer
    if isinstance(answer, ClosedFormAnswer):
        return format_closed_form(answer, latex)
    if serving is not None and isinstance(answer, serving.ServingAnswer):
        return format_serving_answer(answer)
    text = format_solution(answer.model, answer.solution, answer.limits, show_formula, latex, answer.layout)
    profile = answer.solution.inputs.get("profile", "megatron")
    if answer.solution.variable in ("concurrency", "seq_len", "batch_size") and answer.solution.inputs.get("mode") != "training":
        return text + (f"\nprofile: {profile} (bare tensors: weights, KV cache and the listed terms; nothing for the "
                       "CUDA context, a profile run or the sampler unless --reserve says so)")
    return text + f"\nprofile: {profile}"


def format_closed_form(answer, latex: bool) -> str:
    """The closed form of a largest size, with each branch's coefficients."""
    from formulas.symbols import symbol

    target, branches = answer.variable, answer.branches
    x = show(symbol(answer.solved), latex)
    lines = [f"largest {target} with total <= budget_bytes (M), generic dense GQA decoder.",
             f"The total is the largest of {len(branches)} branches, each C0 + C1*{x} + C2*{x}**2:"]
    for i, (a, b, c) in enumerate(branches, 1):
        lines.append(f"  branch {i}:")
        lines += [f"    {label} = {show(value, latex)}" for label, value in (("C0", c), ("C1", b), ("C2", a))]
    lines.append(f"Each branch fits while {x} <= (M - C0)/C1 (C2 = 0), or the positive root of "
                 f"C2*{x}**2 + C1*{x} + C0 = M;")
    lines.append(f"{target} = {show(answer.closed_form, latex)}")
    return "\n".join(lines)


def format_models(rows: list[dict]) -> str:
    lines = [f"{'id':<20} {'hf repo':<36} {'architecture':<24} {'parameters':>18}"]
    lines += [f"{r['id']:<20} {r['hf_repo']:<36} {r['architecture']:<24} {r['parameters']:>18,}" for r in rows]
    return "\n".join(lines)


def format_gpus(rows: list[dict]) -> str:
    lines = [f"{'name':<12} {'bytes':>17}  {'size':<27} datasheet"]
    lines += [f"{g['name']:<12} {g['memory_bytes']:>17,}{'*' if g.get('estimate') else ' '} "
              f"{format_bytes(g['memory_bytes']):<27} {g['datasheet_memory']}" for g in rows]
    if any(g.get("estimate") for g in rows):
        lines.append("* an estimate (no public log of the total found): `memsym gpus --json` gives each one's rule "
                     "and uncertainty; give the measured total with --gpu-memory SIZE")
    return "\n".join(lines)


def format_any_estimate(result) -> str:
    """``memsym estimate``: the table of terms, and the checkpoint's bytes when one was read."""
    from engine.api import CheckpointEstimate

    if isinstance(result, CheckpointEstimate):
        return format_estimate(result.estimate) + "\n" + format_checkpoint(result)
    return format_estimate(result)


def format_plan(answer) -> str:
    best, budget = answer.plan.best, answer.budget_bytes
    lines = [f"{answer.model}: fewest GPUs with at most {budget:,} B per GPU ({format_bytes(budget)})",
             *scenario_lines({**answer.inputs, **{k: getattr(best, k) for k in ("tp", "pp", "dp")}}),
             f"best: {best.num_gpus} GPUs (tp={best.tp}, pp={best.pp}, dp={best.dp}, zero={best.zero}), "
             f"{best.per_gpu_bytes:,} B per GPU",
             *([f"estimate: {answer.inputs['gpu_memory_estimate']}"] if answer.inputs.get("gpu_memory_estimate") else []),
             f"{'gpus':>6} {'tp':>4} {'pp':>4} {'dp':>6} {'zero':>4} {'per-GPU bytes':>20}  fits"]
    for c in sorted(answer.plan.tried, key=lambda c: (not c.fits, c.num_gpus, c.tp, c.pp, c.zero)):
        mark = "yes" if c.fits else "no (at the largest dp)"
        if c.fits and c.per_gpu_bytes > FULL_FRACTION * budget:
            mark += f", {100 * c.per_gpu_bytes / budget:.1f} % full"
        lines.append(f"{c.num_gpus:>6} {c.tp:>4} {c.pp:>4} {c.dp:>6} {c.zero:>4} {c.per_gpu_bytes:>20,}  {mark}")
    profile = answer.inputs.get("profile", "megatron")
    reserve = answer.inputs.get("reserve_bytes", 0)
    lines.insert(2, f"counted (profile {profile}): the profile's terms (weights, gradients, optimizer state, activations, "
                 f"KV cache) and --reserve {reserve:,} B per GPU; not counted: the CUDA context, NCCL and "
                 "framework workspaces, allocator fragmentation (give them with --reserve): a layout "
                 f"over {100 * FULL_FRACTION:.0f} % full leaves little for them")
    return "\n".join(lines)


def _product(row, latex: bool) -> str:
    r"""``coefficient*monomial``; in LaTeX a thin space instead of ``*`` and ``\left( \right)``."""
    coefficient, monomial = show(row.coefficient, latex), show(row.monomial, latex)
    if row.monomial == 1:
        return coefficient
    if row.coefficient == 1:
        return monomial
    times, opening, closing = (r" \, ", r"\left(", r"\right)") if latex else ("*", "(", ")")
    if row.coefficient.is_Add:
        return f"{opening}{coefficient}{closing}{times}{monomial}"
    return f"{coefficient}{times}{monomial}"


def format_formula(answer, latex: bool) -> str:
    """The collected total, then each coefficient with what it costs and which terms pay it."""
    form = answer.form
    lines = [f"{answer.model}: total = " + " + ".join(_product(r, latex) for r in form.rows)]
    if answer.model != "symbolic":  # a model's formula names its profile (--symbolic's is the published one)
        lines.insert(0, profile_text(answer.inputs))
    for r in form.rows:
        payers = f" ({', '.join(r.terms)})" if r.terms else ""
        lines.append(f"\n[{show(r.monomial, latex)}] {r.meaning}{payers}:\n    {show(r.coefficient, latex)}")
        for branch, sub in r.branches:
            lines.append(f"  peak branch {branch}: " + " + ".join(_product(b, latex) for b in sub.rows))
    return "\n".join(lines)


def format_diff(answer, latex: bool) -> str:
    from engine.analysis import as_decimal

    d, name, variable = answer.derivative, answer.model, answer.variable
    if d.value is None:
        lines = [f"{name}: d total / d {variable} = one of (the branch of the peak that is active):"]
        return "\n".join(lines + [f"  {show(b, latex)}" for b in d.branches])
    at = ", ".join(f"{k}={v}" for k, v in answer.point.items())
    lines = [f"{name}: d total / d {variable} = {show(d.expression, latex)}  (the branch active at {at})",
             f"  at {at}: {as_decimal(d.value, 12)} bytes per unit of {variable} (exact: {d.value})"]
    if d.finite_difference is not None:
        lines.append(f"  total({variable}+1) - total({variable}) = {d.finite_difference:,} bytes")
    return "\n".join(lines)


def format_sensitivity(answer) -> str:
    from engine.analysis import as_decimal

    inputs = answer.inputs
    lines = [f"{answer.model}: total {as_decimal(answer.total, 30)} bytes at batch_size={inputs['batch_size']}, "
             f"seq_len={inputs['seq_len']}", *scenario_lines(inputs),
             f"{'symbol':<24} {'value':>14} {'d total / d symbol':>22} {'elasticity':>12}"]
    lines += [f"{r.symbol:<24} {as_decimal(r.value, 12):>14} {as_decimal(r.derivative, 12):>22} "
              f"{as_decimal(r.elasticity):>12}" for r in answer.rows]
    return "\n".join(lines)


def format_crossover(answer, latex: bool) -> str:
    c, name = answer.crossover, answer.model
    a, b, variable = c.term_a, c.term_b, c.variable
    if c.value is None:
        return f"{name}: {a} >= {b} from {variable} = {show(c.closed_form, latex)}"
    lines = [f"{name}: {a} >= {b} from {variable} = {c.value:,}",
             f"  at {c.value:,}: {a} {c.a_at_value:,} B, {b} {c.b_at_value:,} B"]
    if c.a_before is not None:
        lines.append(f"  at {c.value - 1:,}: {a} {c.a_before:,} B, {b} {c.b_before:,} B")
    if c.closed_form is not None:
        lines.append(f"  closed form: {show(c.closed_form, latex)}")
    return "\n".join(lines)


def format_sweep(mm, result, as_csv: bool) -> str:
    """The grid as a table (exact bytes and their size), or as comma-separated values."""
    rows = result.rows()
    if as_csv:
        first = next(rows)
        return "\n".join([",".join(first)] + [",".join(str(v) for v in row.values()) for row in (first, *rows)])
    lines = [f"{mm.name} ({mm.mode}, {profile_text(mm.inputs)}): {result.points:,} points",
             f"{'batch_size':>10} {'seq_len':>10} {'total_bytes':>22}  size"]
    lines += [f"{row['batch_size']:>10,} {row['seq_len']:>10,} {row['total_bytes']:>22,}  "
              f"{format_bytes(row['total_bytes'])}" for row in rows]
    return "\n".join(lines)


# --- memsym serve (engine/serving.py) -------------------------------------------------------

def format_page(summary: dict) -> str:
    """``memsym html``: what was written and which controls the page has."""
    from engine.files import shown_path

    return (f"wrote {shown_path(summary['path'])} ({summary['bytes']:,} bytes): {summary['model']} "
            f"({summary['mode']}, {profile_text(summary)}), terms {', '.join(summary['terms'])}; controls {', '.join(summary['controls'])}")
