"""vLLM's KV-cache pages for recurrent (Mamba, Gated DeltaNet) layers and hybrid models (vLLM 0.19).

A recurrent layer's KV-cache spec is ``MambaSpec`` (vllm/v1/kv_cache_interface.py): one
page holds one sequence's whole state, ``page_size_bytes = sum(prod(shape) x dtype size)``
over the state tensors whose shapes ``vllm/model_executor/layers/mamba/mamba_utils.py``
``MambaStateShapeCalculator`` gives, in the dtypes ``MambaStateDtypeCalculator`` gives:

- the conv state keeps ``conv_kernel - 1`` past inputs (not the full kernel width that
  transformers keeps) per channel, in ``mamba_cache_dtype`` (``auto``: the model dtype);
- the SSM / delta-rule state in ``mamba_ssm_cache_dtype`` (``auto``: the conv dtype).

A hybrid model's attention and recurrent layers share one block pool, so their pages must
be equal: ``vllm/platforms/interface.py`` ``Platform._align_hybrid_block_size`` raises the
attention block size to the smallest multiple of the kernel alignment whose attention page
holds a whole recurrent state, and pads the recurrent page up to that attention page.

Every function returns a SymPy expression in declared symbols (``beta_cv``: bytes per conv
state element, ``beta_st``: bytes per SSM state element).
"""

from __future__ import annotations

import sympy

from formulas.frameworks.vllm import kv_heads_per_worker
from formulas.symbols import (
    activation_bytes,
    block_size,
    conv_kernel,
    conv_state_bytes,
    head_dim,
    hidden_size,
    kv_cache_bytes,
    linear_key_head_dim,
    linear_num_key_heads,
    linear_num_value_heads,
    linear_value_head_dim,
    mamba_d_inner,
    mamba_head_dim,
    mamba_n_groups,
    mamba_num_heads,
    max_model_len,
    ssm_state_size,
    state_bytes,
    tensor_parallel,
)

# vllm/platforms/interface.py Platform._align_hybrid_block_size: the attention block size is
# a multiple of ``max(min(backend.get_supported_kernel_block_sizes()), cache_config.block_size)``;
# FlashAttention (``MultipleOf(16)``) and FlashInfer (16, 32, 64) on Ampere/Hopper give 16.
# (FlashInfer with head size 256 on Blackwell needs 32: not modelled.)
KERNEL_BLOCK_ALIGNMENT = 16
# MambaSpec.max_memory_usage_bytes: pages one request holds per recurrent layer, by
# ``mamba_cache_mode`` ("none": its running state; "align": the running state plus the one
# kept at the last block boundary for prefix caching; no speculative blocks).
REQUEST_PAGES = {"none": 1, "align": 2}


def conv_state_tokens() -> sympy.Expr:
    """``K - 1``: past inputs a causal conv state keeps (``conv_kernel - 1``, mamba_utils.py)."""
    return conv_kernel - 1


def mamba1_state() -> tuple[sympy.Expr, sympy.Expr]:
    """(conv, SSM) elements of one Mamba-1 layer on one rank: ``(d_in / t)(K - 1)`` and
    ``(d_in / t) N`` (``MambaStateShapeCalculator.mamba1_state_shape``)."""
    channels = mamba_d_inner / tensor_parallel
    return channels * conv_state_tokens(), channels * ssm_state_size


def mamba2_groups_per_rank() -> sympy.Expr:
    """B/C groups one rank keeps: ``G / t``, or one when ``t`` does not divide ``G``
    (``extra_groups_for_head_shards`` extends ``G`` to ``t`` so every head shard has its group)."""
    return sympy.Piecewise((mamba_n_groups / tensor_parallel, sympy.Eq(sympy.Mod(mamba_n_groups, tensor_parallel), 0)),
                           (sympy.Integer(1), True))


def mamba2_state() -> tuple[sympy.Expr, sympy.Expr]:
    """(conv, SSM) elements of one Mamba-2 layer on one rank: ``(a_m d_m / t + 2 G' N)(K - 1)``
    and ``(a_m / t) d_m N`` (``MambaStateShapeCalculator.mamba2_state_shape``; the inner width
    ``a_m d_m`` is the models' ``intermediate_size``)."""
    channels = mamba_num_heads * mamba_head_dim / tensor_parallel + 2 * mamba2_groups_per_rank() * ssm_state_size
    return channels * conv_state_tokens(), mamba_num_heads / tensor_parallel * mamba_head_dim * ssm_state_size


def gated_deltanet_state() -> tuple[sympy.Expr, sympy.Expr]:
    """(conv, delta-rule) elements of one Gated DeltaNet layer on one rank:
    ``((2 a_lk d_lk + a_lv d_lv) / t)(K - 1)`` and ``(a_lv / t) d_lv d_lk``
    (``MambaStateShapeCalculator.gated_delta_net_state_shape``)."""
    channels = (2 * linear_num_key_heads * linear_key_head_dim + linear_num_value_heads * linear_value_head_dim)
    recurrent = linear_num_value_heads / tensor_parallel * linear_value_head_dim * linear_key_head_dim
    return channels / tensor_parallel * conv_state_tokens(), recurrent


# mixer kind (formulas/layers/) -> its vLLM state shapes; Falcon-H1's parallel attention +
# Mamba-2 layer holds one Mamba-2 state (vllm/model_executor/models/falcon_h1.py).
STATE_SHAPES = {"mamba": mamba1_state, "mamba2": mamba2_state, "attention_mamba2": mamba2_state,
                "gated_deltanet": gated_deltanet_state}


def mamba_page_bytes(kind: str) -> sympy.Expr:
    """``conv beta_cv + ssm beta_st``: one recurrent layer's page before padding
    (``MambaSpec.page_size_bytes`` with ``page_size_padded`` unset)."""
    conv, ssm = STATE_SHAPES[kind]()
    return conv * conv_state_bytes + ssm * state_bytes


def attention_token_bytes() -> sympy.Expr:
    """``2 a_kv d beta_kv``: one token of one attention layer (``FullAttentionSpec(block_size=1)``)."""
    return 2 * kv_heads_per_worker() * head_dim * kv_cache_bytes


def hybrid_block_size(kind: str) -> sympy.Expr:
    """``A ceil(page_m / (A x token bytes))`` with ``A = max(16, B_blk)``: the attention block
    size vLLM sets so one attention page holds a whole recurrent state
    (``Platform._align_hybrid_block_size``, mamba_cache_mode "none" and "align")."""
    alignment = sympy.Max(KERNEL_BLOCK_ALIGNMENT, block_size)
    return alignment * sympy.ceiling(mamba_page_bytes(kind) / (alignment * attention_token_bytes()))


def hybrid_page_bytes(kind: str) -> sympy.Expr:
    """The one page size of a hybrid model: the attention page at the raised block size; the
    recurrent page is padded to it (``cache_config.mamba_page_size_padded``)."""
    return hybrid_block_size(kind) * attention_token_bytes()


def mamba_block_size(mode: str, attention_block: sympy.Expr) -> sympy.Expr:
    """Tokens a recurrent page stands for: ``max_model_len`` in mode "none" (one page per
    request), the attention block size in "align" (vllm/model_executor/models/config.py
    ``MambaModelConfig.verify_and_update_config``; ``_align_hybrid_block_size``)."""
    return max_model_len if mode == "none" else attention_block


def request_pages(mode: str) -> int:
    """Pages one request holds in a recurrent group (``MambaSpec.max_memory_usage_bytes``)."""
    return REQUEST_PAGES[mode]


def in_projection_width(kind: str) -> sympy.Expr:
    """Output width of a recurrent layer's input projection (all ranks): Mamba-1 ``2 d_in``
    (x and z), Mamba-2 ``2 a_m d_m + 2 G N + a_m`` (z, xBC, dt), Gated DeltaNet
    ``2 a_lk d_lk + 2 a_lv d_lv + 2 a_lv`` (qkvz and ba): vllm/model_executor/layers/mamba/
    mamba_mixer.py, mamba_mixer2.py ``in_proj``; models/qwen3_next.py ``in_proj_qkvz``/``in_proj_ba``."""
    if kind == "mamba":
        return 2 * mamba_d_inner
    if kind in ("mamba2", "attention_mamba2"):
        return 2 * mamba_num_heads * mamba_head_dim + 2 * mamba_n_groups * ssm_state_size + mamba_num_heads
    values = linear_num_value_heads * linear_value_head_dim
    return 2 * linear_num_key_heads * linear_key_head_dim + 2 * values + 2 * linear_num_value_heads


def recurrent_forward_peak(kind: str, tokens: sympy.Expr) -> sympy.Expr:
    """``T beta_a (2 h + w_in / t)``: a recurrent layer's residual, normed input and input
    projection during the profile forward of ``T`` tokens (the scan kernels' chunk states are
    not counted)."""
    return tokens * activation_bytes * (2 * hidden_size + in_projection_width(kind) / tensor_parallel)
