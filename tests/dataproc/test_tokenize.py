"""Tokenizer training, BatchTokenizer rules and the token shard format (llmforge.shard_format)."""
from __future__ import annotations

import functools
import json
import os
import random

import numpy as np
import pyarrow as pa
import pytest
from pydantic import ValidationError

from llmforge import shard_format as shards
from dataproc.tokenization.encode import BatchTokenizer, TokenizeOptions
from dataproc.tokenization.shard_writer import write_shards_from_batches
from dataproc.tokenization.summary import inspect_shards
from dataproc.tokenization.tokenizer import TokenizerTrainOptions, load_tokenizer, train_tokenizer
from llmforge.shard_format import DEFAULT_SPECIAL_TOKENS, EOS_TOKEN
from dataproc.synthetic.english import generated_documents
from tests.conftest import shared_data

TRICKY = [
    "plain ASCII, with  two spaces and a trailing space ",
    "emoji 👩‍👩‍👧‍👦 family, flags 🇫🇷🇯🇵, skin tone 👍🏽, keycap 1️⃣",
    "CJK 日本語のテキスト 中文 한국어",
    "combining e\u0301 vs é, Zalgo Z\u0335\u0321a\u0334l\u0338g\u0336o",
    "control \x00\x01\x07\x1b[0m\x7f chars\ttab\r\nCRLF\rCR\x0b\x0c",
    "RTL \u202eالعربية עברית\u202c, zero width\u200b\u200d, BOM \ufeff, line sep \u2028 para \u2029",
    "\n\n\n   leading whitespace and only whitespace after   \n\t \u3000",
    "astral 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𓀀 \U0010fffd private \ue000",
    f"literal special tokens in web text: {EOS_TOKEN} <|user|> <|pad",
]


@functools.lru_cache(maxsize=None)
def generated_corpus(n_docs: int, seed: int = 0) -> list[str]:
    return generated_documents(n_docs, seed)


@pytest.fixture(scope="module")
def tok_path(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("tok") / "tokenizer.json")
    train_tokenizer(generated_corpus(2000), TokenizerTrainOptions(vocab_size=600, sample_docs=2000), path)
    return path


def _batches(texts: list[str], domains: list[str | None] | None = None, size: int = 7) -> list[pa.Table]:
    domains = domains if domains is not None else [f"d{i % 3}.example" for i in range(len(texts))]
    return [pa.table({"text": texts[i:i + size], "domain": domains[i:i + size]}) for i in range(0, len(texts), size)]


# ---------------------------------------------------------------------------- tokenizer

def test_train_tokenizer_exact_vocab_specials_first(tok_path, tmp_path):
    path = str(tmp_path / "tok.json")
    info = train_tokenizer(generated_corpus(2000), TokenizerTrainOptions(vocab_size=600, sample_docs=2000), path)
    tokenizer, sha = load_tokenizer(path)
    assert info["vocab_size"] == tokenizer.get_vocab_size() == 600
    assert info["sha256"] == sha and info["documents"] == 2000
    assert info["special_tokens"] == {t: i for i, t in enumerate(DEFAULT_SPECIAL_TOKENS)}
    for i, t in enumerate(DEFAULT_SPECIAL_TOKENS):
        assert tokenizer.token_to_id(t) == i
    # Same corpus, same file (the fixture trained it too): manifests' tokenizer hash is reproducible.
    assert load_tokenizer(tok_path)[1] == info["sha256"]
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]


def test_sample_docs_limits_training(tmp_path):
    info = train_tokenizer(iter(["", None] + generated_corpus(500)),
                           TokenizerTrainOptions(vocab_size=300, sample_docs=50), str(tmp_path / "t.json"))
    assert info["documents"] == 50


def test_train_options_validation():
    with pytest.raises(ValidationError, match="256 byte tokens"):
        TokenizerTrainOptions(vocab_size=260)
    TokenizerTrainOptions(vocab_size=261)
    with pytest.raises(ValidationError, match="endoftext"):
        TokenizerTrainOptions(special_tokens=["<|pad|>"])
    with pytest.raises(ValidationError):
        TokenizerTrainOptions(vocab_sizee=1000)  # extra=forbid


@pytest.mark.parametrize("text", TRICKY)
def test_round_trip_tricky_unicode(tok_path, text):
    tokenizer, _ = load_tokenizer(tok_path)
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    assert tokenizer.decode(ids, skip_special_tokens=False) == text
    # Literal special tokens in data are plain text: no special id can come out of encoding.
    assert min(ids) >= len(DEFAULT_SPECIAL_TOKENS)


def test_round_trip_random_code_points(tok_path):
    tokenizer, _ = load_tokenizer(tok_path)
    rng = random.Random(1)
    valid = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]  # surrogates are not text
    texts = ["".join(chr(rng.choice(valid)) for _ in range(rng.randint(0, 60))) for _ in range(200)]
    for text, enc in zip(texts, tokenizer.encode_batch(texts, add_special_tokens=False)):
        assert tokenizer.decode(enc.ids) == text


def test_tinyshakespeare_tokenizer(tmp_path):
    path = shared_data("pretrain_text", "tinyshakespeare_input.txt")
    text = path.read_text(encoding="utf-8")
    docs = text.split("\n\n")  # speeches
    info = train_tokenizer(docs, TokenizerTrainOptions(vocab_size=2000), str(tmp_path / "shakespeare.json"))
    assert info["vocab_size"] == 2000
    tokenizer, _ = load_tokenizer(str(tmp_path / "shakespeare.json"))
    sample = text[:5000]
    ids = tokenizer.encode(sample, add_special_tokens=False).ids
    assert tokenizer.decode(ids) == sample
    assert len(sample) / len(ids) > 2.5  # it learned something: several characters per token


# ---------------------------------------------------------------------------- BatchTokenizer

def test_batch_tokenizer_rules(tok_path):
    tokenizer, _ = load_tokenizer(tok_path)
    long_text = " ".join(generated_corpus(20, seed=5))
    n_long = len(tokenizer.encode(long_text).ids)
    opts = TokenizeOptions(min_doc_tokens=3, max_doc_tokens=50)
    bt = BatchTokenizer(tok_path, opts)
    table = pa.table({"text": ["", None, "a", "Hello there, world of tokens.", long_text], "id": [1, 2, 3, 4, 5]})
    out = bt(table)
    assert out.column_names == ["id", "tokens", "n_tokens", "tokenize_skip", "truncated_tokens"]
    assert out.schema.field("tokens").type == pa.list_(pa.uint32())
    assert out.column("tokenize_skip").to_pylist() == ["empty", "empty", "too_short", None, None]
    toks = out.column("tokens").to_pylist()
    assert toks[:3] == [[], [], []]
    assert toks[3] == tokenizer.encode("Hello there, world of tokens.").ids + [0]
    assert toks[4] == tokenizer.encode(long_text).ids[:50] + [0]
    assert out.column("n_tokens").to_pylist() == [len(t) for t in toks]
    assert out.column("truncated_tokens").to_pylist() == [0, 0, 0, 0, n_long - 50]
    assert bt(table.slice(0, 0)).num_rows == 0

    no_eos = BatchTokenizer(tok_path, {"append_eos": False}, drop_text=False)(table)
    assert "text" in no_eos.column_names
    assert no_eos.column("tokens").to_pylist()[3] == tokenizer.encode("Hello there, world of tokens.").ids


def test_tokenize_options_validation():
    TokenizeOptions()  # encoding options only: the tokenizer is passed on its own
    with pytest.raises(ValidationError):
        TokenizeOptions(shard_tokens=0)
    with pytest.raises(ValidationError, match="max_doc_tokens"):
        TokenizeOptions(min_doc_tokens=10, max_doc_tokens=5)
    with pytest.raises(ValidationError):
        TokenizeOptions(weights={"a": 1.0})  # mixing is the stage's (stages.tokenize.mixture)
    with pytest.raises(ValidationError):
        TokenizeOptions(tokenizer_path="t.json")


def test_tokenize_stage_options_keep_the_encoding_checks():
    """The stage's options add to the encoding options' validator instead of replacing it."""
    from dataproc.tokenization.options import TokenizeStageOptions

    TokenizeStageOptions(enabled=True)  # no tokenizer_path: one is trained
    with pytest.raises(ValidationError, match="max_doc_tokens"):
        TokenizeStageOptions(min_doc_tokens=10, max_doc_tokens=5)
    stage = TokenizeStageOptions(enabled=True, tokenizer_path="t.json", shard_tokens=20_000, max_doc_tokens=50,
                                 train={"vocab_size": 600}, actors=2)
    assert stage.encoding() == TokenizeOptions(shard_tokens=20_000, max_doc_tokens=50)
    # The YAML keys and their order under stages.tokenize (what `data validate` prints).
    assert list(stage.model_dump()) == ["enabled", "tokenizer_path", "shard_tokens", "max_doc_tokens",
                                        "append_eos", "min_doc_tokens", "train", "mixture", "actors"]


def test_config_hash_is_the_one_in_existing_manifests():
    """Shards written before the options were split record these config_sha256 values."""
    from dataproc.tokenization.options import TokenizeStageOptions
    from dataproc.tokenization.shard_writer import config_hash

    plain = config_hash(TokenizeOptions(), domain_column="domain", text_column="text",
                        input_fingerprint="0123456789abcdef")[0]
    assert plain == "66be04a35c49f20ecb2eeb437d6c76a3c26996b2beec3d7a94e2ecdb41b7c658"
    stage = TokenizeStageOptions(enabled=True, tokenizer_path="/x/tokenizer.json", shard_tokens=20_000,
                                 max_doc_tokens=50, train={"vocab_size": 600})
    want = "59f0c99366f85844717ec0e0f073a03104b0c5cb780711022f4e9e9e1c1f970b"
    kw = dict(domain_column="domain_", text_column="text", input_fingerprint="fedcba9876543210")
    # Neither enabled nor tokenizer_path nor the stage's other keys change the shards' config.
    assert config_hash(stage.encoding(), **kw)[0] == config_hash(stage, **kw)[0] == want


# ---------------------------------------------------------------------------- shard format

def test_writer_dtype_idx_and_rolling(tmp_path):
    docs = [np.arange(n, dtype=np.uint32) + 1 for n in (3, 2, 5, 1, 4, 6, 2)]
    w = shards.ShardWriter(str(tmp_path), vocab_size=100, shard_tokens=5)
    for i, d in enumerate(docs):
        w.add(d, domain=["a", "b"][i % 2])
    entries = w.close()
    # 3+2 fill shard 0 exactly; 5; 1+4; 6 alone (longer than a shard); 2.
    assert [(e["documents"], e["tokens"]) for e in entries] == [(2, 5), (1, 5), (2, 5), (1, 6), (1, 2)]
    assert np.fromfile(tmp_path / "shard-00000.idx", dtype="<u8").tolist() == [3, 5]
    assert np.fromfile(tmp_path / "shard-00002.idx", dtype="<u8").tolist() == [1, 5]
    raw = (tmp_path / "shard-00000.bin").read_bytes()
    assert len(raw) == 10 and np.frombuffer(raw, "<u2").tolist() == [1, 2, 3, 1, 2]
    assert entries[0]["domains"] == {"a": {"tokens": 3, "documents": 1}, "b": {"tokens": 2, "documents": 1}}

    m = shards.build_manifest(entries, vocab_size=100, tokenizer_sha256="t", config_sha256="c")
    shards.write_manifest(str(tmp_path), m)
    assert m["dtype"] == "uint16" and m["total_tokens"] == 23 and m["total_documents"] == 7
    assert m["domains"] == {"a": {"tokens": 3 + 5 + 4 + 2, "documents": 4}, "b": {"tokens": 2 + 1 + 6, "documents": 3}}
    r = shards.open_shards(str(tmp_path))
    assert (r.num_documents, r.num_tokens) == (7, 23)
    assert [d.tolist() for d in r] == [d.tolist() for d in docs]
    assert r.document(5).tolist() == docs[5].tolist() and r.document(-1).tolist() == docs[-1].tolist()
    with pytest.raises(IndexError):
        r.document(7)
    r.verify()


def test_writer_batch_split_across_shards_matches_single_adds(tmp_path):
    rng = np.random.default_rng(0)
    lengths = rng.integers(0, 40, size=200)
    values = rng.integers(0, 1000, size=int(lengths.sum()))
    domains = [f"x{i % 5}" for i in range(200)]
    a = shards.ShardWriter(str(tmp_path / "a"), 1000, 97)
    a.add_batch(values, lengths, domains)
    b = shards.ShardWriter(str(tmp_path / "b"), 1000, 97)
    for i, start in enumerate(np.concatenate([[0], np.cumsum(lengths)[:-1]])):
        b.add(values[start:start + lengths[i]], domains[i])
    assert a.close() == b.close()
    assert all(e["tokens"] <= 97 for e in a.shards)


def test_uint32_for_large_vocab(tmp_path):
    w = shards.ShardWriter(str(tmp_path), vocab_size=70_000, shard_tokens=1000)
    w.add([0, 65_535, 65_536, 69_999])
    entries = w.close()
    shards.write_manifest(str(tmp_path), shards.build_manifest(entries, vocab_size=70_000, tokenizer_sha256=None,
                                                               config_sha256=None))
    assert (tmp_path / "shard-00000.bin").stat().st_size == 16
    r = shards.open_shards(str(tmp_path))
    assert r.manifest["dtype"] == "uint32" and r.document(0).dtype == np.dtype("<u4")
    assert r.document(0).tolist() == [0, 65_535, 65_536, 69_999]
    assert shards.dtype_for_vocab(65_536) == np.dtype("<u2")
    with pytest.raises(ValueError, match="out of range"):
        shards.ShardWriter(str(tmp_path / "x"), vocab_size=100, shard_tokens=10).add([100])


def test_reader_detects_damage(tmp_path):
    w = shards.ShardWriter(str(tmp_path), vocab_size=100, shard_tokens=4)
    for d in ([1, 2, 3], [4, 5], [6]):
        w.add(d)
    shards.write_manifest(str(tmp_path), shards.build_manifest(w.close(), vocab_size=100,
                                                               tokenizer_sha256=None, config_sha256=None))
    shards.open_shards(str(tmp_path))
    bin1 = tmp_path / "shard-00001.bin"
    good = bin1.read_bytes()
    bin1.write_bytes(good[:-1])
    with pytest.raises(ValueError, match=r"shard-00001.bin has 5 bytes.*3 uint16 tokens = 6 bytes"):
        shards.open_shards(str(tmp_path))
    bin1.write_bytes(good[:-2] + b"\x09\x00")  # same size, other bytes: only the hash sees it
    with pytest.raises(ValueError, match="sha256"):
        shards.open_shards(str(tmp_path)).verify()
    bin1.unlink()
    with pytest.raises(FileNotFoundError, match="shard-00001.bin .*missing"):
        shards.open_shards(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="manifest.json not found"):
        shards.open_shards(str(tmp_path / "nothing"))


# ---------------------------------------------------------------------------- end to end

def test_write_shards_end_to_end(tok_path, tmp_path):
    tokenizer, tok_sha = load_tokenizer(tok_path)
    texts = generated_corpus(120, seed=3) + ["", "a", " ".join(generated_corpus(30, seed=9))]
    domains = [f"d{i % 3}.example" for i in range(len(texts) - 1)] + [None]
    opts = TokenizeOptions(shard_tokens=500, min_doc_tokens=2, max_doc_tokens=300)
    m = write_shards_from_batches(_batches(texts, domains), str(tmp_path / "out"), tok_path, opts)

    expected = []
    for t in texts:
        ids = tokenizer.encode(t).ids
        if len(ids) >= 2:
            expected.append(ids[:300] + [0])
    r = shards.open_shards(str(tmp_path / "out"))
    assert [d.tolist() for d in r] == expected
    assert m["total_documents"] == len(expected) == len(texts) - 2
    assert m["total_tokens"] == sum(map(len, expected)) == sum(s["tokens"] for s in m["shards"])
    assert m["counts"]["empty"] == 1 and m["counts"]["too_short"] == 1
    assert m["counts"]["truncated_documents"] == 1
    assert m["counts"]["truncated_tokens"] == len(tokenizer.encode(texts[-1]).ids) - 300
    assert m["counts"]["input_documents"] == len(texts)
    assert m["domains"]["(none)"] == {"documents": 1, "tokens": 301}
    assert sum(c["documents"] for c in m["domains"].values()) == m["total_documents"]
    assert m["tokenizer_sha256"] == tok_sha and m["dtype"] == "uint16" and m["vocab_size"] == 600
    assert m["eos_token_id"] == m["document_boundary_token_id"] == 0 and m["bos_token_id"] is None
    assert m["special_tokens"] == {t: i for i, t in enumerate(DEFAULT_SPECIAL_TOKENS)}
    assert len(m["shards"]) > 3 and all(s["tokens"] <= 500 for s in m["shards"])
    assert json.loads((tmp_path / "out" / "manifest.json").read_text()) == m

    report = inspect_shards(str(tmp_path / "out"), tok_path, samples=3)
    assert "(none)" in report and tok_sha in report and "uint16" in report
    assert "<|endoftext|>" in report  # decoded samples end with the boundary token
    assert "token ids" in inspect_shards(str(tmp_path / "out"))


def test_deterministic_and_batching_independent(tok_path, tmp_path):
    texts = generated_corpus(150, seed=4)
    opts = TokenizeOptions(shard_tokens=700)
    write_shards_from_batches(_batches(texts, size=7), str(tmp_path / "a"), tok_path, opts)
    write_shards_from_batches(_batches(texts, size=7), str(tmp_path / "b"), tok_path, opts)
    write_shards_from_batches(_batches(texts, size=50), str(tmp_path / "c"), tok_path, opts)
    names = sorted(os.listdir(tmp_path / "a"))
    assert names == sorted(os.listdir(tmp_path / "b")) == sorted(os.listdir(tmp_path / "c"))
    for name in names:
        data = (tmp_path / "a" / name).read_bytes()
        assert data == (tmp_path / "b" / name).read_bytes() == (tmp_path / "c" / name).read_bytes(), name


def test_pretokenized_batches_written_as_is(tok_path, tmp_path):
    texts = generated_corpus(40, seed=6)
    opts = TokenizeOptions(shard_tokens=300)
    bt = BatchTokenizer(tok_path, opts)
    write_shards_from_batches(_batches(texts), str(tmp_path / "a"), tok_path, opts)
    write_shards_from_batches((bt(b) for b in _batches(texts)), str(tmp_path / "b"), tok_path, opts)
    for name in os.listdir(tmp_path / "a"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_resume_and_refusals(tok_path, tmp_path):
    out = str(tmp_path / "out")
    texts = generated_corpus(60, seed=7)
    opts = TokenizeOptions(shard_tokens=400)
    first = write_shards_from_batches(_batches(texts), out, tok_path, opts)

    def exploding():
        raise AssertionError("resume must not read the input")
        yield

    assert write_shards_from_batches(exploding(), out, tok_path, opts) == first

    # A killed run leaves temp files and maybe stale shards; a rebuild clears them.
    (tmp_path / "out" / "shard-00000.bin.tmp-deadbeef").write_bytes(b"partial")
    (tmp_path / "out" / "shard-00099.bin").write_bytes(b"stale")
    (tmp_path / "out" / "notes.txt").write_text("not ours")
    (tmp_path / "out" / "manifest.json").unlink()
    again = write_shards_from_batches(_batches(texts), out, tok_path, opts)
    assert again == first
    left = sorted(os.listdir(out))
    assert "notes.txt" in left and "shard-00099.bin" not in left and not [p for p in left if ".tmp-" in p]

    # Different config in the same directory: refused, unless overwrite.
    other = TokenizeOptions(shard_tokens=800)
    with pytest.raises(ValueError, match="different config"):
        write_shards_from_batches(_batches(texts), out, tok_path, other)
    rebuilt = write_shards_from_batches(_batches(texts), out, tok_path, other, overwrite=True)
    assert rebuilt["config_sha256"] != first["config_sha256"]
    assert rebuilt["total_tokens"] == first["total_tokens"] and len(rebuilt["shards"]) < len(first["shards"])

    # A damaged finished output is rebuilt rather than returned.
    (tmp_path / "out" / "shard-00000.idx").write_bytes(b"")
    assert write_shards_from_batches(_batches(texts), out, tok_path, other) == rebuilt


def test_mismatched_tokenizer_refused(tok_path, tmp_path):
    out = str(tmp_path / "out")
    opts = TokenizeOptions(shard_tokens=400)
    m = write_shards_from_batches(_batches(generated_corpus(20)), out, tok_path, opts)
    assert shards.check_tokenizer_matches(m, tok_path) == m["tokenizer_sha256"]

    other = str(tmp_path / "other.json")
    info = train_tokenizer(generated_corpus(300, seed=11), TokenizerTrainOptions(vocab_size=400), other)
    with pytest.raises(ValueError, match=rf"tokenizer sha256 {info['sha256']} does not match shards' "
                                         rf"{m['tokenizer_sha256']}"):
        shards.check_tokenizer_matches(m, other)
    with pytest.raises(ValueError, match="different tokenizer"):
        write_shards_from_batches(_batches(generated_corpus(20)), out, other,
                                  TokenizeOptions(shard_tokens=400))
    assert "not decoding samples" in inspect_shards(out, other)


def test_all_documents_skipped(tok_path, tmp_path):
    m = write_shards_from_batches([pa.table({"text": ["", None]}), pa.table({"text": pa.array([], pa.string())})],
                                  str(tmp_path / "out"), tok_path, TokenizeOptions())
    assert m["shards"] == [] and m["total_tokens"] == 0 and m["counts"]["empty"] == 2
    r = shards.open_shards(str(tmp_path / "out"))
    assert len(r) == 0 and list(r) == []
    assert "0 documents" in inspect_shards(str(tmp_path / "out"), tok_path)


def test_single_token_documents(tok_path, tmp_path):
    tokenizer, _ = load_tokenizer(tok_path)
    single = [t for t in ("a", "b", "x", ".") if len(tokenizer.encode(t).ids) == 1]
    opts = TokenizeOptions(shard_tokens=4)
    m = write_shards_from_batches([pa.table({"text": single})], str(tmp_path / "out"), tok_path, opts)
    assert m["total_documents"] == len(single) and m["total_tokens"] == 2 * len(single)  # id + EOS each
    assert all(s["tokens"] == 4 for s in m["shards"][:-1])


def test_configure_threads(monkeypatch):
    from dataproc.tokenization.encode import configure_threads

    monkeypatch.delenv("RAYON_NUM_THREADS", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # what Ray sets in a worker with 3 CPUs
    configure_threads()
    assert os.environ["RAYON_NUM_THREADS"] == "3"
    monkeypatch.setenv("RAYON_NUM_THREADS", "5")  # the user's choice wins over Ray's share
    configure_threads()
    assert os.environ["RAYON_NUM_THREADS"] == "5"
    configure_threads(2)
    assert os.environ["RAYON_NUM_THREADS"] == "2"


@pytest.mark.ray
def test_ray_actor_pool_then_ordered_write(ray_local, tok_path, tmp_path):
    """Tokenize on a Ray Data actor pool, write in the driver: same shards as in-process."""
    texts = generated_corpus(60, seed=8)
    opts = TokenizeOptions(shard_tokens=300, max_doc_tokens=40)
    local = write_shards_from_batches(_batches(texts), str(tmp_path / "local"), tok_path, opts)
    ds = ray_local.data.from_arrow(_batches(texts)).map_batches(
        BatchTokenizer, fn_constructor_kwargs={"tokenizer_path": tok_path, "options": opts},
        batch_format="pyarrow", batch_size=16, compute=ray_local.data.ActorPoolStrategy(size=1), num_cpus=1)
    ctx = ray_local.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    try:
        tokenized = list(ds.iter_batches(batch_format="pyarrow", batch_size=None))
    finally:
        ctx.execution_options.preserve_order = False
    remote = write_shards_from_batches(tokenized, str(tmp_path / "remote"), tok_path, opts)
    assert remote == local


def test_shard_format_is_dependency_light():
    """Training reads shards: the format module must not drag in Ray or tokenizers."""
    import subprocess
    import sys

    code = "import sys, llmforge.shard_format; print(sorted(m for m in ('ray', 'tokenizers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
