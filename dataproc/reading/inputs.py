"""Turn `input` config into the list of WARC file URIs, each with a stable output key."""
from __future__ import annotations

import gzip
import hashlib
import posixpath
import re

from llmforge.common import fs
from llmforge.common.errors import UserError

WARC_SUFFIXES = (".warc.gz", ".warc", ".arc.gz", ".warc.wet.gz", ".warc.wat.gz")


class InputError(UserError):
    """The configured input names no readable WARC file."""


def _with_scheme(uri: str, path: str) -> str:
    """Re-attach the scheme that pyarrow strips from listed paths."""
    if "://" in uri:
        return uri.split("://", 1)[0] + "://" + path
    return path


def expand(uri: str) -> list[str]:
    """A file, a directory (its WARC files, recursively) or a glob -> sorted file URIs."""
    filesystem, path = fs.resolve(uri)
    if fs.is_dir(filesystem, path):
        found = [p for p in fs.list_files(filesystem, path, recursive=True) if p.endswith(WARC_SUFFIXES)]
    else:
        found = fs.glob(filesystem, path)
    return [_with_scheme(uri, p) for p in found]


def crawl_paths(crawl: str, base: str) -> list[str]:
    """Files of a Common Crawl crawl, read from `<base>/crawl-data/<crawl>/warc.paths.gz`.

    `base` is the public bucket (s3://commoncrawl) or a local mirror with the same layout.
    """
    listing = fs.join(base, "crawl-data", crawl, "warc.paths.gz")
    filesystem, path = fs.resolve(listing)
    if not fs.exists(filesystem, path):
        raise InputError(f"input.crawl: {listing} not found (is input.crawl_base right?)")
    with filesystem.open_input_stream(path, compression=None) as f:
        lines = gzip.decompress(f.read()).decode().split()
    return [fs.join(base, line.strip()) for line in lines if line.strip()]


def resolve_inputs(paths: list[str], crawl: str | None, crawl_base: str, max_files: int | None) -> list[str]:
    files: list[str] = []
    if crawl:
        files = crawl_paths(crawl, crawl_base)
    for uri in paths:
        matched = expand(uri)
        if not matched:
            raise InputError(f"input.paths: {uri!r} matches no file")
        files.extend(matched)
    files = list(dict.fromkeys(files))  # keep order, drop repeats of the same file
    if max_files:
        files = files[:max_files]
    if not files:
        raise InputError("input: no WARC files to read")
    return files


def source_key(uri: str) -> str:
    """Output name for one input file: readable stem + hash of the full URI (stems can collide)."""
    stem = posixpath.basename(uri)
    for suffix in WARC_SUFFIXES + (".gz",):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem)[:80] or "warc"
    digest = hashlib.sha1(uri.encode()).hexdigest()[:8]
    return f"{stem}-{digest}"
