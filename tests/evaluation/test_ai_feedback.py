"""AI-feedback labels (evaluation.ai_feedback): best vs worst by rewards and by pairwise verdicts in
both positions, every drop reason with a scripted judge (exact), a real tiny policy sampling in
process with a real reward-model judge and an LM judge through the CLI (pairs read back by
`read_preferences`, counts that add up, reuse), the errors, and the Ray Data sampling path giving
the same pairs as in process (and `text_generator`'s Ray actors the same rows)."""
from __future__ import annotations

import json
import math

import pytest

from alignment.formats import read_preferences
from evaluation.ai_feedback import (DROP_REASONS, LabelConfig, label, pick_by_rewards, pick_pairwise, run_label)
from evaluation.judge import FunctionJudge, RewardJudge, Verdict
from llmforge.cli import main
from llmforge.common.errors import UserError
from training.batch_generate import GenerateOptions
from training.generate import SamplingParams


def v(winner, p=None):
    return Verdict(winner, p)


def test_best_and_worst_by_rewards():
    assert pick_by_rewards([0.5, 2.0, -1.0, 2.0]) == (1, 2, pytest.approx(1 / (1 + math.exp(-3.0))))
    assert pick_by_rewards([1.0, 1.0, 1.0]) == "tie"


def test_best_and_worst_by_pairwise_verdicts():
    # 0 beats 1 with p 0.8 (shown first) and 0.7 (shown second); both orders agree.
    picked, scores = pick_pairwise(2, {(0, 1): v("A", 0.8), (1, 0): v("B", 0.3)})
    assert picked == (0, 1, pytest.approx(0.75)) and scores == pytest.approx([0.75, 0.25])
    # The second response wins in both positions.
    assert pick_pairwise(2, {(0, 1): v("B"), (1, 0): v("A")})[0] == (1, 0, 1.0)
    assert pick_pairwise(2, {(0, 1): v("A"), (1, 0): v("A")})[0] == "position_inconsistent"
    assert pick_pairwise(2, {(0, 1): v("tie"), (1, 0): v("B")})[0] == "tie"
    assert pick_pairwise(2, {(0, 1): v(None), (1, 0): v("B")})[0] == "no_verdict"
    # Three: 2 > 1 > 0 consistently -> 2 vs 0.
    order = {(i, j): v("A" if i > j else "B") for i in range(3) for j in range(3) if i != j}
    picked, scores = pick_pairwise(3, order)
    assert picked == (2, 0, 1.0) and scores == [0.0, 0.5, 1.0]
    # Cyclic: 0 > 1 > 2 > 0. Equal scores: first (0) vs last (2), and 2 beats 0 in both positions.
    beats = {(0, 1), (1, 2), (2, 0)}
    cyclic = {(i, j): v("A" if (i, j) in beats else "B") for i in range(3) for j in range(3) if i != j}
    assert pick_pairwise(3, cyclic) == ("intransitive", [0.5, 0.5, 0.5])


def scripted_judge(prompt, first, second):
    """Per prompt a behaviour: prefer 'good', always 'A', always tie, unreadable, or longer wins."""
    kind = prompt.split()[0]
    if kind == "good":
        return "A" if "good" in first else "B"
    if kind == "biased":
        return "A"
    if kind == "tie":
        return "tie"
    if kind == "mumble":
        return "hmm"
    return "A" if len(first) > len(second) else "B" if len(second) > len(first) else "tie"


CASES = [  # prompt, responses, finish reasons, expected outcome
    ("good one", ["bad", "a good one"], None, ("a good one", "bad")),
    ("good two", ["good", "good"], None, "identical_responses"),
    ("good three", ["  ", "good"], None, "empty_responses"),
    ("biased", ["x", "yy"], None, "position_inconsistent"),
    ("tie", ["x", "yy"], None, "tie"),
    ("mumble", ["x", "yy"], None, "no_verdict"),
    ("long", ["mid length", "s", "the longest answer", "s", ""], None, ("the longest answer", "s")),
    ("long too", ["", ""], ["prompt_too_long"] * 2, "prompt_too_long"),
]


def test_every_prompt_is_a_pair_or_dropped_for_one_reason():
    prompts = [c[0] for c in CASES]
    rows, drops, mode = label(FunctionJudge(scripted_judge), prompts, [c[1] for c in CASES],
                              [c[2] or ["stop"] * len(c[1]) for c in CASES])
    assert mode == "pairwise"
    for row, (_, _, _, expected) in zip(rows, CASES):
        if isinstance(expected, str):
            assert row["dropped"] == expected
        else:
            assert (row["chosen"], row["rejected"]) == expected and row["p_chosen"] == 1.0
    assert rows[6]["candidates"] == 3  # distinct non-empty: "mid length", "s", "the longest answer"
    assert drops == {"prompt_too_long": 1, "empty_responses": 1, "identical_responses": 1, "tie": 1,
                     "position_inconsistent": 1, "no_verdict": 1, "intransitive": 0}
    assert list(drops) == list(DROP_REASONS) and len(prompts) == 2 + sum(drops.values())


class LengthReward(RewardJudge):
    """A reward 'model' whose reward is the answer's length (no weights)."""

    def __init__(self):
        self.spec = "reward:length"
        self.calls = []

    def scores(self, texts):
        self.calls.append(list(texts))
        return [float(len(a)) for _, a in texts]


def test_a_reward_judge_scores_each_response_once_best_vs_worst():
    judge = LengthReward()
    rows, drops, mode = label(judge, ["p0", "p1"], [["ab", "abcd", "a", "abcd"], ["xy", "yx"]])
    assert mode == "reward_scores"
    assert judge.calls == [[("p0", "ab"), ("p0", "abcd"), ("p0", "a"), ("p1", "xy"), ("p1", "yx")]]
    assert (rows[0]["chosen"], rows[0]["rejected"], rows[0]["chosen_score"], rows[0]["rejected_score"]) == \
        ("abcd", "a", 4.0, 1.0)
    assert rows[0]["p_chosen"] == pytest.approx(1 / (1 + math.exp(-3.0))) and rows[1]["dropped"] == "tie"
    assert drops["tie"] == 1


# ------------------------------------------------------------------------------ with models


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny random policy (also the LM judge) and a tiny random reward model, one tokenizer."""
    import torch

    from tests.support.tiny_checkpoint import tiny_checkpoint, write_checkpoint
    from training.model import ModelConfig, RewardModel

    root = tmp_path_factory.mktemp("label")
    lm_dir, lm, _ = tiny_checkpoint(root / "lm", max_seq_len=96)
    torch.manual_seed(1)
    rm = RewardModel(ModelConfig(preset="tiny", vocab_size=lm.cfg.vocab_size, max_seq_len=96, init_std=0.2)).eval()
    rm_dir = write_checkpoint(root / "rm", rm, root / "lm-tokenizer.json", kind="reward")
    prompts = root / "prompts.jsonl"
    long = " ".join(["the river runs past the old mill"] * 20)  # > 96 tokens with the template
    rows = [{"prompt": "the old town", "id": "a"}, {"prompt": "where does the road go", "id": "b"},
            {"prompt": long, "id": "c"}, {"prompt": [{"role": "user", "content": "the mill"}], "id": "d"}]
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"lm": lm_dir, "rm": rm_dir, "prompts": prompts}


def config(**kw):
    gen = GenerateOptions(sampling=SamplingParams(temperature=1.0, max_new_tokens=6, seed=3), batch_size=8)
    return LabelConfig(samples=3, generation=gen, ray=False, **kw)


def test_a_real_policy_and_reward_model(models, tmp_path):
    out = tmp_path / "rm"
    record = run_label(str(models["lm"]), str(models["prompts"]), str(out), f"reward:{models['rm']}", config())
    assert record["mode"] == "reward_scores" and record["prompts"] == 4 and not record["reused"]
    assert record["dropped"]["prompt_too_long"] == 1
    assert record["prompts"] == record["pairs"] + sum(record["dropped"].values())
    assert record["finish_reasons"]["prompt_too_long"] == 3
    pairs, counts = read_preferences(out / "pairs.jsonl")
    assert counts.format == "pairs" and counts.kept == record["pairs"] >= 2 and counts.read == counts.kept
    judge = RewardJudge(str(models["rm"]))
    for pair in pairs:
        assert pair.id in ("a", "b", "d")
        row = pair.extra
        rewards = judge.scores([(pair.prompt, pair.chosen), (pair.prompt, pair.rejected)])
        assert rewards == pytest.approx([row["chosen_score"], row["rejected_score"]], abs=1e-5)
        assert row["chosen_score"] > row["rejected_score"] and 0.5 < row["p_chosen"] < 1 and row["candidates"] >= 2
    # The same inputs: reused. Another judge: refused unless overwrite.
    assert run_label(str(models["lm"]), str(models["prompts"]), str(out), f"reward:{models['rm']}", config())["reused"]
    with pytest.raises(UserError, match="--overwrite"):
        run_label(str(models["lm"]), str(models["prompts"]), str(out), f"lm:{models['lm']}", config())


def test_the_cli_with_an_lm_judge_and_the_errors(models, tmp_path, capsys):
    out = tmp_path / "lm"
    argv = ["align", "label", "--model", str(models["lm"]), "--data", str(models["prompts"]), "--judge",
            f"lm:{models['lm']}", "--output", str(out), "--samples", "2", "--max-new-tokens", "6", "--in-process"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "preference pairs from 4 prompts x 2 samples" in printed and f"lm:{models['lm']}" in printed
    results = json.loads((out / "results.json").read_text())
    assert results["mode"] == "pairwise" and results["dropped"]["prompt_too_long"] == 1
    assert results["prompts"] == results["pairs"] + sum(results["dropped"].values())
    assert read_preferences(out / "pairs.jsonl")[1].kept == results["pairs"]
    # Errors before any model work: no judge, greedy sampling, an empty prompt file, all too long.
    assert main(argv[:6] + argv[8:]) == 2 and "no judge" in capsys.readouterr().err
    assert main([*argv, "--temperature", "0", "--overwrite"]) == 2 and "greedy" in capsys.readouterr().err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert main([*argv[:5], str(empty), *argv[6:]]) == 2 and "no prompts" in capsys.readouterr().err
    long = tmp_path / "long.jsonl"
    long.write_text(json.dumps({"prompt": " ".join(["the river runs"] * 60)}) + "\n")
    assert main([*argv[:5], str(long), *argv[6:9], str(tmp_path / "long"), *argv[10:]]) == 2
    assert "every prompt is too long" in capsys.readouterr().err


def test_sampling_on_ray_data_gives_the_same_pairs(ray_local, models, tmp_path):
    judge = f"reward:{models['rm']}"
    local = run_label(str(models["lm"]), str(models["prompts"]), str(tmp_path / "local"), judge, config())
    on_ray = run_label(str(models["lm"]), str(models["prompts"]), str(tmp_path / "ray"), judge,
                       config().model_copy(update={"ray": True}))
    assert (tmp_path / "ray" / "samples" / "results.json").exists()
    assert (tmp_path / "ray" / "pairs.jsonl").read_text() == (tmp_path / "local" / "pairs.jsonl").read_text()
    assert on_ray["dropped"] == local["dropped"] and on_ray["made_from"] == local["made_from"]
    # The long-lived actors that self-instruct's rounds use: the same rows as in process.
    from training.batch_generate import text_generator

    options = config().generation
    prompts, keys = ["the old town", "a river", "mill"], [5, 6, 7]
    remote = text_generator(str(models["lm"]), options, use_ray=True)(prompts, keys)
    here = text_generator(str(models["lm"]), options, use_ray=False)(prompts, keys)
    assert [r["completion_ids"] for r in remote] == [r["completion_ids"] for r in here]
    assert [r["finish_reason"] for r in remote] == [r["finish_reason"] for r in here]
