"""Segment format v1 (DESIGN §4): encoder, decoder, names and checkpoint files.

Expected bytes are built independently of ``pagewal._codec``: :func:`hand_header` and
:func:`hand_record` pack every field at the offset the DESIGN §4 table gives, with the
``crc32c`` package computing the Castagnoli checksums.
"""

from __future__ import annotations

import struct
import tracemalloc
from collections.abc import Sequence
from typing import Any

import crc32c
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pagewal import CorruptSegmentError, ImageTooLargeError, InvalidCommitError
from pagewal._codec import (
    MAX_POSITION,
    ChainPosition,
    Commit,
    SegmentHeader,
    decode_segment,
    encode_commits,
    make_commit,
)
from pagewal._layout import (
    CheckpointRecord,
    decode_checkpoint,
    encode_checkpoint_v1,
    is_quarantined_segment_name,
    is_temp_segment_name,
    parse_segment_name,
    segment_name,
)

PATH = "/db/dir/db-wal-seg-0000000000000001"

# ----------------------------------------------------------------------------- hand packing
# DESIGN §4, header: name -> (offset, struct format). Little-endian throughout.
HEADER_LAYOUT: dict[str, tuple[int, str]] = {
    "magic": (0, "<I"),
    "version": (4, "<H"),
    "flags": (6, "<H"),
    "epoch": (8, "<Q"),
    "record_count": (16, "<I"),
    "lane_count": (20, "<H"),
    "reserved_a": (22, "<H"),
    "commit_seq_lo": (24, "<Q"),
    "commit_seq_hi": (32, "<Q"),
    "prev_epoch": (40, "<Q"),
    "body_length": (48, "<Q"),
    "reserved_b": (56, "<I"),
}
HEADER_CRC_OFFSET = 60
HEADER_BYTES = 64
SEGMENT_MAGIC = 0x5057414C
# DESIGN §4, record: offsets from the start of the record (record_length is at 0).
RECORD_IMAGE_OFFSET = 4 + 8 + 8 + 4 + 4 + 2 + 1 + 1 + 4  # 36
MAX_IMAGE = 65_536


def hand_header(crc: int | None = None, **fields: int) -> bytes:
    """A 64-byte header packed field by field at the §4 offsets; CRC32C of bytes 0..60."""
    values = {"magic": SEGMENT_MAGIC, "version": 1, "flags": 0, "reserved_a": 0,
              "reserved_b": 0, "prev_epoch": 0, "lane_count": 1} | fields
    buffer = bytearray(HEADER_BYTES)
    for name, (offset, fmt) in HEADER_LAYOUT.items():
        struct.pack_into(fmt, buffer, offset, values[name])
    checksum = crc32c.crc32c(bytes(buffer[:HEADER_CRC_OFFSET])) if crc is None else crc
    struct.pack_into("<I", buffer, HEADER_CRC_OFFSET, checksum)
    return bytes(buffer)


def hand_record(
    *,
    seq: int,
    page_no: int,
    image: bytes,
    txn_id: int = 0,
    db_size: int = 0,
    lane: int = 0,
    last: bool = True,
    flags: int | None = None,
    reserved: int = 0,
    record_length: int | None = None,
    image_length: int | None = None,
) -> bytes:
    """One record packed field by field at the §4 offsets, its CRC32C over seq..image."""
    size = len(image)
    buffer = bytearray(RECORD_IMAGE_OFFSET + size + 4)
    # record_length counts the bytes after itself, the trailing CRC included.
    struct.pack_into("<I", buffer, 0, len(buffer) - 4 if record_length is None else record_length)
    struct.pack_into("<Q", buffer, 4, seq)
    struct.pack_into("<Q", buffer, 12, txn_id)
    struct.pack_into("<I", buffer, 20, page_no)
    struct.pack_into("<I", buffer, 24, db_size)
    struct.pack_into("<H", buffer, 28, lane)
    buffer[30] = int(last) if flags is None else flags
    buffer[31] = reserved
    struct.pack_into("<I", buffer, 32, size if image_length is None else image_length)
    buffer[RECORD_IMAGE_OFFSET : RECORD_IMAGE_OFFSET + size] = image
    end = RECORD_IMAGE_OFFSET + size
    struct.pack_into("<I", buffer, end, crc32c.crc32c(bytes(buffer[4:end])))
    return bytes(buffer)


def hand_segment(
    records: Sequence[bytes], *, lo: int, hi: int, epoch: int = 1, body_extra: bytes = b"",
    **header_fields: int,
) -> bytes:
    """Header + records; record_count and body_length describe the body unless overridden."""
    body = b"".join(records) + body_extra
    fields = {"epoch": epoch, "commit_seq_lo": lo, "commit_seq_hi": hi,
              "record_count": len(records), "body_length": len(body)} | header_fields
    return hand_header(**fields) + body


def build_segment(
    commits: Sequence[Commit],
    *,
    epoch: int = 1,
    prev_epoch: int = 0,
    first_seq: int = 1,
    lanes: Sequence[int] | None = None,
    layout: Sequence[int] | None = None,
    lane_count: int | None = None,
    flags: int = 0,
) -> bytes:
    """A whole segment (pagewal's encoder) holding ``commits`` with dense seqs from first_seq.

    Commit ``i`` gets seq ``first_seq + i`` and lane ``lanes[i]``; ``layout`` is the order of
    commit indexes in the body (default: seq order).
    """
    lanes = list(lanes) if lanes is not None else [0] * len(commits)
    order = list(layout) if layout is not None else list(range(len(commits)))
    body = encode_commits([(first_seq + i, lanes[i], commits[i]) for i in order])
    header = SegmentHeader(
        epoch=epoch, record_count=sum(len(c.pages) for c in commits),
        lane_count=lane_count if lane_count is not None else max(lanes) + 1,
        commit_seq_lo=first_seq, commit_seq_hi=first_seq + len(commits) - 1,
        prev_epoch=prev_epoch, body_length=len(body), flags=flags,
    )
    return header.encode() + bytes(body)


def decode_rejects(data: bytes, path: str = PATH, **kwargs: Any) -> CorruptSegmentError:
    """Decode must fail with CorruptSegmentError naming ``path`` and an offset inside data."""
    with pytest.raises(CorruptSegmentError) as info:
        decode_segment(data, path, **kwargs)
    error = info.value
    assert error.path == path
    assert 0 <= error.offset <= len(data)
    assert error.reason
    assert path in str(error)
    return error


# ----------------------------------------------------------------------------- strategies

images = st.binary(min_size=1, max_size=300)
page_numbers = st.integers(0, 2**32 - 1)


@st.composite
def commit_specs(draw: st.DrawFn, max_pages: int = 5, image_strategy: Any = images) -> Any:
    pages = draw(st.lists(st.tuples(page_numbers, image_strategy), min_size=1,
                          max_size=max_pages))
    txn_id = draw(st.none() | st.integers(0, 2**64 - 1))
    db_size = draw(st.none() | st.integers(1, 2**32 - 1))
    return pages, txn_id, db_size


def commit_from_spec(spec: Any) -> Commit:
    pages, txn_id, db_size = spec
    if txn_id is None:
        return make_commit(pages, db_size_pages=db_size)
    return make_commit(pages, txn_id=txn_id, db_size_pages=db_size)


@st.composite
def small_segments(draw: st.DrawFn, max_commits: int = 3, max_image: int = 24) -> bytes:
    specs = draw(st.lists(commit_specs(max_pages=3,
                                       image_strategy=st.binary(min_size=1, max_size=max_image)),
                          min_size=1, max_size=max_commits))
    lanes = draw(st.lists(st.integers(0, 3), min_size=len(specs), max_size=len(specs)))
    layout = draw(st.permutations(range(len(specs))))
    first_seq = draw(st.integers(1, 2**40))
    epoch = draw(st.integers(2, MAX_POSITION))
    prev_epoch = draw(st.integers(0, epoch - 1))
    return build_segment([commit_from_spec(s) for s in specs], epoch=epoch,
                         prev_epoch=prev_epoch, first_seq=first_seq, lanes=lanes, layout=layout,
                         flags=draw(st.sampled_from([0, 1])))


# ----------------------------------------------------------------------------- round trip


@settings(max_examples=150, deadline=None)
@given(
    specs=st.lists(commit_specs(), min_size=1, max_size=8),
    data=st.data(),
)
def test_encode_then_decode_returns_every_record_in_canonical_order(
    specs: list[Any], data: st.DataObject
) -> None:
    commits = [commit_from_spec(s) for s in specs]
    lanes = data.draw(st.lists(st.integers(0, 7), min_size=len(specs), max_size=len(specs)))
    layout = data.draw(st.permutations(range(len(specs))))
    first_seq = data.draw(st.integers(1, MAX_POSITION + 1 - len(specs)))
    epoch = data.draw(st.integers(1, MAX_POSITION))
    prev_epoch = data.draw(st.integers(0, epoch - 1))
    flags = data.draw(st.sampled_from([0, 1]))
    segment = build_segment(commits, epoch=epoch, prev_epoch=prev_epoch, first_seq=first_seq,
                            lanes=lanes, layout=layout, flags=flags)

    decoded = decode_segment(segment, PATH, expected_epoch=epoch)

    header = decoded.header
    assert (header.epoch, header.prev_epoch) == (epoch, prev_epoch)
    assert (header.commit_seq_lo, header.commit_seq_hi) == (first_seq, first_seq + len(specs) - 1)
    assert header.record_count == sum(len(s[0]) for s in specs)
    assert header.body_length == len(segment) - HEADER_BYTES
    assert header.serialized == bool(flags)
    # Oracle built from the inputs, not from the encoder.
    expected = []
    for index, (pages, txn_id, db_size) in enumerate(specs):
        for position, (page_no, image) in enumerate(pages):
            expected.append((first_seq + index, txn_id or 0, page_no, db_size or 0, lanes[index],
                             int(position == len(pages) - 1), len(image), bytes(image)))
    records = decoded.records
    actual = [
        (int(records[i]["commit_seq"]), int(records[i]["txn_id"]), int(records[i]["page_no"]),
         int(records[i]["db_size_pages"]), int(records[i]["lane_id"]), int(records[i]["flags"]),
         int(records[i]["image_length"]), bytes(decoded.image(i)))
        for i in decoded.canonical_order()
    ]
    assert actual == expected
    # File order is the layout order (records are indexed where they lie, not reordered).
    file_seqs = [int(s) for s in records["commit_seq"]]
    assert file_seqs == [first_seq + i for i in layout for _ in specs[i][0]]


def test_encoder_output_is_byte_identical_to_hand_packed_format() -> None:
    # The Castagnoli check value pins the checksum the hand packer uses.
    assert crc32c.crc32c(b"123456789") == 0xE3069283
    # Every field gets a distinct, multi-byte value so a swapped or shifted field shows.
    epoch, prev_epoch = 0x0102030405060708, 0x0000_0A0B_0C0D_0E0F
    first = make_commit([(0xDEADBEEF, b"abc"), (0, memoryview(b"\x00\xff"))],
                        txn_id=0x1122334455667788, db_size_pages=0x01020304)
    second = make_commit({0x00C0FFEE: bytearray(b"page-seven")})
    records = [
        hand_record(seq=0x7000000000000009, page_no=0x00C0FFEE, image=b"page-seven", lane=2),
        hand_record(seq=0x7000000000000008, page_no=0xDEADBEEF, image=b"abc",
                    txn_id=0x1122334455667788, db_size=0x01020304, lane=0x0102, last=False),
        hand_record(seq=0x7000000000000008, page_no=0, image=b"\x00\xff",
                    txn_id=0x1122334455667788, db_size=0x01020304, lane=0x0102),
    ]
    hand_body = b"".join(records)
    hand = hand_header(flags=1, epoch=epoch, record_count=3, lane_count=0x0203,
                       commit_seq_lo=0x7000000000000008, commit_seq_hi=0x7000000000000009,
                       prev_epoch=prev_epoch, body_length=len(hand_body)) + hand_body

    body = encode_commits([(0x7000000000000009, 2, second), (0x7000000000000008, 0x0102, first)])
    header = SegmentHeader(epoch=epoch, record_count=3, lane_count=0x0203,
                           commit_seq_lo=0x7000000000000008, commit_seq_hi=0x7000000000000009,
                           prev_epoch=prev_epoch, body_length=len(body), flags=1)
    assert bytes(body) == hand_body
    assert header.encode() == hand[:HEADER_BYTES]
    assert first.encoded_size + second.encoded_size == len(hand_body)

    decoded = decode_segment(hand, PATH, expected_epoch=epoch)
    assert decoded.header == header
    assert decoded.header.serialized
    rows = decoded.records
    assert [int(v) for v in rows["commit_seq"]] == [0x7000000000000009, 0x7000000000000008,
                                                     0x7000000000000008]
    assert [int(v) for v in rows["txn_id"]] == [0, 0x1122334455667788, 0x1122334455667788]
    assert [int(v) for v in rows["page_no"]] == [0x00C0FFEE, 0xDEADBEEF, 0]
    assert [int(v) for v in rows["db_size_pages"]] == [0, 0x01020304, 0x01020304]
    assert [int(v) for v in rows["lane_id"]] == [2, 0x0102, 0x0102]
    assert [int(v) for v in rows["flags"]] == [1, 0, 1]
    assert [int(v) for v in rows["image_length"]] == [10, 3, 2]
    # Images are indexed in place: offset = header + preceding records + 36-byte prefix.
    first_record_end = HEADER_BYTES + len(records[0])
    assert [int(v) for v in rows["image_offset"]] == [
        HEADER_BYTES + RECORD_IMAGE_OFFSET,
        first_record_end + RECORD_IMAGE_OFFSET,
        first_record_end + len(records[1]) + RECORD_IMAGE_OFFSET,
    ]
    assert [bytes(decoded.image(i)) for i in range(3)] == [b"page-seven", b"abc", b"\x00\xff"]
    assert [int(i) for i in decoded.canonical_order()] == [1, 2, 0]


def test_decoder_accepts_hand_packed_maximum_size_image() -> None:
    image = bytes(range(256)) * (MAX_IMAGE // 256)
    segment = hand_segment([hand_record(seq=1, page_no=2**32 - 1, image=image)], lo=1, hi=1)
    decoded = decode_segment(segment, PATH)
    assert bytes(decoded.image(0)) == image
    assert int(decoded.records[0]["page_no"]) == 2**32 - 1


# ----------------------------------------------------------------------------- corruption


def _fixed_small_segment() -> bytes:
    commits = [make_commit([(3, b"abc"), (9, b"\x01")], txn_id=77, db_size_pages=10),
               make_commit([(4, b"hello world")])]
    return build_segment(commits, lanes=[1, 0], layout=[1, 0], epoch=5, prev_epoch=2)


def test_every_single_bit_flip_of_a_small_segment_is_rejected() -> None:
    segment = _fixed_small_segment()
    decode_segment(segment, PATH)  # the pristine segment is valid
    for bit in range(len(segment) * 8):
        corrupted = bytearray(segment)
        corrupted[bit // 8] ^= 1 << (bit % 8)
        decode_rejects(bytes(corrupted))


@settings(max_examples=200, deadline=None)
@given(segment=small_segments(), data=st.data())
def test_any_single_bit_flip_is_rejected(segment: bytes, data: st.DataObject) -> None:
    decode_segment(segment, PATH)
    bit = data.draw(st.integers(0, len(segment) * 8 - 1), label="bit")
    corrupted = bytearray(segment)
    corrupted[bit // 8] ^= 1 << (bit % 8)
    decode_rejects(bytes(corrupted))


@settings(max_examples=60, deadline=None)
@given(segment=small_segments(max_commits=4, max_image=200), data=st.data())
def test_any_truncation_is_rejected(segment: bytes, data: st.DataObject) -> None:
    if len(segment) <= 600:
        lengths: Sequence[int] = range(len(segment))
    else:
        sampled = data.draw(st.lists(st.integers(0, len(segment) - 1), min_size=1, max_size=64))
        lengths = [0, 1, HEADER_BYTES - 1, HEADER_BYTES, len(segment) - 1, *sampled]
    for length in lengths:
        decode_rejects(segment[:length])


@settings(max_examples=100, deadline=None)
@given(segment=small_segments(), extra=st.binary(min_size=1, max_size=80))
def test_any_appended_bytes_are_rejected(segment: bytes, extra: bytes) -> None:
    decode_rejects(segment + extra)


def test_appending_a_complete_valid_record_is_rejected() -> None:
    segment = hand_segment([hand_record(seq=1, page_no=1, image=b"x")], lo=1, hi=1)
    decode_segment(segment, PATH)
    decode_rejects(segment + hand_record(seq=1, page_no=2, image=b"y"))


def test_bytes_bytearray_and_memoryview_inputs_decode_alike() -> None:
    segment = _fixed_small_segment()
    results = [decode_segment(data, PATH) for data in
               (segment, bytearray(segment), memoryview(segment))]
    for result in results:
        assert result.records.tobytes() == results[0].records.tobytes()
        assert bytes(result.image(0)) == b"hello world"


# ----------------------------------------------------------------------------- allocation

ALLOCATION_SLACK = 64 * 1024


def peak_decode_allocation(data: bytes) -> tuple[int, CorruptSegmentError | None]:
    """Peak bytes traced while decoding ``data`` (already allocated before tracing)."""
    error: CorruptSegmentError | None = None
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        baseline = tracemalloc.get_traced_memory()[0]
        try:
            decode_segment(data, PATH)
        except CorruptSegmentError as caught:
            error = caught
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak - baseline, error


def _adversarial_inputs() -> dict[str, bytes]:
    one = hand_record(seq=1, page_no=1, image=b"x" * 100)
    big_not_last = hand_record(seq=1, page_no=1, image=b"y" * MAX_IMAGE, last=False)
    huge_length = bytearray(one)
    struct.pack_into("<I", huge_length, 0, 0xFFFFFFFF)
    max_length = bytearray(one)
    struct.pack_into("<I", max_length, 0, RECORD_IMAGE_OFFSET + MAX_IMAGE)
    filler = b"\x00" * (1 << 20)
    return {
        "record_count_2**32-1": hand_segment([one], lo=1, hi=1, record_count=2**32 - 1),
        "record_count_2**32-1_seq_range_huge": hand_segment(
            [one], lo=1, hi=2**32 - 1, record_count=2**32 - 1),
        "record_count_just_fits_minimum_records": hand_segment(
            [big_not_last], lo=1, hi=1, record_count=len(big_not_last) // 41),
        "every_minimum_record_a_commit_but_zero_filled": hand_segment(
            [], lo=1, hi=len(filler) // 41, record_count=len(filler) // 41, body_extra=filler),
        "body_length_2**63": hand_segment([one], lo=1, hi=1, body_length=2**63),
        "body_length_2**64-1": hand_segment([one], lo=1, hi=1, body_length=2**64 - 1),
        "record_length_0xffffffff": hand_segment([bytes(huge_length)], lo=1, hi=1),
        "record_length_max_but_body_short": hand_segment([bytes(max_length)], lo=1, hi=1),
        "header_only_huge_counts": hand_header(epoch=1, record_count=2**32 - 1, lane_count=9,
                                               commit_seq_lo=1, commit_seq_hi=2**64 - 1,
                                               body_length=2**64 - 1),
    }


@pytest.mark.parametrize("name", sorted(_adversarial_inputs()))
def test_adversarial_lengths_are_rejected_without_allocating_beyond_the_input(name: str) -> None:
    data = _adversarial_inputs()[name]
    peak, error = peak_decode_allocation(data)
    assert isinstance(error, CorruptSegmentError)
    assert error.path == PATH
    assert 0 <= error.offset <= len(data)
    assert peak <= len(data) + ALLOCATION_SLACK, f"{name}: peak {peak} for {len(data)} bytes"


@pytest.mark.parametrize("pages_per_commit", [1, 7])
def test_decoding_tiny_images_allocates_at_most_the_input_size(pages_per_commit: int) -> None:
    commits = [make_commit([(i + j, b"\x5a") for j in range(pages_per_commit)])
               for i in range(20_000 // pages_per_commit)]
    data = build_segment(commits)
    peak, error = peak_decode_allocation(data)
    assert error is None
    assert peak <= len(data) + ALLOCATION_SLACK, f"peak {peak} for {len(data)} bytes"


# ----------------------------------------------------------------------------- §4 rejections


def _two_commit_records(**second: Any) -> list[bytes]:
    fields = {"seq": 2, "page_no": 8, "image": b"second"} | second
    return [hand_record(seq=1, page_no=7, image=b"first", last=False),
            hand_record(seq=1, page_no=9, image=b"!"),
            hand_record(**fields)]


def test_hand_packed_baseline_segment_is_accepted() -> None:
    # Each rejection test below changes exactly one thing in a segment like this one.
    segment = hand_segment(_two_commit_records(), lo=1, hi=2, lane_count=2)
    decoded = decode_segment(segment, PATH, expected_epoch=1)
    assert [int(v) for v in decoded.records["page_no"]] == [7, 9, 8]


def _field_range(name: str) -> tuple[int, int]:
    offset, fmt = HEADER_LAYOUT[name]
    return offset, offset + struct.calcsize(fmt)


def test_bad_magic_is_rejected_even_with_a_valid_header_checksum() -> None:
    segment = hand_segment(_two_commit_records(), lo=1, hi=2, magic=0x4C415750)
    error = decode_rejects(segment)
    assert error.offset < HEADER_BYTES


def test_bad_header_checksum_is_rejected() -> None:
    good = hand_segment(_two_commit_records(), lo=1, hi=2)
    (crc,) = struct.unpack_from("<I", good, HEADER_CRC_OFFSET)
    body = good[HEADER_BYTES:]
    bad_crc = hand_header(crc=crc ^ 0x80000000, epoch=1, record_count=3, commit_seq_lo=1,
                          commit_seq_hi=2, body_length=len(body)) + body
    assert decode_rejects(bad_crc).offset <= HEADER_BYTES
    # A header field changed without updating the CRC: same rejection.
    changed = bytearray(good)
    struct.pack_into("<H", changed, 20, 3)  # lane_count 1 -> 3, CRC left as it was
    assert decode_rejects(bytes(changed)).offset <= HEADER_BYTES


@pytest.mark.parametrize("version", [0, 2, 0x0100, 0xFFFF])
def test_format_version_other_than_1_is_rejected(version: int) -> None:
    segment = hand_segment(_two_commit_records(), lo=1, hi=2, version=version)
    assert decode_rejects(segment).offset < HEADER_BYTES


@pytest.mark.parametrize("flags", [0x2, 0x3, 0x80, 0x8000, 0xFFFE])
def test_unknown_header_flag_bits_are_rejected(flags: int) -> None:
    segment = hand_segment(_two_commit_records(), lo=1, hi=2, flags=flags)
    assert decode_rejects(segment).offset < HEADER_BYTES


def test_serialized_header_flag_is_accepted_and_reported() -> None:
    segment = hand_segment(_two_commit_records(), lo=1, hi=2, flags=1)
    assert decode_segment(segment, PATH).header.serialized
    plain = hand_segment(_two_commit_records(), lo=1, hi=2, flags=0)
    assert not decode_segment(plain, PATH).header.serialized


@pytest.mark.parametrize(("field", "value"), [("reserved_a", 1), ("reserved_a", 0x8000),
                                              ("reserved_b", 1), ("reserved_b", 0x80000000)])
def test_nonzero_reserved_header_field_is_rejected(field: str, value: int) -> None:
    segment = hand_segment(_two_commit_records(), lo=1, hi=2, **{field: value})
    assert decode_rejects(segment).offset < HEADER_BYTES


@pytest.mark.parametrize("record_count", [4, 5, 100, 2**32 - 1])
def test_record_count_the_body_cannot_hold_is_rejected(record_count: int) -> None:
    # The body holds 3 records (123 bytes max for 3 minimum records: 4 * 41 = 164 > body).
    records = _two_commit_records()
    assert sum(map(len, records)) < 4 * 41
    segment = hand_segment(records, lo=1, hi=2, record_count=record_count)
    decode_rejects(segment)


def test_record_count_larger_than_the_records_present_is_rejected() -> None:
    # 4 minimum-size records would fit the body's byte count, but only 3 records exist.
    records = _two_commit_records(image=b"s" * 200)
    assert sum(map(len, records)) >= 4 * 41
    segment = hand_segment(records, lo=1, hi=2, record_count=4)
    error = decode_rejects(segment)
    assert error.offset >= HEADER_BYTES


def test_record_count_smaller_than_the_records_present_is_rejected() -> None:
    segment = hand_segment(_two_commit_records(), lo=1, hi=1, record_count=2)
    decode_rejects(segment)


def test_record_length_above_the_maximum_is_rejected_even_when_well_formed() -> None:
    # A record with a 65,537-byte image, otherwise perfectly encoded and checksummed.
    record = hand_record(seq=1, page_no=1, image=b"z" * (MAX_IMAGE + 1))
    segment = hand_segment([record], lo=1, hi=1)
    error = decode_rejects(segment)
    assert error.offset == HEADER_BYTES


@pytest.mark.parametrize("record_length", [0xFFFFFFFF, 2**31, 2**16 + RECORD_IMAGE_OFFSET + 1])
def test_record_length_that_cannot_fit_is_rejected(record_length: int) -> None:
    records = _two_commit_records()
    records[1] = hand_record(seq=1, page_no=9, image=b"!", record_length=record_length)
    segment = hand_segment(records, lo=1, hi=2)
    error = decode_rejects(segment)
    assert error.offset == HEADER_BYTES + len(records[0])


def test_record_length_running_past_the_body_is_rejected() -> None:
    records = _two_commit_records()
    # Legal size (<= maximum) but longer than what is left of the body.
    records[2] = hand_record(seq=2, page_no=8, image=b"second",
                             record_length=RECORD_IMAGE_OFFSET + 100)
    segment = hand_segment(records, lo=1, hi=2)
    error = decode_rejects(segment)
    assert error.offset == HEADER_BYTES + len(records[0]) + len(records[1])


@pytest.mark.parametrize("record_length", [0, 4, RECORD_IMAGE_OFFSET - 1, RECORD_IMAGE_OFFSET])
def test_record_length_too_small_is_rejected(record_length: int) -> None:
    # A record with an empty image (record_length 36, all fields consistent and checksummed)
    # or an even shorter claimed length, followed by enough bytes that the body count passes.
    records = [hand_record(seq=1, page_no=7, image=b"", last=False, record_length=record_length),
               hand_record(seq=1, page_no=8, image=b"z" * 40)]
    segment = hand_segment(records, lo=1, hi=1)
    error = decode_rejects(segment)
    assert error.offset == HEADER_BYTES


def test_image_length_disagreeing_with_record_length_is_rejected() -> None:
    records = _two_commit_records()
    records[0] = hand_record(seq=1, page_no=7, image=b"first", last=False, image_length=4)
    segment = hand_segment(records, lo=1, hi=2)
    assert decode_rejects(segment).offset == HEADER_BYTES


def test_bad_record_checksum_is_rejected() -> None:
    records = _two_commit_records()
    corrupted = bytearray(records[2])
    corrupted[-1] ^= 0x01
    records[2] = bytes(corrupted)
    segment = hand_segment(records, lo=1, hi=2)
    error = decode_rejects(segment)
    start = HEADER_BYTES + len(records[0]) + len(records[1])
    assert start <= error.offset <= start + len(records[2])


@pytest.mark.parametrize(("flags", "reserved"), [(0x2, 0), (0x81, 0), (1, 1), (1, 0x80)])
def test_unknown_record_flags_or_reserved_byte_are_rejected(flags: int, reserved: int) -> None:
    records = _two_commit_records()
    records[2] = hand_record(seq=2, page_no=8, image=b"second", flags=flags, reserved=reserved)
    segment = hand_segment(records, lo=1, hi=2)
    decode_rejects(segment)


def test_trailing_bytes_inside_body_length_are_rejected() -> None:
    # Header body_length covers the extra bytes, so only the record walk can see them.
    segment = hand_segment(_two_commit_records(), lo=1, hi=2, body_extra=b"\x00" * 41)
    error = decode_rejects(segment)
    assert error.offset >= HEADER_BYTES


def test_file_longer_than_body_length_is_rejected() -> None:
    segment = hand_segment(_two_commit_records(), lo=1, hi=2) + b"\x00"
    decode_rejects(segment)


def test_header_epoch_different_from_file_name_epoch_is_rejected() -> None:
    segment = hand_segment(_two_commit_records(), lo=1, hi=2, epoch=0x10)
    assert decode_segment(segment, PATH, expected_epoch=0x10).header.epoch == 0x10
    assert decode_segment(segment, PATH).header.epoch == 0x10
    for expected in (0x0F, 0x11, 0x1000):
        decode_rejects(segment, expected_epoch=expected)


@pytest.mark.parametrize("seq", [4, 7, 0, 2**64 - 1])
def test_commit_seq_outside_header_range_is_rejected(seq: int) -> None:
    records = [hand_record(seq=5, page_no=1, image=b"a"), hand_record(seq=6, page_no=2, image=b"b"),
               hand_record(seq=seq, page_no=3, image=b"c")]
    segment = hand_segment(records, lo=5, hi=6)
    error = decode_rejects(segment)
    assert error.offset == HEADER_BYTES + len(records[0]) + len(records[1])


def test_commit_without_last_record_flag_at_end_of_body_is_rejected() -> None:
    records = [hand_record(seq=1, page_no=1, image=b"a"),
               hand_record(seq=2, page_no=2, image=b"b", last=False)]
    decode_rejects(hand_segment(records, lo=1, hi=2))


def test_single_record_commit_without_last_record_flag_is_rejected() -> None:
    decode_rejects(hand_segment([hand_record(seq=1, page_no=1, image=b"a", last=False)],
                                lo=1, hi=1))


def test_commit_followed_by_another_before_its_last_record_is_rejected() -> None:
    # Commit 1 is "interleaved": its second record comes after commit 2.
    records = [hand_record(seq=1, page_no=1, image=b"a", last=False),
               hand_record(seq=2, page_no=2, image=b"b"),
               hand_record(seq=1, page_no=3, image=b"c")]
    error = decode_rejects(hand_segment(records, lo=1, hi=2))
    assert error.offset >= HEADER_BYTES


def test_commit_split_into_two_flagged_runs_is_rejected() -> None:
    # Each run ends in a last-record flag, but commit 1 appears in two places.
    records = [hand_record(seq=1, page_no=1, image=b"a"),
               hand_record(seq=2, page_no=2, image=b"b"),
               hand_record(seq=1, page_no=3, image=b"c")]
    error = decode_rejects(hand_segment(records, lo=1, hi=2))
    assert error.offset == HEADER_BYTES + len(records[0]) + len(records[1])


def test_commit_with_two_last_record_flags_in_a_row_is_rejected() -> None:
    records = [hand_record(seq=1, page_no=1, image=b"a"),
               hand_record(seq=1, page_no=3, image=b"c")]
    decode_rejects(hand_segment(records, lo=1, hi=1))


def test_seq_range_that_is_not_dense_is_rejected() -> None:
    # Header claims commits 1..3 (and 3 records), the body has commits 1 and 3 only.
    records = [hand_record(seq=1, page_no=1, image=b"a", last=False),
               hand_record(seq=1, page_no=2, image=b"b"),
               hand_record(seq=3, page_no=3, image=b"c")]
    decode_rejects(hand_segment(records, lo=1, hi=3))
    # The same records renumbered densely (commits 1 and 2, header 1..2) are fine.
    dense = [*records[:2], hand_record(seq=2, page_no=3, image=b"c")]
    assert len(decode_segment(hand_segment(dense, lo=1, hi=2), PATH).records) == 3


def test_header_seq_range_wider_than_record_count_is_rejected() -> None:
    records = [hand_record(seq=1, page_no=1, image=b"a")]
    decode_rejects(hand_segment(records, lo=1, hi=2))


@pytest.mark.parametrize(("lane_count", "lane"), [(1, 1), (2, 2), (4, 0xFFFF)])
def test_lane_id_not_below_lane_count_is_rejected(lane_count: int, lane: int) -> None:
    records = [hand_record(seq=1, page_no=1, image=b"a", lane=lane_count - 1),
               hand_record(seq=2, page_no=2, image=b"b", lane=lane)]
    ok = [records[0], hand_record(seq=2, page_no=2, image=b"b", lane=lane_count - 1)]
    decode_segment(hand_segment(ok, lo=1, hi=2, lane_count=lane_count), PATH)
    error = decode_rejects(hand_segment(records, lo=1, hi=2, lane_count=lane_count))
    assert error.offset == HEADER_BYTES + len(records[0])


@pytest.mark.parametrize(
    "fields",
    [
        {"epoch": 0},
        {"epoch": 3, "prev_epoch": 3},
        {"epoch": 3, "prev_epoch": 4},
        {"lane_count": 0},
        {"lo": 0, "hi": 0},
        {"lo": 2, "hi": 1},
    ],
    ids=["epoch0", "prev_eq_epoch", "prev_after_epoch", "lane_count0", "lo0", "lo_gt_hi"],
)
def test_impossible_header_values_are_rejected(fields: dict[str, int]) -> None:
    values = {"lo": 1, "hi": 1} | fields
    lo, hi = values.pop("lo"), values.pop("hi")
    # The one record is otherwise consistent with the header (its seq is the header's lo).
    records = [hand_record(seq=lo, page_no=1, image=b"a")]
    decode_rejects(hand_segment(records, lo=lo, hi=hi, **values))


def test_file_shorter_than_a_header_is_rejected() -> None:
    for length in (0, 1, 63):
        decode_rejects(b"\x00" * length)


# ----------------------------------------------------------------------------- make_commit


def test_make_commit_rejects_an_empty_commit() -> None:
    for empty in ({}, [], iter(())):
        with pytest.raises(InvalidCommitError):
            make_commit(empty)


@pytest.mark.parametrize("page_no", [-1, 2**32, 2**64, True, 1.0, "1", None])
def test_make_commit_rejects_page_numbers_outside_u32(page_no: Any) -> None:
    with pytest.raises(InvalidCommitError):
        make_commit([(page_no, b"x")])


def test_make_commit_accepts_page_number_bounds() -> None:
    commit = make_commit([(0, b"a"), (2**32 - 1, b"b")])
    assert [page_no for page_no, _ in commit.pages] == [0, 2**32 - 1]


@pytest.mark.parametrize("size", [0, MAX_IMAGE + 1, 2 * MAX_IMAGE])
def test_make_commit_rejects_empty_and_oversized_images(size: int) -> None:
    with pytest.raises(ImageTooLargeError) as info:
        make_commit([(1, b"\x00" * size)])
    assert isinstance(info.value, InvalidCommitError)
    assert isinstance(info.value, ValueError)


def test_image_too_large_error_is_an_invalid_commit_and_value_error() -> None:
    assert issubclass(ImageTooLargeError, InvalidCommitError)
    assert issubclass(ImageTooLargeError, ValueError)
    assert issubclass(InvalidCommitError, ValueError)


def test_make_commit_accepts_a_maximum_size_image_and_accounts_its_size() -> None:
    commit = make_commit([(1, b"\x01" * MAX_IMAGE), (2, b"\x02")])
    assert [view.nbytes for _, view in commit.pages] == [MAX_IMAGE, 1]
    assert commit.encoded_size == len(encode_commits([(1, 0, commit)]))
    assert commit.encoded_size == 2 * (RECORD_IMAGE_OFFSET + 4) + MAX_IMAGE + 1


@pytest.mark.parametrize("image", ["text", 5, None, [1, 2, 3], memoryview(b"abcdef")[::2]],
                         ids=["str", "int", "none", "list", "non_contiguous"])
def test_make_commit_rejects_images_that_are_not_contiguous_bytes(image: Any) -> None:
    with pytest.raises(InvalidCommitError):
        make_commit([(1, image)])


@pytest.mark.parametrize("txn_id", [-1, 2**64, True, 1.5, "7"])
def test_make_commit_rejects_bad_txn_id(txn_id: Any) -> None:
    with pytest.raises(InvalidCommitError):
        make_commit([(1, b"x")], txn_id=txn_id)


@pytest.mark.parametrize("db_size", [0, -1, 2**32, True, 2.0])
def test_make_commit_rejects_bad_db_size_pages(db_size: Any) -> None:
    with pytest.raises(InvalidCommitError):
        make_commit([(1, b"x")], db_size_pages=db_size)


def test_make_commit_txn_id_and_db_size_defaults_and_bounds() -> None:
    default = make_commit([(1, b"x")])
    assert (default.txn_id, default.db_size_pages) == (0, 0)
    bounded = make_commit([(1, b"x")], txn_id=2**64 - 1, db_size_pages=2**32 - 1)
    assert (bounded.txn_id, bounded.db_size_pages) == (2**64 - 1, 2**32 - 1)


@pytest.mark.parametrize("pages", ["ab", [(1,)], [(1, b"x", 2)], [1], 5],
                         ids=["str", "one_tuple", "triple", "int_item", "not_iterable"])
def test_make_commit_rejects_malformed_page_lists(pages: Any) -> None:
    with pytest.raises(InvalidCommitError):
        make_commit(pages)


def test_make_commit_accepts_mapping_list_and_generator_in_order() -> None:
    expected = [(5, b"five"), (1, b"one"), (5, b"again")]
    from_list = make_commit(expected)
    from_generator = make_commit(item for item in expected)
    from_mapping = make_commit({5: b"five", 1: b"one"})
    assert [(p, bytes(v)) for p, v in from_list.pages] == expected
    assert [(p, bytes(v)) for p, v in from_generator.pages] == expected
    assert [(p, bytes(v)) for p, v in from_mapping.pages] == [(5, b"five"), (1, b"one")]


def test_make_commit_accepts_bytearray_and_memoryview_images() -> None:
    import array

    words = array.array("H", [0x0102, 0x0304])
    commit = make_commit([(1, bytearray(b"ba")), (2, memoryview(b"mv")), (3, words)])
    decoded = decode_segment(build_segment([commit]), PATH)
    assert [bytes(decoded.image(i)) for i in range(3)] == [b"ba", b"mv", words.tobytes()]
    assert int(decoded.records[2]["image_length"]) == 4


# ----------------------------------------------------------------------------- names


@settings(max_examples=200, deadline=None)
@given(epoch=st.integers(1, 2**64 - 1))
def test_segment_name_round_trips_every_epoch(epoch: int) -> None:
    name = segment_name("db", epoch)
    assert name == "db-wal-seg-" + format(epoch, "x").rjust(16, "0")
    assert parse_segment_name("db", name) == epoch
    assert not is_temp_segment_name("db", name)
    assert is_temp_segment_name("db", name + ".tmp")
    assert parse_segment_name("db", name + ".tmp") is None


def test_segment_name_is_sixteen_lowercase_hex_digits() -> None:
    assert segment_name("main.db", 1) == "main.db-wal-seg-0000000000000001"
    assert segment_name("db", 0xABCDEF) == "db-wal-seg-0000000000abcdef"
    assert segment_name("db", 2**64 - 1) == "db-wal-seg-ffffffffffffffff"


@pytest.mark.parametrize(
    "file_name",
    [
        "db2-wal-seg-0000000000000001",
        "d-wal-seg-0000000000000001",
        "xdb-wal-seg-0000000000000001",
        "DB-wal-seg-0000000000000001",
        "db-wal-seg-000000000000000A",
        "db-wal-seg-ABCDEF0000000001",
        "db-wal-seg-000000000000001",
        "db-wal-seg-00000000000000001",
        "db-wal-seg-",
        "db-wal-seg-000000000000000g",
        "db-wal-seg-+000000000000001",
        "db-wal-seg- 000000000000001",
        "db-wal-seg-0000000000000001\n",
        "db-wal-seg-0000000000000001.tmp",
        "db-wal-seg-0000000000000001.corrupt",
        "db-wal-seg-0000000000000000",
        "db-wal-checkpoint",
        "db",
    ],
)
def test_parse_segment_name_rejects_anything_but_a_final_segment_of_this_db(
    file_name: str,
) -> None:
    assert parse_segment_name("db", file_name) is None


@pytest.mark.parametrize(
    ("file_name", "is_temp"),
    [
        ("db-wal-seg-0000000000000001.tmp", True),
        ("db-wal-seg-00000000000000ff.tmp", True),
        ("db-wal-seg-0000000000000001", False),
        ("db-wal-seg-0000000000000001.tmp.tmp", False),
        ("db-wal-seg-000000000000000F.tmp", False),
        ("db-wal-seg-001.tmp", False),
        ("db2-wal-seg-0000000000000001.tmp", False),
        ("db.tmp", False),
        ("db-wal-checkpoint.tmp", False),
    ],
)
def test_is_temp_segment_name_recognises_only_temp_segments_of_this_db(
    file_name: str, is_temp: bool
) -> None:
    assert is_temp_segment_name("db", file_name) is is_temp


@pytest.mark.parametrize(
    ("file_name", "quarantined"),
    [
        ("db-wal-seg-0000000000000001.corrupt", True),
        ("db-wal-seg-0000000000000001.corrupt-1", True),
        ("db-wal-seg-00000000000000ff.corrupt-12", True),
        ("db-wal-seg-0000000000000001", False),
        ("db-wal-seg-0000000000000001.corrupt-", False),
        ("db-wal-seg-0000000000000001.corrupt-0", False),
        ("db-wal-seg-0000000000000001.corrupt-x", False),
        ("db-wal-seg-0000000000000001.corrupt.tmp", False),
        ("db-wal-seg-0000000000000001.tmp.corrupt", False),
        ("db2-wal-seg-0000000000000001.corrupt", False),
        ("db-wal-checkpoint.corrupt", False),
        ("db.corrupt", False),
    ],
)
def test_is_quarantined_segment_name_recognises_only_set_aside_segments_of_this_db(
    file_name: str, quarantined: bool
) -> None:
    assert is_quarantined_segment_name("db", file_name) is quarantined


def test_record_offset_and_crc_are_those_written_at_the_section_4_positions() -> None:
    first = hand_record(seq=1, page_no=7, image=b"abc", last=False)
    second = hand_record(seq=1, page_no=8, image=b"defgh")
    data = hand_segment([first, second], lo=1, hi=1)
    segment = decode_segment(data, PATH)
    assert [segment.record_offset(i) for i in (0, 1)] == [HEADER_BYTES, HEADER_BYTES + len(first)]
    assert [segment.record_crc(i) for i in (0, 1)] == [
        struct.unpack_from("<I", record, len(record) - 4)[0] for record in (first, second)]
    assert segment.record_crc(1) == crc32c.crc32c(second[4:-4])


# ----------------------------------------------------------------------------- checkpoint
# DESIGN §4.5, version 2: two identical 48-byte copies, each
# magic u32 | version u16 (2) | reserved u16 | log_id 16 bytes | epoch u64 | commit_seq u64 |
# page_size u32 | CRC32C of bytes 0..44 u32.

CHECKPOINT_COPY = 48
LOG_ID = bytes(range(1, 17))

positions = st.builds(ChainPosition, st.integers(0, MAX_POSITION), st.integers(0, MAX_POSITION))
checkpoint_records = st.builds(
    CheckpointRecord, position=positions,
    page_size=st.sampled_from([0, 512, 1024, 4096, 8192, 65536]),
    log_id=st.sampled_from([bytes(16), LOG_ID]) | st.binary(min_size=16, max_size=16))


def hand_checkpoint(epoch: int, commit_seq: int, page_size: int, log_id: bytes = bytes(16),
                    version: int = 2, magic: int = 0x5057434B) -> bytes:
    body = struct.pack("<IHH16sQQI", magic, version, 0, log_id, epoch, commit_seq, page_size)
    return (body + struct.pack("<I", crc32c.crc32c(body))) * 2


@settings(max_examples=200, deadline=None)
@given(record=checkpoint_records)
def test_checkpoint_record_round_trips_any_position_page_size_and_log_id(
    record: CheckpointRecord,
) -> None:
    encoded = record.encode()
    assert len(encoded) == 96
    decoded = decode_checkpoint(encoded, "ckpt")
    assert (decoded.record, decoded.version, decoded.damage) == (record, 2, None)


def test_checkpoint_record_is_two_identical_copies_laid_out_as_documented() -> None:
    record = CheckpointRecord(position=ChainPosition(0x0102030405060708, 0x1112131415161718),
                              page_size=4096, log_id=LOG_ID)
    encoded = record.encode()
    assert encoded == hand_checkpoint(0x0102030405060708, 0x1112131415161718, 4096, LOG_ID)
    assert encoded[:CHECKPOINT_COPY] == encoded[CHECKPOINT_COPY:]


@settings(max_examples=30, deadline=None)
@given(record=checkpoint_records)
def test_every_single_bit_flip_of_a_checkpoint_file_is_corrected_by_the_other_copy(
    record: CheckpointRecord,
) -> None:
    encoded = record.encode()
    for bit in range(len(encoded) * 8):
        corrupted = bytearray(encoded)
        corrupted[bit // 8] ^= 1 << (bit % 8)
        decoded = decode_checkpoint(bytes(corrupted), "the-ckpt")
        assert decoded.record == record
        damaged_copy = 1 + bit // (CHECKPOINT_COPY * 8)
        assert decoded.damage is not None and f"copy {damaged_copy} " in decoded.damage


@settings(max_examples=300, deadline=None)
@given(record=checkpoint_records,
       flips=st.lists(st.tuples(st.integers(0, 95), st.integers(1, 255)), min_size=1,
                      max_size=6))
def test_damaged_checkpoint_copies_never_decode_to_a_wrong_record(
    record: CheckpointRecord, flips: list[tuple[int, int]]
) -> None:
    corrupted = bytearray(record.encode())
    for offset, mask in flips:
        corrupted[offset] ^= mask
    try:
        decoded = decode_checkpoint(bytes(corrupted), "the-ckpt")
    except CorruptSegmentError as error:
        assert error.path == "the-ckpt"
        return
    assert decoded.record == record


def test_checkpoint_with_both_copies_damaged_is_rejected_naming_both() -> None:
    corrupted = bytearray(CheckpointRecord(position=ChainPosition(3, 9)).encode())
    corrupted[10] ^= 1
    corrupted[CHECKPOINT_COPY + 30] ^= 1
    with pytest.raises(CorruptSegmentError) as info:
        decode_checkpoint(bytes(corrupted), "the-ckpt")
    assert "both copies" in info.value.reason
    assert "copy 1" in info.value.reason and "copy 2" in info.value.reason


def test_checkpoint_whose_intact_copies_differ_is_rejected() -> None:
    first = CheckpointRecord(position=ChainPosition(3, 9), page_size=4096).encode()
    second = CheckpointRecord(position=ChainPosition(4, 10), page_size=4096).encode()
    with pytest.raises(CorruptSegmentError) as info:
        decode_checkpoint(first[:CHECKPOINT_COPY] + second[CHECKPOINT_COPY:], "the-ckpt")
    assert "differ" in info.value.reason
    assert "commit_seq 9" in info.value.reason and "commit_seq 10" in info.value.reason


@pytest.mark.parametrize(
    ("fields", "reason"),
    [({"version": 1}, "version"), ({"version": 3}, "version"), ({"magic": 0x5057414C}, "magic"),
     ({"page_size": 3000}, "page_size"), ({"page_size": 1 << 17}, "page_size")],
    ids=["version1", "version3", "segment_magic", "page_size_not_power_of_two",
         "page_size_too_large"])
def test_checkpoint_copies_with_foreign_fields_are_rejected_when_checksummed(
    fields: dict[str, int], reason: str
) -> None:
    values: dict[str, Any] = {"epoch": 3, "commit_seq": 9, "page_size": 4096, **fields}
    with pytest.raises(CorruptSegmentError) as info:
        decode_checkpoint(hand_checkpoint(**values), "the-ckpt")
    assert reason in info.value.reason


@settings(max_examples=100, deadline=None)
@given(position=positions)
def test_version_1_checkpoint_files_stay_readable_without_a_page_size(
    position: ChainPosition,
) -> None:
    encoded = encode_checkpoint_v1(position)
    assert len(encoded) == 32
    decoded = decode_checkpoint(encoded, "ckpt")
    assert (decoded.record, decoded.version, decoded.damage) == (
        CheckpointRecord(position=position), 1, None)


def test_version_1_checkpoint_stores_fields_little_endian_with_trailing_crc32c() -> None:
    encoded = encode_checkpoint_v1(ChainPosition(0x0102030405060708, 0x1112131415161718))
    assert struct.unpack_from("<IH", encoded, 0) == (0x5057434B, 1)
    assert struct.unpack_from("<Q", encoded, 8)[0] == 0x0102030405060708
    assert struct.unpack_from("<Q", encoded, 16)[0] == 0x1112131415161718
    assert struct.unpack_from("<I", encoded, 28)[0] == crc32c.crc32c(encoded[:28])


def test_every_bit_flip_of_a_version_1_checkpoint_is_rejected() -> None:
    encoded = encode_checkpoint_v1(ChainPosition(0x1234, 0x56789A))
    for bit in range(len(encoded) * 8):
        corrupted = bytearray(encoded)
        corrupted[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(CorruptSegmentError) as info:
            decode_checkpoint(bytes(corrupted), "the-ckpt")
        assert info.value.path == "the-ckpt"
        assert 0 <= info.value.offset <= len(encoded)


@pytest.mark.parametrize(
    ("offset", "fmt", "value"),
    [(0, "<I", 0x5057414C), (4, "<H", 0), (4, "<H", 2), (6, "<H", 1), (24, "<I", 0x100)],
    ids=["segment_magic", "version0", "version2", "reserved_a", "reserved_b"],
)
def test_version_1_checkpoint_with_foreign_magic_version_or_reserved_bits_is_rejected(
    offset: int, fmt: str, value: int
) -> None:
    encoded = bytearray(encode_checkpoint_v1(ChainPosition(3, 9)))
    struct.pack_into(fmt, encoded, offset, value)
    struct.pack_into("<I", encoded, 28, crc32c.crc32c(bytes(encoded[:28])))
    with pytest.raises(CorruptSegmentError) as info:
        decode_checkpoint(bytes(encoded), "the-ckpt")
    assert info.value.path == "the-ckpt"


@pytest.mark.parametrize("length", [0, 1, 28, 31, 33, 48, 64, 95, 97, 192])
def test_checkpoint_of_wrong_length_is_rejected(length: int) -> None:
    encoded = CheckpointRecord(position=ChainPosition(3, 9)).encode()
    data = (encoded * 2)[:length]
    with pytest.raises(CorruptSegmentError) as info:
        decode_checkpoint(data, "the-ckpt")
    assert info.value.path == "the-ckpt"
    assert 0 <= info.value.offset <= len(data)


@pytest.mark.parametrize(("epoch", "commit_seq"), [(-1, 0), (0, -1), (2**64, 0), (0, 2**64)])
def test_chain_position_rejects_values_outside_u64(epoch: int, commit_seq: int) -> None:
    with pytest.raises(ValueError):
        ChainPosition(epoch, commit_seq)


# ----------------------------------------------------------------------------- header value


@pytest.mark.parametrize(
    "fields",
    [{"record_count": 0}, {"record_count": 2**32}, {"lane_count": 0}, {"lane_count": 2**16},
     {"flags": 2}, {"epoch": -1}, {"epoch": 2**64}, {"body_length": -1}],
)
def test_segment_header_construction_enforces_format_bounds(fields: dict[str, int]) -> None:
    values = {"epoch": 1, "record_count": 1, "lane_count": 1, "commit_seq_lo": 1,
              "commit_seq_hi": 1, "prev_epoch": 0, "body_length": 41} | fields
    with pytest.raises(ValueError):
        SegmentHeader(**values)


@settings(max_examples=50, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(segment=small_segments(max_commits=6, max_image=300))
def test_reencoding_a_decoded_segment_reproduces_its_bytes(segment: bytes) -> None:
    decoded = decode_segment(segment, PATH)
    rows = decoded.records
    triples = []
    index = 0
    while index < rows.size:
        seq, lane = int(rows[index]["commit_seq"]), int(rows[index]["lane_id"])
        pages = []
        while True:
            pages.append((int(rows[index]["page_no"]), bytes(decoded.image(index))))
            index += 1
            if int(rows[index - 1]["flags"]) & 1:
                break
        size = int(rows[index - 1]["db_size_pages"])
        commit = make_commit(pages, txn_id=int(rows[index - 1]["txn_id"]),
                             db_size_pages=size or None)
        triples.append((seq, lane, commit))
    assert bytes(encode_commits(triples)) == segment[HEADER_BYTES:]
    assert decoded.header.encode() == segment[:HEADER_BYTES]


def test_a_released_memoryview_image_is_an_invalid_commit() -> None:
    view = memoryview(b"x")
    view.release()
    with pytest.raises(InvalidCommitError, match="bytes-like"):
        make_commit([(1, view)])


# ----------------------------------------------------------------------------- uniform fast path
# Segments whose records all have one size (a page store's) are validated column-wise; any
# failed check hands the segment to the record-by-record decoder. The fast path must therefore
# never accept what the record-by-record decoder rejects, nor index records differently.

UNIFORM_IMAGE = 600  # records of 640 bytes: above the fast path's 512-byte minimum


def _both_decoders(data: bytes) -> tuple[object, object]:
    """(what decode_segment gives, what the record-by-record decoder alone gives)."""
    from pagewal._codec import _decode_records, decode_header

    def outcome(decode: Any) -> object:
        try:
            decoded = decode()
        except CorruptSegmentError as error:
            return ("rejected", error.offset, error.reason)
        return ("accepted", decoded.records.tobytes())

    return (outcome(lambda: decode_segment(data, PATH)),
            outcome(lambda: _decode_records(memoryview(data), decode_header(data, PATH), PATH)))


_MUTATIONS = ["none", "lane", "flags", "reserved", "seq_outside", "seq_other_commit",
              "drop_last_flag", "extra_last_flag", "size", "duplicate_commit", "swap_records"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sizes=st.lists(st.integers(1, 3), min_size=1, max_size=4), lo=st.integers(1, 3),
       mutation=st.sampled_from(_MUTATIONS), data=st.data())
def test_the_uniform_fast_path_decides_exactly_as_the_record_by_record_decoder(
    sizes: list[int], lo: int, mutation: str, data: st.DataObject
) -> None:
    # A valid uniform segment: commits lo.. with 1..3 records each, then one change to one
    # record (its CRC kept valid, so only the semantic checks can catch it).
    specs = [{"seq": lo + c, "page_no": r, "lane": c % 2, "last": r == n - 1, "flags": None,
              "reserved": 0, "size": UNIFORM_IMAGE}
             for c, n in enumerate(sizes) for r in range(n)]
    target = data.draw(st.integers(0, len(specs) - 1))
    spec = specs[target]
    if mutation == "lane":
        spec["lane"] = 2
    elif mutation == "flags":
        spec["flags"] = data.draw(st.sampled_from([0x2, 0x81, 0x80]))
    elif mutation == "reserved":
        spec["reserved"] = 1
    elif mutation == "seq_outside":
        spec["seq"] = data.draw(st.sampled_from([lo - 1, lo + len(sizes)]))
    elif mutation == "seq_other_commit":
        spec["seq"] = data.draw(st.integers(lo, lo + len(sizes) - 1))
    elif mutation == "drop_last_flag":
        spec["last"] = False
    elif mutation == "extra_last_flag":
        spec["last"] = True
    elif mutation == "size":
        spec["size"] = UNIFORM_IMAGE - 1
    elif mutation == "duplicate_commit":
        specs.append(dict(specs[-1]))
    elif mutation == "swap_records" and target + 1 < len(specs):
        specs[target], specs[target + 1] = specs[target + 1], specs[target]
    records = [hand_record(seq=s["seq"], page_no=s["page_no"], lane=s["lane"], last=s["last"],
                           flags=s["flags"], reserved=s["reserved"],
                           image=bytes([s["page_no"]]) * s["size"]) for s in specs]
    segment = hand_segment(records, lo=lo, hi=lo + len(sizes) - 1, lane_count=2)
    fast, reference = _both_decoders(segment)
    assert fast == reference
    if mutation == "none":
        assert fast[0] == "accepted"


def test_the_uniform_fast_path_rejects_every_bit_flip_the_record_decoder_rejects() -> None:
    commits = [make_commit([(i, bytes([i]) * UNIFORM_IMAGE), (i + 9, b"\x01" * UNIFORM_IMAGE)])
               for i in range(3)]
    data = build_segment(commits)
    assert _both_decoders(data)[0][0] == "accepted"
    for bit in range(HEADER_BYTES * 8, len(data) * 8, 7):
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        fast, reference = _both_decoders(bytes(flipped))
        assert fast == reference
        assert fast[0] == "rejected", bit
