"""Framework profiles: plug-ins that turn (ModelSpec, Scenario) into a MemoryModel.

A profile models how one framework allocates memory: ``megatron`` (the kernels of
Korthikanti et al. 2022 and the ZeRO conventions), ``transformers`` (what transformers 5.24
+ PyTorch 2.13 keep alive), ... Each lives in its own module, which defines ``PROFILE``,
and is registered with one line in :data:`REGISTRY` (imported only when chosen, so
``memsym --help`` stays fast). :func:`build` refuses every knob the chosen profile does not
read, naming it, before the profile's own ``check`` and ``build`` run.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import TYPE_CHECKING, Callable

from engine.errors import InputError
from engine.profiles.default import DEFAULT, PARALLEL_DEFAULT, PARALLEL_KNOBS, choose

if TYPE_CHECKING:  # annotations only: these layers sit below the profiles
    from engine.model import MemoryModel
    from engine.scenario import Scenario
    from engine.spec import ModelSpec

# name -> module defining PROFILE; a new profile is one module and one line here.
REGISTRY: dict[str, str] = {
    "megatron": "engine.profiles.megatron",
    "transformers": "engine.profiles.transformers",
    "torchtune": "engine.profiles.torchtune",
    "vllm": "engine.profiles.vllm",
    "deepspeed": "engine.profiles.deepspeed",
    "torchtitan": "engine.profiles.torchtitan",
    "llamacpp": "engine.profiles.llamacpp",
}
# spellings kept for compatibility -> profile name
ALIASES: dict[str, str] = {"paper": "megatron"}
# DEFAULT (transformers), PARALLEL_DEFAULT (megatron), PARALLEL_KNOBS: engine/profiles/default.py
TRAINING_DEFAULT = DEFAULT  # the same profile since inference defaults to it too
# knob values only some profiles model: (field, value) -> the profiles that read it
ONLY_IN: dict[tuple[str, object], tuple[str, ...]] = {("precision", "amp"): ("transformers",)}


def _no_check(spec: "ModelSpec", scenario: "Scenario") -> None:
    return None


@dataclass(frozen=True)
class Profile:
    """One framework's memory model.

    ``knobs`` names the Scenario fields the profile reads; any other field set away from
    its default is refused by :func:`build`. ``check`` refuses values the profile reads
    but does not model (naming them); ``build`` returns the MemoryModel, every term with a
    source (``MemoryModel.sources``).
    """

    name: str
    summary: str
    modes: tuple[str, ...]
    knobs: frozenset[str]
    build: Callable[["ModelSpec", "Scenario"], "MemoryModel"]
    check: Callable[["ModelSpec", "Scenario"], None] = _no_check
    refusal_note: str = ""  # why unread knobs are refused, appended to the message


def names() -> tuple[str, ...]:
    """Every accepted ``--profile`` value: the profiles, then their aliases."""
    return (*REGISTRY, *ALIASES)


def canonical(name: str) -> str:
    """The profile name behind ``name`` (an alias or the name itself)."""
    name = ALIASES.get(name, name)
    if name not in REGISTRY:
        raise InputError(f"--profile: unknown value {name!r} (choose from {', '.join(names())})")
    return name


def default_for(scenario: "Scenario", spec: "ModelSpec | None" = None) -> str:
    """The profile a model is built with when ``--profile`` is not given: ``transformers`` on one
    device and for data-parallel training through accelerate (``--dp``, ``--zero``, ``--offload``),
    ``megatron`` for other parallel layouts and for what the transformers profile does not model
    (``spec``'s kind, a knob, a value; engine/profiles/default.py ``choose``, which also says why)."""
    return choose(spec, scenario, get(DEFAULT), accepts)[0]


def accepts(name: str, spec: "ModelSpec | None", scenario: "Scenario") -> bool:
    """Whether profile ``name`` models ``scenario`` (its knobs and, given ``spec``, its check)."""
    profile = get(name)
    try:
        refuse_unread_knobs(profile, scenario)
        if spec is not None:
            profile.check(spec, scenario.resolved(spec.torch_dtype, spec.name))
    except InputError:
        return False
    return True


def get(name: str) -> Profile:
    """The profile called ``name`` (or an alias of it), imported on first use."""
    return import_module(REGISTRY[canonical(name)]).PROFILE


def refuse_unread_knobs(profile: Profile, scenario: "Scenario") -> None:
    """An InputError naming the first knob set away from its default that ``profile`` does not read."""
    from engine.scenario import unread_knobs

    if scenario.mode not in profile.modes:
        raise InputError(f"--profile {profile.name}: --mode {scenario.mode} is not modelled "
                         f"(modes: {', '.join(profile.modes)})")
    for (field, value), readers in ONLY_IN.items():
        if getattr(scenario, field) == value and profile.name not in readers:
            raise InputError(f"--profile {profile.name}: --{field.replace('_', '-')} {value} is not modelled; "
                             f"{only_in_hint(readers, scenario)}")
    unread = unread_knobs(scenario, profile.knobs | {"mode"})
    if unread:
        note = f" ({profile.refusal_note})" if profile.refusal_note else ""
        knob = unread[0]
        raise InputError(f"--profile {profile.name}: {knob.shown(getattr(scenario, knob.name))} is not "
                         f"modelled{note}")


def only_in_hint(readers: tuple[str, ...], scenario: "Scenario") -> str:
    """``use --profile R`` for the first of ``readers`` that reads every knob ``scenario`` sets,
    else which knob stops each of them (so the hint never points at a second refusal)."""
    from engine.scenario import unread_knobs

    stops = []
    for name in readers:
        reader = get(name)
        unread = unread_knobs(scenario, reader.knobs | {"mode"})
        if scenario.mode in reader.modes and not unread:
            return f"use --profile {name}"
        stop = unread[0].shown(getattr(scenario, unread[0].name)) if unread else f"--mode {scenario.mode}"
        stops.append(f"{name}, which does not model {stop}")
    return f"no profile models both: it is modelled only by {'; '.join(stops)}"


def build(spec: "ModelSpec", scenario: "Scenario") -> "MemoryModel":
    """The memory model of ``spec`` under ``scenario``, as ``scenario.profile`` allocates it."""
    name, note = (scenario.profile, "") if scenario.profile else choose(spec, scenario, get(DEFAULT), accepts)
    profile = get(name)
    try:
        refuse_unread_knobs(profile, scenario)
        resolved = scenario.resolved(spec.torch_dtype, spec.name)  # --dtype auto: the checkpoint's dtype
        profile.check(spec, resolved)
    except InputError as error:
        if not note:
            raise
        raise InputError(f"{error} (without --profile memsym chose {name}: {note})") from None
    model = profile.build(spec, resolved)
    model.profile = profile.name
    model.inputs["profile"] = profile.name
    if note:  # the default fell back from transformers: the profile line says why
        model.inputs["profile_note"] = note
    if resolved is not scenario:
        model.inputs["read_as"] = {**scenario.readings(), "--dtype": f"auto read as {resolved.dtype} (the "
                                   "checkpoint's torch_dtype, as transformers' torch_dtype='auto')"}
    return model
