"""Perplexity and bits per byte of a model on text, JSONL or token shards.

    results, rows = evaluate_ppl(model_path, "wiki.test.raw")       # or docs.jsonl, or a shard dir
    run_ppl(model_path, data_path, output_dir, ...)                # + documents.parquet, results.json

Every token of every document is scored exactly once, as lm-evaluation-harness's
`loglikelihood_rolling`: the document follows `<|endoftext|>` (so its first token is scored
too), and one longer than the model's window is scored in windows of the model's context
(`evaluation.scoring.rolling_token_logprobs`; `stride` < window gives each window more
context). Documents that fit one window are batched: they share the one-token context, so
`evaluation.scoring.loglikelihood` scores many per forward.

Metrics (the harness's aggregations for its perplexity tasks, over the whole set):
  bits_per_byte     -Σ log p / Σ UTF-8 bytes / ln 2   (compares models with different tokenizers)
  byte_perplexity   exp(-Σ log p / Σ bytes)
  word_perplexity   exp(-Σ log p / Σ words)           words = len(re.split(r"\\s+", text))
  token_perplexity  exp(-Σ log p / Σ tokens)          (this tokenizer's; not comparable across them)

Inputs: `.txt`/`.raw` (the whole file is one document, as a WikiText page set is scored; or
`txt_mode="paragraphs"`: blank-line separated blocks, stripped; `"lines"`: one per line), `.jsonl`
(the `text` field of each line), optionally gzipped, or a token-shard directory (manifest.json;
its tokenizer must be the model's): each shard document's ids without their closing
`<|endoftext|>`, its bytes and words from decoding them. So text and the shards made from it
give the same numbers.
"""
from __future__ import annotations

import gzip
import math
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from evaluation.replicas import gpus_per_replica, length_blocks, load_model, map_blocks
from llmforge.common.errors import UserError

if TYPE_CHECKING:
    import pyarrow as pa

DOCUMENTS_FILE = "documents.parquet"
RESULTS_FILE = "results.json"
TXT_MODES = ("file", "paragraphs", "lines")
BLOCK_BATCHES = 4  # an actor call scores about this many `batch_tokens` forwards


def count_words(text: str) -> int:
    """The harness's word count (`re.split(r"\\s+", doc)`)."""
    return len(re.split(r"\s+", text))


# ------------------------------------------------------------------------------ documents


def _open_text(path: Path):
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return path.open("r", encoding="utf-8", errors="replace", newline="")


def read_texts(path: str | Path, text_field: str = "text", txt_mode: str = "file") -> list[str]:
    """The documents of a .txt/.raw or .jsonl file (gzipped or not), blanks skipped."""
    p = Path(path)
    name = p.name.lower().removesuffix(".gz")
    if txt_mode not in TXT_MODES:
        raise UserError(f"txt_mode {txt_mode!r}: expected one of {', '.join(TXT_MODES)}")
    if name.endswith((".jsonl", ".json", ".ndjson")):
        from llmforge.common.rows import iter_rows

        texts = []
        for _, where, row in iter_rows(p, suffix=".jsonl.gz" if p.name.endswith(".gz") else ".jsonl"):
            if not isinstance(row, dict) or text_field not in row:
                raise UserError(f"{where}: no {text_field!r} field")
            if not isinstance(row[text_field], str):
                raise UserError(f"{where}: {text_field!r} is {type(row[text_field]).__name__}, not text")
            if row[text_field].strip():
                texts.append(row[text_field])
        return texts
    if not name.endswith((".txt", ".raw")):
        raise UserError(f"--data {path}: unsupported file type (use .txt, .raw, .jsonl, optionally .gz, or a "
                        f"token-shard directory with manifest.json)")
    with _open_text(p) as f:
        data = f.read()
    if txt_mode == "file":
        return [data] if data.strip() else []
    if txt_mode == "lines":
        return [line.rstrip("\r\n") for line in data.splitlines(keepends=True) if line.strip()]
    return [block.strip() for block in re.split(r"\n\s*\n", data) if block.strip()]


def load_documents(path: str | Path, chat_tokenizer, tokenizer_path: str | None = None, text_field: str = "text",
                   txt_mode: str = "file", limit: int | None = None) -> tuple[list[dict[str, Any]], str]:
    """({"ids", "bytes", "words"} per document, the input's kind "text" | "shards"). Shards
    need `tokenizer_path` (the model's tokenizer.json, checked against their manifest)."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"--data {path}: no such file or directory")
    end_id = chat_tokenizer.end_id
    if p.is_dir():
        from llmforge.shard_format import MANIFEST, ShardReader, check_tokenizer_matches

        if not (p / MANIFEST).exists():
            raise UserError(f"--data {path}: a directory without {MANIFEST} (not a finished token-shard directory)")
        reader = ShardReader(str(p))
        if tokenizer_path is not None:
            check_tokenizer_matches(reader.manifest, str(tokenizer_path))
        n = len(reader) if limit is None else min(limit, len(reader))
        docs = []
        for i in range(n):
            ids = [int(t) for t in reader.document(i)]
            if ids and ids[-1] == end_id:
                ids = ids[:-1]
            text = chat_tokenizer.tokenizer.decode(ids, skip_special_tokens=False)
            docs.append({"ids": ids, "bytes": len(text.encode("utf-8")), "words": count_words(text)})
        return docs, "shards"
    texts = read_texts(p, text_field, txt_mode)
    if limit is not None:
        texts = texts[:limit]
    encoded = chat_tokenizer.tokenizer.encode_batch(texts, add_special_tokens=False)
    return [{"ids": list(e.ids), "bytes": len(t.encode("utf-8")), "words": count_words(t)}
            for t, e in zip(texts, encoded)], "text"


# ------------------------------------------------------------------------------ scoring


def score_documents(model, documents: Sequence[Sequence[int]], end_id: int, batch_tokens: int = 8192,
                    stride: int | None = None, pad_id: int = 0) -> list[float]:
    """Σ log p of each document's tokens after `end_id`. Documents that fit the window go
    through `loglikelihood` in batches of about `batch_tokens`; longer ones are rolled."""
    import torch

    from evaluation.scoring import loglikelihood, rolling_token_logprobs

    window = model.cfg.max_seq_len
    out = [0.0] * len(documents)
    short = [i for i, d in enumerate(documents) if 0 < len(d) <= window]
    for i, d in enumerate(documents):
        if len(d) > window:
            out[i] = float(rolling_token_logprobs(model, [end_id, *d], stride).to(torch.float64).sum())
    # Batches of short documents, longest first: rows x longest <= batch_tokens.
    short.sort(key=lambda i: -len(documents[i]))
    start = 0
    while start < len(short):
        longest = len(documents[short[start]])
        stop = start + max(1, batch_tokens // longest)
        group = short[start:stop]
        scores = loglikelihood(model, [([end_id], list(documents[i])) for i in group], batch_tokens, pad_id)
        for i, s in zip(group, scores):
            out[i] = s.logprob
        start = stop
    return out


class PplScorer:
    """Ray Data `map_batches` callable (the model loads once): `index`, `ids` -> `index`, `logprob`."""

    def __init__(self, model_path: str, device: str = "cpu", batch_tokens: int = 8192, stride: int | None = None):
        self.model, self.tokenizer = load_model(model_path, device)
        self.batch_tokens, self.stride = batch_tokens, stride

    def __call__(self, table: "pa.Table") -> "pa.Table":
        import pyarrow as pa

        lp = score_documents(self.model, table.column("ids").to_pylist(), self.tokenizer.end_id, self.batch_tokens,
                             self.stride, self.tokenizer.pad_id)
        return pa.table({"index": table.column("index"), "logprob": pa.array(lp, pa.float64())})


# ------------------------------------------------------------------------------ metrics


def aggregate(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    lp = sum(r["logprob"] for r in rows)
    tokens, nbytes, words = (sum(r[k] for r in rows) for k in ("tokens", "bytes", "words"))

    def ratio(n: int) -> float | None:
        return -lp / n if n else None

    per_byte, per_word, per_token = ratio(nbytes), ratio(words), ratio(tokens)
    return {
        "bits_per_byte": per_byte / math.log(2) if per_byte is not None else None,
        "byte_perplexity": math.exp(per_byte) if per_byte is not None else None,
        "word_perplexity": math.exp(per_word) if per_word is not None else None,
        "token_perplexity": math.exp(per_token) if per_token is not None else None,
        "loglikelihood": lp, "documents": len(rows), "tokens": tokens, "bytes": nbytes, "words": words,
    }


def evaluate_ppl(model_path: str, data_path: str, limit: int | None = None, replicas: int = 0,
                 batch_tokens: int = 8192, stride: int | None = None, text_field: str = "text",
                 txt_mode: str = "file", device: str = "cpu", num_cpus: float = 1.0,
                 num_gpus: float | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(results, one row per document: index, tokens, bytes, words, logprob, bits_per_byte).
    `replicas` 0 scores in this process, N > 0 on N Ray Data actors."""
    from evaluation.multiple_choice import check_model

    if replicas < 0:
        raise UserError(f"--replicas {replicas}: must be >= 0")
    if batch_tokens <= 0:
        raise UserError(f"--batch-tokens {batch_tokens}: must be > 0")
    if limit is not None and limit <= 0:
        raise UserError(f"--limit {limit}: must be > 0")
    source, chat_tokenizer = check_model(model_path)
    if stride is not None and not 0 < stride <= source.config.max_seq_len:
        raise UserError(f"--stride {stride}: must be in 1..{source.config.max_seq_len} (the model's window)")
    started = time.perf_counter()
    docs, kind = load_documents(data_path, chat_tokenizer, str(source.tokenizer_path), text_field, txt_mode, limit)
    kept = [i for i, d in enumerate(docs) if d["ids"]]
    if not kept:
        raise UserError(f"--data {data_path}: no non-empty documents")
    import pyarrow as pa

    tables = []
    for block in length_blocks([len(docs[i]["ids"]) for i in kept], BLOCK_BATCHES * batch_tokens):
        index = [kept[j] for j in block]
        tables.append(pa.table({"index": pa.array(index, pa.int64()),
                                "ids": pa.array([docs[i]["ids"] for i in index], pa.list_(pa.int64()))}))
    logprob: dict[int, float] = {}
    for out in map_blocks(tables, PplScorer, (str(source.path), device, batch_tokens, stride), replicas, num_cpus,
                          gpus_per_replica(device, num_gpus)):
        logprob.update(zip(out.column("index").to_pylist(), out.column("logprob").to_pylist()))
    if len(logprob) != len(kept):
        raise RuntimeError(f"scoring returned {len(logprob)} documents for {len(kept)}")
    rows = []
    for i in kept:
        d = docs[i]
        rows.append({"index": i, "tokens": len(d["ids"]), "bytes": d["bytes"], "words": d["words"],
                     "logprob": logprob[i],
                     "bits_per_byte": -logprob[i] / d["bytes"] / math.log(2) if d["bytes"] else None})
    seconds = time.perf_counter() - started
    name = Path(data_path).name.removesuffix(".gz")
    name = name.rsplit(".", 1)[0] if Path(data_path).is_file() else name
    metrics = aggregate(rows)
    results = {
        "results": {name: metrics},
        "data": {"path": str(data_path), "kind": kind, "documents": len(docs),
                 "empty_documents": len(docs) - len(kept), "text_field": text_field if kind == "text" else None,
                 "txt_mode": txt_mode if kind == "text" else None},
        "model": {"path": str(model_path), "checkpoint": str(source.path), "format": source.format,
                  "window": source.config.max_seq_len, "tokenizer_sha256": source.tokenizer_sha256()},
        "config": {"limit": limit, "replicas": replicas, "batch_tokens": batch_tokens,
                   "stride": stride or source.config.max_seq_len, "device": device},
        "timing": {"seconds": round(seconds, 3),
                   "tokens_per_second": round(metrics["tokens"] / seconds, 1) if seconds > 0 else None},
    }
    return results, rows


def run_ppl(model_path: str, data_path: str, output_dir: str, **options: Any) -> dict[str, Any]:
    """`evaluate_ppl` into `output_dir`: documents.parquet and results.json. Returns the results."""
    import pyarrow as pa

    from evaluation.multiple_choice import write_outputs

    results, rows = evaluate_ppl(model_path, data_path, **options)
    schema = pa.schema([("index", pa.int64()), ("tokens", pa.int64()), ("bytes", pa.int64()), ("words", pa.int64()),
                        ("logprob", pa.float64()), ("bits_per_byte", pa.float64())])
    return write_outputs(output_dir, results, pa.Table.from_pylist(rows, schema=schema), DOCUMENTS_FILE)


def format_table(results: dict[str, Any]) -> str:
    from evaluation.multiple_choice import number

    lines = [f"{'data':<28} {'docs':>7} {'tokens':>10} {'bits/byte':>10} {'byte ppl':>10} {'word ppl':>10} "
             f"{'token ppl':>10}"]
    for name, m in results["results"].items():
        def cell(v):
            return f"{number(v):>10}"

        lines.append(f"{name[:28]:<28} {m['documents']:>7} {m['tokens']:>10} {cell(m['bits_per_byte'])} "
                     f"{cell(m['byte_perplexity'])} {cell(m['word_perplexity'])} {cell(m['token_perplexity'])}")
    return "\n".join(lines)
