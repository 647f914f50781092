"""The CLI: light to import, and a bad config stops before any work with the key and reason."""
import subprocess
import sys

from llmforge.cli import main


def test_help_imports_neither_torch_nor_ray():
    code = (
        "import sys, contextlib, io\n"
        "from llmforge.cli import build_parser\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    try: build_parser().parse_args(['data', 'run', '--help'])\n"
        "    except SystemExit: pass\n"
        "assert '--config' in out.getvalue()\n"
        "print(sorted(m for m in ('torch', 'ray', 'deepspeed', 'pyarrow') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


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
