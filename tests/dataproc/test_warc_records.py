"""WARC reader against generated files with planted ground truth, and against the real files."""
from __future__ import annotations

import collections
import gzip
import hashlib
import html as htmllib
import io
import random
import re
import tracemalloc
from pathlib import Path

import pytest
from pydantic import ValidationError

from dataproc.reading.http import decode_html, html_utf8, is_utf8, normalise_warc_date
from dataproc.reading.records import OUTCOME_KEYS, WarcReadOptions, iter_html_responses
from dataproc.synthetic.ground_truth import GroundTruth, jaccard
from dataproc.synthetic.sample_warc import BLOCKED_DOMAIN, PROPORTIONS, write_sample_warc
from dataproc.synthetic.real_pages import write_warc_from_html_pages
from tests.support.warc_scan import scan_record_types

WARC_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "warc"
EVAL_HTML_DIR = WARC_DIR.parent / "extraction" / "trafilatura_eval" / "html"
MODES = {
    "gzip_per_record": {},
    "gzip_file": {"gzip_per_record": False, "whole_file_gzip": True},
    "none": {"gzip_per_record": False},
}
ALL_STATUSES = list(range(100, 600))


class NonSeekable(io.RawIOBase):
    """A stream with read() only (like an S3/HTTP body); `chunk` caps each read."""

    def __init__(self, data: bytes, chunk: int | None = None):
        self._buf = io.BytesIO(data)
        self._chunk = chunk

    def readable(self):
        return True

    def read(self, n=-1):
        if self._chunk:
            n = self._chunk if n is None or n < 0 else min(n, self._chunk)
        return self._buf.read(n)

    def tell(self):
        raise io.UnsupportedOperation("not seekable")


def read_all(stream, options=None):
    counts = collections.Counter()
    docs = list(iter_html_responses(stream, "src", options or WarcReadOptions(), counts))
    assert sum(counts[k] for k in OUTCOME_KEYS) == counts["records"], counts
    return docs, counts


def read_path(path, options=None):
    with open(path, "rb") as f:
        return read_all(f, options)


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> dict[str, GroundTruth]:
    d = tmp_path_factory.mktemp("warc")
    return {mode: write_sample_warc(d / f"s_{mode}.warc", 60, seed=3, **kw) for mode, kw in MODES.items()}


# ---------------------------------------------------------------------------------------------
# Generated files: planted ground truth.

@pytest.mark.parametrize("mode", MODES)
def test_counts_match_ground_truth(samples, mode):
    gt = samples[mode]
    docs, counts = read_path(gt.path)
    assert dict(counts) == gt.expected_counts
    assert counts["truncated_file"] == 1 and counts["skip_corrupt"] == 5  # 4 planted + the cut record
    by_id = {d["id"]: d for d in docs}
    assert set(by_id) == gt.kept_ids()
    for truth in gt.docs:
        if truth.expect == "kept":
            doc = by_id[truth.record_id]
            assert doc["url"] == truth.url and doc["source"] == "src"
            assert doc["content_type"] == truth.content_type == "text/html"
        else:
            assert truth.record_id not in by_id, truth
    for truth in gt.by_kind("blocked_url"):
        assert by_id[truth.record_id]["host"].endswith(BLOCKED_DOMAIN)


def test_every_planted_kind_is_present(samples):
    gt = samples["gzip_per_record"]
    kinds = collections.Counter(d.kind for d in gt.docs)
    expected = set(PROPORTIONS) | {"article", "warcinfo", "undecodable", "bogus_charset", "corrupt_header",
                                   "garbage", "warc018_bad_date", "missing_content_length",
                                   "bad_content_length", "truncated"}
    assert expected <= set(kinds)
    assert kinds["article"] == 60
    assert {d.lang for d in gt.by_kind("non_english")} == {"de", "fr", "es", "zh"}
    assert {d.subkind for d in gt.by_kind("non_html")} == {"jpeg", "pdf", "text"}
    assert {d.status for d in gt.by_kind("non_200")} == {404, 301}
    assert all(d.expect == "skip_status" for d in gt.by_kind("non_200"))
    assert all(d.expect == "skip_not_html" for d in gt.by_kind("non_html"))
    for d in gt.by_kind("pii"):
        assert len(d.pii) == 6 and any("@" in p for p in d.pii)


def test_ground_truth_json_roundtrip_and_determinism(samples, tmp_path):
    gt = samples["gzip_per_record"]
    gt.to_json(tmp_path / "gt.json")
    assert GroundTruth.from_json(tmp_path / "gt.json") == gt
    again = write_sample_warc(tmp_path / Path(gt.path).name, 60, seed=3)  # the name is in warcinfo
    assert Path(again.path).read_bytes() == Path(gt.path).read_bytes()
    other = write_sample_warc(tmp_path / "other.warc", 60, seed=4)
    assert hashlib.sha1(Path(other.path).read_bytes()).digest() != hashlib.sha1(Path(gt.path).read_bytes()).digest()


def test_compression_modes_give_the_same_documents(samples):
    per_mode = {}
    for mode, gt in samples.items():
        docs, _ = read_path(gt.path)
        per_mode[mode] = [(d["id"], d["url"], d["host"], d["date"], d["html"]) for d in docs]
        offsets = [d["offset"] for d in docs]
        if mode == "gzip_file":  # no seek points inside one gzip stream
            assert set(offsets) == {-1}
        else:
            assert all(o > 0 for o in offsets) and offsets == sorted(offsets)
    assert per_mode["gzip_per_record"] == per_mode["gzip_file"] == per_mode["none"]


@pytest.mark.parametrize("mode", ["gzip_per_record", "none"])
def test_offsets_are_seek_points(samples, mode):
    gt = samples[mode]
    docs, _ = read_path(gt.path)
    data = Path(gt.path).read_bytes()
    for doc in docs[::7]:
        first = next(iter_html_responses(io.BytesIO(data[doc["offset"]:]), "x", WarcReadOptions(), collections.Counter()))
        assert first["id"] == doc["id"]


def test_warcio_agrees_on_a_clean_file(tmp_path):
    gt = write_sample_warc(tmp_path / "clean.warc.gz", 40, seed=1, corrupt=False)
    ref = scan_record_types(gt.path)
    _, counts = read_path(gt.path)
    assert ref["records"] == counts["records"] == gt.expected_counts["records"]
    for wtype in ("warcinfo", "request", "metadata", "revisit"):
        assert ref[wtype] == counts[f"skip_{wtype}"]
    assert ref["response"] == counts["kept"] + counts["skip_status"] + counts["skip_not_html"]
    assert ref["html_responses_200"] == counts["kept"]
    assert counts["skip_corrupt"] == counts["truncated_file"] == 0


@pytest.mark.parametrize("mode", MODES)
def test_non_seekable_and_dribbling_streams(samples, mode):
    gt = samples[mode]
    data = Path(gt.path).read_bytes()
    want, want_counts = read_all(io.BytesIO(data))
    for chunk in (None, 7, 4093):
        docs, counts = read_all(NonSeekable(data, chunk))
        assert counts == want_counts
        assert [(d["id"], d["html"], d["offset"]) for d in docs] == [(d["id"], d["html"], d["offset"]) for d in want]


def test_offsets_are_absolute_when_the_stream_starts_later(samples):
    gt = samples["gzip_per_record"]
    data = Path(gt.path).read_bytes()
    docs, _ = read_all(io.BytesIO(data))
    f = io.BytesIO(b"\0" * 100 + data)
    f.seek(100)
    shifted, _ = read_all(f)
    assert [d["offset"] for d in shifted] == [d["offset"] + 100 for d in docs]


def test_warc_018_and_malformed_date(samples):
    gt = samples["gzip_per_record"]
    docs, _ = read_path(gt.path)
    by_id = {d["id"]: d for d in docs}
    (bad,) = gt.by_kind("warc018_bad_date")
    assert by_id[bad.record_id]["date"] == ""
    assert all(re.fullmatch(r"2024-05-\d\dT\d\d:\d\d:\d\dZ", d["date"]) for d in docs if d["id"] != bad.record_id)


def test_charset_pages_decode_to_the_original_text(samples):
    gt = samples["gzip_per_record"]
    docs, _ = read_path(gt.path)
    by_id = {d["id"]: d for d in docs}
    planted = gt.by_kind("charset") + gt.by_kind("bogus_charset")
    assert {d.charset for d in planted} >= {"windows-1251", "x-no-such-charset-42"}
    for truth in planted:
        html = by_id[truth.record_id]["html"]
        for par in truth.text:
            assert par in html, (truth.charset, par)
        assert "\ufffd" not in html
    (bad,) = gt.by_kind("undecodable")
    html = by_id[bad.record_id]["html"]
    assert "\ufffd" in html and all(par in html for par in bad.text)


def test_near_duplicates_have_the_recorded_jaccard(samples):
    gt = samples["gzip_per_record"]
    docs, _ = read_path(gt.path)
    by_id = {d["id"]: d for d in docs}

    def body(doc_html: str) -> str:
        article = doc_html.split("<article>", 1)[1].split("</article>", 1)[0]
        pars = re.findall(r"<p>(.*?)</p>", article)
        return "\n".join(htmllib.unescape(p) for p in pars)

    near = gt.by_kind("near_dup")
    assert len(near) >= 3
    for truth in near:
        got = jaccard(body(by_id[truth.dup_of]["html"]), body(by_id[truth.record_id]["html"]))
        assert got == pytest.approx(truth.jaccard)
        assert 0.4 < truth.jaccard < 0.95
    for truth in gt.by_kind("exact_dup"):
        assert body(by_id[truth.dup_of]["html"]) == body(by_id[truth.record_id]["html"])
        assert by_id[truth.dup_of]["url"] != by_id[truth.record_id]["url"]


def test_huge_page_is_cut_to_the_cap_in_bounded_memory(tmp_path):
    gt = write_sample_warc(tmp_path / "huge.warc.gz", 3, seed=2, corrupt=False, huge_page_bytes=50_000_000)
    (huge,) = gt.by_kind("huge")
    assert huge.html_bytes >= 49_000_000
    options = WarcReadOptions(max_html_bytes=2_000_000)
    tracemalloc.start()
    try:
        docs, counts = read_path(gt.path, options)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert counts["truncated_body"] == 1
    doc = next(d for d in docs if d["id"] == huge.record_id)
    assert len(doc["html"]) == 2_000_000  # ASCII page: bytes == characters
    assert peak < 16_000_000, peak  # cap + decoded copy + buffers; never the 50 MB page
    assert counts["kept"] == gt.expected_counts["kept"]


def test_truncated_anywhere_never_raises_and_keeps_the_prefix(tmp_path):
    gt = write_sample_warc(tmp_path / "t.warc.gz", 30, seed=5, corrupt=False)
    data = Path(gt.path).read_bytes()
    full, _ = read_all(io.BytesIO(data))
    full_ids = [d["id"] for d in full]
    rng = random.Random(0)
    for cut in sorted(rng.randrange(1, len(data)) for _ in range(25)):
        docs, counts = read_all(io.BytesIO(data[:cut]))
        ids = [d["id"] for d in docs]
        assert ids == full_ids[: len(ids)]
        assert len(ids) >= len(full_ids) - 1 - sum(d["offset"] >= cut for d in full)


@pytest.mark.parametrize("mode", ["gzip_per_record", "none"])
def test_random_damage_is_counted_not_raised(samples, mode):
    data = bytearray(Path(samples[mode].path).read_bytes())
    clean, clean_counts = read_all(io.BytesIO(bytes(data)))
    rng = random.Random(1)
    for _ in range(15):
        damaged = bytearray(data)
        for _ in range(5):
            pos = rng.randrange(len(damaged))
            damaged[pos:pos + 40] = rng.randbytes(40)
        docs, counts = read_all(io.BytesIO(bytes(damaged)))
        # Five damaged spots lose at most a few records each; the rest is read.
        assert counts["kept"] >= clean_counts["kept"] - 15


def test_garbage_and_empty_inputs():
    for data in (b"", b"\r\n\r\n", b"not a warc file at all\n" * 50, b"\x1f\x8b\x08garbage", bytes(range(256)) * 10,
                 b"WARC/1.0\r\n", b"WARC/1.0\r\nWARC-Type: response\r\nContent-Length: 99999\r\n\r\nHTTP/1.1 200 OK\r\n"):
        docs, counts = read_all(io.BytesIO(data))
        assert docs == []
        assert counts["skip_corrupt"] == counts["records"]


def test_http_encodings_and_odd_framing():
    body = b"<html><body><p>chunked and gzipped</p></body></html>"
    gz = gzip.compress(body, mtime=0)
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(gz), gz)
    http = (b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Encoding: gzip\r\n\r\n" + chunked)
    rec = (b"WARC/1.0\nWARC-Type: response\nWARC-Target-URI: <http://Example.COM:8080/a>\n"
           b"WARC-Record-ID: <urn:x:1>\nWARC-Date: 20080430204825\nContent-Length: %d\n\n" % len(http)) + http
    docs, counts = read_all(io.BytesIO(rec + b"\n\n" + rec))
    assert counts["kept"] == 2 and counts["bytes_html"] == 2 * len(body)
    assert docs[0]["html"] == body.decode() and docs[0]["host"] == "example.com"
    assert docs[0]["url"] == "http://Example.COM:8080/a" and docs[0]["date"] == "2008-04-30T20:48:25Z"
    assert docs[1]["offset"] == len(rec) + 2


def test_decode_html():
    assert decode_html(b"\xef\xbb\xbf<p>caf\xc3\xa9</p>") == "<p>café</p>"
    assert decode_html("<p>café</p>".encode("utf-16")) == "<p>café</p>"
    latin = "<p>déjà vu</p>".encode("latin-1")
    assert decode_html(latin, "text/html; charset=ISO-8859-1") == "<p>déjà vu</p>"
    assert decode_html(latin) == "<p>déjà vu</p>"  # undeclared, invalid UTF-8: legacy fallback
    meta = '<meta charset="windows-1251"><p>Привет</p>'.encode("cp1251")
    assert decode_html(meta) == '<meta charset="windows-1251"><p>Привет</p>'
    # The HTTP header wins over <meta> (as browsers do): decoded as UTF-8 with replacements, no error.
    assert decode_html(meta, "text/html; charset=utf-8") == meta.decode("utf-8", "replace")
    for bogus in ("base64", "rot13", "utf-7", "idna", "undefined", "x-nope", "punycode", "zip", "unicode_escape"):
        out = decode_html(b'<meta charset="%s"><p>ok \xff</p>' % bogus.encode(), f"text/html; charset={bogus}")
        assert "<p>ok" in out
    assert decode_html(b"<p>a \xff\xfe b</p>", "text/html; charset=utf-8") == "<p>a \ufffd\ufffd b</p>"


HTML_BODIES = [  # (body, HTTP Content-Type): every branch of decode_html
    (b"\xef\xbb\xbf<p>caf\xc3\xa9</p>", ""),  # UTF-8 BOM
    (b"\xef\xbb\xbf\xef\xbb\xbf<p>x</p>", ""),  # BOM, then a U+FEFF that stays
    (b"\xef\xbb\xbf<p>\xff</p>", ""),  # BOM before invalid UTF-8
    ("<p>café</p>".encode("utf-16"), ""),
    ("<p>déjà vu</p>".encode("latin-1"), "text/html; charset=ISO-8859-1"),
    ("<p>déjà vu</p>".encode("latin-1"), ""),  # undeclared, legacy fallback
    ('<meta charset="windows-1251"><p>Привет</p>'.encode("cp1251"), ""),
    ('<meta charset="windows-1251"><p>Привет</p>'.encode("cp1251"), "text/html; charset=utf-8"),
    ("<p>Привет, café</p>".encode(), "text/html; charset=utf-8"),
    ("<p>Привет, café</p>".encode(), "text/html; charset=UTF-16"),  # no BOM: read as UTF-8
    ("\ufeff\ufeff<p>Привет</p>".encode(), ""),  # leading U+FEFF, undeclared: stripped
    ("\ufeff<p>x</p>".encode(), "text/html; charset=utf8"),
    (b"<p>a \xff\xfe b</p>", "text/html; charset=utf-8"),
    (b"<p>a \xc3</p>", ""),  # one invalid byte among valid UTF-8: replaced, no fallback
    (b'<meta charset="x-nope"><p>ok \xe2\x82\xac</p>', "text/html; charset=base64"),
    ("<p>日本語</p>".encode("shift_jis"), "text/html; charset=shift_jis"),
    (b"", ""),
    (b"<p>plain ascii</p>", "text/html"),
]


@pytest.mark.parametrize("body,content_type", HTML_BODIES)
def test_html_utf8_is_decode_html_in_utf8(body, content_type):
    out = html_utf8(body, content_type)
    assert isinstance(out, bytes) and is_utf8(out)
    assert out == decode_html(body, content_type).encode("utf-8")


def test_html_utf8_passes_valid_utf8_through_without_copying():
    """The point of html_utf8: a UTF-8 page is never decoded and re-encoded (nor copied)."""
    body = "<p>Привет, café</p>".encode() * 100
    assert html_utf8(body, "text/html; charset=utf-8") is body
    assert html_utf8(body, "text/html") is body
    assert is_utf8(body) and not is_utf8(body[:-1] + b"\xd0") and not is_utf8(b"\xed\xa0\x80")  # surrogate


def test_reader_utf8_mode_yields_the_same_pages_as_bytes(samples):
    for gt in samples.values():
        with open(gt.path, "rb") as f:
            as_str = list(iter_html_responses(f, "src", WarcReadOptions(), collections.Counter()))
        with open(gt.path, "rb") as f:
            as_utf8 = list(iter_html_responses(f, "src", WarcReadOptions(), collections.Counter(), utf8=True))
        assert len(as_utf8) == len(as_str) > 0
        for a, b in zip(as_str, as_utf8):
            assert {**a, "html": a["html"].encode()} == b


def test_normalise_warc_date():
    assert normalise_warc_date("2020-08-08T17:27:41Z") == "2020-08-08T17:27:41Z"
    assert normalise_warc_date("2020-08-08T17:27:41.123456Z") == "2020-08-08T17:27:41Z"
    assert normalise_warc_date("2020-08-08T19:27:41+02:00") == "2020-08-08T17:27:41Z"
    assert normalise_warc_date("20080430204825") == "2008-04-30T20:48:25Z"
    for bad in ("", None, "2008-13-45T99:99:99Z", "yesterday", "2020-02-30T00:00:00Z"):
        assert normalise_warc_date(bad) == ""


def test_options_are_validated():
    with pytest.raises(ValidationError):
        WarcReadOptions(max_html_bytes=0)
    with pytest.raises(ValidationError):
        WarcReadOptions(no_such_option=1)


def test_write_warc_from_html_pages(tmp_path):
    if EVAL_HTML_DIR.is_dir():
        from dataproc.synthetic.real_pages import read_html_gz_pages

        pages = read_html_gz_pages(EVAL_HTML_DIR)[:12]
    else:
        pages = [(f"https://site{i}.example/p", f"<html><body><p>page {i}</p></body></html>".encode()) for i in range(12)]
    gt = write_warc_from_html_pages(tmp_path / "pages.warc.gz", pages)
    ref = scan_record_types(gt.path)
    docs, counts = read_path(gt.path)
    assert dict(counts) == gt.expected_counts
    assert ref["request"] == ref["metadata"] == ref["html_responses_200"] == len(pages) == counts["kept"]
    assert [d["url"] for d in docs] == [u for u, _ in pages]
    assert [d["html"] for d in docs] == [decode_html(h, "text/html") for _, h in pages]


# ---------------------------------------------------------------------------------------------
# Real files in ../shared/data/warc.

def real_files() -> list[Path]:
    return sorted(WARC_DIR.glob("*.gz")) if WARC_DIR.is_dir() else []


def need_real(name: str | None = None) -> Path:
    if not WARC_DIR.is_dir():
        pytest.skip(f"real WARC files absent: {WARC_DIR} does not exist (../shared/data not next to this checkout)")
    if name is not None:
        path = WARC_DIR / name
        if not path.exists():
            pytest.skip(f"{path} absent")
        return path
    return WARC_DIR


_TYPE_TO_KEY = {"warcinfo": "skip_warcinfo", "request": "skip_request", "metadata": "skip_metadata",
                "revisit": "skip_revisit"}


@pytest.mark.shared_data
@pytest.mark.parametrize("name", [p.name for p in real_files()] or ["<absent>"])
def test_real_file_counts_agree_with_warcio(name):
    path = need_real(name)
    ref = scan_record_types(path)
    docs, counts = read_path(path, WarcReadOptions(keep_statuses=ALL_STATUSES))
    assert counts["records"] == ref["records"] > 0
    assert counts["skip_corrupt"] == counts["truncated_file"] == 0
    for wtype, n in ref.items():
        if wtype in _TYPE_TO_KEY:
            assert counts[_TYPE_TO_KEY[wtype]] == n, wtype
    other = sum(n for t, n in ref.items() if t not in _TYPE_TO_KEY and t not in (
        "response", "records", "html_responses", "html_responses_200"))
    assert counts["skip_other_type"] == other
    assert counts["kept"] == ref["html_responses"]
    assert counts["kept"] + counts["skip_not_html"] + counts["skip_status"] == ref["response"]
    _, default_counts = read_path(path)
    assert default_counts["kept"] == ref["html_responses_200"]
    assert all(d["id"] and d["url"] and d["host"] and d["date"] for d in docs)


@pytest.mark.shared_data
def test_real_documents_match_warcio_payloads():
    from warcio.archiveiterator import ArchiveIterator

    path = need_real("aut_IAH-20080430204825-00000-blackbook.warc.gz")
    docs, _ = read_path(path, WarcReadOptions(keep_statuses=ALL_STATUSES))
    ref = {}
    with open(path, "rb") as f:
        for rec in ArchiveIterator(f, arc2warc=False):
            if rec.rec_type == "response" and rec.http_headers is not None:
                ct = rec.http_headers.get_header("Content-Type") or ""
                if "html" in ct:
                    rid = rec.rec_headers.get_header("WARC-Record-ID").strip("<>")
                    ref[rid] = decode_html(rec.content_stream().read(), ct)
    assert {d["id"]: d["html"] for d in docs} == ref


@pytest.mark.shared_data
def test_real_file_numbers_from_sources_md():
    need_real()
    docs, counts = read_path(need_real("resiliparse_CC-MAIN-2020-34_excerpt.warc.gz"))
    assert counts["records"] == 50 and counts["kept"] == 16 and counts["skip_request"] == 17
    assert counts["skip_metadata"] == 16 and counts["skip_warcinfo"] == 1
    assert len({d["host"] for d in docs}) == 15
    assert all(d["date"].startswith("2020-08-08T") for d in docs)

    docs, counts = read_path(need_real("aut_IAH-20080430204825-00000-blackbook.warc.gz"),
                             WarcReadOptions(keep_statuses=ALL_STATUSES))
    assert counts["records"] == 822 and counts["skip_request"] == 261 and counts["skip_metadata"] == 261
    assert counts["kept"] + counts["skip_not_html"] == 299  # responses (WARC/0.17)
    assert counts["kept"] == 140
    assert all(d["date"].startswith("2008-04-30T") for d in docs)

    docs, counts = read_path(need_real("whirlwind_CC-MAIN-2024-22.warc.gz"))
    assert [d["url"] for d in docs] == ["https://an.wikipedia.org/wiki/Escopete"]
    docs, counts = read_path(need_real("warcio_example.warc.gz"))
    assert counts["kept"] == 1 and counts["skip_revisit"] == 1 and counts["skip_warcinfo"] == 2


@pytest.mark.shared_data
@pytest.mark.parametrize("name", ["whirlwind_CC-MAIN-2024-22.warc.wat.gz", "whirlwind_CC-MAIN-2024-22.warc.wet.gz"])
def test_wat_and_wet_have_no_html(name):
    docs, counts = read_path(need_real(name))
    assert docs == [] and counts["records"] == 2 and counts["skip_warcinfo"] == 1
    assert counts["skip_corrupt"] == 0
    assert counts["skip_metadata" if name.endswith("wat.gz") else "skip_other_type"] == 1


def test_isal_inflate_reads_exactly_what_zlib_reads(samples, monkeypatch):
    """The reader inflates with ISA-L (a dependency, for speed); on every framing, on damaged
    bytes and on cut files it must yield the same documents and counts as zlib."""
    import zlib

    from dataproc.reading import framing

    assert framing._inflate.__name__ == "isal.isal_zlib"
    inputs = [Path(gt.path).read_bytes() for gt in samples.values()]
    rng = random.Random(7)
    gz = Path(samples["gzip_per_record"].path).read_bytes()
    for _ in range(8):
        damaged = bytearray(gz)
        pos = rng.randrange(len(damaged))
        damaged[pos:pos + 40] = rng.randbytes(40)
        inputs += [bytes(damaged), gz[: rng.randrange(1, len(gz))]]

    def read_each():
        out = []
        for data in inputs:
            docs, counts = read_all(NonSeekable(data, chunk=7919))
            out.append(([(d["id"], d["offset"], d["html"]) for d in docs], dict(counts)))
        return out

    with_isal = read_each()
    monkeypatch.setattr(framing, "_inflate", zlib)
    monkeypatch.setattr(framing, "_INFLATE_ERRORS", (zlib.error,))
    assert read_each() == with_isal
    assert sum(c.get("skip_corrupt", 0) for _, c in with_isal) > 0  # the damage was seen
