"""Batched generation (training.batch_generate): the Ray Data pipeline and the in-process function
against `training.generate.generate` called row by row, prompt files checked before any work,
finished outputs reused, and `llmforge generate` end to end. One Ray pipeline run in all."""
from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
import torch

from llmforge.cli import main
from llmforge.common.errors import UserError
from tests.support.tiny_checkpoint import tiny_checkpoint
from training.batch_generate import GenerateOptions, Generator, encode_prompt, generate_texts, run_generate
from training.generate import SamplingParams, _choose, _uniforms, generate

MAX_NEW = 8
LONG = " ".join(["the river runs past the old mill and the town"] * 12)  # > 64 tokens: too long
PROMPTS = ["the old town", "a river", LONG, "where does the road go after the hill and the long bridge", "mill"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("gen") / "ckpt")


def alone(model, tok, prompt, params: SamplingParams, options=GenerateOptions()):
    ids = encode_prompt(tok, prompt, options)
    return generate(model, [ids], params.model_copy(update={"stop_token_ids": [tok.end_id]}))[0], len(ids)


def test_in_process_batches_decode_each_prompt_as_if_alone(tiny):
    _, model, tok = tiny
    options = GenerateOptions(sampling=SamplingParams(temperature=0.0, max_new_tokens=MAX_NEW), batch_size=2)
    prompts = [*PROMPTS, [{"role": "system", "content": "be brief"}, {"role": "user", "content": "the mill"}]]
    rows = generate_texts(model, tok, prompts, options)
    assert len(rows) == len(prompts)
    for prompt, row in zip(prompts, rows):
        if prompt is LONG:
            assert row["finish_reason"] == "prompt_too_long" and row["completion_ids"] == []
            assert row["completion"] == "" and row["completion_tokens"] == 0 and row["prompt_tokens"] > 64
            continue
        want, n_prompt = alone(model, tok, prompt, options.sampling)
        assert row["completion_ids"] == want.tokens and row["finish_reason"] == want.finish_reason
        assert row["logprobs"] == pytest.approx(want.logprobs, abs=1e-5)
        assert row["completion"] == tok.decode(want.tokens)
        assert (row["prompt_tokens"], row["completion_tokens"]) == (n_prompt, len(want.tokens))
    # A system prompt goes before plain-string prompts only.
    with_system = GenerateOptions(system="be brief")
    assert encode_prompt(tok, "the mill", with_system) == encode_prompt(tok, prompts[-1], GenerateOptions())
    # Without the template: plain text after <|endoftext|>, as complete_texts does.
    plain = encode_prompt(tok, "the mill", GenerateOptions(chat_template=False))
    assert plain == [tok.end_id] + tok.tokenizer.encode("the mill", add_special_tokens=False).ids
    with pytest.raises(UserError, match="needs the chat template"):
        encode_prompt(tok, prompts[-1], GenerateOptions(chat_template=False))


def test_a_row_samples_the_same_whatever_its_batch(tiny):
    _, model, tok = tiny
    options = GenerateOptions(sampling=SamplingParams(temperature=1.0, max_new_tokens=MAX_NEW, seed=3), batch_size=4)
    prompts = ["the old town", "a river", "mill", "the old town"]
    together = generate_texts(model, tok, prompts, options, keys=[10, 11, 12, 13])
    for i, prompt in enumerate(prompts):
        [single] = generate_texts(model, tok, [prompt], options, keys=[10 + i])
        assert single["completion_ids"] == together[i]["completion_ids"]
        assert single["logprobs"] == pytest.approx(together[i]["logprobs"], abs=1e-5)
    assert together[0]["completion_ids"] != together[3]["completion_ids"]  # same prompt, other key
    reseeded = generate_texts(model, tok, prompts, options.model_copy(update={"sampling": options.sampling.model_copy(
        update={"seed": 4})}), keys=[10, 11, 12, 13])
    assert [r["completion_ids"] for r in reseeded] != [r["completion_ids"] for r in together]


def test_per_row_noise_samples_the_renormalised_distribution():
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0, 0.5])
    n = 20000
    noise = _uniforms(torch.arange(n), 3)
    for params, probs in ((SamplingParams(temperature=1.0), torch.softmax(logits, -1)),
                          (SamplingParams(temperature=0.5, top_k=2), torch.softmax(logits[:2] / 0.5, -1))):
        token, logprob = _choose(logits.expand(n, 5), params, None, noise)
        freq = torch.bincount(token, minlength=5).double() / n
        assert freq[:len(probs)].tolist() == pytest.approx(probs.tolist(), abs=0.015)
        assert freq[len(probs):].sum() == 0
        assert torch.allclose(logprob, torch.log_softmax(logits / params.temperature, -1)[token])


def test_generator_takes_arrow_and_numpy_batches(tiny):
    import numpy as np
    import pyarrow as pa

    ckpt, model, tok = tiny
    options = GenerateOptions(sampling=SamplingParams(temperature=0.0, max_new_tokens=4))
    gen = Generator(str(ckpt), options)  # in process: what each actor does
    out = gen(pa.table({"prompt": ["a river", LONG], "id": [7, 8]}))
    assert out.column_names == ["prompt", "id", "completion", "completion_ids", "logprobs", "finish_reason",
                                "prompt_tokens", "completion_tokens"]
    assert out.column("finish_reason").to_pylist()[1] == "prompt_too_long"
    assert out.column("completion_ids")[0].as_py() == alone(model, tok, "a river", options.sampling)[0].tokens
    arrays = gen({"prompt": np.array(["a river", "mill"], dtype=object), "id": np.array([7, 8])})
    assert list(arrays["id"]) == [7, 8] and list(arrays["completion_ids"][0]) == out.column("completion_ids")[0].as_py()
    assert arrays["prompt_tokens"].dtype == np.int64


def _write(path, lines):
    path.write_text("".join((json.dumps(x) if not isinstance(x, str) else x) + "\n" for x in lines))
    return path


@pytest.mark.parametrize("lines, message", [
    ([{"prompt": "ok"}, {"text": "no prompt"}], ": line 2: no 'prompt' field"),
    ([{"prompt": "ok"}, "", "not json"], ": line 3: not valid JSON"),
    ([["a list"]], ": line 1: expected a JSON object per line"),
    ([{"prompt": [{"role": "robot", "content": "hi"}]}], ": line 1: message 0 has unknown role 'robot'"),
    ([{"prompt": 5}], ": line 1: 'prompt' must be a string or a list of messages"),
    ([{"prompt": "ok", "completion": "a reference"}], ": line 1: field 'completion' is an output column"),
    ([{"prompt": "a", "id": 1}, {"prompt": "b", "id": "two"}], "field 'id' has values of different types"),
    ([], "no prompts"),
])
def test_a_bad_prompt_file_fails_before_any_model_work(tmp_path, lines, message):
    prompts = _write(tmp_path / "p.jsonl", lines)
    with pytest.raises(UserError, match=message) as err:
        run_generate(str(tmp_path / "no-model-here"), str(prompts), str(tmp_path / "out"))
    assert str(prompts) in str(err.value)
    assert not (tmp_path / "out").exists()


def test_help_shows_the_options_defaults():
    from llmforge.cli._args import default_from

    for field in ("batch_size", "concurrency", "device"):
        assert default_from(f"training.batch_generate:GenerateOptions.{field}") == \
            f"default: {getattr(GenerateOptions(), field)}"


def test_cli_errors_name_the_flag_or_file(tiny, tmp_path, capsys):
    ckpt, _, _ = tiny
    prompts = _write(tmp_path / "p.jsonl", [{"prompt": "ok"}, {"text": "none"}])
    base = ["generate", "--model", str(ckpt), "--data", str(prompts), "--output", str(tmp_path / "out")]
    assert main([*base, "--temperature", "-1"]) == 2
    assert "sampling.temperature (from --temperature -1.0): Input should be greater than or equal to 0" in \
        capsys.readouterr().err
    cfg = tmp_path / "g.yaml"
    cfg.write_text("batch_size: 0\nsampling: {top_k: 5}\n")
    assert main([*base, "--config", str(cfg), "--set", "sampling.max_new_tokens=0"]) == 2
    err = capsys.readouterr().err
    assert f"invalid config {cfg} with command-line overrides" in err and "batch_size: Input should be greater" in err
    assert "sampling.max_new_tokens (from --set sampling.max_new_tokens=0)" in err
    assert main(base) == 2
    assert f"{prompts}: line 2: no 'prompt' field" in capsys.readouterr().err
    assert main([*base[:4], str(tmp_path / "missing.jsonl"), *base[5:]]) == 2
    assert "--data" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_llmforge_generate_end_to_end_on_ray(ray_local, tiny, tmp_path, capsys):
    """The one Ray run: greedy outputs equal `generate` row by row, in the file's order, with the
    other fields carried through; a rerun reuses them, other options are refused."""
    ckpt, model, tok = tiny
    prompts = _write(tmp_path / "prompts.jsonl", [{"prompt": p, "id": f"q{i}", "n": i} for i, p in enumerate(PROMPTS)])
    out = tmp_path / "out"
    argv = ["generate", "--model", str(ckpt), "--data", str(prompts), "--output", str(out), "--temperature", "0",
            "--max-new-tokens", str(MAX_NEW), "--batch-size", "1", "--concurrency", "2", "--set", "sort_window=2"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"generated for {len(PROMPTS)} prompts -> {out}") and "prompt_too_long 1" in printed

    results = json.loads((out / "results.json").read_text())
    table = pq.ParquetDataset([str(out / f) for f in results["files"]]).read()
    assert table.column_names == ["prompt_index", "prompt", "id", "n", "completion", "completion_ids", "logprobs",
                                  "finish_reason", "prompt_tokens", "completion_tokens"]
    rows = table.to_pylist()
    assert [r["id"] for r in rows] == [f"q{i}" for i in range(len(PROMPTS))]  # the file's order
    assert [r["prompt_index"] for r in rows] == list(range(len(PROMPTS)))
    params = SamplingParams(temperature=0.0, max_new_tokens=MAX_NEW)
    for prompt, row in zip(PROMPTS, rows):
        assert row["prompt"] == prompt
        if prompt is LONG:
            assert (row["finish_reason"], row["completion"], row["completion_ids"]) == ("prompt_too_long", "", [])
            continue
        want, n_prompt = alone(model, tok, prompt, params)
        assert row["completion_ids"] == want.tokens and row["finish_reason"] == want.finish_reason
        assert row["logprobs"] == pytest.approx(want.logprobs, abs=1e-5)
        assert row["prompt_tokens"] == n_prompt and row["completion_tokens"] == len(want.tokens)
    assert results["rows"] == len(PROMPTS) and results["finish_reasons"]["prompt_too_long"] == 1
    assert sum(results["finish_reasons"].values()) == len(PROMPTS)
    assert results["completion_tokens"] == sum(r["completion_tokens"] for r in rows)
    assert results["completion_tokens_per_second"] > 0 and results["model"] == str(ckpt)
    assert results["options"]["sampling"]["temperature"] == 0.0 and results["options"]["concurrency"] == 2

    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    assert main([*argv[:-4], "--concurrency", "1"]) == 0  # resources are not part of what was made
    assert capsys.readouterr().out.startswith("reused finished generations")
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == stamps
    assert main([*argv, "--max-new-tokens", "4"]) == 2
    err = capsys.readouterr().err
    assert f"--output {out} holds generations made from another" in err and "--overwrite" in err
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == stamps
