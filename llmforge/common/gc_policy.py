"""When a job's process runs Python's cyclic garbage collector, and over which objects.

A job's driver imports Ray, Ray Data, pyarrow, pandas and matplotlib (torch for the training
verbs): ~180,000 long-lived objects the collector tracks (modules' dicts, classes, functions;
after those imports in a bare interpreter, `len(gc.get_objects())`). Each full collection
walks all of them, and one runs every time the heap has grown by a quarter, so a start that
keeps importing pays for several, and the interpreter's exit pays again for memory it is
about to give back. One 16-page data job on 2 cores spent 0.8 s in full collections from its
start to its dataset's first tasks (`gc.callbacks`) and 0.76 s more in the interpreter's final
ones (py-spy), against ~1.5 s for the plain loop's whole run (bench_fixed_cost).

Frozen objects (`gc.freeze`) stay alive and correct: reference counting still frees what is
not in a cycle; the collector only stops walking them. The cost: an object alive at the
freeze that later becomes garbage only through a cycle is not freed. A job's process (the
CLI) ends with the job; a process that starts several embedded Rays in turn (a notebook)
keeps such cycles from before each start.
"""
from __future__ import annotations

import atexit
import contextlib
import gc
from typing import Iterator


@contextlib.contextmanager
def collect_nothing_then_freeze() -> Iterator[None]:
    """No collections within the block (it imports and starts things: long-lived objects,
    little garbage); after it, every object then alive is frozen and the collector runs as
    before over newer ones."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()


def freeze_at_exit() -> None:
    """Freeze every object in the last exit hook (registered before the job's own, as hooks
    run last-in first-out): the interpreter's final collections then have nothing to walk.
    Idempotent."""
    atexit.unregister(gc.freeze)
    atexit.register(gc.freeze)
