"""Pairwise judging of two models' answers to the same prompts, in both orders.

    judge = make_judge("reward:runs/rm" | "lm:runs/sft" | "http://host:8000/v1", model=..., ...)
    items = pair_answers(read_answers("a.jsonl"), read_answers("b.parquet"), ...)
    table, results = judge_items(judge, items)                 # per-item rows, results.json record
    run_judge(output_dir, judge_spec, answers_a=..., answers_b=...)   # what `llmforge eval judge` runs

Model a is the model evaluated, model b the baseline: "win rate" is model a's. Positions are
the judge's "A" (shown first) and "B" (shown second). Every item is judged twice, model a's
answer first and then second; each order's verdict is turned into model a's share (1, 0.5 for
a tie, 0) and the item's preference is their mean, so a judge that always says "A" scores
every item 0.5 and position bias cancels. Two strict verdicts that disagree make a tie (0.5).
A reply the judge's output cannot be read from (an HTTP judge answering neither "A" nor "B")
leaves that order without a verdict: the item is counted as `invalid` and left out of the
rates, never scored as a loss.

Judges (each `compare(pairs) -> [Verdict]`, pairs of (prompt, first, second)):
- `RewardJudge` (`reward:PATH`, an llmforge or Hugging Face reward model): scores each answer
  as the last assistant turn of the chat template, as `alignment`'s reward training encodes a
  preference completion; the higher score wins, P(first) = sigmoid(r_first - r_second)
  (Bradley-Terry). Each distinct (prompt, answer) is scored once.
- `LMJudge` (`lm:PATH`, a causal LM): the comparison template as a user turn of the chat
  template, then the log-likelihood of "A" and of "B" as the assistant's reply
  (`evaluation.scoring.loglikelihood`); the likelier letter wins, P(first) = their softmax.
  A prompt longer than the model's window keeps its last tokens (the answers and the question).
- `HTTPJudge` (`http:URL` or a bare http(s) URL): an OpenAI-compatible chat-completions
  endpoint (URL as given when it ends in /chat/completions, else URL + /chat/completions),
  temperature 0, asking for one letter; the letter is parsed from the reply, and P(first)
  from the first token's `top_logprobs` when the server returns them. Connection errors,
  timeouts, 429 and 5xx are retried with exponential backoff; then a UserError names the URL.
- `FunctionJudge`: any Python callable `(prompt, first, second) -> "A" | "B" | "tie"`.

`run_judge` writes `items.parquet` (per prompt: both answers and lengths, each order's verdict,
P(first) and raw reply, the preference, the GLM's fitted preference) and then `results.json`,
in the layout every `llmforge eval` verb shares (`evaluation.report` reads it):

    {"results": {"judge": {"win_rate", "win_rate_stderr", "lc_win_rate", "lc_win_rate_stderr",
                           "tie_rate", "position_consistency"}},     # fractions in [0, 1]
     "model": <a: path of --answers-a / --model-a>, "baseline": <b>, "n": <items with a verdict>,
     "counts": {"items", "wins", "losses", "ties", "invalid"},
     "judge": {"spec", "kind"[, "url", "model", "api_key_env"]},
     "glm": {"value", "stderr", "n", "coefficients": {"theta", "phi"[, "psi"]}, "length_sd",
             "converged", "formula", "stderr_method"},
     "mean_length": {"a", "b"}, "source": {...how the answers were obtained}, "seconds"}

`position_consistency` is the share of items whose two verdicts name the same model.
"""
from __future__ import annotations

import json
import math
import os
import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from llmforge.common.errors import UserError

# The comparison prompt for LM and HTTP judges (AlpacaEval's and MT-Bench's pairwise prompts
# in spirit: instruction, two answers, a one-letter verdict).
SYSTEM_PROMPT = ("You are a careful, impartial judge of answers written by AI assistants. The order in which "
                 "the answers are shown must not influence you, nor their length.")
COMPARISON_TEMPLATE = (
    "Which answer follows the instruction better: more helpful, more correct, clearer? "
    "Reply with a single letter, A or B.\n\n"
    "## Instruction\n{prompt}\n\n## Answer A\n{first}\n\n## Answer B\n{second}\n\n"
    "## Better answer (A or B)"
)
ANSWER_COLUMNS = ("completion", "output", "answer", "response")  # llmforge generate, AlpacaEval, others
PROMPT_COLUMNS = ("prompt", "instruction")
DIFFICULTY_COLUMN = "instruction_difficulty"
RESULTS_FILE = "results.json"
ITEMS_FILE = "items.parquet"
TASK = "judge"


@dataclass(frozen=True)
class Verdict:
    winner: str | None  # "A" (the answer shown first), "B", "tie"; None: no verdict could be read
    p_first: float | None = None  # the judge's probability that the first answer is better
    raw: str | None = None  # what the judge said (reply text, scores), kept in the per-item file


Pair = tuple[Any, str, str]  # (prompt: str or messages, first answer, second answer)


def prompt_text(prompt: Any) -> str:
    """A prompt as the text a judge reads: a string as is, a single user turn as its content,
    a longer conversation as "Role: content" paragraphs."""
    if isinstance(prompt, str):
        return prompt
    messages = list(prompt)
    if len(messages) == 1 and messages[0].get("role") == "user":
        return messages[0]["content"]
    return "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages)


def comparison_prompt(prompt: Any, first: str, second: str) -> str:
    return COMPARISON_TEMPLATE.format(prompt=prompt_text(prompt), first=first, second=second)


class Judge:
    spec: str = "judge"

    def compare(self, pairs: Sequence[Pair]) -> list[Verdict]:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"spec": self.spec, "kind": type(self).__name__}


class FunctionJudge(Judge):
    """A Python callable as a judge: `fn(prompt, first, second)` returns "A", "B", "tie" or a Verdict."""

    def __init__(self, fn: Callable[[Any, str, str], Any], spec: str = "function"):
        self.fn, self.spec = fn, spec

    def compare(self, pairs: Sequence[Pair]) -> list[Verdict]:
        out = []
        for p in pairs:
            v = self.fn(*p)
            out.append(v if isinstance(v, Verdict) else Verdict(v if v in ("A", "B", "tie") else None, raw=str(v)))
        return out


def _from_scores(first: float, second: float, raw: str) -> Verdict:
    winner = "A" if first > second else "B" if second > first else "tie"
    d = first - second
    p = 1.0 / (1.0 + math.exp(-d)) if d >= 0 else math.exp(d) / (1.0 + math.exp(d))
    return Verdict(winner, p, raw)


class _LocalModel(Judge):
    expected_kind = "causal_lm"
    prefix = "lm"

    def __init__(self, path: str, device: str = "cpu", batch_size: int = 16):
        from training.sources import load_for_inference, resolve_model

        source = resolve_model(path)
        if source.kind != self.expected_kind:
            other = {"reward": "reward:", "causal_lm": "lm:"}.get(source.kind, "")
            raise UserError(f"--judge {self.prefix}:{path}: a {source.kind} model, not a {self.expected_kind}"
                            + (f" (use --judge {other}{path})" if other else ""))
        self.path, self.device, self.batch_size = str(path), device, batch_size
        self.spec = f"{self.prefix}:{path}"
        self.model, self.tokenizer = load_for_inference(path, device)


class RewardJudge(_LocalModel):
    """The higher reward wins (see the module docstring)."""
    expected_kind = "reward"
    prefix = "reward"

    def encode(self, prompt: Any, answer: str) -> list[int]:
        """The ids the reward model reads: prompt turns + the answer as the last assistant turn,
        cut to the window as `alignment` cuts preference pairs (the prompt from the left; an
        answer that alone is too long keeps one prompt token and its head)."""
        from training.chat import as_messages

        enc = self.tokenizer.encode([*as_messages(prompt), {"role": "assistant", "content": answer}],
                                    train_on="last")
        ids, window = enc.ids, self.model.cfg.max_seq_len
        if len(ids) <= window:
            return ids
        start = enc.mask.index(1) if 1 in enc.mask else len(ids)
        cut = len(ids) - window
        if cut < start:
            return ids[cut:]
        start = max(start - 1, 0)
        return ids[start:start + window]

    def scores(self, texts: Sequence[tuple[Any, str]]) -> list[float]:
        import torch

        ids = [self.encode(p, a) for p, a in texts]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out = [0.0] * len(ids)
        with torch.no_grad():
            for start in range(0, len(order), self.batch_size):
                rows = order[start:start + self.batch_size]
                width = max(len(ids[i]) for i in rows)
                x = torch.full((len(rows), width), self.tokenizer.pad_id, dtype=torch.long)
                for r, i in enumerate(rows):
                    x[r, :len(ids[i])] = torch.tensor(ids[i])
                lengths = torch.tensor([len(ids[i]) for i in rows])
                values = self.model(x.to(self.device), lengths.to(self.device)).float().cpu().tolist()
                for i, v in zip(rows, values):
                    out[i] = float(v)
        return out

    def compare(self, pairs: Sequence[Pair]) -> list[Verdict]:
        keys: dict[str, int] = {}
        texts: list[tuple[Any, str]] = []
        index = []
        for prompt, first, second in pairs:
            row = []
            for answer in (first, second):
                key = json.dumps([prompt, answer], sort_keys=True)
                if key not in keys:
                    keys[key] = len(texts)
                    texts.append((prompt, answer))
                row.append(keys[key])
            index.append(row)
        s = self.scores(texts)
        return [_from_scores(s[i], s[j], f"rewards {s[i]:.6g} {s[j]:.6g}") for i, j in index]


class LMJudge(_LocalModel):
    """The likelier of "A" and "B" as the assistant's reply to the comparison prompt."""

    def compare(self, pairs: Sequence[Pair]) -> list[Verdict]:
        from evaluation.scoring import loglikelihood

        tok = self.tokenizer
        letters = [list(tok.tokenizer.encode(x, add_special_tokens=False).ids) for x in ("A", "B")]
        requests = []
        for prompt, first, second in pairs:
            ctx = tok.prompt_ids([{"role": "user", "content": comparison_prompt(prompt, first, second)}])
            requests += [(ctx, letters[0]), (ctx, letters[1])]
        scores = loglikelihood(self.model, requests, batch_tokens=self.batch_size * self.model.cfg.max_seq_len,
                               pad_id=tok.pad_id)
        out = []
        for k in range(len(pairs)):
            a, b = scores[2 * k].logprob, scores[2 * k + 1].logprob
            out.append(_from_scores(a, b, f"logp A {a:.6g} B {b:.6g}"))
        return out


_LETTER = r"\(?\[?\[?([AB])\]?\]?\)?"
_PATTERNS = [
    re.compile(rf"^\W*{_LETTER}\W*$"),  # "A", "(B)", "[[A]]", "B."
    re.compile(r"\[\[([AB])\]\]"),  # MT-Bench's "[[A]]" inside a longer reply
    re.compile(rf"\b(?:answer|output|verdict|winner|choice)\s*(?:is)?\s*[:\-]?\s*\**{_LETTER}\**(?![\w])",
               re.IGNORECASE),
    # A reply that starts with the letter ("A is better because ..."), not with "A or B".
    re.compile(r"^\W*([AB])\b(?!\s*(?:or|and|vs\.?|/|,)\s*[AB]\b)"),
]


def parse_choice(text: str | None) -> str | None:
    """"A" or "B" from a judge's reply, or None when it names neither unambiguously."""
    if not text:
        return None
    text = text.strip()
    for pattern in _PATTERNS:
        found = {m.upper() for m in pattern.findall(text)}
        if len(found) == 1:
            return found.pop()
    return None


def _first_token_probability(choice: dict) -> float | None:
    """P(first is better) from the first reply token's top_logprobs ("A" vs "B"), if both are there."""
    try:
        top = choice["logprobs"]["content"][0]["top_logprobs"]
    except (KeyError, IndexError, TypeError):
        return None
    found: dict[str, float] = {}
    for entry in top or []:
        token = str(entry.get("token", "")).strip().strip("()[]*").upper()
        if token in ("A", "B") and token not in found and isinstance(entry.get("logprob"), (int, float)):
            found[token] = float(entry["logprob"])
    if len(found) < 2:
        return None
    return _from_scores(found["A"], found["B"], "").p_first


class HTTPJudge(Judge):
    """An OpenAI-compatible chat-completions endpoint (see the module docstring)."""

    def __init__(self, url: str, model: str | None, api_key_env: str | None, retries: int, backoff: float,
                 timeout: float, concurrency: int, max_backoff: float = 30.0, logprobs: bool = True,
                 max_tokens: int = 16):
        if not re.match(r"^https?://", url):
            raise UserError(f"--judge http:{url}: expected an http:// or https:// URL")
        base = url.rstrip("/")
        self.url = base if base.endswith("/chat/completions") else base + "/chat/completions"
        self.spec = f"http:{url}"
        self.model = model or "default"
        self.api_key_env = api_key_env
        self.retries, self.backoff, self.max_backoff, self.timeout = retries, backoff, max_backoff, timeout
        self.concurrency = max(1, concurrency)
        self.logprobs = logprobs
        self.max_tokens = max_tokens
        self.sleep = time.sleep  # tests replace it

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "url": self.url, "model": self.model, "api_key_env": self.api_key_env}

    def _body(self, prompt: Any, first: str, second: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model, "temperature": 0, "max_tokens": self.max_tokens,
            "messages": [{"role": "system", "content": SYSTEM_PROMPT},
                         {"role": "user", "content": comparison_prompt(prompt, first, second)}],
        }
        if self.logprobs:
            body.update(logprobs=True, top_logprobs=5)
        return body

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        """One request with retries; the parsed JSON reply."""
        import urllib.error
        import urllib.request

        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                self.sleep(min(self.backoff * 2 ** (attempt - 1), self.max_backoff))
            request = urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    payload = response.read()
            except urllib.error.HTTPError as err:
                detail = err.read()[:300].decode("utf-8", "replace")
                if err.code == 400 and body.get("logprobs"):
                    # Some servers refuse logprobs: ask without them from now on.
                    self.logprobs = False
                    body = {k: v for k, v in body.items() if k not in ("logprobs", "top_logprobs")}
                    last = f"HTTP 400 with logprobs requested ({detail})"
                    continue
                if err.code == 429 or err.code >= 500:
                    last = f"HTTP {err.code} {detail}".strip()
                    continue
                hint = f"; is ${self.api_key_env} set to a valid key?" if err.code in (401, 403) else ""
                raise UserError(f"judge endpoint {self.url}: HTTP {err.code} {detail}{hint}") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as err:
                last = str(getattr(err, "reason", err))
                continue
            try:
                reply = json.loads(payload)
                reply["choices"][0]
                return reply
            except (ValueError, KeyError, IndexError, TypeError):
                last = f"not a chat-completions reply: {payload[:200]!r}"
                continue
        raise UserError(f"judge endpoint {self.url}: no usable reply after {self.retries + 1} attempts "
                        f"(last: {last})")

    def compare_one(self, pair: Pair) -> Verdict:
        choice = self._post(self._body(*pair))["choices"][0]
        message = choice.get("message") or {}
        text = message.get("content") if isinstance(message, dict) else None
        text = text if isinstance(text, str) else choice.get("text")
        p_first = _first_token_probability(choice)
        winner = parse_choice(text)
        if winner is None and p_first is not None and p_first != 0.5:
            winner = "A" if p_first > 0.5 else "B"
        return Verdict(winner, p_first, text if isinstance(text, str) else None)

    def compare(self, pairs: Sequence[Pair]) -> list[Verdict]:
        if not pairs:
            return []
        from concurrent.futures import ThreadPoolExecutor

        first = self.compare_one(pairs[0])  # an unreachable endpoint fails once, not per thread
        with ThreadPoolExecutor(self.concurrency) as pool:
            return [first, *pool.map(self.compare_one, pairs[1:])]


def make_judge(spec: str, model: str | None = None, device: str = "cpu", batch_size: int = 16,
               api_key_env: str = "OPENAI_API_KEY", retries: int = 5, backoff: float = 1.0, timeout: float = 60.0,
               concurrency: int = 4) -> Judge:
    """`reward:PATH`, `lm:PATH`, `http:URL` or a bare http(s):// URL. `model`: the HTTP
    endpoint's model name; `device`, `batch_size`: a local judge's; the rest the HTTP judge's
    (`retries` after the first attempt, sleeping `backoff` * 2^k seconds, at most 30)."""
    kind, sep, rest = spec.partition(":")
    if spec.startswith(("http://", "https://")):
        kind, rest = "http", spec
    elif not sep or not rest:
        raise UserError(f"--judge {spec}: expected reward:PATH, lm:PATH or http:URL")
    if kind == "http":
        return HTTPJudge(rest, model, api_key_env, retries=retries, backoff=backoff, timeout=timeout,
                         concurrency=concurrency)
    if kind in ("reward", "lm"):
        if model:
            raise UserError(f"--judge-model names an HTTP endpoint's model; --judge {spec} is a local model")
        return (RewardJudge if kind == "reward" else LMJudge)(rest, device=device, batch_size=batch_size)
    raise UserError(f"--judge {spec}: unknown judge kind {kind!r} (reward:PATH, lm:PATH or http:URL)")


# ------------------------------------------------------------------------------ answers


def read_answers(path: str, flag: str = "--answers") -> list[dict[str, Any]]:
    """Rows {prompt, answer[, instruction_difficulty]} from a JSONL file, a Parquet file, or a
    directory of Parquet files (`llmforge generate`'s output: generations/*.parquet). The
    prompt is `prompt` (a string or {role, content} messages) or `instruction`; the answer the
    first of `completion`, `output`, `answer`, `response`."""
    from pathlib import Path

    p = Path(path)
    if not p.exists():
        raise UserError(f"{flag} {path}: no such file or directory")
    if p.is_dir() or p.suffix == ".parquet":
        import pyarrow.parquet as pq

        files = [p] if p.is_file() else sorted((p / "generations").glob("*.parquet")) or sorted(p.glob("*.parquet"))
        if not files:
            raise UserError(f"{flag} {path}: no Parquet files (expected generations/*.parquet or *.parquet)")
        raw: list[tuple[str, dict]] = []
        for f in files:
            try:
                rows = pq.read_table(f).to_pylist()
            except Exception as err:  # noqa: BLE001 - any unreadable file is the user's to fix
                raise UserError(f"{flag} {f}: not readable as Parquet ({err})") from None
            raw += [(f"{f} row {i}", r) for i, r in enumerate(rows)]
    else:
        from llmforge.common.rows import iter_rows

        raw = []
        for _, where, row in iter_rows(p, suffix=".jsonl"):
            if not isinstance(row, dict):
                raise UserError(f"{flag} {where}: expected a JSON object per line")
            raw.append((where, row))
    out = []
    for where, row in raw:
        prompt_col = next((c for c in PROMPT_COLUMNS if c in row), None)
        answer_col = next((c for c in ANSWER_COLUMNS if c in row), None)
        if prompt_col is None or answer_col is None:
            missing = "prompt (or instruction)" if prompt_col is None else "/".join(ANSWER_COLUMNS)
            raise UserError(f"{flag} {where}: no {missing} field")
        prompt, answer = row[prompt_col], row[answer_col]
        if isinstance(prompt, list):
            from training.chat import check_messages

            check_messages(prompt, f"{flag} {where}")
        elif not isinstance(prompt, str):
            raise UserError(f"{flag} {where}: {prompt_col} must be a string or a list of messages")
        if not isinstance(answer, str):
            raise UserError(f"{flag} {where}: {answer_col} must be a string, got {type(answer).__name__}")
        item = {"prompt": prompt, "answer": answer}
        if row.get(DIFFICULTY_COLUMN) is not None:
            item[DIFFICULTY_COLUMN] = float(row[DIFFICULTY_COLUMN])
        out.append(item)
    if not out:
        raise UserError(f"{flag} {path}: no answers")
    return out


def _prompt_key(prompt: Any) -> str:
    from training.chat import as_messages

    return json.dumps(as_messages(prompt), sort_keys=True)


def pair_answers(rows_a: list[dict[str, Any]], rows_b: list[dict[str, Any]], name_a: str = "--answers-a",
                 name_b: str = "--answers-b") -> list[dict[str, Any]]:
    """Items {prompt, answer_a, answer_b[, instruction_difficulty]} in the order of `rows_a`,
    matched by prompt (the k-th repeat of a prompt with the k-th repeat on the other side).
    Both sides must answer the same prompts."""
    pool: dict[str, list[dict]] = {}
    for row in rows_b:
        pool.setdefault(_prompt_key(row["prompt"]), []).append(row)
    items = []
    for n, row in enumerate(rows_a):
        others = pool.get(_prompt_key(row["prompt"]))
        if not others:
            raise UserError(f"{name_b}: no answer to prompt {prompt_text(row['prompt'])!r:.100} (answer {n} of "
                            f"{name_a}); both sides must answer the same prompts")
        other = others.pop(0)
        item = {"prompt": row["prompt"], "answer_a": row["answer"], "answer_b": other["answer"]}
        difficulty = row.get(DIFFICULTY_COLUMN, other.get(DIFFICULTY_COLUMN))
        if difficulty is not None:
            item[DIFFICULTY_COLUMN] = difficulty
        items.append(item)
    left = [r for rows in pool.values() for r in rows]
    if left:
        raise UserError(f"{name_a}: no answer to prompt {prompt_text(left[0]['prompt'])!r:.100} of {name_b} "
                        f"({len(left)} unmatched); both sides must answer the same prompts")
    return items


def generate_answers(model_path: str, prompts_path: str, output_dir: str, options=None,
                     overwrite: bool = False) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Answers of `model_path` to the prompt file, made by `training.batch_generate.run_generate`
    into `output_dir` (reused when already made from the same model, prompts and options)."""
    from training.batch_generate import run_generate

    record = run_generate(model_path, prompts_path, output_dir, options, overwrite=overwrite)
    return read_answers(output_dir, "--model"), record


# ------------------------------------------------------------------------------ judging


def _share(verdict: Verdict, a_first: bool) -> float | None:
    """Model a's share of one order's verdict: 1 win, 0.5 tie, 0 loss; None without a verdict."""
    if verdict.winner is None:
        return None
    if verdict.winner == "tie":
        return 0.5
    return 1.0 if (verdict.winner == "A") == a_first else 0.0


def judge_items(judge: Judge, items: Sequence[dict[str, Any]], bootstrap: int = 0) -> tuple[list[dict], dict]:
    """Judge every item in both orders; (per-item rows, the results.json record)."""
    from evaluation.win_rate import length_controlled_win_rate, raw_win_rate

    if not items:
        raise UserError("no items to judge")
    pairs = [(it["prompt"], it["answer_a"], it["answer_b"]) for it in items]
    swapped = [(it["prompt"], it["answer_b"], it["answer_a"]) for it in items]
    verdicts = judge.compare(pairs + swapped)
    n = len(items)
    rows = []
    for it, v1, v2 in zip(items, verdicts[:n], verdicts[n:]):
        s1, s2 = _share(v1, True), _share(v2, False)
        pref = None if s1 is None or s2 is None else (s1 + s2) / 2
        rows.append({
            "prompt": json.dumps(it["prompt"]) if not isinstance(it["prompt"], str) else it["prompt"],
            "answer_a": it["answer_a"], "answer_b": it["answer_b"],
            "len_a": len(it["answer_a"]), "len_b": len(it["answer_b"]),
            "verdict_a_first": v1.winner, "verdict_b_first": v2.winner,
            "p_first_a_first": v1.p_first, "p_first_b_first": v2.p_first,
            "raw_a_first": v1.raw, "raw_b_first": v2.raw,
            "preference": pref,
            DIFFICULTY_COLUMN: it.get(DIFFICULTY_COLUMN),
        })
    valid = [r for r in rows if r["preference"] is not None]
    if not valid:
        raise UserError(f"judge {judge.spec}: no verdict could be read for any of the {n} items "
                        f"(first reply: {rows[0]['raw_a_first']!r:.200})")
    prefs = [r["preference"] for r in valid]
    raw = raw_win_rate(prefs)
    difficulty = [r[DIFFICULTY_COLUMN] for r in valid]
    difficulty = difficulty if all(d is not None for d in difficulty) else None
    lc = length_controlled_win_rate(prefs, [r["len_a"] for r in valid], [r["len_b"] for r in valid],
                                    difficulty=difficulty, bootstrap=bootstrap)
    for r, p in zip(valid, lc.predicted.tolist()):
        r["glm_predicted"] = p
    wins = sum(p == 1.0 for p in prefs)
    losses = sum(p == 0.0 for p in prefs)
    consistent = sum(r["verdict_a_first"] is not None and r["verdict_a_first"] != r["verdict_b_first"]
                     and "tie" not in (r["verdict_a_first"], r["verdict_b_first"]) for r in valid)
    record = {
        "results": {TASK: {
            "win_rate": raw.value, "win_rate_stderr": raw.stderr,
            "lc_win_rate": lc.value, "lc_win_rate_stderr": lc.stderr,
            "tie_rate": (len(valid) - wins - losses) / len(valid),
            "position_consistency": consistent / len(valid),
        }},
        "n": len(valid),
        "counts": {"items": n, "wins": wins, "losses": losses, "ties": len(valid) - wins - losses,
                   "invalid": n - len(valid)},
        "judge": judge.describe(),
        "glm": {**lc.record(), "formula": "logit p = theta + phi*tanh((len_a-len_b)/sd(len_a-len_b))"
                + (" + psi*instruction_difficulty" if difficulty is not None else ""),
                "stderr_method": f"bootstrap {bootstrap}" if bootstrap else "delta (sandwich covariance)"},
        "mean_length": {"a": sum(r["len_a"] for r in rows) / n, "b": sum(r["len_b"] for r in rows) / n},
    }
    return rows, record


def items_table(rows: list[dict]):
    import pyarrow as pa

    types = {"prompt": pa.string(), "answer_a": pa.string(), "answer_b": pa.string(), "len_a": pa.int64(),
             "len_b": pa.int64(), "verdict_a_first": pa.string(), "verdict_b_first": pa.string(),
             "p_first_a_first": pa.float64(), "p_first_b_first": pa.float64(), "raw_a_first": pa.string(),
             "raw_b_first": pa.string(), "preference": pa.float64(), DIFFICULTY_COLUMN: pa.float64(),
             "glm_predicted": pa.float64()}
    return pa.table({k: pa.array([r.get(k) for r in rows], type=t) for k, t in types.items()})


def run_judge(output_dir: str, judge: Judge | str, answers_a: str | None = None, answers_b: str | None = None,
              model_a: str | None = None, model_b: str | None = None, prompts: str | None = None,
              generate_options=None, overwrite: bool = False, bootstrap: int = 0,
              judge_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """`llmforge eval judge`: answers from files or generated, judged, `results.json` and
    `items.parquet` written to `output_dir`. Returns the results record."""
    import io

    import pyarrow.parquet as pq

    from llmforge.common import fs

    if (answers_a is None) != (answers_b is None) or (model_a is None) != (model_b is None):
        raise UserError("give both --answers-a and --answers-b, or both --model-a and --model-b")
    if (answers_a is None) == (model_a is None):
        raise UserError("give either --answers-a/--answers-b or --model-a/--model-b with --prompts")
    if model_a is not None and prompts is None:
        raise UserError("--model-a/--model-b need --prompts (a JSONL file of prompts)")
    if answers_a is not None:
        rows_a, rows_b = read_answers(answers_a, "--answers-a"), read_answers(answers_b, "--answers-b")
        source = {"answers_a": answers_a, "answers_b": answers_b}
        label_a, label_b = answers_a, answers_b
    else:
        from training.batch_generate import read_prompts

        read_prompts(prompts)  # a bad prompt file fails before any model is loaded
        rows_a, rec_a = generate_answers(model_a, prompts, fs.join(output_dir, "answers_a"), generate_options,
                                         overwrite)
        rows_b, rec_b = generate_answers(model_b, prompts, fs.join(output_dir, "answers_b"), generate_options,
                                         overwrite)
        source = {"model_a": model_a, "model_b": model_b, "prompts": prompts,
                  "generation": {"a": rec_a.get("made_from"), "b": rec_b.get("made_from")}}
        label_a, label_b = model_a, model_b
    items = pair_answers(rows_a, rows_b)
    if isinstance(judge, str):
        judge = make_judge(judge, **(judge_options or {}))
    started = time.perf_counter()
    rows, record = judge_items(judge, items, bootstrap=bootstrap)
    record = {**record, "model": label_a, "baseline": label_b, "source": source,
              "seconds": round(time.perf_counter() - started, 3)}
    filesystem, root = fs.resolve(output_dir)
    buf = io.BytesIO()
    pq.write_table(items_table(rows), buf)
    fs.write_bytes_atomic(filesystem, fs.join(root, ITEMS_FILE), buf.getvalue())
    fs.write_json_atomic(filesystem, fs.join(root, RESULTS_FILE), record)
    from evaluation.multiple_choice import export_scores

    export_scores(record)
    return record


def summary(record: dict[str, Any], output_dir: str) -> str:
    r = record["results"][TASK]
    c = record["counts"]
    lines = [
        f"judge {record['judge']['spec']}: {record['model']} (a) vs {record['baseline']} (b), "
        f"{record['n']} items -> {output_dir}",
        f"  win rate     {100 * r['win_rate']:6.2f} % ± {100 * r['win_rate_stderr']:.2f}",
        f"  LC win rate  {100 * r['lc_win_rate']:6.2f} % ± {100 * r['lc_win_rate_stderr']:.2f}   "
        f"(mean length a {record['mean_length']['a']:.0f}, b {record['mean_length']['b']:.0f} chars)",
        f"  wins {c['wins']}, losses {c['losses']}, ties {c['ties']}, no verdict {c['invalid']}; "
        f"both orders agree on {100 * r['position_consistency']:.0f} %",
    ]
    return "\n".join(lines)
