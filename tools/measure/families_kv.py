#!/usr/bin/env python3
"""Ground truth for the model families memsym does not read yet (issue 13).

For every config in tools/measure/configs/*.json ({"id", "hf_repo", "source", "config"})
this script builds the model with transformers from the config dict alone (no network,
no remote code; helpers from params_kv.py) and records

* on the ``meta`` device: total unique parameters (a tied head counted once), parameters
  by top-level module (``model.embed_tokens``, ``model.layers``, ``model.vision_tower``,
  ``lm_head``, ...), persistent buffers, and the decoder layers grouped into kinds by
  their exact tensor list (name suffix -> shape), so each kind's tensors are listed;
* what the cache holds, from a reduced-depth copy run on CPU with random bf16 weights:
  one layer per distinct (cache layer type, tensor list) kind of the full model, with the
  attention / mixer shapes untouched and only the vocabulary, MLP and expert widths
  shrunk (the cache does not depend on them). A forward with ``use_cache=True`` at
  T=8 and T=13; per cache layer and per tensor, bytes at both lengths give
  ``bytes_per_token`` (the slope) and ``constant_bytes`` (the intercept: recurrent /
  conv state that does not grow with the sequence), with each tensor's dtype. Totals are
  scaled by the full model's per-kind layer counts.

Usage (repository root)::

    python tools/measure/families_kv.py                  # all configs -> tests/fixtures/families_ground_truth.json
    python tools/measure/families_kv.py --only gpt-oss-20b --stdout
    python tools/measure/families_kv.py --no-kv          # parameters only
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
from transformers import AutoModelForCausalLM

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from params_kv import _compact, build_config, cache_layer_types  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CONFIGS = os.path.join(ROOT, "tools", "measure", "configs")
OUT = os.path.join(ROOT, "tests", "fixtures", "families_ground_truth.json")
T_SHORT, T_LONG = 8, 13
_LAYER_RE = re.compile(r"^(.*?\.(?:layers|h|blocks))\.(\d+)\.(.*)$")
_SHRINK = ("intermediate_size", "moe_intermediate_size", "shared_expert_intermediate_size",
           "intermediate_size_mlp", "ffn_hidden_size", "moe_shared_expert_intermediate_size",
           "mlp_hidden_size")
_EXPERTS = ("num_experts", "num_local_experts", "n_routed_experts")
_SSM_ONLY = ("mamba", "mamba2", "falcon_mamba")
_HYBRIDS = ("granitemoehybrid", "bamba", "nemotron_h", "jamba")


# ---------------------------------------------------------------- model construction

def text_config(cfg):
    """The language model's config: ``text_config`` where the checkpoint nests one."""
    sub = getattr(cfg, "text_config", None)
    return sub if sub is not None and sub is not cfg else cfg


def build_model(cfg, with_vision=False, **kw):
    """The causal LM, or the image-text model where transformers has no causal LM for the type
    (gemma3, mistral3) or the config file asks for the whole checkpoint (``"measure": "with_vision"``:
    llama4 and mllama map to a text-only ``*ForCausalLM`` that leaves the vision tower out)."""
    from transformers import AutoModelForImageTextToText
    if with_vision:
        return AutoModelForImageTextToText.from_config(cfg, **kw)
    try:
        return AutoModelForCausalLM.from_config(cfg, **kw)
    except ValueError:
        return AutoModelForImageTextToText.from_config(cfg, **kw)


def top_module(name: str) -> str:
    m = _LAYER_RE.match(name)
    if m:
        return m.group(1)
    parts = name.split(".")
    return ".".join(parts[:2]) if parts[0] == "model" and len(parts) > 2 else parts[0]


# ---------------------------------------------------------------- parameters

def layer_kinds(named) -> list[dict]:
    """Decoder layers grouped by their exact tensor list (suffix -> shape)."""
    per_layer = collections.defaultdict(dict)
    prefix_of = {}
    for name, p in named:
        m = _LAYER_RE.match(name)
        if m and "vision" not in m.group(1) and "visual" not in m.group(1):
            per_layer[(m.group(1), int(m.group(2)))][m.group(3)] = list(p.shape)
            prefix_of[(m.group(1), int(m.group(2)))] = m.group(1)
    kinds = collections.OrderedDict()
    for key in sorted(per_layer):
        sig = (key[0], tuple(sorted((k, tuple(v)) for k, v in per_layer[key].items())))
        kinds.setdefault(sig, []).append(key[1])
    out = []
    for (prefix, sig), idxs in kinds.items():
        tensors = {k: list(v) for k, v in sig}
        n = sum(_numel(v) for v in tensors.values())
        out.append({"prefix": prefix, "layers": idxs, "count": len(idxs),
                    "parameters_per_layer": n, "tensors": tensors})
    return out


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def param_facts(cfg, with_vision=False) -> dict:
    with torch.device("meta"):
        model = build_model(cfg, with_vision)
    named = list(model.named_parameters())
    total = sum(p.numel() for _, p in named)
    inp, out = model.get_input_embeddings(), model.get_output_embeddings()
    tied = out is not None and out.weight is inp.weight
    by_top = collections.Counter()
    for name, p in named:
        by_top[top_module(name)] += p.numel()
    param_names = {n for n, _ in model.named_parameters(remove_duplicate=False)}
    persistent = collections.Counter()
    dtypes = {}
    for name, t in model.state_dict().items():
        if name not in param_names:
            key = re.sub(r"\.\d+\.", ".*.", name)
            persistent[key] += t.numel()
            dtypes[key] = str(t.dtype).replace("torch.", "")
    non_layer = {re.sub(r"\.\d+\.", ".*.", n): list(p.shape) for n, p in named if not _LAYER_RE.match(n)}
    return {
        "model_class": type(model).__name__,
        "parameters": total,
        "tie_word_embeddings": tied,
        "embedding_parameters": inp.weight.numel(),
        "lm_head_parameters": 0 if tied or out is None else sum(p.numel() for p in out.parameters()),
        "parameters_by_top_module": dict(by_top),
        "persistent_buffers": dict(persistent),
        "persistent_buffer_dtypes": dtypes,
        "non_layer_tensors": non_layer,
        "layer_kinds": layer_kinds(named),
    }


# ---------------------------------------------------------------- cache

def _text_dict(config: dict) -> dict:
    return dict(config["text_config"], **({} if "model_type" in config["text_config"] else
                                          {"model_type": config["model_type"] + "_text"})) \
        if isinstance(config.get("text_config"), dict) else dict(config)


def depth_overrides(tc: dict, rep: list[str]) -> dict:
    """Overrides that give a copy whose layers have the cache types ``rep``, in order."""
    o: dict = {"num_hidden_layers": len(rep)}
    mt = tc["model_type"]
    if mt == "jamba":  # pattern from a period: [mamba, attention]
        assert rep == ["linear_attention", "full_attention"], rep
        o.update(attn_layer_period=2, attn_layer_offset=1, expert_layer_period=2, expert_layer_offset=1)
    elif mt == "bamba":
        o["attn_layer_indices"] = [i for i, t in enumerate(rep) if t == "full_attention"]
    elif mt == "nemotron_h":
        o["layers_block_type"] = rep
        tc.pop("hybrid_override_pattern", None)
    elif mt == "mllama_text_model":
        o["cross_attention_layers"] = [i for i, t in enumerate(rep) if t == "cross_attention"]
    elif mt not in ("falcon_h1", "mamba", "mamba2"):
        o["layer_types"] = rep
    if mt == "llama4_text":  # NoPE / MoE pattern lists are per layer: cut them to the copy's depth
        o["no_rope_layers"] = [1] * len(rep)
        o["moe_layers"] = list(range(len(rep)))
    return o


def full_layer_types(tc) -> list[str]:
    """Cache layer types per layer; mllama's cross-attention layers (image K/V only) relabelled."""
    types = cache_layer_types(tc)
    if tc.model_type == "mllama_text_model":
        for i in tc.cross_attention_layers:
            types[i] = "cross_attention"
    return types


def width_overrides(tc: dict) -> dict:
    """Widths the cache does not depend on, shrunk so a CPU forward is cheap."""
    o: dict = {}
    if tc.get("vocab_size", 0) > 4096:
        o["vocab_size"] = 4096
        for k in ("pad_token_id", "bos_token_id", "eos_token_id"):  # token ids must fit the smaller vocabulary
            if tc.get(k) is not None:
                o[k] = [0] if isinstance(tc[k], list) else 0
    for k in _SHRINK:
        if k == "intermediate_size" and tc["model_type"] in _SSM_ONLY:
            continue  # there it is the mixer's inner width (expand * hidden), which the state depends on
        if isinstance(tc.get(k), int) and tc[k] > 512:
            o[k] = 512
    for k in _EXPERTS:
        if isinstance(tc.get(k), int) and tc[k] > 4:
            o[k] = 4
            o["num_experts_per_tok"] = min(2, tc.get("num_experts_per_tok", 2))
    if "n_routed_experts" in o:
        o.update(n_group=1, topk_group=1)
    if "first_k_dense_replace" in tc:
        o["first_k_dense_replace"] = 0
    if "mlp_only_layers" in tc:
        o["mlp_only_layers"] = []
    return o


def layer_tensors(layer) -> list[tuple[str, torch.Tensor]]:
    """Every tensor one cache layer holds: attributes, lists and dicts of tensors (conv/recurrent states)."""
    out = []
    for k, v in vars(layer).items():
        if isinstance(v, torch.Tensor):
            out.append((k, v))
        elif isinstance(v, (list, tuple)):
            out.extend((f"{k}[{i}]", t) for i, t in enumerate(v) if isinstance(t, torch.Tensor))
        elif isinstance(v, dict):
            out.extend((f"{k}[{i}]", t) for i, t in v.items() if isinstance(t, torch.Tensor))
    return out


def _run(model, vocab: int, T: int):
    torch.manual_seed(0)
    ids = torch.randint(0, vocab, (1, T))
    with torch.no_grad():
        out = model(input_ids=ids, use_cache=True)
    cache = out["past_key_values"]
    layers = []
    for ts in (layer_tensors(l) for l in cache.layers):
        layers.append({k: {"shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", ""),
                           "nbytes": t.numel() * t.element_size()} for k, t in ts})
    return type(cache).__name__, [type(l).__name__ for l in cache.layers], layers


def kv_facts(config: dict, full_types: list[str]) -> dict:
    tc = _text_dict(config)
    rep = [t for t in dict.fromkeys(full_types) if t != "dummy"]
    if rep == ["linear_attention"] and tc["model_type"] in _HYBRIDS:
        # these models' forward needs one attention layer in the cache; its bytes are not counted at full depth
        rep = ["linear_attention", "full_attention"]
    if len(rep) == 1:
        rep = rep * 2
    full_tc = text_config(build_config(config)).to_dict()
    over = dict(width_overrides(dict(full_tc, **tc)), **depth_overrides(tc, rep))
    reduced = build_config(tc, **over)
    red_types = full_layer_types(reduced)
    if red_types != rep:
        raise RuntimeError(f"reduced copy has layer types {red_types}, wanted {rep}")
    torch.manual_seed(0)
    model = _causal_lm(reduced).eval()
    cache_cls, classes, a = _run(model, reduced.vocab_size, T_SHORT)
    _, _, b = _run(model, reduced.vocab_size, T_LONG)
    per_type = {}
    for i, t in enumerate(red_types):
        tensors = {}
        for k in b[i]:
            na, nb = a[i].get(k, {"nbytes": 0})["nbytes"], b[i][k]["nbytes"]
            slope = (nb - na) / (T_LONG - T_SHORT)
            tensors[k] = {"dtype": b[i][k]["dtype"], f"shape_at_T{T_LONG}": b[i][k]["shape"],
                          "bytes_per_token": _int(slope), "constant_bytes": _int(na - slope * T_SHORT)}
        state = {k: v for k, v in tensors.items() if not k.startswith("_")}  # "_..." = bookkeeping scalars
        entry = {"cache_layer_class": classes[i],
                 "bytes_per_token": _int(sum(v["bytes_per_token"] for v in state.values())),
                 "constant_bytes": _int(sum(v["constant_bytes"] for v in state.values())),
                 "bookkeeping_bytes": sum(v["constant_bytes"] for k, v in tensors.items() if k.startswith("_")),
                 "tensors": tensors}
        if t in per_type and per_type[t]["bytes_per_token"] != entry["bytes_per_token"]:
            raise RuntimeError(f"two layers of type {t} differ")
        per_type.setdefault(t, entry)
    _, kw = transformers.cache_utils.get_layer_types_and_kwargs(build_config(tc))
    for t, k in zip(full_types, kw):
        if t in per_type and "sliding_window" in k:
            per_type[t]["window_tokens"] = k["sliding_window"]
    counts = collections.Counter(full_types)
    return {
        "cache_class": cache_cls,
        "full_depth_layer_type_counts": dict(counts),
        "measured_on": {"layer_types": red_types, "T": [T_SHORT, T_LONG], "dtype": "bfloat16",
                        "overrides": over},
        "per_layer_type": per_type,
        "kv_bytes_per_token": _int(sum(per_type[t]["bytes_per_token"] * n for t, n in counts.items() if t in per_type)),
        "state_bytes_per_sequence": _int(sum(per_type[t]["constant_bytes"] * n
                                             for t, n in counts.items() if t in per_type)),
    }


def _causal_lm(cfg):
    """A random-weight bf16 causal LM for a text config (mllama's text config has no Auto mapping)."""
    if cfg.model_type == "mllama_text_model":
        return transformers.MllamaForCausalLM._from_config(cfg, dtype=torch.bfloat16)
    return AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)


def _int(x):
    return int(x) if float(x) == int(x) else x


# ---------------------------------------------------------------- driver

def measure(entry: dict, with_kv: bool) -> dict:
    t0 = time.time()
    cfg = build_config(entry["config"])
    facts = {"config_file": f"tools/measure/configs/{entry['id']}.json", "hf_repo": entry["hf_repo"],
             "model_type": entry["config"]["model_type"], "text_model_type": text_config(cfg).model_type}
    facts.update(param_facts(cfg, entry.get("measure") == "with_vision"))
    full_types = full_layer_types(text_config(cfg))
    if with_kv:
        facts["cache"] = kv_facts(entry["config"], full_types)
        facts["kv_bytes_per_token"] = facts["cache"]["kv_bytes_per_token"]
        facts["state_bytes_per_sequence"] = facts["cache"]["state_bytes_per_sequence"]
    facts["seconds"] = round(time.time() - t0, 1)
    return facts


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", help="config ids to measure")
    ap.add_argument("--no-kv", action="store_true", help="parameters only")
    ap.add_argument("--stdout", action="store_true")
    ap.add_argument("--out", default=OUT)
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    old = json.load(open(args.out))["models"] if os.path.exists(args.out) and args.only else {}
    models, failed = dict(old), {}
    for f in sorted(glob.glob(os.path.join(CONFIGS, "*.json"))):
        entry = json.load(open(f))
        if args.only and entry["id"] not in args.only:
            continue
        print(f"{entry['id']} ...", file=sys.stderr, flush=True)
        try:
            models[entry["id"]] = measure(entry, not args.no_kv)
        except Exception as e:  # recorded, so one family's failure does not hide the others
            failed[entry["id"]] = f"{type(e).__name__}: {e}"[:500]
            print(f"    FAILED {failed[entry['id']]}", file=sys.stderr, flush=True)
            continue
        m = models[entry["id"]]
        print(f"    parameters={m['parameters']:,} kv/token={m.get('kv_bytes_per_token')} "
              f"state/seq={m.get('state_bytes_per_sequence')} ({m['seconds']} s)", file=sys.stderr, flush=True)
    result = {
        "about": ("Ground truth for the families of issue 13, measured with Hugging Face transformers by "
                  "tools/measure/families_kv.py (method: tools/measure/README.md). parameters: unique parameters "
                  "on the meta device (a tied head once). kv_bytes_per_token: bytes the cache of one sequence "
                  "grows by per token in a bf16 model (sliding / chunked layers: below their window). "
                  "state_bytes_per_sequence: bytes the cache holds independent of the sequence length "
                  "(conv + recurrent states), per sequence. Both from a reduced-depth random-weight copy "
                  "(attention and mixer shapes untouched) at T=8 and T=13, scaled by the full model's "
                  "per-layer-type counts."),
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "command": "python tools/measure/families_kv.py",
        "models": dict(sorted(models.items())),
        "failed": failed,
    }
    text = _compact(json.dumps(result, indent=1)) + "\n"
    if args.stdout:
        sys.stdout.write(text)
    else:
        with open(args.out, "w") as fh:
            fh.write(text)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
