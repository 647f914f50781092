"""The per-document runner and the stage registry: every stage runs through the one contract,
a stage is added by the registry alone, and the table layout the sink relies on."""
from __future__ import annotations

import gc
import math
import pickle

import pyarrow as pa
import pytest
from pydantic import ValidationError

from dataproc.config import CORPUS_STAGE_ORDER, STAGE_ORDER, StagesConfig, stages_config_model
from dataproc.documents.contract import Column, DocStage, StageResult
from dataproc.documents.extract import ExtractOptions, extract_text
from dataproc.documents.registry import DOCUMENT_STAGES, StageRegistry, StageSpec
from dataproc.documents.runner import DocumentStages, _stages_for, run_stages, warm_stages
from dataproc.options import StageOptions

# One paragraph per line of text; C4 keeps 3 of these 8 lines (5 sentences), see test_filters.
C4_LINES = [
    "This is a proper sentence. And another one here.",
    "no terminal punctuation here",
    "Too short.",
    "Please enable JavaScript to view this page.",
    "Read our Privacy Policy before you continue.",
    "Wikipedia says this is true.[1]",
    "Third line is fine. It has two sentences!",
    "Wait for it...",
]
C4_KEPT = (
    "This is a proper sentence. And another one here.\n"
    "Wikipedia says this is true.\n"
    "Third line is fine. It has two sentences!"
)
OFF = {"enabled": False}
ONLY_C4 = {"language": OFF, "gopher_repetition": OFF, "gopher_quality": OFF, "fineweb": OFF, "pii": OFF}


def _page(title: str, lines: list[str]) -> str:
    body = "".join(f"<p>{line}</p>" for line in lines)
    return f"<html><head><title>{title}</title></head><body><article>{body}</article></body></html>"


def _batch(rows: list[tuple[str, str | None, str | None]]) -> pa.Table:
    """(id, url, html) rows in the reader's column layout (the columns the runner must keep)."""
    return pa.table(
        {
            "id": [r[0] for r in rows],
            "url": [r[1] for r in rows],
            "html": pa.array([r[2] for r in rows], pa.large_string()),
            "source": ["s.warc.gz"] * len(rows),
            "seq": list(range(len(rows))),
        }
    )


def test_registry_is_the_stage_order_and_the_config():
    assert STAGE_ORDER == DOCUMENT_STAGES.names() == (
        "url_filter", "extract", "language", "gopher_repetition", "gopher_quality", "c4", "fineweb", "pii",
    )  # fmt: skip
    assert list(StagesConfig.model_fields) == [*STAGE_ORDER, *CORPUS_STAGE_ORDER, "tokenize"]
    for spec in DOCUMENT_STAGES:
        assert StagesConfig.model_fields[spec.name].annotation is spec.options
    cfg = StagesConfig()
    assert cfg.enabled() == list(STAGE_ORDER)
    assert StagesConfig.model_validate({"c4": OFF, "language": OFF}).enabled() == [
        "url_filter", "extract", "gopher_repetition", "gopher_quality", "fineweb", "pii",
    ]  # fmt: skip
    with pytest.raises(ValidationError) as err:
        StagesConfig.model_validate({"c4": {"min_sentences": 3}})
    assert [(e["loc"], e["type"]) for e in err.value.errors()] == [(("c4", "min_sentences"), "extra_forbidden")]
    assert pickle.loads(pickle.dumps(cfg)) == cfg  # Ray ships it to the stage actors
    with pytest.raises(KeyError, match="unknown stage 'nope'"):
        DOCUMENT_STAGES["nope"]
    with pytest.raises(ValueError, match="duplicate stage names"):
        StageRegistry([*DOCUMENT_STAGES, DOCUMENT_STAGES["c4"]])
    with pytest.raises(ValueError, match=r"names \['domains'\] are taken by corpus stages"):
        stages_config_model(DOCUMENT_STAGES.with_stage(StageSpec("domains", ShoutOptions, Shout), after="pii"))


def test_c4_through_the_runner_keeps_its_cleaned_lines():
    short = C4_LINES[:2] + ["This line is long enough to pass the extraction minimum."]
    batch = _batch([("kept", "https://a.example/", _page("Kept", C4_LINES)),
                    ("few", "https://b.example/", _page("Few", short)),
                    ("porn", "https://pornhub.com/", _page("Blocked", C4_LINES))])  # fmt: skip
    out = DocumentStages(StagesConfig.model_validate(ONLY_C4))(batch)
    assert out.column_names == [
        "id", "url", "source", "seq", "t_url_filter", "text", "title", "t_extract",
        "c4_lines_kept_frac", "c4_sentences", "t_c4", "drop_reason",
    ]  # fmt: skip
    assert out.schema.field("c4_sentences").type == pa.float64()
    rows = out.to_pylist()
    assert [(r["text"], r["title"], r["drop_reason"]) for r in rows] == [
        (C4_KEPT, "Kept", None),
        ("", "Few", "c4:too_few_sentences"),  # dropped rows' text is emptied, the title stays
        ("", "", "url_filter:blocked_domain"),  # never extracted: "" like a page without a title
    ]
    assert (rows[0]["c4_lines_kept_frac"], rows[0]["c4_sentences"]) == (3 / 8, 5.0)
    assert (rows[1]["c4_lines_kept_frac"], rows[1]["c4_sentences"]) == (2 / 3, 3.0)  # 2 + 1 sentences < 5
    assert math.isnan(rows[2]["c4_lines_kept_frac"]) and math.isnan(rows[2]["c4_sentences"])
    assert all(r["t_c4"] >= 0 for r in rows)
    again = run_stages(batch, StagesConfig.model_validate(ONLY_C4).model_dump_json())
    timing = [c for c in out.column_names if c.startswith("t_")]
    assert again.drop_columns(timing).to_pylist()[0] == out.drop_columns(timing).to_pylist()[0]


def test_warm_stages_builds_the_stages_that_run_stages_then_uses():
    config_json = StagesConfig.model_validate(ONLY_C4).model_dump_json()
    _stages_for.cache_clear()
    try:
        warm_stages(config_json)
        assert (_stages_for.cache_info().misses, _stages_for.cache_info().currsize) == (1, 1)
        # Built for the worker's life: frozen, out of the collector's walks, which run again.
        built = _stages_for(config_json)
        assert gc.isenabled() and not any(o is built for o in gc.get_objects())
    finally:
        gc.unfreeze()  # this test session's objects, frozen with them
    out = run_stages(_batch([("kept", "https://a.example/", _page("Kept", C4_LINES))]), config_json)
    assert (_stages_for.cache_info().hits, _stages_for.cache_info().misses) == (2, 1)  # built once, by the warm-up
    assert out.column("text").to_pylist() == [C4_KEPT]


def test_warm_stages_leaves_a_bad_config_to_the_job_tasks():
    _stages_for.cache_clear()
    warm_stages("{not json")  # no exception here: the job's own task raises it in place
    assert _stages_for.cache_info().currsize == 0
    with pytest.raises(ValidationError):
        run_stages(_batch([("kept", "https://a.example/", _page("Kept", C4_LINES))]), "{not json")


def test_declared_column_types_hold_when_no_row_reaches_the_stage():
    batch = _batch([("porn", "https://pornhub.com/", _page("x", C4_LINES)), ("none", None, None)])
    out = DocumentStages(StagesConfig.model_validate({"gopher_repetition": OFF, "gopher_quality": OFF}))(batch)
    assert out.column("drop_reason").to_pylist() == ["url_filter:blocked_domain", "extract:empty"]
    types = {f.name: f.type for f in out.schema}
    assert (types["lang"], types["lang_score"], types["title"], types["text"]) == (
        pa.string(), pa.float64(), pa.string(), pa.string()
    )
    assert out.column("lang").to_pylist() == [None, None]
    assert out.column("title").to_pylist() == ["", ""]


class ShoutOptions(StageOptions):
    min_marks: int = 2


class Shout(DocStage):
    """A made-up stage with every kind of output: int, bool and string columns and a rewrite."""

    rewrites = True
    columns = (Column("shout_marks", pa.int64()), Column("shouted", pa.bool_()), Column("first_word", pa.string()))

    def __init__(self, options: ShoutOptions):
        self.options = options

    def process(self, text: str) -> StageResult:
        marks = text.count("!")
        scores = {"shout_marks": marks, "shouted": marks >= self.options.min_marks, "first_word": text.split()[0]}
        if marks < self.options.min_marks:
            return StageResult("calm", scores)
        return StageResult(None, scores, text=text.upper())


def test_a_stage_is_added_through_the_registry_alone():
    registry = DOCUMENT_STAGES.with_stage(StageSpec("shout", ShoutOptions, Shout), after="extract")
    config_model = stages_config_model(registry, "ShoutStagesConfig")
    assert registry.names()[:3] == ("url_filter", "extract", "shout")
    assert "shout" not in StagesConfig.model_fields and "shout" not in DOCUMENT_STAGES.names()  # a new value
    cfg = config_model.model_validate({"shout": {"min_marks": 3}, **ONLY_C4, "c4": OFF})
    assert cfg.enabled() == ["url_filter", "extract", "shout"]
    with pytest.raises(ValidationError) as err:
        config_model.model_validate({"shout": {"marks": 3}})
    assert err.value.errors()[0]["loc"] == ("shout", "marks")

    loud = "Stop! Right! Now! " * 5
    batch = _batch([("loud", "https://a.example/", _page("L", [loud])),
                    ("calm", "https://b.example/", _page("C", ["Calm words, " * 6 + "one mark!"])),
                    ("porn", "https://pornhub.com/", _page("P", [loud]))])  # fmt: skip
    out = DocumentStages(cfg)(batch)
    assert out.column_names == [
        "id", "url", "source", "seq", "t_url_filter", "text", "title", "t_extract",
        "shout_marks", "shouted", "first_word", "t_shout", "drop_reason",
    ]  # fmt: skip
    types = {f.name: f.type for f in out.schema}
    assert (types["shout_marks"], types["shouted"], types["first_word"]) == (pa.int64(), pa.bool_(), pa.string())
    assert out.select(["text", "shout_marks", "shouted", "first_word", "drop_reason"]).to_pylist() == [
        {"text": loud.strip().upper(), "shout_marks": 15, "shouted": True, "first_word": "Stop!", "drop_reason": None},
        {"text": "", "shout_marks": 1, "shouted": False, "first_word": "Calm", "drop_reason": "shout:calm"},
        {"text": "", "shout_marks": None, "shouted": None, "first_word": None,
         "drop_reason": "url_filter:blocked_domain"},
    ]  # fmt: skip


def test_a_new_text_from_a_stage_that_does_not_declare_rewrites_is_an_error():
    class Sneaky(Shout):
        rewrites = False

    registry = DOCUMENT_STAGES.with_stage(StageSpec("shout", ShoutOptions, Sneaky), after="extract")
    cfg = stages_config_model(registry).model_validate({"shout": {"min_marks": 0}, **ONLY_C4, "c4": OFF})
    with pytest.raises(TypeError, match="stage 'shout' returned a new text but does not declare `rewrites`"):
        DocumentStages(cfg)(_batch([("a", "https://a.example/", _page("A", ["Loud words! " * 6]))]))


class NoOptions(StageOptions):
    pass


class HtmlKind(DocStage):
    """Reads the page's HTML and notes the Python type it got it as."""

    reads = "html"
    columns = (Column("html_kind", pa.string()),)

    def __init__(self, options: NoOptions):
        pass

    def process(self, html) -> StageResult:
        return StageResult(None, {"html_kind": type(html).__name__})


@pytest.mark.parametrize("reads_utf8,kind", [(True, "bytes"), (False, "str")])
def test_html_reaches_the_stages_as_utf8_bytes_only_when_every_reader_takes_them(reads_utf8, kind):
    page = _page("Grüße", ["Привет, мир! Ünïcödé text, long enough for extraction to keep it. " * 3])
    batch = _batch([("a", "https://a.example/", page)])
    extract_only = DocumentStages(StagesConfig.model_validate({**ONLY_C4, "c4": OFF}))
    assert extract_only.utf8_columns == {"html"}  # extraction alone: Lexbor gets the bytes
    want_text, want_title = extract_text(page, ExtractOptions())
    assert extract_only(batch).select(["text", "title"]).to_pylist() == [{"text": want_text, "title": want_title}]

    spec = StageSpec("html_kind", NoOptions, type("HtmlKind", (HtmlKind,), {"reads_utf8": reads_utf8}))
    cfg = stages_config_model(DOCUMENT_STAGES.with_stage(spec, after="url_filter")).model_validate(
        {"html_kind": {}, **ONLY_C4, "c4": OFF})
    stages = DocumentStages(cfg)
    assert stages.utf8_columns == ({"html"} if reads_utf8 else set())
    out = stages(batch)
    assert out.select(["html_kind", "text", "title"]).to_pylist() == [
        {"html_kind": kind, "text": want_text, "title": want_title}]
