"""Reward functions for tests (`--reward tests.support.rewards:NAME`): ones that vary even on
the text of a random model, so every group carries a signal."""
from __future__ import annotations


def completion_length(completion: str, row: dict) -> float:
    return float(len(completion))
