"""The ``vllm`` profile's KV cache for recurrent and hybrid models (Mamba, Mamba-2, Gated DeltaNet).

vLLM 0.19 gives every recurrent layer a ``MambaSpec`` whose page holds one sequence's whole
state (formulas/frameworks/vllm_mamba.py). How it turns those pages into blocks, tokens and
concurrency (``vllm/v1/core/kv_cache_utils.py``):

- **attention-free** (Mamba, Mamba-2): every layer has the same spec, one KV-cache group of all
  layers (``_get_kv_cache_groups_uniform_spec``), ``num_blocks = available // page // layers``;
  the spec's block size is ``max_model_len`` (``MambaModelConfig``: one page per request);
- **hybrid** (attention + recurrent): the attention block size is raised until one attention
  page holds a recurrent state and the recurrent page is padded to it
  (``Platform._align_hybrid_block_size``); the layers of each spec are split into groups of
  ``g = min(attention layers, recurrent layers)`` (the larger count when under 1.5 times the
  smaller: ``_get_kv_cache_groups_uniform_page_size``),
  ``num_blocks = available // page // g`` (``get_kv_cache_config_from_groups``);
- "GPU KV cache size" is ``num_blocks // groups x min(block sizes)`` and "Maximum concurrency"
  ``num_blocks / (attention groups x ceil(L / B_attn) + recurrent groups x pages per request)``
  (``_report_kv_cache_config``, ``get_max_concurrency_for_kv_cache_config``): a recurrent group
  costs one page per request (two with ``--enable-prefix-caching --mamba-cache-mode align``)
  whatever ``max_model_len``.

The recurrent state is constant in ``max_model_len`` and linear in requests; only attention
pages grow with the length. Refused, one line naming it: pipeline parallelism, sliding,
chunked or MLA attention beside recurrent layers, ``--mamba-cache-mode all``.
"""

from __future__ import annotations

import sympy

from engine import architecture
from engine.errors import InputError
from engine.scenario import Scenario
from engine.spec import ModelSpec
from formulas import symbols as S
from formulas.dtypes import DTYPE_BYTES
from formulas.frameworks import vllm as F
from formulas.frameworks import vllm_mamba as M

RECURRENT_KINDS = tuple(M.STATE_SHAPES)
# mixer kinds that may sit beside a recurrent kind: attention (FullAttentionSpec) and
# Nemotron-H's MLP-only blocks (no KV-cache spec)
COMPANION_KINDS = ("attention", "none")
# vllm/model_executor/models/config.py NemotronHForCausalLMConfig.DEFAULT_MAMBA_SSM_CACHE_DTYPE:
# its SSM state defaults to float32 ("only float32 is known to have no accuracy issues") when
# the config has no ``mamba_ssm_cache_dtype`` (update_mamba_ssm_cache_dtype reads the config's
# field first: ModelSpec.ssm_cache_dtype, set by engine/families_recurrent.py).
SSM_DTYPE_BY_TYPE = {"nemotron_h": "float32"}

# vllm/model_executor/models/config.py MambaModelConfig.verify_and_update_config: with prefix
# caching and --mamba-cache-mode none, vLLM picks "all" where the model class supports Mamba
# prefix caching, else "align"; Qwen3-Next's Gated DeltaNet takes "align" (vLLM PR #30877).
# The other kinds may get "all" (vLLM PR #25752, Mamba-2), which is not modelled.
PREFIX_CACHING_MODE = {"gated_deltanet": "align"}

SOURCES = {
    "kv_cache/state": "vllm/v1/kv_cache_interface.py MambaSpec.page_size_bytes (shapes: vllm/model_executor/"
                      "layers/mamba/mamba_utils.py MambaStateShapeCalculator) x pages a request x whole requests "
                      "of kv_cache_utils.py get_max_concurrency_for_kv_cache_config",
    "kv_cache/attention": "vllm/v1/worker/gpu_worker.py determine_available_memory: the available KV memory "
                          "the recurrent states leave (attention pages and padding)",
}
DESCRIPTIONS = {
    "kv_cache/state": "recurrent state of the most whole requests that fit (constant in max_model_len)",
    "kv_cache/attention": "the rest: attention KV pages, page padding and unused blocks",
}


def recurrent_kind(spec: ModelSpec) -> str | None:
    """The model's recurrent mixer kind (vLLM builds one MambaSpec for all its layers), or None."""
    kinds = [g.mixer for g in spec.layers if g.mixer in RECURRENT_KINDS]
    return kinds[0] if kinds else None


def layer_counts(spec: ModelSpec) -> tuple[int, int]:
    """(attention layers, recurrent layers) with a KV-cache spec; Falcon-H1's parallel layer has one of each."""
    attention = spec.layer_count(mixer="attention") + spec.layer_count(mixer="attention_mamba2")
    return attention, sum(spec.layer_count(mixer=kind) for kind in RECURRENT_KINDS)


def check(spec: ModelSpec, scenario: Scenario) -> None:
    """Refuse what the hybrid accounting does not describe, naming it."""
    kind = recurrent_kind(spec)
    if kind is None:
        return
    others = sorted({g.mixer for g in spec.layers} - set(RECURRENT_KINDS) - set(COMPANION_KINDS))
    if others:
        raise InputError(f"--profile vllm: {spec.name} has {', '.join(others)} layers beside {kind} layers; "
                         "vLLM's KV-cache groups of that mix are not modelled")
    if len({g.mixer for g in spec.layers} & set(RECURRENT_KINDS)) > 1:
        raise InputError(f"--profile vllm: {spec.name} mixes recurrent kinds; not modelled")
    if scenario.pp > 1:
        raise InputError(f"--pipeline-parallel-size {scenario.pp}: pipeline parallelism of a recurrent model "
                         f"({spec.name}) is not modelled by the vllm profile")
    for field, value in architecture.recurrent_tp_splits(spec).items():
        if value % scenario.tp:  # mamba_utils.py divide(): each rank holds a whole share
            raise InputError(f"--tensor-parallel-size {scenario.tp} does not divide {field} {value} of {spec.name}")


def state_widths(spec: ModelSpec, settings, model_width) -> tuple:
    """(conv, SSM) bytes per element: ``MambaStateDtypeCalculator._mamba_state_dtype``
    (``mamba_cache_dtype`` auto: the model dtype; ``mamba_ssm_cache_dtype`` auto: the conv dtype,
    after the config's own ``mamba_ssm_cache_dtype``, else the family's default)."""
    conv = model_width if settings.mamba_cache_dtype == "auto" else DTYPE_BYTES[settings.mamba_cache_dtype]
    ssm_name = settings.mamba_ssm_cache_dtype
    if ssm_name == "auto":
        ssm_name = spec.ssm_cache_dtype or SSM_DTYPE_BY_TYPE.get(spec.model_type, "auto")
    return conv, conv if ssm_name == "auto" else DTYPE_BYTES[ssm_name]


def effective_mode(spec: ModelSpec, settings) -> str:
    """The mamba_cache_mode vLLM runs with: "none" without prefix caching (MambaModelConfig
    resets it), the flag's mode with it, else the mode vLLM picks for the model."""
    if not settings.enable_prefix_caching:
        return "none"
    if settings.mamba_cache_mode != "none":
        return settings.mamba_cache_mode
    kind = recurrent_kind(spec)
    if kind not in PREFIX_CACHING_MODE:
        raise InputError(f"--enable-prefix-caching: vLLM may pick mamba_cache_mode 'all' for {spec.name} "
                         f"({kind}), which is not modelled; pass --mamba-cache-mode align")
    return PREFIX_CACHING_MODE[kind]


def forward_peaks(spec: ModelSpec) -> list[sympy.Expr]:
    """The recurrent layers' profile-forward peak (formulas/frameworks/vllm_mamba.py)."""
    kind = recurrent_kind(spec)
    return [] if kind is None else [M.recurrent_forward_peak(kind, F.profile_tokens())]


def group_size_for(*layer_counts: int) -> int:
    """Layers per KV-cache group (``_get_kv_cache_groups_uniform_page_size``): the fewest layers
    of one spec, or the most when they are under 1.5 times the fewest (vLLM PR #29303: pad the
    smaller type rather than split the larger)."""
    fewest, most = min(layer_counts), max(layer_counts)
    return most if most < fewest * 1.5 else fewest


def quantities(spec: ModelSpec, available: sympy.Expr, mode: str) -> dict[str, sympy.Expr]:
    """Page, blocks, tokens and concurrency of one worker's cache, as kv_cache_utils.py computes them."""
    kind = recurrent_kind(spec)
    attention_layers, recurrent_layers = layer_counts(spec)
    state_page = M.mamba_page_bytes(kind)
    if not attention_layers:
        block = M.mamba_block_size(mode, S.block_size)
        page, group_size, attention_groups, recurrent_groups = state_page, recurrent_layers, 0, 1
        tokens_per_block = block
    else:
        block = M.hybrid_block_size(kind)
        page = M.hybrid_page_bytes(kind)
        group_size = group_size_for(attention_layers, recurrent_layers)
        attention_groups = -(-attention_layers // group_size)
        recurrent_groups = -(-recurrent_layers // group_size)
        tokens_per_block = sympy.Min(block, M.mamba_block_size(mode, block))
    groups = attention_groups + recurrent_groups
    blocks = F.num_gpu_blocks(available, page, group_size)
    request = attention_groups * sympy.ceiling(S.max_model_len / block) + recurrent_groups * M.request_pages(mode)
    return {
        "page_bytes": page, "layers_per_block": sympy.Integer(group_size), "num_groups": sympy.Integer(groups),
        "num_gpu_blocks": blocks, "kv_cache_tokens": sympy.floor(blocks / groups) * tokens_per_block,
        "request_blocks": request, "max_concurrency": F.max_concurrency(blocks, request),
        "request_kv_bytes": group_size * page * request,
        "attention_block_size": block if attention_layers else sympy.Integer(0),
        "state_page_bytes": state_page,
        "state_bytes_per_request": recurrent_layers * page * M.request_pages(mode),
    }


def facts(spec: ModelSpec, settings, model_width) -> dict[sympy.Symbol, sympy.Expr]:
    """The state dtypes' widths."""
    conv, ssm = state_widths(spec, settings, model_width)
    return {S.conv_state_bytes: sympy.Rational(conv), S.state_bytes: sympy.Rational(ssm)}


def inputs(spec: ModelSpec, settings) -> dict[str, object]:
    """The recurrent settings echoed in the model's inputs."""
    return {"mamba_cache_mode": effective_mode(spec, settings), "enable_prefix_caching": settings.enable_prefix_caching,
            "mamba_cache_dtype": settings.mamba_cache_dtype,
            "mamba_ssm_cache_dtype": settings.mamba_ssm_cache_dtype, "recurrent_kind": recurrent_kind(spec)}


def state_terms(available: sympy.Expr, cache: dict[str, sympy.Expr]) -> dict[str, sympy.Expr]:
    """``kv_cache/state``: the recurrent state of ``floor(max concurrency)`` requests, and
    ``kv_cache/attention``: the rest of the available KV memory (the two sum to ``kv_cache``)."""
    state = sympy.floor(cache["max_concurrency"]) * cache["state_bytes_per_request"]
    return {"kv_cache/state": state, "kv_cache/attention": available - state}
