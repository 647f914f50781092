"""The one exception family for problems the user fixes, not the code.

`UserError` means: something the user gave (a config key, an input file, a path, a flag)
cannot be used; the message names it and says why. `llmforge` prints such an error as
`error: ...` and exits 2. Every other exception is a bug and keeps its traceback. It is a
`ValueError` so callers and tests that catch `ValueError` keep working.
"""
from __future__ import annotations


class UserError(ValueError):
    """Bad input or configuration; the message names the key, file or flag and the reason."""


class ConfigError(UserError):
    """A config that cannot run; the message names each bad key and why."""
