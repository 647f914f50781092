"""WARC files as a Ray Data datasource: one read task per file, streamed in blocks.

A read task never holds more than about two blocks of records. When it has read the whole
file it records how many rows it emitted (and its reader counters) in the output's ledger
*before* handing over the last block, so the sink can tell when a file is fully written.
"""
from __future__ import annotations

import time
from collections import Counter
from typing import Iterator

import pyarrow as pa
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from dataproc.outputs.ledger import OutputLedger
from dataproc.reading.inputs import source_key
from dataproc.reading.records import WarcReadOptions, iter_html_responses
from llmforge.common import fs, metrics

RECORD_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("url", pa.string()),
        ("host", pa.string()),
        ("date", pa.string()),
        ("content_type", pa.string()),
        ("html", pa.large_string()),
        ("source", pa.string()),
        ("offset", pa.int64()),
        ("seq", pa.int64()),
    ]
)


class _CountingStream:
    """Counts bytes pulled from the file (compressed size) without buffering anything."""

    def __init__(self, raw):
        self.raw, self.bytes_read = raw, 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n) if n is not None and n >= 0 else self.raw.read()
        self.bytes_read += len(data)
        return data

    def readable(self) -> bool:
        return True


class _ReaderClock:
    """CPU seconds spent inside the reader generator, not counting its suspensions at `yield`.

    CPU time, not wall time: the generator sits idle while Ray Data backpressures it. And only
    between yields: when read, stages and write fuse into one task, the stages run on the same
    thread while the reader is suspended, and process time would count them as reading.
    """

    def __init__(self):
        self.seconds, self._since = 0.0, time.process_time()

    def pause(self) -> None:
        self.seconds += time.process_time() - self._since

    def resume(self) -> None:
        self._since = time.process_time()


def read_warc_file(
    uri: str, options: WarcReadOptions, ledger: OutputLedger, docs_per_block: int
) -> Iterator[pa.Table]:
    """Stream one WARC file as record blocks; write its `_expected.json` before the last block."""
    key = source_key(uri)
    filesystem, path = fs.resolve(uri)
    counts: Counter = Counter()
    clock = _ReaderClock()
    pending: list[dict] = []
    seq = 0
    with filesystem.open_input_stream(path, compression=None) as raw:
        stream = _CountingStream(raw)
        # HTML as UTF-8 bytes: Arrow stores (and checks) them as they are, and extraction hands
        # them to its parser as they are; the page is never a Python str on the way.
        for record in iter_html_responses(stream, uri, options, counts, utf8=True):
            record["seq"] = seq
            seq += 1
            pending.append(record)
            if len(pending) >= 2 * docs_per_block:
                # Keep one block back: the last block must leave only after _expected.json.
                block = pa.Table.from_pylist(pending[:docs_per_block], schema=RECORD_SCHEMA)
                pending = pending[docs_per_block:]
                clock.pause()
                yield block
                clock.resume()
    last = [pa.Table.from_pylist(pending[lo : lo + docs_per_block], schema=RECORD_SCHEMA)
            for lo in range(0, len(pending), docs_per_block)]
    clock.pause()
    expected = {
        "source": uri,
        "rows": seq,
        "reader": dict(counts),
        "read_seconds": clock.seconds,
        "file_bytes": stream.bytes_read,
    }
    fs.write_json_atomic(ledger.filesystem, ledger.expected_path(key), expected)
    for kind, n in counts.items():
        if not kind.startswith("bytes"):
            metrics.add("llmforge_data_warc_records", n, {"kind": kind}, "WARC records by outcome")
    yield from last


class WarcDatasource(Datasource):
    """Read HTML 200 responses from WARC files (local, s3://, gs://), one read task per file."""

    def __init__(self, files: list[str], options: WarcReadOptions, ledger: OutputLedger, docs_per_block: int):
        super().__init__()
        self.files, self.options, self.ledger, self.docs_per_block = files, options, ledger, docs_per_block

    def estimate_inmemory_data_size(self) -> int | None:
        return None

    def get_read_tasks(self, parallelism: int, per_task_row_limit=None, data_context=None) -> list[ReadTask]:
        tasks = []
        for uri in self.files:
            meta = BlockMetadata(num_rows=None, size_bytes=None, input_files=[uri], exec_stats=None)
            tasks.append(
                ReadTask(
                    lambda uri=uri: read_warc_file(uri, self.options, self.ledger, self.docs_per_block),
                    meta,
                    schema=RECORD_SCHEMA,
                    per_task_row_limit=per_task_row_limit,
                )
            )
        return tasks

    def get_name(self) -> str:
        return "ReadWARC"
