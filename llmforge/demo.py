"""The demo: the whole product in one command on an embedded local Ray (`llmforge demo`,
`bash infra/demo.sh`):

    warcs     sample WARCs with planted ground truth (+ the real WARCs of ../shared/data, or --input),
              the URL blocklist and the benchmark files the corpus is decontaminated against
    quality   the quality classifier the data job filters with: reference-quality text vs raw web
              text (DCLM's recipe; Wikipedia vs Common Crawl text when ../shared/data is present)
    data      the data job (data_demo.yaml): extract, filter, dedup, decontaminate, quality
              classifier, domains, BPE, token shards
    pretrain  2 Ray Train workers, DeepSpeed ZeRO-2 (pretrain_demo.yaml), HF export, a sample
    postdata  SFT / preference / arithmetic files (generated; + real ones of ../shared/data)
    sft       supervised fine-tuning of the pretrained model (sft_demo.yaml)
    reward    a reward model from the SFT model (reward_demo.yaml)
    dpo       DPO from the SFT model (dpo_demo.yaml)
    grpo      a short GRPO on the arithmetic task from the SFT model (grpo_demo.yaml)
    eval      perplexity / bits per byte, multiple choice, contamination, judge win rate of
              DPO vs SFT (raw and length-controlled), a report with its plots

Each step is a plain function over a `DemoContext` run by `llmforge.demo_runner`: a rerun skips
the finished steps (fingerprinted done markers), a failed or interrupted one resumes there, and
each step's logs go to `<workdir>/logs/<step>.log`.

Its configs ship inside the package (`llmforge/configs/`), so an installed llmforge runs it
without the source tree. Imports stay stdlib at the top: the packages load when a step runs.
"""
from __future__ import annotations

import json
import os
import sys
from importlib import resources
from pathlib import Path
from typing import Any, Callable

from llmforge.demo_runner import DemoContext, DemoStep, run_steps

DATA_CONFIG = "data_demo.yaml"
TRAIN_CONFIG = "pretrain_demo.yaml"
ALIGN_CONFIGS = {"sft": "sft_demo.yaml", "reward": "reward_demo.yaml", "dpo": "dpo_demo.yaml",
                 "grpo": "grpo_demo.yaml"}
SAMPLE_PROMPT = "The city"
STEP_NAMES = ("warcs", "quality", "data", "pretrain", "postdata", "sft", "reward", "dpo", "grpo", "eval")
# ../shared/data next to the checkout (as tests/support/text_shards.py finds it), or $LLMFORGE_SHARED_DATA.
SHARED_DATA = Path(os.environ.get("LLMFORGE_SHARED_DATA",
                                  Path(__file__).resolve().parents[1].parent / "shared" / "data"))
# Sizes of the generated / sampled post-training data and of the evaluation (2-core laptop).
POST = {"sft_synthetic": 400, "sft_arithmetic": 2000, "sft_real": 200, "pairs_synthetic": 480, "pairs_real": 100,
        "rl_prompts": 64, "judge_prompts": 24, "seed": 0}
# The quality classifier's training set (documents per class; DCLM trains on a few thousand).
QUALITY = {"max_docs_per_class": 1500, "reference_docs": 600, "chunk_words": 300, "seed": 0}
EVAL = {"ppl_docs": 40, "mc_items": 60, "mc_tasks": ["arc_easy", "copa", "piqa"], "mc_max_tokens": 100, "contamination_shards": 10,
        "contamination_permutations": 20, "judge_max_new_tokens": 24}


def packaged_config(name: str) -> Path:
    """A config file shipped in the package (`llmforge/configs/<name>`)."""
    return Path(str(resources.files("llmforge") / "configs" / name))


def _file_id(path: Path) -> dict[str, Any]:
    st = path.stat()
    return {"path": str(path), "size": st.st_size, "mtime": int(st.st_mtime)}


def _config_file(ctx: DemoContext, key: str, default: str) -> Path:
    given = ctx.options.get(key)
    return Path(given).resolve() if given else packaged_config(default)


def _config_text(path: Path) -> str:
    return path.read_text()


def _shared(*parts: str) -> Path | None:
    path = SHARED_DATA.joinpath(*parts)
    return path if path.exists() else None


# ------------------------------------------------------------------------------ warcs


def _real_inputs(ctx: DemoContext) -> list[Path]:
    """--input files, or the real WARCs of ../shared/data (not .wat/.wet) when present."""
    given = ctx.options.get("input")
    if given:
        import glob

        out = []
        for pattern in given:
            matched = sorted(glob.glob(pattern)) or ([pattern] if "://" in pattern else [])
            if not matched:
                from llmforge.common.errors import UserError

                raise UserError(f"--input {pattern}: matches no file")
            out += [Path(m).resolve() if "://" not in m else m for m in matched]
        return out
    if not ctx.options.get("use_shared", True) or _shared("warc") is None:
        return []
    return sorted(p for p in _shared("warc").glob("*.warc.gz"))


def _real_pages(ctx: DemoContext) -> list[Path]:
    """Real web text of ../shared/data that is not in WARC form, packed into WARCs by the warcs
    step: the real HTML pages of the extraction eval set and Common Crawl page text (Dolma's
    CC documents; not the file eval reads)."""
    if ctx.options.get("input") or not ctx.options.get("use_shared", True):
        return []
    html = _shared("extraction", "trafilatura_eval", "html")
    return ([html] if html is not None else []) + _cc_corpus_text(ctx)


def _cc_corpus_text(ctx: DemoContext) -> list[Path]:
    """Common Crawl page text for the corpus: Dolma's CC documents (not the file eval reads) and
    C4's (LLaMA-Factory's C4 demo)."""
    if not ctx.options.get("use_shared", True):
        return []
    dolma = sorted(p for p in _shared("cc_text").glob("*.jsonl.gz") if p != _cc_source(ctx)) if _shared("cc_text") else []
    c4 = _shared("pretrain_text", "llamafactory_c4_demo.jsonl")
    return dolma + ([c4] if c4 is not None else [])


def _write_real_pages_warc(path: Path, source: Path) -> None:
    """A directory of real *.html.gz pages, or a JSONL[.gz] of page text (each document as an
    HTML page of its paragraphs), as Common-Crawl-style response records."""
    import gzip
    from html import escape

    from dataproc.synthetic.real_pages import read_html_gz_pages, write_warc_from_html_pages

    if source.is_dir():
        pages = read_html_gz_pages(source)
    else:
        pages = []
        with (gzip.open if source.name.endswith(".gz") else open)(source, "rt", encoding="utf-8") as f:
            for index, line in enumerate(f):
                row = json.loads(line)
                paras = [q.strip() for q in row["text"].split("\n") if q.strip()]
                body = "".join(f"<p>{escape(q)}</p>" for q in paras)
                page = f"<!DOCTYPE html><html lang=\"en\"><head><title>{escape(paras[0][:80]) if paras else ''}</title>"
                pages.append((f"https://cc-text.example/{source.name.split('.')[0]}/{row.get('id', index)}",
                              (page + f"</head><body><main><article>{body}</article></main></body></html>").encode()))
    write_warc_from_html_pages(path, pages)


def warcs_config(ctx: DemoContext) -> dict[str, Any]:
    real = [_file_id(p) if isinstance(p, Path) and p.exists() else str(p) for p in _real_inputs(ctx)]
    return {"files": ctx.options.get("files", 4), "docs": ctx.options.get("docs", 400), "real": real,
            "real_pages": [str(p) for p in _real_pages(ctx)],
            "evalsets": [_file_id(p) for p in _shared_evalsets(ctx)], "mc_items": EVAL["mc_items"]}


def _shared_evalsets(ctx: DemoContext) -> list[Path]:
    """The real multiple-choice sets the demo evaluates on (../shared/data/evalsets), when present."""
    if not ctx.options.get("use_shared", True):
        return []
    found = (_shared("evalsets", "llm_foundry", f"{t}.jsonl") for t in EVAL["mc_tasks"])
    return [p for p in found if p is not None]


def _decontamination_files(ctx: DemoContext) -> list[Path]:
    """The benchmarks the evaluation uses, whole: the corpus is decontaminated against them."""
    return _shared_evalsets(ctx) or sorted(ctx.path("warc", "evalsets").glob("*.jsonl"))


def step_warcs(ctx: DemoContext) -> dict[str, Any]:
    from dataproc.synthetic.ground_truth import GroundTruth
    from dataproc.synthetic.sample_warc import write_sample_warc

    warcs = ctx.path("warc")
    warcs.mkdir(parents=True, exist_ok=True)
    blocked: set[str] = set()
    paths = []
    for i in range(ctx.options.get("files", 4)):
        path = warcs / f"sample-{i:02d}.warc.gz"
        truth_path = warcs / f"sample-{i:02d}.truth.json"
        if not truth_path.exists():
            write_sample_warc(path, n_docs=ctx.options.get("docs", 400), seed=i).to_json(truth_path)
        paths.append(str(path))
        blocked.update(GroundTruth.from_json(truth_path).blocked_domains)
    # The planted spam domain is not on any public list: block it the way a user adds a list.
    (warcs / "blocklist.txt").write_text("".join(f"{d}\n" for d in sorted(blocked)))
    real = [str(p) for p in _real_inputs(ctx)]
    for source in _real_pages(ctx):
        path = warcs / f"real-{source.name.split('.')[0]}.warc.gz"
        _write_real_pages_warc(path, source)
        real.append(str(path))
    (warcs / "inputs.json").write_text(json.dumps({"sample": paths, "real": real}, indent=1))
    if not _shared_evalsets(ctx):
        _generated_mc_tasks(warcs / "evalsets")
    ctx.log(f"{len(paths)} sample WARC files in {warcs}; real inputs: {real}; "
            f"benchmarks: {[str(p) for p in _decontamination_files(ctx)]}")
    return {"sample_files": len(paths), "real_files": len(real)}


# ------------------------------------------------------------------------------ quality


def quality_config(ctx: DemoContext) -> dict[str, Any]:
    reference = _reference_file(ctx)
    return {"sizes": QUALITY, "reference": _file_id(reference) if reference is not None else "generated"}


def _reference_file(ctx: DemoContext) -> Path | None:
    """Wikipedia articles (../shared/data), when present: not WikiText-2, which eval reads."""
    return _shared("pretrain_text", "llamafactory_wiki_demo.txt") if ctx.options.get("use_shared", True) else None


def _reference_docs(ctx: DemoContext) -> list[str]:
    """Reference-quality text: Wikipedia articles cut into web-page-sized passages when
    ../shared/data is present, else generated well-formed English articles."""
    src = _reference_file(ctx)
    if src is None:
        import random

        from dataproc.synthetic.english import EnglishText

        text = EnglishText(random.Random(QUALITY["seed"] + 1000))
        return ["\n\n".join(text.paragraphs()) for _ in range(QUALITY["reference_docs"])]
    from dataproc.reading.text_files import iter_texts

    n, docs = QUALITY["chunk_words"], []
    for article in iter_texts(src):
        words = article.split()
        docs += [" ".join(words[i:i + n]) for i in range(0, len(words), n) if len(words[i:i + n]) > 50]
    return docs


def _raw_web_docs(ctx: DemoContext) -> list[str]:
    """Raw web text: the main text of every HTML page of the demo's input WARCs, unfiltered
    (spam, boilerplate, other languages included; Common Crawl text among them when present)."""
    import collections

    from dataproc.documents.extract import ExtractOptions, extract_text
    from dataproc.reading.records import WarcReadOptions, iter_html_responses

    inputs = json.loads(ctx.path("warc", "inputs.json").read_text())
    options, read_options, docs = ExtractOptions(), WarcReadOptions(), []
    for path in inputs["sample"] + inputs["real"]:
        if "://" in path:
            continue
        with open(path, "rb") as f:
            for record in iter_html_responses(f, path, read_options, collections.Counter()):
                text, _ = extract_text(record["html"], options)
                if text:
                    docs.append(text)
    return docs


def step_quality(ctx: DemoContext) -> dict[str, Any]:
    from dataproc.corpus.quality.train import train_quality_model

    out = ctx.path("quality")
    out.mkdir(parents=True, exist_ok=True)
    reference, web = _reference_docs(ctx), _raw_web_docs(ctx)
    (out / "reference.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in reference))
    (out / "raw_web.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in web))
    ctx.log(f"quality classifier: {len(reference)} reference documents vs {len(web)} raw web documents")
    metrics = train_quality_model([out / "reference.jsonl"], [out / "raw_web.jsonl"], out / "quality.npz",
                                  seed=QUALITY["seed"], max_docs_per_class=QUALITY["max_docs_per_class"])
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    ctx.log(f"quality classifier: {metrics}")
    keep = ("n_pos", "n_neg", "heldout_accuracy", "heldout_auc")
    return {k: metrics[k] for k in keep if isinstance(metrics.get(k), (int, float))}


# ------------------------------------------------------------------------------ data


# The corpus stages that need the demo's own files: switched on over the data config.
DATA_CORPUS_STAGES = {"stages.decontaminate.enabled": True, "stages.quality_model.enabled": True,
                      "stages.quality_model.keep_top_fraction": 0.8}


def data_config(ctx: DemoContext) -> dict[str, Any]:
    return {"yaml": _config_text(_config_file(ctx, "data_config", DATA_CONFIG)), "corpus_stages": DATA_CORPUS_STAGES}


def step_data(ctx: DemoContext) -> dict[str, Any]:
    from dataproc.config import DataJobConfig
    from dataproc.pipeline import run_data_job
    from llmforge.common.config import load_config

    inputs = json.loads(ctx.path("warc", "inputs.json").read_text())
    config = _config_file(ctx, "data_config", DATA_CONFIG)
    cfg = load_config(DataJobConfig, config, {
        "input.paths": inputs["sample"] + inputs["real"],
        "output.path": str(ctx.path("output")),
        "stages.url_filter.blocklist_paths": [str(ctx.path("warc", "blocklist.txt"))],
        "stages.decontaminate.eval_files": [str(p) for p in _decontamination_files(ctx)],
        "stages.quality_model.model_path": str(ctx.path("quality", "quality.npz")),
        **DATA_CORPUS_STAGES,
    })
    ctx.log(f"data job on {len(inputs['sample']) + len(inputs['real'])} WARC files, config {config}")
    run_data_job(cfg, log=ctx.log)
    stats = json.loads(ctx.path("output", "stats.json").read_text())
    return _funnel_summary(stats)


def _funnel_summary(stats: dict[str, Any]) -> dict[str, Any]:
    """The numbers the final table shows, from stats.json: WARC records -> HTML documents ->
    after the document filters -> after dedup -> after decontamination -> after the quality
    classifier -> tokens."""
    out: dict[str, Any] = {}
    warc = stats.get("warc") or {}
    if isinstance(warc.get("records"), int):
        out["warc_records"] = warc["records"]
    if isinstance(stats.get("documents_in"), int):
        out["html_documents"] = stats["documents_in"]
    stages = stats.get("stages") or []
    from dataproc.config import CORPUS_STAGE_ORDER

    document_stages = [s for s in stages if s.get("stage") not in CORPUS_STAGE_ORDER]
    if document_stages:
        out["after_filters"] = document_stages[-1]["out"]
    for s in stages:
        if s.get("stage") in CORPUS_SUMMARY:
            out[CORPUS_SUMMARY[s["stage"]]] = s["out"]
    tokens = stats.get("tokens") or {}
    if isinstance(tokens.get("total"), int):
        out["tokens"] = tokens["total"]
    return out


# The corpus stages' funnel rows the summary shows (after exact and near dedup: one number).
CORPUS_SUMMARY = {"minhash_dedup": "after_dedup", "decontaminate": "after_decontaminate",
                  "quality_model": "after_quality"}


# ------------------------------------------------------------------------------ pretrain


def pretrain_config(ctx: DemoContext) -> dict[str, Any]:
    return {"yaml": _config_text(_config_file(ctx, "train_config", TRAIN_CONFIG))}


def _pretrain_cfg(ctx: DemoContext):
    from llmforge.common.config import load_config
    from training.config import PretrainConfig

    config = _config_file(ctx, "train_config", TRAIN_CONFIG)
    return load_config(PretrainConfig, config, {"data.shards": str(ctx.path("output", "shards")),
                                                "run.storage_path": str(ctx.path("train"))})


def step_pretrain(ctx: DemoContext) -> dict[str, Any]:
    from training.checkpoint import latest_checkpoint
    from training.export import export_hf
    from training.generate import SamplingParams, complete_from_checkpoint
    from training.trainer import run_dir, run_pretrain

    cfg = _pretrain_cfg(ctx)
    ctx.log(f"pretraining on {ctx.path('output', 'shards')}")
    last = run_pretrain(cfg, log=ctx.log) or {}
    ckpt = latest_checkpoint(run_dir(cfg))
    hf = ctx.path("hf")
    export_hf(ckpt, hf, overwrite=True)
    text, = complete_from_checkpoint(ckpt, [SAMPLE_PROMPT], SamplingParams(max_new_tokens=40, temperature=0.8))
    (ctx.path("train", "sample.txt")).write_text(SAMPLE_PROMPT + text + "\n")
    ctx.log(f"exported to {hf}; sample: {SAMPLE_PROMPT}{text}")
    if not last:
        from training.trainer import read_metrics

        rows = read_metrics(run_dir(cfg) / "metrics.jsonl")
        last = rows[-1] if rows else {}
    keep = ("step", "loss", "val_loss", "tokens_per_s", "mfu")
    out = {k: last[k] for k in keep if isinstance(last.get(k), (int, float))}
    if cfg.data.val_fraction > 0:
        out["unigram_val_loss"] = unigram_val_loss(cfg.data.shards, cfg.data.seq_len, cfg.data.val_fraction)
    return out


def unigram_val_loss(shards: str, seq_len: int, val_fraction: float) -> float:
    """The validation loss (nats/token) of the best unigram model of the training tokens (add-one
    smoothed) on the same validation windows: what the pretrained model must beat to have
    learnt more than token frequencies."""
    import numpy as np

    from training.data import split_train_val

    train, val = split_train_val(shards, seq_len, val_fraction)
    stream = train.stream
    counts = np.bincount(stream.slice(0, train.count * seq_len), minlength=int(stream.manifest["vocab_size"]))
    logp = np.log((counts + 1.0) / (counts.sum() + len(counts)))
    # window i predicts tokens [i*L + 1, i*L + L + 1): the validation windows' targets are one slice
    targets = stream.slice(val.first * seq_len + 1, (val.first + val.count) * seq_len + 1)
    return round(float(-logp[targets].mean()), 4)


# ------------------------------------------------------------------------------ postdata


def postdata_config(ctx: DemoContext) -> dict[str, Any]:
    real = {}
    if ctx.options.get("use_shared", True):
        for name in ("llamafactory_alpaca_en_demo.json", "llamafactory_dpo_en_demo.json"):
            p = _shared("preference_sft", name)
            if p is not None:
                real[name] = _file_id(p)
    mc = {k: EVAL[k] for k in ("mc_items", "mc_tasks", "mc_max_tokens")}
    return {"sizes": POST, "real": real, "mc": mc, "evalsets": [p.stem for p in _shared_evalsets(ctx)]}


def step_postdata(ctx: DemoContext) -> dict[str, Any]:
    import random

    from alignment.formats import read_preferences, read_sft
    from alignment.synthetic import arithmetic_sft, arithmetic_task, preference_task, sft_task, write_jsonl

    out = ctx.path("postdata")
    out.mkdir(parents=True, exist_ok=True)
    seed = POST["seed"]
    real = postdata_config(ctx)["real"]
    sft = sft_task(POST["sft_synthetic"], seed=seed) + arithmetic_sft(
        arithmetic_task(POST["sft_arithmetic"], seed=seed + 1, low=0, high=19))
    pairs = preference_task(POST["pairs_synthetic"], seed=seed)
    if "llamafactory_alpaca_en_demo.json" in real:
        rows, _ = read_sft(real["llamafactory_alpaca_en_demo.json"]["path"])
        sft += rows[:POST["sft_real"]]
    if "llamafactory_dpo_en_demo.json" in real:
        rows, _ = read_preferences(real["llamafactory_dpo_en_demo.json"]["path"])
        pairs += rows[:POST["pairs_real"]]
    random.Random(seed).shuffle(sft)
    random.Random(seed).shuffle(pairs)
    write_jsonl(sft, out / "sft.jsonl")
    write_jsonl(pairs, out / "pairs.jsonl")
    rl = arithmetic_task(POST["rl_prompts"], seed=seed + 5, low=0, high=19)
    (out / "arithmetic.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rl))
    # Judge prompts: the preference task's kind of prompt (the reward model judges what it learnt)
    judge = [{"id": p.id, "prompt": p.prompt[-1]["content"]} for p in preference_task(POST["judge_prompts"], seed=seed + 7)]
    (out / "judge_prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in judge))
    _mc_tasks(ctx, out / "mc", ctx.path("output", "tokenizer.json"))
    ctx.log(f"{len(sft)} SFT conversations, {len(pairs)} preference pairs, {len(rl)} arithmetic prompts -> {out}")
    return {"sft_examples": len(sft), "pairs": len(pairs), "rl_prompts": len(rl), "real_files": len(real)}


def _mc_tasks(ctx: DemoContext, out: Path, tokenizer: Path) -> None:
    """Multiple-choice task files: the first items of the real sets (../shared/data/evalsets)
    that fit the demo model's window when present, else the generated ones the warcs step wrote."""
    import shutil

    out.mkdir(parents=True, exist_ok=True)
    shared = _shared_evalsets(ctx)
    if not shared:
        for path in sorted(ctx.path("warc", "evalsets").glob("*.jsonl")):
            shutil.copyfile(path, out / path.name)
        return
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer))
    for src in shared:
        kept = []
        for line in src.read_text().splitlines():
            row = json.loads(line)
            # only items whose question + longest choice fit the demo model's 128-token window
            longest = max(len(tok.encode(row["query"] + " " + c).ids) for c in row["choices"])
            if longest <= EVAL["mc_max_tokens"]:
                kept.append(line)
            if len(kept) == EVAL["mc_items"]:
                break
        (out / src.name).write_text("\n".join(kept) + "\n")


def _generated_mc_tasks(out: Path) -> None:
    """Generated multiple-choice sets for a checkout without ../shared/data: arithmetic sums and
    the preference task's marker word."""
    import random

    from alignment.synthetic import MARKER, NEUTRAL, _words

    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(11)
    rows = []
    for _ in range(EVAL["mc_items"]):
        a, b = rng.randint(0, 19), rng.randint(0, 19)
        wrong = sorted({a + b + d for d in (-3, -1, 2, 5)} - {a + b})[:3]
        choices = [str(a + b)] + [str(w) for w in wrong]
        rng.shuffle(choices)
        rows.append({"query": f"What is {a} + {b}? ####", "choices": [" " + c for c in choices],
                     "gold": choices.index(str(a + b))})
    (out / "arithmetic_mc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    rows = []
    for _ in range(EVAL["mc_items"]):
        words = _words(rng)
        at = rng.randint(0, len(words))
        choices = [" ".join([*words[:at], w, *words[at:]]) for w in (MARKER, *rng.sample(NEUTRAL, 3))]
        rng.shuffle(choices)
        rows.append({"query": "Reply to: " + " ".join(words) + "\n", "choices": choices,
                     "gold": next(i for i, c in enumerate(choices) if MARKER in c.split())})
    (out / "marker_mc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


# ------------------------------------------------------------------------------ sft, reward, dpo, grpo


def _align_yaml(ctx: DemoContext, algorithm: str) -> Path:
    return packaged_config(ALIGN_CONFIGS[algorithm])


def align_config(algorithm: str) -> Callable[[DemoContext], dict[str, Any]]:
    return lambda ctx: {"yaml": _config_text(_align_yaml(ctx, algorithm)),
                        "standalone": ctx.options.get("align_standalone", True)}


def _start(ctx: DemoContext, algorithm: str) -> Path:
    return ctx.path("train", "pretrain") if algorithm == "sft" else ctx.path("align", "sft")


def _align_cfg(ctx: DemoContext, algorithm: str):
    from alignment.job import config_class
    from llmforge.common.config import load_config

    data = {"sft": "sft.jsonl", "reward": "pairs.jsonl", "dpo": "pairs.jsonl"}[algorithm]
    return load_config(config_class(algorithm), _align_yaml(ctx, algorithm), {
        "model": str(_start(ctx, algorithm)), "data.path": str(ctx.path("postdata", data)),
        "run.storage_path": str(ctx.path("align")), "run.name": algorithm})


def align_step(algorithm: str) -> Callable[[DemoContext], dict[str, Any]]:
    def run(ctx: DemoContext) -> dict[str, Any]:
        from alignment.job import run_align

        results = run_align(algorithm, _align_cfg(ctx, algorithm), standalone=ctx.options.get("align_standalone", True),
                            log=ctx.log)
        final = results.get("final", {})
        keep = ("loss", "val_loss", "val_accuracy", "val_margin", "val_reward_accuracy")
        return {"steps": results.get("steps"), **{k: final[k] for k in keep if isinstance(final.get(k), (int, float))}}
    return run


def step_grpo(ctx: DemoContext) -> dict[str, Any]:
    from alignment.rl_driver import config_class, run_rl
    from llmforge.common.config import load_config

    prompts = ctx.path("postdata", "arithmetic.jsonl")
    cfg = load_config(config_class("grpo"), _align_yaml(ctx, "grpo"), {
        "model": str(ctx.path("align", "sft")), "data.path": str(prompts), "data.eval_path": str(prompts),
        "run.storage_path": str(ctx.path("align")), "run.name": "grpo"})
    results = run_rl("grpo", cfg, log=ctx.log)
    out: dict[str, Any] = {}
    for when in ("initial_eval", "final_eval"):
        for k, v in (results.get(when) or {}).items():
            if isinstance(v, (int, float)) and "exact_match" in k:
                out[f"{when.split('_')[0]}_{k}"] = v
    return out


# ------------------------------------------------------------------------------ eval


def eval_config(ctx: DemoContext) -> dict[str, Any]:
    real = _ppl_source(ctx)
    cc = _cc_source(ctx)
    return {"eval": EVAL, "ppl": _file_id(real) if real is not None else "generated",
            "cc_text": _file_id(cc) if cc is not None else None}


def _cc_source(ctx: DemoContext) -> Path | None:
    """Common Crawl text (Dolma's CC documents, ../shared/data/cc_text) when present."""
    if not ctx.options.get("use_shared", True):
        return None
    return _shared("cc_text", "dolma_cc_en_head-0091.jsonl.gz")


def _cc_text(ctx: DemoContext, path: Path) -> Path | None:
    """The first `EVAL["ppl_docs"]` Common Crawl documents as JSONL {"text"} (a second held-out set)."""
    import gzip

    src = _cc_source(ctx)
    if src is None:
        return None
    with gzip.open(src, "rt", encoding="utf-8") as f:
        rows = [json.loads(line)["text"] for line, _ in zip(f, range(EVAL["ppl_docs"]))]
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in rows if t.strip()))
    return path


def _ppl_source(ctx: DemoContext) -> Path | None:
    """Held-out text for perplexity: WikiText-2 test (../shared/data) when present, else None (generated)."""
    return _shared("pretrain_text", "wikitext-2-raw_wiki.test.raw") if ctx.options.get("use_shared", True) else None


def _heldout_text(ctx: DemoContext, path: Path) -> Path:
    """`EVAL["ppl_docs"]` documents separated by blank lines: WikiText-2 test articles' paragraphs
    when present, else generated English-looking documents (not in the training data)."""
    real = _ppl_source(ctx)
    if real is not None:
        paras = [line.strip() for line in real.read_text(encoding="utf-8").splitlines()]
        docs = [p for p in paras if len(p) > 400 and not p.startswith("=")][:EVAL["ppl_docs"]]
    else:
        from dataproc.synthetic.english import generated_documents

        docs = generated_documents(EVAL["ppl_docs"], seed=99)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n\n".join(docs) + "\n")
    return path


MODELS = ("base", "sft", "dpo", "grpo")


def _model_dir(ctx: DemoContext, name: str) -> Path:
    return ctx.path("train", "pretrain") if name == "base" else ctx.path("align", name)


def step_eval(ctx: DemoContext) -> dict[str, Any]:
    import torch

    from evaluation.contamination import ContaminationOptions, run_contamination
    from evaluation.judge import run_judge
    from evaluation.multiple_choice import run_mc
    from evaluation.perplexity import run_ppl
    from evaluation.report import write_report
    from training.batch_generate import GenerateOptions
    from training.generate import SamplingParams

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    ev = ctx.path("eval")
    ev.mkdir(parents=True, exist_ok=True)
    ppl_data = _heldout_text(ctx, ev / "heldout.txt")
    cc_data = _cc_text(ctx, ev / "cc_text.jsonl")
    tasks = sorted(ctx.path("postdata", "mc").glob("*.jsonl"))
    summary: dict[str, Any] = {}
    runs = []
    for name in MODELS:
        model = _model_dir(ctx, name)
        if not model.exists():
            continue
        d = ev / name
        merged: dict[str, Any] = {}
        ctx.log(f"eval {name}: perplexity on {ppl_data}")
        ppl = run_ppl(str(model), str(ppl_data), str(d / "ppl"), txt_mode="paragraphs")
        merged.update(ppl["results"])
        if cc_data is not None:
            ctx.log(f"eval {name}: perplexity on Common Crawl text {cc_data}")
            merged.update(run_ppl(str(model), str(cc_data), str(d / "ppl_cc"))["results"])
        for task in tasks:
            ctx.log(f"eval {name}: multiple choice {task.stem}")
            mc = run_mc(str(model), str(task), str(d / "mc" / task.stem))
            merged.update(mc["results"])
        if name == "base":
            ctx.log("eval base: contamination of the first task vs the training shards")
            options = ContaminationOptions(shards=EVAL["contamination_shards"],
                                           permutations=EVAL["contamination_permutations"], device="cpu")
            contam = run_contamination(str(tasks[0]), str(d / "contamination"), model=str(model),
                                       shards_dir=str(ctx.path("output", "shards")), options=options, log=ctx.log)
            merged["contamination"] = _contamination_numbers(contam)
        if name == "dpo":
            ctx.log("eval dpo: judge win rate vs sft (the reward model judges, both orders)")
            options = GenerateOptions(sampling=SamplingParams(max_new_tokens=EVAL["judge_max_new_tokens"],
                                                              temperature=0.0))
            judged = run_judge(str(d / "judge_vs_sft"), f"reward:{ctx.path('align', 'reward')}",
                               model_a=str(model), model_b=str(_model_dir(ctx, "sft")),
                               prompts=str(ctx.path("postdata", "judge_prompts.jsonl")), generate_options=options,
                               overwrite=True)
            merged.update(judged["results"])
        (d / "results.json").write_text(json.dumps({"model": str(model), "results": merged}, indent=1, default=str))
        runs.append(d)
        summary[name] = {task: {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and k in SHOWN}
                         for task, metrics in merged.items() if isinstance(metrics, dict)}
    written = write_report([str(r) for r in runs], str(ev / "report"), labels=[r.name for r in runs])
    ctx.log(f"report: {written['report']}")
    return summary


SHOWN = ("bits_per_byte", "token_perplexity", "acc", "acc_norm", "win_rate", "lc_win_rate", "p_value",
         "contaminated_fraction", "overlap_fraction")


def _contamination_numbers(results: dict[str, Any]) -> dict[str, float]:
    out = {}
    for section in ("permutation_test", "ngram_overlap"):
        for k, v in (results.get(section) or {}).items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out[k] = v
    return out


# ------------------------------------------------------------------------------ the steps


def demo_steps() -> list[DemoStep]:
    return [
        DemoStep("warcs", "sample WARCs (+ real ones when present), benchmarks", "warc", step_warcs, warcs_config, 5),
        DemoStep("quality", "quality classifier: reference text vs raw web text", "quality", step_quality,
                 quality_config, 20),
        DemoStep("data", "data pipeline: extract, filter, dedup, decontaminate, quality, BPE, shards", "output", step_data,
                 data_config, 200),
        DemoStep("pretrain", "pretraining: 2 Ray Train workers, DeepSpeed ZeRO-2, HF export", "train", step_pretrain,
                 pretrain_config, 170),
        DemoStep("postdata", "SFT / preference / arithmetic data", "postdata", step_postdata, postdata_config, 5),
        DemoStep("sft", "supervised fine-tuning", "align/sft", align_step("sft"), align_config("sft"), 60),
        DemoStep("reward", "reward model", "align/reward", align_step("reward"), align_config("reward"), 15),
        DemoStep("dpo", "DPO (reference log-probs, then training)", "align/dpo", align_step("dpo"),
                 align_config("dpo"), 40),
        DemoStep("grpo", "GRPO on arithmetic (Ray actor groups)", "align/grpo", step_grpo, align_config("grpo"), 45),
        DemoStep("eval", "evaluation: ppl, multiple choice, contamination, judge, report", "eval", step_eval,
                 eval_config, 100),
    ]


def _table(rows: list[tuple[str, str]]) -> str:
    if not rows:
        return ""
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows)


def _num(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def summary_text(ctx: DemoContext) -> str:
    r = ctx.results
    lines = ["", "llmforge demo: summary", ""]
    rows: list[tuple[str, str]] = []
    # markers store summaries with sorted keys: show them in this order, the rest after
    order = ["warc_records", "html_documents", "after_filters", "after_dedup", "after_decontaminate",
             "after_quality", "tokens", "n_pos", "n_neg", "heldout_accuracy",
             "heldout_auc", "step", "steps", "loss",
             "val_loss", "unigram_val_loss", "val_accuracy", "val_margin", "initial_eval_exact_match", "final_eval_exact_match",
             "initial_eval_sampled_exact_match", "final_eval_sampled_exact_match", "tokens_per_s", "mfu"]

    def ordered(summary: dict[str, Any]) -> str:
        keys = sorted(summary, key=lambda k: order.index(k) if k in order else len(order))
        return ", ".join(f"{k} {_num(summary[k])}" for k in keys)

    if r.get("quality"):
        rows.append(("quality classifier", ordered(r["quality"])))
    if r.get("data"):
        rows.append(("documents funnel", ordered(r["data"])))
    for name in ("pretrain", "sft", "reward", "dpo", "grpo"):
        if r.get(name):
            rows.append((name, ordered(r[name])))
    if rows:
        lines.append(_table(rows))
    evals = r.get("eval") or {}
    if evals:
        models = [m for m in MODELS if m in evals]
        keys = list(dict.fromkeys((task, metric) for tasks in evals.values() for task, metrics in tasks.items()
                                  for metric in metrics))
        head = ["eval (task metric)"] + models
        body = [[f"{task} {metric}"] + [_num(evals[m].get(task, {}).get(metric, "-")) for m in models]
                for task, metric in keys]
        widths = [max(len(row[i]) for row in [head] + body) for i in range(len(head))]
        lines.append("")
        for row in [head] + body:
            lines.append("  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
    w = ctx.workdir
    paths = [("sample WARCs", w / "warc"), ("quality classifier", w / "quality" / "quality.npz"),
             ("documents, funnel", w / "output" / "stats.json"),
             ("funnel plot", w / "output" / "funnel.png"), ("token shards", w / "output" / "shards"),
             ("pretrained (HF)", w / "hf"), ("pretraining run", w / "train" / "pretrain"),
             ("SFT / RM / DPO / GRPO", w / "align"), ("eval report", w / "eval" / "report" / "report.md"),
             ("eval plots", w / "eval" / "report"), ("logs", w / "logs")]
    lines += ["", _table([(k, str(p)) for k, p in paths if p.exists()]), ""]
    if (w / "align" / "dpo").exists():
        lines.append(f"next: llmforge generate --model {w / 'align' / 'dpo'} --data "
                     f"{w / 'postdata' / 'judge_prompts.jsonl'} --output {w / 'gen'}")
    elif (w / "train" / "pretrain").exists():
        lines.append(f"next: llmforge train sample {w / 'train' / 'pretrain'} --prompt '{SAMPLE_PROMPT}' --temperature 0.8")
    else:
        lines.append(f"next: llmforge demo --workdir {w}  (runs the remaining steps)")
    return "\n".join(lines)


def run_demo(workdir: str | Path = "runs/demo", files: int = 4, docs: int = 400,
             data_config: str | Path | None = None, train_config: str | Path | None = None,
             skip_train: bool = False, until: str | None = None, input: list[str] | None = None,
             use_shared: bool = True, align_standalone: bool = True,
             log: Callable[[str], None] = print, terminal=None) -> dict[str, dict[str, Any]]:
    """Run the demo's steps (up to `until`; `skip_train`: up to the data job) in `workdir`,
    skipping finished ones, and print the summary; returns each step's summary numbers."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    work = Path(workdir).resolve()
    ctx = DemoContext(work, options={"files": files, "docs": docs, "data_config": data_config,
                                     "train_config": train_config, "input": input, "use_shared": use_shared,
                                     "align_standalone": align_standalone})
    if skip_train and until is None:
        until = "data"
    terminal = terminal or sys.stdout
    print(f"llmforge demo in {work} (logs: {work / 'logs'}; a rerun skips finished steps)", file=terminal, flush=True)
    try:
        run_steps(demo_steps(), ctx, until=until, terminal=terminal)
    finally:
        if ctx.results:
            print(summary_text(ctx), file=terminal, flush=True)
    return ctx.results
