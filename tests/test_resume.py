"""The resumable-step helper and the fingerprints: semantics, and values pinned to what the
code before the helper wrote into output directories (a changed value refuses or redoes them)."""
from __future__ import annotations

import hashlib
import json

import pyarrow as pa
import pytest

from llmforge.common.resume import ConflictError, Step, canonical_json, digest, fingerprint


def test_digest_of_bytes_text_and_chunks():
    whole = hashlib.sha256(b"ab\x00c").hexdigest()
    assert digest(b"ab\x00c") == digest("ab\x00c") == digest([b"a", "b\x00", b"c"]) == whole
    assert digest(iter([b"ab", b"\x00c"]), 16) == whole[:16]


def test_fingerprint_spellings():
    value = {"b": [1, (2, 3)], "a": None}
    assert canonical_json(value) == b'{"a": null, "b": [1, [2, 3]]}'
    assert canonical_json(value, compact=True) == b'{"a":null,"b":[1,[2,3]]}'
    assert fingerprint(value) == digest(canonical_json(value))[:16]
    assert fingerprint(value, digits=None, compact=True) == digest(canonical_json(value, compact=True))
    assert canonical_json({"p": {1, 2} - {2}}) == b'{"p": "{1}"}'  # not JSON: str()


def test_fingerprints_written_by_the_old_code_are_unchanged():
    """Values computed with the six fingerprint helpers the shared ones replaced, by the code
    before the restructure (94323fd, whose outputs are on disk)."""
    from dataproc.config import DataJobConfig
    from dataproc.corpus.runner import _chain
    from dataproc.pipeline import documents_fingerprint, output_fingerprint
    from dataproc.tokenization.encode import TokenizeOptions
    from dataproc.tokenization.job import _documents_fingerprint
    from dataproc.tokenization.shard_writer import config_hash
    from llmforge.common.config import validate_config

    cfg = validate_config(DataJobConfig, {"input": {"paths": ["/data/a.warc.gz"]}, "output": {"path": "/out"}})
    # <output>/_job.json; stages.tokenize.mixture.enabled is retired but hashed as it was
    assert output_fingerprint(cfg) == "05df303b96aedcd1"
    docs = documents_fingerprint(cfg, ["b-22", "a-11"])
    assert docs == "3dba434830eba725"
    st = cfg.stages  # corpus steps' _SUCCESS, each chained from the one before
    exact = _chain(docs, "exact", st.exact_dedup.model_dump())
    near = _chain(exact, "minhash", st.minhash_dedup.model_dump())
    curate = _chain(near, "curate", st.quality_model.model_dump(), st.domains.model_dump())
    assert (exact, near, curate) == ("9205dff69b944fad", "9095cb622f7c74d2", "0398cd3c6e06c40b")
    # a unit's shards: input_fingerprint of its documents, then config_sha256 of the manifest
    assert _documents_fingerprint(pa.table({"id": ["a", "b", None], "text": ["x", None, "zz ü"]})) == "93193cd6e7eae568"
    assert config_hash(TokenizeOptions(), domain_column="domain", text_column="text",
                       input_fingerprint="0123456789abcdef")[0] == (
        "66be04a35c49f20ecb2eeb437d6c76a3c26996b2beec3d7a94e2ecdb41b7c658")
    # tokenize-text's input_fingerprint (resolved paths and sizes, then the split mode)
    files = [["/corpus/a.txt", 1234], ["/corpus/b.txt", 0]]
    assert fingerprint(files + ["paragraphs"], digits=None) == (
        "435d5cd165d8c0865fcfe929bfb69f1b08966da74afc45d76ee6042551af0876")


def test_per_document_options_added_since_are_hashed_only_when_set():
    from dataproc.config import DataJobConfig
    from dataproc.pipeline import ADDED_KEYS, output_fingerprint
    from llmforge.common.config import validate_config

    base = {"input": {"paths": ["/data/a.warc.gz"]}, "output": {"path": "/out"}}
    before = output_fingerprint(validate_config(DataJobConfig, base))
    assert before == "05df303b96aedcd1"  # as pinned above: outputs from before the keys resume
    changed = []
    for (_, stage, key), value in ADDED_KEYS.items():
        assert validate_config(DataJobConfig, base).stages.model_dump()[stage][key] == value  # the default
        set_to = lambda v: validate_config(DataJobConfig, {**base, "stages": {stage: {key: v}}})  # noqa: E731
        assert output_fingerprint(set_to(value)) == before  # spelt out, the same
        changed.append(output_fingerprint(set_to(value + 1)))
    assert len(set(changed)) == len(ADDED_KEYS) and before not in changed


def test_tokenize_text_fingerprints_its_input_files(tmp_path):
    from dataproc.tokenization.text_files import shards_from_text_files

    text = tmp_path / "t.txt"
    text.write_text("one paragraph here.\n\nanother paragraph there, longer than the first.\n")
    manifest = shards_from_text_files([str(text)], str(tmp_path / "out"), vocab_size=300)
    old = hashlib.sha256(json.dumps([[str(text.resolve()), text.stat().st_size], "paragraphs"]).encode()).hexdigest()
    assert manifest["config"]["input_fingerprint"] == old


def test_step_done_reset_finish(tmp_path):
    step = Step(str(tmp_path / "s"), fingerprint="f1")
    assert step.read() is None and step.done() is None
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "part.parquet").write_bytes(b"x")
    assert step.done() is None  # outputs without a marker are unfinished
    assert step.finish({"rows": 3}) == {"fingerprint": "f1", "rows": 3}
    assert json.loads((tmp_path / "s" / "_SUCCESS").read_text()) == {"fingerprint": "f1", "rows": 3}
    assert step.done() == {"fingerprint": "f1", "rows": 3}
    other = Step(str(tmp_path / "s"), fingerprint="f2")
    assert other.done() is None and other.read() == {"fingerprint": "f1", "rows": 3}
    other.reset()
    assert not (tmp_path / "s").exists()
    with pytest.raises(ValueError, match="contradicts"):
        step.finish({"fingerprint": "f9"})


def test_step_claim_or_refuse(tmp_path):
    job = Step(str(tmp_path), "_job.json", fingerprint="aaaa")
    assert job.claim() == {"fingerprint": "aaaa"}
    assert job.claim() == {"fingerprint": "aaaa"}  # the same config may resume
    with pytest.raises(ConflictError) as err:
        Step(str(tmp_path), "_job.json", fingerprint="bbbb").claim()
    assert err.value.found == {"fingerprint": "aaaa"} and err.value.differing() == ["fingerprint"]
    assert json.loads((tmp_path / "_job.json").read_text()) == {"fingerprint": "aaaa"}


def test_step_with_fields_and_no_expectations(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"tokenizer_sha256": "t", "config_sha256": "c", "n": 1}))
    same = Step(str(tmp_path), "manifest.json", fields={"tokenizer_sha256": "t", "config_sha256": "c"})
    assert same.refuse_other() == same.done() == {"tokenizer_sha256": "t", "config_sha256": "c", "n": 1}
    other = Step(str(tmp_path), "manifest.json", fields={"tokenizer_sha256": "t", "config_sha256": "d"})
    with pytest.raises(ConflictError) as err:
        other.refuse_other()
    assert err.value.differing() == ["config_sha256"]
    assert Step(str(tmp_path), "manifest.json").done()["n"] == 1  # no expectations: any marker counts


def test_step_staged_then_renamed(tmp_path):
    unit = Step(str(tmp_path / "documents" / "a"), "_stats.json", staging=str(tmp_path / "_work" / "a"))
    (tmp_path / "_work" / "a").mkdir(parents=True)
    (tmp_path / "_work" / "a" / "part-1.parquet").write_bytes(b"x")
    assert unit.done() is None
    unit.finish({"rows": 1})
    assert not (tmp_path / "_work" / "a").exists()
    assert sorted(p.name for p in (tmp_path / "documents" / "a").iterdir()) == ["_stats.json", "part-1.parquet"]
    assert unit.done() == {"rows": 1}
    # A second writer finishing the same unit (same outputs) does not fail.
    (tmp_path / "_work" / "a").mkdir()
    (tmp_path / "_work" / "a" / "part-1.parquet").write_bytes(b"x")
    assert unit.finish({"rows": 1}) == {"rows": 1}
    unit.reset()
    assert not (tmp_path / "_work" / "a").exists() and not (tmp_path / "documents" / "a").exists()


def test_resume_is_plumbing():
    """Shared plumbing: importing it imports none of the packages (nor Ray)."""
    import subprocess
    import sys

    code = ("import sys, llmforge.common.resume; "
            "print(sorted(m for m in ('ray', 'dataproc', 'training', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


class _NoDirRename:
    """A local filesystem that cannot rename directories, like an object store, and records
    the order files are moved in."""

    def __init__(self):
        import pyarrow.fs as pafs

        self._local, self.moved = pafs.LocalFileSystem(), []

    def move(self, src: str, dst: str) -> None:
        import pyarrow.fs as pafs

        if self._local.get_file_info(src).type == pafs.FileType.Directory:
            raise OSError("no directory rename here")
        self.moved.append(dst.rsplit("/", 1)[-1])
        self._local.move(src, dst)

    def __getattr__(self, name):
        return getattr(self._local, name)


def test_per_file_move_puts_the_marker_last(tmp_path):
    from llmforge.common import fs

    src = tmp_path / "staging"
    src.mkdir()
    for name in ("_SUCCESS", "a.parquet", "z.parquet"):  # the marker sorts first by name
        (src / name).write_text(name)
    store = _NoDirRename()
    fs.move_dir(store, str(src), str(tmp_path / "done"), last="_SUCCESS")
    assert store.moved == ["a.parquet", "z.parquet", "_SUCCESS"]
    assert sorted(p.name for p in (tmp_path / "done").iterdir()) == ["_SUCCESS", "a.parquet", "z.parquet"]
    assert not src.exists()
