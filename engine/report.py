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
