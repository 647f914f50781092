"""Write kept documents per input file and close each file's unit once it is complete.

Each block is split by input file; every piece becomes one Parquet part (temp + rename) and
one manifest naming the row numbers it covers. After each manifest the sink checks whether
its input file is now fully covered and, if so, moves it into `documents/` (see `ledger`).
"""
from __future__ import annotations

import io
from collections import Counter
from typing import Any, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from ray.data.block import Block
from ray.data.datasource import Datasink

from dataproc.outputs.ledger import OutputLedger, seq_ranges
from dataproc.reading.inputs import source_key
from llmforge.common import fs, metrics

# Bookkeeping columns that are not part of a document.
INTERNAL_COLUMNS = ("drop_reason",)
DROPPED_COLUMNS = ("id", "url", "seq", "drop_reason")


def _parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


class DocumentSink(Datasink):
    def __init__(self, ledger: OutputLedger, stage_names: list[str], write_dropped: bool = False):
        self.ledger, self.stage_names, self.write_dropped = ledger, stage_names, write_dropped

    def get_name(self) -> str:
        return "WriteDocuments"

    def write(self, blocks: Iterable[Block], ctx) -> list[str]:
        finished = []
        for block in blocks:
            table = block if isinstance(block, pa.Table) else pa.Table.from_pandas(block)
            if table.num_rows == 0:
                continue
            sources = table.column("source")
            for source in pc.unique(sources).to_pylist():
                piece = table.filter(pc.equal(sources, source))
                key = source_key(source)
                if self._write_piece(key, piece) and self.ledger.try_finalize(key):
                    finished.append(key)
        return finished

    def _write_piece(self, key: str, piece: pa.Table) -> bool:
        """Write one file's rows from one block; False if that file was already finished."""
        ledger, filesystem = self.ledger, self.ledger.filesystem
        if ledger.is_done(key):
            return False  # a retried task re-sent rows of a unit that is already closed
        seqs = piece.column("seq").to_numpy()
        lo, hi = int(seqs.min()), int(seqs.max())
        reasons = piece.column("drop_reason")
        kept_mask = pc.is_null(reasons)
        kept = piece.filter(kept_mask)
        timing = [c for c in piece.column_names if c.startswith("t_")]
        stem = ledger.part_stem(key, lo, hi)
        if kept.num_rows:
            doc = kept.drop_columns([c for c in INTERNAL_COLUMNS + tuple(timing) if c in kept.column_names])
            fs.write_bytes_atomic(filesystem, f"{stem}.parquet", _parquet_bytes(doc))
        dropped = piece.filter(pc.invert(kept_mask))
        if self.write_dropped and dropped.num_rows:
            fs.write_bytes_atomic(
                filesystem,
                fs.join(ledger.work_dir(key), "_dropped", f"{stem.rsplit('/', 1)[1]}.parquet"),
                _parquet_bytes(dropped.select([c for c in DROPPED_COLUMNS if c in dropped.column_names])),
            )
        drop_counts = Counter(dropped.column("drop_reason").to_pylist())
        manifest: dict[str, Any] = {
            "seqs": seq_ranges(seqs.tolist()),
            "rows": piece.num_rows,
            "kept": kept.num_rows,
            "dropped": dict(drop_counts),
            "seconds": {c[2:]: float(np.nansum(piece.column(c).to_numpy())) for c in timing},
            "text_bytes": int(pc.sum(pc.binary_length(kept.column("text"))).as_py() or 0) if kept.num_rows else 0,
        }
        fs.write_json_atomic(filesystem, ledger.manifest_path(key, lo, hi), manifest)
        self._export_metrics(manifest)
        return True

    @staticmethod
    def _export_metrics(manifest: dict[str, Any]) -> None:
        metrics.add("llmforge_data_documents_kept", manifest["kept"], {}, "documents written")
        for reason, n in manifest["dropped"].items():
            stage, _, why = reason.partition(":")
            metrics.add("llmforge_data_documents_dropped", n, {"stage": stage, "reason": why}, "documents dropped")
        for stage, sec in manifest["seconds"].items():
            metrics.add("llmforge_data_stage_seconds", sec, {"stage": stage}, "CPU seconds per stage")
