"""The file-system seam: every syscall pagewal makes goes through a :class:`FileSystem`.

The log, recovery and the tools take a file system object instead of calling ``os`` directly,
so tests and the crash harness can pass one that records, fails or forgets operations.
:class:`OsFileSystem` is the real one; it looks ``os`` functions up at call time, so a test may
also monkeypatch ``os.fsync``/``os.writev``.

:func:`publish_atomically` is the one place the atomic-publish protocol (DESIGN invariant 4)
is written: temporary name, durable write (write + data sync), rename, directory fsync.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import mmap
import os
import stat
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import attrs

from ._codec import TEMP_SUFFIX
from ._errors import ForeignFileError

try:
    _IOV_MAX = max(16, os.sysconf("SC_IOV_MAX"))
except (AttributeError, OSError, ValueError):  # pragma: no cover - non-POSIX
    _IOV_MAX = 1024

Buffer = bytes | bytearray | memoryview
_MAX_OFFSET = (1 << 63) - 1  # the largest file offset (off_t)
_MAP_THRESHOLD = 1 << 20


class FileSystem(Protocol):
    """The operations pagewal performs on files and directories."""

    def open_for_write(self, path: str) -> int:
        """Create or truncate ``path`` for writing; return a descriptor."""

    def open_for_sync(self, path: str) -> int:
        """Open an existing file (read-only) so it can be fsynced."""

    def open_for_update(self, path: str) -> int:
        """Open ``path`` for reading and writing in place, creating it empty if missing (never
        truncating): the pager's data file."""

    def file_size(self, fd: int) -> int:
        """The size in bytes of the open file ``fd``."""

    def max_file_size(self, fd: int) -> int:
        """The largest size the file system lets the open file ``fd`` grow to: a write that
        would end past it fails (``EFBIG``). Not this process's ``RLIMIT_FSIZE``."""

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        """Up to ``size`` bytes at ``offset``; fewer at the end of the file."""

    def pwritev(self, fd: int, buffers: Sequence[Buffer], offset: int) -> int:
        """Write ``buffers`` in order at ``offset``; may write fewer bytes than given."""

    def pwritev_dsync(self, fd: int, buffers: Sequence[Buffer], offset: int) -> int:
        """Like :meth:`pwritev`, and the bytes written (with the file size) are durable when it
        returns, as after ``fdatasync``. Raises ``OSError`` if they may not be."""

    def writev(self, fd: int, buffers: Sequence[Buffer]) -> int:
        """Write ``buffers`` in order; may write fewer bytes than given (short write)."""

    def fsync(self, fd: int) -> None:
        """Make the file's data and metadata durable; ``OSError`` if they may not be."""

    def close(self, fd: int) -> None:
        """Close a descriptor this file system returned."""

    def rename(self, source: str, target: str) -> None:
        """Atomically replace ``target`` by ``source`` (durable after :meth:`fsync_dir`)."""

    def unlink(self, path: str) -> None:
        """Remove ``path`` (durable after :meth:`fsync_dir`)."""

    def fsync_dir(self, directory: str) -> None:
        """Make the directory's entries (creates, renames, unlinks) durable."""

    def listdir(self, directory: str) -> list[str]:
        """The names in ``directory``."""

    def read_file(self, path: str) -> bytes | memoryview:
        """The whole file, as bytes or a read-only view of a mapping of it.

        Only a regular file is read: anything else (a symbolic link is never followed, a fifo
        never waited on) raises :class:`ForeignFileError`."""

    def lstat(self, path: str) -> os.stat_result:
        """The status of ``path`` itself, not following a symbolic link (``FileNotFoundError``
        if there is nothing there)."""

    def try_lock(self, path: str) -> int | None:
        """Take an exclusive lock on ``path`` (created if needed): a handle, or None if held."""

    def unlock(self, handle: int) -> None:
        """Release a lock :meth:`try_lock` took."""


class OsFileSystem(FileSystem):
    """The real file system, one ``os`` call per operation.

    A directory is opened once and its descriptor kept for later directory fsyncs (two
    syscalls fewer per published segment); :meth:`release` closes them.
    """

    def __init__(self) -> None:
        self._directories: dict[str, int] = {}
        self._directories_lock = threading.Lock()
        self._dsync_flag: int = getattr(os, "RWF_DSYNC", 0)

    def open_for_write(self, path: str) -> int:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0),
                       0o644)

    def open_for_sync(self, path: str) -> int:
        return os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))

    def open_for_update(self, path: str) -> int:
        return os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)

    def file_size(self, fd: int) -> int:
        return os.fstat(fd).st_size

    def max_file_size(self, fd: int) -> int:
        # Linux's lseek refuses (EINVAL) an offset past the largest file the file system
        # allows for this file (its s_maxbytes, the same bound a write is checked against),
        # and writes nothing: a binary search over about 63 lseeks finds it. pathconf's
        # _PC_FILESIZEBITS says 64 on ext4, whose limit is 16 TiB - 4 KiB with 4 KiB blocks;
        # probing with a sparse write would allocate, and fill holes with zeros on file
        # systems without sparse files. Where lseek checks nothing the limit found is the
        # largest offset, and a write past the real limit fails when it is made.
        position = os.lseek(fd, 0, os.SEEK_CUR)
        try:
            low, high = 0, _MAX_OFFSET
            while low < high:
                middle = (low + high + 1) // 2
                try:
                    os.lseek(fd, middle, os.SEEK_SET)
                except OSError as error:
                    if error.errno not in (errno.EINVAL, errno.EOVERFLOW):
                        raise
                    high = middle - 1
                else:
                    low = middle
            return low
        finally:
            os.lseek(fd, position, os.SEEK_SET)

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        return os.pread(fd, size, offset)

    def pwritev(self, fd: int, buffers: Sequence[Buffer], offset: int) -> int:
        return os.pwritev(fd, buffers, offset)

    def pwritev_dsync(self, fd: int, buffers: Sequence[Buffer], offset: int) -> int:
        # One system call (pwritev2 with RWF_DSYNC, Linux 4.7+) instead of a write and an
        # fdatasync: one GIL round trip less per published segment.
        if self._dsync_flag:
            try:
                return os.pwritev(fd, buffers, offset, self._dsync_flag)
            except OSError as error:
                if error.errno not in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS):
                    raise
                self._dsync_flag = 0  # not supported here: write, then fdatasync
        written = os.pwritev(fd, buffers, offset)
        os.fdatasync(fd)
        return written

    def writev(self, fd: int, buffers: Sequence[Buffer]) -> int:
        return os.writev(fd, buffers)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def rename(self, source: str, target: str) -> None:
        os.rename(source, target)

    def unlink(self, path: str) -> None:
        os.unlink(path)

    def fsync_dir(self, directory: str) -> None:
        with self._directories_lock:
            fd = self._directories.get(directory)
            if fd is None:
                fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
                             | getattr(os, "O_CLOEXEC", 0))
                self._directories[directory] = fd
        os.fsync(fd)

    def close(self, fd: int) -> None:
        os.close(fd)

    def release(self) -> None:
        """Close the cached directory descriptors (reopened on demand)."""
        with self._directories_lock:
            for fd in self._directories.values():
                os.close(fd)
            self._directories.clear()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.release()

    def listdir(self, directory: str) -> list[str]:
        return os.listdir(directory)

    def read_file(self, path: str) -> bytes | memoryview:
        # Large files are mapped, not copied: recovery then reads the page cache in place.
        # (A file truncated by another process while mapped would fault on access; pagewal
        # never truncates a published segment.) O_NOFOLLOW and O_NONBLOCK, then fstat: a
        # symbolic link is never followed and a fifo never blocks the open, whatever was put at
        # the name after the caller looked at it.
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
                         | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            # ELOOP (a symbolic link), ENXIO (a socket), ...: say what is there, if not a file.
            with contextlib.suppress(OSError):
                _require_regular(path, os.lstat(path).st_mode)
            raise
        try:
            status = os.fstat(fd)
            _require_regular(path, status.st_mode)
            if status.st_size >= _MAP_THRESHOLD:
                return memoryview(mmap.mmap(fd, status.st_size, prot=mmap.PROT_READ))
            chunks = []
            while chunk := os.read(fd, max(status.st_size, 1 << 16)):
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def lstat(self, path: str) -> os.stat_result:
        return os.lstat(path)

    def try_lock(self, path: str) -> int | None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        return fd

    def unlock(self, handle: int) -> None:
        os.close(handle)  # closing the descriptor releases the flock


_FILE_TYPES = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISFIFO, "a fifo (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def describe_file_type(mode: int) -> str | None:
    """What ``st_mode`` says is there, or ``None`` for a regular file (the only kind of file a
    log is made of)."""
    if stat.S_ISREG(mode):
        return None
    return next((what for test, what in _FILE_TYPES if test(mode)), "not a regular file")


def _require_regular(path: str, mode: int) -> None:
    what = describe_file_type(mode)
    if what is not None:
        raise ForeignFileError(((path, f"{what}, not a regular file"),))


def not_a_regular_file(fs: FileSystem, path: str) -> str | None:
    """What is at ``path`` if it is not a regular file (``lstat``: a symbolic link is never
    followed, a fifo never opened), else ``None``; ``FileNotFoundError`` if nothing is."""
    what = describe_file_type(fs.lstat(path).st_mode)
    return None if what is None else f"{what}, not a regular file"


def write_all(
    fs: FileSystem, fd: int, buffers: Sequence[Buffer], *, offset: int | None = None,
    dsync: bool = False,
) -> int:
    """Write every byte of ``buffers`` with as few ``writev`` calls as possible (``pwritev``
    calls from ``offset`` when one is given; ``pwritev_dsync`` calls with ``dsync=True``, so
    the bytes are durable on return).

    Handles short writes and the kernel's IOV_MAX limit; returns the number of bytes written.
    A write that makes no progress raises ``OSError`` rather than looping forever.
    """
    pending = [memoryview(b).cast("B") for b in buffers if len(b)]
    total = 0
    while pending:
        batch = pending[:_IOV_MAX]
        if offset is None:
            written = fs.writev(fd, batch)
        elif dsync:
            written = fs.pwritev_dsync(fd, batch, offset + total)
        else:
            written = fs.pwritev(fd, batch, offset + total)
        if written <= 0:
            raise OSError(f"writev wrote {written} bytes")
        total += written
        consumed = 0
        while consumed < len(batch) and written >= batch[consumed].nbytes:
            written -= batch[consumed].nbytes
            consumed += 1
        del pending[:consumed]
        if written:
            pending[0] = pending[0][written:]
    return total


@attrs.frozen
class PublishTimes:
    """How long a publish spent writing and fsyncing, and how many fsyncs it made."""

    write_seconds: float
    fsync_seconds: float
    fsync_count: int


def publish_atomically(
    fs: FileSystem, directory: str, name: str, buffers: Sequence[Buffer], *, sync: bool,
    fd: int | None = None, close: Callable[[int], None] | None = None,
) -> PublishTimes:
    """Publish ``buffers`` as ``directory/name`` so no reader ever sees a partial file.

    Invariant 4: write ``name.tmp`` and make it durable (one ``pwritev_dsync``: write and data
    sync together), rename it to ``name``, fsync the directory. With ``sync=False`` (fsync modes
    normal/off) the syncs are left out: the rename still hides partial files from a process
    crash, not from a power loss. On failure the temporary file is removed (best effort) and
    the ``OSError`` propagates. ``fd``, if given, is the temporary file already created (empty)
    and open for writing. ``close``, if given, is handed the descriptor once the file is
    published (to close it off the caller's path); otherwise it is closed before returning.
    """
    final_path = os.path.join(directory, name)
    temp_path = final_path + TEMP_SUFFIX
    started = time.perf_counter()
    if fd is None:
        fd = fs.open_for_write(temp_path)
    try:
        write_all(fs, fd, buffers, offset=0 if sync else None, dsync=sync)
        written = time.perf_counter()
        fs.rename(temp_path, final_path)
        if sync:
            fs.fsync_dir(directory)
    except BaseException:
        with contextlib.suppress(OSError):
            fs.close(fd)
        with contextlib.suppress(OSError):
            fs.unlink(temp_path)
        raise
    (close or fs.close)(fd)
    # With sync the write includes its data sync, so its time counts as fsync time.
    return PublishTimes(write_seconds=0.0 if sync else written - started,
                        fsync_seconds=time.perf_counter() - started if sync else 0.0,
                        fsync_count=2 if sync else 0)


def sync_files(fs: FileSystem, directory: str, names: Sequence[str]) -> None:
    """fsync files published earlier without sync, then their directory (fsync=normal)."""
    for name in names:
        fd = fs.open_for_sync(os.path.join(directory, name))
        try:
            fs.fsync(fd)
        finally:
            fs.close(fd)
    fs.fsync_dir(directory)
