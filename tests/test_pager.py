"""WalPager: transactions, the read overlay, checkpoints and recovery of the page store."""

from __future__ import annotations

import errno
import os
import random
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    JOIN_SECONDS,
    SMALL_LOG_FILE_BYTES,
    Background,
    RecordingFileSystem,
    wait_until,
)
from test_recovery import write_v1_segments

import pagewal
from pagewal import (
    BrokenLogError,
    ChainPosition,
    CheckpointFailedError,
    CheckpointMissingError,
    ClosedError,
    ConfigError,
    CorruptSegmentError,
    InvalidPageError,
    LogLockedError,
    OsFileSystem,
    ReadOnlyError,
    Ticket,
    Wal,
    WalConfig,
    WalPager,
    rebuild_checkpoint,
    recover,
)
from pagewal._fs import FileMode
from pagewal._layout import checkpoint_name, encode_checkpoint_v1
from pagewal._recovery import read_log
from pagewal.harness import SimulatedFileSystem, crash_states
from pagewal.harness._workload import run_writers

PAGE = 4096
_SOURCE_ROOT = str(Path(pagewal.__file__).resolve().parent.parent)
def small_files(**settings: Any) -> WalConfig:
    """A configuration with the tests' small log files (conftest.SMALL_LOG_FILE_BYTES)."""
    return WalConfig(log_file_bytes=SMALL_LOG_FILE_BYTES, **settings)


FAST = small_files(lanes=2, epoch_interval_ms=1, fsync="off")
DURABLE = small_files(lanes=2, epoch_interval_ms=1, fsync="full")


def image(page_no: int, version: int, size: int = PAGE) -> bytes:
    """A page that names itself: any torn, stale or misplaced read shows."""
    stamp = f"{page_no}:{version};".encode()
    return (stamp * (size // len(stamp) + 1))[:size]


def version_of(data: bytes, page_no: int) -> int:
    """The version stamped in ``data``; fails the test on a torn or foreign page."""
    if data == bytes(len(data)):
        return 0
    stamp = data.split(b";", 1)[0].decode()
    number, version = (int(part) for part in stamp.split(":"))
    assert number == page_no, f"page {page_no} holds page {number}'s image"
    assert data == image(page_no, version, len(data)), f"page {page_no} is torn"
    return version


class Oracle:
    """Expected page contents: commits applied in commit_seq order."""

    def __init__(self) -> None:
        self.commits: dict[int, dict[int, bytes]] = {}
        self.lock = threading.Lock()

    def add(self, ticket: Ticket | None, pages: dict[int, bytes]) -> None:
        assert ticket is not None
        with self.lock:
            self.commits[ticket.commit_seq] = dict(pages)

    def pages(self, upto: int | None = None) -> dict[int, bytes]:
        result: dict[int, bytes] = {}
        for seq in sorted(self.commits):
            if upto is None or seq <= upto:
                result.update(self.commits[seq])
        return result


def assert_store_equals(pager: WalPager, expected: dict[int, bytes], pages: range) -> None:
    for page_no in pages:
        assert pager.read(page_no) == expected.get(page_no, bytes(pager.page_size)), page_no


def segments(db: Path) -> list[int]:
    """Epochs of the segments the log still holds after its checkpoint. Format 2 keeps the log
    files a checkpoint covers (to recycle them), so this asks the reader, not the directory."""
    return [info.header.epoch for info in read_log(db, keep_records=False).segments]


def commit(pager: WalPager, pages: dict[int, bytes], *, durable: bool = True) -> Ticket:
    with pager.transaction() as tx:
        for page_no, data in pages.items():
            tx.write(page_no, data)
    assert tx.ticket is not None
    if durable:
        assert pager.wal.is_durable(tx.ticket)
    return tx.ticket


# --------------------------------------------------------------------------- transactions


def test_concurrent_transactions_from_16_threads_then_reopen_equal_an_oracle(
    db_path: Path,
) -> None:
    oracle = Oracle()
    config = small_files(lanes=2, epoch_interval_ms=1, fsync="full", checkpoint_bytes=256 << 10)

    def work(pager: WalPager, index: int) -> None:
        rng = random.Random(index)
        for version in range(1, 41):
            pages = {rng.randrange(300): image(index, version) for _ in range(rng.randint(1, 4))}
            with pager.transaction() as tx:
                for page_no, data in pages.items():
                    tx.write(page_no, data)
            oracle.add(tx.ticket, pages)

    with WalPager.open(str(db_path), PAGE, config) as pager:
        run_writers(lambda index: work(pager, index), 16)
        assert sorted(oracle.commits) == list(range(1, 16 * 40 + 1))
        assert_store_equals(pager, oracle.pages(), range(300))
        stats = pager.statistics()
        assert stats.checkpoints >= 1  # 640 commits of ~10 KiB cross 256 KiB many times
        assert stats.overlay_bytes <= stats.overlay_limit_bytes + 16 * 4 * PAGE
    with WalPager.open(str(db_path), PAGE, config) as pager:
        assert segments(db_path) == []  # open applied the log to the data file, retired it
        assert_store_equals(pager, oracle.pages(), range(300))
        assert pager.page_count == max(oracle.pages()) + 1
        # The commit sequence continues after the last commit.
        assert commit(pager, {0: image(0, 99)}).commit_seq == 16 * 40 + 1


def test_a_transaction_reads_its_own_writes_and_others_see_them_only_after_commit(
    db_path: Path,
) -> None:
    with WalPager.open(str(db_path), PAGE, FAST) as pager:
        commit(pager, {5: image(5, 1)})
        tx = pager.transaction()
        tx.write(5, image(5, 2))
        tx.write(6, image(6, 2))
        assert tx.read(5) == image(5, 2)
        assert tx.read(6) == image(6, 2)

        seen: list[bytes] = []
        reader = threading.Thread(target=lambda: seen.extend([pager.read(5), pager.read(6)]))
        reader.start()
        reader.join()
        assert seen == [image(5, 1), bytes(PAGE)]  # uncommitted writes are invisible
        assert pager.transaction().read(6) == bytes(PAGE)

        tx.commit()
        reader = threading.Thread(target=lambda: seen.extend([pager.read(5), pager.read(6)]))
        reader.start()
        reader.join()
        assert seen[2:] == [image(5, 2), image(6, 2)]


def test_an_exception_inside_the_transaction_discards_its_writes(db_path: Path) -> None:
    with WalPager.open(str(db_path), PAGE, FAST) as pager:
        with pytest.raises(RuntimeError), pager.transaction() as tx:
            tx.write(1, image(1, 1))
            raise RuntimeError("abort")
        assert pager.read(1) == bytes(PAGE)
        assert tx.ticket is None
        # No commit_seq was used: the next commit is 1.
        assert commit(pager, {2: image(2, 1)}).commit_seq == 1
    logged = recover(db_path)
    assert [(r.commit_seq, r.page_no) for r in logged.iter_records()] == [(1, 2)]
    with WalPager.open(str(db_path), PAGE, FAST) as pager:
        assert pager.read(1) == bytes(PAGE)
        assert pager.read(2) == image(2, 1)


def test_readers_never_see_a_torn_or_partial_commit_while_checkpoints_run(
    db_path: Path, background: Background
) -> None:
    """Each commit writes the same version to pages 0..3; a reader reading them in one
    overlay-consistent pass must never see a page go back in version, and every page it sees
    must be a whole image."""
    config = small_files(lanes=2, epoch_interval_ms=1, fsync="off", checkpoint_bytes=64 << 10)
    stop = threading.Event()
    background.release_on_exit(stop)
    problems: list[str] = []

    with WalPager.open(str(db_path), PAGE, config) as pager:

        def writer() -> None:
            try:
                for version in range(1, 301):
                    commit(pager, {p: image(p, version) for p in range(4)},
                           durable=version % 2 == 0)
            finally:
                stop.set()

        def reader() -> None:
            latest = dict.fromkeys(range(4), 0)
            while not stop.is_set():
                for page_no in range(4):
                    version = version_of(pager.read(page_no), page_no)
                    if version < latest[page_no]:
                        problems.append(f"page {page_no} went back from {latest[page_no]} to "
                                        f"{version}")
                    latest[page_no] = version

        background.start(writer, "writer")
        for _ in range(3):
            background.start(reader, "reader")
        background.join()
        assert pager.statistics().checkpoints >= 5
    assert problems == []


def test_durable_false_returns_a_ticket_visible_at_once_and_durable_after_waiting(
    db_path: Path,
) -> None:
    with WalPager.open(str(db_path), PAGE, small_files(epoch_interval_ms=50)) as pager:
        with pager.transaction() as tx:
            tx.write(3, image(3, 1))
            ticket = tx.commit(durable=False)
        assert ticket is not None
        assert pager.read(3) == image(3, 1)
        pager.wait_durable(ticket)
        assert pager.wal.is_durable(ticket)
    with WalPager.open(str(db_path), PAGE) as pager:
        assert pager.read(3) == image(3, 1)


# --------------------------------------------------------------------------- checkpoints


def test_checkpoint_writes_pages_into_the_data_file_and_retires_the_segments(
    db_path: Path,
) -> None:
    oracle = Oracle()
    with WalPager.open(str(db_path), PAGE, DURABLE) as pager:
        for version in range(1, 6):
            pages = {p: image(p, version) for p in range(version, version + 3)}
            oracle.add(commit(pager, pages), pages)
        assert segments(db_path)
        result = pager.checkpoint()
        assert result.position == pager.wal.durable_position
        assert result.pages_written == 7  # pages 1..7, each once, its newest image
        assert segments(db_path) == []
        assert pager.statistics().overlay_pages == 0  # served from the data file now
        assert_store_equals(pager, oracle.pages(), range(10))
        data = db_path.read_bytes()
        for page_no, expected in oracle.pages().items():
            assert data[page_no * PAGE : (page_no + 1) * PAGE] == expected
        assert pager.checkpoint().segments == 0  # nothing new: nothing written
    assert recover(db_path).base == result.position


class _DataFileGate(RecordingFileSystem):
    """Holds every write to the data file until ``gate`` opens; ``writers`` names the thread
    of each. Only the data file: the log's pool thread writes log files with pwritev too, and
    the first one must be made before the log opens."""

    def __init__(self, data_path: Path) -> None:
        super().__init__()
        self.data_path = str(data_path)
        self.data_gate = threading.Event()
        self.writers: list[str] = []

    def pwritev(
        self, fd: int, buffers: Sequence[bytes | bytearray | memoryview], offset: int
    ) -> int:
        if self._fd_paths.get(fd) == self.data_path:
            with self.lock:
                self.writers.append(threading.current_thread().name)
            self.data_gate.wait()
        return super().pwritev(fd, buffers, offset)


def test_automatic_checkpoints_run_off_the_commit_path_and_bound_the_overlay(
    db_path: Path, background: Background
) -> None:
    config = small_files(lanes=2, epoch_interval_ms=1, fsync="off", checkpoint_bytes=64 << 10)
    fs = _DataFileGate(db_path)
    gate = fs.data_gate
    background.release_on_exit(gate)  # the first checkpoint stalls writing the data file
    pager = WalPager.open(str(db_path), PAGE, config, fs=fs)
    done = threading.Event()
    oracle = Oracle()

    def writer() -> None:
        for n in range(64):  # 64 distinct pages = 256 KiB, twice the overlay limit
            oracle.add(commit(pager, {n: image(n, 1)}), {n: image(n, 1)})
        done.set()

    background.start(writer, "writer")
    # The writer must come to wait: the overlay fills up and the checkpoint cannot finish.
    assert wait_until(lambda: pager.statistics().overlay_waits >= 1)
    assert wait_until(lambda: bool(fs.writers))
    assert not done.is_set()
    stats = pager.statistics()
    assert stats.overlay_bytes <= stats.overlay_limit_bytes + PAGE
    # The data file is written by the checkpointer thread, never by a committer.
    assert fs.writers == ["pagewal-checkpointer"]
    gate.set()
    background.join()
    assert done.is_set()
    assert pager.statistics().checkpoints >= 1
    assert_store_equals(pager, oracle.pages(), range(64))
    pager.close()


def test_fsync_normal_checkpoint_fsyncs_segments_before_deleting_them(db_path: Path) -> None:
    """The log fsyncs fsync=normal segments later; a checkpoint that deleted one first would
    make that later fsync fail and break the log."""
    config = small_files(epoch_interval_ms=10_000, fsync="normal")
    oracle = Oracle()
    with WalPager.open(str(db_path), PAGE, config) as pager:
        for version in range(1, 4):
            oracle.add(commit(pager, {version: image(version, 1)}), {version: image(version, 1)})
        pager.checkpoint()
        oracle.add(commit(pager, {9: image(9, 1)}), {9: image(9, 1)})
    with WalPager.open(str(db_path), PAGE, config) as pager:
        assert_store_equals(pager, oracle.pages(), range(12))


def test_a_failed_data_file_fsync_breaks_the_pager_and_reopen_recovers_every_commit(
    db_path: Path, recording_fs: RecordingFileSystem
) -> None:
    oracle = Oracle()
    pager = WalPager.open(str(db_path), PAGE, DURABLE, fs=recording_fs)
    for n in range(5):
        oracle.add(commit(pager, {n: image(n, 1)}), {n: image(n, 1)})
    recording_fs.fail["fsync"] = lambda number, path: path == str(db_path)
    with pytest.raises(BrokenLogError) as info:
        pager.checkpoint()
    assert isinstance(info.value.__cause__, OSError)
    with pytest.raises(BrokenLogError):
        pager.read(0)  # the data file may have lost writes: not read again
    with pytest.raises(BrokenLogError):
        commit(pager, {0: image(0, 2)})
    with pytest.raises(BrokenLogError):
        pager.close()
    assert segments(db_path)  # nothing was retired
    with WalPager.open(str(db_path), PAGE, DURABLE) as pager:
        assert_store_equals(pager, oracle.pages(), range(6))


def _crash_states_during_checkpoint(
    seed: int,
) -> Iterator[tuple[str, dict[str, bytes], dict[int, bytes]]]:
    """Commit on the simulated file system, checkpoint, and yield every power-loss state at
    every operation of the checkpoint with the pages expected (all commits were acked)."""
    path = "/sim/store.db"
    fs = SimulatedFileSystem()
    oracle = Oracle()
    config = small_files(lanes=2, epoch_interval_ms=1, fsync="full", checkpoint_bytes=1 << 30)
    pager = WalPager.open(path, 512, config, fs=fs)
    rng = random.Random(seed)
    for version in range(1, 7):
        pages = {rng.randrange(12): image(rng.randrange(12), version, 512) for _ in range(2)}
        pages = {p: image(p, version, 512) for p in pages}
        oracle.add(commit(pager, pages), pages)
    start = fs.op_count()
    pager.checkpoint()
    # Through close(): the covered log files go back to the pool, whose thread recycles them
    # after the checkpoint returns (or leaves them to the next open if close() comes first).
    pager.close()
    end = fs.op_count()
    for count, description, state in crash_states(
            fs.initial, fs.ops, points=range(start, end + 1), rng=rng, torn_samples=1):
        yield f"crash after op {count} ({description})", state, oracle.pages()


def test_power_loss_at_every_step_of_a_checkpoint_reopens_to_exactly_the_committed_pages() -> (
        None):
    tried: list[str] = []
    for where, state, expected in _crash_states_during_checkpoint(seed=3):
        with WalPager.open("/sim/store.db", 512, DURABLE, fs=SimulatedFileSystem(state)) as pager:
            for page_no in range(12):
                assert pager.read(page_no) == expected.get(page_no, bytes(512)), where
        tried.append(where)
    # Every step: the data writes (lost, kept, torn, one of two in flight), its fsync, the
    # checkpoint file (tmp, fsync, rename, directory fsync), then close()'s marker. Format 1
    # also deleted one segment file per epoch here (over 50 states); format 2 hands the
    # covered log files to the pool instead, and these six commits fill no file, so 28 states
    # remain (more when the pool thread happens to make a ready file meanwhile).
    assert len(tried) >= 28
    for step in ("store.db:torn", "only [1] persisted", "-wal-checkpoint.tmp:lost",
                 "-wal-0000000000000001:lost"):
        assert any(step in where for where in tried), step


# --------------------------------------------------------------------------- typed errors


def test_pages_of_the_wrong_size_and_bad_page_numbers_are_typed_errors(db_path: Path) -> None:
    with WalPager.open(str(db_path), PAGE, FAST) as pager:
        tx = pager.transaction()
        for bad in (b"", b"x" * (PAGE - 1), b"x" * (PAGE + 1)):
            with pytest.raises(InvalidPageError, match="exactly 4096 bytes"):
                tx.write(0, bad)
        with pytest.raises(InvalidPageError, match="bytes-like"):
            tx.write(0, "text" * 1024)  # type: ignore[arg-type]
        for page_no in (-1, 2**32):
            with pytest.raises(InvalidPageError, match="outside"):
                tx.write(page_no, image(0, 1))
            with pytest.raises(InvalidPageError, match="outside"):
                pager.read(page_no)
        with pytest.raises(InvalidPageError, match="not an integer"):
            pager.read(1.0)  # type: ignore[arg-type]
        assert isinstance(InvalidPageError("x"), ValueError)
        assert tx.commit() is None  # the rejected writes staged nothing
    for page_size in (0, 1000, 256, 131072, True):
        with pytest.raises(InvalidPageError, match="power of two"):
            WalPager.open(str(db_path), page_size)


def test_reopening_with_another_page_size_is_refused_while_the_log_holds_pages(
    db_path: Path,
) -> None:
    pager = WalPager.open(str(db_path), PAGE, FAST)
    commit(pager, {0: image(0, 1)})
    pager.wal.close()  # leave the segment unapplied, as a crash would
    with pytest.raises(InvalidPageError, match="4096"):
        WalPager.open(str(db_path), 8192, FAST)
    with WalPager.open(str(db_path), PAGE, FAST) as reopened:  # the lock was released
        assert reopened.read(0) == image(0, 1)
    pager.close()


def test_use_after_close_is_a_typed_error(db_path: Path) -> None:
    pager = WalPager.open(str(db_path), PAGE, FAST)
    tx = pager.transaction()
    tx.write(0, image(0, 1))
    pager.close()
    pager.close()  # idempotent
    for call in (lambda: pager.read(0), pager.transaction, pager.checkpoint, tx.commit):
        with pytest.raises(ClosedError):
            call()
    finished = WalPager.open(str(db_path), PAGE, FAST)
    with finished.transaction() as tx2:
        tx2.write(1, image(1, 1))
    with pytest.raises(ClosedError, match="already been committed"):
        tx2.write(2, image(2, 1))
    finished.close()


def test_a_second_pager_on_the_same_store_is_refused(db_path: Path) -> None:
    with WalPager.open(str(db_path), PAGE, FAST), pytest.raises(LogLockedError):
        WalPager.open(str(db_path), PAGE, FAST)


def test_a_missing_data_file_behind_a_checkpoint_is_reported_not_read_as_zeros(
    db_path: Path,
) -> None:
    with WalPager.open(str(db_path), PAGE, FAST) as pager:
        commit(pager, {0: image(0, 1)})
        pager.checkpoint()
    db_path.unlink()
    assert (db_path.parent / checkpoint_name(db_path.name)).exists()
    with pytest.raises(CorruptSegmentError, match="missing"):
        WalPager.open(str(db_path), PAGE, FAST)


# --------------------------------------------------------------------------- page size, lost record


def test_reopening_a_checkpointed_store_with_another_page_size_is_refused(
    db_path: Path,
) -> None:
    pages = {n: bytes([ord("A") + n]) * PAGE for n in range(4)}
    with WalPager.open(str(db_path), PAGE, FAST) as pager:
        commit(pager, pages)
        pager.checkpoint()

    with pytest.raises(InvalidPageError) as info:
        WalPager.open(str(db_path), 2 * PAGE, FAST)
    assert "4096" in str(info.value) and "8192" in str(info.value)

    with WalPager.open(str(db_path), PAGE, FAST) as pager:
        assert [pager.read(n) for n in range(4)] == [pages[n] for n in range(4)]


def test_a_new_store_records_its_page_size_before_its_data_file_exists(db_path: Path) -> None:
    fs = RecordingFileSystem()
    with WalPager.open(str(db_path), PAGE, DURABLE, fs=fs):
        pass
    checkpoint = str(db_path.parent / checkpoint_name(db_path.name))
    published = fs.log.index(("rename", checkpoint))
    created = fs.log.index(("open_for_update", str(db_path)))
    assert published < created
    assert ("fsync_dir", str(db_path.parent)) in fs.log[published:created]
    assert recover(db_path).page_size == PAGE
    with pytest.raises(InvalidPageError, match="4096"):
        WalPager.open(str(db_path), 1024, FAST)


def test_a_store_with_a_version_1_checkpoint_records_its_page_size_when_opened(
    db_path: Path,
) -> None:
    with WalPager.open(str(db_path), PAGE, FAST) as pager:
        commit(pager, {0: image(0, 1)})
        pager.checkpoint()
    checkpoint = db_path.parent / checkpoint_name(db_path.name)
    checkpoint.write_bytes(encode_checkpoint_v1(recover(db_path).base))
    assert recover(db_path).page_size == 0

    with WalPager.open(str(db_path), PAGE, FAST) as pager:
        assert version_of(pager.read(0), 0) == 1
    assert recover(db_path).page_size == PAGE
    with pytest.raises(InvalidPageError):
        WalPager.open(str(db_path), 2 * PAGE, FAST)


@pytest.mark.parametrize("skip_corrupt", [False, True], ids=["default", "skip_corrupt"])
def test_a_store_that_lost_its_checkpoint_is_refused_until_it_is_rebuilt(
    db_path: Path, skip_corrupt: bool
) -> None:
    with WalPager.open(str(db_path), PAGE, FAST) as pager:
        commit(pager, {0: image(0, 1), 1: image(1, 1)})
        pager.checkpoint()
        commit(pager, {1: image(1, 2), 2: image(2, 2)})  # left in segments by close()
    checkpoint = db_path.parent / checkpoint_name(db_path.name)
    checkpoint.unlink()
    names = sorted(os.listdir(db_path.parent))

    with pytest.raises(CheckpointMissingError) as info:
        WalPager.open(str(db_path), PAGE, FAST, skip_corrupt=skip_corrupt)
    assert "--rebuild-checkpoint" in str(info.value)
    assert sorted(os.listdir(db_path.parent)) == names  # nothing set aside as *.corrupt

    rebuild_checkpoint(db_path, page_size=PAGE)
    with WalPager.open(str(db_path), PAGE, FAST) as pager:
        assert [version_of(pager.read(n), n) for n in range(3)] == [1, 2, 2]
        assert commit(pager, {3: image(3, 3)}).commit_seq == 3


def test_a_data_file_with_pages_but_no_checkpoint_record_is_refused(db_path: Path) -> None:
    with WalPager.open(str(db_path), PAGE, FAST) as pager:
        commit(pager, {0: image(0, 1)})
        pager.checkpoint()
    (db_path.parent / checkpoint_name(db_path.name)).unlink()

    with pytest.raises(CheckpointMissingError, match="--epoch E --commit-seq S"):
        WalPager.open(str(db_path), PAGE, FAST)

    rebuild_checkpoint(db_path, page_size=PAGE, position=ChainPosition(0, 0))
    with WalPager.open(str(db_path), PAGE, FAST) as pager:
        assert version_of(pager.read(0), 0) == 1


# --------------------------------------------------------------------------- sparse files


def test_a_sparse_store_spanning_1_gib_works(db_path: Path) -> None:
    last = (1 << 30) // PAGE - 1
    with WalPager.open(str(db_path), PAGE, FAST) as pager:
        commit(pager, {0: image(0, 1), last: image(last, 1)})
        assert pager.page_count == last + 1
        assert pager.read(last // 2) == bytes(PAGE)
        pager.checkpoint()
        assert pager.read(last) == image(last, 1)
    stat = db_path.stat()
    assert stat.st_size == 1 << 30
    assert stat.st_blocks * 512 < 1 << 20  # sparse: the hole takes no space
    with WalPager.open(str(db_path), PAGE, FAST) as pager:
        assert pager.page_count == last + 1
        assert pager.read(0) == image(0, 1)
        assert pager.read(last) == image(last, 1)
        assert pager.read(last // 2) == bytes(PAGE)
        assert pager.read(last + 1000) == bytes(PAGE)  # past the end: a zero page


# --------------------------------------------------------------------------- page limits


class _SmallFileSystem(RecordingFileSystem):
    """The real file system, claiming files may grow to at most ``limit`` bytes."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def max_file_size(self, fd: int) -> int:
        return self.limit


def _file_system_limit(directory: Path) -> int:
    probe = directory / "probe"
    probe.touch()
    fd = os.open(probe, os.O_RDONLY)
    try:
        return OsFileSystem().max_file_size(fd)
    finally:
        os.close(fd)
        probe.unlink()


@pytest.mark.parametrize("page_size", [4096, 65536])
def test_a_page_past_the_file_size_limit_is_refused_and_one_at_it_reopens(
    tmp_path: Path, page_size: int
) -> None:
    # ext4 (4 KiB blocks) allows 16 TiB - 4 KiB: page 2**32-1 of 4 KiB, or 2**28-1 of 64 KiB,
    # would end past it and make every later checkpoint (and open) fail with EFBIG.
    db = tmp_path / "limit.db"
    expected = min(2**32, _file_system_limit(tmp_path) // page_size)
    with WalPager.open(str(db), page_size, FAST) as pager:
        assert pager.max_pages == expected
        for page_no in sorted({expected, 2**32 - 1, 2**28 - 1, 2**28}):
            if page_no < expected:
                continue
            tx = pager.transaction()
            with pytest.raises(InvalidPageError, match=f"page {page_no} "):
                tx.write(page_no, image(page_no, 1, page_size))
            assert tx.commit(durable=False) is None  # nothing was staged
        last = expected - 1
        commit(pager, {0: image(0, 1, page_size), last: image(last, 1, page_size)})
    with WalPager.open(str(db), page_size, FAST) as pager:  # the checkpoint wrote the last page
        assert not segments(db)
        assert pager.read(last) == image(last, 1, page_size)
        assert pager.read(0) == image(0, 1, page_size)
    assert db.stat().st_size == expected * page_size


def test_the_file_systems_limit_bounds_the_pages_and_the_error_says_so(tmp_path: Path) -> None:
    db = tmp_path / "small.db"
    fs = _SmallFileSystem(limit=(1 << 20) + 100)
    with WalPager.open(str(db), PAGE, FAST, fs=fs) as pager:
        assert pager.max_pages == 256
        commit(pager, {255: image(255, 1)})
        with pager.transaction() as tx:
            with pytest.raises(InvalidPageError, match=r"past the store's limit of 256 pages.*"
                               r"file system holding .* 1,048,676 bytes.*larger pages"):
                tx.write(256, image(256, 1))
            tx.write(1, image(1, 1))
        assert tx.ticket is not None  # the transaction went on without the refused page
        with pytest.raises(ConfigError, match="max_pages"):
            WalPager.open(str(tmp_path / "other.db"), PAGE, FAST, fs=_SmallFileSystem(4096),
                          max_pages=2)


def test_max_pages_caps_the_store_and_names_how_to_raise_it(db_path: Path) -> None:
    with WalPager.open(str(db_path), PAGE, FAST, max_pages=100) as pager:
        assert pager.max_pages == 100
        commit(pager, {99: image(99, 1)}, durable=False)
        tx = pager.transaction()
        with pytest.raises(InvalidPageError, match=r"page 100 .*max_pages=100.*larger one"):
            tx.write(100, image(100, 1))
        tx.rollback()
    # A smaller cap later: acknowledged pages past it stay readable; new writes are refused.
    with WalPager.open(str(db_path), PAGE, FAST, max_pages=10) as pager:
        assert pager.read(99) == image(99, 1)
        with pytest.raises(InvalidPageError, match="page 10 "):
            pager.transaction().write(10, image(10, 1))
    for bad in (0, -1, True, 1.5, "100"):
        with pytest.raises(ConfigError, match="max_pages"):
            WalPager.open(str(db_path), PAGE, FAST, max_pages=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"max_pages=4294967297 .*at most|from 1 to"):
        WalPager.open(str(db_path), PAGE, FAST, max_pages=2**32 + 1)
    with WalPager.open(str(db_path), PAGE, FAST) as pager:  # nothing above left it locked
        assert pager.read(99) == image(99, 1)


def test_the_process_file_size_limit_bounds_the_pages(tmp_path: Path) -> None:
    # RLIMIT_FSIZE is per process: set it in a child so this test run is not affected.
    script = textwrap.dedent("""
        import resource, sys
        from pagewal import InvalidPageError, WalConfig, WalPager
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, resource.RLIM_INFINITY))
        with WalPager.open(sys.argv[1], 4096, WalConfig(fsync="off",
                                                             log_file_bytes=64 << 10)) as pager:
            print(pager.max_pages)
            try:
                pager.transaction().write(256, bytes(4096))
            except InvalidPageError as error:
                print(error)
        """)
    completed = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "child.db")], capture_output=True,
        text=True, timeout=120, check=False, env={**os.environ, "PYTHONPATH": _SOURCE_ROOT})
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.splitlines()[0] == "256"
    assert "RLIMIT_FSIZE" in completed.stdout and "1,048,576 bytes" in completed.stdout


# --------------------------------------------------------------------------- failing checkpoints


class _FaultyFileSystem(RecordingFileSystem):
    """:class:`RecordingFileSystem` whose injected failures carry ``error`` (an errno)."""

    def __init__(self, error: int, limit: int | None = None) -> None:
        super().__init__()
        self.error = error
        self.limit = limit

    def note(self, op: str, path: str) -> None:
        try:
            super().note(op, path)
        except OSError:
            raise OSError(self.error, f"injected {os.strerror(self.error)} on {op}", path) from None

    def max_file_size(self, fd: int) -> int:
        return super().max_file_size(fd) if self.limit is None else self.limit


_MUTATING = {"open", "open_for_update", "writev", "pwritev", "fsync", "rename", "unlink",
             "fsync_dir"}


def _log_files(db: Path) -> dict[str, bytes]:
    """Every log file beside ``db`` (segments, checkpoint, leftovers) and its content."""
    return {p.name: p.read_bytes() for p in sorted(db.parent.iterdir())
            if p.name.startswith(f"{db.name}-wal-") and not p.name.endswith("-wal-lock")}


def _store_files(db: Path) -> tuple[bytes, list[int]]:
    """The checkpoint file's content and the epochs of the segments the log holds after it.
    Not the log files themselves: every open activates one (rewriting its header) and the pool
    creates ready ones; what must not change is the record and the segments it still needs.
    (Nor the data file: a checkpoint that failed part way may have written pages into it,
    which the log still holds.)"""
    return (db.with_name(checkpoint_name(db.name)).read_bytes(), segments(db))


def _store_with_unapplied_log(db: Path) -> dict[int, bytes]:
    """A store with a checkpoint and acknowledged commits after it left in the log (as a crash
    leaves them); returns the pages it holds."""
    oracle = Oracle()
    pager = WalPager.open(str(db), PAGE, DURABLE)
    first = {n: image(n, 1) for n in range(4)}
    oracle.add(commit(pager, first), first)
    pager.checkpoint()
    for version, pages in enumerate(([2, 3, 4, 5], [5, 40], [0]), start=2):
        written = {n: image(n, version) for n in pages}
        oracle.add(commit(pager, written), written)
    pager.wal.close()  # the later commits stay in the log, unapplied
    pager.close()
    assert segments(db) and checkpoint_name(db.name) in _log_files(db)
    return oracle.pages()


@pytest.mark.parametrize(("op", "error", "where"), [
    ("pwritev", errno.ENOSPC, "store.db"),
    ("pwritev", errno.EFBIG, "store.db"),
    ("fsync", errno.EIO, "store.db"),
    ("open", errno.EROFS, "-wal-checkpoint.tmp"),
    ("rename", errno.EIO, "-wal-checkpoint"),
])
def test_a_checkpoint_failing_at_open_is_a_typed_error_and_read_only_serves_every_page(
    tmp_path: Path, op: str, error: int, where: str
) -> None:
    db = tmp_path / "store.db"
    expected = _store_with_unapplied_log(db)
    before = _store_files(db)
    fs = _FaultyFileSystem(error)
    fs.fail[op] = lambda number, path: path.endswith(where)
    for _ in range(2):  # the same answer every time, never "reopen to replay"
        with pytest.raises(CheckpointFailedError, match=r"read_only=True.*open the store again"
                           ) as info:
            WalPager.open(str(db), PAGE, DURABLE, fs=fs)
        assert isinstance(info.value.__cause__, OSError)
        assert info.value.__cause__.errno == error
        assert _store_files(db) == before  # no segment lost, the checkpoint unchanged

    reader_fs = RecordingFileSystem()
    with WalPager.open(str(db), PAGE, fs=reader_fs, read_only=True) as pager:
        assert pager.read_only
        assert pager.page_count == 41
        assert_store_equals(pager, expected, range(48))
        with pytest.raises(ReadOnlyError, match="read_only"):
            pager.transaction()
        with pytest.raises(ReadOnlyError):
            pager.checkpoint()
        with pytest.raises(ReadOnlyError):
            pager.wait_durable(Ticket(1, 1))
        with pytest.raises(ReadOnlyError):
            pager.wal  # noqa: B018
        assert pager.statistics().wal is None
    assert not [entry for entry in reader_fs.log if entry[0] in _MUTATING]
    assert _store_files(db) == before

    with WalPager.open(str(db), PAGE, DURABLE) as pager:  # the fault is gone
        assert_store_equals(pager, expected, range(48))
    assert not segments(db)
    with WalPager.open(str(db), PAGE, DURABLE) as pager:
        assert_store_equals(pager, expected, range(48))


def test_a_checkpoint_failing_after_it_is_recorded_still_leaves_every_page_readable(
    tmp_path: Path,
) -> None:
    db = tmp_path / "store.db"
    expected = _store_with_unapplied_log(db)
    names = _log_files(db).keys()
    record = db.with_name(checkpoint_name(db.name))
    before = record.read_bytes()
    fs = _FaultyFileSystem(errno.EIO)
    # Format 2 deletes no segment file: what can fail once the record is in place is the
    # directory fsync that makes its rename durable (the covered log files are handed back
    # to the pool only after it).
    fs.fail["fsync_dir"] = lambda number, path: ("rename", str(record)) in fs.log
    with pytest.raises(CheckpointFailedError) as info:
        WalPager.open(str(db), PAGE, DURABLE, fs=fs)
    assert isinstance(info.value.__cause__, OSError)
    assert record.read_bytes() != before  # it failed after recording the checkpoint
    assert names <= _log_files(db).keys()  # the log files are kept; the checkpoint covers them
    with WalPager.open(str(db), PAGE, read_only=True) as pager:
        assert_store_equals(pager, expected, range(48))
    with WalPager.open(str(db), PAGE, DURABLE) as pager:
        assert_store_equals(pager, expected, range(48))
    assert not segments(db)


def test_a_checkpoint_failing_after_it_is_recorded_keeps_a_format_1_logs_segments(
    tmp_path: Path,
) -> None:
    # A format 1 log's segment files are still deleted once the record covers them: a failed
    # unlink leaves them, and every page stays readable.
    db = tmp_path / "store.db"
    versions = ([0, 1, 2], [2, 40], [0])
    write_v1_segments(db, [([(n, image(n, v)) for n in pages], None)
                           for v, pages in enumerate(versions, start=1)])
    expected = {n: image(n, v) for v, pages in enumerate(versions, start=1) for n in pages}
    names = sorted(p.name for p in tmp_path.iterdir() if "-wal-seg-" in p.name)
    assert len(names) == 3
    fs = _FaultyFileSystem(errno.EIO)
    fs.fail["unlink"] = lambda number, path: "-wal-seg-" in path and not path.endswith(".tmp")
    with pytest.raises(CheckpointFailedError) as info:
        WalPager.open(str(db), PAGE, DURABLE, fs=fs)
    assert isinstance(info.value.__cause__, OSError)
    assert ("rename", str(db.with_name(checkpoint_name(db.name)))) in fs.log  # recorded
    assert sorted(p.name for p in tmp_path.iterdir() if "-wal-seg-" in p.name) == names
    with WalPager.open(str(db), PAGE, read_only=True) as pager:
        assert_store_equals(pager, expected, range(48))
    with WalPager.open(str(db), PAGE, DURABLE) as pager:
        assert_store_equals(pager, expected, range(48))
    assert not segments(db)
    assert not [p for p in tmp_path.iterdir() if "-wal-seg-" in p.name]


def test_a_log_page_past_the_file_size_limit_fails_open_without_writing_it(
    tmp_path: Path,
) -> None:
    # A store written where files may be larger, opened where they may not (another file
    # system, a lower RLIMIT_FSIZE): nothing is tried that would fail with EFBIG (or SIGXFSZ).
    db = tmp_path / "store.db"
    expected = _store_with_unapplied_log(db)
    before = _store_files(db)
    fs = _FaultyFileSystem(errno.EIO, limit=40 * PAGE)
    with pytest.raises(CheckpointFailedError, match=r"page 40 is past .* 40 pages.*file system"
                       ) as info:
        WalPager.open(str(db), PAGE, DURABLE, fs=fs)
    assert isinstance(info.value.__cause__, OSError)
    assert info.value.__cause__.errno == errno.EFBIG
    # The data file was not written (the log's own files are: the open activates one).
    assert not [path for op, path in fs.log if op in ("pwritev", "writev") and path == str(db)]
    assert _store_files(db) == before
    with WalPager.open(str(db), PAGE, fs=_FaultyFileSystem(errno.EIO, limit=40 * PAGE),
                       read_only=True) as pager:
        assert_store_equals(pager, expected, range(48))


def test_a_read_only_open_takes_the_lock_and_needs_no_data_file(db_path: Path) -> None:
    with WalPager.open(str(db_path), PAGE, FAST) as pager, pytest.raises(
            LogLockedError, match="open elsewhere"):
        WalPager.open(str(db_path), PAGE, read_only=True)
    other = db_path.parent / "plain.db"  # a Wal's log: no data file, no checkpoint
    with Wal.open(str(other), FAST) as wal:
        wal.commit([(3, image(3, 1)), (7, image(7, 1))])
    with WalPager.open(str(other), PAGE, read_only=True) as pager:
        assert pager.read(3) == image(3, 1)
        assert pager.read(7) == image(7, 1)
        assert pager.read(5) == bytes(PAGE)
        assert pager.page_count == 8
        # While it reads, no writer may change the store.
        with pytest.raises(LogLockedError):
            WalPager.open(str(other), PAGE, FAST)
    assert not other.exists()  # nothing was created
    with pytest.raises(InvalidPageError, match="4096"):
        WalPager.open(str(other), 8192, read_only=True)
    with WalPager.open(str(other), PAGE, FAST) as pager:  # every lock was released
        assert pager.read(7) == image(7, 1)


@pytest.mark.parametrize("refusal", [errno.EROFS, errno.EACCES, errno.EPERM],
                         ids=["EROFS", "EACCES", "EPERM"])
def test_a_read_only_open_on_a_read_only_file_system_reads_without_the_lock(
    db_path: Path, refusal: int
) -> None:
    # The same refusals that make recover() read without the lock.
    expected = _store_with_unapplied_log(db_path)

    class ReadOnlyFileSystem(RecordingFileSystem):
        def try_lock(self, path: str, mode: FileMode | None = None) -> int | None:
            raise OSError(refusal, os.strerror(refusal), path)

    with WalPager.open(str(db_path), PAGE, fs=ReadOnlyFileSystem(), read_only=True) as pager:
        assert_store_equals(pager, expected, range(48))


def test_data_file_write_errors_are_reported_with_errno(db_path: Path,
                                                         recording_fs: RecordingFileSystem
                                                         ) -> None:
    # Only the data file fails: the log's files are written with pwritev too.
    recording_fs.fail["pwritev"] = lambda number, path: path == str(db_path)
    pager = WalPager.open(str(db_path), PAGE, FAST, fs=recording_fs)
    commit(pager, {0: image(0, 1)})
    with pytest.raises(BrokenLogError) as info:
        pager.checkpoint()
    assert isinstance(info.value.__cause__, OSError)
    assert info.value.__cause__.errno == errno.EIO
    with pytest.raises(BrokenLogError):
        pager.close()


class _PausingFileSystem(RecordingFileSystem):
    """Writes the data file in two halves with a pause between (``halfway`` is set in it), and
    can hold a data-file pread until ``read_gate`` opens (``reading`` is set when one waits)."""

    def __init__(self, data_path: Path) -> None:
        super().__init__()
        self.data_path = str(data_path)
        self.halfway = threading.Event()
        self.resume = threading.Event()
        self.reading = threading.Event()
        self.read_gate: threading.Event | None = None

    def pwritev(
        self, fd: int, buffers: Sequence[bytes | bytearray | memoryview], offset: int
    ) -> int:
        if self._fd_paths.get(fd) != self.data_path:
            return super().pwritev(fd, buffers, offset)
        data = b"".join(bytes(b) for b in buffers)
        half = len(data) // 2
        written = os.pwrite(fd, data[:half], offset)
        self.halfway.set()
        self.resume.wait()
        return written + os.pwrite(fd, data[half:], offset + half)

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        if self.read_gate is not None:
            self.reading.set()
            self.read_gate.wait()
        return super().pread(fd, size, offset)


def _store_with_page_0_checkpointed(db_path: Path, fs: _PausingFileSystem) -> WalPager:
    pager = WalPager.open(str(db_path), PAGE, FAST, fs=fs)
    commit(pager, {0: image(0, 1)})
    fs.resume.set()
    pager.checkpoint()
    fs.halfway.clear()
    fs.resume.clear()
    assert pager.statistics().overlay_pages == 0
    return pager


def test_a_page_the_checkpoint_is_rewriting_is_served_from_memory_not_half_written(
    db_path: Path, background: Background
) -> None:
    fs = _PausingFileSystem(db_path)
    pager = _store_with_page_0_checkpointed(db_path, fs)
    durable = threading.Event()
    installed = threading.Event()
    background.release_on_exit(installed, fs.resume)
    real_install = pager._install

    def slow_install(commit_seq: int, pages: Sequence[tuple[int, bytes]]) -> None:
        durable.set()  # waited durable, so the checkpoint below must write it
        installed.wait()  # a committer that has not yet installed its durable commit
        real_install(commit_seq, pages)

    pager._install = slow_install  # type: ignore[method-assign]
    background.start(lambda: commit(pager, {0: image(0, 2)}), "committer")
    assert durable.wait(JOIN_SECONDS)
    background.start(pager.checkpoint, "checkpointer")
    assert fs.halfway.wait(JOIN_SECONDS)  # the data file holds half of version 2 now
    assert version_of(pager.read(0), 0) == 2  # pinned: whole, and the durable version
    fs.resume.set()
    installed.set()
    background.join()
    assert pager.read(0) == image(0, 2)
    pager.close()


def test_a_reader_that_missed_the_overlay_before_a_checkpoint_rereads_its_page(
    db_path: Path, background: Background
) -> None:
    fs = _PausingFileSystem(db_path)
    pager = _store_with_page_0_checkpointed(db_path, fs)
    gate = fs.read_gate = threading.Event()
    background.release_on_exit(gate, fs.resume)
    seen: list[bytes] = []
    read = threading.Event()

    def reader() -> None:
        seen.append(pager.read(0))
        read.set()

    background.start(reader, "reader")
    assert fs.reading.wait(JOIN_SECONDS)  # looked in the overlay (miss), about to read the file
    fs.read_gate = None
    # Meanwhile version 2 commits and a checkpoint gets half way through writing it.
    commit(pager, {0: image(0, 2)})
    background.start(pager.checkpoint, "checkpointer")
    assert fs.halfway.wait(JOIN_SECONDS)
    gate.set()  # the reader reads the half-written page now, then looks again
    assert read.wait(JOIN_SECONDS)  # while the checkpoint still holds the page half written
    fs.resume.set()
    background.join()
    assert len(seen) == 1
    assert version_of(seen[0], 0) == 2  # re-read from memory, never half of each version
    pager.close()


def test_close_waits_for_a_checkpoint_another_thread_is_running(
    db_path: Path, background: Background
) -> None:
    fs = _PausingFileSystem(db_path)
    background.release_on_exit(fs.resume)
    pager = _store_with_page_0_checkpointed(db_path, fs)
    commit(pager, {0: image(0, 2)})
    closed = threading.Event()

    def close() -> None:
        pager.close()
        closed.set()

    background.start(pager.checkpoint, "checkpointer")
    assert fs.halfway.wait(JOIN_SECONDS)
    background.start(close, "closer")
    # The closer must still be waiting (the data file stays open under the running checkpoint);
    # a close that did not wait would usually be seen here, and never wrongly reported.
    assert not closed.wait(0.2)
    fs.resume.set()
    background.join()
    assert closed.is_set()
    with WalPager.open(str(db_path), PAGE, FAST) as reopened:
        assert reopened.read(0) == image(0, 2)
        assert reopened.wal.recovery.records.size == 0  # applied at open, then released
