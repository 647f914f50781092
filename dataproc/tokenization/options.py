"""The `tokenize` stage's options (`stages.tokenize` in a data job config).

The encoding options (`TokenizeOptions`: shard size, EOS, min/max document tokens) are the
stage's own keys, next to which tokenizer to use or train, the domain mixture and the actor
count; `encoding()` hands the former to the encoder and the shard writer.
"""
from __future__ import annotations

from pydantic import Field, PositiveInt

from dataproc.options import StageOptions
from dataproc.tokenization.encode import TokenizeOptions
from dataproc.tokenization.mixture import MixtureOptions
from dataproc.tokenization.tokenizer import TokenizerTrainOptions
from llmforge.shard_format import TOKENIZER_FILE


class _TokenizerChoice(StageOptions):
    """The stage's first keys; a base of its own so that they come first in the config, as
    `data validate` prints it."""

    enabled: bool = False
    tokenizer_path: str | None = Field(
        default=None,
        description=f"{TOKENIZER_FILE}; null: train one on a sample of the curated documents "
        f"into <output>/{TOKENIZER_FILE} (see `train`)",
    )


class TokenizeStageOptions(TokenizeOptions, _TokenizerChoice):
    """The `tokenize` stage: BPE token shards per input file, mixed by domain weights."""

    train: TokenizerTrainOptions = Field(default_factory=TokenizerTrainOptions)
    mixture: MixtureOptions = Field(default_factory=MixtureOptions)
    actors: PositiveInt | None = Field(default=None, description="tokenizer actors (default: CPUs)")

    def encoding(self) -> TokenizeOptions:
        """The encoding options alone (what the shards' config hash covers)."""
        return TokenizeOptions(**self.model_dump(include=set(TokenizeOptions.model_fields)))
