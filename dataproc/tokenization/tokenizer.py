"""Byte-level BPE tokenizers: train one (GPT-2 style, HF `tokenizers`) and load one for data.

Every byte is in the base alphabet and there is no normaliser, so decode(encode(text)) == text
for any text. The special tokens come first in the vocabulary (ids 0..n-1, in the configured
order), so `<|endoftext|>` (the document boundary) is id 0 whatever the corpus.

Special tokens written literally in web text (a page containing "<|endoftext|>") are
tokenized as ordinary text (`encode_special_tokens = True` in `load_tokenizer`), so crawled
data can never forge a document boundary or a chat role.
"""
from __future__ import annotations

import itertools
from typing import Any, Iterable, Iterator

from pydantic import Field, field_validator, model_validator
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from llmforge import shard_format
from llmforge.common import fs
from llmforge.common.config import StrictModel
from llmforge.common.resume import Step
from llmforge.shard_format import DEFAULT_SPECIAL_TOKENS, EOS_TOKEN

N_BYTES = 256


class TokenizerTrainOptions(StrictModel):
    vocab_size: int = Field(default=32000, description="final vocabulary size, special tokens included")
    sample_docs: int = Field(default=100_000, gt=0, description="train on the first N non-empty documents")
    min_frequency: int = Field(default=2, ge=1, description="a pair must occur this often to be merged")
    special_tokens: list[str] = Field(
        default_factory=lambda: list(DEFAULT_SPECIAL_TOKENS),
        description=f"ids 0..n-1 in this order; must include {EOS_TOKEN} (the document boundary)",
    )

    @field_validator("special_tokens")
    @classmethod
    def _specials(cls, value: list[str]) -> list[str]:
        if EOS_TOKEN not in value:
            raise ValueError(f"must include the document boundary {EOS_TOKEN}")
        if len(set(value)) != len(value) or any(not t for t in value):
            raise ValueError("special tokens must be distinct and non-empty")
        return value

    @model_validator(mode="after")
    def _room_for_bytes(self) -> "TokenizerTrainOptions":
        if self.vocab_size < N_BYTES + len(self.special_tokens):
            raise ValueError(f"vocab_size {self.vocab_size} < 256 byte tokens + "
                             f"{len(self.special_tokens)} special tokens")
        return self


def new_tokenizer() -> Tokenizer:
    """An untrained byte-level BPE with the pipeline's pre-tokenizer and decoder."""
    tokenizer = Tokenizer(models.BPE())  # no unk token: every byte is in the alphabet
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def train_tokenizer(texts: Iterable[str | None], options: TokenizerTrainOptions | None = None,
                    out_path: str = shard_format.TOKENIZER_FILE) -> dict[str, Any]:
    """Train on the first `options.sample_docs` non-empty texts; write tokenizer.json atomically.

    Returns {"path", "vocab_size" (actual; below the requested size only when the corpus runs
    out of pairs to merge), "requested_vocab_size", "sha256" (of the file written),
    "special_tokens" ({token: id}), "documents" (texts trained on)}.
    """
    options = options or TokenizerTrainOptions()
    used = 0

    def sample() -> Iterator[str]:
        nonlocal used
        for text in itertools.islice((t for t in texts if t), options.sample_docs):
            used += 1
            yield text

    tokenizer = new_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=options.vocab_size,
        min_frequency=options.min_frequency,
        special_tokens=list(options.special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(sample(), trainer=trainer)
    data = tokenizer.to_str().encode()
    filesystem, path = fs.resolve(out_path)
    fs.write_bytes_atomic(filesystem, path, data)
    return {
        "path": out_path,
        "vocab_size": tokenizer.get_vocab_size(),
        "requested_vocab_size": options.vocab_size,
        "sha256": shard_format.sha256_bytes(data),
        "special_tokens": {t: tokenizer.token_to_id(t) for t in options.special_tokens},
        "documents": used,
    }


def tokenizer_step(directory: str) -> Step:
    """A tokenizer trained into `directory` as a resumable step: done once its tokenizer.json
    exists (`train_tokenizer` writes it atomically). It records no fingerprint of what it was
    trained on: a rerun reuses it as is."""
    return Step(directory, shard_format.TOKENIZER_FILE)


def load_tokenizer(path: str) -> tuple[Tokenizer, str]:
    """The tokenizer at `path` (local, s3://, gs://) ready for data, and the sha256 of its file."""
    filesystem, fpath = fs.resolve(path)
    with filesystem.open_input_stream(fpath, compression=None) as f:
        data = f.read()
    tokenizer = Tokenizer.from_str(data.decode())
    tokenizer.encode_special_tokens = True  # literal "<|endoftext|>" in text is just text
    return tokenizer, shard_format.sha256_bytes(data)
