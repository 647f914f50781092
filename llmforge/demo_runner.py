"""A small step runner for `llmforge demo`: named steps run in order, each one resumable.

A step is a plain function `run(ctx) -> dict` (its summary numbers, JSON) plus `config(ctx)`,
the options that decide its outputs. Its *fingerprint* hashes its name, that config and the
fingerprint of the step before (the chain stands for its inputs: a step reads what the steps
before it wrote), so a changed config redoes that step and every later one, and nothing else.

Each step's output directory carries a done marker (`_demo_step.json`, written last, atomically:
`llmforge.common.resume.Step`) recording the fingerprint and the step's summary; a rerun skips a
step whose marker matches and shows its recorded summary. A step that was started and not
finished (Ctrl-C, a failure) is run again over what it left: the library jobs underneath resume
their own work (data job ledger, Ray Train checkpoints). A step whose directory holds a marker
or claim of another fingerprint is stale and its directory is deleted first.

While a step runs, file descriptors 1 and 2 point at `<workdir>/logs/<step>.log` (`os.dup2`: Ray,
DeepSpeed and C extensions write to the descriptors, not to `sys.stdout`) and the root logger
and the chatty library loggers write there too. The terminal only sees the progress line
(step i/N, name, elapsed / estimated) and, at the end, the summary.

Stdlib only: the steps import the packages.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence, TextIO

from llmforge.common.errors import UserError

MARKER = "_demo_step.json"
CLAIM = "_demo_claim.json"
# Loggers that write straight to stderr handlers of their own.
CHATTY_LOGGERS = ("ray", "ray.data", "ray.train", "ray.tune", "deepspeed", "DeepSpeed", "torch", "transformers",
                  "urllib3", "filelock", "fsspec", "matplotlib", "py.warnings")


@dataclass
class DemoStep:
    """`name`: short id (`--until NAME`, the log file's name). `title`: what the progress line
    shows. `directory`: the step's output directory, relative to the workdir (holds the marker).
    `run(ctx)`: does the work, returns summary numbers. `config(ctx)`: what decides the outputs
    (hashed into the fingerprint). `estimate_s`: expected seconds on a 2-core laptop."""
    name: str
    title: str
    directory: str
    run: Callable[["DemoContext"], dict[str, Any]]
    config: Callable[["DemoContext"], Any] = lambda ctx: {}
    estimate_s: float = 60.0


@dataclass
class DemoContext:
    """What the steps share: the workdir, the options, and what earlier steps returned
    (`results[step_name]`, also for skipped steps: read back from their markers)."""
    workdir: Path
    options: dict[str, Any] = field(default_factory=dict)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    log: Callable[[str], None] = print  # inside a step: goes to the step's log file

    def path(self, *parts: str) -> Path:
        return self.workdir.joinpath(*parts)


class StepFailed(UserError):
    """A step raised: names the step and its log file; a rerun resumes at that step."""

    def __init__(self, step: str, log_path: Path, error: BaseException):
        super().__init__(f"demo step '{step}' failed: {type(error).__name__}: {error}\n"
                         f"  its log: {log_path}\n  rerun the same command to resume at '{step}'")
        self.step, self.log_path, self.error = step, log_path, error


def _fmt_s(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


class Progress:
    """One progress line on the terminal: `[i/N] name: title  elapsed / ~estimate`; redrawn every
    second on a TTY, else printed when a step starts and ends."""

    def __init__(self, stream: TextIO, total: int, total_estimate: float):
        self.stream, self.total, self.total_estimate = stream, total, total_estimate
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self.start = time.monotonic()
        self._line: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def write(self, text: str) -> None:
        with self._lock:
            if self.tty and self._line is not None:
                self.stream.write("\r\033[K")
            self.stream.write(text + "\n")
            self.stream.flush()

    def _draw(self, i: int, step: DemoStep, t0: float) -> None:
        line = (f"[{i}/{self.total}] {step.name}: {step.title}  {_fmt_s(time.monotonic() - t0)} / "
                f"~{_fmt_s(step.estimate_s)}  (demo {_fmt_s(time.monotonic() - self.start)} / "
                f"~{_fmt_s(self.total_estimate)})")
        with self._lock:
            self._line = line
            self.stream.write("\r\033[K" + line)
            self.stream.flush()

    def begin(self, i: int, step: DemoStep) -> None:
        t0 = time.monotonic()
        if not self.tty:
            self.write(f"[{i}/{self.total}] {step.name}: {step.title} (~{_fmt_s(step.estimate_s)}) ...")
            return
        self._stop.clear()

        def loop():
            while not self._stop.is_set():
                self._draw(i, step, t0)
                self._stop.wait(1.0)

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()

    def end(self, text: str) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        self.write(text)
        self._line = None


@contextlib.contextmanager
def redirected(log_path: Path):
    """fds 1 and 2, sys.stdout/stderr, the root logger and the chatty library loggers -> log_path."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    f = open(log_path, "a", buffering=1)
    saved = os.dup(1), os.dup(2)
    saved_streams = sys.stdout, sys.stderr
    os.dup2(f.fileno(), 1)
    os.dup2(f.fileno(), 2)
    sys.stdout = sys.stderr = f
    handler = logging.StreamHandler(f)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    saved_handlers = {}
    for name in CHATTY_LOGGERS:
        lg = logging.getLogger(name)
        saved_handlers[name] = (lg.handlers[:], lg.propagate)
        lg.handlers = [handler]
        lg.propagate = False
    try:
        yield f
    finally:
        with contextlib.suppress(Exception):
            f.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])
        sys.stdout, sys.stderr = saved_streams
        root.removeHandler(handler)
        for name, (handlers, propagate) in saved_handlers.items():
            lg = logging.getLogger(name)
            lg.handlers, lg.propagate = handlers, propagate
        f.close()


def fingerprints(steps: Sequence[DemoStep], ctx: DemoContext) -> dict[str, str]:
    """Each step's fingerprint: its name, its config and the previous step's fingerprint."""
    from llmforge.common.resume import fingerprint

    out, previous = {}, ""
    for step in steps:
        previous = out[step.name] = fingerprint({"step": step.name, "config": step.config(ctx), "after": previous})
    return out


def select(steps: Sequence[DemoStep], until: str | None) -> list[DemoStep]:
    """The prefix of `steps` ending at `until` (all when None)."""
    names = [s.name for s in steps]
    if until is None:
        return list(steps)
    if until not in names:
        raise UserError(f"--until {until}: no such step; the steps are {', '.join(names)}")
    return list(steps[:names.index(until) + 1])


def run_steps(steps: Sequence[DemoStep], ctx: DemoContext, until: str | None = None,
              terminal: TextIO | None = None) -> dict[str, dict[str, Any]]:
    """Run `steps` (up to `until`) in order, skipping finished ones; returns each step's summary
    (`ctx.results`). Raises StepFailed naming the step and its log when one fails; on Ctrl-C
    the terminal says where the rerun continues and KeyboardInterrupt propagates."""
    from llmforge.common.resume import ConflictError, Step

    terminal = terminal or sys.stdout
    chosen = select(steps, until)
    fps = fingerprints(steps, ctx)
    todo = {s.name for s in chosen if Step(str(ctx.path(s.directory)), MARKER, fingerprint=fps[s.name]).done() is None}
    progress = Progress(terminal, len(chosen), sum(s.estimate_s for s in chosen if s.name in todo))
    logs = ctx.path("logs")
    for i, step in enumerate(chosen, 1):
        directory = ctx.path(step.directory)
        done = Step(str(directory), MARKER, fingerprint=fps[step.name])
        record = done.done()
        if record is not None:
            ctx.results[step.name] = record.get("summary", {})
            progress.write(f"[{i}/{len(chosen)}] {step.name}: done before (fingerprint {fps[step.name]}), skipped")
            continue
        claim = Step(str(directory), CLAIM, fingerprint=fps[step.name])
        try:
            claim.refuse_other()
            if done.read() is not None:
                raise ConflictError("stale marker", {}, {})
        except ConflictError:  # made from other options or inputs: start over
            done.reset()
        claim.claim()
        log_path = logs / f"{step.name}.log"
        progress.begin(i, step)
        t0 = time.monotonic()
        try:
            with redirected(log_path) as f:
                print(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} step {step.name} (fingerprint {fps[step.name]})",
                      file=f, flush=True)
                step_log = ctx.log
                ctx.log = lambda msg, _f=f: print(msg, file=_f, flush=True)
                try:
                    summary = step.run(ctx) or {}
                except BaseException:
                    traceback.print_exc(file=f)
                    raise
                finally:
                    ctx.log = step_log
        except KeyboardInterrupt:
            progress.end(f"[{i}/{len(chosen)}] {step.name}: interrupted after {_fmt_s(time.monotonic() - t0)}; "
                         f"rerun the same command to continue at '{step.name}' (log: {log_path})")
            raise
        except Exception as e:
            progress.end(f"[{i}/{len(chosen)}] {step.name}: FAILED after {_fmt_s(time.monotonic() - t0)}")
            raise StepFailed(step.name, log_path, e) from e
        seconds = time.monotonic() - t0
        done.finish({"step": step.name, "seconds": round(seconds, 1), "summary": summary})
        ctx.results[step.name] = summary
        progress.end(f"[{i}/{len(chosen)}] {step.name}: done in {_fmt_s(seconds)}")
    return ctx.results
