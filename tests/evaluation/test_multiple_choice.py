"""Multiple choice: task files -> items as the harness builds them, metrics as the harness computes
them (checked by hand), scores equal to one plain forward per request, Ray actors equal to the
in-process run."""
from __future__ import annotations

import json
import math

import pytest

from evaluation.multiple_choice import aggregate, encode_pairs, evaluate_mc, item_row, mean_stderr
from evaluation.tasks import Item, hellaswag_preprocess, load_task
from llmforge.common.errors import UserError
from tests.conftest import shared_data


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from tests.support.tiny_checkpoint import tiny_checkpoint

    return tiny_checkpoint(tmp_path_factory.mktemp("mc") / "ckpt", max_seq_len=64)


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


COPA_LIKE = [
    {"query": "The man turned on the faucet, therefore", "choices": ["the toilet filled.", "water flowed."], "gold": 1},
    {"query": "The girl found a bug in her cereal, therefore", "choices": ["she ate it.", "she lost her appetite."],
     "gold": 1},
    {"query": "The sky was dark, so", "choices": ["it rained.", "the sun shone brightly.", "nothing"], "gold": 0},
    {"query": "She was thirsty, so", "choices": ["she drank water.", "she ran."], "gold": 0},
]


# ------------------------------------------------------------------------------ metrics by hand


def test_each_metric_picks_by_its_own_normalisation():
    # chars 3, 4, 1; UTF-8 bytes 6, 4, 1. ll: acc -> 2 (-1.2); per char -1.0, -0.9, -1.2 -> 1;
    # per byte -0.5, -0.9, -1.2 -> 0.
    item = Item(0, "ctx", ["ééé", "abcd", "x"], gold=1)
    row = item_row(item, [-3.0, -3.6, -1.2], [False, True, False], [2, 1, 1])
    assert (row["pred"], row["pred_norm"], row["pred_bytes"]) == (2, 1, 0)
    assert (row["acc"], row["acc_norm"], row["acc_bytes"]) == (0.0, 1.0, 0.0)
    assert row["char_lengths"] == [3, 4, 1] and row["byte_lengths"] == [6, 4, 1]
    # Ties go to the first choice (np.argmax, as the harness).
    assert item_row(Item(0, "c", ["a", "b"], gold=0), [-1.0, -1.0], [0, 0], [1, 1])["pred"] == 0


def test_partial_and_lm_items_report_the_harness_metrics():
    wino = Item(0, "", ["Sarah was better so Sarah", "Sarah was better so Maria"], 1, "partial", "won.")
    assert wino.requests() == [("Sarah was better so Sarah", " won."), ("Sarah was better so Maria", " won.")]
    row = item_row(wino, [-5.0, -4.0], [False, False], [2, 2])
    assert row["acc"] == 1.0 and row["acc_norm"] is None
    lam = Item(0, "the end of the", ["story"], 0, "lm")
    assert lam.requests() == [("the end of the", " story")]
    rows = [item_row(lam, [-2.0], [True], [1]), item_row(lam, [-4.0], [False], [1])]
    out = aggregate(rows, ("acc", "perplexity"))
    assert out["acc"] == 0.5 and out["perplexity"] == pytest.approx(math.exp(3.0)) and out["n"] == 2


def test_stderr_is_the_sample_std_over_sqrt_n():
    values = [1.0, 0.0, 0.0, 1.0, 1.0]
    mu = 0.6
    expected = math.sqrt(sum((x - mu) ** 2 for x in values) / 4) / math.sqrt(5)
    assert mean_stderr(values) == pytest.approx(expected)
    assert mean_stderr([1.0]) is None
    rows = [{"acc": v, "acc_norm": 1 - v} for v in values]
    out = aggregate(rows, ("acc", "acc_norm"))
    assert out == {"acc": 0.6, "acc_stderr": pytest.approx(expected), "acc_norm": pytest.approx(0.4),
                   "acc_norm_stderr": pytest.approx(expected), "n": 5}


def test_pairs_encode_as_the_harness(tiny):
    _, _, tok = tiny
    (c1, k1), (c2, k2) = encode_pairs(tok.tokenizer, tok.end_id, [("Answer:", " the word"), ("Answer: ", "the word")])
    assert (c1, k1) == (c2, k2)  # a context's trailing space moves to the continuation
    whole = tok.tokenizer.encode("Answer: the word", add_special_tokens=False).ids
    assert c1 == [tok.end_id] + whole[:len(c1) - 1] and c1[1:] + k1 == whole


# ------------------------------------------------------------------------------ scores


def _naive(model, context, continuation):
    import torch

    ids = (list(context) + list(continuation))[-(model.cfg.max_seq_len + 1):]
    with torch.no_grad():
        lp = torch.log_softmax(model(torch.tensor([ids[:-1]])).float()[0], -1)
    return float(lp[torch.arange(len(ids) - 1), torch.tensor(ids[1:])][-len(continuation):].sum())


def test_scores_are_one_plain_forward_per_request(tiny, tmp_path):
    ckpt, model, tok = tiny
    task = _jsonl(tmp_path / "copa_like.jsonl", COPA_LIKE)
    results, rows = evaluate_mc(str(ckpt), str(task), batch_tokens=64)
    assert [r["index"] for r in rows] == [0, 1, 2, 3]
    for spec, row in zip(COPA_LIKE, rows):
        pairs = encode_pairs(tok.tokenizer, tok.end_id, [(spec["query"], " " + c) for c in spec["choices"]])
        expected = [_naive(model, c, k) for c, k in pairs]
        assert row["logprobs"] == pytest.approx(expected, abs=1e-4)
        assert row["tokens"] == [len(k) for _, k in pairs]
        assert row["pred"] == max(range(len(expected)), key=lambda i: (expected[i], -i))
    name = "copa_like"
    r = results["results"][name]
    assert r["n"] == 4 and r["acc"] == sum(row["acc"] for row in rows) / 4
    assert set(r) == {"acc", "acc_stderr", "acc_norm", "acc_norm_stderr", "acc_bytes", "acc_bytes_stderr", "n"}
    assert results["task"]["format"] == "icl/mc" and results["config"]["shots"] == 0


# ------------------------------------------------------------------------------ the real files

EVALSETS = "evalsets"


@pytest.mark.shared_data
@pytest.mark.parametrize("name,rows,fmt,index,context,choices,gold", [
    ("hf_format/arc_easy_validation.jsonl", 570, "hf/arc", 0,
     "Question: Which technology was developed most recently?\nAnswer:",
     ["cellular telephone", "television", "refrigerator", "airplane"], 0),
    ("hf_format/arc_challenge_validation.jsonl", 299, "hf/arc", 1, None, ["fog", "rain", "drought", "tornado"], 2),
    ("hf_format/hellaswag_validation_first1000.jsonl", 1000, "hf/hellaswag", 0,
     "Roof shingle removal: A man is sitting on a roof. He",
     ["is using wrap to wrap a pair of skis.", "is ripping level tiles off.", "is holding a rubik's cube.",
      "starts pulling up roofing on a roof."], 3),
    ("hf_format/piqa_validation.jsonl", 1838, "hf/piqa", 1, "Question: dresser\nAnswer:",
     ["replace drawer with bobby pin ", "finish, woodgrain with  bobby pin "], 1),
    ("hf_format/openbookqa_main_validation.jsonl", 500, "hf/openbookqa", 1,
     "Gas can fill any container it is given, and liquid", None, 3),
    ("hf_format/mmlu_dev.jsonl", 285, "hf/mmlu", 0,
     "The following are multiple choice questions (with answers) about abstract algebra.\n\n"
     "Find all c in Z_3 such that Z_3[x]/(x^2 + c) is a field.\nA. 0\nB. 1\nC. 2\nD. 3\nAnswer:",
     ["A", "B", "C", "D"], 1),
    ("llm_foundry/arc_easy.jsonl", 2376, "icl/mc", 1,
     "Question: Which piece of safety equipment is used to keep mold spores from entering the respiratory system?",
     ["safety goggles", "breathing mask", "rubber gloves", "lead apron"], 1),
    ("llm_foundry/arc_challenge.jsonl", 1172, "icl/mc", 0, None, None, 2),
    ("llm_foundry/copa.jsonl", 100, "icl/mc", 0, "The man turned on the faucet, therefore",
     ["the toilet filled with water.", "water flowed from the spout."], 1),
    ("llm_foundry/openbook_qa.jsonl", 500, "icl/mc", 1, "There is most likely going to be fog around:", None, 0),
    ("llm_foundry/piqa.jsonl", 1838, "icl/mc", 1, "Question: dresser\n", None, 1),
    ("llm_foundry/lambada_openai.jsonl", 5153, "icl/lm", 0, None, ["signs"], 0),
])
def test_real_files_load(name, rows, fmt, index, context, choices, gold):
    task = load_task(shared_data(EVALSETS, name))
    assert (len(task.items), task.rows, task.format) == (rows, rows, fmt)
    item = task.items[index]
    assert item.gold == gold and item.meta["line"] == index + 1
    if context is not None:
        assert item.context == context
    if choices is not None:
        assert item.choices == choices
    assert all(c for c in item.choices)


@pytest.mark.shared_data
@pytest.mark.parametrize("name", ["hf_format/winogrande_xl_validation.jsonl", "llm_foundry/winogrande.jsonl"])
def test_winogrande_scores_the_rest_of_the_sentence_after_each_option(name):
    task = load_task(shared_data(EVALSETS, name))
    assert (task.kind, len(task.items), task.metrics) == ("partial", 1267, ("acc",))
    item = task.items[0]
    assert item.requests() == [("Sarah was a much better surgeon than Maria so Sarah", " always got the easier cases."),
                               ("Sarah was a much better surgeon than Maria so Maria", " always got the easier cases.")]
    assert item.gold == 1


@pytest.mark.shared_data
def test_generation_tasks_are_refused_with_the_reason():
    with pytest.raises(UserError, match=r"gsm8k.jsonl: line 1: .*generation"):
        load_task(shared_data(EVALSETS, "llm_foundry", "gsm8k.jsonl"))


def test_hellaswag_preprocessing_is_the_harness():
    assert hellaswag_preprocess(" Bake a cake [title] Mix the flour. [step] Stir  well. ") == \
        "Bake a cake. Mix the flour. Stir well."


# ------------------------------------------------------------------------------ k-shot


def test_kshot_examples_are_fixed_by_the_seed_and_never_the_item(tmp_path):
    rows = [{"query": f"question {i}", "choices": [f"a{i}", f"b{i}"], "gold": i % 2} for i in range(12)]
    path = _jsonl(tmp_path / "q.jsonl", rows)
    a, b = load_task(path, shots=3, seed=7), load_task(path, shots=3, seed=7)
    assert [i.context for i in a.items] == [i.context for i in b.items]
    assert [i.context for i in a.items] != [i.context for i in load_task(path, shots=3, seed=8).items]
    for item in a.items:
        assert len(item.meta["shots"]) == 3 and item.index not in item.meta["shots"]
        j = item.meta["shots"][0]
        # "text + ' ' + gold answer", each followed by the fewshot delimiter, then the question.
        assert item.context.startswith(f"question {j} {rows[j]['choices'][rows[j]['gold']]}\n\n")
        assert item.context.endswith(f"\n\nquestion {item.index}") and item.context.count("\n\n") == 3
    # An item's examples do not depend on how many items are scored.
    assert [i.context for i in load_task(path, shots=3, seed=7, limit=5).items] == [i.context for i in a.items[:5]]
    with pytest.raises(UserError, match="at most 11"):
        load_task(path, shots=12)


@pytest.mark.shared_data
def test_mmlu_shots_are_the_first_dev_rows_of_the_same_subject():
    task = load_task(shared_data(EVALSETS, "hf_format", "mmlu_dev.jsonl"), shots=2)
    assert task.items[0].meta["shots"] == [1, 2] and task.items[1].meta["shots"] == [0, 2]
    assert task.items[5].meta["shots"] == [6, 7]  # anatomy starts at row 5
    ctx = task.items[0].context
    assert ctx.startswith("The following are multiple choice questions (with answers) about abstract algebra.\n\n"
                          "Statement 1 | If aH is an element of a factor group, then |aH| divides |a|.")
    assert ctx.count("\nAnswer: ") == 2 and ctx.endswith("D. 3\nAnswer:")


# ------------------------------------------------------------------------------ bad rows


@pytest.mark.parametrize("bad,message", [
    ({"query": "q", "gold": 0}, "missing field 'choices'"),
    ({"query": "q", "choices": [], "gold": 0}, "choices is empty"),
    ({"query": "q", "choices": ["a", " "], "gold": 0}, r"choices\[1\] is empty"),
    ({"query": "q", "choices": ["a", "b"], "gold": 2}, "gold 2 is not a choice index in 0..1"),
    ({"query": "", "choices": ["a", "b"], "gold": 0}, "field 'query' is empty"),
])
def test_bad_rows_name_the_file_and_line(tmp_path, bad, message):
    path = _jsonl(tmp_path / "t.jsonl", COPA_LIKE[:2] + [bad])
    with pytest.raises(UserError, match=f"t.jsonl: line 3: {message}"):
        load_task(path)


def test_bad_files_name_the_file(tmp_path):
    wino = {"sentence": "no blank here", "option1": "a", "option2": "b", "answer": "1"}
    with pytest.raises(UserError, match="w.jsonl: line 1: sentence has no blank"):
        load_task(_jsonl(tmp_path / "w.jsonl", [wino]))
    with pytest.raises(UserError, match="u.jsonl: line 1: unknown task format"):
        load_task(_jsonl(tmp_path / "u.jsonl", [{"prompt": "x"}]))
    (tmp_path / "j.jsonl").write_text(json.dumps(COPA_LIKE[0]) + "\n{not json\n")
    with pytest.raises(UserError, match="j.jsonl: line 2: not valid JSON"):
        load_task(tmp_path / "j.jsonl")


# ------------------------------------------------------------------------------ the CLI and Ray


def test_cli_writes_results_and_predictions(tiny, tmp_path, capsys):
    import pyarrow.parquet as pq

    from llmforge.cli import main

    ckpt, _, _ = tiny
    task = _jsonl(tmp_path / "copa_like.jsonl", COPA_LIKE)
    out = tmp_path / "out"
    assert main(["eval", "mc", "--model", str(ckpt), "--task", str(task), "--shots", "1", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "copa_like" in printed and "acc_norm" in printed
    results = json.loads((out / "results.json").read_text())
    assert results["results"]["copa_like"]["n"] == 4 and results["config"]["shots"] == 1
    assert results["predictions"] == "predictions.parquet"
    table = pq.read_table(out / "predictions.parquet")
    assert table.column("index").to_pylist() == [0, 1, 2, 3] and table.column("gold").to_pylist() == [1, 1, 0, 0]
    assert main(["eval", "mc", "--model", str(ckpt), "--task", str(tmp_path / "nope.jsonl"),
                 "--output", str(out)]) == 2
    assert "--task" in capsys.readouterr().err


@pytest.mark.ray
def test_ray_actors_score_as_the_process_does(tiny, tmp_path, ray_local):
    ckpt, _, _ = tiny
    task = _jsonl(tmp_path / "copa_like.jsonl", COPA_LIKE * 3)
    local, local_rows = evaluate_mc(str(ckpt), str(task), shots=1, batch_tokens=32)
    # batch_tokens=32: several blocks, so the actor sees more than one call.
    remote, remote_rows = evaluate_mc(str(ckpt), str(task), shots=1, batch_tokens=32, replicas=1)
    assert [r["index"] for r in remote_rows] == list(range(12))
    for a, b in zip(local_rows, remote_rows):
        assert a["logprobs"] == pytest.approx(b["logprobs"], abs=1e-5)
        assert (a["pred"], a["pred_norm"], a["pred_bytes"], a["context"]) == \
            (b["pred"], b["pred_norm"], b["pred_bytes"], b["context"])
    assert local["results"] == remote["results"]


def test_a_choice_longer_than_the_window_is_named(tiny, tmp_path):
    ckpt, _, _ = tiny
    rows = COPA_LIKE[:1] + [{"query": "q", "choices": ["short", " ".join(["word"] * 80)], "gold": 0}]
    with pytest.raises(UserError, match=r"long.jsonl: line 2: choice 1 is \d+ tokens, longer than the model's window of 64"):
        evaluate_mc(str(ckpt), str(_jsonl(tmp_path / "long.jsonl", rows)))
