"""Plain-text reports of engine results, for the CLI's human output (``--json`` aside).

Each function takes what one engine call returned and gives finished lines: exact bytes
beside GB (10^9) and GiB (2^30), never "MB" for MiB.
"""

from __future__ import annotations

from engine.units import format_bytes


def show(expr, latex: bool) -> str:
    """An expression as SymPy's plain string, or as LaTeX with the project's short names."""
    import sympy

    from formulas.symbols import latex_names

    return sympy.latex(expr, symbol_names=latex_names()) if latex else sympy.sstr(expr)


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
    lines = [head, f"parameters: {result.counts['parameters']:,}"
             + (f" ({result.counts['active_parameters']:,} active per token)" if result.spec.is_moe else ""), ""]
    if "convention" in inputs:  # the profile's bytes per parameter, in words
        lines.insert(2, f"profile {mm.profile}: {inputs['convention']}")
    lines.append(f"{'term':<28} {'bytes':>20}  size")
    for name in mm.terms:
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
    if ev.host:
        lines += ["", "offloaded to host memory (not in the GPU total):"]
        for name, value in ev.host.items():
            lines.append(f"{'  ' + name:<28} {value:>20,}  {format_bytes(value)}")
    return "\n".join(lines)


def format_solution(name: str, solution, limits, show_formula: bool, latex: bool) -> str:
    """The answer, its certificate (totals at the value and its neighbour) and the budget."""
    s = solution
    device = f"{limits.gpu_name} " if limits.gpu_name else ""
    split = f"; the model split evenly over {limits.num_gpus} GPUs" if limits.num_gpus > 1 else ""
    lines = [f"{name}: {'smallest' if s.smallest else 'largest'} {s.variable} that fits",
             f"budget per GPU: {s.budget_bytes:,} B ({format_bytes(s.budget_bytes)}) = {limits.utilization} x "
             f"{device}{limits.device_bytes:,} B{split}",
             f"{s.variable} = {s.value:,}"]
    neighbour = s.value - 1 if s.smallest else s.value + 1
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
