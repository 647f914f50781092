"""Domain mixture weights: how many copies of each document go into the token shards.

`MixtureOptions.weights` says how many times each document of a domain goes into the
training mix: 2.0 = twice, 0.3 = kept with probability 0.3, 2.5 = twice plus a third copy with
probability 0.5. The random part comes from a hash of the document id (not a global RNG), so
the same document gets the same count on every run, on any worker, in any order.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import xxhash
from pydantic import Field, field_validator

from llmforge.common.config import StrictModel


class MixtureOptions(StrictModel):
    """How often each domain's documents enter the training mix (see `sample_counts`)."""

    weights: dict[str, float] = Field(
        default_factory=dict, description="domain -> copies per document: 0 drops, 0.5 keeps half, 2.5 = 2 or 3"
    )
    default_weight: float = Field(default=1.0, ge=0.0, description="weight of domains not in weights")
    seed: int = Field(default=0, ge=0, lt=2**64, description="changes which documents a fractional weight picks")

    @field_validator("weights")
    @classmethod
    def _non_negative(cls, value: dict[str, float]) -> dict[str, float]:
        for domain, w in value.items():
            if not (w >= 0 and math.isfinite(w)):  # also rejects NaN
                raise ValueError(f"weights[{domain!r}] must be a finite number >= 0, got {w}")
        return value


def doc_uniforms(doc_ids: Sequence[str], seed: int = 0) -> np.ndarray:
    """A uniform number in [0, 1) per document id: top 53 bits of xxh64(utf-8 id, seed) / 2**53."""
    h = np.fromiter((xxhash.xxh64_intdigest(str(d).encode("utf-8"), seed) for d in doc_ids),
                    dtype=np.uint64, count=len(doc_ids))
    return (h >> np.uint64(11)).astype(np.float64) * 2.0**-53


def sample_counts(doc_ids: Sequence[str], domain: Sequence[str], options: MixtureOptions) -> np.ndarray:
    """Copies of each document in the training mix: floor(w) + (1 if u < w - floor(w)),
    w = the weight of its domain, u = `doc_uniforms(id, seed)`.

    Deterministic per id; and since u does not depend on w, raising a weight only ever adds
    documents (the mix at 0.3 is a subset of the mix at 0.5).
    """
    if len(doc_ids) != len(domain):
        raise ValueError(f"{len(doc_ids)} doc ids but {len(domain)} domains")
    lookup = options.weights
    w = np.fromiter((lookup.get(d, options.default_weight) for d in domain), dtype=np.float64, count=len(domain))
    whole = np.floor(w)
    extra = doc_uniforms(doc_ids, options.seed) < (w - whole)
    return whole.astype(np.int64) + extra


def mixture_report(domains: Sequence[str], tokens_per_doc, counts) -> dict:
    """Documents and tokens per domain before (each doc once) and after mixing (`counts`
    copies), with each domain's share of all tokens and its effective token multiplier."""
    tokens = np.asarray(tokens_per_doc, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.int64)
    if not len(domains) == len(tokens) == len(counts):
        raise ValueError(f"lengths differ: {len(domains)} domains, {len(tokens)} token counts, {len(counts)} counts")
    names, inv = np.unique(np.asarray(domains, dtype=object).astype(str), return_inverse=True)
    k = len(names)
    docs_before = np.bincount(inv, minlength=k)
    docs_after = np.bincount(inv, weights=counts, minlength=k)
    tok_before = np.bincount(inv, weights=tokens, minlength=k)
    tok_after = np.bincount(inv, weights=tokens * counts, minlength=k)
    total_before, total_after = tok_before.sum(), tok_after.sum()
    per_domain = {}
    for i, name in enumerate(names.tolist()):
        per_domain[name] = {
            "docs_before": int(docs_before[i]),
            "docs_after": int(docs_after[i]),
            "tokens_before": int(tok_before[i]),
            "tokens_after": int(tok_after[i]),
            "share_before": float(tok_before[i] / total_before) if total_before else 0.0,
            "share_after": float(tok_after[i] / total_after) if total_after else 0.0,
            "multiplier": float(tok_after[i] / tok_before[i]) if tok_before[i] else 0.0,
        }
    return {
        "domains": per_domain,
        "docs_before": int(docs_before.sum()),
        "docs_after": int(docs_after.sum()),
        "tokens_before": int(total_before),
        "tokens_after": int(total_after),
    }
