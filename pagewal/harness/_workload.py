"""Deterministic commits and the verdict on a recovered log.

Every commit the harness makes is a pure function of ``(seed, txn_id)``, and its ``txn_id``
is stored in each record. So any recovered commit, acknowledged or not, can be regenerated and
compared byte for byte, even after a ``kill -9`` lost the report of it.
"""

from __future__ import annotations

import contextlib
import random
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from .._chain import RecoveryResult
from .._config import WalConfig
from .._errors import BrokenLogError
from .._fs import FileSystem
from .._layout import LogFiles
from .._logfiles import LogFileSpec, OpenLogFile, ReadyFilePool
from .._wal import Wal
from .._writer import LogWriter
from ._simfs import Op

_MAX_REPORTED = 20
PAGE_RANGE = 48  # few pages, so later commits overwrite earlier ones and order matters
MAX_IMAGE = 1500
SMALL_LOG_FILE = 64 << 10
"""The smallest log file a config allows: workloads fill files, roll over and recycle them."""


def run_writers(writer: Callable[[int], None], threads: int, *, daemon: bool = True) -> None:
    """Run ``writer(0) .. writer(threads - 1)`` in threads and wait for all of them.

    Daemon threads by default: a writer wedged by a broken variant must not keep the process
    alive after an interrupt or a test timeout abandoned the wait."""
    workers = [threading.Thread(target=writer, args=(i,), daemon=daemon) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


def run_then_close(
    writer: Callable[[int], None], threads: int, close: Callable[[], None]
) -> str | None:
    """Run the writers, then ``close`` the log or pager; why closing said it was broken, or
    None."""
    run_writers(writer, threads)
    try:
        close()
    except BrokenLogError as error:
        return str(error)
    return None


def crash_points(op_count: int, max_points: int | None, rng: random.Random) -> Sequence[int] | None:
    """Which op counts to crash at: all (``None``), or ``max_points`` of them sampled."""
    total = op_count + 1
    if max_points is None or max_points >= total:
        return None
    return sorted(rng.sample(range(total), max_points))


def txn_id_for(run: int, writer: int, counter: int) -> int:
    """A txn_id unique across runs (restarts), writers and commits."""
    return (run << 40) | (writer << 24) | counter


def commit_pages(seed: int, txn_id: int) -> list[tuple[int, bytes]]:
    """The pages of commit ``txn_id``: 1..4 pages with pseudo-random numbers and bytes."""
    rng = random.Random(f"{seed}:{txn_id}")
    return [(rng.randrange(PAGE_RANGE), rng.randbytes(rng.randint(1, MAX_IMAGE)))
            for _ in range(rng.randint(1, 4))]


@attrs.frozen(kw_only=True)
class Report:
    """What every campaign reports: its seed and the violations it found (the first few are
    kept in full; ``violation_count`` counts all)."""

    seed: int
    violation_count: int
    violations: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return self.violation_count == 0

    def summary(self) -> list[str]:
        """The figures, one line each."""
        raise NotImplementedError

    def lines(self) -> list[str]:
        return [*self.summary(), *(f"  VIOLATION {v}" for v in self.violations)]

    @staticmethod
    def kept(violations: list[str]) -> tuple[str, ...]:
        return tuple(violations[:_MAX_REPORTED])


@attrs.frozen
class Verdict:
    """What one recovered state showed. ``violations`` empty means the promise held."""

    recovered_commits: int
    acked_verified: int
    lost: int
    partial: int
    violations: tuple[str, ...]


def verify(result: RecoveryResult, *, seed: int, acked: Mapping[int, int]) -> Verdict:
    """Check a recovery against the promise.

    ``acked`` maps each acknowledged commit_seq to its txn_id. Every acked commit must be
    present with exactly its bytes; every recovered commit must be exactly the commit its
    txn_id names (no partial or foreign commit); and the recovered pages must equal a replay
    of the recovered commits 1..S in commit_seq order.
    """
    violations: list[str] = []
    commits: dict[int, tuple[int, list[tuple[int, bytes]]]] = {}
    for record in result.iter_records():
        txn, pages = commits.setdefault(record.commit_seq, (record.txn_id, []))
        if record.txn_id != txn:
            violations.append(f"commit {record.commit_seq} mixes txn {txn} and {record.txn_id}")
        pages.append((record.page_no, record.image))
    expected_seqs = list(range(result.base.commit_seq + 1, result.last_commit_seq + 1))
    if sorted(commits) != expected_seqs:
        violations.append(f"recovered commit seqs are not dense 1..{result.last_commit_seq}")
    partial = 0
    oracle: dict[int, bytes] = {}
    for seq in sorted(commits):
        txn, pages = commits[seq]
        expected = commit_pages(seed, txn)
        if pages != expected:
            partial += 1
            violations.append(f"commit {seq} (txn {txn:#x}) is not exactly the commit made: "
                              f"{len(pages)} of {len(expected)} pages, or other bytes")
        oracle.update(expected)
    lost = 0
    verified = 0
    for seq, txn in sorted(acked.items()):
        if seq not in commits:
            lost += 1
            violations.append(f"acknowledged commit {seq} (txn {txn:#x}) is missing")
        elif commits[seq][0] != txn:
            lost += 1
            violations.append(f"acknowledged commit {seq} holds txn {commits[seq][0]:#x}, "
                              f"not {txn:#x}")
        else:
            verified += 1
    if not violations and result.page_images() != oracle:
        violations.append("recovered pages differ from a replay of commits 1..S in seq order")
    return Verdict(recovered_commits=len(commits), acked_verified=verified, lost=lost,
                   partial=partial, violations=tuple(violations))


class _PromptlyRecyclingPool(ReadyFilePool):
    """A pool to which covered files come back just as the writer takes the next ready one.

    The pool recycles a file handed back only when it has no file ready (otherwise it deletes
    it), and it makes the next file ready as soon as one is taken, so which happens depends on
    thread timing. This pool holds files handed back until the next :meth:`take` and hands
    them over in the same step that empties the ready list: the pool's thread then always
    recycles (a new number and salt over old segments), the case the harness must search.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._parked: list[tuple[str, int | None]] = []
        super().__init__(*args, **kwargs)

    def recycle(self, files: Sequence[tuple[str, int | None]]) -> None:
        with self._cv:
            self._parked.extend(files)

    def take(self, *, counted: bool = True) -> OpenLogFile:
        with self._cv:
            if self._parked and self._ready and self._error is None:
                taken = self._ready.pop(0)
                self._retired.extend(self._parked)
                self._parked = []
                self._cv.notify_all()
                return taken
        return super().take(counted=counted)

    def close(self) -> None:
        # Files still held are handed over with the ready ones set aside (they stay on disk,
        # READY, for the next open): the pool's thread recycles them before it stops.
        with self._cv:
            if self._parked and self._error is None:
                for spare in self._ready:
                    with contextlib.suppress(OSError):
                        self._fs.close(spare.fd)
                self._ready = []
                self._retired.extend(self._parked)
                self._parked = []
                self._cv.notify_all()
        super().close()


class _RecyclingLogWriter(LogWriter):
    def _new_pool(self, fs: FileSystem, spec: LogFileSpec, next_file_no: int,
                  ready: Sequence[OpenLogFile]) -> ReadyFilePool:
        return _PromptlyRecyclingPool(fs, spec, next_file_no, ready=ready)


class RecyclingWal(Wal):
    """The log, with covered files recycled whenever a checkpoint hands them back (see
    :class:`_PromptlyRecyclingPool`); on disk and in every rule it is the log itself."""

    def _new_writer(self, fs: FileSystem, files: LogFiles, config: WalConfig,
                    recovery: RecoveryResult) -> LogWriter:
        return _RecyclingLogWriter(fs, files, config, recovery)


def recycled_log_files(ops: Sequence[Op]) -> int:
    """How many times a log file was recycled (renamed from one log file name to another) in
    an operation log."""
    return sum(1 for op in ops if op.kind == "rename" and "-wal-" in op.path
               and not op.path.endswith(".tmp") and "-wal-" in op.target)


def log_files_written(ops: Sequence[Op], alignment: int = 4096) -> int:
    """How many distinct log files received a segment (a write past the file header)."""
    return len({op.inode for op in ops if op.kind == "write" and op.offset >= alignment
                and "-wal-" in op.path})
