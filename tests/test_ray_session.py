"""How a job starts and stops its Ray: an embedded head without the steps a one-machine job
does not need, modules imported while Ray starts, the embedded Ray stopped at exit, and the
head start a job gives Ray before its first dataset: warmed workers.
(`warm_stages`, what the data job warms them with, is tested beside `run_stages` in
tests/dataproc.)"""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from types import SimpleNamespace

import psutil
import pytest

from llmforge.common import ray_session
from llmforge.common.errors import UserError
from llmforge.common.ray_session import warm_workers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A driver of its own (this session's Ray is already up, and init_ray would reuse it): starts an
# embedded Ray (with or without its dashboard) with a module to preload that nothing else
# imports and one that does not exist, runs a task, then stops Ray as its exit does, and
# reports what it saw.
EMBEDDED_DRIVER = textwrap.dedent("""
    import json, os, re, sys, time, urllib.request
    import ray
    from llmforge.common import ray_session

    assert "tabnanny" not in sys.modules
    dashboard = sys.argv[1] == "dashboard"
    ray_session.init_ray(num_cpus=1, include_dashboard=dashboard, preload=("tabnanny", "llmforge_no_such_module"))
    preloaded = "tabnanny" in sys.modules
    import gc
    # What the start made is frozen (out of the collector's lists), and the collector runs again.
    tracked = {id(o) for o in gc.get_objects()}
    gc_after_start = {"enabled": gc.isenabled(), "preload_frozen": id(vars(sys.modules["tabnanny"])) not in tracked,
                      "ray_frozen": id(vars(ray)) not in tracked}
    del tracked
    answer = ray.get(ray.remote(lambda: 6 * 7).remote())
    node = ray._private.worker._global_node
    url = node.webui_url
    status = state_api = None
    if dashboard:  # any HTTP answer is the dashboard's (401 where Ray's token auth is on)
        import urllib.error, urllib.request
        try:
            status = urllib.request.urlopen(f"http://{url}/api/version", timeout=30).status
        except urllib.error.HTTPError as err:
            status = err.code

        @ray.remote
        def own_actors():  # Ray's State API in a worker, as Ray Train's controller calls it
            from ray.util.state import list_actors
            return len(list_actors(timeout=20))

        state_api = ray.get(own_actors.remote(), timeout=120)
    worker_address = ray.get(ray.remote(lambda: os.environ.get("RAY_ADDRESS")).remote())
    # The agents' ports as the node announced them, and as the agents report them once up.
    ports = {name: getattr(node._ray_params, name) for name in
             ("metrics_agent_port", "metrics_export_port", "dashboard_agent_listen_port", "runtime_env_agent_port")}
    logs, agent_log, deadline = node.get_logs_dir_path(), "", time.time() + 60
    while "http address" not in agent_log and time.time() < deadline:
        time.sleep(0.2)
        agent_log = open(os.path.join(logs, "dashboard_agent.log")).read()
    env_agent_log = open(os.path.join(logs, "runtime_env_agent.log")).read()
    raylet_log = open(os.path.join(logs, "raylet.out")).read()
    stamp = lambda log, text: [line.lstrip("[")[:23] for line in log.splitlines() if text in line][:1]
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{ports['metrics_export_port']}/metrics", timeout=30).read()
    pids = {kind: [info.process.pid for info in infos] for kind, infos in node.all_processes.items()}
    ray_session._leave_ray()
    print(json.dumps({"preloaded": preloaded, "gc_after_start": gc_after_start, "answer": answer, "url": url, "status": status, "pids": pids,
                      "still_up": ray.is_initialized(), "state_api": state_api, "gcs": node.gcs_address,
                      "worker_address": worker_address, "driver_address": os.environ.get("RAY_ADDRESS"),
                      "ports": ports, "metrics_text": b"# TYPE" in metrics,
                      "agent_ports": re.findall(r"agent (?:grpc|http) address: [0-9.]+:([0-9]+)", agent_log),
                      "env_agent_port": re.findall(r"Listening to address [0-9.]+, port ([0-9]+)", env_agent_log),
                      "raylet_started": stamp(raylet_log, "Raylet of id"),
                      "agent_http_up": stamp(agent_log, "http address")}))
""")


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize("dashboard", ["dashboard", "no-dashboard"])
def test_embedded_ray_starts_without_monitor_preloads_modules_and_its_exit_stops_every_process(dashboard):
    # Ray's temp dir holds what a crashed `ray start` leaves: its address file naming a dead GCS.
    # (A short path: Ray's socket paths under it must stay within the 107-byte AF_UNIX limit.)
    ray_tmp = tempfile.mkdtemp(prefix="lf", dir="/tmp")
    os.makedirs(os.path.join(ray_tmp, "ray"))
    with open(os.path.join(ray_tmp, "ray", "ray_current_cluster"), "w") as f:
        f.write("127.0.0.1:1")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_TMPDIR": ray_tmp}
    env.pop("RAY_ADDRESS", None)
    try:
        out = subprocess.run([sys.executable, "-c", EMBEDDED_DRIVER, dashboard], capture_output=True, text=True,
                             env=env, cwd=REPO, timeout=300)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert out.returncode == 0, out.stderr[-3000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["preloaded"]  # and the module that does not exist did not fail the start
    assert seen["gc_after_start"] == {"enabled": True, "preload_frozen": True, "ray_frozen": True}
    assert seen["answer"] == 42
    assert not seen["still_up"]
    # Workers reach their own GCS, not the one the stale file names; the driver's env is untouched.
    assert seen["worker_address"] == seen["gcs"] and seen["driver_address"] is None
    # The agents took the ports the node announced (the metrics endpoint serves there), and the
    # raylet went on without waiting for the dashboard agent's HTTP server, the last port it
    # would otherwise wait for (log timestamps, same clock).
    ports = seen["ports"]
    assert all(ports.values()), ports
    assert seen["agent_ports"] == [str(ports["metrics_agent_port"]), str(ports["dashboard_agent_listen_port"])]
    assert seen["env_agent_port"] == [str(ports["runtime_env_agent_port"])] and seen["metrics_text"]
    assert seen["raylet_started"] and seen["agent_http_up"]
    assert seen["raylet_started"][0] < seen["agent_http_up"][0], (seen["raylet_started"], seen["agent_http_up"])
    started = set(seen["pids"])
    assert {"raylet", "gcs_server", "log_monitor"} <= started and "monitor" not in started
    if dashboard == "dashboard":  # up and answering when the start returns, as with Ray's own start
        assert "dashboard" in started and seen["url"]
        assert seen["status"] in (200, 401)
        assert seen["state_api"] >= 0  # answered by this node (the stale address would time out)
    else:  # Ray's own start would run its API server in minimal mode, serving nothing a job uses
        assert "dashboard" not in started and not seen["url"]
    pids = [pid for kind in seen["pids"].values() for pid in kind]
    deadline = time.time() + 30
    while time.time() < deadline:
        alive = [p for p in pids if _running(p)]
        if not alive:
            break
        time.sleep(0.2)
    assert not alive, {kind: [p for p in ps if p in alive] for kind, ps in seen["pids"].items()}


# A driver joining a running cluster (as under `ray job submit`): it leaves as its exit does.
JOINED_DRIVER = textwrap.dedent("""
    import json, sys
    import ray
    from llmforge.common import ray_session

    ray_session.init_ray(address=sys.argv[1])
    answer = ray.get(ray.remote(lambda: 6 * 7).remote())
    head = ray._private.worker._global_node.head
    # A joined cluster may grow (autoscaling): a group larger than it is now is left to Ray.
    ray_session.check_embedded_fit([{"CPU": 1}] * 64, "scaling.num_workers")
    ray_session._leave_ray()
    print(json.dumps({"answer": answer, "head": head, "still_up": ray.is_initialized()}))
""")


def test_a_driver_that_joined_a_cluster_leaves_it_running(ray_local):
    gcs = ray_local._private.worker._global_node.gcs_address
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    out = subprocess.run([sys.executable, "-c", JOINED_DRIVER, gcs], capture_output=True, text=True,
                         env=env, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen == {"answer": 42, "head": False, "still_up": False}  # disconnected, nothing stopped
    assert ray_local.get(ray_local.remote(lambda: 1).remote(), timeout=60) == 1  # the cluster is up


def test_a_group_larger_than_the_embedded_ray_stops_naming_the_keys(ray_local):
    # The tests' Ray is embedded (started in this process) with 2 CPUs and no GPU.
    ray_session.check_embedded_fit([{"CPU": 1}] * 2, "scaling.num_workers")  # fits exactly
    ray_session.check_embedded_fit([{"CPU": 0.5}] * 4, "scaling.num_workers")
    with pytest.raises(UserError, match=r"3 worker\(s\) need 3 CPU \(has 2\) .*lower scaling.num_workers, or run"):
        ray_session.check_embedded_fit([{"CPU": 1}] * 3, "scaling.num_workers")
    with pytest.raises(UserError, match=r"need 1 GPU \(has 0\)"):
        ray_session.check_embedded_fit([{"CPU": 1, "GPU": 1}], "scaling.use_gpu")


class _FakeNode:
    """Stands for Ray's node class: records the order of the head's steps. Its dashboard comes
    up once the raylet has started, or after 5 s (as it would if started first), and fails if
    told to."""

    def __init__(self, dashboard_fails: bool = False):
        self._ray_params = SimpleNamespace(no_monitor=False)
        self.all_processes: dict = {}  # what the dashboard's thread waits on: none here
        self.dashboard_fails = dashboard_fails
        self.raylet_started = threading.Event()
        self.steps: list[str] = []
        self.gcs_address = "10.1.2.3:6379"
        self.raylet_env: str | None = None

    def start_head_processes(self):
        self.steps.append("gcs")
        if not self._ray_params.no_monitor:
            self.steps.append("monitor")
        self.start_api_server(include_dashboard=True, raise_on_failure=True)

    def start_api_server(self, include_dashboard, raise_on_failure):
        self.raylet_started.wait(timeout=5)
        if self.dashboard_fails:
            raise RuntimeError("dashboard failed to start")
        self.steps.append("dashboard up")

    def start_ray_processes(self):
        self.steps.append("raylet")
        self.raylet_env = os.environ.get("RAY_ADDRESS")  # what a process spawned here inherits
        self.raylet_started.set()


@pytest.mark.parametrize("before", [None, "127.0.0.1:1"])
def test_embedded_head_starts_the_raylet_beside_the_dashboard_without_a_monitor(monkeypatch, before):
    if before is None:
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
    else:
        monkeypatch.setenv("RAY_ADDRESS", before)
    node = ray_session._embedded_head_class(_FakeNode)()
    node.start_head_processes()
    node.start_ray_processes()
    assert node.steps == ["gcs", "raylet", "dashboard up"]  # Ray's order: gcs, monitor, dashboard up, raylet
    assert node.raylet_env == "10.1.2.3:6379"  # the raylet and its workers know their own GCS
    assert os.environ.get("RAY_ADDRESS") == before  # the driver's environment is as it was


def test_embedded_head_raises_the_dashboards_failure_where_ray_would():
    node = ray_session._embedded_head_class(_FakeNode)(dashboard_fails=True)
    node.start_head_processes()
    with pytest.raises(RuntimeError, match="dashboard failed to start"):
        node.start_ray_processes()
    assert node.steps == ["gcs", "raylet"]


def test_embedded_head_gives_way_to_rays_own_start_when_the_node_class_changes(monkeypatch):
    from ray._private import node as node_module

    class Unknown:  # an upgrade without the methods the embedded head overrides
        pass

    monkeypatch.setattr(node_module, "Node", Unknown)
    with ray_session._embedded_head():
        assert node_module.Node is Unknown
    monkeypatch.undo()
    real = node_module.Node
    with ray_session._embedded_head():
        assert issubclass(node_module.Node, real) and node_module.Node is not real
    assert node_module.Node is real


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
