"""Evaluation task files -> items to score: the HF dataset schemas (ARC, HellaSwag, PIQA,
WinoGrande, OpenBookQA, MMLU) and llm-foundry's ICL JSONL (`query/choices/gold`,
`context_options/continuation/gold`, `context/continuation`), detected from the first row.

    task = load_task("arc_easy_validation.jsonl", shots=5, seed=1234, limit=None)
    task.items[0].requests()   # [(context text, continuation text), ...] one per choice

Prompts are lm-evaluation-harness's (`lm_eval/tasks/<name>/*.yaml`): ARC and PIQA
"Question: ...\\nAnswer:", OpenBookQA the bare stem, HellaSwag "activity: ctx" with the
harness's `preprocess` (strip, " [title]" -> ". ", other [brackets] dropped, double spaces),
MMLU "question\\nA. ..\\nB. ..\\nAnswer:" with letter choices after the subject's description.
The llm-foundry files are already in prompt form and are used as written.

Three kinds of item:
  "mc"       one context, one continuation per choice: (context, " " + choice)
  "partial"  WinoGrande's partial scoring (the harness's `multiple_inputs`): one context per
             option, the blank filled in, all scoring the same rest of the sentence:
             (context + prefix-with-option, " " + suffix)
  "lm"       LAMBADA: one continuation; correct when greedy decoding reproduces it.

Context and continuation are joined by the harness's default target delimiter, one space.
k-shot: examples are "text + ' ' + gold answer", joined and followed by "\\n\\n" (the harness's
fewshot delimiter), after the task's description if it has one. They come from the same file
(other rows), drawn as the harness's default sampler draws them: one `random.Random(seed)` for
the task, k + 1 rows sampled per item in file order, the item itself dropped, the first k kept;
so an item's examples do not depend on `limit`. MMLU draws the first k + 1 dev rows of the
item's own subject (the harness's `first_n` sampler on the dev split), the item itself dropped.

Every problem with a row (a missing field, an empty choice, a gold answer out of range) is a
UserError naming the file and line.
"""
from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from llmforge.common.errors import UserError

TARGET_DELIMITER = " "  # between a context and its continuation (the harness's default)
FEWSHOT_DELIMITER = "\n\n"  # after each few-shot example (the harness's default)
KINDS = ("mc", "partial", "lm")


@dataclass(frozen=True)
class Item:
    """One scored example. `choices` are the continuations ("mc"), the option-filled contexts
    ("partial") or the one expected continuation ("lm"); `target` is the shared continuation of
    a "partial" item."""

    index: int  # the row's position in the file (0-based; its line number is in meta)
    context: str  # few-shot examples + the question ("partial": the few-shot prefix only)
    choices: list[str]
    gold: int
    kind: str = "mc"
    target: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def requests(self) -> list[tuple[str, str]]:
        """(context, continuation) per choice, joined as the harness joins them."""
        if self.kind == "partial":
            return [(self.context + c, TARGET_DELIMITER + self.target) for c in self.choices]
        return [(self.context, TARGET_DELIMITER + c) for c in self.choices]


@dataclass
class Task:
    name: str  # the file's stem
    path: str
    format: str  # e.g. "hf/arc", "icl/mc"
    kind: str  # "mc" | "partial" | "lm"
    items: list[Item]
    rows: int  # rows in the file (items before `limit`)
    shots: int
    seed: int
    sha256: str  # of the file's bytes

    @property
    def metrics(self) -> tuple[str, ...]:
        """The harness's metric names for this kind of task."""
        return {"mc": ("acc", "acc_norm", "acc_bytes"), "partial": ("acc",), "lm": ("acc", "perplexity")}[self.kind]


# ------------------------------------------------------------------------------ one row -> Doc


@dataclass
class Doc:
    """A row in harness terms: the text before the answer, the choices, the gold index."""

    text: str
    choices: list[str]
    gold: int
    target: str | None = None  # "partial" only
    group: str | None = None  # MMLU: the subject (few-shot examples come from the same one)
    description: str = ""  # before the few-shot examples (MMLU)
    meta: dict[str, Any] = field(default_factory=dict)

    def example(self, kind: str) -> str:
        """This doc as a solved few-shot example."""
        if kind == "partial":
            return self.choices[self.gold] + TARGET_DELIMITER + self.target
        return self.text + TARGET_DELIMITER + self.choices[self.gold]


class _Row:
    """Field access that names the file and line in every error."""

    def __init__(self, row: dict[str, Any], where: str):
        self.row, self.where = row, where

    def fail(self, why: str) -> UserError:
        return UserError(f"{self.where}: {why}")

    def get(self, key: str, kind: type | tuple[type, ...] = str) -> Any:
        if key not in self.row or self.row[key] is None:
            raise self.fail(f"missing field {key!r} (fields: {', '.join(sorted(self.row)) or 'none'})")
        value = self.row[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise self.fail(f"field {key!r} should be {names}, got {type(value).__name__} {value!r:.80}")
        return value

    def text(self, key: str) -> str:
        value = self.get(key, str)
        if not value.strip():
            raise self.fail(f"field {key!r} is empty")
        return value

    def choices(self, values: Any, name: str) -> list[str]:
        if not isinstance(values, list) or not values:
            raise self.fail(f"{name} is empty" if isinstance(values, list) else
                            f"{name} should be a list of strings, got {type(values).__name__}")
        for i, v in enumerate(values):
            if not isinstance(v, str):
                raise self.fail(f"{name}[{i}] should be a string, got {type(v).__name__} {v!r:.80}")
            if not v.strip():
                raise self.fail(f"{name}[{i}] is empty")
        return list(values)

    def index(self, gold: Any, n: int, name: str) -> int:
        if isinstance(gold, str) and gold.strip().lstrip("-").isdigit():
            gold = int(gold)
        if not isinstance(gold, int) or isinstance(gold, bool) or not 0 <= gold < n:
            raise self.fail(f"{name} {gold!r} is not a choice index in 0..{n - 1}")
        return gold


def _keyed_choices(r: _Row) -> tuple[list[str], int]:
    """ARC / OpenBookQA: choices {text: [...], label: [...]} and answerKey one of the labels."""
    choices = r.get("choices", dict)
    texts = r.choices(choices.get("text"), "choices.text")
    labels = choices.get("label")
    if not isinstance(labels, list) or len(labels) != len(texts):
        raise r.fail(f"choices.label should list one label per choice ({len(texts)}), got {labels!r:.80}")
    key = r.get("answerKey", str).strip()
    if key not in labels:
        raise r.fail(f"answerKey {key!r} is not one of the labels {labels}")
    return texts, labels.index(key)


def hellaswag_preprocess(text: str) -> str:
    """lm-evaluation-harness `tasks/hellaswag/utils.py: preprocess` (WikiHow bracket artifacts)."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    text = text.replace("  ", " ")
    return text


def _arc(r: _Row) -> Doc:
    texts, gold = _keyed_choices(r)
    return Doc(f"Question: {r.text('question')}\nAnswer:", texts, gold, meta={"id": r.row.get("id")})


def _openbookqa(r: _Row) -> Doc:
    texts, gold = _keyed_choices(r)
    return Doc(r.text("question_stem"), texts, gold, meta={"id": r.row.get("id")})


def _hellaswag(r: _Row) -> Doc:
    ctx = r.get("ctx_a") + " " + r.get("ctx_b").capitalize()
    endings = r.choices(r.get("endings", list), "endings")
    return Doc(hellaswag_preprocess(r.get("activity_label") + ": " + ctx),
               [hellaswag_preprocess(e) for e in endings], r.index(r.get("label", (str, int)), len(endings), "label"),
               meta={"ind": r.row.get("ind")})


def _piqa(r: _Row) -> Doc:
    choices = r.choices([r.get("sol1"), r.get("sol2")], "[sol1, sol2]")
    return Doc(f"Question: {r.text('goal')}\nAnswer:", choices, r.index(r.get("label", (int, str)), 2, "label"))


def _winogrande(r: _Row) -> Doc:
    sentence = r.text("sentence")
    if "_" not in sentence:
        raise r.fail("sentence has no blank '_'")
    idx = sentence.index("_")
    options = r.choices([r.get("option1"), r.get("option2")], "[option1, option2]")
    answer = r.get("answer", (str, int))
    if str(answer) not in ("1", "2"):
        raise r.fail(f"answer {answer!r} is not '1' or '2'")
    target = sentence[idx + 1:].strip()
    if not target:
        raise r.fail("nothing after the blank to score")
    return Doc("", [sentence[:idx] + o for o in options], int(answer) - 1, target=target)


def _mmlu(r: _Row) -> Doc:
    choices = r.choices(r.get("choices", list), "choices")
    subject = r.text("subject")
    letters = [chr(ord("A") + i) for i in range(len(choices))]
    text = r.text("question").strip() + "".join(f"\n{k}. {c}" for k, c in zip(letters, choices)) + "\nAnswer:"
    return Doc(text, letters, r.index(r.get("answer", (int, str)), len(choices), "answer"), group=subject,
               description=f"The following are multiple choice questions (with answers) about "
                           f"{subject.replace('_', ' ')}.\n\n", meta={"subject": subject})


def _icl_mc(r: _Row) -> Doc:
    choices = r.choices(r.get("choices", list), "choices")
    return Doc(r.text("query"), choices, r.index(r.get("gold", (int, str)), len(choices), "gold"))


def _icl_partial(r: _Row) -> Doc:
    options = r.choices(r.get("context_options", list), "context_options")
    return Doc("", options, r.index(r.get("gold", (int, str)), len(options), "gold"), target=r.text("continuation"))


def _icl_lm(r: _Row) -> Doc:
    return Doc(r.text("context"), [r.text("continuation")], 0)


# format -> (the fields that identify it, kind, row parser); the first whose fields the first
# row has wins, so more specific signatures come first.
FORMATS: dict[str, tuple[frozenset[str], str, Callable[[_Row], Doc]]] = {
    "hf/hellaswag": (frozenset({"ctx_a", "ctx_b", "endings", "activity_label"}), "mc", _hellaswag),
    "hf/winogrande": (frozenset({"sentence", "option1", "option2", "answer"}), "partial", _winogrande),
    "hf/piqa": (frozenset({"goal", "sol1", "sol2"}), "mc", _piqa),
    "hf/openbookqa": (frozenset({"question_stem", "choices", "answerKey"}), "mc", _openbookqa),
    "hf/arc": (frozenset({"question", "choices", "answerKey"}), "mc", _arc),
    "hf/mmlu": (frozenset({"question", "subject", "choices", "answer"}), "mc", _mmlu),
    "icl/partial": (frozenset({"context_options", "continuation", "gold"}), "partial", _icl_partial),
    "icl/mc": (frozenset({"query", "choices", "gold"}), "mc", _icl_mc),
    "icl/lm": (frozenset({"context", "continuation"}), "lm", _icl_lm),
}
# Recognised, but not a log-likelihood task.
GENERATION_FORMATS = {frozenset({"context", "chain_of_thought", "answer"}): "llm-foundry's generation task (GSM8K)"}


def detect_format(first: dict[str, Any], where: str) -> str:
    keys = set(first)
    for fields, what in GENERATION_FORMATS.items():
        if fields <= keys:
            raise UserError(f"{where}: {what} is answered by generation, not scored by log-likelihood; "
                            f"multiple-choice evaluation cannot run it")
    for name, (fields, _, _) in FORMATS.items():
        if fields <= keys:
            return name
    known = "; ".join(f"{n}: {', '.join(sorted(f))}" for n, (f, _, _) in FORMATS.items())
    raise UserError(f"{where}: unknown task format (fields: {', '.join(sorted(keys)) or 'none'}); known formats "
                    f"and the fields that identify them: {known}")


def read_jsonl(path: str | Path) -> tuple[list[tuple[int, dict[str, Any]]], str]:
    """(line number, row) for every non-blank line, and the file's sha256."""
    from llmforge.common.rows import iter_rows

    p = Path(path)
    if not p.is_file():
        raise UserError(f"--task {path}: no such file")
    rows = []
    for _, where, row in iter_rows(p, suffix=".jsonl"):
        if not isinstance(row, dict):
            raise UserError(f"{where}: expected a JSON object per line, got {type(row).__name__}")
        rows.append((int(where.rsplit(" ", 1)[1]), row))
    if not rows:
        raise UserError(f"--task {path}: no rows")
    return rows, hashlib.sha256(p.read_bytes()).hexdigest()


def load_task(path: str | Path, shots: int = 0, seed: int = 1234, limit: int | None = None) -> Task:
    """Every row of the file parsed (so a bad row fails before any scoring, wherever it is),
    the first `limit` made into items with `shots` examples each."""
    if shots < 0:
        raise UserError(f"--shots {shots}: must be >= 0")
    if limit is not None and limit <= 0:
        raise UserError(f"--limit {limit}: must be > 0")
    rows, sha = read_jsonl(path)
    fmt = detect_format(rows[0][1], f"{path}: line {rows[0][0]}")
    _, kind, parse = FORMATS[fmt]
    docs = [parse(_Row(row, f"{path}: line {number}")) for number, row in rows]
    n = len(docs) if limit is None else min(limit, len(docs))
    first_n = fmt == "hf/mmlu"
    if first_n:
        by_group: dict[str, list[int]] = {}
        for i, d in enumerate(docs):
            by_group.setdefault(d.group, []).append(i)
        smallest = min(len(v) for v in by_group.values())
        if shots > smallest - 1:
            raise UserError(f"--shots {shots}: {path} has only {smallest} rows in its smallest subject, so at most "
                            f"{smallest - 1} examples besides the item itself")
    elif shots > len(docs) - 1:
        raise UserError(f"--shots {shots}: {path} has {len(docs)} rows, so at most {len(docs) - 1} examples "
                        f"besides the item itself")
    rng = random.Random(seed)
    items = []
    for i in range(n):
        doc, (number, row) = docs[i], rows[i]
        examples: list[int] = []
        if shots:
            # Harness samplers: k + 1 candidates, the item itself (any equal row) dropped, k kept.
            candidates = by_group[doc.group][:shots + 1] if first_n else rng.sample(range(len(docs)), shots + 1)
            examples = [j for j in candidates if rows[j][1] != row][:shots]
        prefix = doc.description + "".join(docs[j].example(kind) + FEWSHOT_DELIMITER for j in examples)
        meta = {"line": number, **{k: v for k, v in doc.meta.items() if v is not None}}
        if examples:
            meta["shots"] = examples
        if kind == "partial":
            items.append(Item(i, prefix, doc.choices, doc.gold, kind, doc.target, meta))
        else:
            items.append(Item(i, prefix + doc.text, doc.choices, doc.gold, kind, None, meta))
    return Task(Path(path).stem, str(path), fmt, kind, items, len(docs), shots, seed, sha)
