"""``--torchtune-release 0.2`` beyond the loss: the configs of that time and whole-model compile.

torchtune <= 0.2.1's configs build ``torch.optim.AdamW`` without ``fused`` (added by #1575,
cca50f02e, 2024-09-14), so torch's CUDA default, foreach, steps with one parameter-sized
intermediate; ``compile: True`` was ``utils.wrap_compile`` (the whole model), modelled only with
every layer checkpointed, where it changes just the recomputed layer."""

from __future__ import annotations

import pytest

from engine.errors import InputError
from engine.profiles import build
from engine.registry import load_spec
from engine.scenario import Scenario


def _terms(**flags):
    scenario = Scenario(mode="training", profile="torchtune", batch_size=1, seq_len=512, **flags)
    return build(load_spec("llama-2-7b"), scenario).evaluate()


def test_release_0_2_adamw_defaults_to_foreach():
    now, then = _terms().terms, _terms(torchtune_release="0.2").terms
    assert now["optimizer_temporaries"] == 0  # Nov 2024 configs: fused: True
    assert then["optimizer_temporaries"] == then["weights"]  # one bf16 intermediate per parameter
    fused = _terms(torchtune_release="0.2", optimizer_impl="fused").terms
    assert fused["optimizer_temporaries"] == 0
    paged = _terms(torchtune_release="0.2", optimizer="paged-adamw").terms  # bitsandbytes: in place
    assert paged["optimizer_temporaries"] == 0


def test_release_0_2_compile_changes_only_the_recomputed_layer():
    eager = _terms(torchtune_release="0.2", recompute="full")
    compiled = _terms(torchtune_release="0.2", recompute="full", torch_compile=True)
    assert compiled.phases["loss_backward"] == eager.phases["loss_backward"]
    assert compiled.terms["activations/layers"] == eager.terms["activations/layers"]
    # the partitioner recomputes the norms' fp32 copies, x_normed and SwiGLU's product: 8bsh + 2bsf
    # fewer bytes (b 1, s 512, h 4096, f 11008, bf16; the two fp32 rsqrt rows saved either way)
    saved_less = 512 * (8 * 4096 + 2 * 11008)
    assert eager.terms["recompute"] - compiled.terms["recompute"] == saved_less


def test_release_0_2_compile_needs_checkpointing():
    with pytest.raises(InputError, match="--compile without --recompute full"):
        _terms(torchtune_release="0.2", torch_compile=True)
