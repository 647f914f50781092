"""`llmforge align self-instruct|label`: synthetic SFT data and AI-feedback preference labels."""
from __future__ import annotations

import argparse


def register_verbs(verbs: argparse._SubParsersAction) -> None:
    pass
