"""One base class for every error a user can cause; the CLI prints its message on one line."""

from __future__ import annotations


class MemsymError(Exception):
    """An error in what the user asked for: the message names the field or flag and value."""


class ConfigError(MemsymError):
    """A config.json (or registry entry) that is missing a field or holds a bad value."""


class UnsupportedModelError(ConfigError):
    """A config of an architecture family memsym has no formulas for."""


class UnknownModelError(MemsymError):
    """A model id that is neither in the registry nor a readable local config."""


class InputError(MemsymError):
    """A scenario value (batch size, dtype, budget, ...) that is out of range or unknown."""


class InfeasibleError(MemsymError):
    """A budget too small for even the smallest case; the message says what is needed."""
