"""Self-instruct (alignment.self_instruct): the numbered prompt and its parser, each of Alpaca's
filters, ROUGE-L against hand-computed values (and rouge_score when it is importable), near-duplicate
removal against the growing pool, the whole loop with a scripted generator (exact kept set and
drop counts; a killed run resumes to the same result), a real tiny model end to end in process
(plumbing: the file `read_sft` reads, counts that add up, reuse), and the CLI verb."""
from __future__ import annotations

import json
import random
from collections import Counter

import pytest

from alignment.formats import read_sft
from alignment.self_instruct import (DROP_REASONS, InstructionPool, SelfInstructConfig, encode_prompt,
                                     heuristic_drop, lcs_length, parse_response, read_seed_tasks, rouge_l,
                                     rouge_tokens, run_self_instruct, self_instruct)
from llmforge.cli import main
from llmforge.common.errors import UserError
from tests.conftest import shared_data
from training.batch_generate import GenerateOptions
from training.generate import SamplingParams

# Generated seed tasks with known content (the real 175 are in ../shared/data, tested when there).
SEEDS = [
    {"instruction": "Name the capital city of the given country.", "input": "France", "output": "Paris"},
    {"instruction": "Sort these numbers from smallest to largest.", "input": "3, 1, 2", "output": "1, 2, 3"},
    {"instruction": "Suggest a short title for a story about a lost dog.", "input": "", "output": "Finding Max"},
    {"instruction": "Translate the sentence into French:", "input": "Good morning", "output": "Bonjour"},
]


@pytest.fixture
def seed_file(tmp_path):
    path = tmp_path / "seeds.jsonl"
    rows = [{"id": f"seed_task_{i}", "name": f"task_{i}", "instruction": t["instruction"],
             "instances": [{"input": t["input"], "output": t["output"]}], "is_classification": False}
            for i, t in enumerate(SEEDS)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def block(n: int, instruction: str, input_: str = "<noinput>", output: str = "An answer.") -> str:
    return f"{n}. Instruction: {instruction}\n{n}. Input:\n{input_}\n{n}. Output:\n{output}\n"


# ------------------------------------------------------------------------------ prompt and parser


def test_the_prompt_is_alpacas_numbered_list():
    text = encode_prompt(SEEDS[2:4], preamble="PRE\n")
    assert text == ("PRE\n\n"
                    "###\n1. Instruction: Suggest a short title for a story about a lost dog.\n1. Input:\n<noinput>\n"
                    "1. Output:\nFinding Max\n"
                    "###\n2. Instruction: Translate the sentence into French\n2. Input:\nGood morning\n"
                    "2. Output:\nBonjour\n"
                    "###\n3. Instruction:")


def test_the_parser_reads_numbered_triples_and_counts_what_it_cannot():
    # The model continues after "3. Instruction:" (two examples were shown).
    reply = (" Explain why the sky is blue.\n3. Input:\n<noinput>\n3. Output:\nRayleigh scattering.\n###\n"
             + block(4, "Summarise the paragraph in one line.", "Cats sleep a lot. They like sun.", "Cats nap.")
             + "###\n" + block(6, "Wrong number here please.")      # expected 5: unparsed
             + "###\n5. Instruction: no fields at all\n"             # unparsed
             + "###\n" + block(7, "Count the vowels in the word.", "banana", "3")
             + "###\n\n")                                             # blank: no candidate
    tasks, drops = parse_response(reply, 2, "stop")
    assert tasks == [
        {"instruction": "Explain why the sky is blue.", "input": "", "output": "Rayleigh scattering."},
        {"instruction": "Summarise the paragraph in one line.", "input": "Cats sleep a lot. They like sun.",
         "output": "Cats nap."},
        {"instruction": "Count the vowels in the word.", "input": "banana", "output": "3"},
    ]
    assert drops == Counter(unparsed=2)
    # A reply cut by max_new_tokens loses its last piece, counted as truncated.
    tasks, drops = parse_response(reply.rstrip("#\n") + "\n###\n7. Instruction: Half a", 2, "length")
    assert len(tasks) == 3 and drops == Counter(unparsed=2, truncated=1)


@pytest.mark.parametrize("instruction, output, reason", [
    ("Explain the water cycle briefly.", "ok", None),
    ("Explain water cycle.", "ok", "too_short"),                              # 3 words
    ("Explain the water cycle.", "ok", None),                                 # 4 words
    (" ".join(["word"] * 150), "ok", None),
    (" ".join(["word"] * 151), "ok", "too_long"),
    ("Describe the image shown below.", "ok", "blacklisted"),
    ("Please go to the store for me.", "ok", "blacklisted"),                  # a phrase
    ("Summarise the FILES in this folder.", "ok", "blacklisted"),             # any case
    ("Describe the imagery of this poem.", "ok", None),                       # whole words only
    ("Write a program that adds two numbers.", "ok", "write_a_program"),
    ("\"Quote\" this sentence back to me.", "ok", "starts_with_punctuation"),
    ("Écris une phrase en français.", "ok", "non_ascii_start"),
    ("Explain the water cycle briefly.", "  \n", "empty_output"),
])
def test_each_heuristic_filter(instruction, output, reason):
    assert heuristic_drop({"instruction": instruction, "input": "", "output": output}) == reason


# ------------------------------------------------------------------------------ ROUGE-L


@pytest.mark.parametrize("a, b, expected", [
    ("the cat sat on the mat", "the cat is on the mat", 2 * 5 / 12),  # LCS: the cat on the mat
    ("Give three tips", "three tips give", 2 * 2 / 6),
    ("Hello, World!", "hello world", 1.0),                             # case and punctuation ignored
    ("a b c d e f g h i j", "a b c d e f g x y z", 0.7),               # LCS 7 of 10 + 10
    ("one two", "three four", 0.0),
    ("", "anything", 0.0),
])
def test_rouge_l_against_hand_computed_values(a, b, expected):
    assert rouge_l(a, b) == pytest.approx(expected, abs=1e-12)
    assert rouge_l(b, a) == pytest.approx(expected, abs=1e-12)


def _lcs_dp(a, b):
    row = [0] * (len(b) + 1)
    for x in a:
        prev = 0
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], prev + 1 if x == y else max(row[j], row[j - 1])
    return row[-1]


def test_bit_parallel_lcs_matches_dynamic_programming_and_rouge_score():
    rng = random.Random(0)
    pairs = [([rng.choice("abcde") for _ in range(rng.randint(0, 70))],
              [rng.choice("abcde") for _ in range(rng.randint(0, 70))]) for _ in range(300)]
    for a, b in pairs:
        assert lcs_length(a, b) == _lcs_dp(a, b)
    try:
        from rouge_score import rouge_scorer
    except ImportError:
        return
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    for a, b in pairs[:100]:
        ta, tb = " ".join(a), " ".join(b)
        assert rouge_l(ta, tb) == pytest.approx(scorer.score(tb, ta)["rougeL"].fmeasure, abs=1e-12)


def test_near_duplicates_against_the_pool():
    pool = InstructionPool(["a b c d e f g h i j", "Name the capital city of the given country."])
    assert pool.max_similarity("a b c d e f g x y z", 0.7) == pytest.approx(0.7)      # at the threshold
    assert pool.max_similarity("a b c d e f x y z w", 0.7) == pytest.approx(0.6)      # below: exact maximum
    assert pool.max_similarity("name the CAPITAL city of the given country!", 0.7) == 1.0
    assert pool.max_similarity("a b", 0.7) == 0.0                                     # bounded below, skipped
    assert pool.max_similarity("a b") == pytest.approx(2 * 2 / 12)                    # no threshold: exact
    pool.add("a b")
    assert pool.max_similarity("a b", 0.7) == 1.0


# ------------------------------------------------------------------------------ the loop


def scripted(replies):
    """A generate function answering request k with replies[k] (finish 'stop')."""
    calls = []

    def generate(prompts, keys):
        calls.append((list(prompts), list(keys)))
        return [{"completion": replies[k], "finish_reason": "stop"} for k in keys]

    return generate, calls


REPLIES = [
    # request 0: one good task, one too short, one near-copy of a seed
    " Explain why the sky is blue.\n3. Input:\n<noinput>\n3. Output:\nRayleigh scattering.\n###\n"
    + block(4, "Tip.") + "###\n" + block(5, "Name the capital city of the given country please."),
    # request 1: a near-copy of request 0's task (this round's pool), a blacklisted one, a good one
    " Explain why the sky looks blue.\n3. Input:\n<noinput>\n3. Output:\nScattering.\n###\n"
    + block(4, "Draw a picture of a cat.") + "###\n" + block(5, "List three uses of a paper clip.", output="Hold."),
    # request 2 (round 1): junk, a good task (the third: the target), then one too many
    " ???\n###\n" + block(4, "Classify the animal as mammal or bird.", "sparrow", "bird") + "###\n"
    + block(5, "Give an antonym of the given word.", "hot", "cold"),
    # request 3 (same round): a good task, but the target is reached
    " " + block(3, "Arrives after the target was reached in this round.")[len("3. Instruction: "):],
]


def test_the_loop_keeps_exactly_the_expected_tasks_and_counts_each_drop():
    config = SelfInstructConfig(num_instructions=3, num_prompt_instructions=2, request_batch_size=2, seed=1)
    generate, calls = scripted(REPLIES)
    state = self_instruct(generate, SEEDS, config)
    assert state["tasks"] == [
        {"instruction": "Explain why the sky is blue.", "input": "", "output": "Rayleigh scattering."},
        {"instruction": "List three uses of a paper clip.", "input": "", "output": "Hold."},
        {"instruction": "Classify the animal as mammal or bird.", "input": "sparrow", "output": "bird"},
    ]
    dropped = {k: v for k, v in state["dropped"].items() if v}
    assert dropped == {"unparsed": 1, "too_short": 1, "blacklisted": 1, "similar": 2, "surplus": 2}
    assert state["candidates"] == 3 + sum(dropped.values()) == 10
    assert state["rounds"] == 2 and state["requests"] == {"sent": 4, "prompt_too_long": 0, "stop": 4, "length": 0}
    assert [keys for _, keys in calls] == [[0, 1], [2, 3]]
    # Each prompt shows two seed tasks, numbered, drawn reproducibly from (seed, round).
    for prompt in calls[0][0] + calls[1][0]:
        assert prompt.startswith(config.preamble) and prompt.endswith("###\n3. Instruction:")
        assert sum(t["instruction"].rstrip(":") in prompt for t in SEEDS) == 2
    again, calls_again = scripted(REPLIES)
    assert self_instruct(again, SEEDS, config) == state and calls_again == calls


def test_a_killed_run_resumes_to_the_same_result():
    config = SelfInstructConfig(num_instructions=3, num_prompt_instructions=2, request_batch_size=2, seed=1)
    whole = self_instruct(scripted(REPLIES)[0], SEEDS, config)
    saved = []

    def killed_after_first_round(state):
        saved.append(json.loads(json.dumps(state)))
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        self_instruct(scripted(REPLIES)[0], SEEDS, config, on_round=killed_after_first_round)
    generate, calls = scripted(REPLIES)
    assert self_instruct(generate, SEEDS, config, state=saved[0]) == whole
    assert [keys for _, keys in calls] == [[2, 3]]  # only the second round ran again


def test_a_model_that_writes_junk_stops_at_max_requests():
    config = SelfInstructConfig(num_instructions=5, num_prompt_instructions=2, request_batch_size=2, max_requests=5)
    state = self_instruct(scripted(["junk"] * 10)[0], SEEDS, config)
    assert state["tasks"] == [] and state["requests"]["sent"] == 5 and state["rounds"] == 3
    assert state["dropped"]["unparsed"] == 5 == state["candidates"]


# ------------------------------------------------------------------------------ files, model, CLI


def test_seed_tasks_of_stanford_alpaca():
    path = shared_data("preference_sft", "stanford_alpaca_seed_tasks.jsonl")
    tasks, sha = read_seed_tasks(str(path))
    assert len(tasks) == 175 and len(sha) == 64
    assert tasks[1] == {"instruction": "What is the relation between the given pairs?",
                        "input": "Night : Day :: Right : Left",
                        "output": "The relation between the given pairs is that they are opposites."}
    # Run through the filters as if machine-made: two seeds are near-copies of earlier ones
    # (ROUGE-L 14/17 and 3/4), and four fail Alpaca's own heuristics.
    pool, similar = InstructionPool(), []
    for i, t in enumerate(tasks):
        score = pool.max_similarity(t["instruction"])
        if score >= 0.7:
            similar.append((i, round(score, 4)))
        pool.add(t["instruction"])
    assert similar == [(74, round(14 / 17, 4)), (113, 0.75)]
    assert Counter(heuristic_drop(t) for t in tasks) == {None: 171, "too_short": 2, "write_a_program": 1,
                                                          "blacklisted": 1}


def test_bad_seed_files_are_user_errors(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"instruction": "Do a thing for me now.", "instances": []}) + "\n")
    with pytest.raises(UserError, match="line 1: 'instances' must be a non-empty list"):
        read_seed_tasks(str(bad))
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(UserError, match="no tasks"):
        read_seed_tasks(str(tmp_path / "empty.jsonl"))


@pytest.fixture(scope="module")
def tiny_long(tmp_path_factory):
    """A random tiny model with room for a prompt of a few seed tasks (and one without)."""
    from tests.support.tiny_checkpoint import tiny_checkpoint

    root = tmp_path_factory.mktemp("si")
    return tiny_checkpoint(root / "long", max_seq_len=256)[0], tiny_checkpoint(root / "short", max_seq_len=64)[0]


def small_config(seed_file, **kw):
    gen = GenerateOptions(sampling=SamplingParams(temperature=1.0, max_new_tokens=12), chat_template=False)
    return SelfInstructConfig(seed_tasks=str(seed_file), num_instructions=2, num_prompt_instructions=2,
                              request_batch_size=2, max_requests=4, preamble="Tasks:\n", generation=gen,
                              ray=False, **kw)


def test_run_writes_alpaca_json_that_sft_reads_and_reuses_it(tiny_long, seed_file, tmp_path):
    model = tiny_long[0]
    out = tmp_path / "out"
    config = small_config(seed_file)
    record = run_self_instruct(str(model), str(out), config, generate=scripted(REPLIES)[0])
    assert record["kept"] == 2 and record["complete"] and not record["reused"]
    conversations, counts = read_sft(out / "instructions.json")
    assert counts.format == "alpaca" and counts.kept == 2
    assert [c.messages for c in conversations] == [
        [{"role": "user", "content": "Explain why the sky is blue."},
         {"role": "assistant", "content": "Rayleigh scattering."}],
        [{"role": "user", "content": "List three uses of a paper clip."}, {"role": "assistant", "content": "Hold."}]]
    results = json.loads((out / "results.json").read_text())
    assert results["candidates"] == results["kept"] + sum(results["dropped"].values())
    assert sorted(results["dropped"]) == sorted(DROP_REASONS) and not (out / "progress.json").exists()
    # Same inputs: reused without generating; other options: refused unless --overwrite.
    assert run_self_instruct(str(model), str(out), config, generate=None)["reused"]
    other = small_config(seed_file, seed=5)
    with pytest.raises(UserError, match="--overwrite"):
        run_self_instruct(str(model), str(out), other, generate=scripted(REPLIES)[0])
    assert not run_self_instruct(str(model), str(out), other, overwrite=True,
                                 generate=scripted(REPLIES)[0])["reused"]


def test_a_real_tiny_model_end_to_end_in_process(tiny_long, seed_file, tmp_path, capsys):
    long_model, short_model = tiny_long
    out = tmp_path / "real"
    argv = ["align", "self-instruct", "--model", str(long_model), "--seed-tasks", str(seed_file), "--output", str(out),
            "--num-instructions", "2", "--max-new-tokens", "12", "--in-process", "--set", "request_batch_size=2",
            "--set", "max_requests=4", "--set", "num_prompt_instructions=2", "--set", "preamble='Tasks:'"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "self-instruct:" in printed and f"-> {out}/instructions.json" in printed
    results = json.loads((out / "results.json").read_text())
    # A random model writes junk: the plumbing is what is checked; every candidate is accounted for.
    assert results["requests"]["sent"] == 4 and results["requests"]["prompt_too_long"] == 0
    assert results["requests"]["stop"] + results["requests"]["length"] == 4
    assert results["candidates"] == results["kept"] + sum(results["dropped"].values()) >= 4
    assert read_sft(out / "instructions.json")[1].kept == results["kept"]
    assert main(argv) == 0 and "reused finished self-instruct data" in capsys.readouterr().out
    # Prompts that cannot fit the context: a clear error, not an empty dataset.
    assert main([*argv[:3], str(short_model), *argv[4:7], str(tmp_path / "short"), *argv[8:]]) == 2
    assert "too long for the model's context" in capsys.readouterr().err
    # No seed tasks named anywhere.
    assert main(["align", "self-instruct", "--model", str(long_model), "--output", str(tmp_path / "x")]) == 2
    assert "--seed-tasks" in capsys.readouterr().err


def test_the_help_states_the_defaults_that_apply():
    from evaluation.ai_feedback import LabelConfig
    from llmforge.cli.align_synth import LABEL_FLAGS, SELF_INSTRUCT_FLAGS

    for flags, cfg in ((SELF_INSTRUCT_FLAGS, SelfInstructConfig()), (LABEL_FLAGS, LabelConfig())):
        sampling = cfg.generation.sampling
        assert f"(default: {sampling.temperature})" in flags["--temperature"][2]
        assert f"(default: {sampling.max_new_tokens})" in flags["--max-new-tokens"][2]
        assert f"(default: {cfg.generation.device})" in flags["--device"][2]
