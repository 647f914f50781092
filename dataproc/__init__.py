"""Data pipeline: Common Crawl WARC -> clean documents -> token shards, on Ray Data.

Sub-packages in the order data flows through them: `reading` (inputs, WARC framing, records,
the Ray datasource) -> `documents` (per-document stages: extraction and filters) -> `corpus`
(dedup, quality model, domains: stages that see every document) -> `tokenization` (BPE,
mixture, token shards) ; `outputs` (ledger, sink, funnel) and `synthetic` (sample WARCs with
planted ground truth). `config.py` is the job's config, `pipeline.py` runs it.
"""
