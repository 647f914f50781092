"""WARC records -> HTML `response` documents as plain dicts, every other record counted.

`iter_html_responses(stream, source, options, counts)` reads one WARC file from a binary stream
that may be non-seekable (S3, HTTP): it never holds more than one record's header plus at most
`max_html_bytes` of body (plus one decompression chunk). Framing and decompression live in
`dataproc.reading.framing`, header / date / charset decoding in `dataproc.reading.http`.

Bad input is counted and skipped, never raised: a corrupt gzip member or malformed WARC header
is skipped and reading resumes at the next gzip member or the next `WARC/<digit>` marker; bytes
between records that are not a record (garbage) are skipped the same way; a file that ends inside
a record or gzip member stops cleanly after everything before it.

Counts (keys of the `counts` Counter, updated in place; the pipeline's stats funnel):
    records          every record seen, corrupt ones included. A run of garbage between two records,
                     a corrupt gzip member and a record cut off by the end of the file each count as
                     one (corrupt) record. records = kept + all skip_* keys.
    kept             HTML responses yielded
    skip_warcinfo    warcinfo records
    skip_request     request records
    skip_metadata    metadata records
    skip_revisit     revisit records
    skip_other_type  any other WARC-Type (resource, conversion, continuation, ...) or none
    skip_status      response whose HTTP status is not in `keep_statuses` (checked before the type)
    skip_not_html    response that is not HTML (see `is_html_type`), or not HTTP at all (dns:, ...)
    skip_corrupt     unparseable record: bad gzip data, malformed WARC header, missing/invalid
                     Content-Length, bad HTTP status line, garbage bytes, record cut by end of file
    truncated_file   1 if the file ended inside a record or gzip member (else absent/0)
    truncated_body   kept bodies cut at `max_html_bytes`
    bytes_html       sum of kept HTML body lengths in bytes, before charset decoding

Yielded dict keys: id, url, host, date, content_type, html, source, offset (see
`iter_html_responses`).
"""
from __future__ import annotations

import collections
import re
from typing import BinaryIO, Iterator

from pydantic import Field

from dataproc.reading.framing import CorruptMember, EndOfData, MemberReader, RecordCut
from dataproc.reading.http import decode_html, host_of, html_utf8, normalise_warc_date, parse_headers, undo_http_encoding
from llmforge.common.config import StrictModel

COUNT_KEYS = (
    "records",
    "kept",
    "skip_warcinfo",
    "skip_request",
    "skip_metadata",
    "skip_revisit",
    "skip_other_type",
    "skip_status",
    "skip_not_html",
    "skip_corrupt",
    "truncated_file",
    "truncated_body",
    "bytes_html",
)
# The keys that partition `records`: every record ends in exactly one of them.
OUTCOME_KEYS = COUNT_KEYS[1:10]

_TYPE_KEYS = {
    "warcinfo": "skip_warcinfo",
    "request": "skip_request",
    "metadata": "skip_metadata",
    "revisit": "skip_revisit",
}


class WarcReadOptions(StrictModel):
    """What `iter_html_responses` keeps and how much of it."""

    # Longer bodies are cut to this many bytes (counted in `truncated_body`).
    max_html_bytes: int = Field(5_000_000, gt=0)
    keep_statuses: list[int] = [200]
    # WARC-Identified-Payload-Type values that make a response HTML even when the HTTP
    # Content-Type does not say "html" (Common Crawl sniffs the payload).
    html_content_types: list[str] = ["text/html", "application/xhtml+xml"]
    # A WARC or HTTP header block longer than this is garbage, not a header.
    max_header_bytes: int = Field(256 * 1024, gt=0)
    # Undo HTTP Transfer-Encoding: chunked and Content-Encoding: gzip/deflate when a WARC kept them
    # (older crawlers did; Common Crawl stores decoded payloads).
    decode_http_encoding: bool = True


def is_html_type(http_content_type: str, identified_type: str, html_types=("text/html", "application/xhtml+xml")) -> bool:
    """HTML if the HTTP Content-Type contains "html" or the identified payload type is an HTML type."""
    if "html" in http_content_type.lower():
        return True
    ident = identified_type.split(";", 1)[0].strip().lower()
    return bool(ident) and ident in html_types


_VERSION_LINE = re.compile(r"WARC/\d+\.\d+")
_STATUS_LINE = re.compile(rb"\s*HTTP/\d(?:\.\d)?\s+(\d{3})(?:\s|$)")


def _read_record(r: MemberReader, opts: WarcReadOptions, counts: collections.Counter, source: str, offset: int,
                 utf8: bool = False):
    """Read one record at the reader's position; return a doc dict, or None when skipped."""
    start_abs = r.buf_base + r.pos
    block = r.header_block(opts.max_header_bytes)
    first, headers = parse_headers(block, "utf-8") if block is not None else ("", {})
    try:
        length = int(headers.get("content-length", ""))
    except ValueError:
        length = -1
    if block is None or not _VERSION_LINE.fullmatch(first) or length < 0:
        # No trustworthy framing: skip to the next record marker.
        counts["records"] += 1
        counts["skip_corrupt"] += 1
        r.resync(start_abs + 1)
        return None

    wtype = headers.get("warc-type", "").strip().lower()
    url = headers.get("warc-target-uri", "").strip().strip("<>")  # wget wrote <uri>
    if wtype != "response" or not url.lower().startswith(("http:", "https:")):
        r.skip(length)
        counts["records"] += 1
        if wtype == "response":
            counts["skip_not_html"] += 1  # dns:, whois:, ... responses
        else:
            counts[_TYPE_KEYS.get(wtype, "skip_other_type")] += 1
        return None

    http_start = r.buf_base + r.pos  # absolute: the buffer is rebased when it refills
    http_block = r.header_block(min(opts.max_header_bytes, length))
    if http_block is None:
        # No blank line inside the record: the whole block is headers (a body-less response).
        http_block = r.read(length) if length <= opts.max_header_bytes else None
        payload = 0
    else:
        payload = length - (r.buf_base + r.pos - http_start)
    status_m = _STATUS_LINE.match(http_block) if http_block is not None else None
    if status_m is None or payload < 0:
        r.skip(max(payload, 0) if http_block is not None else length)
        counts["records"] += 1
        counts["skip_corrupt"] += 1
        return None
    status = int(status_m.group(1))
    if status not in opts.keep_statuses:
        r.skip(payload)
        counts["records"] += 1
        counts["skip_status"] += 1
        return None
    _, http = parse_headers(http_block, "latin-1")
    content_type = http.get("content-type", "")
    identified = headers.get("warc-identified-payload-type", "")
    if not is_html_type(content_type, identified, opts.html_content_types):
        r.skip(payload)
        counts["records"] += 1
        counts["skip_not_html"] += 1
        return None

    cap = opts.max_html_bytes
    body = r.read(min(payload, cap))
    if payload > cap:
        r.skip(payload - cap)
        counts["truncated_body"] += 1
    if opts.decode_http_encoding and ("transfer-encoding" in http or "content-encoding" in http):
        body = undo_http_encoding(body, http, cap)[:cap]
    counts["records"] += 1
    counts["kept"] += 1
    counts["bytes_html"] += len(body)
    media = content_type.split(";", 1)[0].strip().lower() or identified.split(";", 1)[0].strip().lower()
    return {
        "id": headers.get("warc-record-id", "").strip().strip("<>"),
        "url": url,
        "host": host_of(url),
        "date": normalise_warc_date(headers.get("warc-date")),
        "content_type": media,
        "html": html_utf8(body, content_type) if utf8 else decode_html(body, content_type),
        "source": source,
        "offset": offset,
    }


def iter_html_responses(
    stream: BinaryIO,
    source: str,
    options: WarcReadOptions,
    counts: collections.Counter,
    utf8: bool = False,
) -> Iterator[dict]:
    """Yield the HTML responses of one WARC file (see the module docstring for counts).

    Each dict: id (WARC-Record-ID without <>), url (WARC-Target-URI), host (lower-cased, no port),
    date (ISO-8601 UTC 'YYYY-MM-DDTHH:MM:SSZ' or ''), content_type (HTTP media type), html (str,
    charset decoded; with `utf8`, that str's UTF-8 bytes, mostly the body as it is: `html_utf8`),
    source (the `source` argument), offset (raw byte offset of the record's gzip member, or of the
    record in a plain file; -1 inside a whole-file gzip, where no seek point exists).
    Offsets are absolute when `stream.tell()` works at the start, else relative to the start.
    """
    try:
        base = stream.tell()
    except Exception:  # non-seekable streams may not even tell
        base = 0
    r = MemberReader(stream, base, counts)
    if not r.next_member():
        return
    while True:
        doc = None
        try:
            if not r.skip_blank():
                break
            doc = _read_record(r, options, counts, source, r.record_offset(), utf8)
        except CorruptMember:
            counts["records"] += 1
            counts["skip_corrupt"] += 1
            if not r.recover_from_corrupt_member():
                break
        except RecordCut:
            counts["records"] += 1
            counts["skip_corrupt"] += 1
        except EndOfData:
            counts["records"] += 1
            counts["skip_corrupt"] += 1
            counts["truncated_file"] = 1
            break
        if doc is not None:
            yield doc
    if r.truncated:
        counts["truncated_file"] = 1
