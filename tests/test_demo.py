"""`llmforge demo`'s step runner on tiny fake steps (fast), and the whole demo end to end (slow:
only with LLMFORGE_SLOW=1)."""
from __future__ import annotations

import io
import json
import os
import sys

import pytest

from llmforge.demo_runner import MARKER, DemoContext, DemoStep, StepFailed, run_steps


def fake_steps(calls: list[str], fail: set[str] | None = None):
    """Three steps a -> b -> c; each writes out.txt in its directory, prints to fd 1 and 2 and
    via sys.stdout, logs; `fail` (a set, read when the step runs) makes a step raise."""
    fail = fail if fail is not None else set()

    def make(name: str):
        def run(ctx):
            calls.append(name)
            os.write(1, f"{name} fd1 noise\n".encode())
            os.write(2, f"{name} fd2 noise\n".encode())
            print(f"{name} print noise")
            import logging

            logging.getLogger("ray").warning(f"{name} ray logger noise")
            ctx.log(f"{name} log line")
            if name in fail:
                raise RuntimeError(f"{name} broke")
            d = ctx.path(name)
            d.mkdir(parents=True, exist_ok=True)
            before = ctx.results.get(chr(ord(name) - 1), {}).get("value", 0)
            (d / "out.txt").write_text(str(before + 1))
            return {"value": before + 1, "size": ctx.options.get(name, 0)}
        return DemoStep(name, f"step {name}", name, run, config=lambda ctx: {"size": ctx.options.get(name, 0)},
                        estimate_s=1)

    return [make(n) for n in "abc"]


def test_rerun_skips_finished_steps_and_reads_their_summaries(tmp_path):
    calls: list[str] = []
    term = io.StringIO()
    results = run_steps(fake_steps(calls), DemoContext(tmp_path), terminal=term)
    assert calls == ["a", "b", "c"] and results["c"]["value"] == 3
    assert json.loads((tmp_path / "b" / MARKER).read_text())["summary"]["value"] == 2
    calls.clear()
    ctx = DemoContext(tmp_path)
    results = run_steps(fake_steps(calls), ctx, terminal=term)
    assert calls == [] and results == {"a": {"value": 1, "size": 0}, "b": {"value": 2, "size": 0},
                                       "c": {"value": 3, "size": 0}}
    assert term.getvalue().count("skipped") == 3


def test_config_change_reruns_that_step_and_the_later_ones(tmp_path):
    calls: list[str] = []
    run_steps(fake_steps(calls), DemoContext(tmp_path), terminal=io.StringIO())
    (tmp_path / "b" / "stale.txt").write_text("made with the old config")
    calls.clear()
    results = run_steps(fake_steps(calls), DemoContext(tmp_path, options={"b": 5}), terminal=io.StringIO())
    assert calls == ["b", "c"] and results["b"]["size"] == 5
    assert not (tmp_path / "b" / "stale.txt").exists()  # a stale step starts from an empty directory


def test_until_runs_a_prefix_then_the_rest(tmp_path):
    calls: list[str] = []
    run_steps(fake_steps(calls), DemoContext(tmp_path), until="b", terminal=io.StringIO())
    assert calls == ["a", "b"] and not (tmp_path / "c").exists()
    run_steps(fake_steps(calls), DemoContext(tmp_path), terminal=io.StringIO())
    assert calls == ["a", "b", "c"]
    with pytest.raises(Exception, match="no such step; the steps are a, b, c"):
        run_steps(fake_steps(calls), DemoContext(tmp_path), until="zzz", terminal=io.StringIO())


def test_a_failing_step_stops_naming_it_and_its_log_and_a_rerun_resumes_there(tmp_path):
    calls: list[str] = []
    fail = {"b"}
    term = io.StringIO()
    with pytest.raises(StepFailed) as info:
        run_steps(fake_steps(calls, fail), DemoContext(tmp_path), terminal=term)
    log = tmp_path / "logs" / "b.log"
    assert info.value.step == "b" and info.value.log_path == log
    assert "'b' failed" in str(info.value) and str(log) in str(info.value)
    assert calls == ["a", "b"] and not (tmp_path / "b" / MARKER).exists()
    assert "RuntimeError: b broke" in log.read_text()  # the traceback is in the step's log
    assert "b: FAILED" in term.getvalue()
    fail.clear()
    calls.clear()
    run_steps(fake_steps(calls, fail), DemoContext(tmp_path), terminal=term)
    assert calls == ["b", "c"]


def test_logs_go_to_the_step_log_file_not_the_terminal(tmp_path, capfd):
    calls: list[str] = []
    term = io.StringIO()
    run_steps(fake_steps(calls), DemoContext(tmp_path), terminal=term)
    out, err = capfd.readouterr()
    shown = term.getvalue() + out + err
    assert "noise" not in shown and "log line" not in shown
    for name in "abc":
        text = (tmp_path / "logs" / f"{name}.log").read_text()
        for what in ("fd1 noise", "fd2 noise", "print noise", "ray logger noise", "log line"):
            assert f"{name} {what}" in text, (name, what, text)
    assert "[3/3] c: done" in term.getvalue()
    # the descriptors are back: this reaches the terminal again
    os.write(1, b"after\n")
    print("after print")
    assert capfd.readouterr().out == "after\nafter print\n" and sys.stdout is not None


def test_demo_steps_are_named_and_their_configs_fingerprint(tmp_path):
    from llmforge.demo import STEP_NAMES, demo_steps
    from llmforge.demo_runner import fingerprints

    steps = demo_steps()
    assert [s.name for s in steps] == list(STEP_NAMES)
    assert len({s.directory for s in steps}) == len(steps)
    ctx = DemoContext(tmp_path, options={"files": 1, "docs": 10, "input": None, "use_shared": False})
    assert len(set(fingerprints(steps, ctx).values())) == len(steps)


@pytest.mark.skipif(os.environ.get("LLMFORGE_SLOW") != "1",
                    reason="the whole demo takes minutes; set LLMFORGE_SLOW=1 to run it")
def test_whole_demo_end_to_end(tmp_path):
    from llmforge.cli import main

    argv = ["demo", "--workdir", str(tmp_path / "demo"), "--files", "2", "--docs", "100", "--no-shared-data"]
    assert main(argv) == 0  # generated data only: what a checkout without ../shared/data gets
    report = (tmp_path / "demo" / "eval" / "report" / "report.md").read_text()
    for task in ("heldout", "arithmetic_mc", "marker_mc", "contamination", "judge"):
        assert f"## {task}" in report, task
    assert (tmp_path / "demo" / "hf" / "config.json").exists()
    from llmforge.demo import STEP_NAMES

    for step in STEP_NAMES:
        assert (tmp_path / "demo" / "logs" / f"{step}.log").stat().st_size > 0, step
    # every corpus stage ran, the quality classifier the demo trained among them
    stats = json.loads((tmp_path / "demo" / "output" / "stats.json").read_text())
    ran = [s["stage"] for s in stats["stages"]]
    for stage in ("exact_dedup", "minhash_dedup", "decontaminate", "quality_model"):
        assert stage in ran, (stage, ran)
    import pyarrow.dataset as ds

    columns = ds.dataset(tmp_path / "demo" / "output" / "curated").schema.names
    for column in ("domain", "domain_score", "quality_score"):
        assert column in columns, (column, columns)
    assert "contaminated_by" in ds.dataset(tmp_path / "demo" / "output" / "corpus" / "decontaminated").schema.names
    quality = json.loads((tmp_path / "demo" / "quality" / "metrics.json").read_text())
    assert quality["heldout_auc"] > 0.7, quality
    # the pretrained model learnt more than token frequencies
    pretrain = json.loads((tmp_path / "demo" / "train" / MARKER).read_text())["summary"]
    assert pretrain["val_loss"] < pretrain["unigram_val_loss"] - 0.5, pretrain
    # a rerun skips every step
    before = {p: p.stat().st_mtime for p in (tmp_path / "demo").rglob(MARKER)}
    assert len(before) == len(STEP_NAMES) and main(argv) == 0
    assert before == {p: p.stat().st_mtime for p in (tmp_path / "demo").rglob(MARKER)}


def test_ctrl_c_stops_at_the_step_and_a_rerun_continues_there(tmp_path):
    calls: list[str] = []
    steps = fake_steps(calls)

    def interrupted(ctx):
        calls.append("b")
        (ctx.path("b")).mkdir(parents=True, exist_ok=True)
        (ctx.path("b", "partial.txt")).write_text("half")
        raise KeyboardInterrupt

    real_b = steps[1].run
    steps[1].run = interrupted
    term = io.StringIO()
    with pytest.raises(KeyboardInterrupt):
        run_steps(steps, DemoContext(tmp_path), terminal=term)
    assert "b: interrupted" in term.getvalue() and "continue at 'b'" in term.getvalue()
    assert not (tmp_path / "b" / MARKER).exists()
    steps[1].run = real_b
    calls.clear()
    run_steps(steps, DemoContext(tmp_path), terminal=io.StringIO())
    assert calls == ["b", "c"]
    # same config: what the interrupted run left stays for the step's own resume
    assert (tmp_path / "b" / "partial.txt").exists()


def test_demo_input_that_matches_nothing_stops_before_any_step(tmp_path, capsys):
    from llmforge.cli import main

    assert main(["demo", "--workdir", str(tmp_path / "d"), "--input", str(tmp_path / "none*.warc.gz")]) == 2
    assert "matches no file" in capsys.readouterr().err and not (tmp_path / "d" / "warc").exists()


def test_on_a_terminal_one_progress_line_is_redrawn(tmp_path):
    class Tty(io.StringIO):
        def isatty(self):
            return True

    term = Tty()
    run_steps(fake_steps([]), DemoContext(tmp_path), terminal=term)
    text = term.getvalue()
    assert "\r\033[K[1/3] a: step a  0:00 / ~0:01  (demo 0:00 / ~0:03)" in text
    assert text.endswith("\r\033[K[3/3] c: done in 0:00\n")
