"""The bounds every number from a user, a config file or a checkpoint is checked against.

One table, :data:`BOUNDS`, says how large each kind of value may be: far above any real
model (the largest published configs have ~10^2 layers, ~10^5 hidden units, ~10^6 vocab
entries), small enough that every total stays an exact integer of a few dozen digits and
finite in float64 (compiled functions, ``codegen``, ``sweep``). The config readers
(``engine.spec.config_int``), the size and fraction parsers (``engine.units``) and the
scenario's integers (``engine.scenario``) all check against it, and the error names the
field or flag, the bound and the value. docs/hardening.md lists the table.

Also here: text made safe to print (control characters escaped, long values cut), so that
a name read from a folder, a tensor or a config can neither move the cursor nor run past
one line.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.errors import ConfigError, InputError


@dataclass(frozen=True)
class Bound:
    low: int
    high: int
    what: str  # what the bound is for, as docs/hardening.md names it


FLOAT64_EXACT = 2**53  # every integer up to here is exact in float64 (IEEE 754 binary64, 53-bit significand)

BOUNDS: dict[str, Bound] = {
    "layers": Bound(1, 10**5, "layers, layer indices and layer periods"),
    "count": Bound(1, 10**5, "attention heads, key/value heads, experts, norms"),
    "dimension": Bound(1, 10**9, "widths: hidden, intermediate, vocab, head_dim, ranks, windows, positions"),
    "tokens": Bound(1, FLOAT64_EXACT, "--seq-len, --block-size, --quant-group-size"),
    "batch": Bound(1, FLOAT64_EXACT, "--batch-size"),
    "degree": Bound(1, 2**20, "--tp, --pp, --dp, --ep, --cp, --vpp (at most 2^20 GPUs, as --max-gpus)"),
    "rank": Bound(1, 10**6, "--lora-rank"),
    "bytes": Bound(0, 10**21, "--reserve, --comm-buffer, --budget (a zettabyte)"),
}
MAX_DIGITS = 30  # digits a number written as text may have: read before int() or Fraction() runs
MAX_MESSAGE = 300  # characters of one error line
MAX_SHOWN = 60  # characters of an untrusted value an error line repeats

# config.json fields by kind; any other integer field is a "dimension"
CONFIG_FIELDS: dict[str, str] = {
    **dict.fromkeys(("num_hidden_layers", "n_layer", "max_window_layers", "first_k_dense_replace",
                     "decoder_sparse_step", "moe_layer_freq", "mlp_only_layers"), "layers"),
    **dict.fromkeys(("num_attention_heads", "n_head", "num_key_value_heads", "num_kv_heads", "n_head_kv",
                     "num_experts", "n_routed_experts", "num_local_experts", "num_experts_per_tok",
                     "n_shared_experts", "num_ln_in_parallel_attn"), "count"),
}

# Scenario fields (flag, kind)
SCENARIO_FIELDS: dict[str, tuple[str, str]] = {
    "batch_size": ("--batch-size", "batch"), "seq_len": ("--seq-len", "tokens"),
    "block_size": ("--block-size", "tokens"), "quant_group_size": ("--quant-group-size", "tokens"),
    "tp": ("--tp", "degree"), "pp": ("--pp", "degree"), "dp": ("--dp", "degree"), "ep": ("--ep", "degree"),
    "cp": ("--cp", "degree"), "vpp": ("--vpp", "degree"), "lora_rank": ("--lora-rank", "rank"),
    "reserve_bytes": ("--reserve", "bytes"), "comm_buffer_bytes": ("--comm-buffer", "bytes"),
}


def config_bound(field: str) -> Bound:
    """The bound of a config.json integer field."""
    return BOUNDS[CONFIG_FIELDS.get(field, "dimension")]


def check_config_value(where: str, field: str, value: int) -> int:
    """``value`` if it is within its field's bound, else a ConfigError naming both."""
    bound = config_bound(field)
    if value > bound.high:
        raise ConfigError(f"{where}: field {field!r} must be at most {bound.high:,} ({bound.what}), "
                          f"got {number_shown(value)}")
    return value


def check_list_length(where: str, field: str, value: list) -> list:
    """A per-layer list no longer than the layer bound (before anything iterates over it)."""
    if len(value) > BOUNDS["layers"].high:
        raise ConfigError(f"{where}: field {field!r} holds {len(value):,} entries; at most "
                          f"{BOUNDS['layers'].high:,} ({BOUNDS['layers'].what})")
    return value


def check_scenario_values(scenario: object) -> None:
    """Each integer knob of a Scenario within :data:`SCENARIO_FIELDS`' bounds (None: free)."""
    for name, (flag, kind) in SCENARIO_FIELDS.items():
        value = getattr(scenario, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > BOUNDS[kind].high:
            raise InputError(f"{flag} must be at most {BOUNDS[kind].high:,} ({BOUNDS[kind].what}), "
                             f"got {number_shown(value)}")


def check_digits(text: str, flag: str) -> str:
    """``text`` unless it holds more than :data:`MAX_DIGITS` digits (before int()/Fraction() see it)."""
    digits = sum(c.isdigit() for c in text)
    if digits > MAX_DIGITS:
        raise InputError(f"{flag}: {shown(text)} has {digits:,} digits; at most {MAX_DIGITS} are read")
    return text


# --- text safe to print -----------------------------------------------------------------

def number_shown(value: int) -> str:
    """An integer for a message: in full up to 30 digits, else ``about 10^N`` (never str() of 5,000 digits)."""
    if abs(value) < 10**MAX_DIGITS:
        return str(value)
    sign = "-" if value < 0 else ""
    return f"{sign}about 2^{abs(value).bit_length() - 1}"


def printable(text: object) -> str:
    """``text`` with control characters (ESC, newlines, DEL, C1) written as ``\\xNN`` escapes."""
    out = []
    for c in str(text):
        code = ord(c)
        out.append(c if c.isprintable() or c == " " else (f"\\x{code:02x}" if code < 256 else f"\\u{code:04x}"))
    return "".join(out)


def cut(text: str, limit: int = MAX_SHOWN) -> str:
    """``text`` shortened to ``limit`` characters (the middle replaced by '...')."""
    if len(text) <= limit:
        return text
    head = (limit - 3) * 2 // 3
    return text[:head] + "..." + text[len(text) - (limit - 3 - head):]


def shown(value: object, limit: int = MAX_SHOWN) -> str:
    """``repr(value)``, cut to ``limit``: a 1 MB string or a 5,000-digit int makes no long line."""
    if isinstance(value, int) and not isinstance(value, bool):
        return number_shown(value)
    try:
        text = repr(value)
    except (RecursionError, ValueError):
        text = f"<{type(value).__name__} too large to show>"
    return cut(printable(text), limit)


def message_line(message: object, limit: int = MAX_MESSAGE) -> str:
    """An error message as one printable line of at most ``limit`` characters."""
    return cut(" ".join(printable(" ".join(str(message).split())).split()), limit)
