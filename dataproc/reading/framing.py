"""WARC framing: a decompressed view of a WARC file that knows its gzip member boundaries.

Compression is sniffed from the first bytes: gzip-per-record (the Common Crawl norm), one gzip
stream over the whole file (or any multi-member gzip, e.g. pigz), or plain uncompressed WARC.
A corrupt member is skipped and reading resynchronises at the next member start, or at the next
`WARC/<digit>` marker in plain data (`dataproc.reading.records` decides what a record is).
"""
from __future__ import annotations

import collections
import re
import zlib
from typing import BinaryIO

# ISA-L's inflate (python-isal) is a drop-in for zlib's decompressobj at about twice the speed:
# reading real pages takes 0.37-0.39 ms per page against 0.56-0.58 with zlib (`bench_stages.py`,
# reading section). zlib stays the fallback for a platform without an isal wheel.
try:
    from isal import isal_zlib as _inflate

    _INFLATE_ERRORS: tuple[type[Exception], ...] = (zlib.error, _inflate.error)
except ImportError:  # pragma: no cover - isal is a dependency; this is for platforms without a wheel
    _inflate = zlib
    _INFLATE_ERRORS = (zlib.error,)

_GZIP_MAGIC = b"\x1f\x8b\x08"
_RAW_CHUNK = 64 * 1024
_OUT_CHUNK = 256 * 1024  # bounds the output of one inflate call: a tiny member can expand 1000x
_RAW_KEEP = 1024 * 1024  # compressed bytes kept behind the read point to resync after corruption
_BLANK = b" \t\r\n\x00"
HEADER_END = re.compile(rb"\r?\n\r?\n")
_SYNC = re.compile(rb"WARC/\d")


class CorruptMember(Exception):
    """The current gzip member does not inflate."""


class RecordCut(Exception):
    """A record ran past its gzip member into a member that starts a new record."""


class EndOfData(Exception):
    """The file ended inside a record."""


class MemberReader:
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
        self._d = _inflate.decompressobj(31)
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
            except _INFLATE_ERRORS:
                self.member_done = True
                raise CorruptMember() from None
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
            raise RecordCut()
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
            m = HEADER_END.search(self.buf, self.pos, end)
            if m:
                block = self.buf[self.pos:m.start()]
                self.pos = m.end()
                return block
            if end - self.pos >= limit:
                return None
            if not self.more():
                raise EndOfData()

    def read(self, n: int) -> bytes:
        parts = []
        while n > 0:
            if self.pos >= len(self.buf) and not self.more():
                raise EndOfData()
            piece = self.buf[self.pos:self.pos + n]
            self.pos += len(piece)
            n -= len(piece)
            parts.append(piece)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def skip(self, n: int) -> None:
        while n > 0:
            if self.pos >= len(self.buf) and not self.more():
                raise EndOfData()
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
