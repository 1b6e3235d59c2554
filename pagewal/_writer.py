"""The writer interface the log drives: place a sealed epoch, write it, sync, retire, finish.

:class:`LogWriter` is format 2 (DESIGN §4.3): segments packed into preallocated log files. It
is built from what recovery found (:class:`~pagewal._logreader.LogScan`) and continues the
log where DESIGN §4 says: after a clean shutdown in place of the clean-shutdown marker; after
a crash (or on a version 1 log, or a new one) in a fresh file whose header records where the
chain continues from, which is what durably discards a torn tail.

Threads: :meth:`place`, :meth:`sync`, :meth:`retire_through` and :meth:`finish` are called
by whoever holds the log's publish lock; :meth:`write` runs outside it, for several
placements at once.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Sequence
from typing import Any

import attrs

from ._chain import RecoveryResult
from ._codec import ChainPosition
from ._config import LOG_FILE_ALIGNMENT, FsyncMode, WalConfig
from ._fs import Buffer, FileSystem, write_all
from ._layout import (
    LOG_ID_SIZE,
    NO_LOG_ID,
    FileState,
    LogFiles,
    encode_shutdown_marker,
    padded,
    segment_buffers,
    segment_span,
)
from ._logfiles import (
    LogFileSpec,
    LogFileWriter,
    OpenLogFile,
    Placement,
    ReadyFilePool,
    WriteTimes,
)
from ._logreader import FileRole


def new_log_id() -> bytes:
    """A random 128-bit log id (never all zeros, which means "none")."""
    while True:
        log_id = secrets.token_bytes(LOG_ID_SIZE)
        if any(log_id):
            return log_id


@attrs.define(eq=False)
class _KnownFile:
    """A log file of this log that a checkpoint may retire: its number, path, descriptor (if
    this writer holds it open) and the last epoch of the chain in it (0: none)."""

    file_no: int
    path: str
    fd: int | None
    last_epoch: int


class LogWriter:
    """Format-2 writer of one open log."""

    def __init__(self, fs: FileSystem, files: LogFiles, config: WalConfig,
                 recovery: RecoveryResult) -> None:
        self._fs = fs
        scan = recovery.log_scan
        log_id = recovery.log_id if any(recovery.log_id) else new_log_id()
        self.log_id = log_id
        self.spec = LogFileSpec(
            directory=files.directory, db_name=files.db_name, log_id=log_id,
            capacity=config.log_file_bytes, alignment=LOG_FILE_ALIGNMENT,
            inflight_limit=config.inflight_epochs, mode=files.file_mode,
            direct=config.fsync is FsyncMode.FULL)
        known: list[_KnownFile] = []
        ready: list[OpenLogFile] = []
        active: OpenLogFile | None = None
        max_file_no = 0
        min_epoch = recovery.last.epoch + 1
        if scan is not None:
            max_file_no = scan.max_file_no
            min_epoch = max(min_epoch, scan.next_epoch)
            append_at = scan.append_at
            highest_written = max((i.file_no for i in scan.files
                                   if i.role is not FileRole.SPARE), default=0)
            for info in scan.files:
                if info.role is FileRole.SPARE:
                    header = info.header
                    # A READY file numbered above every written one is a ready file; other
                    # spares (being created or recycled) are left to a later checkpoint.
                    if (header is not None and header.state is FileState.READY
                            and header.file_no == info.file_no
                            and header.log_id == log_id and info.file_no > highest_written
                            and header.capacity == config.log_file_bytes):
                        fd = fs.open_for_update(info.path)
                        ready.append(OpenLogFile(path=info.path, fd=fd, header=header,
                                                 next_offset=header.alignment))
                    elif header is not None and header.log_id == log_id:
                        # Being recycled when the process stopped (its header names its next
                        # number): this log's own, so the next checkpoint may recycle it.
                        known.append(_KnownFile(info.file_no, info.path, None, 0))
                    # Anything else (an unwritten header) is not provably this log's own:
                    # never written through nor deleted.
                elif info.role in (FileRole.DAMAGED, FileRole.FOREIGN):
                    continue  # never written through nor deleted: not provably this log's
                elif append_at is not None and info.file_no == append_at.file_no:
                    assert info.header is not None
                    active = OpenLogFile(path=info.path, fd=fs.open_for_update(info.path),
                                         header=info.header, next_offset=append_at.offset,
                                         last_epoch=info.last_epoch)
                elif info.header is not None and info.header.log_id == log_id:
                    known.append(_KnownFile(info.file_no, info.path, None, info.last_epoch))
        if self.spec.direct:  # files made ready by the pool get theirs in its thread
            for file in [*ready, *([] if active is None else [active])]:
                file.open_direct(fs)
        self.next_epoch = min_epoch
        self._known = known
        self.pool = self._new_pool(fs, self.spec, max_file_no + 1, ready)
        self._files = LogFileWriter(
            fs, self.spec, self.pool, durable_writes=config.fsync is FsyncMode.FULL,
            active=active, position=recovery.last, min_epoch=min_epoch,
            on_activate=self._activated)
        self._active_known: _KnownFile | None = None  # the entry of the active file
        if active is not None:
            self._activated(active)
            self._known[-1].last_epoch = active.last_epoch

    def start(self) -> None:
        """Have a log file ready to write before the first commit (``Wal.open``): the commit
        path then only waits for a file when the pool runs dry. ``OSError`` if none can be
        made ready; the caller closes the writer."""
        self._files.activate()

    def _new_pool(self, fs: FileSystem, spec: LogFileSpec, next_file_no: int,
                  ready: Sequence[OpenLogFile]) -> ReadyFilePool:
        """The pool of ready files; a seam the crash harness uses to shape when files come
        back to be recycled."""
        return ReadyFilePool(fs, spec, next_file_no, ready=ready)

    def _activated(self, file: OpenLogFile) -> None:
        self._active_known = _KnownFile(file.file_no, file.path, file.fd, 0)
        self._known.append(self._active_known)

    # ------------------------------------------------------------------ the interface

    def place(self, epoch: int, commit_seq_hi: int, body_length: int) -> Placement:
        """Reserve room for a sealed epoch's segment (epochs in seal order)."""
        placement = self._files.place(epoch, commit_seq_hi,
                                      segment_span(body_length, self.spec.alignment))
        assert self._active_known is not None and (
            self._active_known.file_no == placement.file.file_no)
        self._active_known.last_epoch = epoch
        return placement

    def segment(
        self, placement: Placement, body: Sequence[Buffer], *, epoch: int, record_count: int,
        lane_count: int, commit_seq_lo: int, commit_seq_hi: int, prev_epoch: int,
        body_length: int, flags: int, acked_epoch: int,
    ) -> list[Buffer]:
        """The buffers of the segment of an epoch placed at ``placement``, for its one write:
        its header (with the identity of its file, invariant 4b: log id, file_no, salt),
        ``body`` (not copied) and padding to the file's alignment."""
        file_header = placement.file.header
        return segment_buffers(
            body, self.spec.alignment, flags=flags, epoch=epoch, record_count=record_count,
            lane_count=lane_count, commit_seq_lo=commit_seq_lo, commit_seq_hi=commit_seq_hi,
            prev_epoch=prev_epoch, body_length=body_length, log_id=self.log_id,
            file_no=file_header.file_no, salt=file_header.salt, acked_epoch=acked_epoch)

    def write(self, placement: Placement, buffers: Sequence[Buffer]) -> WriteTimes:
        """One write at the placement; durable on return with ``fsync=full`` (invariant 1)."""
        return self._files.write(placement, buffers)

    def sync(self) -> int:
        """``fsync=normal``: fsync what was written without sync; the number of fsyncs."""
        return self._files.sync()

    @property
    def files_in_use(self) -> int:
        return len(self._known)

    def retire_through(self, position: ChainPosition) -> int:
        """Hand the files a durable checkpoint at ``position`` covers to the pool (recycled
        or deleted): every file before the first one holding a chain segment after it. The
        active file is never retired. Returns how many were handed back."""
        active = self._files.active
        keep_from = active.file_no if active is not None else None
        for item in sorted(self._known, key=lambda k: k.file_no):
            if item.last_epoch > position.epoch:
                keep_from = item.file_no
                break
        if keep_from is None:
            return 0
        retired = [k for k in self._known if k.file_no < keep_from]
        if not retired:
            return 0
        self._known = [k for k in self._known if k.file_no >= keep_from]
        self._files.retire_before(keep_from)
        self.pool.recycle([(k.path, k.fd) for k in retired])
        return len(retired)

    def finish(self, durable: ChainPosition, *, marker: bool, sync: bool) -> None:
        """Close the log files: first, with ``marker``, end the log with a clean-shutdown
        marker recording ``durable`` (DESIGN §4) after its last segment."""
        try:
            active = self._files.active
            if marker and active is not None:
                block = encode_shutdown_marker(
                    log_id=self.log_id, file_no=active.file_no, salt=active.header.salt,
                    epoch=durable.epoch, commit_seq=durable.commit_seq)
                size = padded(len(block), self.spec.alignment)
                if active.room >= size:
                    write_all(self._fs, active.fd, [block, bytes(size - len(block))],
                              offset=active.next_offset, dsync=sync)
        finally:
            self.pool.close()
            owned = {file.fd for file in self._files.files}
            self._files.close()  # closes the descriptors in ``owned``
            for item in self._known:
                if item.fd is not None and item.fd not in owned:
                    with contextlib.suppress(OSError):
                        self._fs.close(item.fd)
                item.fd = None

    @property
    def statistics(self) -> dict[str, Any]:
        """The writer's counters, by their :class:`~pagewal.WalStats` names."""
        pool = self.pool
        return {"log_file_waits": pool.waits, "log_file_wait_seconds": pool.wait_seconds,
                "log_files_created": pool.files_created,
                "log_files_recycled": pool.files_recycled,
                "oversized_log_files": self._files.oversized_files}


__all__ = ["NO_LOG_ID", "LogWriter", "Placement", "WriteTimes", "new_log_id"]
