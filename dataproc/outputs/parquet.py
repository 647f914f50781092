"""Reading a directory of Parquet documents (`documents/`, `curated/`, a corpus step) back."""
from __future__ import annotations

from llmforge.common import fs


def parquet_files(uri: str) -> list[str]:
    """Data files under `uri`, skipping `_`/`.`-prefixed names at any depth (`_dropped/`,
    temp files), which Ray's `read_parquet` would otherwise read as documents."""
    filesystem, root = fs.resolve(uri)
    files = []
    for path in fs.list_files(filesystem, root, recursive=True):
        rel = path[len(root):].lstrip("/")
        if path.endswith(".parquet") and not any(part.startswith(("_", ".")) for part in rel.split("/")):
            files.append(path if "://" not in uri else uri.split("://", 1)[0] + "://" + path)
    return files


def read_documents(uri: str, columns: list[str] | None = None):
    import ray

    files = parquet_files(uri)
    if not files:
        raise ValueError(f"no documents under {uri}")
    ds = ray.data.read_parquet(files)
    return ds.select_columns(columns) if columns else ds
