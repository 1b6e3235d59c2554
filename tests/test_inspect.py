"""Reports of the operator commands, built without files: names, headers and recovery results
in, rows and lines out."""

from __future__ import annotations

from collections.abc import Sequence

import crc32c
import numpy as np
import pytest

from pagewal import ChainPosition, CorruptSegmentError, RecoveryResult, SegmentHeader
from pagewal._chain import CANONICAL_DTYPE, SegmentInfo, SkippedSegment
from pagewal._codec import (
    SEGMENT_FLAG_SERIALIZED,
    decode_segment,
    encode_commits,
    make_commit,
)
from pagewal._inspect import (
    SegmentFile,
    SegmentStatus,
    epoch_ranges,
    format_table,
    record_rows,
    recovery_lines,
    segment_rows,
    verify_report,
)
from pagewal._layout import databases_with_logs, list_log_files

EMPTY_LOG = ChainPosition()


def header(epoch: int, lo: int, hi: int, *, prev: int | None = None, records: int = 2,
           flags: int = 0) -> SegmentHeader:
    return SegmentHeader(epoch=epoch, record_count=records, lane_count=2, commit_seq_lo=lo,
                         commit_seq_hi=hi, prev_epoch=epoch - 1 if prev is None else prev,
                         body_length=100 * records, flags=flags)


def path(epoch: int) -> str:
    return f"/d/db-wal-seg-{epoch:016x}"


def chain(
    kept: Sequence[SegmentHeader], skipped: Sequence[tuple[int, int, str]] = (),
    base: ChainPosition = EMPTY_LOG,
) -> RecoveryResult:
    """What the recovery loop returns for ``kept`` segments and ``skipped`` (epoch, offset,
    reason) ones; records are left empty (the reports count from headers)."""
    last = (ChainPosition(kept[-1].epoch, kept[-1].commit_seq_hi) if kept else base)
    return RecoveryResult(
        base=base, last=last, segments=tuple(SegmentInfo(path(h.epoch), h) for h in kept),
        skipped=tuple(SkippedSegment(path(e), offset, reason) for e, offset, reason in skipped),
        removed_temp_files=(), bytes_read=0, records=np.empty(0, dtype=CANONICAL_DTYPE),
        data=())


def files(*headers: SegmentHeader | tuple[int, CorruptSegmentError]) -> list[SegmentFile]:
    found = []
    for item in headers:
        if isinstance(item, SegmentHeader):
            found.append(SegmentFile(item.epoch, path(item.epoch), 64 + item.body_length, item))
        else:
            found.append(SegmentFile(item[0], path(item[0]), 10, item[1]))
    return found


# --------------------------------------------------------------------------- directory


def test_list_log_files_sorts_this_databases_files_by_kind_and_ignores_the_rest() -> None:
    names = [
        "db-wal-seg-0000000000000002", "db-wal-seg-0000000000000001", "db-wal-checkpoint",
        "db-wal-lock", "db-wal-seg-0000000000000003.tmp", "db-wal-checkpoint.tmp",
        "db-wal-seg-0000000000000001.corrupt", "db-wal-seg-0000000000000001.corrupt-2",
        "db", "db2-wal-seg-0000000000000001", "notes.txt", "db-wal-seg-1",
    ]
    listing = list_log_files("db", names)
    assert listing.segments == ((1, "db-wal-seg-0000000000000001"),
                                (2, "db-wal-seg-0000000000000002"))
    assert listing.checkpoint == "db-wal-checkpoint"
    assert listing.lock == "db-wal-lock"
    assert listing.temporary == ("db-wal-checkpoint.tmp", "db-wal-seg-0000000000000003.tmp")
    assert listing.quarantined == ("db-wal-seg-0000000000000001.corrupt",
                                   "db-wal-seg-0000000000000001.corrupt-2")
    assert not listing.empty
    assert list_log_files("other", names).empty


def test_databases_with_logs_names_each_database_once() -> None:
    names = ["a.db-wal-seg-0000000000000001", "a.db-wal-lock", "b-wal-checkpoint", "c.db",
             "d-wal-seg-12"]
    assert databases_with_logs(names) == ["a.db", "b"]


@pytest.mark.parametrize(("epochs", "text"), [
    ([], ""), ([4], "4"), ([1, 2, 3], "1..3"), ([5, 1, 2, 3, 7, 8], "1..3, 5, 7..8"),
])
def test_epoch_ranges_collapses_runs(epochs: list[int], text: str) -> None:
    assert epoch_ranges(epochs) == text


# --------------------------------------------------------------------------- inspect rows


def test_kept_segments_are_ok_the_first_skipped_corrupt_and_later_ones_follow_it() -> None:
    h1, h2, h3, h4 = header(1, 1, 2), header(2, 3, 3), header(3, 4, 5), header(4, 6, 6)
    found = chain([h1, h2], [(3, 64, "record 0 checksum mismatch"),
                             (4, 0, "follows a corrupt segment in the chain")])
    rows = segment_rows(found, files(h1, h2, h3, h4))
    assert [row.status for row in rows] == [
        SegmentStatus.OK, SegmentStatus.OK, SegmentStatus.CORRUPT, SegmentStatus.FOLLOWS_CORRUPT]
    assert (rows[2].offset, rows[2].reason) == (64, "record 0 checksum mismatch")
    # The body is corrupt but the header decoded: its fields are still shown.
    assert rows[2].cells()[:6] == ("3", "4..5", "2", "264", "2", "-")
    assert rows[2].cells()[6] == "corrupt: offset 64: record 0 checksum mismatch"
    assert rows[3].cells()[6] == "follows corrupt"


def test_a_segment_recovery_rejected_for_not_continuing_the_chain_is_broken() -> None:
    h1, h3 = header(1, 1, 2), header(3, 5, 5, prev=2)
    reason = ("chain broken: prev_epoch is 2 but the previous segment (or checkpoint) is "
              "epoch 1; a segment is missing")
    rows = segment_rows(chain([h1], [(3, 40, reason)]), files(h1, h3))
    assert rows[1].status is SegmentStatus.BROKEN
    assert rows[1].cells()[6] == (
        "broken: offset 40: prev_epoch is 2 but the previous segment (or checkpoint) is epoch 1;"
        " a segment is missing")


def test_a_chain_breaking_segment_rejected_first_for_its_body_is_corrupt() -> None:
    # Recovery decodes before it checks the chain: its finding is the codec's, so it says
    # corrupt even though the header would not have continued the chain either.
    h1, h3 = header(1, 1, 2), header(3, 5, 5, prev=2)
    rows = segment_rows(chain([h1], [(3, 64, "record 0 checksum mismatch")]), files(h1, h3))
    assert rows[1].status is SegmentStatus.CORRUPT


def test_a_segment_with_a_corrupt_header_is_listed_with_its_reason() -> None:
    h1 = header(1, 1, 2)
    bad = CorruptSegmentError(path(2), 60, "header checksum mismatch")
    rows = segment_rows(chain([h1], [(2, 60, "header checksum mismatch")]),
                        files(h1, (2, bad)))
    assert rows[1].status is SegmentStatus.CORRUPT
    assert rows[1].cells() == ("2", "?", "?", "10", "?", "?",
                               "corrupt: offset 60: header checksum mismatch")


def test_segments_the_checkpoint_covers_are_marked_covered() -> None:
    h2, h3 = header(2, 3, 4), header(3, 5, 5)
    rows = segment_rows(chain([h3], base=ChainPosition(2, 4)), files(h2, h3))
    assert [row.status for row in rows] == [SegmentStatus.COVERED, SegmentStatus.OK]


def test_without_a_chain_every_segment_is_unchecked_and_says_why() -> None:
    rows = segment_rows(None, files(header(1, 1, 1)))
    assert rows[0].status is SegmentStatus.UNCHECKED
    assert "the checkpoint record is lost" in rows[0].cells()[6]


def test_serialized_segments_are_flagged() -> None:
    h1 = header(1, 1, 1, flags=SEGMENT_FLAG_SERIALIZED)
    assert segment_rows(chain([h1]), files(h1))[0].cells()[5] == "serialized"


# --------------------------------------------------------------------------- verify


def test_verify_report_counts_the_valid_chain_and_is_valid_without_skips() -> None:
    h1, h2 = header(1, 1, 2, records=3), header(2, 3, 5, records=4)
    report = verify_report("/d/db", chain([h1, h2]))
    assert report.valid
    assert (report.segments, report.records, report.commits, report.bytes) == (
        2, 7, 5, 64 * 2 + 700)
    data = report.to_json()
    assert data["valid"] is True and data["error"] is None
    assert data["last"] == {"epoch": 2, "commit_seq": 5}
    assert report.lines() == ["/d/db: valid: 2 segments, 7 records, 5 commits "
                              "(commit_seq 1..5), 828 bytes"]


def test_verify_report_names_the_first_skipped_segment_as_the_error() -> None:
    h1 = header(1, 1, 2)
    report = verify_report("/d/db", chain([h1], [(2, 64, "record 0 checksum mismatch"),
                                                 (3, 0, "follows a corrupt segment")]))
    assert not report.valid
    assert report.to_json()["error"] == {"path": path(2), "offset": 64,
                                         "reason": "record 0 checksum mismatch"}
    assert report.unusable_segments == 2
    assert "corrupt; valid prefix: 1 segment" in report.lines()[0]


# --------------------------------------------------------------------------- dump


def test_record_rows_are_in_file_order_with_each_records_stored_crc() -> None:
    commits = [(5, 1, make_commit([(7, b"seven"), (8, b"eight!")], txn_id=42, db_size_pages=9)),
               (6, 0, make_commit({3: b"x" * 300}))]
    body = encode_commits(commits)
    head = SegmentHeader(epoch=4, record_count=3, lane_count=2, commit_seq_lo=5,
                         commit_seq_hi=6, prev_epoch=3, body_length=len(body))
    data = head.encode() + bytes(body)
    rows = record_rows(decode_segment(data, "seg"))
    assert [(r.commit_seq, r.txn_id, r.page_no, r.image_length, r.lane_id, r.last_in_commit,
             r.db_size_pages) for r in rows] == [
        (5, 42, 7, 5, 1, False, 9), (5, 42, 8, 6, 1, True, 9), (6, 0, 3, 300, 0, True, None)]
    assert rows[0].offset == 64
    for row in rows:  # record_length at the offset; the CRC covers what follows, up to itself
        length = int.from_bytes(data[row.offset : row.offset + 4], "little")
        end = row.offset + 4 + length
        assert row.crc == int.from_bytes(data[end - 4 : end], "little")
        assert row.crc == crc32c.crc32c(data[row.offset + 4 : end - 4])


# --------------------------------------------------------------------------- recover


def test_recovery_lines_list_each_skipped_segment_and_removed_file() -> None:
    result = chain([header(1, 1, 2)], [(2, 64, "record 0 checksum mismatch"),
                                       (3, 0, "follows a corrupt segment in the chain")])
    lines = recovery_lines("/d/db", result)
    assert "commits: 2 (commit_seq 1..2)" in lines[1]
    assert f"  {path(2)}: offset 64: record 0 checksum mismatch" in lines
    assert f"  {path(3)}: follows a corrupt segment in the chain" in lines
    assert "removed leftover files: none" in lines


# --------------------------------------------------------------------------- tables


def test_format_table_pads_columns_to_the_widest_cell() -> None:
    lines = format_table(("n", "name"), [("1", "a"), ("100", "bcd")], left={1})
    assert lines == ["  n  name", "  1  a", "100  bcd"]
