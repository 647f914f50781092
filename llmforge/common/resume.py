"""Resumable steps, and the fingerprints that tie an output to what made it.

A *step* is one output directory that counts as finished only once its *marker* file exists:
a small JSON record written last, atomically (temp + rename), so a killed run never leaves a
directory that looks finished. The marker records what the output was made from, as a few
expected fields: usually {"fingerprint": <hash of the options and inputs>}, sometimes other
hashes (a token shard manifest records "tokenizer_sha256" and "config_sha256").

On a rerun, a step whose marker records this run's values is `done()` and is skipped. What to
do with one made from other values is the caller's choice:

    step = Step(uri, marker="_SUCCESS", fingerprint=fp)
    if step.done() is None:          # redo: an output whose inputs changed is stale
        step.reset()
        ...write the outputs...
        step.finish({"rows": n})     # marker = {"fingerprint": fp, "rows": n}

    Step(root, marker="_job.json", fingerprint=fp).claim()
        # refuse: the directory holds work of another config (ConflictError), else tie it to
        # this one now

`staging` covers outputs written piecemeal by many tasks: they write into the staging
directory, and `finish` puts the marker there and renames the whole directory into place.

Fingerprints are sha256 hex digests, truncated to `digits` hex digits where short ids suffice.
`digest` hashes raw bytes (or text as UTF-8); `fingerprint` hashes a JSON value through its
canonical spelling (sorted keys). Both must stay bit-for-bit stable: outputs on disk record
their values, and a changed value makes a rerun refuse or redo finished work.

Plumbing: imports none of llmforge's packages (training and alignment runs use it too).
"""
from __future__ import annotations

import hashlib
import os
import json
from typing import Any, Iterable

from llmforge.common import fs
from llmforge.common.errors import UserError


def digest(data: bytes | str | Iterable[bytes | str], digits: int | None = None) -> str:
    """sha256 hex digest of `data` (text as UTF-8), or of the concatenation of an iterable of
    chunks (so a large input streams); the first `digits` hex digits when given."""
    h = hashlib.sha256()
    for chunk in [data] if isinstance(data, (bytes, bytearray, memoryview, str)) else data:
        h.update(chunk.encode() if isinstance(chunk, str) else chunk)
    hexdigest = h.hexdigest()
    return hexdigest if digits is None else hexdigest[:digits]


def file_digest(path: str | os.PathLike, digits: int | None = 16) -> str:
    """`digest` of a local file's bytes, read in chunks (data files can be large)."""
    with open(path, "rb") as f:
        return digest(iter(lambda: f.read(1 << 22), b""), digits)


def canonical_json(value: Any, *, compact: bool = False) -> bytes:
    """The bytes a fingerprint hashes: JSON with sorted keys; values JSON cannot spell
    (a Path, an enum) as `str(value)`. Two spellings are on disk, so both stay: the default
    with a space after `,` and `:` (`json.dumps`'s), and `compact` without (shard manifests'
    `config_sha256`)."""
    separators = (",", ":") if compact else (", ", ": ")
    return json.dumps(value, sort_keys=True, separators=separators, default=str).encode()


def fingerprint(value: Any, *, digits: int | None = 16, compact: bool = False) -> str:
    """sha256 of `value`'s canonical JSON (see `canonical_json`), `digits` hex digits (None:
    all 64). Tuples hash as lists."""
    return digest(canonical_json(value, compact=compact), digits)


class ConflictError(UserError):
    """A step's directory records other expected values and the caller refuses to redo it."""

    def __init__(self, message: str, found: dict[str, Any], expected: dict[str, Any]):
        super().__init__(message)
        self.found, self.expected = found, expected

    def differing(self) -> list[str]:
        """The expected fields the marker records other values for."""
        return [k for k, v in self.expected.items() if self.found.get(k) != v]


class Step:
    """One output directory, finished once its marker records the expected fields.

    `directory`: a local path or URI. `marker`: the marker file's name in it. `fingerprint`
    (shorthand for the field "fingerprint") and `fields`: what the marker must record for the
    directory to count as this run's; none: any marker counts. `staging`: a directory the
    outputs are written to first, renamed to `directory` by `finish`.
    """

    def __init__(self, directory: str, marker: str = "_SUCCESS", *, fingerprint: str | None = None,
                 fields: dict[str, Any] | None = None, staging: str | None = None):
        self.uri = directory
        self.filesystem, self.path = fs.resolve(directory)
        self.marker = marker
        self.expected: dict[str, Any] = dict(fields or {})
        if fingerprint is not None:
            self.expected["fingerprint"] = fingerprint
        self.staging = fs.resolve(staging)[1] if staging is not None else None

    @property
    def marker_path(self) -> str:
        return fs.join(self.path, self.marker)

    def read(self) -> dict[str, Any] | None:
        """The marker's record, whatever it says; None when the directory is not finished."""
        if not fs.exists(self.filesystem, self.marker_path):
            return None
        return fs.read_json(self.filesystem, self.marker_path)

    def matches(self, record: dict[str, Any]) -> bool:
        return all(record.get(k) == v for k, v in self.expected.items())

    def done(self) -> dict[str, Any] | None:
        """The marker's record when it is this run's (skip the step), else None (do it)."""
        record = self.read()
        return record if record is not None and self.matches(record) else None

    def refuse_other(self) -> dict[str, Any] | None:
        """Raise ConflictError if the marker records other values; else return done()."""
        record = self.read()
        if record is not None and not self.matches(record):
            found = {k: record.get(k) for k in self.expected}
            raise ConflictError(f"{self.uri} holds outputs made with other inputs or options: "
                                f"{self.marker} records {found}, this run expects {self.expected}",
                                found, dict(self.expected))
        return record

    def claim(self) -> dict[str, Any]:
        """Tie the directory to this run before any work: write the marker now unless it is
        there already; ConflictError if it records other values (a marker that is a claim,
        not a completion, e.g. `_job.json` over a job's many resumable units)."""
        record = self.refuse_other()
        return record if record is not None else self.finish()

    def reset(self) -> None:
        """Delete the directory (and the staging directory): half-written or stale outputs."""
        if self.staging is not None:
            fs.delete_dir(self.filesystem, self.staging)
        fs.delete_dir(self.filesystem, self.path)

    def finish(self, info: dict[str, Any] | None = None) -> dict[str, Any]:
        """Write the marker {expected fields, **info} last (with `staging`: into it, then
        rename it into place; on object stores, which move file by file, the marker moves
        last); returns the record."""
        info = info or {}
        clash = {k for k, v in self.expected.items() if k in info and info[k] != v}
        if clash:
            raise ValueError(f"{self.marker} info contradicts the expected fields {sorted(clash)}")
        record = {**self.expected, **info}
        if self.staging is None:
            fs.write_json_atomic(self.filesystem, self.marker_path, record)
            return record
        fs.write_json_atomic(self.filesystem, fs.join(self.staging, self.marker), record)
        try:
            fs.move_dir(self.filesystem, self.staging, self.path, last=self.marker)
        except OSError:
            # Another writer finished the same step first; its outputs are the same.
            if self.done() is None:
                raise
        return record
