"""The spellings people type for a knob's value, and how memsym reads each.

The knob table (engine/scenario.py) points each row at one of these tables; a value given
in another spelling is kept as typed in the ``Scenario``, read through :func:`read`, and
echoed (``inputs["read_as"]`` in JSON, a ``read as:`` line in text) so the user sees what
memsym understood. Sources of the spellings:

- torch / transformers dtype names (``bf16``, ``half``, ``fp16``, ``fp32``): the names of
  ``torch.bfloat16``, ``torch.half`` and the ``--bf16``/``--fp16`` flags of
  ``transformers.TrainingArguments``;
- vLLM's ``--kv-cache-dtype`` choices (``auto``, ``fp8``, ``fp8_e4m3``, ``fp8_e5m2``;
  ``vllm/config/cache.py``, ``CacheDType``): ``auto`` means the model's dtype;
- transformers' ``torch_dtype="auto"`` (``modeling_utils.PreTrainedModel.from_pretrained``):
  the dtype the checkpoint's config.json states;
- PEFT's ``target_modules="all-linear"`` (``peft/tuners/tuners_utils.py``,
  ``INCLUDE_LINEAR_LAYERS_SHORTHAND``): every linear layer except the output layer.
"""

from __future__ import annotations

from formulas.dtypes import DTYPE_ALIASES, DTYPE_BYTES

AUTO = "auto"
ALL_LINEAR = "all-linear"
ONE_BYTE_NOTE = "1 byte per element; e4m3 and e5m2 differ in range, not in size"

# spelling -> (the canonical value, why it reads so); the canonical names read as themselves
DTYPE_SPELLINGS: dict[str, tuple[str, str]] = {
    **{alias: (name, "torch/transformers spelling") for alias, name in DTYPE_ALIASES.items()},
    "fp8_e4m3": ("float8", f"vLLM's fp8_e4m3: {ONE_BYTE_NOTE}"),
    "fp8_e5m2": ("float8", f"vLLM's fp8_e5m2: {ONE_BYTE_NOTE}"),
    "float8_e4m3": ("float8", ONE_BYTE_NOTE),
    "fp8_e4m3fn": ("float8", ONE_BYTE_NOTE),
}
DTYPE_SPELLINGS["fp8"] = ("float8", f"vLLM's fp8 (e4m3): {ONE_BYTE_NOTE}")
# --kv-cache-dtype auto: vLLM's default, the model's dtype (None = follow --dtype)
KV_SPELLINGS: dict[str, tuple[str | None, str]] = {
    **DTYPE_SPELLINGS, AUTO: (None, "vLLM's auto: the model's dtype, as with --kv-cache-dtype left out")}
# --dtype auto: resolved against the checkpoint's torch_dtype when the model is built
WEIGHT_SPELLINGS: dict[str, tuple[str, str]] = {
    **DTYPE_SPELLINGS, AUTO: (AUTO, "transformers' torch_dtype='auto': the checkpoint's config.json torch_dtype")}
LORA_SPELLINGS: dict[tuple[str, ...], tuple[None, str]] = {
    (ALL_LINEAR,): (None, "PEFT's all-linear: every linear layer of attention and MLPs, lm_head excepted")}


def read(table: dict, value):
    """``(value as memsym means it, a note saying how it was read or None)``.

    Values memsym spells that way already come back unchanged with no note. Dtype spellings
    are matched case-insensitively, as :func:`formulas.dtypes.canonical_dtype` does.
    """
    key = value.strip().lower() if isinstance(value, str) else value
    if isinstance(key, str) and key in DTYPE_BYTES:
        return key, (None if key == value else f"{value} read as {key}")
    if key in table:
        meant, why = table[key]
        shown = ",".join(value) if isinstance(value, tuple) else value
        return meant, f"{shown} read as {meant} ({why})" if meant is not None else f"{shown}: {why}"
    return value, None


def spellings_help(table: dict) -> str:
    """The accepted spellings of a dtype table, for --help."""
    return ", ".join(sorted(k for k in table if isinstance(k, str)))
