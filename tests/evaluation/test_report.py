"""evaluation.report: results.json files of several runs side by side as Markdown tables and
PNG charts, read generically (every numeric metric per task, `_stderr` siblings as error bars,
lm-evaluation-harness's "acc,none" keys too)."""
from __future__ import annotations

import json

import pytest

from evaluation.report import load_run, task_metrics, write_report
from llmforge.cli import main
from llmforge.common.errors import UserError

BASE = {"model": "runs/base", "n": 100, "config": {"shots": 5},
        "results": {"arc_easy": {"acc": 0.512, "acc_stderr": 0.012, "acc_norm": 0.55, "acc_norm_stderr": 0.011,
                                 "alias": "ARC-Easy", "higher_is_better": True},
                    "wikitext": {"bits_per_byte": 1.234, "word_perplexity": 35.6}}}
SFT = {"model": "runs/sft",
       "results": {"arc_easy": {"acc,none": 0.601, "acc_stderr,none": 0.010, "acc,strict": 0.58},
                   "judge": {"win_rate": 0.71, "win_rate_stderr": 0.03, "lc_win_rate": 0.62,
                             "lc_win_rate_stderr": 0.035}}}


def write(tmp_path, name, record):
    d = tmp_path / name
    d.mkdir()
    (d / "results.json").write_text(json.dumps(record))
    return d


def test_metrics_are_read_generically():
    assert task_metrics(BASE["results"]["arc_easy"]) == {"acc": (0.512, 0.012), "acc_norm": (0.55, 0.011)}
    assert task_metrics(SFT["results"]["arc_easy"]) == {"acc": (0.601, 0.010), "acc,strict": (0.58, None)}


def test_report_of_two_runs_side_by_side(tmp_path):
    import matplotlib.image

    base, sft = write(tmp_path, "base", BASE), write(tmp_path, "sft", SFT)
    written = write_report([str(base), str(sft)], str(tmp_path / "report"))
    assert written["runs"] == ["base", "sft"] and written["tasks"] == ["arc_easy", "wikitext", "judge"]
    md = (tmp_path / "report" / "report.md").read_text()
    # A runs table with the top-level scalars, then a metrics x runs table per task.
    assert "| run | path | model | n |" in md and "| base | `" in md and "| runs/sft | — |" in md
    assert "## arc_easy" in md and "| metric | base | sft |" in md
    assert "| acc | 0.5120 ± 0.0120 | 0.6010 ± 0.0100 |" in md
    assert "| acc_norm | 0.5500 ± 0.0110 | — |" in md and "| acc,strict | — | 0.5800 |" in md
    assert "| word_perplexity | 35.6 | — |" in md
    assert "| lc_win_rate | — | 0.6200 ± 0.0350 |" in md
    assert "alias" not in md and "higher_is_better" not in md and "shots" not in md
    for task in written["tasks"]:
        png = tmp_path / "report" / f"{task}.png"
        assert f"![{task}]({task}.png)" in md
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert matplotlib.image.imread(str(png)).shape[2] in (3, 4)
    csv = (tmp_path / "report" / "metrics.csv").read_text().splitlines()
    assert csv[0] == "run,task,metric,value,stderr" and "base,arc_easy,acc,0.512,0.012" in csv


def test_bad_runs_are_named(tmp_path, capsys):
    with pytest.raises(UserError, match="no results.json"):
        load_run(str(tmp_path))
    (tmp_path / "results.json").write_text(json.dumps({"results": {"t": {"note": "text only"}}}))
    with pytest.raises(UserError, match="no numeric metric"):
        load_run(str(tmp_path))
    (tmp_path / "results.json").write_text("[1, 2]")
    with pytest.raises(UserError, match='expected an object with a "results" object'):
        load_run(str(tmp_path / "results.json"))
    out = tmp_path / "out"
    assert main(["eval", "report", "--runs", str(write(tmp_path, "base", BASE)), "--labels", "a", "b",
                 "--output", str(out)]) == 2
    assert "--labels: 2 labels for 1 runs" in capsys.readouterr().err


def test_eval_report_cli(tmp_path, capsys):
    base, sft = write(tmp_path, "base", BASE), write(tmp_path, "sft", SFT)
    out = tmp_path / "out"
    assert main(["eval", "report", "--runs", str(base), str(sft / "results.json"), "--labels", "base", "SFT",
                 "--output", str(out), "--no-charts"]) == 0
    assert "report of 2 run(s), 3 task(s)" in capsys.readouterr().out
    md = (out / "report.md").read_text()
    assert "| metric | base | SFT |" in md and not list(out.glob("*.png"))
