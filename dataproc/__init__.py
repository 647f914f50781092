"""Data pipeline: Common Crawl WARC -> clean documents -> token shards, on Ray Data."""
