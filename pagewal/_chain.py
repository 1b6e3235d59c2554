"""Chain validation and canonical ordering (DESIGN §3, §4). Pure: decoded segments in, values out.

The chain: each present segment continues the one before it (``prev_epoch`` and a dense
``commit_seq``), and the first continues the checkpoint (``ChainPosition(0, 0)`` when there is
none). Canonical order: ``(commit_seq, position within the commit)``; the last after-image of
a page wins, and ``db_size_pages`` of the last commit that set it is the database size.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping, Sequence
from typing import TYPE_CHECKING

import attrs
import numpy as np
import numpy.typing as npt

from ._codec import (
    RECORD_DTYPE,
    RECORD_FLAG_LAST,
    ChainPosition,
    DecodedSegment,
    RecordArray,
    SegmentHeader,
)
from ._errors import CorruptSegmentError
from ._layout import NO_LOG_ID

if TYPE_CHECKING:
    from ._logreader import LogScan, TornTail

CANONICAL_DTYPE = np.dtype([*RECORD_DTYPE.descr, ("segment", "<u4")])
"""A record row plus the index of the segment (in chain order) whose bytes hold its image."""

_EMPTY_INDEX: RecordArray = np.empty(0, dtype=RECORD_DTYPE)


def check_continues(position: ChainPosition, header: SegmentHeader, path: str) -> ChainPosition:
    """Check ``header`` continues the chain at ``position``; return the position after it."""
    if header.prev_epoch != position.epoch:
        raise CorruptSegmentError(
            path, 40, f"chain broken: prev_epoch is {header.prev_epoch} but the previous "
            f"segment (or checkpoint) is epoch {position.epoch}; a segment is missing")
    if header.commit_seq_lo != position.commit_seq + 1:
        raise CorruptSegmentError(
            path, 24, f"chain broken: commit_seq_lo is {header.commit_seq_lo} but the previous "
            f"segment ends at commit_seq {position.commit_seq}")
    return ChainPosition(header.epoch, header.commit_seq_hi)


@attrs.frozen
class Record:
    """One recovered record, as :meth:`RecoveryResult.iter_records` yields it."""

    commit_seq: int
    txn_id: int
    page_no: int
    db_size_pages: int | None
    lane_id: int
    last_in_commit: bool
    image: bytes


@attrs.frozen
class SegmentInfo:
    """A segment recovery read and kept."""

    path: str
    header: SegmentHeader


@attrs.frozen
class SkippedSegment:
    """A segment left out by ``skip_corrupt``: the first failure found, and what followed it."""

    path: str
    offset: int
    reason: str


@attrs.frozen(eq=False)
class RecoveryResult:
    """What recovery found: the durable commits, in canonical order.

    ``records`` is a :data:`CANONICAL_DTYPE` array in canonical order; images stay in the
    segments' bytes until asked for. ``base`` is the checkpoint the chain started from;
    ``last`` where it ends (the next commit is ``last.commit_seq + 1``). ``skipped`` lists what
    ``skip_corrupt`` left out (empty otherwise: any corruption raises instead).
    ``page_size`` is the page size the checkpoint record holds (0: none recorded). ``warnings``
    says what recovery found wrong but could make up for (a damaged copy of the checkpoint
    record, and whether it was rewritten).

    ``removed_temp_files`` lists the leftovers recovery deleted (temporary files, segments the
    checkpoint covers); ``not_removed`` those it found and left in place: because it read
    without the log's lock, or because the file system refused (read-only). ``read_only_reason``
    says why recovery changed nothing, when it did not hold the lock (another process has the
    log open, or the lock file could not be created); ``None`` when it held the lock.

    Version 2 log files (DESIGN §4): ``torn_tail`` reports epochs after the end of the log
    that were never acknowledged (``None``: none); ``clean_shutdown`` says the log was closed
    cleanly; ``log_id`` is the log's identity (all zeros: none known); ``log_scan`` is what
    the version 2 reader found, including where a writer continues (``None``: no such file).
    A segment of a version 2 file appears in ``segments`` under its log file's path.

    Memory: the result holds the bytes of the segments it read (``bytes_read``; files of 1 MiB
    or more are mapped, not copied) and 43 bytes per record; :meth:`page_images` adds its dict.
    """

    base: ChainPosition
    last: ChainPosition
    segments: tuple[SegmentInfo, ...]
    skipped: tuple[SkippedSegment, ...]
    removed_temp_files: tuple[str, ...]
    bytes_read: int
    records: RecordArray
    _data: tuple[memoryview, ...] = attrs.field(alias="data", repr=False)
    page_size: int = 0
    warnings: tuple[str, ...] = ()
    not_removed: tuple[str, ...] = ()
    read_only_reason: str | None = None
    torn_tail: TornTail | None = None
    clean_shutdown: bool = False
    log_id: bytes = NO_LOG_ID
    log_scan: LogScan | None = None

    @property
    def last_commit_seq(self) -> int:
        """The last durable commit_seq (the next commit gets this + 1)."""
        return self.last.commit_seq

    @property
    def last_epoch(self) -> int:
        """The epoch of the last segment in the chain (or of the checkpoint)."""
        return self.last.epoch

    @property
    def commit_count(self) -> int:
        """Commits recovered from segments (not counting those before the checkpoint)."""
        return self.last.commit_seq - self.base.commit_seq

    @property
    def db_size_pages(self) -> int | None:
        """Database size set by the last commit that set one, if any did."""
        sizes = self.records["db_size_pages"]
        if not sizes.size:
            return None
        last_set = sizes.size - 1 - int(np.argmax(sizes[::-1] != 0))
        return int(sizes[last_set]) or None

    def image(self, index: int) -> bytes:
        """After-image of canonical record ``index``."""
        row = self.records[index]
        start = int(row["image_offset"])
        return bytes(self._data[int(row["segment"])][start : start + int(row["image_length"])])

    def iter_records(self) -> Iterator[Record]:
        """Every record in canonical order."""
        for index, row in enumerate(self.records):
            size = int(row["db_size_pages"])
            yield Record(
                commit_seq=int(row["commit_seq"]), txn_id=int(row["txn_id"]),
                page_no=int(row["page_no"]), db_size_pages=size or None,
                lane_id=int(row["lane_id"]),
                last_in_commit=bool(row["flags"] & RECORD_FLAG_LAST), image=self.image(index))

    def latest_images(self) -> tuple[list[int], list[int], list[memoryview]]:
        """Each page's last image in canonical order: ``(page_nos ascending, commit_seqs,
        images)``. The images are views of the segments' bytes (no copies)."""
        return latest_images(self.records, self._data)

    def apply_to(self, pages: MutableMapping[int, bytes]) -> MutableMapping[int, bytes]:
        """Apply the records to ``pages`` (page_no → image) in canonical order; return it.

        Only the last image of each page is materialised, a bounded number of pages at a time:
        beyond what ``pages`` itself takes, this needs about 30 bytes per record.
        """
        last = last_of_each_page(self.records)
        for start in range(0, last.size, _APPLY_CHUNK):
            rows = last[start : start + _APPLY_CHUNK]
            for page_no, segment, offset, length in zip(
                    self.records["page_no"][rows].tolist(),
                    self.records["segment"][rows].tolist(),
                    self.records["image_offset"][rows].tolist(),
                    self.records["image_length"][rows].tolist(), strict=True):
                pages[page_no] = bytes(self._data[segment][offset : offset + length])
        return pages

    def page_images(self) -> dict[int, bytes]:
        """The page contents the recovered records leave: page_no → last image.

        A dict of ``bytes``: each page costs its image plus Python's per-object overhead,
        about 100 bytes (the ``bytes`` header, the ``int`` key and the dict slot), whatever
        the bytes recovery read. For large stores prefer :meth:`apply_to` on a store of your
        own, or :meth:`latest_images` (views, no copies).
        """
        result: dict[int, bytes] = {}
        self.apply_to(result)
        return result


_APPLY_CHUNK = 1 << 12
"""Pages materialised per step of :meth:`RecoveryResult.apply_to` (bounds its Python lists)."""


def last_of_each_page(records: RecordArray) -> npt.NDArray[np.intp]:
    """Row numbers of each page's last record among canonical ``records``, by page_no."""
    page_nos = records["page_no"]
    # np.unique on the reversed column finds each page's last occurrence.
    _, reversed_index = np.unique(page_nos[::-1], return_index=True)
    return page_nos.size - 1 - reversed_index


def latest_images(
    records: RecordArray, data: Sequence[memoryview]
) -> tuple[list[int], list[int], list[memoryview]]:
    """Each page's last image among canonical ``records`` (whose ``segment`` column indexes
    ``data``): ``(page_nos ascending, commit_seqs, images)``, images as views of ``data``.

    One ``memoryview`` (~200 bytes) per page: for page-sized images (a checkpoint's batch),
    not for building a whole store of tiny ones (:meth:`RecoveryResult.apply_to` is chunked).
    """
    rows = last_of_each_page(records)
    images = [
        data[segment][start : start + length]
        for segment, start, length in zip(
            records["segment"][rows].tolist(), records["image_offset"][rows].tolist(),
            records["image_length"][rows].tolist(), strict=True)
    ]
    return records["page_no"][rows].tolist(), records["commit_seq"][rows].tolist(), images


def first_difference(expected: DecodedSegment, actual: DecodedSegment) -> str | None:
    """How ``actual`` differs from ``expected`` as a set of commits, or ``None`` if it does not.

    Compares records in canonical order, field by field and image by image; layout (lane order,
    lane ids) is not part of the meaning and is ignored.
    """
    if expected.records.size != actual.records.size:
        return f"{actual.records.size} records instead of {expected.records.size}"
    expected_order = expected.canonical_order()
    actual_order = actual.canonical_order()
    for name in ("commit_seq", "txn_id", "page_no", "db_size_pages", "flags", "image_length"):
        mismatch = np.flatnonzero(
            expected.records[name][expected_order] != actual.records[name][actual_order])
        if mismatch.size:
            return f"record {int(mismatch[0])} in canonical order differs in {name}"
    for rank, (want, got) in enumerate(zip(expected_order, actual_order, strict=True)):
        if expected.image(int(want)) != actual.image(int(got)):
            return f"record {rank} in canonical order differs in its image"
    return None


def canonical_records(segments: Sequence[DecodedSegment]) -> RecordArray:
    """All records of chained ``segments``, in canonical order (numpy stable sort by seq)."""
    return merge_indexes([segment.records for segment in segments])


def merge_indexes(indexes: list[RecordArray]) -> RecordArray:
    """The records of chained segments' indexes (:data:`RECORD_DTYPE`, chain order), as one
    :data:`CANONICAL_DTYPE` array in canonical order.

    Consumes ``indexes`` (the list is emptied), so each segment's index can be freed as soon as
    it is copied: beyond the result, this holds at most one segment's index and, for a segment
    that needs sorting, its sort permutation and one column (about 16 bytes per record).
    """
    total = sum(index.size for index in indexes)
    rows = np.empty(total, dtype=CANONICAL_DTYPE)
    start = 0
    for number in range(len(indexes)):
        records, indexes[number] = indexes[number], _EMPTY_INDEX
        stop = start + records.size
        part = rows[start:stop]
        # Segments follow each other in chain order, so their commit_seq ranges ascend and
        # sorting each one on its own sorts the whole. Within a segment, each commit's records
        # are contiguous and in commit order, so a stable sort on commit_seq alone yields
        # (commit_seq, position). Segments written from one lane are in order already.
        seqs = records["commit_seq"]
        order = (None if bool(np.all(seqs[1:] >= seqs[:-1]))
                 else np.argsort(seqs, kind="stable"))
        for name in RECORD_DTYPE.names or ():
            part[name] = records[name] if order is None else records[name][order]
        part["segment"] = number
        del records, seqs, order
        start = stop
    indexes.clear()
    return rows

