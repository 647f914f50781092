"""`llmforge data ...`: the data pipeline (WARC -> documents -> token shards) and its tools."""
from __future__ import annotations

import argparse
from pathlib import Path

from llmforge.cli._args import add_config_args, default_from, existing, from_flags, given, load_with_overrides

HELP = "the data pipeline (WARC -> documents)"


SAMPLE_WARC = "dataproc.synthetic.sample_warc:write_sample_warc"
TRAIN_QUALITY = "dataproc.corpus.quality.train:train_quality_model"
TEXT_SHARDS = "dataproc.tokenization.text_files:shards_from_text_files"


def _data_config(args):
    from dataproc.config import DataJobConfig

    flags = []
    if args.input:
        label = "--input " + " ".join(args.input)
        flags += [("input.paths", args.input, label), ("input.crawl", None, label)]
    if args.crawl:
        flags += [("input.crawl", args.crawl, f"--crawl {args.crawl}"), ("input.paths", [], f"--crawl {args.crawl}")]
    if args.max_files is not None:
        flags.append(("input.max_files", args.max_files, f"--max-files {args.max_files}"))
    if args.output:
        flags.append(("output.path", args.output, f"--output {args.output}"))
    return load_with_overrides(DataJobConfig, args, flags)


def cmd_run(args) -> int:
    from dataproc.pipeline import run_data_job

    cfg = _data_config(args)  # validated before any work starts
    # Ray stops at interpreter exit (its atexit hook). Stopping it earlier to draw the funnel
    # meanwhile crashed jobs: Ray Data's daemon threads touched the stopped core worker.
    run_data_job(cfg)
    return 0


def cmd_validate(args) -> int:
    import yaml

    cfg = _data_config(args)
    print(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    return 0


def cmd_sample_warc(args) -> int:
    from dataproc.synthetic.sample_warc import write_sample_warc

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    truth = write_sample_warc(out, **given(n_docs=args.docs, seed=args.seed), corrupt=not args.clean)
    truth.to_json(out.with_suffix(".truth.json"))
    print(f"wrote {out} and {out.with_suffix('.truth.json')}")
    return 0


def cmd_train_quality(args) -> int:
    import json

    from dataproc.corpus.quality.features import QualityFeatureConfig
    from dataproc.corpus.quality.train import train_quality_model

    existing(args.positive, "--positive")
    existing(args.negative, "--negative")
    features = from_flags(QualityFeatureConfig, args, {"ngrams": "--ngrams", "num_buckets_log2": "--buckets-log2"})
    metrics = train_quality_model(
        args.positive, args.negative, args.out, feature_config=features,
        **given(epochs=args.epochs, seed=args.seed, txt_mode=args.txt_mode, max_docs_per_class=args.max_docs),
    )
    print(json.dumps(metrics, indent=1))
    print(f"held-out accuracy {metrics['heldout_accuracy']:.3f}, AUC {metrics['heldout_auc']:.3f}; model {args.out}")
    return 0


def cmd_train_tokenizer(args) -> int:
    from dataproc.tokenization.sample import sample_texts
    from dataproc.tokenization.tokenizer import TokenizerTrainOptions, train_tokenizer

    existing(args.documents, "--documents")
    options = from_flags(TokenizerTrainOptions, args, {"vocab_size": "--vocab-size", "sample_docs": "--sample-docs"})
    info = train_tokenizer(sample_texts(args.documents, options.sample_docs), options, args.out)
    print(f"trained byte-level BPE: vocab {info['vocab_size']} on {info['documents']} documents -> "
          f"{info['path']} (sha256 {info['sha256'][:12]})")
    return 0


def cmd_inspect(args) -> int:
    from dataproc.tokenization.summary import inspect_shards

    existing(args.shard_dir, "shard directory")
    existing(args.tokenizer, "--tokenizer")
    print(inspect_shards(args.shard_dir, args.tokenizer, **given(samples=args.samples)))
    return 0


def cmd_tokenize_text(args) -> int:
    from dataproc.tokenization.encode import TokenizeOptions
    from dataproc.tokenization.text_files import shards_from_text_files
    from dataproc.tokenization.tokenizer import TokenizerTrainOptions

    existing(args.input, "--input")
    existing(args.tokenizer, "--tokenizer")
    # The function builds these options from the values too; checked here, a bad value is
    # reported as the user's flag.
    if args.tokenizer is None:
        from_flags(TokenizerTrainOptions, args, {"vocab_size": "--vocab-size"})
    from_flags(TokenizeOptions, args, {"shard_tokens": "--shard-tokens"})
    m = shards_from_text_files(args.input, args.out, tokenizer_path=args.tokenizer, **given(
        vocab_size=args.vocab_size, txt_mode=args.txt_mode, shard_tokens=args.shard_tokens))
    print(f"{m['total_tokens']:,} tokens in {m['total_documents']:,} documents, {len(m['shards'])} shards -> {args.out}")
    return 0


def register(areas: argparse._SubParsersAction) -> None:
    data = areas.add_parser("data", help=HELP, description=HELP)
    verbs = data.add_subparsers(dest="verb", required=True, metavar="VERB")
    for name, handler, helptext in (
        ("run", cmd_run, "run the pipeline (resumes finished inputs)"),
        ("validate", cmd_validate, "check a config and print it with defaults filled in"),
    ):
        p = verbs.add_parser(name, help=helptext, description=helptext)
        add_config_args(p, "job YAML (keys: input, output, stages, execution)", "stages.language.min_score=0.8")
        p.add_argument("--input", nargs="+", help="WARC files, dirs or globs (local, s3://, gs://); replaces input.paths")
        p.add_argument("--crawl", help="Common Crawl id, e.g. CC-MAIN-2024-10; replaces input.crawl")
        p.add_argument("--max-files", type=int, help="read at most this many input files (input.max_files)")
        p.add_argument("--output", help="output directory; replaces output.path")
        p.set_defaults(func=handler)

    p = verbs.add_parser("sample-warc", help="write a WARC with planted duplicates, spam, PII, corrupt records")
    p.add_argument("--out", required=True, help="output .warc.gz (ground truth goes next to it)")
    p.add_argument("--docs", type=int, help="number of normal article pages (" + default_from(f"{SAMPLE_WARC}.n_docs") + ")")
    p.add_argument("--seed", type=int, help=default_from(f"{SAMPLE_WARC}.seed"))
    p.add_argument("--clean", action="store_true", help="no corrupt records")
    p.set_defaults(func=cmd_sample_warc)

    p = verbs.add_parser("train-quality", help="train the fastText-style quality classifier (one .npz)")
    p.add_argument("--positive", nargs="+", required=True,
                   help="reference-quality text: .txt, .jsonl[.gz] (text field) or .parquet (text column)")
    p.add_argument("--negative", nargs="+", required=True, help="random web text, same formats")
    p.add_argument("--out", required=True, help="model file to write (.npz)")
    p.add_argument("--epochs", type=int, help=default_from(f"{TRAIN_QUALITY}.epochs"))
    p.add_argument("--seed", type=int, help=default_from(f"{TRAIN_QUALITY}.seed"))
    p.add_argument("--txt-mode", choices=("lines", "paragraphs"),
                   help="how a .txt file splits into documents (" + default_from(f"{TRAIN_QUALITY}.txt_mode") + ")")
    p.add_argument("--max-docs", type=int, help="cap documents per class (default: no cap)")
    p.add_argument("--ngrams", type=int,
                   help="word n-grams 1..N are features (" + default_from("dataproc.corpus.quality.features:QualityFeatureConfig.ngrams") + ")")
    p.add_argument("--buckets-log2", type=int,
                   help="2**N hash buckets (" + default_from("dataproc.corpus.quality.features:QualityFeatureConfig.num_buckets_log2") + ")")
    p.set_defaults(func=cmd_train_quality)

    p = verbs.add_parser("train-tokenizer", help="train a byte-level BPE on a sample of documents")
    p.add_argument("--documents", required=True, help="Parquet documents (a data run's output dir or its documents/)")
    p.add_argument("--out", required=True, help="tokenizer.json to write")
    p.add_argument("--vocab-size", type=int, help=default_from("dataproc.tokenization.tokenizer:TokenizerTrainOptions.vocab_size"))
    p.add_argument("--sample-docs", type=int, help=default_from("dataproc.tokenization.tokenizer:TokenizerTrainOptions.sample_docs"))
    p.set_defaults(func=cmd_train_tokenizer)

    p = verbs.add_parser("inspect", help="counts per shard and domain, and decoded sample documents")
    p.add_argument("shard_dir")
    p.add_argument("--tokenizer", help="tokenizer.json to decode samples (checked against the shards)")
    p.add_argument("--samples", type=int, help=default_from("dataproc.tokenization.summary:inspect_shards.samples"))
    p.set_defaults(func=cmd_inspect)

    p = verbs.add_parser("tokenize-text", help="token shards from plain text / JSONL files (no WARC, no Ray)")
    p.add_argument("--input", nargs="+", required=True, help=".txt[.gz], .jsonl[.gz] (text field) or .parquet files")
    p.add_argument("--out", required=True, help="shard directory (tokenizer.json is trained into it)")
    p.add_argument("--tokenizer", help="use this tokenizer.json instead of training one")
    p.add_argument("--vocab-size", type=int, help=default_from(f"{TEXT_SHARDS}.vocab_size"))
    p.add_argument("--txt-mode", choices=("lines", "paragraphs"),
                   help="how a .txt file splits into documents (" + default_from(f"{TEXT_SHARDS}.txt_mode") + ")")
    p.add_argument("--shard-tokens", type=int, help=default_from(f"{TEXT_SHARDS}.shard_tokens"))
    p.set_defaults(func=cmd_tokenize_text)
