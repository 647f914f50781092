"""The output ledger: the bookkeeping that makes `data run` resumable and loss-free.

One input WARC file is one unit of work, identified by `source_key`:

    <output>/_job.json                          {"fingerprint"} of the options that decide
                                                documents/: a rerun with others is refused
    <output>/_work/<key>/_expected.json        written by the reader when it finished the file:
                                                rows it emitted + reader counters
    <output>/_work/<key>/part-<lo>-<hi>.parquet kept documents of one written block (temp + rename)
    <output>/_work/<key>/_part-<lo>-<hi>.json   which row numbers (seq) that part covers + its funnel
    <output>/documents/<key>/                   the same directory, renamed once complete,
                                                with `_stats.json` (the file's whole funnel)
    <output>/stats.json                         the funnel summed over every finished input

A unit is complete when its parts cover row numbers 0..rows-1 exactly once; only then is it
renamed into `documents/`. A rerun skips finished units, finalizes units whose parts were
all written before a kill, and deletes and redoes the rest: no document twice, none missing.
Parquet readers skip `_`-prefixed files, so `documents/` reads as a plain Parquet dataset.

Both markers are `llmforge.common.resume.Step`s: `_job.json` a claim on the whole directory,
`_stats.json` the completion of one unit (staged in `_work/<key>`, renamed when complete).
Which rows a unit holds, and so when it is complete, is this module's own business.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Iterable

from llmforge.common import fs
from llmforge.common.resume import ConflictError, Step

JOB_MARKER = "_job.json"
UNIT_MARKER = "_stats.json"


class OutputConflictError(ConflictError):
    """The output directory was written by a job with different document-deciding options."""


PART_RE = re.compile(r"_part-(\d+)-(\d+)\.json$")


def seq_ranges(seqs: Iterable[int]) -> list[list[int]]:
    """Sorted row numbers -> inclusive [lo, hi] runs (compact manifests for contiguous blocks)."""
    ranges: list[list[int]] = []
    for s in sorted(seqs):
        if ranges and s == ranges[-1][1] + 1:
            ranges[-1][1] = s
        else:
            ranges.append([s, s])
    return ranges


def covers_exactly(ranges: list[list[int]], rows: int) -> bool:
    """True when the runs tile 0..rows-1 with no gap and no overlap."""
    expected_next = 0
    for lo, hi in sorted(ranges):
        if lo != expected_next:
            return False
        expected_next = hi + 1
    return expected_next == rows


def merge_funnels(parts: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Sum part manifests' counters (`rows`, `kept`, `dropped`, `seconds`, byte counts)."""
    total: dict[str, Any] = {"rows": 0, "kept": 0, "text_bytes": 0, "dropped": Counter(), "seconds": Counter()}
    for p in parts:
        total["rows"] += p["rows"]
        total["kept"] += p["kept"]
        total["text_bytes"] += p.get("text_bytes", 0)
        total["dropped"].update(p["dropped"])
        total["seconds"].update(p["seconds"])
    total["dropped"] = dict(total["dropped"])
    total["seconds"] = dict(total["seconds"])
    return total


@dataclass(frozen=True)
class OutputLedger:
    """One job's output directory: where each unit's parts go and which units are finished."""

    output: str

    @cached_property
    def filesystem(self):
        return fs.resolve(self.output)[0]

    @cached_property
    def root(self) -> str:
        return fs.resolve(self.output)[1]

    def work_dir(self, key: str) -> str:
        return fs.join(self.root, "_work", key)

    def doc_dir(self, key: str) -> str:
        return fs.join(self.root, "documents", key)

    def stats_path(self) -> str:
        return fs.join(self.root, "stats.json")

    def expected_path(self, key: str) -> str:
        return fs.join(self.work_dir(key), "_expected.json")

    def part_stem(self, key: str, lo: int, hi: int) -> str:
        return fs.join(self.work_dir(key), f"part-{lo:09d}-{hi:09d}")

    def manifest_path(self, key: str, lo: int, hi: int) -> str:
        return fs.join(self.work_dir(key), f"_part-{lo:09d}-{hi:09d}.json")

    def unit(self, key: str) -> Step:
        """Input `key`'s unit: written to `_work/<key>`, finished as `documents/<key>`. No
        fingerprint of its own: `_job.json` ties every unit to the job's options."""
        return Step(fs.join(self.output, "documents", key), UNIT_MARKER,
                    staging=fs.join(self.output, "_work", key))

    def is_done(self, key: str) -> bool:
        return self.unit(key).done() is not None

    def done_stats(self, key: str) -> dict[str, Any]:
        stats = self.unit(key).done()
        if stats is None:
            raise FileNotFoundError(f"{self.doc_dir(key)} is not finished (no {UNIT_MARKER})")
        return stats

    def claim(self, fingerprint: str) -> None:
        """Tie the output directory to one reader+stages config, so a rerun never mixes outputs.

        Finished inputs are skipped on rerun; with other options they would be stale.
        """
        try:
            Step(self.output, JOB_MARKER, fingerprint=fingerprint).claim()
        except ConflictError as err:
            raise OutputConflictError(
                f"output.path {self.output} holds documents made with other input.warc/stages "
                f"options (fingerprint {err.found['fingerprint']}, this config {fingerprint}): use a "
                "new output.path or delete the old one", err.found, err.expected) from None

    # -- completion -------------------------------------------------------------------------
    def try_finalize(self, key: str) -> bool:
        """Rename `_work/<key>` into `documents/` if its parts cover every row; True if done."""
        unit = self.unit(key)
        if unit.done() is not None:
            return True
        try:
            return self._finalize_if_complete(key, unit)
        except OSError:
            # Two writers of one input (an actor pool spreads a file's blocks) can both see it
            # complete: the first to finish moves `_work/<key>` away while the other reads it.
            if unit.done() is not None:
                return True
            raise

    def _finalize_if_complete(self, key: str, unit: Step) -> bool:
        filesystem = self.filesystem
        expected_path = self.expected_path(key)
        if not fs.exists(filesystem, expected_path):
            return False
        expected = fs.read_json(filesystem, expected_path)
        manifests = [
            fs.read_json(filesystem, p)
            for p in fs.list_files(filesystem, self.work_dir(key))
            if PART_RE.search(p)
        ]
        ranges = [r for m in manifests for r in m["seqs"]]
        if not covers_exactly(ranges, expected["rows"]):
            return False
        stats = {"source": expected["source"], "reader": expected["reader"], **merge_funnels(manifests)}
        stats["read_seconds"] = expected.get("read_seconds", 0.0)
        stats["file_bytes"] = expected.get("file_bytes", 0)
        unit.finish(stats)
        return True

    def prepare(self, keys: Iterable[str]) -> tuple[list[str], list[str]]:
        """Split `keys` into (to do, already done) and clear half-written work of the former."""
        todo, done = [], []
        for key in keys:
            if self.try_finalize(key):
                done.append(key)
                continue
            self.unit(key).reset()
            todo.append(key)
        return todo, done
