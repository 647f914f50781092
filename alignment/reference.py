"""DPO's reference log-probs, computed once as a Ray Data batch-inference pass and cached.

    <run>/reference_logps/*.parquet    id, split, ref_chosen, ref_rejected
    <run>/reference_logps/_SUCCESS     {reference (weights hash), examples (fingerprint), ...}

Model actors (`concurrency` of them) score batches of pairs sorted by length, so a batch
pads little. While the policy trains the reference is never in memory: the loop joins these
columns onto the examples by id. A rerun with the same reference and examples reuses the
cache; a cache made by another reference is refused, naming both hashes.
"""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any

import numpy as np

from llmforge.common.resume import ConflictError, Step

CACHE_DIR = "reference_logps"


class ReferenceScorer:
    """Ray Data actor: the reference model, loaded once; a batch of pairs -> their log-probs."""

    def __init__(self, model_path: str, pad_id: int, threads: int | None = None):
        import torch

        from training.sources import resolve_model

        if threads:
            torch.set_num_threads(threads)
        with contextlib.redirect_stdout(sys.stderr):
            self.model = resolve_model(model_path).build("causal_lm")
        self.pad_id = pad_id

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import torch

        from alignment.dpo import pair_logprobs
        from alignment.examples import _pad

        out = {}
        with torch.no_grad():
            width = max(len(x) for side in ("chosen_ids", "rejected_ids") for x in batch[side])
            tensors = {}
            for side in ("chosen", "rejected"):
                tensors[f"{side}_ids"] = torch.from_numpy(_pad(list(batch[f"{side}_ids"]), self.pad_id, width))
                tensors[f"{side}_mask"] = torch.from_numpy(_pad(list(batch[f"{side}_mask"]), 0, width))
            chosen, rejected, _, _ = pair_logprobs(self.model, tensors)
        out["id"] = batch["id"]
        out["split"] = batch["split"]
        out["ref_chosen"] = chosen.double().numpy()
        out["ref_rejected"] = rejected.double().numpy()
        return out


def compute_reference_logps(run_dir: Path, reference_path: str, reference_hash: str, examples_fingerprint: str,
                            pad_id: int, batch_size: int, concurrency: int, num_cpus: float = 1,
                            log=print) -> dict[str, Any]:
    """Fill the cache unless it holds this reference's values for these examples."""
    import ray

    from llmforge.common.ray_session import init_ray, quiet_ray_data

    cache = run_dir / CACHE_DIR
    step = Step(str(cache), fields={"reference": reference_hash, "examples": examples_fingerprint})
    record = step.read()
    if record is not None and record.get("reference") != reference_hash:
        raise ConflictError(f"{cache}: cached reference log-probs were computed by reference {record.get('reference')}, "
                            f"this run's reference is {reference_hash}; use a new --output or delete {cache}",
                            {"reference": record.get("reference")}, {"reference": reference_hash})
    if record is not None and step.matches(record):
        log(f"reference: reusing cached log-probs in {cache} (reference {reference_hash})")
        return record
    step.reset()
    init_ray()
    quiet_ray_data()
    import pyarrow as pa
    import pyarrow.parquet as pq

    from alignment.examples import EXAMPLES_DIR

    tables = []
    for split in ("train", "val"):
        t = pq.read_table(run_dir / EXAMPLES_DIR / f"{split}.parquet",
                          columns=["id", "chosen_ids", "chosen_mask", "rejected_ids", "rejected_mask"])
        tables.append(t.append_column("split", pa.array([split] * t.num_rows, pa.string())))  # typed: a split may be empty
    table = pa.concat_tables(tables)
    lengths = [max(len(c), len(r)) for c, r in zip(table.column("chosen_ids").to_pylist(),
                                                  table.column("rejected_ids").to_pylist())]
    table = table.append_column("n_tokens", pa.array(lengths, pa.int32())).sort_by("n_tokens")
    threads = max(1, int(num_cpus))
    ds = ray.data.from_arrow(table).map_batches(
        ReferenceScorer, fn_constructor_args=(reference_path, pad_id, threads), batch_size=batch_size,
        concurrency=concurrency, num_cpus=num_cpus, batch_format="numpy")
    staging = cache.parent / f".{CACHE_DIR}.tmp"
    if staging.exists():
        import shutil

        shutil.rmtree(staging)
    ds.write_parquet(str(staging))
    staging.rename(cache)
    record = step.finish({"pairs": table.num_rows, "reference_path": reference_path})
    log(f"reference: log-probs of {table.num_rows} pairs under {reference_path} (reference {reference_hash}) -> {cache}")
    return record


def read_reference_logps(run_dir: str | Path) -> dict[str, dict[str, dict[str, float]]]:
    """{split: {"ref_chosen": {id: value}, "ref_rejected": {id: value}}} from the cache."""
    import pyarrow.parquet as pq

    cache = Path(run_dir) / CACHE_DIR
    if Step(str(cache)).read() is None:
        raise FileNotFoundError(f"{cache}: no finished reference log-probs")
    table = pq.read_table(cache, columns=["id", "split", "ref_chosen", "ref_rejected"])
    out: dict[str, dict[str, dict[str, float]]] = {}
    ids, splits = table.column("id").to_pylist(), table.column("split").to_pylist()
    for column in ("ref_chosen", "ref_rejected"):
        values = np.asarray(table.column(column).to_pylist(), dtype=np.float64)
        for rid, split, v in zip(ids, splits, values):
            out.setdefault(split, {}).setdefault(column, {})[rid] = float(v)
    return out
