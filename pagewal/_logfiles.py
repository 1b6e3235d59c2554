"""Format-2 log files on disk: made ready ahead of need, written in place, recycled.

DESIGN §4.1 and §4.3. Everything that creates, renames, deletes or zero-fills a log file lives
here and runs off the commit path, in the pool's own thread (invariant 4a): a file is created
under a temporary name, zero-filled to its full capacity, given a READY header, fsynced, renamed
to its final name and its directory fsynced before any segment goes into it. The commit path
only ever overwrites zero-filled (or recycled) blocks of such a file at aligned offsets: the
file's size and blocks never change, so a durable write needs no journal commit.

:class:`ReadyFilePool` keeps the next files ready. :class:`LogFileWriter` places each sealed
epoch's segment at the next aligned offset of the active file (moving to a ready file when it
does not fit), writes it with one durable write, and hands files a checkpoint has covered back
to the pool to be recycled under a new number and salt.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import secrets
import threading
import time
from collections.abc import Callable, Sequence

import attrs

from ._codec import MAX_POSITION, ChainPosition
from ._fs import IOV_MAX, Buffer, FileMode, FileSystem, write_all
from ._layout import (
    FileState,
    LogFileHeader,
    log_file_name,
)

ZERO_CHUNK = 1 << 20
"""Bytes of zeros written per call while a new log file is filled."""

ZERO_SYNC_BYTES = 8 << 20
"""While a new log file is filled, its data is synced every this many bytes: the page cache
then never holds more than this of its zeros dirty, so the kernel's writeback throttling
(which stalls every writer once too much is dirty) does not fall on the commit path."""

DIRECT_MAX_BYTES = 16 << 10
"""Segments up to this size are written with direct I/O (``O_DIRECT`` with ``RWF_DSYNC``)
where the file system allows it, with ``fsync=full``. Measured on this project's machines
(ext4 on a virtual disk, 8 KiB durable overwrites of zero-filled blocks): 15-20% less time per
write than through the page cache, and so faster group commits for a lone or a few
committers. From 64 KiB on, the copy into an aligned buffer costs more than it saves."""


def _aligned_buffer() -> memoryview:
    """A page-aligned buffer of :data:`DIRECT_MAX_BYTES` (an anonymous mapping)."""
    return memoryview(mmap.mmap(-1, DIRECT_MAX_BYTES))


READY_AHEAD = 1
"""Ready files the pool keeps beyond the active one."""


def new_salt() -> int:
    """A random non-zero u64: a recycled file's old segments never match its new header."""
    while True:
        salt = secrets.randbits(64)
        if salt:
            return salt


@attrs.frozen
class LogFileSpec:
    """What every log file of one log shares."""

    directory: str
    db_name: str
    log_id: bytes
    capacity: int
    alignment: int
    inflight_limit: int
    mode: FileMode | None = None
    direct: bool = False  # small segments are written with direct I/O where possible

    def path(self, file_no: int) -> str:
        return os.path.join(self.directory, log_file_name(self.db_name, file_no))

    def ready_header(self, file_no: int, capacity: int) -> LogFileHeader:
        return LogFileHeader(
            log_id=self.log_id, file_no=file_no, salt=new_salt(), capacity=capacity,
            alignment=self.alignment, inflight_limit=self.inflight_limit,
            state=FileState.READY, prev_file_no=0, continues_from=ChainPosition(0, 0),
            min_epoch=0)


@attrs.define(eq=False)
class OpenLogFile:
    """A log file this log holds open: READY in the pool, or ACTIVE (being written)."""

    path: str
    fd: int
    header: LogFileHeader
    next_offset: int  # where the next segment goes
    last_epoch: int = 0  # the last epoch placed in it (0: none)
    unsynced: bool = False  # written without a sync since the last one (fsync=normal/off)
    direct_fd: int | None = None  # the same file opened for direct I/O (see DIRECT_MAX_BYTES)

    def open_direct(self, fs: FileSystem) -> None:
        """Open :attr:`direct_fd` (off the commit path: when the file is made ready)."""
        if self.direct_fd is None:
            self.direct_fd = fs.open_direct(self.fd)

    def close_direct(self, fs: FileSystem) -> None:
        """Close :attr:`direct_fd`, if open: the file takes no more segments (or is closed)."""
        direct, self.direct_fd = self.direct_fd, None
        if direct is not None:
            with contextlib.suppress(OSError):
                fs.close(direct)

    @property
    def file_no(self) -> int:
        return self.header.file_no

    @property
    def room(self) -> int:
        return self.header.capacity - self.next_offset


@attrs.define(eq=False)  # not frozen: one per epoch on the commit path, never changed
class Placement:
    """Where one sealed epoch's segment goes: ``file`` at ``offset``, ``span`` bytes."""

    file: OpenLogFile
    offset: int
    span: int


class ReadyFilePool:
    """Keeps :data:`READY_AHEAD` log files ready ahead of need, in a thread of its own.

    Files are handed out in file-number order (the reader follows the chain in that order).
    A file a checkpoint covered is recycled when handed back (:meth:`recycle`): its header is
    rewritten with the next number and a new salt and made durable, then it is renamed and the
    directory fsynced; with enough files ready it is deleted instead. An ``OSError`` in the
    thread is kept and raised by the next :meth:`take`: the writer then breaks the log.
    """

    def __init__(
        self, fs: FileSystem, spec: LogFileSpec, next_file_no: int, *,
        ready: Sequence[OpenLogFile] = (), ahead: int = READY_AHEAD,
    ) -> None:
        self._fs = fs
        self._spec = spec
        self._ahead = ahead
        self._next_file_no = next_file_no
        self._floor = 0  # files numbered below it are never handed out (see make_now)
        self._ready: list[OpenLogFile] = sorted(ready, key=lambda f: f.file_no)
        self._retired: list[tuple[str, int | None]] = []  # (path, open fd or None)
        self._error: BaseException | None = None
        self._takers = 0  # threads waiting in take()
        self._stop = False
        self.waits = 0  # takes that found no file ready (DESIGN §6)
        self.wait_seconds = 0.0
        self.files_created = 0
        self.files_recycled = 0
        self._cv = threading.Condition(threading.Lock())
        self._thread = threading.Thread(target=self._run, name="pagewal-log-files", daemon=True)
        self._thread.start()

    def take(self, *, counted: bool = True) -> OpenLogFile:
        """The next ready file (the lowest number); waits if none is ready yet, and counts
        the wait unless ``counted`` is False (a log being opened, not a commit waiting)."""
        with self._cv:
            if not self._ready and self._error is None:
                self.waits += counted
                started = time.perf_counter()
                self._takers += 1
                self._cv.notify_all()
                while not self._ready and self._error is None and not self._stop:
                    self._cv.wait()
                self._takers -= 1
                if counted:
                    self.wait_seconds += time.perf_counter() - started
            if self._error is not None:
                raise self._error
            if not self._ready:
                raise RuntimeError("the log file pool is closed")
            taken = self._ready.pop(0)
            self._cv.notify_all()
            return taken

    def make_now(self, capacity: int) -> OpenLogFile:
        """Create a file of ``capacity`` bytes now, in the caller's thread: for an epoch larger
        than a log file (invariant 4a's one exception). Ready files numbered below it are
        deleted, since files are used in number order."""
        with self._cv:
            file_no = self._next_file_no
            self._next_file_no += 1
            self._floor = file_no + 1
            skipped = self._ready
            self._ready = []
            for file in skipped:
                file.close_direct(self._fs)
            self._retired.extend((f.path, f.fd) for f in skipped)
            self._cv.notify_all()
        return self._create(file_no, capacity)

    def recycle(self, files: Sequence[tuple[str, int | None]]) -> None:
        """Hand back files every segment of which a durable checkpoint covers (path, open
        descriptor or None)."""
        if files:
            with self._cv:
                self._retired.extend(files)
                self._cv.notify_all()

    def close(self) -> None:
        """Stop the thread; close the ready files (they stay on disk, ready for the next open)
        and whatever was handed back but not yet recycled (left for the next checkpoint)."""
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        self._thread.join()
        for item in self._ready:
            item.close_direct(self._fs)
            with contextlib.suppress(OSError):
                self._fs.close(item.fd)
        for _, fd in self._retired:
            if fd is not None:
                with contextlib.suppress(OSError):
                    self._fs.close(fd)
        self._ready, self._retired = [], []

    # ------------------------------------------------------------------ the pool's thread

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._stop and self._error is None and not self._work_due():
                    self._cv.wait()
                # Stopping, files handed back are still recycled or deleted: a checkpoint
                # covers them and nothing else tracks them.
                if self._error is not None or (self._stop and not self._retired):
                    return
                retired = self._retired.pop(0) if self._retired else None
                file_no = self._next_file_no
                # A handed-back file is recycled while fewer than ahead + 1 files are ready (so
                # a log that checkpoints reuses its files instead of zero-filling new ones);
                # beyond that it is deleted.
                recycle = len(self._ready) < max(self._ahead + 1, self._takers)
                if retired is None or recycle:
                    self._next_file_no += 1
            try:
                if retired is not None and not recycle:
                    self._delete(*retired)
                    continue
                if retired is not None:
                    made = self._recycle(retired[0], retired[1], file_no)
                else:
                    made = self._create(file_no, self._spec.capacity)
            except BaseException as error:
                # An OSError is the disk's (the writer breaks the log with it); anything else
                # is a bug, reported the same way: a waiting take() must never wait forever.
                with self._cv:
                    self._error = error
                    self._cv.notify_all()
                if not isinstance(error, OSError):
                    raise
                return
            with self._cv:
                if made.file_no < self._floor:  # made while make_now() went ahead of it
                    made.close_direct(self._fs)
                    self._retired.append((made.path, made.fd))
                else:
                    self._ready.append(made)
                    self._ready.sort(key=lambda f: f.file_no)
                self._cv.notify_all()

    def _work_due(self) -> bool:
        if self._stop:
            return bool(self._retired)
        return (bool(self._retired) or len(self._ready) < self._ahead
                or (self._takers > 0 and not self._ready))

    def _create(self, file_no: int, capacity: int) -> OpenLogFile:
        """Invariant 4a: a new file is zero-filled to ``capacity``, given its header and made
        durable (data, then the name) before it is ever handed out."""
        fs, spec = self._fs, self._spec
        final = spec.path(file_no)
        temp = final + ".tmp"
        fd = fs.open_for_write(temp, spec.mode)  # O_EXCL: nothing already there is touched
        try:
            header = spec.ready_header(file_no, capacity)
            zeros = memoryview(bytes(min(ZERO_CHUNK, capacity)))
            offset = 0
            while offset < capacity:
                chunk = zeros[: min(len(zeros), capacity - offset)]
                offset += write_all(fs, fd, [chunk], offset=offset)
                if offset % ZERO_SYNC_BYTES == 0 and offset < capacity:
                    fs.fsync(fd)
            write_all(fs, fd, [header.encode()], offset=0)
            fs.fsync(fd)
            fs.rename(temp, final)
            fs.fsync_dir(spec.directory)
        except BaseException:
            with contextlib.suppress(OSError):
                fs.close(fd)
            with contextlib.suppress(OSError):
                fs.unlink(temp)
            raise
        with self._cv:
            self.files_created += 1
        return self._opened(OpenLogFile(path=final, fd=fd, header=header,
                                        next_offset=spec.alignment))

    def _recycle(self, path: str, fd: int | None, file_no: int) -> OpenLogFile:
        """A retired file gets a new number and salt: header first (durable), then the name.
        A crash between the two leaves a file whose header names another number than its
        name: recovery knows it for a spare of this log, never for data."""
        fs, spec = self._fs, self._spec
        if fd is None:
            fd = fs.open_for_update(path)
        try:
            capacity = fs.file_size(fd)
            header = spec.ready_header(file_no, capacity)
            write_all(fs, fd, [header.encode()], offset=0)
            fs.fsync(fd)
            final = spec.path(file_no)
            fs.rename(path, final)
            fs.fsync_dir(spec.directory)
        except BaseException:
            with contextlib.suppress(OSError):
                fs.close(fd)
            raise
        with self._cv:
            self.files_recycled += 1
        return self._opened(OpenLogFile(path=final, fd=fd, header=header,
                                        next_offset=spec.alignment))

    def _opened(self, file: OpenLogFile) -> OpenLogFile:
        if self._spec.direct:
            file.open_direct(self._fs)
        return file

    def _delete(self, path: str, fd: int | None) -> None:
        fs = self._fs
        if fd is not None:
            with contextlib.suppress(OSError):
                fs.close(fd)
        fs.unlink(path)
        fs.fsync_dir(self._spec.directory)


@attrs.define(eq=False)  # not frozen: one per epoch on the commit path, never changed
class WriteTimes:
    """How long one segment's write took, and whether it was a durable write."""

    seconds: float
    durable: bool


class LogFileWriter:
    """Places sealed epochs in log files and writes them (DESIGN §4.3).

    :meth:`place` is called for epochs in seal order, under the log's seal lock: it decides
    each segment's offset, so segments lie in a file in epoch order with no gaps. :meth:`write`
    may then run for several placements at once, from different threads. A file's ACTIVE
    header (where the chain continues from) is written durably when the file is first placed
    into, before any segment of it is written.
    """

    def __init__(
        self, fs: FileSystem, spec: LogFileSpec, pool: ReadyFilePool, *, durable_writes: bool,
        active: OpenLogFile | None, position: ChainPosition, min_epoch: int,
        on_activate: Callable[[OpenLogFile], None] | None = None,
    ) -> None:
        self._fs = fs
        self._spec = spec
        self._pool = pool
        self._durable_writes = durable_writes
        self._active = active
        # The chain position after the last placed epoch (plain numbers: set once per epoch).
        self._last_epoch, self._last_commit_seq = position.epoch, position.commit_seq
        self._min_epoch = min_epoch
        self._on_activate = on_activate
        self.files: list[OpenLogFile] = [] if active is None else [active]
        self.oversized_files = 0
        # Aligned buffers for direct writes, reused: one per write in flight at most.
        self._scratch: list[memoryview] = []
        self._direct_works = True

    @property
    def active(self) -> OpenLogFile | None:
        return self._active

    def place(self, epoch: int, commit_seq_hi: int, span: int) -> Placement:
        """Reserve ``span`` bytes for epoch ``epoch``'s segment. May wait for a ready file
        (counted by the pool) and writes a new file's header; ``OSError`` breaks the log."""
        active = self._active
        if active is None or active.room < span:
            active = self._activate(span)
        placement = Placement(file=active, offset=active.next_offset, span=span)
        active.next_offset += span
        active.last_epoch = epoch
        self._last_epoch, self._last_commit_seq = epoch, commit_seq_hi
        return placement

    def activate(self) -> None:
        """Make sure a file is active: without one (a new log, or one reopened after a crash)
        take a ready file and write its ACTIVE header now. That header records where the
        chain continues from, which is what durably discards a torn tail (DESIGN §4)."""
        if self._active is None:
            self._activate(0, counted=False)

    def _activate(self, span: int, *, counted: bool = True) -> OpenLogFile:
        alignment = self._spec.alignment
        if span > self._spec.capacity - alignment:
            self.oversized_files += 1
            ready = self._pool.make_now(alignment + span)
        else:
            ready = self._pool.take(counted=counted)
        previous = self._active
        header = attrs.evolve(
            ready.header, state=FileState.ACTIVE,
            prev_file_no=0 if previous is None else previous.file_no,
            continues_from=ChainPosition(self._last_epoch, self._last_commit_seq),
            # A log at the end of the number range (only a crafted one) still opens: its
            # next seal refuses to go past MAX_POSITION, so no epoch above it is written.
            min_epoch=min(self._min_epoch, MAX_POSITION))
        write_all(self._fs, ready.fd, [header.encode()], offset=0, dsync=True)
        ready.header = header
        self._active = ready
        self.files.append(ready)
        if self._on_activate is not None:
            self._on_activate(ready)
        return ready

    def write(self, placement: Placement, buffers: Sequence[Buffer]) -> WriteTimes:
        """One write of the segment at its offset: durable on return with ``fsync=full``
        (``pwritev2(RWF_DSYNC)``, through the direct descriptor for a small segment; else
        write and ``fdatasync``)."""
        fs, fd, offset, span = self._fs, placement.file.fd, placement.offset, placement.span
        started = time.perf_counter()
        dsync = self._durable_writes
        direct = placement.file.direct_fd
        if dsync and direct is not None and span <= DIRECT_MAX_BYTES and self._direct_works:
            written = self._write_direct(placement.file, direct, buffers, offset, span)
            if written is not None:
                return WriteTimes(seconds=time.perf_counter() - started, durable=True)
        if len(buffers) <= IOV_MAX:  # one system call, unless the kernel writes short
            written = (fs.pwritev_dsync if dsync else fs.pwritev)(fd, buffers, offset)
            if written <= 0:
                raise OSError(f"pwritev wrote {written} bytes")
            if written < span:
                rest = memoryview(b"".join(buffers))[written:]
                written += write_all(fs, fd, [rest], offset=offset + written, dsync=dsync)
        else:  # many serialized-path commits: write_all takes them IOV_MAX at a time
            written = write_all(fs, fd, buffers, offset=offset, dsync=dsync)
        if written != span:  # pragma: no cover - an encoding bug
            raise AssertionError(f"segment of {written} bytes placed in {span}")
        if not self._durable_writes:
            placement.file.unsynced = True
        return WriteTimes(seconds=time.perf_counter() - started, durable=self._durable_writes)

    def _write_direct(self, file: OpenLogFile, direct: int, buffers: Sequence[Buffer],
                      offset: int, span: int) -> int | None:
        """The segment's durable write through the file's direct descriptor, gathered into an
        aligned buffer (direct I/O takes nothing else). None, with nothing written, if the file
        system refuses direct I/O (``EINVAL``, say for blocks larger than the alignment): the
        caller then writes through the page cache, and so do later writes. (The descriptor
        stays open until the file is closed: another write may be using it right now.)"""
        scratch = self._scratch.pop() if self._scratch else _aligned_buffer()
        try:
            position = 0
            for buffer in buffers:
                end = position + len(buffer)
                scratch[position:end] = buffer
                position = end
            assert position == span, (position, span)
            try:
                written = self._fs.pwritev_dsync(direct, [scratch[:span]], offset)
            except OSError as error:
                if error.errno != errno.EINVAL:
                    raise
                self._direct_works = False  # refused before anything was written
                return None
            if written != span:
                # A short direct write: finish through the page cache (durably).
                written += write_all(self._fs, file.fd, [scratch[written:span]],
                                     offset=offset + written, dsync=True)
            if written != span:  # pragma: no cover - an encoding bug
                raise AssertionError(f"segment of {written} bytes placed in {span}")
            return written
        finally:
            if len(self._scratch) <= self._spec.inflight_limit:
                self._scratch.append(scratch)

    def sync(self) -> int:
        """fsync=normal: make what was written without sync durable. Returns the fsyncs made."""
        count = 0
        for file in self.files:
            if file.unsynced:
                file.unsynced = False
                self._fs.fsync(file.fd)
                count += 1
        return count

    def write_at_end(self, buffers: Sequence[Buffer], *, sync: bool) -> bool:
        """Write ``buffers`` (the clean-shutdown marker, one aligned block) at the next offset
        of the active file, if it has room; not part of the chain."""
        active = self._active
        size = sum(memoryview(b).nbytes for b in buffers)
        if active is None or active.room < size:
            return False
        write_all(self._fs, active.fd, buffers, offset=active.next_offset, dsync=sync)
        return True

    def retire_before(self, file_no: int) -> list[OpenLogFile]:
        """Stop tracking the files numbered below ``file_no`` (a checkpoint covers them) and
        return them; the caller hands them to :meth:`ReadyFilePool.recycle`."""
        retired = [f for f in self.files if f.file_no < file_no and f is not self._active]
        self.files = [f for f in self.files if f not in retired]
        for file in retired:
            file.close_direct(self._fs)
        return retired

    def close(self) -> None:
        for file in self.files:
            file.close_direct(self._fs)
            with contextlib.suppress(OSError):
                self._fs.close(file.fd)
        self.files = []
        self._active = None
