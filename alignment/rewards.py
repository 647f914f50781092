"""Rewards for online RL: rule-based functions (the built-in `math`, or any `module:function`)
and a reward model, behind one `RewardScorer` that counts what could not be scored.

A reward function is called as `fn(completion, row)`: the completion text and the prompt's row
from the prompts file (its `answer` and any other field), and returns a float. A function that
raises or returns NaN/inf does not stop the run: the sample is dropped and counted, until the
share of such samples passes `max_error_rate`; then the run stops naming the function.

`math` (GSM8K style): the completion must state its final answer as `#### <number>` (the
GSM8K solutions' own marker); the number is compared with the row's `answer` (a number, or a
GSM8K solution ending in `#### <number>`). Correctness is gated on the format: a completion
without a readable final answer gets 0 whatever numbers it contains, one with the format gets
`format_reward` (0.1), and a correct one 1.0. Adding a format bonus to a separate correctness
score instead is hacked (the policy collects the bonus, then guesses); gating rewards only
answers given the checkable way (DeepSeek-R1's accuracy + format rewards, with the format
as a precondition).
"""
from __future__ import annotations

import importlib
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from llmforge.common.errors import UserError

FINAL_ANSWER = re.compile(r"####\s*(-?[\d,]*\.?\d+)\s*$")
NUMBER = re.compile(r"-?[\d,]*\.?\d+")
FORMAT_REWARD = 0.1


def _number(text: str) -> float | None:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return None


def final_answer(completion: str) -> float | None:
    """The number after the last `####` when the completion ends with it, else None."""
    m = FINAL_ANSWER.search(completion.strip())
    return _number(m.group(1)) if m else None


def reference_answer(row: dict[str, Any]) -> float:
    """The row's `answer` as a number: a plain number, or a GSM8K solution ending `#### N`."""
    if "answer" not in row:
        raise ValueError(f"the math reward needs an 'answer' field in each prompt row; this row has {sorted(row)}")
    value = row["answer"]
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip()
    found = final_answer(text)
    if found is None:
        matches = NUMBER.findall(text)
        found = _number(matches[-1]) if matches else None
    if found is None:
        raise ValueError(f"answer {value!r} holds no number")
    return found


def math_reward(completion: str, row: dict[str, Any], format_reward: float = FORMAT_REWARD) -> float:
    """1.0 for a correct `#### N` final answer, `format_reward` for a wrong one, 0 without one."""
    got = final_answer(completion)
    if got is None:
        return 0.0
    return 1.0 if math.isclose(got, reference_answer(row), rel_tol=0.0, abs_tol=1e-6) else format_reward


def exact_match(completion: str, row: dict[str, Any]) -> bool:
    """The final answer is present and equals the row's answer (the metric GRPO is judged by)."""
    got = final_answer(completion)
    return got is not None and math.isclose(got, reference_answer(row), abs_tol=1e-6)


BUILTIN = {"math": math_reward}


def load_reward_function(spec: str) -> Callable[[str, dict[str, Any]], float]:
    """`math` or `package.module:function`; a clear error when it cannot be imported."""
    if spec in BUILTIN:
        return BUILTIN[spec]
    module, sep, name = spec.partition(":")
    if not sep or not module or not name:
        raise UserError(f"--reward {spec!r}: expected 'math' or MODULE:FUNCTION")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        raise UserError(f"--reward {spec}: cannot import it ({err})") from None
    if not callable(fn):
        raise UserError(f"--reward {spec}: {name} is not callable")
    return fn


@dataclass
class Scored:
    rewards: list[float | None]  # None: the sample could not be scored (dropped)
    errors: dict[str, int] = field(default_factory=dict)  # error message -> count
    first_error: str | None = None


class RewardScorer:
    """Scores completions with a reward function or a reward model (`reward_model` path).

    The reward model reads the prompt and the completion as a conversation in the chat
    template, as `llmforge align reward` trained it; its tokenizer must be the policy's."""

    def __init__(self, function: str | None = None, reward_model: str | None = None, device: str = "cpu"):
        if (function is None) == (reward_model is None):
            raise UserError("give exactly one of --reward (math or MODULE:FUNCTION) and --reward-model PATH")
        self.name = function or f"reward model {reward_model}"
        self.fn = load_reward_function(function) if function else None
        self.model = self.chat = None
        if reward_model:
            from training.sources import load_for_inference

            self.model, self.chat = load_for_inference(reward_model, device, kind="reward")
            self.device = device

    def score(self, prompts: Sequence[Any], completions: Sequence[str], rows: Sequence[dict[str, Any]],
              batch_size: int = 16) -> Scored:
        if self.model is not None:
            return Scored(self._model_scores(prompts, completions, batch_size))
        out = Scored([])
        for completion, row in zip(completions, rows):
            try:
                value = float(self.fn(completion, row))
                if not math.isfinite(value):
                    raise ValueError(f"returned {value}")
            except Exception as err:  # a user's function: any failure is counted, not fatal
                message = f"{type(err).__name__}: {err}"
                out.errors[message] = out.errors.get(message, 0) + 1
                out.first_error = out.first_error or message
                value = None
            out.rewards.append(value)
        return out

    def _model_scores(self, prompts, completions, batch_size: int) -> list[float]:
        import torch

        from training.chat import as_messages

        seqs = []
        for prompt, completion in zip(prompts, completions):
            messages = as_messages(prompt) + [{"role": "assistant", "content": completion}]
            ids = self.chat.encode(messages).ids[: self.model.cfg.max_seq_len]
            seqs.append(ids)
        scores: list[float] = []
        with torch.no_grad():
            for s in range(0, len(seqs), batch_size):
                chunk = seqs[s:s + batch_size]
                width = max(len(x) for x in chunk)
                ids = torch.full((len(chunk), width), self.chat.pad_id, dtype=torch.long)
                for i, x in enumerate(chunk):
                    ids[i, :len(x)] = torch.tensor(x)
                lengths = torch.tensor([len(x) for x in chunk])
                scores += self.model(ids.to(self.device), lengths.to(self.device)).float().tolist()
        return scores
