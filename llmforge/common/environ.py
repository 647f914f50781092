"""Environment variables set for a block and taken back after it."""
from __future__ import annotations

import contextlib
import os
from typing import Iterator


@contextlib.contextmanager
def env_restored(*keys: str) -> Iterator[None]:
    """Within the block `keys` may be set or removed freely; after it each has its old value
    again (or is unset, as it was)."""
    before = {k: os.environ.get(k) for k in keys}
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
