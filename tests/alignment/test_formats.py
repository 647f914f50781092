"""alignment.formats and alignment.synthetic: each format on hand-written files, the real files
in ../shared/data when present, skip counting, malformed rows, the held-out split, and the
synthetic tasks round-tripping through write_jsonl and the readers."""
from __future__ import annotations

import gzip
import json
import re

import pytest

from alignment.formats import (Conversation, PreferencePair, alpaca_user_content, file_stem,
                               read_preferences, read_sft, split_holdout, write_jsonl)
from alignment.synthetic import MARKER, NEUTRAL, preference_task, sft_task
from llmforge.common.errors import UserError
from tests.conftest import shared_data

S = lambda c: {"role": "system", "content": c}  # noqa: E731
U = lambda c: {"role": "user", "content": c}  # noqa: E731
A = lambda c: {"role": "assistant", "content": c}  # noqa: E731


def write_rows(path, rows):
    """rows as .json (a list), .jsonl, or either gzipped, by the name's suffix."""
    text = json.dumps(rows) if ".json." in path.name or path.name.endswith(".json") \
        else "".join(json.dumps(r) + "\n" for r in rows)
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


# --- SFT -------------------------------------------------------------------------------------


def test_alpaca_with_and_without_input_and_system(tmp_path):
    path = write_rows(tmp_path / "alp.json", [
        {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"},
        {"instruction": "Say hi.", "input": "", "output": "hi"},
        {"instruction": "Say bye.", "output": "bye", "system": "Be brief.", "source": "x"},
        {"instruction": "Count.", "input": "  \n", "output": "1 2 3"},
        {"instruction": "Go on.", "output": "done", "history": [["first", "one"]]},
    ])
    convs, counts = read_sft(path)
    assert [c.messages for c in convs] == [
        [U("Add the numbers.\n\n2 and 3"), A("5")],
        [U("Say hi."), A("hi")],
        [S("Be brief."), U("Say bye."), A("bye")],
        [U("Count."), A("1 2 3")],  # whitespace-only input is no input
        [U("first"), A("one"), U("Go on."), A("done")],
    ]
    assert [c.id for c in convs] == ["alp:0", "alp:1", "alp:2", "alp:3", "alp:4"]
    assert convs[2].extra == {"source": "x"}
    assert counts.as_dict() == {"path": str(path), "format": "alpaca", "read": 5, "kept": 5,
                                "skipped": {"empty_completion": 0}}
    assert alpaca_user_content("I", "x") == "I\n\nx" and alpaca_user_content("I", "") == "I"


def test_chat_messages_multi_turn_system_and_from_value(tmp_path):
    path = write_rows(tmp_path / "chat.jsonl", [
        {"messages": [S("sys"), U("q1"), A("a1"), U("q2"), A("a2")], "id": "first", "lang": "en"},
        {"messages": [{"from": "human", "value": "hello"}, {"from": "gpt", "value": "hey"}]},
        {"id": 7, "messages": [{"role": "user", "content": "x"}, {"role": "model", "content": "y"}]},
    ])
    convs, counts = read_sft(path)
    assert convs == [
        Conversation("first", [S("sys"), U("q1"), A("a1"), U("q2"), A("a2")], {"lang": "en"}),
        Conversation("chat:1", [U("hello"), A("hey")], {}),
        Conversation("7", [U("x"), A("y")], {}),
    ]
    assert counts.format == "messages" and (counts.read, counts.kept) == (3, 3)


def test_sharegpt_roles_and_top_level_system(tmp_path):
    path = write_rows(tmp_path / "sg.jsonl.gz", [
        {"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"},
                           {"from": "user", "value": "c"}, {"from": "assistant", "value": "d"}],
         "system": "be kind", "tools": "[]"},
        {"conversations": [{"from": "system", "value": "s"}, {"from": "human", "value": "e"},
                           {"from": "model", "value": "f"}]},
    ])
    convs, counts = read_sft(path)
    assert [c.messages for c in convs] == [[S("be kind"), U("a"), A("b"), U("c"), A("d")],
                                           [S("s"), U("e"), A("f")]]
    assert [c.id for c in convs] == ["sg:0", "sg:1"] and convs[0].extra == {"tools": "[]"}
    assert counts.format == "sharegpt"
    assert file_stem(tmp_path / "sg.jsonl.gz") == "sg" and file_stem("x/y.json.gz") == "y"


def test_json_gz_and_forced_format(tmp_path):
    # detection looks for `messages` first ...
    path = write_rows(tmp_path / "f.json.gz", [{"instruction": "i", "output": "o", "messages": "not used"}])
    with pytest.raises(UserError, match=r"f\.json\.gz: row index 0: messages must be a list"):
        read_sft(path)
    convs, counts = read_sft(path, format="alpaca")  # ... and format= overrides it
    assert convs[0].messages == [U("i"), A("o")] and convs[0].extra == {"messages": "not used"}
    with pytest.raises(UserError, match="unknown format 'chatml'"):
        read_sft(path, format="chatml")
    with pytest.raises(UserError, match="no such file"):
        read_sft(tmp_path / "absent.jsonl")


def test_sft_empty_output_is_skipped_and_counted(tmp_path):
    path = write_rows(tmp_path / "e.jsonl", [
        {"instruction": "a", "output": "x"},
        {"instruction": "b", "output": ""},
        {"instruction": "c", "output": " \n "},
        {"instruction": "d", "output": "y"},
    ])
    convs, counts = read_sft(path)
    assert [c.id for c in convs] == ["e:0", "e:3"]  # ids keep the row index
    assert counts.as_dict()["read"] == 4 and counts.kept == 2 and counts.skipped == {"empty_completion": 2}
    chat = write_rows(tmp_path / "c.jsonl", [{"messages": [U("q"), A(""), U("q2"), A("a")]}])
    assert read_sft(chat)[1].skipped == {"empty_completion": 1}


def test_blank_jsonl_lines_are_not_rows(tmp_path):
    path = tmp_path / "b.jsonl"
    path.write_text('\n{"instruction": "a", "output": "x"}\n\n{"instruction": "b", "output": "y"}\n\n')
    convs, counts = read_sft(path)
    assert [c.id for c in convs] == ["b:0", "b:1"] and counts.read == 2


def test_empty_file(tmp_path):
    convs, counts = read_sft(write_rows(tmp_path / "none.jsonl", []))
    assert convs == [] and counts.as_dict()["read"] == 0


# --- malformed rows raise naming the file and the row -----------------------------------------


@pytest.mark.parametrize("name, rows, where, what", [
    ("m.json", [{"instruction": "a", "output": "b"}, ["x"]], "row index 1", "must be a JSON object, got list"),
    ("m.jsonl", [{"instruction": "a", "output": "b"}, {"instruction": "a"}], "line 2", "missing key.*output"),
    ("m.jsonl", [{"messages": [U("a"), {"role": "bot", "content": "b"}]}], "line 1", "unknown role 'bot'"),
    ("m.jsonl", [{"conversations": [{"from": "human", "value": "a"}, {"from": "robot", "value": "b"}]}],
     "line 1", "unknown from 'robot'"),
    ("m.json", [{"messages": [U("a"), A(["b"])]}], "row index 0", "content must be text, got list"),
    ("m.json", [{"instruction": "a", "output": 3}], "row index 0", "output must be text, got int"),
    ("m.jsonl", [{"messages": [U("a"), {"role": "assistant", "content": "b", "name": "x"}]}],
     "line 1", "unexpected key.*name"),
    ("m.jsonl", [{"messages": [U("a"), A("b"), U("c")]}], "line 1", "must end with an assistant turn"),
    ("m.jsonl", [{"messages": []}], "line 1", "no messages"),
    ("m.jsonl", [{"id": "x", "messages": [U("a"), A("b")]}, {"id": "x", "messages": [U("c"), A("d")]}],
     "line 2", "id 'x' repeats the id of .*line 1"),
])
def test_malformed_sft_rows_raise(tmp_path, name, rows, where, what):
    path = write_rows(tmp_path / name, rows)
    with pytest.raises(UserError, match=re.escape(f"{path}: {where}: ") + f".*{what}"):
        read_sft(path)


def test_invalid_json_line_raises_with_its_line_number(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"instruction": "a", "output": "b"}\n\n{"instruction": "a", "output": \n')
    with pytest.raises(UserError, match=re.escape(f"{path}: line 3: not valid JSON")):
        read_sft(path)


@pytest.mark.parametrize("name, content, what", [
    ("x.txt", "", "unknown file type"),
    ("x.json", '{"instruction": "a"}', "must hold a list of rows, got dict"),
    ("x.json", "[1,", "not valid JSON"),
    ("x.jsonl", '{"prompt": "a", "chosen": "b", "rejected": "c"}\n', "a preference file"),
    ("x.jsonl", '{"text": "a"}\n', r"line 1: cannot tell the SFT format from the first row's keys \(text\)"),
])
def test_unreadable_files_raise(tmp_path, name, content, what):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(UserError, match=re.escape(str(path)) + ".*" + what):
        read_sft(path)


# --- preferences -----------------------------------------------------------------------------


def test_pairs_with_string_and_message_prompts(tmp_path):
    path = write_rows(tmp_path / "p.jsonl", [
        # a string prompt, string replies
        {"prompt": "q", "chosen": "good", "rejected": "bad", "score": 1},
        # a message-list prompt, replies as assistant-turn lists
        {"prompt": [U("q1"), A("a1"), U("q2")], "chosen": [A("good")], "rejected": [A("bad")]},
        # replies as whole conversations including the prompt
        {"prompt": [U("q")], "chosen": [U("q"), A("good")], "rejected": [U("q"), A("bad")]},
        # no prompt key: the shared prefix of whole conversations (TRL's implicit prompt)
        {"chosen": [S("s"), U("q"), A("a"), U("q2"), A("good")],
         "rejected": [S("s"), U("q"), A("a"), U("q2"), A("bad")]},
        # a system key with a string prompt
        {"prompt": "q", "system": "s", "chosen": "good", "rejected": "bad", "id": "mine"},
        # whole conversations that leave out the system key's turn
        {"prompt": [U("q")], "system": "s", "chosen": [U("q"), A("good")], "rejected": [U("q"), A("bad")]},
    ])
    pairs, counts = read_preferences(path)
    assert pairs == [
        PreferencePair("p:0", [U("q")], "good", "bad", {"score": 1}),
        PreferencePair("p:1", [U("q1"), A("a1"), U("q2")], "good", "bad"),
        PreferencePair("p:2", [U("q")], "good", "bad"),
        PreferencePair("p:3", [S("s"), U("q"), A("a"), U("q2")], "good", "bad"),
        PreferencePair("mine", [S("s"), U("q")], "good", "bad"),
        PreferencePair("p:5", [S("s"), U("q")], "good", "bad"),
    ]
    assert counts.as_dict() == {"path": str(path), "format": "pairs", "read": 6, "kept": 6,
                                "skipped": {"empty_completion": 0, "chosen_equals_rejected": 0}}
    assert pairs[1].chosen_messages() == [U("q1"), A("a1"), U("q2"), A("good")]
    assert pairs[1].rejected_messages()[-1] == A("bad")


def test_sharegpt_pairs(tmp_path):
    path = write_rows(tmp_path / "sgp.json", [
        {"conversations": [{"from": "human", "value": "q"}],
         "chosen": {"from": "gpt", "value": "good"}, "rejected": {"from": "gpt", "value": "bad"}},
        {"conversations": [{"from": "system", "value": "s"}, {"from": "human", "value": "q1"},
                           {"from": "gpt", "value": "a1"}, {"from": "human", "value": "q2"}],
         "chosen": {"from": "gpt", "value": "good"}, "rejected": {"from": "gpt", "value": "bad"}},
    ])
    pairs, counts = read_preferences(path)
    assert [(p.id, p.prompt, p.chosen, p.rejected) for p in pairs] == [
        ("sgp:0", [U("q")], "good", "bad"),
        ("sgp:1", [S("s"), U("q1"), A("a1"), U("q2")], "good", "bad"),
    ]
    assert counts.format == "sharegpt"


def hh(*turns):
    return "".join(f"\n\n{speaker}: {text}" for speaker, text in turns)


def test_hh_transcripts(tmp_path):
    shared = [("Human", "hi"), ("Assistant", "hello"), ("Human", "help me")]
    path = write_rows(tmp_path / "hh.jsonl", [
        {"chosen": hh(*shared, ("Assistant", "sure")), "rejected": hh(*shared, ("Assistant", "no"))},
        # consecutive turns of one speaker are one turn
        {"chosen": hh(("Human", "q"), ("Assistant", "part one"), ("Assistant", " part two")),
         "rejected": hh(("Human", "q"), ("Assistant", "other"))},
        # an empty final reply, and identical replies: skipped and counted
        {"chosen": hh(("Human", "q"), ("Assistant", "")), "rejected": hh(("Human", "q"), ("Assistant", "x"))},
        {"chosen": hh(("Human", "q"), ("Assistant", "x")), "rejected": hh(("Human", "q"), ("Assistant", "x "))},
    ])
    pairs, counts = read_preferences(path)
    assert pairs == [
        PreferencePair("hh:0", [U("hi"), A("hello"), U("help me")], "sure", "no"),
        PreferencePair("hh:1", [U("q")], "part one\n\npart two", "other"),
    ]
    assert counts.as_dict() == {"path": str(path), "format": "hh_rlhf", "read": 4, "kept": 2,
                                "skipped": {"empty_completion": 1, "chosen_equals_rejected": 1}}


def test_preference_skips_are_counted(tmp_path):
    path = write_rows(tmp_path / "s.jsonl", [
        {"prompt": "q", "chosen": "same", "rejected": "same"},
        {"prompt": "q", "chosen": "", "rejected": "bad"},
        {"prompt": "q", "chosen": "good", "rejected": "  "},
        {"prompt": "q", "chosen": [A("x")], "rejected": [A("x")]},
        {"prompt": "q", "chosen": "good", "rejected": "bad"},
    ])
    pairs, counts = read_preferences(path)
    assert [p.id for p in pairs] == ["s:4"]
    assert counts.as_dict()["skipped"] == {"empty_completion": 2, "chosen_equals_rejected": 2}
    assert (counts.read, counts.kept) == (5, 1)


@pytest.mark.parametrize("rows, where, what", [
    ([{"prompt": "q", "chosen": "a", "rejected": "b"}, {"prompt": "q", "chosen": "a"}], "line 2",
     "missing key.*rejected"),
    ([{"prompt": "q", "chosen": "a"}], "line 1", r"cannot tell the preference format .*\(chosen, prompt\)"),
    ([{"prompt": "q", "chosen": "a", "rejected": "b"}, "text"], "line 2", "must be a JSON object, got str"),
    ([{"prompt": "q", "chosen": 1, "rejected": "b"}], "line 1", "chosen must be a list of messages, got int"),
    ([{"prompt": [U("q")], "chosen": [U("x"), A("a")], "rejected": [U("y"), A("b")]}], "line 1",
     "differ before their final assistant reply"),
    ([{"prompt": "q", "chosen": [A("a"), U("more")], "rejected": "b"}], "line 1",
     "chosen must end with an assistant reply"),
    ([{"chosen": [A("a")], "rejected": [A("b")]}], "line 1", "no user turn before the final"),
    ([{"prompt": [{"role": "user", "content": 5}], "chosen": "a", "rejected": "b"}], "line 1",
     "content must be text, got int"),
    ([{"conversations": [{"from": "human", "value": "q"}], "chosen": {"from": "critic", "value": "a"},
       "rejected": {"from": "gpt", "value": "b"}}], "line 1", "unknown from 'critic'"),
    # HH: transcripts differing before the last reply, or not parsing
    ([{"chosen": hh(("Human", "q"), ("Assistant", "a")), "rejected": hh(("Human", "Q"), ("Assistant", "b"))}],
     "line 1", "differ before their final assistant reply"),
    ([{"chosen": "Human: q Assistant: a", "rejected": hh(("Human", "q"), ("Assistant", "b"))}],
     "line 1", "chosen is not a .*transcript"),
    ([{"chosen": hh(("Human", "q"), ("Assistant", "a"), ("Human", "more")),
       "rejected": hh(("Human", "q"), ("Assistant", "b"))}], "line 1", "chosen must end with an assistant reply"),
])
def test_malformed_preference_rows_raise(tmp_path, rows, where, what):
    path = write_rows(tmp_path / "bad.jsonl", rows)
    with pytest.raises(UserError, match=re.escape(f"{path}: {where}") + f".*{what}"):
        read_preferences(path)


def test_sft_file_read_as_preferences_is_refused(tmp_path):
    path = write_rows(tmp_path / "sft.jsonl", [{"instruction": "a", "output": "b"}])
    with pytest.raises(UserError, match="cannot tell the preference format"):
        read_preferences(path)


# --- the real files in ../shared/data --------------------------------------------------------


def test_real_alpaca_demo():
    convs, counts = read_sft(shared_data("preference_sft", "llamafactory_alpaca_en_demo.json"))
    assert counts.as_dict()["format"] == "alpaca" and (counts.read, counts.kept) == (999, 999)
    assert sum("\n\n" in c.messages[0]["content"] for c in convs) >= 412  # rows with an input
    assert convs[5].messages[0] == U("Given the parameters of a triangle, find out its perimeter.\n\n"
                                     "Side 1 = 4\nSide 2 = 6\nSide 3 = 8")
    assert convs[5].id == "llamafactory_alpaca_en_demo:5" and len(convs[5].messages) == 2


def test_real_sharegpt_dpo_demo():
    pairs, counts = read_preferences(shared_data("preference_sft", "llamafactory_dpo_en_demo.json"))
    assert counts.format == "sharegpt" and (counts.read, counts.kept) == (300, 300)
    assert pairs[0].prompt[0]["content"].startswith("Hi! I'd like to create a new language game")
    assert pairs[0].chosen.startswith("That sounds like a fun and engaging idea!")
    assert pairs[0].rejected.startswith("Hello! I'd be happy to help you create a language game")
    assert [m["role"] for m in pairs[1].prompt] == ["system", "user"]
    assert [m["role"] for m in pairs[4].prompt] == ["user", "assistant", "user", "assistant", "user"]


def test_real_hh_rlhf_harmless():
    pairs, counts = read_preferences(shared_data("preference_sft", "hh-rlhf_harmless-base_test.jsonl.gz"))
    # four rows have an empty chosen reply; every other row parses and splits
    assert counts.as_dict()["format"] == "hh_rlhf"
    assert (counts.read, counts.kept, counts.skipped) == (
        2312, 2308, {"empty_completion": 4, "chosen_equals_rejected": 0})
    first = pairs[0]
    assert first.id == "hh-rlhf_harmless-base_test:0"
    assert [m["role"] for m in first.prompt] == ["user", "assistant", "user", "assistant", "user"]
    assert first.prompt[0] == U("what are some pranks with a pen i can do?")
    assert first.prompt[2] == U("yep")
    assert first.prompt[4] == U("okay some of these do not have anything to do with pens")
    assert first.chosen == ("No, sorry!  All of these involve a pen, the point is that you can get "
                            "funny results by doing pranks with pens.")
    assert first.rejected.startswith("There are lots of funny things you can do with pens")
    assert first.rejected.endswith("It’s really funny.")
    # row 1254: the chosen transcript continues with a second Assistant turn, joined to the first
    row = next(p for p in pairs if p.id.endswith(":1254"))
    assert [m["role"] for m in row.prompt] == ["user", "assistant", "user"]
    assert row.chosen.endswith("called drag kings if they don't perform stereotypical women?"
                               "\n\nI think they call them that because")


# --- the held-out split ----------------------------------------------------------------------


def recs(ids):
    return [Conversation(str(i), [U("q"), A("a")]) for i in ids]


def test_split_holdout_is_deterministic_and_stable_under_additions():
    records = recs(range(1000))
    train, held = split_holdout(records, 0.1, seed=3)
    assert (train, held) == split_holdout(records, 0.1, seed=3)
    assert len(train) + len(held) == 1000 and 60 < len(held) < 140
    assert {r.id for r in train}.isdisjoint(r.id for r in held)
    assert [r.id for r in train] == sorted((r.id for r in train), key=int)  # input order kept
    # adding rows leaves every earlier row on its side
    _, held_more = split_holdout(records + recs(range(1000, 1500)), 0.1, seed=3)
    assert [r.id for r in held_more if int(r.id) < 1000] == [r.id for r in held]
    # another seed, another split
    assert split_holdout(records, 0.1, seed=4)[1] != held


def test_split_holdout_edges():
    assert split_holdout(recs(range(5)), 0.0, 0) == (recs(range(5)), [])
    train, held = split_holdout(recs(range(2)), 0.01, 0)
    assert len(held) == 1 and len(train) == 1  # at least one held out
    train, held = split_holdout(recs(range(2)), 0.99, 0)
    assert len(held) == 1 and len(train) == 1  # and at least one trained on below 1
    assert split_holdout(recs(range(3)), 1.0, 0) == ([], recs(range(3)))
    assert split_holdout(recs(range(1)), 0.5, 0)[0] in ([], recs(range(1)))
    with pytest.raises(UserError, match="fraction"):
        split_holdout(recs(range(3)), 1.5, 0)


# --- synthetic tasks and write_jsonl ---------------------------------------------------------


def test_preference_task_rule():
    pairs = preference_task(300, seed=0)
    assert pairs == preference_task(300, seed=0) and pairs != preference_task(300, seed=1)
    assert len({p.id for p in pairs}) == 300
    for p in pairs:
        words = p.prompt[0]["content"].removeprefix("Reply to: ").split()
        chosen, rejected = p.chosen.split(), p.rejected.split()
        assert MARKER in chosen and MARKER not in rejected
        assert len(p.chosen) == len(p.rejected) and len(chosen) == len(rejected) == len(words) + 1
        at = chosen.index(MARKER)
        assert rejected[at] in NEUTRAL and chosen[:at] + chosen[at + 1:] == words == rejected[:at] + rejected[at + 1:]
    # the marker's position varies, so position alone is not the signal
    assert len({p.chosen.split().index(MARKER) for p in pairs}) >= 5


def test_sft_task():
    convs = sft_task(50, seed=2)
    assert convs == sft_task(50, seed=2)
    for c in convs:
        assert c.messages[1]["content"] == c.messages[0]["content"].removeprefix("Repeat: ")
    for c in sft_task(50, seed=2, reverse=True):
        words = c.messages[0]["content"].removeprefix("Reverse: ").split()
        assert c.messages[1]["content"] == " ".join(reversed(words))


@pytest.mark.parametrize("name", ["x.jsonl", "x.jsonl.gz"])
def test_synthetic_round_trip_through_write_jsonl(tmp_path, name):
    pairs = preference_task(40, seed=5)
    pairs[0].extra = {"source": "test"}
    write_jsonl(pairs, tmp_path / f"pairs-{name}")
    back, counts = read_preferences(tmp_path / f"pairs-{name}")
    assert back == pairs and counts.format == "pairs" and counts.kept == 40
    convs = sft_task(30, seed=5) + [Conversation("sys", [S("s"), U("q"), A("a"), U("q2"), A("a2")], {"k": [1]})]
    write_jsonl(convs, tmp_path / f"sft-{name}")
    back, counts = read_sft(tmp_path / f"sft-{name}")
    assert back == convs and counts.format == "messages"
    # the same records give the same bytes
    first = (tmp_path / f"sft-{name}").read_bytes()
    write_jsonl(convs, tmp_path / f"sft-{name}")
    assert (tmp_path / f"sft-{name}").read_bytes() == first
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"pairs-{name}", f"sft-{name}"])


def test_write_jsonl_refuses_mixed_records_and_other_suffixes(tmp_path):
    with pytest.raises(TypeError, match="one kind of record"):
        write_jsonl([*sft_task(1), *preference_task(1)], tmp_path / "m.jsonl")
    with pytest.raises(UserError, match=".jsonl or .jsonl.gz"):
        write_jsonl(sft_task(1), tmp_path / "m.json")
