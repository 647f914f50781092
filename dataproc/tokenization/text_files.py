"""Token shards straight from plain text files, without the WARC pipeline (and without Ray).

For corpora that are already clean text (WikiText, a book, a JSONL dump): train a byte-level
BPE on them (or reuse a tokenizer) and write the same shard format `data run` writes, so
`train pretrain` reads either. `llmforge data tokenize-text` is the command.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import pyarrow as pa

from dataproc.reading.text_files import iter_texts
from dataproc.tokenization.encode import TokenizeOptions
from dataproc.tokenization.shard_writer import write_shards_from_batches
from dataproc.tokenization.tokenizer import TokenizerTrainOptions, tokenizer_step, train_tokenizer
from llmforge.common.resume import fingerprint
from llmforge.shard_format import TOKENIZER_FILE


def _documents(paths: Iterable[str], txt_mode: str) -> Iterable[tuple[str, str]]:
    for path in paths:
        for text in iter_texts(path, txt_mode=txt_mode):
            yield text, Path(path).name


def shards_from_text_files(paths: list[str], out_dir: str, *, vocab_size: int = 8192, tokenizer_path: str | None = None,
                           txt_mode: str = "paragraphs", shard_tokens: int = 1 << 24,
                           batch_docs: int = 1024) -> dict:
    """Write `out_dir/tokenizer.json` (trained unless `tokenizer_path` is given) and token shards
    of every document of `paths` to `out_dir`; returns the manifest. Each file's name is its
    documents' domain, so the manifest counts tokens per file. Reruns with the same input and
    options return the existing shards."""
    if not paths:
        raise ValueError("no input text files")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if tokenizer_path is None:
        tokenizer_path = str(out / TOKENIZER_FILE)
        if tokenizer_step(str(out)).done() is None:
            train_tokenizer((t for t, _ in _documents(paths, txt_mode)),
                            TokenizerTrainOptions(vocab_size=vocab_size), tokenizer_path)
    # The input: which files (resolved), how large, split how.
    inputs = fingerprint([[str(Path(p).resolve()), Path(p).stat().st_size] for p in paths] + [txt_mode],
                         digits=None)

    def batches():
        texts, domains = [], []
        for text, domain in _documents(paths, txt_mode):
            texts.append(text)
            domains.append(domain)
            if len(texts) == batch_docs:
                yield pa.table({"text": texts, "domain": domains})
                texts, domains = [], []
        if texts:
            yield pa.table({"text": texts, "domain": domains})

    options = TokenizeOptions(shard_tokens=shard_tokens)
    return write_shards_from_batches(batches(), str(out), tokenizer_path, options, input_fingerprint=inputs)
