"""Tokenized batches -> token shards + manifest, in the order given (format in
`llmforge.shard_format`); rerunning with the same tokenizer and config returns the finished
manifest. The shard directory is a `llmforge.common.resume.Step` whose marker is the manifest,
written last, recording `tokenizer_sha256` and `config_sha256`."""
from __future__ import annotations

from typing import Any, Iterable

import pyarrow as pa
import pyarrow.compute as pc

from dataproc.tokenization.encode import (
    SKIP,
    SKIP_EMPTY,
    SKIP_TOO_SHORT,
    TOKENS,
    TRUNCATED,
    BatchTokenizer,
    TokenizeOptions,
)
from dataproc.tokenization.tokenizer import load_tokenizer
from llmforge import shard_format
from llmforge.common import fs
from llmforge.common.resume import ConflictError, Step, fingerprint
from llmforge.shard_format import EOS_TOKEN, special_token_ids


def config_hash(options: TokenizeOptions, **extra: Any) -> tuple[str, dict[str, Any]]:
    """Hash of everything besides the tokenizer that decides the shards' bytes and manifest:
    the format version, the encoding options and `extra` (columns, input fingerprint).

    The tokenizer is covered by its own sha256 (its path may move).
    """
    config = {"format_version": shard_format.FORMAT_VERSION,
              **options.model_dump(mode="json", include=set(TokenizeOptions.model_fields)), **extra}
    return fingerprint(config, digits=None, compact=True), config


def _finished(step: Step, filesystem, overwrite: bool) -> dict | None:
    """The finished manifest to return as is, or None to (re)build; ConflictError for shards
    of another tokenizer or config unless `overwrite`."""
    try:
        manifest = step.done() if overwrite else step.refuse_other()
    except ConflictError as err:
        found, ours = err.found, err.expected
        what = "tokenizer" if "tokenizer_sha256" in err.differing() else "config"
        raise ConflictError(
            f"{step.path} already holds shards made with a different {what} "
            f"(tokenizer sha256 {found['tokenizer_sha256']} vs {ours['tokenizer_sha256']}, config sha256 "
            f"{found['config_sha256']} vs {ours['config_sha256']}); pass overwrite=True or use another "
            "directory", found, ours) from None
    if manifest is None:
        return None
    try:
        shard_format.ShardReader(step.path, filesystem)
        return manifest
    except (OSError, ValueError):
        return None  # damaged since it was written: rebuild


def write_shards_from_batches(batches: Iterable[pa.Table], out_dir: str, tokenizer_path: str,
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
    options = options or TokenizeOptions()
    if not tokenizer_path:
        raise ValueError("write_shards_from_batches needs a tokenizer_path")
    tokenizer, tokenizer_sha = load_tokenizer(tokenizer_path)
    config_sha, config = config_hash(options, domain_column=domain_column, text_column=text_column,
                                     input_fingerprint=input_fingerprint)
    filesystem, fs_dir = fs.resolve(out_dir)
    step = Step(out_dir, shard_format.MANIFEST, fields={"tokenizer_sha256": tokenizer_sha, "config_sha256": config_sha})
    done = _finished(step, filesystem, overwrite)
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
                batch_tokenizer = BatchTokenizer(tokenizer_path, options, text_column=text_column,
                                                 num_threads=num_threads)
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
    step.finish(manifest)  # the manifest is the marker: written last
    return manifest
