"""Records, the version 1 segment and the chain position (DESIGN §4): bytes in, values out.
No I/O. File names, the checkpoint file and the version 2 log file and segment headers are the
layout's (:mod:`pagewal._layout`), which decodes version 2 bodies with :func:`decode_records`.

One encoder, :func:`encode_commit_into`, writes every record pagewal ever produces: the
parallel path calls it on a lane buffer, the serialized path and shadow compare on a fresh
buffer. One validation routine, :func:`decode_segment`, is used by recovery, by shadow compare
and by every tool that reads a segment.

The decoder trusts nothing it has not checked: lengths are bounded by the bytes actually
present before anything is allocated, and every rejection raises :class:`CorruptSegmentError`
with the file, the byte offset and the reason.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, TypeAlias

import attrs
import crc32c
import numpy as np
import numpy.typing as npt

from ._errors import CorruptSegmentError, ImageTooLargeError, InvalidCommitError

MAGIC: Final = 0x5057414C
FORMAT_VERSION: Final = 1
HEADER_SIZE: Final = 64
MAX_IMAGE_SIZE: Final = 65_536
MAX_PAGE_NO: Final = 2**32 - 1
MAX_U64: Final = 2**64 - 1
MAX_POSITION: Final = 2**63 - 1
"""The largest epoch and commit_seq a log uses. Half the u64 range: a log that has really
run never gets near it (2**63 commits at a million a second take 292,000 years), so a reader
rejects larger numbers as crafted or corrupt, and the writer stops there rather than wrap."""

SEGMENT_FLAG_SERIALIZED: Final = 0x1
RECORD_FLAG_LAST: Final = 0x1

_HEADER = struct.Struct("<IHHQIHHQQQQI")  # bytes 0..60; the CRC32C follows at 60
_HEADER_CRC = struct.Struct("<I")
# record_length, commit_seq, txn_id, page_no, db_size_pages, lane_id, flags, reserved,
# image_length; the image and a CRC32C follow.
_RECORD_PREFIX = struct.Struct("<IQQIIHBBI")
_RECORD_PREFIX_SIZE: Final = _RECORD_PREFIX.size  # 36
_CRC_SIZE: Final = 4
RECORD_OVERHEAD: Final = _RECORD_PREFIX_SIZE + _CRC_SIZE  # 40 bytes around each image
_MIN_RECORD_SIZE: Final = RECORD_OVERHEAD + 1
_RECORD_LENGTH_MIN: Final = _MIN_RECORD_SIZE - 4  # record_length counts what follows it
_RECORD_LENGTH_MAX: Final = RECORD_OVERHEAD - 4 + MAX_IMAGE_SIZE

assert _HEADER.size + _HEADER_CRC.size == HEADER_SIZE

PageImage: TypeAlias = "bytes | bytearray | memoryview"
PagesInput: TypeAlias = "Mapping[int, PageImage] | Iterable[tuple[int, PageImage]]"

RECORD_DTYPE: Final = np.dtype(
    [
        ("commit_seq", "<u8"),
        ("txn_id", "<u8"),
        ("page_no", "<u4"),
        ("db_size_pages", "<u4"),
        ("lane_id", "<u2"),
        ("flags", "u1"),
        ("image_offset", "<i8"),
        ("image_length", "<u4"),
    ]
)
"""One row per record: what :func:`decode_segment` returns, images left in the file bytes."""

RecordArray: TypeAlias = npt.NDArray[np.void]
_ROW = struct.Struct("<QQIIHBqI")  # RECORD_DTYPE's packed layout, written in place by the decoder
assert _ROW.size == RECORD_DTYPE.itemsize


# --------------------------------------------------------------------------- commits


@attrs.frozen
class Commit:
    """A validated commit: page images as byte views, ready to encode.

    Build it with :func:`make_commit`; a ``Commit`` that exists is encodable.
    """

    pages: tuple[tuple[int, memoryview], ...]
    txn_id: int
    db_size_pages: int  # 0 = not set
    encoded_size: int


def make_commit(
    pages: PagesInput, *, txn_id: int = 0, db_size_pages: int | None = None
) -> Commit:
    """Validate a commit before anything is staged (no sequence number is used by a failure).

    ``pages`` is a mapping ``{page_no: image}`` or an ordered iterable of ``(page_no, image)``;
    images are bytes-like, 1..65,536 bytes. ``db_size_pages`` is the database size after the
    commit (``None`` = unchanged). Raises :class:`InvalidCommitError` or
    :class:`ImageTooLargeError`.
    """
    items: Iterable[Any] = (pages if isinstance(pages, (list, tuple))  # skips the ABC check
                            else pages.items() if isinstance(pages, Mapping) else pages)
    views: list[tuple[int, memoryview]] = []
    size = 0
    try:
        iterator = iter(items)
    except TypeError:
        raise InvalidCommitError(
            f"pages must be a mapping or an iterable of (page_no, image), not "
            f"{type(pages).__name__}"
        ) from None
    for item in iterator:
        try:
            page_no, image = item
        except (TypeError, ValueError):
            raise InvalidCommitError(
                f"expected a (page_no, image) pair, got {item!r:.80}") from None
        if not isinstance(page_no, int) or isinstance(page_no, bool):
            raise InvalidCommitError(f"page_no must be an int, got {type(page_no).__name__}")
        if not 0 <= page_no <= MAX_PAGE_NO:
            raise InvalidCommitError(f"page_no {page_no} is outside 0..{MAX_PAGE_NO}")
        try:
            view = memoryview(image).cast("B")
        except (TypeError, ValueError):  # not bytes-like, not contiguous, or released
            raise InvalidCommitError(
                f"image of page {page_no} must be bytes-like (contiguous), "
                f"not {type(image).__name__}"
            ) from None
        length = view.nbytes
        if not 1 <= length <= MAX_IMAGE_SIZE:
            raise ImageTooLargeError(
                f"image of page {page_no} is {length} bytes; images must be 1..{MAX_IMAGE_SIZE} "
                "bytes"
            )
        views.append((page_no, view))
        size += RECORD_OVERHEAD + length
    if not views:
        raise InvalidCommitError("a commit needs at least one page")
    if not isinstance(txn_id, int) or isinstance(txn_id, bool) or not 0 <= txn_id <= MAX_U64:
        raise InvalidCommitError(f"txn_id must be an int in 0..2**64-1, got {txn_id!r}")
    if db_size_pages is None:
        db_size = 0
    elif (
        isinstance(db_size_pages, int)
        and not isinstance(db_size_pages, bool)
        and 1 <= db_size_pages <= MAX_PAGE_NO
    ):
        db_size = db_size_pages
    else:
        raise InvalidCommitError(
            f"db_size_pages must be None or an int in 1..{MAX_PAGE_NO}, got {db_size_pages!r}"
        )
    return Commit(pages=tuple(views), txn_id=txn_id, db_size_pages=db_size, encoded_size=size)


def encode_commit_into(
    buffer: memoryview, offset: int, commit: Commit, *, commit_seq: int, lane_id: int
) -> int:
    """Encode ``commit``'s records into ``buffer`` at ``offset``; return the end offset.

    The only record encoder: the records of a commit are contiguous and in commit order, the
    last one flagged. ``buffer`` must have ``commit.encoded_size`` bytes free at ``offset``.
    """
    position = offset
    last = len(commit.pages) - 1
    pack_prefix = _RECORD_PREFIX.pack_into
    pack_crc = _HEADER_CRC.pack_into
    checksum = crc32c.crc32c
    for index, (page_no, image) in enumerate(commit.pages):
        length = image.nbytes
        image_start = position + _RECORD_PREFIX_SIZE
        image_end = image_start + length
        pack_prefix(
            buffer, position, _RECORD_PREFIX_SIZE - 4 + length + _CRC_SIZE, commit_seq,
            commit.txn_id, page_no, commit.db_size_pages, lane_id,
            RECORD_FLAG_LAST if index == last else 0, 0, length,
        )
        buffer[image_start:image_end] = image
        pack_crc(buffer, image_end, checksum(buffer[position + 4 : image_end]))
        position = image_end + _CRC_SIZE
    return position


def encode_commits(commits: Sequence[tuple[int, int, Commit]]) -> bytearray:
    """Serialized encoder: ``(commit_seq, lane_id, commit)`` triples, in the order given."""
    body = bytearray(sum(commit.encoded_size for _, _, commit in commits))
    view = memoryview(body)
    position = 0
    for commit_seq, lane_id, commit in commits:
        position = encode_commit_into(view, position, commit, commit_seq=commit_seq,
                                      lane_id=lane_id)
    return body


# --------------------------------------------------------------------------- header


def _u64(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not 0 <= value <= MAX_U64:
        raise ValueError(f"{attribute.name}={value} does not fit in 64 bits")


@attrs.frozen(kw_only=True)
class SegmentHeader:
    """A segment header (DESIGN §4). Construction enforces the format's bounds.

    ``version`` 1 is the 64-byte header of a segment file of its own (read only now; its
    :meth:`encode` is byte for byte what pagewal 0.1 wrote). ``version`` 2 is the 128-byte
    header of a segment inside a log file; it adds the log's identity (``log_id``,
    ``file_no``, ``salt``, equal to the log file header's) and ``acked_epoch``, and is
    encoded with its body by :func:`pagewal._layout.encode_segment_v2` (its CRC covers the
    body). A version 1 header keeps the version 2 fields at their defaults.
    """

    epoch: int = attrs.field(validator=_u64)
    record_count: int
    lane_count: int
    commit_seq_lo: int = attrs.field(validator=_u64)
    commit_seq_hi: int = attrs.field(validator=_u64)
    prev_epoch: int = attrs.field(validator=_u64)
    body_length: int = attrs.field(validator=_u64)
    flags: int = 0
    version: int = FORMAT_VERSION
    log_id: bytes = bytes(16)
    file_no: int = attrs.field(default=0, validator=_u64)
    salt: int = attrs.field(default=0, validator=_u64)
    acked_epoch: int = attrs.field(default=0, validator=_u64)

    def __attrs_post_init__(self) -> None:
        if not 1 <= self.record_count <= 2**32 - 1:
            raise ValueError(f"record_count={self.record_count} must be in 1..2**32-1")
        if not 1 <= self.lane_count <= 2**16 - 1:
            raise ValueError(f"lane_count={self.lane_count} must be in 1..65535")
        if self.flags & ~SEGMENT_FLAG_SERIALIZED:
            raise ValueError(f"flags={self.flags:#x} has unknown bits")
        if self.version == FORMAT_VERSION:
            if (self.log_id, self.file_no, self.salt, self.acked_epoch) != (bytes(16), 0, 0, 0):
                raise ValueError("a version 1 header has no log_id, file_no, salt or acked_epoch")
        elif self.version == 2:
            if len(self.log_id) != 16 or not any(self.log_id):
                raise ValueError("log_id must be 16 bytes, not all zero")
            if self.file_no < 1 or self.salt == 0:
                raise ValueError(f"file_no={self.file_no} and salt={self.salt} must not be 0")
            if self.acked_epoch >= self.epoch:
                raise ValueError(f"acked_epoch={self.acked_epoch} must be before the segment's "
                                 f"epoch {self.epoch} (it is not acknowledged when sealed)")
        else:
            raise ValueError(f"version={self.version} must be 1 or 2")

    @property
    def serialized(self) -> bool:
        """Whether the segment holds commits staged on the serialized (fallback) path."""
        return bool(self.flags & SEGMENT_FLAG_SERIALIZED)

    @property
    def encoded_size(self) -> int:
        """Bytes of the header itself: 64 (version 1) or 128 (version 2)."""
        return HEADER_SIZE if self.version == FORMAT_VERSION else 2 * HEADER_SIZE

    def encode(self) -> bytes:
        """The 64-byte version 1 header, CRC32C included (DESIGN §4).

        A version 2 header's checksum covers its body: encode it with
        :func:`pagewal._layout.encode_segment_v2`.
        """
        if self.version != FORMAT_VERSION:
            raise ValueError("a version 2 header is encoded with its body "
                             "(pagewal._layout.encode_segment_v2)")
        head = _HEADER.pack(
            MAGIC, FORMAT_VERSION, self.flags, self.epoch, self.record_count, self.lane_count, 0,
            self.commit_seq_lo, self.commit_seq_hi, self.prev_epoch, self.body_length, 0,
        )
        return head + _HEADER_CRC.pack(crc32c.crc32c(head))


def check_room(path: str, offset: int, name: str, value: int) -> None:
    """Reject an epoch or commit_seq read from ``path`` beyond :data:`MAX_POSITION`: the log
    could not continue after it (the next number would not fit), and no real log gets there."""
    if value > MAX_POSITION:
        raise CorruptSegmentError(
            path, offset, f"{name} {value} leaves no room to continue the log (a log never "
            f"goes past {MAX_POSITION}, 2**63-1): the file is crafted or corrupt")


def decode_header(data: bytes | memoryview, path: str) -> SegmentHeader:
    """Decode and check a segment header. ``data`` is the whole file."""
    header = _decode_header_fields(data, path)
    size = len(data)
    actual_body = size - HEADER_SIZE
    if header.body_length != actual_body:
        what = "truncated" if header.body_length > actual_body else "trailing bytes"
        raise CorruptSegmentError(
            path, min(size, HEADER_SIZE + header.body_length),
            f"{what}: header says {header.body_length} body bytes, file has {actual_body}")
    if header.record_count * _MIN_RECORD_SIZE > header.body_length:
        raise CorruptSegmentError(
            path, 16, f"record_count {header.record_count} cannot fit in {header.body_length} "
            "body bytes")
    return header


def identify_segment(data: bytes | memoryview, path: str, epoch: int) -> SegmentHeader:
    """Check that ``data`` (a file's first bytes, or all of it) starts with the header of
    segment ``epoch``: magic, header checksum, version, field bounds, and the epoch the file's
    name gives. Enough to know a file is a pagewal segment of that epoch before deleting it;
    the body is not read. Raises :class:`CorruptSegmentError` otherwise."""
    header = _decode_header_fields(data, path)
    if header.epoch != epoch:
        raise CorruptSegmentError(
            path, 8, f"header epoch {header.epoch} does not match the file name's {epoch}")
    return header


def _decode_header_fields(data: bytes | memoryview, path: str) -> SegmentHeader:
    """The header's own checks: everything but how it fits the file's length."""
    if len(data) < HEADER_SIZE:
        raise CorruptSegmentError(path, len(data),
                                  f"file is {len(data)} bytes, shorter than the 64-byte header")
    (magic, version, flags, epoch, record_count, lane_count, reserved_a, seq_lo, seq_hi,
     prev_epoch, body_length, reserved_b) = _HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        raise CorruptSegmentError(path, 0, f"bad magic {magic:#010x}, not a pagewal segment")
    (stored_crc,) = _HEADER_CRC.unpack_from(data, _HEADER.size)
    if crc32c.crc32c(data[: _HEADER.size]) != stored_crc:
        raise CorruptSegmentError(path, _HEADER.size, "header checksum mismatch")
    if version != FORMAT_VERSION:
        raise CorruptSegmentError(path, 4, f"unsupported format version {version}")
    if flags & ~SEGMENT_FLAG_SERIALIZED:
        raise CorruptSegmentError(path, 6, f"unknown header flags {flags:#06x}")
    if reserved_a or reserved_b:
        raise CorruptSegmentError(path, 22 if reserved_a else 56, "reserved header field not 0")
    if epoch < 1:
        raise CorruptSegmentError(path, 8, "epoch 0 is not valid")
    if record_count < 1:
        raise CorruptSegmentError(path, 16, "record_count is 0")
    if lane_count < 1:
        raise CorruptSegmentError(path, 20, "lane_count is 0")
    if not 1 <= seq_lo <= seq_hi:
        raise CorruptSegmentError(path, 24, f"commit_seq range [{seq_lo}, {seq_hi}] is not valid")
    if seq_hi - seq_lo >= record_count:
        raise CorruptSegmentError(
            path, 16, f"{record_count} records cannot hold commits {seq_lo}..{seq_hi}")
    if prev_epoch >= epoch:
        raise CorruptSegmentError(path, 40, f"prev_epoch {prev_epoch} is not before {epoch}")
    check_room(path, 8, "epoch", epoch)
    check_room(path, 32, "commit_seq", seq_hi)
    return SegmentHeader(epoch=epoch, record_count=record_count, lane_count=lane_count,
                         commit_seq_lo=seq_lo, commit_seq_hi=seq_hi, prev_epoch=prev_epoch,
                         body_length=body_length, flags=flags)


# --------------------------------------------------------------------------- chain position


@attrs.frozen
class ChainPosition:
    """Where the segment chain stands: the last epoch and commit_seq before the next segment.

    ``ChainPosition(0, 0)`` is an empty log. A checkpoint file records one.
    """

    epoch: int = attrs.field(default=0, validator=_u64)
    commit_seq: int = attrs.field(default=0, validator=_u64)


# --------------------------------------------------------------------------- segment


@attrs.frozen(eq=False)
class DecodedSegment:
    """A validated segment: its header, its records in file order, and the bytes they index.

    ``records`` is a :data:`RECORD_DTYPE` array; ``image(i)`` is record ``i``'s after-image.
    """

    path: str
    header: SegmentHeader
    records: RecordArray
    data: memoryview

    def image(self, index: int) -> memoryview:
        """Record ``index``'s after-image, a view of the segment's bytes."""
        row = self.records[index]
        start = int(row["image_offset"])
        return self.data[start : start + int(row["image_length"])]

    def record_offset(self, index: int) -> int:
        """Byte offset of record ``index`` in the file (where its record_length starts)."""
        return int(self.records[index]["image_offset"]) - _RECORD_PREFIX_SIZE

    def record_crc(self, index: int) -> int:
        """The CRC32C stored after record ``index``'s image (already checked by the decoder)."""
        row = self.records[index]
        end = int(row["image_offset"]) + int(row["image_length"])
        (stored,) = _HEADER_CRC.unpack_from(self.data, end)
        return int(stored)

    def canonical_order(self) -> npt.NDArray[np.intp]:
        """Record indexes in canonical order: (commit_seq, position within the commit)."""
        return np.argsort(self.records["commit_seq"], kind="stable")


def decode_segment(
    data: bytes | bytearray | memoryview, path: str, *, expected_epoch: int | None = None
) -> DecodedSegment:
    """Validate a whole segment file and index its records (no image is copied).

    Rejects, before allocating, counts and lengths the bytes cannot hold; and after reading,
    any checksum mismatch, trailing bytes, an epoch other than ``expected_epoch`` (the one in
    the file name), seqs outside ``[lo, hi]``, a commit split, interleaved or missing its
    last-record flag, and a seq range that is not dense.
    """
    view = memoryview(data).cast("B")
    header = decode_header(view, path)
    if expected_epoch is not None and header.epoch != expected_epoch:
        raise CorruptSegmentError(
            path, 8, f"header epoch {header.epoch} does not match the file name's {expected_epoch}")
    return decode_records(view, header, path, HEADER_SIZE)


def decode_records(
    view: memoryview, header: SegmentHeader, path: str, start: int
) -> DecodedSegment:
    """Validate and index the records of a segment whose body starts at ``start`` in ``view``
    (the body's bytes must be present: the caller checked the header's lengths against them).

    Offsets (in errors and in the returned index) are positions in ``view``: pass a whole
    file to get file offsets. Version 1 and version 2 bodies are the same records.
    """
    records = _decode_uniform(view, header, start)
    if records is not None:
        return DecodedSegment(path=path, header=header, records=records, data=view)
    return _decode_records(view, header, path, start)


_UNIFORM_MIN_RECORD_SIZE: Final = 512


def _uniform_dtype(record_size: int) -> np.dtype[np.void]:
    """A whole record of ``record_size`` bytes as one packed numpy row (DESIGN §4 layout)."""
    return np.dtype([
        ("record_length", "<u4"), ("commit_seq", "<u8"), ("txn_id", "<u8"), ("page_no", "<u4"),
        ("db_size_pages", "<u4"), ("lane_id", "<u2"), ("flags", "u1"), ("reserved", "u1"),
        ("image_length", "<u4"), ("image", "V" + str(record_size - RECORD_OVERHEAD)),
        ("crc", "<u4"),
    ])


def _decode_uniform(
    view: memoryview, header: SegmentHeader, start: int = HEADER_SIZE
) -> RecordArray | None:
    """The fast path for a body of records that are all the same size (a page store's): every
    check of :func:`_decode_records` done on numpy columns, one CRC call per record.

    Returns None whenever any check fails, or the records differ in size: the record-by-record
    path then decides, so every error (and its offset and wording) comes from one place.
    """
    count = header.record_count
    if header.body_length % count:
        return None
    record_size = header.body_length // count
    # Small records go record by record: the columns below would cost more memory than the
    # file (decoding never allocates more than the bytes it was given).
    if not _UNIFORM_MIN_RECORD_SIZE <= record_size <= RECORD_OVERHEAD + MAX_IMAGE_SIZE:
        return None
    body = np.frombuffer(view, dtype=_uniform_dtype(record_size), count=count, offset=start)
    seqs = body["commit_seq"]
    last = (body["flags"] & RECORD_FLAG_LAST).astype(bool)
    lo, hi = header.commit_seq_lo, header.commit_seq_hi
    if not (np.all(body["record_length"] == record_size - 4)
            and np.all(body["image_length"] == record_size - RECORD_OVERHEAD)
            and not np.any(body["flags"] & (0xFF ^ RECORD_FLAG_LAST))
            and not np.any(body["reserved"])
            and int(body["lane_id"].max()) < header.lane_count and bool(last[-1])):
        return None
    # A record continuing a commit carries its seq; a record after a last one starts a new
    # commit, and the commits started are exactly lo..hi, each once (so every seq is in range).
    continuing = ~last[:-1]
    if np.any(seqs[1:][continuing] != seqs[:-1][continuing]):
        return None
    starts = seqs[np.concatenate(([True], last[:-1]))]
    if starts.size != hi - lo + 1 or np.any(np.sort(starts) != np.arange(lo, hi + 1)):
        return None
    checksum = crc32c.crc32c
    offsets = range(start + 4, start + 4 + count * record_size, record_size)
    covered = record_size - 4 - _CRC_SIZE
    crcs = np.fromiter((checksum(view[o : o + covered]) for o in offsets), dtype=np.uint32,
                       count=count)
    if not np.array_equal(crcs, body["crc"]):
        return None
    records = np.empty(count, dtype=RECORD_DTYPE)
    for name in ("commit_seq", "txn_id", "page_no", "db_size_pages", "lane_id", "flags",
                 "image_length"):
        records[name] = body[name]
    records["image_offset"] = np.arange(count, dtype=np.int64) * record_size + (
        start + _RECORD_PREFIX_SIZE)
    return records


def _decode_records(
    view: memoryview, header: SegmentHeader, path: str, start: int = HEADER_SIZE
) -> DecodedSegment:
    """The record-by-record path: any layout, and the precise error for any corruption."""
    count = header.record_count
    end = start + header.body_length
    lo, hi = header.commit_seq_lo, header.commit_seq_hi
    # Bounded by the bytes present (decode_header checked count * 41 <= body): 39 bytes per
    # row plus one byte per commit, so nothing here allocates more than the file's size.
    records = np.empty(count, dtype=RECORD_DTYPE)
    rows = memoryview(records.view(np.uint8).data)
    pack_row = _ROW.pack_into
    row_size = _ROW.size
    seen = bytearray(hi - lo + 1)
    open_seq = 0  # commit_seq of the commit whose last record is still to come; 0 = none
    unpack_prefix = _RECORD_PREFIX.unpack_from
    unpack_crc = _HEADER_CRC.unpack_from
    checksum = crc32c.crc32c
    position = start
    for index in range(count):
        if end - position < _MIN_RECORD_SIZE:
            raise CorruptSegmentError(
                path, position, f"record {index} of {count} is cut off by the end of the body")
        (record_length, seq, txn, page_no, db_size, lane_id, record_flags, reserved,
         image_length) = unpack_prefix(view, position)
        if not _RECORD_LENGTH_MIN <= record_length <= _RECORD_LENGTH_MAX:
            raise CorruptSegmentError(path, position, f"record_length {record_length} is invalid")
        record_end = position + 4 + record_length
        if record_end > end:
            raise CorruptSegmentError(
                path, position, f"record_length {record_length} runs past the end of the body")
        (stored_crc,) = unpack_crc(view, record_end - _CRC_SIZE)
        if checksum(view[position + 4 : record_end - _CRC_SIZE]) != stored_crc:
            raise CorruptSegmentError(path, position, f"record {index} checksum mismatch")
        if image_length != record_length - (RECORD_OVERHEAD - 4):
            raise CorruptSegmentError(
                path, position, f"image_length {image_length} disagrees with record_length")
        if record_flags & ~RECORD_FLAG_LAST or reserved:
            raise CorruptSegmentError(path, position, "unknown record flags or reserved bits")
        if not lo <= seq <= hi:
            raise CorruptSegmentError(
                path, position, f"commit_seq {seq} is outside the header's [{lo}, {hi}]")
        if lane_id >= header.lane_count:
            raise CorruptSegmentError(
                path, position, f"lane_id {lane_id} >= lane_count {header.lane_count}")
        # Each commit is one contiguous run of records ending in its last-record flag.
        if open_seq:
            if seq != open_seq:
                raise CorruptSegmentError(
                    path, position, f"commit {open_seq} ends without its last-record flag "
                    f"(record {index} belongs to commit {seq})")
        elif seen[seq - lo]:
            raise CorruptSegmentError(
                path, position, f"commit {seq} appears in two places (record {index})")
        else:
            seen[seq - lo] = 1
        open_seq = 0 if record_flags & RECORD_FLAG_LAST else seq
        pack_row(rows, index * row_size, seq, txn, page_no, db_size, lane_id, record_flags,
                 position + _RECORD_PREFIX_SIZE, image_length)
        position = record_end
    if position != end:
        raise CorruptSegmentError(
            path, position, f"{end - position} trailing bytes after record {count}")
    if open_seq:
        raise CorruptSegmentError(
            path, end, f"commit {open_seq} ends without its last-record flag")
    if seen.count(0):
        raise CorruptSegmentError(
            path, start - header.encoded_size + 24,
            f"commit seqs are not dense: {seen.count(0)} of [{lo}, {hi}] are missing")
    return DecodedSegment(path=path, header=header, records=records, data=view)
