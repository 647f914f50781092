"""The CLI: light to import, a bad config or input stops before any work with the key and reason,
a bug keeps its traceback, and flags left out take the library's defaults."""
import collections
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from llmforge.cli import main

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("argv", [["--help"], ["data", "run", "--help"], ["demo", "--help"], ["generate", "--help"],
                                  ["align", "dpo", "--help"], ["align", "self-instruct", "--help"],
                                  ["align", "label", "--help"], ["eval", "mc", "--help"], ["eval", "ppl", "--help"],
                                  ["eval", "judge", "--help"], ["eval", "report", "--help"],
                                  ["train", "sweep", "--help"], ["train", "ablate", "--help"], ["scaling", "fit", "--help"]])
def test_help_imports_neither_torch_nor_ray(argv):
    code = (
        "import sys, contextlib, io\n"
        "from llmforge.cli import build_parser\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        f"    try: build_parser().parse_args({argv!r})\n"
        "    except SystemExit: pass\n"
        "assert 'usage: llmforge' in out.getvalue()\n"
        "print(sorted(m for m in ('torch', 'ray', 'deepspeed', 'pyarrow') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_help_shows_the_defaults_the_code_uses():
    """--help reads defaults from the source (no import); they must be the ones that apply."""
    import inspect

    from dataproc.corpus.quality.features import QualityFeatureConfig
    from dataproc.tokenization.text_files import shards_from_text_files
    from llmforge.cli._args import default_from
    from training.generate import SamplingParams

    text_defaults = inspect.signature(shards_from_text_files).parameters
    assert default_from("dataproc.tokenization.text_files:shards_from_text_files.shard_tokens") == \
        f"default: {text_defaults['shard_tokens'].default}" == "default: 16777216"
    assert default_from("dataproc.tokenization.text_files:shards_from_text_files.txt_mode") == "default: paragraphs"
    assert default_from("dataproc.corpus.quality.features:QualityFeatureConfig.num_buckets_log2") == \
        f"default: {QualityFeatureConfig().num_buckets_log2}"
    assert default_from("training.generate:SamplingParams.top_p") == f"default: {SamplingParams().top_p}"
    # No default (None) or a name that is not there: point at where it is defined instead.
    assert default_from("dataproc.tokenization.text_files:shards_from_text_files.tokenizer_path") == \
        "default: from shards_from_text_files.tokenizer_path"
    assert default_from("dataproc.tokenization.text_files:shards_from_text_files.nope") == \
        "default: from shards_from_text_files.nope"


def test_nothing_imports_the_cli():
    pattern = re.compile(r"^\s*(from llmforge\.cli\b|import llmforge\.cli\b|from llmforge import cli\b)", re.M)
    offenders = [str(p.relative_to(REPO)) for top in ("llmforge", "dataproc", "training", "alignment", "evaluation", "infra")
                 for p in (REPO / top).rglob("*.py")
                 if "cli" not in p.relative_to(REPO).parts[:2] and pattern.search(p.read_text())]
    assert offenders == []


def test_bad_config_names_each_key_and_does_no_work(tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(
        "input: {paths: [x.warc.gz]}\n"
        f"output: {{path: {tmp_path / 'out'}}}\n"
        "stages:\n"
        "  gopher_quality: {min_doc_words: -1}\n"
        "  language: {min_score: 1.5}\n"
        "  dedupe: {enabled: true}\n"
    )
    assert main(["data", "run", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "stages.gopher_quality.min_doc_words: Input should be greater than or equal to 0" in err
    assert "stages.language.min_score: Input should be less than or equal to 1" in err
    assert "stages.dedupe: unknown key" in err
    assert not (tmp_path / "out").exists()


def test_input_must_name_exactly_one_source(tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(f"input: {{paths: [a.warc.gz], crawl: CC-MAIN-2024-10}}\noutput: {{path: {tmp_path}}}\n")
    assert main(["data", "validate", "--config", str(cfg)]) == 2
    assert "set exactly one of input.paths or input.crawl" in capsys.readouterr().err
    cfg.write_text(f"input: {{crawl: CC-2024}}\noutput: {{path: {tmp_path}}}\n")
    assert main(["data", "validate", "--config", str(cfg)]) == 2
    assert "input.crawl: String should match pattern" in capsys.readouterr().err


def test_missing_input_files_fail_before_ray(tmp_path, capsys):
    cfg = tmp_path / "ok.yaml"
    cfg.write_text(f"input: {{paths: ['{tmp_path}/nothing-*.warc.gz']}}\noutput: {{path: {tmp_path / 'out'}}}\n")
    assert main(["data", "run", "--config", str(cfg)]) == 2
    assert "matches no file" in capsys.readouterr().err


def test_validate_prints_defaults_and_overrides(tmp_path, capsys):
    cfg = tmp_path / "ok.yaml"
    cfg.write_text(f"input: {{paths: [a.warc.gz]}}\noutput: {{path: {tmp_path}}}\n")
    assert main(["data", "validate", "--config", str(cfg), "--set", "stages.language.min_score=0.8"]) == 0
    out = capsys.readouterr().out
    assert "min_score: 0.8" in out and "max_dup_line_frac: 0.3" in out


def test_changed_stage_options_refuse_an_old_output(tmp_path, capsys):
    from dataproc.config import DataJobConfig
    from dataproc.outputs.ledger import OutputLedger
    from dataproc.pipeline import output_fingerprint
    from llmforge.common.config import validate_config

    warc = tmp_path / "a.warc.gz"
    warc.write_bytes(b"")
    base = {"input": {"paths": [str(warc)]}, "output": {"path": str(tmp_path / "out")}}
    OutputLedger(str(tmp_path / "out")).claim(output_fingerprint(validate_config(DataJobConfig, base)))
    cfg = tmp_path / "job.yaml"
    cfg.write_text(f"input: {{paths: ['{warc}']}}\noutput: {{path: {tmp_path / 'out'}}}\n"
                   "stages: {language: {min_score: 0.9}}\n")
    assert main(["data", "run", "--config", str(cfg)]) == 2
    assert "holds documents made with other input.warc/stages options" in capsys.readouterr().err


def test_quality_threshold_and_top_fraction_are_exclusive(tmp_path, capsys):
    cfg = tmp_path / "q.yaml"
    cfg.write_text(f"input: {{paths: [a.warc.gz]}}\noutput: {{path: {tmp_path}}}\n"
                   "stages: {quality_model: {enabled: true, model_path: m.npz, threshold: 0.5, keep_top_fraction: 0.3}}\n")
    assert main(["data", "validate", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "stages.quality_model.keep_top_fraction" in err and "not both" in err


# ------------------------------------------------------------------------------ errors


def _data_yaml(tmp_path, extra: str = "") -> Path:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"input: {{paths: [a.warc.gz]}}\noutput: {{path: {tmp_path / 'out'}}}\n{extra}")
    return cfg


def test_a_set_typo_names_the_override_and_the_closest_key(tmp_path, capsys):
    cfg = _data_yaml(tmp_path, "stages: {gopher_qualty: {}}\n")
    argv = ["data", "validate", "--config", str(cfg), "--set", "stages.langauge.min_score=0.8",
            "--set", "stages.language.min_score=2", "--max-files", "0"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "stages.langauge (from --set stages.langauge.min_score=0.8): unknown key; did you mean 'language'?" in err
    assert "stages.language.min_score (from --set stages.language.min_score=2): Input should be less than" in err
    assert "input.max_files (from --max-files 0): Input should be greater than 0" in err
    # A key misspelt in the file is the file's, and gets a suggestion too.
    assert "  stages.gopher_qualty: unknown key; did you mean 'gopher_quality'?" in err


def test_unknown_keys_in_the_file_get_a_suggestion_at_every_level(tmp_path, capsys):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("input: {paths: [a.warc.gz]}\noutput: {pth: x}\nstagse: {}\nstages: {c4: {min_sentence: 3}}\n")
    assert main(["data", "validate", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "invalid config " + str(cfg) + ":" in err and "overrides" not in err
    assert "stagse: unknown key; did you mean 'stages'?" in err
    assert "output.pth: unknown key; did you mean 'path'?" in err
    assert re.search(r"stages\.c4\.min_sentence: unknown key; did you mean '\w+'\?", err)
    assert "output.path: Field required" in err  # every bad key, not only the first


def test_bad_set_syntax_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["data", "validate", "--config", str(_data_yaml(tmp_path)), "--set", "stages.language"])
    assert exit_.value.code == 2
    assert "--set: expected KEY=VALUE" in capsys.readouterr().err


def test_a_config_error_exits_2_without_a_traceback(tmp_path):
    cfg = _data_yaml(tmp_path, "stages: {language: {min_score: 1.5}}\n")
    run = subprocess.run([sys.executable, "-m", "llmforge.cli", "data", "run", "--config", str(cfg)],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert run.returncode == 2
    assert run.stderr.startswith("error: invalid config") and "Traceback" not in run.stderr
    assert "stages.language.min_score" in run.stderr


def test_a_bad_flag_value_names_the_flag(tmp_path, capsys):
    (tmp_path / "p.txt").write_text("a\n")
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\nnot json\n')

    def train_quality(negative: str, *flags: str) -> str:
        argv = ["data", "train-quality", "--positive", str(tmp_path / "p.txt"), "--negative", str(tmp_path / negative),
                "--out", str(tmp_path / "m.npz"), *flags]
        assert main(argv) == 2
        return capsys.readouterr().err

    assert "--buckets-log2 (QualityFeatureConfig.num_buckets_log2): Input should be less than or equal to 26" in \
        train_quality("p.txt", "--buckets-log2", "40")
    assert f"--negative {tmp_path / 'missing.txt'}: no such file" in train_quality("missing.txt")
    assert "bad.jsonl:2: not a JSON object per line" in train_quality("bad.jsonl")
    assert not (tmp_path / "m.npz").exists()


@pytest.mark.parametrize("bug", [RuntimeError("a bug"), ValueError("a bug that happens to be a ValueError"),
                                 KeyError("missing")])
def test_an_unexpected_exception_is_not_swallowed(tmp_path, monkeypatch, bug):
    import llmforge.cli.data

    def broken(*args, **kwargs):
        raise bug

    monkeypatch.setattr(llmforge.cli.data, "load_with_overrides", broken)
    with pytest.raises(type(bug)) as raised:
        main(["data", "validate", "--config", str(_data_yaml(tmp_path))])
    assert raised.value is bug


def test_user_errors_are_one_family():
    from dataproc.outputs.ledger import OutputConflictError
    from dataproc.reading.inputs import InputError
    from llmforge.common.config import ConfigError
    from llmforge.common.errors import UserError

    for cls in (ConfigError, InputError, OutputConflictError):
        assert issubclass(cls, UserError) and issubclass(cls, ValueError)


# ------------------------------------------------------------------------------ data verbs


def test_sample_warc_writes_the_file_and_its_truth(tmp_path, capsys):
    from dataproc.reading.records import WarcReadOptions, iter_html_responses
    from dataproc.synthetic.ground_truth import GroundTruth

    out = tmp_path / "sub" / "s.warc.gz"
    assert main(["data", "sample-warc", "--out", str(out), "--docs", "30", "--seed", "3"]) == 0
    truth_path = tmp_path / "sub" / "s.warc.truth.json"
    assert str(truth_path) in capsys.readouterr().out
    truth = GroundTruth.from_json(truth_path)
    assert (truth.n_docs, truth.seed) == (30, 3) and len(truth.by_kind("article")) == 30
    counts: collections.Counter = collections.Counter()
    with open(out, "rb") as f:
        kept = list(iter_html_responses(f, "src", WarcReadOptions(), counts))
    assert dict(counts) == truth.expected_counts
    assert {d["id"] for d in kept} == truth.kept_ids()
    assert counts["skip_corrupt"] > 0  # corrupt records unless --clean

    clean = tmp_path / "clean.warc.gz"
    assert main(["data", "sample-warc", "--out", str(clean), "--docs", "30", "--clean"]) == 0
    clean_truth = GroundTruth.from_json(tmp_path / "clean.warc.truth.json")
    assert clean_truth.expected_counts.get("skip_corrupt", 0) == 0 and clean_truth.seed == 0


def test_sample_warc_defaults_come_from_write_sample_warc(tmp_path):
    import inspect

    from dataproc.synthetic.ground_truth import GroundTruth
    from dataproc.synthetic.sample_warc import write_sample_warc

    assert main(["data", "sample-warc", "--out", str(tmp_path / "d.warc.gz")]) == 0
    truth = GroundTruth.from_json(tmp_path / "d.warc.truth.json")
    defaults = inspect.signature(write_sample_warc).parameters
    assert (truth.n_docs, truth.seed) == (defaults["n_docs"].default, defaults["seed"].default) == (500, 0)


def _two_classes(tmp_path, n: int = 80) -> tuple[Path, Path]:
    import random

    from dataproc.synthetic.english import generated_documents

    rng = random.Random(0)
    spam = ["cheap", "pills", "casino", "bonus", "click", "now", "free", "win"]
    pos, neg = tmp_path / "pos.txt", tmp_path / "neg.jsonl"
    pos.write_text("\n".join(d.replace("\n", " ") for d in generated_documents(n, seed=1)) + "\n")
    neg.write_text("".join(json.dumps({"text": " ".join(rng.choices(spam, k=60))}) + "\n" for _ in range(n)))
    return pos, neg


def test_train_quality_without_flags_trains_what_the_old_explicit_defaults_did(tmp_path, capsys):
    import numpy as np

    from dataproc.corpus.quality.features import QualityFeatureConfig
    from dataproc.corpus.quality.model import QualityModel
    from dataproc.corpus.quality.train import train_quality_model

    pos, neg = _two_classes(tmp_path)
    out = tmp_path / "q.npz"
    assert main(["data", "train-quality", "--positive", str(pos), "--negative", str(neg), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    metrics = json.loads(printed.split("\nheld-out accuracy")[0])
    assert metrics["n_pos"] == metrics["n_neg"] == 80 and metrics["heldout_auc"] > 0.95
    assert f"model {out}" in printed
    model = QualityModel.load(out)
    assert model.feature_config == QualityFeatureConfig()
    # What the CLI passed explicitly before its flags defaulted to None.
    train_quality_model([pos], [neg], tmp_path / "explicit.npz", epochs=5, seed=0, txt_mode="lines",
                        feature_config=QualityFeatureConfig(ngrams=2, num_buckets_log2=20))
    explicit = QualityModel.load(tmp_path / "explicit.npz")
    assert np.array_equal(model.weights, explicit.weights) and model.bias == explicit.bias


def test_tokenize_text_writes_shards_reports_the_manifest_and_reuses_them(tmp_path, capsys):
    from dataproc.synthetic.english import generated_documents

    docs = generated_documents(300, seed=3)
    (tmp_path / "a.txt").write_text("\n\n".join(docs[:150]))
    (tmp_path / "b.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in docs[150:]))
    out = tmp_path / "shards"
    argv = ["data", "tokenize-text", "--input", str(tmp_path / "a.txt"), str(tmp_path / "b.jsonl"), "--out", str(out),
            "--vocab-size", "400", "--shard-tokens", "5000"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert printed.strip() == (f"{manifest['total_tokens']:,} tokens in {manifest['total_documents']:,} documents, "
                               f"{len(manifest['shards'])} shards -> {out}")
    assert manifest["total_documents"] == 300 and len(manifest["shards"]) > 1
    assert manifest["domains"]["a.txt"]["documents"] == 150  # paragraphs: the default txt mode
    assert manifest["vocab_size"] == 400 and manifest["config"]["shard_tokens"] == 5000
    for entry in manifest["shards"]:
        assert (out / f"{entry['name']}.bin").stat().st_size == entry["tokens"] * 2  # uint16
    files = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert "tokenizer.json" in files

    assert main(argv) == 0  # rerun: the same shards, nothing rewritten
    assert capsys.readouterr().out == printed
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == files


def test_tokenize_text_defaults_come_from_shards_from_text_files(tmp_path, capsys):
    import inspect

    from dataproc.synthetic.english import generated_documents
    from dataproc.tokenization.text_files import shards_from_text_files

    (tmp_path / "a.txt").write_text("\n\n".join(generated_documents(40, seed=4)))
    assert main(["data", "tokenize-text", "--input", str(tmp_path / "a.txt"), "--out", str(tmp_path / "s")]) == 0
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    defaults = inspect.signature(shards_from_text_files).parameters
    assert manifest["config"]["shard_tokens"] == defaults["shard_tokens"].default == 1 << 24
    assert json.loads((tmp_path / "s" / "tokenizer.json").read_text())["model"]["type"] == "BPE"
    assert main(["data", "tokenize-text", "--input", str(tmp_path / "a.txt"), "--out", str(tmp_path / "t"),
                 "--shard-tokens", "0"]) == 2
    assert "--shard-tokens (TokenizeOptions.shard_tokens): Input should be greater than 0" in capsys.readouterr().err


# ------------------------------------------------------------------------------ demo


def test_demo_configs_ship_in_the_package_and_validate():
    from dataproc.config import DataJobConfig
    from llmforge.common.config import load_config
    from llmforge.demo import DATA_CONFIG, TRAIN_CONFIG, packaged_config
    from training.config import PretrainConfig

    data, train = packaged_config(DATA_CONFIG), packaged_config(TRAIN_CONFIG)
    assert data.parent == REPO / "llmforge" / "configs" and data.is_file() and train.is_file()
    assert not (REPO / "cluster" / "jobs" / DATA_CONFIG).exists()  # one copy
    assert load_config(DataJobConfig, data).stages.tokenize.enabled
    assert load_config(PretrainConfig, train, {"data.shards": "x"}).scaling.num_workers == 2
    pyproject = (REPO / "pyproject.toml").read_text()
    assert 'llmforge = ["configs/*.yaml"]' in pyproject


def test_align_bad_key_or_missing_model_stops_before_any_work(tmp_path, capsys):
    data = tmp_path / "pairs.jsonl"
    data.write_text('{"prompt": "hi", "chosen": "a", "rejected": "b"}\n')
    out = tmp_path / "out"
    assert main(["align", "dpo", "--model", str(tmp_path / "nope"), "--data", str(data), "--output", str(out)]) == 2
    assert "--model" in capsys.readouterr().err and not out.exists()
    (tmp_path / "m").mkdir()
    assert main(["align", "dpo", "--model", str(tmp_path / "m"), "--data", str(data), "--output", str(out),
                 "--set", "betta=0.2"]) == 2
    err = capsys.readouterr().err
    assert "betta" in err and "beta" in err and not out.exists()
    assert main(["align", "reward", "--model", str(tmp_path / "m"), "--data", str(data), "--output", str(out),
                 "--set", "lora.enabled=true"]) == 2
    assert "lora.enabled" in capsys.readouterr().err and not out.exists()


def test_an_unreachable_ray_address_is_named_at_once(tmp_path):
    """RAY_ADDRESS (what `ray job submit` sets, or a user's export) pointing at nothing: an error
    naming it within seconds, where Ray's own client retries for minutes; nothing is written."""
    import socket
    import time

    from dataproc.synthetic.sample_warc import write_sample_warc

    with socket.socket() as s:  # a port nothing listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    warc = tmp_path / "a.warc.gz"
    write_sample_warc(warc, n_docs=5, seed=0)
    # A process of its own: this one may already be connected to the session's Ray.
    env = {**os.environ, "RAY_ADDRESS": f"127.0.0.1:{port}", "PYTHONPATH": str(REPO)}
    start = time.time()
    done = subprocess.run([sys.executable, "-m", "llmforge.cli", "data", "run", "--config",
                           str(REPO / "llmforge" / "configs" / "data_demo.yaml"), "--set", f"input.paths=[{warc}]",
                           "--set", f"output.path={tmp_path / 'out'}"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert time.time() - start < 60
    err = done.stderr
    assert f"no Ray cluster answers at 127.0.0.1:{port} (RAY_ADDRESS)" in err and "ray start --head" in err
    assert not list((tmp_path / "out").rglob("*.parquet"))
