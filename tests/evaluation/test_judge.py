"""evaluation.judge: both orders cancel position bias, the length-controlled rate sees through a
judge that only likes long answers, an HTTP judge against a stub server on 127.0.0.1 (parsing,
retries, then a UserError naming the URL), local reward-model and LM judges, answers files, and
`llmforge eval judge` end to end (its output read back by `llmforge eval report`)."""
from __future__ import annotations

import json
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from evaluation.judge import (FunctionJudge, Verdict, judge_items, make_judge, pair_answers, parse_choice,
                              read_answers)
from llmforge.cli import main
from llmforge.common.errors import UserError

LENGTH_TOLERANCE = 0.1  # |LC win rate - 0.5| for a judge that only looks at length


def length_items(n=200, seed=0):
    """Model a's answers are longer than the baseline's on ~85% of the prompts."""
    rng = np.random.default_rng(seed)
    len_b = rng.integers(40, 200, n)
    len_a = len_b + rng.integers(-50, 300, n)
    return [{"prompt": f"question {i}", "answer_a": "x" * int(a), "answer_b": "y" * int(b)}
            for i, (a, b) in enumerate(zip(len_a, len_b))]


def longer(prompt, first, second):
    return "A" if len(first) > len(second) else "B" if len(second) > len(first) else "tie"


def test_a_judge_that_likes_length_wins_raw_but_not_length_controlled():
    rows, record = judge_items(FunctionJudge(longer, "longer"), length_items())
    r = record["results"]["judge"]
    assert r["win_rate"] > 0.8  # raw: far from 50%
    assert abs(r["lc_win_rate"] - 0.5) < LENGTH_TOLERANCE  # length-controlled: about 50%
    assert abs(r["lc_win_rate"] - 0.5) < 2.5 * r["lc_win_rate_stderr"]
    assert record["glm"]["coefficients"]["phi"] > 3  # the length term explains the verdicts
    assert r["position_consistency"] + r["tie_rate"] == 1.0 and record["counts"]["invalid"] == 0  # ties: equal lengths
    assert all(row["verdict_a_first"] != row["verdict_b_first"] or row["len_a"] == row["len_b"] for row in rows)


def test_a_position_biased_judge_scores_fifty_percent():
    items = [{"prompt": f"q{i}", "answer_a": "good " * (i % 5 + 1), "answer_b": "bad"} for i in range(40)]
    rows, record = judge_items(FunctionJudge(lambda p, a, b: "A", "always-A"), items)
    r = record["results"]["judge"]
    assert r["win_rate"] == 0.5 and r["win_rate_stderr"] == 0.0 and r["lc_win_rate"] == pytest.approx(0.5)
    assert r["tie_rate"] == 1.0 and r["position_consistency"] == 0.0
    assert record["counts"] == {"items": 40, "wins": 0, "losses": 0, "ties": 40, "invalid": 0}
    assert {(row["verdict_a_first"], row["verdict_b_first"]) for row in rows} == {("A", "A")}
    # A judge that reads the answers: every item won, in both orders.
    _, record = judge_items(FunctionJudge(lambda p, a, b: "A" if "good" in a else "B"), items)
    assert record["results"]["judge"]["win_rate"] == 1.0 and record["counts"]["wins"] == 40


def test_unreadable_verdicts_are_left_out_not_lost():
    items = [{"prompt": f"q{i}", "answer_a": "a", "answer_b": "b"} for i in range(4)]
    _, record = judge_items(FunctionJudge(lambda p, a, b: Verdict(None if p == "q0" else "A", raw="?")), items)
    assert record["counts"]["invalid"] == 1 and record["n"] == 3
    with pytest.raises(UserError, match="no verdict could be read"):
        judge_items(FunctionJudge(lambda p, a, b: "maybe"), items)


@pytest.mark.parametrize("reply, choice", [
    ("A", "A"), (" B.", "B"), ("(A)", "A"), ("[[B]]", "B"), ("My verdict: [[A]]", "A"),
    ("The better answer is B because it is right.", "B"), ("Answer: A", "A"), ("B is better", "B"),
    ("A or B, hard to say", None), ("Neither", None), ("", None), (None, None),
])
def test_parse_choice(reply, choice):
    assert parse_choice(reply) == choice


# ------------------------------------------------------------------------------ HTTP stub


class Stub:
    """A chat-completions stub on 127.0.0.1: answers the letter of the answer containing
    "good", after failing the first `fail` requests with `status`."""

    def __init__(self):
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.fail, self.status, self.logprobs, self.reject_logprobs = 0, 500, True, False
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.requests.append(body)
                stub.headers.append(dict(self.headers))
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"error": "not found"})
                if stub.fail > 0:
                    stub.fail -= 1
                    return self._send(stub.status, {"error": "busy"})
                if stub.reject_logprobs and body.get("logprobs"):
                    return self._send(400, {"error": "logprobs not supported"})
                text = body["messages"][-1]["content"]
                first = re.search(r"## Answer A\n(.*?)\n\n## Answer B", text, re.S).group(1)
                letter = "A" if "good" in first else "B"
                choice = {"index": 0, "message": {"role": "assistant", "content": f"The better answer is {letter}."}}
                if stub.logprobs and body.get("logprobs"):
                    other = "B" if letter == "A" else "A"
                    choice["logprobs"] = {"content": [{"token": "The", "logprob": -0.01, "top_logprobs": [
                        {"token": letter, "logprob": -0.2}, {"token": other, "logprob": -1.8}]}]}
                return self._send(200, {"id": "x", "object": "chat.completion", "choices": [choice]})

            def _send(self, code, obj):
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()


@pytest.fixture
def stub():
    s = Stub()
    yield s
    s.server.shutdown()
    s.server.server_close()


ITEMS = [{"prompt": "name a colour", "answer_a": "good: blue", "answer_b": "bad"},
         {"prompt": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "2+2?"}],
          "answer_a": "five", "answer_b": "good: 4"}]


def http_judge(url, **kw):
    judge = make_judge(f"http:{url}", model="judge-1", backoff=0.01, timeout=5, **kw)
    judge.sleeps = []
    judge.sleep = judge.sleeps.append  # no waiting in tests; the waits are recorded
    return judge


def test_http_judge_parses_replies_and_logprobs(stub, monkeypatch):
    monkeypatch.setenv("JUDGE_KEY", "sk-test")
    judge = http_judge(stub.url, api_key_env="JUDGE_KEY", concurrency=2)
    rows, record = judge_items(judge, ITEMS)
    assert [(r["verdict_a_first"], r["verdict_b_first"]) for r in rows] == [("A", "B"), ("B", "A")]
    assert [r["preference"] for r in rows] == [1.0, 0.0]
    p = 1 / (1 + np.exp(-1.6))  # softmax of the logprobs -0.2 vs -1.8
    assert rows[0]["p_first_a_first"] == pytest.approx(p) and rows[0]["p_first_b_first"] == pytest.approx(1 - p)
    assert rows[0]["raw_a_first"] == "The better answer is A."
    assert record["judge"]["url"] == stub.url + "/chat/completions" and record["judge"]["model"] == "judge-1"
    body = stub.requests[0]
    assert body["model"] == "judge-1" and body["temperature"] == 0 and body["logprobs"] is True
    assert all(h.get("Authorization") == "Bearer sk-test" for h in stub.headers)
    assert len(stub.requests) == 4 and judge.sleeps == []
    # A conversation prompt reaches the judge as its turns.
    texts = [b["messages"][-1]["content"] for b in stub.requests]
    assert any("System: be brief\n\nUser: 2+2?" in t for t in texts)


def test_http_judge_retries_server_errors_then_succeeds(stub):
    stub.fail, stub.status = 3, 500
    judge = http_judge(stub.url, retries=3)
    verdicts = judge.compare([("q", "good", "bad")])
    assert verdicts[0].winner == "A" and len(stub.requests) == 4
    assert judge.sleeps == [0.01, 0.02, 0.04]  # exponential backoff
    stub.fail, stub.status = 1, 429  # rate limited: retried too
    assert judge.compare([("q", "bad", "good")])[0].winner == "B"
    # A server that refuses logprobs is asked again without them.
    stub.reject_logprobs = True
    verdict = judge.compare([("q", "good", "bad")])[0]
    assert verdict.winner == "A" and verdict.p_first is None and "logprobs" not in stub.requests[-1]


def test_http_judge_gives_up_with_the_url(stub):
    stub.fail, stub.status = 10, 503
    judge = http_judge(stub.url, retries=2)
    with pytest.raises(UserError, match=re.escape(f"judge endpoint {stub.url}/chat/completions: no usable reply "
                                                  "after 3 attempts (last: HTTP 503")):
        judge.compare([("q", "good", "bad")])
    assert len(stub.requests) == 3 and judge.sleeps == [0.01, 0.02]
    # A client error is not retried, and an auth failure points at the key's variable.
    stub.fail, stub.status = 1, 401
    with pytest.raises(UserError, match=r"HTTP 401 .*JUDGE_KEY"):
        http_judge(stub.url, api_key_env="JUDGE_KEY").compare([("q", "good", "bad")])


def test_unreachable_endpoint_is_a_user_error_naming_the_url():
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    judge = http_judge(url, retries=2)
    with pytest.raises(UserError, match=re.escape(f"judge endpoint {url}: no usable reply after 3 attempts")):
        judge_items(judge, ITEMS)
    assert judge.sleeps == [0.01, 0.02]


def test_judge_specs():
    for spec in ("nothing", "foo:bar", "reward:"):
        with pytest.raises(UserError, match="--judge"):
            make_judge(spec)
    assert make_judge("https://api.example.com/v1/").url == "https://api.example.com/v1/chat/completions"
    with pytest.raises(UserError, match="no such file"):
        make_judge("reward:/no/such/model")


# ------------------------------------------------------------------------------ local judges


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A tiny causal LM and a tiny RewardModel sharing one tokenizer."""
    import torch

    from tests.support.tiny_checkpoint import tiny_checkpoint, write_checkpoint
    from training.model import ModelConfig, RewardModel

    root = tmp_path_factory.mktemp("judges")
    lm_dir, lm, tok = tiny_checkpoint(root / "lm")
    torch.manual_seed(1)
    rm = RewardModel(ModelConfig(preset="tiny", vocab_size=lm.cfg.vocab_size, max_seq_len=64, init_std=0.2)).eval()
    rm_dir = write_checkpoint(root / "rm", rm, root / "lm-tokenizer.json", kind="reward")
    return {"lm": lm_dir, "rm": rm_dir, "rm_model": rm, "tok": tok}


PAIRS = [("the old town", "the river runs past the mill", "a town"),
         ("where does the road go", "over the hill", "over the hill and the long bridge to the town"),
         ("mill", "x", "the mill")]


def test_reward_model_judge_prefers_the_higher_reward(checkpoints):
    import torch

    judge = make_judge(f"reward:{checkpoints['rm']}", batch_size=2)
    verdicts = judge.compare(PAIRS)
    tok, rm = checkpoints["tok"], checkpoints["rm_model"]
    for (prompt, first, second), v in zip(PAIRS, verdicts):
        rewards = []
        for answer in (first, second):
            ids = tok.encode([{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]).ids
            with torch.no_grad():
                rewards.append(float(rm(torch.tensor([ids]), torch.tensor([len(ids)]))))
        assert v.winner == ("A" if rewards[0] > rewards[1] else "B")
        assert v.p_first == pytest.approx(1 / (1 + np.exp(rewards[1] - rewards[0])), abs=1e-5)
    # Both orders mirror each other: a reward model has no position bias.
    items = [{"prompt": p, "answer_a": a, "answer_b": b} for p, a, b in PAIRS]
    rows, record = judge_items(judge, items)
    assert record["results"]["judge"]["position_consistency"] == 1.0
    assert [r["preference"] for r in rows] == [1.0 if v.winner == "A" else 0.0 for v in verdicts]
    with pytest.raises(UserError, match=r"a causal_lm model, not a reward \(use --judge lm:"):
        make_judge(f"reward:{checkpoints['lm']}")


def test_lm_judge_scores_a_against_b(checkpoints):
    from evaluation.judge import comparison_prompt
    from evaluation.scoring import loglikelihood

    judge = make_judge(f"lm:{checkpoints['lm']}")
    verdicts = judge.compare(PAIRS[:2])
    tok = checkpoints["tok"]
    for (prompt, first, second), v in zip(PAIRS, verdicts):
        ctx = tok.prompt_ids([{"role": "user", "content": comparison_prompt(prompt, first, second)}])
        a, b = (s.logprob for s in loglikelihood(judge.model, [(ctx, tok.tokenizer.encode(x, add_special_tokens=False).ids) for x in "AB"]))
        assert v.winner == ("A" if a > b else "B") and v.p_first == pytest.approx(1 / (1 + np.exp(b - a)))
    with pytest.raises(UserError, match=r"a reward model, not a causal_lm \(use --judge reward:"):
        make_judge(f"lm:{checkpoints['rm']}")


# ------------------------------------------------------------------------------ answers and the CLI


def test_answers_files_pair_by_prompt(tmp_path):
    a = tmp_path / "a.jsonl"
    a.write_text("\n".join(json.dumps(r) for r in [{"prompt": "p1", "completion": "a1"},
                                                  {"prompt": "p2", "completion": "a2"},
                                                  {"prompt": "p1", "completion": "a1 again"}]) + "\n")
    b = tmp_path / "b.parquet"  # AlpacaEval's column names, another order
    pq.write_table(pa.table({"instruction": ["p2", "p1", "p1"], "output": ["b2", "b1", "b1 again"]}), b)
    items = pair_answers(read_answers(str(a)), read_answers(str(b)))
    assert [(i["prompt"], i["answer_a"], i["answer_b"]) for i in items] == \
        [("p1", "a1", "b1"), ("p2", "a2", "b2"), ("p1", "a1 again", "b1 again")]
    # A prompt only one side answered, a row without an answer: the file and row are named.
    c = tmp_path / "c.jsonl"
    c.write_text(json.dumps({"prompt": "p1", "completion": "x"}) + "\n" + json.dumps({"prompt": "p3"}) + "\n")
    with pytest.raises(UserError, match=re.escape(f"--answers {c}: line 2: no completion/output/answer/response")):
        read_answers(str(c))
    c.write_text(json.dumps({"prompt": "p1", "completion": "x"}) + "\n")
    with pytest.raises(UserError, match="--answers-a: no answer to prompt 'p2'"):
        pair_answers(read_answers(str(c)), read_answers(str(b)))
    with pytest.raises(UserError, match="--answers-b: no answer to prompt 'p2'"):
        pair_answers(read_answers(str(a)), read_answers(str(c)))


def test_eval_judge_cli_writes_results_and_items(checkpoints, tmp_path, capsys):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("".join(json.dumps({"prompt": p, "completion": x}) + "\n" for p, x, _ in PAIRS))
    b.write_text("".join(json.dumps({"prompt": p, "completion": y}) + "\n" for p, _, y in PAIRS))
    out = tmp_path / "judged"
    assert main(["eval", "judge", "--answers-a", str(a), "--answers-b", str(b), "--judge",
                 f"reward:{checkpoints['rm']}", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "LC win rate" in printed and "3 items" in printed
    results = json.loads((out / "results.json").read_text())
    task = results["results"]["judge"]
    assert set(task) == {"win_rate", "win_rate_stderr", "lc_win_rate", "lc_win_rate_stderr", "tie_rate",
                         "position_consistency"}
    assert results["n"] == 3 and results["counts"]["items"] == 3
    assert results["model"] == str(a) and results["baseline"] == str(b)
    assert results["judge"]["spec"] == f"reward:{checkpoints['rm']}"
    items = pq.read_table(out / "items.parquet").to_pylist()
    assert [i["answer_a"] for i in items] == [x for _, x, _ in PAIRS]
    assert all(i["verdict_a_first"] in ("A", "B") and i["preference"] in (0.0, 1.0) for i in items)
    # The report reads it like any other evaluation output.
    assert main(["eval", "report", "--runs", str(out), "--output", str(tmp_path / "report")]) == 0
    assert "| lc_win_rate |" in (tmp_path / "report" / "report.md").read_text()
    # Bad input: the flag and the file are named, exit 2.
    assert main(["eval", "judge", "--answers-a", str(a), "--judge", "lm:x", "--output", str(out)]) == 2
    assert "give both --answers-a and --answers-b" in capsys.readouterr().err
    assert main(["eval", "judge", "--answers-a", str(a), "--answers-b", str(tmp_path / "nope.jsonl"),
                 "--judge", "lm:x", "--output", str(out)]) == 2
    assert "nope.jsonl: no such file" in capsys.readouterr().err



def test_eval_judge_generates_the_answers(checkpoints, tmp_path, capsys, monkeypatch):
    """--model-a/--model-b/--prompts: answers made by `training.batch_generate.run_generate`
    into OUTPUT/answers_a and answers_b. Here run_generate is stood in for by its in-process
    core, `generate_texts`, writing the same layout (generations/*.parquet + results.json), so
    no Ray starts; run_generate on Ray is tested in tests/training/test_batch_generate.py.
    A model against itself: identical answers, every item a tie."""
    import training.batch_generate as bg
    from training.sources import load_for_inference

    calls = []

    def in_process(model_path, prompts_path, output_dir, options, overwrite=False):
        calls.append((model_path, output_dir, options))
        table, _ = bg.read_prompts(prompts_path, options)
        model, tok = load_for_inference(model_path)
        rows = bg.generate_texts(model, tok, table.column("prompt").to_pylist(), options)
        for name, type_ in bg.output_types().items():
            table = table.append_column(name, pa.array([r[name] for r in rows], type=type_))
        Path(output_dir, "generations").mkdir(parents=True)
        pq.write_table(table, f"{output_dir}/generations/part-00000.parquet")
        return {"made_from": {"weights": "w"}}

    monkeypatch.setattr(bg, "run_generate", in_process)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p, _, _ in PAIRS))
    out = tmp_path / "self"
    lm = str(checkpoints["lm"])
    assert main(["eval", "judge", "--model-a", lm, "--model-b", lm, "--prompts", str(prompts), "--judge",
                 f"reward:{checkpoints['rm']}", "--max-new-tokens", "6", "--temperature", "0",
                 "--output", str(out)]) == 0
    assert [c[1] for c in calls] == [str(out / "answers_a"), str(out / "answers_b")]
    assert calls[0][2].sampling.max_new_tokens == 6 and calls[0][2].sampling.temperature == 0
    results = json.loads((out / "results.json").read_text())
    assert results["results"]["judge"]["win_rate"] == 0.5 and results["counts"]["ties"] == 3
    assert results["source"]["model_a"] == lm and results["model"] == lm
    items = pq.read_table(out / "items.parquet").to_pylist()
    assert [i["prompt"] for i in items] == [p for p, _, _ in PAIRS]
    assert all(i["answer_a"] == i["answer_b"] for i in items)
    # A bad prompt file stops before any model work.
    prompts.write_text("{\"text\": 1}\n")
    assert main(["eval", "judge", "--model-a", lm, "--model-b", lm, "--prompts", str(prompts), "--judge",
                 f"reward:{checkpoints['rm']}", "--output", str(out)]) == 2
    assert "no 'prompt' field" in capsys.readouterr().err and len(calls) == 2
