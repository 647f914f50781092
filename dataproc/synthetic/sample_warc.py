"""Deterministic sample WARC files with planted ground truth (tests, demo job, benchmarks).

`write_sample_warc(path, n_docs, seed)` writes `n_docs` English article pages plus planted
documents of every kind the pipeline must handle, and returns a `GroundTruth` saying what each
record is and which counts a correct `dataproc.reading.records.iter_html_responses` reports with
default options. Same arguments -> byte-identical file.

Planted kinds (count = ceil(n_docs * fraction), at least one of each rotating variant;
`PROPORTIONS`):
    exact_dup 5%    article body copied verbatim under another URL on another host
    near_dup 5%     article copy with words substituted to reach a word-5-gram Jaccard target
                    (cycling `near_dup_jaccards`); the exact Jaccard achieved is recorded
    boilerplate 3%  one or two short sentences inside huge menus and footers
    spam 3%         keyword stuffing / random character strings / one line repeated (rotating)
    non_english 4%  German, French, Spanish, Chinese (rotating)
    pii 3%          article with planted emails, public IPv4/IPv6 addresses, phone numbers
    blocked_url 2%  normal article on a host under `BLOCKED_DOMAIN`
    non_html 3%     image/jpeg, application/pdf, text/plain responses (rotating)
    non_200 2%      404 and 301 responses with HTML bodies (rotating)
    revisit 1%      revisit records of earlier URLs
    charset 1%      windows-1251 Russian / ISO-8859-1 French, charset declared only in <meta>
Fixed, once per file: one warcinfo record; one page with undecodable bytes (declared UTF-8);
one page with a bogus charset label holding latin-1 bytes; with `corrupt=True`: a record with a
malformed version line, a record without Content-Length, a record with a non-numeric
Content-Length, a run of garbage bytes between two records, a WARC/0.18 record with a malformed
WARC-Date (a readable article), and (`truncate_last`, default = `corrupt`) a last record cut in
the middle of its gzip member. `huge_page_bytes > 0` adds one HTML page of about that size.
With `cc_style=True` (default) every response is preceded by a request record and followed by a
metadata record, as in Common Crawl.
"""
from __future__ import annotations

import ipaddress
import math
import random
import re
from datetime import datetime, timedelta, timezone
from os import PathLike
from pathlib import Path

from dataproc.synthetic.english import ADJS, NAMES, NOUNS, EnglishText
from dataproc.synthetic.foreign import foreign_paragraphs
from dataproc.synthetic.ground_truth import DocTruth, GroundTruth, jaccard
from dataproc.synthetic.html_pages import MENU, article_html
from dataproc.synthetic.warc_bytes import RecordWriter, http_response, record_uuid, warc_record
from llmforge.common.errors import UserError

BLOCKED_DOMAIN = "blocked-example.test"

PROPORTIONS = {
    "exact_dup": 0.05,
    "near_dup": 0.05,
    "boilerplate": 0.03,
    "spam": 0.03,
    "non_english": 0.04,
    "pii": 0.03,
    "blocked_url": 0.02,
    "non_html": 0.03,
    "non_200": 0.02,
    "revisit": 0.01,
    "charset": 0.01,
}
# At least one of each rotating variant, however small n_docs is.
_MIN_COUNTS = {"spam": 3, "non_english": 4, "non_html": 3, "non_200": 2, "charset": 2, "near_dup": 4}
DEFAULT_NEAR_DUP_JACCARDS = (0.9, 0.8, 0.7, 0.5)
# The reader defaults the expected counts assume (dataproc.reading.records.WarcReadOptions()).
DEFAULT_MAX_HTML_BYTES = 5_000_000


class _SampleWriter:
    def __init__(self, f, compression: str, rng: random.Random, cc_style: bool):
        self.out = RecordWriter(f, compression)
        self.rng = rng
        self.cc_style = cc_style
        self.docs: list[DocTruth] = []
        self.counts: dict[str, int] = {}
        self.t0 = datetime(2024, 5, 18, tzinfo=timezone.utc)
        self.n = 0

    def _date(self) -> str:
        self.n += 1
        return (self.t0 + timedelta(seconds=7 * self.n)).strftime("%Y-%m-%dT%H:%M:%SZ")

    def _count(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n

    def _aux(self, wtype: str, url: str, date: str, block: bytes, content_type: str, refers: str) -> None:
        rid = record_uuid(self.rng)
        self.out.record(warc_record([("WARC-Type", wtype), ("WARC-Date", date), ("WARC-Record-ID", f"<{rid}>"),
                               ("WARC-Target-URI", url), ("WARC-Concurrent-To", f"<{refers}>"),
                               ("Content-Type", content_type)], block))
        self._count("records")
        self._count("skip_" + wtype)

    def response(self, url: str, kind: str, body: bytes | list[bytes], *, status: int = 200, content_type: str = "text/html; charset=utf-8",
                 identified: str | None = "text/html", extra_http=(), version: str = "1.0", date: str | None = None,
                 cut: bool = False, **truth) -> DocTruth:
        rid = record_uuid(self.rng)
        date_ok = self._date()
        date = date or date_ok
        host = url.split("/")[2]
        path = "/" + url.split("/", 3)[3] if url.count("/") >= 3 else "/"
        if self.cc_style and not cut:
            req = (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: CCBot/2.0 (https://commoncrawl.org/faq/)\r\n"
                   f"Accept: text/html,application/xhtml+xml,*/*;q=0.8\r\nAccept-Encoding: br,gzip\r\n\r\n").encode()
            self._aux("request", url, date_ok, req, "application/http; msgtype=request", rid)
        headers = [("WARC-Type", "response"), ("WARC-Date", date), ("WARC-Record-ID", f"<{rid}>"),
                   ("WARC-Target-URI", url), ("WARC-IP-Address", "203.0.113.7"),
                   ("Content-Type", "application/http; msgtype=response")]
        if identified:
            headers.append(("WARC-Identified-Payload-Type", identified))
        self.out.record(warc_record(headers, http_response(status, content_type, body, list(extra_http)), version), cut=cut)
        is_html = "html" in content_type or identified in ("text/html", "application/xhtml+xml")
        size = sum(map(len, body)) if isinstance(body, list) else len(body)
        if cut:
            expect = "skip_corrupt"
        elif status != 200:
            expect = "skip_status"
        elif not is_html:
            expect = "skip_not_html"
        else:
            expect = "kept"
            self._count("bytes_html", min(size, DEFAULT_MAX_HTML_BYTES))
            if size > DEFAULT_MAX_HTML_BYTES:
                self._count("truncated_body")
        self._count("records")
        self._count(expect)
        if cut:
            self._count("truncated_file")
        if self.cc_style and not cut:
            meta = (f"fetchTimeMs: {self.rng.randint(20, 900)}\r\ncharset-detected: UTF-8\r\n"
                    f"languages-cld2: {{\"reliable\":true,\"languages\":[{{\"code\":\"{truth.get('lang', 'en')}\"}}]}}\r\n").encode()
            self._aux("metadata", url, date_ok, meta, "application/warc-fields", rid)
        doc = DocTruth(record_id=rid, url=url, kind=kind, expect=expect, status=status,
                       content_type=content_type.split(";")[0].strip(), html_bytes=size, **truth)
        self.docs.append(doc)
        return doc

    def raw_record(self, kind: str, data: list[bytes], url: str = "", rid: str = "") -> None:
        self.out.record(data)
        self._count("records")
        self._count("skip_corrupt")
        self.docs.append(DocTruth(record_id=rid, url=url, kind=kind, expect="skip_corrupt"))

    def garbage(self, data: bytes) -> None:
        self.out.garbage(data)
        self._count("records")
        self._count("skip_corrupt")
        self.docs.append(DocTruth(record_id="", url="", kind="garbage", expect="skip_corrupt"))

    def warcinfo(self, filename: str) -> None:
        rid = record_uuid(self.rng)
        block = (f"software: llmforge.dataproc.samples\r\nformat: WARC File Format 1.0\r\n"
                 f"isPartOf: LLMFORGE-SAMPLE\r\nfilename: {filename}\r\n").encode()
        self.out.record(warc_record([("WARC-Type", "warcinfo"), ("WARC-Date", self._date()), ("WARC-Filename", filename),
                               ("WARC-Record-ID", f"<{rid}>"), ("Content-Type", "application/warc-fields")], block))
        self._count("records")
        self._count("skip_warcinfo")
        self.docs.append(DocTruth(record_id=rid, url="", kind="warcinfo", expect="skip_warcinfo"))

    def revisit(self, url: str) -> None:
        rid = record_uuid(self.rng)
        http = b"HTTP/1.1 304 Not Modified\r\nServer: nginx\r\n\r\n"
        self.out.record(warc_record([("WARC-Type", "revisit"), ("WARC-Date", self._date()), ("WARC-Record-ID", f"<{rid}>"),
                               ("WARC-Target-URI", url), ("WARC-Refers-To-Target-URI", url),
                               ("WARC-Profile", "http://netpreserve.org/warc/1.0/revisit/server-not-modified"),
                               ("Content-Type", "application/http; msgtype=response")], http))
        self._count("records")
        self._count("skip_revisit")
        self.docs.append(DocTruth(record_id=rid, url=url, kind="revisit", expect="skip_revisit", status=304))


def _near_dup(rng: random.Random, paragraphs: list[str], target: float) -> tuple[list[str], float]:
    """Substitute words at scattered positions until the word-5-gram Jaccard estimate reaches
    `target`; return the new paragraphs and the exact Jaccard (brute force over shingle sets)."""
    toks = [p.split(" ") for p in paragraphs]
    flat = [(i, j) for i, p in enumerate(toks) for j in range(len(p))]
    n = len(flat)
    n_sh = max(n - 4, 1)
    need = n_sh * (1 - target) / (1 + target)  # changed shingles for J = (N - S) / (N + S)
    hit: set[int] = set()
    order = list(range(n))
    rng.shuffle(order)
    for k in order:
        if len(hit) >= need:
            break
        i, j = flat[k]
        tok = toks[i][j]
        m = re.match(r"^([\"(]?)([A-Za-z]+)(.*)$", tok)
        if not m:
            continue
        core = m.group(2)
        while True:
            new = rng.choice(NOUNS if rng.random() < 0.6 else ADJS)
            if new != core.lower():
                break
        if core[0].isupper():
            new = new.capitalize()
        toks[i][j] = m.group(1) + new + m.group(3)
        hit.update(range(max(k - 4, 0), min(k, n_sh - 1) + 1))
    new_pars = [" ".join(p) for p in toks]
    return new_pars, jaccard("\n".join(paragraphs), "\n".join(new_pars))


def _public_ipv4(rng: random.Random) -> str:
    while True:
        ip = ipaddress.IPv4Address(rng.getrandbits(32))
        if ip.is_global and not ip.is_multicast:
            return str(ip)


def _public_ipv6(rng: random.Random) -> str:
    while True:  # 2000::/3 is global unicast; skip documentation/special ranges
        ip = ipaddress.IPv6Address((0x2 << 125) | rng.getrandbits(125))
        if ip.is_global:
            return ip.compressed


_EMAIL_HOSTS = ("postmail.net", "inbox-mail.com", "fastmail-example.org", "newsroom.co.uk")


def _pii(rng: random.Random) -> tuple[list[str], list[str]]:
    first, last = rng.choice(NAMES).lower().split()
    email = f"{first}.{last}{rng.randint(1, 99)}@{rng.choice(_EMAIL_HOSTS)}"
    email2 = f"{rng.choice(('info', 'press', 'contact', 'support'))}@{rng.choice(_EMAIL_HOSTS)}"
    phone = f"+1 {rng.randint(201, 989)}-555-{rng.randint(100, 9999):04d}"
    phone2 = f"({rng.randint(201, 989)}) 555-{rng.randint(100, 9999):04d}"
    ip4, ip6 = _public_ipv4(rng), _public_ipv6(rng)
    pars = [f"For more information, readers can write to {email} or call the office at {phone} during the week.",
            f"The press team said that questions should be sent to {email2}, and the night desk can be reached at {phone2}.",
            f"According to the log, the attack came from the address {ip4} and later from {ip6} on the same night."]
    return pars, [email, phone, email2, phone2, ip4, ip6]


def _garbage(rng: random.Random, n: int) -> bytes:
    # Printable, no '/', no newlines: cannot contain a gzip magic, a 'WARC/' marker or a blank line.
    alphabet = bytes(c for c in range(0x21, 0x7F) if c != ord("/"))
    return bytes(rng.choices(alphabet, k=n))


def _spam(rng: random.Random, sub: str) -> list[str]:
    if sub == "stuffing":
        kws = ["cheap watches", "buy now", "best price", "free shipping", "replica watches", "discount"]
        return [" ".join(rng.choice(kws) for _ in range(60)) for _ in range(4)]
    if sub == "random":
        letters = "abcdefghijklmnopqrstuvwxyz0123456789"
        return [" ".join("".join(rng.choices(letters, k=rng.randint(6, 18))) for _ in range(80)) for _ in range(4)]
    line = f"Click here to win a free {rng.choice(NOUNS)} today!"
    return [line] * 40


def write_sample_warc(
    path: str | PathLike,
    n_docs: int = 500,
    seed: int = 0,
    *,
    gzip_per_record: bool = True,
    whole_file_gzip: bool = False,
    corrupt: bool = True,
    truncate_last: bool | None = None,
    huge_page_bytes: int = 0,
    cc_style: bool = True,
    near_dup_jaccards: tuple[float, ...] = DEFAULT_NEAR_DUP_JACCARDS,
) -> GroundTruth:
    """Write a sample WARC (see the module docstring) and return its ground truth.

    Compression: gzip member per record (default), one gzip stream over the file
    (`gzip_per_record=False, whole_file_gzip=True`) or none (both False)."""
    if n_docs < 1:
        raise UserError("n_docs must be >= 1")
    if gzip_per_record and whole_file_gzip:
        raise ValueError("gzip_per_record and whole_file_gzip are exclusive")
    compression = "gzip_per_record" if gzip_per_record else "gzip_file" if whole_file_gzip else "none"
    if truncate_last is None:
        truncate_last = corrupt
    rng = random.Random(seed)
    en = EnglishText(rng)
    sites = [f"www.{a}-{b}.example" for a, b in zip(rng.sample(ADJS, 40), rng.sample(NOUNS, 40))]

    plan = ["article"] * n_docs
    for kind, frac in PROPORTIONS.items():
        plan += [kind] * max(_MIN_COUNTS.get(kind, 1), math.ceil(n_docs * frac))
    plan += ["undecodable", "bogus_charset"]
    if huge_page_bytes > 0:
        plan.append("huge")
    rng.shuffle(plan)
    plan.remove("article")
    plan.insert(0, "article")  # duplicates need an earlier source
    if corrupt:
        for i, kind in enumerate(["corrupt_header", "garbage", "warc018_bad_date", "missing_content_length",
                                  "bad_content_length"]):
            plan.insert(1 + (i + 1) * len(plan) // 6, kind)

    rotation: dict[str, int] = {}

    def rot(kind: str, options):
        i = rotation.get(kind, 0)
        rotation[kind] = i + 1
        return options[i % len(options)]

    titles = [en.title() for _ in range(512)]

    def related(n: int = 4) -> list[str]:
        return [titles[int(rng.random() * len(titles))] for _ in range(n)]

    recent: list[tuple[str, str, list[str], str]] = []  # (record id, title, paragraphs, url) of recent articles
    path = Path(path)
    with open(path, "wb") as f:
        w = _SampleWriter(f, compression, rng, cc_style)
        w.warcinfo(path.name)
        for k, kind in enumerate(plan):
            site = sites[k % len(sites)]
            url = f"https://{site}/{rng.choice(MENU).lower()}/{k}-{rng.getrandbits(32):08x}.html"
            if kind in ("article", "blocked_url", "pii", "warc018_bad_date"):
                title, pars = en.title(), en.paragraphs()
                extra: dict = {}
                if kind == "blocked_url":
                    sub = rot(kind, ("www.", "", "news."))
                    url = f"https://{sub}{BLOCKED_DOMAIN}/{k}/story.html"
                if kind == "pii":
                    pii_pars, planted = _pii(rng)
                    pars = pars[:2] + pii_pars + pars[2:]
                    extra = {"pii": planted}
                html = article_html(site, title, f"By {rng.choice(NAMES)}", pars, related())
                if kind == "warc018_bad_date":
                    w.response(url, kind, html.encode(), version="0.18", date=rot(kind, ("2008-13-45T99:99:99Z",)), **extra)
                    continue
                doc = w.response(url, kind, html.encode(), **extra)
                if kind == "article":
                    recent.append((doc.record_id, title, pars, url))
                    del recent[:-200]
            elif kind in ("exact_dup", "near_dup"):
                src_id, title, pars, _ = rng.choice(recent)
                dup_site = sites[(k + 7) % len(sites)]
                url = f"https://{dup_site}/copy/{k}.html"
                if kind == "exact_dup":
                    html = article_html(dup_site, title, "Staff", pars, related())
                    w.response(url, kind, html.encode(), dup_of=src_id)
                else:
                    target = rot(kind, near_dup_jaccards)
                    new_pars, jac = _near_dup(rng, pars, target)
                    html = article_html(dup_site, title, "Staff", new_pars, related())
                    w.response(url, kind, html.encode(), dup_of=src_id, jaccard=jac)
            elif kind == "boilerplate":
                pars = [en.sentence()]
                html = article_html(site, en.title(), "", pars, related(40),
                                     menu_repeat=20, footer_repeat=20)
                w.response(url, kind, html.encode(), text=pars)
            elif kind == "spam":
                sub = rot(kind, ("stuffing", "random", "repeated"))
                pars = _spam(rng, sub)
                html = article_html(site, "Best deals online", "", pars, [])
                w.response(url, kind, html.encode(), subkind=sub)
            elif kind == "non_english":
                lang = rot(kind, ("de", "fr", "es", "zh"))
                pars = foreign_paragraphs(rng, lang)
                html = article_html(site, pars[0][:40], "", pars, [], lang=lang)
                w.response(url, kind, html.encode(), lang=lang, text=pars)
            elif kind == "charset":
                lang, charset, head = rot(kind, (
                    ("ru", "windows-1251", '<meta charset="windows-1251">'),
                    ("fr", "iso-8859-1", '<meta http-equiv="Content-Type" content="text/html; charset=iso-8859-1">'),
                ))
                pars = foreign_paragraphs(rng, lang)
                html = article_html(site, pars[0][:40], "", pars, [], lang=lang, head_extra=head)
                w.response(url, kind, html.encode(charset), content_type="text/html", lang=lang, charset=charset, text=pars)
            elif kind == "bogus_charset":
                pars = foreign_paragraphs(rng, "fr")
                html = article_html(site, pars[0][:40], "", pars, [], lang="fr", head_extra="")
                w.response(url, kind, html.encode("latin-1"), content_type="text/html; charset=x-no-such-charset-42",
                           lang="fr", charset="x-no-such-charset-42", text=pars)
            elif kind == "undecodable":
                pars = en.paragraphs(2, 3)
                html = article_html(site, en.title(), "", pars, []).encode()
                cut = html.index(b"</article>")
                html = html[:cut] + b"<p>Broken bytes: \xff\xfe\xc3\x28 \xa0\xa1 end.</p>" + html[cut:]
                w.response(url, kind, html, text=pars)
            elif kind == "non_html":
                sub = rot(kind, ("jpeg", "pdf", "text"))
                if sub == "jpeg":
                    body, ct = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + rng.randbytes(2000) + b"\xff\xd9", "image/jpeg"
                elif sub == "pdf":
                    body, ct = b"%PDF-1.4\n" + rng.randbytes(3000) + b"\n%%EOF\n", "application/pdf"
                else:
                    body, ct = "\n".join(en.paragraphs(2, 3)).encode(), "text/plain"
                w.response(url.rsplit(".", 1)[0] + {"jpeg": ".jpg", "pdf": ".pdf", "text": ".txt"}[sub], kind, body,
                           content_type=ct, identified=ct, subkind=sub)
            elif kind == "non_200":
                sub = rot(kind, ("404", "301"))
                if sub == "404":
                    body = b"<!DOCTYPE html><html><head><title>Not found</title></head><body><h1>Page not found</h1></body></html>"
                    w.response(url, kind, body, status=404, subkind=sub)
                else:
                    body = b"<html><head><title>Moved</title></head><body><a href=\"/new\">Moved here</a></body></html>"
                    w.response(url, kind, body, status=301, subkind=sub, extra_http=[("Location", f"https://{site}/new")])
            elif kind == "revisit":
                w.revisit(rng.choice(recent)[3])
            elif kind == "huge":
                block = article_html(site, en.title(), "", en.paragraphs(20, 20), []).encode()
                reps = max(1, huge_page_bytes // len(block))
                # The same block object repeated: the page is never materialised in memory.
                w.response(url, kind, [b"<!DOCTYPE html><html><body>", *[block] * reps, b"</body></html>"])
            elif kind == "corrupt_header":
                rid = record_uuid(rng)
                block = http_response(200, "text/html", b"<html><body><p>Lost page.</p></body></html>")
                parts = warc_record([("WARC-Type", "response"), ("WARC-Record-ID", f"<{rid}>"), ("WARC-Target-URI", url)], block)
                parts[0] = parts[0].replace(b"WARC/1.0", b"WRAC/1.0", 1)  # malformed version line
                w.raw_record(kind, parts, url, rid)
            elif kind in ("missing_content_length", "bad_content_length"):
                rid = record_uuid(rng)
                block = http_response(200, "text/html", b"<html><body><p>Lost page.</p></body></html>")
                length = None if kind == "missing_content_length" else "12abc"
                w.raw_record(kind, warc_record([("WARC-Type", "response"), ("WARC-Date", w._date()),
                                          ("WARC-Record-ID", f"<{rid}>"), ("WARC-Target-URI", url)],
                                         block, length=length), url, rid)
            elif kind == "garbage":
                w.garbage(_garbage(rng, 300) + b"\r\n")
        if truncate_last:
            body = b"%PDF-1.4\n" + rng.randbytes(8000) + b"\n%%EOF\n"
            w.response(f"https://{sites[0]}/files/last.pdf", "truncated", body, content_type="application/pdf",
                       identified="application/pdf", cut=True)
        w.out.close()

    counts = {k: v for k, v in w.counts.items() if v}
    return GroundTruth(path=str(path), seed=seed, n_docs=n_docs, compression=compression,
                       blocked_domains=[BLOCKED_DOMAIN], docs=w.docs, expected_counts=counts,
                       proportions=dict(PROPORTIONS),
                       options={"corrupt": corrupt, "truncate_last": truncate_last, "huge_page_bytes": huge_page_bytes,
                                "cc_style": cc_style, "near_dup_jaccards": list(near_dup_jaccards)})


