"""The deepspeed profile side by side with DeepSpeed's own model-state estimators.

``estimate_zero2_model_states_mem_needs`` (deepspeed/runtime/zero/stage_1_and_2.py) and
``estimate_zero3_model_states_mem_needs`` (deepspeed/runtime/zero/stage3.py), deepspeedai/
DeepSpeed at edaa7221 (2026-08-22), are re-typed below (``total_params``,
``largest_layer_params`` as ``model_to_params`` counts them: the largest module's own
parameters). They count model states only, so activations are left out of the comparison.
Where the profile and the estimator model the same buffers they are equal; the differences
are asserted term by term:

- ``reduce_buckets``: the ipg buffer (reduce_bucket_size = 5e8 elements, 1 GB in bf16) that
  stage_1_and_2.py / stage3.py allocate whatever the model; the estimators leave it out;
- stage 3 ``weights``: the 16-bit parameter partition ``2 P / N`` (fp16_partitioned_groups_flat);
  the estimator's ``18`` counts 2 + 4 + 4 + 8 (16-bit and fp32 gradients, master, moments);
- stage 3 ``gradients/fp32``: one buffer of the largest sub-group, ``4 min(1e9, P / N)``
  (initialize_optimizer_states), where the estimator counts ``4 P / N``;
- stage 3 ``zero3_gathered``: the estimator's ``4 largest_layer_params`` is the gathered
  module's parameters and gradients; the profile adds the prefetch bucket (up to 5e7) and the
  tensors below param_persistence_threshold (1e5) kept whole.
"""

from __future__ import annotations

import pytest

from engine import architecture
from engine.api import estimate
from engine.families import spec_from_config
from engine.profiles.deepspeed import module_sizes
from engine.registry import find
from engine.scenario import Scenario
from formulas import symbols as S
from formulas.frameworks import deepspeed as F

PARAMS = {"llama-3.1-8b": 8_030_261_248, "llama-3.1-70b": 70_553_706_496}


def ds_zero2(total_params, num_gpus_per_node=1, num_nodes=1, cpu_offload=True, additional_buffer_factor=1.5):
    total_gpus = num_nodes * num_gpus_per_node
    if cpu_offload:
        gpu_mem = 2 * total_params
        cpu_mem = total_params * max(4 * total_gpus, 16) * additional_buffer_factor
    else:
        gpu_mem = 2 * total_params + int(18 * total_params / total_gpus)
        cpu_mem = total_params * 4 * num_gpus_per_node * additional_buffer_factor
    return int(cpu_mem), int(gpu_mem)


def ds_zero3(total_params, largest_layer_params, num_gpus_per_node=1, num_nodes=1, cpu_offload=True,
             cpu_offload_params=True, zero_init=True, additional_buffer_factor=1.5):
    total_gpus = num_nodes * num_gpus_per_node
    gpus_factor = 1 / num_nodes
    largest_layer_memory = 4 * largest_layer_params
    if cpu_offload:
        if cpu_offload_params:
            gpu_mem = largest_layer_memory
            cpu_mem = total_params * 18 * gpus_factor * additional_buffer_factor
        else:
            gpu_mem = largest_layer_memory + int(2 * total_params / total_gpus)
            cpu_mem = total_params * 16 * gpus_factor * additional_buffer_factor
    else:
        gpu_mem = largest_layer_memory + int(18 * total_params / total_gpus)
        cpu_mem = largest_layer_params * 4 * num_gpus_per_node * additional_buffer_factor
    return int(cpu_mem), int(gpu_mem), largest_layer_memory


def _terms(model_id, zero, dp, offload):
    return estimate(model_id, mode="training", profile="deepspeed", zero=zero, dp=dp, offload=offload,
                    seq_len=1024).evaluation


def _largest_and_persistent(model_id):
    spec = spec_from_config(find(model_id).config, model_id)
    largest, persistent = module_sizes(spec, Scenario(mode="training", zero=3, profile="deepspeed"))
    values = {**architecture.facts(spec), S.tensor_parallel: 1, S.pipeline_parallel: 1, S.expert_parallel: 1}
    return int(largest.xreplace(values)), int(persistent.xreplace(values))


@pytest.mark.parametrize("model_id", sorted(PARAMS))
@pytest.mark.parametrize("dp", [8, 64])
def test_zero2_equals_the_estimator_but_the_bucket(model_id, dp):
    P = PARAMS[model_id]
    ev = _terms(model_id, 2, dp, "none")
    t = ev.terms
    state = t["weights"] + t["gradients"] + t["master_weights"] + t["optimizer"]
    assert abs(state - ds_zero2(P, dp, cpu_offload=False)[1]) <= 4
    assert t["reduce_buckets"] == 2 * F.REDUCE_BUCKET_SIZE


@pytest.mark.parametrize("model_id", sorted(PARAMS))
def test_zero2_offload_keeps_only_16bit_weights_on_the_gpu(model_id):
    P = PARAMS[model_id]
    t = _terms(model_id, 2, 8, "optimizer")
    assert t.terms["weights"] == ds_zero2(P, 8, cpu_offload=True)[1]
    assert t.terms["gradients"] == t.terms["master_weights"] == t.terms["optimizer"] == 0
    # host, per GPU: fp32 master, moments, gradients (16 P / N); the estimator counts a node's
    # 16 P (or 4 P per process loading fp32 weights) times its additional_buffer_factor 1.5
    assert sum(t.host.values()) == 16 * P // 8
    assert ds_zero2(P, 8, cpu_offload=True)[0] == int(P * 32 * 1.5)


@pytest.mark.parametrize("model_id", sorted(PARAMS))
@pytest.mark.parametrize("offload", ["none", "optimizer", "both"])
def test_zero3_against_the_estimator_term_by_term(model_id, offload):
    P, dp = PARAMS[model_id], 8
    largest, persistent = _largest_and_persistent(model_id)
    ev = _terms(model_id, 3, dp, offload)
    t = ev.terms
    cpu_offload, offload_params = offload != "none", offload == "both"
    theirs = ds_zero3(P, largest, dp, cpu_offload=cpu_offload, cpu_offload_params=offload_params)[1]
    ahead = min(F.PREFETCH_BUCKET_SIZE, max(0, F.MAX_LIVE_PARAMETERS - largest))
    assert t["zero3_gathered"] == 4 * largest + 2 * (ahead + persistent)
    state = t["weights"] + t["gradients"] + t["master_weights"] + t["optimizer"] + t["zero3_gathered"]
    named = 2 * (ahead + persistent)
    if not cpu_offload:
        named += 2 * P // dp - 4 * P // dp + 4 * min(F.SUB_GROUP_SIZE, P // dp)
    assert abs(state - (theirs + named)) <= 8
    assert t["reduce_buckets"] == 2 * F.REDUCE_BUCKET_SIZE


def test_issue_12_llama_70b_zero3_both_offloaded_on_8_gpus():
    """DeepSpeed's estimate: 4.2 GB per GPU (4 x the 1.05e9-element embedding); memsym's model
    states: the same plus the 1 GB reduce bucket and the persistent norms (was 55.9 GB with
    gradient shards left on the GPU)."""
    P = PARAMS["llama-3.1-70b"]
    largest, _ = _largest_and_persistent("llama-3.1-70b")
    assert largest == 128_256 * 8192
    assert round(ds_zero3(P, largest, 8)[1] / 1e9, 1) == 4.2
    ev = _terms("llama-3.1-70b", 3, 8, "both")
    states = ev.terms["zero3_gathered"] + ev.terms["reduce_buckets"]
    assert ev.terms["weights"] == ev.terms["gradients"] == ev.terms["optimizer"] == 0
    assert round(states / 1e9, 2) == 5.21
    # host per GPU: 16-bit parameters and gradient partitions, fp32 master, moments and
    # gradients: 20 P / N; the estimator's node figure is 18 P x 1.5
    assert ev.host["gradients"] == (4 + 2) * P // 8
    assert sum(ev.host.values()) == 20 * P // 8


def test_fp32_gradients_leave_the_gpu_with_the_optimizer():
    on_gpu = _terms("llama-3.1-8b", 3, 8, "none").terms
    offloaded = _terms("llama-3.1-8b", 3, 8, "optimizer")
    assert on_gpu["gradients/fp32"] > 0 and offloaded.terms["gradients"] == 0
    assert offloaded.host["gradients"] == 6 * PARAMS["llama-3.1-8b"] // 8


def test_stage_1_keeps_every_16bit_gradient():
    t = _terms("llama-3.1-8b", 1, 8, "none").terms
    assert t["gradients/16bit"] == 2 * PARAMS["llama-3.1-8b"]


@pytest.mark.parametrize("kwargs, needle", [
    (dict(zero=0), "--zero 0"), (dict(zero=2, pp=2), "--pp 2"), (dict(zero=1, dtype="float32"), "--dtype"),
    (dict(zero=1, precision="megatron18"), "--precision"),
])
def test_refusals_name_the_knob(kwargs, needle):
    from engine.errors import InputError

    with pytest.raises(InputError, match=needle):
        estimate("llama-3.1-8b", mode="training", profile="deepspeed", **kwargs)


def test_fused_routed_experts_are_one_module():
    """transformers 5 keeps a layer's routed experts as 3-D parameters of one module, so
    ZeRO-3 gathers all of them at once: Mixtral, 8 x (gate, up, down) of 14336 x 4096."""
    largest, _ = _largest_and_persistent("mixtral-8x7b-v0.1")
    assert largest == 8 * 3 * 14336 * 4096
