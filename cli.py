"""memsym's command line: each command parses, makes one engine call, formats.

Errors from the engine (``engine.errors.MemsymError``) and bad flags become one line on
stderr and exit status 2; with ``--json`` the error is also printed as ``{"error": ...}``.
The engine (and SymPy) is imported inside each command, so ``memsym --help`` starts fast.
"""

from __future__ import annotations

import json
import sys

import click

from formulas import options

EXIT_BAD_INPUT = 2


class MemsymGroup(click.Group):
    """A click group whose every failure is one line on stderr and exit status 2."""

    def main(self, args=None, prog_name=None, **extra):
        argv = list(sys.argv[1:] if args is None else args)
        extra.pop("standalone_mode", None)
        try:
            code = super().main(args=argv, prog_name=prog_name or "memsym", standalone_mode=False, **extra)
        except click.exceptions.Exit as exc:  # --help, --version
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:
            _fail("aborted", argv)
        except click.ClickException as exc:
            _fail(exc.format_message(), argv)
        except Exception as exc:  # noqa: BLE001 - the engine's errors and nothing unexpected
            from engine.errors import MemsymError

            if isinstance(exc, MemsymError):
                _fail(str(exc), argv)
            raise
        sys.exit(code if isinstance(code, int) else 0)


def _fail(message: str, argv: list[str]) -> None:
    message = " ".join(str(message).split())  # one line, whatever the message held
    if "--json" in argv:
        click.echo(json.dumps({"error": message}))
    click.echo(f"memsym: error: {message}", err=True)
    sys.exit(EXIT_BAD_INPUT)


@click.group(cls=MemsymGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="memsym", prog_name="memsym")
def cli():
    """Symbolic GPU-memory formulas for LLM inference and training.

    \b
    Example:
      memsym estimate --model qwen3-0.6b --seq-len 2048
    """


def model_options(func):
    """--model / --config: which architecture."""
    func = click.option("--config", "config_path", type=click.Path(dir_okay=True),
                        help="A local config.json (or a folder holding one).")(func)
    func = click.option("--model", "model_id", metavar="ID",
                        help="A registry id (see 'memsym models') or its Hugging Face repo id.")(func)
    return func


def scenario_options(func):
    """The scenario knobs shared by every command that builds a memory model."""
    opts = [
        click.option("--mode", type=click.Choice(options.MODES), default="inference", show_default=True),
        click.option("--batch-size", type=int, default=1, show_default=True, help="Sequences at once."),
        click.option("--seq-len", type=int, default=2048, show_default=True, help="Tokens per sequence."),
        click.option("--dtype", type=click.Choice(options.DTYPES[:3]), default="bfloat16", show_default=True,
                     help="Weights and activations."),
        click.option("--kv-cache-dtype", type=click.Choice(options.DTYPES), default=None,
                     help="KV-cache elements  [default: --dtype]"),
        click.option("--weight-quant", type=click.Choice(options.QUANT_SCHEMES), default="none", show_default=True,
                     help="Weight quantization of the linear layers (w8a8: the seed article's 1 byte for all)."),
        click.option("--quant-group-size", type=int, default=None,
                     help="Weights per int4 scale group / fp8 block side  [default: 128]"),
        click.option("--attention", type=click.Choice(options.ATTENTION), default="sdpa", show_default=True,
                     help="eager materialises the b x a x s x s scores; sdpa/flash does not."),
        click.option("--logits", type=click.Choice(options.LOGITS_MODES), default="last", show_default=True,
                     help="Inference: logits of every position, or the last only (generation)."),
        click.option("--mla-cache", type=click.Choice(options.MLA_LAYOUTS), default="latent", show_default=True,
                     help="MLA cache: the latent (serving engines, transformers 5) or decompressed K/V (4.x)."),
        click.option("--block-size", type=int, default=None, help="Paged KV cache with blocks of N tokens."),
        click.option("--recompute", type=click.Choice(options.RECOMPUTE_MODES), default="none", show_default=True,
                     help="Training: activation recomputation."),
        click.option("--optimizer", type=click.Choice(options.OPTIMIZERS), default="adamw", show_default=True),
        click.option("--precision", type=click.Choice(options.PRECISIONS), default="auto", show_default=True,
                     help="Training bytes per parameter: zero16, megatron18, deepspeed20, pure, or auto."),
        click.option("--reserve", "reserve", default="0", show_default=True, metavar="SIZE",
                     help="Memory outside the model (CUDA context), e.g. 500MB."),
        click.option("--comm-buffer", "comm_buffer", default="0", show_default=True, metavar="SIZE",
                     help="Communication buffers per GPU, e.g. 25MiB (DDP's default bucket)."),
        click.option("--allocator-fraction", default="0", show_default=True, metavar="F",
                     help="Allocator reserve/fragmentation as a fraction of the peak, e.g. 0.05."),
        click.option("--tp", type=int, default=1, show_default=True, help="Tensor-parallel degree."),
        click.option("--pp", type=int, default=1, show_default=True, help="Pipeline-parallel degree."),
        click.option("--dp", type=int, default=1, show_default=True, help="Data-parallel degree (ZeRO shards over it)."),
        click.option("--ep", type=int, default=1, show_default=True, help="Expert-parallel degree."),
        click.option("--cp", type=int, default=1, show_default=True, help="Context-parallel degree."),
        click.option("--sequence-parallel", is_flag=True, help="Megatron sequence parallelism (with --tp)."),
        click.option("--vpp", type=int, default=None, help="Model chunks per pipeline stage (interleaved 1F1B)."),
        click.option("--zero", type=click.IntRange(0, 3), default=0, show_default=True,
                     help="ZeRO stage (FSDP full shard = 3, shard-grad-op = 2)."),
        click.option("--offload", type=click.Choice(options.OFFLOAD), default="none", show_default=True,
                     help="Move optimizer state and/or parameters to host memory."),
        click.option("--lora-rank", type=int, default=None, help="Train LoRA adapters of this rank on a frozen base."),
        click.option("--lora-targets", default=None, metavar="NAMES",
                     help="Comma-separated modules to adapt (q_proj,v_proj,...)  [default: all attention/MLP linears]"),
        click.option("--adapter-dtype", type=click.Choice(options.DTYPES[:3]), default=None,
                     help="LoRA adapter dtype  [default: --dtype]"),
    ]
    for opt in reversed(opts):
        func = opt(func)
    return func


def scenario_knobs(kw: dict) -> dict:
    """Click's keyword arguments -> Scenario fields."""
    from engine.units import parse_bytes

    knobs = {k: kw.pop(k) for k in (
        "mode", "batch_size", "seq_len", "dtype", "kv_cache_dtype", "weight_quant", "quant_group_size",
        "attention", "logits", "mla_cache", "block_size", "recompute", "optimizer", "precision")}
    reserve = kw.pop("reserve")
    knobs["reserve_bytes"] = 0 if reserve in ("0", 0) else parse_bytes(reserve, "--reserve")
    comm = kw.pop("comm_buffer")
    knobs["comm_buffer_bytes"] = 0 if comm in ("0", 0) else parse_bytes(comm, "--comm-buffer")
    knobs["allocator_fraction"] = parse_fraction(kw.pop("allocator_fraction"), "--allocator-fraction")
    for k in ("tp", "pp", "dp", "ep", "cp", "sequence_parallel", "vpp", "zero", "offload", "lora_rank",
              "adapter_dtype"):
        knobs[k] = kw.pop(k)
    targets = kw.pop("lora_targets")
    knobs["lora_targets"] = tuple(t.strip() for t in targets.split(",") if t.strip()) if targets else None
    return knobs


def parse_fraction(text: str, flag: str):
    """A decimal fraction like ``0.05`` as an exact Fraction (never eval, never float)."""
    from fractions import Fraction

    from engine.errors import InputError

    try:
        value = Fraction(text.strip())
    except (ValueError, ZeroDivisionError):
        raise InputError(f"{flag}: cannot read {text!r} as a number") from None
    return value


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def models(as_json):
    """List the models of the embedded registry.

    \b
    Example:
      memsym models --json
    """
    from engine.architecture import count_parameters
    from engine.registry import entries
    from engine.families import spec_from_config

    rows = []
    for entry in entries():
        spec = spec_from_config(entry.config, entry.id)
        counts = count_parameters(spec)
        rows.append({"id": entry.id, "hf_repo": entry.hf_repo, "architecture": spec.architecture,
                     "parameters": counts["parameters"], "active_parameters": counts["active_parameters"],
                     "source": entry.source})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'id':<20} {'hf repo':<36} {'architecture':<24} {'parameters':>18}")
    for r in rows:
        click.echo(f"{r['id']:<20} {r['hf_repo']:<36} {r['architecture']:<24} {r['parameters']:>18,}")


@cli.command()
@model_options
@scenario_options
@click.option("--checkpoint", "checkpoint_dir", type=click.Path(file_okay=False), metavar="DIR",
              help="A local checkpoint folder: its config.json, and the stored bytes from its "
                   "*.safetensors headers beside the formula's weights (no tensor is loaded).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def estimate(model_id, config_path, checkpoint_dir, as_json, **kw):
    """Exact bytes of every memory term for one model and scenario.

    \b
    Examples:
      memsym estimate --model qwen3-0.6b --seq-len 2048
      memsym estimate --model llama-3.1-8b --mode training --batch-size 4 --seq-len 4096 --json
      memsym estimate --checkpoint ./Qwen3-0.6B --json
    """
    if checkpoint_dir is not None:
        if model_id is not None or config_path is not None:
            raise click.UsageError("--checkpoint DIR reads DIR/config.json: give it without --model or --config")
        from engine.checkpoint import estimate_checkpoint

        checked = estimate_checkpoint(checkpoint_dir, **scenario_knobs(kw))
        text = format_estimate(checked.estimate) + "\n" + format_checkpoint(checked)
        click.echo(json.dumps(checked.to_dict(), indent=2) if as_json else text)
        return
    from engine.api import estimate as run_estimate

    result = run_estimate(model_id, config_path, **scenario_knobs(kw))
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        click.echo(format_estimate(result))


def format_checkpoint(checked) -> str:
    """The checkpoint's stored bytes per dtype, beside the formula's weights."""
    from engine.units import format_bytes

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
    from engine.units import format_bytes

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
    return "\n".join(lines)


def main():
    """Console-script entry point."""
    cli.main()


if __name__ == "__main__":
    main()
