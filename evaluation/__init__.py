"""Perplexity, multiple choice, contamination, judge. Not built yet: a later issue."""
