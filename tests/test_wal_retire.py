"""Wal.retire: a caller that keeps its own pages lets the log forget them, crash-safely."""

from __future__ import annotations

import errno
import os
import random
import threading
from collections.abc import Callable
from pathlib import Path

import attrs
import pytest
from conftest import SMALL_LOG_FILE_BYTES, RecordingFileSystem, wait_until

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
from pagewal._layout import FileState, LogFileHeader, decode_file_header, parse_log_file_name
from pagewal.harness import Fault, SimulatedFileSystem, crash_states

DURABLE = WalConfig(lanes=2, epoch_interval_ms=1, fsync="full",
                    log_file_bytes=SMALL_LOG_FILE_BYTES)
# The ticker seals only when asked (flush) or when every staged commit is awaited, so tests
# decide which commits share an epoch.
GROUPED = WalConfig(lanes=2, epoch_interval_ms=60_000, fsync="full",
                    log_file_bytes=SMALL_LOG_FILE_BYTES)
PER_FILE = (SMALL_LOG_FILE_BYTES - 4096) // 8192
"""Segments of one page-sized commit (header, record, image: just over 4 KiB, so two blocks)
that one log file holds after its header block."""


def page(seq: int) -> bytes:
    return seq.to_bytes(4, "little") * 1024


class SyncRecordingFileSystem(RecordingFileSystem):
    """Also names a descriptor's file by its final name once renamed, logs the source of each
    rename ("rename_from") and releasing the log's lock, and can hold the rename that
    publishes a checkpoint record until told to go on."""

    def __init__(self) -> None:
        super().__init__()
        self.recording = threading.Event()  # set when the record's rename is about to run
        self.go_on = threading.Event()  # that rename waits for it once hold_record is set
        self.hold_record = False

    def rename(self, source: str, target: str) -> None:
        if self.hold_record and target.endswith("-wal-checkpoint"):
            self.recording.set()
            self.go_on.wait()
        self.note("rename_from", source)
        super().rename(source, target)
        with self.lock:  # a descriptor opened under the temporary name now has the final one
            for fd, path in self._fd_paths.items():
                if path == source:
                    self._fd_paths[fd] = target

    def unlock(self, handle: int) -> None:
        self.note("unlock", "")
        super().unlock(handle)


def log_file_numbers(db_path: Path | str, fs: SimulatedFileSystem | None = None) -> list[int]:
    """The numbers of the log files in the directory, ascending."""
    directory, name = os.path.split(str(db_path))
    names = fs.listdir(directory) if fs is not None else os.listdir(directory)
    return sorted(n for x in names if (n := parse_log_file_name(name, x)) is not None)


def file_header(db_path: Path | str, file_no: int,
                fs: SimulatedFileSystem | None = None) -> LogFileHeader:
    path = f"{db_path}-wal-{file_no:016x}"
    data = fs.read_file(path) if fs is not None else Path(path).read_bytes()
    return decode_file_header(data, path)


def chain(db_path: Path | str, fs: SimulatedFileSystem | None = None) -> list[tuple[int, int]]:
    """(epoch, file_no) of every segment recovery reads: the chain after the checkpoint."""
    return [(s.header.epoch, s.header.file_no) for s in recover(db_path, fs=fs).segments]


def chain_epochs(db_path: Path | str) -> list[int]:
    return [epoch for epoch, _ in chain(db_path)]


def commit_each(wal: Wal, seqs: range) -> list[Ticket]:
    """One commit per epoch (a lone committer leads its own epoch); page n holds commit n."""
    return [wal.commit({seq: page(seq)}) for seq in seqs]


def test_retire_recycles_the_log_files_it_covers_and_recovery_returns_only_later_commits(
    db_path: Path,
) -> None:
    last = PER_FILE + 3  # file 1 full, three segments in file 2
    with Wal.open(db_path, DURABLE) as wal:
        tickets = commit_each(wal, range(1, last + 1))
        assert [t.commit_seq for t in tickets] == list(range(1, last + 1))
        before = chain(db_path)
        assert [file_no for _, file_no in before] == [1] * PER_FILE + [2] * 3
        salt_of_file_1 = file_header(db_path, 1).salt
        through = tickets[PER_FILE]  # the first commit in file 2
        retired = wal.retire(through)
        assert retired == ChainPosition(through.epoch, PER_FILE + 1)
        assert wal.retired_position == retired
        # The record is published: recovery starts at it; what it does not cover is intact.
        assert chain(db_path) == before[PER_FILE + 1:]
    # Closing waited for the pool: file 1 (wholly covered) was recycled under a new number
    # and salt, or deleted; file 2 (holding later segments) was not touched.
    numbers = log_file_numbers(db_path)
    assert 1 not in numbers and 2 in numbers
    for file_no in numbers:
        if file_no > 2:  # a ready file: made new, or file 1 recycled
            header = file_header(db_path, file_no)
            assert header.state is FileState.READY and header.salt != salt_of_file_1
    result = recover(db_path)
    assert result.base == retired
    assert [r.commit_seq for r in result.iter_records()] == [last - 1, last]
    assert result.page_images() == {last - 1: page(last - 1), last: page(last)}
    assert chain(db_path) == before[PER_FILE + 1:]
    with Wal.open(db_path, DURABLE) as wal:
        assert wal.retired_position == retired
        assert wal.commit({6: page(6)}).commit_seq == last + 1  # numbering continues


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
        assert chain_epochs(db_path) == [grouped[0].epoch, later.epoch]
        assert wal.retire(ChainPosition(later.epoch, 3)) == ChainPosition(grouped[0].epoch, 3)
        assert chain_epochs(db_path) == [later.epoch]
        assert wal.retire(grouped[0]) == ChainPosition(grouped[0].epoch, 3)  # already retired
    assert [r.commit_seq for r in recover(db_path).iter_records()] == [4]


def test_retiring_a_staged_ticket_waits_until_it_is_durable(db_path: Path) -> None:
    with Wal.open(db_path, GROUPED) as wal:
        ticket = wal.submit({1: page(1)})
        assert not wal.is_durable(ticket)
        assert wal.retire(ticket) == ChainPosition(ticket.epoch, 1)
        assert wal.is_durable(ticket)
        assert chain_epochs(db_path) == []


def test_retiring_a_ticket_the_log_never_assigned_raises_and_retires_nothing(
    db_path: Path,
) -> None:
    with Wal.open(db_path, DURABLE) as wal:
        tickets = commit_each(wal, range(1, 3))
        with pytest.raises(InvalidPositionError, match="assigned commit_seqs up to 2"):
            wal.retire(attrs.evolve(tickets[-1], commit_seq=3, epoch=tickets[-1].epoch + 1))
        with pytest.raises(InvalidPositionError):
            wal.retire(ChainPosition(10**6, 10**6))
        assert isinstance(InvalidPositionError("x"), ValueError)
        assert chain_epochs(db_path) == [t.epoch for t in tickets]
        assert wal.retired_position == ChainPosition()
        with pytest.raises(TypeError):
            wal.retire(2)  # type: ignore[arg-type]


def test_retire_on_a_closed_log_raises_closed_error(db_path: Path) -> None:
    wal = Wal.open(db_path, DURABLE)
    ticket = wal.commit({1: page(1)})
    wal.close()
    with pytest.raises(ClosedError):
        wal.retire(ticket)
    assert chain_epochs(db_path) == [ticket.epoch]


def test_retire_on_a_broken_log_raises_broken_log_error_and_deletes_nothing(
    db_path: Path, recording_fs: RecordingFileSystem
) -> None:
    wal = Wal.open(db_path, DURABLE, fs=recording_fs)
    try:
        ticket = wal.commit({1: page(1)})
        # The pool has made file 2 ready and has nothing more to do until it is taken.
        assert wait_until(lambda: log_file_numbers(db_path) == [1, 2])
        recording_fs.fail["writev"] = lambda number, path: True  # segments' durable writes
        with pytest.raises(BrokenLogError):
            wal.commit({2: page(2)})
        with pytest.raises(BrokenLogError):
            wal.retire(ticket)
        assert chain_epochs(db_path) == [ticket.epoch]
        assert wal.retired_position == ChainPosition()
        assert log_file_numbers(db_path) == [1, 2]
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
        assert chain_epochs(db_path)


def test_retire_with_fsync_normal_fsyncs_the_published_segments_before_recording(
    db_path: Path,
) -> None:
    recording_fs = SyncRecordingFileSystem()
    config = attrs.evolve(GROUPED, fsync="normal")
    with Wal.open(db_path, config, fs=recording_fs) as wal:
        # Published, not fsynced (a sync is not due yet): file 1 full, two in file 2.
        tickets = commit_each(wal, range(1, PER_FILE + 3))
        paths = {path for path in (str(db_path) + f"-wal-{n:016x}" for n in (1, 2))}
        first = wal.retire(tickets[PER_FILE])
        assert first == ChainPosition(tickets[PER_FILE].epoch, PER_FILE + 1)
    log = list(recording_fs.log)
    record = next(i for i, (op, path) in enumerate(log)
                  if op == "rename" and path.endswith("-wal-checkpoint"))
    synced = {path for op, path in log[:record] if op == "fsync"}
    # Every log file holding published segments (the one that stays too) is fsynced before
    # the record.
    assert paths <= synced
    # File 1, which the record covers, is recycled (renamed) or deleted only after it.
    moved = [i for i, (op, path) in enumerate(log)
             if op in ("rename_from", "unlink") and path == str(db_path) + f"-wal-{1:016x}"]
    assert moved and min(moved) > record


def _retire_on_simulated_disk() -> tuple[SimulatedFileSystem, int, int, ChainPosition]:
    """Commits 1..PER_FILE + 2 on the simulated disk (file 1 full, two in file 2), retire
    through the first commit of file 2, commit one more and close; returns the file system,
    the op counts where retire began and where close ended (the pool recycles file 1 in
    between, in its own thread), and the position retired through."""
    fs = SimulatedFileSystem()
    with Wal.open("/sim/own.db", DURABLE, fs=fs) as wal:
        tickets = commit_each(wal, range(1, PER_FILE + 3))
        start = fs.op_count()
        retired = wal.retire(tickets[PER_FILE])
        wal.commit({0: page(PER_FILE + 3)})
    return fs, start, fs.op_count(), retired


def test_power_loss_at_every_step_of_retire_recovers_every_commit_after_the_record() -> None:
    fs, start, end, retired = _retire_on_simulated_disk()
    last = PER_FILE + 3
    assert retired.commit_seq == PER_FILE + 1
    tried = 0
    for count, description, state in crash_states(
            fs.initial, fs.ops, points=range(start, end + 1), rng=random.Random(1)):
        where = f"crash after op {count} ({description})"
        result = recover("/sim/own.db", fs=SimulatedFileSystem(state))
        # Either the old record (nothing retired) or the new one; never a gap or an error;
        # the commit made after retire is there or not, whole.
        assert result.base in (ChainPosition(), retired), where
        seqs = [r.commit_seq for r in result.iter_records()]
        assert seqs in (list(range(result.base.commit_seq + 1, last)),
                        list(range(result.base.commit_seq + 1, last + 1))), where
        expected = {s: page(s) for s in seqs if s < last}
        if last in seqs:
            expected[0] = page(last)
        assert result.page_images() == expected, where
        tried += 1
    assert tried > 5


def test_power_loss_after_the_record_before_the_recycling_reopens_to_the_later_commits() -> None:
    fs, start, end, retired = _retire_on_simulated_disk()
    ops = fs.ops[start:end]
    file_1 = "/sim/own.db-wal-0000000000000001"
    record = next(i for i, op in enumerate(ops)
                  if op.kind == "rename" and op.target.endswith("-wal-checkpoint"))
    recycled = next(i for i, op in enumerate(ops)
                    if op.path == file_1 and op.kind in ("write", "rename", "unlink"))
    assert ops[record + 1].kind == "fsync_dir" and recycled > record + 1
    point = start + record + 2  # the record is durable; file 1 not yet recycled
    states = [state for count, _, state in crash_states(
        fs.initial, fs.ops, points=[point], rng=random.Random(2)) if count == point]
    assert states
    for state in states:
        disk = SimulatedFileSystem(state)
        assert 1 in log_file_numbers("/sim/own.db", disk)  # the covered file is still there
        with Wal.open("/sim/own.db", DURABLE, fs=disk) as wal:
            assert wal.recovery.base == retired
            assert [r.commit_seq for r in wal.recovery.iter_records()] == [PER_FILE + 2]
            assert wal.commit({5: page(5)}).commit_seq == PER_FILE + 3
        result = recover("/sim/own.db", fs=disk)
        assert result.base == retired
        assert [r.commit_seq for r in result.iter_records()] == [PER_FILE + 2, PER_FILE + 3]


def wait_until_the_pool_is_idle(fs: SimulatedFileSystem) -> None:
    """With file 2 active, the pool has made file 3 ready (files 1 and 2 before it): it does
    nothing more until file 3 is taken or a file is handed back, so the faults a test sets
    next meet only what follows."""
    assert wait_until(lambda: sum(op.kind == "fsync_dir" for op in list(fs.ops)) >= 3)


@pytest.mark.parametrize("fault", [
    Fault("open_for_write", 1, errno.ENOSPC, path="own.db-wal-checkpoint.tmp"),
    Fault("rename", 1, path="own.db-wal-checkpoint.tmp"),
    Fault("fsync_dir", 1),  # the record's
], ids=["record-enospc", "record-rename", "record-directory-fsync"])
def test_a_failed_retire_raises_os_error_and_the_log_keeps_committing(fault: Fault) -> None:
    fs = SimulatedFileSystem()
    with Wal.open("/sim/own.db", DURABLE, fs=fs) as wal:
        tickets = commit_each(wal, range(1, PER_FILE + 3))  # file 1 full, two in file 2
        wait_until_the_pool_is_idle(fs)
        # Faults count from here: the record's temporary file, its rename, its directory fsync.
        fs.faults = [fault]
        with pytest.raises(OSError):
            wal.retire(tickets[PER_FILE])
        fs.faults = []
        assert wal.retired_position == ChainPosition()
        assert not wal.statistics().broken
        assert 1 in log_file_numbers("/sim/own.db", fs)  # nothing recycled without the record
        assert wal.commit({0: page(0)}).commit_seq == PER_FILE + 3
        assert wal.retire(tickets[PER_FILE + 1]).commit_seq == PER_FILE + 2
    result = recover("/sim/own.db", fs=fs.process_crash())
    assert result.base.commit_seq == PER_FILE + 2
    assert [r.commit_seq for r in result.iter_records()] == [PER_FILE + 3]
    assert 1 not in log_file_numbers("/sim/own.db", fs)


@pytest.mark.parametrize("fault", [Fault("rename", 2), Fault("fsync_dir", 2)],
                         ids=["rename", "directory-fsync"])
def test_a_failed_recycling_breaks_the_log_when_it_needs_a_file_and_the_record_stays(
    fault: Fault,
) -> None:
    """The pool recycles a covered file (renames it to a new number) after the record is
    published; a failure there is the pool's, reported when the writer next needs a file
    (invariant 6). The record never moves back: the reopened log starts at it.
    (The record's own rename and directory fsync are the first ones counted from here.)"""
    fs = SimulatedFileSystem()
    wal = Wal.open("/sim/own.db", DURABLE, fs=fs)
    tickets = commit_each(wal, range(1, PER_FILE + 3))
    wait_until_the_pool_is_idle(fs)
    calls = fs.calls.get(fault.op, 0)
    fs.faults = [fault]
    recorded = wal.retire(tickets[PER_FILE])
    assert recorded == ChainPosition(tickets[PER_FILE].epoch, PER_FILE + 1)
    # The pool has met the fault (a failed call is counted, not logged as an operation).
    assert wait_until(lambda: fs.calls.get(fault.op, 0) == calls + fault.nth)
    acked: list[Ticket] = []
    with pytest.raises(BrokenLogError) as broken:
        for seq in range(PER_FILE + 3, 4 * PER_FILE):  # file 3 is needed on the way
            acked.append(wal.commit({seq: page(seq)}))
    fs.faults = []
    assert isinstance(broken.value.__cause__, OSError)
    assert wal.retired_position == recorded
    with pytest.raises(BrokenLogError):
        wal.close()
    with Wal.open("/sim/own.db", DURABLE, fs=fs.process_crash()) as reopened:
        assert reopened.recovery.base == recorded
        seqs = [r.commit_seq for r in reopened.recovery.iter_records()]
        assert {t.commit_seq for t in acked} <= set(seqs)
        assert seqs == list(range(PER_FILE + 2, PER_FILE + 2 + len(seqs)))


def test_a_segment_that_is_not_the_logs_own_is_never_deleted(db_path: Path) -> None:
    # Something at a version 1 segment's name (which retire still reads, for a log written
    # before format 2) that is no segment: retire refuses before recording anything.
    with Wal.open(db_path, DURABLE) as wal:
        tickets = commit_each(wal, range(1, PER_FILE + 3))
        numbers = log_file_numbers(db_path)
        planted = Path(f"{db_path}-wal-seg-{tickets[1].epoch:016x}")
        planted.write_bytes(b"not a segment" * 10)
        with pytest.raises(CorruptSegmentError) as caught:
            wal.retire(tickets[PER_FILE])
        assert caught.value.path == str(planted)
        assert wal.retired_position == ChainPosition()
    assert planted.read_bytes() == b"not a segment" * 10  # nothing deleted ...
    assert log_file_numbers(db_path)[:len(numbers)] == numbers  # ... nor recycled
    planted.unlink()
    result = recover(db_path)
    assert result.base == ChainPosition()
    assert [r.commit_seq for r in result.iter_records()] == list(range(1, PER_FILE + 3))


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

    # The first retire stops at its record's rename until a commit has completed meanwhile.
    recording_fs.gate["rename"] = paused
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
    assert chain_epochs(db_path) == []
    # Over a hundred page-sized epochs went through many log files; the covered ones were
    # recycled or deleted, so only the last active file and ready ones are left.
    numbers = log_file_numbers(db_path)
    assert len(numbers) <= 3 and min(numbers) > 1
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
    fs.hold_record = True
    retirer = threading.Thread(target=run, args=(lambda: wal.retire(ticket),), daemon=True)
    closer = threading.Thread(target=run, args=(wal.close,), daemon=True)
    try:
        retirer.start()
        assert fs.recording.wait(60)  # the record is about to be published, and is held
        closer.start()
        # Whether or not the closer got far in this time, it must not release the lock (which
        # would let another process recover the log) while the record is being published.
        closer.join(0.2)
    finally:
        fs.go_on.set()
        retirer.join(60)
        closer.join(60)
        wal.close()
    assert not errors, errors
    ops = [op for op, path in fs.log
           if op == "unlock" or (op == "rename" and path.endswith("-wal-checkpoint"))]
    assert ops == ["rename", "unlock"]
    assert recover(db_path).base == ChainPosition(ticket.epoch, 1)


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
            await wal.retire(attrs.evolve(staged, commit_seq=3, epoch=staged.epoch + 1))
        later = await wal.commit({3: page(3)})
    with pytest.raises(ClosedError):
        await wal.retire(later)
    result = recover(db_path)
    assert result.base == ChainPosition(staged.epoch, 2)
    assert [r.commit_seq for r in result.iter_records()] == [3]
