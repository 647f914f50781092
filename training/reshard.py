"""Resuming on another number of workers: DeepSpeed's universal checkpoint.

ZeRO 1-3 save the optimizer state (and at stage 3 the weights) partitioned by data-parallel
rank, and DeepSpeed refuses to load them on another world size. `ds_to_universal` rewrites a
checkpoint as one file per parameter (fp32 weights and both Adam moments, unpartitioned); an
engine created with `checkpoint.load_universal` re-partitions those for its own world size.
Every rank converts its own local copy (a pure function of the checkpoint, no coordination,
and it works when ranks do not share a filesystem).
"""
from __future__ import annotations

import contextlib
import io
import os
from argparse import Namespace

from training.safe_load import weights_only_loading


def to_universal(ds_dir: str, tag: str, out_dir: str) -> str:
    """Convert `ds_dir/tag` into `out_dir/tag` (+ `latest_universal`); returns `out_dir`."""
    from deepspeed.checkpoint.ds_to_universal import main

    args = Namespace(input_folder=os.path.join(ds_dir, tag), output_folder=os.path.join(out_dir, tag),
                     num_extract_workers=1, num_merge_workers=1, keep_temp_folder=False, strict=True,
                     inject_missing_state=True)
    # The converter prints per-parameter progress; keep it out of the training log.
    with weights_only_loading(), contextlib.redirect_stdout(io.StringIO()):
        main(args)
    with open(os.path.join(out_dir, "latest_universal"), "w") as f:
        f.write(tag)
    return out_dir
