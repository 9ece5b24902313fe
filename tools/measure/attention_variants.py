"""Ground truth for the option branches of engine/families_attention.py.

Each variant is a saved config of tools/measure/configs/ with the fields that switch a
branch changed (biases, qk-norms, shared experts, sliding patterns) and its depth cut to a
few layers. transformers 5.24 builds it on the ``meta`` device from the config dict alone
(``AutoConfig.for_model``; no network, no remote code); the script records its parameter
count and the ``layer_types`` / ``sliding_window`` its config class derives, and writes
tests/fixtures/attention_variants_ground_truth.json. Rerun: ``python tools/measure/attention_variants.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "attention_variants_ground_truth.json"
# variant -> (saved config id, changed fields); a value None drops the field (the class default applies)
VARIANTS = {
    "phimoe-biased": ("default-phimoe", {"attention_bias": True, "lm_head_bias": True, "num_hidden_layers": 2}),
    "phi-qk-layernorm": ("phi-2", {"qk_layernorm": True, "num_hidden_layers": 2}),
    "qwen2-moe-mlp-only": ("qwen1.5-moe-a2.7b", {"num_hidden_layers": 4, "mlp_only_layers": [1], "decoder_sparse_step": 2}),
    "qwen2-moe-sliding": ("qwen1.5-moe-a2.7b", {"num_hidden_layers": 6, "use_sliding_window": True,
                                                "sliding_window": 4096, "max_window_layers": 3}),
    "glm4-moe-qk-norm": ("glm-4.5-air", {"num_hidden_layers": 3, "use_qk_norm": True, "first_k_dense_replace": 2,
                                         "n_shared_experts": 2}),
    "gpt-oss-no-bias": ("gpt-oss-20b", {"num_hidden_layers": 3, "attention_bias": False, "layer_types": None}),
    "gemma3-bidirectional": ("gemma-3-270m", {"use_bidirectional_attention": True}),
    "gemma3-pattern-3": ("gemma-3-4b-text", {"num_hidden_layers": 7, "sliding_window_pattern": 3}),
    "smollm3-sliding": ("default-smollm3", {"use_sliding_window": True, "sliding_window": 4096, "layer_types": None,
                                            "num_hidden_layers": 8, "no_rope_layers": None}),
    "granite-biased": ("granite-3.2-2b-instruct", {"attention_bias": True, "mlp_bias": True, "num_hidden_layers": 2,
                                                   "tie_word_embeddings": False}),
    "olmo2-gqa-biased": ("olmo-2-1124-7b", {"num_key_value_heads": 8, "num_hidden_layers": 2, "attention_bias": True}),
    "gemma-mqa-untied": ("gemma-7b", {"num_key_value_heads": 1, "num_hidden_layers": 2, "tie_word_embeddings": False}),
}


def variant_config(base: str, changes: dict) -> dict:
    config = json.loads((ROOT / "tools" / "measure" / "configs" / f"{base}.json").read_text())["config"]
    config = {**config, **changes}
    return {k: v for k, v in config.items() if v is not None}


def measure(config: dict) -> dict:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    hf_config = AutoConfig.for_model(**config)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(hf_config)
    types = getattr(hf_config, "layer_types", None)
    return {"parameters": sum(p.numel() for p in model.parameters()),
            "layer_types": list(types) if types else None,
            "sliding_window": getattr(hf_config, "sliding_window", None)}


def main() -> None:
    import transformers

    records = {}
    for name, (base, changes) in VARIANTS.items():
        config = variant_config(base, changes)
        records[name] = {"base": base, "changes": changes, "config": config, **measure(config)}
    OUT.write_text(json.dumps({"transformers_version": transformers.__version__, "variants": records}, indent=1) + "\n")


if __name__ == "__main__":
    main()
