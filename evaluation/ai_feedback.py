"""AI-feedback preference labels (AlpacaFarm / UltraFeedback style): sample several responses per
prompt with the policy, let a judge pick chosen and rejected, write preference pairs.

    run_label(model_path, prompts_path, output_dir, judge, config)   what `llmforge align label` runs

Sampling: each prompt gets `samples` responses at the generation options' temperature, sample
s of prompt i drawn from the random stream keyed by i * samples + s, so the responses are the
same in this process (`ray: false`) and on Ray Data (`ray: true`: `run_generate` over the
prompt file expanded `samples` times, in `OUTPUT/samples/`, reused on a rerun).

Judging (the judges of `evaluation.judge`, any `Judge`): per prompt, the candidates are the
distinct non-empty responses, in sample order.
- A reward model (`reward:PATH`, `RewardJudge`) scores every candidate once; chosen = the
  highest reward, rejected = the lowest (UltraFeedback's best vs worst); equal rewards are a
  tie. `p_chosen` = sigmoid(r_chosen - r_rejected), the scores are the rewards. A reward does
  not depend on the order, so no swap is needed.
- Any other judge (`lm:PATH`, an HTTP judge, a `FunctionJudge`) compares every ordered pair
  of candidates (both positions: k (k - 1) comparisons for k candidates). A candidate's score
  is its mean probability of beating the others over all its comparisons (the judge's
  P(first) when it gives one, else 1 / 0.5 / 0 for win / tie / loss). Best = the highest
  score (the earliest sample on equal scores), worst = the lowest (the latest); then the two
  verdicts between best and worst decide: best wins in both positions -> a pair; either
  verdict a tie -> `tie`; the positions disagree -> `position_inconsistent`; either verdict
  unreadable -> `no_verdict`; worst wins in both (possible with 3+ candidates when the
  judge's preferences are cyclic) -> `intransitive`. `p_chosen` = P(best beats worst)
  averaged over both positions.

Every prompt is a pair or dropped for one reason, counted in `results.json` (prompts = pairs +
sum of dropped): `prompt_too_long` (prompt + max_new_tokens does not fit the policy's context;
a file where every prompt is too long is a UserError), `empty_responses` (fewer than two
non-empty responses), `identical_responses` (fewer than two distinct ones), then the judge's
reasons above.

Outputs in `output_dir`: `pairs.jsonl`, one row per pair {id, prompt, chosen, rejected,
chosen_score, rejected_score, p_chosen, candidates, judge} that `llmforge align reward|dpo
--data` reads (`alignment.formats.read_preferences`, format `pairs`), and `results.json`
(written last). `id` is the prompt row's `id` when it has one, else its 0-based line index. A
finished output made from the same policy, tokenizer, prompt file, judge (its weights) and
options is reused; one made from others is refused unless `overwrite`.
"""
from __future__ import annotations

import json
import math
import time
from collections import Counter
from typing import Any, Callable, Sequence

from pydantic import Field

from evaluation.judge import Judge, RewardJudge, Verdict, make_judge
from llmforge.common.config import StrictModel
from llmforge.common.errors import UserError
from training.batch_generate import GenerateOptions
from training.generate import SamplingParams

PAIRS_FILE = "pairs.jsonl"
RESULTS_FILE = "results.json"
SAMPLES_DIR = "samples"
DROP_REASONS = ("prompt_too_long", "empty_responses", "identical_responses", "tie", "position_inconsistent",
                "no_verdict", "intransitive")


def _default_generation() -> GenerateOptions:
    return GenerateOptions(sampling=SamplingParams(temperature=1.0, max_new_tokens=256))


class LabelConfig(StrictModel):
    judge: str | None = Field(default=None, description="reward:PATH, lm:PATH or http:URL (--judge)")
    samples: int = Field(default=2, ge=2, description="responses sampled per prompt")
    generation: GenerateOptions = Field(default_factory=_default_generation,
                                        description="sampling must be random (temperature > 0) for distinct samples")
    judge_batch_size: int = Field(default=16, gt=0, description="sequences per forward of a local judge")
    ray: bool = Field(default=True, description="sample on Ray Data (False: in this process)")


# ------------------------------------------------------------------------------ judging


def _sigmoid(d: float) -> float:
    return 1.0 / (1.0 + math.exp(-d)) if d >= 0 else math.exp(d) / (1.0 + math.exp(d))


def _p_first(v: Verdict) -> float | None:
    if v.p_first is not None:
        return v.p_first
    return {"A": 1.0, "B": 0.0, "tie": 0.5}.get(v.winner) if v.winner is not None else None


def candidates_of(responses: Sequence[str]) -> tuple[list[str], str | None]:
    """The distinct non-empty responses in order, or a drop reason when fewer than two."""
    nonempty = [r for r in responses if r.strip()]
    if len(nonempty) < 2:
        return [], "empty_responses"
    distinct = list(dict.fromkeys(nonempty))
    if len(distinct) < 2:
        return [], "identical_responses"
    return distinct, None


def pick_by_rewards(rewards: Sequence[float]) -> tuple[int, int, float] | str:
    """(best, worst, p_chosen) by reward, or "tie" when all rewards are equal."""
    best = max(range(len(rewards)), key=lambda i: (rewards[i], -i))
    worst = min(range(len(rewards)), key=lambda i: (rewards[i], -i))
    if rewards[best] == rewards[worst]:
        return "tie"
    return best, worst, _sigmoid(rewards[best] - rewards[worst])


def pick_pairwise(k: int, verdicts: dict[tuple[int, int], Verdict]) -> tuple[tuple[int, int, float] | str, list[float]]:
    """Best vs worst of k candidates from verdicts of every ordered pair (i shown first, j
    second); ((best, worst, p_chosen) or a drop reason, each candidate's score)."""
    wins: list[list[float]] = [[] for _ in range(k)]
    for (i, j), v in verdicts.items():
        p = _p_first(v)
        if p is not None:
            wins[i].append(p)
            wins[j].append(1.0 - p)
    scores = [sum(w) / len(w) if w else 0.5 for w in wins]
    best = max(range(k), key=lambda i: (scores[i], -i))
    worst = min(range(k), key=lambda i: (scores[i], -i))
    first, second = verdicts[(best, worst)], verdicts[(worst, best)]
    if first.winner is None or second.winner is None:
        return "no_verdict", scores
    if "tie" in (first.winner, second.winner):
        return "tie", scores
    if first.winner != {"A": "B", "B": "A"}[second.winner]:
        return "position_inconsistent", scores
    if first.winner == "B":
        return "intransitive", scores
    p_chosen = (_p_first(first) + 1.0 - _p_first(second)) / 2
    return (best, worst, p_chosen), scores


def label(judge: Judge, prompts: Sequence[Any], responses: Sequence[Sequence[str]],
          finish_reasons: Sequence[Sequence[str]] | None = None) -> tuple[list[dict[str, Any]], dict[str, int], str]:
    """Label each prompt's responses: (one dict per prompt, {"index", "chosen", "rejected",
    "chosen_score", "rejected_score", "p_chosen", "candidates"} or {"index", "dropped": reason};
    drops counted by reason; the mode: "reward_scores" or "pairwise")."""
    drops = dict.fromkeys(DROP_REASONS, 0)
    out: list[dict[str, Any]] = []
    todo: list[tuple[int, list[str]]] = []
    for i, resp in enumerate(responses):
        if finish_reasons is not None and "prompt_too_long" in finish_reasons[i]:
            out.append({"index": i, "dropped": "prompt_too_long"})
            continue
        cands, reason = candidates_of(resp)
        if reason is not None:
            out.append({"index": i, "dropped": reason})
            continue
        out.append({"index": i})
        todo.append((i, cands))
    mode = "reward_scores" if isinstance(judge, RewardJudge) else "pairwise"
    if mode == "reward_scores":
        flat = [(prompts[i], c) for i, cands in todo for c in cands]
        rewards = judge.scores(flat) if flat else []
        at = 0
        for i, cands in todo:
            r = rewards[at:at + len(cands)]
            at += len(cands)
            _fill(out[i], pick_by_rewards(r), r, cands)
    else:
        pairs, where = [], []
        for i, cands in todo:
            for a in range(len(cands)):
                for b in range(len(cands)):
                    if a != b:
                        pairs.append((prompts[i], cands[a], cands[b]))
                        where.append((i, a, b))
        verdicts = judge.compare(pairs) if pairs else []
        per: dict[int, dict[tuple[int, int], Verdict]] = {}
        for (i, a, b), v in zip(where, verdicts):
            per.setdefault(i, {})[(a, b)] = v
        for i, cands in todo:
            picked, scores = pick_pairwise(len(cands), per[i])
            _fill(out[i], picked, scores, cands)
    for row in out:
        if "dropped" in row:
            drops[row["dropped"]] += 1
    return out, drops, mode


def _fill(row: dict[str, Any], picked, scores: Sequence[float], cands: Sequence[str]) -> None:
    if isinstance(picked, str):
        row["dropped"] = picked
        return
    best, worst, p = picked
    row.update(chosen=cands[best], rejected=cands[worst], chosen_score=float(scores[best]),
               rejected_score=float(scores[worst]), p_chosen=float(p), candidates=len(cands))


# ------------------------------------------------------------------------------ the job


def _judge_identity(judge: Judge | str) -> dict[str, Any]:
    """What the fingerprint records of the judge: its spec, and a local model's weights."""
    if not isinstance(judge, str):
        return judge.describe()
    kind, _, rest = judge.partition(":")
    if kind in ("reward", "lm") and rest:
        from training.sources import resolve_model

        return {"spec": judge, "weights": resolve_model(rest).weights_hash()}
    return {"spec": judge}


GenerateFn = Callable[[Sequence[Any], Sequence[int]], list[dict[str, Any]]]


def _sample_on_ray(model_path: str, table, output_dir: str, config: LabelConfig, overwrite: bool) -> list[dict]:
    """`run_generate` over the prompts repeated `samples` times (written next to the outputs)."""
    from llmforge.common import fs
    from training.batch_generate import GENERATIONS_DIR, run_generate

    filesystem, root = fs.resolve(output_dir)
    lines = []
    for i, prompt in enumerate(table.column("prompt").to_pylist()):
        if isinstance(prompt, list):
            prompt = [{"role": m["role"], "content": m["content"]} for m in prompt]
        lines += [json.dumps({"prompt": prompt}, ensure_ascii=False)] * config.samples
    path = fs.join(root, "sample_prompts.jsonl")
    fs.write_bytes_atomic(filesystem, path, ("\n".join(lines) + "\n").encode())
    samples_dir = fs.join(root, SAMPLES_DIR)
    run_generate(model_path, path, samples_dir, config.generation, overwrite=overwrite)
    import pyarrow.parquet as pq

    files = sorted(fs.list_files(filesystem, fs.join(samples_dir, GENERATIONS_DIR)))
    rows = [r for f in files for r in pq.read_table(f, filesystem=filesystem,
                                                       columns=["prompt_index", "completion", "finish_reason"]
                                                       ).to_pylist()]
    return sorted(rows, key=lambda r: r["prompt_index"])


def run_label(model_path: str, prompts_path: str, output_dir: str, judge: Judge | str | None = None,
              config: LabelConfig | None = None, overwrite: bool = False,
              generate: GenerateFn | None = None) -> dict[str, Any]:
    """`llmforge align label`: `pairs.jsonl` and `results.json` in `output_dir` (see the module
    docstring). `judge` defaults to `config.judge`; `generate(prompts, keys) -> rows` replaces
    the policy's sampling (tests). Returns results.json's record (+ "reused")."""
    from llmforge.common import fs
    from llmforge.common.rows import file_stem
    from training.batch_generate import claim_output, generating_model, read_prompts
    from training.chat import as_messages

    config = config or LabelConfig()
    judge = judge if judge is not None else config.judge
    if judge is None:
        raise UserError("no judge: give --judge reward:PATH, lm:PATH or http:URL")
    options = config.generation
    if options.sampling.temperature == 0:
        raise UserError(f"greedy decoding (temperature 0) gives {config.samples} identical responses per prompt; "
                        f"sample with temperature > 0")
    table, prompts_sha = read_prompts(prompts_path, options)  # no prompts / bad rows: UserError
    prompts = table.column("prompt").to_pylist()
    ids = table.column("id").to_pylist() if "id" in table.column_names else \
        [f"{file_stem(prompts_path)}:{i}" for i in range(len(prompts))]
    ids = [str(x) for x in ids]
    repeated = [x for x, n in Counter(ids).items() if n > 1]
    if repeated:
        raise UserError(f"--data {prompts_path}: id {repeated[0]!r} appears more than once; ids must be unique")
    source = generating_model(model_path)
    from training.batch_generate import OUTPUT_OPTIONS

    made_from = {"weights": source.weights_hash(), "tokenizer": source.tokenizer_sha256(), "prompts": prompts_sha,
                 "judge": _judge_identity(judge), "samples": config.samples,
                 "options": options.model_dump(mode="json", include=set(OUTPUT_OPTIONS))}
    step, finished = claim_output(output_dir, made_from, overwrite, "labels made from another policy, prompt "
                                  "file, judge or options")
    filesystem, root = step.filesystem, step.path
    if finished is not None:
        return {**finished, "reused": True}

    started = time.perf_counter()
    n, k = len(prompts), config.samples
    if generate is None and config.ray:
        rows = _sample_on_ray(str(source.path), table, output_dir, config, overwrite)
    else:
        if generate is None:
            from training.batch_generate import text_generator

            generate = text_generator(str(source.path), options, use_ray=False)
        rows = generate([p for p in prompts for _ in range(k)], list(range(n * k)))
    if len(rows) != n * k:
        raise RuntimeError(f"sampling returned {len(rows)} rows for {n} prompts x {k} samples")
    responses = [[rows[i * k + s]["completion"] for s in range(k)] for i in range(n)]
    reasons = [[rows[i * k + s]["finish_reason"] for s in range(k)] for i in range(n)]
    if all("prompt_too_long" in r for r in reasons):
        raise UserError(f"--data {prompts_path}: every prompt is too long for the policy's context (max_seq_len "
                        f"{source.config.max_seq_len} with max_new_tokens {options.sampling.max_new_tokens}); "
                        f"use shorter prompts or fewer max_new_tokens")
    sampled = time.perf_counter()
    if isinstance(judge, str):
        judge = make_judge(judge, device=options.device, batch_size=config.judge_batch_size)
    shown = [as_messages(p, options.system) if options.system and isinstance(p, str) else p for p in prompts]
    labelled, drops, mode = label(judge, shown, responses, reasons)
    lines = []
    for row in labelled:
        if "dropped" in row:
            continue
        i = row["index"]
        lines.append(json.dumps({"id": ids[i], "prompt": shown[i], "chosen": row["chosen"],
                                 "rejected": row["rejected"], "chosen_score": row["chosen_score"],
                                 "rejected_score": row["rejected_score"], "p_chosen": row["p_chosen"],
                                 "candidates": row["candidates"], "judge": judge.spec}, ensure_ascii=False))
    fs.write_bytes_atomic(filesystem, fs.join(root, PAIRS_FILE), "".join(x + "\n" for x in lines).encode())
    finish = Counter(r for rs in reasons for r in rs)
    record = step.finish({
        "model": str(model_path), "checkpoint": str(source.path), "prompts_file": str(prompts_path),
        "made_from": made_from, "config": config.model_dump(mode="json"), "file": PAIRS_FILE,
        "judge": judge.describe(), "mode": mode, "prompts": n, "pairs": len(lines), "dropped": drops,
        "samples_per_prompt": k, "finish_reasons": dict(sorted(finish.items())),
        "seconds": {"sampling": round(sampled - started, 3), "judging": round(time.perf_counter() - sampled, 3)},
    })
    return {**record, "reused": False}


def summary(record: dict[str, Any], output_dir: str) -> str:
    head = "reused finished labels" if record.get("reused") else "labelled"
    lines = [f"{head}: {record['pairs']:,} preference pairs from {record['prompts']:,} prompts x "
             f"{record['samples_per_prompt']} samples -> {output_dir}/{record['file']}",
             f"  judge {record['judge']['spec']} ({record['mode']})"]
    drops = ", ".join(f"{k} {v:,}" for k, v in record["dropped"].items() if v)
    if drops:
        lines.append(f"  dropped: {drops}")
    return "\n".join(lines)
