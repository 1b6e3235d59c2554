"""The systems a Python user could pick instead of pagewal, each committing K pages durably.

Every peer in :func:`all_peers` makes a commit durable before ``commit`` returns: fsync (or
the engine's own durable-sync setting) before the call returns. Each is the straightforward way
to use it. :func:`fsync_off_peers` are the exception: pagewal with ``fsync=off`` beside a plain
append loop, both without any sync, to measure the ceiling of the commit path itself.
"""

from __future__ import annotations

import os
import sqlite3
import struct
import threading
from collections.abc import Callable
from typing import Protocol

import pagewal

Pages = list[tuple[int, bytes]]
Commit = Callable[[Pages], None]
_RECORD = struct.Struct("<QI")  # page_no, length: what a hand-written WAL would frame


class Peer(Protocol):
    name: str

    def open(self, directory: str) -> None: ...

    def committer(self) -> Commit:
        """A commit function for the calling thread (peers may keep per-thread state)."""

    def close(self) -> None: ...


class PagewalPeer:
    def __init__(self, mode: str, fsync: str = "full") -> None:
        self.name = f"pagewal {mode}" + ("" if fsync == "full" else f" fsync={fsync}")
        self._mode = mode
        self._fsync = fsync
        self.wal: pagewal.Wal | None = None

    def open(self, directory: str) -> None:
        self.wal = pagewal.Wal.open(os.path.join(directory, "bench.db"),
                                    pagewal.WalConfig(mode=self._mode, fsync=self._fsync))

    def committer(self) -> Commit:
        assert self.wal is not None
        return self.wal.commit  # type: ignore[return-value]

    def close(self) -> None:
        assert self.wal is not None
        self.wal.close()


def _frame(pages: Pages) -> list[bytes]:
    buffers: list[bytes] = []
    for page_no, image in pages:
        buffers.append(_RECORD.pack(page_no, len(image)))
        buffers.append(image)
    return buffers


class NaiveSerializedWal:
    """One file, one lock: append the commit, fsync, return."""

    name = "naive serialized"

    def open(self, directory: str) -> None:
        self._fd = os.open(os.path.join(directory, "naive.wal"),
                           os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._lock = threading.Lock()

    def committer(self) -> Commit:
        def commit(pages: Pages) -> None:
            buffers = _frame(pages)
            with self._lock:
                os.writev(self._fd, buffers)
                os.fsync(self._fd)

        return commit

    def close(self) -> None:
        os.close(self._fd)


class PlainAppend:
    """The naive serialized WAL without its fsync: frame, write to one file under a lock."""

    name = "plain append (no fsync)"

    def open(self, directory: str) -> None:
        self._fd = os.open(os.path.join(directory, "plain.wal"),
                           os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._lock = threading.Lock()

    def committer(self) -> Commit:
        def commit(pages: Pages) -> None:
            buffers = _frame(pages)
            with self._lock:
                os.writev(self._fd, buffers)

        return commit

    def close(self) -> None:
        os.close(self._fd)


class NaiveGroupCommit:
    """Committers queue their records and wait; one flusher writes and fsyncs what is pending."""

    name = "naive group commit"

    def open(self, directory: str) -> None:
        self._fd = os.open(os.path.join(directory, "group.wal"),
                           os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._cond = threading.Condition()
        self._pending: list[bytes] = []
        self._queued = 0  # batches handed in
        self._flushed = 0  # batches durable
        self._stop = False
        self._flusher = threading.Thread(target=self._flush_loop, daemon=True)
        self._flusher.start()

    def _flush_loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stop:
                    self._cond.wait()
                if not self._pending:
                    return
                batch, self._pending = self._pending, []
                upto = self._queued
            os.write(self._fd, b"".join(batch))
            os.fsync(self._fd)
            with self._cond:
                self._flushed = upto
                self._cond.notify_all()

    def committer(self) -> Commit:
        def commit(pages: Pages) -> None:
            buffers = _frame(pages)
            with self._cond:
                self._pending.extend(buffers)
                self._queued += 1
                mine = self._queued
                self._cond.notify_all()
                while self._flushed < mine:
                    self._cond.wait()

        return commit

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._flusher.join()
        os.close(self._fd)


class SqliteWal:
    """SQLite in WAL mode, synchronous=FULL (durable), one connection per thread."""

    name = "sqlite wal full"

    def open(self, directory: str) -> None:
        self._path = os.path.join(directory, "bench.sqlite")
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        setup = self._connect()
        setup.execute("PRAGMA journal_mode=WAL")
        setup.execute("CREATE TABLE IF NOT EXISTS pages(id INTEGER PRIMARY KEY, data BLOB)")

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self._path, timeout=600, isolation_level=None,
                                     check_same_thread=False)
        connection.execute("PRAGMA synchronous=FULL")
        with self._lock:
            self._connections.append(connection)
        return connection

    def committer(self) -> Commit:
        connection = self._connect()

        def commit(pages: Pages) -> None:
            connection.execute("BEGIN IMMEDIATE")
            connection.executemany("INSERT OR REPLACE INTO pages(id, data) VALUES (?, ?)", pages)
            connection.execute("COMMIT")

        return commit

    def close(self) -> None:
        for connection in self._connections:
            connection.close()


class RocksDb:
    """RocksDB (rocksdict): one WriteBatch per commit, written with sync=True."""

    name = "rocksdb sync"

    def open(self, directory: str) -> None:
        from rocksdict import Rdict, WriteOptions

        self._db = Rdict(os.path.join(directory, "rocks"))
        self._options = WriteOptions()
        self._options.sync = True

    def committer(self) -> Commit:
        from rocksdict import WriteBatch

        def commit(pages: Pages) -> None:
            batch = WriteBatch()
            for page_no, image in pages:
                batch.put(page_no.to_bytes(8, "big"), image)
            self._db.write(batch, self._options)

        return commit

    def close(self) -> None:
        self._db.close()


class Lmdb:
    """LMDB: one write transaction per commit (LMDB syncs at commit by default)."""

    name = "lmdb"

    def open(self, directory: str) -> None:
        import lmdb

        self._env = lmdb.open(os.path.join(directory, "lmdb"), map_size=8 << 30, sync=True,
                              max_spare_txns=64)

    def committer(self) -> Commit:
        def commit(pages: Pages) -> None:
            with self._env.begin(write=True) as txn:
                for page_no, image in pages:
                    txn.put(page_no.to_bytes(8, "big"), image)

        return commit

    def close(self) -> None:
        self._env.close()


def all_peers() -> list[Peer]:
    return [PagewalPeer("auto"), PagewalPeer("conservative"), NaiveSerializedWal(),
            NaiveGroupCommit(), SqliteWal(), RocksDb(), Lmdb()]


def fsync_off_peers() -> list[Peer]:
    """Neither syncs: the commit path's own cost, with the disk out of the picture."""
    return [PagewalPeer("auto", fsync="off"), PlainAppend()]
