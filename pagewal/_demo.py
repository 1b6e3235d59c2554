"""``pagewal demo``: many threads commit random pages, then recovery proves none was lost.

The demo is an end-to-end check a user can run on their own machine and configuration: every
acknowledged commit must come back from disk with exactly its bytes, and the recovered page
state must equal a replay of the acknowledged commits in commit_seq order.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable

import attrs
import numpy as np

from ._config import WalConfig
from ._recovery import LogFiles, recover
from ._wal import Wal

PAGE_SIZE = 4096
PAGE_RANGE = 10_000
POOL_SIZE = 64


@attrs.frozen
class DemoReport:
    """What a demo run did and found."""

    threads: int
    seconds: float
    commits: int
    pages: int
    latency_p50_ms: float
    latency_p99_ms: float
    epochs: int
    fallbacks: dict[str, int]
    recovered_commits: int
    lost: int
    wrong: int

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.wrong == 0

    def lines(self) -> list[str]:
        rate = self.commits / self.seconds if self.seconds else 0.0
        fallbacks = ", ".join(f"{k}={v}" for k, v in self.fallbacks.items() if v) or "none"
        return [
            f"threads: {self.threads}, {self.seconds:.2f} s",
            f"commits: {self.commits} ({rate:,.0f} commits/s), pages: {self.pages} "
            f"({self.pages / self.seconds if self.seconds else 0.0:,.0f} pages/s)",
            f"commit latency: p50 {self.latency_p50_ms:.3f} ms, p99 {self.latency_p99_ms:.3f} ms",
            f"epochs: {self.epochs}, fallbacks: {fallbacks}",
            f"recovered {self.recovered_commits} commits, {self.lost} lost"
            + (f", {self.wrong} with wrong bytes" if self.wrong else ""),
        ]


def run_demo(
    directory: str,
    *,
    threads: int,
    seconds: float,
    config: WalConfig,
    say: Callable[[str], None] = print,
) -> DemoReport:
    """Commit from ``threads`` threads for ``seconds``, close, recover and verify."""
    os.makedirs(directory, exist_ok=True)
    db_path = os.path.join(directory, "demo.db")
    _remove_old_log(LogFiles.for_db(db_path))
    pool = [bytes(row) for row in np.random.default_rng(1).integers(
        0, 256, size=(POOL_SIZE, PAGE_SIZE), dtype=np.uint8)]
    say(f"log: {db_path} (mode {config.mode.value}, {config.effective_lanes} lanes, "
        f"fsync {config.fsync.value}, epoch {config.epoch_interval_ms:g} ms)")

    acked: list[list[tuple[int, list[tuple[int, int]]]]] = [[] for _ in range(threads)]
    latencies: list[list[float]] = [[] for _ in range(threads)]
    start = threading.Barrier(threads + 1)
    with Wal.open(db_path, config) as wal:
        deadline = 0.0

        def work(index: int) -> None:
            rng = random.Random(index)
            mine, times = acked[index], latencies[index]
            start.wait()
            while time.perf_counter() < deadline:
                pages = [(rng.randrange(PAGE_RANGE), rng.randrange(POOL_SIZE))
                         for _ in range(rng.randint(1, 4))]
                began = time.perf_counter()
                ticket = wal.commit([(page_no, pool[image]) for page_no, image in pages])
                times.append(time.perf_counter() - began)
                mine.append((ticket.commit_seq, pages))

        workers = [threading.Thread(target=work, args=(i,), name=f"demo-{i}")
                   for i in range(threads)]
        for worker in workers:
            worker.start()
        began = time.perf_counter()
        deadline = began + seconds
        start.wait()
        for worker in workers:
            worker.join()
        elapsed = time.perf_counter() - began
        stats = wal.statistics()

    commits = {seq: pages for mine in acked for seq, pages in mine}
    result = recover(db_path)
    recovered: dict[int, list[tuple[int, bytes]]] = {}
    for record in result.iter_records():
        recovered.setdefault(record.commit_seq, []).append((record.page_no, record.image))
    lost = sum(1 for seq in commits if seq not in recovered)
    wrong = sum(1 for seq, pages in commits.items() if seq in recovered
                and recovered[seq] != [(p, pool[i]) for p, i in pages])
    oracle: dict[int, bytes] = {}
    for seq in sorted(commits):
        oracle.update((p, pool[i]) for p, i in commits[seq])
    if result.last_commit_seq == max(commits, default=0) and result.page_images() != oracle:
        wrong += 1
    all_latencies = np.array([t for times in latencies for t in times]) * 1000
    p50, p99 = (np.percentile(all_latencies, [50, 99]).tolist() if all_latencies.size
                else [0.0, 0.0])
    return DemoReport(
        threads=threads, seconds=elapsed, commits=len(commits),
        pages=sum(len(p) for p in commits.values()), latency_p50_ms=p50, latency_p99_ms=p99,
        epochs=stats.epochs_sealed, fallbacks=dict(stats.fallbacks),
        recovered_commits=result.commit_count, lost=lost, wrong=wrong,
    )


def _remove_old_log(files: LogFiles) -> None:
    prefix = files.db_name + "-wal-"
    for name in os.listdir(files.directory):
        if name.startswith(prefix):
            os.unlink(files.path(name))
