"""The command line's options, generated from the knob table, and --help in sections.

click has no option groups: :class:`GroupedOption` carries its section (one of
``engine.scenario.GROUPS``) and :class:`SectionedCommand` writes one ``--help`` section per
group. :func:`scenario_options` makes one option per row of ``engine.scenario.KNOBS`` (and
one per shortcut flag), so a knob's flag, choices, default and help are written once.
Imports no SymPy: ``memsym --help`` reads only this and the table.
"""

from __future__ import annotations

import json
import sys

import click
from click.core import ParameterSource

from engine.scenario import FREEABLE_ALIASES, GROUPS, KNOB_BY_NAME, KNOBS, knob_values

JSON_HELP = "Machine-readable output."
GENERIC = "No model: a generic dense GQA decoder, every shape a symbol."
# click's parameter names -> the library's argument names
LIBRARY_NAMES = {"model_id": "model", "config_path": "config", "checkpoint_dir": "checkpoint", "gpu_name": "gpu",
                 "batch_size_values": "batch_size", "seq_len_values": "seq_len"}
SHORTCUTS = {k.shortcut.name for k in KNOBS if k.shortcut is not None}


class GroupedOption(click.Option):
    """A click option that knows its --help section (one of engine.scenario.GROUPS)."""

    def __init__(self, *decls, group: str = "output", **attrs):
        super().__init__(*decls, **attrs)
        self.group = group


class SectionedCommand(click.Command):
    """A command whose --help lists its options in sections: Model, Scenario, ..., Output."""

    def format_options(self, ctx, formatter):
        sections: dict[str, list] = {group: [] for group in GROUPS}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is not None:
                sections[getattr(param, "group", "output")].append(record)
        for group, records in sections.items():
            if records:
                with formatter.section(group.capitalize()):
                    formatter.write_dl(records)


def option(*decls, group: str = "output", **attrs):
    """click.option, in the --help section ``group``."""
    return click.option(*decls, cls=GroupedOption, group=group, **attrs)


def apply_options(func, options: list):
    for opt in reversed(options):
        func = opt(func)
    return func


def model_options(func):
    """--model / --config: which architecture."""
    return apply_options(func, [
        option("--model", "model_id", metavar="ID", group="model",
               help="A registry id (see 'memsym models') or any Hugging Face repo id ORG/NAME[@REVISION]: "
                    "the local cache first, then the Hub (config.json and safetensors headers only)."),
        option("--config", "config_path", type=click.Path(dir_okay=True), group="model",
               help="A local config.json (or a folder holding one)."),
        option("--gguf", "gguf_path", type=click.Path(dir_okay=False), metavar="FILE", group="model",
               help="A llama.cpp GGUF file: architecture and stored bytes from its header "
                    "(--profile llamacpp unless another is given)."),
    ])


class SpelledChoice(click.Choice):
    """A click Choice that also takes a knob's other spellings (``bf16``, ``fp8``, ``auto``),
    passing them through as typed: engine/spellings.py reads them and the output echoes how."""

    def __init__(self, choices, aliases: dict):
        super().__init__(choices)
        self.aliases = aliases

    def convert(self, value, param, ctx):
        if isinstance(value, str) and value.strip().lower() in self.aliases:
            return value
        return super().convert(value, param, ctx)


def knob_options(knob) -> list:
    """The click option of one row of the knob table (and of its shortcut flag, if any)."""
    attrs = {"help": knob.help, "group": knob.group}
    if knob.kind == "switch":
        return [option(knob.flag, knob.name, is_flag=True, **attrs)]
    if knob.kind == "stage":
        kind = click.IntRange(min(knob.choices), max(knob.choices))
    elif knob.kind == "profile":
        from engine import profiles

        kind = click.Choice(profiles.names())
    else:
        kind = int if knob.kind == "count" else click.Choice(knob.choices) if knob.choices else str
        if knob.aliases and knob.choices:
            kind = SpelledChoice(knob.choices, knob.aliases)
    default = str(knob.default) if knob.parse is not None and knob.default is not None else knob.default
    out = [option(knob.flag, *knob.spellings, knob.name, type=kind, default=default, show_default=knob.default is not None,
                  metavar=knob.metavar, **attrs)]
    if knob.shortcut is not None:
        out.append(option(knob.shortcut.flag, knob.shortcut.name, is_flag=True, help=knob.shortcut.help,
                          group=knob.group))
    return out


def scenario_options(func):
    """The scenario knobs shared by every command that builds a memory model (engine.scenario.KNOBS)."""
    return apply_options(func, [opt for knob in KNOBS for opt in knob_options(knob)])


def budget_options(func):
    """--budget / --gpu, --num-gpus, --gpu-memory-utilization: the memory a solve must fit."""
    return apply_options(func, [
        option("--budget", metavar="SIZE", group="scenario",
               help="Memory of one GPU: 24GB (10^9 B), 24GiB (2^30 B), 1.5TB, 80e9 (bytes)."),
        option("--gpu", "gpu_name", metavar="NAME", group="scenario",
               help="A GPU of the catalog ('memsym gpus'), e.g. rtx-4090."),
        option("--gpu-memory", "gpu_memory", metavar="SIZE", group="scenario",
               help="A GPU the catalog lacks: its memory, read as --budget is (e.g. 48GiB)."),
        option("--num-gpus", type=int, default=1, show_default=True, group="parallelism",
               help="GPUs of that memory, read as a named layout the output states: inference --tp N "
                    "(an even split where no --tp N fits the heads), training tp x pp x dp."),
        option("--gpu-memory-utilization", "utilization", default=None, metavar="F", group="serving",
               help="Fraction of each GPU's memory that may be used, 0 < F <= 1 (vLLM's flag)  "
                    "[default: 0.9 (vLLM's) for the vllm profile's serving solves, else 1]"),
    ])


def grid_options(func):
    """scenario_options with --batch-size and --seq-len taking lists and ranges (sweep, plot)."""
    func = scenario_options(func)
    func.__click_params__ = [p for p in func.__click_params__ if p.name not in ("batch_size", "seq_len")]
    func = option("--seq-len", "seq_len_values", default="2048", show_default=True, metavar="VALUES",
                  group="scenario",
                  help="Tokens per sequence: 1024,2048 or 1024:131072:x2 (geometric) or 512:8192:+512.")(func)
    return option("--batch-size", "batch_size_values", default="1", show_default=True, metavar="VALUES",
                  group="scenario", help="Sequences at once, as a list or range like --seq-len.")(func)


def free_option(func):
    """--free KNOB (repeatable): keep a scenario knob's value a symbol (the knob table's freeable rows)."""
    names = ", ".join(n.replace("_", "-") for n in FREEABLE_ALIASES if n not in ("batch_size", "seq_len"))
    return option("--free", multiple=True, metavar="KNOB",
                  help=f"Keep this knob a symbol: {names} (repeatable).")(func)


json_option = option("--json", "as_json", is_flag=True, help=JSON_HELP)
latex_option = option("--latex", is_flag=True, help="Formulas as LaTeX.")


def symbolic_option(text: str):
    return option("--symbolic", is_flag=True, group="model", help=text)


GENERIC = "No model: a generic dense GQA decoder, every shape a symbol."
# click's parameter names -> the library's argument names
LIBRARY_NAMES = {"model_id": "model", "config_path": "config", "checkpoint_dir": "checkpoint", "gpu_name": "gpu",
                 "batch_size_values": "batch_size", "seq_len_values": "seq_len", "gpu_memory": "budget"}
SHORTCUTS = {k.shortcut.name for k in KNOBS if k.shortcut is not None}


def given(kw: dict) -> dict:
    """The options the user gave (not their defaults), as the library's keyword arguments."""
    ctx = click.get_current_context()
    chosen = {k: v for k, v in kw.items() if ctx.get_parameter_source(k) not in (None, ParameterSource.DEFAULT)}
    if "gpu_memory" in chosen and "budget" in chosen:
        raise click.UsageError("give one of --budget and --gpu-memory (the same size, two spellings)")
    rest = {LIBRARY_NAMES.get(k, k): v for k, v in chosen.items() if k not in KNOB_BY_NAME and k not in SHORTCUTS}
    knobs = knob_values(chosen)
    if "gguf_path" in rest:  # a GGUF file is read where a config.json would be (engine.registry.load_spec)
        if "config" in rest:
            raise click.UsageError("give one of --config PATH and --gguf FILE")
        rest["config"] = rest.pop("gguf_path")
        knobs.setdefault("profile", "llamacpp")
    return {**rest, **knobs}


# --- the group: every failure one line on stderr, exit status 2 -------------------------------
EXIT_BAD_INPUT = 2


class MemsymGroup(click.Group):
    """A click group whose every failure is one line on stderr and exit status 2."""

    command_class = SectionedCommand

    def main(self, args=None, prog_name=None, **extra):
        argv = list(sys.argv[1:] if args is None else args)
        extra.pop("standalone_mode", None)
        try:
            code = super().main(args=argv, prog_name=prog_name or "memsym", standalone_mode=False, **extra)
        except click.exceptions.Exit as exc:  # --help, --version
            sys.exit(exc.exit_code)
        except BrokenPipeError:  # `memsym sweep ... | head -1`: the reader has all it wanted
            _quiet_stdout()
            sys.exit(0)
        except SystemExit as exc:  # click's own EPIPE handling exits 1; memsym exits only 0 or 2
            if exc.code == 1:
                _quiet_stdout()
                sys.exit(0)
            raise
        except OSError as exc:  # stdout itself failed (a full disk, /dev/full): one line, not a traceback
            _fail(f"cannot write the output ({exc.strerror or exc})", argv)
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


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's final flush meets no closed pipe
    (the recipe of Python's ``signal`` documentation, "Note on SIGPIPE")."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout is not a file descriptor (a test runner)
        pass


def _fail(message: str, argv: list[str]) -> None:
    from engine.limits import MAX_MESSAGE, message_line

    message = message_line(message, MAX_MESSAGE - len("memsym: error: "))  # one printable line, cut
    if "--json" in argv:
        try:
            click.echo(json.dumps({"error": message}))
        except OSError:  # stdout is what failed
            pass
    click.echo(f"memsym: error: {message}", err=True)
    sys.exit(EXIT_BAD_INPUT)


def refuse(message: str) -> None:
    """Exit 2 with one error line on stderr, after a result was printed (``serve``'s refusal)."""
    click.echo(f"memsym: error: {message}", err=True)
    sys.exit(EXIT_BAD_INPUT)


def serve_options(func):
    """``memsym serve``: the flags of a ``vllm serve`` line, in vLLM's own spellings (engine/serving.py)."""
    count = click.IntRange
    return apply_options(func, [
        option("--model", "served_model", required=True, metavar="ID|ORG/NAME|PATH", group="model",
               help="Registry id, Hugging Face repo id, or a directory holding config.json."),
        option("--tensor-parallel-size", "-tp", "tp", type=count(1, 1 << 10), default=1, show_default=True,
               group="parallelism"),
        option("--pipeline-parallel-size", "-pp", "pp", type=count(1, 1 << 10), default=1, show_default=True,
               group="parallelism"),
        option("--max-model-len", default=None, metavar="N|auto", group="serving",
               help="Tokens per request  [default: auto, the largest that starts]"),
        option("--max-num-seqs", type=count(1, 1 << 20), default=None, group="serving",
               help="[default: vLLM's for the GPU]"),
        option("--max-num-batched-tokens", type=count(1, 1 << 24), default=None, group="serving",
               help="[default: vLLM's for the GPU]"),
        option("--gpu-memory-utilization", default="0.9", show_default=True, metavar="FRACTION", group="serving"),
        option("--kv-cache-dtype", type=click.Choice(("auto", "fp8", "fp8_e4m3", "fp8_e5m2")), default="auto",
               show_default=True, group="serving"),
        option("--dtype", type=click.Choice(("auto", "bfloat16", "half", "float16", "float32")), default="auto",
               show_default=True, group="serving"),
        option("--quantization", "-q", default=None, metavar="METHOD", group="serving",
               help="awq, gptq, fp8, bitsandbytes, ..."),
        option("--block-size", type=count(1, 1 << 16), default=16, show_default=True, group="serving"),
        option("--enable-prefix-caching/--no-enable-prefix-caching", default=False, group="serving",
               help="Sizes nothing for attention models; a hybrid's --mamba-cache-mode needs it."),
        option("--mamba-cache-mode", type=click.Choice(("none", "align", "all")), default="none", show_default=True,
               group="serving", help="Recurrent state pages per request under prefix caching (all: refused)."),
        option("--mamba-cache-dtype", type=click.Choice(("auto", "float32", "float16", "bfloat16")), default="auto",
               show_default=True, group="serving", help="Conv-state dtype of Mamba/Gated DeltaNet layers."),
        option("--mamba-ssm-cache-dtype", type=click.Choice(("auto", "float32", "float16", "bfloat16")),
               default="auto", show_default=True, group="serving", help="SSM-state dtype (auto: the conv dtype)."),
        option("--mxfp4-backend", type=click.Choice(("auto", "marlin", "triton", "flashinfer")), default="auto",
               show_default=True, group="serving", help="gpt-oss's MoE backend (auto: vLLM's rule for the --gpu; "
               "marlin: VLLM_MXFP4_USE_MARLIN=1 or no triton_kernels, as in 0.10.1)."),
        option("--enforce-eager", is_flag=True, group="serving",
               help="No CUDA graphs (0.19 does not subtract them either way)."),
        option("--vllm-version", type=click.Choice(("0.19", "0.6", "0.7")), default="0.19", show_default=True,
               group="serving", help="0.19: the V1 engine (0.8 and later); 0.6: the V0 engine; "
               "0.7: V0 with 0.7.1-0.7.3's absorbed MLA matrices."),
        option("--gpu", "gpu_name", default=None, metavar="NAME", group="scenario", help="A GPU from 'memsym gpus'."),
        option("--gpu-memory", default=None, metavar="SIZE", group="scenario",
               help="cudaMemGetInfo total of one GPU, e.g. 79.19GiB."),
        option("--json", "as_json", is_flag=True, help="Machine-readable output.", group="output"),
    ])


def emit(result, as_json: bool, text: str | None = None) -> None:
    """``result.to_dict()`` (or ``result`` itself) as JSON, or the finished text."""
    if as_json:
        click.echo(json.dumps(result.to_dict() if hasattr(result, "to_dict") else result, indent=2))
    else:
        click.echo(text)
