"""Perplexity and bits per byte: the hand sum over a plain forward, every token once in long
documents, the same numbers from text and from the token shards made of it."""
from __future__ import annotations

import json
import math

import pytest
import torch

from evaluation.perplexity import count_words, evaluate_ppl, read_texts, score_documents
from evaluation.scoring import rolling_token_logprobs
from llmforge.common.errors import UserError

SHORT = "The cat sat on the mat. It was warm, and the cat was happy."
DOCS = [
    SHORT,
    "A dog barked at the postman.",
    " ".join(f"Sentence number {i} says the river runs past the old mill." for i in range(12)),  # > window
    "Café au lait — naïve façade.",  # multi-byte characters: bytes != characters
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from tests.support.tiny_checkpoint import tiny_checkpoint

    return tiny_checkpoint(tmp_path_factory.mktemp("ppl") / "ckpt", max_seq_len=64)


def _ids(tok, text):
    return tok.tokenizer.encode(text, add_special_tokens=False).ids


def test_bits_per_byte_is_the_hand_sum_of_one_plain_forward(tiny, tmp_path):
    ckpt, model, tok = tiny
    path = tmp_path / "short.txt"
    path.write_text(SHORT)
    ids = [tok.end_id] + _ids(tok, SHORT)
    assert len(ids) <= 64
    with torch.no_grad():
        lp = torch.log_softmax(model(torch.tensor([ids[:-1]])).double()[0], -1)
    total = float(lp[torch.arange(len(ids) - 1), torch.tensor(ids[1:])].sum())
    results, rows = evaluate_ppl(str(ckpt), str(path))
    m = results["results"]["short"]
    nbytes, words = len(SHORT.encode()), len(SHORT.split())
    assert (m["documents"], m["tokens"], m["bytes"], m["words"]) == (1, len(ids) - 1, nbytes, words)
    assert m["bits_per_byte"] == pytest.approx(-total / nbytes / math.log(2), rel=1e-5)
    assert m["byte_perplexity"] == pytest.approx(math.exp(-total / nbytes), rel=1e-5)
    assert m["word_perplexity"] == pytest.approx(math.exp(-total / words), rel=1e-5)
    assert m["token_perplexity"] == pytest.approx(math.exp(-total / (len(ids) - 1)), rel=1e-5)
    assert rows[0]["logprob"] == pytest.approx(total, abs=1e-4)


def test_every_token_is_scored_once_and_batching_changes_nothing(tiny):
    _, model, tok = tiny
    docs = [_ids(tok, d) for d in DOCS]
    assert len(docs[2]) > 64 >= max(len(d) for i, d in enumerate(docs) if i != 2)
    # One document at a time, through the rolling windows (scored once each: tested in test_scoring).
    alone = [float(rolling_token_logprobs(model, [tok.end_id, *d]).double().sum()) for d in docs]
    for batch_tokens in (1, 64, 100000):  # one short document per forward ... all at once
        batched = score_documents(model, docs, tok.end_id, batch_tokens=batch_tokens)
        assert batched == pytest.approx(alone, abs=1e-3)
    strided = score_documents(model, docs, tok.end_id, stride=16)
    assert strided[2] == pytest.approx(float(rolling_token_logprobs(model, [tok.end_id, *docs[2]], 16).sum()), abs=1e-3)
    assert strided[:2] == pytest.approx(alone[:2], abs=1e-3)


def test_shards_and_text_of_the_same_documents_agree(tiny, tmp_path):
    from dataproc.tokenization.text_files import shards_from_text_files

    ckpt, _, _ = tiny
    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCS))
    shards = tmp_path / "shards"
    shards_from_text_files([str(data)], str(shards), tokenizer_path=str(ckpt / "tokenizer.json"), shard_tokens=50)
    from_text, text_rows = evaluate_ppl(str(ckpt), str(data))
    from_shards, shard_rows = evaluate_ppl(str(ckpt), str(shards))
    a, b = from_text["results"]["docs"], from_shards["results"]["shards"]
    counts = ("documents", "tokens", "bytes", "words")
    assert [a[k] for k in counts] == [b[k] for k in counts]
    assert a["bits_per_byte"] == pytest.approx(b["bits_per_byte"], rel=1e-6)
    assert [r["logprob"] for r in text_rows] == pytest.approx([r["logprob"] for r in shard_rows], abs=1e-5)
    assert from_shards["data"]["kind"] == "shards" and from_text["data"]["kind"] == "text"


def test_inputs_and_their_errors(tmp_path, tiny):
    ckpt, _, _ = tiny
    txt = tmp_path / "t.txt"
    txt.write_text("one line\nsecond line\n\n\nthird  block\n")
    assert read_texts(txt) == ["one line\nsecond line\n\n\nthird  block\n"]
    assert read_texts(txt, txt_mode="paragraphs") == ["one line\nsecond line", "third  block"]
    assert read_texts(txt, txt_mode="lines") == ["one line", "second line", "third  block"]
    assert count_words("a  b\nc ") == 4  # the harness's re.split(r"\s+"): a trailing space counts
    bad = tmp_path / "b.jsonl"
    bad.write_text('{"text": "fine"}\n{"body": "x"}\n')
    with pytest.raises(UserError, match="b.jsonl: line 2: no 'text' field"):
        evaluate_ppl(str(ckpt), str(bad))
    with pytest.raises(UserError, match="unsupported file type"):
        read_texts(tmp_path / "x.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="without manifest.json"):
        evaluate_ppl(str(ckpt), str(tmp_path / "empty"))


def test_cli_writes_results_and_documents(tiny, tmp_path, capsys):
    import pyarrow.parquet as pq

    from llmforge.cli import main

    ckpt, _, _ = tiny
    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCS))
    out = tmp_path / "out"
    assert main(["eval", "ppl", "--model", str(ckpt), "--data", str(data), "--output", str(out), "--limit", "3"]) == 0
    assert "bits/byte" in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert results["results"]["docs"]["documents"] == 3 and results["predictions"] == "documents.parquet"
    table = pq.read_table(out / "documents.parquet")
    assert table.column("index").to_pylist() == [0, 1, 2]
    assert table.column("bytes").to_pylist() == [len(d.encode()) for d in DOCS[:3]]
