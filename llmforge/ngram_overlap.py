"""Benchmark n-gram overlap: what the data pipeline's `decontaminate` stage drops and what
`llmforge eval contamination` reports, defined once (both import this module, neither imports
the other; like `shard_format`, it needs only the standard library and `llmforge.common`).

An eval file's items (`read_eval_items`):
  - JSONL with a string `text` field: that string is the item;
  - other JSONL rows: the text fields of the task formats in ../shared/data/evalsets (HF schema:
    ARC / OpenBookQA / MMLU `question`/`question_stem` + `choices` (list or {text, label}),
    HellaSwag `ctx` + `endings`, PIQA `goal` + `sol1`/`sol2`, WinoGrande `sentence` +
    `option1`/`option2`; llm-foundry ICL: `query`/`context`/`context_options` +
    `choices`/`continuation`, GSM8K `context` + `chain_of_thought`), each field on its own;
  - `.txt` (any other suffix): one item per non-empty line.
  A row with none of these fields, a line that is not JSON, an empty file: `UserError` naming
  the file and row.

N-grams (GPT-3 §C / lm-evaluation-harness `decontamination/janitor.py`): the text is normalised
into words, and two texts overlap when they share a run of `n` (13) consecutive words.
Normalisations: "words" — lower-case, words are runs of Unicode letters and digits (punctuation,
symbols and `_` separate words); "harness" — the janitor's: lower-case, delete ASCII
punctuation, split on whitespace. N-grams never cross a field boundary (a question and its
choices are separate texts). A field shorter than `n` words but of at least `min_words` (8,
GPT-3's smallest N) counts whole, as one n-gram of its length; shorter fields are not
checkable. An item is *contaminated* when any of its n-grams occurs in a document; its
*overlap* is the fraction of its n-grams that occur in some document.
"""
from __future__ import annotations

import json
import re
import string
from dataclasses import dataclass, field
from typing import Iterable, Literal

from llmforge.common import fs
from llmforge.common.errors import UserError

Normalization = Literal["words", "harness"]
NORMALIZATIONS: tuple[str, ...] = ("words", "harness")
DEFAULT_N = 13
DEFAULT_MIN_WORDS = 8

# Text fields of the eval formats, in the order an item's fields are listed.
TEXT_FIELDS = ("query", "question", "question_stem", "goal", "ctx", "sentence", "context", "context_options",
               "continuation", "chain_of_thought", "choices", "endings", "sol1", "sol2", "option1", "option2")

_WORD = re.compile(r"[^\W_]+")
_PUNCT = str.maketrans("", "", string.punctuation)


def words(text: str, normalization: Normalization = "words") -> list[str]:
    """`text` as the normalised words n-grams are made of."""
    if normalization == "words":
        return _WORD.findall(text.lower())
    if normalization == "harness":
        return text.lower().translate(_PUNCT).split()
    raise ValueError(f"unknown normalization {normalization!r} (expected one of {NORMALIZATIONS})")


@dataclass(frozen=True)
class EvalItem:
    source: str  # the eval file
    row: int  # 1-based line number in it
    fields: tuple[str, ...]  # its texts, each checked on its own

    @property
    def text(self) -> str:
        """The item as one string (fields joined by a space)."""
        return " ".join(self.fields)

    @property
    def ref(self) -> str:
        return f"{self.source}:{self.row}"


def _strings(value, where: str, key: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict) and key == "choices":  # HF {"text": [...], "label": [...]}
        value = value.get("text")
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise UserError(f"{where}: field {key!r} is not a string or a list of strings")


def item_fields(row, where: str) -> tuple[str, ...]:
    """The text fields of one JSONL row (see the module docstring); `where` names it in errors."""
    if not isinstance(row, dict):
        raise UserError(f"{where}: expected a JSON object, got {type(row).__name__}")
    if "text" in row:
        if not isinstance(row["text"], str) or not row["text"].strip():
            raise UserError(f"{where}: field 'text' is not a non-empty string")
        return (row["text"],)
    found = [s for key in TEXT_FIELDS if key in row for s in _strings(row[key], where, key)]
    found = [s for s in found if s.strip()]
    if not found:
        raise UserError(f"{where}: no text field (expected 'text' or one of {', '.join(TEXT_FIELDS)}; "
                        f"the row has {', '.join(sorted(row)) or 'no fields'})")
    return tuple(found)


def read_eval_items(path: str) -> list[EvalItem]:
    """Every item of an eval file (local, s3://, gs://); UserError naming the file and row when
    the file is missing, a line is not JSON or a row has no text."""
    filesystem, fpath = fs.resolve(path)
    if not fs.exists(filesystem, fpath) or fs.is_dir(filesystem, fpath):
        raise UserError(f"eval file {path}: no such file")
    with filesystem.open_input_stream(fpath) as f:
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UserError(f"eval file {path}: not UTF-8 text ({err})") from None
    items: list[EvalItem] = []
    jsonl = path.endswith((".jsonl", ".json"))
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if jsonl:
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise UserError(f"{path}:{lineno}: not JSON ({err.msg})") from None
            items.append(EvalItem(path, lineno, item_fields(row, f"{path}:{lineno}")))
        else:
            items.append(EvalItem(path, lineno, (line.strip(),)))
    if not items:
        raise UserError(f"eval file {path}: no items")
    return items


def item_ngrams(fields: Iterable[str], n: int = DEFAULT_N, normalization: Normalization = "words",
                min_words: int = DEFAULT_MIN_WORDS) -> set[str]:
    """An item's n-grams, each as its words joined by one space."""
    grams: set[str] = set()
    for text in fields:
        ws = words(text, normalization)
        if len(ws) >= n:
            grams.update(" ".join(ws[i:i + n]) for i in range(len(ws) - n + 1))
        elif len(ws) >= min_words:
            grams.add(" ".join(ws))
    return grams


@dataclass
class NgramIndex:
    """The n-grams of a set of eval items, to look documents up against.

    `find(text)` -> {item index: the item's n-grams found in `text`}. A document is scanned
    once per distinct n-gram length (n, and the lengths of whole short fields), and a window
    is joined into a string only when its first word starts some n-gram of that length."""

    items: list[EvalItem]
    n: int = DEFAULT_N
    normalization: Normalization = "words"
    min_words: int = DEFAULT_MIN_WORDS
    grams: list[set[str]] = field(init=False)  # per item
    _owners: dict[str, list[int]] = field(init=False, repr=False)
    _firsts: dict[int, set[str]] = field(init=False, repr=False)  # length -> first words

    def __post_init__(self) -> None:
        if self.min_words > self.n:
            raise ValueError(f"min_words {self.min_words} > n {self.n}")
        words("", self.normalization)  # checks the name
        self.grams = [item_ngrams(it.fields, self.n, self.normalization, self.min_words) for it in self.items]
        self._owners, self._firsts = {}, {}
        for i, grams in enumerate(self.grams):
            for g in grams:
                self._owners.setdefault(g, []).append(i)
                parts = g.split(" ")
                self._firsts.setdefault(len(parts), set()).add(parts[0])

    @classmethod
    def from_files(cls, paths: Iterable[str], n: int = DEFAULT_N, normalization: Normalization = "words",
                   min_words: int = DEFAULT_MIN_WORDS) -> "NgramIndex":
        items = [it for p in paths for it in read_eval_items(p)]
        return cls(items, n, normalization, min_words)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def num_ngrams(self) -> int:
        return len(self._owners)

    def checkable(self, i: int) -> bool:
        """Whether item `i` has any n-gram (a field of at least `min_words` words)."""
        return bool(self.grams[i])

    def _matches(self, text: str):
        ws = words(text, self.normalization)
        for length, firsts in self._firsts.items():
            for i in range(len(ws) - length + 1):
                if ws[i] in firsts:
                    g = " ".join(ws[i:i + length])
                    if g in self._owners:
                        yield g

    def find(self, text: str) -> dict[int, set[str]]:
        """{item index: its n-grams that occur in `text`} (items without any: absent)."""
        found: dict[int, set[str]] = {}
        for g in self._matches(text):
            for i in self._owners[g]:
                found.setdefault(i, set()).add(g)
        return found

    def first_match(self, text: str) -> tuple[int, str] | None:
        """(the first item, the n-gram) `text` shares an n-gram with, or None: the cheap test
        for dropping a document."""
        for g in self._matches(text):
            return self._owners[g][0], g
        return None
