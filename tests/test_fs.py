"""The file-system seam's promise: nothing that is not the log's own is written through.

Every file pagewal creates or opens for writing (log files, which the pool creates under
temporary names, the checkpoint's temporary file, the lock file, the pager's data file) refuses
a symbolic link, or anything else, planted at its name (:class:`ForeignFileError`, naming the
path), and leaves what the link points at untouched. New files take the database file's
permission bits. The lock file is checked to still be the locked file, at open and while the
log runs.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import SMALL_LOG_FILE_BYTES

from pagewal import (
    BrokenLogError,
    FileMode,
    ForeignFileError,
    LogLockedError,
    OsFileSystem,
    Wal,
    WalConfig,
    WalPager,
    recover,
)
from pagewal import _fs as fs_module
from pagewal import _wal as wal_module
from pagewal._codec import ChainPosition
from pagewal._layout import (
    TEMP_SUFFIX,
    checkpoint_name,
    decode_checkpoint,
    log_file_temp_name,
    parse_log_file_name,
    parse_log_file_temp_name,
    segment_name,
)

CONFIG = WalConfig(lanes=2, epoch_interval_ms=1, log_file_bytes=SMALL_LOG_FILE_BYTES)
VICTIM = b"precious bytes that are not the log's\n"
PAGE = 4096


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A file elsewhere that a planted symbolic link points at; it must never change."""
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    path = outside / "victim"
    path.write_bytes(VICTIM)
    return path


@pytest.fixture
def umask() -> Iterator[Callable[[int], object]]:
    """Set the process umask for the test (0o022 until told otherwise); restored afterwards."""
    old = os.umask(0o022)
    try:
        yield os.umask
    finally:
        os.umask(old)


def assert_untouched(victim: Path) -> None:
    assert victim.read_bytes() == VICTIM
    assert sorted(os.listdir(victim.parent)) == ["victim"]


def log_names(db_path: Path) -> list[str]:
    return sorted(n for n in os.listdir(db_path.parent) if n.startswith(db_path.name + "-wal"))


# --------------------------------------------------------------------------- the seam itself


@pytest.mark.parametrize("target", ["victim", "missing"])
def test_creating_a_temporary_file_never_follows_a_symlink_at_its_name(
    tmp_path: Path, victim: Path, target: str
) -> None:
    link = tmp_path / "x.tmp"
    pointed = victim if target == "victim" else victim.parent / "created-by-pagewal"
    link.symlink_to(pointed)
    with pytest.raises(ForeignFileError) as info:
        OsFileSystem().open_for_write(str(link))
    assert info.value.path == str(link) and str(link) in str(info.value)
    assert "symbolic link" in str(info.value) and info.value.errno == errno.EEXIST
    assert isinstance(info.value, OSError)
    assert link.is_symlink()
    assert_untouched(victim)


def test_creating_a_temporary_file_never_truncates_a_file_already_there(tmp_path: Path) -> None:
    leftover = tmp_path / "x.tmp"
    leftover.write_bytes(b"someone's")
    with pytest.raises(ForeignFileError, match="already there"):
        OsFileSystem().open_for_write(str(leftover))
    assert leftover.read_bytes() == b"someone's"


@pytest.mark.parametrize("kind", ["symlink", "dangling symlink", "directory", "fifo"])
def test_the_data_file_and_the_lock_file_must_be_regular_files_and_never_links(
    tmp_path: Path, victim: Path, kind: str
) -> None:
    fs = OsFileSystem()
    for open_it in (fs.open_for_update, fs.try_lock):
        path = tmp_path / f"{open_it.__name__}.db"
        if kind == "symlink":
            path.symlink_to(victim)
        elif kind == "dangling symlink":
            path.symlink_to(victim.parent / "would-be-created")
        elif kind == "directory":
            path.mkdir()
        else:
            os.mkfifo(path)
        with pytest.raises(ForeignFileError) as info:
            open_it(str(path))
        assert info.value.path == str(path)
        assert_untouched(victim)


def test_the_simulated_file_system_refuses_to_create_over_an_existing_file_too() -> None:
    from pagewal.harness import SimulatedFileSystem

    fs = SimulatedFileSystem({"/d/x.tmp": b"left over"})
    with pytest.raises(ForeignFileError) as info:
        fs.open_for_write("/d/x.tmp")
    assert info.value.path == "/d/x.tmp"
    assert fs.ops == [] and fs.read_file("/d/x.tmp") == b"left over"


def test_the_seam_error_survives_pickling() -> None:
    import pickle

    error = ForeignFileError((("/d/x.tmp", "a symbolic link is already there"),), errno.ELOOP)
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), copy.path, copy.files, copy.errno, str(copy)) == (
        ForeignFileError, error.path, error.files, errno.ELOOP, str(error))


# --------------------------------------------------------------------------- the log's names


def test_a_symlink_at_a_log_file_temp_name_breaks_the_log_and_the_victim_is_untouched(
    db_path: Path, victim: Path
) -> None:
    # Open makes file 1 active and the pool makes file 2 ready; file 3 is made only once file
    # 2 is taken. The pool meets the link there (and leaves it); the writer, needing file 3
    # when file 2 is full, gets the pool's error and breaks the log.
    temp = db_path.parent / log_file_temp_name(db_path.name, 3)
    acked = 0
    with Wal.open(db_path, CONFIG) as wal:
        temp.symlink_to(victim)
        with pytest.raises(BrokenLogError) as info:
            for page in range(1, 1000):
                wal.commit({page: b"x" * 100})
                acked = page
        cause = info.value.__cause__
        assert isinstance(cause, ForeignFileError) and cause.path == str(temp)
        assert str(temp) in str(info.value)
        assert wal.statistics().durable_commit_seq == acked
        with pytest.raises(BrokenLogError):
            wal.close()
    # Two whole files of one-block segments were acknowledged before the pool's error counted.
    blocks = SMALL_LOG_FILE_BYTES // 4096 - 1
    assert acked == 2 * blocks
    assert temp.is_symlink()
    assert_untouched(victim)
    # Recovery refuses the link at a name the log creates (it is not the log's own), naming
    # it, and leaves it alone; moved away, every acked commit is there.
    with pytest.raises(ForeignFileError) as refused:
        recover(db_path)
    assert str(temp) in str(refused.value)
    assert temp.is_symlink()
    assert_untouched(victim)
    temp.unlink()
    assert recover(db_path).last_commit_seq == acked


def test_temp_files_a_crash_left_are_removed_before_the_log_creates_its_own(
    db_path: Path,
) -> None:
    with Wal.open(db_path, CONFIG) as wal:
        wal.commit({1: b"a" * 10})
    directory = db_path.parent
    # What a kill -9 leaves: pre-created (empty) files of the next epochs, a half-written one,
    # and a checkpoint's temporary file.
    leftovers = [directory / (segment_name(db_path.name, epoch) + TEMP_SUFFIX) for epoch in (2, 3)]
    leftovers[0].write_bytes(b"")
    leftovers[1].write_bytes(b"half a segment")
    (directory / (checkpoint_name(db_path.name) + TEMP_SUFFIX)).write_bytes(b"")
    with Wal.open(db_path, CONFIG) as wal:
        assert len(wal.recovery.removed_temp_files) == 3
        wal.commit({2: b"b" * 10})
        wal.commit({3: b"c" * 10})
    result = recover(db_path)
    assert result.last_commit_seq == 3
    assert result.page_images() == {1: b"a" * 10, 2: b"b" * 10, 3: b"c" * 10}


def test_a_log_file_a_crash_left_half_created_does_not_stop_the_pool(db_path: Path) -> None:
    # A kill -9 while the pool was filling a new log file leaves its temporary file; the log
    # reopened must still be able to make that many files ready (the commit path needs them).
    with Wal.open(db_path, CONFIG) as wal:
        wal.commit({1: b"a" * 10})
    numbers = [n for name in os.listdir(db_path.parent)
               if (n := parse_log_file_name(db_path.name, name)) is not None]
    leftover = db_path.parent / log_file_temp_name(db_path.name, max(numbers) + 1)
    leftover.write_bytes(bytes(8192))
    blocks = SMALL_LOG_FILE_BYTES // 4096 - 1
    with Wal.open(db_path, CONFIG) as wal:
        for page in range(2, 2 + 3 * blocks):  # fills the files there and two more
            wal.commit({page: b"b" * 10})
    assert recover(db_path).last_commit_seq == 1 + 3 * blocks


def test_a_log_reopened_after_a_crash_during_file_creation_opens(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a kill -9 leaves while the pool fills file 2 and no clean-shutdown marker was
    # written: file 1 with the chain, file 2 only as its temporary. (The marker is failed
    # here so that the next open must continue in a fresh file, as after a crash.)
    wal = Wal.open(db_path, CONFIG)
    wal.commit({1: b"a" * 10})

    finish = wal._writer.finish

    def no_marker(durable: ChainPosition, *, marker: bool, sync: bool) -> None:
        finish(durable, marker=False, sync=sync)  # closes the files and the pool
        raise OSError(errno.EIO, "injected: no clean-shutdown marker")

    monkeypatch.setattr(wal._writer, "finish", no_marker)
    with pytest.raises(BrokenLogError):
        wal.close()
    monkeypatch.undo()
    for name in os.listdir(db_path.parent):
        if (parse_log_file_name(db_path.name, name) or 0) > 1:
            (db_path.parent / name).unlink()
    (db_path.parent / log_file_temp_name(db_path.name, 2)).write_bytes(bytes(8192))
    assert not recover(db_path).clean_shutdown
    with Wal.open(db_path, CONFIG) as wal:
        assert wal.recovery.last_commit_seq == 1
        wal.commit({2: b"b" * 10})
    assert recover(db_path).last_commit_seq == 2


def test_a_symlink_at_the_checkpoint_temp_name_breaks_the_pager_and_the_victim_is_untouched(
    db_path: Path, victim: Path
) -> None:
    temp = db_path.parent / (checkpoint_name(db_path.name) + TEMP_SUFFIX)
    pager = WalPager.open(db_path, PAGE, CONFIG)
    try:
        temp.symlink_to(victim)
        with pager.transaction() as tx:
            tx.write(3, b"p" * PAGE)
        with pytest.raises(BrokenLogError) as info:
            pager.checkpoint()
        cause = info.value.__cause__
        assert isinstance(cause, ForeignFileError) and cause.path == str(temp)
        assert str(temp) in str(info.value)
    finally:
        with contextlib.suppress(BrokenLogError):
            pager.close()
    assert temp.is_symlink()
    record = db_path.parent / checkpoint_name(db_path.name)  # still the one the store began with
    assert decode_checkpoint(record.read_bytes(), str(record)).record.position == ChainPosition()
    assert_untouched(victim)
    with pytest.raises(ForeignFileError) as refused:  # reported at open, not deleted ...
        WalPager.open(db_path, PAGE, CONFIG)
    assert refused.value.path == str(temp) and temp.is_symlink()
    temp.unlink()
    with WalPager.open(db_path, PAGE, CONFIG) as pager:  # ... then the data is replayed
        assert pager.read(3) == b"p" * PAGE
    assert_untouched(victim)


@pytest.mark.parametrize("target", ["victim", "missing"])
def test_a_symlink_at_the_lock_file_name_is_refused_at_open(
    db_path: Path, victim: Path, target: str
) -> None:
    lock = db_path.parent / f"{db_path.name}-wal-lock"
    lock.symlink_to(victim if target == "victim" else victim.parent / "created-by-pagewal")
    for open_it in (lambda: Wal.open(db_path, CONFIG), lambda: WalPager.open(db_path, PAGE, CONFIG),
                    lambda: recover(db_path)):
        with pytest.raises(ForeignFileError) as info:
            open_it()
        assert info.value.path == str(lock) and str(lock) in str(info.value)
    assert_untouched(victim)


def test_a_symlink_appearing_at_the_data_file_name_is_not_followed(
    db_path: Path, victim: Path
) -> None:
    class Unresolving(OsFileSystem):
        """Resolves nothing: as if the link appeared after open resolved the path."""

        def real_path(self, path: str) -> str:
            return path

    db_path.symlink_to(victim)
    with pytest.raises(ForeignFileError) as info:
        WalPager.open(db_path, PAGE, CONFIG, fs=Unresolving())
    assert info.value.path == str(db_path)
    assert_untouched(victim)


def test_a_store_opened_through_symlinks_keeps_one_log_beside_the_real_file(
    tmp_path: Path,
) -> None:
    real = tmp_path / "real"
    links = tmp_path / "links"
    real.mkdir()
    links.mkdir()
    store = real / "store.db"
    first, second = links / "a.db", links / "b.db"
    first.symlink_to(store)  # dangling until the pager creates the data file
    second.symlink_to(store)
    with WalPager.open(first, PAGE, CONFIG) as pager:
        with pager.transaction() as tx:
            tx.write(0, b"z" * PAGE)
        # The same store through another link is the same log: locked.
        with pytest.raises(LogLockedError):
            WalPager.open(second, PAGE, CONFIG)
        assert sorted(os.listdir(links)) == ["a.db", "b.db"]  # nothing beside the links
        assert f"{store.name}-wal-lock" in log_names(store)
    assert store.is_file() and not store.is_symlink()
    with WalPager.open(second, PAGE, CONFIG) as pager:
        assert pager.read(0) == b"z" * PAGE
    assert recover(first).last_commit_seq == 1


# --------------------------------------------------------------------------- permissions


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


class ModeRecording(OsFileSystem):
    """Records the mode of every file the log creates, as it is when the seam returns it (the
    log files are made ready in the background, so listing them would race)."""

    def __init__(self) -> None:
        super().__init__()
        self.created: dict[str, int] = {}

    def open_for_write(self, path: str, mode: FileMode | None = None) -> int:
        fd = super().open_for_write(path, mode)
        self.created[os.path.basename(path)] = stat.S_IMODE(os.fstat(fd).st_mode)
        return fd

    def try_lock(self, path: str, mode: FileMode | None = None) -> int | None:
        fd = super().try_lock(path, mode)
        if fd is not None:
            self.created[os.path.basename(path)] = stat.S_IMODE(os.fstat(fd).st_mode)
        return fd


@pytest.mark.parametrize(("db_mode", "mask"), [(0o600, 0o000), (0o660, 0o077), (0o640, 0o022)],
                         ids=["0600-umask000", "0660-umask077", "0640-umask022"])
def test_every_log_file_takes_the_data_files_permission_bits(
    db_path: Path, umask: Callable[[int], object], db_mode: int, mask: int
) -> None:
    db_path.write_bytes(b"")
    db_path.chmod(db_mode)
    umask(mask)
    fs = ModeRecording()
    with WalPager.open(db_path, PAGE, CONFIG, fs=fs) as pager:
        with pager.transaction() as tx:
            tx.write(1, b"a" * PAGE)
        pager.checkpoint()  # a checkpoint file (through its temporary file)
        with pager.transaction() as tx:
            tx.write(2, b"b" * PAGE)  # a segment after it
    # Every file the log created (lock, log files and checkpoint through their temporary
    # files) had the mode from the moment it was handed to the log.
    assert f"{db_path.name}-wal-lock" in fs.created
    assert checkpoint_name(db_path.name) + TEMP_SUFFIX in fs.created
    assert any(parse_log_file_temp_name(db_path.name, n) for n in fs.created)
    assert fs.created == dict.fromkeys(fs.created, db_mode)
    names = log_names(db_path)
    assert {f"{db_path.name}-wal-lock", checkpoint_name(db_path.name)} <= set(names)
    assert any(parse_log_file_name(db_path.name, n) for n in names)
    assert {n: mode_of(db_path.parent / n) for n in names} == dict.fromkeys(names, db_mode)
    assert mode_of(db_path) == db_mode


def test_an_existing_lock_file_is_brought_to_the_data_files_mode_at_open(
    db_path: Path, umask: Callable[[int], object]
) -> None:
    with WalPager.open(db_path, PAGE, CONFIG):
        pass
    lock = db_path.parent / f"{db_path.name}-wal-lock"
    assert mode_of(lock) == mode_of(db_path) == 0o644
    db_path.chmod(0o600)
    with WalPager.open(db_path, PAGE, CONFIG):
        assert mode_of(lock) == 0o600


def test_without_a_database_file_new_files_get_0644_less_the_umask(
    db_path: Path, umask: Callable[[int], object]
) -> None:
    umask(0o027)
    with Wal.open(db_path, CONFIG) as wal:
        wal.commit({1: b"x"})
        names = log_names(db_path)
        assert {n: mode_of(db_path.parent / n) for n in names} == dict.fromkeys(names, 0o640)
    recover(db_path, delete_after=True)  # writes a checkpoint file
    names = log_names(db_path)
    assert checkpoint_name(db_path.name) in names
    assert {n: mode_of(db_path.parent / n) for n in names} == dict.fromkeys(names, 0o640)


def test_a_new_data_file_gets_0644_less_the_umask_and_its_log_files_the_same(
    db_path: Path, umask: Callable[[int], object]
) -> None:
    umask(0o007)
    with WalPager.open(db_path, PAGE, CONFIG) as pager, pager.transaction() as tx:
        tx.write(0, b"q" * PAGE)
    assert mode_of(db_path) == 0o640
    names = log_names(db_path)
    assert {n: mode_of(db_path.parent / n) for n in names} == dict.fromkeys(names, 0o640)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root")
def test_a_process_running_as_root_gives_new_log_files_the_database_files_owner(
    db_path: Path,
) -> None:
    db_path.write_bytes(b"")
    os.chown(db_path, 4242, 4343)
    with WalPager.open(db_path, PAGE, CONFIG) as pager:
        with pager.transaction() as tx:
            tx.write(0, b"o" * PAGE)
        pager.checkpoint()
        with pager.transaction() as tx:
            tx.write(1, b"o" * PAGE)
    owners = {n: (os.lstat(db_path.parent / n).st_uid, os.lstat(db_path.parent / n).st_gid)
              for n in log_names(db_path)}
    assert owners and set(owners.values()) == {(4242, 4343)}


# --------------------------------------------------------------------------- the lock file


def lock_path(db_path: Path) -> Path:
    return db_path.parent / f"{db_path.name}-wal-lock"


def test_a_lock_file_replaced_between_open_and_flock_is_locked_again(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process unlinked the lock file after we opened it and locked its replacement:
    our flock then holds an orphan. try_lock must see it and find the lock taken."""
    lock = lock_path(db_path)
    real_flock = fcntl.flock
    other: list[int] = []

    def racing_flock(fd: int, operation: int) -> None:
        if not other:
            os.unlink(lock)
            other.append(os.open(lock, os.O_RDWR | os.O_CREAT, 0o644))
            real_flock(other[0], fcntl.LOCK_EX | fcntl.LOCK_NB)  # the other process's lock
        real_flock(fd, operation)

    monkeypatch.setattr(fs_module.fcntl, "flock", racing_flock)
    try:
        assert OsFileSystem().try_lock(str(lock)) is None
        with pytest.raises(LogLockedError):
            Wal.open(db_path, CONFIG)
    finally:
        for fd in other:
            os.close(fd)


def test_a_lock_file_deleted_between_open_and_flock_is_created_and_locked_again(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lock = lock_path(db_path)
    real_flock = fcntl.flock
    deleted: list[bool] = []

    def racing_flock(fd: int, operation: int) -> None:
        if not deleted:
            os.unlink(lock)
            deleted.append(True)
        real_flock(fd, operation)

    monkeypatch.setattr(fs_module.fcntl, "flock", racing_flock)
    fs = OsFileSystem()
    handle = fs.try_lock(str(lock))
    assert handle is not None
    try:
        fs.check_lock(handle, str(lock))  # the handle locks the file the name now names
        assert os.fstat(handle).st_ino == os.lstat(lock).st_ino
    finally:
        fs.unlock(handle)


def test_a_lock_file_that_keeps_being_replaced_gives_up_with_a_typed_error(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lock = lock_path(db_path)
    real_flock = fcntl.flock
    calls: list[int] = []

    def always_replaced(fd: int, operation: int) -> None:
        calls.append(fd)
        os.unlink(lock)
        os.close(os.open(lock, os.O_RDWR | os.O_CREAT, 0o644))
        real_flock(fd, operation)

    monkeypatch.setattr(fs_module.fcntl, "flock", always_replaced)
    with pytest.raises(LogLockedError, match="replaced") as info:
        Wal.open(db_path, CONFIG)
    assert str(lock) in str(info.value)
    assert len(calls) == fs_module.LOCK_ATTEMPTS


class OffsetClock:
    """The monotonic clock plus an offset the test moves forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset

    def skip_past_the_next_lock_check(self) -> None:
        self.offset += wal_module.LOCK_CHECK_SECONDS + 1


def replace_file(path: Path) -> None:
    fresh = path.with_name(path.name + ".new")
    fresh.write_bytes(b"")
    os.replace(fresh, path)


@pytest.mark.parametrize(("change", "cause"), [(os.unlink, FileNotFoundError),
                                               (replace_file, OSError)])
def test_a_lock_file_deleted_or_replaced_under_an_open_log_breaks_it_at_the_next_check(
    db_path: Path, change: Callable[[Path], None], cause: type[OSError]
) -> None:
    clock = OffsetClock()
    with Wal.open(db_path, CONFIG, clock=clock) as wal:
        wal.commit({1: b"before"})
        change(lock_path(db_path))
        clock.skip_past_the_next_lock_check()
        # submit never publishes; only the ticker does, and it checks the lock first.
        with pytest.raises(BrokenLogError) as info:
            wal.submit({2: b"after"})
            wal.flush(timeout=60)
        assert str(lock_path(db_path)) in str(info.value)
        assert "open the log again" in str(info.value)
        assert isinstance(info.value.__cause__, cause)
        assert wal.durable_position.commit_seq == 1
        with pytest.raises(BrokenLogError):
            wal.commit({3: b"later"})
        with pytest.raises(BrokenLogError):
            wal.close()
    assert recover(db_path).last_commit_seq == 1


def test_an_idle_log_notices_its_lock_file_was_deleted(db_path: Path) -> None:
    noticed = threading.Event()

    class Watching(OsFileSystem):
        def check_lock(self, handle: int, path: str) -> None:
            try:
                super().check_lock(handle, path)
            except OSError:
                noticed.set()
                raise

    clock = OffsetClock()
    wal = Wal.open(db_path, CONFIG, fs=Watching(), clock=clock)
    try:
        wal.commit({1: b"before"})
        os.unlink(lock_path(db_path))
        clock.skip_past_the_next_lock_check()
        # No commit wakes the ticker: its idle wait is bounded by the next lock check.
        assert noticed.wait(30), "the idle ticker never checked its lock file"
        with pytest.raises(BrokenLogError, match="wal-lock"):
            wal.submit({2: b"after"})
    finally:
        with contextlib.suppress(BrokenLogError):
            wal.close()


def test_the_lock_check_runs_at_most_once_per_interval(db_path: Path) -> None:
    checks: list[float] = []

    class Counting(OsFileSystem):
        def check_lock(self, handle: int, path: str) -> None:
            checks.append(time.monotonic())
            super().check_lock(handle, path)

    clock = OffsetClock()
    fs = Counting()
    with Wal.open(db_path, CONFIG, fs=fs, clock=clock) as wal:
        opened = len(checks)  # try_lock's own check
        for page in range(200):
            wal.commit({page: b"c" * 64})
        assert len(checks) - opened <= 1 + int(
            (time.monotonic() - checks[0]) / wal_module.LOCK_CHECK_SECONDS)


@pytest.mark.trio
async def test_the_trio_adapters_ticker_checks_the_lock_file_too(db_path: Path) -> None:
    from pagewal.trio import open_wal

    clock = OffsetClock()
    with pytest.raises(BrokenLogError) as info:
        async with open_wal(db_path, CONFIG, clock=clock) as wal:
            await wal.commit({1: b"before"})
            os.unlink(lock_path(db_path))
            clock.skip_past_the_next_lock_check()
            await wal.submit({2: b"after"})
            await wal.flush()
    assert str(lock_path(db_path)) in str(info.value)
    assert recover(db_path).last_commit_seq == 1
