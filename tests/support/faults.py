"""Fault injection for resume tests, installed as a training step hook (production code
carries only the generic hook, not the fault)."""
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
