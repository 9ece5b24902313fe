"""Names of every scenario choice, kept free of SymPy so the CLI can list them fast.

The formulas that give each name its meaning import these tuples; a test checks that each
tuple and the table it names agree.
"""

MODES = ("inference", "training")
ATTENTION = ("sdpa", "eager")  # fused kernels (no score matrix) vs materialised scores
LOGITS_MODES = ("all", "last")
RECOMPUTE_MODES = ("none", "selective", "full", "op")  # op: torchtitan's per-op SelectiveAC
# layer kinds: the entries of formulas/layers/ (MIXERS, MLPS)
MIXER_KINDS = ("attention", "sliding_attention", "mla")
MIXER_KINDS += ("gated_deltanet", "mamba", "mamba2", "attention_mamba2", "none")  # issue 13: recurrent kinds
MLP_KINDS = ("dense", "moe", "none")
MIXER_KINDS += ("chunked_attention", "cross_attention")  # Llama 4, Llama 3.2 Vision (formulas/layers/)
MLA_LAYOUTS = ("latent", "decompressed")
QUANT_SCHEMES = ("none", "int8", "int4", "fp8", "nf4", "w8a8", "mxfp4", "gptq")
OPTIMIZERS = ("adamw", "adam", "adam8bit", "adamw8bit", "paged-adamw8bit", "paged-adamw", "lion", "adafactor",
              "sgd-momentum", "sgd")
PRECISIONS = ("auto", "pure", "amp", "zero16", "megatron18", "deepspeed20", "fp8")  # amp: --profile transformers
DTYPES = ("float32", "float16", "bfloat16", "float8", "int8", "int4")
OFFLOAD = ("none", "optimizer", "parameters", "both")  # ZeRO-Offload / ZeRO-Infinity targets
ZERO_STAGES = (0, 1, 2, 3)
# llama.cpp's --cache-type-k/-v values (common/arg.cpp, kv_cache_types); sizes in formulas/frameworks/llamacpp.py
LLAMACPP_CACHE_TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1")
LLAMACPP_FLASH_ATTN = ("auto", "on", "off")  # common/arg.cpp -fa/--flash-attn: auto (the default), on, off
DEVICES = ("cuda", "cpu")  # transformers profile: AdamW is foreach on CUDA, single-tensor on CPU
