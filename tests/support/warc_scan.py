"""Reference record counts from warcio, an independent WARC parser, to check ours against."""
from __future__ import annotations

import collections
from os import PathLike

from dataproc.reading.records import is_html_type


def scan_record_types(path: str | PathLike) -> collections.Counter:
    """Reference counts from a plain warcio scan: `records`, one key per WARC-Type, and
    `html_responses` / `html_responses_200` (responses that `is_html_type` accepts)."""
    from warcio.archiveiterator import ArchiveIterator

    counts: collections.Counter = collections.Counter()
    with open(path, "rb") as f:
        for rec in ArchiveIterator(f, arc2warc=False):
            counts["records"] += 1
            counts[rec.rec_type] += 1
            if rec.rec_type == "response" and rec.http_headers is not None:
                ct = rec.http_headers.get_header("Content-Type") or ""
                ident = rec.rec_headers.get_header("WARC-Identified-Payload-Type") or ""
                if is_html_type(ct, ident):
                    counts["html_responses"] += 1
                    if rec.http_headers.get_statuscode() == "200":
                        counts["html_responses_200"] += 1
    return counts
