"""Tokenized examples of an alignment run: made once by the driver, read by every worker.

    <run>/examples/train.parquet, val.parquet, _SUCCESS {fingerprint, counts, ...}
    <run>/tokenizer.json                 the policy's tokenizer (checkpoints carry a copy)

Preparing on the driver means every count (skipped pairs, truncated prompts) and every bad
row is reported before a worker starts, and workers read the same ids however many there are.
The marker's fingerprint covers the data file's bytes, the tokenizer and the options: a rerun
reuses the examples, and a run that already trained on other examples is refused rather than
resumed at a data position that no longer means the same thing.

Rows: SFT `id, ids, mask[, segments]` (mask 1 = trained token); preferences `id, chosen_ids,
chosen_mask, rejected_ids, rejected_mask, margin`, where the mask marks the final assistant reply.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from llmforge.common.errors import UserError
from llmforge.common.resume import ConflictError, Step, file_digest, fingerprint
from training.chat import ChatTokenizer

EXAMPLES_DIR = "examples"
SPLITS = ("train", "val")


@dataclass
class Prepared:
    directory: Path
    record: dict[str, Any]  # the marker: counts, sizes, max_len, tokenizer

    @property
    def n_train(self) -> int:
        return self.record["examples"]["train"]


def _truncate_sft(ids: list[int], mask: list[int], max_len: int) -> tuple[list[int], list[int]]:
    return ids[:max_len], mask[:max_len]


def _truncate_pair(c_ids, c_mask, r_ids, r_mask, max_len: int):
    """Cut the shared prompt from the left by the same number of tokens on both sides, so the
    replies stay whole; a reply that alone is too long keeps one prompt token and its head."""
    longest = max(len(c_ids), len(r_ids))
    prompt = min(c_mask.index(1) if 1 in c_mask else len(c_ids), r_mask.index(1) if 1 in r_mask else len(r_ids))
    cut = longest - max_len
    if cut < prompt:
        return c_ids[cut:], c_mask[cut:], r_ids[cut:], r_mask[cut:]
    start = max(prompt - 1, 0)
    return (c_ids[start:start + max_len], c_mask[start:start + max_len],
            r_ids[start:start + max_len], r_mask[start:start + max_len])


def tokenize_sft(records, chat: ChatTokenizer, max_len: int, policy: str, counts: dict[str, int]) -> list[dict]:
    rows = []
    for rec in records:
        enc = chat.encode(rec.messages)
        ids, mask = enc.ids, enc.mask
        if len(ids) > max_len:
            if policy == "drop":
                counts["dropped_too_long"] += 1
                continue
            ids, mask = _truncate_sft(ids, mask, max_len)
            counts["truncated"] += 1
        if sum(mask[1:]) == 0:  # nothing left to learn from (the reply was cut off entirely)
            counts["dropped_no_reply_tokens"] += 1
            continue
        rows.append({"id": rec.id, "ids": ids, "mask": mask})
    return rows


def tokenize_pairs(records, chat: ChatTokenizer, max_len: int, policy: str, counts: dict[str, int]) -> list[dict]:
    rows = []
    for rec in records:
        c = chat.encode(rec.chosen_messages(), train_on="last")
        r = chat.encode(rec.rejected_messages(), train_on="last")
        c_ids, c_mask, r_ids, r_mask = c.ids, c.mask, r.ids, r.mask
        if max(len(c_ids), len(r_ids)) > max_len:
            if policy == "drop":
                counts["dropped_too_long"] += 1
                continue
            c_ids, c_mask, r_ids, r_mask = _truncate_pair(c_ids, c_mask, r_ids, r_mask, max_len)
            counts["truncated"] += 1
        if c_ids == r_ids:  # identical after truncation: no preference left to learn
            counts["dropped_identical_after_truncation"] += 1
            continue
        rows.append({"id": rec.id, "chosen_ids": c_ids, "chosen_mask": c_mask, "rejected_ids": r_ids,
                     "rejected_mask": r_mask, "margin": float(rec.extra.get("margin", 0.0) or 0.0)})
    return rows


def pack(rows: list[dict], max_len: int, mask_boundaries: bool) -> list[dict]:
    """Greedy packing in order: examples fill a max_len window until the next one does not fit.
    `segments` numbers the examples within a window (all 0 without boundary masking, so packed
    examples see each other like pretraining's documents)."""
    packed, cur = [], None
    for row in rows:
        n = len(row["ids"])
        if cur is None or len(cur["ids"]) + n > max_len:
            cur = {"id": row["id"], "ids": [], "mask": [], "segments": []}
            packed.append(cur)
        seg = (cur["segments"][-1] + 1 if cur["segments"] else 0) if mask_boundaries else 0
        cur["ids"] += row["ids"]
        cur["mask"] += row["mask"]
        cur["segments"] += [seg] * n
    return packed


def prepare_examples(kind: str, cfg, chat: ChatTokenizer, tokenizer_path: Path, max_len: int,
                     out: Path, log=print) -> Prepared:
    """Read, tokenize, split and write the examples (`kind`: "sft" or "pairs"); reused when made
    with the same data, tokenizer and options. ConflictError when the run trained on others."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from alignment.formats import read_preferences, read_sft, split_holdout

    options = {"kind": kind, "data_sha": file_digest(cfg.data.path), "format": cfg.data.format,
               "val_fraction": cfg.data.val_fraction, "max_len": max_len, "truncation": cfg.data.truncation,
               "tokenizer_sha": file_digest(tokenizer_path),
               "packing": getattr(cfg, "packing", False), "mask_boundaries": getattr(cfg, "mask_boundaries", True)}
    directory = out / EXAMPLES_DIR
    step = Step(str(directory), fingerprint=fingerprint(options))
    record = step.read()
    if record is not None and not step.matches(record):
        if any(out.glob("checkpoint_*")):
            found = record.get("options", {})
            changed = sorted(k for k in options if found.get(k) != options[k])
            raise ConflictError(f"{out} was trained on other examples (changed: {', '.join(changed) or 'format'}); "
                                f"resuming would not continue the same run — use a new --output",
                                {"fingerprint": record.get("fingerprint")}, dict(step.expected))
        record = None
    if record is not None:
        log(f"examples: reusing {directory} ({record['examples']['train']} train, {record['examples']['val']} held out)")
        return Prepared(directory, record)

    reader = read_sft if kind == "sft" else read_preferences
    records, read_counts = reader(cfg.data.path, cfg.data.format)
    if not records:
        raise UserError(f"data.path {cfg.data.path}: no usable rows ({read_counts.as_dict()})")
    train, val = split_holdout(records, cfg.data.val_fraction, cfg.data.seed)
    counts = {"truncated": 0, "dropped_too_long": 0, "dropped_no_reply_tokens": 0,
              "dropped_identical_after_truncation": 0}
    tokenize = tokenize_sft if kind == "sft" else tokenize_pairs
    splits = {"train": tokenize(train, chat, max_len, cfg.data.truncation, counts),
              "val": tokenize(val, chat, max_len, cfg.data.truncation, counts)}
    if not splits["train"]:
        raise UserError(f"data.path {cfg.data.path}: every training example was dropped ({counts}); "
                        f"raise data.max_len or use data.truncation: truncate")
    if options["packing"]:
        splits = {k: pack(v, max_len, options["mask_boundaries"]) for k, v in splits.items()}

    step.reset()
    directory.mkdir(parents=True)
    for name, rows in splits.items():
        pq.write_table(pa.Table.from_pylist(rows, schema=_schema(kind, options["packing"])), directory / f"{name}.parquet")
    shutil.copyfile(tokenizer_path, out / "tokenizer.json")
    lengths = [len(r["ids"]) if kind == "sft" else max(len(r["chosen_ids"]), len(r["rejected_ids"]))
               for r in splits["train"]]
    record = step.finish({
        "options": options, "source": {**read_counts.as_dict()}, "tokenize": counts,
        "examples": {k: len(v) for k, v in splits.items()}, "max_len": max_len,
        "mean_tokens": float(np.mean(lengths)), "tokenizer": str((out / "tokenizer.json").resolve()),
    })
    skipped = {k: v for k, v in {**read_counts.skipped, **counts}.items() if v}
    log(f"examples: {read_counts.read} rows read from {cfg.data.path} ({read_counts.format}); "
        f"{len(splits['train'])} train, {len(splits['val'])} held out"
        + (f"; {json.dumps(skipped)}" if skipped else ""))
    return Prepared(directory, record)


def _schema(kind: str, packed: bool):
    import pyarrow as pa

    ints, flags = pa.list_(pa.int32()), pa.list_(pa.int8())
    if kind == "sft":
        fields = [("id", pa.string()), ("ids", ints), ("mask", flags)]
        return pa.schema(fields + ([("segments", ints)] if packed else []))
    return pa.schema([("id", pa.string()), ("chosen_ids", ints), ("chosen_mask", flags),
                      ("rejected_ids", ints), ("rejected_mask", flags), ("margin", pa.float64())])


# ---------------------------------------------------------------------------- reading (workers)

def _pad(rows: Sequence[np.ndarray], value: int, width: int | None = None) -> np.ndarray:
    width = width or max(len(r) for r in rows)
    out = np.full((len(rows), width), value, dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out


class TokenizedExamples:
    """A split's rows as numpy arrays; `batch` right-pads to the longest row of the batch."""

    def __init__(self, path: Path, pad_id: int, extra: dict[str, dict[str, float]] | None = None):
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        self.names = table.column("id").to_pylist()
        self.columns = {c: [np.asarray(v, dtype=np.int64) for v in table.column(c).to_pylist()]
                        for c in table.column_names if c not in ("id", "margin")}
        self.margin = np.asarray(table.column("margin").to_pylist(), dtype=np.float64) if "margin" in table.column_names else None
        self.pad_id = pad_id
        # Per-row values joined by id (the cached reference log-probs).
        self.extra = {}
        for column, by_id in (extra or {}).items():
            missing = [n for n in self.names if n not in by_id]
            if missing:
                raise UserError(f"{column}: no value for examples {missing[:5]} (the cache does not cover {path})")
            self.extra[column] = np.asarray([by_id[n] for n in self.names], dtype=np.float64)

    def __len__(self) -> int:
        return len(self.names)

    def ids(self, indices) -> list[str]:
        return [self.names[int(i)] for i in indices]

    def batch(self, indices) -> dict[str, np.ndarray]:
        idx = [int(i) for i in indices]
        out: dict[str, np.ndarray] = {}
        if "ids" in self.columns:  # SFT
            out["ids"] = _pad([self.columns["ids"][i] for i in idx], self.pad_id)
            out["mask"] = _pad([self.columns["mask"][i] for i in idx], 0)
            if "segments" in self.columns:
                out["segments"] = _pad([self.columns["segments"][i] for i in idx], -1)
            return out
        # Pairs: chosen and rejected padded to one width, so one forward scores both.
        width = max(max(len(self.columns["chosen_ids"][i]), len(self.columns["rejected_ids"][i])) for i in idx)
        for side in ("chosen", "rejected"):
            out[f"{side}_ids"] = _pad([self.columns[f"{side}_ids"][i] for i in idx], self.pad_id, width)
            out[f"{side}_mask"] = _pad([self.columns[f"{side}_mask"][i] for i in idx], 0, width)
            out[f"{side}_len"] = np.asarray([len(self.columns[f"{side}_ids"][i]) for i in idx], dtype=np.int64)
        if self.margin is not None:
            out["margin"] = self.margin[idx]
        for column, values in self.extra.items():
            out[column] = values[idx]
        return out

    def weight(self, indices) -> float:
        if "ids" in self.columns:  # trained tokens: the mask shifted onto the targets
            return float(sum(int(self.columns["mask"][int(i)][1:].sum()) for i in indices))
        return float(len(indices))


def read_prepared(run_dir: str | Path) -> Prepared:
    directory = Path(run_dir) / EXAMPLES_DIR
    record = Step(str(directory)).read()
    if record is None:
        raise FileNotFoundError(f"{directory}: no prepared examples (run `llmforge align ...` to make them)")
    return Prepared(directory, record)
