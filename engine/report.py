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


def format_answer(answer, show_formula: bool = False, latex: bool = False) -> str:
    """``memsym solve``: a checked solution, or the closed form of ``--symbolic``."""
    from engine.questions import ClosedFormAnswer

    if isinstance(answer, ClosedFormAnswer):
        return format_closed_form(answer, latex)
    return format_solution(answer.model, answer.solution, answer.limits, show_formula, latex)


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
    lines += [f"{g['name']:<12} {g['memory_bytes']:>17,}  {format_bytes(g['memory_bytes']):<27} "
              f"{g['datasheet_memory']}" for g in rows]
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
             f"best: {best.num_gpus} GPUs (tp={best.tp}, pp={best.pp}, dp={best.dp}, zero={best.zero}), "
             f"{best.per_gpu_bytes:,} B per GPU",
             f"{'gpus':>6} {'tp':>4} {'pp':>4} {'dp':>6} {'zero':>4} {'per-GPU bytes':>20}  fits"]
    for c in sorted(answer.plan.tried, key=lambda c: (not c.fits, c.num_gpus, c.tp, c.pp, c.zero)):
        mark = "yes" if c.fits else "no (at the largest dp)"
        lines.append(f"{c.num_gpus:>6} {c.tp:>4} {c.pp:>4} {c.dp:>6} {c.zero:>4} {c.per_gpu_bytes:>20,}  {mark}")
    return "\n".join(lines)


def _product(row, latex: bool) -> str:
    coefficient, monomial = show(row.coefficient, latex), show(row.monomial, latex)
    if row.monomial == 1:
        return coefficient
    if row.coefficient == 1:
        return monomial
    return f"({coefficient})*{monomial}" if row.coefficient.is_Add else f"{coefficient}*{monomial}"


def format_formula(answer, latex: bool) -> str:
    """The collected total, then each coefficient with what it costs and which terms pay it."""
    form = answer.form
    lines = [f"{answer.model}: total = " + " + ".join(_product(r, latex) for r in form.rows)]
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
             f"seq_len={inputs['seq_len']}",
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
    lines = [f"{mm.name} ({mm.mode}): {result.points:,} points",
             f"{'batch_size':>10} {'seq_len':>10} {'total_bytes':>22}  size"]
    lines += [f"{row['batch_size']:>10,} {row['seq_len']:>10,} {row['total_bytes']:>22,}  "
              f"{format_bytes(row['total_bytes'])}" for row in rows]
    return "\n".join(lines)


# --- memsym serve (engine/serving.py) -------------------------------------------------------

def _vllm_gib(n: int) -> str:
    """vLLM's ``format_gib``: ``round(bytes / 2**30, 2)`` printed as a Python float."""
    return str(round(n / 2**30, 2))


def vllm_startup_lines(prediction) -> list[str]:
    """The lines vLLM logs while sizing its KV cache, in its wording and units (GiB)."""
    v, s = prediction.values, prediction.settings
    util = f"{float(s.gpu_memory_utilization):.2f}"
    total_bytes = prediction.values["cuda_total_bytes"]
    non_kv = v["weights_bytes"] + v["activation_peak_bytes"] + v["non_torch_bytes"] + v["cuda_graph_bytes"]
    if s.v0:
        peak = v["weights_bytes"] + v["activation_peak_bytes"]
        return [
            f"Loading model weights took {v['weights_bytes'] / 2**30:.4f} GB",
            f"Memory profiling results: total_gpu_memory={total_bytes / 2**30:.2f}GiB "
            f"peak_torch_memory={peak / 2**30:.2f}GiB non_torch_memory={v['non_torch_bytes'] / 2**30:.2f}GiB "
            f"kv_cache_size={v['available_kv_cache_bytes'] / 2**30:.2f}GiB gpu_memory_utilization={util}",
            f"# GPU blocks: {v['num_gpu_blocks']}",
            f"Maximum concurrency for {v['max_model_len']} tokens per request: {float(v['max_concurrency']):.2f}x",
        ]
    return [
        f"total_memory={_vllm_gib(total_bytes)}GiB",
        f"worker requested memory: {_vllm_gib(v['requested_bytes'])}GiB",
        f"Requested memory: {util} (util), {v['requested_bytes'] / 2**30:.2f} GiB",
        f"Model loading took {_vllm_gib(v['weights_bytes'])} GiB",
        f"Total non KV cache memory: {_vllm_gib(non_kv)}GiB; torch peak memory increase: "
        f"{_vllm_gib(v['activation_peak_bytes'])}GiB; non-torch forward increase memory: "
        f"{_vllm_gib(v['non_torch_bytes'])}GiB; weights memory: {_vllm_gib(v['weights_bytes'])}GiB.",
        f"Available KV cache memory: {v['available_kv_cache_bytes'] / 2**30:.2f} GiB",
        f"GPU KV cache size: {v['kv_cache_tokens']:,} tokens",
        f"Maximum concurrency for {v['max_model_len']:,} tokens per request: {float(v['max_concurrency']):.2f}x",
    ]


def format_serve(prediction) -> str:
    """``memsym serve``: vLLM's start-up lines, then every term with its bytes and source."""
    p, s = prediction, prediction.settings
    engine = "V0 engine" if s.v0 else "V1 engine"
    stage = f", pipeline stage {p.worker.stage} of {p.scenario.pp} (the smallest worker)" if p.scenario.pp > 1 else ""
    lines = [f"{p.spec.name} on vLLM {s.version} ({engine}), tensor_parallel_size={p.scenario.tp}, "
             f"pipeline_parallel_size={p.scenario.pp}{stage}", f"budget: {p.budget_note}"]
    if p.max_model_len_note:
        lines.append(p.max_model_len_note)
    lines += ["", "predicted start-up log (one worker):"] + ["  " + line for line in vllm_startup_lines(p)]
    lines += ["", f"{'term':<32} {'bytes':>18}  {'GiB':>8}  source"]
    ev = p.worker.model.evaluate()
    sources = p.worker.model.sources
    for name, value in ev.terms.items():
        label = ("  " * name.count("/")) + name.split("/")[-1]
        source = sources.get(name, "")
        if "/" in name and source == sources.get(name.split("/")[0]):
            source = ""  # said once, on the parent
        lines.append(f"{label:<32} {value:>18,}  {value / 2**30:>8.3f}  {source}".rstrip())
    v = p.values
    lines.append(f"{'requested':<32} {v['requested_bytes']:>18,}  {v['requested_bytes'] / 2**30:>8.3f}  "
                 "gpu_memory_utilization x cudaMemGetInfo total")
    inputs = p.worker.model.inputs
    lines += ["", f"profile: vllm; max_num_batched_tokens={inputs['max_num_batched_tokens']}, "
              f"max_num_seqs={inputs['max_num_seqs']}, block_size={inputs['block_size']}, "
              f"kv cache: {inputs['kv_layout']} at {inputs['kv_cache_bytes']} B/element, "
              f"weights: {inputs['quantization']} at {inputs['weight_bytes']} B/element",
              "assumptions: non-torch memory is a named constant (engine/profiles/vllm_settings.py); "
              "CUDA graphs are not subtracted (vLLM 0.19 default)"]
    slope = p.to_dict()["d_max_concurrency_d_gpu_memory_utilization"]
    lines.append(f"d max_concurrency / d gpu_memory_utilization = {slope:,.1f} (block floors relaxed): "
                 f"+0.01 utilization buys {slope / 100:.2f} requests of {v['max_model_len']:,} tokens")
    if p.refusal:
        lines += ["", f"vLLM refuses to start: {p.refusal}"]
    return "\n".join(lines)
