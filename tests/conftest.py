from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from pagewal import FileMode, OsFileSystem


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "test.db"


class RecordingFileSystem(OsFileSystem):
    """The real file system, logging every operation and optionally failing or pausing one.

    ``fail`` maps an operation name to a predicate over its call number (1-based) and path;
    when it returns True the operation raises ``OSError(EIO)`` instead of running.
    ``gate`` maps an operation name to an Event the operation waits on before running.
    """

    def __init__(self) -> None:
        super().__init__()
        self.log: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.counts: dict[str, int] = {}
        self.fail: dict[str, Callable[[int, str], bool]] = {}
        self.gate: dict[str, threading.Event] = {}
        self.threads: dict[str, list[str]] = {}  # op -> name of the thread of each call
        self._fd_paths: dict[int, str] = {}

    def note(self, op: str, path: str) -> None:
        with self.lock:
            self.counts[op] = self.counts.get(op, 0) + 1
            number = self.counts[op]
            self.log.append((op, path))
            self.threads.setdefault(op, []).append(threading.current_thread().name)
        gate = self.gate.get(op)
        if gate is not None:
            gate.wait()
        check = self.fail.get(op)
        if check is not None and check(number, path):
            raise OSError(5, f"injected EIO on {op} #{number}", path)

    def open_for_write(self, path: str, mode: FileMode | None = None) -> int:
        self.note("open", path)
        fd = super().open_for_write(path, mode)
        self._fd_paths[fd] = path
        return fd

    def open_for_update(self, path: str) -> int:
        self.note("open_for_update", path)
        fd = super().open_for_update(path)
        self._fd_paths[fd] = path
        return fd

    def writev(self, fd: int, buffers: Sequence[bytes | bytearray | memoryview]) -> int:
        self.note("writev", self._fd_paths.get(fd, "?"))
        return super().writev(fd, buffers)

    def pwritev(
        self, fd: int, buffers: Sequence[bytes | bytearray | memoryview], offset: int
    ) -> int:
        self.note("pwritev", self._fd_paths.get(fd, "?"))
        return super().pwritev(fd, buffers, offset)

    def pwritev_dsync(
        self, fd: int, buffers: Sequence[bytes | bytearray | memoryview], offset: int
    ) -> int:
        # Logged (and failed or gated) as the write and the data sync it does together.
        self.note("writev", self._fd_paths.get(fd, "?"))
        written = os.pwritev(fd, buffers, offset)
        self.note("fsync", self._fd_paths.get(fd, "?"))
        os.fdatasync(fd)
        return written

    def fsync(self, fd: int) -> None:
        self.note("fsync", self._fd_paths.get(fd, "?"))
        super().fsync(fd)

    def rename(self, source: str, target: str) -> None:
        self.note("rename", target)
        super().rename(source, target)

    def unlink(self, path: str) -> None:
        self.note("unlink", path)
        super().unlink(path)

    def fsync_dir(self, directory: str) -> None:
        self.note("fsync_dir", directory)
        super().fsync_dir(directory)

    def ops_for(self, name: str) -> list[str]:
        """Operations touching ``name`` (or its temporary file), plus directory fsyncs."""
        with self.lock:
            return [op for op, path in self.log
                    if os.path.basename(path) in (name, name + ".tmp") or op == "fsync_dir"]


@pytest.fixture
def recording_fs() -> RecordingFileSystem:
    return RecordingFileSystem()
