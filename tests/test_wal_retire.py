"""Wal.retire: a caller that keeps its own pages lets the log forget them, crash-safely."""

from __future__ import annotations

import errno
import os
import random
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import RecordingFileSystem

from pagewal import (
    BrokenLogError,
    ChainPosition,
    ClosedError,
    CorruptSegmentError,
    InvalidPositionError,
    Ticket,
    Wal,
    WalConfig,
    WalPager,
    recover,
)
from pagewal._layout import parse_segment_name
from pagewal.harness import Fault, SimulatedFileSystem, crash_states

DURABLE = WalConfig(lanes=2, epoch_interval_ms=1, fsync="full")
# The ticker seals only when asked (flush) or when every staged commit is awaited, so tests
# decide which commits share an epoch.
GROUPED = WalConfig(lanes=2, epoch_interval_ms=60_000, fsync="full")


def page(seq: int) -> bytes:
    return seq.to_bytes(4, "little") * 1024


class SyncRecordingFileSystem(RecordingFileSystem):
    """Also names the file of each fsync of a file opened for syncing (fsync=normal), logs
    releasing the log's lock, and can hold the first unlink until told to go on."""

    def __init__(self) -> None:
        super().__init__()
        self.unlinking = threading.Event()  # set when an unlink is about to run
        self.go_on = threading.Event()  # unlinks wait for it once hold_unlinks is set
        self.hold_unlinks = False

    def open_for_sync(self, path: str) -> int:
        fd = super().open_for_sync(path)
        self._fd_paths[fd] = path
        return fd

    def unlink(self, path: str) -> None:
        if self.hold_unlinks and not path.endswith(".tmp"):  # a segment, not a precreated file
            self.unlinking.set()
            self.go_on.wait()
        super().unlink(path)

    def unlock(self, handle: int) -> None:
        self.note("unlock", "")
        super().unlock(handle)


def segment_epochs(db_path: Path | str, fs: SimulatedFileSystem | None = None) -> list[int]:
    directory, name = os.path.split(str(db_path))
    names = fs.listdir(directory) if fs is not None else os.listdir(directory)
    return sorted(e for n in names if (e := parse_segment_name(name, n)) is not None)


def commit_each(wal: Wal, seqs: range) -> list[Ticket]:
    """One commit per epoch (a lone committer leads its own epoch); page n holds commit n."""
    return [wal.commit({seq: page(seq)}) for seq in seqs]


def test_retire_deletes_the_segments_it_covers_and_recovery_returns_only_later_commits(
    db_path: Path,
) -> None:
    with Wal.open(db_path, DURABLE) as wal:
        tickets = commit_each(wal, range(1, 6))
        assert [t.commit_seq for t in tickets] == [1, 2, 3, 4, 5]
        retired = wal.retire(tickets[2])
        assert retired == ChainPosition(tickets[2].epoch, 3)
        assert wal.retired_position == retired
        assert segment_epochs(db_path) == [tickets[3].epoch, tickets[4].epoch]
    result = recover(db_path)
    assert result.base == retired
    assert [r.commit_seq for r in result.iter_records()] == [4, 5]
    assert result.page_images() == {4: page(4), 5: page(5)}
    with Wal.open(db_path, DURABLE) as wal:
        assert wal.retired_position == retired
        assert wal.commit({6: page(6)}).commit_seq == 6  # numbering continues


def test_retire_takes_only_whole_segments_and_returns_the_position_it_reached(
    db_path: Path,
) -> None:
    with Wal.open(db_path, GROUPED) as wal:
        grouped = [wal.submit({seq: page(seq)}) for seq in (1, 2, 3)]
        wal.flush()  # one seal: commits 1..3 share a segment
        assert len({t.epoch for t in grouped}) == 1
        later = wal.commit({4: page(4)})
        # Commit 2's segment also holds commit 3: nothing is wholly covered yet.
        assert wal.retire(grouped[1]) == ChainPosition()
        assert segment_epochs(db_path) == [grouped[0].epoch, later.epoch]
        assert wal.retire(ChainPosition(later.epoch, 3)) == ChainPosition(grouped[0].epoch, 3)
        assert segment_epochs(db_path) == [later.epoch]
        assert wal.retire(grouped[0]) == ChainPosition(grouped[0].epoch, 3)  # already retired
    assert [r.commit_seq for r in recover(db_path).iter_records()] == [4]


def test_retiring_a_staged_ticket_waits_until_it_is_durable(db_path: Path) -> None:
    with Wal.open(db_path, GROUPED) as wal:
        ticket = wal.submit({1: page(1)})
        assert not wal.is_durable(ticket)
        assert wal.retire(ticket) == ChainPosition(ticket.epoch, 1)
        assert wal.is_durable(ticket)
        assert segment_epochs(db_path) == []


def test_retiring_a_ticket_the_log_never_assigned_raises_and_retires_nothing(
    db_path: Path,
) -> None:
    with Wal.open(db_path, DURABLE) as wal:
        tickets = commit_each(wal, range(1, 3))
        with pytest.raises(InvalidPositionError, match="assigned commit_seqs up to 2"):
            wal.retire(Ticket(commit_seq=3, epoch=tickets[-1].epoch + 1))
        with pytest.raises(InvalidPositionError):
            wal.retire(ChainPosition(10**6, 10**6))
        assert isinstance(InvalidPositionError("x"), ValueError)
        assert segment_epochs(db_path) == [t.epoch for t in tickets]
        assert wal.retired_position == ChainPosition()
        with pytest.raises(TypeError):
            wal.retire(2)  # type: ignore[arg-type]


def test_retire_on_a_closed_log_raises_closed_error(db_path: Path) -> None:
    wal = Wal.open(db_path, DURABLE)
    ticket = wal.commit({1: page(1)})
    wal.close()
    with pytest.raises(ClosedError):
        wal.retire(ticket)
    assert segment_epochs(db_path) == [ticket.epoch]


def test_retire_on_a_broken_log_raises_broken_log_error_and_deletes_nothing(
    db_path: Path, recording_fs: RecordingFileSystem
) -> None:
    wal = Wal.open(db_path, DURABLE, fs=recording_fs)
    try:
        ticket = wal.commit({1: page(1)})
        recording_fs.fail["writev"] = lambda number, path: True
        with pytest.raises(BrokenLogError):
            wal.commit({2: page(2)})
        with pytest.raises(BrokenLogError):
            wal.retire(ticket)
        assert segment_epochs(db_path) == [ticket.epoch]
    finally:
        recording_fs.fail.clear()
        with pytest.raises(BrokenLogError):
            wal.close()


def test_a_pagers_log_refuses_retire_because_its_checkpoints_own_the_segments(
    db_path: Path,
) -> None:
    with WalPager.open(db_path, 4096, DURABLE) as pager:
        with pager.transaction() as tx:
            tx.write(1, page(1))
        with pytest.raises(RuntimeError, match=r"pager\.checkpoint"):
            pager.wal.retire(pager.wal.durable_position)
        assert segment_epochs(db_path)


def test_retire_with_fsync_normal_fsyncs_the_published_segments_before_recording(
    db_path: Path,
) -> None:
    recording_fs = SyncRecordingFileSystem()
    config = WalConfig(lanes=2, epoch_interval_ms=60_000, fsync="normal")
    with Wal.open(db_path, config, fs=recording_fs) as wal:
        tickets = commit_each(wal, range(1, 4))  # published, not fsynced (sync not due yet)
        first = wal.retire(tickets[1])
        assert first == ChainPosition(tickets[1].epoch, 2)
        log = list(recording_fs.log)
    record = next(i for i, (op, path) in enumerate(log)
                  if op == "rename" and path.endswith("-wal-checkpoint"))
    synced = {os.path.basename(path) for op, path in log[:record] if op == "fsync"}
    # Every published segment (the one that stays too) is fsynced before the record.
    names = {f"{db_path.name}-wal-seg-{t.epoch:016x}" for t in tickets}
    assert names <= synced
    unlinks = [i for i, (op, _) in enumerate(log) if op == "unlink"]
    assert unlinks and min(unlinks) > record


def _retire_on_simulated_disk() -> tuple[SimulatedFileSystem, int, int, ChainPosition]:
    """Commits 1..4 on the simulated disk, retire through 2, commit 5; returns the file system,
    the op counts where retire began and ended, and the position it retired through."""
    fs = SimulatedFileSystem()
    with Wal.open("/sim/own.db", DURABLE, fs=fs) as wal:
        tickets = commit_each(wal, range(1, 5))
        start = fs.op_count()
        retired = wal.retire(tickets[1])
        end = fs.op_count()
        wal.commit({5: page(5)})
    return fs, start, end, retired


def test_power_loss_at_every_step_of_retire_recovers_every_commit_after_the_record() -> None:
    fs, start, end, retired = _retire_on_simulated_disk()
    assert retired.commit_seq == 2
    tried = 0
    for count, description, state in crash_states(
            fs.initial, fs.ops, points=range(start, end + 1), rng=random.Random(1)):
        where = f"crash after op {count} ({description})"
        result = recover("/sim/own.db", fs=SimulatedFileSystem(state))
        # Either the old record (nothing retired) or the new one; never a gap or an error.
        assert result.base in (ChainPosition(), retired), where
        seqs = [r.commit_seq for r in result.iter_records()]
        assert seqs == list(range(result.base.commit_seq + 1, 5)), where
        assert result.page_images() == {s: page(s) for s in seqs}, where
        tried += 1
    assert tried > 5


def test_power_loss_after_the_record_before_the_unlinks_reopens_to_the_later_commits() -> None:
    fs, start, end, retired = _retire_on_simulated_disk()
    ops = fs.ops[start:end]
    record = next(i for i, op in enumerate(ops)
                  if op.kind == "rename" and op.target.endswith("-wal-checkpoint"))
    first_unlink = next(i for i, op in enumerate(ops) if op.kind == "unlink")
    assert ops[record + 1].kind == "fsync_dir" and first_unlink == record + 2
    point = start + first_unlink  # the record is durable; no segment deleted yet
    states = [state for count, _, state in crash_states(
        fs.initial, fs.ops, points=[point], rng=random.Random(2)) if count == point]
    assert states
    for state in states:
        disk = SimulatedFileSystem(state)
        assert len(segment_epochs("/sim/own.db", disk)) == 4  # covered segments still there
        with Wal.open("/sim/own.db", DURABLE, fs=disk) as wal:
            assert wal.recovery.base == retired
            assert [r.commit_seq for r in wal.recovery.iter_records()] == [3, 4]
            assert wal.commit({5: page(5)}).commit_seq == 5
        assert len(segment_epochs("/sim/own.db", disk)) == 3  # 3, 4 and the new 5


@pytest.mark.parametrize("fault", [
    Fault("open_for_write", 1, errno.ENOSPC, path="own.db-wal-checkpoint.tmp"),
    Fault("rename", 1, path="own.db-wal-checkpoint.tmp"),
    Fault("fsync_dir", 1),  # the record's
    Fault("unlink", 1),
    Fault("fsync_dir", 2),  # the deletions'
], ids=["record-enospc", "record-rename", "record-directory-fsync", "unlink",
        "unlink-directory-fsync"])
def test_a_failed_retire_raises_os_error_and_the_log_keeps_committing(fault: Fault) -> None:
    fs = SimulatedFileSystem()
    with Wal.open("/sim/own.db", DURABLE, fs=fs) as wal:
        tickets = commit_each(wal, range(1, 4))
        # Faults count from here: the record's temporary file, its directory fsync, unlinks.
        fs.faults = [fault]
        with pytest.raises(OSError):
            wal.retire(tickets[1])
        fs.faults = []
        assert not wal.statistics().broken
        assert wal.commit({4: page(4)}).commit_seq == 4
        assert wal.retire(tickets[2]).commit_seq == 3
    result = recover("/sim/own.db", fs=fs.process_crash())
    assert result.base.commit_seq == 3
    assert [r.commit_seq for r in result.iter_records()] == [4]


def test_a_segment_that_is_not_the_logs_own_is_never_deleted(db_path: Path) -> None:
    with Wal.open(db_path, DURABLE) as wal:
        tickets = commit_each(wal, range(1, 4))
        planted = Path(f"{db_path}-wal-seg-{tickets[1].epoch:016x}")
        planted.write_bytes(b"not a segment" * 10)
        with pytest.raises(CorruptSegmentError) as caught:
            wal.retire(tickets[2])
        assert caught.value.path == str(planted)
        assert wal.retired_position == ChainPosition()
        assert segment_epochs(db_path) == [t.epoch for t in tickets]  # nothing deleted


def test_commits_continue_while_retire_runs_and_retire_keeps_up_with_committers(
    db_path: Path, recording_fs: RecordingFileSystem
) -> None:
    threads, each = 4, 25
    tickets: dict[int, Ticket] = {}
    errors: list[BaseException] = []
    done = threading.Event()
    paused = threading.Event()
    retired: list[ChainPosition] = []
    wal = Wal.open(db_path, DURABLE, fs=recording_fs)

    def commit_all(writer: int) -> None:
        try:
            for n in range(each):
                seq_pages = {writer * 1000 + n: page(writer * 1000 + n)}
                ticket = wal.commit(seq_pages, txn_id=writer * 1000 + n)
                tickets[ticket.commit_seq] = ticket
        except BaseException as error:
            errors.append(error)

    def retire_while_committing() -> None:
        try:
            while not done.is_set():
                retired.append(wal.retire(wal.durable_position))
        except BaseException as error:
            errors.append(error)

    # The first retire stops at its first unlink until a commit has completed meanwhile.
    recording_fs.gate["unlink"] = paused
    workers = [threading.Thread(target=commit_all, args=(i,), daemon=True)
               for i in range(threads)]
    retirer = threading.Thread(target=retire_while_committing, daemon=True)
    try:
        first = wal.commit({999_999: page(0)})
        tickets[first.commit_seq] = first
        retirer.start()
        during = wal.commit({999_998: page(1)})  # completes while retire may be paused
        tickets[during.commit_seq] = during
        paused.set()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=120)
        done.set()
        retirer.join(timeout=120)
        assert not errors, errors
        assert not any(w.is_alive() for w in workers) and not retirer.is_alive()
        final = wal.retire(tickets[max(tickets)])
    finally:
        paused.set()
        done.set()
        wal.close()
    assert final.commit_seq == max(tickets) == threads * each + 2
    assert [p.commit_seq for p in retired] == sorted(p.commit_seq for p in retired)
    assert segment_epochs(db_path) == []
    with Wal.open(db_path, DURABLE) as reopened:
        assert reopened.recovery.base == final and reopened.recovery.records.size == 0
        assert reopened.commit({1: page(1)}).commit_seq == final.commit_seq + 1


def test_close_waits_for_a_running_retire_before_releasing_the_log(db_path: Path) -> None:
    fs = SyncRecordingFileSystem()
    wal = Wal.open(db_path, DURABLE, fs=fs)
    errors: list[BaseException] = []

    def run(call: Callable[[], object]) -> None:
        try:
            call()
        except BaseException as error:
            errors.append(error)

    ticket = wal.commit({1: page(1)})
    fs.hold_unlinks = True
    retirer = threading.Thread(target=run, args=(lambda: wal.retire(ticket),), daemon=True)
    closer = threading.Thread(target=run, args=(wal.close,), daemon=True)
    try:
        retirer.start()
        assert fs.unlinking.wait(60)  # the record is written; the deletions are held
        closer.start()
        # Whether or not the closer got far in this time, it must not release the lock (which
        # would let another process recover the log) while the deletions are pending.
        closer.join(0.2)
    finally:
        fs.go_on.set()
        retirer.join(60)
        closer.join(60)
        wal.close()
    assert not errors, errors
    ops = [op for op, path in fs.log
           if op == "unlock" or (op == "unlink" and not path.endswith(".tmp"))]
    assert ops == ["unlink", "unlock"]


def test_after_a_failed_deletion_retire_never_moves_the_record_back(db_path: Path) -> None:
    fs = SimulatedFileSystem()
    with Wal.open("/sim/own.db", DURABLE, fs=fs) as wal:
        tickets = commit_each(wal, range(1, 4))
        fs.faults = [Fault("unlink", 2)]  # segment 1 goes, segment 2 stays
        with pytest.raises(OSError):
            wal.retire(tickets[1])
        fs.faults = []
        recorded = ChainPosition(tickets[1].epoch, 2)
        assert wal.retired_position == recorded
        assert wal.retire(tickets[0]) == recorded  # already retired: nothing recorded again
    with Wal.open("/sim/own.db", DURABLE, fs=fs.process_crash()) as wal:
        assert wal.recovery.base == recorded  # the leftover segment 2 is deleted unread
        assert [r.commit_seq for r in wal.recovery.iter_records()] == [3]


def test_retire_stops_at_a_gap_in_the_chain_and_deletes_nothing(db_path: Path) -> None:
    with Wal.open(db_path, DURABLE) as wal:
        tickets = commit_each(wal, range(1, 4))
        Path(f"{db_path}-wal-seg-{tickets[1].epoch:016x}").unlink()  # behind the log's back
        with pytest.raises(CorruptSegmentError, match="chain broken"):
            wal.retire(tickets[2])
        assert segment_epochs(db_path) == [tickets[0].epoch, tickets[2].epoch]
        assert wal.retired_position == ChainPosition()


@pytest.mark.trio
async def test_the_trio_adapter_retires_like_the_log_and_recovery_starts_after_it(
    db_path: Path,
) -> None:
    from pagewal.trio import open_wal

    async with open_wal(db_path, GROUPED) as wal:
        first = await wal.commit({1: page(1)})
        staged = await wal.submit({2: page(2)})  # retire waits for it to be durable
        assert await wal.retire(first) == ChainPosition(first.epoch, 1)
        assert await wal.retire(staged) == wal.retired_position == ChainPosition(staged.epoch, 2)
        with pytest.raises(InvalidPositionError):
            await wal.retire(Ticket(commit_seq=3, epoch=staged.epoch + 1))
        later = await wal.commit({3: page(3)})
    with pytest.raises(ClosedError):
        await wal.retire(later)
    result = recover(db_path)
    assert result.base == ChainPosition(staged.epoch, 2)
    assert [r.commit_seq for r in result.iter_records()] == [3]
