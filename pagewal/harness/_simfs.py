"""A simulated file system that records every operation and can produce power-loss states.

The model follows what LazyFS, ALICE and SQLite's crash VFS test:

* File data written but not fsynced may, at a power loss, be kept, lost, or torn at 512-byte
  sector granularity (some sectors new, the rest old; an extended file keeps its new size with
  the lost sectors reading as zeros). That holds for overwrites of bytes that were already
  durable too (a preallocated file written in place): the sector reads old or new, never a
  mix within one sector.
* Writes not yet durable persist independently of each other: of several writes in flight at
  once (``pwritev_dsync`` calls that have not returned, or plain writes not yet fsynced), any
  subset may survive, a later one without an earlier one.
* ``pwritev_dsync`` (``pwritev2(RWF_DSYNC)``) makes its own byte range durable when it returns,
  not the rest of the file: it is logged as a write and, after the lock was let go so other
  threads' writes can come in between, a ``dsync`` of that range.
* Creates, renames and unlinks not followed by an fsync of their directory may be undone. They
  are journaled in order (like ext4's ordered mode): a crash keeps a prefix of them.
* fsynced data and fsynced directory entries survive.
* After a failed fsync the kernel may have dropped the dirty data while marking it clean
  (PostgreSQL's "fsyncgate"): a later fsync of that file succeeds without making it durable.

:class:`SimulatedFileSystem` is a :class:`pagewal.FileSystem`; it logs each mutating operation
as an :class:`Op`. :func:`crash_states` replays a log and yields, after each operation, the
states a power loss there could leave.
"""

from __future__ import annotations

import copy
import errno
import itertools
import os
import random
import stat
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence

import attrs

from .._errors import ForeignFileError
from .._fs import FileMode, FileSystem

SECTOR = 512

Buffer = bytes | bytearray | memoryview


@attrs.frozen
class Op:
    """One mutating operation, as logged. ``data`` holds written bytes (writes only)."""

    kind: str  # create | write | dsync | fsync | fsync_failed | rename | unlink | fsync_dir
    path: str
    target: str = ""
    offset: int = 0
    data: bytes = b""
    inode: int = 0  # write, dsync, fsync: the file written (a descriptor outlives renames)
    length: int = 0  # dsync: the bytes made durable from ``offset``


@attrs.frozen
class Fault:
    """Make the ``nth`` call (1-based) of ``op`` fail with ``error`` (an errno).

    ``op`` is one of ``writev``, ``pwritev``, ``fsync``, ``fsync_dir``, ``rename``,
    ``open_for_write``, ``unlink``.
    ``short_write=True`` (``writev``/``pwritev`` only) writes about half the bytes instead of
    failing, cut at a sector boundary (a write of one sector or less is written whole).
    ``repeat=True`` fails every call from the ``nth`` on. ``path``, if given, limits the fault
    (and its call count) to paths ending with it, e.g. ``".db"`` for a pager's data file (a
    descriptor's writes and syncs go by the name its file has at the time).
    """

    op: str
    nth: int
    error: int = errno.EIO
    short_write: bool = False
    repeat: bool = False
    path: str = ""


@attrs.define
class _Inode:
    durable: bytes = b""
    current: bytearray = attrs.Factory(bytearray)
    poisoned: bool = False  # a failed fsync dropped dirty data: later fsyncs persist nothing
    # Writes not yet durable, in order: (offset, data). Any subset may survive a power loss.
    pending: list[tuple[int, bytes]] = attrs.Factory(list)


@attrs.frozen
class _DirOp:
    kind: str  # create | rename | unlink
    name: str
    target: str = ""
    inode: int = 0


class DiskModel:
    """File contents and directory entries, each in a current and a durable version."""

    def __init__(self, files: Mapping[str, bytes] | None = None) -> None:
        files = files or {}
        self._inodes: dict[int, _Inode] = {}
        self._last_inode = 0
        self.current: dict[str, int] = {}
        self.durable: dict[str, int] = {}
        self.pending: dict[str, list[_DirOp]] = {}
        for path, content in files.items():
            inode = self._new_inode()
            self._inodes[inode] = _Inode(durable=bytes(content), current=bytearray(content))
            self.current[path] = self.durable[path] = inode

    # ---------------------------------------------------------------- operations

    def apply(self, op: Op) -> None:
        """Apply a logged operation (raises ``OSError`` as the kernel would)."""
        if op.kind == "create":
            self.create(op.path)
        elif op.kind == "write":
            self.write(op.path, op.offset, op.data, inode=op.inode)
        elif op.kind == "dsync":
            self.dsync(op.path, op.offset, op.length, inode=op.inode)
        elif op.kind in ("fsync", "fsync_failed"):
            self.fsync(op.path, failed=op.kind == "fsync_failed", inode=op.inode)
        elif op.kind == "rename":
            self.rename(op.path, op.target)
        elif op.kind == "unlink":
            self.unlink(op.path)
        elif op.kind == "fsync_dir":
            self.fsync_dir(op.path)
        else:  # pragma: no cover - a bug in the logger
            raise ValueError(f"unknown op {op.kind}")

    def create(self, path: str) -> None:
        """Create or truncate ``path`` (O_CREAT | O_TRUNC)."""
        inode = self.current.get(path)
        if inode is None:
            inode = self._new_inode()
            self._inodes[inode] = _Inode()
            self.current[path] = inode
            self._pend(_DirOp("create", path, inode=inode))
        else:
            self._inodes[inode].current = bytearray()

    def inode_of(self, path: str) -> int:
        """The inode ``path`` names now (what a descriptor opened on it keeps)."""
        self._inode(path)  # raises if missing
        return self.current[path]

    def write(self, path: str, offset: int, data: bytes, *, inode: int = 0) -> None:
        node = self._inodes[inode] if inode else self._inode(path)
        content = node.current
        if len(content) < offset:
            content.extend(bytes(offset - len(content)))
        content[offset : offset + len(data)] = data
        node.pending.append((offset, data))

    def dsync(self, path: str, offset: int, length: int, *, inode: int = 0) -> None:
        """The range ``offset .. offset + length`` of the file is durable (and its size, if
        the write extended it); the file's other unsynced writes are not."""
        node = self._inodes[inode] if inode else self._inode(path)
        if node.poisoned:
            return
        durable = bytearray(node.durable)
        end = offset + length
        if len(durable) < end:
            durable.extend(bytes(end - len(durable)))
        durable[offset:end] = node.current[offset:end]
        node.durable = bytes(durable)
        for index, (start, data) in enumerate(node.pending):
            if start == offset and len(data) == length:
                del node.pending[index]
                break

    def fsync(self, path: str, *, failed: bool = False, inode: int = 0) -> None:
        node = self._inodes[inode] if inode else self._inode(path)
        if failed:
            node.poisoned = True
        elif not node.poisoned:
            node.durable = bytes(node.current)
            node.pending.clear()

    def rename(self, source: str, target: str) -> None:
        inode = self.current.pop(source, None)
        if inode is None:
            raise FileNotFoundError(errno.ENOENT, "no such file", source)
        self.current[target] = inode
        self._pend(_DirOp("rename", source, target, inode))

    def unlink(self, path: str) -> None:
        if self.current.pop(path, None) is None:
            raise FileNotFoundError(errno.ENOENT, "no such file", path)
        self._pend(_DirOp("unlink", path))

    def fsync_dir(self, directory: str) -> None:
        for op in self.pending.pop(directory, []):
            _apply_dir_op(self.durable, op)

    def read(self, path: str) -> bytes:
        return bytes(self._inode(path).current)

    def read_inode(self, inode: int) -> bytes:
        return bytes(self._inodes[inode].current)

    def size(self, path: str) -> int:
        return len(self._inode(path).current)

    def listdir(self, directory: str) -> list[str]:
        return [os.path.basename(p) for p in self.current if os.path.dirname(p) == directory]

    def _new_inode(self) -> int:
        self._last_inode += 1
        return self._last_inode

    def _inode(self, path: str) -> _Inode:
        inode = self.current.get(path)
        if inode is None:
            raise FileNotFoundError(errno.ENOENT, "no such file", path)
        return self._inodes[inode]

    def _pend(self, op: _DirOp) -> None:
        self.pending.setdefault(os.path.dirname(op.name), []).append(op)

    # ---------------------------------------------------------------- crashes

    def crash_variants(
        self, rng: random.Random, *, torn_samples: int = 2
    ) -> Iterator[tuple[str, dict[str, bytes]]]:
        """Every state a power loss now could leave: ``(description, {path: bytes})``.

        Directory: each prefix of the pending operations of each directory (directories are
        combined in lockstep, which covers the one-directory logs pagewal writes). Data: for
        each reachable file with unsynced data, lost, kept, torn after each sector (a write
        interrupted part way), and ``torn_samples`` random sector subsets.
        """
        directories = sorted(self.pending)
        longest = max((len(self.pending[d]) for d in directories), default=0)
        for kept_ops in range(longest + 1):
            entries = dict(self.durable)
            for directory in directories:
                for op in self.pending[directory][:kept_ops]:
                    _apply_dir_op(entries, op)
            dirty = sorted(
                (path, inode) for path, inode in entries.items()
                if bytes(self._inodes[inode].current) != self._inodes[inode].durable)
            choices = [self._data_choices(self._inodes[inode], rng, torn_samples)
                       for _, inode in dirty]
            for combination in itertools.product(*choices):
                state = {path: self._inodes[inode].durable for path, inode in entries.items()}
                labels = []
                for (path, _), (label, content) in zip(dirty, combination, strict=True):
                    state[path] = content
                    labels.append(f"{os.path.basename(path)}:{label}")
                description = f"dir ops kept {kept_ops}/{longest}" + (
                    f"; data {', '.join(labels)}" if labels else "")
                yield description, state

    @staticmethod
    def _data_choices(
        inode: _Inode, rng: random.Random, torn_samples: int
    ) -> list[tuple[str, bytes]]:
        old, new = inode.durable, bytes(inode.current)
        size = len(new)
        base = old[:size].ljust(size, b"\0")
        sectors = [i for i in range(0, size, SECTOR) if new[i : i + SECTOR] != base[i : i + SECTOR]]
        choices = [("lost", old), ("kept", new)]

        def torn(kept: Sequence[int]) -> bytes:
            mixed = bytearray(base)
            for start in kept:
                mixed[start : start + SECTOR] = new[start : start + SECTOR]
            return bytes(mixed)

        for count in range(1, len(sectors)):
            choices.append((f"torn after {count}/{len(sectors)} sectors", torn(sectors[:count])))
        if len(sectors) > 2:
            for _ in range(torn_samples):
                subset = sorted(rng.sample(sectors, rng.randint(1, len(sectors) - 1)))
                choices.append((f"torn sectors {len(subset)}/{len(sectors)} random",
                                torn(subset)))
        choices.extend(DiskModel._write_subsets(inode))
        return choices

    @staticmethod
    def _write_subsets(inode: _Inode, window: int = 3) -> list[tuple[str, bytes]]:
        """Writes in flight together persist independently: with the earlier pending writes
        kept, every proper, non-empty subset of the last ``window`` of them (a later write
        durable, an earlier one lost, among others)."""
        pending = inode.pending
        if len(pending) < 2:
            return []
        first = max(0, len(pending) - window)
        last = pending[first:]
        choices = []
        for mask in range(1, (1 << len(last)) - 1):
            content = bytearray(inode.durable)
            chosen = pending[:first] + [w for i, w in enumerate(last) if mask >> i & 1]
            for offset, data in chosen:
                if len(content) < offset + len(data):
                    content.extend(bytes(offset + len(data) - len(content)))
                content[offset : offset + len(data)] = data
            kept = [first + i + 1 for i in range(len(last)) if mask >> i & 1]
            choices.append((f"of {len(pending)} writes in flight only {kept} persisted",
                            bytes(content)))
        return choices


def _apply_dir_op(entries: dict[str, int], op: _DirOp) -> None:
    if op.kind == "create":
        entries[op.name] = op.inode
    elif op.kind == "rename":
        entries.pop(op.name, None)
        entries[op.target] = op.inode
    else:
        entries.pop(op.name, None)


class SimulatedFileSystem(FileSystem):
    """An in-memory :class:`pagewal.FileSystem` that logs operations and injects faults.

    It has no symbolic links and keeps no permission bits (``mode`` arguments are accepted and
    ignored; every file reports mode 0o644), but it refuses, as the real one does, to create a
    temporary file where something already is (:class:`pagewal.ForeignFileError`).

    ``files`` is the initial (durable) content, ``{path: bytes}``; or ``model`` carries on
    from another file system's state (see :meth:`process_crash`). ``ops`` is the log of
    mutating operations. ``before_op``, if set, is called with the op count before each
    mutating operation is applied (the harness uses it to see what was acknowledged when).
    """

    def __init__(
        self,
        files: Mapping[str, bytes] | None = None,
        faults: Sequence[Fault] = (),
        *,
        model: DiskModel | None = None,
    ) -> None:
        self.initial = copy.deepcopy(model) if model is not None else DiskModel(files)
        self.model = copy.deepcopy(self.initial)
        self.ops: list[Op] = []
        self.faults = list(faults)
        self.calls: dict[str, int] = {}
        self._fault_calls: dict[int, int] = {}
        self._lock = threading.RLock()
        self._fds: dict[int, tuple[str, int, int]] = {}  # fd -> (path, position, inode)
        self._next_fd = itertools.count(1000)
        self._locks: set[str] = set()
        self.before_op: Callable[[int], None] | None = None
        self.file_size_limit = (1 << 63) - 1
        """What :meth:`max_file_size` reports for every file (the file system's limit)."""

    # ---------------------------------------------------------------- harness side

    def process_crash(self) -> SimulatedFileSystem:
        """The file system a restarted process sees after this one was killed: everything
        written is still there (in the page cache), durable or not; locks are released."""
        with self._lock:
            return SimulatedFileSystem(model=self.model)

    def op_count(self) -> int:
        """How many mutating operations were logged so far."""
        with self._lock:
            return len(self.ops)

    def snapshot(self) -> dict[str, bytes]:
        """The current (not necessarily durable) content of every file."""
        with self._lock:
            return {path: self.model.read(path) for path in self.model.current}

    # ---------------------------------------------------------------- FileSystem

    def open_for_write(self, path: str, mode: FileMode | None = None) -> int:
        with self._lock:
            self._maybe_fail("open_for_write", path)
            if path in self.model.current:  # O_EXCL
                raise ForeignFileError(
                    ((path, "a file (left over, or put there by someone else) is already there"),))
            self._log(Op("create", path))
            return self._open(path)

    def open_for_sync(self, path: str) -> int:
        with self._lock:
            return self._open(path)

    def open_for_update(self, path: str) -> int:
        with self._lock:
            if path not in self.model.current:
                self._maybe_fail("open_for_write", path)
                self._log(Op("create", path))
            return self._open(path)

    def file_size(self, fd: int) -> int:
        with self._lock:
            return len(self.model.read_inode(self._fds[fd][2]))

    def max_file_size(self, fd: int) -> int:
        return self.file_size_limit

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        with self._lock:
            return self.model.read_inode(self._fds[fd][2])[offset : offset + size]

    def writev(self, fd: int, buffers: Sequence[Buffer]) -> int:
        with self._lock:
            path, position, inode = self._fds[fd]
            written = self._write("writev", fd, position, buffers)
            self._fds[fd] = (path, position + written, inode)
            return written

    def pwritev(self, fd: int, buffers: Sequence[Buffer], offset: int) -> int:
        with self._lock:
            return self._write("pwritev", fd, offset, buffers)

    def open_direct(self, fd: int) -> int | None:
        return None  # every write goes through the page cache this model keeps

    def pwritev_dsync(self, fd: int, buffers: Sequence[Buffer], offset: int) -> int:
        """``pwritev2(RWF_DSYNC)``: a write, then a ``dsync`` of just its range, as two logged
        operations with the lock let go between them, so that writes of other threads can be
        in flight at the same time and complete in either order (faults: ``writev`` for the
        write, ``fsync`` for the sync)."""
        with self._lock:
            written = self._write("writev", fd, offset, buffers)
        with self._lock:
            path, inode = self._sync_or_fail(fd)
            self._log(Op("dsync", path, offset=offset, inode=inode, length=written))
            return written

    def fsync(self, fd: int) -> None:
        with self._lock:
            path, inode = self._sync_or_fail(fd)
            self._log(Op("fsync", path, inode=inode))

    def _sync_or_fail(self, fd: int) -> tuple[str, int]:
        """A sync of ``fd`` about to be logged: its path and inode, or the injected fault
        (logged as ``fsync_failed``). Called with the lock held."""
        _, _, inode = self._fds[fd]
        path = self._name(fd)
        try:
            self._maybe_fail("fsync", path)
        except OSError:
            self._log(Op("fsync_failed", path, inode=inode))
            raise
        return path, inode

    def close(self, fd: int) -> None:
        with self._lock:
            del self._fds[fd]

    def rename(self, source: str, target: str) -> None:
        with self._lock:
            self._maybe_fail("rename", source)
            self._log(Op("rename", source, target))

    def unlink(self, path: str) -> None:
        with self._lock:
            self._maybe_fail("unlink", path)
            self._log(Op("unlink", path))

    def fsync_dir(self, directory: str) -> None:
        with self._lock:
            self._maybe_fail("fsync_dir", directory)
            self._log(Op("fsync_dir", directory))

    def listdir(self, directory: str) -> list[str]:
        with self._lock:
            return self.model.listdir(directory)

    def read_file(self, path: str) -> bytes:
        with self._lock:
            return self.model.read(path)

    def lstat(self, path: str) -> os.stat_result:
        """Every entry of the simulated file system is a regular file."""
        with self._lock:
            size = self.model.size(path)  # raises if missing
            return os.stat_result((stat.S_IFREG | 0o644, self.model.current[path], 0, 1, 0, 0,
                                   size, 0, 0, 0))

    def try_lock(self, path: str, mode: FileMode | None = None) -> int | None:
        with self._lock:
            if path in self._locks:
                return None
            self._locks.add(path)
            fd = next(self._next_fd)
            self._fds[fd] = (path, 0, 0)
            return fd

    def check_lock(self, handle: int, path: str) -> None:
        with self._lock:
            if self._fds.get(handle, ("", 0, 0))[0] != path or path not in self._locks:
                raise FileNotFoundError(errno.ENOENT, "the lock was released", path)

    def unlock(self, handle: int) -> None:
        with self._lock:
            path, _, _ = self._fds.pop(handle)
            self._locks.discard(path)

    def real_path(self, path: str) -> str:
        return path  # no symbolic links here

    def file_mode(self, path: str) -> FileMode | None:
        with self._lock:
            return FileMode(0o644) if path in self.model.current else None

    # ---------------------------------------------------------------- internals

    def _open(self, path: str) -> int:
        inode = self.model.inode_of(path)  # raises if missing
        fd = next(self._next_fd)
        self._fds[fd] = (path, 0, inode)
        return fd

    def _name(self, fd: int) -> str:
        """The name a descriptor's file has now (faults match it): the one it was opened
        under may have been renamed since."""
        path, _, inode = self._fds[fd]
        if self.model.current.get(path) == inode:
            return path
        return next((p for p, i in self.model.current.items() if i == inode), path)

    def _write(self, name: str, fd: int, offset: int, buffers: Sequence[Buffer]) -> int:
        _, _, inode = self._fds[fd]
        path = self._name(fd)
        data = b"".join(bytes(b) for b in buffers)
        fault = self._maybe_fail(name, path)
        if fault is not None and fault.short_write:
            # The kernel stops a write at a sector (page) boundary, never inside one sector.
            data = data[: max(SECTOR, len(data) // 2 // SECTOR * SECTOR)]
        self._log(Op("write", path, offset=offset, data=data, inode=inode))
        return len(data)

    def _log(self, op: Op) -> None:
        if self.before_op is not None:
            # Lets the harness see what the log claimed durable before this operation.
            self.before_op(len(self.ops))
        self.model.apply(op)  # raises (and logs nothing) where the kernel would fail
        self.ops.append(op)

    def _maybe_fail(self, name: str, path: str) -> Fault | None:
        self.calls[name] = self.calls.get(name, 0) + 1
        matching = [(index, fault) for index, fault in enumerate(self.faults)
                    if fault.op == name and path.endswith(fault.path)]
        for index, _ in matching:  # every matching fault counts this call
            self._fault_calls[index] = self._fault_calls.get(index, 0) + 1
        for index, fault in matching:
            number = self._fault_calls[index]
            if number == fault.nth or (fault.repeat and number > fault.nth):
                if fault.short_write:
                    return fault
                raise OSError(fault.error, f"injected {os.strerror(fault.error)} on {name} "
                              f"#{number}", path)
        return None


def crash_states(
    initial: DiskModel,
    ops: Sequence[Op],
    *,
    points: Sequence[int] | None = None,
    rng: random.Random,
    torn_samples: int = 2,
) -> Iterator[tuple[int, str, dict[str, bytes]]]:
    """Replay ``ops`` from ``initial`` (a file system's ``initial`` model); after each op count
    in ``points`` (default: every count from 0 to ``len(ops)``) yield ``(op_count,
    description, state)`` for every state a power loss there could leave."""
    wanted = set(range(len(ops) + 1) if points is None else points)
    model = copy.deepcopy(initial)
    for count in range(len(ops) + 1):
        if count in wanted:
            for description, state in model.crash_variants(rng, torn_samples=torn_samples):
                yield count, description, state
        if count < len(ops):
            model.apply(ops[count])
