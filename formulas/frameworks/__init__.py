"""What one framework's code allocates, one module per framework (the profiles' formulas).

The shared formulas of ``formulas/`` describe tensors; the modules here describe the
temporaries and conventions of one framework's code path, each citing the file and
function it reads (``transformers.py``: Hugging Face transformers 5.24 + PyTorch 2.13).
"""
