"""LoRA and QLoRA: adapter tensors on a frozen base.

LoRA (Hu et al. 2021, arXiv:2106.09685) adds ``B A`` beside a frozen ``rows x cols``
weight, ``A: r x cols`` and ``B: rows x r``: ``r (rows + cols)`` trained parameters per
adapted matrix. Only the adapters get gradients and optimizer state; the base keeps its
(possibly quantized) weights. QLoRA (Dettmers et al. 2023, arXiv:2305.14314) stores the
base in 4-bit NormalFloat with double quantization: see ``formulas.weights`` scheme
``nf4``.
"""

from __future__ import annotations

import sympy

from formulas import layers
from formulas.parameters import WeightTensor
from formulas.symbols import activation_bytes, batch_size, lora_rank, seq_len

# PEFT's target_modules="all-linear" adapts every linear layer but the output head; the
# fused experts of transformers 5 MoE layers are 3-D parameters, not nn.Linear, and the
# router is left alone here (adapting it is unusual). Each layer kind names its own
# (formulas/layers/, ``LORA_COMPONENTS``).
# PEFT's spelling of that default (peft/tuners/tuners_utils.py, INCLUDE_LINEARS_SHORTHAND);
# torchtune's lora_attn_modules + apply_lora_to_mlp name the same modules one by one.
ALL_LINEAR = "all-linear"
# The output projection: PEFT's "lm_head", torchtune's apply_lora_to_output
# (torchtune/models/llama3/_component_builders.py lora_llama3: LoRALinear for ``output``).
OUTPUT_HEAD = "lm_head"


def default_target_components() -> frozenset[str]:
    """Components whose linear layers ``all-linear`` adapts, over every layer kind."""
    kinds = (*layers.MIXERS.values(), *layers.MLPS.values())
    return frozenset(component for kind in kinds for component in kind.LORA_COMPONENTS)


def module_name(tensor: WeightTensor) -> str:
    """``attention/q_proj`` -> ``q_proj``."""
    return tensor.name.split("/", 1)[-1]


def lora_targets(tensors: list[WeightTensor], modules: tuple[str, ...] | None = None) -> list[WeightTensor]:
    """The weight matrices an adapter is attached to.

    ``modules`` names them as PEFT's ``target_modules`` does (``q_proj``, ``v_proj``, ...,
    ``lm_head`` for the output projection); None or ``all-linear`` means every linear layer
    of the attention and dense MLPs (PEFT's ``all-linear`` leaves the output head out).
    """
    linear = [t for t in tensors if t.quantizable and not t.name.endswith(".bias")]
    head = [t for t in tensors if t.name == OUTPUT_HEAD]
    if modules is None or ALL_LINEAR in modules:
        defaults = default_target_components()
        chosen = [t for t in linear if t.component in defaults]
        named = [t for t in linear if module_name(t) in (modules or ()) and t not in chosen]
        return chosen + named + (head if OUTPUT_HEAD in (modules or ()) else [])
    return [t for t in linear if module_name(t) in modules] + (head if OUTPUT_HEAD in modules else [])


def lora_adapter_tensors(targets: list[WeightTensor]) -> list[WeightTensor]:
    """``lora_A: r x cols`` and ``lora_B: rows x r`` for each target, same multiplicity."""
    out: list[WeightTensor] = []
    for t in targets:
        out.append(WeightTensor(f"lora/{module_name(t)}.lora_A", lora_rank, t.cols, t.count, parallel="tensor"))
        out.append(WeightTensor(f"lora/{module_name(t)}.lora_B", t.rows, lora_rank, t.count, parallel="tensor"))
    return out


def lora_activations(targets: list[WeightTensor]) -> sympy.Expr:
    """What the adapters save for backward: the ``b x s x r`` output of each ``A``.

    Their inputs are the base layer's inputs, already saved (Korthikanti's rows count them).
    """
    copies = sympy.Add(*(t.count for t in targets))
    return activation_bytes * batch_size * seq_len * lora_rank * copies
