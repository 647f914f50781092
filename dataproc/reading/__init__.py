"""Reading input: resolving paths and crawl ids to files, WARC framing and records, HTTP and
charset decoding, the Ray Data datasource; plain text files for the text-to-shards path."""
