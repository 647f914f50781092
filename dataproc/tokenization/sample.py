"""A bounded sample of document texts for tokenizer training, read file by file.

Reads Parquet files in sorted order and stops at `limit` texts, so training on a huge
corpus touches only its first files (the sample is deterministic for the same outputs).
"""
from __future__ import annotations

from typing import Iterator

import pyarrow.parquet as pq

from llmforge.common import fs
from llmforge.common.errors import UserError


def sample_texts(documents: str, limit: int, column: str = "text") -> Iterator[str]:
    from dataproc.outputs.parquet import parquet_files

    filesystem, _ = fs.resolve(documents)
    files = [fs.resolve(p)[1] if "://" in p else p for p in parquet_files(documents)]
    if not files:
        raise UserError(f"no Parquet documents under {documents}")
    left = limit
    for path in files:
        with filesystem.open_input_file(path) as f:
            for batch in pq.ParquetFile(f).iter_batches(columns=[column], batch_size=1024):
                for text in batch.column(0).to_pylist():
                    if text:
                        yield text
                        left -= 1
                        if left == 0:
                            return
