"""``pagewal demo``: many threads run transactions on a :class:`WalPager`, then a checkpoint,
a reopen and a page-by-page comparison with an oracle prove nothing was lost.

The demo is an end-to-end check a user can run on their own machine and configuration: every
acknowledged transaction must be in the reopened store with exactly its bytes, and every page
must equal a replay of the transactions in commit_seq order.

It starts from an empty store and never overwrites one: a directory that already holds
``demo.db`` or any of its log files is refused (:func:`existing_store`), and nothing in it is
deleted. Without a directory argument, a second run goes to a fresh subdirectory
(:func:`fresh_directory`).
"""

from __future__ import annotations

import functools
import itertools
import os
import random
import threading
import time
from collections.abc import Callable

import attrs
import numpy as np

from ._config import WalConfig
from ._layout import list_log_files
from ._pager import WalPager

DB_NAME = "demo.db"
PAGE_SIZE = 4096
PAGE_RANGE = 10_000
POOL_SIZE = 64


@attrs.frozen
class DemoReport:
    """What a demo run did and found."""

    threads: int
    seconds: float
    transactions: int
    pages: int
    latency_p50_ms: float
    latency_p99_ms: float
    epochs: int
    fallbacks: dict[str, int]
    checkpoints: int
    checkpoint_seconds: float
    overlay_limit_bytes: int
    final_checkpoint_pages: int
    final_checkpoint_seconds: float
    reopen_seconds: float
    pages_verified: int
    wrong: int

    @property
    def ok(self) -> bool:
        return self.wrong == 0

    def lines(self) -> list[str]:
        per_second = 1 / self.seconds if self.seconds else 0.0
        fallbacks = ", ".join(f"{k}={v}" for k, v in self.fallbacks.items() if v) or "none"
        return [
            f"threads: {self.threads}, {self.seconds:.2f} s",
            f"transactions: {self.transactions} ({self.transactions * per_second:,.0f}/s), "
            f"pages: {self.pages} ({self.pages * per_second:,.0f} pages/s, "
            f"{self.pages * PAGE_SIZE * per_second / 1e6:,.1f} MB/s)",
            f"commit latency: p50 {self.latency_p50_ms:.3f} ms, p99 {self.latency_p99_ms:.3f} ms",
            f"epochs: {self.epochs}, fallbacks: {fallbacks}",
            f"checkpoints while committing: {self.checkpoints} ({self.checkpoint_seconds:.2f} s); "
            f"read overlay limit {self.overlay_limit_bytes / (1 << 20):,.0f} MiB",
            f"final checkpoint: {self.final_checkpoint_pages} pages in "
            f"{self.final_checkpoint_seconds:.3f} s; reopen {self.reopen_seconds:.3f} s",
            f"verified {self.pages_verified} pages against the oracle after reopening: "
            f"{self.wrong} wrong",
        ]


def run_demo(
    directory: str,
    *,
    threads: int,
    seconds: float,
    config: WalConfig,
    say: Callable[[str], None] | None = None,
    transactions: int | None = None,
) -> DemoReport:
    """Run transactions from ``threads`` threads for ``seconds``, checkpoint, close, reopen
    and verify every page. ``say`` (default: print and flush) gets the first line once the
    threads are committing. ``transactions``, if given, ends the run sooner, once that many
    have committed: a fixed amount of work, whatever the machine's speed.

    Raises ``FileExistsError`` (one line naming the files and the way out) if ``directory``
    already holds a demo store; nothing is changed then. A ``KeyboardInterrupt`` stops the
    workers after their current transaction, closes the store and propagates.
    """
    if say is None:
        say = functools.partial(print, flush=True)
    os.makedirs(directory, exist_ok=True)
    db_path = os.path.join(directory, DB_NAME)
    existing = existing_store(directory)
    if existing:
        raise FileExistsError(
            f"{directory} already holds a demo store ({', '.join(existing)}) and the demo never "
            "overwrites one: give it another directory (pagewal demo OTHER_DIR), or remove "
            "those files yourself")
    pool = [bytes(row) for row in np.random.default_rng(1).integers(
        0, 256, size=(POOL_SIZE, PAGE_SIZE), dtype=np.uint8)]

    committed: list[list[tuple[int, dict[int, int]]]] = [[] for _ in range(threads)]
    latencies: list[list[float]] = [[] for _ in range(threads)]
    start = threading.Barrier(threads + 1)
    # Set early by Ctrl-C, or once ``transactions`` have committed: workers finish their
    # transaction and end.
    stop = threading.Event()
    counted = itertools.count(1)
    with WalPager.open(db_path, PAGE_SIZE, config) as pager:
        deadline = 0.0

        def work(index: int) -> None:
            rng = random.Random(index)
            mine, times = committed[index], latencies[index]
            try:
                start.wait()
            except threading.BrokenBarrierError:
                return  # interrupted before the run began
            while time.perf_counter() < deadline and not stop.is_set():
                pages = {rng.randrange(PAGE_RANGE): rng.randrange(POOL_SIZE)
                         for _ in range(rng.randint(1, 4))}
                began = time.perf_counter()
                with pager.transaction() as tx:
                    tx.read(rng.randrange(PAGE_RANGE))  # a read-modify-write, as engines do
                    for page_no, image in pages.items():
                        tx.write(page_no, pool[image])
                times.append(time.perf_counter() - began)
                assert tx.ticket is not None
                mine.append((tx.ticket.commit_seq, pages))
                if transactions is not None and next(counted) >= transactions:
                    stop.set()

        workers = [threading.Thread(target=work, args=(i,), name=f"demo-{i}")
                   for i in range(threads)]
        started: list[threading.Thread] = []
        try:
            for worker in workers:
                worker.start()
                started.append(worker)
            began = time.perf_counter()
            deadline = began + seconds
            start.wait()
            say(f"store: {db_path} ({PAGE_SIZE}-byte pages; log mode {config.mode.value}, "
                f"{config.effective_lanes} lanes, fsync {config.fsync.value}, epoch "
                f"{config.epoch_interval_ms:g} ms, checkpoint every "
                f"{config.checkpoint_bytes / (1 << 20):,.0f} MiB)")
            for worker in workers:
                while worker.is_alive():
                    # Timed: the kernel may hand Ctrl-C to a worker thread, and only a main
                    # thread that wakes up runs Python's handler (an untimed join would sleep
                    # through it until the run ends).
                    worker.join(0.2)
        except BaseException:
            # Ctrl-C (KeyboardInterrupt lands in this thread): stop the workers and wait for
            # them before the pager closes, so none fails on a closed store mid-transaction.
            stop.set()
            start.abort()
            for worker in started:
                worker.join()
            raise
        elapsed = time.perf_counter() - began
        running = pager.statistics()
        assert running.wal is not None  # opened for writing
        final = pager.checkpoint()

    reopen_began = time.perf_counter()
    oracle: dict[int, bytes] = {}
    for _, pages in sorted(item for mine in committed for item in mine):
        oracle.update((page_no, pool[image]) for page_no, image in pages.items())
    with WalPager.open(db_path, PAGE_SIZE, config) as reopened:
        reopen_seconds = time.perf_counter() - reopen_began
        zero = bytes(PAGE_SIZE)
        wrong = sum(1 for page_no in range(PAGE_RANGE)
                    if reopened.read(page_no) != oracle.get(page_no, zero))
    all_latencies = np.array([t for times in latencies for t in times]) * 1000
    p50, p99 = (np.percentile(all_latencies, [50, 99]).tolist() if all_latencies.size
                else [0.0, 0.0])
    return DemoReport(
        threads=threads, seconds=elapsed, transactions=sum(len(m) for m in committed),
        pages=sum(len(p) for mine in committed for _, p in mine), latency_p50_ms=p50,
        latency_p99_ms=p99, epochs=running.wal.epochs_sealed,
        fallbacks=dict(running.wal.fallbacks), checkpoints=running.checkpoints,
        checkpoint_seconds=running.checkpoint_seconds_total,
        overlay_limit_bytes=running.overlay_limit_bytes,
        final_checkpoint_pages=final.pages_written, final_checkpoint_seconds=final.seconds,
        reopen_seconds=reopen_seconds, pages_verified=PAGE_RANGE, wrong=wrong,
    )


def existing_store(directory: str) -> list[str]:
    """The names of the demo store's files in ``directory``: ``demo.db`` and its log's files
    (log files, segments, checkpoint, lock, temporary and set-aside files). Other files,
    whatever their name, are not the demo's."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    log = list_log_files(DB_NAME, names)
    found = [name for _, name in (*log.log_files, *log.segments)]
    found += [*log.temporary, *log.quarantined]
    found += [name for name in (DB_NAME, log.checkpoint, log.lock) if name in names]
    return sorted(found)


def fresh_directory(base: str) -> str:
    """``base`` if it holds no demo store, else the first of ``base/run-2``, ``base/run-3``,
    ... that holds none: where a run without a directory argument goes, so running the demo
    again never touches an earlier run's store."""
    if not existing_store(base):
        return base
    for number in itertools.count(2):
        candidate = os.path.join(base, f"run-{number}")
        if not existing_store(candidate):
            return candidate
    raise AssertionError("unreachable")  # pragma: no cover
