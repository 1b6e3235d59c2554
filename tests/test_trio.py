"""pagewal.trio: the async API under real trio tasks, real threads and real files."""

from __future__ import annotations

import functools
import os
import random
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
import trio
from conftest import JOIN_SECONDS, SMALL_LOG_FILE_BYTES, RecordingFileSystem

import pagewal
from pagewal import (
    BrokenLogError,
    ClosedError,
    LogLockedError,
    Ticket,
    WalConfig,
    recover,
)
from pagewal._layout import SEGMENT_MAGIC
from pagewal.trio import open_wal

pytestmark = pytest.mark.trio

Config = functools.partial(WalConfig, log_file_bytes=SMALL_LOG_FILE_BYTES)
"""A WalConfig with small log files (see conftest)."""

FAST = Config(lanes=4, epoch_interval_ms=1, fsync="off")
IDLE = Config(lanes=2, epoch_interval_ms=60_000)  # only close, flush or a waiter seals


async def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Yield to other tasks until ``condition()`` holds (another thread makes it true)."""
    with trio.move_on_after(JOIN_SECONDS):
        while not condition():
            await trio.sleep(0.001)
        return
    pytest.fail(f"timed out waiting until {what}")


class SegmentRecordingFileSystem(RecordingFileSystem):
    """Also notes each segment's durable write as a "segment" operation (which the test can
    gate or fail) before it runs; a log file's header, written durably too, is not one."""

    def pwritev_dsync(
        self, fd: int, buffers: Sequence[bytes | bytearray | memoryview], offset: int
    ) -> int:
        if int.from_bytes(bytes(memoryview(buffers[0])[:4]), "little") == SEGMENT_MAGIC:
            self.note("segment", self._fd_paths.get(fd, "?"))
        return super().pwritev_dsync(fd, buffers, offset)


@pytest.fixture
def recording_fs() -> RecordingFileSystem:
    return SegmentRecordingFileSystem()


@pytest.fixture
def held_write(recording_fs: RecordingFileSystem) -> Iterator[threading.Event]:
    """Every segment's durable write (``pwritev2(RWF_DSYNC)``, the write and its fsync in
    one) through ``recording_fs`` waits until the returned event is set. Opening the log
    (which makes log files ready and writes a file header) is not held.

    A safety timer sets it after :data:`JOIN_SECONDS`, so that a test whose event loop got
    blocked (waiting in the loop's own thread for the held write) fails on its assertions
    instead of hanging; no correct run comes near it.
    """
    gate = threading.Event()
    recording_fs.gate["segment"] = gate
    safety = threading.Timer(JOIN_SECONDS, gate.set)
    safety.daemon = True
    safety.start()
    yield gate
    safety.cancel()
    gate.set()


def write_is_held(fs: RecordingFileSystem) -> Callable[[], bool]:
    """True once a publisher has reached the gated segment write (and waits there)."""
    return lambda: fs.counts.get("segment", 0) >= 1


def recovered_commits(db_path: Path) -> dict[int, list[tuple[int, bytes]]]:
    commits: dict[int, list[tuple[int, bytes]]] = {}
    for record in recover(db_path).iter_records():
        commits.setdefault(record.commit_seq, []).append((record.page_no, record.image))
    return commits


async def test_a_hundred_tasks_commit_concurrently_and_recovery_equals_the_oracle_replay(
    db_path: Path,
) -> None:
    # Small lanes, so that some commits overflow onto the serialized path as well.
    config = Config(lanes=4, epoch_interval_ms=1, lane_capacity_bytes=16_384)
    committed: dict[int, list[tuple[int, bytes]]] = {}
    tickets: list[Ticket] = []

    async with open_wal(db_path, config) as wal:

        async def writer(index: int) -> None:
            rng = random.Random(index)
            for _ in range(5):
                pages = [(rng.randrange(300), rng.randbytes(rng.randint(1, 3000)))
                         for _ in range(rng.randint(1, 3))]
                ticket = await wal.commit(pages)
                assert wal.is_durable(ticket)  # acknowledged means durable
                committed[ticket.commit_seq] = pages
                tickets.append(ticket)

        async with trio.open_nursery() as nursery:
            for index in range(100):
                nursery.start_soon(writer, index)
        stats = wal.statistics()

    assert sorted(committed) == list(range(1, 501))  # dense: no seq lost or repeated
    assert recovered_commits(db_path) == committed  # every commit, exact bytes and order
    expected: dict[int, bytes] = {}
    for seq in sorted(committed):
        expected.update(committed[seq])
    assert recover(db_path).page_images() == expected
    by_seq = sorted(tickets, key=lambda t: t.commit_seq)
    assert [t.epoch for t in by_seq] == sorted(t.epoch for t in by_seq)
    assert stats.durable_commit_seq == 500
    assert stats.epochs_sealed < 500  # commits from many tasks shared epochs


async def test_the_event_loop_keeps_running_while_a_commit_waits_on_a_stalled_write(
    db_path: Path, recording_fs: RecordingFileSystem, held_write: threading.Event
) -> None:
    acknowledged: list[Ticket] = []
    beats = 0
    async with open_wal(db_path, Config(lanes=1, epoch_interval_ms=1),
                        fs=recording_fs) as wal:

        async def committer() -> None:
            acknowledged.append(await wal.commit({1: b"held by the disk"}))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(committer)
            await wait_until(write_is_held(recording_fs), "the commit's durable write is held")
            for _ in range(50):
                await trio.sleep(0.001)
                beats += 1
                assert acknowledged == []  # the commit is still waiting meanwhile
            # If the commit had blocked the event loop, only the safety timer could have
            # released the disk, and the heartbeat would have found the commit done.
            assert not held_write.is_set()
            held_write.set()
    assert beats == 50
    assert len(acknowledged) == 1 and wal.is_durable(acknowledged[0])


async def test_a_submit_held_by_backpressure_does_not_block_the_event_loop(
    db_path: Path, recording_fs: RecordingFileSystem, held_write: threading.Event
) -> None:
    # The first epoch's publish stalls in its durable write, so no staging memory is freed.
    config = Config(lanes=1, epoch_interval_ms=1, lane_capacity_bytes=4096)
    submitted: list[Ticket] = []
    async with open_wal(db_path, config, fs=recording_fs) as wal:
        await wal.submit({0: b"s" * 1000})
        await wait_until(write_is_held(recording_fs), "the first epoch's durable write is held")

        async def submitter() -> None:
            # 4 KiB lane + 4 KiB serialized bound; each commit encodes to 1040 bytes.
            for n in range(12):
                submitted.append(await wal.submit({n: b"w" * 1000}))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(submitter)
            await wait_until(lambda: wal.statistics().fallbacks["backpressure"] > 0,
                             "a submit waits for staging memory")
            held = len(submitted)
            for _ in range(20):  # the loop runs while that submit waits in its thread
                await trio.sleep(0.001)
                assert len(submitted) == held < 12
            assert not held_write.is_set()
            held_write.set()
    assert len(submitted) == 12
    assert recover(db_path).last_commit_seq == 13


async def test_a_cancelled_wait_durable_leaves_the_commit_staged_and_it_becomes_durable(
    db_path: Path, recording_fs: RecordingFileSystem, held_write: threading.Event
) -> None:
    limiter = trio.to_thread.current_default_thread_limiter()
    async with open_wal(db_path, Config(lanes=1, epoch_interval_ms=1),
                        fs=recording_fs) as wal:
        ticket = await wal.submit({5: b"staged before the cancel"})
        scope = trio.CancelScope()

        async def cancel_once_the_disk_holds_it() -> None:
            await wait_until(write_is_held(recording_fs), "the epoch's durable write is held")
            scope.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(cancel_once_the_disk_holds_it)
            with scope:
                await wal.wait_durable(ticket)
        assert scope.cancelled_caught
        assert not wal.is_durable(ticket)
        # The abandoned wait thread holds its limiter token until the epoch is durable:
        # it is left behind, but bounded.
        assert limiter.borrowed_tokens == 1
        held_write.set()
        await wal.wait_durable(ticket)  # waiting again sees it become durable
        assert wal.is_durable(ticket)
    await wait_until(lambda: limiter.borrowed_tokens == 0, "the abandoned wait thread ended")
    assert recovered_commits(db_path) == {ticket.commit_seq: [(5, b"staged before the cancel")]}


async def test_a_commit_cancelled_while_waiting_for_durability_still_becomes_durable(
    db_path: Path, recording_fs: RecordingFileSystem, held_write: threading.Event
) -> None:
    async with open_wal(db_path, Config(lanes=1, epoch_interval_ms=1),
                        fs=recording_fs) as wal:
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:

                async def cancel_once_the_disk_holds_it() -> None:
                    await wait_until(write_is_held(recording_fs), "the durable write is held")
                    scope.cancel()

                nursery.start_soon(cancel_once_the_disk_holds_it)
                await wal.commit({9: b"cancelled, yet staged"})
        assert scope.cancelled_caught
        stats = wal.statistics()
        assert stats.commits_staged == 1 and stats.durable_commit_seq == 0
        held_write.set()
    # Cancelling the wait did not un-stage the commit: leaving the block published it.
    assert recovered_commits(db_path) == {1: [(9, b"cancelled, yet staged")]}


async def test_a_submit_cancelled_while_staging_returns_its_ticket_and_the_next_stages_nothing(
    db_path: Path, recording_fs: RecordingFileSystem, held_write: threading.Event
) -> None:
    config = Config(lanes=1, epoch_interval_ms=1, lane_capacity_bytes=4096)
    tickets: list[Ticket] = []
    returned_before_the_cancel = -1
    async with open_wal(db_path, config, fs=recording_fs) as wal:
        await wal.submit({0: b"s" * 1000})
        await wait_until(write_is_held(recording_fs), "the first epoch's durable write is held")
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:

                async def cancel_while_a_submit_waits_for_space() -> None:
                    nonlocal returned_before_the_cancel
                    await wait_until(lambda: wal.statistics().fallbacks["backpressure"] > 0,
                                     "a submit waits for staging memory")
                    returned_before_the_cancel = len(tickets)
                    scope.cancel()
                    held_write.set()  # now the waiting submit can finish staging

                nursery.start_soon(cancel_while_a_submit_waits_for_space)
                for n in range(12):
                    tickets.append(await wal.submit({n: b"w" * 1000}))
        assert scope.cancelled_caught
        # The submit in flight at the cancel returned its ticket; the next one raised
        # Cancelled before staging, so it used no commit_seq.
        assert len(tickets) == returned_before_the_cancel + 1
        assert wal.statistics().commits_staged == 1 + len(tickets)
    assert recover(db_path).last_commit_seq == 1 + len(tickets)
    assert [t.commit_seq for t in tickets] == list(range(2, 2 + len(tickets)))


async def test_acknowledged_commits_survive_a_killed_process_and_a_fresh_open_finds_them(
    db_path: Path,
) -> None:
    # The writer is killed (SIGKILL) while commits are still in flight: no close, no flush.
    writer = """
import os, signal, sys, trio
from pagewal import WalConfig
from pagewal.trio import open_wal

async def main():
    config = WalConfig(lanes=2, epoch_interval_ms=1, log_file_bytes=64 << 10)
    async with open_wal(sys.argv[1], config) as wal:
        acked = 0
        async def writer(index):
            nonlocal acked
            for n in range(1000):
                ticket = await wal.commit({index * 1000 + n: b"%d:%d" % (index, n)})
                print(ticket.commit_seq, index * 1000 + n, flush=True)
                acked += 1
                if acked == 60:
                    os.kill(os.getpid(), signal.SIGKILL)
        async with trio.open_nursery() as nursery:
            for index in range(8):
                nursery.start_soon(writer, index)

trio.run(main)
"""
    package_root = os.path.dirname(os.path.dirname(pagewal.__file__))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAGEWAL_")}
    env["PYTHONPATH"] = package_root
    done = await trio.run_process([sys.executable, "-c", writer, str(db_path)],
                                  capture_stdout=True, capture_stderr=True, check=False,
                                  env=env)
    assert done.returncode == -9, done.stderr.decode()
    acked = dict(tuple(map(int, line.split())) for line in done.stdout.decode().splitlines())
    assert len(acked) >= 60

    async with open_wal(db_path, Config(lanes=2, epoch_interval_ms=1)) as wal:
        recovery = wal.recovery
        images = recovery.page_images()
        for page_no in acked.values():
            index, n = divmod(page_no, 1000)
            assert images[page_no] == b"%d:%d" % (index, n)
        durable = {r.commit_seq for r in recovery.iter_records()}
        assert set(acked) <= durable
        assert durable == set(range(1, recovery.last_commit_seq + 1))  # a dense prefix
        after = await wal.commit({0: b"after the crash"})
    assert after.commit_seq == recovery.last_commit_seq + 1
    assert recover(db_path).page_images()[0] == b"after the crash"


async def test_flush_makes_everything_submitted_durable(db_path: Path) -> None:
    async with open_wal(db_path, IDLE) as wal:
        tickets = [await wal.commit({n: b"f"}, durable=False) for n in range(10)]
        assert not any(wal.is_durable(t) for t in tickets)
        await wal.flush()
        assert all(wal.is_durable(t) for t in tickets)
        assert recover(db_path).last_commit_seq == 10  # readable while the log is open


async def test_calls_after_the_block_exits_raise_closed_error(db_path: Path) -> None:
    async with open_wal(db_path, FAST) as wal:
        ticket = await wal.commit({1: b"before"})
    with pytest.raises(ClosedError):
        await wal.commit({2: b"after"})
    with pytest.raises(ClosedError):
        await wal.submit({2: b"after"})
    await wal.wait_durable(ticket)  # an acknowledged commit stays durable
    await wal.flush()
    assert wal.statistics().closed
    assert wal.recovery.last_commit_seq == 0
    assert recover(db_path).last_commit_seq == 1


async def test_a_failed_segment_write_reaches_every_waiting_task_as_broken_log_error(
    db_path: Path, recording_fs: RecordingFileSystem, held_write: threading.Event
) -> None:
    recording_fs.fail["segment"] = lambda number, path: True
    errors: list[BrokenLogError] = []
    with pytest.raises(BrokenLogError) as on_exit:  # leaving the block reports it too
        async with open_wal(db_path, Config(lanes=2, epoch_interval_ms=1),
                            fs=recording_fs) as wal:

            async def committer(page_no: int) -> None:
                try:
                    await wal.commit({page_no: b"never acknowledged"})
                except BrokenLogError as error:
                    errors.append(error)

            async with trio.open_nursery() as nursery:
                for page_no in range(10):
                    nursery.start_soon(committer, page_no)
                await wait_until(lambda: wal.statistics().commits_staged == 10,
                                 "every commit is staged")
                await wait_until(write_is_held(recording_fs), "the durable write is held")
                held_write.set()  # ...and it fails
            assert wal.statistics().broken
    assert len(errors) == 10
    assert all(isinstance(e.__cause__, OSError) for e in errors)
    assert isinstance(on_exit.value.__cause__, OSError)
    with pytest.raises(BrokenLogError):
        await wal.submit({1: b"later"})
    async with open_wal(db_path, FAST) as again:  # the lock was released; nothing was acked
        assert again.recovery.last_commit_seq == 0


async def test_an_exception_from_the_block_propagates_unwrapped_even_on_a_broken_log(
    db_path: Path, recording_fs: RecordingFileSystem
) -> None:
    with pytest.raises(KeyError, match="from the block"):
        async with open_wal(db_path, FAST) as wal:
            await wal.commit({1: b"x"})
            raise KeyError("from the block")
    recording_fs.fail["segment"] = lambda number, path: True  # every segment's write fails
    with pytest.raises(ValueError, match="from the block"):
        async with open_wal(db_path, Config(lanes=4, epoch_interval_ms=1),
                            fs=recording_fs) as wal:
            with pytest.raises(BrokenLogError):
                await wal.commit({2: b"y"})
            raise ValueError("from the block")  # wins over the close's BrokenLogError
    assert recover(db_path).last_commit_seq == 1


async def test_the_ticker_is_a_task_of_the_block_and_nothing_outlives_the_block(
    db_path: Path,
) -> None:
    this_task = trio.lowlevel.current_task()
    outside = list(this_task.child_nurseries)  # the test runner's own
    ticker_threads = {t for t in threading.enumerate() if t.name == "pagewal-ticker"}
    async with open_wal(db_path, IDLE) as wal:
        (block_nursery,) = [n for n in this_task.child_nurseries if n not in outside]
        tasks = [t.name for t in block_nursery.child_tasks]
        own_thread = ticker_threads != {
            t for t in threading.enumerate() if t.name == "pagewal-ticker"}
        tickets = [await wal.submit({n: b"staged"}) for n in range(20)]
        assert not any(wal.is_durable(t) for t in tickets)
    assert tasks == ["pagewal ticker"]
    assert not own_thread  # the log started no ticker thread of its own
    assert this_task.child_nurseries == outside  # the block's nursery is gone...
    assert not block_nursery.child_tasks  # ...and the ticker task has ended
    assert all(wal.is_durable(t) for t in tickets)  # closing published what was staged
    async with open_wal(db_path, IDLE) as again:  # and released the lock file
        assert again.recovery.last_commit_seq == 20


async def test_a_cancelled_block_still_publishes_what_was_staged_and_releases_the_log(
    db_path: Path,
) -> None:
    tickets: list[Ticket] = []
    with trio.CancelScope() as scope:
        async with open_wal(db_path, IDLE) as wal:
            tickets.extend([await wal.submit({n: b"c"}) for n in range(10)])
            scope.cancel()
            await trio.sleep_forever()
    assert scope.cancelled_caught
    assert all(wal.is_durable(t) for t in tickets)
    async with open_wal(db_path, IDLE) as again:
        assert again.recovery.last_commit_seq == 10


async def test_a_second_block_on_an_open_log_is_refused_until_the_first_exits(
    db_path: Path,
) -> None:
    async with open_wal(db_path, FAST) as wal:
        with pytest.raises(LogLockedError):
            async with open_wal(db_path, FAST):
                pass  # pragma: no cover - never entered
        await wal.commit({1: b"first"})
    async with open_wal(db_path, FAST) as again:
        assert again.recovery.last_commit_seq == 1


async def test_one_default_thread_token_is_enough_as_the_ticker_and_close_bring_their_own(
    db_path: Path,
) -> None:
    trio.to_thread.current_default_thread_limiter().total_tokens = 1  # for this run only
    with trio.fail_after(JOIN_SECONDS):
        async with open_wal(db_path, Config(lanes=2, epoch_interval_ms=1)) as wal:
            first = await wal.submit({1: b"a"})
            second = await wal.submit({2: b"b"})
            # The first wait holds the only token while the second commit has no waiter, so
            # the epoch is not complete and only the ticker can seal it.
            async with trio.open_nursery() as nursery:
                nursery.start_soon(wal.wait_durable, first)
                nursery.start_soon(wal.wait_durable, second)
    assert recover(db_path).last_commit_seq == 2
