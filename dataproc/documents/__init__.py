"""Per-document stages: one contract, one registry, the runner, extraction and `filters/`."""
