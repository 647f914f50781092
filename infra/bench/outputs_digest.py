"""Digests of a data job's outputs, to show two runs wrote the same thing whatever their order.

Parquet directories are digested by content (every column, rows sorted), not by file bytes:
Ray Data names and splits its files differently from run to run. Everything else (token shards,
their indexes, the tokenizer) by bytes. `source` (the input file's path) is reduced to its name,
so that runs over the same files reached through different paths compare equal.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path


def table_digest(files: list[Path]) -> str:
    """sha256 (16 hex digits) of the rows of these Parquet files: all columns, rows sorted by
    `id` when there is one, else by every column."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    tables = [pq.read_table(f) for f in sorted(files)]
    table = pa.concat_tables(tables, promote_options="default") if tables else pa.table({})
    if table.num_rows:
        keys = ["id"] if "id" in table.column_names else sorted(table.column_names)
        table = table.sort_by([(k, "ascending") for k in keys])
        if "source" in table.column_names:
            table = table.set_column(table.schema.get_field_index("source"), "source",
                                     pc.replace_substring_regex(table.column("source"), r"^.*/", ""))
    h = hashlib.sha256()
    for name in sorted(table.column_names):
        h.update(name.encode())
        h.update(json.dumps(table.column(name).to_pylist(), sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def documents_digest(out: Path) -> str:
    """The kept documents under `out` (any `documents/` below it, e.g. one per plain-loop process)."""
    return table_digest(list(out.glob("**/documents/**/*.parquet")))


def bytes_digest(files: list[Path], root: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(files):
        h.update(str(f.relative_to(root)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


# stats.json keys that differ between identical runs: timings and the config (its paths).
VOLATILE_STATS = ("wall_seconds_this_run", "phase_seconds", "seconds", "config", "inputs_skipped_as_done", "dir")


def _without(value, keys):
    if isinstance(value, dict):
        return {k: _without(v, keys) for k, v in value.items() if k not in keys}
    if isinstance(value, list):
        return [_without(v, keys) for v in value]
    return value


def job_digests(out: Path) -> dict[str, str]:
    """One digest per output of a whole data job at `out`: each Parquet directory, the token
    shards (bytes; manifests without their paths and config hash), the tokenizer, the funnel."""
    digests: dict[str, str] = {}
    for part in ("documents", "dropped", "duplicates", "curated"):
        files = list((out / part).glob("**/*.parquet"))
        if files:
            digests[part] = table_digest(files)
    steps: dict[str, list[Path]] = {}  # corpus/<step>/ (exact, near, ...): one digest each
    for f in (out / "corpus").glob("**/*.parquet"):
        steps.setdefault(f.relative_to(out / "corpus").parts[0], []).append(f)
    for step, files in sorted(steps.items()):
        digests[f"corpus/{step}"] = table_digest(files)
    shards = out / "shards"
    if shards.exists():
        digests["shards (.bin/.idx bytes)"] = bytes_digest(
            [f for f in shards.rglob("*") if f.suffix in (".bin", ".idx")], shards)
        manifests = {str(f.relative_to(shards)): _without(json.loads(f.read_text()), ("config_sha256", "path", "dir"))
                     for f in sorted(shards.rglob("manifest.json"))}
        digests["shards (manifests)"] = hashlib.sha256(json.dumps(manifests, sort_keys=True).encode()).hexdigest()[:16]
    if (out / "tokenizer.json").exists():
        digests["tokenizer.json"] = bytes_digest([out / "tokenizer.json"], out)
    if (out / "stats.json").exists():
        # paths inside it name the output directory, which differs between the runs compared
        stats = json.loads((out / "stats.json").read_text().replace(json.dumps(str(out))[1:-1], "<output>"))
        stats = _without(stats, VOLATILE_STATS)
        digests["stats.json (counts)"] = hashlib.sha256(json.dumps(stats, sort_keys=True).encode()).hexdigest()[:16]
    return digests
