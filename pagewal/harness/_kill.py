"""Real process crashes: a writer child is killed with SIGKILL at random moments.

The child (``python -m pagewal.harness._kill child …``) commits from many threads and reports
each commit on its standard output only *after* it is acknowledged, one line per ack written
with a single ``write`` (atomic on a pipe). The parent kills it at a random moment, recovers
the directory, verifies every acknowledged commit and the whole recovered state (each commit is
regenerated from its txn_id), and starts the next child on the recovered log.

Workloads are pluggable: :data:`WORKLOADS` maps a name to a function that runs in the child and
the checker that verifies the store after each kill (``wal``: the log; ``pager``: a
:class:`WalPager` with checkpoints running, verified page by page).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Protocol

import attrs

from .._config import WalConfig
from .._errors import CorruptSegmentError
from .._pager import WalPager
from .._recovery import recover
from .._wal import Wal
from ._workload import (
    SMALL_LOG_FILE,
    Report,
    Verdict,
    commit_pages,
    run_writers,
    txn_id_for,
    verify,
)

_READY = "READY"


def _wal_workload(db_path: str, *, seed: int, run: int, threads: int,
                  report: Callable[[int, int], None]) -> None:
    """Commit deterministic commits from ``threads`` threads until killed."""
    with Wal.open(db_path, WalConfig.from_env(log_file_bytes=SMALL_LOG_FILE)) as wal:
        print(_READY, flush=True)

        def writer(index: int) -> None:
            for counter in range(1 << 24):
                txn = txn_id_for(run, index, counter)
                ticket = wal.commit(commit_pages(seed, txn), txn_id=txn)
                report(ticket.commit_seq, txn)

        run_writers(writer, threads, daemon=True)


def _pager_workload(db_path: str, *, seed: int, run: int, threads: int,
                    report: Callable[[int, int], None]) -> None:
    """Transactions on a :class:`WalPager` with checkpoints running, until killed. Thread
    ``i`` writes only pages of its own region, so each region's state is a replay of a prefix
    of that thread's transactions whatever the interleaving."""
    config = WalConfig.from_env(checkpoint_bytes=_PAGER_CHECKPOINT_BYTES,
                                log_file_bytes=SMALL_LOG_FILE)
    with WalPager.open(db_path, _PAGER_PAGE_SIZE, config) as pager:
        print(_READY, flush=True)

        def writer(index: int) -> None:
            for counter in range(1 << 24):
                txn = txn_id_for(run, index, counter)
                with pager.transaction(txn_id=txn) as tx:
                    for page_no, data in _region_pages(seed, txn, index).items():
                        tx.write(page_no, data)
                assert tx.ticket is not None
                report(tx.ticket.commit_seq, txn)
                if index == 0 and counter % 50 == 49:
                    pager.checkpoint()  # requested checkpoints, beside the automatic ones

        run_writers(writer, threads, daemon=True)


_PAGER_PAGE_SIZE = 1024
_PAGER_CHECKPOINT_BYTES = 256 << 10
_REGION = 16  # pages per writer thread


def _region_pages(seed: int, txn_id: int, writer: int) -> dict[int, bytes]:
    """Transaction ``txn_id`` of ``writer``: 1..3 pages of its region, each stamped with the
    txn_id and page number so any recovered page names the transaction that wrote it."""
    rng = random.Random(f"region:{seed}:{txn_id}")
    pages = {}
    for _ in range(rng.randint(1, 3)):
        page_no = writer * _REGION + rng.randrange(_REGION)
        stamp = struct.pack("<QI", txn_id, page_no)
        pages[page_no] = stamp + rng.randbytes(_PAGER_PAGE_SIZE - len(stamp))
    return pages


class _Checker(Protocol):
    def check(self, db_path: str, acked: dict[int, int], run: int) -> Verdict:
        """Verify the store after a kill, given the commits acknowledged in this log so far."""


class _WalChecker:
    """The log: recover, then every acknowledged commit must be there, byte for byte."""

    def __init__(self, seed: int, threads: int) -> None:
        self._seed = seed

    def check(self, db_path: str, acked: dict[int, int], run: int) -> Verdict:
        return verify(recover(db_path), seed=self._seed, acked=acked)


class _PagerChecker:
    """The pager: reopen, then each writer's region must equal a replay of that writer's
    transactions up to the newest one visible, and every acknowledged one must be within it."""

    def __init__(self, seed: int, threads: int) -> None:
        self._seed = seed
        self._threads = threads
        self._history: list[list[int]] = [[] for _ in range(threads)]  # durable txns per writer

    def check(self, db_path: str, acked: dict[int, int], run: int) -> Verdict:
        config = WalConfig.from_env(checkpoint_bytes=_PAGER_CHECKPOINT_BYTES,
                                log_file_bytes=SMALL_LOG_FILE)
        with WalPager.open(db_path, _PAGER_PAGE_SIZE, config) as pager:
            regions = [[pager.read(page_no) for page_no in range(i * _REGION, (i + 1) * _REGION)]
                       for i in range(self._threads)]
            recovered = pager.wal.durable_position.commit_seq
        violations: list[str] = []
        lost = partial = verified = 0
        acked_by_writer: dict[int, list[int]] = {}
        for txn in acked.values():
            acked_by_writer.setdefault((txn >> 24) & 0xFFFF, []).append(txn)
        for writer, region in enumerate(regions):
            newest = max((struct.unpack_from("<Q", page)[0] for page in region if any(page)),
                         default=0)
            history = self._history[writer]
            if (newest >> 40) == run:  # this run's transactions 0..counter all happened
                counter = newest & 0xFFFFFF
                history.extend(txn_id_for(run, writer, c) for c in range(counter + 1))
            elif newest != (history[-1] if history else 0):
                violations.append(f"writer {writer}: newest page is txn {newest:#x}, not one "
                                  "of this run nor the last one recovered before")
                continue
            newest_known = history[-1] if history else 0
            for txn in acked_by_writer.get(writer, []):
                if txn > newest_known:
                    lost += 1
                    violations.append(f"acknowledged txn {txn:#x} of writer {writer} is missing")
                else:
                    verified += 1
            expected: dict[int, bytes] = {}
            for txn in history:
                expected.update(_region_pages(self._seed, txn, writer))
            zero = bytes(_PAGER_PAGE_SIZE)
            wrong = [writer * _REGION + i for i, page in enumerate(region)
                     if page != expected.get(writer * _REGION + i, zero)]
            if wrong:
                partial += 1
                violations.append(f"writer {writer}: pages {wrong} differ from a replay of its "
                                  f"transactions up to {newest_known:#x}")
        return Verdict(recovered_commits=recovered, acked_verified=verified, lost=lost,
                       partial=partial, violations=tuple(violations))


WORKLOADS: dict[str, tuple[Callable[..., None], Callable[[int, int], _Checker]]] = {
    "wal": (_wal_workload, _WalChecker),
    "pager": (_pager_workload, _PagerChecker),
}
"""Child workloads by name, with the checker that verifies their store after each kill. Each
workload gets ``(db_path, seed=, run=, threads=, report=)`` and reports
``report(commit_seq, txn_id)`` after each acknowledgement."""


def _child(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("db_path")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--run", type=int, required=True)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--workload", default="wal", choices=sorted(WORKLOADS))
    args = parser.parse_args(argv)
    lock = threading.Lock()

    def report(commit_seq: int, txn_id: int) -> None:
        line = f"A {commit_seq} {txn_id}\n".encode()
        with lock:
            os.write(1, line)  # one write per line: the parent never sees half a report

    workload, _ = WORKLOADS[args.workload]
    workload(args.db_path, seed=args.seed, run=args.run, threads=args.threads, report=report)


@attrs.frozen(kw_only=True)
class KillReport(Report):
    kills: int
    workload: str
    acked_commits: int
    acked_verified: int
    recovered_commits: int
    lost: int
    partial: int

    def summary(self) -> list[str]:
        return [
            f"kill -9 ({self.workload}): seed {self.seed}, {self.kills} kills, acked commits "
            f"{self.acked_commits} (verified {self.acked_verified} times), recovered "
            f"{self.recovered_commits} commits; lost = {self.lost}, partial = {self.partial}",
        ]


def run_kill_campaign(
    directory: str,
    *,
    seed: int,
    kills: int,
    threads: int = 8,
    workload: str = "wal",
    max_delay: float = 0.4,
    env: Mapping[str, str] | None = None,
    kills_per_log: int = 20,
    after_each: Callable[[], None] | None = None,
) -> KillReport:
    """Kill ``kills`` children at random moments, verifying the log after each.

    Each log lives through ``kills_per_log`` kills and restarts, then a fresh one begins, so
    the cost of verifying the whole log after every kill stays bounded. ``after_each`` is
    called after each kill is verified (progress reporting).
    """
    rng = random.Random(seed)
    acked: dict[int, int] = {}
    violations: list[str] = []
    figures = dict.fromkeys(("acked", "verified", "lost", "partial"), 0)
    recovered: dict[str, int] = {}  # commits in each log, as last recovered
    _, make_checker = WORKLOADS[workload]
    checker = make_checker(seed, threads)
    for run in range(kills):
        db_path = os.path.join(directory, f"crash-{run // kills_per_log}.db")
        if run % kills_per_log == 0:
            acked = {}
            checker = make_checker(seed, threads)
        lines = _run_child_until_killed(db_path, seed=seed, run=run, threads=threads,
                                        workload=workload, delay=rng.uniform(0, max_delay),
                                        env=env)
        for line in lines:
            _, seq, txn = line.split()
            acked[int(seq)] = int(txn)
        figures["acked"] += len(lines)
        where = f"seed {seed}, {workload}, after kill {run + 1}"
        try:
            verdict = checker.check(db_path, acked, run)
        except CorruptSegmentError as error:
            violations.append(f"{where}: recovery failed: {error}")
            break
        figures["verified"] += verdict.acked_verified
        figures["lost"] += verdict.lost
        figures["partial"] += verdict.partial
        recovered[db_path] = verdict.recovered_commits
        violations.extend(f"{where}: {v}" for v in verdict.violations)
        if after_each is not None:
            after_each()
    return KillReport(seed=seed, kills=kills, workload=workload, acked_commits=figures["acked"],
                      acked_verified=figures["verified"], recovered_commits=sum(recovered.values()),
                      lost=figures["lost"], partial=figures["partial"],
                      violation_count=len(violations), violations=Report.kept(violations))


def _run_child_until_killed(
    db_path: str, *, seed: int, run: int, threads: int, workload: str, delay: float,
    env: Mapping[str, str] | None,
) -> list[str]:
    """Start a child, SIGKILL it ``delay`` seconds after it is ready; return its ack lines."""
    command = [sys.executable, "-m", "pagewal.harness._kill", "child", db_path, "--seed",
               str(seed), "--run", str(run), "--threads", str(threads), "--workload", workload]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env=None if env is None else dict(env))
    assert child.stdout is not None and child.stderr is not None
    acks: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert child.stdout is not None
        for raw in child.stdout:
            line = raw.decode()
            if line.startswith("A ") and line.endswith("\n"):
                acks.append(line)
            elif line.strip() == _READY:
                ready.set()
        ready.set()  # the child ended (or died) before or after getting ready

    reader = threading.Thread(target=read, daemon=True)
    try:
        reader.start()
        ready.wait(timeout=60)  # a child slower to start is killed anyway, with fewer acks
        if child.poll() is None:
            time.sleep(delay)  # a random moment of the child's work; no assertion depends on it
    finally:
        # Whatever happened here (an interrupt, a test timeout), the child does not outlive it.
        if child.poll() is None:
            child.send_signal(signal.SIGKILL)
        child.wait()
        reader.join()
        stderr = child.stderr.read().decode()
        child.stderr.close()
        child.stdout.close()
    if child.returncode != -signal.SIGKILL:
        raise RuntimeError(f"writer child exited with {child.returncode} before it was killed:"
                           f"\n{stderr}")
    return acks


if __name__ == "__main__":
    if sys.argv[1:2] != ["child"]:
        sys.exit("usage: python -m pagewal.harness._kill child DB_PATH --seed N --run N")
    _child(sys.argv[2:])
