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
    CheckpointFile,
    CheckpointRebuild,
    CheckpointRecord,
    DecodedSegment,
    checkpoint_name,
    decode_checkpoint,
    decode_header,
    decode_segment,
    is_temp_segment_name,
    parse_segment_name,
    segment_name,
)
from ._errors import CheckpointMissingError, CorruptSegmentError, LogLockedError
from ._fs import FileSystem, OsFileSystem, publish_atomically

_READ_ONLY_ATTEMPTS = 3

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

    @property
    def checkpoint_path(self) -> str:
        return self.path(checkpoint_name(self.db_name))

    @property
    def rebuild_command(self) -> str:
        """The operator command that rebuilds this log's checkpoint record."""
        return f"pagewal recover {self.path(self.db_name)} --rebuild-checkpoint"


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
    one in ``result.skipped`` (files are left in place). A checkpoint record that is missing
    while the segments continue a log that had commits, or unreadable in both copies, raises
    :class:`CheckpointMissingError` whatever ``skip_corrupt`` says (see
    :func:`rebuild_checkpoint`); one damaged copy is rewritten from the other and reported in
    ``result.warnings``.

    ``delete_after=True`` records a checkpoint at the end of the recovered chain and deletes the
    recovered segments, so the log continues after them. Only the returned result then holds
    those commits: use it when the caller has already made the pages durable elsewhere, or is
    discarding the log.

    When another process has the log open, recovery reads what is published and changes
    nothing (as :func:`read_log` does). ``progress(done, total)`` is called after each segment.
    """
    files = LogFiles.for_db(db_path)
    fs = fs or OsFileSystem()
    handle = fs.try_lock(files.lock_path)
    if handle is None:
        if delete_after:
            raise LogLockedError(f"{files.path(files.db_name)}: the log is open elsewhere; "
                                 "close it before recovering with delete_after=True")
        return _read_unlocked(files, fs, skip_corrupt=skip_corrupt, progress=progress)
    try:
        result = _read_chain(files, fs, skip_corrupt=skip_corrupt, tidy=True, progress=progress)
        if delete_after:
            write_checkpoint(files, fs, CheckpointRecord(position=result.last,
                                                         page_size=result.page_size))
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
    return _read_unlocked(LogFiles.for_db(db_path), fs or OsFileSystem(),
                          skip_corrupt=skip_corrupt, progress=progress)


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
    epochs = segment_epochs(files, names)
    checkpoint = read_checkpoint(files, fs, names, epochs)
    base = checkpoint.record.position if checkpoint else ChainPosition()
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
    warnings: list[str] = []
    if checkpoint is not None and checkpoint.damage is not None:
        # DESIGN §4.5: one damaged copy never strands a store; the intact one is written back.
        if tidy:
            write_checkpoint(files, fs, checkpoint.record)
        warnings.append(
            f"{files.checkpoint_path}: {checkpoint.damage}; "
            + ("both copies were rewritten from it" if tidy
               else "the next checkpoint or open rewrites both copies"))

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
                if checkpoint is None and not decoded:
                    _raise_if_checkpoint_lost(files, fs, epochs, error)
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
        page_size=checkpoint.record.page_size if checkpoint else 0, warnings=tuple(warnings),
    )


def _raise_if_checkpoint_lost(
    files: LogFiles, fs: FileSystem, epochs: list[int], error: CorruptSegmentError
) -> None:
    """With no checkpoint file, the first segment failed: if its header says it continues a
    log that had commits, the checkpoint record was lost (not the segment): raise
    :class:`CheckpointMissingError`, which ``skip_corrupt`` does not turn into a restart."""
    vouched = first_segment_start(files, fs, epochs)
    if vouched is None or vouched == ChainPosition():
        return
    raise CheckpointMissingError(
        files.checkpoint_path, 0,
        f"the checkpoint record is missing, but the first segment "
        f"{files.segment_path(epochs[0])} continues from epoch {vouched.epoch}, commit_seq "
        f"{vouched.commit_seq}: the record was lost (those commits were checkpointed), or the "
        f"segments before this one were. Nothing was changed (skip_corrupt would restart the "
        f"numbering and set aside segments that chain correctly); rebuild the record with "
        f"'{files.rebuild_command}'",
        vouched) from error


def first_segment_start(
    files: LogFiles, fs: FileSystem, epochs: list[int]
) -> ChainPosition | None:
    """The position the first segment on disk says it continues from (its ``prev_epoch`` and
    ``commit_seq_lo - 1``); ``None`` when there is no segment or its header is unreadable."""
    if not epochs:
        return None
    path = files.segment_path(epochs[0])
    try:
        header = decode_header(fs.read_file(path), path)
    except CorruptSegmentError:
        return None
    return ChainPosition(header.prev_epoch, header.commit_seq_lo - 1)


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


def read_checkpoint(
    files: LogFiles, fs: FileSystem, names: list[str], epochs: list[int]
) -> CheckpointFile | None:
    """The checkpoint file among directory entries ``names`` (``None``: there is none).

    A file no copy of which is readable raises :class:`CheckpointMissingError`, naming the
    position the first of the segments ``epochs`` continues from, if it can tell.
    """
    if checkpoint_name(files.db_name) not in names:
        return None
    path = files.checkpoint_path
    try:
        return decode_checkpoint(fs.read_file(path), path)
    except CorruptSegmentError as error:
        vouched = first_segment_start(files, fs, epochs)
        where = ("; no segment says where the log continues from" if vouched is None else
                 f"; the first segment continues from epoch {vouched.epoch}, commit_seq "
                 f"{vouched.commit_seq}")
        raise CheckpointMissingError(
            path, error.offset, f"the checkpoint record is unreadable at offset {error.offset}: "
            f"{error.reason}{where}. Nothing was changed; rebuild the record with "
            f"'{files.rebuild_command}'", vouched) from error


def write_checkpoint(
    files: LogFiles, fs: FileSystem, record: CheckpointRecord, *, sync: bool = True
) -> None:
    """Record ``record`` as the checkpoint, atomically (tmp, fsync, rename, dir fsync)."""
    publish_atomically(fs, files.directory, checkpoint_name(files.db_name), [record.encode()],
                       sync=sync)


def rebuild_checkpoint(
    db_path: str | os.PathLike[str],
    *,
    page_size: int | None = None,
    position: ChainPosition | None = None,
    fs: FileSystem | None = None,
) -> CheckpointRebuild:
    """Rebuild the checkpoint record of the log of ``db_path`` from what survives.

    An intact record is left alone; one with a damaged copy is rewritten from the intact
    copy. A missing or unreadable record is rebuilt at the position the first segment on disk
    continues from (its ``prev_epoch`` and ``commit_seq_lo - 1``), after checking that the
    segments' headers chain among themselves. With no segment to vouch for a position, the
    caller must give ``position`` (if segments do vouch, ``position`` must agree with them).
    ``page_size`` is recorded if given; otherwise none is, and the next :meth:`WalPager.open`
    records the size it is opened with. Takes the log's lock; raises :class:`LogLockedError`
    if the log is open, :class:`CorruptSegmentError` if the segments do not chain,
    :class:`CheckpointMissingError` when nothing vouches for a position and none was given,
    and ``ValueError`` when ``position`` disagrees with the segments.
    """
    files = LogFiles.for_db(db_path)
    fs = fs or OsFileSystem()
    handle = fs.try_lock(files.lock_path)
    if handle is None:
        raise LogLockedError(f"{files.path(files.db_name)}: the log is open elsewhere; close it "
                             "before rebuilding its checkpoint")
    try:
        return _rebuild(files, fs, page_size, position)
    finally:
        fs.unlock(handle)


def _rebuild(
    files: LogFiles, fs: FileSystem, page_size: int | None, position: ChainPosition | None
) -> CheckpointRebuild:
    names = sorted(fs.listdir(files.directory))
    epochs = segment_epochs(files, names)
    path = files.checkpoint_path
    damage = "missing"
    if checkpoint_name(files.db_name) in names:
        try:
            found = decode_checkpoint(fs.read_file(path), path)
        except CorruptSegmentError as error:
            damage = f"unreadable (offset {error.offset}: {error.reason})"
        else:
            if found.damage is None:
                return CheckpointRebuild(path=path, record=found.record, written=False,
                                         reason="the record is intact; nothing was changed")
            write_checkpoint(files, fs, found.record)
            return CheckpointRebuild(path=path, record=found.record, written=True,
                                     reason=f"{found.damage}; both copies rewritten from it")
    vouched = _chained_start(files, fs, epochs)
    if vouched is None:
        if position is None:
            raise CheckpointMissingError(
                path, 0, f"the checkpoint record is {damage} and no segment says where the log "
                "continues from, so nothing vouches for a position: nothing was changed. Give "
                "the position to record (--epoch E --commit-seq S; the last ones checkpointed, "
                "or 0 and 0 for a log whose commits may restart at 1)")
        why = f"the record was {damage}; no segment vouches for a position: recorded as given"
    else:
        if position is not None and position != vouched:
            raise ValueError(
                f"{files.path(files.db_name)}: the segments continue from epoch "
                f"{vouched.epoch}, commit_seq {vouched.commit_seq}, not the epoch "
                f"{position.epoch}, commit_seq {position.commit_seq} given; nothing was changed")
        position = vouched
        why = (f"the record was {damage}; segment {files.segment_path(epochs[0])} (the first "
               f"of {len(epochs)}, whose headers chain) continues from epoch {position.epoch}, "
               f"commit_seq {position.commit_seq}")
    record = CheckpointRecord(position=position, page_size=page_size or 0)
    write_checkpoint(files, fs, record)
    return CheckpointRebuild(path=path, record=record, written=True, reason=why)


def _chained_start(files: LogFiles, fs: FileSystem, epochs: list[int]) -> ChainPosition | None:
    """Where the segments ``epochs`` continue from, once their headers are seen to chain.

    Raises :class:`CorruptSegmentError` where two readable headers do not chain (a segment is
    missing between them, or belongs to another history). Checking stops at an unreadable
    header: what follows it is recovery's to judge (``skip_corrupt`` keeps the prefix).
    """
    start = first_segment_start(files, fs, epochs)
    if start is None:
        return None
    position = start
    for epoch in epochs:
        path = files.segment_path(epoch)
        try:
            header = decode_header(fs.read_file(path), path)
        except CorruptSegmentError:
            break
        try:
            position = check_continues(position, header, path)
        except CorruptSegmentError as error:
            raise CorruptSegmentError(
                error.path, error.offset, f"{error.reason}; the segments do not chain among "
                "themselves, so the first cannot vouch for the checkpoint position: nothing was "
                "changed") from None
    return start


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
