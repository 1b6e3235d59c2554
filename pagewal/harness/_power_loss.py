"""Simulated power loss: run a workload on the simulated file system, then check every state a
power loss at any point of its operation log could leave.

For each state: recovery must succeed (with ``fsync=full`` a crash never corrupts a published
segment), every commit acknowledged before that point must be there with its exact bytes, no
partial or foreign commit may appear, the pages must equal a replay of commits 1..S, and a
reopened log must continue the chain.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Sequence

import attrs

from .._chain import RecoveryResult
from .._config import WalConfig
from .._errors import BrokenLogError, CorruptSegmentError
from .._recovery import recover
from .._stats import Ticket
from .._wal import Wal
from ._simfs import Fault, SimulatedFileSystem, crash_states
from ._workload import (
    SMALL_LOG_FILE,
    Report,
    commit_pages,
    crash_points,
    log_files_written,
    recycled_log_files,
    run_then_close,
    txn_id_for,
    verify,
)

DB_PATH = "/simulated/db"
_WAIT_SECONDS = 0.5
_TORN_REOPENS = 5


class AckTracker:
    """When did the log first claim each commit durable, in file-operation counts?

    Checked before every file operation, so an acknowledgement is placed before the first
    operation that followed it, however late the committing thread noticed.
    """

    def __init__(self, wal: Wal | None) -> None:
        self._wal = wal  # None: the log never opened (nothing is ever acknowledged)
        self._lock = threading.Lock()
        self._pending: dict[Ticket, int] = {}
        self._acked: list[tuple[int, int, int]] = []  # (op count, commit_seq, txn_id)

    def watch(self, ticket: Ticket, txn_id: int) -> None:
        with self._lock:
            self._pending[ticket] = txn_id

    def observe(self, op_count: int) -> None:
        with self._lock:
            wal = self._wal
            for ticket in [t for t in self._pending if wal is not None and wal.is_durable(t)]:
                self._acked.append((op_count, ticket.commit_seq, self._pending.pop(ticket)))

    @property
    def count(self) -> int:
        return len(self._acked)

    def acked_by(self, op_count: int) -> dict[int, int]:
        """commit_seq → txn_id of every commit acknowledged before op ``op_count`` + 1."""
        return {seq: txn for at, seq, txn in self._acked if at <= op_count}


@attrs.frozen(kw_only=True)
class PowerLossReport(Report):
    """Figures of one search. ``violations`` holds the first few, ``violation_count`` all."""

    operations: int
    crash_points: int
    states: int
    acked_commits: int
    acked_verified: int
    lost: int
    partial: int
    recovery_failures: int
    reopened: int
    broken_log: bool
    workload: str = "wal"
    broken_reason: str = ""  # what the log said when it broke
    log_files: int = 0  # log files that received segments
    recycled: int = 0  # times a covered log file was recycled under a new number

    def summary(self) -> list[str]:
        """The figures, one line each."""
        return [
            f"power loss ({self.workload}): seed {self.seed}, {self.operations} file operations, "
            f"{self.crash_points} crash points, {self.states} crash states tried; segments in "
            f"{self.log_files} log files, {self.recycled} recycled",
            f"  acked commits {self.acked_commits}, verified {self.acked_verified} times across "
            f"states; lost = {self.lost}, partial = {self.partial}, recovery failures = "
            f"{self.recovery_failures}, reopened and continued {self.reopened}"
            + (f", log broke: {self.broken_reason}" if self.broken_log else ""),
        ]


def default_config() -> WalConfig:
    """Small lanes and a short epoch: many epochs, overflow onto the serialized path. The
    smallest log files (64 KiB): they fill and the log moves on to the next ones."""
    return WalConfig(lanes=2, epoch_interval_ms=1, lane_capacity_bytes=8192, fsync="full",
                     log_file_bytes=SMALL_LOG_FILE)


def run_power_loss(
    *,
    seed: int,
    threads: int = 3,
    commits_per_thread: int = 12,
    config: WalConfig | None = None,
    wal_class: type[Wal] = Wal,
    faults: Sequence[Fault] = (),
    max_states: int | None = None,
    max_points: int | None = None,
    reopen_every: int = 50,
    torn_samples: int = 2,
) -> PowerLossReport:
    """Run the workload once, then check crash states (all points, or ``max_points`` sampled).

    Reproducible from ``seed`` given the same operation log; thread scheduling may vary the log
    between runs, so a violation's description names the operation count and the state.
    """
    config = config or default_config()
    rng = random.Random(seed)
    fs = SimulatedFileSystem(faults=faults)
    broken: str | None = None
    try:
        opened: Wal | None = wal_class.open(DB_PATH, config, fs=fs)
    except OSError as error:
        # Opening makes the first log file ready and durable: a fault there refuses the
        # open (failing closed, nothing acknowledged); every crash state is still checked.
        if not faults:
            raise
        opened, broken = None, f"open refused: {error}"
    acks = AckTracker(opened)
    fs.before_op = acks.observe

    def writer(index: int) -> None:
        nonlocal broken
        for counter in range(commits_per_thread):
            txn = txn_id_for(0, index, counter)
            try:
                ticket = wal.submit(commit_pages(seed, txn), txn_id=txn)
                acks.watch(ticket, txn)
                # The real log is waited on as users do (no timeout: committers may lead);
                # a broken variant may wedge an epoch, so its writers give up and go on.
                wal.wait_durable(ticket, timeout=None if wal_class is Wal else _WAIT_SECONDS)
            except BrokenLogError as error:
                broken = str(error)
                return
            except TimeoutError:
                continue  # unacknowledged; go on so a later epoch can follow a stuck one
            acks.observe(fs.op_count())

    if opened is not None:
        wal = opened
        broken = run_then_close(writer, threads, wal.close) or broken
    acks.observe(fs.op_count())

    points = crash_points(len(fs.ops), max_points, rng)
    figures = dict.fromkeys(("states", "verified", "lost", "partial", "failures", "reopened",
                             "torn_reopened"), 0)
    violations: list[str] = []
    for count, description, state in crash_states(fs.initial, fs.ops, points=points, rng=rng,
                                                  torn_samples=torn_samples):
        if max_states is not None and figures["states"] >= max_states:
            break
        figures["states"] += 1
        where = f"seed {seed}, crash after op {count}/{len(fs.ops)} ({description})"
        acked = acks.acked_by(count)
        state_fs = SimulatedFileSystem(state)
        try:
            result = recover(DB_PATH, fs=state_fs)
        except CorruptSegmentError as error:
            figures["failures"] += 1
            violations.append(f"{where}: recovery failed: {error}")
            continue
        verdict = verify(result, seed=seed, acked=acked)
        figures["verified"] += verdict.acked_verified
        figures["lost"] += verdict.lost
        figures["partial"] += verdict.partial
        violations.extend(f"{where}: {v}" for v in verdict.violations)
        # Reopen every so often, and the first few times the log ended in a torn tail.
        torn = result.torn_tail is not None and figures["torn_reopened"] < _TORN_REOPENS
        if not verdict.violations and (figures["states"] % reopen_every == 0 or torn):
            figures["torn_reopened"] += torn
            figures["reopened"] += 1
            violations.extend(f"{where}: after reopen: {v}"
                              for v in _reopen_and_continue(
                                  state_fs, config, seed, result,
                                  wal_class if getattr(wal_class, "REOPENS_AS_ITSELF", False)
                                  else Wal))
    return PowerLossReport(
        seed=seed, operations=len(fs.ops),
        crash_points=len(fs.ops) + 1 if points is None else len(points), states=figures["states"],
        acked_commits=acks.count, acked_verified=figures["verified"], lost=figures["lost"],
        partial=figures["partial"], recovery_failures=figures["failures"],
        reopened=figures["reopened"], broken_log=broken is not None,
        broken_reason=broken or "", violation_count=len(violations),
        violations=Report.kept(violations), log_files=log_files_written(fs.ops),
        recycled=recycled_log_files(fs.ops),
    )


def _reopen_and_continue(
    fs: SimulatedFileSystem, config: WalConfig, seed: int, before: RecoveryResult,
    wal_class: type[Wal] = Wal,
) -> list[str]:
    """Open the crashed state, commit once more, and check the chain continues."""
    txn = txn_id_for(1, 0, 0)
    with wal_class.open(DB_PATH, config, fs=fs) as wal:
        ticket = wal.commit(commit_pages(seed, txn), txn_id=txn, timeout=60)
    if ticket.commit_seq != before.last_commit_seq + 1:
        return [f"reopened log assigned seq {ticket.commit_seq}, expected "
                f"{before.last_commit_seq + 1}"]
    after = recover(DB_PATH, fs=fs)
    if after.last_commit_seq != ticket.commit_seq:
        return [f"recovery after reopen ends at {after.last_commit_seq}, not {ticket.commit_seq}"]
    problems = list(verify(after, seed=seed, acked={ticket.commit_seq: txn}).violations)
    # DESIGN §4: after a crash the log never appends to the file it was writing; a fresh
    # file's header is what durably discards the torn tail beyond the end.
    scan, written = before.log_scan, after.log_scan
    if (scan is not None and not scan.clean_shutdown and scan.end is not None
            and written is not None and written.segments
            and written.segments[-1].path == scan.end.path):
        problems.append(f"the reopened log appended to {scan.end.path}, the file it ended in "
                        f"after a crash (at offset {scan.end.offset}), not to a fresh file")
    return problems
