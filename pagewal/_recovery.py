"""Recovery: the I/O edge around the pure codec and chain modules.

Lists a database's segments, removes stale temporary files (invariant 4: a ``.tmp`` file is
never data), validates every segment and the chain, and returns the durable commits in
canonical order. Invariant 5: any mismatch raises :class:`CorruptSegmentError` naming file,
offset and reason, unless ``skip_corrupt`` asks for the longest valid prefix of the chain.

:func:`_read_chain` is the one loop that validates a log; :func:`recover`, :meth:`Wal.open`
and the read-only :func:`read_log` (``pagewal verify`` and ``inspect``) all go through it.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from typing import TypeAlias

import attrs

from ._chain import (
    RecoveryResult,
    SegmentInfo,
    SkippedSegment,
    canonical_records,
    check_continues,
)
from ._codec import (
    QUARANTINE_SUFFIX,
    TEMP_SUFFIX,
    ChainPosition,
    DecodedSegment,
    checkpoint_name,
    decode_checkpoint,
    decode_segment,
    is_temp_segment_name,
    parse_segment_name,
    segment_name,
)
from ._errors import CorruptSegmentError, LogLockedError
from ._fs import FileMode, FileSystem, OsFileSystem, publish_atomically

_READ_ONLY_ATTEMPTS = 3

Progress: TypeAlias = Callable[[int, int], None]
"""``progress(done, total)``: called after each step of a long operation (here: after each
segment of the chain is checked). The command line draws it as a progress bar."""


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
        fs = fs or OsFileSystem()
        directory, db_name = os.path.split(fs.real_path(os.path.abspath(os.fspath(db_path))))
        if not db_name:
            raise ValueError(f"{db_path!r} names a directory, not a database file")
        return cls(directory, db_name, fs.file_mode(os.path.join(directory, db_name)))

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

    When another process has the log open, recovery reads what is published and changes
    nothing (as :func:`read_log` does). ``progress(done, total)`` is called after each segment.
    """
    fs = fs or OsFileSystem()
    files = LogFiles.for_db(db_path, fs)
    handle = fs.try_lock(files.lock_path, files.file_mode)
    if handle is None:
        if delete_after:
            raise LogLockedError(f"{files.path(files.db_name)}: the log is open elsewhere; "
                                 "close it before recovering with delete_after=True")
        return _read_unlocked(files, fs, skip_corrupt=skip_corrupt, progress=progress)
    try:
        result = _read_chain(files, fs, skip_corrupt=skip_corrupt, tidy=True, progress=progress)
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
    fs: FileSystem | None = None,
    progress: Progress | None = None,
) -> RecoveryResult:
    """Validate the log of ``db_path`` exactly as :func:`recover` does, changing nothing.

    Takes no lock and creates, deletes or renames no file, so it is safe beside a live writer:
    temporary files and segments a checkpoint covers are ignored, not removed. A missing
    directory raises :class:`FileNotFoundError`.
    """
    fs = fs or OsFileSystem()
    return _read_unlocked(LogFiles.for_db(db_path, fs), fs, skip_corrupt=skip_corrupt,
                          progress=progress)


def _read_unlocked(
    files: LogFiles, fs: FileSystem, *, skip_corrupt: bool, progress: Progress | None
) -> RecoveryResult:
    """Read a log someone else may be writing: list again if a segment vanishes meanwhile (a
    checkpoint deleted what it covers)."""
    for attempt in range(1, _READ_ONLY_ATTEMPTS + 1):
        try:
            return _read_chain(files, fs, skip_corrupt=skip_corrupt, tidy=False,
                               progress=progress)
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
    progress: Progress | None = None,
) -> RecoveryResult:
    """Read and validate the chain. ``tidy`` (only while holding the log's lock) also deletes
    temporary files and segments the checkpoint already covers."""
    names = sorted(fs.listdir(files.directory))
    base = read_checkpoint(files, fs, names)
    epochs = segment_epochs(files, names)
    removed: list[str] = []
    if tidy:
        checkpoint_temp = checkpoint_name(files.db_name) + TEMP_SUFFIX
        removed = [files.path(n) for n in names
                   if is_temp_segment_name(files.db_name, n) or n == checkpoint_temp]
        # A checkpoint interrupted after recording itself leaves segments it covers: already
        # applied, so they are deleted rather than read.
        removed += [files.segment_path(e) for e in epochs if e <= base.epoch]
        for path in removed:
            fs.unlink(path)
        if removed:
            fs.fsync_dir(files.directory)

    position = base
    decoded: list[DecodedSegment] = []
    skipped: list[SkippedSegment] = []
    chain = [e for e in epochs if e > base.epoch]
    for done, epoch in enumerate(chain, 1):
        if skipped:
            skipped.append(SkippedSegment(files.segment_path(epoch), 0,
                                          "follows a corrupt segment in the chain"))
        else:
            try:
                segment = read_segment(files, fs, epoch, position)
                position = ChainPosition(segment.header.epoch, segment.header.commit_seq_hi)
                decoded.append(segment)
            except CorruptSegmentError as error:
                if not skip_corrupt:
                    raise
                skipped.append(SkippedSegment(error.path, error.offset, error.reason))
        if progress is not None:
            progress(done, len(chain))
    return RecoveryResult(
        base=base, last=position,
        segments=tuple(SegmentInfo(s.path, s.header) for s in decoded),
        skipped=tuple(skipped), removed_temp_files=tuple(removed),
        bytes_read=sum(s.data.nbytes for s in decoded),
        records=canonical_records(decoded), data=tuple(s.data for s in decoded),
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
                       sync=sync, mode=files.file_mode)


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
