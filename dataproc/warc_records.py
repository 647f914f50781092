"""Streaming, fault-tolerant WARC reader: HTML `response` records -> plain dicts.

`iter_html_responses(stream, source, options, counts)` reads one WARC file from a binary stream
that may be non-seekable (S3, HTTP): it never holds more than one record's header plus at most
`max_html_bytes` of body (plus one decompression chunk). Compression is sniffed from the first
bytes: gzip-per-record (the Common Crawl norm), one gzip stream over the whole file (or any
multi-member gzip, e.g. pigz), or plain uncompressed WARC.

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

import codecs
import collections
import re
import zlib
from datetime import datetime, timedelta, timezone
from os import PathLike
from typing import BinaryIO, Iterator
from urllib.parse import urlsplit

from pydantic import Field

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


# ----------------------------------------------------------------------------------------------
# Byte layer: decompressed view of the file, aware of gzip member boundaries.

_GZIP_MAGIC = b"\x1f\x8b\x08"
_RAW_CHUNK = 64 * 1024
_OUT_CHUNK = 256 * 1024  # bounds the output of one inflate call: a tiny member can expand 1000x
_RAW_KEEP = 1024 * 1024  # compressed bytes kept behind the read point to resync after corruption
_BLANK = b" \t\r\n\x00"
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_SYNC = re.compile(rb"WARC/\d")


class _CorruptMember(Exception):
    """The current gzip member does not inflate."""


class _RecordCut(Exception):
    """A record ran past its gzip member into a member that starts a new record."""


class _EndOfData(Exception):
    """The file ended inside a record."""


class _Reader:
    """Decompressed bytes of the current gzip member (or of the whole plain file) in `buf[pos:]`.

    Members are served one at a time so a record can be tied to the member it starts
    (its offset) and resynchronisation can stop at the next member start.
    """

    def __init__(self, raw: BinaryIO, base_offset: int, counts: collections.Counter):
        self._raw = raw
        self._counts = counts
        self._rbuf = b""  # raw bytes from absolute offset _rbase; _rpos is the read point
        self._rbase = base_offset
        self._rpos = 0
        self._raw_eof = False
        self._d = None
        self.buf = b""
        self.pos = 0
        self.buf_base = 0  # stream position of buf[0] (decompressed; equals the raw offset for plain)
        self.member_done = True
        self.member_offset = -1
        self.fresh = False  # nothing but blanks consumed from the current member yet
        self.truncated = False
        self._started = False
        self.gzip = False
        self._raw_more()
        head = self._rbuf[:2]
        self.gzip = head == b"\x1f\x8b"
        if not self.gzip and not self._rbuf.lstrip(_BLANK).startswith(b"WARC/"):
            # Leading garbage: decide by whichever marker comes first in the first chunk.
            g, w = self._rbuf.find(_GZIP_MAGIC), self._rbuf.find(b"WARC/")
            self.gzip = g >= 0 and (w < 0 or g < w)

    # -- raw input
    def _read_raw(self) -> bytes:
        """At least _RAW_CHUNK bytes unless the stream ends: streams that return small pieces
        (sockets, decoders) would otherwise make buffer compaction quadratic."""
        if self._raw_eof:
            return b""
        chunk = self._raw.read(_RAW_CHUNK) or b""
        if chunk and len(chunk) < _RAW_CHUNK:
            parts, size = [chunk], len(chunk)
            while size < _RAW_CHUNK:
                piece = self._raw.read(_RAW_CHUNK - size)
                if not piece:
                    self._raw_eof = True
                    break
                parts.append(piece)
                size += len(piece)
            chunk = b"".join(parts)
        if not chunk:
            self._raw_eof = True
        return chunk

    def _raw_more(self) -> bool:
        chunk = self._read_raw()
        if not chunk:
            return False
        # Drop consumed raw bytes, but keep the current member's start when it is near, to
        # rescan it for the next member magic if it turns out to be corrupt.
        keep = self._rpos
        member_rel = self.member_offset - self._rbase
        if self.gzip and 0 <= member_rel < keep and keep - member_rel <= _RAW_KEEP:
            keep = member_rel
        self._rbase += keep
        self._rpos -= keep
        self._rbuf = self._rbuf[keep:] + chunk
        return True

    # -- members
    def next_member(self, count_garbage: bool = True) -> bool:
        """Start the next gzip member (the whole file when plain); False at end of file.

        Non-blank bytes skipped to find it count as one corrupt record."""
        self.buf_base += len(self.buf)
        self.buf, self.pos, self.member_done = b"", 0, False
        if not self.gzip:
            if self._started:
                self.member_done = True
                return False
            self._started = True
            self.fresh = True
            self.buf, self._rbuf = self._rbuf, b""
            self.buf_base = self._rbase
            return bool(self.buf) or self._fill()
        garbage = False
        while True:
            i = self._rbuf.find(_GZIP_MAGIC, self._rpos)
            end = i if i >= 0 else max(self._rpos, len(self._rbuf) - 2)
            if self._rbuf[self._rpos:end].strip(_BLANK):
                garbage = True
            self._rpos = end
            if i >= 0:
                break
            if not self._raw_more():
                if self._rbuf[self._rpos:].strip(_BLANK):
                    garbage = True
                self._rpos = len(self._rbuf)
                self._note_garbage(garbage and count_garbage)
                self.member_done = True
                return False
        self._note_garbage(garbage and count_garbage)
        self._d = zlib.decompressobj(31)
        self.member_offset = self._rbase + self._rpos
        self.fresh = True
        return True

    def _note_garbage(self, garbage: bool) -> None:
        if garbage:
            self._counts["records"] += 1
            self._counts["skip_corrupt"] += 1

    def recover_from_corrupt_member(self) -> bool:
        """After a zlib error: look for the next member magic after the bad member's start."""
        start = self.member_offset + 1 - self._rbase
        self._rpos = max(self._rpos, start) if start < 0 else start
        return self.next_member(count_garbage=False)

    def _fill(self) -> bool:
        """Append more bytes of the current member to buf; False when the member has no more."""
        if self.member_done:
            return False
        if not self.gzip:
            chunk = self._read_raw()
            if not chunk:
                self.member_done = True
                return False
            self._append(chunk)
            return True
        d = self._d
        while True:
            if self._rpos >= len(self._rbuf) and not self._raw_more():
                self.member_done = True
                self.truncated = True  # the file ended inside a gzip member
                return False
            view = memoryview(self._rbuf)[self._rpos:self._rpos + _RAW_CHUNK]
            try:
                out = d.decompress(view, _OUT_CHUNK)
            except zlib.error:
                self.member_done = True
                raise _CorruptMember() from None
            # At the end of a member zlib reports the leftover input in both attributes.
            used = len(view) - len(d.unused_data if d.eof else d.unconsumed_tail)
            if d.eof:
                self.member_done = True
            self._rpos += used
            if out:
                self._append(out)
                return True
            if d.eof:
                return False

    def _append(self, data: bytes) -> None:
        self.buf_base += self.pos
        self.buf = self.buf[self.pos:] + data if self.pos < len(self.buf) else data
        self.pos = 0

    def more(self) -> bool:
        """Get more bytes for the record being read, continuing into the next gzip member only if
        that member continues the stream (multi-member gzip) rather than starting a record."""
        if self._fill():
            return True
        if not self.gzip or self._raw_eof and self._rpos >= len(self._rbuf) or self.truncated:
            return False
        saved = self.buf[self.pos:]
        if not self.next_member():
            return False
        while len(self.buf) < 5 and self._fill():
            pass
        if self.buf.startswith(b"WARC/"):
            raise _RecordCut()
        self.fresh = False
        self.buf, self.pos = saved + self.buf, 0
        self.buf_base -= len(saved)
        return True

    # -- record-level reads
    def skip_blank(self) -> bool:
        """Skip blank bytes before a record, across members; False at end of file."""
        while True:
            n = len(self.buf)
            while self.pos < n and self.buf[self.pos] in _BLANK:
                self.pos += 1
            if self.pos < n:
                return True
            if not self._fill() and not self.next_member():
                return False

    def record_offset(self) -> int:
        """Raw file offset where reading can restart to get this record first, else -1."""
        if not self.gzip:
            return self.buf_base + self.pos
        off = self.member_offset if self.fresh else -1
        self.fresh = False
        return off

    def header_block(self, limit: int) -> bytes | None:
        """Bytes up to the next blank line, which must end within `limit` bytes; None if it does not.
        Consumes the block and the blank line."""
        while True:
            end = min(len(self.buf), self.pos + limit)
            m = _HEADER_END.search(self.buf, self.pos, end)
            if m:
                block = self.buf[self.pos:m.start()]
                self.pos = m.end()
                return block
            if end - self.pos >= limit:
                return None
            if not self.more():
                raise _EndOfData()

    def read(self, n: int) -> bytes:
        parts = []
        while n > 0:
            if self.pos >= len(self.buf) and not self.more():
                raise _EndOfData()
            piece = self.buf[self.pos:self.pos + n]
            self.pos += len(piece)
            n -= len(piece)
            parts.append(piece)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def skip(self, n: int) -> None:
        while n > 0:
            if self.pos >= len(self.buf) and not self.more():
                raise _EndOfData()
            step = min(n, len(self.buf) - self.pos)
            self.pos += step
            n -= step

    def resync(self, from_abs: int) -> None:
        """Move to the next `WARC/<digit>` at or after stream position `from_abs` in this member,
        or to the member's end (the next member start is the next candidate)."""
        rel = from_abs - self.buf_base
        if 0 <= rel <= len(self.buf):
            self.pos = rel  # rewind: the next record may start inside what was taken for a header
        while True:
            m = _SYNC.search(self.buf, self.pos)
            if m:
                self.pos = m.start()
                return
            self.pos = max(self.pos, len(self.buf) - 5)
            if not self._fill():
                self.pos = len(self.buf)
                return


# ----------------------------------------------------------------------------------------------
# Header, date, charset helpers.

def _parse_headers(block: bytes, encoding: str) -> tuple[str, dict[str, str]]:
    """(first line, {lower-cased name: value}); the first occurrence of a name wins, lines
    without ':' are ignored, folded continuation lines are joined."""
    lines = block.decode(encoding, "replace").split("\n")
    headers: dict[str, str] = {}
    last = None
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and last is not None:
            headers[last] = (headers[last] + " " + line.strip()).strip()
            continue
        name, sep, value = line.partition(":")
        if not sep:
            continue
        name = name.strip().lower()
        if name not in headers:
            headers[name] = value.strip()
            last = name
        else:
            last = None
    return lines[0].strip(), headers


_ISO_DATE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,]\d+)?)?)?\s*(Z|[+-]\d{2}:?\d{2})?",
    re.I,
)
_COMPACT_DATE = re.compile(r"(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})?\d*")


def normalise_warc_date(value: str | None) -> str:
    """WARC-Date -> 'YYYY-MM-DDTHH:MM:SSZ' (UTC), or '' when missing or malformed."""
    if not value:
        return ""
    value = value.strip()
    m = _ISO_DATE.fullmatch(value)
    tz = None
    if m:
        y, mo, d, h, mi, s, tz = m.groups()
    else:
        m = _COMPACT_DATE.fullmatch(value)  # ARC/Heritrix 14-digit timestamps
        if not m:
            return ""
        y, mo, d, h, mi, s = m.groups()
    try:
        dt = datetime(int(y), int(mo), int(d), int(h or 0), int(mi or 0), int(s or 0), tzinfo=timezone.utc)
        if tz and tz.upper() != "Z":
            sign = 1 if tz[0] == "+" else -1
            digits = tz[1:].replace(":", "")
            dt -= sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
    except (ValueError, OverflowError):
        return ""
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


_CT_CHARSET = re.compile(r"""charset\s*=\s*["']?\s*([A-Za-z0-9_.:\-]+)""", re.I)
_META_CHARSET = re.compile(rb"""<meta[^>]*?charset\s*=\s*["']?\s*([A-Za-z0-9_.:\-]+)""", re.I)
_XML_ENCODING = re.compile(rb"""^\s*<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9_.:\-]+)""", re.I)
_SNIFF_BYTES = 4096
# Labels that browsers (WHATWG Encoding) decode with a superset codec; latin-1/ascii pages
# routinely contain cp1252 bytes such as curly quotes.
_SUPERSETS = {
    "ascii": "cp1252",
    "latin-1": "cp1252",
    "iso8859-1": "cp1252",
    "iso8859-9": "cp1254",
    "iso8859-11": "cp874",
    "tis-620": "cp874",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "shift_jis": "cp932",
    "euc_kr": "cp949",
}
# Real codecs that must not decode web pages (not text encodings, or a security problem).
_REFUSED = {"utf-7", "idna", "punycode", "unicode-escape", "raw-unicode-escape", "undefined", "mbcs", "oem"}
_ASCII = bytes(range(128))


def _codec(label: str) -> str | None:
    """Python codec name for a charset label, or None if unknown / not a text codec."""
    try:
        info = codecs.lookup(label.strip().strip("\"'").lower())
    except (LookupError, ValueError):
        return None
    name = info.name.replace("_", "-") if info.name.startswith(("utf", "raw", "unicode")) else info.name
    if not getattr(info, "_is_text_encoding", True) or name in _REFUSED:
        return None
    return _SUPERSETS.get(info.name, info.name)


def sniff_charset(html: bytes) -> str | None:
    """Charset label declared in a <meta> tag or XML declaration in the first 4 KB."""
    head = html[:_SNIFF_BYTES]
    m = _META_CHARSET.search(head) or _XML_ENCODING.search(head)
    return m.group(1).decode("ascii") if m else None


def decode_html(body: bytes, content_type: str = "") -> str:
    """Decode an HTML body: BOM, else HTTP charset, else <meta>, else UTF-8; never raises.

    A bogus or missing declaration on bytes that are not valid UTF-8 falls back to cp1252 when
    the bytes look like a legacy single-byte page (most non-ASCII bytes invalid as UTF-8)."""
    if body.startswith(codecs.BOM_UTF8):
        return body[3:].decode("utf-8", "replace")
    if body.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return body.decode("utf-16", "replace")
    m = _CT_CHARSET.search(content_type) if content_type else None
    labels = (m.group(1) if m else None, sniff_charset(body))
    for label in labels:
        if not label:
            continue
        enc = _codec(label)
        if enc is None:
            continue
        if enc.startswith(("utf-16", "utf-32", "utf_16", "utf_32")):
            enc = "utf-8"  # without a BOM such a declaration is wrong (HTML spec does the same)
        try:
            return body.decode(enc, "replace").lstrip("\ufeff")
        except Exception:  # a codec that fails even with errors="replace"
            break
    try:
        return body.decode("utf-8").lstrip("\ufeff")
    except UnicodeDecodeError:
        pass
    text = body.decode("utf-8", "replace")
    non_ascii = len(body.translate(None, _ASCII))
    if text.count("\ufffd") * 4 > non_ascii:
        return body.decode("cp1252", "replace")
    return text.lstrip("\ufeff")


def _dechunk(body: bytes) -> bytes:
    """Undo HTTP chunked transfer coding; the input unchanged if it is not chunked."""
    out, pos = [], 0
    while True:
        eol = body.find(b"\n", pos)
        if eol < 0:
            break
        size_field = body[pos:eol].split(b";", 1)[0].strip()
        try:
            size = int(size_field, 16)
        except ValueError:
            return body if not out else b"".join(out)
        if size == 0:
            break
        out.append(body[eol + 1:eol + 1 + size])
        pos = eol + 1 + size
        while body[pos:pos + 1] in (b"\r", b"\n") and pos < len(body):
            pos += 1
    return b"".join(out) if out else body


def _undo_http_encoding(body: bytes, headers: dict[str, str], cap: int) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = _dechunk(body)
    enc = headers.get("content-encoding", "").strip().lower()
    if enc in ("gzip", "x-gzip", "deflate"):
        for wbits in (47, -15):  # 47: zlib or gzip header auto-detected; -15: raw deflate
            try:
                return zlib.decompressobj(wbits).decompress(body, cap)
            except zlib.error:
                continue
    return body  # unknown coding or not actually encoded: keep the bytes


def _host(url: str) -> str:
    try:
        return (urlsplit(url).hostname or "").rstrip(".")
    except ValueError:
        return ""


# ----------------------------------------------------------------------------------------------
# Records.

_VERSION_LINE = re.compile(r"WARC/\d+\.\d+")
_STATUS_LINE = re.compile(rb"\s*HTTP/\d(?:\.\d)?\s+(\d{3})(?:\s|$)")


def _read_record(r: _Reader, opts: WarcReadOptions, counts: collections.Counter, source: str, offset: int):
    """Read one record at the reader's position; return a doc dict, or None when skipped."""
    start_abs = r.buf_base + r.pos
    block = r.header_block(opts.max_header_bytes)
    first, headers = _parse_headers(block, "utf-8") if block is not None else ("", {})
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
    _, http = _parse_headers(http_block, "latin-1")
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
        body = _undo_http_encoding(body, http, cap)[:cap]
    counts["records"] += 1
    counts["kept"] += 1
    counts["bytes_html"] += len(body)
    media = content_type.split(";", 1)[0].strip().lower() or identified.split(";", 1)[0].strip().lower()
    return {
        "id": headers.get("warc-record-id", "").strip().strip("<>"),
        "url": url,
        "host": _host(url),
        "date": normalise_warc_date(headers.get("warc-date")),
        "content_type": media,
        "html": decode_html(body, content_type),
        "source": source,
        "offset": offset,
    }


def iter_html_responses(
    stream: BinaryIO,
    source: str,
    options: WarcReadOptions,
    counts: collections.Counter,
) -> Iterator[dict]:
    """Yield the HTML responses of one WARC file (see the module docstring for counts).

    Each dict: id (WARC-Record-ID without <>), url (WARC-Target-URI), host (lower-cased, no port),
    date (ISO-8601 UTC 'YYYY-MM-DDTHH:MM:SSZ' or ''), content_type (HTTP media type), html (str),
    source (the `source` argument), offset (raw byte offset of the record's gzip member, or of the
    record in a plain file; -1 inside a whole-file gzip, where no seek point exists).
    Offsets are absolute when `stream.tell()` works at the start, else relative to the start.
    """
    try:
        base = stream.tell()
    except Exception:  # non-seekable streams may not even tell
        base = 0
    r = _Reader(stream, base, counts)
    if not r.next_member():
        return
    while True:
        doc = None
        try:
            if not r.skip_blank():
                break
            doc = _read_record(r, options, counts, source, r.record_offset())
        except _CorruptMember:
            counts["records"] += 1
            counts["skip_corrupt"] += 1
            if not r.recover_from_corrupt_member():
                break
        except _RecordCut:
            counts["records"] += 1
            counts["skip_corrupt"] += 1
        except _EndOfData:
            counts["records"] += 1
            counts["skip_corrupt"] += 1
            counts["truncated_file"] = 1
            break
        if doc is not None:
            yield doc
    if r.truncated:
        counts["truncated_file"] = 1


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
