"""Tokenizer training and documents -> token shards (format in `dataproc.shards`).

* `train_tokenizer`: byte-level BPE (GPT-2 style) with HF `tokenizers`. Every byte is in the
  base alphabet and there is no normaliser, so decode(encode(text)) == text for any text.
  The special tokens come first in the vocabulary (ids 0..n-1, in the configured order), so
  `<|endoftext|>` (the document boundary) is id 0 whatever the corpus.
* `BatchTokenizer`: a Ray Data `map_batches` callable (pyarrow in, pyarrow out) that adds a
  `tokens` column, applying the EOS / min / max rules of `TokenizeOptions`.
* `write_shards_from_batches`: tokenizes batches in the order given and writes shards plus
  manifest; rerunning with the same tokenizer and config returns the finished manifest.
* `inspect_shards`: a human-readable summary with decoded samples.

Special tokens written literally in web text (a page containing "<|endoftext|>") are
tokenized as ordinary text (`encode_special_tokens = True`), so crawled data can never forge
a document boundary or a chat role.
"""
from __future__ import annotations

import itertools
import os
from typing import Any, Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, field_validator, model_validator
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from dataproc import shards as shard_format
from dataproc.filters.base import StageOptions
from llmforge.common import fs
from llmforge.common.config import StrictModel

EOS_TOKEN = "<|endoftext|>"
DEFAULT_SPECIAL_TOKENS = ("<|endoftext|>", "<|pad|>", "<|system|>", "<|user|>", "<|assistant|>")
N_BYTES = 256

# Output columns of BatchTokenizer.
TOKENS = "tokens"  # list<uint32>: the document's ids, EOS included; [] when skipped
N_TOKENS = "n_tokens"  # int32: len(tokens)
SKIP = "tokenize_skip"  # string: null when kept, else "empty" or "too_short"
TRUNCATED = "truncated_tokens"  # int32: ids cut off by max_doc_tokens (0 when not truncated)
SKIP_EMPTY, SKIP_TOO_SHORT = "empty", "too_short"


class TokenizerTrainOptions(StrictModel):
    vocab_size: int = Field(default=32000, description="final vocabulary size, special tokens included")
    sample_docs: int = Field(default=100_000, gt=0, description="train on the first N non-empty documents")
    min_frequency: int = Field(default=2, ge=1, description="a pair must occur this often to be merged")
    special_tokens: list[str] = Field(
        default_factory=lambda: list(DEFAULT_SPECIAL_TOKENS),
        description=f"ids 0..n-1 in this order; must include {EOS_TOKEN} (the document boundary)",
    )

    @field_validator("special_tokens")
    @classmethod
    def _specials(cls, value: list[str]) -> list[str]:
        if EOS_TOKEN not in value:
            raise ValueError(f"must include the document boundary {EOS_TOKEN}")
        if len(set(value)) != len(value) or any(not t for t in value):
            raise ValueError("special tokens must be distinct and non-empty")
        return value

    @model_validator(mode="after")
    def _room_for_bytes(self) -> "TokenizerTrainOptions":
        if self.vocab_size < N_BYTES + len(self.special_tokens):
            raise ValueError(f"vocab_size {self.vocab_size} < 256 byte tokens + "
                             f"{len(self.special_tokens)} special tokens")
        return self


class TokenizeOptions(StageOptions):
    tokenizer_path: str | None = Field(default=None, description="tokenizer.json (local, s3://, gs://)")
    shard_tokens: int = Field(default=100_000_000, gt=0, description="tokens per shard (documents are not split)")
    max_doc_tokens: int | None = Field(
        default=None, gt=0,
        description="keep only the first N tokens of a longer document (EOS still appended); counted",
    )
    append_eos: bool = Field(default=True, description=f"end every document with {EOS_TOKEN}")
    min_doc_tokens: int = Field(default=1, ge=1, description="skip (and count) documents with fewer tokens")

    @model_validator(mode="after")
    def _consistent(self) -> "TokenizeOptions":
        if self.enabled and not self.tokenizer_path:
            raise ValueError("tokenizer_path is required when tokenization is enabled")
        if self.max_doc_tokens is not None and self.max_doc_tokens < self.min_doc_tokens:
            raise ValueError(f"max_doc_tokens {self.max_doc_tokens} < min_doc_tokens {self.min_doc_tokens}")
        return self


# ---------------------------------------------------------------------------- training

def new_tokenizer() -> Tokenizer:
    """An untrained byte-level BPE with the pipeline's pre-tokenizer and decoder."""
    tokenizer = Tokenizer(models.BPE())  # no unk token: every byte is in the alphabet
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def train_tokenizer(texts: Iterable[str | None], options: TokenizerTrainOptions | None = None,
                    out_path: str = "tokenizer.json") -> dict[str, Any]:
    """Train on the first `options.sample_docs` non-empty texts; write tokenizer.json atomically.

    Returns {"path", "vocab_size" (actual; below the requested size only when the corpus runs
    out of pairs to merge), "requested_vocab_size", "sha256" (of the file written),
    "special_tokens" ({token: id}), "documents" (texts trained on)}.
    """
    options = options or TokenizerTrainOptions()
    used = 0

    def sample() -> Iterator[str]:
        nonlocal used
        for text in itertools.islice((t for t in texts if t), options.sample_docs):
            used += 1
            yield text

    tokenizer = new_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=options.vocab_size,
        min_frequency=options.min_frequency,
        special_tokens=list(options.special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(sample(), trainer=trainer)
    data = tokenizer.to_str().encode()
    filesystem, path = fs.resolve(out_path)
    fs.write_bytes_atomic(filesystem, path, data)
    return {
        "path": out_path,
        "vocab_size": tokenizer.get_vocab_size(),
        "requested_vocab_size": options.vocab_size,
        "sha256": shard_format.sha256_bytes(data),
        "special_tokens": {t: tokenizer.token_to_id(t) for t in options.special_tokens},
        "documents": used,
    }


def load_tokenizer(path: str) -> tuple[Tokenizer, str]:
    """The tokenizer at `path` (local, s3://, gs://) ready for data, and the sha256 of its file."""
    filesystem, fpath = fs.resolve(path)
    with filesystem.open_input_stream(fpath, compression=None) as f:
        data = f.read()
    tokenizer = Tokenizer.from_str(data.decode())
    tokenizer.encode_special_tokens = True  # literal "<|endoftext|>" in text is just text
    return tokenizer, shard_format.sha256_bytes(data)


def special_token_ids(tokenizer: Tokenizer) -> dict[str, int]:
    """{content: id} of the tokenizer's special tokens, by id."""
    added = tokenizer.get_added_tokens_decoder()
    return {tok.content: i for i, tok in sorted(added.items()) if tok.special}


# ---------------------------------------------------------------------------- tokenizing

def configure_threads(num_threads: int | None = None) -> None:
    """Size the Rust thread pool `encode_batch` uses, before its first use in this process.

    `tokenizers` runs a batch on a rayon pool whose size is read once, from RAYON_NUM_THREADS,
    and otherwise is every core of the machine. Ray only sets OMP_NUM_THREADS (to the CPUs
    assigned to the worker, at least 1), so N tokenizer actors on a node would each start
    one thread per core. Order: an explicit `num_threads`; else a RAYON_NUM_THREADS already set
    (the user's choice); else OMP_NUM_THREADS (Ray's share for this worker); else rayon's
    default. TOKENIZERS_PARALLELISM=false (set by the user) turns the pool off and is respected.
    """
    if num_threads is not None:
        os.environ["RAYON_NUM_THREADS"] = str(max(1, int(num_threads)))
    elif "RAYON_NUM_THREADS" not in os.environ and os.environ.get("OMP_NUM_THREADS"):
        os.environ["RAYON_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"]


class BatchTokenizer:
    """Tokenize a batch of documents; for `ds.map_batches(BatchTokenizer, batch_format="pyarrow",
    fn_constructor_kwargs={...}, compute=ray.data.ActorPoolStrategy(...))`.

    Adds columns (all rows kept, so counts survive in Ray Data):
      tokens            list<uint32>  ids, EOS appended; [] for skipped rows
      n_tokens          int32         len(tokens)
      tokenize_skip     string        null, "empty" (null/"" text) or "too_short" (< min_doc_tokens)
      truncated_tokens  int32         ids dropped by max_doc_tokens
    and removes the text column unless `drop_text=False` (the tokens replace it).

    list<uint32> rather than binary of packed ids: both cost the same to build (~2% of the
    encoding time; the Python lists that `Encoding.ids` returns dominate either way), and a
    typed list column gives the writer its flat ids and offsets without copies.
    min/max count the text's own tokens; the EOS comes on top, so a stored document is at most
    max_doc_tokens + 1 tokens long. Long documents are truncated, not split: max_doc_tokens is
    a guard against pathological pages (the trainer packs documents of any length anyway), and
    pieces of a split page would each start mid-sentence after a boundary token.
    """

    def __init__(self, tokenizer_path: str | None = None, options: TokenizeOptions | dict | None = None,
                 text_column: str = "text", drop_text: bool = True, num_threads: int | None = None):
        if isinstance(options, dict) or options is None:
            options = TokenizeOptions(**{"tokenizer_path": tokenizer_path, **(options or {})})
        path = tokenizer_path or options.tokenizer_path
        if not path:
            raise ValueError("BatchTokenizer needs a tokenizer_path")
        configure_threads(num_threads)
        self.options, self.text_column, self.drop_text = options, text_column, drop_text
        self.tokenizer, self.tokenizer_sha256 = load_tokenizer(path)
        self.eos_id = self.tokenizer.token_to_id(EOS_TOKEN)
        if options.append_eos and self.eos_id is None:
            raise ValueError(f"tokenizer {path} has no {EOS_TOKEN} token to end documents with")
        self.vocab_size = self.tokenizer.get_vocab_size()

    def __call__(self, batch: pa.Table) -> pa.Table:
        texts = batch.column(self.text_column).to_pylist()
        n = len(texts)
        present = [i for i, t in enumerate(texts) if t]
        encodings = self.tokenizer.encode_batch_fast([texts[i] for i in present], add_special_tokens=False)
        lo, hi, eos = self.options.min_doc_tokens, self.options.max_doc_tokens, self.options.append_eos
        token_lists: list[list[int]] = [[] for _ in range(n)]
        skip: list[str | None] = [SKIP_EMPTY] * n
        truncated = np.zeros(n, dtype=np.int32)
        for i, enc in zip(present, encodings):
            ids = enc.ids
            if len(ids) < lo:
                skip[i] = SKIP_TOO_SHORT
                continue
            skip[i] = None
            if hi is not None and len(ids) > hi:
                truncated[i] = len(ids) - hi
                del ids[hi:]
            if eos:
                ids.append(self.eos_id)
            token_lists[i] = ids
        tokens = pa.array(token_lists, type=pa.list_(pa.uint32()))
        out = batch.drop_columns([self.text_column]) if self.drop_text else batch
        for name in (TOKENS, N_TOKENS, SKIP, TRUNCATED):
            if name in out.column_names:
                out = out.drop_columns([name])
        return (out.append_column(TOKENS, tokens)
                .append_column(N_TOKENS, pc.list_value_length(tokens).cast(pa.int32()))
                .append_column(SKIP, pa.array(skip, type=pa.string()))
                .append_column(TRUNCATED, pa.array(truncated)))


# ---------------------------------------------------------------------------- shards

def config_hash(options: TokenizeOptions, **extra: Any) -> tuple[str, dict[str, Any]]:
    """Hash of everything besides the tokenizer that decides the shards' bytes and manifest.

    The tokenizer is covered by its own sha256 (its path may move), `enabled` changes nothing
    written. Fields the lead adds to TokenizeOptions later are included automatically.
    """
    config = {"format_version": shard_format.FORMAT_VERSION,
              **options.model_dump(mode="json", exclude={"enabled", "tokenizer_path"}), **extra}
    return shard_format.sha256_bytes(shard_format.canonical_json(config)), config


def _existing(filesystem, out_dir: str, tokenizer_sha: str, config_sha: str, overwrite: bool) -> dict | None:
    """The finished manifest to return as is, or None to (re)build."""
    path = fs.join(out_dir, shard_format.MANIFEST)
    if not fs.exists(filesystem, path):
        return None
    manifest = fs.read_json(filesystem, path)
    same = (manifest.get("tokenizer_sha256"), manifest.get("config_sha256")) == (tokenizer_sha, config_sha)
    if same:
        try:
            shard_format.ShardReader(out_dir, filesystem)
            return manifest
        except (OSError, ValueError):
            return None  # damaged since it was written: rebuild
    if overwrite:
        return None
    raise ValueError(
        f"{out_dir} already holds shards made with a different "
        f"{'tokenizer' if manifest.get('tokenizer_sha256') != tokenizer_sha else 'config'} "
        f"(tokenizer sha256 {manifest.get('tokenizer_sha256')} vs {tokenizer_sha}, config sha256 "
        f"{manifest.get('config_sha256')} vs {config_sha}); pass overwrite=True or use another directory")


def write_shards_from_batches(batches: Iterable[pa.Table], out_dir: str, tokenizer_path: str | None = None,
                              options: TokenizeOptions | None = None, domain_column: str = "domain", *,
                              text_column: str = "text", input_fingerprint: str | None = None,
                              overwrite: bool = False, num_threads: int | None = None) -> dict[str, Any]:
    """Tokenize `batches` in the order given and write shards + manifest.json to `out_dir`.

    Deterministic: the same batches in the same order give byte-identical files. A batch that
    already has a `tokens` column (BatchTokenizer output, e.g. from a Ray actor pool with the
    same tokenizer and options) is written as is, so tokenizing can run in parallel and only
    writing in order here. Rows without the `domain_column` (or with null) count as "(none)".

    Resuming: when out_dir/manifest.json exists with the same tokenizer sha256 and config hash
    (options, domain/text column, `input_fingerprint`) and its shards check out, it is returned
    without work. The config hash cannot see the input data: pass `input_fingerprint` (e.g. a
    hash of the input file list) to tie the shards to it. Otherwise the directory's manifest,
    shard and temp files are deleted first and everything is rewritten; a directory holding
    shards of a different tokenizer/config is refused unless `overwrite=True`.
    """
    if options is None:
        options = TokenizeOptions(tokenizer_path=tokenizer_path)
    path = tokenizer_path or options.tokenizer_path
    if not path:
        raise ValueError("write_shards_from_batches needs a tokenizer_path")
    tokenizer, tokenizer_sha = load_tokenizer(path)
    config_sha, config = config_hash(options, domain_column=domain_column, text_column=text_column,
                                     input_fingerprint=input_fingerprint)
    filesystem, fs_dir = fs.resolve(out_dir)
    done = _existing(filesystem, fs_dir, tokenizer_sha, config_sha, overwrite)
    if done is not None:
        return done
    shard_format.remove_partial_outputs(fs_dir, filesystem)

    batch_tokenizer: BatchTokenizer | None = None
    vocab_size = tokenizer.get_vocab_size()
    writer = shard_format.ShardWriter(fs_dir, vocab_size, options.shard_tokens, filesystem=filesystem)
    counts = {"input_documents": 0, SKIP_EMPTY: 0, SKIP_TOO_SHORT: 0, "truncated_documents": 0,
              "truncated_tokens": 0}
    for batch in batches:
        if batch.num_rows == 0:
            continue
        if TOKENS not in batch.column_names:
            if batch_tokenizer is None:
                batch_tokenizer = BatchTokenizer(path, options, text_column=text_column, num_threads=num_threads)
            batch = batch_tokenizer(batch)
        counts["input_documents"] += batch.num_rows
        skip = batch.column(SKIP)
        for reason in (SKIP_EMPTY, SKIP_TOO_SHORT):
            counts[reason] += int(pc.sum(pc.equal(skip, reason)).as_py() or 0)
        cut = batch.column(TRUNCATED)
        counts["truncated_documents"] += int(pc.sum(pc.greater(cut, 0)).as_py() or 0)
        counts["truncated_tokens"] += int(pc.sum(cut).as_py() or 0)
        kept = batch.filter(pc.is_null(skip))
        if kept.num_rows == 0:
            continue
        tokens = kept.column(TOKENS).combine_chunks()
        values = tokens.flatten().to_numpy(zero_copy_only=False)
        lengths = pc.list_value_length(tokens).to_numpy(zero_copy_only=False)
        domains = (kept.column(domain_column).to_pylist() if domain_column in kept.column_names
                   else [None] * kept.num_rows)
        writer.add_batch(values, lengths, domains)
    shard_entries = writer.close()

    eos_id = tokenizer.token_to_id(EOS_TOKEN)
    manifest = shard_format.build_manifest(
        shard_entries, vocab_size=vocab_size, tokenizer_sha256=tokenizer_sha, config_sha256=config_sha,
        special_tokens=special_token_ids(tokenizer), eos_token_id=eos_id, bos_token_id=None,
        document_boundary_token_id=eos_id if options.append_eos else None,
        extra={"config": config, "counts": counts},
    )
    shard_format.write_manifest(fs_dir, manifest, filesystem)
    return manifest


def inspect_shards(shard_dir: str, tokenizer_path: str | None = None, samples: int = 3) -> str:
    """Summary of a shard directory (validated), plus `samples` documents spread over it,
    decoded when `tokenizer_path` is given and matches, else shown as ids."""
    reader = shard_format.open_shards(shard_dir)
    m = reader.manifest
    n_docs, n_tokens = reader.num_documents, reader.num_tokens
    lines = [
        f"token shards: {shard_dir}",
        f"  format {m['format']} v{m['format_version']}, dtype {m['dtype']}, vocab_size {m['vocab_size']}",
        f"  tokenizer sha256 {m['tokenizer_sha256']}",
        f"  config sha256    {m['config_sha256']}",
        f"  eos id {m['eos_token_id']}, bos id {m['bos_token_id']}, "
        f"document boundary id {m['document_boundary_token_id']}",
        f"  {n_docs:,} documents, {n_tokens:,} tokens in {len(reader.shards)} shards"
        + (f" ({n_tokens / n_docs:,.1f} tokens/document)" if n_docs else ""),
    ]
    counts = m.get("counts")
    if counts:
        lines.append(f"  input {counts['input_documents']:,} documents; skipped {counts[SKIP_EMPTY]:,} empty, "
                     f"{counts[SKIP_TOO_SHORT]:,} too short; truncated {counts['truncated_documents']:,} "
                     f"({counts['truncated_tokens']:,} tokens cut)")
    lines.append("shards:")
    width = max([len(s["name"]) for s in m["shards"]] + [5])
    lines.append(f"  {'name':<{width}} {'documents':>12} {'tokens':>15}  sha256")
    for s in m["shards"]:
        lines.append(f"  {s['name']:<{width}} {s['documents']:>12,} {s['tokens']:>15,}  {s['sha256'][:16]}")
    lines.append("domains:")
    width = max([len(d) for d in m["domains"]] + [6])
    lines.append(f"  {'domain':<{width}} {'documents':>12} {'tokens':>15} {'share':>7}")
    for d, c in sorted(m["domains"].items(), key=lambda kv: (-kv[1]["tokens"], kv[0])):
        share = c["tokens"] / n_tokens if n_tokens else 0.0
        lines.append(f"  {d:<{width}} {c['documents']:>12,} {c['tokens']:>15,} {share:>7.1%}")

    if samples > 0 and n_docs:
        tokenizer = None
        if tokenizer_path:
            try:
                shard_format.check_tokenizer_matches(m, tokenizer_path)
                tokenizer = load_tokenizer(tokenizer_path)[0]
            except ValueError as err:
                lines.append(f"not decoding samples: {err}")
        lines.append("samples:" if tokenizer else "samples (token ids; pass a tokenizer to decode):")
        picks = sorted({i * n_docs // samples for i in range(samples)})
        for i in picks:
            ids = reader.document(i)
            if tokenizer:
                text = tokenizer.decode(ids.tolist(), skip_special_tokens=False)
                shown = repr(text[:200]) + (" ..." if len(text) > 200 else "")
            else:
                shown = " ".join(map(str, ids[:40].tolist())) + (" ..." if len(ids) > 40 else "")
            lines.append(f"  [document {i}, {len(ids)} tokens] {shown}")
    return "\n".join(lines)
