"""llmforge: Common Crawl to trained, aligned and evaluated LLMs on Ray.

Kept empty on purpose: `llmforge --help` must not import torch or start Ray.
"""
