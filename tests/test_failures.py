"""Invariant 6: a failed write or fsync breaks the log; nothing later is acknowledged.

Format 2's durable writes are the segments (one ``pwritev2(RWF_DSYNC)`` each) and the ACTIVE
header a log file gets when the writer moves into it (the first one during ``Wal.open``). The
directory fsyncs happen in the pool's thread when it makes a log file ready; a failure there
breaks the log when the writer next needs a file.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import SMALL_LOG_FILE_BYTES, RecordingFileSystem, wait_until

from pagewal import BrokenLogError, Ticket, Wal, WalConfig, recover
from pagewal._layout import is_temp_segment_name, parse_log_file_temp_name
from pagewal.harness._workload import run_writers

CONFIG = WalConfig(lanes=2, epoch_interval_ms=1, log_file_bytes=SMALL_LOG_FILE_BYTES)
SEGMENTS_PER_FILE = SMALL_LOG_FILE_BYTES // 4096 - 1
"""One-block segments a log file holds (its first block is the file header)."""


def commit_until_broken(wal: Wal, threads: int = 4, each: int = 50) -> tuple[
        list[Ticket], list[BaseException]]:
    """Commit from several threads; return acknowledged tickets and the errors seen."""
    acked: list[Ticket] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work(index: int) -> None:
        for n in range(each):
            try:
                ticket = wal.commit({index * 1000 + n: bytes([index]) * 64}, timeout=60)
            except BrokenLogError as error:
                with lock:
                    errors.append(error)
                return
            with lock:
                acked.append(ticket)

    run_writers(work, threads)
    return acked, errors


def failing_durable_writes(
    monkeypatch: pytest.MonkeyPatch, fails: Callable[[int], OSError | None]
) -> None:
    """From now on, the n-th durable write (``pwritev`` with ``RWF_DSYNC``) raises
    ``fails(n)`` if that is an error; other writes (the pool's zero-fill) are left alone."""
    real_pwritev = os.pwritev
    calls = 0

    def pwritev(fd: int, buffers: list[bytes], offset: int, flags: int = 0) -> int:
        nonlocal calls
        if flags & os.RWF_DSYNC:
            calls += 1
            error = fails(calls)
            if error is not None:
                raise error
        return real_pwritev(fd, buffers, offset, flags)

    monkeypatch.setattr(os, "pwritev", pwritev)


def assert_broken_for_good(wal: Wal, acked: list[Ticket], errors: list[BaseException]) -> None:
    """Every committer was told, with the OSError chained; nothing at or after the failure
    was acknowledged (a contiguous durable prefix); close reports the breakage once."""
    assert errors, "every thread must be told"
    assert all(isinstance(e, BrokenLogError) for e in errors)
    assert all(isinstance(e.__cause__, OSError) for e in errors)
    assert "reopen" in str(errors[0])
    stats = wal.statistics()
    assert stats.broken
    assert all(t.epoch <= stats.durable_epoch for t in acked)
    assert all(t.commit_seq <= stats.durable_commit_seq for t in acked)
    with pytest.raises(BrokenLogError):
        wal.submit({1: b"later"})
    with pytest.raises(BrokenLogError):
        wal.close()
    wal.close()  # idempotent after the first report


def assert_reopen_recovers_every_acked_commit(db_path: Path, acked: list[Ticket]) -> None:
    result = recover(db_path)
    durable = {r.commit_seq for r in result.iter_records()}
    assert {t.commit_seq for t in acked} <= durable
    assert sorted(durable) == list(range(1, result.last_commit_seq + 1))
    names = os.listdir(db_path.parent)
    assert not any(is_temp_segment_name(db_path.name, n) for n in names)
    assert not any(parse_log_file_temp_name(db_path.name, n) for n in names)
    with Wal.open(db_path, CONFIG) as wal:  # the reopened log continues the chain
        ticket = wal.commit({0: b"after"})
    assert ticket.commit_seq == result.last_commit_seq + 1
    assert recover(db_path).last_commit_seq == ticket.commit_seq


@pytest.mark.parametrize("failing_write", [1, 7, SEGMENTS_PER_FILE + 1])
def test_a_failed_durable_write_breaks_the_log_and_the_durable_prefix_survives(
    db_path: Path, monkeypatch: pytest.MonkeyPatch, failing_write: int
) -> None:
    """The n-th durable write after open fails: a segment's, or (when commits roll over into
    the second file first) that file's ACTIVE header."""
    wal = Wal.open(db_path, CONFIG)
    failing_durable_writes(monkeypatch, lambda n: OSError(errno.EIO, "injected EIO")
                           if n == failing_write else None)
    acked, errors = commit_until_broken(wal)
    assert_broken_for_good(wal, acked, errors)
    monkeypatch.undo()
    assert_reopen_recovers_every_acked_commit(db_path, acked)


def test_a_failed_active_header_of_the_second_file_breaks_the_log_after_the_first_is_full(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One committer, one epoch per commit: the first file takes exactly its segments, then
    moving into the second file writes its ACTIVE header durably, and that fails."""
    wal = Wal.open(db_path, CONFIG)
    failing_durable_writes(monkeypatch, lambda n: OSError(errno.EIO, "injected EIO")
                           if n == SEGMENTS_PER_FILE + 1 else None)
    acked, errors = commit_until_broken(wal, threads=1, each=3 * SEGMENTS_PER_FILE)
    assert len(acked) == SEGMENTS_PER_FILE
    assert wal.statistics().durable_commit_seq == SEGMENTS_PER_FILE
    assert_broken_for_good(wal, acked, errors)
    monkeypatch.undo()
    assert_reopen_recovers_every_acked_commit(db_path, acked)


@pytest.mark.parametrize("log", ["new", "without-clean-shutdown"])
def test_a_failed_active_header_write_at_open_makes_open_raise_and_releases_the_log(
    db_path: Path, monkeypatch: pytest.MonkeyPatch, log: str
) -> None:
    """A new log, or one not closed cleanly, continues in a fresh file whose ACTIVE header
    ``Wal.open`` writes durably: if that fails, open raises and leaves nothing running."""
    acked: list[Ticket] = []
    if log == "without-clean-shutdown":
        wal = Wal.open(db_path, CONFIG)
        acked.append(wal.commit({1: b"first"}))
        # The clean-shutdown marker is close()'s only durable write: make it fail.
        failing_durable_writes(monkeypatch, lambda n: OSError(errno.EIO, "injected EIO"))
        with pytest.raises(BrokenLogError, match="clean-shutdown marker"):
            wal.close()
        monkeypatch.undo()
        assert not recover(db_path).clean_shutdown
    before = {t.ident for t in threading.enumerate()}
    failing_durable_writes(monkeypatch, lambda n: OSError(errno.EIO, "injected EIO")
                           if n == 1 else None)
    with pytest.raises(OSError) as raised:
        Wal.open(db_path, CONFIG)
    assert raised.value.errno == errno.EIO
    # open stopped every thread it started (ticker, pool) and released the lock.
    assert wait_until(lambda: {t.ident for t in threading.enumerate()
                               if t.is_alive()} <= before)
    monkeypatch.undo()
    assert_reopen_recovers_every_acked_commit(db_path, acked)


def test_a_failed_segment_write_breaks_the_log_and_leaves_no_temporary_file(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wal = Wal.open(db_path, CONFIG)
    failing_durable_writes(monkeypatch, lambda n: OSError(errno.ENOSPC, "injected: no space")
                           if n >= 3 else None)
    acked, errors = commit_until_broken(wal)
    assert errors and all(isinstance(e.__cause__, OSError) for e in errors)
    assert errors[0].__cause__.errno == errno.ENOSPC  # type: ignore[union-attr]
    assert_broken_for_good(wal, acked, errors)
    monkeypatch.undo()
    assert_reopen_recovers_every_acked_commit(db_path, acked)


@pytest.mark.parametrize("failing_file", [2, 3])
def test_a_failed_directory_fsync_in_the_pool_breaks_the_log_when_the_file_is_needed(
    db_path: Path, recording_fs: RecordingFileSystem, failing_file: int
) -> None:
    """The pool makes file 1 ready during open, file 2 right after, file 3 once file 2 is
    taken; the directory fsync after renaming file ``failing_file`` fails. The writer learns
    of it when it needs that file: every segment before it is acknowledged, none after."""
    pool_dir_fsyncs = 0

    def fails(number: int, path: str) -> bool:
        nonlocal pool_dir_fsyncs
        if threading.current_thread().name != "pagewal-log-files":
            return False
        pool_dir_fsyncs += 1
        return pool_dir_fsyncs == failing_file

    recording_fs.fail["fsync_dir"] = fails
    wal = Wal.open(db_path, CONFIG, fs=recording_fs)
    acked, errors = commit_until_broken(wal, threads=1, each=4 * SEGMENTS_PER_FILE)
    assert len(errors) == 1
    assert errors[0].__cause__ is not None and "fsync_dir" in str(errors[0].__cause__)
    files_filled = failing_file - 1
    assert len(acked) == files_filled * SEGMENTS_PER_FILE
    assert wal.statistics().durable_commit_seq == len(acked)
    assert_broken_for_good(wal, acked, errors)
    assert_reopen_recovers_every_acked_commit(db_path, acked)


def test_waiters_blocked_on_a_failing_epoch_are_released_with_the_error(
    db_path: Path, recording_fs: RecordingFileSystem
) -> None:
    config = WalConfig(lanes=2, epoch_interval_ms=60_000, log_file_bytes=SMALL_LOG_FILE_BYTES)
    wal = Wal.open(db_path, config, fs=recording_fs)
    # File 1 is active and the pool has made file 2 ready: from here on the only durable
    # writes ("writev" in the recording) are segments, and each one waits, then fails.
    assert wait_until(lambda: recording_fs.counts.get("fsync_dir", 0) >= 2)
    gate = threading.Event()
    recording_fs.gate["writev"] = gate
    recording_fs.fail["writev"] = lambda number, path: True
    outcomes: list[BaseException | None] = []
    tickets = [wal.submit({n: b"p"}) for n in range(8)]

    def waiter(ticket: Ticket) -> None:
        try:
            wal.wait_durable(ticket, timeout=60)
            outcomes.append(None)
        except BrokenLogError as error:
            outcomes.append(error)

    threads = [threading.Thread(target=waiter, args=(t,)) for t in tickets]
    try:
        for thread in threads:
            thread.start()
        assert wait_until(lambda: recording_fs.counts.get("writev", 0) >= 1)  # held
        assert outcomes == []
    finally:
        gate.set()
        for thread in threads:
            thread.join(timeout=60)
    assert len(outcomes) == 8
    assert all(isinstance(o, BrokenLogError) for o in outcomes)
    assert all(isinstance(o.__cause__, OSError) for o in outcomes if o is not None)
    assert not any(wal.is_durable(t) for t in tickets)
    with pytest.raises(BrokenLogError):
        wal.close()
    assert recover(db_path).last_commit_seq == 0
