"""Deliberately broken logs. The harness must report violations for each; a harness that has
never caught a bug proves nothing. Never use these for data."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import attrs

from .. import _layout, _logreader
from .._chain import RecoveryResult
from .._checkpoint import CheckpointResult
from .._codec import ChainPosition, Commit, SegmentHeader
from .._config import WalConfig
from .._errors import CorruptSegmentError
from .._fs import Buffer, FileSystem
from .._lanes import Lane
from .._layout import LogFileHeader, LogFiles, ShutdownMarker
from .._pager import WalPager
from .._sequencer import Progress, Sequencer
from .._stats import Ticket
from .._wal import Wal, _PlacedEpoch, _SealedEpoch
from .._writer import LogWriter, Placement, WriteTimes


class _NoDirectorySync:
    """A file system whose directory fsync does nothing."""

    def __init__(self, inner: FileSystem) -> None:
        self._inner = inner

    def fsync_dir(self, directory: str) -> None:
        pass

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)


class _NoFsyncOf:
    """A file system that does not fsync one descriptor."""

    def __init__(self, inner: FileSystem, fd: int) -> None:
        self._inner = inner
        self._fd = fd

    def fsync(self, fd: int) -> None:
        if fd != self._fd:
            self._inner.fsync(fd)

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)


class SkipsDirectoryFsync(Wal):
    """Publishes into a log file whose directory entry is not yet durable: files are made
    ready without fsyncing their directory, so a power loss can undo a new file's name, and
    with it the acknowledged commits written into the file."""

    REOPENS_AS_ITSELF = True  # the harness reopens crashed states with this class too

    def _new_writer(self, fs: FileSystem, files: LogFiles, config: WalConfig,
                    recovery: RecoveryResult) -> LogWriter:
        return super()._new_writer(_NoDirectorySync(fs), files, config,  # type: ignore[arg-type]
                                   recovery)


class AcksBeforeFsync(Wal):
    """Marks the epoch durable before writing its segment."""

    def _write_segment(self, placed: _PlacedEpoch) -> WriteTimes:
        Wal._mark_durable(self, placed)
        return super()._write_segment(placed)

    def _mark_durable(self, placed: _PlacedEpoch, times: WriteTimes | None = None) -> None:
        if self.durable_position.epoch < placed.sealed.epoch:
            super()._mark_durable(placed, times)


class CommitStraddlesEpochs(Wal):
    """The seed's race: the epoch is read before the lane lock, so a seal can slip in and the
    commit's records land in the next epoch while its ticket names the sealed one.

    The race is made to happen, not hoped for: a commit that finds something staged seals the
    open epoch itself before staging (under ``_publish_lock``, as a leading committer does),
    so its ticket names a durable epoch while its records wait in a later one. Until the first
    such commit, a commit that finds nothing staged holds the seal of its epoch until the next
    commit arrives, so there is always something to seal; and the epoch holding the first
    straddling commit is not sealed until that commit is waited on, so the acknowledgement is
    observed before the epoch carrying its records is published. No timing is involved (the
    harness's waits time out only to go on past a held commit); :meth:`close` releases any
    hold.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._gate = threading.Condition(threading.Lock())
        self._held = False  # no seal may start while set
        self._released = False  # set once close() begins: nothing is held from then on
        self._claimed = False  # a commit has begun to straddle (only the first is held)
        self._straddler: int | None = None  # its commit_seq, once staged

        super().__init__(*args, **kwargs)

    def _stage_parallel(self, lane: Lane, commit: Commit) -> Ticket | None:
        epoch = self._open_epoch
        with self._seq_lock:
            staged = self._next_seq - self._epoch_first_seq
        first = False
        if staged:
            with self._gate:
                first, self._claimed = not self._claimed, True
                if first:
                    self._held = False  # the commit held for this one may be sealed now
                    self._gate.notify_all()
            placed = None
            with self._publish_lock:  # the seal slips in between reading the epoch and staging
                if self._open_epoch == epoch:
                    placed = self._seal_and_place()
                if first:
                    with self._gate:
                        self._held = True  # until this commit is waited on
            if placed is not None:
                self._write_and_complete(placed)
        else:
            with self._gate:
                if not self._claimed:
                    self._held = True  # keep this commit staged until the next one arrives
        ticket = super()._stage_parallel(lane, commit)
        with self._gate:
            if first and ticket is None:  # it takes the serialized path: let the next one try
                self._claimed = self._held = False
                self._gate.notify_all()
            elif first and ticket is not None:
                self._straddler = ticket.commit_seq
        return None if ticket is None else attrs.evolve(ticket, epoch=epoch)

    def _seal(self) -> _SealedEpoch | None:
        with self._gate:
            while self._held and not self._released:
                self._gate.wait()
        return super()._seal()

    def _commit_alone(self, commit: Commit) -> Ticket | None:
        return None  # every commit is staged, where the race is

    def wait_durable(self, ticket: Ticket, timeout: float | None = None) -> None:
        with self._gate:
            # A wait without a timeout could otherwise wait on its own held commit forever.
            if ticket.commit_seq == self._straddler or (timeout is None and not self._claimed):
                self._held = False
                self._gate.notify_all()
        super().wait_durable(ticket, timeout)

    def close(self) -> None:
        with self._gate:
            self._released = True  # before close seals the last epoch: no hold outlives it
            self._held = False
            self._gate.notify_all()
        super().close()


class _HighWaterMarkSequencer(Sequencer[threading.Lock]):
    """Completing an epoch makes it and every earlier sealed epoch durable."""

    def completed(self, epoch: int) -> Progress[threading.Lock]:
        for earlier in [e for e in self._pending if e < epoch]:
            super().completed(earlier)
        return super().completed(epoch)


class HighWaterMarkDurability(Wal):
    """Treats durability as a high-water mark: a failed epoch is skipped, the log goes on, and
    the next epoch's success acknowledges the failed one's commits too."""

    def _new_sequencer(self, durable: ChainPosition) -> Sequencer[threading.Lock]:
        # No limit: the failed epochs stay in flight, and the next success acknowledges them.
        return _HighWaterMarkSequencer(durable, inflight_limit=2**62)

    def _write_and_complete(self, placed: _PlacedEpoch) -> bool:
        super()._write_and_complete(placed)
        return True

    def _break(self, message: str, cause: BaseException, *, epoch: int | None = None) -> None:
        pass


class _OutOfOrderSequencer(Sequencer[threading.Lock]):
    """An epoch that completes is acknowledged at once, with every earlier one still in
    flight: the durable position jumps to it (no prefix rule)."""

    def completed(self, epoch: int) -> Progress[threading.Lock]:
        if epoch <= self.durable.epoch:
            return Progress(None, ())  # already acknowledged before its write completed
        for earlier in [e for e in self._pending if e < epoch]:
            commit_seq_hi, _ = self._pending[earlier]
            self._pending[earlier] = (commit_seq_hi, True)  # not written: taken as done
        return super().completed(epoch)


class AcksOutOfPrefixOrder(Wal):
    """Acknowledges an epoch whose write completed before an earlier epoch's: the earlier
    one's commits, and its own, are reported durable while the earlier write is still in
    flight (a power loss then leaves a hole before acknowledged commits).

    Completion out of order is made to happen, not hoped for: epoch 3's write is handed to
    a thread of its own that waits until a later epoch's write has completed (or close
    begins), while the log goes on sealing and writing later epochs."""

    _HELD = 3

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._gate = threading.Condition(threading.Lock())
        self._later_done = False
        self._held: threading.Thread | None = None
        super().__init__(*args, **kwargs)

    def _new_sequencer(self, durable: ChainPosition) -> Sequencer[threading.Lock]:
        # Later epochs are sealed and written while epoch 3 is held, whatever their size.
        return _OutOfOrderSequencer(durable, inflight_limit=self._config.inflight_epochs)

    def _write_and_complete(self, placed: _PlacedEpoch) -> bool:
        epoch = placed.sealed.epoch
        if epoch == self._HELD:
            self._held = threading.Thread(target=self._write_when_overtaken, args=(placed,),
                                          daemon=True)
            self._held.start()
            return True
        done = super()._write_and_complete(placed)
        if epoch > self._HELD:
            with self._gate:
                self._later_done = True
                self._gate.notify_all()
        return done

    def _write_when_overtaken(self, placed: _PlacedEpoch) -> None:
        with self._gate:
            while not self._later_done:
                self._gate.wait()
        super()._write_and_complete(placed)

    def close(self) -> None:
        with self._gate:
            self._later_done = True
            self._gate.notify_all()
        if self._held is not None:
            self._held.join()
        super().close()


class _ZeroAckedLogWriter(LogWriter):
    def segment(self, placement: Placement, body: Sequence[Buffer], **fields: Any
                ) -> list[Buffer]:
        return super().segment(placement, body, **{**fields, "acked_epoch": 0})


class LeavesAckedEpochZero(Wal):
    """Writes ``acked_epoch = 0`` in every segment header (Pebble PR #6031's bug): nothing
    on disk proves an epoch was acknowledged, so damage to an acknowledged segment with later
    segments after it reads as a torn tail and its commits are silently dropped."""

    REOPENS_AS_ITSELF = True  # the harness reopens crashed states with this class too

    def _new_writer(self, fs: FileSystem, files: LogFiles, config: WalConfig,
                    recovery: RecoveryResult) -> LogWriter:
        return _ZeroAckedLogWriter(fs, files, config, recovery)


class AppendsAfterTornTail(Wal):
    """After a crash, continues in the file it was writing, at the end of the valid chain
    (over the torn tail), instead of in a fresh file whose header durably discards it."""

    REOPENS_AS_ITSELF = True  # the harness reopens crashed states with this class too

    def _new_writer(self, fs: FileSystem, files: LogFiles, config: WalConfig,
                    recovery: RecoveryResult) -> LogWriter:
        scan = recovery.log_scan
        if scan is not None and scan.end is not None and not scan.clean_shutdown:
            recovery = attrs.evolve(recovery, log_scan=attrs.evolve(scan, clean_shutdown=True))
        return super()._new_writer(fs, files, config, recovery)


def _identity_ignoring_salt_and_file_no(
    header: SegmentHeader | ShutdownMarker, file_header: LogFileHeader, path: str, offset: int
) -> None:
    if header.log_id != file_header.log_id:
        raise CorruptSegmentError(path, offset + 56, "a segment of another log")


@contextlib.contextmanager
def stale_segment_reader() -> Iterator[None]:
    """While active, every log reader of this process (recovery, the pager's checkpoints)
    checks only a segment's log id, not its file_no and salt: a segment from a recycled
    file's earlier life, or from another file, is taken for this file's own."""
    with _LAX_READER_LOCK:
        # _logreader imported the check by name: both module attributes are swapped.
        saved = (_layout.check_identity, _logreader.check_identity)  # type: ignore[attr-defined]
        _layout.check_identity = _identity_ignoring_salt_and_file_no
        _logreader.check_identity = _identity_ignoring_salt_and_file_no  # type: ignore[attr-defined]
        try:
            yield
        finally:
            _layout.check_identity = saved[0]
            _logreader.check_identity = saved[1]  # type: ignore[attr-defined]


_LAX_READER_LOCK = threading.Lock()


MUTANTS: dict[str, type[Wal]] = {
    "skips-directory-fsync": SkipsDirectoryFsync,
    "acks-before-fsync": AcksBeforeFsync,
    "commit-straddles-epochs": CommitStraddlesEpochs,
    "high-water-mark-durability": HighWaterMarkDurability,
    "acks-out-of-prefix-order": AcksOutOfPrefixOrder,
    "appends-after-torn-tail": AppendsAfterTornTail,
    "leaves-acked-epoch-zero": LeavesAckedEpochZero,
}
"""Each broken log, by the name ``pagewal crash-test --mutant`` takes."""

READER_MUTANTS: dict[str, Callable[[], contextlib.AbstractContextManager[None]]] = {
    "accepts-stale-segment": stale_segment_reader,
}
"""Each broken reader: while its context is active, the harness's recoveries use it."""


class CheckpointSkipsDataFsync(WalPager):
    """Records the checkpoint and deletes segments without fsyncing the data file first: a
    power loss can then lose checkpointed pages whose only other copy was deleted."""

    def _run_checkpoint(
        self, fs: FileSystem, target: ChainPosition, recovered: RecoveryResult | None
    ) -> CheckpointResult:
        return super()._run_checkpoint(_NoFsyncOf(fs, self._data_fd), target,  # type: ignore[arg-type]
                                       recovered)


PAGER_MUTANTS: dict[str, type[WalPager]] = {
    "checkpoint-skips-data-fsync": CheckpointSkipsDataFsync,
}
"""Each broken pager, by the name ``pagewal crash-test --mutant`` takes."""

