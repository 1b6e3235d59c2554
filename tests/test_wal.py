"""The log under real threads and real files: DESIGN §2 invariants 1, 2, 3, 7, 8 and close."""

from __future__ import annotations

import math
import os
import random
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import RecordingFileSystem, wait_until

import pagewal
from pagewal import (
    ClosedError,
    ConfigError,
    ImageTooLargeError,
    InvalidCommitError,
    Ticket,
    Wal,
    WalConfig,
    WrongLogError,
    decode_segment,
    recover,
)
from pagewal._layout import parse_segment_name, segment_name
from pagewal.harness._workload import run_writers as run_threads

FAST = WalConfig(lanes=4, epoch_interval_ms=1, fsync="off")


def committed_segments(db_path: Path) -> list[pagewal.DecodedSegment]:
    """Decode every final segment file directly, in epoch order (no recovery code involved)."""
    epochs = sorted(e for n in os.listdir(db_path.parent)
                    if (e := parse_segment_name(db_path.name, n)) is not None)
    return [decode_segment((db_path.parent / segment_name(db_path.name, e)).read_bytes(),
                           str(e), expected_epoch=e) for e in epochs]


def oracle(commits: dict[int, list[tuple[int, bytes]]]) -> dict[int, bytes]:
    """Page state after replaying ``commits`` in commit_seq order."""
    pages: dict[int, bytes] = {}
    for seq in sorted(commits):
        pages.update(commits[seq])
    return pages


def run_writers(
    wal: Wal, threads: int, commits_each: int, *, max_image: int = 3000, durable: bool = True
) -> dict[int, tuple[Ticket, list[tuple[int, bytes]]]]:
    """Commit from ``threads`` threads; return ticket and pages by commit_seq."""
    results: dict[int, tuple[Ticket, list[tuple[int, bytes]]]] = {}
    lock = threading.Lock()
    errors: list[BaseException] = []

    def work(index: int) -> None:
        rng = random.Random(index)
        try:
            for n in range(commits_each):
                pages = [(rng.randrange(200), rng.randbytes(rng.randint(1, max_image)))
                         for _ in range(rng.randint(1, 4))]
                ticket = wal.commit(pages, durable=durable, txn_id=index * 10_000 + n)
                with lock:
                    results[ticket.commit_seq] = (ticket, pages)
        except BaseException as error:  # surfaced by the assertion below
            errors.append(error)

    run_threads(work, threads)
    assert errors == []
    return results


@pytest.fixture
def fast_switching() -> Iterator[None]:
    """Make the interpreter switch threads very often, to expose interleavings."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(previous)


def test_sixteen_concurrent_writers_recover_to_the_oracle_replay(db_path: Path) -> None:
    # Small lanes so that overflow onto the serialized path happens too.
    config = WalConfig(lanes=4, epoch_interval_ms=2, lane_capacity_bytes=16_384, fsync="off")
    with Wal.open(db_path, config) as wal:
        results = run_writers(wal, threads=16, commits_each=60)
        stats = wal.statistics()
    commits = {seq: pages for seq, (_, pages) in results.items()}
    assert sorted(commits) == list(range(1, 16 * 60 + 1))  # dense, nothing lost
    result = recover(db_path)
    assert result.last_commit_seq == 16 * 60
    recovered: dict[int, list[tuple[int, bytes]]] = {}
    for record in result.iter_records():
        recovered.setdefault(record.commit_seq, []).append((record.page_no, record.image))
    assert recovered == commits  # every commit, exact bytes, in commit order
    assert result.page_images() == oracle(commits)
    assert stats.fallbacks["lane_overflow"] > 0


def test_seq_order_implies_epoch_order_and_segments_hold_dense_chained_ranges(
    db_path: Path, fast_switching: None
) -> None:
    with Wal.open(db_path, WalConfig(lanes=4, epoch_interval_ms=0.5, fsync="off")) as wal:
        results = run_writers(wal, threads=12, commits_each=80, max_image=200)
    segments = committed_segments(db_path)
    assert len(segments) > 5  # many seals happened during the run
    previous_hi, previous_epoch = 0, 0
    epoch_of_seq: dict[int, int] = {}
    for segment in segments:
        header = segment.header
        seqs = set(segment.records["commit_seq"].tolist())
        assert seqs == set(range(header.commit_seq_lo, header.commit_seq_hi + 1))
        assert header.commit_seq_lo == previous_hi + 1
        assert header.prev_epoch == previous_epoch
        previous_hi, previous_epoch = header.commit_seq_hi, header.epoch
        epoch_of_seq.update(dict.fromkeys(seqs, header.epoch))
    tickets = [ticket for ticket, _ in results.values()]
    for ticket in tickets:
        # The ticket's epoch is the segment that actually carries the commit.
        assert epoch_of_seq[ticket.commit_seq] == ticket.epoch
    epochs = [t.epoch for t in sorted(tickets, key=lambda t: t.commit_seq)]
    assert epochs == sorted(epochs)


def test_no_commit_is_acknowledged_before_its_segment_and_directory_entry_are_fsynced(
    db_path: Path, recording_fs: RecordingFileSystem, fast_switching: None
) -> None:
    # The early-ack race: if a commit's epoch were read outside the lane lock, a seal could
    # slip between reading the epoch and appending, and the commit would be acknowledged with
    # the older epoch while its bytes sit in the newer one, still only in memory.
    config = WalConfig(lanes=2, epoch_interval_ms=0.2, max_flush_delay_ms=0.2)
    violations: list[str] = []
    checked = 0
    lock = threading.Lock()

    with Wal.open(db_path, config, fs=recording_fs) as wal:

        def work(index: int) -> None:
            nonlocal checked
            rng = random.Random(index)
            for _ in range(60):
                ticket = wal.commit({rng.randrange(50): rng.randbytes(64)})
                name = segment_name(db_path.name, ticket.epoch)
                ops = recording_fs.ops_for(name)
                # Invariant 1 and 4: write, fsync, rename and a later directory fsync.
                try:
                    rename_at = ops.index("rename")
                    ordered = (ops.index("writev") < ops.index("fsync") < rename_at
                               and "fsync_dir" in ops[rename_at:])
                except ValueError:
                    ordered = False
                on_disk = (db_path.parent / name).exists() and ticket.commit_seq in set(
                    decode_segment((db_path.parent / name).read_bytes(), name)
                    .records["commit_seq"].tolist())
                with lock:
                    checked += 1
                    if not (ordered and on_disk):
                        violations.append(f"{ticket} acked; ops {ops[:6]}, on disk {on_disk}")

        run_threads(work, 8)
    assert checked == 8 * 60
    assert violations == []


def test_a_lone_committer_is_not_held_for_the_epoch_interval(db_path: Path) -> None:
    # With a 60 s interval, only adaptive sealing can make these commits durable in time.
    config = WalConfig(lanes=2, epoch_interval_ms=60_000)
    with Wal.open(db_path, config) as wal:
        for n in range(20):
            wal.commit({n: b"x" * 100}, timeout=30)
        assert wal.statistics().epochs_sealed == 20


def test_input_is_validated_before_a_seq_is_assigned(db_path: Path) -> None:
    with Wal.open(db_path, FAST) as wal:
        with pytest.raises(ImageTooLargeError, match="65536"):
            wal.commit({1: b"x" * 65_537})
        with pytest.raises(InvalidCommitError):
            wal.commit({})
        with pytest.raises(InvalidCommitError):
            wal.commit({-1: b"x"})
        ticket = wal.commit({2**32 - 1: b"x" * 65_536, 0: b"y"})
    assert ticket.commit_seq == 1  # the rejected commits used no sequence number
    assert recover(db_path).page_images() == {2**32 - 1: b"x" * 65_536, 0: b"y"}


def test_oversized_commits_take_the_serialized_path_in_order(db_path: Path) -> None:
    config = WalConfig(lanes=2, epoch_interval_ms=1, lane_capacity_bytes=8192,
                       max_batch_bytes=4096, fsync="off")
    with Wal.open(db_path, config) as wal:
        small = wal.commit({1: b"a" * 100})
        big = wal.commit({1: b"b" * 5000, 2: b"c" * 5000})
        after = wal.commit({2: b"d" * 10})
        stats = wal.statistics()
    assert (small.commit_seq, big.commit_seq, after.commit_seq) == (1, 2, 3)
    assert stats.fallbacks["oversized_commit"] == 1
    assert recover(db_path).page_images() == {1: b"b" * 5000, 2: b"d" * 10}
    flagged = [s.header.serialized for s in committed_segments(db_path)]
    assert flagged.count(True) == 1


def test_conservative_mode_uses_one_lane_and_counts_operator_forced(db_path: Path) -> None:
    with Wal.open(db_path, WalConfig(mode="conservative", lanes=8, epoch_interval_ms=1,
                                     fsync="off")) as wal:
        results = run_writers(wal, threads=4, commits_each=20, max_image=500)
        stats = wal.statistics()
    assert stats.lanes == 1
    assert stats.fallbacks["operator_forced"] == 80
    assert recover(db_path).page_images() == oracle(
        {seq: pages for seq, (_, pages) in results.items()})
    assert all(s.header.lane_count == 1 and s.header.serialized
               for s in committed_segments(db_path))


def test_shadow_compare_passes_for_a_correct_parallel_encoding(db_path: Path) -> None:
    with Wal.open(db_path, WalConfig(mode="shadow", lanes=3, epoch_interval_ms=1,
                                     fsync="off")) as wal:
        run_writers(wal, threads=6, commits_each=20, max_image=500)
        stats = wal.statistics()
    assert stats.shadow_compares == stats.epochs_sealed > 0
    assert stats.shadow_divergences == 0
    assert stats.mode == "shadow_compare"


def test_shadow_divergence_publishes_the_serialized_encoding_and_goes_conservative(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pagewal import _lanes

    original = _lanes.Lane.append

    def corrupting_append(
        self: _lanes.Lane, commit: object, seq: int, *, shadow_copy: object
    ) -> None:
        original(self, commit, seq, shadow_copy=shadow_copy)  # type: ignore[arg-type]
        if seq == 2:
            self._buffers[0][self.used - 5] ^= 0x01  # flip a bit of the image just staged

    monkeypatch.setattr(_lanes.Lane, "append", corrupting_append)
    with Wal.open(db_path, WalConfig(mode="shadow", lanes=2, epoch_interval_ms=1,
                                     fsync="off")) as wal:
        wal.commit({1: b"one" * 10})
        wal.commit({2: b"two" * 10})
        wal.commit({3: b"three" * 10})
        stats = wal.statistics()
    assert stats.shadow_divergences == 1
    assert "epoch 2" in (stats.last_shadow_divergence or "")
    assert stats.mode == "conservative"
    assert stats.fallbacks["shadow_divergence"] >= 1  # commit 3, forced onto the serialized path
    # The divergent bytes never became durable: recovery sees exactly what was committed.
    assert recover(db_path).page_images() == {1: b"one" * 10, 2: b"two" * 10, 3: b"three" * 10}


def test_close_makes_staged_commits_durable_and_is_idempotent(db_path: Path) -> None:
    wal = Wal.open(db_path, WalConfig(lanes=2, epoch_interval_ms=60_000))
    tickets = [wal.submit({n: bytes([n]) * 10}) for n in range(50)]
    wal.close()
    wal.close()
    assert all(wal.is_durable(t) for t in tickets)
    assert recover(db_path).page_images() == {n: bytes([n]) * 10 for n in range(50)}
    with pytest.raises(ClosedError):
        wal.submit({1: b"x"})
    assert wal.statistics().closed


def test_flush_makes_everything_submitted_durable(db_path: Path) -> None:
    with Wal.open(db_path, WalConfig(lanes=2, epoch_interval_ms=60_000)) as wal:
        tickets = [wal.submit({n: b"f" * 10}) for n in range(10)]
        wal.flush(timeout=30)
        assert all(wal.is_durable(t) for t in tickets)
        assert recover(db_path).last_commit_seq == 10  # readable while the log is open


def test_reopen_continues_the_chain(db_path: Path) -> None:
    with Wal.open(db_path, FAST) as wal:
        first = [wal.commit({n: b"1" * 8}) for n in range(5)]
    with Wal.open(db_path, FAST) as wal:
        assert wal.recovery.last_commit_seq == 5
        second = wal.commit({0: b"2" * 8})
    assert second.commit_seq == 6
    assert second.epoch > max(t.epoch for t in first)
    result = recover(db_path)
    assert result.last_commit_seq == 6
    assert result.page_images()[0] == b"2" * 8


def test_backpressure_blocks_writers_instead_of_growing_memory(
    db_path: Path, recording_fs: RecordingFileSystem
) -> None:
    gate = threading.Event()
    recording_fs.gate["fsync"] = gate  # the ticker stalls publishing the first epoch
    config = WalConfig(lanes=1, epoch_interval_ms=1, lane_capacity_bytes=4096)
    wal = Wal.open(db_path, config, fs=recording_fs)
    try:
        stalled = wal.submit({0: b"s" * 1000})  # sealed at once; its fsync waits on the gate
        returned = threading.Event()
        tickets: list[Ticket] = []

        def writer() -> None:
            # 4 KiB lane + 4 KiB serialized bound; each commit encodes to 1040 bytes.
            for n in range(12):
                tickets.append(wal.submit({n: b"w" * 1000}))
            returned.set()

        thread = threading.Thread(target=writer)
        # Wait for the ticker to be inside the stalled fsync, then start writing.
        assert wait_until(lambda: recording_fs.counts.get("fsync"))
        assert recording_fs.counts.get("fsync") == 1
        thread.start()
        assert wait_until(lambda: wal.statistics().fallbacks["backpressure"])
        stats = wal.statistics()
        assert stats.fallbacks["backpressure"] >= 1
        assert not returned.is_set()  # blocked: the open epoch cannot be sealed yet
        staged = sum(stats.lane_backlog_bytes) + stats.serialized_backlog_bytes
        assert staged <= 2 * 4096
        assert not wal.is_durable(stalled)
    finally:
        gate.set()
    thread.join(timeout=60)
    assert returned.is_set()
    wal.close()
    assert recover(db_path).last_commit_seq == 13
    assert len(tickets) == 12


def test_wait_durable_times_out_while_the_disk_stalls(
    db_path: Path, recording_fs: RecordingFileSystem
) -> None:
    gate = threading.Event()
    recording_fs.gate["fsync"] = gate
    wal = Wal.open(db_path, WalConfig(lanes=1, epoch_interval_ms=1), fs=recording_fs)
    try:
        ticket = wal.submit({1: b"t"})
        with pytest.raises(TimeoutError, match="not durable"):
            wal.wait_durable(ticket, timeout=0.05)
        assert not wal.is_durable(ticket)
    finally:
        gate.set()
        wal.close()
    assert wal.is_durable(ticket)


def test_statistics_count_what_was_written(db_path: Path) -> None:
    with Wal.open(db_path, WalConfig(lanes=2, epoch_interval_ms=1)) as wal:
        for n in range(10):
            wal.commit({n: b"s" * 100, n + 100: b"t" * 50})
        stats = wal.statistics()
    files = [p for p in db_path.parent.iterdir() if parse_segment_name(db_path.name, p.name)]
    assert stats.segments_written == stats.epochs_sealed == len(files)
    assert stats.bytes_written == sum(p.stat().st_size for p in files)
    assert stats.records_written == 20
    assert stats.fsync_count == 2 * stats.epochs_sealed  # segment + directory per epoch
    assert stats.durable_commit_seq == 10
    assert set(stats.fallbacks) == {r.value for r in pagewal.FallbackReason}


def test_fsync_normal_defers_fsyncs_until_close(
    db_path: Path, recording_fs: RecordingFileSystem
) -> None:
    config = WalConfig(lanes=2, epoch_interval_ms=60_000, fsync="normal")
    with Wal.open(db_path, config, fs=recording_fs) as wal:
        for n in range(5):
            wal.commit({n: b"n" * 10})
        assert recording_fs.counts.get("fsync", 0) == 0
    assert recording_fs.counts.get("fsync", 0) == 5  # every segment, at close
    # The last fsync is the directory's (removing unused pre-created temp files may follow).
    assert [op for op, _ in recording_fs.log if op != "unlink"][-1] == "fsync_dir"
    assert recover(db_path).last_commit_seq == 5


def test_a_second_open_of_the_same_log_is_refused_until_the_first_closes(db_path: Path) -> None:
    wal = Wal.open(db_path, FAST)
    try:
        with pytest.raises(pagewal.LogLockedError, match="already open"):
            Wal.open(db_path, FAST)
        wal.commit({1: b"first"})
    finally:
        wal.close()
    with Wal.open(db_path, FAST) as again:
        assert again.recovery.last_commit_seq == 1


def test_recover_beside_a_live_log_reads_without_deleting_anything(db_path: Path) -> None:
    with Wal.open(db_path, FAST) as wal:
        wal.commit({1: b"live"})
        in_flight = db_path.parent / (segment_name(db_path.name, 99) + ".tmp")
        in_flight.write_bytes(b"a segment being written")
        result = recover(db_path)
        assert result.last_commit_seq == 1
        assert result.removed_temp_files == ()
        assert in_flight.exists()  # the live writer's file was left alone
        with pytest.raises(pagewal.LogLockedError):
            recover(db_path, delete_after=True)
    assert recover(db_path).removed_temp_files == (str(in_flight),)  # now it is tidied
    assert not in_flight.exists()


def test_fsync_normal_syncs_published_segments_within_an_interval_even_when_idle(
    db_path: Path, recording_fs: RecordingFileSystem
) -> None:
    config = WalConfig(lanes=2, epoch_interval_ms=5, fsync="normal")
    with Wal.open(db_path, config, fs=recording_fs) as wal:
        wal.commit({1: b"idle"})
        assert wait_until(lambda: wal.statistics().fsync_count)  # the ticker's deferred fsync
        assert wal.statistics().fsync_count == 2  # the segment and its directory
        assert recording_fs.counts.get("fsync") == 1
        assert recording_fs.counts.get("fsync_dir") == 1


def test_a_failure_after_a_seq_is_assigned_breaks_the_log_instead_of_leaving_a_gap(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pagewal import _lanes

    original = _lanes.encode_commit_into
    calls = 0

    def failing_encode(*args: object, **kwargs: object) -> int:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise MemoryError("injected")
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(_lanes, "encode_commit_into", failing_encode)
    wal = Wal.open(db_path, WalConfig(lanes=1, epoch_interval_ms=60_000))
    first = wal.commit({1: b"one"})
    second = wal.submit({2: b"two"})
    with pytest.raises(MemoryError):
        wal.submit({3: b"three"})  # commit_seq 3 was assigned, then staging failed
    with pytest.raises(pagewal.BrokenLogError, match="commit_seq was assigned"):
        wal.submit({4: b"four"})
    with pytest.raises(pagewal.BrokenLogError):
        wal.close()
    assert wal.is_durable(first) and not wal.is_durable(second)
    result = recover(db_path)  # no segment with a hole in its seq range was published
    assert result.last_commit_seq == 1


def test_concurrent_closes_all_return_after_the_final_seal(db_path: Path) -> None:
    wal = Wal.open(db_path, WalConfig(lanes=2, epoch_interval_ms=60_000))
    tickets = [wal.submit({n: b"c"}) for n in range(20)]
    observed: list[bool] = []

    def close_and_check() -> None:
        wal.close()
        observed.append(all(wal.is_durable(t) for t in tickets))

    closers = [threading.Thread(target=close_and_check) for _ in range(4)]
    for closer in closers:
        closer.start()
    for closer in closers:
        closer.join()
    assert observed == [True] * 4
    with Wal.open(db_path, FAST) as again:  # the lock was released
        assert again.recovery.last_commit_seq == 20


def test_a_caller_run_ticker_seals_epochs_and_close_waits_for_its_last_seal(
    db_path: Path,
) -> None:
    wal = Wal.open(db_path, WalConfig(lanes=2, epoch_interval_ms=1), start_ticker=False)
    ticker = threading.Thread(target=wal.run_ticker)
    ticker.start()
    try:
        with pytest.raises(RuntimeError, match="another run_ticker"):
            wal.run_ticker()
        # With a timeout the committer never leads, so only the caller's ticker can publish.
        wal.commit({1: b"ticked"}, timeout=30)
        staged = [wal.submit({n: b"s"}) for n in range(2, 12)]
    finally:
        wal.close()
    assert all(wal.is_durable(t) for t in staged)  # close waited for the ticker's last seal
    ticker.join(timeout=30)
    assert not ticker.is_alive()
    assert recover(db_path).last_commit_seq == 11


def test_close_publishes_the_last_epoch_itself_when_no_ticker_was_started(
    db_path: Path,
) -> None:
    wal = Wal.open(db_path, WalConfig(lanes=2, epoch_interval_ms=1), start_ticker=False)
    tickets = [wal.submit({n: b"unticked"}) for n in range(5)]
    assert not any(wal.is_durable(t) for t in tickets)
    wal.close()
    assert all(wal.is_durable(t) for t in tickets)
    wal.run_ticker()  # a ticker started after close began has nothing left to do
    assert recover(db_path).last_commit_seq == 5


def test_run_ticker_is_refused_on_a_log_with_its_own_ticker_thread(db_path: Path) -> None:
    with Wal.open(db_path, FAST) as wal, pytest.raises(RuntimeError, match="thread of its own"):
        wal.run_ticker()


@pytest.mark.parametrize("timeout", [float("nan"), -1, -0.5, "1", True])
def test_a_nan_negative_or_non_number_timeout_is_refused_before_anything_is_staged(
    db_path: Path, timeout: object
) -> None:
    with Wal.open(db_path, WalConfig(lanes=2, epoch_interval_ms=1, fsync="off")) as wal:
        with pytest.raises(ConfigError, match="timeout"):
            wal.commit({1: b"a"}, timeout=timeout)  # type: ignore[arg-type]
        assert wal.statistics().commits_staged == 0  # no commit_seq was used
        ticket = wal.commit({1: b"a"}, durable=False)
        with pytest.raises(ConfigError, match="timeout"):
            wal.wait_durable(ticket, timeout=timeout)  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match="timeout"):
            wal.flush(timeout=timeout)  # type: ignore[arg-type]
        wal.wait_durable(ticket, timeout=math.inf)  # infinity waits without limit
        assert wal.is_durable(ticket)
        assert wal.commit({2: b"b"}, timeout=math.inf).commit_seq == 2
        wal.flush(timeout=math.inf)


def test_a_ticket_of_another_log_is_refused_by_its_log_id(tmp_path: Path) -> None:
    config = WalConfig(log_file_bytes=64 << 10)
    with Wal.open(tmp_path / "a", config) as first, Wal.open(tmp_path / "b", config) as second:
        assert first.log_id != second.log_id
        ticket = first.commit({1: b"a"})
        assert ticket.log_id == first.log_id
        second.commit({1: b"b"})  # the same numbers exist in the second log
        for call in (second.wait_durable, second.is_durable, second.retire):
            with pytest.raises(WrongLogError, match=first.log_id.hex()):
                call(ticket)
        first.wait_durable(ticket)
        assert first.is_durable(ticket)
