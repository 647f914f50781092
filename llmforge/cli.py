"""`llmforge <area> <verb>`: the one entry point, also used by `ray job submit ... -- llmforge ...`.

Handlers import their packages lazily: `llmforge --help` starts neither torch nor Ray.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import yaml


def _parse_set(items: list[str]) -> dict[str, object]:
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set expects KEY=VALUE, got {item!r}")
        overrides[key] = yaml.safe_load(value)
    return overrides


def _data_config(args):
    from dataproc.config import DataJobConfig
    from llmforge.common.config import load_config

    overrides = _parse_set(args.set)
    if args.input:
        overrides["input.paths"] = args.input
        overrides["input.crawl"] = None
    if args.crawl:
        overrides["input.crawl"] = args.crawl
        overrides["input.paths"] = []
    if args.max_files:
        overrides["input.max_files"] = args.max_files
    if args.output:
        overrides["output.path"] = args.output
    return load_config(DataJobConfig, args.config, overrides)


def cmd_data_run(args) -> int:
    from dataproc.pipeline import run_data_job

    cfg = _data_config(args)  # validated before any work starts
    run_data_job(cfg)
    return 0


def cmd_data_validate(args) -> int:
    cfg = _data_config(args)
    print(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    return 0


def cmd_data_sample(args) -> int:
    from dataproc.synthetic.sample_warc import write_sample_warc

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    truth = write_sample_warc(out, n_docs=args.docs, seed=args.seed, corrupt=not args.clean)
    truth.to_json(out.with_suffix(".truth.json"))
    print(f"wrote {out} and {out.with_suffix('.truth.json')}")
    return 0


def cmd_data_train_quality(args) -> int:
    import json

    from dataproc.corpus.quality.features import QualityFeatureConfig
    from dataproc.corpus.quality.train import train_quality_model

    features = QualityFeatureConfig(ngrams=args.ngrams, num_buckets_log2=args.buckets_log2)
    metrics = train_quality_model(
        args.positive, args.negative, args.out, feature_config=features, epochs=args.epochs, seed=args.seed,
        txt_mode=args.txt_mode, max_docs_per_class=args.max_docs,
    )
    print(json.dumps(metrics, indent=1))
    print(f"held-out accuracy {metrics['heldout_accuracy']:.3f}, AUC {metrics['heldout_auc']:.3f}; model {args.out}")
    return 0


def cmd_data_train_tokenizer(args) -> int:
    from dataproc.tokenization.tokenizer import TokenizerTrainOptions, train_tokenizer
    from dataproc.tokenization.sample import sample_texts

    options = TokenizerTrainOptions(vocab_size=args.vocab_size, sample_docs=args.sample_docs)
    info = train_tokenizer(sample_texts(args.documents, options.sample_docs), options, args.out)
    print(f"trained byte-level BPE: vocab {info['vocab_size']} on {info['documents']} documents -> "
          f"{info['path']} (sha256 {info['sha256'][:12]})")
    return 0


def cmd_data_inspect(args) -> int:
    from dataproc.tokenization.summary import inspect_shards

    print(inspect_shards(args.shard_dir, args.tokenizer, samples=args.samples))
    return 0


def cmd_data_tokenize_text(args) -> int:
    from dataproc.tokenization.text_files import shards_from_text_files

    m = shards_from_text_files(args.input, args.out, vocab_size=args.vocab_size, tokenizer_path=args.tokenizer,
                               txt_mode=args.txt_mode, shard_tokens=args.shard_tokens)
    print(f"{m['total_tokens']:,} tokens in {m['total_documents']:,} documents, {len(m['shards'])} shards -> {args.out}")
    return 0


def _train_config(args):
    from llmforge.common.config import load_config
    from training.config import PretrainConfig

    return load_config(PretrainConfig, args.config, _parse_set(args.set))


def cmd_train_pretrain(args) -> int:
    from training.trainer import run_pretrain

    cfg = _train_config(args)  # validated before any work starts
    run_pretrain(cfg, standalone=args.standalone)
    return 0


def cmd_train_validate(args) -> int:
    from training.config import preflight
    from training.model import count_parameters, flops_per_token

    cfg = preflight(_train_config(args))
    print(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    print(f"# {count_parameters(cfg.model):,} parameters, "
          f"{flops_per_token(cfg.model, cfg.data.seq_len):,.0f} training FLOPs per token")
    return 0


def _checkpoint_dir(path: str) -> Path:
    """A checkpoint directory, or a run directory standing for its latest checkpoint."""
    from training.checkpoint import META, latest_checkpoint

    ckpt = Path(path)
    if not (ckpt / META).exists():
        latest = latest_checkpoint(ckpt)
        if latest is None:
            raise ValueError(f"{ckpt}: neither a checkpoint ({META} missing) nor a run directory with checkpoints")
        ckpt = latest
    return ckpt


def cmd_train_export(args) -> int:
    from training.export import export_hf

    out = export_hf(_checkpoint_dir(args.checkpoint), args.out, tokenizer_path=args.tokenizer,
                    overwrite=args.overwrite)
    print(f"wrote Hugging Face LlamaForCausalLM to {out}")
    return 0


def cmd_train_sample(args) -> int:
    from training.generate import SamplingParams

    params = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                            top_p=args.top_p, seed=args.seed)
    _print_samples(_checkpoint_dir(args.checkpoint), args.prompt, params, args.device, args.tokenizer)
    return 0


def _print_samples(ckpt: Path, prompts: list[str], params, device: str = "cpu", tokenizer: str | None = None) -> None:
    from tokenizers import Tokenizer

    from training.export import TOKENIZER, load_model
    from training.generate import complete_texts

    tokenizer_path = Path(tokenizer) if tokenizer else ckpt / TOKENIZER
    if not tokenizer_path.exists():
        raise ValueError(f"{ckpt} carries no {TOKENIZER}; pass --tokenizer")
    with contextlib.redirect_stdout(sys.stderr):  # DeepSpeed's checkpoint reader talks on stdout
        model = load_model(ckpt, device=device)
    texts = complete_texts(model, Tokenizer.from_file(str(tokenizer_path)), prompts, params)
    for prompt, text in zip(prompts, texts):
        print(f"--- {prompt!r}\n{prompt}{text}")


def cmd_demo(args) -> int:
    """Generate sample WARCs with planted ground truth and run the data job on them."""
    from dataproc.config import DataJobConfig
    from dataproc.pipeline import run_data_job
    from dataproc.synthetic.sample_warc import GroundTruth, write_sample_warc
    from llmforge.common.config import load_config

    work = Path(args.workdir).resolve()
    warcs = work / "warc"
    warcs.mkdir(parents=True, exist_ok=True)
    blocked: set[str] = set()
    paths = []
    for i in range(args.files):
        path = warcs / f"sample-{i:02d}.warc.gz"
        truth_path = warcs / f"sample-{i:02d}.truth.json"
        if not truth_path.exists():
            write_sample_warc(path, n_docs=args.docs, seed=i).to_json(truth_path)
        paths.append(str(path))
        blocked.update(GroundTruth.from_json(truth_path).blocked_domains)
    # The planted spam domain is not on any public list: block it the way a user adds a list.
    blocklist = work / "blocklist.txt"
    blocklist.write_text("".join(f"{d}\n" for d in sorted(blocked)))
    config = Path(args.config)
    cfg = load_config(
        DataJobConfig,
        config,
        {
            "input.paths": paths,
            "output.path": str(work / "output"),
            "stages.url_filter.blocklist_paths": [str(blocklist)],
        },
    )
    print(f"demo: {args.files} sample WARC files in {warcs}, config {config}")
    run_data_job(cfg)
    if args.skip_train:
        return 0
    from training.checkpoint import latest_checkpoint
    from training.config import PretrainConfig
    from training.export import export_hf
    from training.trainer import run_dir, run_pretrain

    train_cfg = load_config(PretrainConfig, args.train_config, {
        "data.shards": str(work / "output" / "shards"), "run.storage_path": str(work / "train")})
    print(f"demo: pretraining on {work / 'output' / 'shards'}, config {args.train_config}")
    run_pretrain(train_cfg)
    hf = work / "hf"
    ckpt = latest_checkpoint(run_dir(train_cfg))
    export_hf(ckpt, hf, overwrite=True)
    print(f"demo: exported the trained model to {hf} (transformers.AutoModelForCausalLM.from_pretrained)")
    print(f"demo: a sample (llmforge train sample {run_dir(train_cfg)} --prompt 'The city'):")
    from training.generate import SamplingParams

    _print_samples(ckpt, ["The city"], SamplingParams(max_new_tokens=40, temperature=0.8))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmforge", description="Common Crawl -> trained, aligned, evaluated LLM on Ray."
    )
    areas = parser.add_subparsers(dest="area", required=True, metavar="AREA")

    data = areas.add_parser("data", help="the data pipeline (WARC -> documents)")
    verbs = data.add_subparsers(dest="verb", required=True, metavar="VERB")
    for name, handler, helptext in (
        ("run", cmd_data_run, "run the pipeline (resumes finished inputs)"),
        ("validate", cmd_data_validate, "check a config and print it with defaults filled in"),
    ):
        p = verbs.add_parser(name, help=helptext, description=helptext)
        p.add_argument("--config", required=True, help="job YAML (keys: input, output, stages, execution)")
        p.add_argument("--input", nargs="+", help="WARC files, dirs or globs (local, s3://, gs://); replaces input.paths")
        p.add_argument("--crawl", help="Common Crawl id, e.g. CC-MAIN-2024-10; replaces input.crawl")
        p.add_argument("--max-files", type=int, help="read at most this many input files")
        p.add_argument("--output", help="output directory; replaces output.path")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config key, e.g. --set stages.language.min_score=0.8")
        p.set_defaults(func=handler)

    p = verbs.add_parser("sample-warc", help="write a WARC with planted duplicates, spam, PII, corrupt records")
    p.add_argument("--out", required=True, help="output .warc.gz (ground truth goes next to it)")
    p.add_argument("--docs", type=int, default=500, help="number of normal article pages")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--clean", action="store_true", help="no corrupt records")
    p.set_defaults(func=cmd_data_sample)

    p = verbs.add_parser("train-quality", help="train the fastText-style quality classifier (one .npz)")
    p.add_argument("--positive", nargs="+", required=True,
                   help="reference-quality text: .txt, .jsonl[.gz] (text field) or .parquet (text column)")
    p.add_argument("--negative", nargs="+", required=True, help="random web text, same formats")
    p.add_argument("--out", required=True, help="model file to write (.npz)")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--txt-mode", choices=("lines", "paragraphs"), default="lines",
                   help="how a .txt file splits into documents")
    p.add_argument("--max-docs", type=int, default=None, help="cap documents per class")
    p.add_argument("--ngrams", type=int, default=2, help="word n-grams 1..N are features")
    p.add_argument("--buckets-log2", type=int, default=20, help="2**N hash buckets")
    p.set_defaults(func=cmd_data_train_quality)

    p = verbs.add_parser("train-tokenizer", help="train a byte-level BPE on a sample of documents")
    p.add_argument("--documents", required=True, help="Parquet documents (a data run's output dir or its documents/)")
    p.add_argument("--out", required=True, help="tokenizer.json to write")
    p.add_argument("--vocab-size", type=int, default=32000)
    p.add_argument("--sample-docs", type=int, default=100_000)
    p.set_defaults(func=cmd_data_train_tokenizer)

    p = verbs.add_parser("inspect", help="counts per shard and domain, and decoded sample documents")
    p.add_argument("shard_dir")
    p.add_argument("--tokenizer", help="tokenizer.json to decode samples (checked against the shards)")
    p.add_argument("--samples", type=int, default=3)
    p.set_defaults(func=cmd_data_inspect)

    p = verbs.add_parser("tokenize-text", help="token shards from plain text / JSONL files (no WARC, no Ray)")
    p.add_argument("--input", nargs="+", required=True, help=".txt[.gz], .jsonl[.gz] (text field) or .parquet files")
    p.add_argument("--out", required=True, help="shard directory (tokenizer.json is trained into it)")
    p.add_argument("--tokenizer", help="use this tokenizer.json instead of training one")
    p.add_argument("--vocab-size", type=int, default=8192)
    p.add_argument("--txt-mode", choices=("lines", "paragraphs"), default="paragraphs",
                   help="how a .txt file splits into documents")
    p.add_argument("--shard-tokens", type=int, default=1 << 24)
    p.set_defaults(func=cmd_data_tokenize_text)

    train = areas.add_parser("train", help="pretraining on token shards (DeepSpeed ZeRO under Ray Train)")
    verbs = train.add_subparsers(dest="verb", required=True, metavar="VERB")
    for name, handler, helptext in (
        ("pretrain", cmd_train_pretrain, "train (resumes from the run's latest checkpoint)"),
        ("validate", cmd_train_validate, "check a config against its shards; print it with defaults"),
    ):
        p = verbs.add_parser(name, help=helptext, description=helptext)
        p.add_argument("--config", required=True, help="YAML with model, data, optim, train, scaling, run")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config key, e.g. --set train.max_steps=100")
        if name == "pretrain":
            p.add_argument("--standalone", action="store_true",
                           help="one process, no Ray (debugging, a single GPU box)")
        p.set_defaults(func=handler)
    p = verbs.add_parser("export", help="checkpoint -> Hugging Face LlamaForCausalLM (config.json + safetensors)")
    p.add_argument("checkpoint", help="a checkpoint directory (llmforge.json + deepspeed/) or a run directory "
                   "(its latest checkpoint)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--tokenizer", help="tokenizer.json to include (default: the one in the checkpoint, if any)")
    p.set_defaults(func=cmd_train_export)

    p = verbs.add_parser("sample", help="continue prompts with a checkpoint (KV-cache decoding)",
                         description="continue prompts with a checkpoint (KV-cache decoding)")
    p.add_argument("checkpoint", help="a checkpoint directory or a run directory (its latest checkpoint)")
    p.add_argument("--prompt", action="append", required=True, help="text to continue; repeat for a batch")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    p.add_argument("--tokenizer", help="tokenizer.json (default: the one in the checkpoint)")
    p.set_defaults(func=cmd_train_sample)

    p = areas.add_parser("demo", help="sample WARCs -> data pipeline -> token shards -> pretraining -> HF export")
    p.add_argument("--workdir", default="runs/demo", help="where sample data and outputs go")
    p.add_argument("--files", type=int, default=4, help="number of sample WARC files")
    p.add_argument("--docs", type=int, default=400, help="article pages per file")
    p.add_argument("--config", default=str(Path(__file__).resolve().parent.parent / "cluster" / "jobs" / "data_demo.yaml"))
    p.add_argument("--train-config", default=str(Path(__file__).resolve().parent.parent / "cluster" / "jobs" /
                                                  "pretrain_demo.yaml"))
    p.add_argument("--skip-train", action="store_true", help="only the data pipeline")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from llmforge.common.config import ConfigError

    try:
        return args.func(args)
    except (ConfigError, ValueError) as err:
        # ConfigError and input errors (dataproc.reading.inputs.InputError) are ValueErrors: the
        # user's to fix, so a message, not a traceback.
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
