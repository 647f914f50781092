"""The sortable document key that makes "which copy is kept" deterministic.

`rank_key = date + id` where date is the reader's normalised WARC-Date 'YYYY-MM-DDTHH:MM:SSZ'
(fixed width, so string order is time order) and a missing or malformed date becomes
'~' * 20 (after every digit: undated documents lose to dated ones). The smallest rank_key of a
duplicate group is its earliest document, ties broken by the smallest id, and the id is
recovered from the key by dropping the first 20 characters, so no join is needed to name the
representative.
"""
from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

RANK_KEY = "rank_key"
DUPLICATE_OF = "duplicate_of"
DATE_WIDTH = 20
_NO_DATE = "~" * DATE_WIDTH
_DATE = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$"


def rank_keys(ids: pa.Array, dates: pa.Array) -> pa.Array:
    """date (or '~'*20) + id, one string per document."""
    dates = dates.fill_null("")
    ok = pc.match_substring_regex(dates, pattern=_DATE)
    date_part = pc.if_else(ok, dates, pa.scalar(_NO_DATE))
    return pc.binary_join_element_wise(date_part.cast(pa.large_string()), ids.fill_null("").cast(pa.large_string()),
                                       pa.scalar("", pa.large_string()))


def ids_of(keys: pa.Array) -> pa.Array:
    """The document id inside each rank key (nulls stay null)."""
    return pc.utf8_slice_codeunits(keys, DATE_WIDTH)


def with_rank_key(batch: pa.Table) -> pa.Table:
    """Add `rank_key` from `id` and `date` unless the batch already has one."""
    if RANK_KEY in batch.column_names:
        return batch
    dates = batch.column("date") if "date" in batch.column_names else pa.nulls(batch.num_rows, pa.string())
    return batch.append_column(RANK_KEY, rank_keys(batch.column("id"), dates))


def alive_mask(batch: pa.Table, drop_column: str | None) -> pa.Array:
    """Rows that take part in dedup: those not already dropped by an earlier stage (the
    pipeline marks drops in `drop_reason` and empties their text; they must not all become
    duplicates of one another)."""
    if drop_column and drop_column in batch.column_names:
        return pc.is_null(batch.column(drop_column))
    return pa.array([True] * batch.num_rows)
