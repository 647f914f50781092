"""The NeMo Curator peer: its first half on the same WARC files (run with .venv-curator/bin/python).

FilePartitioningStage (one task per .warc.gz) -> DocumentIterateExtractStage (CommonCrawlWarcIterator
+ CommonCrawlHTMLExtractor: pycld2 language id on the HTML, then jusText, Curator's default
extractor) -> English only -> Curator's English heuristic cascade (the filters and thresholds of
its config/text/heuristic_filter_english_pipeline.yaml: Gopher repetition and quality, C4's
punctuation / long word / boilerplate lines) in one ScoreFilter stage -> JsonlWriter, on the
XennaExecutor (Curator's default; batch mode, all the CPUs) over a local Ray of `--workers` CPUs
that this script starts. Curator has no FineWeb filter set. Prints one JSON line of counts, like
peer_datatrove.py.
"""
import argparse
import json
import os
import socket
import tempfile
import time
from pathlib import Path


def english_heuristics() -> list:
    """Curator's English heuristic cascade, in the order and with the thresholds of its yaml."""
    from nemo_curator.stages.text.filters.heuristic.repetition import (
        RepeatedLinesByCharFilter,
        RepeatedLinesFilter,
        RepeatedParagraphsByCharFilter,
        RepeatedParagraphsFilter,
        RepeatingDuplicateNGramsFilter,
        RepeatingTopNGramsFilter,
    )
    from nemo_curator.stages.text.filters.heuristic.string import (
        BoilerPlateStringFilter,
        BulletsFilter,
        CommonEnglishWordsFilter,
        EllipsisFilter,
        LongWordFilter,
        MeanWordLengthFilter,
        NonAlphaNumericFilter,
        NumbersFilter,
        ParenthesesFilter,
        PunctuationFilter,
        SymbolsToWordsFilter,
        UrlsFilter,
        WhiteSpaceFilter,
        WordCountFilter,
        WordsWithoutAlphabetsFilter,
    )

    return [
        NonAlphaNumericFilter(max_non_alpha_numeric_to_text_ratio=0.25),
        SymbolsToWordsFilter(max_symbol_to_word_ratio=0.1),
        NumbersFilter(max_number_to_text_ratio=0.15),
        UrlsFilter(max_url_to_text_ratio=0.2),
        WhiteSpaceFilter(max_white_space_ratio=0.25),
        ParenthesesFilter(max_parentheses_ratio=0.1),
        BoilerPlateStringFilter(remove_if_at_top_or_bottom=True, max_boilerplate_string_ratio=0.4),
        RepeatedLinesFilter(max_repeated_line_fraction=0.7),
        RepeatedParagraphsFilter(max_repeated_paragraphs_ratio=0.7),
        RepeatedLinesByCharFilter(max_repeated_lines_char_ratio=0.8),
        RepeatedParagraphsByCharFilter(max_repeated_paragraphs_char_ratio=0.8),
        WordCountFilter(min_words=50, max_words=100000),
        PunctuationFilter(max_num_sentences_without_endmark_ratio=0.85),
        WordsWithoutAlphabetsFilter(min_words_with_alphabets=0.8),
        CommonEnglishWordsFilter(min_num_common_words=2, stop_at_false=True),
        MeanWordLengthFilter(max_mean_word_length=10, min_mean_word_length=3),
        LongWordFilter(max_word_length=1000),
        EllipsisFilter(max_num_lines_ending_with_ellipsis_ratio=0.3),
        RepeatingTopNGramsFilter(n=2, max_repeating_ngram_ratio=0.2),
        RepeatingTopNGramsFilter(n=3, max_repeating_ngram_ratio=0.18),
        RepeatingTopNGramsFilter(n=4, max_repeating_ngram_ratio=0.16),
        *(RepeatingDuplicateNGramsFilter(n=n, max_repeating_duplicate_ngram_ratio=r)
          for n, r in ((5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10))),
        BulletsFilter(max_bullet_lines_ratio=0.9),
    ]


def reap_orphans(raylets: set[str]) -> None:
    """End this run's Ray workers that outlive their raylet (Xenna's NodeResourceMonitor actors do,
    reparented to init, after the executor's ray.shutdown()): they carry RAY_RAYLET_PID in their env."""
    import psutil

    for proc in psutil.process_iter():
        try:
            if proc.environ().get("RAY_RAYLET_PID") in raylets:
                proc.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--input", required=True, help="directory of .warc.gz files")
    ap.add_argument("--output", required=True)
    ap.add_argument("--workers", type=int, default=2, help="CPUs of the Ray cluster Curator runs on")
    args = ap.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # A cluster of our own, never one that happens to be running (ray.init joins RAY_ADDRESS if set).
    os.environ.pop("RAY_ADDRESS", None)

    import psutil
    import ray
    from nemo_curator.backends.xenna import XennaExecutor
    from nemo_curator.pipeline import Pipeline
    from nemo_curator.stages.file_partitioning import FilePartitioningStage
    from nemo_curator.stages.text.download.base.iterator import DocumentIterateExtractStage
    from nemo_curator.stages.text.download.common_crawl.extract import CommonCrawlHTMLExtractor
    from nemo_curator.stages.text.download.common_crawl.warc_iterator import CommonCrawlWarcIterator
    from nemo_curator.stages.text.download.html_extractors.justext import JusTextExtractor
    from nemo_curator.stages.text.filters.score_filter import Filter, ScoreFilter
    from nemo_curator.stages.text.io.writer import JsonlWriter

    docs_dir = Path(args.output, "docs")
    start = time.perf_counter()
    # A local Ray of `--workers` CPUs, started here as the executor's own ray.init would start one
    # (that call then joins it); its own short temp dir (Ray's socket paths have a length limit), so
    # it never meets another cluster on the machine. XennaExecutor shuts it down when it finishes.
    # Xenna reads actor states through the dashboard's API server: it runs, on a free port.
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        dashboard_port = free.getsockname()[1]
    ray.init(num_cpus=args.workers, num_gpus=0, include_dashboard=True, dashboard_port=dashboard_port,
             _temp_dir=tempfile.mkdtemp(prefix="curray-", dir="/tmp"))
    # Xenna calls ray.init() again with no address: pin it to this cluster, not whichever one Ray
    # finds last among those running on the machine.
    os.environ["RAY_ADDRESS"] = ray.get_runtime_context().gcs_address
    raylets = {str(p.pid) for p in psutil.Process().children(recursive=True) if "raylet" in p.name()}
    pipeline = Pipeline(name="curator_first_half", stages=[
        # The .warc.gz files by name: Curator's extension filter sees only the last suffix (".gz").
        FilePartitioningStage(file_paths=[str(p) for p in sorted(Path(args.input).glob("*.warc.gz"))],
                              files_per_partition=1, file_extensions=[".gz"]),
        DocumentIterateExtractStage(iterator=CommonCrawlWarcIterator(),
                                    extractor=CommonCrawlHTMLExtractor(algorithm=JusTextExtractor())),
        Filter(filter_fn=lambda lang: lang == "ENGLISH", filter_field="language"),
        ScoreFilter(filter_obj=english_heuristics(), text_field="text"),
        JsonlWriter(path=str(docs_dir), mode="overwrite"),
    ])
    # Batch mode, as Xenna's own error message advises locally: streaming wants an actor per stage at
    # once (4.5 CPUs here), batch runs the stages one after the other, each on all the CPUs.
    try:
        pipeline.run(XennaExecutor(config={"execution_mode": "batch", "cpu_allocation_percentage": 1.0}))
    finally:
        reap_orphans(raylets)
    wall = time.perf_counter() - start
    kept = sum(1 for p in docs_dir.glob("*.jsonl") for _ in p.open())
    print(json.dumps({"peer": "nemo-curator", "wall_s": wall, "kept": kept}))


if __name__ == "__main__":
    main()
