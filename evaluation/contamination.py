"""Test-set contamination, two ways.

Black box — Oren et al. 2023, "Proving test set contamination in black box language models"
(the sharded likelihood comparison test). A model that saw a benchmark during training has
seen its examples in one order, so it finds that canonical order more likely than a shuffle of
the same examples; a model that never saw it cannot tell the orders apart (the examples are
exchangeable). The examples, in file order, are cut into `shards` contiguous shards; for each
shard the log-likelihood of its examples concatenated in canonical order is compared with the
mean over `permutations` random orders of the same examples: d_s = canonical_s - mean(permuted_s).
A one-sided t-test of mean(d) > 0 over the shards gives the p-value (defaults 50 shards x 250
permutations, as the paper). Each concatenation is `<|endoftext|>` + example_1 + joiner +
example_2 + ...: every example and the joiner are tokenized once, so all orders hold exactly the
same tokens and only their order differs; every token after the first is scored
(`evaluation.scoring.rolling_token_logprobs`; orders that fit the model's window are scored in
batches with one forward, which is the same sum).

White box — we own the training data, so we can look: n-gram overlap (13 words, as GPT-3 and
lm-evaluation-harness; `llmforge.ngram_overlap`, the definitions the data pipeline's
`decontaminate` stage drops documents by) between the eval items and the training documents:
the documents of a token-shard directory, decoded with the tokenizer it was written with, or the
`text` column of Parquet documents (a data run's `curated/`). Per item: whether any of its
n-grams occurs in a document, the fraction that do, how many documents, an example.

`run_contamination` runs either or both and writes `results.json` and `overlap.parquet`
(`llmforge eval contamination`).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from llmforge.common.errors import UserError
from llmforge.ngram_overlap import EvalItem, NgramIndex, read_eval_items

DEFAULT_JOINER = "\n"
FLAGGED_IN_RESULTS = 50  # flagged items listed in results.json (all of them are in overlap.parquet)


# --------------------------------------------------------------------------- black box

@dataclass
class PermutationTest:
    """The outcome of the sharded likelihood comparison test."""

    p_value: float
    statistic: float  # t of the one-sided test (nan when every difference is equal)
    mean_difference: float  # mean over shards of canonical - mean permuted log-likelihood (nats)
    stderr: float
    examples: int
    shards: int
    permutations: int
    seed: int
    tokens: int  # tokens scored per order, summed over shards
    canonical: list[float] = field(default_factory=list)  # per shard
    permuted_mean: list[float] = field(default_factory=list)
    permuted_std: list[float] = field(default_factory=list)
    shard_sizes: list[int] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        out = asdict(self)
        out["per_shard"] = [{"examples": n, "canonical": c, "permuted_mean": m, "permuted_std": s,
                             "difference": c - m}
                            for n, c, m, s in zip(self.shard_sizes, self.canonical, self.permuted_mean,
                                                  self.permuted_std)]
        for k in ("canonical", "permuted_mean", "permuted_std", "shard_sizes"):
            del out[k]
        return out


def one_sided_t_test(differences: Sequence[float]) -> tuple[float, float]:
    """(t, p) of H1: mean(differences) > 0 (Student's t, n - 1 degrees of freedom). Equal
    differences have no spread: p is 0 when they are positive, 1 otherwise."""
    d = np.asarray(differences, dtype=np.float64)
    if d.size < 2:
        raise ValueError("a t-test needs at least two shards")
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    if sd == 0.0 or not math.isfinite(sd):
        return math.nan, 0.0 if mean > 0 else 1.0
    from scipy import stats

    t = mean / (sd / math.sqrt(d.size))
    return float(t), float(stats.t.sf(t, d.size - 1))


def shard_bounds(n_examples: int, shards: int) -> list[tuple[int, int]]:
    """Contiguous shards of as equal sizes as can be (the first ones one longer)."""
    base, extra = divmod(n_examples, shards)
    bounds, start = [], 0
    for s in range(shards):
        stop = start + base + (1 if s < extra else 0)
        bounds.append((start, stop))
        start = stop
    return bounds


def _concat(examples: Sequence[Sequence[int]], order: Sequence[int], joiner: Sequence[int], bos: int) -> list[int]:
    ids = [bos]
    for k, i in enumerate(order):
        if k:
            ids += joiner
        ids += examples[i]
    return ids


def sequence_logprobs(model, sequences: Sequence[Sequence[int]], batch_tokens: int = 16384) -> list[float]:
    """Sum of log p(token | everything before it) over tokens 1..n-1 of each sequence. A
    sequence longer than the model's window goes through `rolling_token_logprobs`; those that
    fit are scored in batches of equal length, one forward each (the same sum)."""
    import torch

    from evaluation.scoring import rolling_token_logprobs

    window = model.cfg.max_seq_len
    device = model.rope_cos.device
    out: list[float | None] = [None] * len(sequences)
    by_len: dict[int, list[int]] = {}
    for i, seq in enumerate(sequences):
        if len(seq) < 2:
            out[i] = 0.0
        elif len(seq) > window + 1:
            out[i] = float(rolling_token_logprobs(model, seq).double().sum())
        else:
            by_len.setdefault(len(seq), []).append(i)
    with torch.no_grad():
        for length, rows in by_len.items():
            per_batch = max(1, batch_tokens // length)
            for b in range(0, len(rows), per_batch):
                chunk = rows[b:b + per_batch]
                ids = torch.tensor([list(sequences[i]) for i in chunk], dtype=torch.long, device=device)
                logits = model(ids[:, :-1]).float()
                lp = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
                for i, s in zip(chunk, lp.double().sum(1).tolist()):
                    out[i] = s
    return out  # type: ignore[return-value]


def permutation_test(model, examples: Sequence[Sequence[int]], *, joiner: Sequence[int], bos_id: int,
                     shards: int = 50, permutations: int = 250, seed: int = 0,
                     batch_tokens: int = 16384) -> PermutationTest:
    """Oren et al.'s sharded test on token-id examples in canonical order. Asking for more
    shards than `len(examples) // 2` uses that many (a shard needs two examples to reorder)."""
    n = len(examples)
    shards = min(shards, n // 2)
    if shards < 2:
        raise UserError(f"the permutation test needs at least 4 examples (2 shards of 2), got {n}")
    if permutations < 1:
        raise UserError(f"permutations must be positive, got {permutations}")
    if any(len(e) == 0 for e in examples):
        raise UserError("an example tokenized to nothing")
    rng = np.random.default_rng(seed)
    canonical, permuted_mean, permuted_std, sizes = [], [], [], []
    tokens = 0
    for start, stop in shard_bounds(n, shards):
        m = stop - start
        orders = [list(range(start, stop))] + [list(start + rng.permutation(m)) for _ in range(permutations)]
        seqs = [_concat(examples, o, joiner, bos_id) for o in orders]
        scores = sequence_logprobs(model, seqs, batch_tokens)
        canonical.append(scores[0])
        permuted_mean.append(float(np.mean(scores[1:])))
        permuted_std.append(float(np.std(scores[1:])))
        sizes.append(m)
        tokens += len(seqs[0]) - 1
    diffs = np.asarray(canonical) - np.asarray(permuted_mean)
    t, p = one_sided_t_test(diffs)
    return PermutationTest(p_value=p, statistic=t, mean_difference=float(diffs.mean()),
                           stderr=float(diffs.std(ddof=1) / math.sqrt(len(diffs))), examples=n, shards=shards,
                           permutations=permutations, seed=seed, tokens=tokens, canonical=canonical,
                           permuted_mean=permuted_mean, permuted_std=permuted_std, shard_sizes=sizes)


def tokenize_examples(tokenizer, texts: Sequence[str], joiner: str = DEFAULT_JOINER) -> tuple[list[list[int]], list[int]]:
    """(ids of each example, ids of the joiner) with a `tokenizers.Tokenizer`."""
    ids = [list(e.ids) for e in tokenizer.encode_batch(list(texts), add_special_tokens=False)]
    return ids, list(tokenizer.encode(joiner, add_special_tokens=False).ids)


# --------------------------------------------------------------------------- white box

@dataclass
class ItemOverlap:
    matched: set[str] = field(default_factory=set)
    documents: int = 0
    example_document: str | None = None


@dataclass
class OverlapReport:
    index: NgramIndex
    per_item: list[ItemOverlap]
    documents_scanned: int
    documents_matching: int
    source: dict[str, str]

    def rows(self) -> list[dict[str, Any]]:
        """One row per eval item (overlap.parquet)."""
        out = []
        for i, (item, hit) in enumerate(zip(self.index.items, self.per_item)):
            total = len(self.index.grams[i])
            out.append({
                "item": i, "file": item.source, "row": item.row, "text": item.text,
                "ngrams": total, "matched_ngrams": len(hit.matched),
                "overlap": len(hit.matched) / total if total else 0.0,
                "contaminated": bool(hit.matched), "checkable": total > 0,
                "documents": hit.documents,
                "example_ngram": min(hit.matched) if hit.matched else None,
                "example_document": hit.example_document,
            })
        return out

    def summary(self) -> dict[str, Any]:
        rows = self.rows()
        checkable = [r for r in rows if r["checkable"]]
        flagged = [r for r in rows if r["contaminated"]]
        return {
            "ngram": self.index.n, "normalization": self.index.normalization, "min_words": self.index.min_words,
            "source": self.source,
            "documents_scanned": self.documents_scanned, "documents_matching": self.documents_matching,
            "items": len(rows), "items_checkable": len(checkable), "items_contaminated": len(flagged),
            "contaminated_fraction": len(flagged) / len(checkable) if checkable else 0.0,
            "mean_overlap": float(np.mean([r["overlap"] for r in checkable])) if checkable else 0.0,
            "flagged": [{k: r[k] for k in ("item", "row", "overlap", "matched_ngrams", "ngrams", "documents",
                                           "example_ngram", "example_document")}
                        for r in flagged[:FLAGGED_IN_RESULTS]],
        }


def ngram_overlap(index: NgramIndex, documents: Iterable[tuple[str, str]], source: dict[str, str] | None = None
                  ) -> OverlapReport:
    """Scan (reference, text) documents for the eval items' n-grams."""
    per_item = [ItemOverlap() for _ in range(len(index))]
    scanned = matching = 0
    for ref, text in documents:
        scanned += 1
        found = index.find(text) if text else {}
        if found:
            matching += 1
        for i, grams in found.items():
            hit = per_item[i]
            hit.matched |= grams
            hit.documents += 1
            if hit.example_document is None:
                hit.example_document = ref
    return OverlapReport(index, per_item, scanned, matching, dict(source or {}))


def shard_documents(shard_dir: str, tokenizer_path: str | None = None, batch: int = 1024
                    ) -> Iterator[tuple[str, str]]:
    """(`<shard>:<document>`, text) of every document of a token-shard directory, decoded with
    its tokenizer: `tokenizer_path`, else tokenizer.json in the directory or beside it (a data
    run's output). The tokenizer must be the one the shards were written with (sha256)."""
    from tokenizers import Tokenizer

    from llmforge.shard_format import TOKENIZER_FILE, check_tokenizer_matches, open_shards

    if not Path(shard_dir).exists() and "://" not in shard_dir:
        raise UserError(f"--shards {shard_dir}: no such directory")
    try:
        reader = open_shards(shard_dir)
    except FileNotFoundError as err:
        raise UserError(f"--shards {shard_dir}: {err}") from None
    if tokenizer_path is None:
        here, parent = Path(shard_dir) / TOKENIZER_FILE, Path(shard_dir).parent / TOKENIZER_FILE
        found = [p for p in (here, parent) if p.exists()]
        if not found:
            raise UserError(f"--shards {shard_dir}: no {TOKENIZER_FILE} in it or beside it; pass --tokenizer")
        tokenizer_path = str(found[0])
    check_tokenizer_matches(reader.manifest, tokenizer_path)
    tokenizer = Tokenizer.from_file(tokenizer_path)
    for shard in reader.shards:
        for start in range(0, len(shard), batch):
            stop = min(start + batch, len(shard))
            texts = tokenizer.decode_batch([shard.document(i).tolist() for i in range(start, stop)],
                                           skip_special_tokens=True)
            for i, text in zip(range(start, stop), texts):
                yield f"{shard.name}:{i}", text


def parquet_documents(directory: str, text_column: str = "text") -> Iterator[tuple[str, str]]:
    """(id or `<file>:<row>`, text) of the Parquet documents under `directory` (a file or a
    directory; names starting with `_` or `.` skipped at any depth, as the data pipeline's
    readers do)."""
    import pyarrow.parquet as pq

    from llmforge.common import fs

    filesystem, root = fs.resolve(directory)
    if not fs.exists(filesystem, root):
        raise UserError(f"--documents {directory}: no such file or directory")
    if fs.is_dir(filesystem, root):
        files = sorted(p for p in fs.list_files(filesystem, root, recursive=True)
                       if p.endswith(".parquet")
                       and not any(part.startswith(("_", ".")) for part in p[len(root):].split("/") if part))
    else:
        files = [root]
    if not files:
        raise UserError(f"--documents {directory}: no .parquet files")
    for path in files:
        try:
            pf = pq.ParquetFile(filesystem.open_input_file(path))
        except Exception as err:  # noqa: BLE001 - pyarrow raises several kinds for unreadable input
            raise UserError(f"--documents {path}: not a Parquet file ({err})") from None
        names = pf.schema_arrow.names
        if text_column not in names:
            raise UserError(f"--documents {path}: no {text_column!r} column (columns: {', '.join(names)})")
        columns = [text_column] + (["id"] if "id" in names else [])
        row = 0
        for batch in pf.iter_batches(columns=columns):
            texts = batch.column(text_column).to_pylist()
            ids = batch.column("id").to_pylist() if "id" in columns else [None] * len(texts)
            for k, (text, doc_id) in enumerate(zip(texts, ids)):
                yield (str(doc_id) if doc_id is not None else f"{path.rsplit('/', 1)[-1]}:{row + k}"), text or ""
            row += len(texts)


# --------------------------------------------------------------------------- the command

@dataclass
class ContaminationOptions:
    shards: int = 50  # Oren et al.'s defaults
    permutations: int = 250
    seed: int = 0
    joiner: str = DEFAULT_JOINER
    alpha: float = 0.05
    ngram: int = 13  # = llmforge.ngram_overlap.DEFAULT_N (GPT-3, the harness)
    normalization: str = "words"
    min_words: int = 8  # = DEFAULT_MIN_WORDS
    text_column: str = "text"
    device: str = "auto"


def _device(name: str) -> str:
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def black_box(model_path: str, items: Sequence[EvalItem], options: ContaminationOptions) -> dict[str, Any]:
    from training.sources import describe, load_for_inference, resolve_model

    start = time.perf_counter()
    model, chat = load_for_inference(model_path, _device(options.device))
    examples, joiner = tokenize_examples(chat.tokenizer, [it.text for it in items], options.joiner)
    test = permutation_test(model, examples, joiner=joiner, bos_id=chat.end_id, shards=options.shards,
                            permutations=options.permutations, seed=options.seed)
    return {"model": describe(resolve_model(model_path)), **test.summary(), "joiner": options.joiner,
            "alpha": options.alpha, "contaminated": test.p_value < options.alpha,
            "seconds": round(time.perf_counter() - start, 3)}


def run_contamination(task: str, output: str, *, model: str | None = None, shards_dir: str | None = None,
                      documents_dir: str | None = None, tokenizer: str | None = None,
                      options: ContaminationOptions | None = None, log=print) -> dict[str, Any]:
    """Read the eval items of `task`; with `model`, the permutation test; with `shards_dir` or
    `documents_dir`, n-gram overlap. Writes `output`/results.json (and overlap.parquet)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from llmforge.common import fs

    options = options or ContaminationOptions()
    if model is None and shards_dir is None and documents_dir is None:
        raise UserError("nothing to do: give --model (black-box test), --shards or --documents (n-gram overlap)")
    if shards_dir is not None and documents_dir is not None:
        raise UserError("give --shards or --documents, not both")
    start = time.perf_counter()
    items = read_eval_items(task)
    index = NgramIndex(items, options.ngram, options.normalization, options.min_words)  # type: ignore[arg-type]
    results: dict[str, Any] = {"task": task, "items": len(items), "permutation_test": None, "ngram_overlap": None}
    report = None
    if shards_dir is not None or documents_dir is not None:
        docs = (shard_documents(shards_dir, tokenizer) if shards_dir is not None
                else parquet_documents(documents_dir, options.text_column))  # type: ignore[arg-type]
        source = {"shards": shards_dir} if shards_dir is not None else {"documents": documents_dir}
        t0 = time.perf_counter()
        report = ngram_overlap(index, docs, source)
        results["ngram_overlap"] = {**report.summary(), "seconds": round(time.perf_counter() - t0, 3)}
    if model is not None:
        results["permutation_test"] = black_box(model, items, options)
    results["seconds"] = round(time.perf_counter() - start, 3)

    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    if report is not None:
        tmp = out / ".overlap.parquet.tmp"
        pq.write_table(pa.Table.from_pylist(report.rows()), tmp)
        tmp.replace(out / "overlap.parquet")
    filesystem, path = fs.resolve(str(out / "results.json"))
    fs.write_json_atomic(filesystem, path, results)
    log(format_results(results))
    return results


def format_results(results: dict[str, Any]) -> str:
    lines = [f"contamination of {results['task']} ({results['items']} items)"]
    pt = results.get("permutation_test")
    if pt:
        verdict = "CONTAMINATED" if pt["contaminated"] else "not flagged"
        lines.append(f"  permutation test (Oren et al. 2023): p = {pt['p_value']:.3g}, t = {pt['statistic']:.3g}, "
                     f"mean canonical - permuted = {pt['mean_difference']:.3g} nats, {pt['shards']} shards x "
                     f"{pt['permutations']} permutations -> {verdict} at alpha {pt['alpha']}")
    ov = results.get("ngram_overlap")
    if ov:
        lines.append(f"  {ov['ngram']}-gram overlap: {ov['items_contaminated']} of {ov['items_checkable']} checkable "
                     f"items ({100 * ov['contaminated_fraction']:.1f}%), mean overlap {ov['mean_overlap']:.3f}; "
                     f"{ov['documents_matching']} of {ov['documents_scanned']} documents match")
        for f in ov["flagged"][:5]:
            lines.append(f"    row {f['row']}: {f['matched_ngrams']}/{f['ngrams']} n-grams, e.g. "
                         f"\"{f['example_ngram']}\" in {f['example_document']}")
    return "\n".join(lines)
