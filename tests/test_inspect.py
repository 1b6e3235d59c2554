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
    DecodedSegment,
    decode_segment,
    encode_commits,
    make_commit,
)
from pagewal._inspect import (
    LogFileImageOrError,
    LogFileRow,
    SegmentFile,
    SegmentStatus,
    dump_lines,
    epoch_ranges,
    file_segments,
    format_table,
    log_file_rows,
    record_rows,
    recovery_lines,
    segment_rows,
    shutdown_json,
    shutdown_line,
    torn_tail_line,
    verify_report,
)
from pagewal._layout import (
    FileState,
    LogFileHeader,
    ShutdownMarker,
    databases_with_logs,
    decode_segment_v2,
    encode_segment_v2,
    encode_shutdown_marker,
    list_log_files,
)
from pagewal._logreader import LogFileImage, scan_log

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


# --------------------------------------------------------------------------- format 2 log files

LOG_ID = bytes(range(1, 17))
ALIGN = 4096


class LogImage:
    """A version 2 log file built in memory: segments of one two-record commit each, each
    recording the epoch before it as acknowledged."""

    def __init__(self, file_no: int, *, continues_from: ChainPosition = EMPTY_LOG,
                 min_epoch: int | None = None, capacity: int = 16 * ALIGN) -> None:
        self.path = f"/d/db-wal-{file_no:016x}"
        self.header = LogFileHeader(
            log_id=LOG_ID, file_no=file_no, salt=0x5A17 + file_no, capacity=capacity,
            alignment=ALIGN, inflight_limit=4, state=FileState.ACTIVE,
            prev_file_no=file_no - 1, continues_from=continues_from,
            min_epoch=continues_from.epoch + 1 if min_epoch is None else min_epoch)
        self.data = bytearray(capacity)
        self.data[:128] = self.header.encode()
        self.offset = ALIGN
        self.position = continues_from

    def segment(self, *, salt: int | None = None, epoch: int | None = None) -> int:
        """Append the next epoch's segment (or ``epoch``'s); return its offset."""
        epoch = self.position.epoch + 1 if epoch is None else epoch
        seq = self.position.commit_seq + 1
        body = encode_commits([(seq, 0, make_commit({1: b"a" * 50, 2: b"b"}))])
        head = SegmentHeader(
            epoch=epoch, record_count=2, lane_count=1, commit_seq_lo=seq, commit_seq_hi=seq,
            prev_epoch=self.position.epoch, body_length=len(body), version=2, log_id=LOG_ID,
            file_no=self.header.file_no, salt=salt or self.header.salt, acked_epoch=epoch - 1)
        encoded = b"".join(bytes(buffer) for buffer in encode_segment_v2(head, [body], ALIGN))
        offset = self.offset
        self.data[offset : offset + len(encoded)] = encoded
        self.offset += len(encoded)
        self.position = ChainPosition(epoch, seq)
        return offset

    def marker(self) -> int:
        offset = self.offset
        self.data[offset : offset + 128] = encode_shutdown_marker(
            log_id=LOG_ID, file_no=self.header.file_no, salt=self.header.salt,
            epoch=self.position.epoch, commit_seq=self.position.commit_seq)
        self.offset += ALIGN
        return offset

    def image(self) -> LogFileImageOrError:
        return LogFileImageOrError(self.path, self.header.file_no, bytes(self.data))


def read(*logs: LogImage) -> RecoveryResult:
    """What the read-only recovery loop (``skip_corrupt``) returns for these log files."""
    scan = scan_log([LogFileImage(log.path, log.header.file_no, bytes(log.data))
                     for log in logs], EMPTY_LOG, skip_corrupt=True)
    return RecoveryResult(
        base=EMPTY_LOG, last=scan.last,
        segments=tuple(SegmentInfo(s.path, s.header) for s in scan.segments),
        skipped=scan.skipped, removed_temp_files=(), bytes_read=0,
        records=np.empty(0, dtype=CANONICAL_DTYPE), data=(), torn_tail=scan.torn_tail,
        clean_shutdown=scan.clean_shutdown, log_id=scan.log_id, log_scan=scan)


def statuses(rows: Sequence[LogFileRow]) -> list[tuple[int, int, str]]:
    return [(row.file_no, row.header.epoch if row.header else 0, row.status)
            for file in rows for row in file.segments]


def test_file_segments_steps_over_torn_blocks_and_an_earlier_lifes_segments() -> None:
    log = LogImage(1)
    first = log.segment()
    torn = log.segment()
    log.data[torn + 3] ^= 0xFF  # its header no longer decodes
    stale = log.segment(salt=0xBAD)  # the file's earlier life: another salt
    log.position = ChainPosition(1, 1)
    log.offset = stale + ALIGN
    after = log.segment()
    end = log.marker()
    found = file_segments(bytes(log.data), log.path, log.header)
    assert [(item.offset, item.span) for item in found] == [
        (first, ALIGN), (after, ALIGN), (end, ALIGN)]
    assert isinstance(found[-1].header, ShutdownMarker)


def test_a_cleanly_closed_file_shows_its_chain_and_the_marker_at_the_end() -> None:
    log = LogImage(1)
    offsets = [log.segment() for _ in range(3)]
    log.marker()
    result = read(log)
    rows = log_file_rows([log.image()], result)
    assert statuses(rows) == [(1, 1, "chain"), (1, 2, "chain"), (1, 3, "chain"),
                              (1, 3, "marker")]
    assert [row.offset for row in rows[0].segments[:3]] == offsets
    assert (rows[0].state, rows[0].role, rows[0].fill) == ("ACTIVE", "chain", 4 * ALIGN)
    assert rows[0].cells()[3] == f"{0x5A18:#018x}"
    assert rows[0].segments[3].cells() == ("1", "3", "16,384", "4,096", "3", "0", "3", "marker")
    assert shutdown_line(result.log_scan, rows) == (
        f"shutdown: clean (marker at {log.path} offset 16,384 records epoch 3, commit_seq 3)")
    assert shutdown_json(result.log_scan, rows) == {"clean": True, "epoch": 3, "commit_seq": 3}


def test_a_torn_newest_epoch_is_after_the_end_and_reported_as_a_torn_tail() -> None:
    log = LogImage(1)
    log.segment()
    log.segment()
    torn = log.segment()
    log.data[torn + 200] ^= 0x01  # its body: the header stays whole
    result = read(log)
    rows = log_file_rows([log.image()], result)
    assert statuses(rows) == [(1, 1, "chain"), (1, 2, "chain"), (1, 3, "after end")]
    assert result.torn_tail is not None
    assert torn_tail_line(result.torn_tail) == (
        f"torn tail: {log.path} offset {torn:,}, 4,096 bytes, highest epoch seen 3 (1 segment "
        "header after the end); never acknowledged, recovery discards it")
    assert shutdown_line(result.log_scan, rows).startswith("shutdown: not clean")
    report = verify_report("/d/db", result)
    assert report.valid and report.lines()[1].startswith("torn tail: ")
    assert report.to_json()["torn_tail"] == {"path": log.path, "offset": torn, "length": ALIGN,
                                             "highest_epoch": 3, "segments": 1}


def test_damage_proven_by_a_later_acknowledgement_marks_the_segment_damaged() -> None:
    log = LogImage(1)
    log.segment()
    bad = log.segment()
    log.segment()  # records epoch 2 as acknowledged
    log.data[bad + 200] ^= 0x01
    result = read(log)
    rows = log_file_rows([log.image()], result)
    assert statuses(rows) == [(1, 1, "chain"), (1, 2, "damaged"), (1, 3, "after end")]
    report = verify_report("/d/db", result)
    assert not report.valid and report.torn_tail is None
    assert report.error is not None and (report.error.path, report.error.offset) == (
        log.path, bad)
    assert "acknowledged" in report.error.reason


def test_a_tail_an_earlier_recovery_discarded_is_shown_as_discarded() -> None:
    first = LogImage(1)
    first.segment()
    first.segment()
    torn = first.segment()
    first.data[torn + 200] ^= 0x01
    # Recovery ended the log at epoch 2 and went on in a file numbered above the tail.
    second = LogImage(2, continues_from=ChainPosition(2, 2), min_epoch=4)
    second.segment(epoch=4)
    result = read(first, second)
    rows = log_file_rows([second.image(), first.image()], result)
    assert [row.file_no for row in rows] == [1, 2]
    assert statuses(rows) == [(1, 1, "chain"), (1, 2, "chain"), (1, 3, "discarded"),
                              (2, 4, "chain")]
    assert result.torn_tail is None


def test_without_the_readers_verdict_every_file_and_segment_is_unchecked() -> None:
    log = LogImage(1)
    log.segment()
    log.marker()
    rows = log_file_rows([log.image(), LogFileImageOrError("/d/db-wal-0000000000000002", 2,
                                                           "a fifo")], None)
    assert [row.role for row in rows] == ["unchecked", "foreign"]
    assert statuses(rows[:1]) == [(1, 1, "unchecked"), (1, 1, "unchecked")]
    assert rows[1].cells() == ("2", "?", "foreign", "?", "0", "?", "-", "a fifo")
    assert shutdown_line(None, rows) == "shutdown: unknown (the log files were not read)"


def test_dump_lines_of_a_format_2_segment_name_its_file_offset_and_acked_epoch() -> None:
    log = LogImage(3)
    log.segment()
    offset = log.segment()
    segment = decode_segment_v2(bytes(log.data), log.path, offset, log.header)
    assert isinstance(segment, DecodedSegment)
    lines = dump_lines(segment, offset)
    assert lines[0] == f"segment {log.path} offset 8,192 (file_no 3, salt {0x5A1A:#018x})"
    assert lines[1].startswith("epoch 2, prev_epoch 1, commit_seq 2..2, 2 records, 1 lane, ")
    assert lines[1].endswith(f", {128 + segment.header.body_length:,} bytes, acked_epoch 1")
    assert int(lines[3].split()[0]) == offset + 128  # records at file offsets


@pytest.mark.parametrize(("later", "status"), [(False, "torn"), (True, "damaged")])
def test_where_no_header_can_be_read_the_tail_or_the_damage_still_gets_a_row(
    later: bool, status: str
) -> None:
    log = LogImage(1)
    log.segment()
    bad = log.segment()
    if later:
        log.segment()  # records epoch 2 as acknowledged: its loss is damage
    log.data[bad + 3] ^= 0x01  # the header's magic
    result = read(log)
    rows = log_file_rows([log.image()], result)
    expected = [(1, 1, "chain"), (1, 0, status)] + ([(1, 3, "after end")] if later else [])
    assert statuses(rows) == expected
    assert rows[0].segments[1].cells() == ("1", "?", "8,192", "?", "?", "?", "?",
                                           f"{status} (header unreadable)")
    assert rows[0].segments[1].to_json()["epoch"] is None
    if not later:
        assert torn_tail_line(result.torn_tail).endswith(
            "no whole segment header after the end; never acknowledged, recovery discards it")
