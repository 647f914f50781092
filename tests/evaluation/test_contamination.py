"""Contamination: the black-box permutation test (Oren et al. 2023) on tiny models pretrained with
and without a planted benchmark, n-gram overlap with the training documents, bad input.

The module fixture pretrains two tiny Llamas (plain torch, ~120 steps each) on the same generated
English: one with a 48-item benchmark planted 25 times (in canonical order, one item per line),
one without. The benchmark is about half the contaminated model's training tokens, which makes
the order memorised and the test's verdict far from the 0.05 line both ways (measured: p ~1e-8
contaminated, p ~0.3-0.5 clean)."""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from evaluation.contamination import (ContaminationOptions, ngram_overlap, one_sided_t_test, parquet_documents,
                                      permutation_test, run_contamination, sequence_logprobs, shard_bounds,
                                      tokenize_examples)
from llmforge.cli import main
from llmforge.common.errors import UserError
from llmforge.ngram_overlap import NgramIndex, item_fields, read_eval_items, words
from tests.conftest import shared_data

N_ITEMS, PLANTED_COPIES, STEPS, VOCAB = 48, 25, 120, 512
TEST = dict(shards=12, permutations=50, seed=0)


def _pretrain(shard_dir: Path, tokenizer: Path, out: Path, vocab_size: int) -> Path:
    """The tiny preset on random windows of the shards' token stream (as base_checkpoint)."""
    from llmforge.shard_format import open_shards
    from tests.support.tiny_checkpoint import write_checkpoint
    from training.model import Llama, ModelConfig

    ids = np.concatenate(list(open_shards(str(shard_dir)))).astype(np.int64)
    torch.manual_seed(0)
    model = Llama(ModelConfig(preset="tiny", vocab_size=vocab_size, max_seq_len=256))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    rng, window = np.random.default_rng(0), 128
    for _ in range(STEPS):
        starts = rng.integers(0, len(ids) - window - 1, 16)
        x = torch.from_numpy(np.stack([ids[s:s + window] for s in starts]))
        y = torch.from_numpy(np.stack([ids[s + 1:s + window + 1] for s in starts]))
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return write_checkpoint(out, model.eval(), tokenizer, step=STEPS)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    from dataproc.synthetic.english import EnglishText
    from dataproc.tokenization.text_files import shards_from_text_files
    from dataproc.tokenization.tokenizer import TokenizerTrainOptions, train_tokenizer

    root = tmp_path_factory.mktemp("contamination")
    gen = EnglishText(random.Random(1))
    docs = [gen.paragraph() for _ in range(300)]
    bench_gen = EnglishText(random.Random(2))
    items = [bench_gen.sentence() for _ in range(N_ITEMS)]
    task = root / "bench.jsonl"
    task.write_text("".join(json.dumps({"text": t}) + "\n" for t in items))
    benchmark = "\n".join(items)  # the joiner the test concatenates with
    rng = random.Random(3)
    planted_docs = list(docs)
    for _ in range(PLANTED_COPIES):
        planted_docs.insert(rng.randrange(len(planted_docs) + 1), benchmark)
    tok = root / "tokenizer.json"
    vocab = train_tokenizer(docs + [benchmark], TokenizerTrainOptions(vocab_size=VOCAB), str(tok))["vocab_size"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two cores shared with other jobs: one thread is the fastest
    try:
        out = {}
        for name, texts in (("planted", planted_docs), ("clean", docs)):
            text = root / f"{name}.txt"
            text.write_text("\n\n".join(texts))  # paragraphs: one document each
            shards = root / f"{name}-shards"
            shards_from_text_files([str(text)], str(shards), tokenizer_path=str(tok), shard_tokens=50_000)
            out[name] = (shards, _pretrain(shards, tok, root / f"{name}-model", vocab))
        yield {"root": root, "task": task, "items": items, "tokenizer": tok, **out}
    finally:
        torch.set_num_threads(threads)


@pytest.fixture()
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _p_value(planted, name: str) -> float:
    from training.sources import load_for_inference

    model, chat = load_for_inference(planted[name][1])
    examples, joiner = tokenize_examples(chat.tokenizer, planted["items"])
    return permutation_test(model, examples, joiner=joiner, bos_id=chat.end_id, **TEST).p_value


def test_permutation_test_flags_the_planted_benchmark_and_not_the_clean_model(planted, one_thread):
    p_planted, p_clean = _p_value(planted, "planted"), _p_value(planted, "clean")
    print(f"p-values: planted {p_planted:.3g}, clean {p_clean:.3g}")
    assert p_planted < 0.05 <= p_clean


def test_cli_runs_both_tests_and_writes_results(planted, one_thread, tmp_path, capsys):
    shards, model = planted["planted"]
    out = tmp_path / "out"
    assert main(["eval", "contamination", "--model", str(model), "--task", str(planted["task"]),
                 "--shards", str(shards), "--tokenizer", str(planted["tokenizer"]), "--output", str(out),
                 "--num-shards", "12", "--permutations", "50", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "CONTAMINATED" in printed
    results = json.loads((out / "results.json").read_text())
    pt = results["permutation_test"]
    assert pt["p_value"] < 0.05 and pt["contaminated"] and pt["shards"] == 12 and pt["permutations"] == 50
    assert pt["examples"] == N_ITEMS and sum(s["examples"] for s in pt["per_shard"]) == N_ITEMS
    assert pt["mean_difference"] == pytest.approx(np.mean([s["difference"] for s in pt["per_shard"]]))
    assert pt["model"]["format"] == "llmforge"
    ov = results["ngram_overlap"]
    rows = pq.read_table(out / "overlap.parquet").to_pylist()
    assert len(rows) == N_ITEMS == results["items"]
    # Every item that has a 13-gram (or >= 8 words) is in the planted documents, wholly.
    checkable = [r for r in rows if r["checkable"]]
    assert len(checkable) == sum(len(words(t)) >= 8 for t in planted["items"]) > N_ITEMS // 2
    assert all(r["contaminated"] and r["overlap"] == 1.0 and r["documents"] == PLANTED_COPIES for r in checkable)
    assert ov["items_contaminated"] == ov["items_checkable"] == len(checkable)
    assert ov["documents_matching"] == PLANTED_COPIES and ov["documents_scanned"] == 300 + PLANTED_COPIES
    assert ov["flagged"][0]["example_ngram"] in " ".join(words(planted["items"][ov["flagged"][0]["item"]]))


def test_clean_training_data_has_no_overlap_and_the_model_alone_is_optional(planted, tmp_path):
    shards, _ = planted["clean"]
    out = tmp_path / "out"
    results = run_contamination(str(planted["task"]), str(out), shards_dir=str(shards), log=lambda *_: None)
    assert results["permutation_test"] is None  # no --model: n-gram overlap only
    assert results["ngram_overlap"]["items_contaminated"] == 0 and results["ngram_overlap"]["flagged"] == []
    assert results["ngram_overlap"]["documents_scanned"] == 300
    assert (out / "overlap.parquet").exists()


def test_black_box_alone_writes_no_overlap(planted, one_thread, tmp_path):
    out = tmp_path / "out"
    results = run_contamination(str(planted["task"]), str(out), model=str(planted["clean"][1]),
                                options=ContaminationOptions(shards=6, permutations=5, device="cpu"),
                                log=lambda *_: None)
    assert results["ngram_overlap"] is None and not (out / "overlap.parquet").exists()
    assert results["permutation_test"]["shards"] == 6
    assert json.loads((out / "results.json").read_text()) == results


def test_ngram_overlap_finds_exactly_the_planted_items(tmp_path):
    """Items in the eval formats, three planted in documents (one re-cased and re-punctuated),
    near misses that must not count: 12 words of an item, an item with every 10th word changed."""
    from dataproc.synthetic.english import EnglishText

    gen = EnglishText(random.Random(5))
    questions = [" ".join(gen.sentence() for _ in range(2)) for _ in range(30)]
    rows = []
    for i, q in enumerate(questions):  # three formats in one file
        if i % 3 == 0:
            rows.append({"query": f"Question: {q}", "choices": ["yes", "no"], "gold": 0})
        elif i % 3 == 1:
            rows.append({"id": f"q{i}", "question": q, "choices": {"text": ["a", "b"], "label": ["A", "B"]},
                         "answerKey": "A"})
        else:
            rows.append({"context": q, "continuation": "end"})
    task = tmp_path / "task.jsonl"
    task.write_text("".join(json.dumps(r) + "\n" for r in rows))
    filler = [gen.paragraph() for _ in range(40)]
    docs = [{"id": f"d{i}", "text": t} for i, t in enumerate(filler)]
    docs[3]["text"] += " " + questions[4]
    docs[11]["text"] = questions[17].upper().replace(" ", " , ") + " " + docs[11]["text"]
    docs[20]["text"] = f"{docs[20]['text']} Q: {questions[25]} A: yes"
    w = words(questions[8])
    docs[30]["text"] += " " + " ".join(w[:12])  # 12 words: no 13-gram
    changed = [("zzz" if k % 10 == 9 else x) for k, x in enumerate(words(questions[9]))]
    docs[31]["text"] += " " + " ".join(changed)  # every run of 13 words has a changed one
    docs_dir = tmp_path / "docs"
    (docs_dir / "_dropped").mkdir(parents=True)  # skipped like the pipeline's audit directories
    pq.write_table(pa.Table.from_pylist(docs[:25]), docs_dir / "part-0.parquet")
    pq.write_table(pa.Table.from_pylist(docs[25:]), docs_dir / "part-1.parquet")
    pq.write_table(pa.Table.from_pylist([{"id": "x", "text": questions[0]}]), docs_dir / "_dropped" / "p.parquet")

    index = NgramIndex(read_eval_items(str(task)))
    report = ngram_overlap(index, parquet_documents(str(docs_dir)))
    hits = {r["item"]: r for r in report.rows() if r["contaminated"]}
    assert set(hits) == {4, 17, 25}
    assert {hits[i]["example_document"] for i in hits} == {"d3", "d11", "d20"}
    assert all(hits[i]["overlap"] == 1.0 and hits[i]["documents"] == 1 for i in hits)
    summary = report.summary()
    assert summary["items_contaminated"] == 3 and summary["documents_scanned"] == 40
    assert summary["documents_matching"] == 3
    # the same through the command, from --documents
    results = run_contamination(str(task), str(tmp_path / "out"), documents_dir=str(docs_dir), log=lambda *_: None)
    assert sorted(f["item"] for f in results["ngram_overlap"]["flagged"]) == [4, 17, 25]


def test_item_fields_of_the_eval_formats():
    assert item_fields({"text": "abc"}, "f:1") == ("abc",)
    arc = {"id": "x", "question": "Q?", "choices": {"text": ["a", "b"], "label": ["A", "B"]}, "answerKey": "A"}
    assert item_fields(arc, "f:1") == ("Q?", "a", "b")
    assert item_fields({"query": "Q", "choices": ["a", "b"], "gold": 1}, "f:1") == ("Q", "a", "b")
    hellaswag = {"ctx": "C", "endings": ["e1", "e2"], "label": "0", "activity_label": "act"}
    assert item_fields(hellaswag, "f:1") == ("C", "e1", "e2")
    assert item_fields({"goal": "G", "sol1": "s1", "sol2": "s2", "label": 0}, "f:1") == ("G", "s1", "s2")
    assert item_fields({"context_options": ["c1", "c2"], "continuation": "k", "gold": 0}, "f:1") == ("c1", "c2", "k")


def test_short_fields_count_whole_from_min_words():
    eight = "one two three four five six seven eight"
    index = NgramIndex(read_items_from([{"text": eight}, {"text": "too short to check"}]))
    assert index.grams[0] == {eight} and not index.checkable(1)
    assert index.find(f"Before {eight.upper()}, after") == {0: {eight}}
    assert index.find("one two three four five six seven") == {}


def read_items_from(rows):
    from llmforge.ngram_overlap import EvalItem

    return [EvalItem("mem", i + 1, item_fields(r, f"mem:{i + 1}")) for i, r in enumerate(rows)]


def test_harness_normalization_keeps_apostrophes_joined():
    assert words("Don't STOP-now!", "words") == ["don", "t", "stop", "now"]
    assert words("Don't STOP-now!", "harness") == ["dont", "stopnow"]


@pytest.mark.parametrize("stride_fits", [True, False])
def test_batched_sequence_scores_equal_rolling_scores(stride_fits):
    from evaluation.scoring import rolling_token_logprobs
    from training.model import Llama, ModelConfig

    torch.manual_seed(0)
    model = Llama(ModelConfig(preset="tiny", vocab_size=97, max_seq_len=32, init_std=0.2)).eval()
    rng = random.Random(0)
    length = 30 if stride_fits else 75  # within the window vs rolled over three windows
    seqs = [[rng.randrange(97) for _ in range(length)] for _ in range(5)] + [[3, 4, 5]]
    got = sequence_logprobs(model, seqs, batch_tokens=64)
    for seq, s in zip(seqs, got):
        assert s == pytest.approx(float(rolling_token_logprobs(model, seq).sum()), abs=1e-3)


def test_t_test_is_scipys_one_sided_test():
    from scipy import stats

    d = [0.3, -0.1, 0.8, 0.2, 0.05, 0.4]
    t, p = one_sided_t_test(d)
    ref = stats.ttest_1samp(d, 0.0, alternative="greater")
    assert (t, p) == pytest.approx((ref.statistic, ref.pvalue))
    assert one_sided_t_test([1.0, 1.0, 1.0])[1] == 0.0 and one_sided_t_test([0.0, 0.0])[1] == 1.0
    assert shard_bounds(10, 4) == [(0, 3), (3, 6), (6, 8), (8, 10)]


def test_permutation_test_needs_two_shards_of_two():
    with pytest.raises(UserError, match="at least 4 examples"):
        permutation_test(None, [[1], [2], [3]], joiner=[0], bos_id=0)


# ------------------------------------------------------------------ bad input


def test_missing_task_file_is_named(tmp_path):
    with pytest.raises(UserError, match="missing.jsonl: no such file"):
        read_eval_items(str(tmp_path / "missing.jsonl"))


def test_row_without_text_field_names_file_and_row(tmp_path):
    task = tmp_path / "t.jsonl"
    task.write_text('{"text": "fine"}\n\n{"id": "q2", "label": 1}\n')
    with pytest.raises(UserError, match=r"t\.jsonl:3: no text field .* the row has id, label"):
        read_eval_items(str(task))
    task.write_text('{"text": "fine"}\n{not json\n')
    with pytest.raises(UserError, match=r"t\.jsonl:2: not JSON"):
        read_eval_items(str(task))
    task.write_text('{"text": ""}\n')
    with pytest.raises(UserError, match=r"t\.jsonl:1: field 'text' is not a non-empty string"):
        read_eval_items(str(task))
    task.write_text("\n")
    with pytest.raises(UserError, match="no items"):
        read_eval_items(str(task))


def test_cli_bad_input_exits_2_with_the_reason(tmp_path, capsys):
    task = tmp_path / "t.jsonl"
    task.write_text('{"text": "one two three"}\n')
    assert main(["eval", "contamination", "--task", str(task), "--output", str(tmp_path / "o")]) == 2
    assert "nothing to do: give --model" in capsys.readouterr().err
    assert main(["eval", "contamination", "--task", str(tmp_path / "nope.jsonl"), "--documents", str(tmp_path),
                 "--output", str(tmp_path / "o")]) == 2
    assert "--task" in capsys.readouterr().err
    assert main(["eval", "contamination", "--task", str(task), "--shards", str(tmp_path),
                 "--output", str(tmp_path / "o")]) == 2
    assert "not a token shard directory" in capsys.readouterr().err
    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "d.parquet")
    assert main(["eval", "contamination", "--task", str(task), "--documents", str(tmp_path),
                 "--output", str(tmp_path / "o")]) == 2
    assert "no 'text' column (columns: body)" in capsys.readouterr().err
    assert main(["eval", "contamination", "--task", str(task), "--documents", str(tmp_path), "--ngram", "5",
                 "--output", str(tmp_path / "o")]) == 2
    assert "--min-words 8 > --ngram 5" in capsys.readouterr().err


@pytest.mark.shared_data
def test_every_real_eval_file_yields_items():
    root = shared_data("evalsets")
    files = sorted(root.glob("*/*.jsonl"))
    assert len(files) >= 10
    for path in files:
        items = read_eval_items(str(path))
        assert items and all(it.fields for it in items), path
        index = NgramIndex(items)
        assert sum(index.checkable(i) for i in range(len(index))) > len(items) // 2, path
