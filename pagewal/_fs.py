"""The file-system seam: every syscall pagewal makes goes through a :class:`FileSystem`.

The log, recovery and the tools take a file system object instead of calling ``os`` directly,
so tests and the crash harness can pass one that records, fails or forgets operations.
:class:`OsFileSystem` is the real one; it looks ``os`` functions up at call time, so a test may
also monkeypatch ``os.fsync``/``os.writev``.

:func:`publish_atomically` is the one place the atomic-publish protocol (DESIGN invariant 4)
is written: temporary name, durable write (write + data sync), rename, directory fsync.

Nothing that is not provably the log's own is ever written through: every file pagewal creates
or opens for writing is opened with ``O_NOFOLLOW``, temporary files with ``O_EXCL`` (recovery
removes a crash's leftovers under the lock before the log creates new ones), and a file opened
without ``O_EXCL`` must be a regular file. Anything else at the name raises
:class:`ForeignFileError`. New files take the database file's permission bits
(:class:`FileMode`), as SQLite's WAL and journal do.
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

from ._errors import ForeignFileError, LogLockedError
from ._layout import TEMP_SUFFIX

try:
    IOV_MAX = max(16, os.sysconf("SC_IOV_MAX"))
except (AttributeError, OSError, ValueError):  # pragma: no cover - non-POSIX
    IOV_MAX = 1024

Buffer = bytes | bytearray | memoryview
_MAX_OFFSET = (1 << 63) - 1  # the largest file offset (off_t)
_MAP_THRESHOLD = 1 << 20
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECT = getattr(os, "O_DIRECT", 0)
DEFAULT_FILE_MODE = 0o644
"""The permission bits of a file pagewal creates when there is no database file to copy them
from (a plain :class:`Wal` log, or a pager's new data file); the umask applies."""
LOCK_ATTEMPTS = 10
"""How often :meth:`OsFileSystem.try_lock` locks again when the lock file was deleted or replaced
between opening and locking it (another process removing it) before giving up."""


@attrs.frozen
class FileMode:
    """The permissions new log files get: those of the database file (``bits``, the
    ``st_mode & 0o777`` of the database), as SQLite gives its WAL and journal, so that
    ``chmod 600`` on a store keeps its log private too. New files get exactly ``bits`` (the
    umask does not narrow or widen them); a process running as root also gives them the
    database's owner (``uid``, ``gid``; -1 leaves it unchanged)."""

    bits: int
    uid: int = -1
    gid: int = -1


class FileSystem(Protocol):
    """The operations pagewal performs on files and directories."""

    def open_for_write(self, path: str, mode: FileMode | None = None) -> int:
        """Create ``path``, a new temporary file, for writing; return a descriptor.

        Nothing may be at ``path``: a leftover file, a symbolic link (never followed) or a
        directory raises :class:`ForeignFileError`. The file gets ``mode`` (exactly), or
        :data:`DEFAULT_FILE_MODE` less the umask when ``mode`` is None."""

    def open_for_sync(self, path: str) -> int:
        """Open an existing file (read-only) so it can be fsynced."""

    def open_for_update(self, path: str) -> int:
        """Open ``path`` for reading and writing in place, creating it empty (with
        :data:`DEFAULT_FILE_MODE` less the umask) if missing, never truncating: the pager's
        data file. A symbolic link (never followed) or anything but a regular file at ``path``
        raises :class:`ForeignFileError`."""

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

    def open_direct(self, fd: int) -> int | None:
        """A second descriptor, for writing, of the open file ``fd`` itself (never of whatever
        its name may point to now) with ``O_DIRECT``: writes through it bypass the page cache,
        so each offset, length and buffer address must be a multiple of the block size. None
        where the file system offers no direct I/O; the caller then writes through ``fd``."""

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

    def try_lock(self, path: str, mode: FileMode | None = None) -> int | None:
        """Take an exclusive lock on ``path`` (created with ``mode`` if needed, as
        :meth:`open_for_write` does): a handle, or None if held. A symbolic link or a
        non-regular file at ``path`` raises :class:`ForeignFileError`; the handle returned
        locks the file ``path`` names when it returns (:meth:`check_lock` holds)."""

    def check_lock(self, handle: int, path: str) -> None:
        """Raise ``OSError`` unless ``path`` still names the file the lock ``handle`` holds:
        ``FileNotFoundError`` if it was deleted, ``OSError`` (ESTALE) if it was replaced. Then
        another process may take the log's lock while this one still writes."""

    def unlock(self, handle: int) -> None:
        """Release a lock :meth:`try_lock` took."""

    def real_path(self, path: str) -> str:
        """The absolute ``path`` with every symbolic link in it resolved (as SQLite resolves a
        database's name, so the log lies beside the file itself, whatever link named it)."""

    def file_mode(self, path: str) -> FileMode | None:
        """The :class:`FileMode` new log files beside the regular file ``path`` get (its
        permission bits and owner), or None when no regular file is there."""


class OsFileSystem(FileSystem):
    """The real file system, one ``os`` call per operation.

    A directory is opened once and its descriptor kept for later directory fsyncs (two
    syscalls fewer per published segment); :meth:`release` closes them.
    """

    def __init__(self) -> None:
        self._directories: dict[str, int] = {}
        self._directories_lock = threading.Lock()
        self._dsync_flag: int = getattr(os, "RWF_DSYNC", 0)
        self._direct_possible = True

    def open_for_write(self, path: str, mode: FileMode | None = None) -> int:
        # O_EXCL: a file already at the name is never truncated, and (with O_CREAT) a symbolic
        # link there is never followed, dangling or not.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC,
                         DEFAULT_FILE_MODE if mode is None else mode.bits)
        except OSError as error:
            raise _foreign_or(error, path) from error
        try:
            _give_mode(fd, mode)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def open_for_sync(self, path: str) -> int:
        return os.open(path, os.O_RDONLY | _CLOEXEC)

    def open_for_update(self, path: str) -> int:
        return _open_regular(path, os.O_RDWR | os.O_CREAT)

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

    def open_direct(self, fd: int) -> int | None:
        # Through /proc/self/fd the new descriptor opens the inode ``fd`` has open, whatever
        # now lies at its name; O_DIRECT is refused (EINVAL) where the file system lacks it.
        if not _DIRECT or not self._direct_possible:
            return None
        try:
            direct = os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | _DIRECT | _CLOEXEC)
        except OSError:
            self._direct_possible = False  # no /proc, or no direct I/O: buffered writes then
            return None
        try:
            mine, theirs = os.fstat(direct), os.fstat(fd)
        except BaseException:
            os.close(direct)
            raise
        if (mine.st_dev, mine.st_ino) != (theirs.st_dev, theirs.st_ino):  # pragma: no cover
            os.close(direct)
            return None
        return direct

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
            fd = os.open(path, os.O_RDONLY | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0) | _CLOEXEC)
        except OSError:
            # ELOOP (a symbolic link), ENXIO (a socket), ...: say what is there, if not a file.
            with contextlib.suppress(OSError):
                require_regular(path, os.lstat(path).st_mode)
            raise
        try:
            status = os.fstat(fd)
            require_regular(path, status.st_mode)
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

    def try_lock(self, path: str, mode: FileMode | None = None) -> int | None:
        for _ in range(LOCK_ATTEMPTS):
            fd = _open_regular(path, os.O_RDWR | os.O_CREAT,
                               DEFAULT_FILE_MODE if mode is None else mode.bits)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return None
            except BaseException:
                os.close(fd)
                raise
            try:
                # Another process may have unlinked (or replaced) the file between our open and
                # our flock, and locked the new one: our lock would then exclude nobody.
                self.check_lock(fd, path)
            except OSError:
                os.close(fd)
                continue
            except BaseException:
                os.close(fd)
                raise
            try:
                _give_mode(fd, mode)  # the lock file is ours now: bring it to the db's mode
            except BaseException:
                os.close(fd)
                raise
            return fd
        raise LogLockedError(
            f"{path}: the lock file was deleted or replaced {LOCK_ATTEMPTS} times while it was "
            "being locked; another process keeps removing it: stop that process, then open "
            "the log again")

    def check_lock(self, handle: int, path: str) -> None:
        locked = os.fstat(handle)
        try:
            named = os.lstat(path)
        except FileNotFoundError as error:
            raise FileNotFoundError(
                errno.ENOENT, "the lock file was deleted while the log held it", path) from error
        if (named.st_dev, named.st_ino) != (locked.st_dev, locked.st_ino):
            raise OSError(errno.ESTALE, "the lock file was replaced by another file while the "
                          "log held it", path)

    def unlock(self, handle: int) -> None:
        os.close(handle)  # closing the descriptor releases the flock

    def real_path(self, path: str) -> str:
        return os.path.realpath(path)

    def file_mode(self, path: str) -> FileMode | None:
        try:
            status = os.lstat(path)
        except FileNotFoundError:
            return None
        if not stat.S_ISREG(status.st_mode):
            return None
        return FileMode(stat.S_IMODE(status.st_mode) & 0o777, status.st_uid, status.st_gid)


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


def _open_regular(path: str, flags: int, mode: int = DEFAULT_FILE_MODE) -> int:
    """``os.open`` that never follows a symbolic link at ``path`` and only returns a descriptor
    of a regular file (a FIFO or device opened without ``O_EXCL`` would be written through)."""
    try:
        fd = os.open(path, flags | _NOFOLLOW | _CLOEXEC, mode)
    except OSError as error:
        raise _foreign_or(error, path) from error
    try:
        status = os.fstat(fd)
    except BaseException:
        os.close(fd)
        raise
    if not stat.S_ISREG(status.st_mode):
        os.close(fd)
        require_regular(path, status.st_mode)
    return fd


def _give_mode(fd: int, mode: FileMode | None) -> None:
    """Give the new (empty) file ``fd`` exactly ``mode``, as SQLite's ``robust_open`` does for
    its WAL and journal: ``os.open`` applied the umask, which may have dropped bits the database
    file has (a group-writable store). Best effort, as in SQLite: a file another user owns keeps
    its mode. A process running as root also hands the file to the database's owner."""
    if mode is None:
        return
    status = os.fstat(fd)
    if status.st_size:
        return  # not a new file
    with contextlib.suppress(OSError):
        if os.geteuid() == 0 and (mode.uid, mode.gid) != (-1, -1) and (
                (status.st_uid, status.st_gid) != (mode.uid, mode.gid)):
            os.fchown(fd, mode.uid, mode.gid)
    with contextlib.suppress(OSError):
        if stat.S_IMODE(status.st_mode) != mode.bits:
            os.fchmod(fd, mode.bits)


def _foreign_or(error: OSError, path: str) -> OSError:
    """The :class:`ForeignFileError` an ``os.open`` failure at ``path`` means, if it means one
    (something is at a name pagewal creates, or a symbolic link where it will not follow one),
    else ``error`` itself."""
    if error.errno not in (errno.EEXIST, errno.ELOOP, errno.EMLINK, errno.EISDIR):
        return error
    try:
        status = os.lstat(path)
    except OSError:
        return error  # gone again: report what open said
    if error.errno in (errno.ELOOP, errno.EMLINK) and not stat.S_ISLNK(status.st_mode):
        return error  # too many links in a directory component, not at the name itself
    what = (describe_file_type(status.st_mode)
            or "a file (left over, or put there by someone else)")
    if stat.S_ISLNK(status.st_mode):
        with contextlib.suppress(OSError):
            what += f" to {os.readlink(path)}"
    return ForeignFileError(((path, f"{what} is already there"),), error.errno)


def require_regular(path: str, mode: int) -> None:
    """Raise :class:`ForeignFileError` naming ``path`` unless ``mode`` is a regular file's."""
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
        batch = pending[:IOV_MAX]
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
    mode: FileMode | None = None,
) -> PublishTimes:
    """Publish ``buffers`` as ``directory/name`` so no reader ever sees a partial file.

    Invariant 4: write ``name.tmp`` and make it durable (one ``pwritev_dsync``: write and data
    sync together), rename it to ``name``, fsync the directory. With ``sync=False`` (fsync modes
    normal/off) the syncs are left out: the rename still hides partial files from a process
    crash, not from a power loss. On failure the temporary file is removed (best effort) and
    the ``OSError`` propagates. ``fd``, if given, is the temporary file already created (empty)
    and open for writing. ``close``, if given, is handed the descriptor once the file is
    published (to close it off the caller's path); otherwise it is closed before returning.
    The temporary file is created with ``mode`` (:meth:`FileSystem.open_for_write`): anything
    already at its name raises :class:`ForeignFileError` and is left as it is.
    """
    final_path = os.path.join(directory, name)
    temp_path = final_path + TEMP_SUFFIX
    started = time.perf_counter()
    if fd is None:
        fd = fs.open_for_write(temp_path, mode)  # outside the try: never unlink what is not ours
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
