"""Runs of a sweep or an ablation as Ray tasks, one standalone pretraining run per task.

Each task (`num_cpus` = cpus_per_run, `num_gpus` = gpus_per_run) runs
`training.trainer.run_pretrain(cfg, standalone=True)` in its Ray worker process: one process,
no Ray Train, so as many runs go at once as the cluster has room for. Runs are small; a
worker process trains several in turn (the standalone loop keeps its one-process group).

Resume: a run is finished when its metrics.jsonl ends with the last step's row carrying
`val_loss`; finished runs are not started again (checked on the driver, and again in the task
for clusters whose workers see other disks). An interrupted run continues from its latest
checkpoint (`train.checkpoint_every`), as any pretraining run.

Held-out bits per byte (what makes shard directories with different tokenizers comparable):
the loop's validation loss is the mean over the targets of a fixed sample of held-out windows
(`training.loop._evaluate`: samples k = 0 .. eval_batches x micro_batch_size x workers - 1,
window k mod len(held-out)), so bits/byte = val_loss x tokens / bytes / ln 2 over exactly
those targets. Token bytes are exact for byte-level BPE (every vocabulary character is one
byte; special tokens such as <|endoftext|> are 0 bytes, as in decoded text); other tokenizers
count the UTF-8 bytes of each window's decoded text.
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from llmforge.common.errors import UserError
from training.config import PretrainConfig
from training.scaling.config import RunSpec, RunsConfig
from training.trainer import read_metrics, run_dir

LN2 = math.log(2.0)


def finished_row(cfg: PretrainConfig) -> dict[str, Any] | None:
    """The final metrics row of a finished run (last step, with val_loss), else None."""
    rows = read_metrics(run_dir(cfg) / "metrics.jsonl")
    if rows and rows[-1]["step"] == cfg.train.max_steps and "val_loss" in rows[-1]:
        return rows[-1]
    return None


def train_run(config: dict[str, Any]) -> dict[str, Any]:
    """One run, in a Ray worker (or anywhere): trains unless finished; returns the final row
    plus `seconds` (None when it had finished before)."""
    cfg = PretrainConfig.model_validate(config)
    row = finished_row(cfg)
    if row is not None:
        return {**row, "seconds": run_seconds(cfg)}
    start = time.perf_counter()
    from training.trainer import run_pretrain

    run_pretrain(cfg, standalone=True, log=lambda *_: None)
    row = finished_row(cfg)
    if row is None:
        raise RuntimeError(f"run {cfg.run.name} ended without a final validation row in its metrics")
    seconds = time.perf_counter() - start
    write_json_atomic(run_dir(cfg) / TIMING, {"seconds": seconds})
    return {**row, "seconds": seconds}


TIMING = "timing.json"


def run_seconds(cfg: PretrainConfig) -> float | None:
    """Wall seconds of the (last) invocation that finished the run, if recorded."""
    try:
        return float(json.loads((run_dir(cfg) / TIMING).read_text())["seconds"])
    except (OSError, ValueError, KeyError):
        return None


# ---- bits per byte -----------------------------------------------------------------------

def token_byte_lengths(tokenizer_path: str) -> np.ndarray | None:
    """Bytes of every token id of a byte-level BPE (special tokens: 0); None for other kinds."""
    from tokenizers import Tokenizer, decoders

    tok = Tokenizer.from_file(str(tokenizer_path))
    if not isinstance(tok.decoder, decoders.ByteLevel):
        return None
    vocab = tok.get_vocab(with_added_tokens=True)
    lengths = np.zeros(max(vocab.values()) + 1, dtype=np.int64)
    special = {i for i, t in tok.get_added_tokens_decoder().items() if t.special}
    for piece, i in vocab.items():
        if i not in special:
            lengths[i] = len(piece)
    return lengths


def evaluated_windows(n_val: int, micro_batch_size: int, eval_batches: int, world: int = 1) -> np.ndarray:
    """Held-out window indices the loop's validation averages over (see `training.loop._evaluate`)."""
    return np.arange(eval_batches * micro_batch_size * world) % n_val


def val_bytes_per_token(cfg: PretrainConfig) -> dict[str, float] | None:
    """{"tokens", "bytes", "bytes_per_token"} of the targets the run's validation loss covers;
    None without a tokenizer."""
    if not cfg.data.tokenizer:
        return None
    from training.data import split_train_val

    d = cfg.data
    _, val = split_train_val(d.shards, d.seq_len, d.val_fraction, d.val_shards)
    if val is None:
        return None
    windows = evaluated_windows(len(val), cfg.train.micro_batch_size, cfg.train.eval_batches,
                                cfg.scaling.num_workers)
    lengths = token_byte_lengths(cfg.data.tokenizer)
    counts = np.bincount(windows, minlength=len(val))
    tokens = n_bytes = 0
    decoder = None
    for w in np.nonzero(counts)[0]:
        targets = val.window(int(w))[1:]
        if lengths is not None:
            b = int(lengths[targets].sum())
        else:
            if decoder is None:
                from tokenizers import Tokenizer

                decoder = Tokenizer.from_file(str(cfg.data.tokenizer))
            b = len(decoder.decode(targets.tolist()).encode("utf-8"))
        tokens += int(counts[w]) * len(targets)
        n_bytes += int(counts[w]) * b
    if n_bytes == 0:
        return None
    return {"tokens": tokens, "bytes": n_bytes, "bytes_per_token": n_bytes / tokens}


# ---- launching -------------------------------------------------------------------------

def _row(spec: RunSpec, params: str, bpt: dict | None, final: dict | None, error: str | None,
         kind: str) -> dict[str, Any]:
    cfg = spec.config
    n = spec.params if params == "total" else spec.params_non_embedding
    val_loss = final.get("val_loss") if final else None
    row = {
        "name": spec.name, "kind": kind, "model": spec.model, "label": spec.label, "seed": spec.seed,
        "shards": spec.shards, "group_flops": spec.group_flops,
        "params": spec.params, "params_non_embedding": spec.params_non_embedding, "n": n, "n_is": params,
        "tokens": spec.tokens, "steps": spec.steps, "seq_len": cfg.data.seq_len,
        "global_batch": cfg.global_batch(1), "dim": cfg.model.dim, "n_layers": cfg.model.n_layers,
        "vocab_size": cfg.model.vocab_size,
        "flops": 6.0 * n * spec.tokens,
        "val_loss": val_loss, "train_loss": final.get("loss") if final else None,
        "val_bytes_per_token": bpt["bytes_per_token"] if bpt else None,
        "val_bpb": (val_loss / LN2 / bpt["bytes_per_token"]) if (bpt and val_loss is not None) else None,
        "seconds": final.get("seconds") if final else None,
        "status": "failed" if error else "done", "error": error,
        "run_dir": str(run_dir(cfg)),
    }
    from training.model import flops_per_token

    row["flops_model"] = flops_per_token(cfg.model, cfg.data.seq_len) * spec.tokens
    return row


def write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def write_parquet_atomic(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(pa.Table.from_pylist(list(rows)), tmp)
    os.replace(tmp, path)


def run_all(specs: Sequence[RunSpec], cfg: RunsConfig, kind: str, params: str = "total",
            log: Callable[[str], None] = print,
            on_progress: Callable[[list[dict[str, Any]]], None] | None = None) -> list[dict[str, Any]]:
    """Train every run (finished ones skipped) as Ray tasks; one result row per run, in the
    order of `specs`. `on_progress(rows so far)` after each run (to write partial results)."""
    import ray

    from llmforge.common.ray_session import init_ray

    bpt_cache: dict[tuple, dict | None] = {}

    def bytes_per_token(spec: RunSpec):
        c = spec.config
        key = (c.data.shards, c.data.val_shards, c.data.seq_len, c.data.val_fraction, c.data.tokenizer,
               c.train.micro_batch_size, c.train.eval_batches)
        if key not in bpt_cache:
            bpt_cache[key] = val_bytes_per_token(c)
        return bpt_cache[key]

    rows: dict[str, dict[str, Any]] = {}
    todo = []
    for spec in specs:
        final = finished_row(spec.config)
        if final is not None:
            rows[spec.name] = _row(spec, params, bytes_per_token(spec), {**final, "seconds": run_seconds(spec.config)},
                                   None, kind)
        else:
            todo.append(spec)
    log(f"{kind}: {len(specs)} runs, {len(specs) - len(todo)} finished before, {len(todo)} to train")
    if todo:
        init_ray()
        task = ray.remote(train_run).options(num_cpus=cfg.cpus_per_run, num_gpus=cfg.gpus_per_run)
        # Largest first: the longest runs start while the small ones fill the gaps.
        pending = {task.remote(s.config.model_dump(mode="json")): s
                   for s in sorted(todo, key=lambda s: -s.flops())}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            spec = pending.pop(ready[0])
            try:
                final, error = ray.get(ready[0]), None
            except Exception as err:  # one failed run does not stop the others
                final, error = None, _reason(err)
            rows[spec.name] = row = _row(spec, params, bytes_per_token(spec), final, error, kind)
            done = len(rows)
            what = (f"val_loss {row['val_loss']:.4f}" + (f", {row['val_bpb']:.4f} bits/byte" if row["val_bpb"] else "")
                    + (f", {row['seconds']:.0f}s" if row["seconds"] else "")) if not error else f"FAILED: {error}"
            log(f"{kind}: [{done}/{len(specs)}] {spec.name}: {what}")
            if on_progress:
                on_progress([rows[s.name] for s in specs if s.name in rows])
    return [rows[s.name] for s in specs]


def _reason(err: Exception) -> str:
    """The run's own error without Ray's wrapping (a UserError names what to change)."""
    cause = getattr(err, "cause", None) or err
    text = str(cause).strip()
    if isinstance(cause, UserError) or not text:
        return text or type(cause).__name__
    return text.splitlines()[-1] if "Traceback" in text else text
