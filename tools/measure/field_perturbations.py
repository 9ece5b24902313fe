#!/usr/bin/env python3
"""Ground truth for "never a silent wrong answer" (issue 13): every scalar field of every
family's transformers config class, changed one at a time, on the meta device.

For each ``model_type`` memsym parses that transformers 5.24 has a config class for, this
script takes ``XConfig().to_dict()`` (multimodal: the text model cut to 2 layers, its
per-layer lists dropped; Gemma-3's SigLIP head off), then changes each integer field
(doubled, 0 -> 1) and each boolean field (flipped), at the top level and in ``text_config`` and
``vision_config``, and records the unique parameter count transformers instantiates
(``AutoModelForCausalLM``; ``AutoModelForImageTextToText`` for the multimodal types). A
change transformers refuses to build is left out. For the attention families it also records,
with ``sliding_window`` 4 (and ``use_sliding_window``), how many cache layers transformers'
``DynamicCache`` makes sliding. ``tests/test_field_perturbations.py`` asserts memsym gives the
same counts, or refuses the config with an error naming the field.

Usage (repository root)::

    python tools/measure/field_perturbations.py        # -> tests/fixtures/field_perturbations.json
"""
from __future__ import annotations

import copy
import json
import math
import os
import sys

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "tests", "fixtures", "field_perturbations.json")
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from params_kv import _compact  # noqa: E402

MULTIMODAL = ("llama4", "mllama", "llava", "mistral3", "gemma3")
# token ids index the vocabulary, they size nothing
SKIP = {"pad_token_id", "bos_token_id", "eos_token_id", "image_token_index", "image_token_id",
        "boi_token_index", "eoi_token_index", "decoder_start_token_id", "sep_token_id"}
DROP = ("transformers_version", "architectures", "dtype", "torch_dtype", "_name_or_path", "id2label", "label2id")
RECURRENT = ("mamba", "mamba2", "jamba", "nemotron_h", "bamba", "granitemoehybrid", "falcon_h1", "qwen3_next")
PER_LAYER_LISTS = ("layer_types", "no_rope_layers", "moe_layers", "cross_attention_layers")


def _json_safe(value):
    """The value with infinities (Mamba's time_step_limit) removed: JSON has none."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items() if not _has_inf(v)}
    return value


def _has_inf(value) -> bool:
    if isinstance(value, float):
        return math.isinf(value)
    if isinstance(value, (list, tuple)):
        return any(_has_inf(v) for v in value)
    if isinstance(value, dict):
        return any(_has_inf(v) for v in value.values())
    return False


def base_config(model_type: str) -> dict:
    config = AutoConfig.for_model(model_type).to_dict()
    for key in DROP:
        config.pop(key, None)
    config = _json_safe(json.loads(json.dumps(config, default=str)))
    if model_type in MULTIMODAL:
        text = config["text_config"]
        text["num_hidden_layers"] = 2
        for key in PER_LAYER_LISTS:
            text.pop(key, None)
    if model_type == "deepseek_v2" and config.get("num_experts_per_tok") is None:
        config["num_experts_per_tok"] = 6  # DeepseekV2Config() leaves it None (no routing); DeepSeek-V2-Lite's value
    if model_type == "gemma3":
        config["vision_config"]["vision_use_head"] = False  # refused by memsym: not a perturbation
    config["model_type"] = model_type
    return config


def parameters(model_type: str, config: dict) -> int:
    cfg = AutoConfig.for_model(model_type, **{k: v for k, v in config.items() if k != "model_type"})
    auto = AutoModelForImageTextToText if model_type in MULTIMODAL else AutoModelForCausalLM
    with torch.device("meta"):
        model = auto.from_config(cfg)
    return sum(p.numel() for p in model.parameters())


def changes(config: dict):
    """(path, new value) for every integer and boolean field: top level, text_config and vision_config."""
    places = [((), config)]
    for sub in ("text_config", "vision_config"):
        if isinstance(config.get(sub), dict):
            places.append(((sub,), config[sub]))
    for prefix, where in places:
        for key, value in sorted(where.items()):
            if key in SKIP or key == "model_type":
                continue
            if isinstance(value, bool):
                yield prefix + (key,), not value
            elif isinstance(value, int):
                yield prefix + (key,), 2 * value if value else 1


WINDOWS = ({"sliding_window": 4}, {"sliding_window": 4, "use_sliding_window": True})


def sliding_layers(model_type: str, config: dict) -> list[dict]:
    """For each window setting of WINDOWS: how many of the text model's cache layers transformers'
    ``DynamicCache(config=...)`` makes sliding-window layers (per-layer lists dropped, so the
    config class derives them)."""
    text = dict(config.get("text_config") or config)
    for key in PER_LAYER_LISTS:
        text.pop(key, None)
    out = []
    for window in WINDOWS:
        changed = {**text, **window}
        text_type = changed.get("model_type", model_type)
        try:
            cfg = AutoConfig.for_model(text_type, **{k: v for k, v in changed.items() if k != "model_type"})
            layers = transformers.DynamicCache(config=cfg.get_text_config()).layers
        except Exception:
            continue
        out.append({"window": window, "sliding_layers": sum("Sliding" in type(layer).__name__ for layer in layers),
                    "layers": len(layers)})
    return out


def measure(model_type: str) -> dict:
    base = base_config(model_type)
    records = []
    for path, value in changes(base):
        changed = copy.deepcopy(base)
        target = changed
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        try:
            count = parameters(model_type, changed)
        except Exception:  # transformers refuses the combination: nothing to compare
            continue
        records.append({"field": ".".join(path), "value": value, "parameters": count})
    result = {"config": base, "parameters": parameters(model_type, base), "changes": records}
    if model_type not in RECURRENT:
        result["windows"] = sliding_layers(model_type, base)
    return result


def main() -> int:
    from engine.families import PARSERS
    from transformers import CONFIG_MAPPING

    families = {}
    for model_type in sorted(PARSERS):
        if model_type not in CONFIG_MAPPING:
            continue  # kimi_k2, kimi_vl: remote code only
        try:
            families[model_type] = measure(model_type)
        except Exception as exc:  # the default config itself does not build
            print(f"{model_type}: {type(exc).__name__}: {exc}"[:200], file=sys.stderr)
            continue
        print(f"{model_type}: {len(families[model_type]['changes'])} changes", file=sys.stderr, flush=True)
    result = {"about": __doc__.split("\n\n")[1].replace("\n", " "), "transformers_version": transformers.__version__,
              "torch_version": torch.__version__, "command": "python tools/measure/field_perturbations.py",
              "families": families}
    with open(OUT, "w") as fh:
        fh.write(_compact(json.dumps(result, indent=1)) + "\n")
    print(f"wrote {OUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
