"""Real process crashes: a writer child is killed with SIGKILL at random moments.

The child (``python -m pagewal.harness._kill child …``) commits from many threads and reports
each commit on its standard output only *after* it is acknowledged, one line per ack written
with a single ``write`` (atomic on a pipe). The parent kills it at a random moment, recovers
the directory, verifies every acknowledged commit and the whole recovered state (each commit is
regenerated from its txn_id), and starts the next child on the recovered log.

Workloads are pluggable: :data:`WORKLOADS` maps a name to a function that runs in the child.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping

import attrs

from .._config import WalConfig
from .._errors import CorruptSegmentError
from .._recovery import recover
from .._wal import Wal
from ._workload import Report, commit_pages, txn_id_for, verify

_READY = "READY"


def _wal_workload(db_path: str, *, seed: int, run: int, threads: int,
                  report: Callable[[int, int], None]) -> None:
    """Commit deterministic commits from ``threads`` threads until killed."""
    with Wal.open(db_path, WalConfig.from_env()) as wal:
        print(_READY, flush=True)

        def writer(index: int) -> None:
            for counter in range(1 << 24):
                txn = txn_id_for(run, index, counter)
                ticket = wal.commit(commit_pages(seed, txn), txn_id=txn)
                report(ticket.commit_seq, txn)

        workers = [threading.Thread(target=writer, args=(i,), daemon=True)
                   for i in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()


WORKLOADS: dict[str, Callable[..., None]] = {"wal": _wal_workload}
"""Child workloads by name. Each gets ``(db_path, seed=, run=, threads=, report=)`` and reports
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

    WORKLOADS[args.workload](args.db_path, seed=args.seed, run=args.run, threads=args.threads,
                             report=report)


@attrs.frozen(kw_only=True)
class KillReport(Report):
    kills: int
    acked_commits: int
    acked_verified: int
    recovered_commits: int
    lost: int
    partial: int

    def summary(self) -> list[str]:
        return [
            f"kill -9: seed {self.seed}, {self.kills} kills, acked commits "
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
    for run in range(kills):
        db_path = os.path.join(directory, f"crash-{run // kills_per_log}.db")
        if run % kills_per_log == 0:
            acked = {}
        lines = _run_child_until_killed(db_path, seed=seed, run=run, threads=threads,
                                        workload=workload, delay=rng.uniform(0, max_delay),
                                        env=env)
        for line in lines:
            _, seq, txn = line.split()
            acked[int(seq)] = int(txn)
        figures["acked"] += len(lines)
        where = f"seed {seed}, after kill {run + 1}"
        try:
            result = recover(db_path)
        except CorruptSegmentError as error:
            violations.append(f"{where}: recovery failed: {error}")
            break
        verdict = verify(result, seed=seed, acked=acked)
        figures["verified"] += verdict.acked_verified
        figures["lost"] += verdict.lost
        figures["partial"] += verdict.partial
        recovered[db_path] = verdict.recovered_commits
        violations.extend(f"{where}: {v}" for v in verdict.violations)
        if after_each is not None:
            after_each()
    return KillReport(seed=seed, kills=kills, acked_commits=figures["acked"],
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

    reader = threading.Thread(target=read)
    reader.start()
    ready.wait(timeout=60)
    if child.poll() is None:
        time.sleep(delay)  # a random moment of the child's work; no assertion depends on it
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
