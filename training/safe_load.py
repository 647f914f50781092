"""Reading torch checkpoint files without running code pickled into them.

A `.pt` file is a pickle: loaded with `weights_only=False` it may call any function (a file
from a shared bucket could run `os.system` on every worker that resumes from it). PyTorch's
`weights_only=True` unpickler only builds tensors, containers and primitives plus the globals
explicitly allowlisted. DeepSpeed's checkpoint engine and `zero_to_fp32` hard-code
`torch.load(..., weights_only=False)`, which we cannot change, so `weights_only_loading()`
sets `TORCH_FORCE_WEIGHTS_ONLY_LOAD`, which torch.load honours over its explicit argument, and
allowlists the few plain DeepSpeed types its checkpoints contain.

    with weights_only_loading():
        engine.load_checkpoint(...)          # resume
    state = safe_torch_load("file.pt")        # a single file

Both the environment variable and torch's allowlist are process-wide, so another thread
calling torch.load meanwhile is also held to weights_only (stricter, never looser).
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

import torch

from llmforge.common.environ import env_restored

FORCE = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"
FORCE_NO = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"  # torch refuses to load if both are set


def checkpoint_globals() -> list[Callable]:
    """The non-builtin globals in DeepSpeed 0.19 checkpoints (ZeRO 0-3, fp32/bf16, found
    with `torch.serialization.get_unsafe_globals_in_checkpoint`). Each is inert data: a loss
    scaler (floats and ints), a (numel, start) dataclass, an int enum. A DeepSpeed upgrade
    that pickles something new fails loudly with torch's "Unsupported global" error naming
    it; add it here only after checking it cannot run code when constructed."""
    # Imported here so that importing this module does not pull in DeepSpeed.
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, ZeroStageEnum, fragment_address]


@contextmanager
def weights_only_loading(extra_globals: Sequence[Callable] = ()) -> Iterator[None]:
    """Within the block every `torch.load` is weights_only, whatever its caller asked for,
    and DeepSpeed's checkpoint types (plus `extra_globals`) are allowed."""
    with env_restored(FORCE, FORCE_NO):
        os.environ[FORCE] = "1"
        os.environ.pop(FORCE_NO, None)
        with torch.serialization.safe_globals([*checkpoint_globals(), *extra_globals]):
            yield


def safe_torch_load(path: str | os.PathLike, map_location: Any = "cpu", **kwargs: Any) -> Any:
    """`torch.load` of one file with weights_only and DeepSpeed's types allowed.
    Raises `pickle.UnpicklingError` for anything else in the file."""
    with weights_only_loading():
        return torch.load(path, map_location=map_location, weights_only=True, **kwargs)
