"""memsym's memory terms: each a small function returning a SymPy expression.

Modules: ``symbols`` (every symbol, declared once), ``dtypes`` (bytes per element),
``parameters`` (parameter tensors by component), ``layers`` (one entry per layer kind:
attention, sliding_attention, mla; dense, moe, none), ``weights`` (stored bytes, quantized or
not), ``kv_cache``, ``activations``, ``optimizer`` (gradients, master weights, optimizer
state) and ``overhead``.
"""
