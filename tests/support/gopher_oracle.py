"""datatrove's Gopher repetition scan, as an oracle for the filter tests."""
from __future__ import annotations


def find_all_duplicate(tokens: list[str], n: int) -> int:
    """Characters in repeated word n-grams, scanning as datatrove's
    gopher_repetition_filter.find_all_duplicate does (a repeat skips ahead n words)."""
    unique, repeated, idx = set(), 0, 0
    while idx < len(tokens) - n + 1:
        gram = tuple(tokens[idx : idx + n])
        if gram in unique:
            repeated += sum(map(len, gram))
            idx += n
        else:
            unique.add(gram)
            idx += 1
    return repeated
