"""Post-training data files read into normalised records: `Conversation` (SFT) and
`PreferencePair` (reward modelling, DPO).

Files are `.json` (one list of rows), `.jsonl`, or either gzipped (`.json.gz`, `.jsonl.gz`).
Each file's format is detected from its first row's keys; `format=` forces one.

SFT formats (`read_sft`):

- ``alpaca``: ``{"instruction", "input"?, "output", "system"?, "history"?}``. The user turn is
  `instruction`, followed by a blank line and `input` when `input` is not empty after
  stripping whitespace: ``instruction + "\\n\\n" + input``, else ``instruction`` alone; both
  are used verbatim (never stripped). `output` is the assistant turn. A non-empty `system`
  becomes a system turn first; `history` (LLaMA-Factory: ``[[user, assistant], ...]``) becomes
  the turns before the instruction.
- ``messages``: ``{"messages": [{"role", "content"}, ...]}``, any number of turns, optional
  system turn; ``{"from", "value"}`` message keys are accepted too.
- ``sharegpt``: ``{"conversations": [{"from", "value"}, ...], "system"?}``.

Roles: ``system``; ``user`` (also ``human``); ``assistant`` (also ``gpt``, ``model``), in
either key style. An SFT conversation must end with an assistant turn.

Preference formats (`read_preferences`):

- ``pairs``: ``{"prompt", "chosen", "rejected", "system"?}``. `prompt` is a string (one user
  turn) or a message list; `chosen`/`rejected` are strings or message lists: either the
  assistant turn(s) that follow the prompt, or the whole conversation starting with the
  prompt. Without a `prompt` key, `chosen` and `rejected` must be whole conversations and the
  prompt is what they share (TRL's "implicit prompt").
- ``sharegpt``: ``{"conversations": [...], "chosen": {"from", "value"}, "rejected": {...},
  "system"?}`` (LLaMA-Factory's pairwise format).
- ``hh_rlhf``: ``{"chosen": "\\n\\nHuman: ...\\n\\nAssistant: ...", "rejected": ...}``, whole
  transcripts (Anthropic HH-RLHF). Each turn's text is stripped of surrounding whitespace,
  and consecutive turns of one speaker (a quirk of the published data) are joined with
  ``"\\n\\n"`` into one turn.

In every preference format both sides are made whole conversations; each must end with an
assistant turn, and everything before that final turn must be the same on both sides: that
shared part is `prompt` (normally ending with the last user turn), the two final assistant
contents are `chosen` and `rejected`.

Rows that are fine but useless are skipped and counted in `Counts.skipped`:
``empty_completion`` (an SFT assistant turn, or a chosen/rejected reply, that is empty or only
whitespace) and ``chosen_equals_rejected`` (identical replies). Rows that are wrong (not an
object, a missing key, an unknown role, content that is not text, a line that is not JSON,
a transcript that does not parse, sides that differ before the final reply) raise `UserError`
naming the file, the row (``line N``, 1-based, for JSONL; ``row index N``, 0-based, for a
JSON list) and what is wrong: a wrong row means the file is not what the reader thinks.

Ids: the row's own `id` (a string or integer) when it has one, else
``"<file stem>:<row index>"`` with the 0-based index among the file's rows, so ids are stable
across reads. Ids must be unique within a file. Keys a format does not use are carried in
`extra`.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from llmforge.common.errors import UserError
from llmforge.common.rows import file_stem, iter_rows
from training.chat import check_messages

SFT_FORMATS = ("alpaca", "messages", "sharegpt")
PREFERENCE_FORMATS = ("pairs", "sharegpt", "hh_rlhf")

EMPTY_COMPLETION = "empty_completion"
CHOSEN_EQUALS_REJECTED = "chosen_equals_rejected"
SKIP_REASONS = (EMPTY_COMPLETION, CHOSEN_EQUALS_REJECTED)

# Role names as datasets spell them -> the chat template's roles.
ROLE_ALIASES = {"system": "system", "user": "user", "human": "user",
                "assistant": "assistant", "gpt": "assistant", "model": "assistant"}

Message = dict[str, str]


@dataclass
class Conversation:
    id: str
    messages: list[Message]
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class PreferencePair:
    id: str
    prompt: list[Message]   # the shared conversation before the final assistant turn
    chosen: str             # the preferred final assistant reply
    rejected: str
    extra: dict[str, Any] = field(default_factory=dict)

    def chosen_messages(self) -> list[Message]:
        return [*self.prompt, {"role": "assistant", "content": self.chosen}]

    def rejected_messages(self) -> list[Message]:
        return [*self.prompt, {"role": "assistant", "content": self.rejected}]


@dataclass
class Counts:
    """What reading one file did: rows read = kept + sum of skipped."""

    path: str
    format: str
    read: int = 0
    kept: int = 0
    skipped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SKIP_REASONS, 0))
    # SFT counts carry only empty_completion; preference counts both reasons.

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "format": self.format, "read": self.read, "kept": self.kept,
                "skipped": dict(self.skipped)}


# ---------------------------------------------------------------------------------------------
# Files and rows


def _object(row: Any, where: str) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise UserError(f"{where}: a row must be a JSON object, got {type(row).__name__}")
    return row


def _require(row: dict[str, Any], keys: Sequence[str], where: str) -> None:
    missing = [k for k in keys if k not in row]
    if missing:
        raise UserError(f"{where}: missing key(s) {', '.join(missing)} (row has: {', '.join(sorted(row)) or 'none'})")


def _text(value: Any, what: str, where: str) -> str:
    if not isinstance(value, str):
        raise UserError(f"{where}: {what} must be text, got {type(value).__name__}")
    return value


def _row_id(row: dict[str, Any], stem: str, index: int, where: str) -> str:
    if "id" not in row:
        return f"{stem}:{index}"
    rid = row["id"]
    if isinstance(rid, bool) or not isinstance(rid, (str, int)) or rid == "":
        raise UserError(f"{where}: id must be a non-empty string or an integer, got {rid!r:.60}")
    return str(rid)


def _extra(row: dict[str, Any], used: Sequence[str]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in used and k != "id"}


def _message(m: Any, where: str, i: int, what: str = "message") -> Message:
    """One {role, content} or {from, value} message, role names mapped by ROLE_ALIASES."""
    if not isinstance(m, dict):
        raise UserError(f"{where}: {what} {i} must be an object, got {type(m).__name__}")
    keys = ("from", "value") if ("from" in m or "value" in m) and "role" not in m and "content" not in m \
        else ("role", "content")
    missing = [k for k in keys if k not in m]
    if missing:
        raise UserError(f"{where}: {what} {i} lacks {', '.join(missing)} (has: {', '.join(sorted(m)) or 'none'})")
    unexpected = sorted(set(m) - set(keys))
    if unexpected:
        raise UserError(f"{where}: {what} {i} has unexpected key(s) {', '.join(unexpected)} "
                        f"(a message is {{{keys[0]}, {keys[1]}}})")
    role = m[keys[0]]
    if not isinstance(role, str) or role not in ROLE_ALIASES:
        raise UserError(f"{where}: {what} {i} has unknown {keys[0]} {role!r:.60} "
                        f"(known: {', '.join(ROLE_ALIASES)})")
    content = _text(m[keys[1]], f"{what} {i} {keys[1]}", where)
    return {"role": ROLE_ALIASES[role], "content": content}


def _messages(value: Any, where: str, what: str) -> list[Message]:
    if not isinstance(value, list):
        raise UserError(f"{where}: {what} must be a list of messages, got {type(value).__name__}")
    return [_message(m, where, i, f"{what} message") for i, m in enumerate(value)]


def _with_system(row: dict[str, Any], messages: list[Message], where: str) -> list[Message]:
    system = row.get("system")
    if system is None or system == "":
        return messages
    return [{"role": "system", "content": _text(system, "system", where)}, *messages]


def _check_unique(ids: dict[str, str], rid: str, where: str) -> None:
    if rid in ids:
        raise UserError(f"{where}: id {rid!r} repeats the id of {ids[rid]}; ids must be unique in a file")
    ids[rid] = where


def _resolve_format(first: dict[str, Any], forced: str | None, known: Sequence[str], detect,
                    path: Path, where: str) -> str:
    """`forced` when given, else the format `detect` reads from the first row's keys."""
    if forced is not None:
        if forced not in known:
            raise UserError(f"{path}: unknown format {forced!r} (known: {', '.join(known)})")
        return forced
    return detect(first, where)


# ---------------------------------------------------------------------------------------------
# SFT


def _detect_sft(row: dict[str, Any], where: str) -> str:
    keys = set(row)
    if {"chosen", "rejected"} <= keys:
        raise UserError(f"{where}: rows have chosen/rejected: a preference file (read it with read_preferences)")
    if "messages" in keys:
        return "messages"
    if "conversations" in keys:
        return "sharegpt"
    if {"instruction", "output"} <= keys:
        return "alpaca"
    raise UserError(f"{where}: cannot tell the SFT format from the first row's keys ({', '.join(sorted(keys)) or 'none'}); "
                    f"expected instruction+output (alpaca), messages, or conversations (sharegpt)")


def alpaca_user_content(instruction: str, input_: str = "") -> str:
    """`instruction`, then a blank line and `input` when `input` has any non-whitespace."""
    return f"{instruction}\n\n{input_}" if input_.strip() else instruction


def _alpaca_messages(row: dict[str, Any], where: str) -> list[Message]:
    _require(row, ("instruction", "output"), where)
    instruction = _text(row["instruction"], "instruction", where)
    input_ = "" if row.get("input") is None else _text(row["input"], "input", where)
    output = _text(row["output"], "output", where)
    history = [] if row.get("history") is None else row["history"]
    if not isinstance(history, list):
        raise UserError(f"{where}: history must be a list of [user, assistant] pairs")
    turns: list[Message] = []
    for i, pair in enumerate(history):
        if not (isinstance(pair, list) and len(pair) == 2):
            raise UserError(f"{where}: history item {i} must be a [user, assistant] pair")
        turns += [{"role": "user", "content": _text(pair[0], f"history item {i} user", where)},
                  {"role": "assistant", "content": _text(pair[1], f"history item {i} assistant", where)}]
    turns += [{"role": "user", "content": alpaca_user_content(instruction, input_)},
              {"role": "assistant", "content": output}]
    return _with_system(row, turns, where)


SFT_KEYS = {"alpaca": ("instruction", "input", "output", "system", "history"),
            "messages": ("messages",), "sharegpt": ("conversations", "system")}


def _sft_messages(fmt: str, row: dict[str, Any], where: str) -> list[Message]:
    if fmt == "alpaca":
        return _alpaca_messages(row, where)
    key = "messages" if fmt == "messages" else "conversations"
    _require(row, (key,), where)
    return _with_system(row, _messages(row[key], where, key), where)


def read_sft(path: str | os.PathLike, format: str | None = None) -> tuple[list[Conversation], Counts]:
    """Conversations of an SFT file (alpaca, messages or sharegpt; see the module docstring)
    and what was read, kept and skipped."""
    path = Path(path)
    stem = file_stem(path)
    out: list[Conversation] = []
    counts: Counts | None = None
    ids: dict[str, str] = {}
    for index, where, row in iter_rows(path):
        row = _object(row, where)
        if counts is None:
            counts = Counts(str(path), _resolve_format(row, format, SFT_FORMATS, _detect_sft, path, where),
                            skipped={EMPTY_COMPLETION: 0})
        counts.read += 1
        messages = _sft_messages(counts.format, row, where)
        check_messages(messages, where)
        if messages[-1]["role"] != "assistant":
            raise UserError(f"{where}: the conversation must end with an assistant turn, "
                            f"it ends with a {messages[-1]['role']} turn")
        rid = _row_id(row, stem, index, where)
        _check_unique(ids, rid, where)
        if any(m["role"] == "assistant" and not m["content"].strip() for m in messages):
            counts.skip(EMPTY_COMPLETION)
            continue
        out.append(Conversation(rid, messages, _extra(row, SFT_KEYS[counts.format])))
        counts.kept += 1
    return out, counts or Counts(str(path), format or "empty", skipped={EMPTY_COMPLETION: 0})


# ---------------------------------------------------------------------------------------------
# Preferences


def _detect_preferences(row: dict[str, Any], where: str) -> str:
    keys = set(row)
    if {"chosen", "rejected"} <= keys:
        if "conversations" in keys:
            return "sharegpt"
        if "prompt" in keys or not all(isinstance(row[k], str) for k in ("chosen", "rejected")):
            return "pairs"
        return "hh_rlhf"
    raise UserError(f"{where}: cannot tell the preference format from the first row's keys "
                    f"({', '.join(sorted(keys)) or 'none'}); expected chosen and rejected "
                    f"(with prompt, with conversations, or as whole Human/Assistant transcripts)")


_HH_TURN = re.compile(r"\n\n(Human|Assistant):")
_HH_ROLES = {"Human": "user", "Assistant": "assistant"}


def parse_hh_transcript(text: str, where: str, what: str) -> list[Message]:
    """"\\n\\nHuman: ...\\n\\nAssistant: ..." as messages (texts stripped; consecutive turns of
    one speaker joined with a blank line)."""
    parts = _HH_TURN.split(text)
    if parts[0].strip() or len(parts) < 3:
        raise UserError(f"{where}: {what} is not a '\\n\\nHuman: ...\\n\\nAssistant: ...' transcript "
                        f"(starts {text[:40]!r})")
    turns: list[Message] = []
    for speaker, content in zip(parts[1::2], parts[2::2]):
        role, content = _HH_ROLES[speaker], content.strip()
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] += "\n\n" + content
        else:
            turns.append({"role": role, "content": content})
    return turns


def _side(value: Any, prompt: list[Message], where: str, what: str) -> list[Message]:
    """One side of a `pairs` row as a whole conversation."""
    if isinstance(value, str):
        return [*prompt, {"role": "assistant", "content": value}]
    if isinstance(value, dict):  # one message, as in LLaMA-Factory
        return [*prompt, _message(value, where, 0, what)]
    messages = _messages(value, where, what)
    # The whole conversation, prompt included (with or without a `system` key's turn)?
    system = prompt[:1] if prompt and prompt[0]["role"] == "system" else []
    for head in (prompt, prompt[len(system):]):
        if head and messages[: len(head)] == head:
            return [*prompt[: len(prompt) - len(head)], *messages]
    return [*prompt, *messages]


def _pair_sides(fmt: str, row: dict[str, Any], where: str) -> tuple[list[Message], list[Message]]:
    if fmt == "hh_rlhf":
        _require(row, ("chosen", "rejected"), where)
        return tuple(parse_hh_transcript(_text(row[k], k, where), where, k) for k in ("chosen", "rejected"))
    if fmt == "sharegpt":
        _require(row, ("conversations", "chosen", "rejected"), where)
        prompt = _with_system(row, _messages(row["conversations"], where, "conversations"), where)
    else:
        _require(row, ("chosen", "rejected"), where)
        prompt = row.get("prompt")
        if prompt is None:
            prompt = []
        elif isinstance(prompt, str):
            prompt = [{"role": "user", "content": prompt}]
        else:
            prompt = _messages(prompt, where, "prompt")
        prompt = _with_system(row, prompt, where)
    return _side(row["chosen"], prompt, where, "chosen"), _side(row["rejected"], prompt, where, "rejected")


def _split_pair(chosen: list[Message], rejected: list[Message], where: str) -> tuple[list[Message], str, str]:
    """(shared prompt, chosen reply, rejected reply) of two whole conversations."""
    for what, side in (("chosen", chosen), ("rejected", rejected)):
        check_messages(side, f"{where}: {what}")
        if side[-1]["role"] != "assistant":
            raise UserError(f"{where}: {what} must end with an assistant reply, it ends with a "
                            f"{side[-1]['role']} turn")
    prompt = chosen[:-1]
    if prompt != rejected[:-1]:
        k = next((i for i, (a, b) in enumerate(zip(chosen[:-1], rejected[:-1])) if a != b),
                 min(len(chosen), len(rejected)) - 1)
        raise UserError(f"{where}: chosen and rejected differ before their final assistant reply "
                        f"(first at turn {k}; chosen has {len(chosen)} turns, rejected {len(rejected)})")
    if not any(m["role"] == "user" for m in prompt):
        raise UserError(f"{where}: no prompt: no user turn before the final assistant reply")
    return prompt, chosen[-1]["content"], rejected[-1]["content"]


PREFERENCE_KEYS = {"pairs": ("prompt", "chosen", "rejected", "system"),
                   "sharegpt": ("conversations", "chosen", "rejected", "system"),
                   "hh_rlhf": ("chosen", "rejected")}


def read_preferences(path: str | os.PathLike, format: str | None = None) -> tuple[list[PreferencePair], Counts]:
    """Preference pairs of a file (pairs, sharegpt or hh_rlhf; see the module docstring) and
    what was read, kept and skipped."""
    path = Path(path)
    stem = file_stem(path)
    out: list[PreferencePair] = []
    counts: Counts | None = None
    ids: dict[str, str] = {}
    for index, where, row in iter_rows(path):
        row = _object(row, where)
        if counts is None:
            counts = Counts(str(path), _resolve_format(row, format, PREFERENCE_FORMATS, _detect_preferences, path, where))
        counts.read += 1
        prompt, chosen, rejected = _split_pair(*_pair_sides(counts.format, row, where), where)
        rid = _row_id(row, stem, index, where)
        _check_unique(ids, rid, where)
        if not chosen.strip() or not rejected.strip():
            counts.skip(EMPTY_COMPLETION)
            continue
        if chosen == rejected:
            counts.skip(CHOSEN_EQUALS_REJECTED)
            continue
        out.append(PreferencePair(rid, prompt, chosen, rejected, _extra(row, PREFERENCE_KEYS[counts.format])))
        counts.kept += 1
    return out, counts or Counts(str(path), format or "empty")


# ---------------------------------------------------------------------------------------------
# Held-out split


def _unit(seed: int, rid: str) -> float:
    digest = hashlib.sha256(f"{seed}\0{rid}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_holdout(records: Sequence[Any], fraction: float, seed: int = 0) -> tuple[list[Any], list[Any]]:
    """(train, held_out), each in the input order. A record is held out when a hash of
    (seed, its id) falls below `fraction`, so it stays on its side whatever other rows are added
    or removed. With `fraction` > 0 and at least 2 records, at least one is held out (the
    lowest hash) and, when `fraction` < 1, at least one is trained on (the highest hash)."""
    if not 0.0 <= fraction <= 1.0:
        raise UserError(f"held-out fraction must be in [0, 1], got {fraction}")
    units = [_unit(seed, r.id) for r in records]
    held = [u < fraction for u in units]
    if fraction > 0 and len(records) >= 2:
        if not any(held):
            held[min(range(len(units)), key=units.__getitem__)] = True
        if fraction < 1 and all(held):
            held[max(range(len(units)), key=units.__getitem__)] = False
    return ([r for r, h in zip(records, held) if not h], [r for r, h in zip(records, held) if h])


# ---------------------------------------------------------------------------------------------
# Writing


def record_row(record: Conversation | PreferencePair) -> dict[str, Any]:
    """The JSON row the readers read back into the same record: `{"id", "messages", ...extra}`
    (format `messages`) or `{"id", "prompt": [...], "chosen", "rejected", ...extra}` (`pairs`)."""
    if isinstance(record, Conversation):
        head = {"id": record.id, "messages": record.messages}
    elif isinstance(record, PreferencePair):
        head = {"id": record.id, "prompt": record.prompt, "chosen": record.chosen, "rejected": record.rejected}
    else:
        raise TypeError(f"not a Conversation or PreferencePair: {type(record).__name__}")
    clash = set(head) & set(record.extra)
    if clash:
        raise ValueError(f"record {record.id}: extra keys {sorted(clash)} clash with the record's own")
    return {**head, **record.extra}


def write_jsonl(records: Sequence[Conversation | PreferencePair], path: str | os.PathLike) -> Path:
    """Records as JSONL (gzipped when the name ends in .gz), one kind per file, written whole
    to a temporary name and renamed into place."""
    path = Path(path)
    if not (path.name.endswith(".jsonl") or path.name.endswith(".jsonl.gz")):
        raise UserError(f"{path}: write_jsonl writes .jsonl or .jsonl.gz files")
    kinds = {type(r) for r in records}
    if len(kinds) > 1:
        raise TypeError(f"one kind of record per file, got {sorted(k.__name__ for k in kinds)}")
    rows = [record_row(r) for r in records]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    data = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8")
    if path.name.endswith(".gz"):
        data = gzip.compress(data, mtime=0)  # the same records give the same bytes
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path
