"""The version 2 log reader (DESIGN §4): the end of the log, torn tails and damage.

Logs are built byte by byte with the layout codec, written to files in ``tmp_path`` and read
back through the real :class:`OsFileSystem`.
"""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pagewal import CheckpointMissingError, CorruptSegmentError, ForeignFileError
from pagewal._codec import ChainPosition, SegmentHeader, encode_commits, make_commit
from pagewal._fs import OsFileSystem
from pagewal._layout import (
    CheckpointRecord,
    FileState,
    LogFileHeader,
    LogFiles,
    encode_segment_v2,
    encode_shutdown_marker,
    log_file_name,
    segment_name,
    segment_span,
)
from pagewal._logreader import (
    Evidence,
    FileRole,
    LogScan,
    judge_tail,
    scan_log_files,
)
from pagewal._recovery import quarantine, recover

LOG_ID = bytes(range(1, 17))
OTHER_LOG_ID = bytes(range(101, 117))
ALIGNMENT = 4096
CAPACITY = 16 * ALIGNMENT
DB = "db"


def image_of(commit_seq: int) -> bytes:
    """The after-image commit ``commit_seq`` writes (page ``commit_seq % 5``): recognisable."""
    return f"commit {commit_seq} ".encode() * (1 + commit_seq % 7)


@attrs.define
class LogBuilder:
    """Writes a version 2 log's files byte by byte. Segments hold ``commits`` one-page
    commits each; by default each continues the builder's chain and records the epoch before
    it as acknowledged (``acked_epoch = epoch - 1``)."""

    directory: Path
    log_id: bytes = LOG_ID
    inflight_limit: int = 4
    files: dict[int, bytearray] = attrs.Factory(dict)
    headers: dict[int, LogFileHeader] = attrs.Factory(dict)
    next_offset: dict[int, int] = attrs.Factory(dict)
    position: ChainPosition = attrs.Factory(ChainPosition)
    offsets: dict[int, tuple[int, int, int]] = attrs.Factory(dict)
    """epoch -> (file_no, offset, span) of every segment written."""
    used: dict[int, int] = attrs.Factory(dict)
    """epoch -> bytes of header and body (the rest of its span is padding)."""

    def new_file(
        self, file_no: int, *, continues_from: ChainPosition | None = None,
        min_epoch: int | None = None, salt: int | None = None,
        state: FileState = FileState.ACTIVE, capacity: int = CAPACITY,
        header_file_no: int | None = None, log_id: bytes | None = None,
    ) -> LogFileHeader:
        """Start log file ``file_no``, by default continuing the chain where it stands."""
        position = self.position if continues_from is None else continues_from
        active = state is FileState.ACTIVE
        header = LogFileHeader(
            log_id=log_id or self.log_id, file_no=header_file_no or file_no,
            salt=salt or 0xABCD_0000 + file_no, capacity=capacity, alignment=ALIGNMENT,
            inflight_limit=self.inflight_limit, state=state,
            prev_file_no=(max((n for n in self.files if n < file_no), default=0)
                          if active else 0),
            continues_from=position if active else ChainPosition(),
            min_epoch=(min_epoch or position.epoch + 1) if active else 0)
        data = self.files.get(file_no) or bytearray(capacity)
        data[:128] = header.encode()
        self.files[file_no] = data
        self.headers[file_no] = header
        self.next_offset[file_no] = ALIGNMENT
        return header

    def segment(
        self, file_no: int, *, epoch: int | None = None, commits: int = 2,
        acked_epoch: int | None = None, prev_epoch: int | None = None,
        log_id: bytes | None = None, salt: int | None = None, chain: bool = True,
    ) -> int:
        """Append a segment to file ``file_no``; return its offset."""
        header_of_file = self.headers[file_no]
        epoch = self.position.epoch + 1 if epoch is None else epoch
        lo = self.position.commit_seq + 1
        triples = [(seq, 0, make_commit({seq % 5: image_of(seq)}))
                   for seq in range(lo, lo + commits)]
        body = encode_commits(triples)
        header = SegmentHeader(
            epoch=epoch, record_count=commits, lane_count=1, commit_seq_lo=lo,
            commit_seq_hi=lo + commits - 1,
            prev_epoch=self.position.epoch if prev_epoch is None else prev_epoch,
            body_length=len(body), version=2, log_id=log_id or self.log_id, file_no=file_no,
            salt=salt or header_of_file.salt,
            acked_epoch=epoch - 1 if acked_epoch is None else acked_epoch)
        offset = self.next_offset[file_no]
        encoded = b"".join(bytes(b) for b in encode_segment_v2(header, [body], ALIGNMENT))
        self.files[file_no][offset : offset + len(encoded)] = encoded
        self.next_offset[file_no] = offset + len(encoded)
        self.offsets[epoch] = (file_no, offset, len(encoded))
        self.used[epoch] = 128 + len(body)
        if chain:
            self.position = ChainPosition(epoch, lo + commits - 1)
        return offset

    def marker(self, file_no: int, position: ChainPosition | None = None) -> int:
        """Write a clean-shutdown marker after the last segment of ``file_no``."""
        position = self.position if position is None else position
        header = self.headers[file_no]
        offset = self.next_offset[file_no]
        self.files[file_no][offset : offset + 128] = encode_shutdown_marker(
            log_id=header.log_id, file_no=file_no, salt=header.salt, epoch=position.epoch,
            commit_seq=position.commit_seq)
        self.next_offset[file_no] = offset + segment_span(0, ALIGNMENT)
        return offset

    def damage(self, epoch: int, at: int = 200, *, zero: bool = False) -> None:
        """Flip a bit ``at`` bytes into segment ``epoch`` (or zero all of it)."""
        file_no, offset, span = self.offsets[epoch]
        if zero:
            self.files[file_no][offset : offset + span] = bytes(span)
        else:
            self.files[file_no][offset + at] ^= 0x10

    def path(self, file_no: int) -> str:
        return str(self.directory / log_file_name(DB, file_no))

    def write(self) -> list[tuple[str, int]]:
        for file_no, data in self.files.items():
            Path(self.path(file_no)).write_bytes(data)
        return [(self.path(n), n) for n in sorted(self.files)]

    def scan(self, start: ChainPosition | None = None, **options: object) -> LogScan:
        return scan_log_files(OsFileSystem(), self.write(), start or ChainPosition(),
                              **options)  # type: ignore[arg-type]


def chain_epochs(scan: LogScan) -> list[int]:
    return [segment.header.epoch for segment in scan.segments]


def records_of(scan: LogScan) -> list[tuple[int, int, bytes]]:
    """(commit_seq, page_no, image) of every record, in chain order."""
    out = []
    for segment in scan.segments:
        for index in range(segment.records.size):
            row = segment.records[index]
            out.append((int(row["commit_seq"]), int(row["page_no"]),
                        bytes(segment.image(index))))
    return out


def expected_records(last_seq: int, first_seq: int = 1) -> list[tuple[int, int, bytes]]:
    return [(seq, seq % 5, image_of(seq)) for seq in range(first_seq, last_seq + 1)]


@pytest.fixture
def log(tmp_path: Path) -> LogBuilder:
    return LogBuilder(tmp_path)


# ----------------------------------------------------------------------------- whole logs


def test_an_empty_log_has_no_chain_and_no_tail() -> None:
    scan = scan_log_files(OsFileSystem(), [], ChainPosition(3, 30))
    assert scan.last == ChainPosition(3, 30)
    assert (scan.segments, scan.end, scan.torn_tail, scan.clean_shutdown) == ((), None, None,
                                                                             False)
    assert scan.next_epoch == 4


def test_a_fresh_file_with_no_segment_ends_the_log_at_its_first_block(log: LogBuilder) -> None:
    log.new_file(1)
    scan = log.scan()
    assert scan.segments == ()
    assert scan.end is not None and (scan.end.file_no, scan.end.offset) == (1, ALIGNMENT)
    assert scan.torn_tail is None and not scan.clean_shutdown and scan.append_at is None


def test_a_cleanly_closed_log_reads_whole_and_says_where_to_continue(log: LogBuilder) -> None:
    log.new_file(1)
    for _ in range(3):
        log.segment(1)
    marker = log.marker(1)
    scan = log.scan()
    assert chain_epochs(scan) == [1, 2, 3]
    assert records_of(scan) == expected_records(6)
    assert scan.clean_shutdown and scan.torn_tail is None
    assert scan.append_at is not None and scan.append_at.offset == marker
    assert scan.last == ChainPosition(3, 6) and scan.next_epoch == 4
    assert scan.log_id == LOG_ID


def test_the_chain_goes_on_in_the_file_whose_header_continues_it(log: LogBuilder) -> None:
    log.new_file(1)
    log.segment(1)
    log.segment(1)
    log.new_file(2)  # continues from epoch 2
    log.segment(2)
    log.new_file(5)
    log.segment(5)
    log.new_file(6, state=FileState.READY)  # a spare in the pool
    scan = log.scan()
    assert chain_epochs(scan) == [1, 2, 3, 4]
    assert records_of(scan) == expected_records(8)
    roles = {info.file_no: info.role for info in scan.files}
    assert roles == {1: FileRole.CHAIN, 2: FileRole.CHAIN, 5: FileRole.CHAIN,
                     6: FileRole.SPARE}
    assert scan.end is not None and scan.end.file_no == 5
    assert scan.torn_tail is None and not scan.clean_shutdown
    assert scan.max_file_no == 6


def test_a_checkpoint_inside_a_file_starts_the_chain_after_it(log: LogBuilder) -> None:
    log.new_file(1)
    for _ in range(4):
        log.segment(1)
    scan = log.scan(ChainPosition(2, 4))
    assert chain_epochs(scan) == [3, 4]
    assert records_of(scan) == expected_records(8, first_seq=5)


def test_a_start_position_the_file_never_reaches_is_damage(log: LogBuilder) -> None:
    log.new_file(1)
    for _ in range(3):
        log.segment(1)
    with pytest.raises(CorruptSegmentError, match="cannot reach the chain's start"):
        log.scan(ChainPosition(2, 5))


# ----------------------------------------------------------------------------- torn tails


def test_a_torn_last_segment_is_a_reported_torn_tail(log: LogBuilder) -> None:
    log.new_file(1)
    for _ in range(3):
        log.segment(1)
    log.damage(3)  # its body checksum fails; its header is whole
    scan = log.scan()
    assert chain_epochs(scan) == [1, 2]
    assert records_of(scan) == expected_records(4)
    _, offset, span = log.offsets[3]
    assert scan.torn_tail is not None
    assert (scan.torn_tail.path, scan.torn_tail.offset) == (log.path(1), offset)
    assert scan.torn_tail.length == span
    assert (scan.torn_tail.highest_epoch, scan.torn_tail.segments) == (3, 1)
    assert scan.next_epoch == 4 and scan.append_at is None


def test_an_in_flight_tail_whose_later_epoch_completed_is_torn_not_damage(
        log: LogBuilder) -> None:
    log.new_file(1)
    log.segment(1)
    log.segment(1)
    # Epochs 3 and 4 were in flight together: 4 completed, 3 did not; neither was acked.
    log.segment(1, acked_epoch=2)
    log.segment(1, acked_epoch=2)
    log.damage(3, zero=True)
    scan = log.scan()
    assert chain_epochs(scan) == [1, 2]
    assert scan.torn_tail is not None
    assert (scan.torn_tail.highest_epoch, scan.torn_tail.segments) == (4, 1)
    assert scan.next_epoch == 5


def test_a_crash_with_nothing_after_the_end_reports_no_tail_but_no_clean_close(
        log: LogBuilder) -> None:
    log.new_file(1)
    log.segment(1)
    scan = log.scan()
    assert scan.torn_tail is None and not scan.clean_shutdown and scan.append_at is None


# ----------------------------------------------------------------------------- damage


def damaged_middle(log: LogBuilder) -> None:
    """Epochs 1..4; epoch 3's body damaged, while epoch 4 records epoch 3 as acknowledged."""
    log.new_file(1)
    for _ in range(4):
        log.segment(1)
    log.damage(3)


def test_damage_proven_by_a_later_acked_epoch_raises_naming_file_and_offset(
        log: LogBuilder) -> None:
    damaged_middle(log)
    with pytest.raises(CorruptSegmentError) as raised:
        log.scan()
    assert raised.value.path == log.path(1)
    assert raised.value.offset == log.offsets[3][1]
    assert "records epoch 3 as acknowledged" in raised.value.reason
    assert "body checksum" in raised.value.reason


def test_skip_corrupt_keeps_the_prefix_and_lists_what_it_left_out(log: LogBuilder) -> None:
    damaged_middle(log)
    scan = log.scan(skip_corrupt=True)
    assert chain_epochs(scan) == [1, 2]
    assert records_of(scan) == expected_records(4)
    assert scan.torn_tail is None and not scan.clean_shutdown
    assert [(s.path, s.offset) for s in scan.skipped] == [
        (log.path(1), log.offsets[3][1]), (log.path(1), log.offsets[4][1])]
    assert scan.next_epoch == 5  # above the epochs left out


def test_damage_proven_by_the_in_flight_bound(log: LogBuilder) -> None:
    log.new_file(1)
    log.segment(1)
    for _ in range(5):  # epochs 2..6, none recording 2 as acknowledged
        log.segment(1, acked_epoch=1)
    log.damage(2)
    # Epoch 6 is 4 (the in-flight limit) past the first missing epoch 2: 2 had completed.
    with pytest.raises(CorruptSegmentError, match="more than its writer had in flight"):
        log.scan()


def test_within_the_in_flight_bound_the_same_loss_is_a_torn_tail(log: LogBuilder) -> None:
    log.new_file(1)
    log.segment(1)
    for _ in range(4):  # epochs 2..5
        log.segment(1, acked_epoch=1)
    log.damage(2)
    scan = log.scan()
    assert chain_epochs(scan) == [1]
    assert scan.torn_tail is not None and scan.torn_tail.highest_epoch == 5


def test_a_clean_shutdown_marker_makes_an_earlier_bad_segment_damage(log: LogBuilder) -> None:
    log.new_file(1)
    for _ in range(3):
        log.segment(1, acked_epoch=0)  # nothing later records an acknowledgement
    log.marker(1)
    log.damage(3)
    with pytest.raises(CorruptSegmentError, match="clean-shutdown marker") as raised:
        log.scan()
    assert raised.value.offset == log.offsets[3][1]


def test_a_marker_at_the_end_with_a_later_segment_is_not_a_clean_close(
        log: LogBuilder) -> None:
    log.new_file(1)
    log.segment(1)
    log.marker(1)
    log.segment(1, epoch=3, prev_epoch=2, acked_epoch=1, chain=False)  # in flight, not acked
    scan = log.scan()
    assert chain_epochs(scan) == [1]
    assert not scan.clean_shutdown and scan.torn_tail is not None
    assert scan.torn_tail.highest_epoch == 3


# ----------------------------------------------------------------------------- identity


def test_a_recycled_files_stale_segments_are_never_accepted(log: LogBuilder) -> None:
    log.new_file(1, salt=0x1111)
    for _ in range(3):
        log.segment(1)  # the file's earlier life
    # Recycled: a new header and salt over the old bytes, continuing from epoch 0 again.
    log.position = ChainPosition()
    log.new_file(1, salt=0x2222, continues_from=ChainPosition())
    scan = log.scan()
    assert scan.segments == ()
    # What lies there is written, so a tail is reported, but nothing of this life is in it.
    assert scan.torn_tail is not None and scan.torn_tail.segments == 0


def test_a_stale_segment_recording_acks_is_not_evidence(log: LogBuilder) -> None:
    log.new_file(1)
    log.segment(1)
    log.segment(1, epoch=9, acked_epoch=5, salt=0x9999)  # an earlier life: acks mean nothing
    scan = log.scan()
    assert chain_epochs(scan) == [1] and scan.torn_tail is not None


def test_a_segment_of_another_log_is_never_accepted_nor_evidence(log: LogBuilder) -> None:
    log.new_file(1)
    log.segment(1)
    log.segment(1, log_id=OTHER_LOG_ID, acked_epoch=1)
    log.segment(1, epoch=3, prev_epoch=2, log_id=OTHER_LOG_ID, acked_epoch=2)
    scan = log.scan()
    assert chain_epochs(scan) == [1]
    assert scan.torn_tail is not None and scan.torn_tail.segments == 0


def test_a_log_file_of_another_log_is_a_foreign_file(log: LogBuilder) -> None:
    log.new_file(1)
    log.segment(1)
    log.new_file(2, log_id=OTHER_LOG_ID)
    with pytest.raises(ForeignFileError) as raised:
        log.scan()
    assert [path for path, _ in raised.value.files] == [log.path(2)]
    scan = log.scan(tolerate_foreign=True)
    assert chain_epochs(scan) == [1]
    assert {i.file_no: i.role for i in scan.files}[2] is FileRole.FOREIGN


def test_the_checkpoints_log_id_decides_which_files_are_foreign(log: LogBuilder) -> None:
    log.new_file(1)
    with pytest.raises(ForeignFileError):
        log.scan(log_id=OTHER_LOG_ID)


def test_a_file_being_recycled_or_created_is_a_spare(log: LogBuilder) -> None:
    log.new_file(1)
    log.segment(1)
    log.new_file(7, header_file_no=3)  # renamed to 7, its header still names file 3
    log.files[8] = bytearray(CAPACITY)  # created, header not yet written
    scan = log.scan()
    roles = {i.file_no: i.role for i in scan.files}
    assert (roles[7], roles[8]) == (FileRole.SPARE, FileRole.SPARE)
    assert chain_epochs(scan) == [1] and scan.torn_tail is None


# ----------------------------------------------------------------------------- discarded tails


def test_a_later_file_continuing_from_before_a_break_carries_the_chain_on(
        log: LogBuilder) -> None:
    log.new_file(1)
    log.segment(1)
    log.segment(1)
    log.segment(1, acked_epoch=2)
    log.segment(1, acked_epoch=3)  # records 3 as acked: evidence, were it not discarded
    log.damage(3)
    # An earlier recovery ended the log at epoch 2 and went on in a fresh file above epoch 4.
    log.position = ChainPosition(2, 4)
    log.new_file(2, continues_from=ChainPosition(2, 4), min_epoch=5)
    log.segment(2, epoch=5, acked_epoch=2)
    log.segment(2)
    scan = log.scan()
    assert chain_epochs(scan) == [1, 2, 5, 6]
    assert records_of(scan) == expected_records(8)
    assert scan.torn_tail is None
    infos = {i.file_no: i for i in scan.files}
    assert (infos[1].last_epoch, infos[1].chain_end) == (2, log.offsets[3][1])


def test_a_discarded_tail_that_still_looks_valid_is_not_followed(log: LogBuilder) -> None:
    log.new_file(1)
    log.segment(1)
    log.segment(1, acked_epoch=0)  # whole, but a recovery discarded it (never acked)
    log.position = ChainPosition(1, 2)
    log.new_file(2, continues_from=ChainPosition(1, 2), min_epoch=3)
    log.segment(2, epoch=3)
    scan = log.scan()
    assert chain_epochs(scan) == [1, 3]
    assert records_of(scan) == expected_records(4)


def test_a_file_that_does_not_continue_the_chain_is_evidence_after_its_end(
        log: LogBuilder) -> None:
    log.new_file(1)
    log.segment(1)
    log.segment(1)
    log.new_file(2)  # activated while epoch 2 was still in flight: continues from 2
    log.segment(2, acked_epoch=1)
    log.damage(2, zero=True)
    scan = log.scan()
    assert chain_epochs(scan) == [1]
    assert {i.file_no: i.role for i in scan.files}[2] is FileRole.AFTER_END
    assert scan.torn_tail is not None and scan.torn_tail.highest_epoch == 3
    # Had epoch 3 recorded 2 as acknowledged, losing 2 would be damage.
    log.segment(2, epoch=4, prev_epoch=3, acked_epoch=2)
    with pytest.raises(CorruptSegmentError, match="records epoch 2 as acknowledged"):
        log.scan()


def test_the_in_flight_bound_counts_from_a_files_min_epoch(log: LogBuilder) -> None:
    log.new_file(1)
    log.segment(1)
    # Reopened above a discarded tail that reached epoch 9: numbering starts at 10.
    log.new_file(2, min_epoch=10)
    log.segment(2, epoch=10, acked_epoch=1)
    for _ in range(3):  # 11..13: within 4 of the first missing epoch 10
        log.segment(2, acked_epoch=1)
    log.damage(10)
    scan = log.scan()
    assert chain_epochs(scan) == [1]
    assert scan.torn_tail is not None and scan.next_epoch == 14


# ----------------------------------------------------------------------------- file headers


def test_a_bit_flip_in_a_needed_file_header_fails_closed(log: LogBuilder) -> None:
    log.new_file(1)
    log.segment(1)
    log.new_file(2)
    log.segment(2)
    log.files[2][40] ^= 0x01
    with pytest.raises(CorruptSegmentError, match="checksum") as raised:
        log.scan()
    assert raised.value.path == log.path(2)
    scan = log.scan(skip_corrupt=True)
    assert chain_epochs(scan) == [1]
    assert log.path(2) in [s.path for s in scan.skipped]


def test_a_damaged_header_of_a_file_before_the_chain_starts_is_ignored(
        log: LogBuilder) -> None:
    log.new_file(1)
    log.segment(1)
    log.new_file(2)
    log.segment(2)
    log.files[1][40] ^= 0x01
    scan = log.scan(ChainPosition(1, 2))
    assert chain_epochs(scan) == [2]
    assert {i.file_no: i.role for i in scan.files}[1] is FileRole.DAMAGED


# ----------------------------------------------------------------------------- the rule itself


def evidence(epoch: int, acked: int, limit: int = 4) -> Evidence:
    header = SegmentHeader(
        epoch=epoch, record_count=1, lane_count=1, commit_seq_lo=1, commit_seq_hi=1,
        prev_epoch=epoch - 1, body_length=41, version=2, log_id=LOG_ID, file_no=1, salt=1,
        acked_epoch=acked)
    return Evidence("f", 4096 * epoch, limit, header)


@pytest.mark.parametrize(("items", "damaged"), [
    ([], False),
    ([evidence(6, 4)], False),           # 5 and 6 in flight together; 6 completed
    ([evidence(7, 5)], True),            # 5 acknowledged, yet missing
    ([evidence(9, 4, limit=4)], True),   # 5 + 4: the writer never had that many in flight
    ([evidence(8, 4, limit=4)], False),
    ([evidence(9, 4, limit=8)], False),
])
def test_judge_tail(items: list[Evidence], damaged: bool) -> None:
    verdict = judge_tail(ChainPosition(4, 40), 5, items, ("f", 5 * 4096))
    assert (verdict.damage is not None) is damaged


# ----------------------------------------------------------------------------- recovery


def write_v1_segment(directory: Path, epoch: int, first_seq: int, commits: int) -> None:
    triples = [(seq, 0, make_commit({seq % 5: image_of(seq)}))
               for seq in range(first_seq, first_seq + commits)]
    body = encode_commits(triples)
    header = SegmentHeader(epoch=epoch, record_count=commits, lane_count=1,
                           commit_seq_lo=first_seq, commit_seq_hi=first_seq + commits - 1,
                           prev_epoch=epoch - 1, body_length=len(body))
    (directory / segment_name(DB, epoch)).write_bytes(header.encode() + body)


def test_recovery_reads_version_1_segments_then_the_version_2_files_continuing_them(
        log: LogBuilder, tmp_path: Path) -> None:
    write_v1_segment(tmp_path, 1, 1, 2)
    write_v1_segment(tmp_path, 2, 3, 2)
    log.position = ChainPosition(2, 4)
    log.new_file(1)
    log.segment(1)
    log.segment(1)
    log.segment(1, acked_epoch=3)
    log.damage(5)  # a torn write of the newest, unacknowledged epoch
    log.write()
    result = recover(tmp_path / DB)
    assert [info.header.epoch for info in result.segments] == [1, 2, 3, 4]
    assert [(r.commit_seq, r.page_no, r.image) for r in result.iter_records()] == (
        expected_records(8))
    assert result.last == ChainPosition(4, 8)
    assert result.log_id == LOG_ID and not result.clean_shutdown
    assert result.torn_tail is not None and result.torn_tail.offset == log.offsets[5][1]
    assert result.log_scan is not None and result.log_scan.next_epoch == 6


def test_recovery_after_a_checkpoint_reads_the_version_2_chain_after_it(
        log: LogBuilder, tmp_path: Path) -> None:
    log.new_file(1)
    for _ in range(3):
        log.segment(1)
    log.marker(1)
    log.write()
    record = CheckpointRecord(position=ChainPosition(1, 2), log_id=LOG_ID)
    (tmp_path / f"{DB}-wal-checkpoint").write_bytes(record.encode())
    result = recover(tmp_path / DB)
    assert [info.header.epoch for info in result.segments] == [2, 3]
    assert result.clean_shutdown and result.torn_tail is None
    (tmp_path / f"{DB}-wal-checkpoint").write_bytes(
        attrs.evolve(record, log_id=OTHER_LOG_ID).encode())
    with pytest.raises(ForeignFileError):
        recover(tmp_path / DB)


# ----------------------------------------------------------------------------- properties


def acked_log(log: LogBuilder, epochs: int) -> None:
    """``epochs`` segments in two files, each recording every earlier epoch as acked."""
    log.new_file(1)
    for epoch in range(1, epochs + 1):
        if epoch == epochs // 2 + 1:
            log.new_file(2)
        log.segment(1 if epoch <= epochs // 2 else 2, commits=1 + epoch % 3)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(epochs=st.integers(2, 6), data=st.data())
def test_a_bit_flip_in_an_acknowledged_segment_always_raises(
        tmp_path: Path, epochs: int, data: st.DataObject) -> None:
    log = LogBuilder(tmp_path)
    acked_log(log, epochs)
    victim = data.draw(st.integers(1, epochs - 1), label="victim")  # a later one acks it
    file_no, offset, _ = log.offsets[victim]
    at = data.draw(st.integers(0, log.used[victim] - 1), label="byte")
    log.files[file_no][offset + at] ^= 1 << data.draw(st.integers(0, 7), label="bit")
    with pytest.raises(CorruptSegmentError):
        log.scan()
    skipped = log.scan(skip_corrupt=True)
    assert chain_epochs(skipped) == list(range(1, victim))


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(epochs=st.integers(1, 6), data=st.data())
def test_a_log_cut_anywhere_in_its_last_file_reads_as_a_prefix(
        tmp_path: Path, epochs: int, data: st.DataObject) -> None:
    log = LogBuilder(tmp_path)
    acked_log(log, epochs)
    last_file = max(log.files)
    written = log.next_offset[last_file]
    cut = data.draw(st.integers(ALIGNMENT, written), label="cut")
    log.files[last_file][cut:] = bytes(CAPACITY - cut)
    scan = log.scan()
    kept = chain_epochs(scan)
    assert kept == list(range(1, len(kept) + 1))
    assert records_of(scan) == expected_records(scan.last.commit_seq)
    survivors = [e for e, (f, o, _) in log.offsets.items()
                 if f != last_file or o + log.used[e] <= cut]
    assert kept == survivors
    # A tail is reported exactly when some byte of a segment after the end survived.
    assert scan.end is not None and scan.end.file_no == last_file
    assert (scan.torn_tail is None) == (cut <= scan.end.offset)


def test_skip_corrupt_recovery_sets_aside_no_version_2_file(
        log: LogBuilder, tmp_path: Path) -> None:
    damaged_middle(log)
    log.write()
    result = recover(tmp_path / DB, skip_corrupt=True)
    assert [info.header.epoch for info in result.segments] == [1, 2]
    assert result.skipped
    # The file holds the valid prefix too: continuing in a fresh file discards the rest.
    quarantine(LogFiles.for_db(tmp_path / DB), OsFileSystem(), result.skipped)
    assert sorted(p.name for p in tmp_path.iterdir() if "corrupt" in p.name) == []
    assert Path(log.path(1)).exists()


@pytest.mark.parametrize("skip_corrupt", [False, True])
def test_log_files_continuing_a_log_without_its_checkpoint_say_the_record_was_lost(
        log: LogBuilder, tmp_path: Path, skip_corrupt: bool) -> None:
    log.position = ChainPosition(5, 10)
    log.new_file(3)
    log.segment(3, acked_epoch=5)
    log.segment(3)
    log.write()
    with pytest.raises(CheckpointMissingError) as raised:
        recover(tmp_path / DB, skip_corrupt=skip_corrupt)
    assert raised.value.continues_from == ChainPosition(5, 10)
    assert "--epoch 5 --commit-seq 10" in raised.value.reason


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(durable=st.integers(0, 3), in_flight=st.integers(1, 4),
       torn=st.lists(st.sampled_from(["whole", "zeroed", "flipped"]), min_size=4, max_size=4))
def test_epochs_in_flight_completing_in_any_order_read_as_a_prefix_never_as_damage(
        tmp_path: Path, durable: int, in_flight: int, torn: list[str]) -> None:
    log = LogBuilder(tmp_path)
    log.new_file(1)
    for _ in range(durable):
        log.segment(1)
    # Epochs durable+1 .. durable+in_flight were written at once; none acknowledged.
    for _ in range(in_flight):
        log.segment(1, acked_epoch=durable)
    fates = dict(zip(range(durable + 1, durable + in_flight + 1), torn, strict=False))
    for epoch, fate in fates.items():
        if fate != "whole":
            log.damage(epoch, zero=fate == "zeroed")
    scan = log.scan()
    lost = [epoch for epoch, fate in fates.items() if fate != "whole"]
    end = lost[0] - 1 if lost else durable + in_flight
    assert chain_epochs(scan) == list(range(1, end + 1))
    assert records_of(scan) == expected_records(2 * end)
    left_after_end = [e for e, fate in fates.items() if e > end and fate != "zeroed"]
    assert (scan.torn_tail is not None) == bool(left_after_end)
    if scan.torn_tail is not None:
        assert scan.torn_tail.highest_epoch == max(left_after_end)
        assert scan.next_epoch == max(left_after_end) + 1


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(epochs=st.integers(1, 6), data=st.data())
def test_a_bit_flip_anywhere_yields_an_error_or_a_true_prefix_never_wrong_bytes(
        tmp_path: Path, epochs: int, data: st.DataObject) -> None:
    log = LogBuilder(tmp_path)
    acked_log(log, epochs)
    log.marker(max(log.files))
    file_no = data.draw(st.sampled_from(sorted(log.files)), label="file")
    at = data.draw(st.integers(0, log.next_offset[file_no] - 1), label="byte")
    log.files[file_no][at] ^= 1 << data.draw(st.integers(0, 7), label="bit")
    try:
        scan = log.scan()
    except CorruptSegmentError:
        return
    kept = chain_epochs(scan)
    assert kept == list(range(1, len(kept) + 1))
    assert records_of(scan) == expected_records(scan.last.commit_seq)
    if kept != list(range(1, epochs + 1)):
        # Every epoch is recorded as acknowledged by the next one or by the marker: losing
        # any of them is damage, never a quiet prefix.
        raise AssertionError(f"lost epochs {kept} of {epochs} without an error")
