"""Fixtures shared by the tests, and the guards that keep the suite from hanging.

A hung test fails (pytest-timeout, ``timeout`` in pyproject.toml, SIGALRM: it interrupts the
main thread's lock, event and join waits). Threads a test starts must end with it:
:class:`Background` owns them (daemon threads, gates released and threads joined at teardown
however the test ends), a test that leaves a non-daemon thread running fails, and a session
that would still wait for one at exit is ended after the summary with a message naming it.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from pagewal import FileMode, OsFileSystem

# Hypothesis's per-example deadline and its "too slow" health check measure wall time, which a
# busy machine stretches; neither decides whether a property holds.
settings.register_profile("pagewal", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("pagewal")

SMALL_LOG_FILE_BYTES = 64 << 10
"""Log file capacity for tests: every open makes a file ready (zero-filled to capacity) and the
pool keeps one more, so the 64 MiB default would write 128 MiB per test. Small files also make
tests roll over, recycle and fill files, which the default would rarely reach."""

# Logs opened with the configuration from the environment get small files too; a test that
# builds a WalConfig itself passes log_file_bytes=SMALL_LOG_FILE_BYTES.
os.environ.setdefault("PAGEWAL_LOG_FILE_BYTES", str(SMALL_LOG_FILE_BYTES))

JOIN_SECONDS = 60.0
"""How long a finished test waits for a thread it released before calling it stuck: far
longer than any released thread needs, even on a busy machine; it only bounds a failure."""


class Background:
    """Threads one test starts (``background`` fixture), ended however the test ends.

    Every thread is a daemon, so a stuck one cannot keep the interpreter alive. At teardown
    the events given to :meth:`release_on_exit` are set (opening any gate a thread may still
    wait on after a failed assertion), then every thread is joined; one still running after
    :data:`JOIN_SECONDS` fails the test. An exception raised in a thread is re-raised by
    :meth:`join`, or at teardown if the test never joined it.
    """

    def __init__(self) -> None:
        self._threads: list[threading.Thread] = []
        self._releases: list[threading.Event] = []
        self._errors: list[BaseException] = []

    def start(self, target: Callable[[], object], name: str = "test-background") -> None:
        """Run ``target()`` in a new daemon thread."""

        def run() -> None:
            try:
                target()
            except BaseException as error:  # re-raised in the test by join() or teardown
                self._errors.append(error)

        thread = threading.Thread(target=run, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def release_on_exit(self, *events: threading.Event) -> None:
        """Set ``events`` at teardown, before joining: the gates the threads may wait on."""
        self._releases.extend(events)

    def join(self) -> None:
        """Wait for every thread to end; re-raise the first exception one of them raised."""
        stuck = self._join_all()
        assert not stuck, f"threads still running after {JOIN_SECONDS} s: {stuck}"
        if self._errors:
            raise self._errors.pop(0)

    def close(self) -> None:
        for event in self._releases:
            event.set()
        stuck = self._join_all()
        if stuck:
            pytest.fail(f"threads still running {JOIN_SECONDS} s after the test released them: "
                        f"{stuck}")
        if self._errors:
            raise self._errors.pop(0)

    def _join_all(self) -> list[str]:
        deadline = time.monotonic() + JOIN_SECONDS
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return [thread.name for thread in self._threads if thread.is_alive()]


def wait_until(condition: Callable[[], object]) -> bool:
    """Poll until ``condition()`` holds (True) or :data:`JOIN_SECONDS` pass (False): for the
    progress of a thread that signals nothing. The bound only ends a failing test."""
    deadline = time.monotonic() + JOIN_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


@pytest.fixture
def background() -> Iterator[Background]:
    owner = Background()
    yield owner
    owner.close()


def _running_non_daemon_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate()
            if thread is not threading.main_thread() and not thread.daemon and thread.is_alive()]


@pytest.fixture(autouse=True)
def _no_test_leaves_a_thread_running() -> Iterator[None]:
    """A non-daemon thread still running after its test would keep pytest from exiting."""
    before = set(_running_non_daemon_threads())
    yield
    leaked = [thread for thread in _running_non_daemon_threads() if thread not in before]
    deadline = time.monotonic() + JOIN_SECONDS
    for thread in leaked:  # one that is ending anyway is waited for, not blamed
        thread.join(max(0.0, deadline - time.monotonic()))
    stuck = [thread.name for thread in leaked if thread.is_alive()]
    if stuck:
        pytest.fail(f"the test left non-daemon threads running: {stuck}; start them with the "
                    "background fixture (daemon, released and joined at teardown) or join "
                    "them in a finally block")


_EXIT_STATUS = pytest.StashKey[int]()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config.stash[_EXIT_STATUS] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """After the summary: end the process rather than wait forever for a stuck thread (the
    interpreter joins non-daemon threads at exit, and no test timeout covers that)."""
    stuck = _running_non_daemon_threads()
    deadline = time.monotonic() + JOIN_SECONDS
    for thread in stuck:
        thread.join(max(0.0, deadline - time.monotonic()))
    stuck = [thread for thread in stuck if thread.is_alive()]
    if not stuck:
        return
    status = config.stash.get(_EXIT_STATUS, 0) or pytest.ExitCode.TESTS_FAILED
    sys.__stderr__.write(
        f"pytest: non-daemon threads still running after the session: "
        f"{', '.join(thread.name for thread in stuck)}; exiting with status {int(status)} "
        "instead of waiting for them\n")
    sys.__stderr__.flush()
    os._exit(int(status))


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

    def open_direct(self, fd: int) -> int | None:
        direct = super().open_direct(fd)
        if direct is not None:  # writes through it are the file's writes, failed or gated
            self._fd_paths[direct] = self._fd_paths.get(fd, "?")
        return direct

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
