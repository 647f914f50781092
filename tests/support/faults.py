"""Fault injection for resume tests, and what a worker sees, installed as training step hooks
(production code carries only the generic hook, not the fault)."""
from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class KillOnce:
    """SIGKILL the worker of `rank` before step `step` + 1, the first time only: a marker file
    `fault_injected` (holding the step) in the run directory survives the restart."""

    step: int
    rank: int = 1

    def __call__(self, step: int, rank: int, run_dir: Path | None) -> None:
        if step != self.step or rank != self.rank or run_dir is None:
            return
        marker = run_dir / "fault_injected"
        if marker.exists():
            return
        marker.write_text(str(step))
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass(frozen=True)
class RecordEnv:
    """Write what rank 0's worker sees of environment variable `name` to `env_<name>` in the run
    directory (`<unset>` when absent), before its first step."""

    name: str

    def __call__(self, step: int, rank: int, run_dir: Path | None) -> None:
        if rank == 0 and run_dir is not None and not (run_dir / f"env_{self.name}").exists():
            (run_dir / f"env_{self.name}").write_text(os.environ.get(self.name, "<unset>"))
