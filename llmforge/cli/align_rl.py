"""`llmforge align ppo|grpo`: online RL on Ray actor groups."""
from __future__ import annotations

import argparse


def register_verbs(verbs: argparse._SubParsersAction) -> None:
    pass
