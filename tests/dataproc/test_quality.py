"""Quality classifier: features, training on generated and real text, the model file, options,
the batch scorer. Generated data needs nothing outside the test; real data skips when absent."""
from __future__ import annotations

import gzip
import json
import math
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from dataproc.corpus.quality.features import QualityFeatureConfig, SparseBatch, featurize
from dataproc.corpus.quality.model import QualityModel, roc_auc
from dataproc.corpus.quality.stage import QualityModelOptions, QualityScorer
from dataproc.corpus.quality.train import train_quality_model
from dataproc.corpus.quantile import quantile_threshold
from dataproc.reading.text_files import iter_texts
from tests.support.quality_filter import QualityFilter
from tests.conftest import shared_data

# ------------------------------------------------------------------------------ generated corpus

_SUBJECTS = ["The committee", "A young researcher", "The old bridge", "Local farmers", "The new library",
             "Our team", "The river", "Several historians", "The city council", "A small company"]
_VERBS = ["described", "examined", "rebuilt", "discussed", "supported", "measured", "questioned",
          "celebrated", "documented", "improved"]
_OBJECTS = ["the annual report", "the history of the region", "a careful plan", "the water supply",
            "the results of the survey", "their early work", "the public garden", "a detailed map",
            "the origins of the festival", "the cost of repairs"]
_TAILS = ["after a long debate.", "during the winter of 1921.", "with remarkable patience.",
          "because the evidence was unclear.", "before the meeting ended.", "in a short letter.",
          "for the first time.", "although many people disagreed.", "in the following decade.",
          "with help from volunteers."]
_SPAM = ["cheap", "viagra", "casino", "bonus", "free", "click", "here", "best", "price", "buy", "now",
         "win", "money", "fast", "loan", "deal", "discount", "offer", "limited", "crypto"]


def good_doc(rng: random.Random) -> str:
    return " ".join(f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} {rng.choice(_TAILS)}"
                    for _ in range(rng.randint(3, 8)))


def bad_doc(rng: random.Random) -> str:
    kind = rng.randrange(3)
    if kind == 0:  # keyword stuffing
        return " ".join(rng.choice(_SPAM) for _ in range(rng.randint(20, 60)))
    if kind == 1:  # gibberish
        return " ".join("".join(rng.choice("qwrtzpsdfghjklxcvbnm") for _ in range(rng.randint(3, 9)))
                        for _ in range(rng.randint(20, 60)))
    # spam with a few real sentence fragments mixed in: shares vocabulary with the positives
    parts = [rng.choice(_SPAM) for _ in range(rng.randint(15, 40))]
    parts.insert(rng.randrange(len(parts)), f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)}")
    return " ".join(parts).upper() if rng.random() < 0.3 else " ".join(parts)


def corpus(n: int, seed: int) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    return [good_doc(rng) for _ in range(n)], [bad_doc(rng) for _ in range(n)]


@pytest.fixture(scope="module")
def trained():
    pos, neg = corpus(300, seed=1)
    return QualityModel().fit(pos, neg, seed=0)


# ------------------------------------------------------------------------------ features


def test_features_are_l2_normalised_case_insensitive_and_order_aware():
    cfg = QualityFeatureConfig()
    X = featurize(["Hello world hello", "", None, "hello WORLD Hello", "world hello hello"], cfg)
    assert X.n_docs == 5
    assert list(np.diff(X.offsets))[1:3] == [0, 0]  # empty and None have no features
    norms = np.bincount(X.rows(), weights=X.values.astype(np.float64) ** 2, minlength=5)
    assert norms[[0, 3, 4]] == pytest.approx([1.0, 1.0, 1.0], abs=1e-6)

    def row(i):
        s = slice(X.offsets[i], X.offsets[i + 1])
        return X.indices[s].tolist(), X.values[s].tolist()

    assert row(0) == row(3)  # lowercased
    assert row(0) != row(4)  # same words, different bigrams
    uni = featurize(["Hello world hello", "world hello hello"], QualityFeatureConfig(ngrams=1))
    assert uni.indices[: uni.offsets[1]].tolist() == uni.indices[uni.offsets[1]:].tolist()
    # 2 distinct unigrams + 2 distinct bigrams, at most (a collision could merge two)
    assert np.diff(X.offsets)[0] <= 4 and np.diff(uni.offsets)[0] <= 2
    assert all(0 <= i < cfg.num_buckets for i in X.indices.tolist())
    assert np.all(np.diff(X.indices[X.offsets[0]:X.offsets[1]]) > 0)  # sorted buckets within a row


def test_features_depend_on_seed_and_max_chars():
    text = ["alpha beta gamma delta"]
    a = featurize(text, QualityFeatureConfig(hash_seed=0))
    b = featurize(text, QualityFeatureConfig(hash_seed=1))
    assert a.indices.tolist() != b.indices.tolist()
    cut = featurize(["alpha beta gamma delta"], QualityFeatureConfig(max_chars=10))  # "alpha beta"
    full = featurize(["alpha beta"], QualityFeatureConfig())
    assert cut.indices.tolist() == full.indices.tolist()


def test_sparse_take_gathers_whole_rows():
    X = featurize(["a b c", "", "d e", "f"], QualityFeatureConfig())
    T = X.take(np.array([2, 0, 1]))
    assert T.n_docs == 3
    assert T.indices[T.offsets[0]:T.offsets[1]].tolist() == X.indices[X.offsets[2]:X.offsets[3]].tolist()
    assert T.indices[T.offsets[1]:T.offsets[2]].tolist() == X.indices[X.offsets[0]:X.offsets[1]].tolist()
    assert T.offsets[3] == T.offsets[2]
    both = SparseBatch.concat([X, T])
    assert both.n_docs == 7 and both.offsets[-1] == len(X.indices) + len(T.indices)


# ------------------------------------------------------------------------------ metrics helpers


def test_roc_auc_matches_pairwise_count_with_ties():
    rng = np.random.default_rng(0)
    labels = rng.random(300) < 0.3
    scores = np.round(rng.random(300), 1)  # many ties
    pairwise = np.mean([(a > b) + 0.5 * (a == b) for a in scores[labels] for b in scores[~labels]])
    assert roc_auc(labels, scores) == pytest.approx(pairwise, abs=1e-12)
    assert roc_auc([1, 1, 0, 0], [0.9, 0.8, 0.1, 0.2]) == 1.0
    assert roc_auc([1, 0], [0.5, 0.5]) == 0.5
    assert math.isnan(roc_auc([1, 1], [0.1, 0.2]))


def test_quantile_threshold_keeps_top_fraction():
    scores = np.arange(1, 11) / 10  # 0.1 .. 1.0
    t = quantile_threshold(scores, 0.3)
    assert t == pytest.approx(0.8) and (scores >= t).sum() == 3
    assert quantile_threshold(scores, 1.0) == pytest.approx(0.1)
    assert quantile_threshold(scores, 0.01) == pytest.approx(1.0)  # at least one kept
    assert quantile_threshold([0.5, np.nan, 0.7], 0.5) == pytest.approx(0.7)  # NaN ignored
    with pytest.raises(ValueError, match="fraction"):
        quantile_threshold(scores, 0.0)


# ------------------------------------------------------------------------------ training


def test_generated_good_vs_spam_accuracy(trained):
    pos, neg = corpus(200, seed=2)  # unseen documents
    p = trained.predict_proba(pos + neg)
    labels = np.r_[np.ones(200, bool), np.zeros(200, bool)]
    assert ((p >= 0.5) == labels).mean() > 0.9
    assert roc_auc(labels, p) > 0.95
    assert p.dtype == np.float64 and np.all((p >= 0) & (p <= 1))


def test_training_is_deterministic_for_a_seed():
    pos, neg = corpus(80, seed=3)
    a = QualityModel().fit(pos, neg, seed=7, epochs=2)
    b = QualityModel().fit(pos, neg, seed=7, epochs=2)
    c = QualityModel().fit(pos, neg, seed=8, epochs=2)
    assert np.array_equal(a.weights, b.weights) and a.bias == b.bias
    assert not np.array_equal(a.weights, c.weights)
    assert a.weights.dtype == np.float32


def test_fit_needs_both_classes():
    with pytest.raises(ValueError, match="both classes"):
        QualityModel().fit(["a good text"], [])


def test_train_from_txt_jsonl_gz_and_parquet_files(tmp_path):
    pos, neg = corpus(150, seed=4)
    (tmp_path / "pos.txt").write_text("\n".join(pos[:100]) + "\n\n")
    pq.write_table(pa.table({"text": pos[100:], "other": list(range(50))}), tmp_path / "pos.parquet")
    with gzip.open(tmp_path / "neg.jsonl.gz", "wt") as f:
        for t in neg:
            f.write(json.dumps({"id": "x", "text": t}) + "\n")
    out = tmp_path / "models" / "q.npz"
    metrics = train_quality_model([tmp_path / "pos.txt", tmp_path / "pos.parquet"], [tmp_path / "neg.jsonl.gz"],
                                  out, seed=0)
    assert metrics["n_pos"] == 150 and metrics["n_neg"] == 150
    assert metrics["n_heldout"] == 30 and metrics["n_train"] == 270  # 10% of each class
    assert metrics["heldout_accuracy"] > 0.9 and metrics["heldout_auc"] > 0.95
    assert out.exists() and [p.name for p in out.parent.iterdir()] == ["q.npz"]  # no temp file left
    assert QualityModel.load(out).meta["metrics"]["heldout_auc"] == metrics["heldout_auc"]


def test_cli_trains_with_a_cap_per_class(tmp_path, capsys):
    pos, neg = corpus(60, seed=11)
    (tmp_path / "pos.txt").write_text("\n\n".join(p.replace(". ", ".\n", 1) for p in pos) + "\n")  # 2-line docs
    (tmp_path / "neg.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in neg))
    out = tmp_path / "cli.npz"
    from llmforge.cli import main

    argv = ["data", "train-quality", "--positive", str(tmp_path / "pos.txt"), "--negative", str(tmp_path / "neg.jsonl"),
            "--out", str(out), "--txt-mode", "paragraphs", "--max-docs", "40", "--buckets-log2", "16"]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out.split("\nheld-out accuracy")[0])
    assert printed["n_pos"] == 40 and printed["n_neg"] == 40 and printed["n_heldout"] == 8
    assert printed["heldout_accuracy"] > 0.9
    assert QualityModel.load(out).feature_config == QualityFeatureConfig(num_buckets_log2=16)


def test_iter_texts_modes(tmp_path):
    p = tmp_path / "docs.txt"
    p.write_text("first para line one\nline two\n\n\nsecond para\n")
    assert list(iter_texts(p)) == ["first para line one", "line two", "second para"]
    assert list(iter_texts(p, txt_mode="paragraphs")) == ["first para line one\nline two", "second para"]
    with pytest.raises(ValueError, match="unsupported file type"):
        list(iter_texts(tmp_path / "x.csv"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\nnot json\n')
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        list(iter_texts(bad))


@pytest.mark.shared_data
def test_real_wikipedia_vs_common_crawl_heldout_auc(tmp_path):
    wiki = shared_data("pretrain_text", "llamafactory_wiki_demo.txt")
    cc = sorted(shared_data("cc_text").glob("*.jsonl.gz"))
    if not cc:
        pytest.skip("no cc_text/*.jsonl.gz")
    # 30 articles, one per line: cut them into ~300-word passages (about the length of a web
    # page's text) so the positives are numerous enough for a 10% hold-out to mean something.
    chunks = []
    for article in iter_texts(wiki):
        words = article.split()
        chunks += [" ".join(words[i:i + 300]) for i in range(0, len(words), 300) if len(words[i:i + 300]) > 50]
    (tmp_path / "wiki.txt").write_text("\n".join(chunks) + "\n")
    metrics = train_quality_model([tmp_path / "wiki.txt"], cc, tmp_path / "m.npz", seed=0)
    assert metrics["n_pos"] > 400 and metrics["n_neg"] > 600
    assert metrics["heldout_auc"] > 0.9, metrics
    assert metrics["heldout_accuracy"] > 0.85, metrics


# ------------------------------------------------------------------------------ model file


def test_save_load_round_trip_identical_predictions(trained, tmp_path):
    path = trained.save(tmp_path / "model.npz")
    loaded = QualityModel.load(path, expect=QualityFeatureConfig())
    pos, neg = corpus(30, seed=5)
    texts = pos + neg + ["", "x"]
    assert np.array_equal(loaded.predict_proba(texts), trained.predict_proba(texts))
    assert loaded.feature_config == trained.feature_config and loaded.bias == trained.bias
    with np.load(path, allow_pickle=False) as z:  # plain arrays only, readable without pickle
        assert set(z.files) == {"format_version", "weights", "bias", "feature_config", "meta"}
        assert json.loads(str(z["feature_config"])) == QualityFeatureConfig().model_dump()


def test_mismatched_feature_config_is_refused_naming_both(tmp_path):
    pos, neg = corpus(20, seed=6)
    path = QualityModel(QualityFeatureConfig(num_buckets_log2=12)).fit(pos, neg, epochs=1).save(tmp_path / "m.npz")
    with pytest.raises(ValueError) as err:
        QualityModel.load(path, expect=QualityFeatureConfig())
    msg = str(err.value)
    assert "'num_buckets_log2': 12" in msg and "'num_buckets_log2': 20" in msg and "m.npz" in msg
    assert QualityModel.load(path).feature_config.num_buckets_log2 == 12  # trusting the file works
    with pytest.raises(ValueError, match="num_buckets_log2"):
        QualityScorer(QualityModelOptions(enabled=True, model_path=str(path), feature_config=QualityFeatureConfig()))


def test_load_rejects_other_files(tmp_path):
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="missing"):
        QualityModel.load(tmp_path / "other.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a quality model file"):
        QualityModel.load(tmp_path / "junk.npz")
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        QualityModel.load(tmp_path / "nope.npz")
    m = QualityModel(QualityFeatureConfig(num_buckets_log2=8))
    np.savez(tmp_path / "v9.npz", format_version=np.array(9), weights=m.weights, bias=np.array(0.0, np.float32),
             feature_config=np.array(m.feature_config.model_dump_json()))
    with pytest.raises(ValueError, match="format version 9"):
        QualityModel.load(tmp_path / "v9.npz")


# ------------------------------------------------------------------------------ options


def test_options_validation_messages():
    assert QualityModelOptions().enabled is False  # off by default: there is no model to load
    with pytest.raises(ValidationError) as err:
        QualityModelOptions(enabled=True)
    assert err.value.errors()[0]["loc"] == ("model_path",) and "model_path is required" in str(err.value)
    with pytest.raises(ValidationError, match="less than or equal to 1"):
        QualityModelOptions(model_path="m.npz", threshold=1.5)
    with pytest.raises(ValidationError, match="greater than 0"):
        QualityModelOptions(model_path="m.npz", keep_top_fraction=0.0)
    top = QualityModelOptions(enabled=True, model_path="m.npz", keep_top_fraction=0.1)
    assert top.threshold is None  # naming only the fraction replaces the default threshold
    with pytest.raises(ValidationError) as err:
        QualityModelOptions(model_path="m.npz", threshold=0.5, keep_top_fraction=0.1)
    assert err.value.errors()[0]["loc"] == ("keep_top_fraction",) and "not both" in str(err.value)
    with pytest.raises(ValidationError, match="extra"):
        QualityModelOptions(model_path="m.npz", text_field="body")
    with pytest.raises(ValidationError, match="ngrams"):
        QualityModelOptions(feature_config={"ngrams": 0})
    assert QualityModelOptions(threshold=None).threshold is None  # score only, drop nothing


# ------------------------------------------------------------------------------ stage callables


def test_scorer_adds_quality_score_column(trained, tmp_path):
    path = trained.save(tmp_path / "m.npz")
    scorer = QualityScorer(QualityModelOptions(enabled=True, model_path=str(path)))
    model = scorer.model
    pos, neg = corpus(5, seed=9)
    batch = pa.table({"id": list(range(12)), "text": pos + neg + ["", None]})
    out = scorer(batch)
    assert out.column_names == ["id", "text", "quality_score"]
    assert out.schema.field("quality_score").type == pa.float64()
    scores = out.column("quality_score").to_pylist()
    assert scores[:10] == trained.predict_proba(pos + neg).tolist()
    assert all(s >= 0.5 for s in scores[:5]) and all(s < 0.5 for s in scores[5:10])
    assert 0 <= scores[10] <= 1 and math.isnan(scores[11])  # "" gets the prior, null is unscored
    again = scorer(out.to_batches()[0])  # a RecordBatch works too, and an existing column is replaced
    assert again.column_names == ["id", "text", "quality_score"]
    assert scorer.model is model  # loaded once, in __init__
    with pytest.raises(KeyError, match="'text'"):
        scorer(pa.table({"body": ["x"]}))


def test_quality_filter_drops_below_threshold(trained, tmp_path):
    path = str(trained.save(tmp_path / "m.npz"))
    pos, neg = corpus(3, seed=10)
    results = QualityFilter(QualityModelOptions(enabled=True, model_path=path)).process_batch(pos + neg)
    assert [r.drop for r in results] == [None] * 3 + ["low_score"] * 3
    assert set(results[0].scores) == {"quality_score"}
    score_only = QualityFilter(QualityModelOptions(enabled=True, model_path=path, keep_top_fraction=0.5))
    assert [r.drop for r in score_only.process_batch(neg)] == [None] * 3
