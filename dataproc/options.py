"""Options every data stage has, per-document and corpus alike."""
from __future__ import annotations

from llmforge.common.config import StrictModel


class StageOptions(StrictModel):
    """Options every stage has."""

    enabled: bool = True
