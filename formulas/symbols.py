"""Every symbol memsym uses, declared once.

Python names follow Hugging Face ``config.json`` fields and the words users type
(``batch_size``, ``seq_len``, ``num_key_value_heads``); LaTeX names are short and are
the same in every output. Each symbol carries SymPy assumptions (all are positive; counts
are integers), a one-line meaning and a unit.

Declaring a ``Symbol`` is cheap and builds no expression, so the table lives in the
module body; formulas are built only when a function asks for them.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy


@dataclass(frozen=True)
class SymbolInfo:
    """What a symbol is: its SymPy object, LaTeX name, meaning and unit."""

    symbol: sympy.Symbol
    latex: str
    meaning: str
    unit: str

    @property
    def name(self) -> str:
        return self.symbol.name


# name, LaTeX, meaning, unit, integer?
_TABLE: tuple[tuple[str, str, str, str, bool], ...] = (
    # --- scenario -------------------------------------------------------------------
    ("batch_size", "b", "sequences processed at once (batch size or concurrent requests)", "sequences", True),
    ("seq_len", "s", "tokens per sequence (prompt plus generated)", "tokens", True),
    ("block_size", "B_{blk}", "tokens per paged KV-cache block (vLLM's block_size)", "tokens", True),
    # --- model shape (config.json names) ----------------------------------------------
    ("hidden_size", "h", "hidden size (model width)", "elements", True),
    ("num_hidden_layers", "L", "transformer layers", "layers", True),
    ("num_attention_heads", "a", "query heads per layer", "heads", True),
    ("num_key_value_heads", "a_{kv}", "key/value heads per layer (a for MHA, 1 for MQA)", "heads", True),
    ("head_dim", "d", "dimension of one attention head", "elements", True),
    ("intermediate_size", "f", "MLP intermediate size of a dense layer", "elements", True),
    ("vocab_size", "V", "vocabulary size", "tokens", True),
    ("max_position_embeddings", "P", "rows of a learned position-embedding table", "positions", True),
    ("num_sliding_layers", "L_{w}", "layers with sliding-window attention", "layers", True),
    ("sliding_window", "w", "sliding-window span", "tokens", True),
    ("num_mlp_free_layers", r"L_{\varnothing}", "layers without an MLP (the mixer is the whole block)", "layers", True),
    # --- mixture of experts -----------------------------------------------------------
    ("num_moe_layers", "L_{e}", "layers whose MLP is a mixture of experts", "layers", True),
    ("num_experts", "E", "routed experts per MoE layer", "experts", True),
    ("num_experts_per_tok", "k_{e}", "routed experts active per token", "experts", True),
    ("num_shared_experts", "E_{sh}", "shared (always active) experts per MoE layer", "experts", True),
    ("moe_intermediate_size", "f_{e}", "intermediate size of one expert", "elements", True),
    ("shared_expert_intermediate_size", "f_{sh}", "intermediate size of the one shared expert (Qwen2-MoE)", "elements", True),
    # --- multi-head latent attention (DeepSeek-V2/V3) -----------------------------------
    ("q_lora_rank", "r_{q}", "rank of the compressed query (MLA)", "elements", True),
    ("kv_lora_rank", "r_{kv}", "rank of the compressed key/value latent (MLA)", "elements", True),
    ("qk_nope_head_dim", "d_{n}", "per-head query/key dimension without rotary embedding (MLA)", "elements", True),
    ("qk_rope_head_dim", "d_{r}", "per-head query/key dimension with rotary embedding (MLA)", "elements", True),
    ("v_head_dim", "d_{v}", "per-head value dimension (MLA)", "elements", True),
    # --- bytes per element ------------------------------------------------------------
    ("weight_bytes", r"\beta_{w}", "bytes per stored weight element", "bytes", False),
    ("quantized_weight_bytes", r"\beta_{q}", "bytes per quantized linear-layer weight element", "bytes", False),
    ("quant_group_size", "g", "weights sharing one quantization scale (group-wise int4)", "elements", True),
    ("quant_scale_bytes", r"\beta_{sc}", "bytes per quantization scale", "bytes", False),
    ("kv_cache_bytes", r"\beta_{kv}", "bytes per KV-cache element", "bytes", False),
    ("kv_key_bytes", r"\beta_{k}", "bytes per key-cache element (llama.cpp --cache-type-k)", "bytes", False),
    ("kv_value_bytes", r"\beta_{v}", "bytes per value-cache element (llama.cpp --cache-type-v)", "bytes", False),
    ("activation_bytes", r"\beta_{a}", "bytes per activation element", "bytes", False),
    ("gradient_bytes", r"\beta_{g}", "bytes per gradient element", "bytes", False),
    ("master_weight_bytes", r"\beta_{m}", "bytes per master-weight element (0 without a master copy)", "bytes", False),
    ("optimizer_bytes", r"\beta_{o}", "bytes of optimizer state per trained parameter", "bytes", False),
    ("loss_bytes", r"\beta_{\ell}", "bytes per element of the logits copy the loss makes", "bytes", False),
    # --- parallelism (per GPU of the most loaded rank) ------------------------------------
    ("tensor_parallel", "t", "tensor-parallel degree (heads and MLP split)", "GPUs", True),
    ("pipeline_parallel", "p", "pipeline-parallel degree (layers split into stages)", "GPUs", True),
    ("data_parallel", "N_{d}", "data-parallel degree (ZeRO partitions over it)", "GPUs", True),
    ("expert_parallel", "N_{e}", "expert-parallel degree (routed experts split)", "GPUs", True),
    ("context_parallel", "N_{c}", "context-parallel degree (sequence split)", "GPUs", True),
    ("virtual_pipeline", "v", "model chunks per pipeline stage (interleaved schedule)", "chunks", True),
    # --- parameter-efficient fine-tuning ------------------------------------------------
    ("lora_rank", "r", "LoRA rank", "elements", True),
    ("adapter_bytes", r"\beta_{ad}", "bytes per LoRA adapter element", "bytes", False),
    # --- overheads ------------------------------------------------------------------------
    ("reserve_bytes", "R", "memory reserved outside the model (CUDA context, runtime)", "bytes", True),
    ("allocator_fraction", r"\phi", "allocator reserve and fragmentation, as a fraction of the peak", "ratio", False),
    ("comm_buffer_bytes", "C", "communication buffers (gradient buckets, NCCL)", "bytes", True),
    # --- budgets (engine/solve.py) ---------------------------------------------------------
    ("budget_bytes", "M", "usable memory of one GPU (the budget a solve fits within)", "bytes", True),
    ("num_gpus", "N", "GPUs the model is split over evenly (solve num-gpus)", "GPUs", True),
    # --- serving engine start-up (formulas/frameworks/vllm.py) -----------------------------
    ("gpu_memory_utilization", "u", "fraction of one GPU's total memory vLLM may use (--gpu-memory-utilization)", "ratio", False),
    ("cuda_total_bytes", "M_{cuda}", "total memory of one GPU as cudaMemGetInfo reports it", "bytes", True),
    ("max_num_batched_tokens", "T_{b}", "scheduler token budget per step (vLLM's profile forward)", "tokens", True),
    ("max_num_seqs", "N_{seq}", "most requests scheduled at once (vLLM's dummy sampler batch)", "sequences", True),
    ("max_model_len", "L_{max}", "tokens of one request, prompt plus output (--max-model-len)", "tokens", True),
    ("non_torch_bytes", "C_{nt}", "device memory grown outside torch's allocator during start-up", "bytes", True),
    ("rotary_positions", "P_{rope}", "rows of the rotary cos/sin cache (positions)", "positions", True),
    ("rotary_dim", "d_{rope}", "rotary dimensions of one head", "elements", True),
    ("stage_layers", r"L_{st}", "layers held by one pipeline stage", "layers", True),
    # --- chunked attention (Llama 4, formulas/layers/chunked_attention.py) ------------------
    ("num_chunked_layers", "L_{ch}", "layers with chunked (local) attention", "layers", True),
    ("attention_chunk_size", "C_{ch}", "tokens per attention chunk (Llama 4's attention_chunk_size)", "tokens", True),
    ("num_cross_attention_layers", "L_{x}", "layers whose attention reads image features (Mllama)", "layers", True),
    # --- recurrent mixers: Gated DeltaNet, Mamba-1/2 (issue 13) -----------------------------
    ("state_bytes", r"\beta_{st}", "bytes per recurrent-state element (fp32 in transformers)", "bytes", False),
    ("num_linear_attention_layers", "L_{la}", "layers with Gated DeltaNet linear attention", "layers", True),
    ("num_mamba_layers", "L_{m}", "layers with a Mamba-1 mixer", "layers", True),
    ("num_mamba2_layers", "L_{m2}", "layers with a Mamba-2 mixer", "layers", True),
    ("num_mixer_free_layers", r"L_{\varnothing a}", "layers without a token mixer (the MLP is the whole block)", "layers", True),
    ("conv_kernel", "K_{cv}", "width of a recurrent mixer's causal convolution", "elements", True),
    ("linear_num_key_heads", "a_{lk}", "key heads of a Gated DeltaNet layer", "heads", True),
    ("linear_num_value_heads", "a_{lv}", "value heads of a Gated DeltaNet layer", "heads", True),
    ("linear_key_head_dim", "d_{lk}", "key head dimension of a Gated DeltaNet layer", "elements", True),
    ("linear_value_head_dim", "d_{lv}", "value head dimension of a Gated DeltaNet layer", "elements", True),
    ("mamba_d_inner", "d_{in}", "inner width of a Mamba-1 mixer (expand x h)", "elements", True),
    ("ssm_state_size", "N_{st}", "state size per channel of a Mamba mixer", "elements", True),
    ("time_step_rank", "R_{dt}", "rank of a Mamba-1 mixer's time-step projection", "elements", True),
    ("mamba_num_heads", "a_{m}", "heads of a Mamba-2 mixer", "heads", True),
    ("mamba_head_dim", "d_{m}", "head dimension of a Mamba-2 mixer", "elements", True),
    ("mamba_n_groups", "G_{m}", "B/C groups of a Mamba-2 mixer", "groups", True),
    ("conv_state_bytes", r"\beta_{cv}", "bytes per conv-state element (vLLM's mamba_cache_dtype)", "bytes", False),
)


# Quantities that may be zero (an overhead left off, SGD's empty state); all others are positive.
_MAY_BE_ZERO = {"non_torch_bytes", "reserve_bytes", "allocator_fraction", "comm_buffer_bytes", "optimizer_bytes", "master_weight_bytes"}


def _declare() -> dict[str, SymbolInfo]:
    table: dict[str, SymbolInfo] = {}
    for name, latex, meaning, unit, integer in _TABLE:
        sign = {"nonnegative": True} if name in _MAY_BE_ZERO else {"positive": True}
        if integer:
            symbol = sympy.Symbol(name, integer=True, **sign)
        else:
            symbol = sympy.Symbol(name, rational=True, **sign)
        table[name] = SymbolInfo(symbol, latex, meaning, unit)
    return table


SYMBOLS: dict[str, SymbolInfo] = _declare()

# Module-level names so formulas read like the paper: ``b * s * h``.
batch_size = SYMBOLS["batch_size"].symbol
seq_len = SYMBOLS["seq_len"].symbol
block_size = SYMBOLS["block_size"].symbol
hidden_size = SYMBOLS["hidden_size"].symbol
num_hidden_layers = SYMBOLS["num_hidden_layers"].symbol
num_attention_heads = SYMBOLS["num_attention_heads"].symbol
num_key_value_heads = SYMBOLS["num_key_value_heads"].symbol
head_dim = SYMBOLS["head_dim"].symbol
intermediate_size = SYMBOLS["intermediate_size"].symbol
vocab_size = SYMBOLS["vocab_size"].symbol
max_position_embeddings = SYMBOLS["max_position_embeddings"].symbol
num_sliding_layers = SYMBOLS["num_sliding_layers"].symbol
sliding_window = SYMBOLS["sliding_window"].symbol
num_mlp_free_layers = SYMBOLS["num_mlp_free_layers"].symbol
num_moe_layers = SYMBOLS["num_moe_layers"].symbol
num_experts = SYMBOLS["num_experts"].symbol
num_experts_per_tok = SYMBOLS["num_experts_per_tok"].symbol
num_shared_experts = SYMBOLS["num_shared_experts"].symbol
moe_intermediate_size = SYMBOLS["moe_intermediate_size"].symbol
shared_expert_intermediate_size = SYMBOLS["shared_expert_intermediate_size"].symbol
q_lora_rank = SYMBOLS["q_lora_rank"].symbol
kv_lora_rank = SYMBOLS["kv_lora_rank"].symbol
qk_nope_head_dim = SYMBOLS["qk_nope_head_dim"].symbol
qk_rope_head_dim = SYMBOLS["qk_rope_head_dim"].symbol
v_head_dim = SYMBOLS["v_head_dim"].symbol
weight_bytes = SYMBOLS["weight_bytes"].symbol
quantized_weight_bytes = SYMBOLS["quantized_weight_bytes"].symbol
quant_group_size = SYMBOLS["quant_group_size"].symbol
quant_scale_bytes = SYMBOLS["quant_scale_bytes"].symbol
kv_cache_bytes = SYMBOLS["kv_cache_bytes"].symbol
kv_key_bytes = SYMBOLS["kv_key_bytes"].symbol
kv_value_bytes = SYMBOLS["kv_value_bytes"].symbol
activation_bytes = SYMBOLS["activation_bytes"].symbol
gradient_bytes = SYMBOLS["gradient_bytes"].symbol
master_weight_bytes = SYMBOLS["master_weight_bytes"].symbol
optimizer_bytes = SYMBOLS["optimizer_bytes"].symbol
loss_bytes = SYMBOLS["loss_bytes"].symbol
reserve_bytes = SYMBOLS["reserve_bytes"].symbol
tensor_parallel = SYMBOLS["tensor_parallel"].symbol
pipeline_parallel = SYMBOLS["pipeline_parallel"].symbol
data_parallel = SYMBOLS["data_parallel"].symbol
expert_parallel = SYMBOLS["expert_parallel"].symbol
context_parallel = SYMBOLS["context_parallel"].symbol
virtual_pipeline = SYMBOLS["virtual_pipeline"].symbol
lora_rank = SYMBOLS["lora_rank"].symbol
adapter_bytes = SYMBOLS["adapter_bytes"].symbol
allocator_fraction = SYMBOLS["allocator_fraction"].symbol
comm_buffer_bytes = SYMBOLS["comm_buffer_bytes"].symbol
budget_bytes = SYMBOLS["budget_bytes"].symbol
num_gpus = SYMBOLS["num_gpus"].symbol
gpu_memory_utilization = SYMBOLS["gpu_memory_utilization"].symbol
cuda_total_bytes = SYMBOLS["cuda_total_bytes"].symbol
max_num_batched_tokens = SYMBOLS["max_num_batched_tokens"].symbol
max_num_seqs = SYMBOLS["max_num_seqs"].symbol
max_model_len = SYMBOLS["max_model_len"].symbol
non_torch_bytes = SYMBOLS["non_torch_bytes"].symbol
rotary_positions = SYMBOLS["rotary_positions"].symbol
rotary_dim = SYMBOLS["rotary_dim"].symbol
stage_layers = SYMBOLS["stage_layers"].symbol
num_chunked_layers = SYMBOLS["num_chunked_layers"].symbol
attention_chunk_size = SYMBOLS["attention_chunk_size"].symbol
num_cross_attention_layers = SYMBOLS["num_cross_attention_layers"].symbol
state_bytes = SYMBOLS["state_bytes"].symbol
num_linear_attention_layers = SYMBOLS["num_linear_attention_layers"].symbol
num_mamba_layers = SYMBOLS["num_mamba_layers"].symbol
num_mamba2_layers = SYMBOLS["num_mamba2_layers"].symbol
num_mixer_free_layers = SYMBOLS["num_mixer_free_layers"].symbol
conv_kernel = SYMBOLS["conv_kernel"].symbol
linear_num_key_heads = SYMBOLS["linear_num_key_heads"].symbol
linear_num_value_heads = SYMBOLS["linear_num_value_heads"].symbol
linear_key_head_dim = SYMBOLS["linear_key_head_dim"].symbol
linear_value_head_dim = SYMBOLS["linear_value_head_dim"].symbol
mamba_d_inner = SYMBOLS["mamba_d_inner"].symbol
ssm_state_size = SYMBOLS["ssm_state_size"].symbol
time_step_rank = SYMBOLS["time_step_rank"].symbol
mamba_num_heads = SYMBOLS["mamba_num_heads"].symbol
mamba_head_dim = SYMBOLS["mamba_head_dim"].symbol
mamba_n_groups = SYMBOLS["mamba_n_groups"].symbol
conv_state_bytes = SYMBOLS["conv_state_bytes"].symbol


def symbol(name: str) -> sympy.Symbol:
    """The declared symbol called ``name``; KeyError names the unknown symbol."""
    try:
        return SYMBOLS[name].symbol
    except KeyError:
        raise KeyError(f"no symbol named {name!r}") from None


def info(sym: sympy.Symbol) -> SymbolInfo:
    """The declaration of a symbol object."""
    return SYMBOLS[sym.name]


def latex_names() -> dict[sympy.Symbol, str]:
    """Symbol -> short LaTeX name, for ``sympy.latex(expr, symbol_names=...)``."""
    return {entry.symbol: entry.latex for entry in SYMBOLS.values()}


def is_declared(sym: sympy.Symbol) -> bool:
    """True when ``sym`` is the very symbol declared here (same name and assumptions)."""
    entry = SYMBOLS.get(sym.name)
    return entry is not None and entry.symbol == sym
