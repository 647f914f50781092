"""Generated English: a small sentence grammar over built-in vocabularies (article pages), and
Zipf-distributed made-up words (`generated_documents`: text a tokenizer and a language model
can learn, for tests and benchmarks without real data)."""
from __future__ import annotations

import random


NOUNS = (
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
NOUNS = list(dict.fromkeys(NOUNS))
_IRREGULAR = {"child": "children", "city": "cities", "country": "countries", "library": "libraries",
              "family": "families", "century": "centuries", "story": "stories", "study": "studies",
              "gallery": "galleries", "factory": "factories", "company": "companies", "policy": "policies",
              "community": "communities", "university": "universities", "coach": "coaches",
              "match": "matches", "church": "churches", "bus": "buses", "address": "addresses"}
_PLURALS = [_IRREGULAR.get(n, n + "s") for n in NOUNS]
ADJS = (
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
NAMES = ("Anna Brooks,Daniel Reed,Maria Lopez,Tom Fischer,Laura Chen,Peter Novak,Sarah Olsen,"
          "James Carter,Elena Rossi,Omar Haddad,Grace Kim,Lucas Moreau,Nina Patel,Henry Walsh,"
          "Clara Jensen,Victor Alves,Ruth Mensah,Paul Weber,Irene Costa,Samuel Price").split(",")
_PLACES = ("Millbrook,Eastport,Riverton,Ashford,Greenwich Bay,Lakeside,Northwood,Stonebridge,"
           "Fairhaven,Oakridge,Westfield,Cedar Falls,Brighton Hill,Kingsbury,Marlow").split(",")
_TIMES = ("last week,on Monday,this morning,in the spring,after the holidays,earlier this year,"
          "two days ago,in recent months,during the summer,at the end of the month,last autumn,"
          "on Friday evening,before the winter,over the weekend").split(",")
_SUBORD = ("because", "although", "while", "after", "before", "since", "when", "as soon as")


class EnglishText:
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
                nps.append(f"the {pick(ADJS)} {pick(NOUNS)}")
            elif x < 0.6:
                nps.append(f"the {pick(NOUNS)}")
            elif x < 0.75:
                nps.append(f"a {pick(ADJS)} {pick(NOUNS)}")
            elif x < 0.9:
                nps.append(f"{pick(dets)} {pick(ADJS)} {pick(_PLURALS)}")
            else:
                nps.append(f"the {pick(NOUNS)} of {pick(_PLACES)}")
        self.nps = nps
        self.pps = [f"{pick(_PREPS)} {pick(nps)}" for _ in range(self._POOL)]
        pronouns = ("we", "they", "she", "he", "residents", "officials", "visitors")
        self.subjects = nps[: self._POOL // 2] + list(NAMES) * 40 + list(pronouns) * 30

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
            return f"it is {self._pick(ADJS)} to {v[0]} {nps[int(r() * n)]} {pps[int(r() * n)]}"
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
            return f"\"{inner[0].upper()}{inner[1:]},\" said {self._pick(NAMES)}."
        else:
            body = self.clause()
        return body[0].upper() + body[1:] + "."

    def paragraph(self, lo: int = 3, hi: int = 6) -> str:
        return " ".join([self.sentence() for _ in range(lo + int(self._r() * (hi - lo + 1)))])

    def paragraphs(self, lo: int = 4, hi: int = 8) -> list[str]:
        return [self.paragraph() for _ in range(lo + int(self._r() * (hi - lo + 1)))]

    def title(self) -> str:
        t = f"{self._pick(ADJS)} {self._pick(NOUNS)} {self._pick(_VERBS)[2]} {self._pick(_PLURALS)} in {self._pick(_PLACES)}"
        return t[0].upper() + t[1:]




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
