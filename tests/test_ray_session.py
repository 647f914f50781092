"""How a job starts and stops its Ray: modules imported while Ray starts, the embedded Ray
stopped at exit, and the head start a job gives Ray before its first dataset: warmed workers.
(`warm_stages`, what the data job warms them with, is tested beside `run_stages` in
tests/dataproc.)"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time

import psutil

from llmforge.common.ray_session import warm_workers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A driver of its own (this session's Ray is already up, and init_ray would reuse it): starts an
# embedded Ray with a module to preload that nothing else imports and one that does not exist,
# then stops it as its exit does, and reports what it saw.
EMBEDDED_DRIVER = textwrap.dedent("""
    import json, sys
    import ray
    from llmforge.common import ray_session

    assert "tabnanny" not in sys.modules
    ray_session.init_ray(num_cpus=1, include_dashboard=False, preload=("tabnanny", "llmforge_no_such_module"))
    preloaded = "tabnanny" in sys.modules
    node = ray._private.worker._global_node
    pids = {kind: [info.process.pid for info in infos] for kind, infos in node.all_processes.items()}
    ray_session._stop_embedded_ray()
    print(json.dumps({"preloaded": preloaded, "pids": pids, "still_up": ray.is_initialized()}))
""")


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_embedded_ray_preloads_modules_and_its_exit_stops_every_process_it_started():
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    out = subprocess.run([sys.executable, "-c", EMBEDDED_DRIVER], capture_output=True, text=True, env=env,
                         cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["preloaded"]  # and the module that does not exist did not fail the start
    assert not seen["still_up"]
    assert {"raylet", "gcs_server", "monitor"} <= set(seen["pids"])
    pids = [pid for kind in seen["pids"].values() for pid in kind]
    deadline = time.time() + 30
    while time.time() < deadline:
        alive = [p for p in pids if _running(p)]
        if not alive:
            break
        time.sleep(0.2)
    assert not alive, {kind: [p for p in ps if p in alive] for kind, ps in seen["pids"].items()}

NO_CPU_WARNING = "does not have any available CPUs"


def _hold(directory: str, release: str, seconds: float) -> None:
    """Announce itself with a file, then hold its CPU until `release` exists (or `seconds`)."""
    import uuid

    open(os.path.join(directory, uuid.uuid4().hex), "w").close()
    deadline = time.time() + seconds
    while not os.path.exists(release) and time.time() < deadline:
        time.sleep(0.05)


def _wait_for_files(directory, n: int, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while len(list(directory.iterdir())) < n and time.time() < deadline:
        time.sleep(0.05)
    assert len(list(directory.iterdir())) == n


def _dataset_logs_while_cpus_held(ray, tmp_path, caplog, hold) -> list[str]:
    """Hold both CPUs with `hold(...)`, as a job's warm-up does, materialise a small dataset as
    a job's write does (it waits for the CPUs, released after a second) and return Ray Data's
    warnings. Ray Data warns once per process, so its once-only keys are reset first, as in a
    fresh job's driver."""
    from ray.util.debug import reset_log_once

    reset_log_once()
    started, release = tmp_path / "started", tmp_path / "release"
    started.mkdir()
    hold(_hold, 2, str(started), str(release), 60.0)
    _wait_for_files(started, 2)
    # Both CPUs held; the cluster's view of it (what Ray Data checks) follows within moments.
    deadline = time.time() + 30
    while ray.available_resources().get("CPU", 0) > 0 and time.time() < deadline:
        time.sleep(0.05)
    assert ray.available_resources().get("CPU", 0) == 0
    threading.Timer(1.0, release.touch).start()
    with caplog.at_level(logging.WARNING):
        logging.getLogger("ray.data").addHandler(caplog.handler)  # Ray Data's logs do not propagate
        try:
            rows = ray.data.range(4, override_num_blocks=2).map_batches(lambda b: b).materialize().take_all()
        finally:
            logging.getLogger("ray.data").removeHandler(caplog.handler)
    assert len(rows) == 4
    return [r.getMessage() for r in caplog.records]


def _plain_tasks(fn, count, *args) -> None:
    import ray

    task = ray.remote(num_cpus=1)(fn)
    for _ in range(count):
        task.remote(*args)


def test_ray_data_warns_of_no_free_cpu_when_other_tasks_hold_them(ray_local, tmp_path, caplog):
    # The control for the next test: the warning is there to be seen, and this test sees it.
    assert any(NO_CPU_WARNING in m for m in _dataset_logs_while_cpus_held(ray_local, tmp_path, caplog, _plain_tasks))


def test_warm_workers_hold_the_cpus_without_ray_data_warning_the_job_will_hang(ray_local, tmp_path, caplog):
    logs = _dataset_logs_while_cpus_held(ray_local, tmp_path, caplog, warm_workers)
    assert not any(NO_CPU_WARNING in m for m in logs), logs
