import gzip

import pytest

from dataproc.reading.inputs import InputError, resolve_inputs, source_key


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_dirs_globs_and_files(tmp_path):
    a = _touch(tmp_path / "w" / "a.warc.gz")
    b = _touch(tmp_path / "w" / "sub" / "b.warc.gz")
    _touch(tmp_path / "w" / "notes.txt")
    assert resolve_inputs([str(tmp_path / "w")], None, "", None) == [str(a), str(b)]
    assert resolve_inputs([str(tmp_path / "w" / "*.warc.gz")], None, "", None) == [str(a)]
    assert resolve_inputs([str(tmp_path / "w" / "**" / "*.warc.gz")], None, "", None) == [str(a), str(b)]
    assert resolve_inputs([str(a), str(a), str(b)], None, "", 1) == [str(a)]
    with pytest.raises(InputError, match="matches no file"):
        resolve_inputs([str(tmp_path / "missing*.warc.gz")], None, "", None)


def test_crawl_id_resolves_against_a_local_mirror(tmp_path):
    listing = tmp_path / "crawl-data" / "CC-MAIN-2024-10" / "warc.paths.gz"
    listing.parent.mkdir(parents=True)
    names = [f"crawl-data/CC-MAIN-2024-10/segments/1/warc/CC-MAIN-{i}.warc.gz" for i in range(3)]
    listing.write_bytes(gzip.compress("\n".join(names).encode() + b"\n"))
    got = resolve_inputs([], "CC-MAIN-2024-10", str(tmp_path), 2)
    assert got == [str(tmp_path / n) for n in names[:2]]
    with pytest.raises(InputError, match="crawl_base"):
        resolve_inputs([], "CC-MAIN-2099-01", str(tmp_path), None)


def test_source_key_is_stable_readable_and_distinct():
    k1 = source_key("s3://commoncrawl/crawl-data/X/segments/1/warc/CC-MAIN-001.warc.gz")
    k2 = source_key("s3://commoncrawl/crawl-data/X/segments/2/warc/CC-MAIN-001.warc.gz")
    assert k1.startswith("CC-MAIN-001-") and k2.startswith("CC-MAIN-001-") and k1 != k2
    assert k1 == source_key("s3://commoncrawl/crawl-data/X/segments/1/warc/CC-MAIN-001.warc.gz")
