"""Multiple choice by log-likelihood, with lm-evaluation-harness's metrics.

    results, rows = evaluate_mc(model_path, "arc_easy_validation.jsonl", shots=0, replicas=0)
    run_mc(model_path, task_path, output_dir, ...)  # + predictions.parquet, results.json

Each item's (context, continuation) texts (`evaluation.tasks`) are scored as plain text, not in
the chat template: `<|endoftext|>` first, as every document started in pretraining, then the
context; the continuation's tokens are the harness's (`_encode_pair`: trailing spaces of the
context move to the continuation, the pair is encoded whole and the context's tokens cut off).
`evaluation.scoring.loglikelihood` runs each distinct context once for all its choices.

Metrics (the harness's `process_results` for multiple_choice):
  acc        argmax of the log-likelihoods is the gold choice
  acc_norm   argmax of log-likelihood / the choice's length in characters
  acc_bytes  argmax of log-likelihood / the choice's length in UTF-8 bytes
  *_stderr   sample standard deviation / sqrt(n) (the harness's `mean_stderr`)
Ties go to the first choice (np.argmax). WinoGrande-style "partial" items report `acc` only (as
the harness: their choices are contexts, so a length normalisation means nothing). LAMBADA-
style "lm" items report `acc` = greedy decoding reproduces the continuation and `perplexity` =
exp(-mean log-likelihood of the continuation) (the harness's per-document aggregation).

Scale-out: items are sorted by length and cut into blocks of about `4 x batch_tokens` tokens,
scored by `replicas` Ray Data actors (one model each) or, with `replicas=0`, in this process.
"""
from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from evaluation.replicas import gpus_per_replica, length_blocks, load_model, map_blocks
from evaluation.tasks import Item, Task, load_task
from llmforge.common.errors import UserError

if TYPE_CHECKING:
    import pyarrow as pa

PREDICTIONS_FILE = "predictions.parquet"
RESULTS_FILE = "results.json"
BLOCK_BATCHES = 4  # an actor call scores about this many `batch_tokens` forwards


# ------------------------------------------------------------------------------ tokens


def encode_pairs(tokenizer, end_id: int, pairs: Sequence[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:
    """(context ids, continuation ids) per (context, continuation) text, as the harness's
    `_encode_pair` makes them, with `end_id` (<|endoftext|>) before the context. `tokenizer`
    is a `tokenizers.Tokenizer`."""
    contexts, wholes = [], []
    for context, continuation in pairs:
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            continuation = context[-n_spaces:] + continuation
            context = context[:-n_spaces]
        contexts.append(context)
        wholes.append(context + continuation)
    ctx_enc = tokenizer.encode_batch(contexts, add_special_tokens=False)
    whole_enc = tokenizer.encode_batch(wholes, add_special_tokens=False)
    out = []
    for (context, continuation), c, w in zip(pairs, ctx_enc, whole_enc):
        cont = list(w.ids[len(c.ids):])
        if not cont:
            raise UserError(f"the continuation {continuation!r:.80} of context ...{context[-80:]!r} has no tokens "
                            f"of its own under this tokenizer")
        out.append(([end_id] + list(c.ids), cont))
    return out


def item_requests(items: Sequence[Item], chat_tokenizer) -> list[list[tuple[list[int], list[int]]]]:
    """Each item's requests as token ids (one batch encoding for all of them)."""
    flat = [pair for item in items for pair in item.requests()]
    encoded = encode_pairs(chat_tokenizer.tokenizer, chat_tokenizer.end_id, flat)
    out, i = [], 0
    for item in items:
        out.append(encoded[i:i + len(item.choices)])
        i += len(item.choices)
    return out


def score_requests(model, requests: Sequence[Sequence[tuple[list[int], list[int]]]],
                   batch_tokens: int = 8192, pad_id: int = 0) -> list[dict[str, list]]:
    """{"logprobs", "greedy", "tokens"} per item (one value per choice)."""
    from evaluation.scoring import loglikelihood

    flat = [r for reqs in requests for r in reqs]
    scores = loglikelihood(model, flat, batch_tokens=batch_tokens, pad_id=pad_id)
    out, i = [], 0
    for reqs in requests:
        s = scores[i:i + len(reqs)]
        out.append({"logprobs": [x.logprob for x in s], "greedy": [x.greedy for x in s],
                    "tokens": [x.tokens for x in s]})
        i += len(reqs)
    return out


# ------------------------------------------------------------------------------ metrics


def item_row(item: Item, logprobs: Sequence[float], greedy: Sequence[bool], tokens: Sequence[int]) -> dict[str, Any]:
    """The per-item prediction: each metric's chosen index and whether it is right, with the
    log-likelihoods and lengths it was decided from. Metrics the item's kind lacks are None."""
    lls = np.asarray(logprobs, dtype=np.float64)
    chars = [len(c) for c in item.choices]
    nbytes = [len(c.encode("utf-8")) for c in item.choices]
    row: dict[str, Any] = {"index": item.index, "line": item.meta.get("line"), "kind": item.kind,
                           "gold": item.gold, "context": item.context, "choices": list(item.choices),
                           "target": item.target, "logprobs": [float(x) for x in lls],
                           "greedy": [bool(g) for g in greedy], "tokens": [int(t) for t in tokens],
                           "char_lengths": chars, "byte_lengths": nbytes,
                           "pred": None, "pred_norm": None, "pred_bytes": None,
                           "acc": None, "acc_norm": None, "acc_bytes": None}
    if item.kind == "lm":
        row["acc"] = float(bool(greedy[0]))
        return row
    row["pred"] = int(np.argmax(lls))
    row["acc"] = float(row["pred"] == item.gold)
    if item.kind == "mc":
        row["pred_norm"] = int(np.argmax(lls / np.asarray(chars, dtype=np.float64)))
        row["pred_bytes"] = int(np.argmax(lls / np.asarray(nbytes, dtype=np.float64)))
        row["acc_norm"] = float(row["pred_norm"] == item.gold)
        row["acc_bytes"] = float(row["pred_bytes"] == item.gold)
    return row


def mean_stderr(values: Sequence[float]) -> float | None:
    """Sample standard deviation / sqrt(n): the harness's `mean_stderr` (None below 2 values)."""
    n = len(values)
    if n < 2:
        return None
    mu = sum(values) / n
    return math.sqrt(sum((x - mu) ** 2 for x in values) / (n - 1)) / math.sqrt(n)


def aggregate(rows: Sequence[dict[str, Any]], metrics: Sequence[str]) -> dict[str, Any]:
    """{metric, metric_stderr ..., "n"} over the per-item rows."""
    out: dict[str, Any] = {}
    for m in metrics:
        if m == "perplexity":
            out[m] = math.exp(-sum(r["logprobs"][0] for r in rows) / len(rows)) if rows else None
            continue
        values = [r[m] for r in rows]
        out[m] = sum(values) / len(values) if values else None
        out[f"{m}_stderr"] = mean_stderr(values)
    out["n"] = len(rows)
    return out


# ------------------------------------------------------------------------------ scoring, anywhere


def _scored_columns() -> dict[str, "pa.DataType"]:
    import pyarrow as pa

    return {"logprobs": pa.list_(pa.float64()), "greedy": pa.list_(pa.bool_()), "tokens": pa.list_(pa.int64())}


class MCScorer:
    """Ray Data `map_batches` callable (the model loads once, in the constructor): a table of
    items (`index`, `context_ids`, `continuation_ids`: one list per choice) -> `index` and the
    scores per choice (`logprobs`, `greedy`, `tokens`)."""

    def __init__(self, model_path: str, device: str = "cpu", batch_tokens: int = 8192):
        self.model, self.tokenizer = load_model(model_path, device)
        self.batch_tokens = batch_tokens

    def __call__(self, table: "pa.Table") -> "pa.Table":
        import pyarrow as pa

        ctxs, conts = table.column("context_ids").to_pylist(), table.column("continuation_ids").to_pylist()
        requests = [list(zip(c, k)) for c, k in zip(ctxs, conts)]
        scored = score_requests(self.model, requests, self.batch_tokens, self.tokenizer.pad_id)
        columns = {"index": table.column("index")}
        for name, type_ in _scored_columns().items():
            columns[name] = pa.array([s[name] for s in scored], type=type_)
        return pa.table(columns)


def _request_tables(items: Sequence[Item], requests, budget: int) -> list["pa.Table"]:
    import pyarrow as pa

    lengths = [sum(len(c) + len(k) for c, k in reqs) for reqs in requests]
    tables = []
    for block in length_blocks(lengths, budget):
        tables.append(pa.table({
            "index": pa.array([items[i].index for i in block], pa.int64()),
            "context_ids": pa.array([[c for c, _ in requests[i]] for i in block], pa.list_(pa.list_(pa.int64()))),
            "continuation_ids": pa.array([[k for _, k in requests[i]] for i in block],
                                         pa.list_(pa.list_(pa.int64()))),
        }))
    return tables


def check_model(model_path: str):
    """The model source and its ChatTokenizer, or a UserError naming --model."""
    from training.chat import ChatTokenizer
    from training.sources import resolve_model

    source = resolve_model(model_path)
    if source.kind != "causal_lm":
        raise UserError(f"--model {model_path}: a {source.kind} model has no language-model head to score text with")
    if source.tokenizer_path is None:
        raise UserError(f"--model {model_path}: no tokenizer.json next to the weights")
    return source, ChatTokenizer.from_file(str(source.tokenizer_path))


def evaluate_mc(model_path: str, task_path: str, shots: int = 0, seed: int = 1234, limit: int | None = None,
                replicas: int = 0, batch_tokens: int = 8192, device: str = "cpu", num_cpus: float = 1.0,
                num_gpus: float | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Score a task file with a model: (results, one prediction row per item in file order).
    `replicas` 0 scores in this process, N > 0 on N Ray Data actors (each with `num_cpus`,
    `num_gpus`; None = 1 on cuda)."""
    if replicas < 0:
        raise UserError(f"--replicas {replicas}: must be >= 0")
    if batch_tokens <= 0:
        raise UserError(f"--batch-tokens {batch_tokens}: must be > 0")
    task = load_task(task_path, shots=shots, seed=seed, limit=limit)
    source, chat_tokenizer = check_model(model_path)
    started = time.perf_counter()
    requests = item_requests(task.items, chat_tokenizer)
    window = source.config.max_seq_len
    for item, reqs in zip(task.items, requests):
        for choice, (_, cont) in enumerate(reqs):
            if len(cont) > window:
                raise UserError(f"{task.path}: line {item.meta['line']}: choice {choice} is {len(cont)} tokens, longer than "
                                f"the model's window of {window}; it cannot be scored")
    tables = _request_tables(task.items, requests, BLOCK_BATCHES * batch_tokens)
    scored: dict[int, dict[str, list]] = {}
    for out in map_blocks(tables, MCScorer, (str(source.path), device, batch_tokens), replicas, num_cpus,
                          gpus_per_replica(device, num_gpus)):
        for row in out.to_pylist():
            scored[row["index"]] = row
    if len(scored) != len(task.items):
        raise RuntimeError(f"scoring returned {len(scored)} items for {len(task.items)}")
    rows = [item_row(item, **{k: scored[item.index][k] for k in ("logprobs", "greedy", "tokens")})
            for item in task.items]
    seconds = time.perf_counter() - started
    n_requests = sum(len(r) for r in requests)
    results = {
        "results": {task.name: aggregate(rows, task.metrics)},
        "task": task_record(task),
        "model": {"path": str(model_path), "checkpoint": str(source.path), "format": source.format,
                  "tokenizer_sha256": source.tokenizer_sha256()},
        "config": {"shots": shots, "seed": seed, "limit": limit, "replicas": replicas, "batch_tokens": batch_tokens,
                   "device": device},
        "timing": {"seconds": round(seconds, 3), "items": len(rows), "requests": n_requests,
                   "contexts": len({tuple(c) for reqs in requests for c, _ in reqs}),
                   "tokens": sum(len(c) + len(k) for reqs in requests for c, k in reqs),
                   "items_per_second": round(len(rows) / seconds, 2) if seconds > 0 else None},
    }
    return results, rows


def task_record(task: Task) -> dict[str, Any]:
    return {"name": task.name, "path": task.path, "format": task.format, "kind": task.kind, "rows": task.rows,
            "metrics": list(task.metrics), "sha256": task.sha256}


# ------------------------------------------------------------------------------ files


def prediction_table(rows: Sequence[dict[str, Any]]) -> "pa.Table":
    import pyarrow as pa

    schema = pa.schema([("index", pa.int64()), ("line", pa.int64()), ("kind", pa.string()), ("gold", pa.int64()),
                        ("context", pa.string()), ("choices", pa.list_(pa.string())), ("target", pa.string()),
                        *_scored_columns().items(), ("char_lengths", pa.list_(pa.int64())),
                        ("byte_lengths", pa.list_(pa.int64())), ("pred", pa.int64()), ("pred_norm", pa.int64()),
                        ("pred_bytes", pa.int64()), ("acc", pa.float64()), ("acc_norm", pa.float64()),
                        ("acc_bytes", pa.float64())])
    return pa.Table.from_pylist(list(rows), schema=schema)


def write_outputs(output_dir: str, results: dict[str, Any], table: "pa.Table",
                  predictions_file: str = PREDICTIONS_FILE) -> dict[str, Any]:
    """The per-item Parquet, then results.json (last, both written to a temporary name first)."""
    import io

    import pyarrow.parquet as pq

    from llmforge.common import fs

    filesystem, root = fs.resolve(output_dir)
    filesystem.create_dir(root, recursive=True)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    fs.write_bytes_atomic(filesystem, fs.join(root, predictions_file), buf.getvalue())
    results = {**results, "predictions": predictions_file}
    fs.write_json_atomic(filesystem, fs.join(root, RESULTS_FILE), results)
    export_scores(results)
    return results


def export_scores(results: dict[str, Any]) -> None:
    """Each task's metrics as gauges `llmforge_eval_<metric>{task=...}` (the Ray dashboard)."""
    from llmforge.common.metrics import set_scores

    for task, metrics in results.get("results", {}).items():
        set_scores("eval", {k: v for k, v in metrics.items() if k != "n" and not k.endswith("_stderr")},
                   {"task": task})


def run_mc(model_path: str, task_path: str, output_dir: str, **options: Any) -> dict[str, Any]:
    """`evaluate_mc` into `output_dir`: predictions.parquet and results.json. Returns the results."""
    results, rows = evaluate_mc(model_path, task_path, **options)
    return write_outputs(output_dir, results, prediction_table(rows))


def number(value: float | None) -> str:
    """4 decimals, or 4 significant digits for large values; "-" for none."""
    if value is None:
        return "-"
    return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.4g}"


def format_table(results: dict[str, Any]) -> str:
    """The results as a small fixed-width table: one row per task, each metric with its stderr."""
    lines = []
    for task, metrics in results["results"].items():
        names = [k for k in metrics if k != "n" and not k.endswith("_stderr")]
        header = f"{'task':<34} {'n':>6}" + "".join(f" {m:>16}" for m in names)
        if not lines:
            lines.append(header)
        cells = []
        for m in names:
            value, err = metrics[m], metrics.get(f"{m}_stderr")
            text = number(value) + (f" ± {number(err)}" if err is not None else "")
            cells.append(f" {text:>16}")
        lines.append(f"{task[:34]:<34} {metrics['n']:>6}" + "".join(cells))
    return "\n".join(lines)
