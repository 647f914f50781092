"""Rows of JSON data files: a list in `.json`, one object per line in `.jsonl`, either gzipped.

    for index, where, row in iter_rows("pairs.jsonl.gz"): ...

`where` names the file and the row (`line N` in JSONL, counting blank lines but not yielding
them; `row index N` in a JSON list) so that every reader's error can say exactly where a bad
row is. Local paths or URIs (`s3://`, `gs://`, via `llmforge.common.fs`).
"""
from __future__ import annotations

import gzip
import io
import json
import os
from pathlib import Path
from typing import Any, Iterator

from llmforge.common.errors import UserError

SUFFIXES = (".jsonl.gz", ".json.gz", ".jsonl", ".json")


def file_stem(path: str | os.PathLike) -> str:
    """The name without its data suffix: `a/b.jsonl.gz` -> `b`."""
    name = Path(path).name
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return Path(path).stem


def _suffix(path: Path) -> str:
    for suffix in SUFFIXES:
        if path.name.endswith(suffix):
            return suffix
    raise UserError(f"{path}: unknown file type (expected one of {', '.join(SUFFIXES)})")


def iter_rows(path: str | os.PathLike, suffix: str | None = None) -> Iterator[tuple[int, str, Any]]:
    """(0-based row index, where, row) for every row: `where` names the file and the row
    (`line N` in JSONL, blank lines not counted as rows; `row index N` in a JSON list)."""
    from llmforge.common import fs

    suffix = suffix or _suffix(Path(str(path)))  # `suffix` reads a file as that type whatever its name
    filesystem, local = fs.resolve(str(path))
    if not fs.exists(filesystem, local):
        raise UserError(f"{path}: no such file")
    try:
        with filesystem.open_input_stream(local, compression=None) as raw:
            data = raw.read()
        if suffix.endswith(".gz"):
            data = gzip.decompress(data)
        with io.StringIO(data.decode("utf-8")) as f:
            if suffix.startswith(".jsonl"):
                index = 0
                for lineno, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    where = f"{path}: line {lineno}"
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise UserError(f"{where}: not valid JSON ({e})") from None
                    yield index, where, row
                    index += 1
            else:
                try:
                    rows = json.load(f)
                except json.JSONDecodeError as e:
                    raise UserError(f"{path}: not valid JSON ({e})") from None
                if not isinstance(rows, list):
                    raise UserError(f"{path}: a .json file must hold a list of rows, "
                                    f"got {type(rows).__name__}")
                for index, row in enumerate(rows):
                    yield index, f"{path}: row index {index}", row
    except (OSError, EOFError, UnicodeDecodeError) as e:  # gzip.BadGzipFile is an OSError
        raise UserError(f"{path}: cannot be read ({e})") from None
