"""Examples as training sees them: which tokens carry loss, truncation, packing, weights."""
from __future__ import annotations

import pytest

from alignment.examples import TokenizedExamples, pack, tokenize_pairs, tokenize_sft
from alignment.formats import Conversation, PreferencePair


@pytest.fixture(scope="module")
def chat(base_model):
    from training.chat import ChatTokenizer

    return ChatTokenizer.from_file(str(base_model / "tokenizer.json"))


def _counts():
    return {"truncated": 0, "dropped_too_long": 0, "dropped_no_reply_tokens": 0,
            "dropped_identical_after_truncation": 0}


def test_loss_only_on_assistant_tokens(chat):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi."},
                {"role": "assistant", "content": "Hi there."}, {"role": "user", "content": "Again?"},
                {"role": "assistant", "content": "Hi again."}]
    enc = chat.encode(messages)
    trained = [t for t, m in zip(enc.ids, enc.mask) if m]
    # Exactly the two replies and their end-of-turn tokens; nothing of system, user or headers.
    replies = [chat.tokenizer.encode(reply, add_special_tokens=False).ids + [chat.end_id]
               for reply in ("Hi there.", "Hi again.")]
    assert trained == replies[0] + replies[1]
    untrained = chat.decode([t for t, m in zip(enc.ids, enc.mask) if not m])
    assert "Be brief." in untrained and "Say hi." in untrained and "Again?" in untrained
    assert "Hi there" not in untrained
    # A preference completion trains only the last reply.
    last = chat.encode(messages, train_on="last")
    assert [t for t, m in zip(last.ids, last.mask) if m] == replies[1]


def test_sft_truncation_counted_and_policy_applied(chat):
    long = Conversation("a", [{"role": "user", "content": "Tell me."}, {"role": "assistant", "content": "word " * 200}])
    short = Conversation("b", [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}])
    counts = _counts()
    rows = tokenize_sft([long, short], chat, 64, "truncate", counts)
    assert [len(r["ids"]) for r in rows][0] == 64 and counts["truncated"] == 1
    counts = _counts()
    rows = tokenize_sft([long, short], chat, 64, "drop", counts)
    assert [r["id"] for r in rows] == ["b"] and counts["dropped_too_long"] == 1


def test_pair_truncation_keeps_replies_whole(chat):
    prompt = [{"role": "user", "content": "context " * 100 + "question?"}]
    pair = PreferencePair("p", prompt, "Yes, surely.", "No.")
    counts = _counts()
    (row,) = tokenize_pairs([pair], chat, 48, "truncate", counts)
    assert counts["truncated"] == 1
    assert max(len(row["chosen_ids"]), len(row["rejected_ids"])) <= 48
    for side, reply in (("chosen", "Yes, surely."), ("rejected", "No.")):
        reply_ids = [t for t, m in zip(row[f"{side}_ids"], row[f"{side}_mask"]) if m]
        assert reply_ids == chat.tokenizer.encode(reply, add_special_tokens=False).ids + [chat.end_id]


def test_packing_segments_and_weights(tmp_path, chat):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from alignment.examples import _schema

    convs = [Conversation(str(i), [{"role": "user", "content": f"n{i}"}, {"role": "assistant", "content": "ok " * i}])
             for i in range(1, 7)]
    rows = tokenize_sft(convs, chat, 64, "truncate", _counts())
    packed = pack(rows, 64, mask_boundaries=True)
    assert sum(len(p["ids"]) for p in packed) == sum(len(r["ids"]) for r in rows)
    assert all(len(p["ids"]) <= 64 for p in packed) and len(packed) < len(rows)
    first = packed[0]
    n0 = len(rows[0]["ids"])
    assert first["segments"][:n0] == [0] * n0 and first["segments"][n0] == 1
    pq.write_table(pa.Table.from_pylist(packed, schema=_schema("sft", True)), tmp_path / "t.parquet")
    ex = TokenizedExamples(tmp_path / "t.parquet", pad_id=chat.pad_id)
    batch = ex.batch([0, 1])
    assert batch["ids"].shape == batch["segments"].shape == batch["mask"].shape
    # The weight is the number of trained target tokens: the mask shifted by one.
    assert ex.weight([0, 1]) == sum(sum(p["mask"][1:]) for p in packed[:2])
