"""Benchmark: `BatchTokenizer` over pyarrow batches vs raw `Tokenizer.encode_batch`, same texts.

Both run in this process on `--threads` rayon threads (RAYON_NUM_THREADS, set before any
tokenizers call). Each method runs `--rounds` times, interleaved, and the best round counts, so
other load on the machine hurts as little as possible. "per core" is tokens per CPU-second
of this process (all threads), which is what a cluster's cores are billed in.

  raw encode_batch         tokenizer.encode_batch(texts)                 (ids not read)
  raw encode_batch_fast    [e.ids for e in tokenizer.encode_batch_fast(texts)]
  BatchTokenizer           pa.Table -> pa.Table with tokens/n_tokens/...  (what the pipeline runs)

With --ray, the same batches also go through Ray Data map_batches on a pool of one
BatchTokenizer actor (local Ray, --threads + 1 CPUs); that figure is end to end (start-up,
moving blocks through the object store) over the data repeated --ray-repeat times.

Texts are ../shared/data/pretrain_text/* (documents: JSONL rows, blank-line separated
paragraphs of the .txt/.raw files) when present, else generated English-like text.

    .venv/bin/python infra/bench/bench_tokenize.py [--threads 1] [--batch-size 128] [--ray]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data" / "pretrain_text"


def load_texts() -> tuple[list[str], str]:
    texts: list[str] = []
    for path in sorted(SHARED.glob("*")) if SHARED.is_dir() else []:
        if path.suffix == ".jsonl":
            texts += [json.loads(line)["text"] for line in path.open(encoding="utf-8") if line.strip()]
        elif path.suffix in (".txt", ".raw"):
            raw = path.read_text(encoding="utf-8")
            paragraphs = [p for p in raw.replace("\r\n", "\n").split("\n\n") if p.strip()]
            # Group short paragraphs (Shakespeare speeches) into documents of ~2-4 KB.
            doc: list[str] = []
            for p in paragraphs:
                doc.append(p)
                if sum(map(len, doc)) > 2000:
                    texts.append("\n\n".join(doc))
                    doc = []
            if doc:
                texts.append("\n\n".join(doc))
    if texts:
        return texts, f"{SHARED} ({len(texts)} documents)"
    rng = random.Random(0)
    words = [w for w in "the of and to in is was for on that with as by at from his an were are which this be "
             "has had it or have not first their its new after who they been but one time two all year "
             "other city world state government during school would people".split()]
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(50, 800))) for _ in range(3000)]
    return texts, "generated text (../shared/data/pretrain_text absent)"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1, help="rayon threads for encode_batch")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--vocab-size", type=int, default=32000)
    ap.add_argument("--tokenizer", help="tokenizer.json to use (default: train one on the texts)")
    ap.add_argument("--ray", action="store_true", help="also time Ray Data map_batches, 1 actor")
    ap.add_argument("--ray-repeat", type=int, default=3)
    args = ap.parse_args()
    # Must precede the first tokenizers call (training included): rayon reads it once.
    os.environ["RAYON_NUM_THREADS"] = str(args.threads)
    sys.path.insert(0, str(REPO))

    import pyarrow as pa

    from dataproc.tokenization.encode import BatchTokenizer
    from dataproc.tokenization.tokenizer import TokenizerTrainOptions, load_tokenizer, train_tokenizer

    texts, source = load_texts()
    print(f"texts: {source}, {sum(map(len, texts)) / 1e6:.1f} M characters")
    tmp = tempfile.mkdtemp(prefix="bench_tokenize-")
    tok_path = args.tokenizer
    if tok_path is None:
        tok_path = os.path.join(tmp, "tokenizer.json")
        t0 = time.perf_counter()
        info = train_tokenizer(texts, TokenizerTrainOptions(vocab_size=args.vocab_size), tok_path)
        print(f"trained tokenizer: vocab {info['vocab_size']} in {time.perf_counter() - t0:.1f} s")
    tokenizer, _ = load_tokenizer(tok_path)  # same settings BatchTokenizer uses
    bt = BatchTokenizer(tok_path)

    chunks = [texts[i:i + args.batch_size] for i in range(0, len(texts), args.batch_size)]
    tables = [pa.table({"text": c, "domain": ["bench"] * len(c)}) for c in chunks]
    n_tokens = sum(sum(len(e.ids) for e in tokenizer.encode_batch(c)) for c in chunks)
    n_out = sum(pa.compute.sum(bt(t).column("n_tokens")).as_py() for t in tables)  # warm-up too

    methods = {
        "raw encode_batch": lambda: [tokenizer.encode_batch(c) for c in chunks],
        "raw encode_batch_fast+ids": lambda: [[e.ids for e in tokenizer.encode_batch_fast(c)] for c in chunks],
        "BatchTokenizer": lambda: [bt(t) for t in tables],
    }
    best = {name: (float("inf"), float("inf")) for name in methods}
    for _ in range(args.rounds):
        for name, fn in methods.items():
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall, cpu = time.perf_counter() - w0, time.process_time() - c0
            best[name] = (min(best[name][0], wall), min(best[name][1], cpu))

    print(f"{n_tokens:,} tokens ({n_out:,} with EOS) in {len(tables)} batches of {args.batch_size}, "
          f"{args.threads} thread(s), best of {args.rounds}")
    print(f"{'method':<28} {'wall s':>8} {'tokens/s':>12} {'CPU s':>8} {'tokens/CPU-s':>13}")
    for name, (wall, cpu) in best.items():
        print(f"{name:<28} {wall:>8.2f} {n_tokens / wall:>12,.0f} {cpu:>8.2f} {n_tokens / cpu:>13,.0f}")
    wall, cpu = best["BatchTokenizer"]
    for base in ("raw encode_batch", "raw encode_batch_fast+ids"):
        base_wall, base_cpu = best[base]
        print(f"BatchTokenizer / {base}: {base_wall / wall:.2f}x wall, {base_cpu / cpu:.2f}x per core "
              f"(target >= 0.8x)")
    base_wall = best["raw encode_batch"][0]

    if args.ray:
        import ray

        os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
        ray.init(address="local", num_cpus=args.threads + 1, include_dashboard=False, log_to_driver=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        ds = ray.data.from_arrow(tables * args.ray_repeat).map_batches(
            BatchTokenizer, fn_constructor_kwargs={"tokenizer_path": tok_path},
            batch_format="pyarrow", batch_size=args.batch_size, num_cpus=args.threads,
            compute=ray.data.ActorPoolStrategy(size=1))
        w0 = time.perf_counter()
        total, first = 0, None
        for b in ds.iter_batches(batch_format="numpy", batch_size=None):
            total += int(b["n_tokens"].sum())
            if first is None:
                first = (time.perf_counter(), total)
        wall = time.perf_counter() - w0
        assert total == n_out * args.ray_repeat, (total, n_out)
        in_process = n_out / best["BatchTokenizer"][0]
        steady = (total - first[1]) / (w0 + wall - first[0])
        print(f"{'Ray Data, 1 actor':<28} {wall:>8.2f} {total / wall:>12,.0f}   end to end incl. actor start-up "
              f"({first[0] - w0:.1f} s to the first batch): {total / wall / in_process:.2f}x in-process "
              f"BatchTokenizer")
        print(f"{'  after the first batch':<28} {'':>8} {steady:>12,.0f}   {steady / in_process:.2f}x in-process "
              f"BatchTokenizer (tokens incl. EOS)")
        ray.shutdown()


if __name__ == "__main__":
    main()
