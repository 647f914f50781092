"""Where DeepSpeed's JIT-built op is cached, and which ninja builds it."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from training import ds_ops


def test_cache_is_per_environment_unless_set(monkeypatch):
    monkeypatch.delenv("TORCH_EXTENSIONS_DIR", raising=False)
    here = ds_ops.torch_extensions_dir()
    monkeypatch.setattr(sys, "prefix", "/some/other/venv")
    other = ds_ops.torch_extensions_dir()
    assert here != other and Path(here).parent == Path(other).parent
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", "/chosen")
    assert ds_ops.torch_extensions_dir() == "/chosen"


def test_build_runs_this_environments_ninja_then_path_is_restored(monkeypatch):
    monkeypatch.delenv("TORCH_EXTENSIONS_DIR", raising=False)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # a system ninja (another version) may be there
    venv_bin = Path(sys.executable).parent
    with ds_ops.jit_build_env() as cache:
        found = subprocess.run(["sh", "-c", "command -v ninja"], capture_output=True, text=True).stdout.strip()
        assert cache == os.environ["TORCH_EXTENSIONS_DIR"] == ds_ops.torch_extensions_dir()
    assert os.environ["PATH"] == "/usr/bin:/bin"
    assert Path(found) == venv_bin / "ninja"  # DeepSpeed's dependency, installed with the venv


def test_an_unset_path_stays_unset(monkeypatch):
    monkeypatch.delenv("PATH", raising=False)
    with ds_ops.jit_build_env():
        assert os.environ["PATH"] == str(Path(sys.executable).parent)
    assert "PATH" not in os.environ
