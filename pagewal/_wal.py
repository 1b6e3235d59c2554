"""The log: staging into lanes, the epoch ticker, durable publish, and waiting for durability.

Locking protocol (the heart of DESIGN invariant 2):

* A commit on the parallel path holds its lane's lock while it takes the next ``commit_seq``,
  reads the open epoch and encodes its records into the lane buffer.
* A commit on the serialized path, and the seal, hold *every* lane lock (acquired in lane order,
  so they cannot deadlock). The open epoch only changes during a seal.
* Hence every staging critical section lies wholly before or wholly after each seal, and the seq
  counter only moves inside them: ``seq_a < seq_b ⇒ epoch_a ≤ epoch_b``, each segment holds a
  dense seq range, and a ticket's epoch is the one whose segment carries its records.

Lock order: ``_retire_lock`` → ``_publish_lock`` → lane locks (ascending) → ``_ticker_cv``.
``_durable_cv`` and ``_space_cv`` are never held while taking another lock.

The log's lifecycle (open, closing, closed, broken), the sealed epochs, the durable position
and the waiters for it live in one pure :class:`~pagewal._sequencer.Sequencer`, guarded by
``_durable_cv``; this module is its driver: it seals, writes and fsyncs, reports each outcome
to the sequencer, and releases the waiters it hands back after dropping that lock. Reads of
its durable position and flags without the lock are single attribute reads, as before.

Epochs are sealed and placed in their log file one at a time, in order, by whoever holds
``_publish_lock``: the ticker, a committing thread leading its own complete epoch (group-commit
leader, no thread hand-off), or a lone committer sealing its commit as an epoch of its own
without staging it (:meth:`Wal._commit_alone`). The segment is then written *outside* that
lock by the same thread, with one durable write (format 2, DESIGN §4.3), so several epochs may
be written at once (at most ``config.inflight_epochs``; fewer while commits come in groups, as
the sequencer decides, DESIGN §5); the sequencer acknowledges them only as a contiguous prefix
(invariant 3), whatever order the writes complete in. Any ``OSError``
while placing or writing breaks the log for good (invariant 6). File creation, zero-filling,
renames and recycling happen in the writer's pool thread, never on the commit path
(invariant 4a).

The ticker normally runs in a thread the log starts itself. An event-loop adapter opens the
log with ``start_ticker=False`` and runs :meth:`Wal.run_ticker` in a thread it owns, so the
ticker's lifetime is bounded by the adapter's scope (``pagewal.trio`` runs it from a nursery
task). Either way exactly one ticker loop runs per log, and ``close()`` returns only after it
has published the last epoch.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import itertools
import math
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Literal

import attrs

from ._chain import RecoveryResult, first_difference
from ._checkpoint import covered_segments, delete_segments
from ._codec import (
    MAX_POSITION,
    SEGMENT_FLAG_SERIALIZED,
    ChainPosition,
    Commit,
    PagesInput,
    SegmentHeader,
    decode_segment,
    encode_commit_into,
    encode_commits,
    make_commit,
)
from ._config import FsyncMode, Mode, WalConfig
from ._errors import (
    BrokenLogError,
    ClosedError,
    ConfigError,
    CorruptSegmentError,
    InvalidPositionError,
    LogLockedError,
    WrongLogError,
)
from ._fs import Buffer, FileSystem, OsFileSystem, sync_files
from ._lanes import Lane, detached
from ._layout import CheckpointRecord, LogFiles, segment_name
from ._recovery import _read_chain, quarantine, write_checkpoint
from ._sequencer import LogState, Sequencer
from ._stats import Counters, FallbackReason, Ticket, WalStats
from ._writer import LogWriter, Placement, WriteTimes

_QUIET_SECONDS = 0.0002
"""Seal early once nobody has staged for this long and someone waits (adaptive sealing)."""

LOCK_CHECK_SECONDS = 1.0
"""How often (by the log's clock) the ticker checks that ``<db>-wal-lock`` still names the file
the log has locked; an idle ticker wakes this often to do it. Off the commit path."""

_OPEN_LOGS: weakref.WeakSet[Wal] = weakref.WeakSet()


@atexit.register
def _close_open_logs() -> None:  # pragma: no cover - runs at interpreter exit
    for wal in list(_OPEN_LOGS):
        with contextlib.suppress(Exception):
            wal.close()


def _checked_timeout(timeout: float | None) -> float | None:
    """A wait's ``timeout`` as seconds, or None for no limit (``None`` or infinity)."""
    if timeout is None:
        return None
    if (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
            or math.isnan(timeout) or timeout < 0):
        raise ConfigError("timeout", timeout,
                          "None, or a number of seconds >= 0 (math.inf waits without limit)")
    return None if math.isinf(timeout) else float(timeout)


class _AllLanesLocked:
    """Holds every lane lock, taken in lane order (so two holders cannot deadlock) and
    released in reverse. A plain context manager: a seal takes it once per epoch, and a
    generator-based one costs several times as much."""

    __slots__ = ("_locks",)

    def __init__(self, lanes: list[Lane]) -> None:
        self._locks = [lane.lock for lane in lanes]

    def __enter__(self) -> None:
        taken: list[threading.Lock] = []
        try:
            for lock in self._locks:
                lock.acquire()
                taken.append(lock)
        except BaseException:
            for lock in reversed(taken):
                lock.release()
            raise

    def __exit__(self, *exc: object) -> None:
        for lock in reversed(self._locks):
            lock.release()


@attrs.define(eq=False)  # not frozen: one per epoch on the commit path, never changed
class _SealedEpoch:
    epoch: int
    prev_epoch: int
    commit_seq_lo: int
    commit_seq_hi: int
    body: list[memoryview]
    record_count: int
    serialized: bool
    shadow: list[tuple[int, int, Commit]] | None
    seal_seconds: float


@attrs.define(eq=False)  # not frozen: one per epoch on the commit path, never changed
class _PlacedEpoch:
    """A sealed epoch with its place in a log file and the buffers of its segment."""

    sealed: _SealedEpoch
    placement: Placement
    buffers: list[Buffer]
    record_count: int


class Wal:
    """A write-ahead log of page after-images for the database file ``db_path``.

    Open it with :meth:`open` (which recovers), stage commits with :meth:`submit` or
    :meth:`commit`, and close it (or use it as a context manager). Thread-safe: any number of
    threads may commit at once; each sticks to one staging lane.

    Durability (``fsync=full``, the default): when :meth:`commit` or :meth:`wait_durable`
    returns, the commit's segment and its directory entry are fsynced; it survives power loss.
    A commit that was staged but not yet acknowledged when the process dies may be lost, whole.
    """

    def __init__(
        self,
        files: LogFiles,
        config: WalConfig,
        recovery: RecoveryResult,
        fs: FileSystem,
        clock: Callable[[], float],
        lock: int,
        *,
        start_ticker: bool = True,
    ) -> None:
        self._files = files
        self._lock = lock  # released by close(); the sequencer says when that happened
        self._config = config
        self._fs = fs
        self._clock = clock
        self._recovery = recovery
        # Each lane keeps one buffer per epoch that may be in flight, plus the one staging.
        self._lanes = [Lane(i, config.lane_capacity_bytes, ring=config.inflight_epochs + 1)
                       for i in range(config.effective_lanes)]
        self._every_lane = _AllLanesLocked(self._lanes)
        self._lane_counter = itertools.count()
        self._thread_lane = threading.local()
        self._max_batch_bytes = config.effective_max_batch_bytes
        self._serial_capacity = config.lane_capacity_bytes * len(self._lanes)
        self._forced_reason: FallbackReason | None = (
            FallbackReason.OPERATOR_FORCED if config.mode is Mode.CONSERVATIVE else None)

        # Guarded by every lane lock (or by the seq lock for _next_seq).
        self._seq_lock = threading.Lock()
        self._next_seq = recovery.last.commit_seq + 1
        # The writer continues the log where recovery says (DESIGN §4): after a crash in a
        # fresh file numbered above a discarded tail's epochs.
        self._writer = self._new_writer(fs, files, config, recovery)
        self._log_id = self._writer.log_id
        self._open_epoch = self._writer.next_epoch
        self._epoch_first_seq = self._next_seq
        self._serial_chunks: list[memoryview] = []
        self._serial_bytes = 0
        self._serial_records = 0
        self._serial_commits = 0
        self._shadow_epoch = self._shadow_sampled(self._open_epoch)
        self._fallbacks = dict.fromkeys((r.value for r in FallbackReason), 0)

        # Guarded by _ticker_cv.
        self._ticker_cv = threading.Condition(threading.Lock())
        self._open_waiters = 0
        self._epoch_opened_at = clock()
        self._seal_requested = False
        # Who runs the ticker loop: "thread" (our own) or "caller" (run_ticker); None if none
        # has started (then close() runs the last seal itself).
        self._ticker_runner: Literal["thread", "caller"] | None = (
            "thread" if start_ticker else None)
        self._next_lock_check = clock() + LOCK_CHECK_SECONDS
        self._last_submit_at = 0.0  # written racily by submitters; a heuristic only
        self._ticker_idle = False  # the ticker sleeps until a committer wakes it
        self._first_submit_at = 0.0

        # Guarded by _durable_cv. Its begin_close also holds every lane lock, so a staging
        # critical section sees the log either open or closing throughout.
        self._durable_cv = threading.Condition(threading.Lock())
        self._sequencer = self._new_sequencer(recovery.last)

        self._space_cv = threading.Condition(threading.Lock())
        self._space_waiting = 0  # guarded by _space_cv; a seal reads it racily (see _seal)

        # Owned by whoever holds _publish_lock: the ticker, or a committer leading its epoch.
        self._publish_lock = threading.Lock()
        # Set by the holder of _publish_lock from when it commits to sealing until its seal has
        # taken the lanes' staged commits (cleared under every lane lock): a committer that
        # staged before reading it True is in that seal.
        self._seal_coming = False
        self._unsynced = False  # fsync=normal: segments written since the last sync
        self._segment_ends: collections.deque[ChainPosition] = collections.deque(
            ChainPosition(s.header.epoch, s.header.commit_seq_hi)
            for s in (recovery.log_scan.segments if recovery.log_scan else ()))
        self._last_sync_at = clock()
        self._counters = Counters()
        self._last_shadow_divergence: str | None = None

        # Guarded by _retire_lock: where the recorded checkpoint stands (see retire()).
        self._retire_lock = threading.Lock()
        self._retired = recovery.base
        self._recorded_page_size = recovery.page_size  # kept by every record retire writes
        self._retire_refusal: str | None = None

        self._ticker: threading.Thread | None = None
        self._ticker_done = threading.Event()  # set when a caller-run ticker loop returns
        if start_ticker:
            self._ticker = threading.Thread(target=self._run_ticker, name="pagewal-ticker",
                                            daemon=True)
            self._ticker.start()
        _OPEN_LOGS.add(self)

    def _new_writer(self, fs: FileSystem, files: LogFiles, config: WalConfig,
                    recovery: RecoveryResult) -> LogWriter:
        """The log's writer (format 2, DESIGN §4.3); a seam the crash harness's broken
        variants replace."""
        return LogWriter(fs, files, config, recovery)

    def _new_sequencer(self, durable: ChainPosition) -> Sequencer[threading.Lock]:
        """The sequencer of this log; a waiter's token is a lock its thread blocks on.

        Epochs of several commits are written one at a time, single-commit epochs up to one
        per lane (the number of cores) at once, never more than ``inflight_epochs``: measured
        in docs/DESIGN.md §5, where a Python process's thread hand-offs, not the disk, limit
        group commit."""
        return Sequencer(durable, inflight_limit=self._config.inflight_epochs,
                         batched_limit=1, single_limit=len(self._lanes))

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(
        cls,
        db_path: str | os.PathLike[str],
        config: WalConfig | None = None,
        *,
        fs: FileSystem | None = None,
        clock: Callable[[], float] = time.monotonic,
        skip_corrupt: bool = False,
        start_ticker: bool = True,
    ) -> Wal:
        """Recover the log of ``db_path`` and open it for new commits after the durable ones.

        The log files live beside ``db_path`` (which need not exist; symbolic links in it are
        resolved once, here, so the log lies beside the database file itself) and take its
        permission bits (:class:`FileMode`). ``config`` defaults to ``WalConfig.from_env()``.
        Recovery results are in :attr:`recovery`. A corrupt segment raises
        :class:`CorruptSegmentError`; with ``skip_corrupt=True`` the log continues after the
        valid prefix and the skipped segments are renamed to ``*.corrupt``. A lost checkpoint
        record raises :class:`CheckpointMissingError` either way. Something that is not the
        log's own at one of the log's names (a symbolic link, directory, fifo, ...; or
        something else under the name of a segment the checkpoint covers) raises
        :class:`ForeignFileError`, whatever ``skip_corrupt`` says, and nothing is changed.

        ``start_ticker=False`` is for event-loop adapters such as ``pagewal.trio``: the log
        starts no ticker thread, and the caller must run :meth:`run_ticker` in a thread it owns
        until :meth:`close` returns. Until then epochs are sealed only by committers leading
        their own epoch, so commits may wait indefinitely.
        """
        fs = fs or OsFileSystem()
        files = LogFiles.for_db(db_path, fs)
        config = WalConfig.from_env() if config is None else config
        lock = fs.try_lock(files.lock_path, files.file_mode)
        if lock is None:
            raise LogLockedError(
                f"{files.path(files.db_name)}: the log is already open (lock {files.lock_path} "
                "is held); close the other Wal first")
        try:
            recovery = _read_chain(files, fs, skip_corrupt=skip_corrupt, tidy=True)
            quarantine(files, fs, recovery.skipped)
            if config.fsync is not FsyncMode.OFF and recovery.segments:
                # Invariant 1 across restarts: segments a crashed fsync=normal run left only in
                # the page cache are fsynced before new segments are chained onto them.
                try:
                    sync_files(fs, files.directory,  # a log file holds many segments
                               list(dict.fromkeys(os.path.basename(s.path)
                                                  for s in recovery.segments)))
                except OSError as error:
                    raise BrokenLogError(
                        f"{files.path(files.db_name)}: could not fsync the recovered segments "
                        f"({error}); nothing was opened") from error
            wal = cls(files, config, recovery, fs, clock, lock, start_ticker=start_ticker)
            try:
                wal._writer.start()
            except BaseException:
                wal._abandon()
                raise
            return wal
        except BaseException:
            fs.unlock(lock)
            raise

    @property
    def recovery(self) -> RecoveryResult:
        """What :meth:`open` recovered: the durable commits that existed before this run."""
        return self._recovery

    def release_recovery(self) -> None:
        """Drop the recovered records and bytes once the caller has applied them elsewhere.

        :attr:`recovery` then keeps its positions, segment list and counters but no records,
        so the memory (and any mapping of a segment file deleted since) is returned.
        """
        result = self._recovery
        self._recovery = attrs.evolve(result, records=result.records[:0], data=())

    @property
    def log_id(self) -> bytes:
        """This log's identity (DESIGN §1): 16 random bytes chosen when the log was created (or
        first continued in format 2), in every log file header and checkpoint record."""
        return self._log_id

    @property
    def config(self) -> WalConfig:
        """The configuration the log was opened with."""
        return self._config

    def __enter__(self) -> Wal:
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        try:
            self.close()
        except BrokenLogError:
            if exc is None:
                raise  # otherwise the error already propagating says more

    # ------------------------------------------------------------------ committing

    def submit(
        self, pages: PagesInput, *, db_size_pages: int | None = None, txn_id: int = 0
    ) -> Ticket:
        """Stage a commit and return its ticket without waiting for durability.

        ``pages``: ``{page_no: image}`` or ``[(page_no, image), ...]``, images 1..65,536 bytes.
        The images are copied before this returns. Input is validated before a ``commit_seq``
        is assigned (:class:`InvalidCommitError`, :class:`ImageTooLargeError`). May block while
        staging memory is full (backpressure). Raises :class:`ClosedError` or
        :class:`BrokenLogError` if the log cannot take commits.
        """
        return self._submit(make_commit(pages, txn_id=txn_id, db_size_pages=db_size_pages))

    def _submit(self, commit: Commit) -> Ticket:
        self._raise_if_unusable()
        lane = self._my_lane()
        reason = self._forced_reason
        if reason is None:
            if commit.encoded_size > self._max_batch_bytes:
                reason = FallbackReason.OVERSIZED_COMMIT
            else:
                ticket = self._stage_parallel(lane, commit)
                if ticket is not None:
                    return ticket
                reason = self._forced_reason or FallbackReason.LANE_OVERFLOW
        return self._stage_serialized(lane, commit, reason)

    def commit(
        self,
        pages: PagesInput,
        *,
        db_size_pages: int | None = None,
        txn_id: int = 0,
        durable: bool = True,
        timeout: float | None = None,
    ) -> Ticket:
        """Stage a commit and (unless ``durable=False``) wait until it is durable.

        ``timeout`` is that of :meth:`wait_durable`, checked before anything is staged.
        """
        timeout = _checked_timeout(timeout)
        commit = make_commit(pages, txn_id=txn_id, db_size_pages=db_size_pages)
        if durable and timeout is None:
            ticket = self._commit_alone(commit)
            if ticket is not None:
                return ticket
        ticket = self._submit(commit)
        if durable:
            self.wait_durable(ticket, timeout=timeout)
        return ticket

    def _commit_alone(self, commit: Commit) -> Ticket | None:
        """A committer that finds nothing staged in the open epoch and the publish lock free
        makes its commit an epoch of its own and publishes it, in this thread, without staging
        it in a lane: the group commit of a lone committer, at the cost of one durable write
        and no thread hand-off. None (nothing done) when the log is not that quiet; the caller
        then stages as usual. Waits, like :meth:`wait_durable`, and raises as it does."""
        if (self._forced_reason is not None or self._shadow_epoch
                or commit.encoded_size > self._max_batch_bytes
                or not self._publish_lock.acquire(blocking=False)):
            return None
        try:
            sealed = self._seal_alone(commit)
            if sealed is None:
                return None
            placed = self._place(sealed)
        finally:
            self._publish_lock.release()
        ticket = Ticket(sealed.commit_seq_lo, sealed.epoch, self._log_id)
        if placed is not None:
            self._write_and_complete(placed)
        if self._sequencer.durable.epoch < sealed.epoch:
            self.wait_durable(ticket)  # an earlier epoch is still in flight, or the log broke
        return ticket

    def _seal_alone(self, commit: Commit) -> _SealedEpoch | None:
        """Seal ``commit`` as an epoch of its own (the caller holds ``_publish_lock``), or
        None if something is staged in the open epoch, no epoch may be sealed now, or the log
        takes no commits. Invariant 2 as for a serialized-path commit sealed at once: the seq
        is taken and the epoch moved on under every lane lock."""
        sequencer = self._sequencer
        if not sequencer.can_seal():
            return None
        started = time.perf_counter()
        chunk = memoryview(bytearray(commit.encoded_size))  # allocated before a seq exists
        lane = self._my_lane()
        with self._every_lane:
            epoch = self._open_epoch
            if (self._next_seq != self._epoch_first_seq or self._serial_chunks
                    or sequencer.closing or sequencer.broken is not None
                    or max(self._next_seq, epoch) > MAX_POSITION):
                return None
            seq = self._take_seq()
            try:
                encode_commit_into(chunk, 0, commit, commit_seq=seq, lane_id=lane.lane_id)
                prev_epoch = self._move_epoch_on(epoch, seq)
            except BaseException as error:
                self._staging_failed(seq, error)
                raise
            self._last_submit_at = self._epoch_opened_at
        return _SealedEpoch(
            epoch=epoch, prev_epoch=prev_epoch, commit_seq_lo=seq, commit_seq_hi=seq,
            body=[chunk], record_count=len(commit.pages), serialized=False, shadow=None,
            seal_seconds=time.perf_counter() - started)

    @property
    def durable_position(self) -> ChainPosition:
        """Where the durable prefix of the chain ends: its last epoch and commit_seq."""
        return self._sequencer.durable

    def is_durable(self, ticket: Ticket) -> bool:
        """Whether ``ticket``'s commit is durable (non-blocking)."""
        self._check_ticket(ticket)
        return self._sequencer.durable.epoch >= ticket.epoch

    def _check_ticket(self, ticket: Ticket) -> None:
        if ticket.log_id != self._log_id:
            raise WrongLogError(
                f"{self._files.path(self._files.db_name)}: commit {ticket.commit_seq} (epoch "
                f"{ticket.epoch}) was staged in log {ticket.log_id.hex()}, not in this log "
                f"({self._log_id.hex()}); wait on the log that returned the ticket")

    def wait_durable(self, ticket: Ticket, timeout: float | None = None) -> None:
        """Block until ``ticket``'s commit is durable.

        Raises :class:`BrokenLogError` if the log broke before it became durable (the commit
        may or may not be found by recovery, but it was never acknowledged), and
        ``TimeoutError`` if ``timeout`` seconds pass first. Without a timeout, the calling
        thread may itself publish its epoch when every commit staged in it is awaited.

        ``timeout``: ``None`` or ``math.inf`` waits without limit; otherwise seconds >= 0
        (0 only checks). NaN and negative values raise :class:`ConfigError` (a negative value
        means "forever" to ``threading`` but "already expired" elsewhere, so it is refused).
        """
        if timeout is not None:
            timeout = _checked_timeout(timeout)
        if ticket.log_id != self._log_id:
            self._check_ticket(ticket)
        sequencer = self._sequencer
        epoch = ticket.epoch
        if sequencer.durable.epoch >= epoch:
            return
        # Without a timeout the caller may publish its own epoch (see _lead), and then often
        # finds it durable on return: no waiter needed. With a timeout the ticker publishes,
        # so a stalled disk cannot hold the caller past its timeout.
        if self._note_waiter(epoch):
            if timeout is None:
                self._lead(epoch)
                if sequencer.durable.epoch >= epoch:
                    return
            else:
                self._request_seal()
        # Each waiter blocks on a lock of its own, released when its epoch is durable: one
        # wake-up per waiter, and no shared lock to re-acquire on the way out.
        waiter = threading.Lock()
        waiter.acquire()
        with self._durable_cv:
            if not sequencer.add_waiter(epoch, waiter):  # raises if the log is broken
                return
        if not waiter.acquire(timeout=-1 if timeout is None else max(0.0, timeout)):
            with self._durable_cv:
                sequencer.remove_waiter(ticket.epoch, waiter)
            if sequencer.durable.epoch < ticket.epoch and sequencer.broken is None:
                raise TimeoutError(f"commit {ticket.commit_seq} (epoch {ticket.epoch}) not "
                                   f"durable after {timeout} s")
        if sequencer.durable.epoch < ticket.epoch:
            self._raise_broken()

    def flush(self, timeout: float | None = None) -> None:
        """Seal now and wait until every commit staged before this call is durable.

        ``timeout`` as for :meth:`wait_durable`.
        """
        timeout = _checked_timeout(timeout)
        with self._seq_lock:
            target = self._next_seq - 1
        self._request_seal()
        self._wait_until(lambda: self._sequencer.durable.commit_seq >= target, timeout,
                         f"commits up to {target}")

    def sync(self) -> None:
        """fsync the segments published so far, now, and their directory.

        With ``fsync=normal`` this makes every commit published so far survive power loss
        (otherwise that happens within an epoch interval); with ``full`` and ``off`` there is
        nothing to do. A failure breaks the log (:class:`BrokenLogError`).
        """
        with self._publish_lock:
            if self._unsynced and self._sequencer.broken is None:
                self._sync_published()
        if self._sequencer.broken is not None:
            self._raise_broken()

    @property
    def retired_position(self) -> ChainPosition:
        """Where the log's checkpoint record stands: commits up to it were retired (by
        :meth:`retire`, or before this log was opened) and are no longer in the log."""
        return self._retired

    def retire(
        self, through: Ticket | ChainPosition, *, timeout: float | None = None
    ) -> ChainPosition:
        """Let the log forget commits up to ``through`` that the caller has stored elsewhere.

        For a caller that keeps its own pages (say it wrote them to its data file and fsynced
        it): the log records a checkpoint and deletes the segments it covers, so it stops
        growing. Only ``through.commit_seq`` counts. Every commit up to it must be durable in
        the caller's own store first, *including those* :attr:`recovery` *returned*: after
        this, recovery (:meth:`open`, :func:`recover`) starts at the returned position (its
        ``base``) and returns only later commits; earlier ones are gone from the log.

        * Waits (like :meth:`wait_durable`) until the commits up to ``through`` are durable;
          ``TimeoutError`` after ``timeout`` seconds, nothing retired.
        * Retires whole segments only: a segment also holding a commit after ``through``
          stays, so fewer commits than asked may be retired (the next call retires them). The
          return value is the position actually retired through (the new
          :attr:`retired_position`; unchanged if no segment was wholly covered).
        * Crash-safe in the order ``WalPager``'s checkpoint uses: the checkpoint record is
          published atomically (tmp, fsync, rename, directory fsync); then format 1 segment
          files it covers are deleted (directory fsynced), and the log files it covers wholly
          are handed to the pool thread, which recycles each (new header, number and salt,
          fsynced, renamed, directory fsynced) or deletes it. A crash in between leaves
          covered files that the next open recycles. With ``fsync=normal`` what was written
          is fsynced first, under the publish lock, so the record never becomes durable before
          the segments it follows. With ``fsync=off`` nothing is fsynced.
        * Commits continue meanwhile (with ``fsync=normal`` their publishing waits for this
          call's file operations).
        * An ``OSError`` recording the checkpoint or deleting format 1 segments propagates and
          does *not* break the log: the previous record stays until a new one replaces it
          atomically. :attr:`retired_position` says whether the record was written; call
          again later. A failed fsync of written segments (``fsync=normal``) breaks the log,
          as in :meth:`sync`; so does a failure of the pool thread recycling a file, when the
          log next needs a file (invariant 6: the pool's files are the ones it writes into).

        Raises :class:`InvalidPositionError` for a ``commit_seq`` this log has not assigned
        yet (a ticket of another log), :class:`ClosedError` once :meth:`close` has begun,
        :class:`BrokenLogError` if the log is broken, :class:`CorruptSegmentError` if a
        segment header to retire fails its checks (nothing deleted), and ``RuntimeError`` for
        a ``WalPager``'s log (its own checkpoints retire segments: call ``checkpoint()``).
        """
        if not isinstance(through, (Ticket, ChainPosition)):
            raise TypeError(f"retire() takes a Ticket or a ChainPosition, not {through!r}")
        if self._retire_refusal is not None:
            raise RuntimeError(self._retire_refusal)
        if isinstance(through, Ticket):
            self._check_ticket(through)
        target = through.commit_seq
        self._raise_if_unusable()
        with self._seq_lock:
            assigned = self._next_seq - 1
        if target > assigned:
            raise InvalidPositionError(
                f"{self._files.path(self._files.db_name)}: cannot retire through commit_seq "
                f"{target}: this log has assigned commit_seqs up to {assigned} only; pass a "
                "ticket (or position) of this log")
        if self._sequencer.durable.commit_seq < target:
            self._request_seal()
            self._wait_until(lambda: self._sequencer.durable.commit_seq >= target, timeout,
                             f"commits up to {target}")
        with self._retire_lock:
            # close() takes _retire_lock before releasing the log's lock file, so no file is
            # deleted once another opener could be recovering the log.
            if self._sequencer.closing:
                raise ClosedError("the log is closed")
            if self._sequencer.broken is not None:
                self._raise_broken()
            if target <= self._retired.commit_seq:
                return self._retired
            if self._config.fsync is FsyncMode.NORMAL:
                with self._publish_lock:
                    return self._retire_segments(target)
            return self._retire_segments(target)

    def _retire_segments(self, target: int) -> ChainPosition:
        """:meth:`retire`'s file operations; the caller holds ``_retire_lock`` (and with
        ``fsync=normal`` ``_publish_lock``)."""
        files, fs = self._files, self._fs
        durable = self._sequencer.durable
        # Format 1 segments (a log written before format 2) come first in the chain...
        position, epochs = covered_segments(files, fs, self._retired, target, durable.epoch)
        # ... then the segments of the log files, whose ends the log keeps in chain order.
        # Only durable ones count: nothing being written is ever retired.
        held = self._config.fsync is FsyncMode.NORMAL  # retire() took _publish_lock then
        with contextlib.nullcontext() if held else self._publish_lock:
            for end in self._segment_ends:
                if end.epoch > durable.epoch or end.commit_seq > target:
                    break
                if end.epoch > position.epoch:
                    position = end
        if position == self._retired:
            return self._retired
        # fsync=normal: what was written is fsynced first, so the checkpoint record never
        # becomes durable before the segments it follows.
        if self._unsynced and not self._sync_published():
            self._raise_broken()
        sync = self._config.fsync is not FsyncMode.OFF
        write_checkpoint(files, fs, CheckpointRecord(position=position,
                                                     page_size=self._recorded_page_size,
                                                     log_id=self._log_id),
                         sync=sync)
        # The record is published: from now on recovery starts at it, whatever happens to the
        # deletions, so a later call must never record an earlier position.
        self._retired = position
        delete_segments(files, fs, epochs, sync=sync)
        with contextlib.nullcontext() if held else self._publish_lock:
            self._retire_log_files_locked(position)
        return position

    def _retire_log_files(self, position: ChainPosition) -> None:
        """Hand the log files a durable checkpoint record at ``position`` covers to the
        writer's pool, to be recycled (DESIGN §4.1): ``WalPager``'s checkpoint calls it."""
        with self._publish_lock:
            self._retire_log_files_locked(position)

    def _retire_log_files_locked(self, position: ChainPosition) -> None:
        while self._segment_ends and self._segment_ends[0].epoch <= position.epoch:
            self._segment_ends.popleft()
        self._writer.retire_through(position)

    def _refuse_retire(self, reason: str) -> None:
        """Make :meth:`retire` raise ``RuntimeError(reason)``: for an owner (``WalPager``)
        whose own checkpoints record the log's checkpoint and delete its segments."""
        self._retire_refusal = reason

    def _wait_until(self, durable: Callable[[], bool], timeout: float | None, what: str) -> None:
        """Wait until ``durable()`` holds; a durable commit stays durable if the log breaks."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._durable_cv:
            while not durable():
                if self._sequencer.broken is not None:
                    self._raise_broken()
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"{what} not durable after {timeout} s")
                self._durable_cv.wait(remaining)

    def _request_seal(self) -> None:
        with self._ticker_cv:
            self._seal_requested = True
            self._ticker_cv.notify()

    def close(self) -> None:
        """Make everything staged durable, stop the ticker and release the log. Idempotent.

        Raises :class:`BrokenLogError` (once) if the log is broken: staged commits that were not
        acknowledged may be lost. After close, :meth:`submit` raises :class:`ClosedError`.
        """
        with self._every_lane, self._durable_cv:
            first = not self._sequencer.closing
            if first:
                self._sequencer.begin_close()
        if first:
            with self._ticker_cv:
                self._ticker_cv.notify()
                # run_ticker() no longer starts once close has begun (see there).
                seal_here = self._ticker_runner is None
            with self._space_cv:
                self._space_cv.notify_all()
            if seal_here:
                # start_ticker=False and run_ticker() never started: nobody else would publish
                # the last epoch, so close runs the (now stopping) ticker loop itself.
                try:
                    self._run_ticker()
                finally:
                    self._ticker_done.set()
        # Every caller waits for the final seal; a close interrupted here is finished by the next.
        if self._ticker is not None:
            self._ticker.join()
        else:
            self._ticker_done.wait()
        with self._durable_cv:  # epochs other threads are still writing
            while self._sequencer.inflight and self._sequencer.broken is None:
                self._durable_cv.wait()
        with self._retire_lock:  # a running retire() finishes first
            released = self._sequencer.state is LogState.CLOSED
            if not released:
                self._finish_log_files()
                with self._durable_cv:
                    self._sequencer.finish_close()
        if released:
            return  # another close released the log (and reported a breakage, if any)
        self._fs.unlock(self._lock)
        if isinstance(self._fs, OsFileSystem):
            self._fs.release()
        _OPEN_LOGS.discard(self)
        if self._sequencer.broken is not None:
            self._raise_broken()

    def _abandon(self) -> None:
        """Undo a constructed log whose files could not be made ready (``open`` failed): stop
        its threads without writing anything; ``open`` releases the lock."""
        with self._every_lane, self._durable_cv:
            self._sequencer.begin_close()
        with self._ticker_cv:
            self._ticker_cv.notify()
        if self._ticker is not None:
            self._ticker.join()
        with contextlib.suppress(OSError):
            self._writer.finish(self._sequencer.durable, marker=False, sync=False)
        with self._durable_cv:
            self._sequencer.finish_close()
        _OPEN_LOGS.discard(self)

    def _finish_log_files(self) -> None:
        """Close the log files; a log that is not broken ends with a clean-shutdown marker
        (DESIGN §4), so a later open knows no acknowledged epoch may be missing."""
        try:
            self._writer.finish(self._sequencer.durable,
                                marker=self._sequencer.broken is None,
                                sync=self._config.fsync is not FsyncMode.OFF)
        except OSError as error:
            # The marker is not needed for durability: without it the next open treats the
            # end as a crash's (and continues in a fresh file). Still, say so.
            self._break(f"ending the log with its clean-shutdown marker failed ({error}); "
                        "every acknowledged commit is durable", error)

    # ------------------------------------------------------------------ statistics

    def statistics(self) -> WalStats:
        """A snapshot of the counters (DESIGN §6). Cheap; may be called from any thread."""
        sequencer = self._sequencer
        durable = sequencer.durable
        with self._seq_lock:
            staged = self._next_seq - 1 - self._recovery.last.commit_seq
        if self._forced_reason is FallbackReason.SHADOW_DIVERGENCE:
            mode = Mode.CONSERVATIVE.value
        else:
            mode = self._config.mode.value
        counters = attrs.asdict(self._counters)
        return WalStats(
            **counters, mode=mode, lanes=len(self._lanes), open_epoch=self._open_epoch,
            durable_epoch=durable.epoch, durable_commit_seq=durable.commit_seq,
            commits_staged=staged, segments_written=counters["epochs_sealed"],
            fallbacks=dict(self._fallbacks),
            lane_backlog_bytes=tuple(lane.used for lane in self._lanes),
            serialized_backlog_bytes=self._serial_bytes,
            last_shadow_divergence=self._last_shadow_divergence,
            broken=sequencer.broken is not None, closed=sequencer.state is LogState.CLOSED,
            epochs_in_flight=sequencer.inflight, **self._writer.statistics,
            torn_tails_discarded=int(self._recovery.torn_tail is not None),
        )

    # ------------------------------------------------------------------ staging

    def _my_lane(self) -> Lane:
        lane: Lane | None = getattr(self._thread_lane, "lane", None)
        if lane is None:
            lane = self._lanes[next(self._lane_counter) % len(self._lanes)]
            self._thread_lane.lane = lane
        return lane

    def _take_seq(self) -> int:
        with self._seq_lock:
            seq = self._next_seq
            self._next_seq = seq + 1
        return seq

    def _stage_parallel(self, lane: Lane, commit: Commit) -> Ticket | None:
        with lane.lock:
            if self._sequencer.closing:
                raise ClosedError("the log is closed")
            if not lane.fits(commit) or self._forced_reason is not None:
                return None
            lane.prepare()  # allocate before a seq exists
            copy = detached(commit) if self._shadow_epoch else None
            # Invariant 2: seq, epoch and append are atomic with respect to sealing, which
            # needs this lane's lock to move the epoch on.
            seq = self._take_seq()
            epoch = self._open_epoch
            first = seq == self._epoch_first_seq
            try:
                lane.append(commit, seq, shadow_copy=copy)
            except BaseException as error:
                self._staging_failed(seq, error)
                raise
        self._after_stage(first)
        return Ticket(seq, epoch, self._log_id)

    def _stage_serialized(self, lane: Lane, commit: Commit, reason: FallbackReason) -> Ticket:
        # Allocate before a seq exists: nothing may fail between taking a seq and staging it.
        chunk = memoryview(bytearray(commit.encoded_size))
        copy = detached(commit) if self._shadow_epoch else None  # re-checked under the locks
        waited = False
        while True:
            with self._every_lane:
                if self._sequencer.closing:
                    raise ClosedError("the log is closed")
                full = self._serial_bytes + commit.encoded_size > self._serial_capacity
                # A commit larger than the whole bound is admitted alone (no other serialized
                # commit in this epoch), so it cannot wait forever.
                if not full or self._serial_bytes == 0:
                    self._fallbacks[reason.value] += 1
                    seq = self._take_seq()
                    epoch = self._open_epoch
                    try:
                        encode_commit_into(chunk, 0, commit, commit_seq=seq,
                                           lane_id=lane.lane_id)
                        self._serial_chunks.append(chunk)
                        self._serial_bytes += commit.encoded_size
                        self._serial_records += len(commit.pages)
                        self._serial_commits += 1
                        if self._shadow_epoch:
                            lane.capture_shadow(seq, copy or detached(commit))
                    except BaseException as error:
                        self._staging_failed(seq, error)
                        raise
                    first = seq == self._epoch_first_seq
                    break
                waiting_for = self._open_epoch
                if not waited:  # counted once per commit that had to wait
                    self._fallbacks[FallbackReason.BACKPRESSURE.value] += 1
            waited = True
            self._wait_for_space(waiting_for)
        self._after_stage(first)
        return Ticket(seq, epoch, self._log_id)

    def _staging_failed(self, commit_seq: int, error: BaseException) -> None:
        """A seq, once assigned, is never abandoned (DESIGN §1): if staging it fails anyway
        (an interrupt, a bug), the log breaks rather than publish an epoch with a gap."""
        self._break(f"staging commit {commit_seq} failed after its commit_seq was assigned "
                    f"({error!r}); reopen the log", error)

    def _wait_for_space(self, epoch: int) -> None:
        """Invariant 8: staging memory is full; wait for the seal of ``epoch`` to free it."""
        self._request_seal()
        with self._space_cv:
            sequencer = self._sequencer
            # Counted before the epoch is looked at: a seal moves the epoch on before it reads
            # the count, so either it sees this waiter (and notifies) or this sees the seal.
            self._space_waiting += 1
            try:
                while (self._open_epoch == epoch and not sequencer.closing
                       and sequencer.broken is None):
                    self._space_cv.wait()
            finally:
                self._space_waiting -= 1
        self._raise_if_unusable()

    def _after_stage(self, first_of_epoch: bool) -> None:
        now = self._last_submit_at = self._clock()
        if first_of_epoch:
            self._first_submit_at = now  # a heuristic, like _last_submit_at
            # Wake the ticker only from an idle sleep: while commits keep coming it checks on
            # its own every interval, so a committer pays no thread hand-off (its staging
            # happened before this read; see _wait_until_seal_due for why none is missed).
            if self._ticker_idle:
                with self._ticker_cv:
                    self._ticker_cv.notify()

    def _note_waiter(self, epoch: int) -> bool:
        """Count a waiter of the open epoch; True when every staged commit is now awaited."""
        with self._ticker_cv:
            if epoch != self._open_epoch or self._sequencer.closing:
                return False
            self._open_waiters += 1
            complete = self._open_waiters >= self._next_seq - self._epoch_first_seq
            if self._open_waiters == 1 and not complete:
                self._ticker_cv.notify()  # arm the flush-delay and quiet timers
            return complete

    def _shadow_sampled(self, epoch: int) -> bool:
        if self._config.mode is Mode.SHADOW_COMPARE:
            return True
        per_mille = self._config.shadow_compare_per_mille
        # A fixed multiplicative hash spreads the sampled epochs evenly and reproducibly.
        return per_mille > 0 and (epoch * 2654435761) % 1000 < per_mille

    def _raise_if_unusable(self) -> None:
        if self._sequencer.broken is not None:
            self._raise_broken()
        if self._sequencer.closing:
            raise ClosedError("the log is closed")

    def _raise_broken(self) -> None:
        broken = self._sequencer.broken
        assert broken is not None
        message, cause = broken
        raise BrokenLogError(message) from cause

    # ------------------------------------------------------------------ the ticker

    def run_ticker(self) -> None:
        """Run the epoch ticker in the calling thread until the log is closed or breaks.

        Only for a log opened with ``start_ticker=False``: its owner calls this once, in a
        thread it owns (``pagewal.trio`` runs it from a nursery task), and keeps that thread
        running until :meth:`close` returns; :meth:`close` waits for this to publish the last
        epoch and return. Returns at once if :meth:`close` began before the ticker started (it
        then published the last epoch itself). Raises ``RuntimeError`` if the log runs a ticker
        thread of its own, or if another ``run_ticker`` call is running.
        """
        with self._ticker_cv:
            runner = self._ticker_runner
            if runner is None:
                if self._sequencer.closing:
                    # close() began first and saw no ticker: it publishes the last epoch.
                    # (It sets closing before it looks, under this lock, so exactly one of
                    # the two runs the loop.)
                    return
                self._ticker_runner = "caller"
        if runner is not None:
            raise RuntimeError(
                "this log's ticker already runs "
                + ("in a thread of its own (opened without start_ticker=False)"
                   if runner == "thread" else "in another run_ticker() call"))
        try:
            self._run_ticker()
        finally:
            self._ticker_done.set()

    def _run_ticker(self) -> None:
        try:
            while self._sequencer.broken is None:
                final = self._wait_until_seal_due()
                if not self._publish_next():
                    return
                if self._unsynced and (final or self._sync_delay() == 0.0):
                    with self._publish_lock:
                        if not self._sync_published():
                            return
                if final:
                    return
        except BaseException as error:  # pragma: no cover - a bug; never leave waiters hanging
            self._break(f"the ticker failed unexpectedly: {error!r}", error)
            raise

    def _publish_next(self, *, leading: int | None = None) -> bool:
        """Seal the open epoch, place it and write it; False once the log is broken.

        Sealing and placing happen under ``_publish_lock`` (so epochs are placed in order);
        the write happens after it is released, so other epochs can be sealed and written
        meanwhile (DESIGN §4.3). ``leading``: a committer leading ``leading`` only publishes
        if that epoch is still open and nobody else holds the lock (else the ticker is asked).
        """
        if leading is None:
            self._publish_lock.acquire()
        elif not self._publish_lock.acquire(blocking=False):
            # The holder may be about to seal (waiting for room in flight, say): then it seals
            # what this committer staged, and the ticker need not be asked (see _seal_coming).
            if not self._seal_coming:
                self._request_seal()
            return True
        try:
            if leading is not None and leading != self._open_epoch:
                return True
            self._seal_coming = True
            placed = self._seal_and_place()
        finally:
            self._seal_coming = False
            self._publish_lock.release()
        if placed is None:
            return self._sequencer.broken is None
        return self._write_and_complete(placed)

    def _seal_and_place(self) -> _PlacedEpoch | None:
        """Seal the open epoch and give its segment a place; the caller holds
        ``_publish_lock``. None if nothing was staged or the log is broken."""
        sequencer = self._sequencer
        if not sequencer.can_seal():  # only a seal, which we are, makes it False again
            with self._durable_cv:
                # Invariant 3's window, and the sequencer's batching within it (can_seal).
                while not sequencer.can_seal() and sequencer.broken is None:
                    self._durable_cv.wait()
        sealed = self._seal()
        if sealed is None or self._sequencer.broken is not None:
            return None
        return self._place(sealed)

    def _lead(self, epoch: int) -> None:
        """Group-commit leader: a committer whose epoch is complete (every staged commit has a
        waiter) seals and writes it itself when nobody else is sealing, saving two thread
        hand-offs; otherwise the ticker is asked to."""
        try:
            self._publish_next(leading=epoch)
        except BaseException as error:
            self._break(f"publishing epoch {epoch} from a committing thread failed: {error!r}",
                        error)
            raise

    def _sync_delay(self) -> float | None:
        """fsync=normal: seconds until segments published without fsync are due one."""
        if not self._unsynced:
            return None
        due = self._last_sync_at + self._config.epoch_interval_ms / 1000
        return max(0.0, due - self._clock())

    def _wait_until_seal_due(self) -> bool:
        """Adaptive sealing: block until the open epoch should be sealed; True when stopping."""
        interval = self._config.epoch_interval_ms / 1000
        max_delay = self._config.effective_max_flush_delay_ms / 1000
        quiet = min(_QUIET_SECONDS, max_delay)
        with self._ticker_cv:
            while True:
                if self._sequencer.closing:
                    return True
                check_in = self._check_lock_when_due()
                if self._sequencer.broken is not None:
                    return False  # the lock is lost: nothing more is published
                staged = self._next_seq - self._epoch_first_seq
                if staged == 0:
                    self._seal_requested = False
                    sync_in = self._sync_delay()
                    if sync_in == 0.0:
                        return False
                    timeout = check_in if sync_in is None else min(sync_in, check_in)
                    if self._clock() - self._last_submit_at < interval:
                        # Commits came lately: look again within an interval, unprompted.
                        self._ticker_cv.wait(min(timeout, interval))
                        continue
                    # Idle: sleep until a committer wakes us. _ticker_idle is set before
                    # staged is read again, and a committer reads it after staging, so either
                    # the committer sees it set (and notifies, under this lock, once we wait)
                    # or we see its commit staged.
                    self._ticker_idle = True
                    if self._next_seq - self._epoch_first_seq == 0:
                        self._ticker_cv.wait(timeout)
                    self._ticker_idle = False
                    continue
                if self._seal_requested:
                    # A waiter with a timeout asks (one without leads its epoch itself).
                    self._seal_requested = False
                    return False
                due = self._epoch_opened_at + interval
                if self._open_waiters:
                    # DESIGN §5: max_flush_delay bounds submit-to-seal when someone waits.
                    due = min(due, self._first_submit_at + max_delay,
                              self._last_submit_at + quiet)
                remaining = due - self._clock()
                if remaining <= 0:
                    return False
                self._ticker_cv.wait(min(remaining, check_in))

    def _check_lock_when_due(self) -> float:
        """Every :data:`LOCK_CHECK_SECONDS`, check that the lock file still names the file this
        log locked: if another process (or an operator) deleted or replaced it, a second
        ``Wal.open`` could take the "lock" and write the same segment names as this log. Then
        the log breaks (:class:`BrokenLogError`, naming the lock file): nothing later is
        acknowledged. Returns the seconds until the next check. Called by the ticker with
        ``_ticker_cv`` held (two ``stat`` calls a second, never on a committer's path)."""
        now = self._clock()
        if now < self._next_lock_check:
            return self._next_lock_check - now
        self._next_lock_check = now + LOCK_CHECK_SECONDS
        if self._sequencer.state is LogState.OPEN:  # not closing, closed or broken
            try:
                self._fs.check_lock(self._lock, self._files.lock_path)
            except OSError as error:
                self._break(
                    f"{self._files.lock_path}: {error.strerror or error}: another process may "
                    f"now open the log of {self._files.path(self._files.db_name)} and write the "
                    "same segment names, so this log acknowledges no further commits; stop "
                    "every process using it, then open the log again (which locks a new lock "
                    "file)", error)
        return LOCK_CHECK_SECONDS

    def _seal(self) -> _SealedEpoch | None:
        """Close the open epoch: swap every lane's buffer and open the next epoch."""
        started = time.perf_counter()
        with self._every_lane:
            self._seal_coming = False
            lo, hi = self._epoch_first_seq, self._next_seq - 1
            if hi < lo:
                return None
            if max(self._open_epoch, hi) > MAX_POSITION:
                # Never write a number a reader rejects (reachable only from a crafted log:
                # recovery accepts at most MAX_POSITION, 2**63 numbers short of the u64 end).
                self._break(f"epoch {self._open_epoch} (commits {lo}..{hi}) leaves no room to "
                            f"continue the log past {MAX_POSITION}; nothing of it was written",
                            OverflowError("commit_seq or epoch beyond 2**63-1"))
                return None
            epoch = self._open_epoch
            body: list[memoryview] = []
            records = commits = 0
            shadow: list[tuple[int, int, Commit]] | None = [] if self._shadow_epoch else None
            # Only lanes that staged something move on in their ring: a lane's buffer is
            # reused only after inflight_epochs + 1 of its own seals (see _lanes).
            for lane in self._lanes:
                if lane.has_staged:
                    snapshot = lane.swap()
                    if snapshot.records:
                        body.append(snapshot.body)
                    records += snapshot.records
                    commits += snapshot.commits
                    if shadow is not None:
                        shadow.extend(snapshot.shadow)
            serialized = bool(self._serial_chunks)
            if serialized:
                body += self._serial_chunks
                records += self._serial_records
                commits += self._serial_commits
                self._serial_chunks = []
                self._serial_bytes = self._serial_records = self._serial_commits = 0
            prev_epoch = self._move_epoch_on(epoch, hi)
        if self._space_waiting:
            with self._space_cv:
                self._space_cv.notify_all()
        if commits != hi - lo + 1:  # pragma: no cover - a staging bug; never publish a gap
            self._break(f"epoch {epoch} staged {commits} commits for seqs {lo}..{hi}",
                        AssertionError("dense commit_seq"))
            return None
        return _SealedEpoch(
            epoch=epoch, prev_epoch=prev_epoch, commit_seq_lo=lo, commit_seq_hi=hi, body=body,
            record_count=records, serialized=serialized, shadow=shadow,
            seal_seconds=time.perf_counter() - started)

    def _move_epoch_on(self, epoch: int, commit_seq_hi: int) -> int:
        """Register the seal of ``epoch`` (commits up to ``commit_seq_hi``) with the sequencer
        and open the next epoch; returns the epoch it chains on. The caller holds every lane
        lock (invariant 2: the open epoch moves only under all of them)."""
        self._epoch_first_seq = commit_seq_hi + 1
        # The epoch after a sampled one is compared too: if this one diverges, commits
        # already staged in the next one on the parallel path must not go unchecked.
        self._shadow_epoch = self._shadow_sampled(epoch + 1) or self._shadow_sampled(epoch)
        sequencer = self._sequencer
        with self._durable_cv:
            prev_epoch = sequencer.sealed.epoch
            # A broken log still swaps the buffers (freeing staging memory) but registers
            # nothing: _publish then writes nothing.
            if sequencer.broken is None:
                sequencer.seal(epoch, prev_epoch, commit_seq_hi)
        with self._ticker_cv:
            self._open_epoch = epoch + 1
            self._open_waiters = 0
            self._epoch_opened_at = self._clock()
        return prev_epoch

    def _place(self, sealed: _SealedEpoch) -> _PlacedEpoch | None:
        """Encode ``sealed``'s header and reserve its place in a log file (the caller holds
        ``_publish_lock``). None, with the log broken, if no place could be had."""
        body, record_count, serialized = sealed.body, sealed.record_count, sealed.serialized
        if sealed.shadow is not None:
            replacement = self._shadow_compare(sealed)
            if replacement is not None:
                body, record_count, serialized = [replacement[0]], replacement[1], True
        body_length = sum(b.nbytes for b in body)
        try:
            placement = self._writer.place(sealed.epoch, sealed.commit_seq_hi, body_length)
        except OSError as error:
            self._break(
                f"{self._files.path(self._files.db_name)}: no log file could be made ready for "
                f"epoch {sealed.epoch} ({error}); it and every later epoch are not durable; "
                "reopen the log to recover the durable prefix", error, epoch=sealed.epoch)
            return None
        self._segment_ends.append(ChainPosition(sealed.epoch, sealed.commit_seq_hi))
        # DESIGN §4: what was acknowledged when this epoch was sealed is the evidence a reader
        # uses to tell damage to an acknowledged epoch from a torn tail.
        buffers = self._writer.segment(
            placement, body, epoch=sealed.epoch, record_count=record_count,
            lane_count=len(self._lanes), commit_seq_lo=sealed.commit_seq_lo,
            commit_seq_hi=sealed.commit_seq_hi, prev_epoch=sealed.prev_epoch,
            body_length=body_length, flags=SEGMENT_FLAG_SERIALIZED if serialized else 0,
            acked_epoch=self._sequencer.acked_epoch)
        return _PlacedEpoch(sealed, placement, buffers, record_count)

    def _write_and_complete(self, placed: _PlacedEpoch) -> bool:
        """Write a placed segment (outside every lock) and report it to the sequencer."""
        sealed = placed.sealed
        try:
            times = self._write_segment(placed)
        except OSError as error:
            self._break(
                f"writing epoch {sealed.epoch} to {placed.placement.file.path} at offset "
                f"{placed.placement.offset} failed ({error}); epoch {sealed.epoch} (commits "
                f"{sealed.commit_seq_lo}..{sealed.commit_seq_hi}) and every later one are not "
                "durable; reopen the log to recover the durable prefix", error,
                epoch=sealed.epoch)
            return False
        if self._config.fsync is FsyncMode.NORMAL and not self._unsynced:
            self._unsynced = True  # fsynced by the ticker loop within an interval
            with self._ticker_cv:  # a leading committer wrote: arm the sync timer
                self._ticker_cv.notify()
        self._mark_durable(placed, times)
        return True

    def _write_segment(self, placed: _PlacedEpoch) -> WriteTimes:
        """Invariant 1: one write at the segment's place, durable on return with fsync=full
        (the log file's name, size and zeros were durable before it was handed out)."""
        return self._writer.write(placed.placement, placed.buffers)

    def _shadow_compare(self, sealed: _SealedEpoch) -> tuple[memoryview, int] | None:
        """Encode the epoch again on the serialized path and compare the two semantically.

        Returns the serialized body and its record count when they differ (or the parallel
        one does not even decode): that is what gets published instead.
        """
        assert sealed.shadow is not None
        commits = sorted(sealed.shadow, key=lambda item: item[0])
        expected_body = encode_commits(commits)
        header = SegmentHeader(
            epoch=sealed.epoch, record_count=sum(len(c.pages) for _, _, c in commits),
            lane_count=len(self._lanes), commit_seq_lo=sealed.commit_seq_lo,
            commit_seq_hi=sealed.commit_seq_hi, prev_epoch=sealed.prev_epoch,
            body_length=len(expected_body))
        path = self._files.path(segment_name(self._files.db_name, sealed.epoch))
        expected = decode_segment(header.encode() + expected_body, path)
        self._counters.shadow_compares += 1
        try:
            candidate_header = attrs.evolve(header, record_count=sealed.record_count,
                                            body_length=sum(b.nbytes for b in sealed.body))
            candidate = decode_segment(b"".join([candidate_header.encode(), *sealed.body]),
                                       path)
            difference = first_difference(expected, candidate)
        except (CorruptSegmentError, ValueError) as error:
            difference = f"parallel encoding does not decode: {error}"
        if difference is None:
            return None
        self._counters.shadow_divergences += 1
        self._last_shadow_divergence = f"epoch {sealed.epoch}: {difference}"
        # DESIGN §5: the divergent bytes never become durable; the serialized encoding does,
        # and every later commit takes the serialized path.
        self._forced_reason = FallbackReason.SHADOW_DIVERGENCE
        return memoryview(expected_body), header.record_count

    def _sync_published(self) -> bool:
        """fsync=normal: fsync what was written without it. False (log broken) on failure.
        The caller holds ``_publish_lock``."""
        self._unsynced = False
        try:
            count = self._writer.sync()
        except OSError as error:
            self._break(f"fsync of written segments failed ({error}); they may not survive "
                        "a power loss; reopen the log", error)
            return False
        with self._durable_cv:
            self._counters.fsync_count += count
        self._last_sync_at = self._clock()
        return True

    def _mark_durable(self, placed: _PlacedEpoch, times: WriteTimes | None = None) -> None:
        """The segment of ``placed`` is published (its write took ``times``): count it, tell
        the sequencer, which extends the durable prefix (invariant 3), and release the waiters
        it hands back, all in one round trip of ``_durable_cv``."""
        sealed = placed.sealed
        with self._durable_cv:
            if times is not None:
                counters = self._counters
                counters.epochs_sealed += 1
                counters.records_written += placed.record_count
                counters.bytes_written += placed.placement.span
                seconds = times.seconds
                if times.durable:
                    counters.fsync_count += 1
                    counters.fsync_seconds_total += seconds
                    if seconds > counters.fsync_seconds_max:
                        counters.fsync_seconds_max = seconds
                    counters.last_epoch_fsync_seconds = seconds
                else:
                    counters.write_seconds_total += seconds
                    counters.last_epoch_write_seconds = seconds
                counters.seal_seconds_total += sealed.seal_seconds
                counters.last_epoch_seal_seconds = sealed.seal_seconds
            progress = self._sequencer.completed(sealed.epoch)
            if progress.durable is not None:
                self._durable_cv.notify_all()
        for waiter in progress.release:
            waiter.release()

    def _break(self, message: str, cause: BaseException, *, epoch: int | None = None) -> None:
        """Invariant 6: fail closed. Nothing later is acknowledged; every waiter is told now.
        ``epoch``: the sealed epoch whose write or sync failed, if that is what broke."""
        with self._durable_cv:
            sequencer = self._sequencer
            progress = (sequencer.fail(message, cause) if epoch is None
                        else sequencer.failed(epoch, message, cause))
            self._durable_cv.notify_all()
        for waiter in progress.release:
            waiter.release()
        with self._space_cv:
            self._space_cv.notify_all()
