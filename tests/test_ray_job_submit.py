"""`ray job submit --working-dir . -- llmforge data run ...` against a real Ray head on this machine."""
from __future__ import annotations

import contextlib
import json
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from dataproc.synthetic.sample_warc import write_sample_warc
from tests.support.ray_head import ray_head as start_head
from tests.support.ray_head import submit

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def ray_head():
    """A head node (dashboard + job server) in its own process tree and temp dir, torn down by
    killing that tree. In its own temp dir, its address file goes with it: a `ray_current_cluster`
    left in /tmp/ray would send later embedded sessions' State API calls (Ray Train's placement
    group cleaner) to a dead GCS, 12 s at the end of every training run."""
    with start_head() as head:
        yield head.dashboard, head.env, head.metrics_url


def _submit(cmd: list[str], env: dict[str, str]) -> str:
    """Submit and wait; the job's log, asserting it succeeded."""
    done = submit(cmd, env)
    return done.stdout + done.stderr


# Every metric name a scrape of this module's head returned (the dashboard test reads them).
SCRAPED: set[str] = set()


def _scrape(metrics_url: str) -> str:
    text = ""
    with contextlib.suppress(OSError):
        text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
    SCRAPED.update(line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and line[0] != "#")
    return text


def _metric_lines(metrics_url: str, name: str, timeout: float = 60) -> list[str]:
    deadline, text = time.time() + timeout, _scrape(metrics_url)
    while name not in text and time.time() < deadline:
        time.sleep(2)
        text = _scrape(metrics_url)
    return [line for line in text.splitlines() if line.startswith((f"ray_{name}", name))]


def test_data_run_then_pretraining_as_ray_jobs(ray_head, tmp_path):
    address, env, metrics_url = ray_head
    warcs = tmp_path / "warc"
    warcs.mkdir()
    write_sample_warc(warcs / "s.warc.gz", n_docs=60, seed=3)
    out = tmp_path / "out"
    cmd = [str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir", str(REPO),
           "--runtime-env-json", json.dumps({"excludes": [".venv", ".venv-peer", "runs", ".git"]}),
           "--", "llmforge", "data", "run", "--config", "llmforge/configs/data_demo.yaml",
           "--input", str(warcs), "--output", str(out)]
    log = _submit(cmd, env)
    assert "documents out:" in log  # the funnel reaches the job log (the dashboard's Jobs page)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["documents_out"] > 0 and stats["inputs"] == 1

    # llmforge's counters reach the node's Prometheus endpoint (what the dashboard graphs).
    kept = _metric_lines(metrics_url, "llmforge_data_documents_kept")
    text = _scrape(metrics_url)
    assert kept, "llmforge_data_documents_kept never appeared on the metrics endpoint"
    # The sink counts what the per-document stages keep (dedup comes after, in corpus stages).
    per_document_out = next(s["out"] for s in stats["stages"] if s["stage"] == "pii")
    assert float(kept[0].rsplit(" ", 1)[1]) == per_document_out
    assert "llmforge_data_documents_dropped" in text and 'stage="language"' in text

    # A tiny pretraining job on those shards: Ray Train's 2 workers (ZeRO-2) run on the cluster.
    runs = tmp_path / "runs"
    cmd = [str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir", str(REPO),
           "--runtime-env-json", json.dumps({"excludes": [".venv", ".venv-peer", "runs", ".git"]}),
           "--", "llmforge", "train", "pretrain", "--config", "llmforge/configs/pretrain_demo.yaml",
           "--set", f"data.shards={out / 'shards'}", "--set", f"run.storage_path={runs}", "--set",
           "train.max_steps=4", "--set", "train.eval_every=2", "--set", "train.checkpoint_every=4",
           "--set", "train.log_every=2", "--set", "data.val_fraction=0.1"]
    log = _submit(cmd, env)
    rows = [json.loads(x) for x in (runs / "pretrain" / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in rows) == 4 and any("val_loss" in r for r in rows)
    from training.checkpoint import latest_checkpoint, read_meta

    assert read_meta(str(latest_checkpoint(runs / "pretrain")))["step"] == 4
    assert _metric_lines(metrics_url, "llmforge_train_tokens_per_s")


def test_align_dpo_as_a_ray_job(ray_head, tmp_path):
    """`llmforge align dpo` submitted as a job: the reference pass and Ray Train run on the
    cluster, results land in --output, and the DPO gauges reach the metrics endpoint."""
    from alignment.synthetic import preference_task, write_jsonl
    from tests.support.tiny_checkpoint import tiny_checkpoint

    address, env, metrics_url = ray_head
    model, _, _ = tiny_checkpoint(tmp_path / "model", max_seq_len=128)
    pairs = write_jsonl(preference_task(40, seed=1), tmp_path / "pairs.jsonl")
    out = tmp_path / "dpo"
    cmd = [str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir", str(REPO),
           "--runtime-env-json", json.dumps({"excludes": [".venv", ".venv-peer", "runs", ".git"]}),
           "--", "llmforge", "align", "dpo", "--model", str(model), "--data", str(pairs), "--output", str(out),
           "--set", "train.max_steps=3", "--set", "train.log_every=1"]
    log = _submit(cmd, env)
    assert "dpo: done" in log
    results = json.loads((out / "results.json").read_text())
    assert results["final"]["step"] == 3 and (out / "reference_logps" / "_SUCCESS").exists()
    assert (out / "loss.png").exists()
    assert _metric_lines(metrics_url, "llmforge_train_accuracy"), "the DPO accuracy gauge never appeared"


def test_eval_mc_as_a_ray_job(ray_head, tmp_path):
    """`llmforge eval mc --replicas 1` submitted as a job: the scoring actor runs on the cluster,
    the accuracy reaches the metrics endpoint as a gauge tagged with the task."""
    from tests.support.tiny_checkpoint import tiny_checkpoint

    address, env, metrics_url = ray_head
    model, _, _ = tiny_checkpoint(tmp_path / "model", max_seq_len=128)
    task = tmp_path / "task.jsonl"
    task.write_text("".join(json.dumps({"query": f"Question {i}: which?", "choices": ["yes", "no", "maybe"],
                                        "gold": i % 3}) + "\n" for i in range(12)))
    out = tmp_path / "mc"
    cmd = [str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir", str(REPO),
           "--runtime-env-json", json.dumps({"excludes": [".venv", ".venv-peer", "runs", ".git"]}),
           "--", "llmforge", "eval", "mc", "--model", str(model), "--task", str(task), "--replicas", "1",
           "--output", str(out)]
    _submit(cmd, env)
    results = json.loads((out / "results.json").read_text())
    (metrics,) = results["results"].values()
    assert metrics["n"] == 12 and 0.0 <= metrics["acc"] <= 1.0
    assert (out / "predictions.parquet").exists()
    (line,) = [x for x in _metric_lines(metrics_url, "llmforge_eval_acc") if "llmforge_eval_acc{" in x]
    assert 'task="' in line and float(line.rsplit(" ", 1)[1]) == pytest.approx(metrics["acc"])


def test_align_grpo_as_a_ray_job(ray_head, tmp_path):
    """`llmforge align grpo` submitted as a job: the driver's actor groups (policy trainer, rollout,
    reward) run on the cluster, results land in --output, reward gauges reach the metrics endpoint."""
    from alignment.synthetic import arithmetic_task
    from tests.support.tiny_checkpoint import tiny_checkpoint

    address, env, metrics_url = ray_head
    model, _, _ = tiny_checkpoint(tmp_path / "model", max_seq_len=128)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in arithmetic_task(8, seed=2)))
    out = tmp_path / "grpo"
    cmd = [str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir", str(REPO),
           "--runtime-env-json", json.dumps({"excludes": [".venv", ".venv-peer", "runs", ".git"]}),
           "--", "llmforge", "align", "grpo", "--model", str(model), "--data", str(prompts), "--output", str(out),
           "--reward", "tests.support.rewards:completion_length", "--set", "train.max_steps=2", "--set",
           "group_size=4", "--set", "train.prompts_per_step=4", "--set", "rollout.max_new_tokens=8",
           "--set", "data.eval_samples=0"]
    log = _submit(cmd, env)
    assert "grpo: done" in log and "step 2/2" in log
    results = json.loads((out / "results.json").read_text())
    assert results["steps"] == 2 and results["final"]["policy_version"] == 2
    assert results["counters"]["skipped_updates"] == 0
    for name in ("llmforge_train_reward_mean", "llmforge_train_entropy", "llmforge_train_time_sync"):
        assert _metric_lines(metrics_url, name), f"{name} never appeared"


def test_grafana_dashboard_queries_name_metrics_the_jobs_export(ray_head):
    """infra/monitoring/grafana_llmforge.json: every panel's query names a metric the scrape of
    this module's jobs (data, DPO, eval, GRPO) returned."""
    import re

    _, _, metrics_url = ray_head
    if not any(name.startswith(("ray_llmforge_", "llmforge_")) for name in SCRAPED):
        pytest.skip("needs this module's job tests to have run first (their scrapes)")
    _scrape(metrics_url)
    dashboard = json.loads((REPO / "infra" / "monitoring" / "grafana_llmforge.json").read_text())
    queried = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            names = re.findall(r"\b(?:ray_)?llmforge_[a-z_]+", target["expr"])
            assert names, (panel["title"], target["expr"])
            queried.update(names)
    assert sorted(queried - SCRAPED) == [], f"never scraped; scraped: {sorted(n for n in SCRAPED if 'llmforge' in n)}"
    assert len(queried) >= 12
