"""A real `ray start --head` for tests, on free ports in its own temp dir, and `ray job submit`.

The head runs in its own process group; teardown kills that group, every process it started
(recorded as the tree below the head), and any process whose command line names this head's
temp dir (fake autoscaler nodes, their workers). Never `ray stop`: it kills every Ray on the
machine, including the test session's own and other people's.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import psutil

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Head:
    gcs: str  # host:port, for ray.init / `ray status --address`
    dashboard: str  # http://127.0.0.1:PORT, for `ray job submit --address`
    metrics_url: str
    temp_dir: str
    env: dict[str, str]  # the client env (token auth on)
    process: subprocess.Popen


def _ours(temp_dir: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if any(temp_dir in arg for arg in proc.info["cmdline"] or ()):
                found.append(proc)
    return found


@contextlib.contextmanager
def ray_head(num_cpus: int = 2, extra_args: list[str] = (), extra_env: dict[str, str] | None = None,
             gcs_port: int | None = None, ready_timeout: float = 120) -> Iterator[Head]:
    """Start a head with dashboard + job server on 127.0.0.1 and wait until jobs are accepted."""
    gcs, dashboard, metrics = gcs_port or free_port(), free_port(), free_port()
    # Another Ray on this machine already holds the default agent ports; this head needs its own.
    agent_http, agent_grpc, runtime_env_agent = free_port(), free_port(), free_port()
    # Short: Ray's Unix sockets live under it (108-byte path limit).
    temp_dir = tempfile.mkdtemp(prefix="rayt", dir="/tmp")
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "RAY_USAGE_STATS_ENABLED": "0",
           **(extra_env or {})}
    env.pop("RAY_ADDRESS", None)
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", f"--port={gcs}", f"--num-cpus={num_cpus}",
         f"--temp-dir={temp_dir}",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", "--include-dashboard=true",
         f"--metrics-export-port={metrics}", f"--dashboard-agent-listen-port={agent_http}",
         f"--dashboard-agent-grpc-port={agent_grpc}", f"--runtime-env-agent-port={runtime_env_agent}",
         *extra_args],
        env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    address = f"http://127.0.0.1:{dashboard}"
    # Ray 2.60 enables token auth: the job client must send the token too.
    client_env = {**env, "RAY_AUTH_MODE": "token"}
    try:
        deadline = time.time() + ready_timeout
        while subprocess.run([str(BIN / "ray"), "job", "list", "--address", address], env=client_env,
                             capture_output=True).returncode != 0:
            assert head.poll() is None, "ray start --head exited"
            assert time.time() < deadline, f"the job server did not come up in {ready_timeout:.0f} s"
            time.sleep(1)
        yield Head(f"127.0.0.1:{gcs}", address, f"http://127.0.0.1:{metrics}/metrics", temp_dir,
                   client_env, head)
    finally:
        tree = psutil.Process(head.pid).children(recursive=True)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGKILL)
        for proc in tree + _ours(temp_dir):
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        head.wait()
        shutil.rmtree(temp_dir, ignore_errors=True)


def submit(cmd: list[str], env: dict[str, str], timeout: float = 400, check: bool = True
           ) -> subprocess.CompletedProcess:
    """`ray job submit ...` and wait; retried while the node's job agent is not up yet.
    With `check`, asserts the job succeeded."""
    deadline = time.time() + 120
    while True:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        # The job server answers before the node's job agent is up ("No available agent").
        if "No available agent" not in done.stdout + done.stderr or time.time() > deadline:
            break
        time.sleep(2)
    if check:
        log = done.stdout + done.stderr
        assert done.returncode == 0, log[-3000:]
        assert "succeeded" in log.lower(), log[-3000:]
    return done
