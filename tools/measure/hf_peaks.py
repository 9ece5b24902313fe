#!/usr/bin/env python3
"""Peak memory of Hugging Face fine-tuning mechanisms on CPU: AMP and PEFT LoRA.

tools/measure/peaks.py's training step (same tiny Qwen3/Llama models, loop and
MemTracker, the second iteration measured), with one mechanism switched on per point:

* ``amp``: the model in float32 and its forward wrapped as accelerate's
  ``Accelerator.prepare_model`` wraps it under ``mixed_precision="bf16"``
  (accelerate/accelerator.py: ``convert_outputs_to_fp32(autocast_context(forward))``,
  autocast_context = utils/modeling.py get_mixed_precision_context_manager =
  ``torch.autocast(device_type, dtype=torch.bfloat16)``, its weight-cast cache on);
* ``lora``: ``peft.get_peft_model(model, LoraConfig(r, target_modules="all-linear"))`` on
  the model loaded in ``--dtype`` (PEFT's default ``autocast_adapter_dtype=True`` keeps the
  adapters in float32; ``lora_dropout=0``, PEFT's default), AdamW over the adapters only.

Writes tests/fixtures/hf_peaks_cpu.json in peaks.py's format, each point with its
``mechanism`` (and ``lora_rank``). Needs torch==2.13.0 (CPU), transformers==5.24.0,
accelerate and peft (``pip install peft``).

* ``sliding``: a Mistral-shaped model (window 128) past and within its window.

Usage: ``python tools/measure/hf_peaks.py [--stdout] [--only amp|lora|qlora|sliding]`` (``--only``
keeps the fixture's other points)
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch
from torch.distributed._tools.mem_tracker import MemTracker as _MemTracker

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peaks  # noqa: E402

OUT = os.path.join(peaks.ROOT, "tests", "fixtures", "hf_peaks_cpu.json")
# A sliding-window family: the registry's Mistral-7B-v0.1 config shrunk as peaks.py's models,
# its 4096-token window shrunk to 128 so that the runs pass it.
peaks.MODELS["mistral-tiny"] = ("mistral-7b-v0.1", dict(
    hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2,
    head_dim=32, vocab_size=16384, sliding_window=128))
LORA_RANK = 8
SHAPES = ((1, 256), (2, 128))


class _NoHook:
    def remove(self) -> None:
        return None


class MemTracker(_MemTracker):
    """MemTracker that skips the gradient hooks of frozen parameters (a LoRA base), which
    ``register_hook`` refuses; their bytes are still tracked as parameters."""

    def _track_module_params_and_buffers(self, module, install_grad_hooks=True):
        for param in module.parameters():
            if not param.requires_grad:
                self._param_to_grad_hook_handles.setdefault(param, (_NoHook(), _NoHook()))
        return super()._track_module_params_and_buffers(module, install_grad_hooks)


def _points() -> list[dict]:
    points = []
    for model in ("qwen3-tiny", "llama-tiny"):
        for (b, s) in SHAPES:
            for gc in (False, True):
                base = dict(model=model, mode="training", batch_size=b, seq_len=s, gradient_checkpointing=gc,
                            foreach=False)
                points.append(dict(base, mechanism="amp", attention="sdpa", dtype="bfloat16"))
                points.append(dict(base, mechanism="lora", attention="sdpa", dtype="bfloat16", lora_rank=LORA_RANK))
        eager = dict(model=model, mode="training", batch_size=1, seq_len=256, gradient_checkpointing=False,
                     foreach=False, attention="eager", dtype="bfloat16")
        points.append(dict(eager, mechanism="amp"))
        points.append(dict(eager, mechanism="lora", lora_rank=LORA_RANK))
        # adapters kept in the base's dtype (autocast_adapter_dtype=False), two targets only
        points.append(dict(eager, attention="sdpa", mechanism="lora", lora_rank=16, adapter_dtype="bfloat16",
                           lora_targets=["q_proj", "v_proj"]))
        if not peaks.model_config(model).get("tie_word_embeddings"):  # memsym refuses lm_head on a tied head
            points.append(dict(eager, attention="sdpa", mechanism="lora", lora_rank=LORA_RANK,
                               lora_targets=["all-linear", "lm_head"]))
        for gc in (False, True):
            points.append(dict(eager, attention="sdpa", mechanism="qlora", lora_rank=LORA_RANK,
                               gradient_checkpointing=gc))
    for attention in ("sdpa", "eager"):
        for (b, s, gc) in ((1, 256, False), (2, 192, False), (2, 64, False), (1, 256, True), (2, 128, True)):
            points.append(dict(model="mistral-tiny", mode="training", batch_size=b, seq_len=s,
                               gradient_checkpointing=gc, foreach=False, attention=attention, dtype="bfloat16",
                               mechanism="sliding"))
    return points


def _amp(model: torch.nn.Module, dtype: str) -> None:
    """accelerate's prepare_model under native AMP: autocast around forward, outputs to fp32."""
    from types import MethodType

    from accelerate.utils import convert_outputs_to_fp32

    forward = model.forward.__func__
    autocast = torch.autocast(device_type="cpu", dtype=getattr(torch, dtype))
    model.forward = MethodType(convert_outputs_to_fp32(autocast(forward)), model)


def _lora(model: torch.nn.Module, point: dict) -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model

    targets = point.get("lora_targets", ["all-linear"])
    rank = point["lora_rank"]
    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules="all-linear" if targets == ["all-linear"] else
                        [t for t in targets if t != "all-linear"] + (
                            ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
                            if "all-linear" in targets else []))
    return get_peft_model(model, config, autocast_adapter_dtype=point.get("adapter_dtype") is None)


def _quantized(config: dict, attention: str, dtype: str) -> torch.nn.Module:
    """The random-weight model saved and loaded back as QLoRA loads a checkpoint:
    ``from_pretrained(quantization_config=BitsAndBytesConfig(load_in_4bit=True,
    bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype))``."""
    import tempfile

    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=getattr(torch, dtype))
    with tempfile.TemporaryDirectory() as folder:
        peaks.build_model(config, attention, dtype).save_pretrained(folder)
        return AutoModelForCausalLM.from_pretrained(folder, quantization_config=quant, dtype=getattr(torch, dtype),
                                                    device_map="cpu", attn_implementation=attention)


def quant_state_bytes(model: torch.nn.Module) -> int:
    """Bytes of every bitsandbytes ``quant_state`` tensor (absmax, nested absmax and codes,
    offset): attributes of the 4-bit parameters, which MemTracker does not see."""
    tensors = []
    for param in model.parameters():
        state = getattr(param, "quant_state", None)
        while state is not None:
            tensors += [t for t in (state.absmax, state.code, getattr(state, "offset", None)) if torch.is_tensor(t)]
            state = getattr(state, "state2", None)
    return peaks._nbytes(tensors)


def measure_training(point: dict) -> dict:
    config = peaks.model_config(point["model"])
    mechanism = point["mechanism"]
    if mechanism == "qlora":
        model = _quantized(config, point["attention"], point["dtype"])
    else:
        model = peaks.build_model(config, point["attention"], "float32" if mechanism == "amp" else point["dtype"])
    model.train()
    if point["gradient_checkpointing"]:
        model.gradient_checkpointing_enable()  # transformers 5.24: use_reentrant=False
    if mechanism == "amp":
        _amp(model, point["dtype"])
    elif mechanism in ("lora", "qlora"):
        model = _lora(model, point)
    torch.manual_seed(peaks.SEED)
    ids = torch.randint(0, config["vocab_size"], (point["batch_size"], point["seq_len"]))
    trained = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trained, foreach=False, **peaks.ADAMW)

    measured = peaks.measure_step(model, opt, ids, tracker_class=MemTracker)
    return dict(
        measured,
        trained_parameter_bytes=peaks._nbytes(trained),
        quant_state_bytes=quant_state_bytes(model),
    )


def measure(point: dict) -> dict:
    import time

    start = time.perf_counter()
    result = measure_training(point)
    return dict(point, measured=result, seconds=round(time.perf_counter() - start, 2))


def main(argv=None) -> int:
    import accelerate
    import peft

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("amp", "lora", "qlora", "sliding"))
    parser.add_argument("--stdout", action="store_true")
    args = parser.parse_args(argv)
    points = [p for p in _points() if args.only in (None, p["mechanism"])]
    env = dict(peaks.environment(), accelerate=accelerate.__version__, peft=peft.__version__)
    data = peaks.run(points, measure_point=measure, env=env)
    if args.only and os.path.exists(OUT):  # --only: the other mechanisms' points of the fixture are kept
        with open(OUT) as fh:
            old = json.load(fh)
        kept = [p for p in old["points"] if p["mechanism"] != args.only]
        data["points"] = kept + data["points"]
        data["models"] = {**old["models"], **data["models"]}
    data["generator"] = "tools/measure/hf_peaks.py"
    data["training_loop"] += ("; amp: accelerate prepare_model's autocast(bf16) + convert_outputs_to_fp32 "
                              "around forward on an fp32 model; lora: peft get_peft_model(LoraConfig(r, "
                              "target_modules='all-linear')), AdamW over the adapters")
    return peaks.write(data, OUT, args.stdout, len(data["points"]))


if __name__ == "__main__":
    sys.exit(main())
