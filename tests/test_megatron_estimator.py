"""The megatron profile side by side with Megatron-LM's own estimator.

``megatron/training/theoretical_memory_usage.py`` (NVIDIA/Megatron-LM at d98e8a64d,
2026-08-22) is re-typed below for the dense, bias-free, RMSNorm models used here
(``compute_weight_and_optimizer_memory`` and ``compute_activation_memory``, the branch
``report_theoretical_memory`` takes with ``--sequence-parallel`` and
``--recompute-granularity selective``; ``compute_activation_memory_without_sp`` otherwise).
The profile must give the same bytes term by term, apart from two differences named here:

- ``activations/glu``: a gated MLP keeps its ``2 f``-wide fc1 output for SwiGLU's backward;
  the estimator's ``4 f / h`` counts ``f`` (it has no swiglu term);
- the final norm: the estimator puts ``1 / p`` of it on the first stage; Megatron builds it
  on the last stage only (memsym: ``h`` parameters there, none on the first).
"""

from __future__ import annotations

import math
from fractions import Fraction

import pytest

from engine import api


def estimate(*args, **knobs):
    """``engine.api.estimate`` under ``--profile megatron``, which this file tests (training
    defaults to ``transformers``)."""
    return api.estimate(*args, **{"profile": "megatron", **knobs})


LLAMA_8B = dict(h=4096, L=32, a=32, kv=8, f=14336, V=128256)
LLAMA_70B = dict(h=8192, L=80, a=64, kv=8, f=28672, V=128256)


def megatron_parameters(m, tp, pp):
    """compute_weight_and_optimizer_memory: parameters on the most loaded shard
    (swiglu: gated_linear_multiplier 3/2; RMSNorm: norm_size 1; untied embeddings)."""
    h, L = m["h"], m["L"]
    attention = 2 * h * h * (1 + Fraction(m["kv"], m["a"]))
    mlp = 2 * h * m["f"] * Fraction(3, 2)
    layernorm = 2 * h
    embedding = h * m["V"]
    tp_sharded = (Fraction((attention + mlp) * L, pp) + embedding) / tp
    replicated = Fraction(layernorm * L + h, pp)  # final_layernorm inside the block, / pp
    if pp == 1:  # untie_embeddings_and_output_weights: the output layer on the same shard
        tp_sharded += Fraction(embedding, tp)
    return tp_sharded + replicated


def megatron_bytes_per_parameter(distributed_optimizer, dp):
    return 6 + Fraction(12, dp) if distributed_optimizer else 18


def megatron_activations_sp(m, s, b, tp, pp, vpp=None):
    """compute_activation_memory (num_microbatches=None: at least pp micro-batches)."""
    h = m["h"]
    memory = s * b * h * (18 + 4 * Fraction(m["f"], h)) * m["L"]
    memory += 8 * s * b * pp  # input to embedding
    memory += s * b * h * pp  # dropout in embedding layer
    if vpp is not None:
        memory *= 1 + Fraction(pp - 1, pp * vpp)
    if pp == 1:  # inputs to output layer and CE loss
        memory += s * b * h * 4 * (1 + Fraction(m["V"], h))
    return memory / tp


def megatron_activations_without_sp(m, s, b, tp, pp):
    """compute_activation_memory_without_sp, its 1.05 factor included."""
    h = m["h"]
    memory = s * b * h * (10 + Fraction(24, tp)) * m["L"]
    memory += 8 * s * b * pp + s * b * h * pp
    if pp == 1:
        memory += (Fraction(s * b * m["V"], tp) + s * b * h) * 2
    return memory * Fraction(105, 100)


def glu_extra(m, s, b, tp, pp, vpp=None):
    """activations/glu: 2 s b f / t bytes per layer, L layers' worth on the first stage."""
    extra = Fraction(2 * s * b * m["f"] * m["L"], tp)
    return extra * (1 + Fraction(pp - 1, pp * vpp)) if vpp else extra


# model id, shape, tp, pp, dp, distributed optimizer, s, b, vpp
SP_CONFIGS = [
    ("llama-3.1-8b", LLAMA_8B, 2, 4, 8, True, 4096, 1, None),  # issue 12's check
    ("llama-3.1-8b", LLAMA_8B, 2, 1, 4, False, 2048, 2, None),  # output layer and loss on the stage
    ("llama-3.1-70b", LLAMA_70B, 2, 8, 16, True, 4096, 1, 5),  # interleaved 1F1B
    ("llama-3.1-70b", LLAMA_70B, 2, 4, 2, True, 8192, 1, None),
]


def _run(model_id, tp, pp, dp, distributed, s, b, vpp, sequence_parallel=True):
    return estimate(model_id, mode="training", tp=tp, pp=pp, dp=dp, zero=1 if distributed else 0, seq_len=s,
                    batch_size=b, vpp=vpp, sequence_parallel=sequence_parallel, recompute="selective").evaluation


@pytest.mark.parametrize("model_id, m, tp, pp, dp, distributed, s, b, vpp", SP_CONFIGS)
def test_weights_and_optimizer_match_the_estimator(model_id, m, tp, pp, dp, distributed, s, b, vpp):
    ev = _run(model_id, tp, pp, dp, distributed, s, b, vpp)
    ours = sum(ev.terms[n] for n in ("weights", "gradients", "master_weights", "optimizer"))
    theirs = megatron_parameters(m, tp, pp) * megatron_bytes_per_parameter(distributed, dp)
    final_norm = 0 if pp == 1 else Fraction(m["h"], pp) * megatron_bytes_per_parameter(distributed, dp)
    assert abs(ours - (theirs - final_norm)) <= 4  # each of the four terms rounds up to a byte


@pytest.mark.parametrize("model_id, m, tp, pp, dp, distributed, s, b, vpp", SP_CONFIGS)
def test_activations_match_the_estimator_but_the_gate(model_id, m, tp, pp, dp, distributed, s, b, vpp):
    ev = _run(model_id, tp, pp, dp, distributed, s, b, vpp)
    theirs = megatron_activations_sp(m, s, b, tp, pp, vpp)
    assert ev.terms["activations/glu"] == math.ceil(glu_extra(m, s, b, tp, pp, vpp))
    assert abs(ev.terms["activations"] - ev.terms["activations/glu"] - theirs) <= 1


def test_issue_12_llama_8b_tp2_pp4():
    """Megatron's formula: 17.14 GB (10^9 B); memsym: the same less the final norm's share,
    plus the gate halves."""
    m = LLAMA_8B
    ev = _run("llama-3.1-8b", 2, 4, 8, True, 4096, 1, None)
    theirs = megatron_parameters(m, 2, 4) * megatron_bytes_per_parameter(True, 8) + megatron_activations_sp(
        m, 4096, 1, 2, 4)
    assert round(float(theirs) / 10**9, 2) == 17.14
    assert round(ev.total_bytes / 10**9, 2) == 19.02
    gap = ev.total_bytes - theirs
    assert abs(gap - glu_extra(m, 4096, 1, 2, 4) + Fraction(4096, 4) * Fraction(15, 2)) <= 8


def test_without_sequence_parallelism_the_differences_are_named():
    """compute_activation_memory_without_sp counts ``10 + 24 / t`` whatever ``f`` is, the
    output layer at 2 bytes and multiplies by 1.05; memsym keeps ``f`` (``8 + 4 f / h`` split
    over t), the fp32 softmax of the loss, and no factor."""
    m, s, b, tp, pp = LLAMA_8B, 2048, 1, 2, 1
    ev = _run("llama-3.1-8b", tp, pp, 4, True, s, b, None, sequence_parallel=False)
    h, f, V, L = m["h"], m["f"], m["V"], m["L"]
    theirs = megatron_activations_without_sp(m, s, b, tp, pp) / Fraction(105, 100)
    width = s * b * h * L * (Fraction(8 + 4 * Fraction(f, h), tp) - Fraction(24, tp))
    loss = 4 * s * b * h + Fraction(4 * s * b * V, tp) - (Fraction(s * b * V, tp) + s * b * h) * 2
    ours = ev.terms["activations"] - ev.terms["activations/glu"]
    assert abs(ours - (theirs + width + loss)) <= 1


def test_gradient_buffer_lives_through_backward():
    """Megatron's DDP allocates the fp32 main_grad buffer at wrap time: the forward-backward
    phase holds it (param_and_grad_buffer.py)."""
    ev = _run("llama-3.1-8b", 2, 4, 8, True, 4096, 1, None)
    assert ev.peak_phase == "forward_backward"
    held = sum(ev.terms[n] for n in ("weights", "gradients", "master_weights", "optimizer", "activations"))
    assert ev.phases["forward_backward"] == held
    assert ev.terms["gradients"] == 2 * ev.terms["weights"]  # fp32 beside bf16


def _llama_126():
    from engine.families import spec_from_config
    from engine.registry import find

    return spec_from_config(dict(find("llama-3.1-8b").config, num_hidden_layers=126), "llama-126")


def test_pp_not_dividing_the_layers_uses_megatrons_uneven_split():
    """126 layers over PP 8: with the embedding and the loss counted as a layer each
    (--account-for-embedding/loss-in-pipeline-split), 128 / 8 = 16, 15 transformer layers on
    the first stage (transformer_block.py get_num_layers_to_build)."""
    from engine.profiles import build
    from engine.scenario import Scenario

    m = dict(LLAMA_8B, L=126)
    knobs = dict(mode="training", tp=2, pp=8, dp=8, zero=1, seq_len=4096, batch_size=1, sequence_parallel=True,
                 recompute="selective", profile="megatron")
    terms = build(_llama_126(), Scenario(**knobs)).evaluate().terms
    split = 2 * m["h"] ** 2 * Fraction(5, 4) + 3 * m["h"] * m["f"]  # attention and MLP, over t = 2
    assert terms["weights"] == 2 * ((15 * split + m["h"] * m["V"]) / 2 + 15 * 2 * m["h"])  # norms replicated
    # 8 micro-batches in flight of 15 layers: Megatron's 18 + 4 f / h per layer, / t
    per_layer = Fraction(4096 * m["h"] * (18 + 4 * Fraction(m["f"], m["h"])), 2)
    assert terms["activations/layers"] == 8 * 15 * per_layer


def test_pp_with_no_megatron_split_is_refused():
    from engine.errors import InputError

    with pytest.raises(InputError, match="--pp 5 does not divide num_hidden_layers 32"):
        estimate("llama-3.1-8b", mode="training", pp=5)


def test_optimizer_offload_copies_gradients_to_the_host():
    """--optimizer-cpu-offload (HybridDeviceOptimizer): fp32 master and moments on the CPU, and a
    pinned CPU copy of each (sharded) fp32 gradient; the main_grad buffer stays on the GPU."""
    P = 8_030_261_248
    ev = estimate("llama-3.1-8b", mode="training", zero=1, dp=8, offload="optimizer").evaluation
    assert ev.terms["gradients"] == 4 * P
    assert ev.host["gradients"] == 4 * P // 8
    assert ev.host["optimizer"] == 8 * P // 8 and ev.terms["optimizer"] == 0


# The transformers profile's data-parallel layouts beside the estimator's model states
# (Llama-3.1-8B, tp = pp = 1, dp = 8): docs/training.md's table. Per parameter: Megatron keeps
# bf16 weights (2), an fp32 main_grad buffer (4), fp32 master and moments (12, / N_d with the
# distributed optimizer); DDP under Trainer(bf16=True) an fp32 model (4), fp32 .grad (4), fp32
# moments (8) and the reducer's bucket copy of the gradients (4); DeepSpeed ZeRO-1 bf16
# parameters and gradients (2 + 2) and the fp32 master, gradient and moments of its partition (16 / N_d).
DATA_PARALLEL = [  # (transformers knobs, Megatron's distributed optimizer, bytes per parameter in transformers)
    (dict(dp=8, precision="amp"), False, Fraction(20)),
    (dict(dp=8), False, Fraction(10)),
    (dict(dp=8, zero=1), True, 4 + Fraction(16, 8)),
]


@pytest.mark.parametrize("knobs, distributed, per_parameter", DATA_PARALLEL)
def test_transformers_data_parallel_model_states_beside_the_estimator(knobs, distributed, per_parameter):
    P = megatron_parameters(LLAMA_8B, 1, 1)
    assert P == 8_030_261_248
    t = api.estimate("llama-3.1-8b", mode="training", profile="transformers", seq_len=4096, **knobs).evaluation.terms
    states = ("weights", "gradients", "master_weights", "optimizer", "ddp_buckets")
    ours = sum(t.get(n, 0) for n in states) - t["weights/rotary_buffers"]
    counters = 0  # AdamW's step counters stay on the host on CUDA
    assert abs(ours - counters - per_parameter * P) <= 8
    assert megatron_bytes_per_parameter(distributed, 8) == (Fraction(15, 2) if distributed else 18)
