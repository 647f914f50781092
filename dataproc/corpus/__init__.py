"""Corpus stages: they need every document at once (Ray Data shuffles), after all inputs are
through the per-document stages: exact and MinHash dedup, the quality model, domain tags, and
corpus-wide quantiles."""
