"""C4's line and page cleaning rules.

Source: Raffel et al. 2020, "Exploring the Limits of Transfer Learning with a Unified
Text-to-Text Transformer" (JMLR 21(140)), section 2.2; the extra rules (too-long words,
citation markers, policy lines) come from the reference implementation
(tensorflow/datasets, text/c4_utils.py `clean_page`), as reproduced by datatrove's
`C4QualityFilter` (huggingface/datatrove, src/datatrove/pipeline/filters/c4_filters.py).

Each line is stripped, then, in this order:
    - dropped if a word (whitespace-separated) is longer than `max_word_length` (1000);
    - Wikipedia-style citation markers ("[1]", "[edit]", "[citation needed]") are removed;
    - dropped unless it ends in . ? ! " or ' (and does not end in "...");
    - dropped if it has fewer than `min_words_per_line` (3) words;
    - the page is dropped if the line contains "lorem ipsum" (any case);
    - dropped if it contains "javascript" (any case);
    - the page is dropped if the line contains "{";
    - dropped if it contains a cookie/terms-of-use phrase (any case).
The page is dropped if the kept lines hold fewer than `min_num_sentences` (5) sentences.

As in the reference code, the page-level checks ("lorem ipsum", "{") only look at lines that
survived the line rules before them: a "{" on a line without terminal punctuation (typical of
leftover code) removes that line, not the page.

Sentences are counted with `text_utils.count_sentences`, a regex stand-in for NLTK punkt.

C4 rewrites the text as well as filtering it: a kept page's result carries the cleaned text.
Its lines come from the document's shared `DocumentWords` view (Gopher quality splits the same
lines), and the cleaned text's view is handed on to FineWeb with its token count derived from
the page's (only the dropped and edited lines are tokenised).
"""
from __future__ import annotations

import math
import re

from pydantic import Field

from dataproc.documents.contract import DocStage, StageResult, floats
from dataproc.options import StageOptions
from dataproc.documents.filters.text_utils import count_sentences, document_words

CITATION_RE = re.compile(r"\[\d*]|\[edit]|\[citation needed]")
END_PUNCTUATION = (".", "?", "!", '"', "'")
ELLIPSIS = "..."
POLICY_SUBSTRINGS = (
    "terms of use",
    "privacy policy",
    "cookie policy",
    "uses cookies",
    "use of cookies",
    "use cookies",
)

# A page dropped mid-scan has no meaningful line or sentence counts.
_STOPPED_EARLY = {"c4_lines_kept_frac": math.nan, "c4_sentences": math.nan}


class C4Options(StageOptions):
    """Switches and limits of the C4 rules (defaults: the paper's / reference code's)."""

    remove_citations: bool = True
    filter_no_terminal_punct: bool = True
    min_num_sentences: int = Field(5, ge=0, description="0 disables the rule")
    min_words_per_line: int = Field(3, ge=0, description="0 disables the rule")
    max_word_length: int | None = Field(1000, ge=1, description="null disables the rule")
    filter_lorem_ipsum: bool = True
    filter_javascript: bool = True
    filter_curly_bracket: bool = True
    filter_policy: bool = True


class C4Filter(DocStage):
    """C4 line cleaning plus page rules; a kept page comes back as its kept lines."""

    rewrites = True
    columns = floats("c4_lines_kept_frac", "c4_sentences")

    def __init__(self, options: C4Options | None = None):
        self.opts = options or C4Options()

    def process(self, text: str) -> StageResult:
        o = self.opts
        view = document_words(text)
        lines = view.lines
        kept: list[str] = []
        # What cleaning did to the lines, from which the cleaned text's token count follows.
        dropped: list[str] = []
        edited: list[tuple[str, str]] = []
        n_sentences = 0
        for original in lines:
            line = original.strip()
            line_words = line.split()
            # Only a line longer than the limit can hold a word longer than it.
            too_long = o.max_word_length is not None and len(line) > o.max_word_length
            if too_long and any(len(w) > o.max_word_length for w in line_words):
                dropped.append(original)
                continue
            stripped = line
            if o.remove_citations and "[" in line:
                line = CITATION_RE.sub("", line)
            if o.filter_no_terminal_punct and (not line.endswith(END_PUNCTUATION) or line.endswith(ELLIPSIS)):
                dropped.append(original)
                continue
            if len(line_words) < o.min_words_per_line:
                dropped.append(original)
                continue
            lower = line.lower()
            if o.filter_lorem_ipsum and "lorem ipsum" in lower:
                return StageResult("lorem_ipsum", dict(_STOPPED_EARLY))
            if o.filter_javascript and "javascript" in lower:
                dropped.append(original)
                continue
            if o.filter_curly_bracket and "{" in line:
                return StageResult("curly_bracket", dict(_STOPPED_EARLY))
            if o.filter_policy and any(p in lower for p in POLICY_SUBSTRINGS):
                dropped.append(original)
                continue
            n_sentences += count_sentences(line)
            kept.append(line)
            if line is not stripped:
                edited.append((stripped, line))
        scores = {
            "c4_lines_kept_frac": len(kept) / len(lines) if lines else 0.0,
            "c4_sentences": float(n_sentences),
        }
        if n_sentences < o.min_num_sentences:
            return StageResult("too_few_sentences", scores)
        cleaned = "\n".join(kept)
        view.share_edited(cleaned, kept, dropped, edited)
        return StageResult(None, scores, text=cleaned)
