"""The on-disk layout of a log (DESIGN §4), in one place: every file name and how it is
parsed, sorting a directory's names into a log's files, where those files live
(:class:`LogFiles`), the checkpoint file, the version 2 log file header and segment, and the
clean-shutdown marker. Pure: bytes and names in, values out. No I/O (the one look-up that
touches the file system, :meth:`LogFiles.for_db`, goes through the file system it is given).

Beside the database file ``<db>``: version 2 log files ``<db>-wal-<file_no as 16 hex>``
(``.tmp`` while being created); version 1 segment files ``<db>-wal-seg-<epoch as 16 hex>``
(read only; ``.tmp`` while being published, ``.corrupt[-N]`` once set aside by
``skip_corrupt``); the checkpoint file ``<db>-wal-checkpoint``; the lock file ``<db>-wal-lock``.

A version 2 log file starts with a 128-byte header (the rest of its first ``alignment`` bytes
are zero); segments follow it at offsets that are multiples of ``alignment``, each a 128-byte
header, the records (exactly as version 1, decoded by :func:`pagewal._codec.decode_records`)
and zero padding to the next multiple of ``alignment``.

Every decoder here trusts nothing it has not checked: the header CRC32C before any field is
believed, lengths against the bytes present before anything is allocated, and the segment's
identity (log id, file_no, salt) against its file header, so that bytes from another log, from
a recycled file's earlier life or from a discarded tail never validate (invariant 4). Every
rejection raises :class:`CorruptSegmentError` with the file, the FILE offset and the reason.
An all-zero block is *unwritten*, not corrupt: :func:`is_unwritten` tells the reader so before
it asks a decoder (which rejects it, saying so).
"""

from __future__ import annotations

import enum
import itertools
import os
import re
import struct
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeAlias

import attrs
import crc32c

from ._codec import (
    MAX_IMAGE_SIZE,
    MAX_POSITION,
    MAX_U64,
    SEGMENT_FLAG_SERIALIZED,
    ChainPosition,
    DecodedSegment,
    SegmentHeader,
    check_room,
    decode_records,
)
from ._errors import CorruptSegmentError

if TYPE_CHECKING:
    from ._fs import FileMode, FileSystem

Buffer: TypeAlias = "bytes | bytearray | memoryview"

LOG_FORMAT_VERSION: Final = 2

# --------------------------------------------------------------------------- names


_SEGMENT_INFIX: Final = "-wal-seg-"
_HEX16 = re.compile(r"[0-9a-f]{16}")
TEMP_SUFFIX: Final = ".tmp"
QUARANTINE_SUFFIX: Final = ".corrupt"
_QUARANTINE_NUMBER = re.compile(r"(-[1-9][0-9]*)?")


def segment_name(db_name: str, epoch: int) -> str:
    """File name of segment ``epoch`` for database file ``db_name``."""
    return f"{db_name}{_SEGMENT_INFIX}{epoch:016x}"


def parse_segment_name(db_name: str, file_name: str) -> int | None:
    """The epoch of a final segment name of ``db_name``, else ``None`` (temp files included)."""
    prefix = db_name + _SEGMENT_INFIX
    if not file_name.startswith(prefix):
        return None
    digits = file_name[len(prefix):]
    if _HEX16.fullmatch(digits) is None:
        return None
    epoch = int(digits, 16)
    return epoch if epoch >= 1 else None


def is_temp_segment_name(db_name: str, file_name: str) -> bool:
    return (file_name.endswith(TEMP_SUFFIX)
            and parse_segment_name(db_name, file_name[: -len(TEMP_SUFFIX)]) is not None)


def is_quarantined_segment_name(db_name: str, file_name: str) -> bool:
    """Whether ``file_name`` is a segment set aside as ``<segment>.corrupt`` or ``.corrupt-N``."""
    segment, suffix, number = file_name.partition(QUARANTINE_SUFFIX)
    return (suffix == QUARANTINE_SUFFIX and parse_segment_name(db_name, segment) is not None
            and _QUARANTINE_NUMBER.fullmatch(number) is not None)


def checkpoint_name(db_name: str) -> str:
    """File name of the checkpoint file of ``db_name``."""
    return f"{db_name}-wal-checkpoint"


def lock_name(db_name: str) -> str:
    """File name of the lock file of ``db_name`` (held with ``flock`` by the one open log)."""
    return f"{db_name}-wal-lock"


_LOG_INFIX: Final = "-wal-"


def log_file_name(db_name: str, file_no: int) -> str:
    """File name of log file ``file_no`` (1..2**64-1) of database file ``db_name``."""
    if not 1 <= file_no <= MAX_U64:
        raise ValueError(f"file_no={file_no} must be in 1..2**64-1")
    return f"{db_name}{_LOG_INFIX}{file_no:016x}"


def log_file_temp_name(db_name: str, file_no: int) -> str:
    """Name of log file ``file_no`` while it is being created (renamed once durable)."""
    return log_file_name(db_name, file_no) + TEMP_SUFFIX


def parse_log_file_name(db_name: str, file_name: str) -> int | None:
    """The file_no of a final log file name of ``db_name``, else ``None`` (temporaries,
    version 1 segments, the checkpoint and lock files included)."""
    prefix = db_name + _LOG_INFIX
    if not file_name.startswith(prefix):
        return None
    digits = file_name[len(prefix):]
    if _HEX16.fullmatch(digits) is None:
        return None
    file_no = int(digits, 16)
    return file_no if file_no >= 1 else None


def parse_log_file_temp_name(db_name: str, file_name: str) -> int | None:
    """The file_no of a log file being created (``<log file name>.tmp``), else ``None``."""
    if not file_name.endswith(TEMP_SUFFIX):
        return None
    return parse_log_file_name(db_name, file_name[: -len(TEMP_SUFFIX)])


# --------------------------------------------------------------------------- listing


@attrs.frozen
class LogListing:
    """The files of one database's log, by kind. Names only; unrelated files are left out.

    ``log_files`` are version 2 log files, ``segments`` version 1 segment files; ``temporary``
    holds both kinds' ``.tmp`` files and the checkpoint's.
    """

    segments: tuple[tuple[int, str], ...]  # (epoch, name) in epoch order
    checkpoint: str | None
    temporary: tuple[str, ...]
    quarantined: tuple[str, ...]
    lock: str | None
    log_files: tuple[tuple[int, str], ...] = ()  # (file_no, name) in file_no order

    @property
    def empty(self) -> bool:
        """No log file at all: no log was ever opened for this database here."""
        return not (self.segments or self.checkpoint or self.temporary or self.quarantined
                    or self.lock or self.log_files)


def list_log_files(db_name: str, names: Iterable[str]) -> LogListing:
    """Sort a directory's ``names`` into the log files of ``db_name``."""
    segments: list[tuple[int, str]] = []
    log_files: list[tuple[int, str]] = []
    temporary: list[str] = []
    quarantined: list[str] = []
    checkpoint = lock = None
    checkpoint_file = checkpoint_name(db_name)
    for name in sorted(names):
        if (epoch := parse_segment_name(db_name, name)) is not None:
            segments.append((epoch, name))
        elif (file_no := parse_log_file_name(db_name, name)) is not None:
            log_files.append((file_no, name))
        elif name == checkpoint_file:
            checkpoint = name
        elif name == lock_name(db_name):
            lock = name
        elif (is_temp_segment_name(db_name, name) or name == checkpoint_file + TEMP_SUFFIX
              or parse_log_file_temp_name(db_name, name) is not None):
            temporary.append(name)
        elif is_quarantined_segment_name(db_name, name):
            quarantined.append(name)
    return LogListing(segments=tuple(sorted(segments)), checkpoint=checkpoint,
                      temporary=tuple(temporary), quarantined=tuple(quarantined), lock=lock,
                      log_files=tuple(sorted(log_files)))


_LOG_FILE = re.compile(r"(.+)-wal-(?:seg-[0-9a-f]{16}|[0-9a-f]{16}|checkpoint|lock)")


def databases_with_logs(names: Iterable[str]) -> list[str]:
    """Names of the databases whose log files are among ``names`` (to suggest a path)."""
    return sorted({m.group(1) for name in names if (m := _LOG_FILE.fullmatch(name))})


def segment_epochs(db_name: str, names: Iterable[str]) -> list[int]:
    """The epochs of the published segments of ``db_name`` among directory entries ``names``,
    ascending."""
    return sorted(e for n in names if (e := parse_segment_name(db_name, n)) is not None)


def temporary_names(db_name: str, names: Iterable[str]) -> list[str]:
    """The temporary files of ``db_name`` among ``names`` (a log file being made ready, a
    format 1 segment's or the checkpoint's ``.tmp``): never data (invariant 4), so recovery
    removes them."""
    checkpoint_temp = checkpoint_name(db_name) + TEMP_SUFFIX
    return [n for n in names
            if is_temp_segment_name(db_name, n) or n == checkpoint_temp
            or parse_log_file_temp_name(db_name, n) is not None]


def quarantine_name(file_name: str, taken: set[str]) -> str:
    """The name a segment ``file_name`` is set aside under: ``<segment>.corrupt``, or
    ``<segment>.corrupt-N`` with the first N not in ``taken`` (the directory's names), so that
    nothing set aside before is ever replaced."""
    name = file_name + QUARANTINE_SUFFIX
    target = name
    for number in itertools.count(1):
        if target not in taken:
            break
        target = f"{name}-{number}"
    return target


# --------------------------------------------------------------------------- where files live


@attrs.frozen
class LogFiles:
    """Where a database's log files live: ``directory/db_name`` is the database file.

    ``file_mode`` is what new log files get: the database file's permissions (None when there
    is no database file: then :data:`DEFAULT_FILE_MODE` less the umask).
    """

    directory: str
    db_name: str
    file_mode: FileMode | None = None

    @classmethod
    def for_db(cls, db_path: str | os.PathLike[str], fs: FileSystem | None = None) -> LogFiles:
        """The log of the database file ``db_path``, found once, when a log is opened.

        Symbolic links in ``db_path`` are resolved (``fs.real_path``), as SQLite resolves a
        database's name: the log lies beside the database file itself, so every link to one
        store finds the same log and the same lock file, and each later file operation uses
        the real names (none of which is followed if it turns into a link).
        """
        if fs is None:
            from ._fs import OsFileSystem  # here, so the layout imports no I/O module

            fs = OsFileSystem()
        directory, db_name = os.path.split(fs.real_path(os.path.abspath(os.fspath(db_path))))
        if not db_name:
            raise ValueError(f"{db_path!r} names a directory, not a database file")
        return cls(directory, db_name, fs.file_mode(os.path.join(directory, db_name)))

    def path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def segment_path(self, epoch: int) -> str:
        return self.path(segment_name(self.db_name, epoch))

    def log_file_path(self, file_no: int) -> str:
        return self.path(log_file_name(self.db_name, file_no))

    def log_file_paths(self, names: Iterable[str]) -> list[tuple[str, int]]:
        """``(path, file_no)`` of this log's format 2 files among directory entries
        ``names``, by file number."""
        return sorted(((self.path(name), file_no) for name in names
                       if (file_no := parse_log_file_name(self.db_name, name)) is not None),
                      key=lambda item: item[1])

    @property
    def lock_path(self) -> str:
        return self.path(lock_name(self.db_name))

    @property
    def checkpoint_path(self) -> str:
        return self.path(checkpoint_name(self.db_name))

    @property
    def rebuild_command(self) -> str:
        """The operator command that rebuilds this log's checkpoint record."""
        return f"pagewal recover {self.path(self.db_name)} --rebuild-checkpoint"


# --------------------------------------------------------------------------- helpers

_CRC = struct.Struct("<I")
MIN_ALIGNMENT: Final = 512
MAX_ALIGNMENT: Final = 1 << 20
DEFAULT_ALIGNMENT: Final = 4096
MAX_INFLIGHT_LIMIT: Final = 64


def is_unwritten(data: Buffer) -> bool:
    """Whether ``data`` (a header's bytes) is all zeros: never written, as a new log file's
    blocks are. A reader treats such a block as the end of what was written, not as damage."""
    return not any(memoryview(data).cast("B"))


def padded(size: int, alignment: int) -> int:
    """``size`` rounded up to a multiple of ``alignment`` (a power of two)."""
    return (size + alignment - 1) & -alignment


def _alignment_problem(alignment: int) -> str | None:
    if not MIN_ALIGNMENT <= alignment <= MAX_ALIGNMENT or alignment & (alignment - 1):
        return f"alignment {alignment} is not a power of two in 512..1 MiB"
    return None


def _u64(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not 0 <= value <= MAX_U64:
        raise ValueError(f"{attribute.name}={value} does not fit in 64 bits")


def _header_block(data: Buffer, start: int, size: int, path: str, what: str) -> memoryview:
    """The ``size`` bytes of a header at ``start`` of ``data``: present, and not unwritten."""
    view = memoryview(data).cast("B")
    if len(view) < start + size:
        raise CorruptSegmentError(
            path, min(len(view), start + size),
            f"{what} is cut off: {max(0, len(view) - start)} of its {size} bytes are present")
    block = view[start : start + size]
    if is_unwritten(block):
        raise CorruptSegmentError(path, start, f"{what} is unwritten (all zeros)")
    return block


# --------------------------------------------------------------------------- checkpoint

CHECKPOINT_MAGIC: Final = 0x5057434B
CHECKPOINT_VERSION: Final = 2
LOG_ID_SIZE: Final = 16
NO_LOG_ID: Final = bytes(LOG_ID_SIZE)
"""The log id of a log written before logs had one (version 1)."""

# Version 2 record: magic, version, reserved, log_id, epoch, commit_seq, page_size; a CRC32C
# of those 44 bytes follows. The file holds two identical copies (DESIGN §4).
_CHECKPOINT_RECORD = struct.Struct("<IHH16sQQI")
CHECKPOINT_RECORD_SIZE: Final = _CHECKPOINT_RECORD.size + 4  # 48
CHECKPOINT_COPIES: Final = 2
CHECKPOINT_SIZE: Final = CHECKPOINT_COPIES * CHECKPOINT_RECORD_SIZE  # 96
# Version 1 file (pagewal 0.1): magic, version, reserved, epoch, commit_seq, reserved; CRC32C.
_CHECKPOINT_V1 = struct.Struct("<IHHQQI")
CHECKPOINT_V1_SIZE: Final = _CHECKPOINT_V1.size + 4  # 32


def _page_size_field(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value and (not 0 < value <= MAX_IMAGE_SIZE or value & (value - 1)):
        raise ValueError(f"page_size={value} must be 0 (not recorded) or a power of two up to "
                         f"{MAX_IMAGE_SIZE}")


def _log_id_field(instance: object, attribute: attrs.Attribute[bytes], value: bytes) -> None:
    if len(value) != LOG_ID_SIZE:
        raise ValueError(f"log_id must be {LOG_ID_SIZE} bytes, not {len(value)}")


@attrs.frozen(kw_only=True)
class CheckpointRecord:
    """What a checkpoint file records (DESIGN §4): every commit up to ``position`` is in the
    data file, whose pages are ``page_size`` bytes (0: not recorded, a plain :class:`Wal`'s log
    or a version 1 file). ``log_id`` is all zeros until logs carry an identity.
    """

    position: ChainPosition
    page_size: int = attrs.field(default=0, validator=_page_size_field)
    log_id: bytes = attrs.field(default=NO_LOG_ID, validator=_log_id_field)

    def encode(self) -> bytes:
        """The 96-byte checkpoint file: two identical self-checking 48-byte copies."""
        body = _CHECKPOINT_RECORD.pack(
            CHECKPOINT_MAGIC, CHECKPOINT_VERSION, 0, self.log_id, self.position.epoch,
            self.position.commit_seq, self.page_size)
        return (body + _CRC.pack(crc32c.crc32c(body))) * CHECKPOINT_COPIES


@attrs.frozen(kw_only=True)
class CheckpointFile:
    """A decoded checkpoint file: its record, its format version, and the damage (if any) of
    one copy that the other copy made up for (``None``: every copy is intact)."""

    record: CheckpointRecord
    version: int
    damage: str | None = None


@attrs.frozen(kw_only=True)
class CheckpointRebuild:
    """What :func:`rebuild_checkpoint` found and did: the record now in ``path``, whether it
    was written (``False``: the record was intact and was left alone) and why."""

    path: str
    record: CheckpointRecord
    written: bool
    reason: str


def describe_checkpoint(record: CheckpointRecord) -> str:
    """``epoch E, commit_seq S, page size P`` (or ``page size not recorded``)."""
    page_size = f"page size {record.page_size}" if record.page_size else "page size not recorded"
    return f"epoch {record.position.epoch}, commit_seq {record.position.commit_seq}, {page_size}"


def encode_checkpoint_v1(position: ChainPosition) -> bytes:
    """The 32-byte version 1 checkpoint file pagewal 0.1 wrote (still read; never written)."""
    body = _CHECKPOINT_V1.pack(CHECKPOINT_MAGIC, 1, 0, position.epoch, position.commit_seq, 0)
    return body + _CRC.pack(crc32c.crc32c(body))


def decode_checkpoint(data: bytes | memoryview, path: str) -> CheckpointFile:
    """Decode a checkpoint file: version 2 (two copies, either one suffices) or version 1.

    Raises :class:`CorruptSegmentError` when no copy is intact, when the two copies are intact
    but disagree (which one to believe cannot be decided), or for a length that is neither
    format's. A single damaged copy never yields a wrong record: each copy's CRC32C covers all
    of it, so the copy that passes is the one written.
    """
    if len(data) == CHECKPOINT_V1_SIZE:
        return CheckpointFile(record=CheckpointRecord(position=_decode_checkpoint_v1(data, path)),
                              version=1)
    if len(data) != CHECKPOINT_SIZE:
        raise CorruptSegmentError(
            path, min(len(data), CHECKPOINT_SIZE), f"checkpoint file is {len(data)} bytes, not "
            f"{CHECKPOINT_SIZE} (or {CHECKPOINT_V1_SIZE} for version 1)")
    copies: list[CheckpointRecord | CorruptSegmentError] = []
    for index in range(CHECKPOINT_COPIES):
        try:
            copies.append(_decode_checkpoint_record(data, index * CHECKPOINT_RECORD_SIZE, path))
        except CorruptSegmentError as error:
            copies.append(error)
    first, second = copies
    if isinstance(first, CheckpointRecord) and isinstance(second, CheckpointRecord):
        if first != second:
            raise CorruptSegmentError(
                path, CHECKPOINT_RECORD_SIZE, f"the two copies are intact but differ "
                f"({describe_checkpoint(first)}; {describe_checkpoint(second)}): pagewal never "
                "writes such a file")
        return CheckpointFile(record=first, version=CHECKPOINT_VERSION)
    damaged = [(n, c) for n, c in enumerate(copies, 1) if isinstance(c, CorruptSegmentError)]
    described = "; ".join(f"copy {n} at offset {c.offset}: {c.reason}" for n, c in damaged)
    for copy in copies:
        if isinstance(copy, CheckpointRecord):
            return CheckpointFile(record=copy, version=CHECKPOINT_VERSION,
                                  damage=f"{described} (the other copy is intact)")
    raise CorruptSegmentError(path, damaged[0][1].offset, f"both copies are damaged: {described}")


def _decode_checkpoint_record(
    data: bytes | memoryview, start: int, path: str
) -> CheckpointRecord:
    """One 48-byte version 2 copy at ``start``."""
    magic, version, reserved, log_id, epoch, commit_seq, page_size = (
        _CHECKPOINT_RECORD.unpack_from(data, start))
    if magic != CHECKPOINT_MAGIC:
        raise CorruptSegmentError(path, start,
                                  f"bad magic {magic:#010x}, not a pagewal checkpoint")
    crc_at = start + _CHECKPOINT_RECORD.size
    (stored_crc,) = _CRC.unpack_from(data, crc_at)
    if crc32c.crc32c(data[start:crc_at]) != stored_crc:
        raise CorruptSegmentError(path, crc_at, "checkpoint checksum mismatch")
    if version != CHECKPOINT_VERSION or reserved:
        raise CorruptSegmentError(path, start + 4,
                                  f"unsupported checkpoint version {version} or reserved bits set")
    check_room(path, start + 24, "epoch", epoch)
    check_room(path, start + 32, "commit_seq", commit_seq)
    try:
        return CheckpointRecord(position=ChainPosition(epoch, commit_seq), page_size=page_size,
                                log_id=log_id)
    except ValueError as error:
        raise CorruptSegmentError(path, start + 40, str(error)) from None


def _decode_checkpoint_v1(data: bytes | memoryview, path: str) -> ChainPosition:
    magic, version, reserved_a, epoch, commit_seq, reserved_b = _CHECKPOINT_V1.unpack_from(data)
    if magic != CHECKPOINT_MAGIC:
        raise CorruptSegmentError(path, 0, f"bad magic {magic:#010x}, not a pagewal checkpoint")
    (stored_crc,) = _CRC.unpack_from(data, _CHECKPOINT_V1.size)
    if crc32c.crc32c(data[: _CHECKPOINT_V1.size]) != stored_crc:
        raise CorruptSegmentError(path, _CHECKPOINT_V1.size, "checkpoint checksum mismatch")
    if version != 1 or reserved_a or reserved_b:
        raise CorruptSegmentError(path, 4, "unsupported checkpoint version or reserved bits set")
    check_room(path, 8, "epoch", epoch)
    check_room(path, 16, "commit_seq", commit_seq)
    return ChainPosition(epoch, commit_seq)


# --------------------------------------------------------------------------- log file header


class FileState(enum.IntEnum):
    """A log file header's state. READY: initialized and durable, never written to (its
    continuation fields are 0). ACTIVE: the chain continues into it from ``continues_from``."""

    READY = 1
    ACTIVE = 2


FILE_MAGIC: Final = b"PGWALLOG"
FILE_HEADER_SIZE: Final = 128
# magic, version, state, alignment, log_id, file_no, salt, capacity, inflight_limit, reserved,
# prev_file_no, continues_from epoch, continues_from commit_seq, min_epoch, reserved(28).
_FILE_HEADER = struct.Struct("<8sHHI16sQQQII QQQQ28s")
assert _FILE_HEADER.size + _CRC.size == FILE_HEADER_SIZE


def _file_header_problem(
    *, log_id: bytes, file_no: int, salt: int, capacity: int, alignment: int,
    inflight_limit: int, state: FileState, prev_file_no: int, continues_from: ChainPosition,
    min_epoch: int,
) -> tuple[int, str] | None:
    """The first field of a log file header out of the format's bounds: (its offset in the
    header, why), or None. The one place these bounds live: construction and decoding ask."""
    if len(log_id) != LOG_ID_SIZE or not any(log_id):
        return 16, "log id is not 16 bytes, or all zero"
    if file_no < 1:
        return 32, "file_no 0 is not valid"
    if salt == 0:
        return 40, "salt 0 is not valid"
    problem = _alignment_problem(alignment)
    if problem is not None:
        return 12, problem
    if capacity % alignment or capacity < 2 * alignment:
        return 48, (f"capacity {capacity} is not a multiple of the alignment "
                    f"{alignment} of at least two blocks")
    if not 1 <= inflight_limit <= MAX_INFLIGHT_LIMIT:
        return 56, f"in-flight limit {inflight_limit} is not in 1..{MAX_INFLIGHT_LIMIT}"
    position = continues_from
    if state == FileState.READY:
        if prev_file_no or position != ChainPosition() or min_epoch:
            return 64, "a READY file has non-zero continuation fields"
    elif prev_file_no >= file_no:
        return 64, (f"prev_file_no {prev_file_no} is not before file_no "
                    f"{file_no}")
    for offset, name, value in ((72, "continues_from epoch", position.epoch),
                                (80, "continues_from commit_seq", position.commit_seq),
                                (88, "min_epoch", min_epoch)):
        if value > MAX_POSITION:
            return offset, f"{name} {value} is beyond 2**63-1"
    return None


@attrs.frozen(kw_only=True)
class LogFileHeader:
    """The header of a version 2 log file (DESIGN §4). Construction enforces the format's
    bounds; :meth:`encode` gives its 128 bytes, :func:`decode_file_header` reads them."""

    log_id: bytes
    file_no: int = attrs.field(validator=_u64)
    salt: int = attrs.field(validator=_u64)
    capacity: int = attrs.field(validator=_u64)
    alignment: int = DEFAULT_ALIGNMENT
    inflight_limit: int
    state: FileState = attrs.field(converter=FileState)
    prev_file_no: int = attrs.field(default=0, validator=_u64)
    continues_from: ChainPosition = attrs.field(factory=ChainPosition)
    min_epoch: int = attrs.field(default=0, validator=_u64)

    def __attrs_post_init__(self) -> None:
        problem = _file_header_problem(**attrs.asdict(self, recurse=False))
        if problem is not None:
            raise ValueError(problem[1])

    def encode(self) -> bytes:
        """The 128-byte header, CRC32C included (bytes 128..alignment-1 of the file are 0)."""
        head = _FILE_HEADER.pack(
            FILE_MAGIC, LOG_FORMAT_VERSION, self.state, self.alignment, self.log_id,
            self.file_no, self.salt, self.capacity, self.inflight_limit, 0, self.prev_file_no,
            self.continues_from.epoch, self.continues_from.commit_seq, self.min_epoch,
            bytes(28))
        return head + _CRC.pack(crc32c.crc32c(head))


def decode_file_header(data: Buffer, path: str) -> LogFileHeader:
    """Decode and check a log file header: ``data`` is the file's first bytes (at least 128).

    Raises :class:`CorruptSegmentError` for a short or unwritten (all-zero, see
    :func:`is_unwritten`) header, bad magic, a checksum mismatch, another format version, or
    a field out of bounds.
    """
    block = _header_block(data, 0, FILE_HEADER_SIZE, path, "log file header")
    (magic, version, state, alignment, log_id, file_no, salt, capacity, inflight_limit,
     reserved_a, prev_file_no, continues_epoch, continues_seq, min_epoch,
     reserved_b) = _FILE_HEADER.unpack_from(block)
    if magic != FILE_MAGIC:
        raise CorruptSegmentError(path, 0, f"bad magic {magic!r}, not a pagewal log file")
    (stored_crc,) = _CRC.unpack_from(block, _FILE_HEADER.size)
    if crc32c.crc32c(block[: _FILE_HEADER.size]) != stored_crc:
        raise CorruptSegmentError(path, _FILE_HEADER.size, "log file header checksum mismatch")
    if version != LOG_FORMAT_VERSION:
        raise CorruptSegmentError(path, 8, f"unsupported log file format version {version}")
    if state not in (FileState.READY, FileState.ACTIVE):
        raise CorruptSegmentError(path, 10, f"unknown log file state {state}")
    if reserved_a or any(reserved_b):
        raise CorruptSegmentError(path, 60 if reserved_a else 96, "reserved field not 0")
    # Bounds first, with the offset of the field at fault; then construct (which cannot fail).
    fields: dict[str, Any] = dict(
        log_id=log_id, file_no=file_no, salt=salt, capacity=capacity, alignment=alignment,
        inflight_limit=inflight_limit, state=FileState(state), prev_file_no=prev_file_no,
        continues_from=ChainPosition(continues_epoch, continues_seq), min_epoch=min_epoch)
    problem = _file_header_problem(**fields)
    if problem is not None:
        raise CorruptSegmentError(path, *problem)
    return LogFileHeader(**fields)


# --------------------------------------------------------------------------- segment v2

SEGMENT_MAGIC: Final = 0x5057414D
SEGMENT_HEADER_SIZE: Final = 128
SEGMENT_FLAG_CLEAN_SHUTDOWN: Final = 0x2
"""Header flag of the clean-shutdown marker ``close()`` writes after the last segment."""
_SEGMENT_FLAGS: Final = SEGMENT_FLAG_SERIALIZED | SEGMENT_FLAG_CLEAN_SHUTDOWN
# magic, version, flags, epoch, record_count, lane_count, reserved, commit_seq_lo,
# commit_seq_hi, prev_epoch, body_length, log_id, file_no, salt, acked_epoch, reserved(24),
# body CRC32C; the header CRC32C of these 124 bytes follows.
_SEGMENT_HEADER = struct.Struct("<IHHQIHHQQQQ16sQQQ24sI")
assert _SEGMENT_HEADER.size + _CRC.size == SEGMENT_HEADER_SIZE
_MIN_RECORD_SIZE: Final = 41  # a record around a one-byte image


@attrs.frozen(kw_only=True)
class ShutdownMarker:
    """The clean-shutdown marker (DESIGN §4): a segment header with no records that ends a
    log closed cleanly, at the next aligned offset after its last segment. ``epoch`` and
    ``commit_seq`` are the last durable ones (``0`` for a log that never wrote a segment).
    Not part of the chain: after it, any invalid segment at or before ``epoch`` is damage."""

    log_id: bytes
    file_no: int = attrs.field(validator=_u64)
    salt: int = attrs.field(validator=_u64)
    epoch: int = attrs.field(validator=_u64)
    commit_seq: int = attrs.field(validator=_u64)

    def __attrs_post_init__(self) -> None:
        if len(self.log_id) != LOG_ID_SIZE or not any(self.log_id):
            raise ValueError("log_id must be 16 bytes, not all zero")
        if self.file_no < 1 or self.salt == 0:
            raise ValueError(f"file_no={self.file_no} and salt={self.salt} must not be 0")

    def encode(self) -> bytes:
        """The marker's 128 bytes; it occupies ``segment_span(0, alignment)`` bytes."""
        return _pack_segment_header(
            flags=SEGMENT_FLAG_CLEAN_SHUTDOWN, epoch=self.epoch, record_count=0, lane_count=0,
            commit_seq_lo=self.commit_seq, commit_seq_hi=self.commit_seq,
            prev_epoch=self.epoch, body_length=0, log_id=self.log_id, file_no=self.file_no,
            salt=self.salt, acked_epoch=self.epoch, body_crc=crc32c.crc32c(b""))


def encode_shutdown_marker(
    *, log_id: bytes, file_no: int, salt: int, epoch: int, commit_seq: int
) -> bytes:
    """The 128 bytes of a clean-shutdown marker (see :class:`ShutdownMarker`)."""
    return ShutdownMarker(log_id=log_id, file_no=file_no, salt=salt, epoch=epoch,
                          commit_seq=commit_seq).encode()


def _pack_segment_header(
    *, flags: int, epoch: int, record_count: int, lane_count: int, commit_seq_lo: int,
    commit_seq_hi: int, prev_epoch: int, body_length: int, log_id: bytes, file_no: int,
    salt: int, acked_epoch: int, body_crc: int,
) -> bytes:
    head = _SEGMENT_HEADER.pack(
        SEGMENT_MAGIC, LOG_FORMAT_VERSION, flags, epoch, record_count, lane_count, 0,
        commit_seq_lo, commit_seq_hi, prev_epoch, body_length, log_id, file_no, salt,
        acked_epoch, _RESERVED_24, body_crc)
    return head + _CRC.pack(crc32c.crc32c(head))


_RESERVED_24: Final = bytes(24)


def segment_span(body_length: int, alignment: int) -> int:
    """Bytes a segment with ``body_length`` body bytes takes in its log file: header, body
    and zero padding to the next multiple of ``alignment``."""
    return padded(SEGMENT_HEADER_SIZE + body_length, alignment)


def encode_segment_v2(
    header: SegmentHeader, body_buffers: Sequence[Buffer], alignment: int
) -> list[Buffer]:
    """The buffers of one version 2 segment, for one vectored write at an aligned offset:
    its header (body CRC32C and header CRC32C computed here), ``body_buffers`` themselves
    (not copied; their lengths add up to ``header.body_length``) and zero padding, so that
    the total is ``segment_span(header.body_length, alignment)``. Checks what
    :func:`segment_buffers` takes on trust."""
    if header.version != LOG_FORMAT_VERSION:
        raise ValueError(f"a version {header.version} header goes into a segment file of its "
                         "own, not a log file")
    problem = _alignment_problem(alignment)
    if problem is not None:
        raise ValueError(problem)
    length = sum(memoryview(buffer).nbytes for buffer in body_buffers)
    if length != header.body_length:
        raise ValueError(f"the body buffers hold {length} bytes, the header says "
                         f"{header.body_length}")
    return segment_buffers(
        body_buffers, alignment, flags=header.flags, epoch=header.epoch,
        record_count=header.record_count, lane_count=header.lane_count,
        commit_seq_lo=header.commit_seq_lo, commit_seq_hi=header.commit_seq_hi,
        prev_epoch=header.prev_epoch, body_length=header.body_length, log_id=header.log_id,
        file_no=header.file_no, salt=header.salt, acked_epoch=header.acked_epoch)


def segment_buffers(
    body_buffers: Sequence[Buffer], alignment: int, *, flags: int, epoch: int,
    record_count: int, lane_count: int, commit_seq_lo: int, commit_seq_hi: int,
    prev_epoch: int, body_length: int, log_id: bytes, file_no: int, salt: int,
    acked_epoch: int,
) -> list[Buffer]:
    """:func:`encode_segment_v2` for the log's own writer, on its commit path: the fields
    come from the log's state (the same bounds hold), ``body_length`` is the sum of the
    body's byte lengths and ``alignment`` the file's, so nothing is checked twice; a field
    out of its range still fails (``struct.error``), never writing a wrong header."""
    body_crc = 0
    for buffer in body_buffers:
        body_crc = crc32c.crc32c(buffer, body_crc)
    head = _pack_segment_header(
        flags=flags, epoch=epoch, record_count=record_count, lane_count=lane_count,
        commit_seq_lo=commit_seq_lo, commit_seq_hi=commit_seq_hi, prev_epoch=prev_epoch,
        body_length=body_length, log_id=log_id, file_no=file_no, salt=salt,
        acked_epoch=acked_epoch, body_crc=body_crc)
    buffers: list[Buffer] = [head, *body_buffers]
    padding = segment_span(body_length, alignment) - SEGMENT_HEADER_SIZE - body_length
    if padding:
        buffers.append(_ZEROS[:padding] if padding <= len(_ZEROS) else bytes(padding))
    return buffers


_ZEROS: Final = memoryview(bytes(64 << 10))
"""Padding is sliced from here (read only, never written) rather than allocated per segment."""


@attrs.frozen
class _SegmentHeaderV2:
    """A decoded version 2 header: the header (or marker) and the body CRC it records."""

    header: SegmentHeader | ShutdownMarker
    body_crc: int


def decode_segment_header_v2(
    data: Buffer, path: str, offset: int, *, file_size: int | None = None
) -> SegmentHeader | ShutdownMarker:
    """Decode and check the version 2 segment header at file offset ``offset``.

    ``data`` holds the file's bytes from offset 0 (at least through this header; a mapping of
    the whole file will do). The body must fit in the file: before ``file_size`` (default
    ``len(data)``). Checks magic, header CRC32C, version, flags, reserved fields, the fields'
    bounds and that the lengths fit; not the identity or the body (:func:`decode_segment_v2`
    does). Raises :class:`CorruptSegmentError` with file offsets, also for an unwritten (all
    zero) header: ask :func:`is_unwritten` first to tell the two apart.
    """
    return _decode_segment_header_v2(data, path, offset, file_size).header


def _decode_segment_header_v2(
    data: Buffer, path: str, offset: int, file_size: int | None
) -> _SegmentHeaderV2:
    block = _header_block(data, offset, SEGMENT_HEADER_SIZE, path, "segment header")
    (magic, version, flags, epoch, record_count, lane_count, reserved_a, seq_lo, seq_hi,
     prev_epoch, body_length, log_id, file_no, salt, acked_epoch, reserved_b,
     body_crc) = _SEGMENT_HEADER.unpack_from(block)
    if magic != SEGMENT_MAGIC:
        raise CorruptSegmentError(path, offset,
                                  f"bad magic {magic:#010x}, not a version 2 pagewal segment")
    (stored_crc,) = _CRC.unpack_from(block, _SEGMENT_HEADER.size)
    if crc32c.crc32c(block[: _SEGMENT_HEADER.size]) != stored_crc:
        raise CorruptSegmentError(path, offset + _SEGMENT_HEADER.size,
                                  "segment header checksum mismatch")
    if version != LOG_FORMAT_VERSION:
        raise CorruptSegmentError(path, offset + 4, f"unsupported segment version {version}")
    if flags & ~_SEGMENT_FLAGS:
        raise CorruptSegmentError(path, offset + 6, f"unknown header flags {flags:#06x}")
    if reserved_a or any(reserved_b):
        raise CorruptSegmentError(path, offset + (22 if reserved_a else 96),
                                  "reserved header field not 0")
    if not any(log_id):
        raise CorruptSegmentError(path, offset + 56, "log id is all zero")
    if file_no < 1:
        raise CorruptSegmentError(path, offset + 72, "file_no 0 is not valid")
    if salt == 0:
        raise CorruptSegmentError(path, offset + 80, "salt 0 is not valid")
    check_room(path, offset + 8, "epoch", epoch)
    check_room(path, offset + 32, "commit_seq", seq_hi)
    if flags & SEGMENT_FLAG_CLEAN_SHUTDOWN:
        if (flags != SEGMENT_FLAG_CLEAN_SHUTDOWN or record_count or lane_count or body_length
                or seq_lo != seq_hi or prev_epoch != epoch or acked_epoch != epoch):
            raise CorruptSegmentError(
                path, offset + 6, "clean-shutdown marker with records, other flags or "
                "inconsistent positions")
        marker = ShutdownMarker(log_id=log_id, file_no=file_no, salt=salt, epoch=epoch,
                                commit_seq=seq_hi)
        return _SegmentHeaderV2(marker, body_crc)
    if epoch < 1:
        raise CorruptSegmentError(path, offset + 8, "epoch 0 is not valid")
    if record_count < 1:
        raise CorruptSegmentError(path, offset + 16, "record_count is 0")
    if lane_count < 1:
        raise CorruptSegmentError(path, offset + 20, "lane_count is 0")
    if not 1 <= seq_lo <= seq_hi:
        raise CorruptSegmentError(path, offset + 24,
                                  f"commit_seq range [{seq_lo}, {seq_hi}] is not valid")
    if seq_hi - seq_lo >= record_count:
        raise CorruptSegmentError(
            path, offset + 16, f"{record_count} records cannot hold commits {seq_lo}..{seq_hi}")
    if prev_epoch >= epoch:
        raise CorruptSegmentError(path, offset + 40,
                                  f"prev_epoch {prev_epoch} is not before {epoch}")
    if acked_epoch >= epoch:
        raise CorruptSegmentError(
            path, offset + 88, f"acked_epoch {acked_epoch} is not before {epoch} (a segment "
            "is not acknowledged before it is sealed)")
    # Lengths against the bytes there are, before anything is allocated for them.
    room = (len(memoryview(data)) if file_size is None else file_size) - offset - (
        SEGMENT_HEADER_SIZE)
    if body_length > room:
        raise CorruptSegmentError(
            path, offset + 48, f"body_length {body_length} runs past the end of the file "
            f"({room} bytes after the header)")
    if record_count * _MIN_RECORD_SIZE > body_length:
        raise CorruptSegmentError(
            path, offset + 16, f"record_count {record_count} cannot fit in {body_length} "
            "body bytes")
    header = SegmentHeader(
        epoch=epoch, record_count=record_count, lane_count=lane_count, commit_seq_lo=seq_lo,
        commit_seq_hi=seq_hi, prev_epoch=prev_epoch, body_length=body_length, flags=flags,
        version=LOG_FORMAT_VERSION, log_id=log_id, file_no=file_no, salt=salt,
        acked_epoch=acked_epoch)
    return _SegmentHeaderV2(header, body_crc)


def check_identity(
    header: SegmentHeader | ShutdownMarker, file_header: LogFileHeader, path: str, offset: int
) -> None:
    """Invariant 4: a segment (or marker) at ``offset`` belongs to this life of this file
    only if its log id, file_no and salt are the file header's."""
    if header.log_id != file_header.log_id:
        raise CorruptSegmentError(
            path, offset + 56, f"log id {header.log_id.hex()} is not the file's "
            f"{file_header.log_id.hex()}: a segment of another log")
    if header.file_no != file_header.file_no:
        raise CorruptSegmentError(
            path, offset + 72, f"file_no {header.file_no} is not the file's "
            f"{file_header.file_no}: a segment of another log file")
    if header.salt != file_header.salt:
        raise CorruptSegmentError(
            path, offset + 80, f"salt {header.salt:#x} is not the file's "
            f"{file_header.salt:#x}: a segment from an earlier life of the file")


def decode_segment_v2(
    view: Buffer, path: str, offset: int, file_header: LogFileHeader
) -> DecodedSegment | ShutdownMarker:
    """Validate the version 2 segment at file offset ``offset`` of a log file whose bytes are
    ``view`` (from offset 0) and whose header is ``file_header``; index its records.

    Accepts a segment only if its header is valid, it lies on an aligned offset after the
    header block and inside the file's capacity, its identity is the file's (invariant 4),
    its epoch is at least the file's ``min_epoch``, its body CRC32C matches and its records
    are valid (:func:`pagewal._codec.decode_records`). Offsets in errors and in the returned
    index are file offsets. A clean-shutdown marker is returned as a :class:`ShutdownMarker`
    after the same identity check. The chain is the caller's (``_chain.check_continues``).
    """
    data = memoryview(view).cast("B")
    alignment = file_header.alignment
    if offset < alignment or offset % alignment or offset >= file_header.capacity:
        raise CorruptSegmentError(
            path, offset, f"offset {offset} is not a segment's (a multiple of the alignment "
            f"{alignment} after the file header, inside the capacity {file_header.capacity})")
    file_size = min(len(data), file_header.capacity)
    decoded = _decode_segment_header_v2(data, path, offset, file_size)
    header = decoded.header
    check_identity(header, file_header, path, offset)
    if isinstance(header, ShutdownMarker):
        return header
    if header.epoch < file_header.min_epoch:
        raise CorruptSegmentError(
            path, offset + 8, f"epoch {header.epoch} is below the file's min_epoch "
            f"{file_header.min_epoch}: a segment of a discarded tail")
    body_start = offset + SEGMENT_HEADER_SIZE
    body_end = body_start + header.body_length
    if crc32c.crc32c(data[body_start:body_end]) != decoded.body_crc:
        raise CorruptSegmentError(path, offset + 120, "body checksum mismatch")
    return decode_records(data, header, path, body_start)
