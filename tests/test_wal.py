"""The log under real threads and real files: DESIGN §2 invariants 1, 2, 3, 7, 8 and close."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import math
import os
import random
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from conftest import SMALL_LOG_FILE_BYTES, Background, RecordingFileSystem, wait_until

import pagewal
from pagewal import (
    ClosedError,
    ConfigError,
    ImageTooLargeError,
    InvalidCommitError,
    OsFileSystem,
    Ticket,
    Wal,
    WalConfig,
    WrongLogError,
    recover,
)
from pagewal._codec import ChainPosition, Commit, encode_commit_into
from pagewal._layout import (
    SEGMENT_MAGIC,
    decode_file_header,
    decode_segment_v2,
    list_log_files,
    segment_name,
    segment_span,
)
from pagewal._logreader import scan_log_files
from pagewal.harness._workload import run_writers as run_threads

Config = functools.partial(WalConfig, log_file_bytes=SMALL_LOG_FILE_BYTES)
"""A WalConfig with small log files (see conftest)."""

FAST = Config(lanes=4, epoch_interval_ms=1, fsync="off")


def committed_segments(db_path: Path) -> list[pagewal.DecodedSegment]:
    """The chain's segments, decoded from the log files by the log reader alone (no
    recovery: no checkpoint, no tidying), in chain order."""
    listing = list_log_files(db_path.name, os.listdir(db_path.parent))
    paths = [(str(db_path.parent / name), file_no) for file_no, name in listing.log_files]
    return list(scan_log_files(OsFileSystem(), paths, ChainPosition()).segments)


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
    config = Config(lanes=4, epoch_interval_ms=2, lane_capacity_bytes=16_384, fsync="off")
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
    with Wal.open(db_path, Config(lanes=4, epoch_interval_ms=0.5, fsync="off")) as wal:
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


class SegmentRecordingFileSystem(RecordingFileSystem):
    """Also notes, for each segment's durable write once it returned, the segment's epoch,
    its file and offset, and where the write stands in the operation log."""

    def __init__(self) -> None:
        super().__init__()
        self.durable: dict[int, tuple[str, int, int]] = {}  # epoch -> (path, offset, log index)

    def pwritev_dsync(
        self, fd: int, buffers: Sequence[bytes | bytearray | memoryview], offset: int
    ) -> int:
        written = super().pwritev_dsync(fd, buffers, offset)
        head = bytes(memoryview(buffers[0])[:16])
        if int.from_bytes(head[:4], "little") == SEGMENT_MAGIC:  # not a file header
            with self.lock:
                self.durable[int.from_bytes(head[8:16], "little")] = (
                    self._fd_paths[fd], offset, len(self.log))
        return written

    def rename(self, source: str, target: str) -> None:
        super().rename(source, target)
        with self.lock:  # a descriptor opened under the temporary name now has the final one
            for fd, path in self._fd_paths.items():
                if path == source:
                    self._fd_paths[fd] = target


def test_no_commit_is_acknowledged_before_its_segment_and_its_files_name_are_durable(
    db_path: Path, fast_switching: None
) -> None:
    # The early-ack race: if a commit's epoch were read outside the lane lock, a seal could
    # slip between reading the epoch and appending, and the commit would be acknowledged with
    # the older epoch while its bytes sit in the newer one, still only in memory. Small files
    # make the log move through several of them.
    recording_fs = SegmentRecordingFileSystem()
    config = Config(lanes=2, epoch_interval_ms=0.2, max_flush_delay_ms=0.2)
    violations: list[str] = []
    checked = 0
    lock = threading.Lock()

    with Wal.open(db_path, config, fs=recording_fs) as wal:

        def work(index: int) -> None:
            nonlocal checked
            rng = random.Random(index)
            for _ in range(60):
                ticket = wal.commit({rng.randrange(50): rng.randbytes(64)})
                with recording_fs.lock:
                    where = recording_fs.durable.get(ticket.epoch)
                    log = list(recording_fs.log)
                problem = None
                if where is None:
                    problem = "its segment's durable write had not returned"
                else:
                    path, offset, written_at = where
                    # Invariant 4a: the file was renamed into place and the directory fsynced
                    # before the segment was written into it.
                    renamed = [i for i, (op, p) in enumerate(log[:written_at])
                               if op == "rename" and p == path]
                    if not renamed or not any(op == "fsync_dir"
                                              for op, _ in log[renamed[0]:written_at]):
                        problem = f"{path} was not durably named before the write"
                    else:
                        data = Path(path).read_bytes()
                        segment = decode_segment_v2(data, path, offset,
                                                    decode_file_header(data, path))
                        if not (isinstance(segment, pagewal.DecodedSegment)
                                and ticket.commit_seq in set(
                                    segment.records["commit_seq"].tolist())):
                            problem = f"commit not in the segment at {path}:{offset}"
                with lock:
                    checked += 1
                    if problem:
                        violations.append(f"{ticket} acked: {problem}")

        run_threads(work, 8)
    assert checked == 8 * 60
    assert violations == []
    assert len({path for path, _, _ in recording_fs.durable.values()}) > 1  # files rolled over


def test_a_lone_committer_is_not_held_for_the_epoch_interval(db_path: Path) -> None:
    # With a 60 s interval, only adaptive sealing can make these commits durable in time.
    config = Config(lanes=2, epoch_interval_ms=60_000)
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
    config = Config(lanes=2, epoch_interval_ms=1, lane_capacity_bytes=8192,
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
    with Wal.open(db_path, Config(mode="conservative", lanes=8, epoch_interval_ms=1,
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
    with Wal.open(db_path, Config(mode="shadow", lanes=3, epoch_interval_ms=1,
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
            buffer = self._buffers[self._current]  # the ring's buffer staging this epoch
            assert buffer is not None
            buffer[self.used - 5] ^= 0x01  # flip a bit of the image just staged

    monkeypatch.setattr(_lanes.Lane, "append", corrupting_append)
    with Wal.open(db_path, Config(mode="shadow", lanes=2, epoch_interval_ms=1,
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
    wal = Wal.open(db_path, Config(lanes=2, epoch_interval_ms=60_000))
    tickets = [wal.submit({n: bytes([n]) * 10}) for n in range(50)]
    wal.close()
    wal.close()
    assert all(wal.is_durable(t) for t in tickets)
    assert recover(db_path).page_images() == {n: bytes([n]) * 10 for n in range(50)}
    with pytest.raises(ClosedError):
        wal.submit({1: b"x"})
    assert wal.statistics().closed


def test_flush_makes_everything_submitted_durable(db_path: Path) -> None:
    with Wal.open(db_path, Config(lanes=2, epoch_interval_ms=60_000)) as wal:
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
    config = Config(lanes=1, epoch_interval_ms=1, lane_capacity_bytes=4096)
    wal = Wal.open(db_path, config, fs=recording_fs)
    # From here the durable writes ("writev" in the recording) are the segments'.
    held = recording_fs.counts["writev"] + 1
    recording_fs.gate["writev"] = gate  # the ticker stalls publishing the first epoch
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
        # Wait for the ticker to be inside the stalled write, then start writing.
        assert wait_until(lambda: recording_fs.counts["writev"] == held)
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


def _waits_in(thread_name: str, function: str) -> bool:
    """Whether the thread named ``thread_name`` is blocked (in a ``wait``) inside
    ``function``: where a thread stands, read from its frames rather than guessed by time."""
    idents = [t.ident for t in threading.enumerate() if t.name == thread_name]
    frame = sys._current_frames().get(idents[0]) if idents else None
    names = []
    while frame is not None:
        names.append(frame.f_code.co_name)
        frame = frame.f_back
    return function in names and "wait" in names[: names.index(function)]


@contextlib.contextmanager
def _held_segment_writes(
    db_path: Path, fs: RecordingFileSystem, background: Background
) -> Iterator[tuple[Wal, threading.Event]]:
    """A log with two lanes and up to four epochs in flight, and a gate every segment write
    waits at once the caller sets ``fs.gate["writev"]`` to it; the gate opens at the end."""
    gate = threading.Event()
    background.release_on_exit(gate)
    wal = Wal.open(db_path, Config(lanes=2, inflight_epochs=4, epoch_interval_ms=60_000), fs=fs)
    try:
        yield wal, gate
    finally:
        gate.set()
        wal.close()


def _third_commit_waits_to_seal(fs: RecordingFileSystem, writes: int) -> bool:
    """Whether the thread "third" waits to seal its epoch, rather than a write beyond
    ``writes`` reaching the gate (read from frames and counts, not guessed by time)."""
    assert wait_until(lambda: _waits_in("third", "_seal_and_place") or fs.counts["writev"] > writes)
    return fs.counts["writev"] == writes


def test_after_an_epoch_of_several_commits_the_next_is_sealed_once_it_is_durable(
    db_path: Path, recording_fs: RecordingFileSystem, background: Background
) -> None:
    with _held_segment_writes(db_path, recording_fs, background) as (wal, gate):
        grouped = [wal.submit({n: b"grouped"}) for n in range(2)]
        before = recording_fs.counts.get("writev", 0)
        recording_fs.gate["writev"] = gate
        background.start(wal.flush, name="flush")  # the two commits: one epoch, held
        assert wait_until(lambda: recording_fs.counts.get("writev", 0) == before + 1)
        background.start(lambda: wal.commit({9: b"third"}), name="third")
        # Batching: the third commit's epoch waits for the held one instead of overlapping it.
        assert _third_commit_waits_to_seal(recording_fs, before + 1)
        assert wal.statistics().epochs_in_flight == 1
        gate.set()
        background.join()
        assert all(wal.is_durable(t) for t in grouped)
    epochs = [s.header for s in committed_segments(db_path)]
    assert [(h.commit_seq_lo, h.commit_seq_hi) for h in epochs] == [(1, 2), (3, 3)]


def test_single_commits_are_written_at_once_up_to_one_per_lane(
    db_path: Path, recording_fs: RecordingFileSystem, background: Background
) -> None:
    with _held_segment_writes(db_path, recording_fs, background) as (wal, gate):
        before = recording_fs.counts.get("writev", 0)
        recording_fs.gate["writev"] = gate
        for held, name in enumerate(("first", "second"), start=1):
            # Each an epoch of its own, written at once.
            background.start(functools.partial(wal.commit, {held: name.encode()}), name=name)
            assert wait_until(lambda n=before + held: recording_fs.counts.get("writev", 0) == n)
        assert wal.statistics().epochs_in_flight == 2
        background.start(lambda: wal.commit({7: b"third"}), name="third")
        assert _third_commit_waits_to_seal(recording_fs, before + 2)  # two lanes: two at once
        gate.set()
        background.join()
    assert [s.header.commit_seq_hi for s in committed_segments(db_path)] == [1, 2, 3]


def _direct_io_here(directory: Path) -> bool:
    fd = os.open(directory / "probe", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        direct = OsFileSystem().open_direct(fd)
        if direct is not None:
            os.close(direct)
        return direct is not None
    finally:
        os.close(fd)


def test_small_segments_go_through_a_direct_descriptor_of_the_log_file(db_path: Path) -> None:
    if not _direct_io_here(db_path.parent):
        pytest.skip("this file system offers no O_DIRECT")
    with Wal.open(db_path, Config(lanes=1)) as wal:
        wal.commit({1: b"direct"})
        active = wal._writer._files.active
        assert active is not None and active.direct_fd is not None
        flags = fcntl.fcntl(active.direct_fd, fcntl.F_GETFL)
        assert flags & os.O_DIRECT and os.path.samestat(os.fstat(active.direct_fd),
                                                        os.stat(active.path))
    assert recover(db_path).last_commit_seq == 1


class _RefusesDirectWrites(RecordingFileSystem):
    """Direct descriptors open, but every write through one fails with EINVAL (as for blocks
    larger than the log's alignment), before anything is written."""

    def __init__(self) -> None:
        super().__init__()
        self.direct: set[int] = set()
        self.refused = 0

    def open_direct(self, fd: int) -> int | None:
        direct = super().open_direct(fd)
        if direct is not None:
            self.direct.add(direct)
        return direct

    def pwritev_dsync(
        self, fd: int, buffers: Sequence[bytes | bytearray | memoryview], offset: int
    ) -> int:
        if fd in self.direct:
            self.refused += 1
            raise OSError(errno.EINVAL, "direct I/O refused")
        return super().pwritev_dsync(fd, buffers, offset)


def test_a_refused_direct_write_is_made_through_the_page_cache_instead(db_path: Path) -> None:
    if not _direct_io_here(db_path.parent):
        pytest.skip("this file system offers no O_DIRECT")
    fs = _RefusesDirectWrites()
    with Wal.open(db_path, Config(lanes=1), fs=fs) as wal:
        tickets = [wal.commit({n: b"buffered"}) for n in range(3)]
        assert all(wal.is_durable(t) for t in tickets) and not wal.statistics().broken
    assert fs.refused == 1  # refused once, then every write went through the page cache
    assert recover(db_path).last_commit_seq == 3


def test_a_log_that_rolls_over_recycles_and_closes_leaves_no_descriptor_open(
    db_path: Path
) -> None:
    def open_descriptors() -> int:
        return len(os.listdir("/proc/self/fd"))

    before = open_descriptors()
    image = bytes(4000)
    for _ in range(3):  # each open continues the log, in new, recycled and ready files
        with Wal.open(db_path, Config(lanes=1, log_file_bytes=SMALL_LOG_FILE_BYTES)) as wal:
            tickets = [wal.commit({n: image}) for n in range(40)]  # several 64 KiB files
            wal.retire(tickets[-1])  # files behind the checkpoint go back to the pool
            wal.commit({0: image})
    assert wal.statistics().log_files_recycled + wal.statistics().log_files_created > 1
    assert open_descriptors() == before


def test_wait_durable_times_out_while_the_disk_stalls(
    db_path: Path, recording_fs: RecordingFileSystem
) -> None:
    gate = threading.Event()
    wal = Wal.open(db_path, Config(lanes=1, epoch_interval_ms=1), fs=recording_fs)
    recording_fs.gate["writev"] = gate  # every segment's durable write stalls
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
    with Wal.open(db_path, Config(lanes=2, epoch_interval_ms=1)) as wal:
        for n in range(10):
            wal.commit({n: b"s" * 100, n + 100: b"t" * 50})
        stats = wal.statistics()
    segments = recover(db_path).segments
    assert stats.segments_written == stats.epochs_sealed == len(segments)
    # Each segment's bytes on disk: header, body, zero padding to the alignment.
    assert stats.bytes_written == sum(segment_span(s.header.body_length, 4096)
                                      for s in segments)
    assert stats.records_written == 20
    assert stats.fsync_count == stats.epochs_sealed  # one durable write per segment
    assert stats.durable_commit_seq == 10
    assert set(stats.fallbacks) == {r.value for r in pagewal.FallbackReason}


def commit_path_ops(fs: RecordingFileSystem, since: int = 0) -> list[str]:
    """The operations from ``since`` on in ``fs``'s log that did not run in the pool's thread
    (which creates, fills, renames and recycles log files: never on the commit path)."""
    seen: dict[str, int] = {}
    ops = []
    with fs.lock:
        for index, (op, _) in enumerate(fs.log):
            number = seen.get(op, 0)
            seen[op] = number + 1
            if index >= since and fs.threads[op][number] != "pagewal-log-files":
                ops.append(op)
    return ops


def test_fsync_normal_defers_fsyncs_until_close(
    db_path: Path, recording_fs: RecordingFileSystem
) -> None:
    config = Config(lanes=2, epoch_interval_ms=60_000, fsync="normal")
    with Wal.open(db_path, config, fs=recording_fs) as wal:
        opened = len(recording_fs.log)
        for n in range(5):
            wal.commit({n: b"n" * 10})
        written = len(recording_fs.log)
        # Five segments written in place, none of them synced (no durable write either).
        assert commit_path_ops(recording_fs, opened) == ["pwritev"] * 5
        assert wal.statistics().fsync_count == 0
    # At close: the log file holding them is fsynced, then the clean-shutdown marker is
    # written durably after them.
    assert commit_path_ops(recording_fs, written) == ["fsync", "writev", "fsync"]
    result = recover(db_path)
    assert result.last_commit_seq == 5 and result.clean_shutdown


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
    config = Config(lanes=2, epoch_interval_ms=5, fsync="normal")
    with Wal.open(db_path, config, fs=recording_fs) as wal:
        opened = len(recording_fs.log)
        wal.commit({1: b"idle"})
        assert wait_until(lambda: wal.statistics().fsync_count)  # the ticker's deferred fsync
        assert wal.statistics().fsync_count == 1  # the log file holding the segment
        # The segment's write, then one fsync of its file; no directory fsync (the file's
        # name was durable before it was handed out).
        assert commit_path_ops(recording_fs, opened) == ["pwritev", "fsync"]


def _fail_encoding_page(module: object, monkeypatch: pytest.MonkeyPatch, page_no: int) -> None:
    """Make ``module``'s encode_commit_into raise MemoryError for a commit of ``page_no``:
    after the commit's seq was assigned, as an interrupt or a bug could."""
    original = encode_commit_into

    def failing_encode(buffer: memoryview, offset: int, commit: Commit, **kwargs: int) -> int:
        if any(number == page_no for number, _ in commit.pages):
            raise MemoryError("injected")
        return original(buffer, offset, commit, **kwargs)

    monkeypatch.setattr(module, "encode_commit_into", failing_encode)


def test_a_failure_after_a_seq_is_assigned_breaks_the_log_instead_of_leaving_a_gap(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pagewal import _lanes

    _fail_encoding_page(_lanes, monkeypatch, 3)
    wal = Wal.open(db_path, Config(lanes=1, epoch_interval_ms=60_000))
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


def test_a_lone_committers_failure_after_its_seq_is_assigned_breaks_the_log(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pagewal import _wal

    _fail_encoding_page(_wal, monkeypatch, 2)  # the path of a commit alone in its epoch
    wal = Wal.open(db_path, Config(lanes=1, epoch_interval_ms=60_000))
    first = wal.commit({1: b"one"})
    with pytest.raises(MemoryError):
        wal.commit({2: b"two"})
    with pytest.raises(pagewal.BrokenLogError, match="commit_seq was assigned"):
        wal.commit({3: b"three"})
    with pytest.raises(pagewal.BrokenLogError):
        wal.close()
    assert wal.is_durable(first)
    assert recover(db_path).last_commit_seq == 1


def test_concurrent_closes_all_return_after_the_final_seal(db_path: Path) -> None:
    wal = Wal.open(db_path, Config(lanes=2, epoch_interval_ms=60_000))
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
    wal = Wal.open(db_path, Config(lanes=2, epoch_interval_ms=1), start_ticker=False)
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
    wal = Wal.open(db_path, Config(lanes=2, epoch_interval_ms=1), start_ticker=False)
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
    with Wal.open(db_path, Config(lanes=2, epoch_interval_ms=1, fsync="off")) as wal:
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
    config = Config(log_file_bytes=64 << 10)
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
