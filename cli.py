"""memsym's command line: each command parses, makes one engine call, formats.

Errors from the engine (``engine.errors.MemsymError``) and bad flags become one line on
stderr and exit status 2; with ``--json`` the error is also printed as ``{"error": ...}``.
The engine (and SymPy) is imported inside each command, so ``memsym --help`` starts fast.
"""

from __future__ import annotations

import json
import sys

import click

from engine import profiles, report
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
        click.option("--dtype", type=click.Choice(options.DTYPES[:4]), default="bfloat16", show_default=True,
                     help="Weights and activations (float8: fp8 weights, activations kept 16-bit)."),
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
        click.option("--gradient-checkpointing", is_flag=True,
                     help="Training: recompute each layer in backward, as transformers does (= --recompute full)."),
        click.option("--profile", type=click.Choice(profiles.names()), default=profiles.DEFAULT,
                     show_default=True,
                     help="megatron (alias paper): Megatron-LM kernels, Korthikanti et al. 2022; transformers: "
                          "what transformers 5.24 + PyTorch allocate (docs/accuracy.md)."),
        click.option("--device", type=click.Choice(options.DEVICES), default="cuda", show_default=True,
                     help="--profile transformers: AdamW is foreach on cuda, single-tensor on cpu."),
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
    from fractions import Fraction

    from engine.units import parse_bytes, parse_fraction

    knobs = {k: kw.pop(k) for k in (
        "mode", "batch_size", "seq_len", "dtype", "kv_cache_dtype", "weight_quant", "quant_group_size",
        "attention", "logits", "mla_cache", "block_size", "recompute", "optimizer", "precision")}
    if kw.pop("gradient_checkpointing"):
        if knobs["recompute"] not in ("none", "full"):
            from engine.errors import InputError

            raise InputError(f"--gradient-checkpointing is --recompute full; it conflicts with --recompute "
                             f"{knobs['recompute']}")
        knobs["recompute"] = "full"
    knobs["profile"], knobs["device"] = kw.pop("profile"), kw.pop("device")
    reserve = kw.pop("reserve")
    knobs["reserve_bytes"] = 0 if reserve in ("0", 0) else parse_bytes(reserve, "--reserve")
    comm = kw.pop("comm_buffer")
    knobs["comm_buffer_bytes"] = 0 if comm in ("0", 0) else parse_bytes(comm, "--comm-buffer")
    knobs["allocator_fraction"] = parse_fraction(
        kw.pop("allocator_fraction"), "--allocator-fraction", low=Fraction(0), high=Fraction(99, 100))
    for k in ("tp", "pp", "dp", "ep", "cp", "sequence_parallel", "vpp", "zero", "offload", "lora_rank",
              "adapter_dtype"):
        knobs[k] = kw.pop(k)
    targets = kw.pop("lora_targets")
    knobs["lora_targets"] = tuple(t.strip() for t in targets.split(",") if t.strip()) if targets else None
    return knobs


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
      memsym estimate --model qwen3-0.6b --mode training --profile transformers --gradient-checkpointing
    """
    if checkpoint_dir is not None:
        if model_id is not None or config_path is not None:
            raise click.UsageError("--checkpoint DIR reads DIR/config.json: give it without --model or --config")
        from engine.api import estimate_checkpoint

        checked = estimate_checkpoint(checkpoint_dir, **scenario_knobs(kw))
        text = report.format_estimate(checked.estimate) + "\n" + report.format_checkpoint(checked)
        click.echo(json.dumps(checked.to_dict(), indent=2) if as_json else text)
        return
    from engine.api import estimate as run_estimate

    result = run_estimate(model_id, config_path, **scenario_knobs(kw))
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        click.echo(report.format_estimate(result))


# --- inverse questions and analysis (engine/solve.py, engine/analysis.py, engine/gpus.py) ---------
SOLVE_VARIABLES = ("seq-len", "batch-size", "concurrency", "num-gpus", "tp")


def budget_options(func):
    """--budget / --gpu, --num-gpus, --gpu-memory-utilization: the memory a solve must fit."""
    opts = [
        click.option("--budget", metavar="SIZE",
                     help="Memory of one GPU: 24GB (10^9 B), 24GiB (2^30 B), 1.5TB, 80e9 (bytes)."),
        click.option("--gpu", "gpu_name", metavar="NAME", help="A GPU of the catalog ('memsym gpus'), e.g. rtx-4090."),
        click.option("--num-gpus", type=int, default=1, show_default=True,
                     help="GPUs of that memory; the model is split evenly over them."),
        click.option("--gpu-memory-utilization", "utilization", default="1", show_default=True, metavar="F",
                     help="Fraction of each GPU's memory that may be used, 0 < F <= 1 (vLLM's flag)."),
    ]
    for opt in reversed(opts):
        func = opt(func)
    return func


def _explicit(name: str) -> bool:
    """Whether the user gave option ``name`` (not its default)."""
    from click.core import ParameterSource

    source = click.get_current_context().get_parameter_source(name)
    return source not in (None, ParameterSource.DEFAULT)


def _analysis_model(model_id, config_path, symbolic: bool, knobs: dict, free: tuple[str, ...]):
    """(name, MemoryModel) with the ``free`` variables left as symbols unless given on the command line."""
    for name in free:
        if not _explicit(name):
            knobs[name] = None
    if symbolic:
        if model_id is not None or config_path is not None:
            raise click.UsageError("--symbolic is model-free: give it without --model or --config")
        from engine.analysis import symbolic as symbolic_model

        return "symbolic", symbolic_model(keep_reserve_free=not _explicit("reserve"), **knobs)
    from engine.api import memory_model

    spec, mm = memory_model(model_id, config_path, **knobs)
    return spec.name, mm


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def gpus(as_json):
    """List the GPU catalog: memory in exact bytes, with the source of each figure.

    \b
    Example:
      memsym gpus
    """
    from engine.gpus import catalog
    from engine.units import format_bytes

    rows = [vars(g) | {"aliases": list(g.aliases)} for g in catalog().values()]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'name':<12} {'bytes':>17}  {'size':<27} datasheet")
    for g in catalog().values():
        click.echo(f"{g.name:<12} {g.memory_bytes:>17,}  {format_bytes(g.memory_bytes):<27} {g.datasheet_memory}")


@cli.command()
@click.argument("variable", type=click.Choice(SOLVE_VARIABLES), metavar="VARIABLE")
@model_options
@scenario_options
@budget_options
@click.option("--symbolic", is_flag=True, help="No model: the closed form for a generic dense GQA decoder.")
@click.option("--serving-activations", type=click.Choice(("none", "prefill")), default="none", show_default=True,
              help="concurrency: leave the activation peak out (the seed's arithmetic) or keep one prefill's.")
@click.option("--show-formula", is_flag=True, help="Print the closed form the answer came from.")
@click.option("--latex", is_flag=True, help="Formulas as LaTeX.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def solve(variable, model_id, config_path, budget, gpu_name, num_gpus, utilization, symbolic, serving_activations,
          show_formula, latex, as_json, **kw):
    """The largest VARIABLE that fits a memory budget (seq-len, batch-size, concurrency),
    or the fewest GPUs (num-gpus) or smallest tensor-parallel degree (tp).

    Every answer is checked by substitution: total(n) <= budget < total(n+1), in exact
    bytes per GPU. concurrency counts requests of --seq-len tokens served at once: weights
    plus each request's KV cache (paged with --block-size).

    \b
    Examples:
      memsym solve seq-len --model qwen3-0.6b --budget 24GB --batch-size 1
      memsym solve concurrency --model qwen3-0.6b --seq-len 2048 --gpu rtx-4090
      memsym solve concurrency --model deepseek-v3 --weight-quant w8a8 --budget 80e9 --num-gpus 16
      memsym solve num-gpus --model llama-3.1-70b --gpu a100-80gb --batch-size 8 --seq-len 8192
      memsym solve seq-len --symbolic --show-formula
    """
    target = variable.replace("-", "_")
    pinned_by = {"seq_len": "seq_len", "batch_size": "batch_size", "concurrency": "batch_size",
                 "num_gpus": "num_gpus", "tp": "tp"}[target]
    if _explicit(pinned_by):
        flag = "--" + pinned_by.replace("_", "-")
        raise click.UsageError(f"solve {variable}: {flag} pins the variable being solved; leave {flag} out")
    if _explicit("serving_activations") and target != "concurrency":
        raise click.UsageError("--serving-activations applies to 'solve concurrency' only")
    knobs = scenario_knobs(kw)
    if target in ("seq_len", "batch_size", "concurrency"):
        knobs[pinned_by] = None
    if symbolic:
        return _solve_symbolic(variable, target, knobs, serving_activations, latex, as_json)
    if model_id is None and config_path is None:
        raise click.UsageError("give --model ID or --config PATH (or --symbolic for the formula alone)")
    from engine.gpus import make_budget

    limits = make_budget(budget, gpu_name, num_gpus, utilization)
    if target == "tp":
        from engine.registry import load_spec
        from engine.scenario import Scenario
        from engine.solve import solve_tensor_parallel

        spec = load_spec(model_id, config_path)
        name, solution = spec.name, solve_tensor_parallel(spec, Scenario(**knobs), limits)
    elif target == "num_gpus" and knobs["mode"] == "training":
        from engine.registry import load_spec
        from engine.scenario import Scenario
        from engine.search import smallest_num_gpus

        if limits.num_gpus != 1:
            raise click.UsageError("solve num-gpus: --num-gpus is what is solved; leave it out")
        spec = load_spec(model_id, config_path)
        fixed = {k: knobs[k] for k in ("tp", "pp", "zero") if _explicit(k)}
        solution, _ = smallest_num_gpus(spec, Scenario(**knobs), limits.per_gpu_bytes, fixed=fixed)
        name = spec.name
    else:
        from engine.solve import solve_budget

        name, mm = _analysis_model(model_id, config_path, False, knobs, ())
        solution = solve_budget(mm, target, limits, activations=serving_activations)
    if as_json:
        click.echo(json.dumps({"model": name, **solution.to_dict()}, indent=2))
    else:
        click.echo(report.format_solution(name, solution, limits, show_formula, latex))


def _solve_symbolic(variable, target, knobs, serving_activations, latex, as_json):
    from engine.analysis import symbolic as symbolic_model
    from engine.solve import branch_quadratics, closed_form, serving_model

    if target not in ("seq_len", "batch_size", "concurrency"):
        raise click.UsageError(f"solve {variable} --symbolic: a GPU count has no closed form; give --model")
    for name in ("batch_size", "seq_len"):
        if not _explicit(name):
            knobs[name] = None
    mm = symbolic_model(keep_reserve_free=not _explicit("reserve"), **knobs)
    if target == "concurrency":
        mm = serving_model(mm, serving_activations)
    solved = "batch_size" if target == "concurrency" else target
    expr = mm.pinned(mm.total)
    form = closed_form(expr, solved)
    if form is None:
        raise click.UsageError(f"no closed form for {variable} here (sliding windows and paged blocks need a model)")
    branches = branch_quadratics(expr, _symbol(solved))
    if as_json:
        click.echo(json.dumps({"variable": target, "closed_form": report.show(form, False), "latex": report.show(form, True),
                               "branches": [{"C0": report.show(c, False), "C1": report.show(b, False), "C2": report.show(a, False)}
                                            for a, b, c in branches],
                               "inputs": {**mm.inputs, "budget_bytes": "budget_bytes"}}, indent=2))
        return
    x = report.show(_symbol(solved), latex)
    click.echo(f"largest {target} with total <= budget_bytes (M), generic dense GQA decoder.")
    click.echo(f"The total is the largest of {len(branches)} branches, each C0 + C1*{x} + C2*{x}**2:")
    for i, (a, b, c) in enumerate(branches, 1):
        click.echo(f"  branch {i}:")
        for label, value in (("C0", c), ("C1", b), ("C2", a)):
            click.echo(f"    {label} = {report.show(value, latex)}")
    click.echo(f"Each branch fits while {x} <= (M - C0)/C1 (C2 = 0), or the positive root of C2*{x}**2 + C1*{x} + C0 = M;")
    click.echo(f"{target} = {report.show(form, latex)}")


@cli.command()
@model_options
@scenario_options
@budget_options
@click.option("--max-gpus", type=click.IntRange(1, 1 << 20), default=4096, show_default=True,
              help="Largest GPU count to consider.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plan(model_id, config_path, budget, gpu_name, num_gpus, utilization, max_gpus, as_json, **kw):
    """The fewest GPUs that fit, over tensor/pipeline degrees and ZeRO stages, with every
    configuration tried.

    For each ZeRO stage, TP (divisors of the heads; at most 8 for training) and PP
    (divisors of the layers) the smallest data-parallel degree that fits is found and
    checked by substitution. --tp, --pp or --zero given on the command line are kept fixed.

    \b
    Example:
      memsym plan --model llama-3.1-70b --mode training --seq-len 4096 --gpu h100-80gb
    """
    from engine.gpus import make_budget
    from engine.registry import load_spec
    from engine.scenario import Scenario
    from engine.search import plan as run_plan

    if _explicit("num_gpus"):
        raise click.UsageError("plan: the GPU count is what is searched; leave --num-gpus out (see --max-gpus)")
    knobs = scenario_knobs(kw)
    limits = make_budget(budget, gpu_name, 1, utilization)
    spec = load_spec(model_id, config_path)
    fixed = {k: knobs[k] for k in ("tp", "pp", "zero") if _explicit(k)}
    result = run_plan(spec, Scenario(**knobs), limits.per_gpu_bytes, max_gpus=max_gpus,
                      tp_choices=[fixed["tp"]] if "tp" in fixed else None,
                      pp_choices=[fixed["pp"]] if "pp" in fixed else None,
                      zero_stages=(fixed["zero"],) if "zero" in fixed else None)
    if as_json:
        click.echo(json.dumps({"model": spec.name, "inputs": Scenario(**knobs).as_inputs(), **result.to_dict()},
                              indent=2))
        return
    from engine.units import format_bytes

    best = result.best
    click.echo(f"{spec.name}: fewest GPUs with at most {limits.per_gpu_bytes:,} B per GPU "
               f"({format_bytes(limits.per_gpu_bytes)})")
    click.echo(f"best: {best.num_gpus} GPUs (tp={best.tp}, pp={best.pp}, dp={best.dp}, zero={best.zero}), "
               f"{best.per_gpu_bytes:,} B per GPU")
    click.echo(f"{'gpus':>6} {'tp':>4} {'pp':>4} {'dp':>6} {'zero':>4} {'per-GPU bytes':>20}  fits")
    for c in sorted(result.tried, key=lambda c: (not c.fits, c.num_gpus, c.tp, c.pp, c.zero)):
        mark = "yes" if c.fits else "no (at the largest dp)"
        click.echo(f"{c.num_gpus:>6} {c.tp:>4} {c.pp:>4} {c.dp:>6} {c.zero:>4} {c.per_gpu_bytes:>20,}  {mark}")


@cli.command()
@model_options
@scenario_options
@click.option("--symbolic", is_flag=True, help="No model: a generic dense GQA decoder, every shape a symbol.")
@click.option("--latex", is_flag=True, help="Formulas as LaTeX.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def formula(model_id, config_path, symbolic, latex, as_json, **kw):
    """The total as a formula, collected by powers of batch_size and seq_len
    (each left free unless given), with what each coefficient costs.

    \b
    Examples:
      memsym formula --symbolic
      memsym formula --model qwen3-0.6b
      memsym formula --model llama-3.1-8b --attention eager --batch-size 1 --latex
    """
    from engine.analysis import canonical_form

    name, mm = _analysis_model(model_id, config_path, symbolic, scenario_knobs(kw), ("batch_size", "seq_len"))
    variables = [v for v in ("batch_size", "seq_len") if mm.facts.get(_symbol(v)) is None]
    form = canonical_form(mm, variables)
    if as_json:
        click.echo(json.dumps({"model": name, "variables": variables, "expression": report.show(form.expression, False),
                               "latex": report.show(form.expression, True), "coefficients": _rows(form.rows),
                               "peak": [{"branch": b, "coefficients": _rows(f.rows)} for b, f in form.peaks],
                               "inputs": mm.inputs}, indent=2))
        return
    click.echo(f"{name}: total = " + " + ".join(_product(r, latex) for r in form.rows))
    for r in form.rows:
        payers = f" ({', '.join(r.terms)})" if r.terms else ""
        click.echo(f"\n[{report.show(r.monomial, latex)}] {r.meaning}{payers}:\n    {report.show(r.coefficient, latex)}")
        for branch, sub in r.branches:
            click.echo(f"  peak branch {branch}: " + " + ".join(_product(b, latex) for b in sub.rows))


def _symbol(name: str):
    from formulas.symbols import symbol

    return symbol(name)


def _product(row, latex: bool) -> str:
    coefficient, monomial = report.show(row.coefficient, latex), report.show(row.monomial, latex)
    if row.monomial == 1:
        return coefficient
    if row.coefficient == 1:
        return monomial
    return f"({coefficient})*{monomial}" if row.coefficient.is_Add else f"{coefficient}*{monomial}"


def _rows(rows) -> list[dict]:
    return [{"monomial": report.show(r.monomial, False), "coefficient": report.show(r.coefficient, False),
             "meaning": r.meaning, "terms": list(r.terms)} for r in rows]


def _variable_name(text: str) -> str:
    from formulas.symbols import SYMBOLS

    name = text.strip().replace("-", "_")
    if name not in SYMBOLS:
        raise click.UsageError(f"--wrt: unknown variable {text!r} (e.g. batch_size, seq_len, hidden_size)")
    return name


@cli.command(name="diff")
@click.option("--wrt", required=True, metavar="VAR", help="The variable: seq_len, batch_size, or any symbol.")
@model_options
@scenario_options
@click.option("--symbolic", is_flag=True, help="No model: a generic dense GQA decoder, every shape a symbol.")
@click.option("--latex", is_flag=True, help="Formulas as LaTeX.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def diff_command(wrt, model_id, config_path, symbolic, latex, as_json, **kw):
    """The partial derivative d total / d VAR: symbolic, and exact at the point
    given by --batch-size and --seq-len, beside the finite difference total(x+1) - total(x).

    \b
    Examples:
      memsym diff --wrt batch-size --model qwen3-0.6b --seq-len 2048
      memsym diff --wrt seq-len --symbolic
    """
    from engine.analysis import as_decimal, derivative

    variable = _variable_name(wrt)
    knobs = scenario_knobs(kw)
    point = {k: knobs[k] for k in ("batch_size", "seq_len")}
    knobs.update(batch_size=None, seq_len=None)  # symbols in the derivative, values at the point
    name, mm = _analysis_model(model_id, config_path, symbolic, knobs, ())
    d = derivative(mm, variable, **({} if symbolic else point))
    if as_json:
        click.echo(json.dumps({"model": name, "variable": variable, "derivative": report.show(d.expression, False),
                               "latex": report.show(d.expression, True), "at": None if symbolic else point,
                               "value": None if d.value is None else str(d.value),
                               "value_decimal": None if d.value is None else as_decimal(d.value, 12),
                               "finite_difference": d.finite_difference,
                               "branches": [report.show(b, False) for b in d.branches]}, indent=2))
        return
    if d.value is None:
        click.echo(f"{name}: d total / d {variable} = one of (the branch of the peak that is active):")
        for b in d.branches:
            click.echo(f"  {report.show(b, latex)}")
        return
    at = ", ".join(f"{k}={v}" for k, v in point.items())
    click.echo(f"{name}: d total / d {variable} = {report.show(d.expression, latex)}  (the branch active at {at})")
    click.echo(f"  at {at}: {as_decimal(d.value, 12)} bytes per unit of {variable} (exact: {d.value})")
    if d.finite_difference is not None:
        click.echo(f"  total({variable}+1) - total({variable}) = {d.finite_difference:,} bytes")


@cli.command()
@model_options
@scenario_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def sensitivity(model_id, config_path, as_json, **kw):
    """Elasticity (d total / d x) * x / total of every symbol at one point:
    0.5 means +1% of x gives +0.5% of memory.

    \b
    Example:
      memsym sensitivity --model llama-3.1-8b --batch-size 8 --seq-len 8192
    """
    from engine.analysis import as_decimal, sensitivity as run_sensitivity
    from engine.api import memory_model

    spec, mm = memory_model(model_id, config_path, **scenario_knobs(kw))
    total, rows = run_sensitivity(mm)
    if as_json:
        click.echo(json.dumps({"model": spec.name, "total_bytes": str(total), "inputs": mm.inputs, "sensitivity": [
            {"symbol": r.symbol, "value": str(r.value), "derivative": str(r.derivative),
             "elasticity": as_decimal(r.elasticity)} for r in rows]}, indent=2))
        return
    click.echo(f"{spec.name}: total {as_decimal(total, 30)} bytes at batch_size={mm.inputs['batch_size']}, "
               f"seq_len={mm.inputs['seq_len']}")
    click.echo(f"{'symbol':<24} {'value':>14} {'d total / d symbol':>22} {'elasticity':>12}")
    for r in rows:
        click.echo(f"{r.symbol:<24} {as_decimal(r.value, 12):>14} {as_decimal(r.derivative, 12):>22} "
                   f"{as_decimal(r.elasticity):>12}")


@cli.command(name="crossover")
@click.argument("term_a")
@click.argument("term_b")
@click.option("--wrt", required=True, metavar="VAR", help="The variable that grows, e.g. seq-len.")
@model_options
@scenario_options
@click.option("--symbolic", is_flag=True, help="No model: the crossover as a formula.")
@click.option("--latex", is_flag=True, help="Formulas as LaTeX.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def crossover_command(term_a, term_b, wrt, model_id, config_path, symbolic, latex, as_json, **kw):
    """The smallest integer VAR at which TERM_A reaches TERM_B (e.g. where the KV cache
    outgrows the weights), checked by substitution at VAR and VAR - 1.

    \b
    Examples:
      memsym crossover kv_cache weights --wrt seq-len --model qwen3-0.6b --batch-size 1
      memsym crossover kv_cache weights --wrt seq-len --symbolic
    """
    from engine.analysis import crossover

    variable = _variable_name(wrt)
    if variable in ("batch_size", "seq_len") and _explicit(variable):
        flag = "--" + variable.replace("_", "-")
        raise click.UsageError(f"crossover --wrt {wrt}: {flag} pins the variable; leave {flag} out")
    knobs = scenario_knobs(kw)
    if variable in ("batch_size", "seq_len"):
        knobs[variable] = None
    name, mm = _analysis_model(model_id, config_path, symbolic, knobs, ("batch_size",) if symbolic else ())
    c = crossover(mm, term_a, term_b, variable)
    if as_json:
        click.echo(json.dumps({"model": name, "term_a": term_a, "term_b": term_b, "variable": variable,
                               "value": c.value, "a_at_value": c.a_at_value, "b_at_value": c.b_at_value,
                               "a_before": c.a_before, "b_before": c.b_before, "method": c.method,
                               "closed_form": None if c.closed_form is None else report.show(c.closed_form, False),
                               "inputs": mm.inputs}, indent=2))
        return
    if c.value is None:
        click.echo(f"{name}: {term_a} >= {term_b} from {variable} = {report.show(c.closed_form, latex)}")
        return
    click.echo(f"{name}: {term_a} >= {term_b} from {variable} = {c.value:,}")
    click.echo(f"  at {c.value:,}: {term_a} {c.a_at_value:,} B, {term_b} {c.b_at_value:,} B")
    if c.a_before is not None:
        click.echo(f"  at {c.value - 1:,}: {term_a} {c.a_before:,} B, {term_b} {c.b_before:,} B")
    if c.closed_form is not None:
        click.echo(f"  closed form: {report.show(c.closed_form, latex)}")


def free_option(func):
    """--free KNOB (repeatable): keep a scenario knob's value a symbol (tp, pp, dp, lora-rank, ...)."""
    return click.option("--free", multiple=True, metavar="KNOB",
                        help="Keep this knob a symbol: tp, pp, dp, ep, cp, vpp, lora-rank, block-size, reserve, "
                             "comm-buffer, allocator-fraction (repeatable).")(func)


# --- emit: LaTeX, generated modules, sweeps, plots (engine/render.py, numeric.py, sweep.py, plot.py) --
def grid_options(func):
    """scenario_options with --batch-size and --seq-len taking lists and ranges (sweep, plot)."""
    func = scenario_options(func)
    func.__click_params__ = [p for p in func.__click_params__ if p.name not in ("batch_size", "seq_len")]
    func = click.option("--seq-len", "seq_len_values", default="2048", show_default=True, metavar="VALUES",
                        help="Tokens per sequence: 1024,2048 or 1024:131072:x2 (geometric) or 512:8192:+512.")(func)
    func = click.option("--batch-size", "batch_size_values", default="1", show_default=True, metavar="VALUES",
                        help="Sequences at once, as a list or range like --seq-len.")(func)
    return func


def _grid_model(model_id, config_path, kw: dict):
    """(axes, MemoryModel) with batch_size and seq_len free, their values parsed from the flags."""
    from engine.api import memory_model
    from engine.sweep import parse_values

    axes = {"batch_size": parse_values(kw.pop("batch_size_values"), "--batch-size"),
            "seq_len": parse_values(kw.pop("seq_len_values"), "--seq-len")}
    kw["batch_size"] = kw["seq_len"] = None
    return axes, memory_model(model_id, config_path, **scenario_knobs(kw))[1]


@cli.command()
@model_options
@scenario_options
@click.option("--symbolic", is_flag=True, help="No model: a generic dense GQA decoder, every shape a symbol.")
@click.option("--values", "with_values", is_flag=True,
              help="Add the model's values and the exact bytes at --batch-size and --seq-len.")
@click.option("--standalone", is_flag=True, help="A complete document (amsmath only) that pdflatex compiles.")
@click.option("--format", "fmt", type=click.Choice(("tex", "markdown")), default="tex", show_default=True,
              help="LaTeX, or Markdown with $$-math (GitHub, Jupyter).")
@free_option
def latex(model_id, config_path, symbolic, with_values, standalone, fmt, free, **kw):
    """The memory terms as LaTeX: an align* block with one named row per term and the
    total (training: each phase and their max), what each term holds and its source, and
    a legend of the symbols (LaTeX name, meaning, unit). Formulas keep b and s free.

    \b
    Examples:
      memsym latex --model qwen3-0.6b --values
      memsym latex --model llama-3.1-8b --mode training --standalone > memory.tex
      memsym latex --symbolic --format markdown
    """
    from engine.render import render_latex, render_markdown

    if symbolic == (model_id is not None or config_path is not None):
        raise click.UsageError("give one of --model ID, --config PATH or --symbolic")
    if symbolic and with_values:
        raise click.UsageError("--values needs a model's values: give --model or --config instead of --symbolic")
    if standalone and fmt != "tex":
        raise click.UsageError("--standalone makes a LaTeX document; leave it out with --format markdown")
    knobs = scenario_knobs(kw)
    values = {k: knobs.pop(k) for k in ("batch_size", "seq_len")}
    for name, value in values.items():
        if value < 1:
            raise click.BadParameter(f"must be a positive integer, got {value!r}", param_hint="--" + name.replace("_", "-"))
    values = values if with_values else None
    knobs["batch_size"] = knobs["seq_len"] = None
    if symbolic:
        from engine.analysis import symbolic as symbolic_model

        mm = symbolic_model(**knobs)
    else:
        from engine.api import memory_model

        mm = memory_model(model_id, config_path, **knobs)[1]
    mm = mm.with_free(*free)
    if fmt == "markdown":
        click.echo(render_markdown(mm, values=values), nl=False)
    else:
        click.echo(render_latex(mm, values=values, standalone=standalone), nl=False)


@cli.command()
@model_options
@scenario_options
@click.option("-o", "--output", required=True, metavar="FILE.py", help="Where to write the module.")
@free_option
def codegen(model_id, config_path, output, free, **kw):
    """Write a standalone Python module that imports only NumPy: one function per term
    and total_bytes(...), each with its formula and source in the docstring. batch_size
    and seq_len stay arguments unless given.

    \b
    Example:
      memsym codegen --model qwen3-0.6b -o qwen3_memory.py
      memsym codegen --model llama-3.1-70b --mode training --tp 8 --free tp -o llama_tp.py
      python -c "import qwen3_memory as m; print(m.total_bytes(batch_size=8, seq_len=4096))"
    """
    from engine.numeric import variables_of, write_module

    if model_id is None and config_path is None:
        raise click.UsageError("give --model ID or --config PATH")
    _, mm = _analysis_model(model_id, config_path, False, scenario_knobs(kw), ("batch_size", "seq_len"))
    mm = mm.with_free(*free)
    write_module(mm, output)
    click.echo(f"wrote {output}: {len(mm.terms) + 1} functions of ({', '.join(variables_of(mm))})")


@cli.command()
@model_options
@grid_options
@click.option("--csv", "as_csv", is_flag=True, help="Comma-separated values, one row per point.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def sweep(model_id, config_path, as_csv, as_json, **kw):
    """Bytes of the total and every term over a grid of batch sizes and sequence lengths,
    through the compiled NumPy function (exact integers below 2^53 bytes).

    \b
    Examples:
      memsym sweep --model qwen3-0.6b --batch-size 1,2,4,8 --seq-len 1024:131072:x2
      memsym sweep --model llama-3.1-8b --seq-len 512:8192:+512 --csv > grid.csv
    """
    from engine.sweep import sweep as run_sweep
    from engine.units import format_bytes

    if as_csv and as_json:
        raise click.UsageError("give one of --csv and --json")
    axes, mm = _grid_model(model_id, config_path, kw)
    result = run_sweep(mm, axes)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    rows = result.rows()
    if as_csv:
        first = next(rows)
        click.echo(",".join(first))
        for row in (first, *rows):
            click.echo(",".join(str(v) for v in row.values()))
        return
    click.echo(f"{mm.name} ({mm.mode}): {result.points:,} points")
    click.echo(f"{'batch_size':>10} {'seq_len':>10} {'total_bytes':>22}  size")
    for row in rows:
        click.echo(f"{row['batch_size']:>10,} {row['seq_len']:>10,} {row['total_bytes']:>22,}  "
                   f"{format_bytes(row['total_bytes'])}")


@cli.command()
@model_options
@grid_options
@budget_options
@click.option("-o", "--output", required=True, metavar="FILE", help="FILE.png or FILE.svg.")
@click.option("--format", "fmt", default=None, metavar="png|svg", help="Image format  [default: from FILE]")
def plot(model_id, config_path, budget, gpu_name, num_gpus, utilization, output, fmt, **kw):
    """Draw the memory terms stacked against seq_len or batch_size (whichever is given as
    a list or range), with the budget as a line and the largest value that fits marked
    (solved exactly). Needs matplotlib: pip install 'memsym[plot]'.

    \b
    Example:
      memsym plot --model qwen3-0.6b --batch-size 8 --seq-len 1024:131072:x2 --budget 24GB -o kv.png
    """
    from engine.plot import output_format, plot as draw

    output_format(output, fmt)  # a bad format or suffix fails before any work
    axes, mm = _grid_model(model_id, config_path, kw)
    ranged = [name for name, values in axes.items() if len(values) > 1]
    if len(ranged) != 1:
        raise click.UsageError("give a list or range for exactly one of --seq-len and --batch-size")
    limits = None
    if budget is not None or gpu_name is not None:
        from engine.gpus import make_budget

        limits = make_budget(budget, gpu_name, num_gpus, utilization)
    result = draw(mm, ranged[0], axes, output, fmt, limits)
    click.echo(f"wrote {result.path}" + (f": {result.note}" if result.note else ""))


# --- memsym serve: vLLM's own flags (engine/serving.py) --------------------------------------

def _max_model_len(ctx, param, value):
    if value is None or value.strip().lower() in ("auto", "-1"):
        return None
    try:
        number = int(value.replace("_", ""))
    except ValueError:
        raise click.BadParameter(f"must be a positive integer or 'auto', got {value!r}") from None
    if number < 1:
        raise click.BadParameter(f"must be a positive integer or 'auto', got {value!r}")
    return number


@cli.command()
@click.option("--model", "model_id", required=True, metavar="ID|ORG/NAME|PATH",
              help="Registry id, Hugging Face repo id, or a directory holding config.json.")
@click.option("--tensor-parallel-size", "-tp", "tp", type=click.IntRange(1, 1 << 10), default=1, show_default=True)
@click.option("--pipeline-parallel-size", "-pp", "pp", type=click.IntRange(1, 1 << 10), default=1, show_default=True)
@click.option("--max-model-len", callback=_max_model_len, default=None, metavar="N|auto",
              help="Tokens per request  [default: auto, the largest that starts]")
@click.option("--max-num-seqs", type=click.IntRange(1, 1 << 20), default=None, help="[default: vLLM's for the GPU]")
@click.option("--max-num-batched-tokens", type=click.IntRange(1, 1 << 24), default=None,
              help="[default: vLLM's for the GPU]")
@click.option("--gpu-memory-utilization", default="0.9", show_default=True, metavar="FRACTION")
@click.option("--kv-cache-dtype", type=click.Choice(("auto", "fp8", "fp8_e4m3", "fp8_e5m2")), default="auto",
              show_default=True)
@click.option("--dtype", type=click.Choice(("auto", "bfloat16", "half", "float16", "float32")), default="auto",
              show_default=True)
@click.option("--quantization", "-q", default=None, metavar="METHOD", help="awq, gptq, fp8, bitsandbytes, ...")
@click.option("--block-size", type=click.IntRange(1, 1 << 16), default=16, show_default=True)
@click.option("--enforce-eager", is_flag=True, help="No CUDA graphs (0.19 does not subtract them either way).")
@click.option("--vllm-version", type=click.Choice(("0.19", "0.6")), default="0.19", show_default=True,
              help="0.19: the V1 engine (0.8 and later); 0.6: the V0 engine.")
@click.option("--gpu", "gpu_name", default=None, metavar="NAME", help="A GPU from 'memsym gpus'.")
@click.option("--gpu-memory", default=None, metavar="SIZE", help="cudaMemGetInfo total of one GPU, e.g. 79.19GiB.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def serve(model_id, tp, pp, max_model_len, max_num_seqs, max_num_batched_tokens, gpu_memory_utilization,
          kv_cache_dtype, dtype, quantization, block_size, enforce_eager, vllm_version, gpu_name, gpu_memory,
          as_json):
    """Predict what vLLM prints at start-up: available KV cache memory, GPU KV cache size
    and maximum concurrency, from the flags of a `vllm serve` line.

    \b
    Example:
      memsym serve --model meta-llama/Llama-3.1-8B-Instruct --gpu h100-80gb --max-model-len 8192
    """
    from engine.gpus import parse_utilization
    from engine.serving import serve as predict

    prediction = predict(
        model_id, tp=tp, pp=pp, gpu_name=gpu_name, gpu_memory=gpu_memory, max_model_len=max_model_len,
        max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens,
        gpu_memory_utilization=parse_utilization(gpu_memory_utilization), kv_cache_dtype=kv_cache_dtype,
        dtype=dtype, quantization=quantization, block_size=block_size, enforce_eager=enforce_eager,
        version=vllm_version,
    )
    if as_json:
        click.echo(json.dumps(prediction.to_dict(), indent=2))
    if prediction.refusal:  # one line, as vLLM's own start-up error
        click.echo(f"memsym: error: vLLM refuses to start: {prediction.refusal}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    if not as_json:
        click.echo(report.format_serve(prediction))


def main():
    """Console-script entry point."""
    cli.main()


if __name__ == "__main__":
    main()
