"""Benchmark: dataproc.corpus.dedup MinHash vs datasketch and rensa, and full dedup on Ray at two sizes.

(a) Signatures per second on one core, ours (`minhash_signatures`, whole batch) vs
    datasketch.MinHash(num_perm=112) with `update_batch` (and one `update` per shingle) and
    rensa.RMinHash(num_perm=112) (Rust) with one `update` per document, on the same documents:
    the real Common Crawl texts in ../shared/data/cc_text/*.jsonl.gz (long articles, ~3.8k
    chars; generated text if absent). All sides include tokenisation and shingling (word
    5-grams); the peers get their shingles from `ground_truth.shingles`, as bytes/str. The
    implementations run interleaved, round after round, and each keeps its fastest round, so
    load from other processes on a shared host skews the ratios less. Peak memory is
    tracemalloc's peak over one run (numpy buffers included; rensa's Rust heap is not seen).
(b) Full dedup (exact + MinHash LSH + connected components + marking) of N generated documents
    on a local Ray with --cores CPUs, run the way the data job's corpus steps run it
    (`dataproc.corpus.runner`): the corpus is first written to Parquet in a temp directory
    (outside the measured section, in a process of its own), each size is measured in a fresh
    process (so every size starts from the same memory), exact dedup reads it and
    writes `exact/`, MinHash reads the unique rows of that and writes `near/`; nothing is
    collected on the driver. Reported: wall time, peak memory (largest sum of PSS over the
    process tree: driver, raylet, workers, object store, sampled every 0.2 s; split into the
    object store's shared pages and process heap; `base` is the tree before dedup starts),
    CC rounds, and, read back from the written Parquet afterwards, documents removed and
    planted duplicates found, plus the growth between the smallest and largest size (of the
    peak, and of the peak above `base`).
    --object-store-gib caps the embedded Ray's object store (it spills to disk beyond that).

    .venv/bin/python infra/bench/bench_minhash.py [--sizes 50000 200000] [--cores 2] [--repeats 5] [--skip-signatures]
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
CC_TEXT = REPO.parent / "shared" / "data" / "cc_text"


# ---------------------------------------------------------------------------------------------
# (a) signatures/s.


def load_texts() -> list[str]:
    files = sorted(CC_TEXT.glob("*.jsonl.gz"))
    if not files:
        print(f"[a] {CC_TEXT} absent: using generated documents")
        return generated_texts(700, seed=1)
    texts = []
    for f in files:
        with gzip.open(f, "rt") as fh:
            texts += [json.loads(line)["text"] for line in fh]
    return texts


def _ours(texts):
    from dataproc.corpus.dedup.minhash import MinHashOptions, minhash_signatures

    return minhash_signatures(texts, MinHashOptions())


def _datasketch(texts, batch: bool):
    from datasketch import MinHash

    from dataproc.synthetic.ground_truth import shingles

    out = []
    for t in texts:
        m = MinHash(num_perm=112)
        items = [" ".join(s).encode() for s in shingles(t)]
        if batch:
            m.update_batch(items)
        else:
            for it in items:
                m.update(it)
        out.append(m.hashvalues)
    return out


def _rensa(texts):
    from rensa import RMinHash

    from dataproc.synthetic.ground_truth import shingles

    out = []
    for t in texts:
        m = RMinHash(num_perm=112, seed=1)
        m.update([" ".join(s) for s in shingles(t)])
        out.append(m.digest())
    return out


def timed_interleaved(rows, texts, repeats: int) -> list[float]:
    """Fastest of `repeats` rounds per implementation, the implementations alternating."""
    best = [float("inf")] * len(rows)
    for r in range(repeats):
        for i, (_, fn, reps) in enumerate(rows):
            if r < reps:
                t0 = time.perf_counter()
                fn(texts)
                best[i] = min(best[i], time.perf_counter() - t0)
    return best


def peak_traced(fn, texts) -> int:
    tracemalloc.start()
    fn(texts)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def bench_signatures(repeats: int) -> None:
    texts = load_texts()
    words = sum(len(t.split()) for t in texts)
    print(f"[a] {len(texts)} documents, {words / len(texts):.0f} words/doc, {sum(map(len, texts)) / 1e6:.1f} M chars")
    _ours(texts[:5])  # build the \w table once (per process, ~0.2 s), like a warm worker
    rows = [
        ("dataproc.corpus.dedup (batch numpy)", _ours, repeats),
        ("rensa RMinHash (Rust)", _rensa, repeats),
        ("datasketch update_batch", lambda t: _datasketch(t, batch=True), max(1, repeats // 2)),
        ("datasketch update/shingle", lambda t: _datasketch(t, batch=False), 1),
    ]
    available = []
    for row in rows:
        try:
            row[1](texts[:2])
            available.append(row)
        except ImportError as e:
            print(f"[a] {row[0]}: not installed ({e.name}); pip install the bench extra")
    secs = timed_interleaved(available, texts, repeats)
    ours = len(texts) / secs[0]
    print(f"{'implementation':36s} {'docs/s/core':>12s} {'ours x':>8s} {'peak MiB':>9s}")
    ratios = {}
    for (name, fn, _), sec in zip(available, secs):
        rate = len(texts) / sec
        ratios[name] = ours / rate
        print(f"{name:36s} {rate:12.0f} {ours / rate:8.2f} {peak_traced(fn, texts) / 2**20:9.1f}")
    side = ", ".join(f"{ratios[n]:.2f}x {n}" for n in ("datasketch update_batch", "rensa RMinHash (Rust)") if n in ratios)
    print(f"[a] ours vs peers (single thread, best of {repeats} interleaved rounds): {side}")


# ---------------------------------------------------------------------------------------------
# (b) full dedup on Ray.

_SYL = np.array([a + b for a in ("ka lo mi nu pe ra si to vu ze ba do fi gu").split() for b in ("n r s l m a e o i u".split())])


def _vocab(rng: np.random.Generator, n: int = 20000) -> np.ndarray:
    parts = rng.integers(0, len(_SYL), size=(n, 3))
    return np.array(["".join(_SYL[p]) for p in parts])


def generated_texts(n: int, seed: int = 0, words: int = 150) -> list[str]:
    rng = np.random.default_rng(seed)
    vocab = _vocab(rng)
    idx = rng.integers(0, len(vocab), size=(n, words))
    return [" ".join(vocab[row]) for row in idx]


def generated_corpus(n: int, seed: int = 0):
    """n documents: 80% unique, 10% exact copies (case/punctuation changed), 10% near copies
    (2% of words substituted: word-5-gram Jaccard ~0.8 -> found with probability ~0.9 at 14x8)."""
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    n_base = int(n * 0.8)
    texts = generated_texts(n_base, seed)
    vocab = _vocab(rng)
    ids, kinds = [f"d{i:08d}" for i in range(n)], [("base", i) for i in range(n_base)]
    for i in range(n - n_base):
        src = int(rng.integers(0, n_base))
        if i % 2 == 0:
            texts.append(texts[src].upper() + " !")
            kinds.append(("exact", src))
        else:
            w = texts[src].split(" ")
            for k in rng.choice(len(w), size=max(1, len(w) // 50), replace=False):
                w[k] = vocab[rng.integers(0, len(vocab))]
            texts.append(" ".join(w))
            kinds.append(("near", src))
    days = rng.integers(1, 28, size=n)
    dates = [f"2024-01-{d:02d}T00:00:00Z" for d in days]
    return pa.table({"id": ids, "date": dates, "text": texts}), kinds


def planted_found(ids: list[str], kinds, dup: dict) -> dict[str, float]:
    """Share of planted copies that ended in the same cluster as their source (either one may
    be the kept document: dates are random). An exact duplicate points at its exact group's
    keeper, which MinHash may then remove in turn, so chains are followed to the end."""
    def root(i: str) -> str:
        while dup[i] is not None:
            i = dup[i]
        return i

    found: dict[str, list[bool]] = {"exact": [], "near": []}
    for i, (kind, src) in enumerate(kinds):
        if kind in found:
            found[kind].append(root(ids[i]) == root(ids[src]))
    return {k: float(np.mean(v)) for k, v in found.items()}


class PeakPss:
    """Largest sum of PSS over this process tree, sampled in a thread; `peak_shm` is the part
    of that peak in shared-memory mappings (the Ray object store's plasma pages, which PSS
    splits among the processes that map them), the rest is process heap."""

    def __init__(self, interval: float = 0.2):
        import psutil

        self.proc, self.interval, self.peak, self.peak_shm = psutil.Process(), interval, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> tuple[int, int]:
        total = shm = 0
        for p in [self.proc] + self.proc.children(recursive=True):
            try:
                for m in p.memory_maps():
                    total += m.pss
                    if "plasma" in m.path or m.path.startswith("/dev/shm"):
                        shm += m.pss
            except Exception:  # process ended between listing and reading
                pass
        return total, shm

    def _run(self):
        while not self._stop.is_set():
            total, shm = self._sample()
            if total > self.peak:
                self.peak, self.peak_shm = total, shm
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def _write_input(n: int, root: Path, block_docs: int) -> list:
    """The generated corpus as Parquet files of `block_docs` rows (one read task each), like
    `documents/`; returns the planted kinds. Run in a child process, so the driver measured
    afterwards never held the texts (freed Python/Arrow memory is not all returned to the OS)."""
    import pyarrow.parquet as pq

    table, kinds = generated_corpus(n)
    out = root / "input"
    out.mkdir()
    for k, i in enumerate(range(0, table.num_rows, block_docs)):
        pq.write_table(table.slice(i, block_docs), out / f"part-{k:05d}.parquet")
    return kinds


def _read_marks(path: Path) -> dict:
    """id -> duplicate_of of a written dedup step (driver side, after the measured run)."""
    import pyarrow.parquet as pq

    t = pq.read_table(path, columns=["id", "duplicate_of"])
    return dict(zip(t.column("id").to_pylist(), t.column("duplicate_of").to_pylist()))


def _dedup_steps(src: Path, root: Path, parts: int, stats: dict, docs: int) -> tuple[float, float]:
    """The runner's two dedup steps, Parquet to Parquet, with the shuffles' files under
    `root` and the number of documents given as the runner gives it (`docs`, an upper bound
    for the MinHash step); returns their wall times."""
    from dataproc.corpus.dedup.exact import exact_duplicates
    from dataproc.corpus.dedup.lsh import minhash_duplicates
    from dataproc.corpus.dedup.minhash import MinHashOptions
    from dataproc.corpus.runner import _unique
    from dataproc.outputs.parquet import read_documents

    t0 = time.perf_counter()
    work = str(root / "shuffle")
    exact_duplicates(read_documents(str(src)), partitions=parts, docs=docs, work_dir=work).write_parquet(str(root / "exact"))
    t1 = time.perf_counter()
    near = minhash_duplicates(_unique(read_documents(str(root / "exact"))), MinHashOptions(partitions=parts), stats=stats,
                              docs=docs, work_dir=work)
    near.write_parquet(str(root / "near"))
    return t1 - t0, time.perf_counter() - t1


def _measure(src: Path, root: Path, n: int, cores: int, shuffle: str, store: int | None) -> tuple:
    """Both dedup steps on a fresh local Ray in this (fresh) process: (exact s, MinHash s,
    process tree before, peak, peak in shared memory, CC rounds)."""
    import ray

    ray.init(address="local", num_cpus=cores, include_dashboard=False, log_to_driver=False,
             object_store_memory=store)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.shuffle_strategy = shuffle
    stats: dict = {}
    try:
        base = PeakPss()._sample()[0]
        with PeakPss() as mem:
            te, tm = _dedup_steps(src, root, 2 * cores, stats, n)
    finally:
        ray.shutdown()
    return te, tm, base, mem.peak, mem.peak_shm, stats["cc_rounds"]


def bench_ray(sizes: list[int], cores: int, shuffle: str, block_docs: int, object_store_gib: float | None = None) -> None:
    import multiprocessing
    import shutil
    import tempfile
    from concurrent.futures import ProcessPoolExecutor

    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    store = int(object_store_gib * 2**30) if object_store_gib else None
    spawn = multiprocessing.get_context("spawn")
    rows = []
    for n in sizes:
        root = Path(tempfile.mkdtemp(prefix="bench_dedup_"))
        try:
            # The input is written, and each size measured, in a process of its own: the driver
            # starts every size with the same memory (in one process it grew by ~0.1 GiB a size).
            with ProcessPoolExecutor(1, mp_context=spawn) as pool:
                kinds = pool.submit(_write_input, n, root, block_docs).result()
            src = root / "input"
            with ProcessPoolExecutor(1, mp_context=spawn) as pool:
                te, tm, base, peak, peak_shm, rounds = pool.submit(_measure, src, root, n, cores, shuffle, store).result()
            exact, near = _read_marks(root / "exact"), _read_marks(root / "near")
            removed = sum(d is not None for d in exact.values()) + sum(d is not None for d in near.values())
            dup = {**exact, **near}  # near holds exact's unique rows only, with their MinHash marks
            found = planted_found([f"d{i:08d}" for i in range(n)], kinds, dup)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        rows.append((n, te, tm, te + tm, base, peak, peak_shm, rounds, removed, found))
    cap = f", object store {object_store_gib:g} GiB" if object_store_gib else ""
    print(f"\n[b] full dedup on local Ray, Parquet in and out, {cores} CPUs, shuffle={shuffle}, {block_docs} docs/file{cap}")
    print(f"{'docs':>8s} {'exact s':>8s} {'minhash+cc s':>13s} {'total s':>8s} {'docs/s':>8s} {'base GiB':>9s} {'peak GiB':>9s} "
          f"{'obj store':>9s} {'heap':>6s} {'cc rounds':>9s} {'removed':>8s} {'exact found':>11s} {'near found':>10s}")
    for n, te, tm, tt, base, peak, shm, rounds, removed, found in rows:
        print(f"{n:8d} {te:8.1f} {tm:13.1f} {tt:8.1f} {n / tt:8.0f} {base / 2**30:9.2f} {peak / 2**30:9.2f} {shm / 2**30:9.2f} "
              f"{(peak - shm) / 2**30:6.2f} {rounds:9d} {removed:8d} {found['exact']:11.3f} {found['near']:10.3f}")
    if len(rows) > 1:
        (n0, t0, b0, p0), (n1, t1, b1, p1) = [(r[0], r[3], r[4], r[5]) for r in (rows[0], rows[-1])]
        print(f"growth {n1 / n0:.1f}x docs: time x{t1 / t0:.2f}, peak memory x{p1 / p0:.2f} "
              f"(+{(p1 - p0) / (n1 - n0) / 1024:.1f} KiB per extra document); above base "
              f"{(p0 - b0) / 2**30:.2f} -> {(p1 - b1) / 2**30:.2f} GiB (+{((p1 - b1) - (p0 - b0)) / (n1 - n0) / 1024:.2f} KiB "
              f"per extra document)")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="*", default=[50_000, 200_000])
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--shuffle", default="sort_shuffle_pull_based",
                    help="Ray Data shuffle strategy (hash shuffles start worker processes per shuffle on small hosts)")
    ap.add_argument("--block-docs", type=int, default=5000)
    ap.add_argument("--skip-signatures", action="store_true")
    ap.add_argument("--object-store-gib", type=float, default=None,
                    help="object store of the embedded Ray (default: Ray's, 30%% of RAM); beyond it objects spill to disk")
    args = ap.parse_args(argv)
    if not args.skip_signatures:
        bench_signatures(args.repeats)
    if args.sizes:
        bench_ray(args.sizes, args.cores, args.shuffle, args.block_docs, args.object_store_gib)


if __name__ == "__main__":
    main()
