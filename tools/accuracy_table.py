#!/usr/bin/env python3
"""Generate docs/accuracy.md: memsym's ``transformers`` profile (and the default) against measured peaks.

Reads the fixtures that tools/measure/peaks.py (CPU) and tools/measure/gpu_peaks.py (CUDA,
when present) wrote, predicts every point with the engine (``--profile transformers``, and
without ``--profile``: the default profile, engine/profiles/default.py), and writes one
table row per point (predicted, measured, error) with the median and worst error per mode. The page is generated, never typed: tests/test_accuracy.py checks that
docs/accuracy.md equals what this script produces now.

Usage (repository root)::

    python tools/accuracy_table.py            # rewrite docs/accuracy.md
    python tools/accuracy_table.py --check    # exit 1 if docs/accuracy.md is stale
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from fractions import Fraction

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

FIXTURES = {"cpu": os.path.join(ROOT, "tests", "fixtures", "peaks_cpu.json"),
            "cuda": os.path.join(ROOT, "tests", "fixtures", "peaks_cuda.json")}
# Hugging Face fine-tuning mechanisms measured on CPU (tools/measure/hf_peaks.py, bnb_peaks.py)
MECHANISM_FIXTURES = (os.path.join(ROOT, "tests", "fixtures", "hf_peaks_cpu.json"),
                      os.path.join(ROOT, "tests", "fixtures", "bnb_peaks_cpu.json"),
                      os.path.join(ROOT, "tests", "fixtures", "moe_peaks_cpu.json"))
DOC = os.path.join(ROOT, "docs", "accuracy.md")
# The aims: |predicted - measured| / measured per point.
AIMS = {"training": Fraction(3, 100), "inference": Fraction(5, 100)}
# Engine phase -> the measured phase it falls in.
MEASURED_PHASE = {"loss_backward": "backward", "head_backward": "backward", "recompute": "backward",
                  "backward_end": "backward", "optimizer_step": "optimizer", None: "forward"}
# Why a point misses its aim, keyed by (model, mode, attention, dtype, batch, seq, extra); none today.
REASONS: dict[tuple, str] = {}


def load(device: str) -> dict | None:
    path = FIXTURES[device]
    if not os.path.exists(path):
        return None
    with open(path) as fh:
        return json.load(fh)


def knobs(point: dict, device: str, profile: str | None = "transformers") -> dict:
    """The engine scenario of a measured point, without its batch size and sequence length
    (each point substitutes those into the model of its structure: :func:`structure_model`);
    ``profile=None``: no ``--profile``, the default."""
    out = dict(mode=point["mode"], dtype=point["dtype"], attention=point["attention"], profile=profile,
               device=device)
    if point["mode"] == "training":
        out["recompute"] = "full" if point["gradient_checkpointing"] else "none"
    else:
        out["logits"] = point["logits"]
    return out


def predict(point: dict, config: dict, device: str, profile: str | None = "transformers") -> dict:
    """Predicted bytes, phase, terms and profile of one point (``profile=None``: the default's).

    A CPU point that forced ``AdamW(foreach=True)`` is predicted as ``--device cuda`` (whose
    AdamW is foreach) plus the fp32 ``step`` counters, which on CUDA stay on the host but
    on the CPU are device memory.
    """
    import sympy

    from engine import architecture
    from formulas.frameworks import transformers as framework

    spec = model_spec(point["model"], config)
    forced_foreach = device == "cpu" and point.get("foreach")
    model = structure_model(point["model"], config, knobs(point, "cuda" if forced_foreach else device, profile))
    ev = model.evaluate(batch_size=point["batch_size"], seq_len=point["seq_len"])
    total, phase = ev.total_bytes, ev.peak_phase
    if forced_foreach:
        count = sum((t.count for t in architecture.parameter_tensors(spec)), sympy.Integer(0))
        counters = int(framework.step_counters(count, on_device=True).xreplace(model.facts))
        phases = {name: value + counters for name, value in ev.phases.items()}
        phase = max(phases, key=phases.get)
        total = phases[phase]
    moment = phase or max((n for n in ev.terms if n.startswith("activations/")), key=ev.terms.get)
    return dict(bytes=total, phase=MEASURED_PHASE[phase], moment=moment, terms=ev.terms, profile=model.profile)


def predict_megatron(point: dict, config: dict) -> int:
    """The default ``megatron`` profile at the same point, for contrast (training in the
    model's dtype: ``--precision pure``)."""
    scenario = dict(knobs(point, "cuda"), profile="megatron")
    if point["mode"] == "training":
        scenario["precision"] = "pure"
    model = structure_model(point["model"], config, scenario)
    return model.evaluate(batch_size=point["batch_size"], seq_len=point["seq_len"]).total_bytes


# The fixture's points share few structures (model, mode, profile, knobs): each structure's
# model is built once, with batch size and sequence length free, and evaluated at each point.
_SPECS: dict[str, object] = {}
_MODELS: dict[tuple, object] = {}


def model_spec(name: str, config: dict):
    """The ModelSpec of a fixture model, parsed once per process."""
    from engine.families import spec_from_config

    if name not in _SPECS:
        _SPECS[name] = spec_from_config(config, name)
    return _SPECS[name]


def structure_model(name: str, config: dict, scenario: dict):
    """The MemoryModel of one structure, ``batch_size`` and ``seq_len`` left free, built once."""
    from engine.profiles import build
    from engine.scenario import Scenario

    key = (name, tuple(sorted(scenario.items(), key=lambda item: item[0])))
    if key not in _MODELS:
        _MODELS[key] = build(model_spec(name, config), Scenario(**scenario, batch_size=None, seq_len=None))
    return _MODELS[key]


_ROWS: dict[str, list[dict]] = {}  # device -> rows, computed once per process


def rows(device: str = "cpu") -> list[dict]:
    """One row per fixture point: inputs, predicted, measured, error (and the paper profile's)."""
    if device not in _ROWS:
        data = load(device)
        _ROWS[device] = [] if data is None else _rows(device, data)
    return _ROWS[device]


def _rows(device: str, data: dict) -> list[dict]:
    out = []
    for point in data["points"]:
        config = data["models"][point["model"]]["config"]
        pred = predict(point, config, device)
        measured = point["measured"]["peak_bytes"]
        error = Fraction(pred["bytes"] - measured, measured)
        paper = Fraction(predict_megatron(point, config) - measured, measured)
        default = predict(point, config, device, profile=None)
        out.append(dict(point=point, predicted=pred, measured=measured, error=error, paper_error=paper,
                        default=default, default_error=Fraction(default["bytes"] - measured, measured),
                        within=abs(error) <= AIMS[point["mode"]]))
    return out


def mechanism_knobs(point: dict, profile: str | None = "transformers") -> dict:
    """The scenario of one mechanism point (AMP, LoRA, QLoRA, a bitsandbytes optimizer, a MoE prefill)."""
    if point["mode"] == "inference":
        return dict(mode="inference", profile=profile, device="cpu", dtype=point["dtype"],
                    attention=point["attention"], batch_size=point["batch_size"], seq_len=point["seq_len"],
                    logits=point["logits"])
    out = dict(mode="training", profile=profile, device="cpu", dtype=point["dtype"],
               attention=point["attention"], batch_size=point["batch_size"], seq_len=point["seq_len"],
               recompute="full" if point["gradient_checkpointing"] else "none")
    mechanism = point.get("mechanism", point.get("optimizer"))
    if mechanism == "amp":
        out["precision"] = "amp"
    if mechanism in ("lora", "qlora"):
        out.update(lora_rank=point["lora_rank"], lora_targets=tuple(point.get("lora_targets", ["all-linear"])))
        if point.get("adapter_dtype"):
            out["adapter_dtype"] = point["adapter_dtype"]
    if mechanism == "qlora":
        out["weight_quant"] = "nf4"
    if "optimizer" in point:
        out["optimizer"] = point["optimizer"]
    return out


def device_bytes(point: dict) -> int:
    """The measured peak plus the bitsandbytes quant_state tensors, which MemTracker does not
    see (attributes of the 4-bit parameters, alive throughout)."""
    return point["measured"]["peak_bytes"] + point["measured"].get("quant_state_bytes", 0)


def mechanism_rows() -> list[dict]:
    """One row per mechanism point: inputs, the prediction, the measured device bytes, error."""
    from engine.profiles import build
    from engine.scenario import Scenario

    out = []
    for path in MECHANISM_FIXTURES:
        with open(path) as fh:
            data = json.load(fh)
        for point in data["points"]:
            spec = model_spec(point["model"], data["models"][point["model"]]["config"])
            ev = build(spec, Scenario(**mechanism_knobs(point))).evaluate()
            default = build(spec, Scenario(**mechanism_knobs(point, profile=None)))
            default_bytes = default.evaluate().total_bytes
            measured = device_bytes(point)
            out.append(dict(point=point, predicted=ev.total_bytes, phase=ev.peak_phase, terms=ev.terms,
                            measured=measured, error=Fraction(ev.total_bytes - measured, measured),
                            default=dict(bytes=default_bytes, profile=default.profile),
                            default_error=Fraction(default_bytes - measured, measured)))
    return out


def summary(table: list[dict], mode: str) -> dict:
    errors = [abs(r["error"]) for r in table if r["point"]["mode"] == mode]
    if not errors:
        return dict(points=0)
    paper = [abs(r["paper_error"]) for r in table if r["point"]["mode"] == mode]
    return dict(points=len(errors), median=statistics.median(errors), worst=max(errors),
                within=sum(e <= AIMS[mode] for e in errors), paper_median=statistics.median(paper),
                **default_summary(table, mode))


def default_summary(table: list[dict], mode: str) -> dict:
    """The default profile (no ``--profile``) at the points of ``mode``: the profiles it chose,
    its median and worst abs error."""
    rows = [r for r in table if r["point"]["mode"] == mode]
    errors = [abs(r["default_error"]) for r in rows]
    return dict(default_profiles=sorted({r["default"]["profile"] for r in rows}),
                default_median=statistics.median(errors), default_worst=max(errors))


def _pct(x: Fraction) -> str:
    return f"{float(x) * 100:+.4f} %"


def _extra(point: dict) -> str:
    if point["mode"] == "inference":
        return f"logits={point['logits']}"
    parts = ["checkpointing" if point["gradient_checkpointing"] else "-"]
    if point.get("foreach"):
        parts.append("foreach")
    return ", ".join(parts)


def _key(point: dict) -> tuple:
    return (point["model"], point["mode"], point["attention"], point["dtype"], point["batch_size"],
            point["seq_len"], _extra(point))


def section(device: str, data: dict, table: list[dict]) -> list[str]:
    env = data["environment"]
    lines = [f"## {device.upper()}: {len(table)} points", "",
             f"Measured with torch {env['torch']}, transformers {env['transformers']}, Python {env['python']}, "
             f"{env['torch_threads']} threads, by `{data['generator']}`; "
             + ("MemTracker peak, cross-checked with the profiler's allocation events."
                if device == "cpu" else "`torch.cuda.max_memory_allocated()` per phase."), "",
             "| mode | points | median abs error | worst abs error | aim | within aim | default profile (no "
             "`--profile`): median | `megatron` profile median |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for mode in ("training", "inference"):
        s = summary(table, mode)
        if s["points"]:
            lines.append(f"| {mode} | {s['points']} | {float(s['median']) * 100:.4f} % | "
                         f"{float(s['worst']) * 100:.4f} % | {float(AIMS[mode]) * 100:.0f} % | "
                         f"{s['within']} / {s['points']} | {', '.join(s['default_profiles'])}: "
                         f"{float(s['default_median']) * 100:.4f} % | {float(s['paper_median']) * 100:.1f} % |")
    for mode in ("training", "inference"):
        lines += ["", f"### {device.upper()} {mode}", "",
                  "| model | attention | dtype | b | s | options | predicted B | measured B | error B | error "
                  "| phase (pred / meas) | predicted peak moment | default profile: error | `megatron` error |",
                  "|---|---|---|---:|---:|---|---:|---:|---:|---:|---|---|---:|---:|"]
        for r in table:
            p = r["point"]
            if p["mode"] != mode:
                continue
            note = "" if r["within"] else f" **outside aim: {REASONS.get(_key(p), 'reason not yet known')}**"
            lines.append(
                f"| {p['model']} | {p['attention']} | {p['dtype']} | {p['batch_size']} | {p['seq_len']} | "
                f"{_extra(p)} | {r['predicted']['bytes']:,} | {r['measured']:,} | "
                f"{r['predicted']['bytes'] - r['measured']:+,} | {_pct(r['error'])} | "
                f"{r['predicted']['phase']} / {p['measured']['peak_phase']} | {r['predicted']['moment']}{note} | "
                f"{r['default']['profile']}: {_pct(r['default_error'])} | {float(r['paper_error']) * 100:+.1f} % |")
    return lines


HEADER = """# Accuracy: memsym's `transformers` profile, the default, against measured peaks

Generated by `tools/accuracy_table.py` from `tests/fixtures/peaks_*.json`; do not edit
by hand (`python tools/accuracy_table.py` rewrites it, and `tests/test_accuracy.py` fails
when it is stale).

Each row is one run of a small Qwen3- or Llama-shaped model (the registry's `qwen3-0.6b`
and `llama-3.1-8b` configs with their sizes shrunk; see the fixture's `models`) measured
by `tools/measure/peaks.py`, and the prediction of
`memsym estimate --profile transformers --device cpu` for the same config and knobs
(`--attention`, `--dtype`, `--batch-size`, `--seq-len`, `--gradient-checkpointing`,
`--logits`). Training is the peak of a full step (forward with labels, backward,
`AdamW.step()`), measured on the second iteration; inference is a prefill with
`use_cache=True`. Error = (predicted - measured) / measured. The formulas are derived from
the code (docs/transformers-profile.md), not fitted to these numbers. `transformers` is the
default profile (no `--profile`) on one device, in inference and training; the column
"default profile" is the estimate without `--profile` (its profile's name, then its error),
so it shows which profile the default chose at each point (engine/profiles/default.py: it
falls back to `megatron` for parallel layouts and, in inference, for what the transformers
profile does not model, saying why). The last column is the `megatron` profile's error at
the same point (training with `--precision pure`), for contrast: it models Megatron-style
kernels, not transformers.
"""


def _mechanism_label(point: dict) -> str:
    mechanism = point.get("mechanism", point.get("optimizer"))
    parts = [mechanism]
    if "lora_rank" in point:
        parts.append(f"r={point['lora_rank']} {','.join(point.get('lora_targets', ['all-linear']))}")
    if point.get("adapter_dtype"):
        parts.append(f"adapters {point['adapter_dtype']}")
    if point.get("gradient_checkpointing"):
        parts.append("checkpointing")
    if point["mode"] == "inference":
        parts.append(f"logits {point['logits']}")
    return ", ".join(parts)


def mechanism_section() -> list[str]:
    table = mechanism_rows()
    errors = [abs(r["error"]) for r in table]
    lines = ["## CPU: Hugging Face fine-tuning mechanisms", "",
             "`tools/measure/hf_peaks.py` (accelerate's bf16 AMP on an fp32 model; PEFT LoRA; QLoRA: a "
             "bitsandbytes NF4 base loaded by `from_pretrained` with double quantization; a Mistral-shaped model "
             "past and within its sliding window), `tools/measure/moe_peaks.py` (tiny Qwen3-MoE, Mixtral, Qwen2-MoE "
             "and GLM-4.5, 8 experts, top-2, transformers' default grouped_mm experts: training, AMP, attention "
             "LoRA and no-grad prefills) and "
             "`tools/measure/bnb_peaks.py` (bitsandbytes AdamW8bit): the same tiny models and loop. Measured = "
             "MemTracker peak + the bitsandbytes `quant_state` tensors (which MemTracker does not see). "
             f"{len(table)} points: median abs error {float(statistics.median(errors)) * 100:.4f} %, worst "
             f"{float(max(errors)) * 100:.4f} %; the default profile (no `--profile`: "
             f"{', '.join(sorted({r['default']['profile'] for r in table}))}) median "
             f"{float(statistics.median(abs(r['default_error']) for r in table)) * 100:.4f} %.", "",
             "| model | attention | dtype | b | s | mechanism | predicted B | measured B | error B | error | "
             "predicted peak | default profile: error |", "|---|---|---|---:|---:|---|---:|---:|---:|---:|---|---:|"]
    for r in table:
        p = r["point"]
        lines.append(f"| {p['model']} | {p['attention']} | {p['dtype']} | {p['batch_size']} | {p['seq_len']} | "
                     f"{_mechanism_label(p)} | {r['predicted']:,} | {r['measured']:,} | "
                     f"{r['predicted'] - r['measured']:+,} | {_pct(r['error'])} | {r['phase']} | "
                     f"{r['default']['profile']}: {_pct(r['default_error'])} |")
    return lines


def render() -> str:
    lines = [HEADER.rstrip("\n")]
    for device in ("cpu", "cuda"):
        data = load(device)
        if data is None:
            if device == "cuda":
                lines += ["", "## CUDA", "", "No CUDA measurements yet: run `python tools/measure/gpu_peaks.py` on a "
                          "machine with a GPU and commit `tests/fixtures/peaks_cuda.json`."]
            continue
        lines += [""] + section(device, data, rows(device))
        if device == "cpu":
            lines += [""] + mechanism_section()
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/accuracy.md is not up to date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        with open(DOC) as fh:
            current = fh.read()
        if current != text:
            print("docs/accuracy.md is stale: run python tools/accuracy_table.py", file=sys.stderr)
            return 1
        return 0
    os.makedirs(os.path.dirname(DOC), exist_ok=True)
    tmp = DOC + ".tmp"
    with open(tmp, "w") as fh:
        fh.write(text)
    os.replace(tmp, DOC)
    print(f"wrote {os.path.relpath(DOC, ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
