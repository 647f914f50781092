"""Start or join Ray the same way everywhere: a cluster when one is named, else embedded.

`ray job submit` sets RAY_ADDRESS for the driver, so the same command joins the cluster
there and starts a private local instance on a laptop.
"""
from __future__ import annotations

import atexit
import contextlib
import importlib
import logging
import os
import threading
from typing import Any, Callable, Iterator, Sequence

from llmforge.common.environ import env_restored
from llmforge.common.gc_policy import collect_nothing_then_freeze


def init_ray(
    address: str | None = None,
    num_cpus: int | None = None,
    include_dashboard: bool | None = None,
    runtime_env: dict[str, Any] | None = None,
    preload: Sequence[str] = (),
) -> None:
    """Idempotent `ray.init`: reuse a running session, join `address`/RAY_ADDRESS, or start one.

    `preload`: modules the caller imports next (e.g. `ray.data`), imported on a thread while
    an embedded `ray.init` waits for Ray's processes: the driver sits idle for most of that
    wait (~4 of the ~5 s it takes on 2 cores), so the imports come nearly free. Joining a
    running cluster takes about a second, and imports then only compete for the CPUs with
    the job's first workers (bench_fixed_cost: 0.2-0.3 s slower), so they wait for the caller."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    if ray.is_initialized():
        return
    source = "address" if address else "RAY_ADDRESS"
    address = address or os.environ.get("RAY_ADDRESS")
    kwargs: dict[str, Any] = {"runtime_env": runtime_env, "log_to_driver": True}
    if address:
        check_reachable(address, source)
        ray.init(address=address, **kwargs)
        _leave_at_exit()
        return
    # First the module Ray imports to tell whether the dashboard's extras are installed: it
    # does so right before it spawns the raylet, 0.4-1.2 s (aiohttp, opentelemetry, grpc) on
    # the start's critical path; imported from the start, it comes in while the GCS starts.
    # The start and the preload make long-lived objects and little garbage: collected as they
    # come, the heap's growth set off full collections (0.4-0.6 s of a 16-page job on 2 cores,
    # and more later, each walking them all again); frozen once they are in (`gc_policy`).
    with collect_nothing_then_freeze():
        loading = import_in_background(("ray.dashboard.optional_deps", *preload))
        try:
            # "local" never tries to reach a stale cluster recorded in /tmp/ray (it can hang for minutes).
            with _embedded_head():
                ray.init(
                    address="local",
                    num_cpus=num_cpus,
                    include_dashboard=include_dashboard,
                    **kwargs,
                )
            _leave_at_exit()
        finally:
            loading.join()  # the modules are whole before the caller uses them


def _leave_at_exit() -> None:
    atexit.unregister(_leave_ray)  # once, however often Ray is started in this process
    atexit.register(_leave_ray)  # runs before Ray's own exit hook (registered at import)


@contextlib.contextmanager
def _embedded_head() -> Iterator[None]:
    """While `ray.init` starts an embedded node, start it as a one-machine job needs it
    (`_embedded_head_class`). Ray's node class is private: if an upgrade changes it, this
    gives way to Ray's own start."""
    try:
        from ray._private import node as node_module  # the module ray.init reads `Node` from
    except ImportError:
        node_module = None
    base = getattr(node_module, "Node", None)
    missing = [name for name in ("start_head_processes", "start_api_server", "start_ray_processes")
               if not callable(getattr(base, name, None))]
    if missing:
        logging.getLogger(__name__).debug("Ray's own head start: no ray._private.node.Node with %s", ", ".join(missing))
        yield
        return
    node_module.Node = _embedded_head_class(base)
    try:
        yield
    finally:
        node_module.Node = base


# The agents' ports, by Ray's node parameter and by the name of the file the raylet waits for.
_AGENT_PORTS = (("metrics_agent_port", "METRICS_AGENT_PORT_NAME"), ("metrics_export_port", "METRICS_EXPORT_PORT_NAME"),
                ("dashboard_agent_listen_port", "DASHBOARD_AGENT_LISTEN_PORT_NAME"),
                ("runtime_env_agent_port", "RUNTIME_ENV_AGENT_PORT_NAME"))


def _announce_agent_ports(node: Any) -> None:
    """Give the node's two agents fixed ports and write them where the raylet looks for them.

    Left to choose their own ports (Ray's default), the agents write them to port files in the
    session dir once bound, and the raylet waits for every file before it accepts the driver:
    the dashboard agent's listen port comes last, after it has imported and loaded all its
    modules (2.6-3.3 s of a 16-page job on 2 cores, the whole wait of `ray.init`). With the
    ports chosen here (as Ray picks its other ports, `Node._get_unused_port`) and written
    first, through Ray's own `persist_port`, the raylet goes on at once and the agents come up
    beside the job's first workers; each agent binds the port it is given and writes the same
    file again. If an upgrade moves any of this, the raylet waits for the agents as before."""
    try:
        import ray._raylet as raylet

        params, taken, files = node._ray_params, set(), []
        for param, name in _AGENT_PORTS:
            # Fresh ports, also for the agent's listen port, which defaults to a fixed 52365:
            # another Ray on this machine may hold that one, and the raylet would then record
            # that Ray's agent as this node's (Ray's own wait records -1 when the bind fails).
            port = node._get_unused_port(taken)
            taken.add(port)
            files.append((param, getattr(raylet, name), port))
        for param, name, port in files:
            setattr(params, param, port)
            raylet.persist_port(node.get_session_dir_path(), node.node_id, name, port)
    except Exception as err:  # noqa: BLE001 - a head start only; Ray's own wait follows
        logging.getLogger(__name__).debug("agent ports not announced: %s", err)


def _embedded_head_class(base: type) -> type:
    """Ray's node class, less three waits or steps of its head start that buy an embedded node
    nothing. Ray starts its head processes one after another, each a Python process importing
    Ray on the same cores (bench_fixed_cost: 1.4-2.4 s of a 10.9-15.3 s job on 16 pages, 5-6 rounds):
    - the autoscaler monitor: one fixed machine has nothing to scale (`ray status` then has
      no autoscaler report; Ray Data and Ray Train do not need one);
    - the wait for the dashboard's URL before the raylet starts: the two are independent, so
      the dashboard starts beside the raylet and its agents, and the start still ends only
      once it is up (its URL, failure and log as before). Without the dashboard
      (`include_dashboard=False`) Ray would still start its API server in minimal mode, which
      serves nothing a job uses; it is left out;
    - the raylet's wait for its agents' ports (`_announce_agent_ports`).
    """

    class EmbeddedHead(base):  # type: ignore[misc, valid-type]
        _dashboard_started: threading.Event | None = None
        _dashboard_error: BaseException | None = None

        def start_head_processes(self) -> None:
            self._ray_params.no_monitor = True
            super().start_head_processes()

        def start_api_server(self, **kwargs: Any) -> None:
            if kwargs.get("include_dashboard") is False:
                return
            started = self._dashboard_started = threading.Event()

            def start() -> None:
                try:
                    base.start_api_server(self, **kwargs)
                except BaseException as err:  # noqa: BLE001 - raised below, where Ray raises it
                    self._dashboard_error = err
                    return
                finally:
                    started.set()
                # Ray's children get the kernel's parent-death signal, which the kernel sends
                # when the parent *thread* ends: this thread lives as long as the dashboard.
                for info in self.all_processes.get("dashboard", []):
                    info.process.wait()

            threading.Thread(target=start, name="llmforge-dashboard", daemon=True).start()

        def start_ray_processes(self) -> None:
            _announce_agent_ports(self)
            try:
                # The raylet, hence every worker, inherits this node's GCS address: Ray's State
                # API (which Ray Train's controller calls) finds its cluster by RAY_ADDRESS,
                # else by <temp dir>/ray_current_cluster, the last `ray start`'s head: a dead
                # one after a crash (each call then times out after 40 s) or another live one.
                # The driver's own environment is left as it was.
                with env_restored("RAY_ADDRESS"):
                    os.environ["RAY_ADDRESS"] = self.gcs_address
                    super().start_ray_processes()
            finally:
                if self._dashboard_started is not None:
                    self._dashboard_started.wait()
            if self._dashboard_error is not None:
                raise self._dashboard_error

    return EmbeddedHead


def import_in_background(modules: Sequence[str]) -> threading.Thread:
    """Import `modules` on a daemon thread, in order; one that fails is left to its importer."""

    def run() -> None:
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception as err:  # noqa: BLE001 - the caller's own import raises it in place
                logging.getLogger(__name__).debug("preloading %s failed: %s", name, err)

    thread = threading.Thread(target=run, name="llmforge-preload", daemon=True)
    thread.start()
    return thread


def _leave_ray() -> None:
    """Leave Ray at exit (stop the embedded one this process started, or disconnect from a
    cluster) without the two waits in Ray's own exit hook (on 2 cores a driver's exit after its
    last task took 2.2 s with Ray's hook alone, 0.6-0.9 s with this one first):
    - Ray's shutdown stops the GCS before the autoscaler monitor, whose SIGTERM handler then
      reports its own death to that GCS and hangs until Ray kills it a second later. An
      embedded head starts none (`_embedded_head_class`); where Ray's own start ran one, it
      is killed first, outright.
    - At interpreter exit Ray sleeps 0.5 s so that workers' last log lines reach the terminal;
      a job's tasks have all finished by now, and their logs stay in the session's log files
      (on a cluster also in the dashboard and `ray job logs`).
    Ray's private node handle: if an upgrade moves it, the exit is as slow as before."""
    try:
        import ray

        node = ray._private.worker._global_node
        if node is None:  # already stopped
            return
        if node.head:  # started here; a joined cluster's driver only disconnects
            node.kill_monitor(check_alive=False)
        ray.shutdown()
    except Exception as err:  # noqa: BLE001 - never a reason to fail at exit; Ray's own hook follows
        logging.getLogger(__name__).debug("Ray not left early: %s", err)


def check_reachable(address: str, source: str = "RAY_ADDRESS", timeout: float = 5.0) -> None:
    """A HOST:PORT cluster address must accept a connection: Ray's own client retries an
    unreachable one for minutes before it gives up. Other forms (auto, ray://) go to Ray."""
    import socket

    from llmforge.common.errors import UserError

    host, sep, port = address.rpartition(":")
    if not sep or "/" in address or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as err:
        raise UserError(f"no Ray cluster answers at {address} ({source}): {err.strerror or err}. Start one with "
                        f"`ray start --head`, or unset {source} to run on an embedded local Ray") from None


def check_embedded_fit(bundles: Sequence[dict[str, float]], keys: str) -> None:
    """Stop with a UserError naming `keys` when the resources of `bundles` (one per worker or
    actor) exceed an embedded Ray's: that node is the whole cluster and nothing will be added,
    yet Ray Train retries starting a worker group that does not fit without limit (one try a
    minute), and a placement group waits. A joined cluster may autoscale: left to Ray there.
    Needs Ray initialised; Ray's private node handle tells whether this process started it."""
    import ray

    from llmforge.common.errors import UserError

    node = getattr(ray._private.worker, "_global_node", None)
    if node is None or not getattr(node, "head", False):
        return
    needed: dict[str, float] = {}
    for bundle in bundles:
        for name, amount in bundle.items():
            needed[name] = needed.get(name, 0.0) + amount
    have = ray.cluster_resources()
    short = {name: amount for name, amount in needed.items() if amount > have.get(name, 0.0) + 1e-9}
    if short:
        wants = ", ".join(f"{amount:g} {name} (has {have.get(name, 0.0):g})" for name, amount in short.items())
        raise UserError(f"{len(bundles)} worker(s) need {wants} on this machine's embedded Ray; "
                        f"lower {keys}, or run on a cluster with RAY_ADDRESS / `ray job submit`")


def cluster_cpus() -> int:
    """CPUs of the connected Ray cluster (at least 1), e.g. to size an actor pool or a shuffle.
    Needs Ray initialised; an autoscaling cluster reports what it has now."""
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def quiet_ray_data() -> None:
    """Ray Data's per-operator progress lines off the terminal for short passes inside a job
    (they stay in the session's logs/ray-data.log); warnings and errors still show."""
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)


def start_ray_data_actors() -> None:
    """Ray Data creates its stats actor and autoscaling coordinator on a job's first dataset:
    two new worker processes (about 2 s of CPU each to start) that the dataset's first steps
    then wait on. Asked for right after `ray.init`, they start while the driver still plans.
    Both are detached, so on a running cluster only the first job pays. These are Ray Data's
    own private functions: if an upgrade moves or changes them, Ray Data creates both as
    before, at the first dataset."""
    try:
        from ray.data._internal.cluster_autoscaler import get_or_create_autoscaling_coordinator
        from ray.data._internal.stats import get_or_create_stats_actor

        get_or_create_stats_actor()
        get_or_create_autoscaling_coordinator()
    except Exception as err:  # noqa: BLE001 - a head start only, never a reason to fail the job
        logging.getLogger(__name__).debug("Ray Data's actors not started early: %s", err)


def warm_workers(fn: Callable[..., Any], count: int, *args: Any) -> None:
    """`fn(*args)` as `count` one-CPU tasks, not waited for: worker processes start, import and
    build what the job's tasks need while the driver still plans, and the job's tasks, queued
    behind them for the CPUs, then reuse those processes. `fn` swallows its own errors: the
    job's tasks raise them in place.

    While they hold the CPUs, the job's first dataset would start with none free, and Ray Data
    would warn (once per process) that the job "will hang" - it does not; the warning is
    spent here. Zero-CPU warm-ups awaited before the dataset avoid the warning too but cost
    ~1 s on a running cluster (bench_fixed_cost, 5 rounds): the dataset's own start then waits
    instead of overlapping the warm-up."""
    import ray
    from ray.util.debug import log_once

    if ray.cluster_resources().get("CPU", 0) >= 1:  # with no CPU at all, the warning stands
        log_once("cpu_warning")  # Ray Data's key for that warning (ray/data/dataset.py)
    task = ray.remote(num_cpus=1)(fn)
    for _ in range(count):
        task.remote(*args)
