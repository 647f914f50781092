"""Domain tagging and mixture weights: exact domains and scores on hand-built URLs and texts
(the arithmetic is in the comments), options validation, deterministic sample counts."""
from __future__ import annotations

import math
import random

import numpy as np
import pyarrow as pa
import pytest
import xxhash
from pydantic import ValidationError

from dataproc.corpus.domains import DEFAULT_RULES, DomainOptions, DomainTagger, url_keys
from dataproc.tokenization.mixture import MixtureOptions, doc_uniforms, mixture_report, sample_counts

# score = 1 - prod(1 - url weights matched) * (1 - 0.6 * text), text = 1 - exp(-evidence)


def text_score(evidence: float) -> float:
    return 1 - math.exp(-evidence)


CASES = [
    # (url, text, domain, score)
    # host 0.8, a host with "wiki" 0.6 and "/wiki/" 0.6: 1 - 0.2 * 0.4 * 0.4
    ("https://en.wikipedia.org/wiki/Anarchism", "Anarchism is a political philosophy.", "encyclopedic", 0.968),
    ("https://github.com/ray-project/ray", "Ray is a unified framework.", "code", 0.8),
    # host 0.8 and "/dp/" 0.5: 1 - 0.2 * 0.5
    ("https://www.amazon.com/dp/B000123", "Great kettle", "shopping", 0.9),
    # path 0.5; one price (0.1) + "Add to cart" + "In stock" (0.3 each): E = 0.7
    ("https://example.com/product/123", "Kettle $12.99 Add to cart. In stock.", "shopping",
     1 - 0.5 * (1 - 0.6 * text_score(0.7))),
    # "forums." host 0.8, "/thread/" 0.5, "Posted by" 0.3: 1 - 0.2 * 0.5 * (1 - 0.6 * t(0.3))
    ("https://forums.example.org/thread/55", "Posted by bob", "forum", 1 - 0.1 * (1 - 0.6 * text_score(0.3))),
    # bbc host 0.8, "/news/" 0.5
    ("http://bbc.co.uk/news/world-123", "text", "news", 0.9),
    # dated path 0.3; dateline 0.6 + "(Reuters)" 0.5: E = 1.1
    ("https://example.com/2019/07/some-story", "WASHINGTON (Reuters) - The senate voted on Tuesday.", "news",
     1 - 0.7 * (1 - 0.6 * text_score(1.1))),
    # no URL hint; all 5 lines are code (keyword, assignment, "{", "...;" with "=", "}"): line score 1
    ("https://example.com/page", "import numpy as np\nx = np.zeros(3)\nfor i in range(3) {\n  y = x;\n}\n",
     "code", 0.6),
    ("https://foo.blogspot.com/my-post.html", "A long walk by the sea.", "blog", 0.8),
    ("https://www.xvideos.com/video1", "", "adult", 0.8),
    # "sussex" must not look adult, and nothing else matches: best score 0, so "other" with 1 - 0
    ("https://example.com/about", "We are a small family company from Sussex.", "other", 1.0),
    (None, None, "other", 1.0),
]


def test_handcrafted_urls_and_texts_get_exact_domains_and_scores():
    domains, scores = DomainTagger().tag([c[0] for c in CASES], [c[1] for c in CASES])
    assert domains == [c[2] for c in CASES]
    assert scores.tolist() == pytest.approx([c[3] for c in CASES], abs=1e-12)


def test_text_alone_needs_clear_evidence():
    tagger = DomainTagger()
    # A single price on an unremarkable URL: E = 0.1, score 0.6 * t(0.1) = 0.057 < min_score 0.4
    domains, scores = tagger.tag(["https://example.com/x"], ["It cost $5 then."])
    assert domains == ["other"] and scores[0] == pytest.approx(1 - 0.6 * text_score(0.1))
    # Lines ending in ";" without code-like characters are prose lists, not code.
    legal = "Parents may:\n1) choose a school;\n2) read its charter;\n3) attend its meetings;"
    assert tagger.tag([None], [legal])[0] == ["other"]
    # Three code lines out of six non-empty ones: share 0.5 >= 0.4, line score 1 -> 0.6
    mixed = "Intro text here.\nMore prose.\nAnd more.\nx = 1\ny = 2;\nif (x) {"
    assert tagger.tag([None], [mixed]) == (["code"], pytest.approx([0.6]))
    # Under three non-empty lines the share is ignored.
    assert tagger.tag([None], ["x = 1"])[0] == ["other"]


def test_dated_path_alone_is_not_news_but_adds_to_a_news_host_word():
    domains, scores = DomainTagger().tag(
        ["https://someblog.net/2019/07/post", "https://dailytimes.example/2019/07/post"], ["", ""]
    )
    assert domains == ["other", "news"]
    assert scores.tolist() == pytest.approx([1 - 0.3, 1 - 0.7 * 0.4])  # host word 0.6 with dated 0.3


def test_url_keys_normalise():
    keys = url_keys(["HTTPS://User@WWW.Example.COM:8080/A/b?x=1#frag", "example.org", None, "www2.foo.io"])
    assert keys.to_pylist() == ["example.com/a/b?x=1", "example.org", "", "foo.io"]


def test_ties_go_to_the_earlier_domain_of_the_table():
    names = list(DEFAULT_RULES)
    assert names[:2] == ["adult", "code"]
    # The same user pattern on two domains gives both 0.95: the one listed first in the
    # table wins, whatever the order in the options.
    tagger = DomainTagger(DomainOptions(extra_patterns={"blog": ["^tie\\."], "forum": ["^tie\\."]}))
    domains, scores = tagger.tag(["https://tie.example"], [""])
    assert domains == ["forum"] and scores[0] == pytest.approx(0.95)  # forum precedes blog


def test_extra_patterns_add_domains_and_outrank_builtin_rules():
    options = DomainOptions(extra_patterns={
        "recipes": [r"^(?:[^/]*\.)?allrecipes\.com/", r"/recipes?/"],
        "encyclopedic": [r"^kb\.mycorp\.com/"],
    })
    tagger = DomainTagger(options)
    assert tagger.names[-1] == "recipes"
    domains, scores = tagger.tag(
        ["https://www.allrecipes.com/recipe/1/", "https://kb.mycorp.com/page", "https://github.com/x/recipes/"],
        ["", "", ""],
    )
    # allrecipes: both user patterns match; github: code 0.8 vs recipes 0.95 (user patterns
    # outrank built-in ones)
    assert domains == ["recipes", "encyclopedic", "recipes"]
    assert scores.tolist() == pytest.approx([1 - 0.05 * 0.05, 0.95, 0.95])


def test_default_name_and_min_score():
    tagger = DomainTagger(DomainOptions(default="misc", min_score=0.85))
    domains, scores = tagger.tag(["https://github.com/a", "https://en.wikipedia.org/wiki/A"], ["", ""])
    assert domains == ["misc", "encyclopedic"]
    assert scores.tolist() == pytest.approx([1 - 0.8, 0.968])


def test_max_chars_limits_content_rules():
    text = "x" * 100 + " Add to cart. In stock. Add to cart. Checkout."
    assert DomainTagger(DomainOptions(max_chars=50)).tag([None], [text])[0] == ["other"]
    assert DomainTagger().tag([None], [text])[0] == ["shopping"]


def test_tagger_over_a_pyarrow_batch():
    tagger = DomainTagger()
    t1 = pa.table({"id": ["a", "b"], "url": ["https://github.com/x", None], "text": ["code", None]})
    t2 = pa.table({"id": ["c"], "url": ["https://reddit.com/r/x"], "text": ["hi"]})
    batch = pa.concat_tables([t1, t2])  # two chunks per column
    out = tagger(batch)
    assert out.column_names == ["id", "url", "text", "domain", "domain_score"]
    assert out.schema.field("domain").type == pa.string()
    assert out.schema.field("domain_score").type == pa.float64()
    assert out.column("domain").to_pylist() == ["code", "other", "forum"]
    assert out.column("domain_score").to_pylist() == pytest.approx([0.8, 1.0, 0.8])
    again = tagger(out.combine_chunks().to_batches()[0])  # RecordBatch in; columns replaced, not doubled
    assert again.column_names == out.column_names
    assert tagger(pa.table({"url": ["https://github.com/x"]})).column("domain").to_pylist() == ["code"]
    with pytest.raises(KeyError, match="'url' or 'text'"):
        tagger(pa.table({"body": ["x"]}))


def test_domain_options_validation_names_the_key():
    with pytest.raises(ValidationError) as err:
        DomainOptions(extra_patterns={"code": ["^ok\\.", "(unclosed"]})
    msg = str(err.value)
    assert "extra_patterns['code']" in msg and "'(unclosed'" in msg and "RE2" in msg
    with pytest.raises(ValidationError, match=r"extra_patterns\['news'\].*\(\?=x\)"):
        DomainOptions(extra_patterns={"news": ["(?=x)y"]})  # look-ahead: Python re has it, RE2 not
    with pytest.raises(ValidationError, match="extra_patterns key 'My Domain'"):
        DomainOptions(extra_patterns={"My Domain": ["x"]})
    with pytest.raises(ValidationError, match="default 'Other!'"):
        DomainOptions(default="Other!")
    with pytest.raises(ValidationError, match="extra"):
        DomainOptions(patterns={})
    assert DomainOptions().enabled is True and DomainOptions().extra_patterns == {}


# ------------------------------------------------------------------------------ mixture


def test_mixture_options_validation_names_the_key():
    with pytest.raises(ValidationError, match=r"weights\['news'\] must be a finite number >= 0, got -1"):
        MixtureOptions(weights={"code": 2.0, "news": -1.0})
    with pytest.raises(ValidationError, match=r"weights\['code'\]"):
        MixtureOptions(weights={"code": float("nan")})
    with pytest.raises(ValidationError, match="default_weight"):
        MixtureOptions(default_weight=-0.5)


def test_sample_counts_expected_values():
    ids = [f"doc-{i}" for i in range(4000)]
    doms = ["news", "forum", "code", "blog", "other"] * 800
    opts = MixtureOptions(weights={"news": 2.0, "forum": 0.0, "code": 2.5, "blog": 0.5})
    counts = sample_counts(ids, doms, opts)
    assert counts.dtype == np.int64
    by = {d: counts[[i for i, x in enumerate(doms) if x == d]] for d in set(doms)}
    assert set(by["news"].tolist()) == {2} and set(by["forum"].tolist()) == {0} and set(by["other"].tolist()) == {1}
    assert set(by["code"].tolist()) == {2, 3} and 0.45 < (by["code"] == 3).mean() < 0.55
    assert set(by["blog"].tolist()) == {0, 1} and 0.45 < by["blog"].mean() < 0.55
    # The documented formula, by hand: u = top 53 bits of xxh64(id, seed) / 2**53.
    for i in (2, 3, 7, 8):
        u = (xxhash.xxh64_intdigest(ids[i].encode(), 0) >> 11) / 2**53
        expected = {"code": 2 + (u < 0.5), "blog": int(u < 0.5)}[doms[i]]
        assert counts[i] == expected


def test_sample_counts_deterministic_order_free_and_monotone():
    ids = [f"id{i}" for i in range(2000)]
    doms = ["blog"] * 2000
    half = sample_counts(ids, doms, MixtureOptions(weights={"blog": 0.5}))
    assert np.array_equal(half, sample_counts(ids, doms, MixtureOptions(weights={"blog": 0.5})))
    order = list(range(2000))
    random.Random(0).shuffle(order)
    shuffled = sample_counts([ids[i] for i in order], doms, MixtureOptions(weights={"blog": 0.5}))
    assert np.array_equal(shuffled, half[order])  # a document's count depends on its id only
    third = sample_counts(ids, doms, MixtureOptions(weights={"blog": 0.3}))
    assert np.all(third <= half)  # raising a weight only adds documents
    other_seed = sample_counts(ids, doms, MixtureOptions(weights={"blog": 0.5}, seed=1))
    assert not np.array_equal(other_seed, half)
    u = doc_uniforms(ids)
    assert u.min() >= 0 and u.max() < 1 and np.array_equal(half, (u < 0.5).astype(int))
    with pytest.raises(ValueError, match="2 doc ids but 1 domains"):
        sample_counts(["a", "b"], ["x"], MixtureOptions())


def test_mixture_report_by_hand():
    report = mixture_report(["a", "a", "b"], [10, 20, 30], [2, 0, 1])
    assert report["docs_before"] == 3 and report["docs_after"] == 3
    assert report["tokens_before"] == 60 and report["tokens_after"] == 50  # 10*2 + 20*0 + 30*1
    assert report["domains"]["a"] == {
        "docs_before": 2, "docs_after": 2, "tokens_before": 30, "tokens_after": 20,
        "share_before": 0.5, "share_after": pytest.approx(0.4), "multiplier": pytest.approx(2 / 3),
    }
    assert report["domains"]["b"] == {
        "docs_before": 1, "docs_after": 1, "tokens_before": 30, "tokens_after": 30,
        "share_before": 0.5, "share_after": pytest.approx(0.6), "multiplier": 1.0,
    }
    with pytest.raises(ValueError, match="lengths differ"):
        mixture_report(["a"], [1, 2], [1])
