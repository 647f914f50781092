"""The token shard format: what tokenization writes and training reads.

A shard directory holds `manifest.json` plus, per shard `<name>`:

  <name>.bin  token ids of all its documents back to back, little-endian; uint16 when the
              vocabulary fits (vocab_size <= 65536), else uint32 (`manifest["dtype"]`).
  <name>.idx  little-endian uint64 cumulative document END offsets in tokens: document i of
              the shard is bin[idx[i-1]:idx[i]] (idx[-1] of the first document is 0), and
              idx[-1] == number of tokens in the shard.

Documents are never split across shards, so every shard stands alone. The manifest is written
last: a directory without one is an unfinished write. This module deliberately needs only
numpy, json and `llmforge.common.fs` (pyarrow filesystems): `dataproc` writes shards with it and
`training` reads them, without Ray or `tokenizers`, and neither imports the other.
"""
from __future__ import annotations

import bisect
import hashlib
import posixpath
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import pyarrow.fs as pafs

from llmforge.common import fs
from llmforge.common.errors import UserError

FORMAT = "llmforge-token-shards"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SHARD_PREFIX = "shard"
IDX_DTYPE = np.dtype("<u8")
# Documents whose domain column is missing or null are counted under this key.
NO_DOMAIN = "(none)"

# The tokenizer's special tokens: ids 0..n-1 in this order. <|endoftext|> ends every document
# (the boundary training packs across); the role tokens frame chat turns.
EOS_TOKEN = "<|endoftext|>"
DEFAULT_SPECIAL_TOKENS = ("<|endoftext|>", "<|pad|>", "<|system|>", "<|user|>", "<|assistant|>")
# The tokenizer file's name beside shards, in checkpoints and in exported model directories.
TOKENIZER_FILE = "tokenizer.json"


def special_token_ids(tokenizer: Any) -> dict[str, int]:
    """{content: id} of a `tokenizers.Tokenizer`'s special tokens, by id."""
    added = tokenizer.get_added_tokens_decoder()
    return {tok.content: i for i, tok in sorted(added.items()) if tok.special}


def dtype_for_vocab(vocab_size: int) -> np.dtype:
    """Smallest token dtype that holds every id of a `vocab_size` vocabulary."""
    if vocab_size <= 0:
        raise ValueError(f"vocab_size must be positive, got {vocab_size}")
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


def dtype_name(dtype: np.dtype) -> str:
    return {"<u2": "uint16", "<u4": "uint32"}[np.dtype(dtype).newbyteorder("<").str]


def sha256_bytes(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(filesystem: pafs.FileSystem, path: str) -> str:
    h = hashlib.sha256()
    with filesystem.open_input_stream(path, compression=None) as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    return h.hexdigest()


def shard_name(i: int) -> str:
    return f"{SHARD_PREFIX}-{i:05d}"


def _add_domain(counts: dict[str, dict[str, int]], domain: str, tokens: int, docs: int) -> None:
    entry = counts.setdefault(domain, {"tokens": 0, "documents": 0})
    entry["tokens"] += tokens
    entry["documents"] += docs


class ShardWriter:
    """Append documents; a shard is written (temp name + rename) each time the next document
    would take it past `shard_tokens`.

    A shard therefore never holds more than `shard_tokens` tokens, except one whose single
    document is longer than that (documents are never split). Output depends only on the
    order of documents, so the same input gives byte-identical shards.
    `vocab_size` only picks the dtype and bounds-checks ids. A shard is assembled in memory
    (shard_tokens x 2 or 4 bytes, twice that while it is written), which also lets it go to
    object stores, where files cannot be appended to.
    """

    def __init__(self, out_dir: str, vocab_size: int, shard_tokens: int,
                 filesystem: pafs.FileSystem | None = None):
        if shard_tokens <= 0:
            raise ValueError(f"shard_tokens must be positive, got {shard_tokens}")
        if filesystem is None:
            filesystem, out_dir = fs.resolve(out_dir)
        self.fs, self.out_dir = filesystem, out_dir
        self.vocab_size, self.shard_tokens = vocab_size, shard_tokens
        self.dtype = dtype_for_vocab(vocab_size)
        self.shards: list[dict[str, Any]] = []
        self._closed = False
        self._reset()

    def _reset(self) -> None:
        self._chunks: list[np.ndarray] = []
        self._lengths: list[np.ndarray] = []
        self._domains: dict[str, dict[str, int]] = {}
        self._tokens = 0

    def add(self, tokens: Sequence[int] | np.ndarray, domain: str | None = None) -> None:
        """One document."""
        arr = np.asarray(tokens)
        self.add_batch(arr.ravel(), np.array([arr.size], dtype=np.int64), [domain])

    def add_batch(self, values: np.ndarray, lengths: np.ndarray, domains: Sequence[str | None]) -> None:
        """Many documents at once: `values` is all their ids back to back, `lengths[i]` the
        token count of document i, `domains[i]` its domain (None counts as NO_DOMAIN)."""
        if self._closed:
            raise RuntimeError("ShardWriter is closed")
        lengths = np.asarray(lengths, dtype=np.int64)
        if len(domains) != len(lengths):
            raise ValueError(f"{len(domains)} domains for {len(lengths)} documents")
        if lengths.size and lengths.min() < 0:
            raise ValueError("negative document length")
        ends = np.cumsum(lengths)
        total = int(ends[-1]) if ends.size else 0
        if values.size != total:
            raise ValueError(f"values has {values.size} ids but lengths sum to {total}")
        if total and (values.min() < 0 or int(values.max()) >= self.vocab_size):
            raise ValueError(f"token id out of range for vocab_size {self.vocab_size}: "
                             f"min {int(values.min())}, max {int(values.max())}")
        values = values.astype(self.dtype, copy=False)
        first, n = 0, len(lengths)
        while first < n:
            start = int(ends[first - 1]) if first else 0
            room = self.shard_tokens - self._tokens
            # Documents first..k-1 fit into what is left of the current shard.
            k = int(np.searchsorted(ends, start + room, side="right"))
            if k == first:
                if self._tokens:
                    self._flush()
                    continue
                k = first + 1  # one document longer than a whole shard: it gets its own
            stop = int(ends[k - 1])
            self._chunks.append(values[start:stop])
            self._lengths.append(lengths[first:k])
            for domain, length in zip(domains[first:k], lengths[first:k].tolist()):
                _add_domain(self._domains, NO_DOMAIN if domain is None else str(domain), length, 1)
            self._tokens += stop - start
            first = k
            if self._tokens >= self.shard_tokens:
                self._flush()

    def _flush(self) -> None:
        lengths = np.concatenate(self._lengths) if self._lengths else np.zeros(0, np.int64)
        if lengths.size == 0:
            return
        tokens = np.concatenate(self._chunks).astype(self.dtype, copy=False)
        ends = np.cumsum(lengths).astype(IDX_DTYPE)
        name = shard_name(len(self.shards))
        bin_bytes = memoryview(np.ascontiguousarray(tokens)).cast("B")
        fs.write_bytes_atomic(self.fs, fs.join(self.out_dir, f"{name}.idx"), ends.tobytes())
        fs.write_bytes_atomic(self.fs, fs.join(self.out_dir, f"{name}.bin"), bin_bytes)
        self.shards.append({
            "name": name,
            "tokens": int(tokens.size),
            "documents": int(lengths.size),
            "sha256": sha256_bytes(bin_bytes),
            "domains": {d: self._domains[d] for d in sorted(self._domains)},
        })
        self._reset()

    def close(self) -> list[dict[str, Any]]:
        """Write the last, partial shard; return every shard's metadata in order."""
        if not self._closed:
            self._flush()
            self._closed = True
        return self.shards


def build_manifest(shards: list[dict[str, Any]], *, vocab_size: int, tokenizer_sha256: str | None,
                   config_sha256: str | None, special_tokens: dict[str, int] | None = None,
                   eos_token_id: int | None = None, bos_token_id: int | None = None,
                   document_boundary_token_id: int | None = None,
                   extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The manifest for `shards` (from `ShardWriter.close`), with totals and per-domain totals.

    `document_boundary_token_id` is the id that ends every document in the token stream
    (the EOS when it was appended), None when documents are delimited by .idx only.
    `extra` adds more top-level keys (e.g. skip counts, the options the shards were made with).
    """
    domains: dict[str, dict[str, int]] = {}
    for shard in shards:
        for d, c in shard["domains"].items():
            _add_domain(domains, d, c["tokens"], c["documents"])
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "dtype": dtype_name(dtype_for_vocab(vocab_size)),
        "idx_dtype": "uint64",
        "vocab_size": vocab_size,
        "tokenizer_sha256": tokenizer_sha256,
        "config_sha256": config_sha256,
        "special_tokens": dict(special_tokens or {}),
        "eos_token_id": eos_token_id,
        "bos_token_id": bos_token_id,
        "document_boundary_token_id": document_boundary_token_id,
        "total_tokens": sum(s["tokens"] for s in shards),
        "total_documents": sum(s["documents"] for s in shards),
        "domains": {d: domains[d] for d in sorted(domains)},
        "shards": shards,
    }
    for key, value in (extra or {}).items():
        if key in manifest:
            raise ValueError(f"extra manifest key {key!r} would overwrite a format key")
        manifest[key] = value
    return manifest


def write_manifest(out_dir: str, manifest: dict[str, Any], filesystem: pafs.FileSystem | None = None) -> None:
    if filesystem is None:
        filesystem, out_dir = fs.resolve(out_dir)
    fs.write_json_atomic(filesystem, fs.join(out_dir, MANIFEST), manifest)


def read_manifest(shard_dir: str, filesystem: pafs.FileSystem | None = None) -> dict[str, Any]:
    if filesystem is None:
        filesystem, shard_dir = fs.resolve(shard_dir)
    path = fs.join(shard_dir, MANIFEST)
    if not fs.exists(filesystem, path):
        raise FileNotFoundError(f"{path} not found: not a token shard directory, or its write did not finish")
    manifest = fs.read_json(filesystem, path)
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{path}: format {manifest.get('format')!r} version {manifest.get('format_version')!r}, "
                        f"this code reads {FORMAT!r} version {FORMAT_VERSION}")
    return manifest


def check_tokenizer_matches(manifest: dict[str, Any], tokenizer_path: str) -> str:
    """Raise ValueError unless tokenizer.json at `tokenizer_path` is the one the shards were
    made with (by sha256 of the file's bytes); return the hash."""
    filesystem, path = fs.resolve(tokenizer_path)
    actual = sha256_file(filesystem, path)
    expected = manifest.get("tokenizer_sha256")
    if actual != expected:
        raise UserError(f"{tokenizer_path}: tokenizer sha256 {actual} does not match shards' {expected}; "
                        f"the shards' token ids mean other strings under this tokenizer: use the "
                        f"tokenizer.json they were written with")
    return actual


@dataclass
class Shard:
    name: str
    tokens: np.ndarray  # all ids, memory-mapped for local files
    ends: np.ndarray  # uint64 document end offsets

    def __len__(self) -> int:
        return len(self.ends)

    def document(self, i: int) -> np.ndarray:
        if not -len(self.ends) <= i < len(self.ends):
            raise IndexError(f"document {i} out of range for shard {self.name} ({len(self.ends)} documents)")
        i %= len(self.ends)
        start = int(self.ends[i - 1]) if i else 0
        return self.tokens[start:int(self.ends[i])]


def _load_array(filesystem: pafs.FileSystem, path: str, dtype: np.dtype, size: int) -> np.ndarray:
    if size == 0:
        return np.zeros(0, dtype=dtype)  # np.memmap refuses empty files
    if isinstance(filesystem, pafs.LocalFileSystem):
        return np.memmap(path, dtype=dtype, mode="r")
    # Object stores cannot be memory-mapped: read the file (copy shards locally for training).
    with filesystem.open_input_stream(path, compression=None) as f:
        return np.frombuffer(f.read(), dtype=dtype)


class ShardReader:
    """Read-only view of a shard directory; documents are numbered across shards in order.

    Opening checks that every shard in the manifest exists and that the sizes of .bin and
    .idx agree with each other and with the manifest, so a truncated or missing file fails
    here with the file named rather than as garbage tokens during training.
    """

    def __init__(self, shard_dir: str, filesystem: pafs.FileSystem | None = None):
        if filesystem is None:
            filesystem, shard_dir = fs.resolve(shard_dir)
        self.filesystem, self.dir = filesystem, shard_dir
        self.manifest = read_manifest(self.dir, self.filesystem)
        self.dtype = np.dtype({"uint16": "<u2", "uint32": "<u4"}[self.manifest["dtype"]])
        self.vocab_size: int = self.manifest["vocab_size"]
        self.shards: list[Shard] = [self._open(entry) for entry in self.manifest["shards"]]
        self._doc_starts = np.cumsum([0] + [len(s) for s in self.shards]).tolist()
        n_docs, n_tokens = self._doc_starts[-1], sum(len(s.tokens) for s in self.shards)
        if (n_docs, n_tokens) != (self.manifest["total_documents"], self.manifest["total_tokens"]):
            raise UserError(f"{self.dir}: manifest totals ({self.manifest['total_documents']} documents, "
                            f"{self.manifest['total_tokens']} tokens) disagree with its shards "
                            f"({n_docs} documents, {n_tokens} tokens)")

    def _open(self, entry: dict[str, Any]) -> Shard:
        name = entry["name"]
        bin_path, idx_path = fs.join(self.dir, f"{name}.bin"), fs.join(self.dir, f"{name}.idx")
        sizes = {}
        for path in (bin_path, idx_path):
            info = self.filesystem.get_file_info(path)
            if info.type != pafs.FileType.File:
                raise FileNotFoundError(f"shard file {path} listed in the manifest is missing")
            sizes[path] = info.size
        want_bin = entry["tokens"] * self.dtype.itemsize
        want_idx = entry["documents"] * IDX_DTYPE.itemsize
        if sizes[bin_path] != want_bin:
            raise UserError(f"{bin_path} has {sizes[bin_path]} bytes, the manifest says {entry['tokens']} "
                            f"{self.manifest['dtype']} tokens = {want_bin} bytes (truncated or overwritten?)")
        if sizes[idx_path] != want_idx:
            raise UserError(f"{idx_path} has {sizes[idx_path]} bytes, the manifest says {entry['documents']} "
                            f"documents = {want_idx} bytes (truncated or overwritten?)")
        tokens = _load_array(self.filesystem, bin_path, self.dtype, want_bin)
        ends = _load_array(self.filesystem, idx_path, IDX_DTYPE, want_idx)
        if len(ends) and (int(ends[-1]) != len(tokens) or np.any(np.diff(ends.astype(np.int64)) < 0)):
            raise UserError(f"{idx_path}: offsets are not non-decreasing ending at the {len(tokens)} tokens "
                            f"of {bin_path} (last offset {int(ends[-1])})")
        return Shard(name, tokens, ends)

    @property
    def num_documents(self) -> int:
        return self._doc_starts[-1]

    @property
    def num_tokens(self) -> int:
        return self.manifest["total_tokens"]

    def __len__(self) -> int:
        return self.num_documents

    def document(self, i: int) -> np.ndarray:
        """Token ids of document `i` (global index over all shards, in manifest order)."""
        if not -self.num_documents <= i < self.num_documents:
            raise IndexError(f"document {i} out of range ({self.num_documents} documents)")
        i %= self.num_documents
        s = bisect.bisect_right(self._doc_starts, i) - 1
        return self.shards[s].document(i - self._doc_starts[s])

    def __iter__(self) -> Iterator[np.ndarray]:
        for shard in self.shards:
            for i in range(len(shard)):
                yield shard.document(i)

    def verify(self) -> None:
        """Recompute every .bin's sha256 against the manifest (reads everything)."""
        for entry, shard in zip(self.manifest["shards"], self.shards):
            actual = sha256_bytes(memoryview(np.ascontiguousarray(shard.tokens)).cast("B"))
            if actual != entry["sha256"]:
                raise UserError(f"{fs.join(self.dir, entry['name'] + '.bin')}: sha256 {actual} does not match "
                                f"the manifest's {entry['sha256']}")


def open_shards(shard_dir: str, filesystem: pafs.FileSystem | None = None) -> ShardReader:
    return ShardReader(shard_dir, filesystem)


def remove_partial_outputs(out_dir: str, filesystem: pafs.FileSystem | None = None) -> list[str]:
    """Delete what an unfinished or superseded write leaves in `out_dir`: the manifest, shard
    files and temp files of atomic writes. Other files are left alone. Returns what it deleted."""
    if filesystem is None:
        filesystem, out_dir = fs.resolve(out_dir)
    removed = []
    for path in fs.list_files(filesystem, out_dir):
        base = posixpath.basename(path)
        ours = (base == MANIFEST or base.startswith(f"{MANIFEST}.tmp-")
                or (base.startswith(f"{SHARD_PREFIX}-") and (base.endswith((".bin", ".idx")) or ".tmp-" in base)))
        if ours:
            filesystem.delete_file(path)
            removed.append(path)
    return removed
