"""Completion bookkeeping: a unit is finished only when its parts tile every row exactly once."""
import json

import pytest

from dataproc.outputs.ledger import OutputLedger, covers_exactly, merge_funnels, seq_ranges
from llmforge.common import fs


def test_seq_ranges_compacts_runs():
    assert seq_ranges([5, 0, 1, 2, 7, 6, 9]) == [[0, 2], [5, 7], [9, 9]]
    assert seq_ranges([]) == []


@pytest.mark.parametrize(
    "ranges, rows, ok",
    [
        ([[0, 4], [5, 9]], 10, True),
        ([[5, 9], [0, 4]], 10, True),  # order of arrival does not matter
        ([[0, 4], [6, 9]], 10, False),  # gap: row 5 missing
        ([[0, 5], [5, 9]], 10, False),  # overlap: row 5 twice
        ([[0, 9]], 11, False),  # reader said 11 rows
        ([], 0, True),  # a file without HTML responses is complete with no parts
    ],
)
def test_covers_exactly(ranges, rows, ok):
    assert covers_exactly(ranges, rows) is ok


def test_merge_funnels_sums_counters():
    a = {"rows": 3, "kept": 1, "text_bytes": 10, "dropped": {"c4:x": 2}, "seconds": {"c4": 0.5}}
    b = {"rows": 2, "kept": 2, "text_bytes": 5, "dropped": {}, "seconds": {"c4": 0.25}}
    m = merge_funnels([a, b])
    assert m == {"rows": 5, "kept": 3, "text_bytes": 15, "dropped": {"c4:x": 2}, "seconds": {"c4": 0.75}}


def _part(ledger, key, lo, hi, kept):
    manifest = {"seqs": [[lo, hi]], "rows": hi - lo + 1, "kept": kept, "dropped": {"x:y": hi - lo + 1 - kept},
                "seconds": {}, "text_bytes": 0}
    fs.write_json_atomic(ledger.filesystem, ledger.manifest_path(key, lo, hi), manifest)
    fs.write_bytes_atomic(ledger.filesystem, ledger.part_stem(key, lo, hi) + ".parquet", b"PAR1")


def test_finalize_only_when_complete_and_prepare_clears_partial(tmp_path):
    ledger = OutputLedger(str(tmp_path / "out"))
    expected = {"source": "a.warc.gz", "rows": 10, "reader": {"records": 12}}
    _part(ledger, "a", 0, 4, 3)
    assert not ledger.try_finalize("a")  # no _expected.json yet: the reader has not finished
    fs.write_json_atomic(ledger.filesystem, ledger.expected_path("a"), expected)
    assert not ledger.try_finalize("a")  # rows 5..9 missing
    _part(ledger, "a", 5, 9, 5)
    assert ledger.try_finalize("a")
    assert ledger.is_done("a")
    stats = json.loads((tmp_path / "out/documents/a/_stats.json").read_text())
    assert (stats["rows"], stats["kept"], stats["dropped"]) == (10, 8, {"x:y": 2})
    assert sorted(p.name for p in (tmp_path / "out/documents/a").glob("part-*")) == [
        "part-000000000-000000004.parquet", "part-000000005-000000009.parquet"]

    # b: killed half way; c: all parts written but never renamed.
    _part(ledger, "b", 0, 4, 5)
    fs.write_json_atomic(ledger.filesystem, ledger.expected_path("b"), {**expected, "rows": 20})
    fs.write_json_atomic(ledger.filesystem, ledger.expected_path("c"), {**expected, "rows": 5})
    _part(ledger, "c", 0, 4, 5)
    todo, done = ledger.prepare(["a", "b", "c", "d"])
    assert todo == ["b", "d"] and done == ["a", "c"]
    assert not (tmp_path / "out/_work/b").exists()  # half-written work is deleted, to be redone


def test_a_unit_another_writer_finishes_meanwhile_counts_as_done(tmp_path, monkeypatch):
    """Two writers see the same input complete; the first moves `_work/<key>` away while the
    second reads its part manifests (the actor-pool race): the second reports it done."""
    ledger = OutputLedger(str(tmp_path / "out"))
    fs.write_json_atomic(ledger.filesystem, ledger.expected_path("a"),
                         {"source": "a.warc.gz", "rows": 10, "reader": {}})
    _part(ledger, "a", 0, 4, 3)
    _part(ledger, "a", 5, 9, 5)
    read_json, raced = fs.read_json, {}

    def read_then_race(filesystem, path):
        if "_part-" in path and not raced:  # the other writer finishes between list and read
            raced["other"] = None
            raced["other"] = OutputLedger(str(tmp_path / "out")).try_finalize("a")
        return read_json(filesystem, path)

    monkeypatch.setattr(fs, "read_json", read_then_race)
    assert ledger.try_finalize("a") and raced == {"other": True}
    stats = json.loads((tmp_path / "out/documents/a/_stats.json").read_text())
    assert (stats["rows"], stats["kept"]) == (10, 8)
    assert not (tmp_path / "out/_work/a").exists()


def test_a_unit_whose_work_vanishes_unfinished_is_an_error(tmp_path, monkeypatch):
    ledger = OutputLedger(str(tmp_path / "out"))
    fs.write_json_atomic(ledger.filesystem, ledger.expected_path("a"),
                         {"source": "a.warc.gz", "rows": 10, "reader": {}})
    _part(ledger, "a", 0, 9, 3)
    read_json = fs.read_json

    def read_after_delete(filesystem, path):
        if "_part-" in path:
            (tmp_path / "out/_work/a" / path.rsplit("/", 1)[1]).unlink(missing_ok=True)
        return read_json(filesystem, path)

    monkeypatch.setattr(fs, "read_json", read_after_delete)
    with pytest.raises(FileNotFoundError):
        ledger.try_finalize("a")


def test_output_is_tied_to_one_config(tmp_path):
    from dataproc.outputs.ledger import OutputConflictError

    ledger = OutputLedger(str(tmp_path / "out"))
    ledger.claim("aaaa")
    ledger.claim("aaaa")  # the same config may resume
    with pytest.raises(OutputConflictError, match="use a new output.path"):
        ledger.claim("bbbb")
    assert json.loads((tmp_path / "out" / "_job.json").read_text()) == {"fingerprint": "aaaa"}


def test_directories_written_before_the_resume_helper_still_count(tmp_path):
    """Markers exactly as the old code wrote them: the job is claimed and the unit is done."""
    (tmp_path / "out" / "documents" / "a").mkdir(parents=True)
    (tmp_path / "out" / "_job.json").write_text('{\n "fingerprint": "b26452935e21be14"\n}')
    stats = {"source": "a.warc.gz", "rows": 0, "kept": 0, "text_bytes": 0, "dropped": {}, "seconds": {},
             "reader": {"records": 3}, "read_seconds": 0.01, "file_bytes": 10}
    (tmp_path / "out" / "documents" / "a" / "_stats.json").write_text(json.dumps(stats, indent=1, sort_keys=True))
    ledger = OutputLedger(str(tmp_path / "out"))
    ledger.claim("b26452935e21be14")
    assert ledger.prepare(["a", "b"]) == (["b"], ["a"])
    assert ledger.done_stats("a") == stats
