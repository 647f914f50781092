"""Deterministic sample WARC files with planted ground truth (tests, demo job, benchmarks).

`write_sample_warc(path, n_docs, seed)` writes `n_docs` English article pages plus planted
documents of every kind the pipeline must handle, and returns a `GroundTruth` saying what each
record is and which counts a correct `dataproc.warc_records.iter_html_responses` reports with
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

Records are assembled by hand rather than with warcio's WARCWriter: it measured ~6k records/s,
which with three records per page caps writing below 2k docs/s. Tests check that warcio reads
the files. `write_warc_from_html_pages` (few real pages, speed irrelevant) uses WARCWriter.
"""
from __future__ import annotations

import dataclasses
import gzip
import io
import ipaddress
import json
import math
import random
import re
import uuid
import zlib
from datetime import datetime, timedelta, timezone
from os import PathLike
from pathlib import Path
from typing import Iterable

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
# The reader defaults the expected counts assume (dataproc.warc_records.WarcReadOptions()).
_DEFAULT_MAX_HTML_BYTES = 5_000_000

# ----------------------------------------------------------------------------------------------
# Ground truth.


@dataclasses.dataclass
class DocTruth:
    """One planted record. `expect` is the count key a correct reader with default options puts
    it under ('kept', 'skip_status', 'skip_not_html', 'skip_revisit', 'skip_corrupt', ...)."""

    record_id: str  # WARC-Record-ID without <>; "" for garbage
    url: str
    kind: str  # article, exact_dup, near_dup, boilerplate, spam, non_english, pii, blocked_url,
    #            non_html, non_200, revisit, charset, undecodable, bogus_charset, huge,
    #            warc018_bad_date, corrupt_header, missing_content_length, bad_content_length,
    #            garbage, truncated
    expect: str
    status: int | None = None
    content_type: str = ""
    lang: str = "en"
    dup_of: str | None = None  # record id of the source article (exact_dup, near_dup)
    jaccard: float | None = None  # near_dup: exact Jaccard of word 5-gram sets (see shingles())
    subkind: str = ""  # spam: stuffing/random/repeated; non_html: jpeg/pdf/text; non_200: 404/301
    pii: list[str] = dataclasses.field(default_factory=list)  # planted strings, verbatim
    charset: str = ""  # declared charset of the body bytes
    text: list[str] | None = None  # planted body paragraphs (Unicode) for special pages
    html_bytes: int = 0  # length of the HTTP body


@dataclasses.dataclass
class GroundTruth:
    path: str
    seed: int
    n_docs: int
    compression: str  # "gzip_per_record", "gzip_file" or "none"
    blocked_domains: list[str]
    docs: list[DocTruth]
    expected_counts: dict[str, int]  # what iter_html_responses reports with default options
    proportions: dict[str, float]
    options: dict

    def to_json(self, path: str | PathLike) -> None:
        Path(path).write_text(json.dumps(dataclasses.asdict(self), ensure_ascii=False))

    @classmethod
    def from_json(cls, path: str | PathLike) -> "GroundTruth":
        data = json.loads(Path(path).read_text())
        data["docs"] = [DocTruth(**d) for d in data["docs"]]
        return cls(**data)

    def by_kind(self, kind: str) -> list[DocTruth]:
        return [d for d in self.docs if d.kind == kind]

    def kept_ids(self) -> set[str]:
        return {d.record_id for d in self.docs if d.expect == "kept"}


_WORD = re.compile(r"\w+")


def shingles(text: str, n: int = 5) -> set[tuple[str, ...]]:
    """Word n-gram set used for the recorded Jaccard: lower-cased `\\w+` tokens."""
    words = _WORD.findall(text.lower())
    return {tuple(words[i:i + n]) for i in range(max(len(words) - n + 1, 1))}


def jaccard(a: str, b: str, n: int = 5) -> float:
    sa, sb = shingles(a, n), shingles(b, n)
    return len(sa & sb) / len(sa | sb) if sa or sb else 1.0


# ----------------------------------------------------------------------------------------------
# Text generators (built-in vocabularies, a small sentence grammar).

_NOUNS = (
    "city council river village teacher student market farmer bridge museum library garden "
    "harbor railway station hospital doctor nurse engineer scientist company factory worker "
    "mountain valley forest island coast festival concert painter writer journalist reporter "
    "school university court judge minister election budget report study survey project "
    "program system network community family neighbor child parent museum exhibition gallery "
    "restaurant kitchen recipe season winter summer harvest storm flood drought road tunnel "
    "airport pilot passenger ticket price market shop customer owner manager team player coach "
    "match stadium league record history century decade tradition language culture region "
    "country border treaty agreement policy plan meeting debate question answer problem solution "
    "machine computer device battery engine vehicle bicycle boat ship captain crew island lake "
    "castle church tower square street avenue building apartment house roof window door floor "
    "letter book novel poem story article newspaper magazine film director actor audience stage"
).split()
_NOUNS = list(dict.fromkeys(_NOUNS))
_IRREGULAR = {"child": "children", "city": "cities", "country": "countries", "library": "libraries",
              "family": "families", "century": "centuries", "story": "stories", "study": "studies",
              "gallery": "galleries", "factory": "factories", "company": "companies", "policy": "policies",
              "community": "communities", "university": "universities", "coach": "coaches",
              "match": "matches", "church": "churches", "bus": "buses", "address": "addresses"}
_PLURALS = [_IRREGULAR.get(n, n + "s") for n in _NOUNS]
_ADJS = (
    "old new small large quiet busy local national public private early late modern ancient "
    "strong weak bright dark cold warm famous simple complex careful rapid slow green narrow "
    "wide deep steep rural urban northern southern eastern western young senior regular rare "
    "common useful difficult important recent annual popular wooden stone historic fragile "
    "efficient expensive cheap generous honest patient curious nervous proud calm heavy light"
).split()
_VERBS = [  # (base, past, third person)
    ("build", "built", "builds"), ("visit", "visited", "visits"), ("open", "opened", "opens"),
    ("close", "closed", "closes"), ("describe", "described", "describes"), ("find", "found", "finds"),
    ("repair", "repaired", "repairs"), ("support", "supported", "supports"), ("review", "reviewed", "reviews"),
    ("study", "studied", "studies"), ("improve", "improved", "improves"), ("protect", "protected", "protects"),
    ("announce", "announced", "announces"), ("discuss", "discussed", "discusses"), ("measure", "measured", "measures"),
    ("replace", "replaced", "replaces"), ("design", "designed", "designs"), ("record", "recorded", "records"),
    ("explain", "explained", "explains"), ("follow", "followed", "follows"), ("reach", "reached", "reaches"),
    ("move", "moved", "moves"), ("carry", "carried", "carries"), ("watch", "watched", "watches"),
    ("plan", "planned", "plans"), ("change", "changed", "changes"), ("sell", "sold", "sells"),
    ("buy", "bought", "buys"), ("teach", "taught", "teaches"), ("write", "wrote", "writes"),
    ("paint", "painted", "paints"), ("collect", "collected", "collects"), ("share", "shared", "shares"),
    ("test", "tested", "tests"), ("clean", "cleaned", "cleans"), ("welcome", "welcomed", "welcomes"),
    ("question", "questioned", "questions"), ("publish", "published", "publishes"), ("fund", "funded", "funds"),
    ("expand", "expanded", "expands"), ("restore", "restored", "restores"), ("present", "presented", "presents"),
]
_ADVS = ("quickly slowly quietly carefully finally recently often rarely again already nearly "
         "clearly openly gradually suddenly usually").split()
_PREPS = ("in near behind beside across under above through along around beyond inside").split()
_NAMES = ("Anna Brooks,Daniel Reed,Maria Lopez,Tom Fischer,Laura Chen,Peter Novak,Sarah Olsen,"
          "James Carter,Elena Rossi,Omar Haddad,Grace Kim,Lucas Moreau,Nina Patel,Henry Walsh,"
          "Clara Jensen,Victor Alves,Ruth Mensah,Paul Weber,Irene Costa,Samuel Price").split(",")
_PLACES = ("Millbrook,Eastport,Riverton,Ashford,Greenwich Bay,Lakeside,Northwood,Stonebridge,"
           "Fairhaven,Oakridge,Westfield,Cedar Falls,Brighton Hill,Kingsbury,Marlow").split(",")
_TIMES = ("last week,on Monday,this morning,in the spring,after the holidays,earlier this year,"
          "two days ago,in recent months,during the summer,at the end of the month,last autumn,"
          "on Friday evening,before the winter,over the weekend").split(",")
_SUBORD = ("because", "although", "while", "after", "before", "since", "when", "as soon as")


class _English:
    """Random English with stop words, varied templates and no long fixed word runs.

    Noun and prepositional phrases come from pools drawn once per file (one random pick per
    phrase instead of three or four: the writer must do > 2k docs/s); clauses and sentences are
    drawn fresh, so no sentence repeats across documents except by chance."""

    _POOL = 4096

    def __init__(self, rng: random.Random):
        self.rng = rng
        r = self._r = rng.random
        pick = self._pick
        dets = ("some", "many", "several", "few", "most", "two", "three")
        nps = []
        for _ in range(self._POOL):
            x = r()
            if x < 0.35:
                nps.append(f"the {pick(_ADJS)} {pick(_NOUNS)}")
            elif x < 0.6:
                nps.append(f"the {pick(_NOUNS)}")
            elif x < 0.75:
                nps.append(f"a {pick(_ADJS)} {pick(_NOUNS)}")
            elif x < 0.9:
                nps.append(f"{pick(dets)} {pick(_ADJS)} {pick(_PLURALS)}")
            else:
                nps.append(f"the {pick(_NOUNS)} of {pick(_PLACES)}")
        self.nps = nps
        self.pps = [f"{pick(_PREPS)} {pick(nps)}" for _ in range(self._POOL)]
        pronouns = ("we", "they", "she", "he", "residents", "officials", "visitors")
        self.subjects = nps[: self._POOL // 2] + list(_NAMES) * 40 + list(pronouns) * 30

    def _pick(self, seq):
        return seq[int(self._r() * len(seq))]

    def np(self) -> str:
        return self.nps[int(self._r() * self._POOL)]

    def clause(self) -> str:
        r, nps, pps, subj = self._r, self.nps, self.pps, self.subjects
        n, x = self._POOL, r()
        v = _VERBS[int(r() * len(_VERBS))]
        s = subj[int(r() * len(subj))]
        if x < 0.3:
            return f"{s} {v[1]} {nps[int(r() * n)]} {pps[int(r() * n)]}"
        if x < 0.45:
            return f"{s} {_ADVS[int(r() * len(_ADVS))]} {v[1]} {nps[int(r() * n)]}"
        if x < 0.58:
            return f"{s} will {v[0]} {nps[int(r() * n)]} {_TIMES[int(r() * len(_TIMES))]}"
        if x < 0.7:
            return f"{s} {'has' if r() < 0.5 else 'had'} to {v[0]} {nps[int(r() * n)]} with {nps[int(r() * n)]}"
        if x < 0.8:
            return f"{nps[int(r() * n)]} {v[2]} {nps[int(r() * n)]} that {nps[int(r() * n)]} {self._pick(_VERBS)[1]}"
        if x < 0.9:
            return f"it is {self._pick(_ADJS)} to {v[0]} {nps[int(r() * n)]} {pps[int(r() * n)]}"
        return f"there {'was' if r() < 0.5 else 'is'} {nps[int(r() * n)]} {pps[int(r() * n)]}"

    def sentence(self) -> str:
        x = self._r()
        if x < 0.15:
            body = f"{self._pick(_TIMES)}, {self.clause()}"
        elif x < 0.35:
            body = f"{self.clause()} {self._pick(_SUBORD)} {self.clause()}"
        elif x < 0.45:
            body = f"{self.clause()}, and {self.clause()}"
        elif x < 0.5:
            q = f"{self._pick(('why', 'how', 'when'))} did {self.np()} {self._pick(_VERBS)[0]} {self.np()}"
            return q[0].upper() + q[1:] + "?"
        elif x < 0.56:
            inner = self.clause()
            return f"\"{inner[0].upper()}{inner[1:]},\" said {self._pick(_NAMES)}."
        else:
            body = self.clause()
        return body[0].upper() + body[1:] + "."

    def paragraph(self, lo: int = 3, hi: int = 6) -> str:
        return " ".join([self.sentence() for _ in range(lo + int(self._r() * (hi - lo + 1)))])

    def paragraphs(self, lo: int = 4, hi: int = 8) -> list[str]:
        return [self.paragraph() for _ in range(lo + int(self._r() * (hi - lo + 1)))]

    def title(self) -> str:
        t = f"{self._pick(_ADJS)} {self._pick(_NOUNS)} {self._pick(_VERBS)[2]} {self._pick(_PLURALS)} in {self._pick(_PLACES)}"
        return t[0].upper() + t[1:]


# Small vocabularies for other languages: (subjects, verbs, objects, adverbials) -> "S V O A."
_FOREIGN = {
    "de": (
        ["Der alte Mann", "Die junge Frau", "Das kleine Kind", "Der Lehrer", "Die Stadt", "Unsere Nachbarin",
         "Der Bürgermeister", "Die Familie", "Der Arzt", "Die Studentin", "Mein Bruder", "Das Team"],
        ["kauft", "sieht", "findet", "baut", "liest", "braucht", "besucht", "erklärt", "öffnet", "verkauft"],
        ["ein neues Haus", "den schönen Garten", "die große Brücke", "einen langen Brief", "das alte Buch",
         "die frische Milch", "den nächsten Zug", "eine warme Jacke", "das neue Museum", "die Zeitung"],
        ["am Morgen", "in der Stadt", "nach der Arbeit", "mit dem Fahrrad", "jeden Tag", "im Sommer",
         "heute nicht", "wieder und wieder", "bei schlechtem Wetter", "auf dem Markt"],
    ),
    "fr": (
        ["Le vieux pêcheur", "La jeune élève", "Mon frère", "Le médecin", "La ville", "Notre voisine",
         "Le maire", "La famille", "Un étudiant", "Le boulanger", "Cette équipe", "Ma cousine"],
        ["achète", "regarde", "trouve", "construit", "lit", "prépare", "visite", "explique", "ouvre", "vend"],
        ["une nouvelle maison", "le joli jardin", "le grand pont", "une longue lettre", "le vieux livre",
         "du pain frais", "le prochain train", "une veste chaude", "le musée", "le journal du matin"],
        ["le matin", "dans la forêt", "après le travail", "à vélo", "chaque été", "en hiver",
         "près de la rivière", "très souvent", "déjà depuis longtemps", "au marché"],
    ),
    "es": (
        ["El viejo pescador", "La joven alumna", "Mi hermano", "El médico", "La ciudad", "Nuestra vecina",
         "El alcalde", "La familia", "Un estudiante", "El panadero", "Este equipo", "Mi hermana"],
        ["compra", "mira", "encuentra", "construye", "lee", "prepara", "visita", "explica", "abre", "vende"],
        ["una casa nueva", "el jardín bonito", "el puente grande", "una carta larga", "el libro viejo",
         "pan fresco", "el próximo tren", "una chaqueta caliente", "el museo", "el periódico de la mañana"],
        ["por la mañana", "en el parque", "después del trabajo", "en bicicleta", "cada verano", "en invierno",
         "cerca del río", "muy a menudo", "con mucho cuidado", "en el mercado"],
    ),
    "ru": (
        ["Старый рыбак", "Молодая учительница", "Мой брат", "Врач", "Наша соседка", "Мэр города",
         "Вся семья", "Студент", "Пекарь", "Эта команда"],
        ["покупает", "видит", "находит", "строит", "читает", "готовит", "посещает", "объясняет", "открывает"],
        ["новый дом", "красивый сад", "большой мост", "длинное письмо", "старую книгу", "свежий хлеб",
         "следующий поезд", "тёплую куртку", "городской музей", "утреннюю газету"],
        ["утром", "в лесу", "после работы", "на велосипеде", "каждое лето", "зимой", "у реки",
         "очень часто", "с большим удовольствием", "на рынке"],
    ),
}
_ZH = (
    ["我们", "他们", "老师", "学生们", "这家公司", "我的朋友", "城市居民", "博物馆的工作人员"],
    ["参观了", "讨论了", "发现了", "需要", "喜欢", "介绍了", "保护了", "研究了"],
    ["新的图书馆", "传统文化", "这个问题", "城市的历史", "美丽的风景", "当地的市场", "古老的桥梁", "环境保护计划"],
    ["今天", "在周末", "每天", "去年", "上个月", "在春天", "晚上", "最近"],
)


def _foreign_paragraphs(rng: random.Random, lang: str, n_par: int = 5) -> list[str]:
    if lang == "zh":
        s, v, o, a = _ZH
        return ["".join(f"{rng.choice(a)}{rng.choice(s)}{rng.choice(v)}{rng.choice(o)}。" for _ in range(rng.randint(4, 7)))
                for _ in range(n_par)]
    s, v, o, a = _FOREIGN[lang]
    return [" ".join(f"{rng.choice(s)} {rng.choice(v)} {rng.choice(o)} {rng.choice(a)}." for _ in range(rng.randint(4, 7)))
            for _ in range(n_par)]


# ----------------------------------------------------------------------------------------------
# HTML page templates.

_MENU = ["Home", "News", "World", "Business", "Culture", "Sport", "Travel", "Science", "Opinion", "Contact"]
_FOOTER = ["About us", "Careers", "Advertise", "Newsletter", "Help", "Archive", "Sitemap"]


def _esc(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _article_html(site: str, title: str, byline: str, paragraphs: list[str], related: list[str],
                  lang: str = "en", head_extra: str = '<meta charset="utf-8">', menu_repeat: int = 1,
                  footer_repeat: int = 1) -> str:
    nav = "".join(f'<li><a href="/{m.lower()}/{i}">{m}</a></li>' for i in range(menu_repeat) for m in _MENU)
    foot = "".join(f'<li><a href="/{f.lower().replace(" ", "-")}/{i}">{f}</a></li>'
                   for i in range(footer_repeat) for f in _FOOTER)
    rel = "".join(f'<li><a href="/story/{zlib.crc32(t.encode()) % 100000}">{_esc(t)}</a></li>' for t in related)
    body = "".join(f"<p>{_esc(p)}</p>\n" for p in paragraphs)
    return (
        f'<!DOCTYPE html>\n<html lang="{lang}">\n<head>{head_extra}<title>{_esc(title)} | {site}</title>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"></head>\n<body>\n'
        f'<div class="cookie-banner">This site uses cookies to improve your experience. '
        f'<a href="/privacy">Learn more</a> <button>Accept</button></div>\n'
        f'<header><a class="logo" href="/">{site}</a><nav><ul>{nav}</ul></nav></header>\n'
        f'<main><article><h1>{_esc(title)}</h1><p class="byline">{_esc(byline)}</p>\n{body}</article>\n'
        f'<aside><h3>Related</h3><ul>{rel}</ul></aside></main>\n'
        f'<footer><ul>{foot}</ul><p>&copy; 2024 {site}. All rights reserved.</p></footer>\n</body>\n</html>\n'
    )


# ----------------------------------------------------------------------------------------------
# WARC record bytes.

def _uuid(rng: random.Random) -> str:
    return f"urn:uuid:{uuid.UUID(int=rng.getrandbits(128), version=4)}"


def _warc(headers: list[tuple[str, str]], block: bytes | list[bytes], version: str = "1.0",
          length: str | None = "auto") -> list[bytes]:
    """A record as a list of byte strings (a huge block is passed as pieces, never joined)."""
    parts = block if isinstance(block, list) else [block]
    lines = [f"WARC/{version}\r\n"]
    lines += [f"{k}: {v}\r\n" for k, v in headers]
    if length is not None:
        lines.append(f"Content-Length: {sum(map(len, parts)) if length == 'auto' else length}\r\n")
    lines.append("\r\n")
    return ["".join(lines).encode("utf-8"), *parts, b"\r\n\r\n"]


_REASONS = {200: "OK", 301: "Moved Permanently", 304: "Not Modified", 404: "Not Found"}


def _http_response(status: int, content_type: str, body: bytes | list[bytes], extra=()) -> list[bytes]:
    parts = body if isinstance(body, list) else [body]
    head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'OK')}\r\n", "Server: nginx\r\n",
            f"Content-Type: {content_type}\r\n", f"Content-Length: {sum(map(len, parts))}\r\n"]
    head += [f"{k}: {v}\r\n" for k, v in extra]
    head.append("\r\n")
    return ["".join(head).encode("latin-1"), *parts]


# Level 3 writes ~20% faster than the default 6 for +3% size; inflate speed does not depend on it.
_GZIP_LEVEL = 3


class _Out:
    """Writes records as gzip members, one gzip stream, or plain bytes."""

    def __init__(self, f, compression: str):
        self.f, self.compression = f, compression
        self.z = zlib.compressobj(_GZIP_LEVEL, zlib.DEFLATED, 31) if compression == "gzip_file" else None

    def record(self, parts: list[bytes], cut: bool = False) -> None:
        """Write one record; `cut` writes only the first half of its (compressed) bytes."""
        if cut:
            data = b"".join(parts)
            if self.compression == "gzip_per_record":
                data = gzip.compress(data, mtime=0)
            elif self.compression == "gzip_file":  # flush so the cut falls inside this record
                self.f.write(self.z.flush(zlib.Z_SYNC_FLUSH))
                data = self.z.compress(data) + self.z.flush()
                self.z = None
            self.f.write(data[: len(data) // 2])
        elif self.compression == "gzip_per_record":
            # A window no larger than the record: initialising zlib's full 32 KB window and hash
            # tables costs ~50 us, more than compressing a small request/metadata record.
            size = sum(map(len, parts))
            wbits = 16 + min(15, max(9, size.bit_length()))
            c = zlib.compressobj(_GZIP_LEVEL, zlib.DEFLATED, wbits, 8 if size > 1 << 14 else 5)
            self.f.write(b"".join([c.compress(p) for p in parts] + [c.flush()]))
        elif self.compression == "gzip_file":
            for p in parts:
                self.f.write(self.z.compress(p))
        else:
            for p in parts:
                self.f.write(p)

    def garbage(self, data: bytes) -> None:
        if self.z is not None:
            self.f.write(self.z.compress(data))
        else:
            self.f.write(data)

    def close(self) -> None:
        if self.z is not None:
            self.f.write(self.z.flush())


# ----------------------------------------------------------------------------------------------
# The sample writer.

class _SampleWriter:
    def __init__(self, f, compression: str, rng: random.Random, cc_style: bool):
        self.out = _Out(f, compression)
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
        rid = _uuid(self.rng)
        self.out.record(_warc([("WARC-Type", wtype), ("WARC-Date", date), ("WARC-Record-ID", f"<{rid}>"),
                               ("WARC-Target-URI", url), ("WARC-Concurrent-To", f"<{refers}>"),
                               ("Content-Type", content_type)], block))
        self._count("records")
        self._count("skip_" + wtype)

    def response(self, url: str, kind: str, body: bytes | list[bytes], *, status: int = 200, content_type: str = "text/html; charset=utf-8",
                 identified: str | None = "text/html", extra_http=(), version: str = "1.0", date: str | None = None,
                 cut: bool = False, **truth) -> DocTruth:
        rid = _uuid(self.rng)
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
        self.out.record(_warc(headers, _http_response(status, content_type, body, list(extra_http)), version), cut=cut)
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
            self._count("bytes_html", min(size, _DEFAULT_MAX_HTML_BYTES))
            if size > _DEFAULT_MAX_HTML_BYTES:
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
        rid = _uuid(self.rng)
        block = (f"software: llmforge.dataproc.samples\r\nformat: WARC File Format 1.0\r\n"
                 f"isPartOf: LLMFORGE-SAMPLE\r\nfilename: {filename}\r\n").encode()
        self.out.record(_warc([("WARC-Type", "warcinfo"), ("WARC-Date", self._date()), ("WARC-Filename", filename),
                               ("WARC-Record-ID", f"<{rid}>"), ("Content-Type", "application/warc-fields")], block))
        self._count("records")
        self._count("skip_warcinfo")
        self.docs.append(DocTruth(record_id=rid, url="", kind="warcinfo", expect="skip_warcinfo"))

    def revisit(self, url: str) -> None:
        rid = _uuid(self.rng)
        http = b"HTTP/1.1 304 Not Modified\r\nServer: nginx\r\n\r\n"
        self.out.record(_warc([("WARC-Type", "revisit"), ("WARC-Date", self._date()), ("WARC-Record-ID", f"<{rid}>"),
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
            new = rng.choice(_NOUNS if rng.random() < 0.6 else _ADJS)
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
    first, last = rng.choice(_NAMES).lower().split()
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
    line = f"Click here to win a free {rng.choice(_NOUNS)} today!"
    return [line] * 40


def write_sample_warc(
    path: str | PathLike,
    n_docs: int,
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
        raise ValueError("n_docs must be >= 1")
    if gzip_per_record and whole_file_gzip:
        raise ValueError("gzip_per_record and whole_file_gzip are exclusive")
    compression = "gzip_per_record" if gzip_per_record else "gzip_file" if whole_file_gzip else "none"
    if truncate_last is None:
        truncate_last = corrupt
    rng = random.Random(seed)
    en = _English(rng)
    sites = [f"www.{a}-{b}.example" for a, b in zip(rng.sample(_ADJS, 40), rng.sample(_NOUNS, 40))]

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
            url = f"https://{site}/{rng.choice(_MENU).lower()}/{k}-{rng.getrandbits(32):08x}.html"
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
                html = _article_html(site, title, f"By {rng.choice(_NAMES)}", pars, related())
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
                    html = _article_html(dup_site, title, "Staff", pars, related())
                    w.response(url, kind, html.encode(), dup_of=src_id)
                else:
                    target = rot(kind, near_dup_jaccards)
                    new_pars, jac = _near_dup(rng, pars, target)
                    html = _article_html(dup_site, title, "Staff", new_pars, related())
                    w.response(url, kind, html.encode(), dup_of=src_id, jaccard=jac)
            elif kind == "boilerplate":
                pars = [en.sentence()]
                html = _article_html(site, en.title(), "", pars, related(40),
                                     menu_repeat=20, footer_repeat=20)
                w.response(url, kind, html.encode(), text=pars)
            elif kind == "spam":
                sub = rot(kind, ("stuffing", "random", "repeated"))
                pars = _spam(rng, sub)
                html = _article_html(site, "Best deals online", "", pars, [])
                w.response(url, kind, html.encode(), subkind=sub)
            elif kind == "non_english":
                lang = rot(kind, ("de", "fr", "es", "zh"))
                pars = _foreign_paragraphs(rng, lang)
                html = _article_html(site, pars[0][:40], "", pars, [], lang=lang)
                w.response(url, kind, html.encode(), lang=lang, text=pars)
            elif kind == "charset":
                lang, charset, head = rot(kind, (
                    ("ru", "windows-1251", '<meta charset="windows-1251">'),
                    ("fr", "iso-8859-1", '<meta http-equiv="Content-Type" content="text/html; charset=iso-8859-1">'),
                ))
                pars = _foreign_paragraphs(rng, lang)
                html = _article_html(site, pars[0][:40], "", pars, [], lang=lang, head_extra=head)
                w.response(url, kind, html.encode(charset), content_type="text/html", lang=lang, charset=charset, text=pars)
            elif kind == "bogus_charset":
                pars = _foreign_paragraphs(rng, "fr")
                html = _article_html(site, pars[0][:40], "", pars, [], lang="fr", head_extra="")
                w.response(url, kind, html.encode("latin-1"), content_type="text/html; charset=x-no-such-charset-42",
                           lang="fr", charset="x-no-such-charset-42", text=pars)
            elif kind == "undecodable":
                pars = en.paragraphs(2, 3)
                html = _article_html(site, en.title(), "", pars, []).encode()
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
                block = _article_html(site, en.title(), "", en.paragraphs(20, 20), []).encode()
                reps = max(1, huge_page_bytes // len(block))
                # The same block object repeated: the page is never materialised in memory.
                w.response(url, kind, [b"<!DOCTYPE html><html><body>", *[block] * reps, b"</body></html>"])
            elif kind == "corrupt_header":
                rid = _uuid(rng)
                block = _http_response(200, "text/html", b"<html><body><p>Lost page.</p></body></html>")
                parts = _warc([("WARC-Type", "response"), ("WARC-Record-ID", f"<{rid}>"), ("WARC-Target-URI", url)], block)
                parts[0] = parts[0].replace(b"WARC/1.0", b"WRAC/1.0", 1)  # malformed version line
                w.raw_record(kind, parts, url, rid)
            elif kind in ("missing_content_length", "bad_content_length"):
                rid = _uuid(rng)
                block = _http_response(200, "text/html", b"<html><body><p>Lost page.</p></body></html>")
                length = None if kind == "missing_content_length" else "12abc"
                w.raw_record(kind, _warc([("WARC-Type", "response"), ("WARC-Date", w._date()),
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
            rid = _uuid(rng)
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
            counts["bytes_html"] += min(len(html), _DEFAULT_MAX_HTML_BYTES)
            if len(html) > _DEFAULT_MAX_HTML_BYTES:
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


def generated_documents(n_docs: int, seed: int = 0) -> list[str]:
    """English-looking documents over a Zipf-distributed vocabulary of made-up words: text a
    tokenizer and a language model can learn, for tests and benchmarks without real data."""
    rng = random.Random(seed)
    syllables = ["th", "e", "an", "re", "in", "on", "at", "er", "st", "ou", "ing", "al", "ed", "or", "es", "is"]
    words = sorted({"".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(3000)})
    weights = [1.0 / (rank + 1) for rank in range(len(words))]
    docs = []
    for _ in range(n_docs):
        sentences = []
        for _ in range(rng.randint(1, 6)):
            ws = rng.choices(words, weights, k=rng.randint(3, 15))
            sentences.append(" ".join(ws).capitalize() + rng.choice([".", ".", "!", "?"]))
        docs.append(" ".join(sentences))
    return docs
