"""llmforge.common.gc_policy: collections paused over a start, what it made frozen, a CLI's exit frozen."""
from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap

import pytest

from llmforge.common.gc_policy import collect_nothing_then_freeze

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tracked(obj: object) -> bool:
    """In one of the collector's generations (a frozen object is in none)."""
    return any(o is obj for o in gc.get_objects())


@pytest.mark.parametrize("enabled_before", [True, False])
def test_no_collection_inside_then_what_was_made_is_frozen_and_the_state_is_back(enabled_before):
    collections = []

    def count(phase, info):
        if phase == "start":
            collections.append(info["generation"])

    (gc.enable if enabled_before else gc.disable)()
    gc.callbacks.append(count)
    try:
        with collect_nothing_then_freeze():
            inside = gc.isenabled()
            made = [[i] for i in range(50_000)]  # enough allocations to set off collections
            cycle = {"self": None}
            cycle["self"] = cycle
        frozen = not _tracked(made) and not _tracked(cycle)
        assert gc.isenabled() is enabled_before
        assert not inside and collections == []
        assert frozen
        after = [[i] for i in range(50_000)]
        assert _tracked(after)  # newer objects are the collector's again
    finally:
        gc.callbacks.remove(count)
        gc.unfreeze()
        gc.enable()


def test_the_cli_freezes_every_object_at_exit_after_its_own_hooks():
    # A hook registered before main() runs after main's (last-in first-out): it sees the freeze.
    script = textwrap.dedent("""
        import atexit, gc, sys
        atexit.register(lambda: print("frozen at exit:", gc.get_freeze_count(), flush=True))
        from llmforge.cli import main
        sys.exit(main(sys.argv[1:]))
    """)
    out = subprocess.run([sys.executable, "-c", script, "data", "run", "--help"], capture_output=True, text=True,
                         cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    frozen = int(out.stdout.strip().splitlines()[-1].split(":")[1])
    assert frozen > 10_000  # the interpreter's objects, argparse's, llmforge's
