"""The data job end to end on a real local Ray: ground truth, resume after SIGKILL, real WARCs."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psutil
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from dataproc.config import DataJobConfig
from dataproc.pipeline import run_data_job
from dataproc.reading.inputs import source_key
from dataproc.synthetic.sample_warc import write_sample_warc
from tests.support.warc_scan import scan_record_types
from llmforge.common.config import validate_config
from tests.conftest import shared_data

pytestmark = pytest.mark.ray

# Where each planted kind must end up with the default (FineWeb) stages; "kept" means written.
EXPECTED_FATE = {
    "article": "kept",
    "exact_dup": "kept",  # dedup is a later stage
    "near_dup": "kept",
    "pii": "kept",
    "undecodable": "kept",
    "warc018_bad_date": "kept",
    "blocked_url": "url_filter:blocked_domain",
    "non_english": "language:",
    "charset": "language:",
    "bogus_charset": "language:",
    "boilerplate": "dropped",
    "spam": "dropped",
}


# The per-document half only; the corpus stages have their own tests (test_corpus.py).
FIRST_HALF = {name: {"enabled": False} for name in ("exact_dedup", "minhash_dedup", "domains")}


def _config(warc_dir: Path, out: Path, blocklist: Path | None = None, **execution) -> DataJobConfig:
    stages = dict(FIRST_HALF)
    if blocklist:
        stages["url_filter"] = {"blocklist_paths": [str(blocklist)]}
    return validate_config(
        DataJobConfig,
        {
            "input": {"paths": [str(warc_dir)]},
            "output": {"path": str(out), "write_dropped": True},
            "stages": stages,
            "execution": {"docs_per_block": 40, **execution},
        },
    )


def _documents(out: Path) -> list[dict]:
    return pads.dataset(out / "documents", format="parquet").to_table().to_pylist()


def _dropped(out: Path) -> dict[str, str]:
    reasons = {}
    for path in (out / "documents").glob("*/_dropped/*.parquet"):
        for row in pq.read_table(path).to_pylist():
            reasons[row["id"]] = row["drop_reason"]
    return reasons


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """Two generated WARC files (one gzip per record, one plain) with corrupt records."""
    root = tmp_path_factory.mktemp("sample")
    warcs = root / "warc"
    warcs.mkdir()
    truths = [
        write_sample_warc(warcs / "a.warc.gz", n_docs=120, seed=1),
        write_sample_warc(warcs / "b.warc", n_docs=80, seed=2, gzip_per_record=False),
    ]
    blocklist = root / "blocklist.txt"
    blocklist.write_text("\n".join(sorted({d for t in truths for d in t.blocked_domains})) + "\n")
    return warcs, truths, blocklist


@pytest.fixture(scope="module")
def sample_run(sample, ray_local, tmp_path_factory):
    warcs, truths, blocklist = sample
    out = tmp_path_factory.mktemp("run") / "out"
    result = run_data_job(_config(warcs, out, blocklist), log=lambda *_: None)
    return out, result


def test_every_planted_document_meets_its_fate(sample, sample_run):
    _, truths, _ = sample
    out, result = sample_run
    kept = {d["id"]: d for d in _documents(out)}
    dropped = _dropped(out)
    seen_kinds = set()
    for truth in truths:
        for doc in truth.docs:
            rid = doc.record_id.strip("<>")
            if doc.expect != "kept":  # never an HTML 200 response: the reader skips it
                assert rid not in kept and rid not in dropped, doc.kind
                continue
            want = EXPECTED_FATE[doc.kind]
            fate = "kept" if rid in kept else dropped.get(rid, "missing")
            seen_kinds.add(doc.kind)
            if want == "dropped":
                assert fate not in ("kept", "missing"), (doc.kind, doc.url)
            else:
                assert fate.startswith(want), (doc.kind, doc.url, fate)
    assert seen_kinds == set(EXPECTED_FATE)


def test_reader_counts_and_funnel_add_up(sample, sample_run):
    _, truths, _ = sample
    out, result = sample_run
    stats = json.loads((out / "stats.json").read_text())
    assert stats["documents_out"] == result.stats["documents_out"]
    assert (out / "funnel.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    want = Counter()
    for t in truths:
        want.update(t.expected_counts)
    for key, n in want.items():
        if not key.startswith("bytes"):
            assert stats["warc"].get(key, 0) == n, key
    assert stats["documents_in"] == want["kept"]
    assert stats["documents_out"] == len(_documents(out))
    assert stats["documents_in"] - stats["documents_out"] == len(_dropped(out))
    stages = stats["stages"]
    assert [s["stage"] for s in stages] == list(DataJobConfig.model_fields["stages"].default_factory().enabled())
    for before, after in zip(stages, stages[1:]):
        assert after["in"] == before["out"]
    for s in stages:
        assert s["in"] - s["out"] == sum(s["dropped"].values())


def test_documents_are_clean_and_complete(sample, sample_run):
    _, truths, _ = sample
    out, _ = sample_run
    docs = _documents(out)
    assert len({d["id"] for d in docs}) == len(docs)
    for column in ("id", "url", "host", "date", "title", "text", "lang", "lang_score", "source", "seq",
                   "gopher_word_count", "fineweb_line_punct_ratio", "c4_sentences", "pii_emails"):
        assert column in docs[0], column
    assert "html" not in docs[0] and "drop_reason" not in docs[0]
    assert all(d["lang"] == "en" and d["lang_score"] >= 0.65 and d["text"] for d in docs)
    planted = [s for t in truths for doc in t.docs if doc.kind == "pii" for s in doc.pii]
    assert planted
    all_text = "\n".join(d["text"] for d in docs)
    for secret in planted:
        assert secret not in all_text, secret
    assert "<EMAIL>" in all_text and "<PHONE_NUMBER>" in all_text


def test_rerun_skips_finished_inputs_and_reports_the_same(sample, sample_run):
    warcs, _, blocklist = sample
    out, first = sample_run
    before = sorted(p.name for p in (out / "documents").rglob("*.parquet"))
    again = run_data_job(_config(warcs, out, blocklist), log=lambda *_: None)
    assert again.processed == [] and len(again.skipped) == 2
    assert sorted(p.name for p in (out / "documents").rglob("*.parquet")) == before
    volatile = ("wall_seconds_this_run", "inputs_skipped_as_done", "phase_seconds")
    assert {k: v for k, v in again.stats.items() if k not in volatile} == {
        k: v for k, v in first.stats.items() if k not in volatile
    }
    # where the time went: the first run started Ray and read every input, the rerun neither
    for stats, phases in ((first.stats, ["prepare", "ray_start", "documents"]), (again.stats, ["prepare"])):
        assert [p for p in stats["phase_seconds"] if p != "corpus_and_tokenize"] == phases
        # each figure is rounded to the millisecond: the phases' sum may pass the rounded total by that
        rounding = 0.0005 * (len(stats["phase_seconds"]) + 1)
        assert 0 < sum(stats["phase_seconds"].values()) <= stats["wall_seconds_this_run"] + rounding


def test_actor_pool_mode_writes_the_same_documents(sample, sample_run, tmp_path):
    """Stages on an actor pool fed by all reads (for few, large inputs) change nothing."""
    warcs, _, blocklist = sample
    out, fused = sample_run
    pooled = run_data_job(_config(warcs, tmp_path / "pool", blocklist, stage_actors=2, block_mb=0.1),
                          log=lambda *_: None)
    assert sorted((d["id"], d["text"]) for d in _documents(tmp_path / "pool")) == sorted(
        (d["id"], d["text"]) for d in _documents(out))
    assert pooled.stats["warc"] == fused.stats["warc"]


def test_killed_run_resumes_without_losing_or_repeating_a_document(sample, sample_run, tmp_path):
    """SIGKILL the whole job (driver and its Ray) once one input is done, then rerun it."""
    warcs, _, blocklist = sample
    src = tmp_path / "warc"
    src.mkdir()
    # Six inputs so that some are finished and some half-written when the kill lands.
    for i in range(6):
        write_sample_warc(src / f"k{i}.warc.gz", n_docs=60, seed=10 + i)
    out = tmp_path / "out"
    cfg_path = tmp_path / "job.yaml"
    cfg_path.write_text(json.dumps(_config(src, out, blocklist, docs_per_block=10, block_mb=0.05, num_cpus=2).model_dump(mode="json")))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmforge.cli", "data", "run", "--config", str(cfg_path)],
        start_new_session=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 240
    try:
        while not list((out / "documents").glob("*/_stats.json")):
            assert proc.poll() is None, "the job ended before it could be killed"
            assert time.time() < deadline, "no input finished within 240 s"
            time.sleep(0.05)
    finally:
        # Like a machine dying: the driver and every process of its Ray (some start their own
        # process group, so collect the whole tree before killing anything).
        tree = psutil.Process(proc.pid).children(recursive=True)
        os.killpg(proc.pid, signal.SIGKILL)
        for child in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        proc.wait()
    assert not (out / "stats.json").exists()

    resumed = run_data_job(_config(src, out, blocklist, docs_per_block=10, block_mb=0.05), log=lambda *_: None)
    assert resumed.skipped and resumed.processed  # some inputs were done, some were redone
    reference_out = tmp_path / "reference"
    reference = run_data_job(_config(src, reference_out, blocklist, docs_per_block=10, block_mb=0.05), log=lambda *_: None)

    got = sorted((d["id"], d["text"]) for d in _documents(out))
    want = sorted((d["id"], d["text"]) for d in _documents(reference_out))
    assert len({i for i, _ in got}) == len(got)  # none twice
    assert got == want  # none missing, none altered
    def counts(stats):  # CPU seconds differ between runs; documents may not
        return [{k: v for k, v in s.items() if k != "seconds"} for s in stats["stages"]]

    assert counts(resumed.stats) == counts(reference.stats)
    assert resumed.stats["warc"] == reference.stats["warc"]


def test_read_seconds_count_only_the_reader(sample, tmp_path):
    """In a fused task the stages run while the reader is suspended at a yield: that time is
    theirs, not read_warc's."""
    from dataproc.outputs.ledger import OutputLedger
    from dataproc.reading.datasource import read_warc_file
    from dataproc.reading.records import WarcReadOptions

    warcs, _, _ = sample
    ledger = OutputLedger(str(tmp_path / "out"))
    uri = str(warcs / "a.warc.gz")

    def read(work_per_block: float) -> float:
        for _ in read_warc_file(uri, WarcReadOptions(), ledger, docs_per_block=10):
            start = time.process_time()
            while time.process_time() - start < work_per_block:  # a downstream stage's CPU time
                pass
        expected = json.loads(Path(ledger.expected_path(source_key(uri))).read_text())
        return expected["read_seconds"]

    alone = read(0.0)
    busy = read(0.1)  # ~100 rows in blocks of 10: ~0.8 s of "stage" time in between
    assert 0 < busy < alone + 0.3


def test_real_warc_files_agree_with_a_plain_warcio_scan(ray_local, tmp_path):
    warc_dir = shared_data("warc")
    files = sorted(p for p in warc_dir.iterdir() if ".warc" in p.name)
    cfg = validate_config(DataJobConfig, {"input": {"paths": [str(warc_dir)]}, "output": {"path": str(tmp_path)},
                                          "stages": FIRST_HALF})
    result = run_data_job(cfg, log=lambda *_: None)
    scans = Counter()
    for f in files:
        scans.update(scan_record_types(f))
    warc = result.stats["warc"]
    assert result.stats["inputs"] == len(files)
    assert warc["records"] == scans["records"]
    assert warc["kept"] == scans["html_responses_200"] == result.stats["documents_in"]
    assert warc["skip_request"] == scans["request"] and warc["skip_metadata"] == scans["metadata"]
    assert warc.get("skip_corrupt", 0) == 0


def test_crawl_id_reads_a_local_common_crawl_mirror(ray_local, tmp_path):
    """`--crawl CC-MAIN-… --max-files N` resolves warc.paths.gz under input.crawl_base."""
    import gzip

    crawl = "CC-MAIN-2024-10"
    names = [f"crawl-data/{crawl}/segments/170/warc/CC-MAIN-{i:05d}.warc.gz" for i in range(3)]
    for i, name in enumerate(names):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        write_sample_warc(tmp_path / name, n_docs=20, seed=40 + i, corrupt=False)
    (tmp_path / "crawl-data" / crawl / "warc.paths.gz").write_bytes(gzip.compress("\n".join(names).encode()))
    cfg = validate_config(DataJobConfig, {
        "input": {"crawl": crawl, "crawl_base": str(tmp_path), "max_files": 2},
        "output": {"path": str(tmp_path / "out")},
        "stages": FIRST_HALF,
    })
    result = run_data_job(cfg, log=lambda *_: None)
    assert result.stats["inputs"] == 2
    assert {d["source"] for d in _documents(tmp_path / "out")} == {str(tmp_path / n) for n in names[:2]}
