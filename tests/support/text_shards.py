"""Token shards for training tests and the training benchmark: real text when ../shared/data is
next to the checkout, else generated text."""
from __future__ import annotations

from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
REAL_TEXT = ["tinyshakespeare_input.txt", "wikitext-2-raw_wiki.test.raw"]


def generated_text(path: Path, n_docs: int = 6000, seed: int = 0) -> Path:
    """Generated English-looking paragraphs (learnable, not real) in one text file."""
    from dataproc.synthetic.english import generated_documents

    path.write_text("\n\n".join(generated_documents(n_docs, seed)))
    return path


def text_paths(workdir: Path) -> tuple[list[str], bool]:
    """(the text files to tokenize, whether they are real text)."""
    real = [SHARED_DATA / "pretrain_text" / name for name in REAL_TEXT]
    if all(p.exists() for p in real):
        return [str(p) for p in real], True
    return [str(generated_text(workdir / "generated.txt"))], False


def build_shards(out: Path, vocab_size: int = 1024) -> tuple[Path, bool]:
    """(shard dir, whether it is real text)."""
    from dataproc.tokenization.text_files import shards_from_text_files

    paths, real = text_paths(out.parent)
    shards_from_text_files(paths, str(out), vocab_size=vocab_size, shard_tokens=200_000)
    return out, real
