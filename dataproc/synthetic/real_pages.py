"""Real HTML pages wrapped as Common-Crawl-style WARC records (the demo, tests, the data benchmark)."""
from __future__ import annotations

import gzip
import io
import random
from datetime import datetime, timedelta, timezone
from os import PathLike
from pathlib import Path
from typing import Iterable

from dataproc.synthetic.ground_truth import DocTruth, GroundTruth
from dataproc.synthetic.sample_warc import DEFAULT_MAX_HTML_BYTES
from dataproc.synthetic.warc_bytes import record_uuid


def write_warc_from_html_pages(
    path: str | PathLike,
    pages: Iterable[tuple[str, bytes]],
    *,
    gzip_per_record: bool = True,
    seed: int = 0,
    cc_style: bool = True,
) -> GroundTruth:
    """Wrap real HTML pages (url, raw bytes) as Common-Crawl-style response records, each with
    `WARC-Identified-Payload-Type: text/html` and (cc_style) request + metadata records around it.
    The HTTP Content-Type is plain `text/html`: the charset is left to the page's <meta>."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    rng = random.Random(seed)
    t0 = datetime(2024, 5, 18, tzinfo=timezone.utc)
    docs: list[DocTruth] = []
    counts: dict[str, int] = {"records": 0, "kept": 0, "bytes_html": 0}
    path = Path(path)
    with open(path, "wb") as f:
        writer = WARCWriter(f, gzip=gzip_per_record)

        def emit(url, wtype, payload, date, http=None, ctype="", extra=None) -> str:
            rid = record_uuid(rng)
            hdrs = {"WARC-Record-ID": f"<{rid}>", "WARC-Date": date, **(extra or {})}
            rec = writer.create_warc_record(url, wtype, payload=io.BytesIO(payload), http_headers=http,
                                            warc_content_type=ctype, warc_headers_dict=hdrs)
            writer.write_record(rec)
            counts["records"] += 1
            return rid

        for i, (url, html) in enumerate(pages):
            date = (t0 + timedelta(seconds=11 * i)).strftime("%Y-%m-%dT%H:%M:%SZ")
            host = url.split("/")[2] if "//" in url else "example.test"
            if cc_style:
                req = StatusAndHeaders("GET / HTTP/1.1", [("Host", host), ("User-Agent", "CCBot/2.0")], is_http_request=True)
                emit(url, "request", b"", date, http=req)
                counts["skip_request"] = counts.get("skip_request", 0) + 1
            http = StatusAndHeaders("200 OK", [("Content-Type", "text/html"), ("Content-Length", str(len(html)))],
                                    protocol="HTTP/1.1")
            rid = emit(url, "response", html, date, http=http,
                       extra={"WARC-Identified-Payload-Type": "text/html"})
            counts["kept"] += 1
            counts["bytes_html"] += min(len(html), DEFAULT_MAX_HTML_BYTES)
            if len(html) > DEFAULT_MAX_HTML_BYTES:
                counts["truncated_body"] = counts.get("truncated_body", 0) + 1
            docs.append(DocTruth(record_id=rid, url=url, kind="page", expect="kept", status=200,
                                 content_type="text/html", html_bytes=len(html)))
            if cc_style:
                emit(url, "metadata", b"fetchTimeMs: 100\r\n", date, ctype="application/warc-fields")
                counts["skip_metadata"] = counts.get("skip_metadata", 0) + 1
    return GroundTruth(path=str(path), seed=seed, n_docs=len(docs),
                       compression="gzip_per_record" if gzip_per_record else "none", blocked_domains=[],
                       docs=docs, expected_counts=counts, proportions={}, options={"cc_style": cc_style})


def read_html_gz_pages(directory: str | PathLike) -> list[tuple[str, bytes]]:
    """(url, html bytes) for every *.html.gz in `directory` (e.g. the trafilatura eval set), with a
    synthetic URL per file since the files carry none."""
    pages = []
    for p in sorted(Path(directory).glob("*.html.gz")):
        pages.append((f"https://eval-{p.name.split('.')[0][:8]}.example/{p.name[:-3]}", gzip.decompress(p.read_bytes())))
    return pages


