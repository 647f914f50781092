"""The chat template: one definition used by training, generation and evaluation.

A conversation is a list of {"role": system|user|assistant, "content": str}. Each turn is

    <|role|>\\n{content}<|endoftext|>

and a prompt waiting for the model's answer ends with `<|assistant|>\\n`, so generation stops
at `<|endoftext|>`. The role markers are special tokens of every tokenizer the data pipeline
trains (`llmforge.shard_format.DEFAULT_SPECIAL_TOKENS`); `<|endoftext|>` is the document
boundary pretraining already learned, reused as the end of a turn.

`CHAT_TEMPLATE` is the same layout in Jinja for Hugging Face's `tokenizer_config.json`.
Token ids come from encoding the whole rendered text at once (as `apply_chat_template` does),
never from joining separately encoded pieces, so HF reproduces exactly the ids training used;
which tokens are the assistant's is read from the encoding's character offsets.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from llmforge.common.errors import UserError
from llmforge.shard_format import EOS_TOKEN

ROLES = ("system", "user", "assistant")
HEADER = "<|{role}|>\n"
END = EOS_TOKEN

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '" + END + "' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


def check_messages(messages: Sequence[dict[str, Any]], where: str = "conversation") -> None:
    """Roles known, contents strings; raises UserError naming `where` (file and row)."""
    if not messages:
        raise UserError(f"{where}: no messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or set(m) - {"role", "content"} or "role" not in m or "content" not in m:
            raise UserError(f"{where}: message {i} must be {{role, content}}, got {m!r:.120}")
        if m["role"] not in ROLES:
            raise UserError(f"{where}: message {i} has unknown role {m['role']!r} (known: {', '.join(ROLES)})")
        if not isinstance(m["content"], str):
            raise UserError(f"{where}: message {i} content is {type(m['content']).__name__}, not text")


def render(messages: Sequence[dict[str, Any]], add_generation_prompt: bool = False) -> str:
    """The template's text (what `CHAT_TEMPLATE` renders for the same messages)."""
    text = "".join(HEADER.format(role=m["role"]) + m["content"] + END for m in messages)
    return text + (HEADER.format(role="assistant") if add_generation_prompt else "")


@dataclass
class Encoded:
    ids: list[int]
    # 1 where the token is trained on: an assistant turn's content and its closing end token
    # (the model must learn to stop); 0 for system and user turns and every role header.
    mask: list[int]


class ChatTokenizer:
    """A `tokenizers.Tokenizer` with the chat template applied."""

    def __init__(self, tokenizer: Any):
        from llmforge.shard_format import special_token_ids

        specials = special_token_ids(tokenizer)
        missing = [t for t in (END, *(f"<|{r}|>" for r in ROLES)) if t not in specials]
        if missing:
            raise UserError(f"the tokenizer lacks the chat template's special tokens {missing}; tokenizers "
                            f"trained by `llmforge data` have them")
        self.tokenizer = tokenizer
        self.end_id = specials[END]
        self.pad_id = specials.get("<|pad|>", self.end_id)

    @classmethod
    def from_file(cls, path: str) -> "ChatTokenizer":
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_file(str(path)))

    def encode(self, messages: Sequence[dict[str, Any]], add_generation_prompt: bool = False,
               train_on: str = "assistant") -> Encoded:
        """Ids of the rendered conversation and its loss mask. `train_on` = "assistant" (every
        assistant turn) or "last" (only the final assistant turn: a preference completion)."""
        spans, pos = [], 0
        for i, m in enumerate(messages):
            start = pos + len(HEADER.format(role=m["role"]))
            pos = start + len(m["content"]) + len(END)
            if m["role"] == "assistant" and (train_on == "assistant" or i == len(messages) - 1):
                spans.append((start, pos))
        text = render(messages, add_generation_prompt)
        enc = self.tokenizer.encode(text, add_special_tokens=False)
        mask = [0] * len(enc.ids)
        span = 0
        for t, (begin, _) in enumerate(enc.offsets):
            while span < len(spans) and begin >= spans[span][1]:
                span += 1
            if span < len(spans) and spans[span][0] <= begin:
                mask[t] = 1
        return Encoded(list(enc.ids), mask)

    def prompt_ids(self, messages: Sequence[dict[str, Any]]) -> list[int]:
        """Ids of a conversation followed by the assistant header: what generation continues."""
        return list(self.tokenizer.encode(render(messages, add_generation_prompt=True),
                                          add_special_tokens=False).ids)

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)


def as_messages(prompt: str | Sequence[dict[str, Any]], system: str | None = None) -> list[dict[str, str]]:
    """A plain-text prompt as one user turn (after an optional system turn); a message list as is."""
    if isinstance(prompt, str):
        head = [{"role": "system", "content": system}] if system else []
        return [*head, {"role": "user", "content": prompt}]
    return [dict(m) for m in prompt]
