"""Checkpoint: copy the durable prefix of the log into the data file, then retire those segments.

The steps, and what a crash after each one leaves (``WalPager.open`` recovers every case):

1. Read and validate the segments after the last checkpoint, in chain order, a batch at a time,
   and write each page's last image of the batch at ``page_no * page_size`` (``pwritev`` over
   runs of consecutive pages). Crash: the data file holds a mix of old and new committed
   images; the segments and the old checkpoint are intact, and replaying them over the data
   file is idempotent (each page ends with its last image in canonical order).
2. fsync the data file.
3. Record the checkpoint (epoch, commit_seq, page size; two copies, DESIGN §4) atomically:
   temporary file, fsync, rename, directory fsync (DESIGN invariant 4). Crash before the
   rename is durable: step 1's case.
4. Delete the applied segments (each was read and validated in step 1, or by the recovery
   that opened the log, under the log's lock), fsync the directory. Crash: recovery finds
   segments the checkpoint covers and deletes them after checking each one's header.

Whatever a crash tears in the data file is rewritten by the replay: only pages the segments
after the durable checkpoint carry are written before that checkpoint is recorded.

:meth:`Wal.retire` runs steps 3 and 4 alone for a caller that keeps its pages itself
(:func:`covered_segments`, ``write_checkpoint``, :func:`delete_segments`); the pager could
retire through it too.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator, Sequence

import attrs
import numpy as np

from ._chain import RecoveryResult, canonical_records, check_continues, latest_images
from ._codec import ChainPosition, DecodedSegment, RecordArray
from ._errors import CorruptSegmentError, InvalidPageError
from ._fs import FileSystem, write_all
from ._layout import (
    NO_LOG_ID,
    SEGMENT_HEADER_SIZE,
    CheckpointRecord,
    LogFiles,
    segment_epochs,
)
from ._logreader import scan_log_files
from ._recovery import read_segment, read_segment_header, write_checkpoint

BATCH_BYTES = 64 << 20
"""Segment bytes read per batch: bounds a checkpoint's memory whatever the log's size."""

BatchHook = Callable[[Sequence[int], Sequence[int], Sequence[memoryview]], None]
"""Called with ``(page_nos, commit_seqs, images)`` of a batch: before it is written, and (as
``on_written``) after."""


@attrs.frozen(kw_only=True)
class CheckpointResult:
    """What a checkpoint did. ``position`` is where the checkpoint now stands."""

    position: ChainPosition
    segments: int
    pages_written: int
    bytes_read: int
    seconds: float


def run_checkpoint(
    files: LogFiles,
    fs: FileSystem,
    data_fd: int,
    *,
    page_size: int,
    base: ChainPosition,
    target: ChainPosition,
    sync: bool,
    before_write: BatchHook | None = None,
    on_written: BatchHook | None = None,
    recovered: RecoveryResult | None = None,
    log_id: bytes = NO_LOG_ID,
    retire_log_files: Callable[[ChainPosition], None] | None = None,
) -> CheckpointResult:
    """Apply the segments after ``base`` through ``target`` to the data file and retire them.

    ``target`` must be durable (published; fsynced with ``fsync=full``). ``sync=False``
    (``fsync=off``) leaves out every fsync. ``recovered``, if given, is what recovery has just
    read and validated from ``base`` to ``target`` (a log being opened): it is applied as it is
    rather than read again. Raises :class:`CorruptSegmentError` if a segment fails validation
    or the chain does not reach ``target``, :class:`InvalidPageError` if a record is not
    exactly ``page_size`` bytes, ``OSError`` if the file system fails; nothing is deleted then,
    and the checkpoint file still names ``base``.

    Format 2 (DESIGN §4): the segments in log files are read with the log reader from where
    the format 1 segments (if any) end; the record carries ``log_id``; once it is durable,
    ``retire_log_files`` hands the covered log files back to the writer to be recycled.
    """
    started = time.perf_counter()
    hooks = (before_write, on_written)
    if recovered is not None:
        if (recovered.base, recovered.last) != (base, target):
            raise ValueError(f"recovered {recovered.base}..{recovered.last}, not {base}..{target}")
        epochs = [info.header.epoch for info in recovered.segments
                  if info.header.version == 1]
        segment_count = len(recovered.segments)
        _check_page_size(recovered.records, [info.path for info in recovered.segments],
                         page_size)
        pages_written = _write_pages(fs, data_fd, page_size, recovered.latest_images(), hooks)
        bytes_read, position = recovered.bytes_read, recovered.last
    else:
        epochs = [e for e in segment_epochs(files.db_name, fs.listdir(files.directory))
                  if base.epoch < e <= target.epoch]
        position = base
        batch: list[DecodedSegment] = []
        batch_bytes = bytes_read = pages_written = segment_count = 0
        segments = itertools.chain(_read_v1(files, fs, epochs, base),
                                   _read_log_files(files, fs, base, target, epochs, log_id))
        for segment, is_last in _mark_last(segments):
            position = ChainPosition(segment.header.epoch, segment.header.commit_seq_hi)
            batch.append(segment)
            segment_count += 1
            # A format 2 segment's data is its whole log file: count the segment's own bytes.
            batch_bytes += SEGMENT_HEADER_SIZE + segment.header.body_length
            if batch_bytes >= BATCH_BYTES or is_last:
                records = canonical_records(batch)
                _check_page_size(records, [s.path for s in batch], page_size)
                pages_written += _write_pages(
                    fs, data_fd, page_size, latest_images(records, [s.data for s in batch]),
                    hooks)
                bytes_read += batch_bytes
                batch, batch_bytes = [], 0
    if position != target:
        raise CorruptSegmentError(
            files.segment_path(target.epoch), 0,
            f"the log ends at epoch {position.epoch}, commit_seq {position.commit_seq}, short of "
            f"the durable epoch {target.epoch}, commit_seq {target.commit_seq}: a segment is "
            "missing")
    if position != base:
        if sync:
            fs.fsync(data_fd)
        write_checkpoint(files, fs, CheckpointRecord(position=target, page_size=page_size,
                                                     log_id=log_id),
                         sync=sync)
        delete_segments(files, fs, epochs, sync=sync)
        if retire_log_files is not None:
            retire_log_files(target)
    return CheckpointResult(position=position, segments=segment_count, pages_written=pages_written,
                            bytes_read=bytes_read, seconds=time.perf_counter() - started)


def _read_v1(
    files: LogFiles, fs: FileSystem, epochs: Sequence[int], base: ChainPosition
) -> Iterator[DecodedSegment]:
    """The format 1 segments ``epochs``, read and checked to chain on from ``base``."""
    position = base
    for epoch in epochs:
        segment = read_segment(files, fs, epoch, position)
        position = ChainPosition(segment.header.epoch, segment.header.commit_seq_hi)
        yield segment


def _read_log_files(
    files: LogFiles, fs: FileSystem, base: ChainPosition, target: ChainPosition,
    v1_epochs: Sequence[int], log_id: bytes,
) -> Iterator[DecodedSegment]:
    """The format 2 segments after the format 1 ones, through ``target`` (read with the log
    reader, which checks each one's identity and chain)."""
    paths = files.log_file_paths(fs.listdir(files.directory))
    start = base
    if v1_epochs:  # the format 1 segments come first; the scan starts where they end
        header = read_segment_header(files, fs, v1_epochs[-1])
        start = ChainPosition(header.epoch, header.commit_seq_hi)
    if not paths or start.epoch >= target.epoch:
        return
    # The log is live: its pool may recycle a covered file between the listing and the read.
    for segment in scan_log_files(fs, paths, start, log_id=log_id, skip_vanished=True,
                                  through=target).segments:
        if segment.header.epoch > target.epoch:
            break
        yield segment


def _mark_last(items: Iterator[DecodedSegment]) -> Iterator[tuple[DecodedSegment, bool]]:
    """Each item with whether it is the last one."""
    previous: DecodedSegment | None = None
    for item in items:
        if previous is not None:
            yield previous, False
        previous = item
    if previous is not None:
        yield previous, True


def covered_segments(
    files: LogFiles, fs: FileSystem, base: ChainPosition, through_seq: int, last_epoch: int
) -> tuple[ChainPosition, list[int]]:
    """The segments after ``base`` (up to epoch ``last_epoch``) whose commits all have a
    ``commit_seq`` of at most ``through_seq``, in chain order, and the chain position at the
    end of the last of them (``base`` if none is wholly covered).

    Reads only headers, each checked to chain onto the one before (from ``base``): a file is
    deleted only once it is known to be this log's segment. Raises
    :class:`CorruptSegmentError` for a header that fails or does not chain.
    """
    epochs = [e for e in segment_epochs(files.db_name, fs.listdir(files.directory))
              if base.epoch < e <= last_epoch]
    position, covered = base, []
    for epoch in epochs:
        header = read_segment_header(files, fs, epoch)
        after = check_continues(position, header, files.segment_path(epoch))
        if header.commit_seq_hi > through_seq:
            break  # it also holds later commits: only whole segments are retired
        position = after
        covered.append(epoch)
    return position, covered


def delete_segments(files: LogFiles, fs: FileSystem, epochs: Sequence[int], *, sync: bool) -> None:
    """Step 4: delete segments a durable checkpoint record covers, then fsync the directory.
    A crash (or error) part way leaves covered segments that recovery deletes unread."""
    for epoch in epochs:
        fs.unlink(files.segment_path(epoch))
    if sync and epochs:
        fs.fsync_dir(files.directory)


def _check_page_size(records: RecordArray, paths: Sequence[str], page_size: int) -> None:
    """Every record of canonical ``records`` (``segment`` indexes ``paths``) is one page."""
    wrong = np.flatnonzero(records["image_length"] != page_size)
    if wrong.size:
        row = records[wrong[0]]
        raise InvalidPageError(
            f"{paths[int(row['segment'])]}: commit {int(row['commit_seq'])} holds a "
            f"{int(row['image_length'])}-byte image of page {int(row['page_no'])}, but the "
            f"pager's pages are {page_size} bytes")


def _write_pages(
    fs: FileSystem,
    data_fd: int,
    page_size: int,
    latest: tuple[list[int], list[int], list[memoryview]],
    hooks: tuple[BatchHook | None, BatchHook | None],
) -> int:
    """Write each page's image at ``page_no * page_size``; runs of consecutive page numbers go
    out in one pwritev each. Returns the number of pages written."""
    page_nos, commit_seqs, images = latest
    before_write, on_written = hooks
    if before_write is not None:
        before_write(page_nos, commit_seqs, images)
    breaks = (np.flatnonzero(np.diff(np.asarray(page_nos, dtype=np.int64)) != 1) + 1).tolist()
    for start, stop in zip([0, *breaks], [*breaks, len(page_nos)], strict=True):
        write_all(fs, data_fd, images[start:stop], offset=page_nos[start] * page_size)
    if on_written is not None:
        on_written(page_nos, commit_seqs, images)
    return len(page_nos)
