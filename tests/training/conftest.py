"""Token shards for the training tests: real text when ../shared/data is here, else generated."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import SHARED_DATA

REAL_TEXT = ["tinyshakespeare_input.txt", "wikitext-2-raw_wiki.test.raw"]


def generated_text(path: Path, n_docs: int = 6000, seed: int = 0) -> Path:
    """Generated English-looking paragraphs (learnable, not real) in one text file."""
    from dataproc.synthetic.english import generated_documents

    path.write_text("\n\n".join(generated_documents(n_docs, seed)))
    return path


def build_shards(out: Path, vocab_size: int = 1024) -> tuple[Path, bool]:
    """(shard dir, whether it is real text)."""
    from dataproc.tokenization.text_files import shards_from_text_files

    real = [SHARED_DATA / "pretrain_text" / name for name in REAL_TEXT]
    if all(p.exists() for p in real):
        paths = [str(p) for p in real]
    else:
        paths = [str(generated_text(out.parent / "generated.txt"))]
    shards_from_text_files(paths, str(out), vocab_size=vocab_size, shard_tokens=200_000)
    return out, paths[0].startswith(str(SHARED_DATA))


@pytest.fixture(scope="session")
def text_shards(tmp_path_factory) -> tuple[Path, bool]:
    return build_shards(tmp_path_factory.mktemp("train_shards") / "shards")


@pytest.fixture(scope="session", autouse=True)
def _torch_extensions(tmp_path_factory):
    # DeepSpeed JIT-builds its CPU comm op once; keep the build where every test finds it.
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "llmforge" / "torch_extensions"))
