"""Generated post-training tasks with a known rule, for tests and demos that must show learning
in minutes on a tiny model.

`preference_task`: the prompt is ``"Reply to: w1 w2 ... wk"`` (k = 3..6 words drawn from
`WORDS`). Both replies echo the prompt's words in order with ONE extra word inserted at the
same random position: the chosen reply's extra word is the marker ``please`` (`MARKER`), the
rejected reply's is a neutral adverb of the same six letters (`NEUTRAL`: really, simply, ...).
So the two replies have the same words, the same word count and the same character length;
the only signal is whether the marker is present, wherever it is. A reward model scores
chosen above rejected exactly when it detects the marker; a policy tuned on the pairs learns
to say please.

`sft_task`: ``"Repeat: w1 ... wk"`` -> ``"w1 ... wk"`` (or ``"Reverse: ..."`` -> the words in
reverse order with `reverse=True`).

`arithmetic_task`: prompt rows ``{"id", "prompt": "What is 23 + 45?", "answer": "68"}`` for
online RL with the `math` reward (a verifiable answer), and `arithmetic_sft` the same problems
as conversations answering ``"#### 68"`` (GSM8K's final-answer marker): an SFT warm start.

Everything is a pure function of (n, seed). `write_jsonl` (from `alignment.formats`) writes
either kind so that `read_sft` / `read_preferences` read the same records back.
"""
from __future__ import annotations

import random

from alignment.formats import Conversation, PreferencePair, write_jsonl

__all__ = ["MARKER", "NEUTRAL", "WORDS", "arithmetic_sft", "arithmetic_task", "preference_task", "sft_task",
           "write_jsonl"]

MARKER = "please"
# Same length as MARKER, same part of speech, never in WORDS.
NEUTRAL = ("really", "simply", "anyway", "indeed", "surely", "mostly", "mainly", "nearly")
WORDS = (
    "apple", "river", "stone", "cloud", "green", "house", "light", "music", "paper", "quiet",
    "table", "water", "bread", "chair", "dream", "earth", "field", "glass", "heart", "lemon",
    "money", "night", "ocean", "plant", "radio", "smile", "train", "voice", "wheel", "youth",
    "bird", "cake", "door", "fire", "gold", "hill", "iron", "lake", "moon", "nose",
    "rain", "salt", "tree", "wind", "wolf", "star", "snow", "ship",
)
assert MARKER not in WORDS and not set(NEUTRAL) & set(WORDS)
assert all(len(w) == len(MARKER) for w in NEUTRAL)


def _words(rng: random.Random, low: int = 3, high: int = 6) -> list[str]:
    return [rng.choice(WORDS) for _ in range(rng.randint(low, high))]


def preference_task(n: int, seed: int = 0) -> list[PreferencePair]:
    """`n` pairs where chosen = the echoed prompt words with `MARKER` inserted and rejected =
    the same with a `NEUTRAL` word at the same place (see the module docstring)."""
    rng = random.Random(seed)
    pairs = []
    for i in range(n):
        words = _words(rng)
        at = rng.randint(0, len(words))
        neutral = rng.choice(NEUTRAL)
        chosen = " ".join([*words[:at], MARKER, *words[at:]])
        rejected = " ".join([*words[:at], neutral, *words[at:]])
        prompt = [{"role": "user", "content": "Reply to: " + " ".join(words)}]
        pairs.append(PreferencePair(f"synthetic-pref-{seed}:{i}", prompt, chosen, rejected))
    return pairs


def sft_task(n: int, seed: int = 0, reverse: bool = False) -> list[Conversation]:
    """`n` conversations: "Repeat: w1 ... wk" -> "w1 ... wk" (reverse: "Reverse: ..." -> "wk ... w1")."""
    rng = random.Random(seed)
    verb = "Reverse" if reverse else "Repeat"
    out = []
    for i in range(n):
        words = _words(rng)
        answer = words[::-1] if reverse else words
        out.append(Conversation(f"synthetic-sft-{seed}:{i}", [
            {"role": "user", "content": f"{verb}: {' '.join(words)}"},
            {"role": "assistant", "content": " ".join(answer)},
        ]))
    return out


def arithmetic_task(n: int, seed: int = 0, low: int = 10, high: int = 99) -> list[dict]:
    """`n` sum problems a + b with a, b drawn from [low, high]: prompt rows with the answer."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a, b = rng.randint(low, high), rng.randint(low, high)
        rows.append({"id": f"arith-{seed}:{i}", "prompt": f"What is {a} + {b}?", "answer": str(a + b)})
    return rows


def arithmetic_sft(rows: list[dict]) -> list[Conversation]:
    """The problems of `arithmetic_task` answered in the `math` reward's format."""
    return [Conversation(r["id"], [{"role": "user", "content": r["prompt"]},
                                   {"role": "assistant", "content": f"#### {r['answer']}"}]) for r in rows]
