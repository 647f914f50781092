"""The lm-evaluation-harness adapter: `lm_eval.simple_evaluate(model="llmforge")` on a local task
file picks, item by item, the choices `llmforge eval mc` picks on the same model and file;
`loglikelihood_rolling` is the rolling-window sum of every token once; `generate_until` cuts at
its `until` string."""
from __future__ import annotations

import importlib
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("lm_eval")

from tests.conftest import shared_data  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from tests.support.tiny_checkpoint import tiny_checkpoint

    return tiny_checkpoint(tmp_path_factory.mktemp("harness") / "ckpt", max_seq_len=128)


@pytest.fixture(scope="module")
def lm(tiny):
    from evaluation.harness import LLMForgeLM

    return LLMForgeLM(pretrained=str(tiny[0]))


def _generated_task(path):
    """An llm-foundry ICL file with 2- to 4-way items and a context ending in a space (which
    the harness's pair encoding moves into the continuation)."""
    rows = [
        {"query": "The man turned on the faucet, therefore", "choices": ["the toilet filled.", "water flowed."],
         "gold": 1},
        {"query": "Question: What do plants need to grow?\nAnswer:", "choices": ["sunlight", "darkness", "salt",
                                                                                "noise"], "gold": 0},
        {"query": "The sky was dark, so ", "choices": ["it rained.", "the sun shone brightly.", "nothing"],
         "gold": 0},
        {"query": "She was thirsty, so", "choices": ["she drank water.", "she ran a long way home."], "gold": 0},
        {"query": "Question: Which is a metal?\nAnswer:", "choices": ["iron", "wood", "glass"], "gold": 0},
        {"query": "The dog barked at night because", "choices": ["it heard a noise.", "it was asleep."], "gold": 0},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _task_yaml(directory, name, data_file):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.yaml").write_text(
        f"task: {name}\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data_file}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        'doc_to_text: "{{query}}"\n'
        'doc_to_choice: "{{choices}}"\n'
        'doc_to_target: "{{gold}}"\n'
        "metric_list:\n"
        "  - {metric: acc, aggregation: mean, higher_is_better: true}\n"
        "  - {metric: acc_norm, aggregation: mean, higher_is_better: true}\n")
    return directory


@pytest.mark.parametrize("source", ["generated", "copa", "arc_easy"])
def test_simple_evaluate_picks_the_same_choices_as_eval_mc(tiny, tmp_path, monkeypatch, source):
    import lm_eval
    from lm_eval.tasks import TaskManager

    from evaluation.multiple_choice import evaluate_mc

    importlib.import_module("evaluation.harness")  # registers "llmforge"

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    limit = 60 if source == "arc_easy" else None
    data = (_generated_task(tmp_path / "generated.jsonl") if source == "generated"
            else shared_data("evalsets", "llm_foundry", f"{source}.jsonl"))
    name = f"llmforge_test_{source}"
    tasks = _task_yaml(tmp_path / "tasks", name, data)
    out = lm_eval.simple_evaluate(model="llmforge", model_args={"pretrained": str(tiny[0])}, tasks=[name],
                                  task_manager=TaskManager(include_path=str(tasks), include_defaults=False),
                                  log_samples=True, limit=limit)
    ours, rows = evaluate_mc(str(tiny[0]), str(data), limit=limit)

    samples = sorted(out["samples"][name], key=lambda s: s["doc_id"])
    assert [s["doc_id"] for s in samples] == [r["index"] for r in rows]
    for s, r in zip(samples, rows):
        lls = [resp[0] for resp in s["filtered_resps"]]
        assert lls == pytest.approx(r["logprobs"], rel=1e-5, abs=1e-4)
        assert max(range(len(lls)), key=lambda i: (lls[i], -i)) == r["pred"]
        assert s["acc"] == r["acc"] and s["acc_norm"] == r["acc_norm"]
    theirs = out["results"][name]
    mine = ours["results"][data.stem]
    assert theirs["acc,none"] == pytest.approx(mine["acc"], abs=1e-12)
    assert theirs["acc_norm,none"] == pytest.approx(mine["acc_norm"], abs=1e-12)
    assert theirs["acc_stderr,none"] == pytest.approx(mine["acc_stderr"], rel=1e-9)


def _instances(kind, args):
    from lm_eval.api.instance import Instance

    return [Instance(request_type=kind, doc={}, arguments=a, idx=i) for i, a in enumerate(args)]


TEXT = ("The quick brown fox jumps over the lazy dog. " * 12 +
        "Pack my box with five dozen liquor jugs, then sphinx of black quartz, judge my vow.")


def test_loglikelihood_rolling_scores_every_token_once(lm, tiny):
    import torch
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

    from evaluation.scoring import rolling_token_logprobs

    _, model, chat = tiny
    ids = chat.tokenizer.encode(TEXT, add_special_tokens=False).ids
    assert len(ids) > 2 * model.cfg.max_seq_len  # several windows
    got = lm.loglikelihood_rolling(_instances("loglikelihood_rolling", [(TEXT,), ("",)]))
    expected = float(rolling_token_logprobs(model, [chat.end_id] + ids).double().sum())
    assert got[0] == pytest.approx(expected, rel=1e-6)
    assert got[1] == 0.0
    # The harness's own windows (each predicted token once, the most context each), scored by
    # one plain forward per window.
    by_windows = 0.0
    for ctx, pred in map(make_disjoint_window, get_rolling_token_windows(ids, chat.end_id, model.cfg.max_seq_len, 1)):
        x = torch.tensor([ctx + pred[:-1]])
        with torch.no_grad():
            lp = torch.log_softmax(model(x).float()[0], -1)[-len(pred):]
        by_windows += float(lp.gather(-1, torch.tensor(pred)[:, None]).sum())
    assert got[0] == pytest.approx(by_windows, rel=1e-5)


def test_loglikelihood_matches_eval_mc_token_ids_and_empty_context(lm, tiny):
    from evaluation.multiple_choice import encode_pairs
    from evaluation.scoring import loglikelihood

    _, model, chat = tiny
    pairs = [("The sky was dark, so ", "it rained."), ("", "Hello there"), ("She was thirsty, so", " she drank.")]
    got = lm.loglikelihood(_instances("loglikelihood", pairs))
    expected = loglikelihood(model, encode_pairs(chat.tokenizer, chat.end_id, pairs), pad_id=chat.pad_id)
    assert [g[0] for g in got] == pytest.approx([e.logprob for e in expected], rel=1e-5)
    assert [g[1] for g in got] == [e.greedy for e in expected]
    assert all(math.isfinite(g[0]) and g[0] < 0 for g in got)


def test_generate_until_stops_at_the_until_string(lm):
    prompts = ["The quick brown fox", "Pack my box with"]
    free = lm.generate_until(_instances("generate_until", [(p, {"until": [], "max_gen_toks": 24}) for p in prompts]))
    assert all(free), free
    # A string from the middle of each free completion: the cut output is what precedes it.
    cut_at = [text[len(text) // 2:len(text) // 2 + 2] for text in free]
    reqs = [(p, {"until": [u, "@@never@@"], "max_gen_toks": 24}) for p, u in zip(prompts, cut_at)]
    cut = lm.generate_until(_instances("generate_until", reqs))
    for text, u, c in zip(free, cut_at, cut):
        assert c == text.split(u)[0] and len(c) < len(text)
    # The budget: fewer new tokens give a prefix of the longer greedy run.
    short = lm.generate_until(_instances("generate_until", [(prompts[0], {"until": [], "max_gen_toks": 4})]))
    assert free[0].startswith(short[0]) and len(short[0]) < len(free[0])


def test_the_rest_of_evaluation_does_not_import_lm_eval():
    code = ("import sys, evaluation.multiple_choice, evaluation.scoring, evaluation.perplexity, evaluation.tasks; "
            "assert 'lm_eval' not in sys.modules, 'lm_eval imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])
