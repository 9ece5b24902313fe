"""memsym's engine: model specs and registry, composition of terms, evaluation.

Typical use::

    from engine import estimate, memory_model
    result = estimate("qwen3-0.6b", batch_size=1, seq_len=2048)
    result.evaluation.terms["kv_cache"]            # 234881024
    spec, mm = memory_model("qwen3-0.6b", batch_size=None, seq_len=None)
    mm.expression()                                # the total as a formula in b and s

Names are resolved on first use (PEP 562), so ``import engine.errors`` or the CLI's
``--help`` does not pay for importing SymPy.
"""

from importlib import import_module

_EXPORTS = {
    "Estimate": "engine.api", "estimate": "engine.api", "memory_model": "engine.api",
    "generic_spec": "engine.api", "symbolic_model": "engine.api",
    "count_parameters": "engine.architecture", "parameter_tensors": "engine.architecture",
    "build": "engine.profiles", "profile": "engine.profiles", "profile_names": "engine.profiles",
    "ConfigError": "engine.errors", "InfeasibleError": "engine.errors", "InputError": "engine.errors",
    "MemsymError": "engine.errors", "UnknownModelError": "engine.errors",
    "UnsupportedModelError": "engine.errors",
    "spec_from_config": "engine.families",
    "Evaluation": "engine.evaluation", "MemoryModel": "engine.model",
    "load_spec": "engine.registry", "registry_entries": "engine.registry",
    "Scenario": "engine.scenario", "KNOBS": "engine.scenario", "Knob": "engine.scenario",
    "changed_knobs": "engine.scenario",
    "ModelSpec": "engine.spec",
    "format_bytes": "engine.units", "parse_bytes": "engine.units",
    "Budget": "engine.gpus", "gpu": "engine.gpus", "gpu_catalog": "engine.gpus", "make_budget": "engine.gpus",
    "Solution": "engine.solve", "solve_budget": "engine.solve", "solve_variable": "engine.solve",
    "solve_tensor_parallel": "engine.solve", "smallest_fitting": "engine.solve", "closed_form": "engine.solve",
    "serving_model": "engine.solve", "sharded": "engine.solve",
    "canonical_form": "engine.analysis", "derivative": "engine.analysis", "sensitivity": "engine.analysis",
    "crossover": "engine.analysis",
    "compile_model": "engine.numeric", "compile_terms": "engine.numeric", "write_module": "engine.numeric",
}
_RENAMED = {"gpu_catalog": "catalog", "registry_entries": "entries", "profile": "get", "profile_names": "names",
            "solve_variable": "solve"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    value = getattr(import_module(module), _RENAMED.get(name, name))
    globals()[name] = value
    return value


def __dir__():
    return __all__
