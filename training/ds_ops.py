"""DeepSpeed's JIT-built CPU op: where its build is cached, and building it ahead of time.

On CPU, `deepspeed.init_distributed` compiles a shared-memory comm op (about a minute on two
cores) the first time it runs with a given torch/DeepSpeed install. The cache is keyed by the
Python environment, so two checkouts (two venvs) on one machine do not rebuild each other's,
and the build runs the environment's own `ninja`: a system ninja of another version hashes
the commands differently and would rebuild what the other wrote. `python -m training.ds_ops`
(run by infra/setup.sh) pays that minute at install time.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import time
from pathlib import Path
from typing import Iterator

from llmforge.common.environ import env_restored


def torch_extensions_dir() -> str:
    """TORCH_EXTENSIONS_DIR if set, else a per-environment directory under ~/.cache/llmforge."""
    if os.environ.get("TORCH_EXTENSIONS_DIR"):
        return os.environ["TORCH_EXTENSIONS_DIR"]
    env_tag = hashlib.sha1(sys.prefix.encode()).hexdigest()[:12]
    return str(Path.home() / ".cache" / "llmforge" / "torch_extensions" / env_tag)


@contextlib.contextmanager
def jit_build_env() -> Iterator[str]:
    """For DeepSpeed calls that may JIT-build an op: the cache directory set for this process,
    and, while inside, this environment's `ninja` first on PATH (torch runs `ninja` from PATH)."""
    os.environ["TORCH_EXTENSIONS_DIR"] = torch_extensions_dir()
    bin_dir = str(Path(sys.executable).parent)
    with env_restored("PATH"):
        if (Path(bin_dir) / "ninja").exists():
            path = os.environ.get("PATH")
            os.environ["PATH"] = os.pathsep.join([bin_dir, path]) if path else bin_dir
        yield os.environ["TORCH_EXTENSIONS_DIR"]


def prebuild() -> tuple[str | None, float]:
    """Build (or find built) the op `init_distributed` loads on this machine; returns its name
    (None when this accelerator needs none) and the seconds it took."""
    start = time.perf_counter()
    from deepspeed.comm.torch import build_shm_op

    with jit_build_env():
        op = build_shm_op()
    return (None if op is None else op.__name__), time.perf_counter() - start


if __name__ == "__main__":
    name, seconds = prebuild()
    where = torch_extensions_dir()
    print(f"deepspeed ops: {name or 'none needed'} ready in {seconds:.1f} s ({where})")
