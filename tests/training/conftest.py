"""Token shards for the training tests: real text when ../shared/data is here, else generated."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.text_shards import build_shards


@pytest.fixture(scope="session")
def text_shards(tmp_path_factory) -> tuple[Path, bool]:
    return build_shards(tmp_path_factory.mktemp("train_shards") / "shards")

