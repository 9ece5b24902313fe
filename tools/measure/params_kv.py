#!/usr/bin/env python3
"""Ground truth from Hugging Face transformers for memsym's tests.

For every model in engine/registry/models/*.json and every config in
tests/fixtures/variant_configs/*.json this script builds the model from the
config dict alone (no network, no remote code) and records

* parameter counts, measured on the ``meta`` device (nothing is allocated):
  total unique parameters (a tied head counted once), token-embedding,
  learned position-embedding and lm_head parameters, persistent buffers
  (those in ``state_dict()``), and a breakdown by component classified from
  the parameter names, plus a per-layer breakdown grouped by layer kind;
* KV-cache bytes per token of one sequence in bf16, measured on a
  reduced-depth copy (one layer per cache-layer type, small vocab / MLP /
  expert count: the cache does not depend on them) with random weights: a
  forward with ``use_cache=True`` at two lengths below any sliding window,
  summing ``nbytes`` of every tensor the returned cache holds, scaled by the
  full model's per-type layer counts. Sliding-window layers are also probed
  past the window to record how many tokens the cache keeps.

Usage (from the repository root)::

    python tools/measure/params_kv.py            # writes tests/fixtures/transformers_ground_truth.json
    python tools/measure/params_kv.py --only gpt2 --stdout

Needs torch (CPU) and transformers; see tools/measure/README.md.
"""
from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import re
import sys
import time

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM
from transformers.cache_utils import get_layer_types_and_kwargs

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
REGISTRY = os.path.join(ROOT, "engine", "registry", "models")
VARIANTS = os.path.join(ROOT, "tests", "fixtures", "variant_configs")
OUT = os.path.join(ROOT, "tests", "fixtures", "transformers_ground_truth.json")
ORACLE = os.path.join(ROOT, "..", "shared", "oracles", "public-models.json")

# Config keys that only matter for loading a checkpoint, never for the module tree.
_DROP_KEYS = ("quantization_config", "auto_map", "_name_or_path", "transformers_version")

COMPONENTS = (
    "embedding", "position_embedding", "attention", "mlp", "moe_experts",
    "moe_shared_experts", "router", "norm", "lm_head", "other",
)

T_SHORT, T_LONG = 8, 13  # two sequence lengths, both below every sliding window used here


# ---------------------------------------------------------------- configs

def build_config(config: dict, **overrides):
    cfg = {k: v for k, v in config.items() if k not in _DROP_KEYS}
    cfg.update(overrides)
    model_type = cfg.pop("model_type")
    return AutoConfig.for_model(model_type, **cfg)


def num_layers(cfg) -> int:
    return int(cfg.num_hidden_layers)


# ---------------------------------------------------------------- parameters

_NORM_RE = re.compile(r"(^|\.)([a-z_]*norm[a-z_]*|ln_f|ln_\d|ln_attn|ln_mlp|layernorm)\.(weight|bias)$")
_LAYER_RE = re.compile(r"\.(?:layers|h)\.(\d+)\.")


def classify(name: str, cfg) -> str:
    if _NORM_RE.search(name):
        return "norm"
    if name.startswith("lm_head."):
        return "lm_head"
    if re.search(r"(embed_tokens|wte|word_embeddings)\.weight$", name):
        return "embedding"
    if re.search(r"(wpe|embed_positions)\.weight$", name):
        return "position_embedding"
    if re.search(r"\.(shared_experts?|shared_expert_gate)\.", name):
        return "moe_shared_experts"
    if re.search(r"\.experts\.", name):
        return "moe_experts"
    if re.search(r"\.(mlp|block_sparse_moe)\.gate\.(weight|bias)$", name):
        return "router"
    if re.search(r"\.(self_attn|self_attention|attn)\.", name):
        return "attention"
    if re.search(r"\.mlp\.", name):
        return "mlp"
    return "other"


def param_facts(cfg) -> dict:
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    named = list(model.named_parameters())  # unique: a tied head appears once
    total = sum(p.numel() for _, p in named)

    inp = model.get_input_embeddings()
    out = model.get_output_embeddings()
    tied = out is not None and out.weight is inp.weight
    emb = inp.weight.numel()

    by_comp = collections.Counter({c: 0 for c in COMPONENTS})
    unclassified = []
    per_layer = collections.defaultdict(collections.Counter)
    non_layer = collections.Counter()
    for name, p in named:
        comp = classify(name, cfg)
        by_comp[comp] += p.numel()
        if comp == "other":
            unclassified.append(name)
        m = _LAYER_RE.search(name)
        if m:
            per_layer[int(m.group(1))][comp] += p.numel()
        else:
            non_layer[comp] += p.numel()

    pos = by_comp["position_embedding"]
    lm_head = 0 if tied or out is None else sum(p.numel() for p in out.parameters())

    # persistent buffers: state_dict entries that are not parameters
    param_names = {n for n, _ in model.named_parameters(remove_duplicate=False)}
    persistent = collections.Counter()
    for name, t in model.state_dict().items():
        if name not in param_names:
            persistent[re.sub(r"\.\d+\.", ".*.", name)] += t.numel()
    all_buffers = sorted({re.sub(r"\.\d+\.", ".*.", n) for n, _ in model.named_buffers()})

    # per-layer kinds: group layers with an identical component breakdown
    kinds = collections.OrderedDict()
    for idx in sorted(per_layer):
        key = tuple(sorted((k, v) for k, v in per_layer[idx].items() if v))
        kinds.setdefault(key, []).append(idx)
    layer_kinds = [
        {"layers": idxs, "count": len(idxs), "parameters_per_layer": sum(v for _, v in key),
         "by_component": dict(key)}
        for key, idxs in kinds.items()
    ]

    names = {}
    for n, p in named:
        names.setdefault(re.sub(r"\.\d+\.", ".*.", n), list(p.shape))
    return {
        "model_class": type(model).__name__,
        "parameters": total,
        "embedding_parameters": emb,
        "position_embedding_parameters": pos,
        "lm_head_parameters": lm_head,
        "tie_word_embeddings": tied,
        "persistent_buffers": dict(persistent),
        "non_persistent_buffers": [b for b in all_buffers if b not in persistent],
        "by_component": {k: v for k, v in by_comp.items() if v or k == "other"},
        "unclassified_parameters": unclassified,
        "non_layer_parameters": dict(+non_layer),
        "layer_kinds": layer_kinds,
        "parameter_names": names,
    }


# ---------------------------------------------------------------- KV cache

def cache_layer_types(cfg) -> list[str]:
    types, _ = get_layer_types_and_kwargs(cfg)
    return list(types)


def reduced_overrides(config: dict, cfg, rep_types: list[str]) -> dict:
    """Overrides for a shallow, narrow copy with the same attention shapes."""
    o: dict = {}
    n = max(len(rep_types), 1)
    if "n_layer" in config:
        o["n_layer"] = n
    else:
        o["num_hidden_layers"] = n
    if getattr(cfg, "layer_types", None) is not None:
        o["layer_types"] = rep_types
    # the cache does not depend on these; keep them small so the forward is cheap
    if config.get("vocab_size", 0) > 4096:
        o["vocab_size"] = 4096
        o.update(pad_token_id=None, bos_token_id=None, eos_token_id=None)
    for k in ("intermediate_size", "moe_intermediate_size", "ffn_hidden_size", "n_inner"):
        if isinstance(config.get(k), int) and config[k] > 512:
            o[k] = 512
    if config.get("model_type") in ("deepseek_v2", "deepseek_v3"):
        o.update(n_routed_experts=4, num_experts_per_tok=min(2, config.get("num_experts_per_tok", 2)),
                 n_group=1, topk_group=1, first_k_dense_replace=0)
    for k in ("num_experts", "num_local_experts"):
        if isinstance(config.get(k), int) and config[k] > 4:
            o[k] = 4
            o["num_experts_per_tok"] = min(2, config.get("num_experts_per_tok", 2))
    if config.get("model_type") == "qwen3_moe":
        o["mlp_only_layers"] = []
        o["decoder_sparse_step"] = 1
    return o


def cache_tensors(cache) -> list[list[tuple[str, torch.Tensor]]]:
    """Every tensor each cache layer holds, as (attribute, tensor)."""
    layers = getattr(cache, "layers", None)
    if layers is None and hasattr(cache, "self_attention_cache"):
        layers = cache.self_attention_cache.layers
    out = []
    for layer in layers:
        ts = []
        for k, v in vars(layer).items():
            if isinstance(v, torch.Tensor):
                ts.append((k, v))
            elif isinstance(v, (list, tuple)):
                ts.extend((f"{k}[{i}]", t) for i, t in enumerate(v) if isinstance(t, torch.Tensor))
        out.append(ts)
    return out


def run_cache(model, vocab: int, T: int):
    torch.manual_seed(0)
    ids = torch.randint(0, vocab, (1, T))
    with torch.no_grad():
        out = model(input_ids=ids, use_cache=True)
    cache = out["cache"] if "cache" in out else out["past_key_values"]
    per_layer = []
    for ts in cache_tensors(cache):
        per_layer.append({k: {"shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", ""),
                              "nbytes": t.numel() * t.element_size()} for k, t in ts})
    return type(cache).__name__, [type(l).__name__ for l in cache.layers], per_layer


def kv_facts(config: dict, cfg, full_types: list[str]) -> dict:
    rep_types = list(dict.fromkeys(full_types))  # distinct, in order of first use
    if len(rep_types) == 1 and len(full_types) >= 2:
        rep_types = rep_types * 2  # two layers, so a per-layer difference would show
    reduced = build_config(config, **reduced_overrides(config, cfg, rep_types))
    red_types = cache_layer_types(reduced)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(reduced, dtype=torch.bfloat16)
    model.eval()
    vocab = reduced.vocab_size

    windows = {t: None for t in red_types}
    _, kw = get_layer_types_and_kwargs(reduced)
    for t, k in zip(red_types, kw):
        if "sliding_window" in k:
            windows[t] = k["sliding_window"]
    t_long = T_LONG
    min_window = min([w for w in windows.values() if w] or [10**9])
    if min_window <= T_LONG:
        raise RuntimeError(f"sliding window {min_window} too small for T={T_LONG}")

    cache_cls, layer_classes, a = run_cache(model, vocab, T_SHORT)
    _, _, b = run_cache(model, vocab, t_long)

    per_type = {}
    for i, t in enumerate(red_types):
        bytes_a = sum(v["nbytes"] for v in a[i].values())
        bytes_b = sum(v["nbytes"] for v in b[i].values())
        # a sequence-independent part (e.g. a 0-d window tensor) would show as an offset
        slope = (bytes_b - bytes_a) / (t_long - T_SHORT)
        offset = bytes_a - slope * T_SHORT
        per_tok = {k: (b[i][k]["nbytes"] - a[i][k]["nbytes"]) / (t_long - T_SHORT) for k in a[i]}
        entry = {
            "cache_layer_class": layer_classes[i],
            "bytes_per_token": slope,
            "constant_bytes": offset,
            "tensors_at_T": {str(t_long): b[i]},
            "bytes_per_token_by_tensor": {k: v for k, v in per_tok.items() if v},
            "sliding_window": windows[t],
        }
        if t in per_type:
            if per_type[t]["bytes_per_token"] != slope:
                raise RuntimeError(f"layers of type {t} differ: {per_type[t]['bytes_per_token']} vs {slope}")
            continue
        per_type[t] = entry

    # past the window: how many tokens does a sliding layer keep?
    for t, w in windows.items():
        if w and w <= 8192:
            T_probe = w + 8
            _, _, c = run_cache(model, vocab, T_probe)
            i = red_types.index(t)
            kept = {k: v["shape"][-2] for k, v in c[i].items() if len(v["shape"]) == 4}
            per_type[t]["probe_past_window"] = {"T": T_probe, "tokens_kept": kept}

    counts = collections.Counter(full_types)
    total = sum(per_type[t]["bytes_per_token"] * n for t, n in counts.items())
    return {
        "cache_class": cache_cls,
        "full_depth_layer_type_counts": dict(counts),
        "measured_on": {"layers": len(red_types), "layer_types": red_types, "T": [T_SHORT, t_long],
                        "overrides": reduced_overrides(config, cfg, rep_types)},
        "per_layer_type": per_type,
        "kv_cache_bytes_per_token_bf16": int(total) if total == int(total) else total,
    }


# ---------------------------------------------------------------- driver

def measure(config: dict, with_kv: bool = True) -> dict:
    cfg = build_config(config)
    t0 = time.time()
    facts = param_facts(cfg)
    full_types = cache_layer_types(cfg)
    if len(full_types) != num_layers(cfg):
        raise RuntimeError("layer type count differs from num_hidden_layers")
    if with_kv:
        facts["kv"] = kv_facts(config, cfg, full_types)
        facts["kv_cache_bytes_per_token_bf16"] = facts["kv"]["kv_cache_bytes_per_token_bf16"]
    facts["seconds"] = round(time.time() - t0, 2)
    return facts


def check_oracle(models: dict, registry: dict) -> list[str]:
    if not os.path.exists(ORACLE):
        return ["oracle file not found; not checked"]
    oracle = json.load(open(ORACLE))
    by_repo = {m["hf_repo"]: m for m in oracle["models"]}
    lines = []
    for mid, entry in registry.items():
        o = by_repo.get(entry["hf_repo"])
        if not o or mid not in models:
            continue
        got = models[mid]
        for k in ("parameters", "embedding_parameters", "lm_head_parameters", "kv_cache_bytes_per_token_bf16"):
            if k in o and k in got and o[k] != got[k]:
                lines.append(f"MISMATCH {mid}.{k}: measured {got[k]} oracle {o[k]}")
            elif k in o and k in got:
                lines.append(f"ok {mid}.{k} = {got[k]}")
    return lines


def _compact(text: str) -> str:
    """Put arrays of numbers or short strings on one line."""
    pat = re.compile(r"\[\n\s*((?:(?:-?[\d.e+-]+|\"[^\"\n]{0,40}\"|null|true|false),\n\s*)*(?:-?[\d.e+-]+|\"[^\"\n]{0,40}\"|null|true|false))\n\s*\]")
    return pat.sub(lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",\n")) + "]", text)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", help="ids to measure (registry or variant)")
    ap.add_argument("--no-kv", action="store_true", help="parameters only (seconds instead of minutes)")
    ap.add_argument("--stdout", action="store_true", help="print the JSON instead of writing the fixture")
    ap.add_argument("--out", default=OUT)
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, os.cpu_count() or 1))

    registry = {}
    for f in sorted(glob.glob(os.path.join(REGISTRY, "*.json"))):
        d = json.load(open(f))
        registry[d["id"]] = d
    variants = {}
    for f in sorted(glob.glob(os.path.join(VARIANTS, "*.json"))):
        d = json.load(open(f))
        variants[d["id"]] = d

    t_start = time.time()
    models, var_out = {}, {}
    for group, src, dst in (("models", registry, models), ("variants", variants, var_out)):
        for mid, d in src.items():
            if args.only and mid not in args.only:
                continue
            print(f"[{group}] {mid} ...", file=sys.stderr, flush=True)
            dst[mid] = measure(d["config"], with_kv=not args.no_kv)
            if group == "variants":
                dst[mid]["config"] = d["config"]
            print(f"    parameters={dst[mid]['parameters']:,} kv/token="
                  f"{dst[mid].get('kv_cache_bytes_per_token_bf16')} ({dst[mid]['seconds']} s)",
                  file=sys.stderr, flush=True)

    oracle_lines = check_oracle(models, registry)
    for line in oracle_lines:
        print(line, file=sys.stderr)
    result = {
        "about": ("Ground truth measured with Hugging Face transformers by tools/measure/params_kv.py. "
                  "Parameters: AutoModelForCausalLM.from_config on the meta device, sum of unique parameters "
                  "(a tied head counted once). 'embedding_parameters' is the token embedding only (as in "
                  "shared/oracles/public-models.json); learned position embeddings are in "
                  "'position_embedding_parameters'. by_component classifies parameter names; 'other' must be 0. "
                  "KV cache: bytes per token of one sequence in bf16, what the DynamicCache returned by a forward "
                  "with use_cache=True holds, measured on a reduced-depth copy at two lengths below any sliding "
                  "window and scaled by the full model's per-layer-type counts; 'probe_past_window' shows how many "
                  "tokens a sliding-window layer keeps once the window is passed."),
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "command": "python tools/measure/params_kv.py",
        "runtime_seconds": round(time.time() - t_start, 1),
        "oracle_check": oracle_lines,
        "models": models,
        "variants": var_out,
    }
    text = _compact(json.dumps(result, indent=1, sort_keys=False)) + "\n"
    if args.stdout:
        sys.stdout.write(text)
    else:
        with open(args.out, "w") as f:
            f.write(text)
        print(f"wrote {args.out}", file=sys.stderr)
    bad = [l for l in oracle_lines if l.startswith("MISMATCH")]
    bad += [f"{g}:{m} unclassified {v['unclassified_parameters']}" for g, src in (("models", models), ("variants", var_out))
            for m, v in src.items() if v["unclassified_parameters"]]
    for line in bad:
        print(line, file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
