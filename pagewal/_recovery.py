"""Recovery: the I/O edge around the pure codec and chain modules.

Lists a database's segments, validates every segment and the chain, removes stale temporary
files (invariant 4: a ``.tmp`` file is never data) and segments a checkpoint covers, and
returns the durable commits in canonical order. Nothing is deleted before everything was
checked, and nothing that is not provably the log's own is read past or deleted.
Invariant 5: any mismatch raises :class:`CorruptSegmentError` naming file, offset and reason,
unless ``skip_corrupt`` asks for the longest valid prefix of the chain.

:func:`_read_chain` is the one loop that validates a log; :func:`recover`, :meth:`Wal.open`
and the read-only :func:`read_log` (``pagewal verify`` and ``inspect``) all go through it.
"""

from __future__ import annotations

import errno
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
    HEADER_SIZE,
    ChainPosition,
    DecodedSegment,
    RecordArray,
    SegmentHeader,
    decode_header,
    decode_segment,
    identify_segment,
)
from ._errors import CheckpointMissingError, CorruptSegmentError, ForeignFileError, LogLockedError
from ._fs import FileSystem, OsFileSystem, not_a_regular_file, publish_atomically
from ._layout import (
    NO_LOG_ID,
    SEGMENT_HEADER_SIZE,
    CheckpointFile,
    CheckpointRebuild,
    CheckpointRecord,
    FileState,
    LogFiles,
    checkpoint_name,
    decode_checkpoint,
    decode_file_header,
    parse_log_file_name,
    parse_segment_name,
    quarantine_name,
    segment_epochs,
    segment_name,
    temporary_names,
)
from ._logreader import LogScan, scan_log_files

_READ_ONLY_ATTEMPTS = 3

READ_ONLY_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})
"""Errors meaning "this file system (or directory) may not be changed by us": recovery then
reads without tidying, and says what it left."""

Progress: TypeAlias = Callable[[int, int], None]
"""``progress(done, total)``: called after each step of a long operation (here: after each
segment of the chain is checked). The command line draws it as a progress bar."""


def recover(
    db_path: str | os.PathLike[str],
    *,
    skip_corrupt: bool = False,
    delete_after: bool = False,
    fs: FileSystem | None = None,
    progress: Progress | None = None,
) -> RecoveryResult:
    """Read every durable commit of the log of ``db_path`` in canonical order.

    Removes leftover ``.tmp`` files, and segments a completed checkpoint already covers, once
    the whole log has been checked (an error deletes nothing). Only the log's own files are
    deleted: a segment only after its header shows it is that segment (the temporary files may
    be partial, so only regular ones are). A directory, symbolic link, fifo or other
    non-regular file at a log name, or a covered segment's name holding something else, raises
    :class:`ForeignFileError` naming each one. By default any corrupt segment or broken chain
    raises :class:`CorruptSegmentError`; with ``skip_corrupt=True`` recovery stops at the first
    bad segment and lists it and every later one in ``result.skipped`` (files are left in
    place). A checkpoint record that is missing while the segments continue a log that had
    commits, or unreadable in both copies, raises :class:`CheckpointMissingError` whatever
    ``skip_corrupt`` says (see :func:`rebuild_checkpoint`); one damaged copy is rewritten from
    the other and reported in ``result.warnings``.

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
    fs = fs or OsFileSystem()
    files = LogFiles.for_db(db_path, fs)
    try:
        handle = fs.try_lock(files.lock_path, files.file_mode)
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
            write_checkpoint(files, fs, CheckpointRecord(position=result.last,
                                                         page_size=result.page_size))
            # Each was read and validated just now, under the lock: the log's own. A crash
            # part way leaves covered segments, which the next recovery checks and deletes.
            for path in dict.fromkeys(info.path for info in result.segments):
                fs.unlink(path)  # a version 2 log file holds several segments
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
    tolerate_foreign: bool = False,
) -> RecoveryResult:
    """Validate the log of ``db_path`` exactly as :func:`recover` does, changing nothing.

    Takes no lock and creates, deletes or renames no file, so it is safe beside a live writer
    and on a read-only file system: temporary files and segments a checkpoint covers are
    ignored and listed in ``result.not_removed``. Files :func:`recover` would refuse raise
    :class:`ForeignFileError` here too; ``tolerate_foreign=True`` (for ``pagewal inspect``)
    leaves them out instead (a non-regular file at a segment name is then a gap in the chain),
    except a checkpoint that is not a regular file. A missing directory raises
    :class:`FileNotFoundError`.

    ``keep_records=False`` validates every segment and reports the chain (``segments``,
    ``skipped``, ``base``, ``last``, ``bytes_read``) but keeps no records or bytes, so its
    memory is that of the largest segment (its bytes and 39 bytes per record), not of the log:
    what ``pagewal verify`` and ``inspect`` use.
    """
    fs = fs or OsFileSystem()
    return _read_unlocked(LogFiles.for_db(db_path, fs), fs, skip_corrupt=skip_corrupt,
                          progress=progress, tolerate_foreign=tolerate_foreign,
                          keep_records=keep_records)


def _read_unlocked(
    files: LogFiles, fs: FileSystem, *, skip_corrupt: bool, progress: Progress | None,
    tolerate_foreign: bool = False,
    keep_records: bool = True,
) -> RecoveryResult:
    """Read a log someone else may be writing: list again if a segment vanishes meanwhile (a
    checkpoint deleted what it covers)."""
    for attempt in range(1, _READ_ONLY_ATTEMPTS + 1):
        try:
            return _read_chain(files, fs, skip_corrupt=skip_corrupt, tidy=False,
                               progress=progress, tolerate_foreign=tolerate_foreign,
                               keep_records=keep_records)
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
    progress: Progress | None = None, tolerate_foreign: bool = False, keep_records: bool = True,
    read_only_ok: bool = False,
) -> RecoveryResult:
    """Read and validate the chain. ``tidy`` (only while holding the log's lock) also deletes
    temporary files and segments the checkpoint already covers; with ``read_only_ok`` a file
    system that refuses (read-only, no permission) leaves them listed in ``not_removed``.
    ``keep_records=False`` validates every segment but keeps no records or bytes.

    Everything is checked before anything is deleted: a file at a log name that is not the
    log's own raises :class:`ForeignFileError`, a corrupt chain :class:`CorruptSegmentError`,
    and then nothing was deleted. ``tolerate_foreign`` (``pagewal inspect``) leaves such files
    out instead, except a checkpoint that is not a regular file.

    Memory: the segments' bytes (mapped, or read for files under 1 MiB) and the canonical
    index of 43 bytes per record are kept; while a segment is decoded its own index (39 bytes
    per record) and, if its lanes need sorting, ~16 bytes per record more exist beside them.
    """
    names = sorted(fs.listdir(files.directory))
    survey = survey_log(files, fs, names)
    if survey.foreign and not tolerate_foreign:
        raise ForeignFileError(survey.foreign)
    checkpoint, base, chain = survey.checkpoint, survey.base, survey.chain

    position = base
    infos: list[SegmentInfo] = []
    indexes: list[RecordArray] = []
    data: list[memoryview] = []
    skipped: list[SkippedSegment] = []
    bytes_read = 0
    for done, epoch in enumerate(chain, 1):
        if skipped:
            skipped.append(SkippedSegment(files.segment_path(epoch), 0,
                                          "follows a corrupt segment in the chain"))
        else:
            try:
                segment = read_segment(files, fs, epoch, position)
            except CorruptSegmentError as error:
                if checkpoint is None and not infos:
                    _raise_if_checkpoint_lost(files, fs, list(chain), error)
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
    # Version 2 log files continue the chain from the version 1 segments (or the checkpoint).
    log_id = checkpoint.record.log_id if checkpoint else NO_LOG_ID
    scan: LogScan | None = None
    not_ours = {path for path, _ in survey.foreign}  # left out (tolerate_foreign only)
    log_paths = [(path, file_no) for path, file_no in files.log_file_paths(names)
                 if path not in not_ours]
    if log_paths and skipped:
        skipped += [SkippedSegment(path, 0, "follows a corrupt segment in the chain")
                    for path, _ in log_paths]
    elif log_paths:
        try:
            scan = scan_log_files(fs, log_paths, position, log_id=log_id,
                                  skip_corrupt=skip_corrupt, tolerate_foreign=tolerate_foreign)
        except CorruptSegmentError as error:
            if checkpoint is None and not infos:
                _raise_if_checkpoint_lost_v2(files, fs, log_paths, error)
            raise
        if checkpoint is None and not infos and scan.end is None and scan.skipped:
            _raise_if_checkpoint_lost_v2(files, fs, log_paths, None)
        for segment in scan.segments:
            infos.append(SegmentInfo(segment.path, segment.header))
            bytes_read += SEGMENT_HEADER_SIZE + segment.header.body_length
            if keep_records:
                indexes.append(segment.records)
                data.append(segment.data)
        skipped += scan.skipped
        position, log_id = scan.last, scan.log_id
        if not keep_records:
            scan = attrs.evolve(scan, segments=())
    # Everything checked out: only now is anything changed.
    warnings: list[str] = []
    if checkpoint is not None and checkpoint.damage is not None:
        # DESIGN §4: one damaged copy never strands a store; the intact one is written back.
        rewritten = tidy
        if tidy:
            try:
                write_checkpoint(files, fs, checkpoint.record)
            except OSError as error:
                if not (read_only_ok and error.errno in READ_ONLY_ERRNOS):
                    raise
                rewritten = False
        warnings.append(
            f"{files.checkpoint_path}: {checkpoint.damage}; "
            + ("both copies were rewritten from it" if rewritten
               else "the next checkpoint or open rewrites both copies"))
    removed: list[str] = []
    not_removed = list(survey.removable)
    if tidy:
        not_removed = []
        for path in survey.removable:
            # A crash or an error part way leaves some of these: each is still a temporary
            # file or a covered segment, and the next recovery checks and deletes the rest.
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
    return RecoveryResult(
        base=base, last=position, segments=tuple(infos), skipped=tuple(skipped),
        removed_temp_files=tuple(removed), bytes_read=bytes_read,
        records=merge_indexes(indexes), data=tuple(data), not_removed=tuple(not_removed),
        page_size=checkpoint.record.page_size if checkpoint else 0, warnings=tuple(warnings),
        torn_tail=scan.torn_tail if scan else None,
        clean_shutdown=scan.clean_shutdown if scan else False, log_id=log_id, log_scan=scan,
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


def _raise_if_checkpoint_lost_v2(
    files: LogFiles, fs: FileSystem, log_paths: list[tuple[str, int]],
    error: CorruptSegmentError | None,
) -> None:
    """With no checkpoint file and no version 1 segment, the version 2 files do not read as
    a log from its start: if the oldest active one continues a log that had commits, the
    checkpoint record was lost (as :func:`_raise_if_checkpoint_lost` says for segments)."""
    start = _log_files_start(fs, log_paths)
    if start is not None:
        path, vouched = start
        if vouched == ChainPosition():
            return
        raise CheckpointMissingError(
            files.checkpoint_path, 0,
            f"the checkpoint record is missing, but log file {path} continues from epoch "
            f"{vouched.epoch}, commit_seq {vouched.commit_seq}: the record was lost (those "
            f"commits were checkpointed), or the files before this one were. Nothing was "
            f"changed; rebuild the record with '{files.rebuild_command} --epoch "
            f"{vouched.epoch} --commit-seq {vouched.commit_seq}'",
            vouched) from error


def _log_files_start(
    fs: FileSystem, log_paths: list[tuple[str, int]]
) -> tuple[str, ChainPosition] | None:
    """The oldest readable active log file among ``log_paths`` (path, file_no) and the position
    its header says the chain continues from; ``None`` when no file is active. Files before it
    were recycled, which only a checkpoint covering them does (DESIGN §4.1), so that position
    is at or before the last one checkpointed."""
    for path, _ in sorted(log_paths, key=lambda item: item[1]):
        try:
            header = decode_file_header(fs.read_file(path), path)
        except (CorruptSegmentError, OSError):
            continue
        if header.state is FileState.ACTIVE:
            return path, header.continues_from
    return None


def first_segment_start(
    files: LogFiles, fs: FileSystem, epochs: list[int]
) -> ChainPosition | None:
    """The position the first segment on disk says it continues from (its ``prev_epoch`` and
    ``commit_seq_lo - 1``); ``None`` when there is no segment or its header is unreadable."""
    if not epochs:
        return None
    try:
        header = read_segment_header(files, fs, epochs[0])
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


def read_segment_header(files: LogFiles, fs: FileSystem, epoch: int) -> SegmentHeader:
    """Read and check only segment ``epoch``'s 64-byte header (against the file's size and
    name): enough to know the file is this log's segment and which commits it holds."""
    path = files.segment_path(epoch)
    data = fs.read_file(path)  # never follows a link or waits on a fifo (ForeignFileError)
    identify_segment(data, path, epoch)
    return decode_header(data, path)


@attrs.frozen
class LogSurvey:
    """What recovery found at the log's names, before reading the chain or deleting anything.

    ``chain``: the epochs after the checkpoint (regular files); ``removable``: the temporary
    files (regular) and the covered segments whose header shows they are this log's, which
    tidying deletes; ``foreign``: ``(path, what it is)`` of every file at a log name that is not
    the log's own.
    """

    checkpoint: CheckpointFile | None
    chain: tuple[int, ...]
    removable: tuple[str, ...]
    foreign: tuple[tuple[str, str], ...]

    @property
    def base(self) -> ChainPosition:
        """Where the chain starts: the checkpoint's position, or an empty log's."""
        return self.checkpoint.record.position if self.checkpoint else ChainPosition()


def survey_log(files: LogFiles, fs: FileSystem, names: list[str]) -> LogSurvey:
    """Look at every log name among directory entries ``names`` without following a symbolic
    link or opening anything that is not a regular file, then read the checkpoint and the
    header of each segment it covers.

    A checkpoint that is not a regular file raises :class:`ForeignFileError` (the chain cannot
    start without it) with every other such file found. A temporary file may be partial, so
    only its type vouches for it; a covered segment is deleted only if its header is that
    segment's (:func:`identify_segment`). A temporary file or covered segment that vanishes
    meanwhile (a live writer published it, or its checkpoint deleted it) is left out; a segment
    of the chain that vanishes raises ``FileNotFoundError`` when it is read (the read-only
    reader then lists the directory again).
    """
    checkpoint = checkpoint_name(files.db_name)
    temporary = temporary_names(files.db_name, names)
    epochs = segment_epochs(files.db_name, names)
    foreign: list[tuple[str, str]] = []
    regular: set[str] = set()
    segments = [segment_name(files.db_name, e) for e in epochs]
    log_files = [n for n in names if parse_log_file_name(files.db_name, n) is not None]
    for name in ([checkpoint] if checkpoint in names else []) + temporary + segments + log_files:
        try:
            what = not_a_regular_file(fs, files.path(name))
        except FileNotFoundError:
            if name in segments:
                regular.add(name)  # reading it says it vanished, where that matters
            continue
        if what is None:
            regular.add(name)
        else:
            foreign.append((files.path(name), what))
    if any(path == files.path(checkpoint) for path, _ in foreign):
        raise ForeignFileError(tuple(sorted(foreign)))  # the chain cannot start without it
    checkpoint_file = read_checkpoint(files, fs, names, epochs)
    base = checkpoint_file.record.position if checkpoint_file else ChainPosition()
    removable = [files.path(n) for n in temporary if n in regular]
    chain: list[int] = []
    for epoch in epochs:
        path = files.segment_path(epoch)
        if os.path.basename(path) not in regular:
            continue
        if epoch > base.epoch:
            chain.append(epoch)
            continue
        try:
            identify_segment(fs.read_file(path)[:HEADER_SIZE], path, epoch)
        except FileNotFoundError:
            continue
        except ForeignFileError as error:  # replaced since it was looked at
            foreign += error.files
            continue
        except CorruptSegmentError as error:
            foreign.append((path, f"named like segment {epoch}, which the checkpoint (epoch "
                                  f"{base.epoch}) covers and recovery deletes, but not that "
                                  f"segment: {error.reason}"))
            continue
        removable.append(path)
    return LogSurvey(checkpoint=checkpoint_file, chain=tuple(chain), removable=tuple(removable),
                     foreign=tuple(sorted(foreign)))


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
                       sync=sync, mode=files.file_mode)


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
    epochs = segment_epochs(files.db_name, names)
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
    source = (f"segment {files.segment_path(epochs[0])} (the first of {len(epochs)}, whose "
              "headers chain)" if epochs else "")
    if vouched is None and not epochs:
        # Format 2: the oldest active log file's header records where the chain continues
        # from; recovery then checks that its segments chain on from there.
        start = _log_files_start(fs, files.log_file_paths(names))
        if start is not None:
            source, vouched = f"log file {start[0]} (the oldest active one)", start[1]
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
        why = (f"the record was {damage}; {source} continues from epoch {position.epoch}, "
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
            header = read_segment_header(files, fs, epoch)
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
    # Only version 1 segment files are renamed: a version 2 log file may hold the valid prefix
    # too, and its skipped tail is discarded by continuing in a fresh file (DESIGN §4).
    skipped = tuple(item for item in skipped
                    if parse_segment_name(files.db_name, os.path.basename(item.path)) is not None)
    if not skipped:
        return
    taken = set(fs.listdir(files.directory))
    for item in skipped:
        target = quarantine_name(os.path.basename(item.path), taken)
        taken.add(target)
        fs.rename(item.path, files.path(target))
    fs.fsync_dir(files.directory)
