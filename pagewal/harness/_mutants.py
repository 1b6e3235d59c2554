"""Deliberately broken logs. The harness must report violations for each; a harness that has
never caught a bug proves nothing. Never use these for data."""

from __future__ import annotations

import time

from .._chain import RecoveryResult
from .._checkpoint import CheckpointResult
from .._codec import ChainPosition, Commit
from .._fs import FileSystem, PublishTimes, publish_atomically
from .._lanes import Lane
from .._pager import WalPager
from .._stats import Ticket
from .._wal import Wal, _SealedEpoch


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
    """Acknowledges after the rename without fsyncing the directory: a power loss can undo
    the rename, and with it acknowledged commits."""

    def _write_segment(
        self, sealed: _SealedEpoch, name: str, buffers: list[bytes | memoryview]
    ) -> PublishTimes:
        fs = _NoDirectorySync(self._fs)
        return publish_atomically(fs, self._files.directory, name, buffers,  # type: ignore[arg-type]
                                  sync=True, fd=self._precreator.take(sealed.epoch))


class AcksBeforeFsync(Wal):
    """Marks the epoch durable before writing its segment."""

    def _write_segment(
        self, sealed: _SealedEpoch, name: str, buffers: list[bytes | memoryview]
    ) -> PublishTimes:
        Wal._mark_durable(self, sealed)
        return super()._write_segment(sealed, name, buffers)

    def _mark_durable(self, sealed: _SealedEpoch) -> None:
        if self._durable.epoch < sealed.epoch:
            super()._mark_durable(sealed)


class CommitStraddlesEpochs(Wal):
    """The seed's race: the epoch is read before the lane lock, so a seal can slip in and the
    commit's records land in the next epoch while its ticket names the sealed one."""

    def _stage_parallel(self, lane: Lane, commit: Commit) -> Ticket | None:
        epoch = self._open_epoch
        # Let the seal slip in whenever there is something to seal (a busy interpreter would
        # do so now and then; here it happens every time, so the harness is tested reliably).
        with self._seq_lock:
            staged = self._next_seq - self._epoch_first_seq
        if staged:
            self._request_seal()
            deadline = time.monotonic() + 0.05
            while self._open_epoch == epoch and time.monotonic() < deadline:
                time.sleep(0.0005)
        ticket = super()._stage_parallel(lane, commit)
        return None if ticket is None else Ticket(ticket.commit_seq, epoch)


class HighWaterMarkDurability(Wal):
    """Treats durability as a high-water mark: a failed epoch is skipped, the log goes on, and
    the next epoch's success acknowledges the failed one's commits too."""

    def _publish(self, sealed: _SealedEpoch) -> bool:
        super()._publish(sealed)
        return True

    def _break(self, message: str, cause: BaseException) -> None:
        pass

    def _mark_durable(self, sealed: _SealedEpoch) -> None:
        with self._durable_cv:
            self._durable = ChainPosition(sealed.epoch, sealed.commit_seq_hi)
            self._durable_cv.notify_all()


MUTANTS: dict[str, type[Wal]] = {
    "skips-directory-fsync": SkipsDirectoryFsync,
    "acks-before-fsync": AcksBeforeFsync,
    "commit-straddles-epochs": CommitStraddlesEpochs,
    "high-water-mark-durability": HighWaterMarkDurability,
}
"""Each broken log, by the name ``pagewal crash-test --mutant`` takes."""


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

