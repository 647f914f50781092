"""The `decontaminate` corpus stage: the batch UDF drops exactly the documents that share a
13-gram with an eval item; in a data job it is counted in the funnel, audited in
contaminated/, fingerprinted with the eval files' bytes and resumed like the other corpus steps."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as pads
import pytest

from dataproc.config import DataJobConfig
from dataproc.corpus.decontaminate import DecontaminateOptions, build_index, mark_contaminated
from llmforge.common.config import validate_config
from llmforge.common.errors import UserError
from llmforge.ngram_overlap import words


def _eval_file(path: Path, questions: list[str]) -> Path:
    path.write_text("".join(json.dumps({"query": q, "choices": ["yes", "no"], "gold": 0}) + "\n" for q in questions))
    return path


def test_batch_udf_marks_exactly_the_planted_documents(tmp_path):
    from dataproc.synthetic.english import EnglishText

    gen = EnglishText(random.Random(0))
    questions = [" ".join(gen.sentence() for _ in range(2)) for _ in range(20)]
    task = _eval_file(tmp_path / "task.jsonl", questions)
    lines = tmp_path / "more.txt"  # a second file, plain text: one item per line
    lines.write_text("the quick brown fox jumps over the lazy dog near the old river bank\n")
    texts = [gen.paragraph() for _ in range(30)]
    texts[2] += " " + questions[5]
    texts[7] = questions[13].upper() + " " + texts[7]  # case and punctuation do not hide it
    texts[9] += " The Quick Brown Fox jumps over the lazy dog, near the old river bank."
    texts[12] += " " + " ".join(words(questions[6])[:12])  # 12 words: not a 13-gram
    texts[15] = ""  # an emptied (dropped) row
    opts = DecontaminateOptions(enabled=True, eval_files=[str(task), str(lines)])
    out = mark_contaminated(pa.table({"id": [f"d{i}" for i in range(30)], "text": texts}), build_index(opts))
    by = out.column("contaminated_by").to_pylist()
    assert {i for i, b in enumerate(by) if b} == {2, 7, 9}
    assert by[2] == f"{task}:6" and by[7] == f"{task}:14" and by[9] == f"{lines}:1"
    gram = out.column("contaminated_ngram").to_pylist()[9]
    assert gram.startswith("the quick brown fox") and len(gram.split()) == 13


def test_options_validate_and_bad_eval_files_are_named(tmp_path):
    assert DecontaminateOptions().enabled is False  # off by default
    with pytest.raises(ValueError, match="eval_files is empty"):
        DecontaminateOptions(enabled=True)
    with pytest.raises(ValueError, match="min_words 9 > ngram 8"):
        DecontaminateOptions(ngram=8, min_words=9)
    with pytest.raises(UserError, match="nope.jsonl: no such file"):
        build_index(DecontaminateOptions(enabled=True, eval_files=[str(tmp_path / "nope.jsonl")]))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "fine"}\n{"gold": 1}\n')
    with pytest.raises(UserError, match=r"bad\.jsonl:2: no text field"):
        build_index(DecontaminateOptions(enabled=True, eval_files=[str(bad)]))


def test_switching_the_stage_on_keeps_the_documents_fingerprint(tmp_path):
    """documents/ does not depend on decontaminate: turning it on reuses a finished one, and a
    job without it keeps the fingerprints outputs on disk record (tests/test_resume.py)."""
    from dataproc.corpus.runner import _keep_unique
    from dataproc.pipeline import output_fingerprint

    task = _eval_file(tmp_path / "t.jsonl", ["one two three four five six seven eight nine"])
    on = _config(tmp_path / "a.warc", tmp_path / "o", {"enabled": True, "eval_files": [str(task)], "ngram": 9})
    assert output_fingerprint(on) == output_fingerprint(_config(tmp_path / "a.warc", tmp_path / "o"))
    assert on.stages.corpus_enabled() == ["exact_dedup", "decontaminate", "domains"]
    t = pa.table({"id": ["a", "b", "c"], "duplicate_of": [None, "a", None], "rank_key": ["1", "2", "3"],
                  "contaminated_by": [None, None, "t.jsonl:1"], "contaminated_ngram": [None, None, "x"]})
    assert _keep_unique(t).to_pylist() == [{"id": "a"}]


def _read(path: Path) -> list[dict]:
    return pads.dataset(path, format="parquet", ignore_prefixes=["_", "."]).to_table().to_pylist()


def _config(warc: Path, out: Path, decontaminate: dict | None = None) -> DataJobConfig:
    # Exact dedup only (one shuffle; MinHash would triple the time on a small shared machine):
    # enough to show the stage after a dedup step, on its unique documents.
    stages = {"minhash_dedup": {"enabled": False}, **({"decontaminate": decontaminate} if decontaminate else {})}
    return validate_config(DataJobConfig, {"input": {"paths": [str(warc)]}, "output": {"path": str(out)},
                                           "stages": stages, "execution": {"dashboard": False}})


@pytest.mark.ray
def test_data_job_drops_the_planted_documents_counts_and_resumes(ray_local, tmp_path):
    """A job runs once without the stage; eval items are then cut from three of its curated
    documents (spans found in no other document). Rerun with decontaminate on, on the same
    output: documents/ and the dedup steps are reused, exactly those three are dropped."""
    from dataproc.pipeline import run_data_job
    from dataproc.synthetic.sample_warc import write_sample_warc

    warc = tmp_path / "s.warc.gz"
    write_sample_warc(warc, n_docs=60, seed=3, corrupt=False)
    out = tmp_path / "out"
    first = run_data_job(_config(warc, out), log=lambda *_: None)
    curated = {d["id"]: d["text"] for d in _read(out / "curated")}
    normalised = {i: " ".join(words(t)) for i, t in curated.items()}
    planted: dict[str, str] = {}
    for doc_id, text in sorted(curated.items()):
        ws = words(text)
        span = " ".join(ws[len(ws) // 2:len(ws) // 2 + 20])
        if len(ws) >= 40 and sum(span in n for n in normalised.values()) == 1:
            planted[doc_id] = span
        if len(planted) == 3:
            break
    assert len(planted) == 3
    from dataproc.synthetic.english import EnglishText

    gen = EnglishText(random.Random(9))
    others = [" ".join(gen.sentence() for _ in range(2)) for _ in range(10)]
    task = _eval_file(tmp_path / "task.jsonl", others[:5] + list(planted.values()) + others[5:])
    options = {"enabled": True, "eval_files": [str(task)]}

    logs: list[str] = []
    second = run_data_job(_config(warc, out, options), log=logs.append)
    assert second.skipped == first.processed  # documents/ reused: the stage's options are not in _job.json
    assert sum("already done, skipped" in line for line in logs) == 2  # exact, duplicates
    kept = {d["id"] for d in _read(out / "curated")}
    assert kept == set(curated) - set(planted)
    removed = {r["id"]: r for r in _read(out / "contaminated")}
    assert set(removed) == set(planted)
    assert {r["contaminated_by"] for r in removed.values()} == {f"{task}:{row}" for row in (6, 7, 8)}
    stage = next(s for s in second.stats["stages"] if s["stage"] == "decontaminate")
    assert stage["dropped"] == {"eval_overlap": 3} and stage["in"] - stage["out"] == 3
    assert stage["in"] == len(curated) and second.stats["documents_out"] == len(curated) - 3
    names = [s["stage"] for s in second.stats["stages"]]
    assert names[-2:] == ["exact_dedup", "decontaminate"]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["seconds"]["decontaminate"] == stage["seconds"]

    logs.clear()
    again = run_data_job(_config(warc, out, options), log=logs.append)
    assert sum("already done, skipped" in line for line in logs) == 5  # + decontaminated, contaminated, curated
    assert again.stats["stages"] == second.stats["stages"]

    task.write_text(task.read_text().replace(json.dumps(list(planted.values())[0]), json.dumps(others[0])))
    logs.clear()
    edited = run_data_job(_config(warc, out, options), log=logs.append)  # other eval bytes: the step is redone
    assert sum("already done, skipped" in line for line in logs) == 2
    assert next(s for s in edited.stats["stages"] if s["stage"] == "decontaminate")["dropped"] == {"eval_overlap": 2}
    assert {d["id"] for d in _read(out / "curated")} == set(curated) - set(list(planted)[1:])
