"""Invariant 6: a failed write or fsync breaks the log; nothing later is acknowledged."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import pytest
from conftest import RecordingFileSystem

from pagewal import BrokenLogError, Ticket, Wal, WalConfig, recover
from pagewal._layout import is_temp_segment_name
from pagewal.harness._workload import run_writers

CONFIG = WalConfig(lanes=2, epoch_interval_ms=1)


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


def assert_reopen_recovers_every_acked_commit(db_path: Path, acked: list[Ticket]) -> None:
    result = recover(db_path)
    durable = {r.commit_seq for r in result.iter_records()}
    assert {t.commit_seq for t in acked} <= durable
    assert sorted(durable) == list(range(1, result.last_commit_seq + 1))
    assert not any(is_temp_segment_name(db_path.name, n) for n in os.listdir(db_path.parent))
    with Wal.open(db_path, CONFIG) as wal:  # the reopened log continues the chain
        ticket = wal.commit({0: b"after"})
    assert ticket.commit_seq == result.last_commit_seq + 1
    assert recover(db_path).last_commit_seq == ticket.commit_seq


@pytest.mark.parametrize(("synced_by", "failing_call"),
                         [("segment", 1), ("segment", 7), ("directory", 1), ("directory", 7)])
def test_fsync_failure_breaks_the_log_and_the_durable_prefix_survives(
    db_path: Path, monkeypatch: pytest.MonkeyPatch, synced_by: str, failing_call: int
) -> None:
    """A segment's data sync (pwritev2 with RWF_DSYNC) or the directory fsync fails."""
    real_pwritev, real_fsync = os.pwritev, os.fsync
    calls = 0

    def flaky() -> None:
        nonlocal calls
        calls += 1
        if calls == failing_call:
            raise OSError(errno.EIO, "injected fsync failure")

    def flaky_pwritev(fd: int, buffers: list[bytes], offset: int, flags: int = 0) -> int:
        if flags & os.RWF_DSYNC:
            flaky()
        return real_pwritev(fd, buffers, offset, flags)

    def flaky_fsync(fd: int) -> None:
        flaky()
        real_fsync(fd)

    if synced_by == "segment":
        monkeypatch.setattr(os, "pwritev", flaky_pwritev)
    else:
        monkeypatch.setattr(os, "fsync", flaky_fsync)
    wal = Wal.open(db_path, CONFIG)
    acked, errors = commit_until_broken(wal)
    assert errors, "every thread must be told"
    assert all(isinstance(e.__cause__, OSError) for e in errors)
    assert "reopen" in str(errors[0])
    stats = wal.statistics()
    assert stats.broken
    # Nothing at or after the failed epoch was acknowledged (a contiguous durable prefix).
    assert all(t.epoch <= stats.durable_epoch for t in acked)
    with pytest.raises(BrokenLogError):
        wal.submit({1: b"later"})
    with pytest.raises(BrokenLogError):
        wal.close()
    wal.close()  # idempotent after the first report
    monkeypatch.setattr(os, "pwritev", real_pwritev)
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert_reopen_recovers_every_acked_commit(db_path, acked)


def test_write_failure_breaks_the_log_and_leaves_no_temporary_file(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_pwritev = os.pwritev
    calls = 0

    def failing_pwritev(fd: int, buffers: list[bytes], offset: int, flags: int = 0) -> int:
        nonlocal calls
        calls += 1
        if calls >= 3:
            raise OSError(errno.ENOSPC, "injected: no space left")
        return real_pwritev(fd, buffers, offset, flags)

    monkeypatch.setattr(os, "pwritev", failing_pwritev)
    wal = Wal.open(db_path, CONFIG)
    acked, errors = commit_until_broken(wal)
    assert errors and all(isinstance(e.__cause__, OSError) for e in errors)
    assert errors[0].__cause__.errno == errno.ENOSPC  # type: ignore[union-attr]
    with pytest.raises(BrokenLogError):
        wal.close()
    monkeypatch.setattr(os, "pwritev", real_pwritev)
    assert_reopen_recovers_every_acked_commit(db_path, acked)


def test_directory_fsync_failure_is_fatal_too(
    db_path: Path, recording_fs: RecordingFileSystem
) -> None:
    recording_fs.fail["fsync_dir"] = lambda number, path: number == 3
    wal = Wal.open(db_path, CONFIG, fs=recording_fs)
    acked, errors = commit_until_broken(wal, threads=2, each=20)
    assert errors
    assert wal.statistics().durable_epoch == 2  # epochs 1 and 2 only
    assert all(t.epoch <= 2 for t in acked)
    with pytest.raises(BrokenLogError):
        wal.close()
    assert_reopen_recovers_every_acked_commit(db_path, acked)


def test_waiters_blocked_on_a_failing_epoch_are_released_with_the_error(
    db_path: Path, recording_fs: RecordingFileSystem
) -> None:
    gate = threading.Event()
    recording_fs.gate["fsync"] = gate
    recording_fs.fail["fsync"] = lambda number, path: True
    wal = Wal.open(db_path, WalConfig(lanes=2, epoch_interval_ms=60_000), fs=recording_fs)
    outcomes: list[BaseException | None] = []
    tickets = [wal.submit({n: b"p"}) for n in range(8)]

    def waiter(ticket: Ticket) -> None:
        try:
            wal.wait_durable(ticket, timeout=60)
            outcomes.append(None)
        except BrokenLogError as error:
            outcomes.append(error)

    threads = [threading.Thread(target=waiter, args=(t,)) for t in tickets]
    for thread in threads:
        thread.start()
    gate.set()
    for thread in threads:
        thread.join(timeout=60)
    assert len(outcomes) == 8
    assert all(isinstance(o, BrokenLogError) for o in outcomes)
    assert not any(wal.is_durable(t) for t in tickets)
    with pytest.raises(BrokenLogError):
        wal.close()
    assert recover(db_path).last_commit_seq == 0
