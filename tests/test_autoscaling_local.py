"""`cluster/local.yaml` under Ray's real autoscaler (fake_multinode provider: worker "nodes" are
raylets the autoscaler starts on this machine): a head with 1 CPU, a `llmforge data run` job
whose stage actors ask 2 CPUs each (`execution.stage_cpus=2`), so it only runs once the
autoscaler adds a `cpu_data` worker (2 CPUs). Then the idle worker goes away again; and a worker
node killed in the middle of the job does not cost or duplicate a single document
(LLMFORGE_SLOW=1; the job either survives the kill or a rerun of the same command resumes).

Teardown kills only this head's processes (its process tree and whatever names its temp dir),
never `ray stop`, which would take every Ray on the machine with it.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import time
import uuid
from pathlib import Path

import psutil
import pyarrow.dataset as pads
import pytest
import yaml

from dataproc.synthetic.sample_warc import write_sample_warc
from tests.support.ray_head import BIN, Head, free_port, ray_head, submit

pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parents[1]
N_FILES, DOCS_PER_FILE = 4, 60
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


@pytest.fixture(scope="module")
def warcs(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("warc")
    for i in range(N_FILES):
        write_sample_warc(path / f"s{i}.warc.gz", n_docs=DOCS_PER_FILE, seed=i)
    return path


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A head started with cluster/local.yaml, as its header says, on free ports."""
    gcs = free_port()
    config = yaml.safe_load((REPO / "cluster" / "local.yaml").read_text())
    # The provider starts worker raylets against this address (its default is port 6379).
    config["provider"]["gcs_address"] = f"127.0.0.1:{gcs}"
    path = tmp_path_factory.mktemp("autoscaler") / "local.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1",
           # A worker whose raylet stops reporting is terminated (and replaced) after this many
           # seconds instead of the default 30 (autoscaler.terminate_unhealthy_nodes).
           "AUTOSCALER_HEARTBEAT_TIMEOUT_S": "10"}
    with ray_head(num_cpus=1, extra_args=[f"--autoscaling-config={path}"], extra_env=env, gcs_port=gcs) as head:
        deadline = time.time() + 60
        while not any(n["is_head_node"] and n["state"] == "ALIVE" for n in _nodes(head)):
            assert time.time() < deadline, "the head node is not listed as alive after 60 s"
            time.sleep(1)
        yield head


def _nodes(head: Head) -> list[dict]:
    """Every node the GCS knows (state API), dead ones included."""
    done = _ray(head, "list", "nodes", "--format", "json", "--detail", "--limit", "1000", "--address", head.dashboard)
    # Before the head's raylet has registered: "No resource in the cluster".
    return [] if done.stdout.startswith("No resource") else json.loads(done.stdout)


def _workers(head: Head, state: str = "ALIVE") -> list[dict]:
    return [n for n in _nodes(head) if not n["is_head_node"] and n["state"] == state]


def _ray(head: Head, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([str(BIN / "ray"), *args], env=head.env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done


def _job_cmd(head: Head, warcs: Path, out: Path, *sets: str, wait: bool = False) -> list[str]:
    overrides = [
        # The stages run on an actor pool whose actors need 2 CPUs: more than the head has.
        "execution.stage_actors=2", "execution.stage_cpus=2",
        # Only documents/ (the per-document stages), where the ledger counts every row.
        *(f"stages.{s}.enabled=false" for s in ("exact_dedup", "minhash_dedup", "domains", "tokenize")),
        *sets,
    ]
    return [str(BIN / "ray"), "job", "submit", *([] if wait else ["--no-wait"]), "--address", head.dashboard,
            "--working-dir", str(REPO),
            "--runtime-env-json", json.dumps({"excludes": [".venv", ".venv-peer", "runs", ".git"]}),
            "--", "llmforge", "data", "run", "--config", "llmforge/configs/data_demo.yaml",
            "--input", str(warcs), "--output", str(out), *(x for s in overrides for x in ("--set", s))]


def _job_status(head: Head, job_id: str) -> str:
    text = _ray(head, "job", "status", "--address", head.dashboard, job_id)
    # `ray job status` ends with "Job 'ID' succeeded" (failed, was stopped); "Status message:
    # Job is currently running." or "... pending" before.
    found = re.findall(r"\b(succeeded|failed|stopped)\b", text.stdout + text.stderr, re.IGNORECASE)
    return found[-1].upper() if found else "RUNNING"



def _submit_no_wait(head: Head, cmd: list[str]) -> str:
    job_id = f"autoscaling-{uuid.uuid4().hex[:8]}"
    i = cmd.index("submit") + 1
    done = submit([*cmd[:i], "--submission-id", job_id, *cmd[i:]], head.env, check=False)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    return job_id


def _document_ids(out: Path) -> list[str]:
    return pads.dataset(out / "documents", format="parquet").to_table(columns=["id"]).column("id").to_pylist()


def _wait_idle(head: Head, timeout: float) -> float:
    """Seconds until no worker node is alive (asserting it happens within `timeout`)."""
    start = time.time()
    while _workers(head):
        assert time.time() - start < timeout, f"workers still alive after {timeout:.0f} s: {_workers(head)}"
        time.sleep(2)
    return time.time() - start


@pytest.fixture(scope="module")
def uninterrupted(cluster, warcs, tmp_path_factory):
    """The job run once without faults, with what was seen of the nodes while it ran."""
    head = cluster
    assert _workers(head) == [], "the cluster starts with the head only"
    out = tmp_path_factory.mktemp("run") / "out"
    job = _submit_no_wait(head, _job_cmd(head, warcs, out))
    seen: dict[str, dict] = {}
    deadline = time.time() + 180
    while (status := _job_status(head, job)) not in TERMINAL:
        assert time.time() < deadline, f"job {job} still {status} after 180 s"
        seen.update({n["node_id"]: n for n in _workers(head)})
        time.sleep(2)
    log = _ray(head, "job", "logs", "--address", head.dashboard, job).stdout
    return {"status": status, "log": log, "workers": seen, "out": out,
            "idle_after_s": _wait_idle(head, timeout=90)}


def test_job_needing_more_cpus_than_the_head_adds_workers_then_they_go(uninterrupted):
    run = uninterrupted
    assert run["status"] == "SUCCEEDED", run["log"][-3000:]
    # The stage actors (2 CPUs) could only be placed on a worker the autoscaler added.
    assert run["workers"], "no worker node was added while the job ran"
    assert {n["resources_total"].get("CPU") for n in run["workers"].values()} == {2.0}
    # The idle worker was removed (idle_timeout_minutes) within _wait_idle's timeout: measured.
    assert run["idle_after_s"] < 90
    stats = json.loads((run["out"] / "stats.json").read_text())
    ids = _document_ids(run["out"])
    assert stats["inputs"] == N_FILES and len(ids) == stats["documents_out"] > 0
    assert len(set(ids)) == len(ids)


def _worker_raylets(head: Head) -> list[psutil.Process]:
    """The fake provider's worker nodes: raylets the autoscaler's monitor process started."""
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        try:
            if proc.info["name"] == "raylet" and any(head.temp_dir in a for a in proc.info["cmdline"] or ()):
                parent = proc.parent()
                if parent and any("monitor.py" in a for a in parent.cmdline()):
                    found.append(proc)
        except psutil.Error:
            continue
    return found


def _kill_tree(proc: psutil.Process) -> None:
    """A node dies: its raylet and everything under it (workers, agents), SIGKILL."""
    for p in [*proc.children(recursive=True), proc]:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass


@pytest.mark.skipif(os.environ.get("LLMFORGE_SLOW") != "1", reason=(
    "set LLMFORGE_SLOW=1: 40 s to 3 min here (after the kill the autoscaler waits out "
    "AUTOSCALER_HEARTBEAT_TIMEOUT_S, then starts a new worker raylet and the stage actor on "
    "it), which does not fit this file's 3 minutes on a shared 2-core machine"))
def test_worker_node_killed_mid_job_every_document_exactly_once(cluster, warcs, uninterrupted, tmp_path):
    head = cluster
    expected = _document_ids(uninterrupted["out"])
    assert uninterrupted["status"] == "SUCCEEDED" and expected
    assert _workers(head) == [], "the previous job's worker is still alive"
    out = tmp_path / "out"
    # Blocks of a few documents (Ray Data merges what a read yields up to block_mb): many small
    # writes, so there is a "middle" to kill the node in.
    # One stage actor: one worker node, the one killed.
    small_blocks = ("execution.docs_per_block=1", "execution.block_mb=0.005", "execution.stage_actors=1")
    cmd = _job_cmd(head, warcs, out, *small_blocks)
    job = _submit_no_wait(head, cmd)

    # Wait for the middle: a worker is up and some, not all, documents are written.
    deadline, next_status = time.time() + 150, 0.0
    while True:
        if time.time() > next_status:  # `ray job status` takes a second or two: not every poll
            status = _job_status(head, job)
            assert status not in TERMINAL, f"the job ended ({status}) before a worker could be killed"
            next_status = time.time() + 5
        assert time.time() < deadline, "no document was written within 150 s"
        parts = list(out.glob("_work/*/_part-*.json"))
        raylets = _worker_raylets(head)
        if parts and raylets:
            break
        time.sleep(0.1)
    finished_before = len(list(out.glob("documents/*/_stats.json")))
    victims = {n["node_id"] for n in _workers(head)}
    for raylet in raylets:
        _kill_tree(raylet)
    assert finished_before < N_FILES, "every input was finished before the kill: not mid-job"

    deadline, after = time.time() + 240, set()
    while (status := _job_status(head, job)) not in TERMINAL:
        assert time.time() < deadline, f"job {job} still {status} 240 s after the kill"
        after.update(n["node_id"] for n in _workers(head))
        time.sleep(2)
    dead = {n["node_id"] for n in _workers(head, "DEAD")}
    assert victims and victims <= dead, (victims, dead)
    print(f"killed {len(raylets)} worker node(s) with {finished_before}/{N_FILES} inputs finished; "
          f"job {status}; workers after the kill: {len(after - victims)} new")
    # Whether a new worker comes up depends on whether the stage actor still had blocks when
    # its node died (the writes left over run on the head): the print says which it was.
    if status != "SUCCEEDED":
        # The job died with its node: the same command again resumes (the output ledger).
        log = submit(_job_cmd(head, warcs, out, *small_blocks, wait=True), head.env,
                     timeout=300).stdout
        assert "already done" in log
    ids = _document_ids(out)
    assert len(ids) == len(set(ids)), "a document was written twice"
    assert sorted(ids) == sorted(expected), "documents missing or extra against the uninterrupted run"
    assert json.loads((out / "stats.json").read_text())["documents_out"] == len(expected)
