"""What a data job writes: the output ledger (resumable per-input units), the Parquet sink,
reading document directories back, and the funnel (stats.json, table, plot)."""
