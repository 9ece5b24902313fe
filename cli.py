"""memsym's command line: each command parses, makes one library call, formats.

The options every model-building command shares are generated from the knob table
(``engine.scenario.KNOBS``); a command hands the library only the options the user gave
(a knob left out keeps its default, a size left out may stay free), and prints the result
with engine/report.py or its ``to_dict()`` for ``--json``. Errors from the engine
(``engine.errors.MemsymError``) and bad flags become one line on stderr and exit status 2;
with ``--json`` the error is also printed as ``{"error": ...}``. The engine (and SymPy) is
imported inside each command, so ``memsym --help`` starts fast.
"""

from __future__ import annotations

import click

from engine import cli_outputs, report
from engine.cli_options import (GENERIC, MemsymGroup, budget_options, emit, serve_options, given, json_option, latex_option,
                                model_options, option, scenario_options, symbolic_option)
from engine.questions import SOLVED_KNOB

SOLVE_VARIABLES = tuple(name.replace("_", "-") for name in SOLVED_KNOB)  # seq-len, ..., num-gpus, tp


@click.group(cls=MemsymGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="memsym", prog_name="memsym")
def cli():
    """Symbolic GPU-memory formulas for LLM inference and training.

    \b
    Example:
      memsym estimate --model qwen3-0.6b --seq-len 2048
    """


@cli.command()
@json_option
def models(as_json):
    """List the models of the embedded registry.

    \b
    Example:
      memsym models --json
    """
    from engine.questions import model_table

    rows = model_table()
    emit(rows, as_json, None if as_json else report.format_models(rows))


@cli.command()
@model_options
@scenario_options
@option("--checkpoint", "checkpoint_dir", type=click.Path(file_okay=False), metavar="DIR", group="model",
        help="A local checkpoint folder: its config.json, and the stored bytes from its "
             "*.safetensors headers beside the formula's weights (no tensor is loaded).")
@json_option
def estimate(as_json, **kw):
    """Exact bytes of every memory term for one model and scenario.

    \b
    Examples:
      memsym estimate --model qwen3-0.6b --seq-len 2048
      memsym estimate --model llama-3.1-8b --mode training --batch-size 4 --seq-len 4096 --json
      memsym estimate --checkpoint ./Qwen3-0.6B --json
      memsym estimate --gguf ./Llama-3.1-8B-Q4_K_M.gguf --seq-len 8192 --cache-type-k q8_0
      memsym estimate --model qwen3-0.6b --mode training --profile transformers --gradient-checkpointing
    """
    from engine.questions import estimate as run_estimate

    result = run_estimate(**given(kw))
    emit(result, as_json, None if as_json else report.format_any_estimate(result))


@cli.command()
@json_option
def gpus(as_json):
    """List the GPU catalog: memory in exact bytes, with the source of each figure.

    \b
    Example:
      memsym gpus
    """
    from engine.questions import gpu_table

    rows = gpu_table()
    emit(rows, as_json, None if as_json else report.format_gpus(rows))


@cli.command()
@click.argument("variable", type=click.Choice(SOLVE_VARIABLES), metavar="VARIABLE")
@model_options
@scenario_options
@budget_options
@symbolic_option("No model: the closed form for a generic dense GQA decoder.")
@option("--serving-activations", type=click.Choice(("none", "prefill")), default="none", show_default=True,
        group="serving",
        help="concurrency: leave the activation peak out (the seed's arithmetic) or keep one prefill's.")
@option("--show-formula", is_flag=True, help="Print the closed form the answer came from.")
@latex_option
@json_option
def solve(variable, show_formula, latex, as_json, **kw):
    """The largest VARIABLE that fits a memory budget (seq-len, batch-size, concurrency),
    or the fewest GPUs (num-gpus) or smallest tensor-parallel degree (tp).

    In inference mode seq-len, batch-size and concurrency default to --profile vllm: what
    vLLM starts with (its max concurrency, the largest max_model_len that starts), the
    budget as the cudaMemGetInfo total x --gpu-memory-utilization (default 0.9), --num-gpus
    as tensor_parallel_size. --profile megatron gives the bare-tensor answer, checked by
    substitution: total(n) <= budget < total(n+1), weights plus each request's KV cache.

    \b
    Examples:
      memsym solve seq-len --model qwen3-0.6b --budget 24GB
      memsym solve concurrency --model llama-3.1-8b --seq-len 2048 --gpu rtx-4090
      memsym solve concurrency --model llama-3.1-8b --seq-len 2048 --gpu rtx-4090 --profile megatron
      memsym solve concurrency --model deepseek-v3 --weight-quant w8a8 --budget 80e9 --num-gpus 16 --profile megatron
      memsym solve num-gpus --model llama-3.1-70b --gpu a100-80gb --batch-size 8 --seq-len 8192
      memsym solve seq-len --symbolic --show-formula
    """
    from engine.questions import solve as run_solve

    answer = run_solve(variable, **given(kw))
    emit(answer, as_json, None if as_json else report.format_answer(answer, show_formula, latex))


@cli.command()
@model_options
@scenario_options
@budget_options
@option("--max-gpus", type=click.IntRange(1, 1 << 20), default=4096, show_default=True, group="parallelism",
        help="Largest GPU count to consider.")
@json_option
def plan(as_json, **kw):
    """The fewest GPUs that fit, over tensor/pipeline degrees and ZeRO stages, with every
    configuration tried.

    For each ZeRO stage, TP (divisors of the heads; at most 8 for training) and PP
    (divisors of the layers) the smallest data-parallel degree that fits is found and
    checked by substitution. --tp, --pp or --zero given on the command line are kept fixed.

    \b
    Example:
      memsym plan --model llama-3.1-70b --mode training --seq-len 4096 --gpu h100-80gb
    """
    from engine.questions import plan as run_plan

    answer = run_plan(**given(kw))
    emit(answer, as_json, None if as_json else report.format_plan(answer))


@cli.command()
@model_options
@scenario_options
@symbolic_option(GENERIC)
@latex_option
@json_option
def formula(latex, as_json, **kw):
    """The total as a formula, collected by powers of batch_size and seq_len
    (each left free unless given), with what each coefficient costs.

    \b
    Examples:
      memsym formula --symbolic
      memsym formula --model qwen3-0.6b
      memsym formula --model llama-3.1-8b --attention eager --batch-size 1 --latex
    """
    from engine.questions import formula as run_formula

    answer = run_formula(**given(kw))
    emit(answer, as_json, None if as_json else report.format_formula(answer, latex))


@cli.command(name="diff")
@option("--wrt", required=True, metavar="VAR", group="scenario",
        help="The variable: seq_len, batch_size, or any symbol.")
@model_options
@scenario_options
@symbolic_option(GENERIC)
@latex_option
@json_option
def diff_command(wrt, latex, as_json, **kw):
    """The partial derivative d total / d VAR: symbolic, and exact at the point
    given by --batch-size and --seq-len, beside the finite difference total(x+1) - total(x).

    \b
    Examples:
      memsym diff --wrt batch-size --model qwen3-0.6b --seq-len 2048
      memsym diff --wrt seq-len --symbolic
    """
    from engine.questions import diff

    answer = diff(wrt, **given(kw))
    emit(answer, as_json, None if as_json else report.format_diff(answer, latex))


@cli.command()
@model_options
@scenario_options
@json_option
def sensitivity(as_json, **kw):
    """Elasticity (d total / d x) * x / total of every symbol at one point:
    0.5 means +1% of x gives +0.5% of memory.

    \b
    Example:
      memsym sensitivity --model llama-3.1-8b --batch-size 8 --seq-len 8192
    """
    from engine.questions import sensitivity as run_sensitivity

    answer = run_sensitivity(**given(kw))
    emit(answer, as_json, None if as_json else report.format_sensitivity(answer))


@cli.command(name="crossover")
@click.argument("term_a")
@click.argument("term_b")
@option("--wrt", required=True, metavar="VAR", group="scenario", help="The variable that grows, e.g. seq-len.")
@model_options
@scenario_options
@symbolic_option("No model: the crossover as a formula.")
@latex_option
@json_option
def crossover_command(term_a, term_b, wrt, latex, as_json, **kw):
    """The smallest integer VAR at which TERM_A reaches TERM_B (e.g. where the KV cache
    outgrows the weights), checked by substitution at VAR and VAR - 1.

    \b
    Examples:
      memsym crossover kv_cache weights --wrt seq-len --model qwen3-0.6b --batch-size 1
      memsym crossover kv_cache weights --wrt seq-len --symbolic
    """
    from engine.questions import crossover

    answer = crossover(term_a, term_b, wrt, **given(kw))
    emit(answer, as_json, None if as_json else report.format_crossover(answer, latex))


for command in (cli_outputs.latex, cli_outputs.codegen, cli_outputs.sweep, cli_outputs.plot, cli_outputs.html):
    cli.add_command(command)  # the commands that write formulas out (engine/cli_outputs.py)


# --- memsym serve: vLLM's own flags (engine/serving.py) --------------------------------------

@cli.command()
@serve_options
def serve(served_model, gpu_memory_utilization, vllm_version, as_json, **flags):
    """Predict what vLLM prints at start-up: available KV cache memory, GPU KV cache size
    and maximum concurrency, from the flags of a `vllm serve` line.

    \b
    Example:
      memsym serve --model meta-llama/Llama-3.1-8B-Instruct --gpu h100-80gb --max-model-len 8192
    """
    from engine.cli_options import refuse
    from engine.gpus import parse_utilization
    from engine.serving import serve as predict

    prediction = predict(served_model, gpu_memory_utilization=parse_utilization(gpu_memory_utilization),
                         version=vllm_version, **flags)
    if as_json or not prediction.refusal:
        emit(prediction, as_json, None if as_json else report.format_serve(prediction))
    if prediction.refusal:  # one line, as vLLM's own start-up error (after the JSON, which holds it too)
        refuse(f"vLLM refuses to start: {prediction.refusal}")


def main():
    """Console-script entry point."""
    cli.main()


if __name__ == "__main__":
    main()
