"""Token shards for the training tests: real text when ../shared/data is here, else generated."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.text_shards import build_shards


@pytest.fixture(scope="session")
def text_shards(tmp_path_factory) -> tuple[Path, bool]:
    return build_shards(tmp_path_factory.mktemp("train_shards") / "shards")


@pytest.fixture(scope="session", autouse=True)
def _torch_extensions(tmp_path_factory):
    # DeepSpeed JIT-builds its CPU comm op once; keep the build where every test finds it.
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "llmforge" / "torch_extensions"))
