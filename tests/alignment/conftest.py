"""A small pretrained base model and generated post-training data, shared by the alignment tests."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def base_model(tmp_path_factory) -> Path:
    from tests.support.tiny_checkpoint import base_checkpoint

    return base_checkpoint(tmp_path_factory.mktemp("align_base") / "base")


@pytest.fixture(scope="session")
def preference_file(tmp_path_factory) -> Path:
    from alignment.synthetic import preference_task, write_jsonl

    return write_jsonl(preference_task(480, seed=0), tmp_path_factory.mktemp("align_data") / "pairs.jsonl")


def align_config(algorithm: str, model: Path, data: Path, out: Path, **sets):
    """The job's config as the CLI builds it (`--model --data --output` + `--set`)."""
    from alignment.job import config_class
    from llmforge.common.config import load_config

    overrides = {"model": str(model), "data.path": str(data), "run.storage_path": str(out.parent),
                 "run.name": out.name, **sets}
    return load_config(config_class(algorithm), None, overrides)
