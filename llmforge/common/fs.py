"""One way to touch files, local or remote: pyarrow filesystems for local paths, s3:// and gs://.

Writes go to a temporary name and are renamed into place, so a reader (or a resumed job)
never sees half a file.
"""
from __future__ import annotations

import fnmatch
import json
import posixpath
import uuid
from typing import Any

import pyarrow.fs as pafs

_GLOB_CHARS = "*?["


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """Filesystem and path for a local path, file://, s3:// or gs:// URI."""
    if "://" not in uri:
        import os

        return pafs.LocalFileSystem(), os.path.abspath(uri)
    if uri.startswith("s3://commoncrawl/") or uri == "s3://commoncrawl":
        # The Common Crawl bucket is public: anonymous access avoids needing credentials.
        return pafs.S3FileSystem(anonymous=True, region="us-east-1"), uri[len("s3://"):]
    return pafs.FileSystem.from_uri(uri)


def join(base: str, *parts: str) -> str:
    return posixpath.join(base, *parts)


def exists(fs: pafs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def is_dir(fs: pafs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type == pafs.FileType.Directory


def list_files(fs: pafs.FileSystem, path: str, recursive: bool = False) -> list[str]:
    """Files directly under (or, recursive, below) `path`; [] when it does not exist."""
    if not is_dir(fs, path):
        return []
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=recursive))
    return sorted(i.path for i in infos if i.type == pafs.FileType.File)


def glob(fs: pafs.FileSystem, pattern: str) -> list[str]:
    """Expand a glob on any pyarrow filesystem (`**` matches across directories)."""
    if not any(c in pattern for c in _GLOB_CHARS):
        return [pattern] if exists(fs, pattern) else []
    parts = pattern.split("/")
    fixed = []
    for part in parts:
        if any(c in part for c in _GLOB_CHARS):
            break
        fixed.append(part)
    root = "/".join(fixed) or "/"
    recursive = "**" in pattern or len(fixed) < len(parts) - 1
    candidates = list_files(fs, root, recursive=recursive)
    flat = pattern.replace("**/", "*").replace("**", "*")
    return [p for p in candidates if fnmatch.fnmatch(p, flat)]


def write_bytes_atomic(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    parent = posixpath.dirname(path)
    if parent:
        fs.create_dir(parent, recursive=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with fs.open_output_stream(tmp) as out:
        out.write(data)
    fs.move(tmp, path)


def write_json_atomic(fs: pafs.FileSystem, path: str, obj: Any) -> None:
    write_bytes_atomic(fs, path, json.dumps(obj, indent=1, sort_keys=True).encode())


def read_json(fs: pafs.FileSystem, path: str) -> Any:
    with fs.open_input_stream(path, compression=None) as f:
        return json.loads(f.read())


def delete_dir(fs: pafs.FileSystem, path: str) -> None:
    if is_dir(fs, path):
        fs.delete_dir(path)


def move_dir(fs: pafs.FileSystem, src: str, dst: str, last: str | None = None) -> None:
    """Rename a directory; object stores without directory renames get a per-file move, in
    which the file named `last` (a completion marker) moves after every other file, so a kill
    during the move never leaves the marker without the files it vouches for."""
    fs.create_dir(posixpath.dirname(dst), recursive=True)
    try:
        fs.move(src, dst)
        return
    except OSError:
        if not is_dir(fs, src):
            raise
    paths = list_files(fs, src, recursive=True)
    for path in sorted(paths, key=lambda p: posixpath.relpath(p, src) == last):
        target = join(dst, posixpath.relpath(path, src))
        fs.create_dir(posixpath.dirname(target), recursive=True)
        fs.move(path, target)
    fs.delete_dir(src)
