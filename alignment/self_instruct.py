"""Self-instruct synthetic SFT data (Wang et al. 2022, "Self-Instruct"; the Stanford Alpaca recipe).

    run_self_instruct(model_path, seed_tasks, output_dir, config)   what `llmforge align self-instruct` runs

Each round sends `request_batch_size` prompts to the model. A prompt is a short preamble
(what a task is, in our words) followed by `num_prompt_instructions` example tasks drawn from
the pool, numbered as in Alpaca's `generate_instruction.py`:

    ###
    1. Instruction: <instruction, whitespace collapsed, trailing ':' dropped>
    1. Input:
    <input, or <noinput>>
    1. Output:
    <output>
    ###
    ...
    ###
    4. Instruction:

and the model continues the list. `parse_response` cuts the continuation at `###` into
candidates, the k-th expected to be numbered `num_prompt_instructions + k`, with its three
fields (`<noinput>` -> ""). The examples are drawn from the seed tasks (Alpaca: seeds only;
`num_prompt_machine` > 0 replaces that many of them with accepted machine tasks once there are
enough, as self-instruct's 6 human + 2 machine).

Every candidate is kept or dropped for one reason, counted in `results.json` (candidates =
kept + sum of dropped), in this order:

- `truncated`: the last candidate of a reply that hit `max_new_tokens` (Alpaca discards it);
- `unparsed`: not "n. Instruction: ... n. Input: ... n. Output: ..." with the expected n;
- Alpaca's heuristics on the instruction: `too_short` (<= 3 words), `too_long` (> 150 words),
  `blacklisted` (a whole word/phrase of `BLACKLIST`, any case: tasks a language model cannot
  do), `write_a_program` (starts with "Write a program"), `starts_with_punctuation`,
  `non_ascii_start`;
- `empty_output` (ours: `read_sft` would skip the example anyway);
- `surplus`: candidates after the target count was reached in the last round;
- `similar`: ROUGE-L F1 >= `similarity_threshold` (0.7, self-instruct's "less than 0.7" to be
  added; Alpaca's code drops > 0.7) against any instruction of the pool: the seed tasks and
  every instruction accepted before it, this round's included.

A prompt too long for the model's context is not sent (counted under requests); a round in
which every prompt is too long stops the run with a UserError (fewer or shorter examples, a
shorter preamble, or a model with a longer context). The run stops at `num_instructions` or
after `max_requests` prompts (a model that writes junk never fills the pool), whichever first.

ROUGE-L (`rouge_l`) is computed here: tokens as the `rouge_score` package makes them without a
stemmer (lowercase, runs of [a-z0-9]), F1 = 2 LCS / (m + n), the LCS by the bit-parallel
algorithm (Allison-Dix / Hyyrö: one big-integer update per token); a pool entry whose length
alone bounds F1 below the threshold (2 min(m, n) / (m + n)) is skipped without an LCS.

Outputs in `output_dir`: `instructions.json` (Alpaca JSON, a list of {instruction, input,
output}: `llmforge align sft --data` reads it) and `results.json` (the funnel, written last).
Runs are resumable and reproducible: round r's examples are drawn with a generator seeded by
(seed, r), each request's sampling stream is keyed by its global index, and `progress.json`
(the accepted tasks and counts after each finished round) lets a killed run continue where it
stopped with the same result. A finished output made from the same model, tokenizer, seed file
and options is reused; one made from others is refused unless `overwrite`.
"""
from __future__ import annotations

import hashlib
import json
import random
import re
import string
import time
from collections import Counter
from typing import Any, Callable, Sequence

from pydantic import Field, model_validator

from llmforge.common.config import StrictModel
from llmforge.common.errors import UserError
from training.batch_generate import GenerateOptions
from training.generate import SamplingParams

INSTRUCTIONS_FILE = "instructions.json"
RESULTS_FILE = "results.json"
PROGRESS_FILE = "progress.json"
NO_INPUT = "<noinput>"

# Alpaca's generate_instruction.py: words and phrases of tasks a language model cannot do.
BLACKLIST = ("image", "images", "graph", "graphs", "picture", "pictures", "file", "files", "map", "maps",
             "draw", "plot", "go to", "video", "audio", "music", "flowchart", "diagram")
_BLACKLIST = re.compile(r"\b(" + "|".join(re.escape(w) for w in BLACKLIST) + r")\b", re.IGNORECASE)

# In the order they are checked; every candidate is counted under at most one.
DROP_REASONS = ("truncated", "unparsed", "too_short", "too_long", "blacklisted", "write_a_program",
                "starts_with_punctuation", "non_ascii_start", "empty_output", "surplus", "similar")

# The preamble in the spirit of Alpaca's prompt.txt (our wording): what to write and how.
PREAMBLE = (
    "You are asked to come up with a list of 20 varied task instructions. The tasks will be given to a language "
    "model, and we will judge how well it completes them.\n\n"
    "Requirements:\n"
    "1. Vary the verbs and the phrasing: mix questions with imperative instructions.\n"
    "2. Vary the kind of task: open-ended writing, classification, editing, reasoning, rewriting, and so on.\n"
    "3. A language model must be able to do the task in text: no visual or audio output, no actions in the world.\n"
    "4. Write in English, one or two sentences per instruction.\n"
    "5. Give a realistic input for the instruction when it needs one (at most about 100 words, no "
    "placeholders); when it needs none, write \"<noinput>\" as the input.\n"
    "6. Write a good output for the instruction and input, in under 100 words.\n\n"
    "List of 20 tasks:\n"
)


def _default_generation() -> GenerateOptions:
    # Alpaca sampled a completion model at temperature 1, top_p 1: plain text, no chat template.
    return GenerateOptions(sampling=SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=1024),
                           chat_template=False)


class SelfInstructConfig(StrictModel):
    seed_tasks: str | None = Field(default=None, description="seed tasks JSONL (Alpaca's seed_tasks.jsonl layout "
                                   "or Alpaca rows {instruction, input, output})")
    num_instructions: int = Field(default=100, gt=0, description="machine tasks to make")
    num_prompt_instructions: int = Field(default=3, gt=0, description="example tasks per prompt (Alpaca 3)")
    num_prompt_machine: int = Field(default=0, ge=0, description="of those, drawn from accepted machine tasks "
                                    "once there are enough (self-instruct: 2 of 8)")
    request_batch_size: int = Field(default=5, gt=0, description="prompts per round (Alpaca 5)")
    similarity_threshold: float = Field(default=0.7, gt=0.0, le=1.0,
                                        description="drop at ROUGE-L F1 >= this against the pool")
    max_requests: int | None = Field(default=None, gt=0,
                                     description="stop after this many prompts; None = 4 x num_instructions + "
                                     "request_batch_size")
    preamble: str = PREAMBLE
    seed: int = Field(default=0, description="draws the example tasks; with each request's index, its sampling")
    generation: GenerateOptions = Field(default_factory=_default_generation)
    ray: bool = Field(default=True, description="generate in Ray actors (False: in this process)")

    @model_validator(mode="after")
    def _machine_fewer(self):
        if self.num_prompt_machine >= self.num_prompt_instructions:
            raise ValueError("num_prompt_machine must be less than num_prompt_instructions (at least one seed task)")
        return self

    @property
    def request_limit(self) -> int:
        return self.max_requests or 4 * self.num_instructions + self.request_batch_size


# ------------------------------------------------------------------------------ seed tasks


def read_seed_tasks(path: str) -> tuple[list[dict[str, str]], str]:
    """Tasks {instruction, input, output} of a seed file and the file's sha256. A row is Alpaca's
    seed-task layout (its first instance is the example, as Alpaca uses it) or an Alpaca row."""
    from pathlib import Path

    from llmforge.common.rows import iter_rows

    p = Path(path)
    if not p.is_file():
        raise UserError(f"--seed-tasks {path}: no such file")
    tasks = []
    for _, where, row in iter_rows(p):
        if not isinstance(row, dict):
            raise UserError(f"{where}: expected a JSON object, got {type(row).__name__}")
        if "instances" in row:
            if not isinstance(row["instances"], list) or not row["instances"] or \
                    not isinstance(row["instances"][0], dict):
                raise UserError(f"{where}: 'instances' must be a non-empty list of {{input, output}}")
            example = row["instances"][0]
        else:
            example = row
        task = {"instruction": row.get("instruction"), "input": example.get("input") or "",
                "output": example.get("output")}
        for key, value in task.items():
            if not isinstance(value, str):
                raise UserError(f"{where}: {key!r} must be text, got {type(value).__name__} (a seed task is "
                                f"{{instruction, instances: [{{input, output}}]}} or {{instruction, input, output}})")
        if not task["instruction"].strip():
            raise UserError(f"{where}: empty instruction")
        tasks.append(task)
    if not tasks:
        raise UserError(f"--seed-tasks {path}: no tasks")
    return tasks, hashlib.sha256(p.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------ prompt and reply


def encode_prompt(tasks: Sequence[dict[str, str]], preamble: str = PREAMBLE) -> str:
    """The numbered list of example tasks after the preamble, ending with the next number's
    "Instruction:" for the model to continue (see the module docstring)."""
    text = preamble + "\n"
    for n, task in enumerate(tasks, 1):
        instruction = re.sub(r"\s+", " ", task["instruction"]).strip().rstrip(":")
        text += (f"###\n{n}. Instruction: {instruction}\n{n}. Input:\n{task['input'] or NO_INPUT}\n"
                 f"{n}. Output:\n{task['output']}\n")
    return text + f"###\n{len(tasks) + 1}. Instruction:"


def parse_response(text: str, num_prompt_instructions: int, finish_reason: str = "stop"
                   ) -> tuple[list[dict[str, str]], Counter]:
    """(tasks parsed from a continuation of `encode_prompt`, drops counted by reason:
    `truncated`, `unparsed`). Blank pieces between `###` are no candidates."""
    pieces = (f"{num_prompt_instructions + 1}. Instruction:" + text).split("###")
    tasks, drops = [], Counter()
    for k, piece in enumerate(pieces):
        if not piece.strip():
            continue
        if k == len(pieces) - 1 and finish_reason == "length":
            drops["truncated"] += 1
            continue
        n = num_prompt_instructions + 1 + k
        fields = re.split(rf"{n}\.\s+(Instruction|Input|Output):", piece)
        if len(fields) != 7 or fields[1::2] != ["Instruction", "Input", "Output"] or fields[0].strip():
            drops["unparsed"] += 1
            continue
        input_ = fields[4].strip()
        tasks.append({"instruction": fields[2].strip(), "input": "" if input_.lower() == NO_INPUT else input_,
                      "output": fields[6].strip()})
    return tasks, drops


def heuristic_drop(task: dict[str, str]) -> str | None:
    """The first reason of Alpaca's heuristics (and ours, `empty_output`) that drops a task, or None."""
    instruction = task["instruction"]
    words = len(instruction.split())
    if words <= 3:
        return "too_short"
    if words > 150:
        return "too_long"
    if _BLACKLIST.search(instruction):
        return "blacklisted"
    if instruction.startswith("Write a program"):
        return "write_a_program"
    if instruction[0] in string.punctuation:
        return "starts_with_punctuation"
    if not instruction[0].isascii():
        return "non_ascii_start"
    if not task["output"].strip():
        return "empty_output"
    return None


# ------------------------------------------------------------------------------ ROUGE-L


def rouge_tokens(text: str) -> list[str]:
    """Tokens as `rouge_score`'s default tokenizer makes them (no stemmer)."""
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).split()


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence, bit-parallel over `a` (Hyyrö 2004)."""
    if not a or not b:
        return 0
    masks: dict[str, int] = {}
    for i, token in enumerate(a):
        masks[token] = masks.get(token, 0) | (1 << i)
    return _lcs_bits(masks, len(a), b)


def _lcs_bits(masks: dict[str, int], m: int, b: Sequence[str]) -> int:
    full = (1 << m) - 1
    v = full
    for token in b:
        u = v & masks.get(token, 0)
        v = ((v + u) | (v - u)) & full
    return m - bin(v).count("1")


def rouge_l(candidate: str | Sequence[str], reference: str | Sequence[str]) -> float:
    """ROUGE-L F1 of two texts (or token lists): 2 LCS / (m + n); 0 when either is empty."""
    a = rouge_tokens(candidate) if isinstance(candidate, str) else list(candidate)
    b = rouge_tokens(reference) if isinstance(reference, str) else list(reference)
    if not a or not b:
        return 0.0
    return 2 * lcs_length(a, b) / (len(a) + len(b))


class InstructionPool:
    """Token lists of the pool's instructions; `max_similarity` of a new one, early-skipping."""

    def __init__(self, instructions: Sequence[str] = ()):
        self.tokens: list[list[str]] = []
        for text in instructions:
            self.add(text)

    def add(self, text: str) -> None:
        self.tokens.append(rouge_tokens(text))

    def max_similarity(self, text: str, threshold: float | None = None) -> float:
        """The highest ROUGE-L F1 of `text` against the pool; with `threshold`, stops at the
        first entry at or above it and skips entries whose lengths bound F1 below it (the
        result is then exact only when below the threshold)."""
        a = rouge_tokens(text)
        if not a:
            return 0.0
        masks: dict[str, int] = {}
        for i, token in enumerate(a):
            masks[token] = masks.get(token, 0) | (1 << i)
        best, m = 0.0, len(a)
        for b in self.tokens:
            n = len(b)
            if not n:
                continue
            bound = 2 * min(m, n) / (m + n)
            if bound <= best or (threshold is not None and bound < threshold):
                continue
            f = 2 * _lcs_bits(masks, m, b) / (m + n)
            if f > best:
                best = f
                if threshold is not None and f >= threshold:
                    return f
        return best


# ------------------------------------------------------------------------------ the loop


GenerateFn = Callable[[Sequence[str], Sequence[int]], list[dict[str, Any]]]


def _draw(seeds: list[dict], machine: list[dict], config: SelfInstructConfig, rng: random.Random) -> list[dict]:
    k_machine = config.num_prompt_machine if len(machine) >= config.num_prompt_machine else 0
    k_seed = min(config.num_prompt_instructions - k_machine, len(seeds))
    return rng.sample(seeds, k_seed) + rng.sample(machine, k_machine)


def self_instruct(generate: GenerateFn, seeds: list[dict[str, str]], config: SelfInstructConfig,
                  max_seq_len: int | None = None, count_tokens: Callable[[str], int] | None = None,
                  state: dict[str, Any] | None = None,
                  on_round: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """The rounds, with any `generate(prompts, keys) -> rows` (`completion`, `finish_reason`).
    `state` (from `on_round`, called after every round) continues an earlier run. Returns the
    final state: {"tasks", "rounds", "requests": Counter-like dict, "dropped", "candidates"}."""
    state = json.loads(json.dumps(state)) if state else {
        "rounds": 0, "tasks": [], "candidates": 0, "dropped": dict.fromkeys(DROP_REASONS, 0),
        "requests": {"sent": 0, "prompt_too_long": 0, "stop": 0, "length": 0}}
    pool = InstructionPool([t["instruction"] for t in seeds] + [t["instruction"] for t in state["tasks"]])
    limit = config.request_limit
    while len(state["tasks"]) < config.num_instructions and state["requests"]["sent"] < limit:
        r = state["rounds"]
        rng = random.Random(f"{config.seed}:{r}")
        n = min(config.request_batch_size, limit - state["requests"]["sent"])
        examples = [_draw(seeds, state["tasks"], config, rng) for _ in range(n)]
        prompts = [encode_prompt(ex, config.preamble) for ex in examples]
        keys = [state["requests"]["sent"] + i for i in range(n)]
        rows = generate(prompts, keys)
        requests = state["requests"]
        requests["sent"] += n
        too_long = sum(row["finish_reason"] == "prompt_too_long" for row in rows)
        if too_long == n:
            tokens = count_tokens(prompts[0]) if count_tokens else None
            raise UserError(f"every prompt of round {r} is too long for the model's context"
                            + (f" ({tokens} tokens + max_new_tokens {config.generation.sampling.max_new_tokens} > "
                               f"max_seq_len {max_seq_len})" if tokens is not None and max_seq_len else "")
                            + "; use fewer example tasks (num_prompt_instructions), a shorter preamble, fewer "
                            "max_new_tokens, or a model with a longer context")
        for ex, row in zip(examples, rows):
            requests[row["finish_reason"]] = requests.get(row["finish_reason"], 0) + 1
            if row["finish_reason"] == "prompt_too_long":
                continue
            parsed, drops = parse_response(row["completion"], len(ex), row["finish_reason"])
            state["candidates"] += len(parsed) + sum(drops.values())
            for reason, count in drops.items():
                state["dropped"][reason] += count
            for task in parsed:
                reason = heuristic_drop(task)
                if reason is None and len(state["tasks"]) >= config.num_instructions:
                    reason = "surplus"
                if reason is None and pool.max_similarity(task["instruction"], config.similarity_threshold) \
                        >= config.similarity_threshold:
                    reason = "similar"
                if reason is not None:
                    state["dropped"][reason] += 1
                    continue
                state["tasks"].append(task)
                pool.add(task["instruction"])
        state["rounds"] = r + 1
        if on_round is not None:
            on_round(state)
    return state


def _output_config(config: SelfInstructConfig) -> dict[str, Any]:
    """The options that change what is made (not where it runs, nor how fast)."""
    from training.batch_generate import OUTPUT_OPTIONS

    return {**config.model_dump(mode="json", exclude={"ray", "generation", "seed_tasks"}),
            "generation": config.generation.model_dump(mode="json", include=set(OUTPUT_OPTIONS))}


def run_self_instruct(model_path: str, output_dir: str, config: SelfInstructConfig | None = None,
                      overwrite: bool = False, generate: GenerateFn | None = None) -> dict[str, Any]:
    """`llmforge align self-instruct`: `instructions.json` and `results.json` in `output_dir`
    (see the module docstring). `generate` replaces the model's generation (tests); the model
    is still resolved for the fingerprint. Returns results.json's record (+ "reused")."""
    from llmforge.common import fs
    from llmforge.common.resume import fingerprint
    from training.batch_generate import claim_output, generating_model

    config = config or SelfInstructConfig()
    if config.seed_tasks is None:
        raise UserError("no seed tasks: give --seed-tasks FILE (e.g. Stanford Alpaca's seed_tasks.jsonl) or "
                        "seed_tasks in the config")
    seeds, seeds_sha = read_seed_tasks(config.seed_tasks)
    if len(seeds) < config.num_prompt_instructions - config.num_prompt_machine:
        raise UserError(f"--seed-tasks {config.seed_tasks}: {len(seeds)} tasks, fewer than the "
                        f"{config.num_prompt_instructions - config.num_prompt_machine} drawn per prompt")
    source = generating_model(model_path)
    made_from = {"weights": source.weights_hash(), "tokenizer": source.tokenizer_sha256(), "seed_tasks": seeds_sha,
                 "options": _output_config(config)}
    fp = fingerprint(made_from)
    step, finished = claim_output(output_dir, made_from, overwrite, "self-instruct data made from another model, "
                                  "seed file or options")
    filesystem, root = step.filesystem, step.path
    if finished is not None:
        return {**finished, "reused": True}

    progress_path = fs.join(root, PROGRESS_FILE)
    state = None
    if fs.exists(filesystem, progress_path):
        saved = fs.read_json(filesystem, progress_path)
        state = saved.get("state") if saved.get("fingerprint") == fp else None
    resumed_rounds = state["rounds"] if state else 0

    def save(s: dict[str, Any]) -> None:
        fs.write_json_atomic(filesystem, progress_path, {"fingerprint": fp, "state": s})

    max_seq_len = source.config.max_seq_len
    if generate is None:
        from training.batch_generate import text_generator

        generate = text_generator(str(source.path), config.generation, use_ray=config.ray)
    from training.chat import ChatTokenizer

    tokenizer = ChatTokenizer.from_file(str(source.tokenizer_path))

    def count_tokens(text: str) -> int:
        return len(tokenizer.tokenizer.encode(text, add_special_tokens=False).ids) + 1

    started = time.perf_counter()
    state = self_instruct(generate, seeds, config, max_seq_len, count_tokens, state, on_round=save)
    seconds = time.perf_counter() - started
    data = json.dumps(state["tasks"], indent=1, ensure_ascii=False).encode()
    fs.write_bytes_atomic(filesystem, fs.join(root, INSTRUCTIONS_FILE), data)
    kept = len(state["tasks"])
    assert state["candidates"] == kept + sum(state["dropped"].values()), "the funnel must add up"
    record = step.finish({
        "model": str(model_path), "checkpoint": str(source.path), "seed_tasks": config.seed_tasks,
        "made_from": made_from, "config": config.model_dump(mode="json"), "file": INSTRUCTIONS_FILE,
        "seed_count": len(seeds), "target": config.num_instructions, "kept": kept,
        "complete": kept >= config.num_instructions,
        "candidates": state["candidates"], "dropped": state["dropped"], "requests": state["requests"],
        "rounds": state["rounds"], "resumed_rounds": resumed_rounds, "seconds": round(seconds, 3),
    })
    if fs.exists(filesystem, progress_path):
        filesystem.delete_file(progress_path)
    return {**record, "reused": False}


def summary(record: dict[str, Any], output_dir: str) -> str:
    head = "reused finished self-instruct data" if record.get("reused") else "self-instruct"
    lines = [f"{head}: {record['kept']:,} of {record['target']:,} instructions -> "
             f"{output_dir}/{record['file']}" + ("" if record["complete"] else
                                                 " (stopped at max_requests: the model's tasks were rejected)"),
             f"  {record['requests']['sent']:,} prompts ({record['requests'].get('prompt_too_long', 0):,} too long), "
             f"{record['candidates']:,} candidates, {record['kept']:,} kept"]
    drops = ", ".join(f"{k} {v:,}" for k, v in record["dropped"].items() if v)
    if drops:
        lines.append(f"  dropped: {drops}")
    return "\n".join(lines)
