"""The version 2 layout (DESIGN §4): log file names, the log file header, the version 2
segment and its clean-shutdown marker.

Expected bytes are packed by hand at the offsets of the format tables (README, "On-disk
format"), independently of ``pagewal._layout``; the ``crc32c`` package computes checksums.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import crc32c
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pagewal import CorruptSegmentError
from pagewal._chain import check_continues
from pagewal._codec import (
    ChainPosition,
    DecodedSegment,
    SegmentHeader,
    encode_commits,
    make_commit,
)
from pagewal._layout import (
    SEGMENT_FLAG_CLEAN_SHUTDOWN,
    FileState,
    LogFileHeader,
    ShutdownMarker,
    databases_with_logs,
    decode_file_header,
    decode_segment_header_v2,
    decode_segment_v2,
    encode_segment_v2,
    encode_shutdown_marker,
    is_unwritten,
    list_log_files,
    log_file_name,
    log_file_temp_name,
    parse_log_file_name,
    parse_log_file_temp_name,
    segment_span,
)

PATH = "/db/dir/db-wal-0000000000000001"
LOG_ID = bytes(range(1, 17))
SALT = 0x1234_5678_9ABC_DEF0


def file_header(**changes: object) -> LogFileHeader:
    fields: dict[str, object] = dict(
        log_id=LOG_ID, file_no=1, salt=SALT, capacity=16 * 4096, alignment=4096,
        inflight_limit=4, state=FileState.ACTIVE, prev_file_no=0,
        continues_from=ChainPosition(0, 0), min_epoch=1)
    fields.update(changes)
    return LogFileHeader(**fields)  # type: ignore[arg-type]


def body_of(commits: Sequence[tuple[int, int, bytes]], lo: int = 1) -> bytearray:
    """Encoded records of one-page commits ``(page_no, lane_id, image)``, seqs from ``lo``."""
    return encode_commits([(lo + n, lane, make_commit({page: image}))
                           for n, (page, lane, image) in enumerate(commits)])


def segment_header(body: bytes | bytearray, count: int, **changes: object) -> SegmentHeader:
    fields: dict[str, object] = dict(
        epoch=1, record_count=count, lane_count=2, commit_seq_lo=1, commit_seq_hi=count,
        prev_epoch=0, body_length=len(body), version=2, log_id=LOG_ID, file_no=1, salt=SALT,
        acked_epoch=0)
    fields.update(changes)
    return SegmentHeader(**fields)  # type: ignore[arg-type]


def log_file(header: LogFileHeader, segments: Sequence[Sequence[bytes | bytearray | memoryview]]
             ) -> bytearray:
    """A log file's bytes: its header block, then ``segments`` (buffers) back to back."""
    data = bytearray(header.encode()) + bytes(header.alignment - 128)
    for buffers in segments:
        for buffer in buffers:
            data += buffer
    return data + bytes(header.capacity - len(data))


def reason_of(raised: pytest.ExceptionInfo[CorruptSegmentError]) -> str:
    assert raised.value.reason, "every reject names its reason"
    return raised.value.reason


COMMITS = [(7, 0, b"a" * 100), (8, 1, b"b" * 3000), (7, 1, b"c")]


def one_segment() -> tuple[LogFileHeader, bytearray, SegmentHeader]:
    fh = file_header()
    body = body_of(COMMITS)
    header = segment_header(body, len(COMMITS))
    return fh, log_file(fh, [encode_segment_v2(header, [body], 4096)]), header


# ----------------------------------------------------------------------------- names


def test_log_file_names_are_sixteen_hex_digits_and_parse_back() -> None:
    assert log_file_name("db", 1) == "db-wal-0000000000000001"
    assert log_file_name("db", 0xAB) == "db-wal-00000000000000ab"
    assert log_file_temp_name("db", 2) == "db-wal-0000000000000002.tmp"
    assert parse_log_file_name("db", "db-wal-00000000000000ab") == 0xAB
    assert parse_log_file_temp_name("db", "db-wal-0000000000000002.tmp") == 2
    with pytest.raises(ValueError):
        log_file_name("db", 0)


@pytest.mark.parametrize("name", [
    "db-wal-0000000000000000", "db-wal-00000000000000AB", "db-wal-000000000000001",
    "db-wal-0000000000000001.tmp", "db-wal-seg-0000000000000001", "db-wal-checkpoint",
    "db-wal-lock", "dbx-wal-0000000000000001", "db-wal-0000000000000001.corrupt",
])
def test_other_names_are_not_log_files(name: str) -> None:
    assert parse_log_file_name("db", name) is None


def test_only_a_log_file_name_plus_tmp_is_a_temporary_log_file() -> None:
    assert parse_log_file_temp_name("db", "db-wal-seg-0000000000000001.tmp") is None
    assert parse_log_file_temp_name("db", "db-wal-0000000000000001") is None


# ----------------------------------------------------------------------------- file header


def test_file_header_bytes_are_the_documented_layout() -> None:
    header = file_header(file_no=5, prev_file_no=3, continues_from=ChainPosition(9, 40),
                         min_epoch=12, inflight_limit=7)
    head = struct.pack("<8sHHI16sQQQIIQQQQ28s", b"PGWALLOG", 2, 2, 4096, LOG_ID, 5, SALT,
                       16 * 4096, 7, 0, 3, 9, 40, 12, bytes(28))
    assert header.encode() == head + struct.pack("<I", crc32c.crc32c(head))


file_headers = st.builds(
    lambda log_id, file_no, salt, blocks, shift, inflight, active, prev, epoch, seq, min_epoch:
    file_header(
        log_id=log_id, file_no=file_no, salt=salt, alignment=1 << shift,
        capacity=blocks << shift, inflight_limit=inflight,
        state=FileState.ACTIVE if active else FileState.READY,
        prev_file_no=prev % file_no if active else 0,
        continues_from=ChainPosition(epoch, seq) if active else ChainPosition(),
        min_epoch=min_epoch if active else 0),
    st.binary(min_size=16, max_size=16).filter(any), st.integers(1, 2**64 - 1),
    st.integers(1, 2**64 - 1), st.integers(2, 2**20), st.integers(9, 20), st.integers(1, 64),
    st.booleans(), st.integers(0, 2**64 - 1), st.integers(0, 2**63 - 1),
    st.integers(0, 2**63 - 1), st.integers(0, 2**63 - 1))


@given(header=file_headers)
def test_file_header_round_trips(header: LogFileHeader) -> None:
    encoded = header.encode()
    assert len(encoded) == 128
    assert decode_file_header(encoded + bytes(100), PATH) == header


def test_every_single_bit_flip_of_a_file_header_is_detected() -> None:
    encoded = file_header(continues_from=ChainPosition(3, 9), prev_file_no=0).encode()
    for bit in range(len(encoded) * 8):
        flipped = bytearray(encoded)
        flipped[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(CorruptSegmentError) as raised:
            decode_file_header(flipped, PATH)
        assert reason_of(raised)


def test_an_all_zero_file_header_is_unwritten_not_a_header() -> None:
    assert is_unwritten(bytes(4096))
    assert not is_unwritten(file_header().encode())
    with pytest.raises(CorruptSegmentError) as raised:
        decode_file_header(bytes(128), PATH)
    assert "unwritten" in reason_of(raised)


@pytest.mark.parametrize("length", [0, 1, 64, 127])
def test_a_cut_off_file_header_is_rejected(length: int) -> None:
    with pytest.raises(CorruptSegmentError) as raised:
        decode_file_header(file_header().encode()[:length], PATH)
    assert "cut off" in reason_of(raised)


def _reencoded(fields: dict[str, tuple[int, str, object]]) -> bytes:
    """A valid header with ``fields`` (name -> (offset, format, value)) overwritten and the
    CRC recomputed: values the CRC cannot catch, only the bounds."""
    data = bytearray(file_header().encode())
    for offset, fmt, value in fields.values():
        struct.pack_into(fmt, data, offset, value)
    struct.pack_into("<I", data, 124, crc32c.crc32c(bytes(data[:124])))
    return bytes(data)


@pytest.mark.parametrize(("fields", "offset"), [
    ({"version": (8, "<H", 1)}, 8),
    ({"state": (10, "<H", 3)}, 10),
    ({"state": (10, "<H", 0)}, 10),
    ({"alignment": (12, "<I", 256)}, 12),
    ({"alignment": (12, "<I", 3000)}, 12),
    ({"alignment": (12, "<I", 2 << 20)}, 12),
    ({"log_id": (16, "<16s", bytes(16))}, 16),
    ({"file_no": (32, "<Q", 0)}, 32),
    ({"salt": (40, "<Q", 0)}, 40),
    ({"capacity": (48, "<Q", 4096)}, 48),
    ({"capacity": (48, "<Q", 3 * 4096 + 512)}, 48),
    ({"inflight": (56, "<I", 0)}, 56),
    ({"inflight": (56, "<I", 65)}, 56),
    ({"reserved": (60, "<I", 1)}, 60),
    ({"prev_file_no": (64, "<Q", 1)}, 64),  # file_no is 1: prev must be before it
    ({"epoch": (72, "<Q", 2**63)}, 72),
    ({"commit_seq": (80, "<Q", 2**63)}, 80),
    ({"reserved": (100, "<I", 1)}, 96),
    ({"state": (10, "<H", 1), "prev": (64, "<Q", 0), "min": (88, "<Q", 0),
      "epoch": (72, "<Q", 5)}, 64),  # READY with a continuation
    ({"state": (10, "<H", 1), "min_epoch": (88, "<Q", 3)}, 64),
])
def test_file_header_fields_out_of_bounds_are_rejected(
    fields: dict[str, tuple[int, str, object]], offset: int
) -> None:
    with pytest.raises(CorruptSegmentError) as raised:
        decode_file_header(_reencoded(fields), PATH)
    assert raised.value.offset == offset
    assert reason_of(raised)


def test_a_ready_header_without_continuation_is_accepted() -> None:
    ready = file_header(state=FileState.READY, min_epoch=0)
    assert decode_file_header(ready.encode(), PATH).state is FileState.READY


@pytest.mark.parametrize("changes", [
    dict(alignment=1000), dict(capacity=4096), dict(salt=0), dict(file_no=0),
    dict(inflight_limit=65), dict(log_id=bytes(16)), dict(log_id=b"short"),
    dict(state=FileState.READY), dict(salt=-1),
])
def test_a_file_header_out_of_bounds_cannot_be_built(changes: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        file_header(**changes)


# ----------------------------------------------------------------------------- segments

segment_commits = st.lists(
    st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 3), st.binary(min_size=1,
                                                                        max_size=600)),
    min_size=1, max_size=8)


@given(commits=segment_commits, alignment=st.sampled_from([512, 4096, 65536]),
       split=st.integers(0, 10_000), acked=st.integers(0, 40), serialized=st.booleans())
def test_segments_round_trip_padded_to_the_alignment(
    commits: list[tuple[int, int, bytes]], alignment: int, split: int, acked: int,
    serialized: bool,
) -> None:
    body = body_of(commits, lo=11)
    split = min(split, len(body))
    parts = [memoryview(body)[:split], memoryview(body)[split:]]
    header = segment_header(body, len(commits), epoch=41, prev_epoch=40, commit_seq_lo=11,
                            commit_seq_hi=10 + len(commits), lane_count=4,
                            acked_epoch=acked, flags=int(serialized))
    buffers = encode_segment_v2(header, parts, alignment)
    assert buffers[1] is parts[0] and buffers[2] is parts[1]  # the body is not copied
    total = sum(memoryview(b).nbytes for b in buffers)
    assert total == segment_span(len(body), alignment) and total % alignment == 0
    assert total - 128 - len(body) < alignment
    encoded = b"".join(bytes(b) for b in buffers)
    assert is_unwritten(encoded[128 + len(body):])  # the padding is zeros
    fh = file_header(alignment=alignment, capacity=alignment + padded_to(total, alignment)
                     + alignment, min_epoch=41)
    data = log_file(fh, [buffers])
    decoded = decode_segment_v2(data, PATH, alignment, fh)
    assert isinstance(decoded, DecodedSegment)
    assert decoded.header == header
    assert decode_segment_header_v2(data, PATH, alignment) == header
    images = [decoded.image(i) for i in decoded.canonical_order()]
    assert [bytes(image) for image in images] == [image for _, _, image in commits]
    assert decoded.record_offset(0) == alignment + 128  # indexes are file offsets
    assert check_continues(ChainPosition(40, 10), decoded.header, PATH) == ChainPosition(
        41, 10 + len(commits))


def padded_to(size: int, alignment: int) -> int:
    return -(-size // alignment) * alignment


def test_segment_header_bytes_are_the_documented_layout() -> None:
    body = body_of(COMMITS)
    header = segment_header(body, 3, epoch=9, prev_epoch=8, commit_seq_lo=5, commit_seq_hi=7,
                            acked_epoch=6, flags=1)
    head = struct.pack("<IHHQIHHQQQQ16sQQQ24sI", 0x5057414D, 2, 1, 9, 3, 2, 0, 5, 7, 8,
                       len(body), LOG_ID, 1, SALT, 6, bytes(24), crc32c.crc32c(bytes(body)))
    encoded = encode_segment_v2(header, [body], 512)[0]
    assert encoded == head + struct.pack("<I", crc32c.crc32c(head))


def test_two_segments_follow_each_other_without_gaps() -> None:
    fh = file_header()
    first_body, second_body = body_of(COMMITS), body_of([(1, 0, b"z" * 5000)], lo=4)
    first = segment_header(first_body, 3)
    second = segment_header(second_body, 1, epoch=2, prev_epoch=1, commit_seq_lo=4,
                            commit_seq_hi=4, acked_epoch=1)
    data = log_file(fh, [encode_segment_v2(first, [first_body], 4096),
                         encode_segment_v2(second, [second_body], 4096)])
    position = ChainPosition()
    offset = 4096
    for expected in (first, second):
        decoded = decode_segment_v2(data, PATH, offset, fh)
        assert isinstance(decoded, DecodedSegment) and decoded.header == expected
        position = check_continues(position, decoded.header, PATH)
        offset += segment_span(expected.body_length, 4096)
    assert position == ChainPosition(2, 4)
    assert is_unwritten(data[offset : offset + 128])


def test_every_single_bit_flip_of_a_segment_header_is_detected() -> None:
    fh, data, _ = one_segment()
    for bit in range(128 * 8):
        flipped = bytearray(data)
        flipped[4096 + bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(CorruptSegmentError) as raised:
            decode_segment_v2(flipped, PATH, 4096, fh)
        assert reason_of(raised)
        assert 4096 <= raised.value.offset < 4096 + 128  # a file offset inside the header


@pytest.mark.parametrize("position", [0, 35, 36, 135, 140, 3140, 3180])
def test_the_body_crc_catches_a_flipped_body_byte(position: int) -> None:
    fh, data, _ = one_segment()
    data[4096 + 128 + position] ^= 0x10
    with pytest.raises(CorruptSegmentError) as raised:
        decode_segment_v2(data, PATH, 4096, fh)
    assert reason_of(raised) == "body checksum mismatch"
    assert raised.value.offset == 4096 + 120


@pytest.mark.parametrize(("changes", "offset"), [
    (dict(log_id=bytes(range(2, 18))), 56),
    (dict(file_no=2), 72),
    (dict(salt=SALT + 1), 80),
])
def test_a_segment_of_another_log_file_or_an_earlier_life_is_rejected(
    changes: dict[str, object], offset: int
) -> None:
    _fh, data, _ = one_segment()
    other = file_header(**changes)
    with pytest.raises(CorruptSegmentError) as raised:
        decode_segment_v2(data, PATH, 4096, other)
    assert raised.value.offset == 4096 + offset
    assert "not the file's" in reason_of(raised)


def test_a_segment_below_the_files_min_epoch_is_rejected() -> None:
    _fh, data, _ = one_segment()
    with pytest.raises(CorruptSegmentError) as raised:
        decode_segment_v2(data, PATH, 4096, file_header(min_epoch=2))
    assert "min_epoch" in reason_of(raised)


@pytest.mark.parametrize("keep", [0, 1, 100, 127, 128, 129, 3000, 128 + 3101 + 36 * 3 - 1])
def test_a_truncated_segment_is_rejected(keep: int) -> None:
    fh, data, header = one_segment()
    assert 128 + header.body_length == 128 + 3101 + 36 * 3 + 12  # 3 records, 40 bytes each
    with pytest.raises(CorruptSegmentError) as raised:
        decode_segment_v2(data[: 4096 + keep], PATH, 4096, fh)
    assert reason_of(raised)


def test_a_segment_must_fit_inside_the_files_capacity() -> None:
    _fh, data, _ = one_segment()
    small = file_header(capacity=2 * 4096)
    data = data + bytes(4096)  # the bytes exist, but beyond the capacity
    big_body = body_of([(1, 0, b"q" * 5000)])
    big = encode_segment_v2(segment_header(big_body, 1), [big_body], 4096)
    data[4096 : 4096 + 4096 * 2] = b"".join(bytes(b) for b in big)
    with pytest.raises(CorruptSegmentError) as raised:
        decode_segment_v2(data, PATH, 4096, small)
    assert "past the end" in reason_of(raised)


@pytest.mark.parametrize("offset", [0, 100, 4096 + 512, 16 * 4096])
def test_a_segment_is_read_only_at_an_aligned_offset_after_the_file_header(offset: int) -> None:
    fh, data, _ = one_segment()
    with pytest.raises(CorruptSegmentError) as raised:
        decode_segment_v2(data, PATH, offset, fh)
    assert "alignment" in reason_of(raised)


def test_an_unwritten_segment_header_is_told_apart_from_a_corrupt_one() -> None:
    fh, data, _ = one_segment()
    assert is_unwritten(data[8192 : 8192 + 128])
    with pytest.raises(CorruptSegmentError) as raised:
        decode_segment_v2(data, PATH, 8192, fh)
    assert "unwritten" in reason_of(raised)
    data[4096 + 3] ^= 1
    assert not is_unwritten(data[4096 : 4096 + 128])


def test_an_impossible_record_count_is_rejected_before_allocating() -> None:
    fh, data, _header = one_segment()
    forged = bytearray(data[4096 : 4096 + 128])
    struct.pack_into("<I", forged, 16, 2**32 - 1)
    struct.pack_into("<QQ", forged, 24, 1, 2**32 - 1)
    struct.pack_into("<I", forged, 124, crc32c.crc32c(bytes(forged[:124])))
    data[4096 : 4096 + 128] = forged
    with pytest.raises(CorruptSegmentError) as raised:
        decode_segment_v2(data, PATH, 4096, fh)
    assert "cannot fit" in reason_of(raised)


def test_a_bad_record_is_reported_at_its_file_offset() -> None:
    fh = file_header()
    body = body_of(COMMITS)
    body[-1] ^= 1  # the last record's CRC: the body CRC is computed over the damaged body
    data = log_file(fh, [encode_segment_v2(segment_header(body, 3), [body], 4096)])
    with pytest.raises(CorruptSegmentError) as raised:
        decode_segment_v2(data, PATH, 4096, fh)
    assert raised.value.offset == 4096 + 128 + 140 + 3040
    assert "record 2 checksum mismatch" in reason_of(raised)


def test_a_version_1_header_keeps_its_bytes_and_cannot_go_into_a_log_file() -> None:
    v1 = SegmentHeader(epoch=1, record_count=1, lane_count=1, commit_seq_lo=1,
                       commit_seq_hi=1, prev_epoch=0, body_length=41)
    assert len(v1.encode()) == 64 and v1.version == 1
    with pytest.raises(ValueError):
        encode_segment_v2(v1, [bytes(41)], 4096)
    with pytest.raises(ValueError):
        segment_header(bytes(41), 1).encode()
    with pytest.raises(ValueError):
        SegmentHeader(epoch=1, record_count=1, lane_count=1, commit_seq_lo=1, commit_seq_hi=1,
                      prev_epoch=0, body_length=41, salt=5)


def test_the_body_buffers_must_hold_the_headers_body_length() -> None:
    body = body_of(COMMITS)
    with pytest.raises(ValueError):
        encode_segment_v2(segment_header(body, 3), [body[:-1]], 4096)


# ----------------------------------------------------------------------------- marker


def test_the_clean_shutdown_marker_round_trips_and_is_recognized() -> None:
    fh, data, _header = one_segment()
    marker = encode_shutdown_marker(log_id=LOG_ID, file_no=1, salt=SALT, epoch=1,
                                    commit_seq=3)
    (flags,) = struct.unpack_from("<H", marker, 6)
    assert flags == SEGMENT_FLAG_CLEAN_SHUTDOWN and len(marker) == 128
    assert segment_span(0, 4096) == 4096
    data[8192 : 8192 + 128] = marker
    decoded = decode_segment_v2(data, PATH, 8192, fh)
    assert decoded == ShutdownMarker(log_id=LOG_ID, file_no=1, salt=SALT, epoch=1,
                                     commit_seq=3)
    assert decode_segment_header_v2(data, PATH, 8192) == decoded
    with pytest.raises(CorruptSegmentError):  # identity applies to the marker too
        decode_segment_v2(data, PATH, 8192, file_header(salt=SALT + 1))


def test_every_single_bit_flip_of_a_marker_is_detected() -> None:
    marker = encode_shutdown_marker(log_id=LOG_ID, file_no=1, salt=SALT, epoch=7,
                                    commit_seq=30)
    for bit in range(128 * 8):
        flipped = bytearray(marker)
        flipped[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(CorruptSegmentError):
            decode_segment_header_v2(flipped, PATH, 0)


def test_a_marker_with_records_is_rejected() -> None:
    forged = bytearray(encode_shutdown_marker(log_id=LOG_ID, file_no=1, salt=SALT, epoch=7,
                                              commit_seq=30))
    struct.pack_into("<I", forged, 16, 1)
    struct.pack_into("<I", forged, 124, crc32c.crc32c(bytes(forged[:124])))
    with pytest.raises(CorruptSegmentError) as raised:
        decode_segment_header_v2(forged, PATH, 0)
    assert "marker" in reason_of(raised)


# ----------------------------------------------------------------------------- listing


def test_a_listing_sorts_version_2_log_files_by_file_no_beside_version_1_files() -> None:
    names = ["db-wal-0000000000000010", "db-wal-0000000000000002", "db-wal-0000000000000011.tmp",
             "db-wal-seg-0000000000000003", "db-wal-checkpoint", "db-wal-0000000000000000",
             "other-wal-0000000000000001", "db"]
    listing = list_log_files("db", names)
    assert listing.log_files == ((2, "db-wal-0000000000000002"),
                                 (16, "db-wal-0000000000000010"))
    assert listing.segments == ((3, "db-wal-seg-0000000000000003"),)
    assert listing.temporary == ("db-wal-0000000000000011.tmp",)
    assert not list_log_files("db", ["db-wal-0000000000000001"]).empty
    assert databases_with_logs(["a.db-wal-0000000000000001", "b"]) == ["a.db"]


# ----------------------------------------------------------------------------- hostile bytes


@given(data=st.binary(min_size=128, max_size=128))
def test_any_128_bytes_decode_as_a_file_header_or_raise_corrupt_segment_error(
    data: bytes,
) -> None:
    try:
        header = decode_file_header(data, PATH)
    except CorruptSegmentError as error:
        assert error.reason and 0 <= error.offset <= 128
    else:
        assert header.encode() == data


@given(edits=st.lists(st.tuples(st.integers(0, 4096 + 8191), st.integers(0, 255)),
                      min_size=1, max_size=6),
       fix_crc=st.booleans())
def test_a_damaged_segment_raises_only_corrupt_segment_error(
    edits: list[tuple[int, int]], fix_crc: bool
) -> None:
    fh, data, _ = one_segment()
    for position, value in edits:
        data[position] = value
    if fix_crc:  # damage the checksum cannot see: the fields' own checks must catch it
        struct.pack_into("<I", data, 4096 + 124, crc32c.crc32c(bytes(data[4096 : 4096 + 124])))
    try:
        file_header_now = decode_file_header(data, PATH)
    except CorruptSegmentError:
        file_header_now = fh
    try:
        decoded = decode_segment_v2(data, PATH, 4096, file_header_now)
    except CorruptSegmentError as error:
        assert error.reason and 0 <= error.offset <= len(data)
    else:
        assert isinstance(decoded, DecodedSegment | ShutdownMarker)
