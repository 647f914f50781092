"""Documents from plain text, JSONL and Parquet files (quality-model training, text-to-shards)."""
from __future__ import annotations

import gzip
import json
import re
from pathlib import Path
from typing import Iterator

from llmforge.common.errors import UserError


def iter_texts(path: str | Path, txt_mode: str = "lines", text_field: str = "text") -> Iterator[str]:
    """Documents of one file, blanks skipped.

    .txt[.gz]: one document per line (`txt_mode="lines"`) or per blank-line-separated block
    (`"paragraphs"`); .jsonl/.json[l].gz: the `text_field` of each line; .parquet: that column.
    """
    path = Path(path)
    name = path.name.lower()
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        for value in pq.read_table(path, columns=[text_field]).column(text_field).to_pylist():
            if value and value.strip():
                yield value
        return
    stem = name.removesuffix(".gz")
    is_json = stem.endswith((".jsonl", ".json", ".ndjson"))
    if not is_json and not stem.endswith((".txt", ".raw")):  # .raw: WikiText's raw files
        raise UserError(f"{path}: unsupported file type (use .txt, .raw, .jsonl, .json.gz, .jsonl.gz or .parquet)")
    if txt_mode not in ("lines", "paragraphs"):
        raise ValueError(f"txt_mode must be 'lines' or 'paragraphs', got {txt_mode!r}")
    opener = gzip.open if name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        if is_json:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    value = json.loads(line).get(text_field)
                except (json.JSONDecodeError, AttributeError) as err:
                    raise UserError(f"{path}:{lineno}: not a JSON object per line ({err})") from None
                if isinstance(value, str) and value.strip():
                    yield value
        elif txt_mode == "lines":
            yield from (line.rstrip("\r\n") for line in f if line.strip())
        else:
            yield from (block.strip() for block in re.split(r"\n\s*\n", f.read()) if block.strip())
