"""The `tokenize` stage: curated documents -> token shards, one shard set per input file.

    curated/ --groupby(source)--> per input file: sort by seq, mixture copies per document,
              tokenize (actor pool; tokenizer loaded once) --> shards/<key>/shard-*.bin|idx
    shards/manifest.json   every unit's shards (names relative to shards/), totals per domain

A unit's shards are a pure function of its documents, the tokenizer and the options, so the
output is deterministic and a rerun skips units whose manifest matches (the shard writer's
own resume). Only one small summary row per input file comes back to the driver. A trained
tokenizer (<output>/tokenizer.json) is a step too: it is trained once, then reused.
"""
from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa

from llmforge import shard_format
from dataproc.config import DataJobConfig
from dataproc.outputs.parquet import read_documents
from dataproc.reading.inputs import source_key
from dataproc.tokenization.options import TokenizeStageOptions
from llmforge.common import fs
from llmforge.common.ray_session import cluster_cpus
from llmforge.common.resume import digest

COLUMNS = ["id", "source", "seq", "text", "domain"]


class UnitTokenizer:
    """`map_groups` callable: one input file's curated documents -> its shard directory."""

    def __init__(self, options: TokenizeStageOptions, tokenizer_path: str, shards_uri: str):
        from dataproc.tokenization.encode import BatchTokenizer

        self.options = options.encoding()
        self.mixture = options.mixture
        self.tokenizer_path, self.shards_uri = tokenizer_path, shards_uri
        self.encoder = BatchTokenizer(tokenizer_path, self.options, num_threads=1)

    def __call__(self, group: pa.Table) -> pa.Table:
        from dataproc.tokenization.mixture import mixture_report, sample_counts
        from dataproc.tokenization.shard_writer import write_shards_from_batches

        group = group.sort_by("seq")
        source = group.column("source")[0].as_py()
        key = source_key(source)
        domains = (group.column("domain").to_pylist() if "domain" in group.column_names
                   else [shard_format.NO_DOMAIN] * group.num_rows)
        domains = [d or shard_format.NO_DOMAIN for d in domains]
        counts = sample_counts(group.column("id").to_pylist(), domains, self.mixture)
        encoded = self.encoder(group.append_column("domain_", pa.array(domains)))
        # Each document enters the mix `count` times (0 drops it, 2 repeats it), in seq order.
        mixed = encoded.take(pa.array(np.repeat(np.arange(group.num_rows), counts)))
        manifest = write_shards_from_batches(
            [mixed], fs.join(self.shards_uri, key), self.tokenizer_path, self.options,
            domain_column="domain_", input_fingerprint=_documents_fingerprint(group),
        )
        report = mixture_report(domains, encoded.column("n_tokens").to_numpy(), counts)
        return pa.table({
            "key": [key],
            "manifest": [json.dumps(manifest)],
            "mixture": [json.dumps(report)],
        })


def _documents_fingerprint(group: pa.Table) -> str:
    """Every id, then every text, each followed by a NUL byte."""
    return digest(((value or "").encode() + b"\0" for col in ("id", "text")
                   for value in group.column(col).to_pylist()), 16)


def ensure_tokenizer(cfg: DataJobConfig, curated_uri: str, log=print) -> str:
    """The configured tokenizer, or one trained on a sample of the curated documents."""
    opts = cfg.stages.tokenize
    if opts.tokenizer_path:
        return opts.tokenizer_path
    from dataproc.tokenization.tokenizer import tokenizer_step, train_tokenizer
    from dataproc.tokenization.sample import sample_texts

    step = tokenizer_step(cfg.output.path)
    path = fs.join(cfg.output.path, shard_format.TOKENIZER_FILE)
    if step.done() is not None:
        return path
    info = train_tokenizer(sample_texts(curated_uri, opts.train.sample_docs), opts.train, path)
    log(f"tokenizer: trained byte-level BPE, vocab {info['vocab_size']} on {info['documents']} documents -> {path}")
    return path


def run_tokenize(cfg: DataJobConfig, curated_uri: str, log=print) -> dict[str, Any]:
    import ray

    opts = cfg.stages.tokenize
    tokenizer_path = ensure_tokenizer(cfg, curated_uri, log)
    shards_uri = fs.join(cfg.output.path, "shards")
    ds = read_documents(curated_uri)
    ds = ds.select_columns([c for c in COLUMNS if c in ds.schema().names])
    actors = opts.actors or cluster_cpus()
    units = ds.groupby("source").map_groups(
        UnitTokenizer,
        fn_constructor_args=(opts, tokenizer_path, shards_uri),
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=actors),
    ).take_all()
    return write_top_manifest(sorted(units, key=lambda u: u["key"]), shards_uri, tokenizer_path)


def write_top_manifest(units: list[dict[str, Any]], shards_uri: str, tokenizer_path: str) -> dict[str, Any]:
    """One manifest over every unit, shard names relative to shards/ (what training reads)."""
    from dataproc.tokenization.tokenizer import load_tokenizer

    all_shards, mixture = [], {}
    first = None
    for unit in units:
        manifest = json.loads(unit["manifest"])
        first = first or manifest
        for entry in manifest["shards"]:
            all_shards.append({**entry, "name": f"{unit['key']}/{entry['name']}"})
        for domain, row in json.loads(unit["mixture"])["domains"].items():
            agg = mixture.setdefault(domain, {"docs_before": 0, "docs_after": 0, "tokens_before": 0, "tokens_after": 0})
            for k in agg:
                agg[k] += row[k]
    _, tok_sha = load_tokenizer(tokenizer_path)
    top = shard_format.build_manifest(
        all_shards,
        vocab_size=first["vocab_size"] if first else 0,
        tokenizer_sha256=tok_sha,
        config_sha256=first["config_sha256"] if first else None,
        special_tokens=first.get("special_tokens") if first else None,
        eos_token_id=first.get("eos_token_id") if first else None,
        bos_token_id=first.get("bos_token_id") if first else None,
        document_boundary_token_id=first.get("document_boundary_token_id") if first else None,
        extra={"units": [u["key"] for u in units], "mixture": mixture},
    )
    shard_format.write_manifest(shards_uri, top)
    return top
