"""Plain-text reports of the vllm profile: ``memsym serve``'s start-up lines (as vLLM logs
them) and the serving answers of ``memsym solve`` (engine/serving_solve.py).

engine/report.py re-exports these for the CLI.
"""

from __future__ import annotations


def _vllm_gib(n: int) -> str:
    """vLLM's ``format_gib``: ``round(bytes / 2**30, 2)`` printed as a Python float."""
    return str(round(n / 2**30, 2))


def _hybrid_lines(v: dict) -> list[str]:
    """vLLM's config-time lines for a hybrid model (vllm/platforms/interface.py
    ``Platform._align_hybrid_block_size``), and the recurrent state one request holds."""
    if not v.get("attention_block_size"):
        return []
    lines = [f"Setting attention block size to {v['attention_block_size']} tokens to ensure that attention "
             "page size is >= mamba page size."]
    if v["page_bytes"] != v["state_page_bytes"]:
        padding = 100 * (v["page_bytes"] - v["state_page_bytes"]) / v["state_page_bytes"]
        lines.append(f"Padding mamba page size by {padding:.2f}% to ensure that mamba page size and attention "
                     "page size are exactly equal.")
    return lines


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
    return _hybrid_lines(v) + [
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
              "CUDA graphs are not subtracted (vLLM 0.19 default)"
              + "".join(f"; {note}" for note in inputs.get("assumptions", ()))]
    slope = p.to_dict()["d_max_concurrency_d_gpu_memory_utilization"]
    if "state_bytes_per_request" in v:
        lines.append(f"recurrent state: {v['state_page_bytes']:,} B per layer and request (page {v['page_bytes']:,} B), "
                     f"{v['state_bytes_per_request']:,} B per request whatever its length "
                     f"(mamba_cache_mode {inputs['mamba_cache_mode']})")
    lines.append(f"d max_concurrency / d gpu_memory_utilization = {slope:,.1f} (block floors relaxed): "
                 f"+0.01 utilization buys {slope / 100:.2f} requests of {v['max_model_len']:,} tokens")
    if p.refusal:
        lines += ["", f"vLLM refuses to start: {p.refusal}"]
    return "\n".join(lines)


def format_serving_answer(answer) -> str:
    """``solve concurrency|seq-len|batch-size`` by the vllm profile: the answer, vLLM's
    figures behind it, its certificate, the budget and the parallel mapping."""
    p, c, n = answer.prediction, answer.certificate, answer.value
    v = p.values
    name = answer.variable.replace("_", "-")
    lines = [f"{answer.model}: largest {name} that vLLM {p.settings.version} starts with (profile: vllm)",
             f"budget: {answer.budget_note}; requested = {float(p.settings.gpu_memory_utilization):g} "
             f"(--gpu-memory-utilization) x {v['cuda_total_bytes']:,} B = {v['requested_bytes']:,} B",
             f"parallel: {answer.parallel_note}",
             f"available KV cache memory: {v['available_kv_cache_bytes']:,} B "
             f"({v['available_kv_cache_bytes'] / 2**30:.2f} GiB) = requested - weights {v['weights_bytes']:,} "
             f"- profile-run peak {v['activation_peak_bytes']:,} - non-torch {v['non_torch_bytes']:,}",
             f"{name} = {n:,}"]
    if answer.variable == "seq_len":
        lines.append(f"  KV of one request of {n:,} tokens: {c['at_value']:>16,} B <= available "
                     f"{c['available_kv_cache_bytes']:,} B  starts")
        if c["capped_at_context"]:
            lines.append(f"  {n + 1:,} tokens exceed the model's context ({c['context']:,}): vLLM refuses that "
                         f"max_model_len (its one request would need {c['at_next']:,} B)")
        else:
            lines.append(f"  KV of one request of {n + 1:,} tokens: {c['at_next']:>16,} B >  available "
                         f"{c['available_at_next']:,} B  refused")
    else:
        per, blocks = c["blocks_per_request"], c["num_gpu_blocks"]
        lines += [f"  vLLM: Maximum concurrency for {v['max_model_len']:,} tokens per request: "
                  f"{float(v['max_concurrency']):.2f}x",
                  f"  blocks for {n:,} requests: {n:,} x {per:,} = {c['at_value']:,} <= num_gpu_blocks {blocks:,}  fits",
                  f"  blocks for {n + 1:,} requests: {n + 1:,} x {per:,} = {c['at_next']:,} > num_gpu_blocks "
                  f"{blocks:,}  exceeds"]
    lines.append("  counted: weights as vLLM loads them, the profile run's torch peak, non-torch memory; "
                 "CUDA graphs are not subtracted (vLLM 0.19); --profile megatron gives the bare-tensor answer")
    return "\n".join(lines)
