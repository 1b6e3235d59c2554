"""Recovery: the I/O edge around the pure codec and chain modules.

Lists a database's segments, removes stale temporary files (invariant 4: a ``.tmp`` file is
never data), validates every segment and the chain, and returns the durable commits in
canonical order. Invariant 5: any mismatch raises :class:`CorruptSegmentError` naming file,
offset and reason, unless ``skip_corrupt`` asks for the longest valid prefix of the chain.

:func:`_read_chain` is the one loop that validates a log; :func:`recover`, :meth:`Wal.open`
and the read-only :func:`read_log` (``pagewal verify`` and ``inspect``) all go through it.
"""

from __future__ import annotations

import errno
import itertools
import os
from collections.abc import Callable
from typing import TypeAlias

import attrs

from ._chain import (
    RecoveryResult,
    SegmentInfo,
    SkippedSegment,
    check_continues,
    merge_indexes,
)
from ._codec import (
    QUARANTINE_SUFFIX,
    TEMP_SUFFIX,
    ChainPosition,
    DecodedSegment,
    RecordArray,
    checkpoint_name,
    decode_checkpoint,
    decode_segment,
    is_temp_segment_name,
    parse_segment_name,
    segment_name,
)
from ._errors import CorruptSegmentError, LogLockedError
from ._fs import FileSystem, OsFileSystem, publish_atomically

_READ_ONLY_ATTEMPTS = 3

READ_ONLY_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})
"""Errors meaning "this file system (or directory) may not be changed by us": recovery then
reads without tidying, and says what it left."""

Progress: TypeAlias = Callable[[int, int], None]
"""``progress(done, total)``: called after each step of a long operation (here: after each
segment of the chain is checked). The command line draws it as a progress bar."""


@attrs.frozen
class LogFiles:
    """Where a database's log files live: ``directory/db_name`` is the database file."""

    directory: str
    db_name: str

    @classmethod
    def for_db(cls, db_path: str | os.PathLike[str]) -> LogFiles:
        directory, db_name = os.path.split(os.path.abspath(os.fspath(db_path)))
        if not db_name:
            raise ValueError(f"{db_path!r} names a directory, not a database file")
        return cls(directory, db_name)

    def path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def segment_path(self, epoch: int) -> str:
        return self.path(segment_name(self.db_name, epoch))

    @property
    def lock_path(self) -> str:
        return self.path(f"{self.db_name}-wal-lock")


def recover(
    db_path: str | os.PathLike[str],
    *,
    skip_corrupt: bool = False,
    delete_after: bool = False,
    fs: FileSystem | None = None,
    progress: Progress | None = None,
) -> RecoveryResult:
    """Read every durable commit of the log of ``db_path`` in canonical order.

    Removes leftover ``.tmp`` files, and segments a completed checkpoint already covers.
    By default any corrupt segment or broken chain raises :class:`CorruptSegmentError`; with
    ``skip_corrupt=True`` recovery stops at the first bad segment and lists it and every later
    one in ``result.skipped`` (files are left in place).

    ``delete_after=True`` records a checkpoint at the end of the recovered chain and deletes the
    recovered segments, so the log continues after them. Only the returned result then holds
    those commits: use it when the caller has already made the pages durable elsewhere, or is
    discarding the log.

    When another process has the log open, or the lock file cannot be created (a read-only
    file system or directory), recovery reads what is published and changes nothing, as
    :func:`read_log` does, and says why in ``result.read_only_reason``; leftovers it could not
    remove are listed in ``result.not_removed``. ``progress(done, total)`` is called after each
    segment.

    Memory: the bytes read (``result.bytes_read``; files of 1 MiB or more are mapped) plus 43
    bytes per record kept; while it runs, one segment's own index (39 bytes per record) and
    sort scratch (16 bytes per record) come and go besides. Peak: at most about 3.5 times
    the bytes read, for the smallest possible records (1-byte images, 41 bytes each); about
    1.02 times for 4 KiB pages. :meth:`RecoveryResult.page_images` adds its dict.
    """
    files = LogFiles.for_db(db_path)
    fs = fs or OsFileSystem()
    try:
        handle = fs.try_lock(files.lock_path)
    except OSError as error:
        if error.errno not in READ_ONLY_ERRNOS or delete_after:
            raise
        return attrs.evolve(
            _read_unlocked(files, fs, skip_corrupt=skip_corrupt, progress=progress),
            read_only_reason=f"could not create or lock {files.lock_path} ({error.strerror}); "
            "read without the lock, changing nothing")
    if handle is None:
        if delete_after:
            raise LogLockedError(f"{files.path(files.db_name)}: the log is open elsewhere; "
                                 "close it before recovering with delete_after=True")
        return attrs.evolve(
            _read_unlocked(files, fs, skip_corrupt=skip_corrupt, progress=progress),
            read_only_reason=f"the log is open elsewhere (lock {files.lock_path} is held); "
            "read what it has published, changing nothing")
    try:
        result = _read_chain(files, fs, skip_corrupt=skip_corrupt, tidy=True,
                             read_only_ok=not delete_after, progress=progress)
        if delete_after:
            write_checkpoint(files, fs, result.last)
            for info in result.segments:
                fs.unlink(info.path)
            fs.fsync_dir(files.directory)
        return result
    finally:
        fs.unlock(handle)


def read_log(
    db_path: str | os.PathLike[str],
    *,
    skip_corrupt: bool = False,
    keep_records: bool = True,
    fs: FileSystem | None = None,
    progress: Progress | None = None,
) -> RecoveryResult:
    """Validate the log of ``db_path`` exactly as :func:`recover` does, changing nothing.

    Takes no lock and creates, deletes or renames no file, so it is safe beside a live writer
    and on a read-only file system: temporary files and segments a checkpoint covers are
    ignored and listed in ``result.not_removed``. A missing directory raises
    :class:`FileNotFoundError`.

    ``keep_records=False`` validates every segment and reports the chain (``segments``,
    ``skipped``, ``base``, ``last``, ``bytes_read``) but keeps no records or bytes, so its
    memory is that of the largest segment (its bytes and 39 bytes per record), not of the log:
    what ``pagewal verify`` and ``inspect`` use.
    """
    return _read_unlocked(LogFiles.for_db(db_path), fs or OsFileSystem(),
                          skip_corrupt=skip_corrupt, progress=progress,
                          keep_records=keep_records)


def _read_unlocked(
    files: LogFiles, fs: FileSystem, *, skip_corrupt: bool, progress: Progress | None,
    keep_records: bool = True,
) -> RecoveryResult:
    """Read a log someone else may be writing: list again if a segment vanishes meanwhile (a
    checkpoint deleted what it covers)."""
    for attempt in range(1, _READ_ONLY_ATTEMPTS + 1):
        try:
            return _read_chain(files, fs, skip_corrupt=skip_corrupt, tidy=False,
                               progress=progress, keep_records=keep_records)
        except FileNotFoundError as error:
            if error.filename == files.directory:
                raise  # no directory at all: nothing vanished, there is no log here
            if attempt == _READ_ONLY_ATTEMPTS:
                raise LogLockedError(
                    f"{files.path(files.db_name)}: the log kept changing while it was read "
                    f"({error}); retry when it is closed") from error
    raise AssertionError("unreachable")  # pragma: no cover


def _read_chain(
    files: LogFiles, fs: FileSystem, *, skip_corrupt: bool, tidy: bool,
    progress: Progress | None = None, keep_records: bool = True, read_only_ok: bool = False,
) -> RecoveryResult:
    """Read and validate the chain. ``tidy`` (only while holding the log's lock) also deletes
    temporary files and segments the checkpoint already covers; with ``read_only_ok`` a file
    system that refuses (read-only, no permission) leaves them listed in ``not_removed``.
    ``keep_records=False`` validates every segment but keeps no records or bytes.

    Memory: the segments' bytes (mapped, or read for files under 1 MiB) and the canonical
    index of 43 bytes per record are kept; while a segment is decoded its own index (39 bytes
    per record) and, if its lanes need sorting, ~16 bytes per record more exist beside them.
    """
    names = sorted(fs.listdir(files.directory))
    base = read_checkpoint(files, fs, names)
    epochs = segment_epochs(files, names)
    checkpoint_temp = checkpoint_name(files.db_name) + TEMP_SUFFIX
    leftovers = [files.path(n) for n in names
                 if is_temp_segment_name(files.db_name, n) or n == checkpoint_temp]
    # A checkpoint interrupted after recording itself leaves segments it covers: already
    # applied, so they are deleted rather than read.
    leftovers += [files.segment_path(e) for e in epochs if e <= base.epoch]
    removed: list[str] = []
    not_removed = leftovers
    if tidy:
        not_removed = []
        for path in leftovers:
            try:
                fs.unlink(path)
            except OSError as error:
                if not (read_only_ok and error.errno in READ_ONLY_ERRNOS):
                    raise
                not_removed.append(path)
            else:
                removed.append(path)
        if removed:
            fs.fsync_dir(files.directory)

    position = base
    infos: list[SegmentInfo] = []
    indexes: list[RecordArray] = []
    data: list[memoryview] = []
    skipped: list[SkippedSegment] = []
    bytes_read = 0
    chain = [e for e in epochs if e > base.epoch]
    for done, epoch in enumerate(chain, 1):
        if skipped:
            skipped.append(SkippedSegment(files.segment_path(epoch), 0,
                                          "follows a corrupt segment in the chain"))
        else:
            try:
                segment = read_segment(files, fs, epoch, position)
            except CorruptSegmentError as error:
                if not skip_corrupt:
                    raise
                skipped.append(SkippedSegment(error.path, error.offset, error.reason))
            else:
                position = ChainPosition(segment.header.epoch, segment.header.commit_seq_hi)
                infos.append(SegmentInfo(segment.path, segment.header))
                bytes_read += segment.data.nbytes
                if keep_records:
                    indexes.append(segment.records)
                    data.append(segment.data)
                del segment  # without keep_records, its bytes and index go now
        if progress is not None:
            progress(done, len(chain))
    return RecoveryResult(
        base=base, last=position, segments=tuple(infos), skipped=tuple(skipped),
        removed_temp_files=tuple(removed), bytes_read=bytes_read,
        records=merge_indexes(indexes), data=tuple(data), not_removed=tuple(not_removed),
    )


def read_segment(
    files: LogFiles, fs: FileSystem, epoch: int, position: ChainPosition
) -> DecodedSegment:
    """Read and validate segment ``epoch``, and check it continues the chain at ``position``
    (invariant 5: raises :class:`CorruptSegmentError` naming file, offset and reason)."""
    path = files.segment_path(epoch)
    segment = decode_segment(fs.read_file(path), path, expected_epoch=epoch)
    check_continues(position, segment.header, path)
    return segment


def segment_epochs(files: LogFiles, names: list[str]) -> list[int]:
    """The epochs of the published segments among directory entries ``names``, ascending."""
    return sorted(e for n in names if (e := parse_segment_name(files.db_name, n)) is not None)


def read_checkpoint(files: LogFiles, fs: FileSystem, names: list[str]) -> ChainPosition:
    """The checkpoint recorded among directory entries ``names``, or the empty log's position.
    """
    name = checkpoint_name(files.db_name)
    if name not in names:
        return ChainPosition()
    path = files.path(name)
    return decode_checkpoint(fs.read_file(path), path)


def write_checkpoint(
    files: LogFiles, fs: FileSystem, position: ChainPosition, *, sync: bool = True
) -> None:
    """Record ``position`` as the checkpoint, atomically (tmp, fsync, rename, dir fsync)."""
    publish_atomically(fs, files.directory, checkpoint_name(files.db_name), [position.encode()],
                       sync=sync)


def quarantine(files: LogFiles, fs: FileSystem, skipped: tuple[SkippedSegment, ...]) -> None:
    """Rename skipped segments out of the chain so the log can continue after the prefix.

    ``<segment>.corrupt``, or ``<segment>.corrupt-N`` when an earlier quarantine already used
    that name: nothing set aside before is ever replaced.
    """
    if not skipped:
        return
    taken = set(fs.listdir(files.directory))
    for item in skipped:
        name = os.path.basename(item.path) + QUARANTINE_SUFFIX
        target = name
        for number in itertools.count(1):
            if target not in taken:
                break
            target = f"{name}-{number}"
        taken.add(target)
        fs.rename(item.path, files.path(target))
    fs.fsync_dir(files.directory)
