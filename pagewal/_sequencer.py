"""The log's sequencer: lifecycle, epochs in flight and prefix durability, as pure state.

No threads, locks, clocks or I/O: the :class:`~pagewal._wal.Wal` drives it (under one lock of
its own) and does whatever it hands back, such as releasing waiters, outside that lock. So
everything hard about acknowledging commits can be tested by calling methods in any order.

Invariants it holds, whatever order its driver reports events in:

* Invariant 3 (a durable prefix): epochs are sealed in strictly increasing order, each chained
  on the epoch sealed before it, and may complete in any order; :attr:`Sequencer.durable`
  only moves forward, one contiguous run of completed epochs at a time, and never past an
  epoch whose write has not completed. It is never a high-water mark.
* Invariant 6 (a write or sync failure is fatal): once :meth:`Sequencer.fail` (or
  :meth:`Sequencer.failed`) ran, nothing more becomes durable or is acknowledged, a later
  completion changes nothing, and every waiter is handed back at once to be told.
* At most ``inflight_limit`` sealed epochs lie beyond the durable prefix.

The lifecycle is the table :data:`TRANSITIONS`; anything else raises
:class:`SequencerError` (a bug in the driver, never a condition to handle).
"""

from __future__ import annotations

import enum
from typing import Generic, TypeVar

import attrs

from ._codec import ChainPosition
from ._errors import BrokenLogError

Token = TypeVar("Token")


class LogState(enum.Enum):
    OPEN = "open"  # takes commits; epochs are sealed and completed
    CLOSING = "closing"  # close() began: no new commits, the last epochs are still published
    CLOSED = "closed"  # close() finished; nothing more happens
    BROKEN = "broken"  # a write, sync or staging failed: nothing more is acknowledged


class Event(enum.Enum):
    BEGIN_CLOSE = "begin_close"
    FINISH_CLOSE = "finish_close"
    FAIL = "fail"


TRANSITIONS: dict[tuple[LogState, Event], LogState] = {
    (LogState.OPEN, Event.BEGIN_CLOSE): LogState.CLOSING,
    (LogState.OPEN, Event.FAIL): LogState.BROKEN,
    (LogState.CLOSING, Event.FINISH_CLOSE): LogState.CLOSED,
    (LogState.CLOSING, Event.FAIL): LogState.BROKEN,
    # The first failure is the one reported; later ones change nothing.
    (LogState.BROKEN, Event.FAIL): LogState.BROKEN,
    # A broken log is still closed (its lock released); it stays broken until then.
    (LogState.BROKEN, Event.BEGIN_CLOSE): LogState.BROKEN,
    (LogState.BROKEN, Event.FINISH_CLOSE): LogState.CLOSED,
    # A failure reported after close finished is kept for statistics; nothing is pending.
    (LogState.CLOSED, Event.FAIL): LogState.CLOSED,
}
"""Every legal ``(state, event) -> next state``."""


class SequencerError(AssertionError):
    """The driver broke the sequencer's protocol (an illegal transition, an epoch out of order,
    too many epochs in flight): a bug, never an I/O condition."""


@attrs.frozen
class Progress(Generic[Token]):
    """What an event changed: the new durable position (None if it did not move) and the
    waiters' tokens to release now."""

    durable: ChainPosition | None
    release: tuple[Token, ...]


class Sequencer(Generic[Token]):
    """Lifecycle, sealed epochs, prefix durability and waiters of one log.

    ``durable``: where the durable prefix ended when the log was opened (recovery's last
    position). ``inflight_limit``: how many sealed epochs may lie beyond the durable prefix.
    Waiter tokens are opaque: the driver gets them back to release.
    """

    def __init__(self, durable: ChainPosition, *, inflight_limit: int,
                 batched_limit: int | None = None, single_limit: int | None = None) -> None:
        for name, value in (("inflight_limit", inflight_limit), ("batched_limit", batched_limit),
                            ("single_limit", single_limit)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, not {value}")
        self.inflight_limit = inflight_limit
        # Within the hard limit: how many epochs may be in flight when the last sealed epoch
        # held several commits (batched) or one (single); see can_seal.
        self._batched_limit = min(inflight_limit, batched_limit or inflight_limit)
        self._single_limit = min(inflight_limit, single_limit or inflight_limit)
        self._last_batched = False
        self._state = LogState.OPEN
        self._close_begun = False
        self._broken: tuple[str, BaseException] | None = None
        self._durable = durable
        self._sealed = durable  # the last sealed epoch and its commit_seq_hi
        # Sealed epochs beyond the durable prefix, ascending: epoch -> (commit_seq_hi, done).
        self._pending: dict[int, tuple[int, bool]] = {}
        self._waiters: dict[int, list[Token]] = {}

    # ------------------------------------------------------------------ queries

    @property
    def state(self) -> LogState:
        return self._state

    @property
    def closing(self) -> bool:
        """Whether close has begun (also for a broken log): no new commits may be staged."""
        return self._close_begun

    @property
    def broken(self) -> tuple[str, BaseException] | None:
        """``(message, cause)`` of the first failure, or None."""
        return self._broken

    @property
    def durable(self) -> ChainPosition:
        """The end of the durable prefix: its last epoch and commit_seq."""
        return self._durable

    @property
    def acked_epoch(self) -> int:
        """The highest epoch reported durable (what a segment header records as acked)."""
        return self._durable.epoch

    @property
    def sealed(self) -> ChainPosition:
        """The last sealed epoch and its last commit_seq: the next epoch chains on it."""
        return self._sealed

    @property
    def inflight(self) -> int:
        """Sealed epochs not yet in the durable prefix (completed out of order or not)."""
        return len(self._pending)

    def can_seal(self) -> bool:
        """Whether an epoch may be sealed now: never beyond ``inflight_limit`` epochs in
        flight (invariant 3's window), and within it ``batched_limit`` after an epoch of
        several commits, ``single_limit`` after an epoch of one. A driver whose commits come
        in groups then writes one epoch at a time, so the next one gathers every commit staged
        meanwhile, while single commits still overlap."""
        limit = self._batched_limit if self._last_batched else self._single_limit
        return self._state in (LogState.OPEN, LogState.CLOSING) and len(self._pending) < limit

    # ------------------------------------------------------------------ lifecycle

    def _transition(self, event: Event) -> None:
        try:
            self._state = TRANSITIONS[self._state, event]
        except KeyError:
            raise SequencerError(f"{event.value} is illegal in state {self._state.value}") from None

    def begin_close(self) -> None:
        """close() began: nothing more may be staged; sealed epochs still complete."""
        if self._close_begun:
            raise SequencerError("close has already begun")
        self._transition(Event.BEGIN_CLOSE)
        self._close_begun = True

    def finish_close(self) -> None:
        """close() finished: the last epoch was published (or the log is broken)."""
        if not self._close_begun:
            raise SequencerError("finish_close before begin_close")
        self._transition(Event.FINISH_CLOSE)

    def fail(self, message: str, cause: BaseException) -> Progress[Token]:
        """Invariant 6: break for good. Returns every waiter, to be told at once."""
        self._transition(Event.FAIL)
        if self._broken is None:
            self._broken = (message, cause)
        waiters = tuple(token for tokens in self._waiters.values() for token in tokens)
        self._waiters.clear()
        return Progress(None, waiters)

    def failed(self, epoch: int, message: str, cause: BaseException) -> Progress[Token]:
        """Writing (or syncing) sealed epoch ``epoch`` failed: :meth:`fail`."""
        if epoch > self._sealed.epoch:
            raise SequencerError(f"epoch {epoch} failed but was never sealed")
        return self.fail(message, cause)

    # ------------------------------------------------------------------ epochs

    def seal(self, epoch: int, prev_epoch: int, commit_seq_hi: int) -> None:
        """Register sealed epoch ``epoch`` (commits up to ``commit_seq_hi``), chained on
        ``prev_epoch``, the epoch sealed before it."""
        if not self.can_seal():
            raise SequencerError(
                f"cannot seal epoch {epoch}: state {self._state.value}, "
                f"{len(self._pending)} of {self.inflight_limit} epochs in flight")
        last = self._sealed
        if prev_epoch != last.epoch or epoch <= last.epoch or commit_seq_hi <= last.commit_seq:
            raise SequencerError(
                f"epoch {epoch} (prev {prev_epoch}, commits to {commit_seq_hi}) does not "
                f"follow epoch {last.epoch} (commits to {last.commit_seq})")
        self._pending[epoch] = (commit_seq_hi, False)
        self._last_batched = commit_seq_hi - last.commit_seq > 1
        self._sealed = ChainPosition(epoch, commit_seq_hi)

    def completed(self, epoch: int) -> Progress[Token]:
        """Sealed epoch ``epoch`` is written durably. Invariant 3: the durable position moves
        only over the contiguous run of completed epochs after it; the waiters of every epoch
        it passes are handed back. A broken sequencer acknowledges nothing."""
        if self._broken is not None:
            return Progress(None, ())
        pending = self._pending
        entry = pending.get(epoch)
        if entry is None or entry[1]:
            raise SequencerError(f"epoch {epoch} completed but is not in flight")
        pending[epoch] = (entry[0], True)
        # The run of completed epochs at the front (dicts keep insertion order, and epochs
        # are sealed ascending) joins the durable prefix; usually just this epoch.
        last_epoch = last_seq = 0
        while pending:
            oldest = next(iter(pending))
            commit_seq_hi, done = pending[oldest]
            if not done:
                break
            del pending[oldest]
            last_epoch, last_seq = oldest, commit_seq_hi
        if not last_epoch:
            return Progress(None, ())  # an earlier epoch is still being written
        durable = self._durable = ChainPosition(last_epoch, last_seq)
        waiters = self._waiters
        if not waiters:
            return Progress(durable, ())
        ready = [e for e in waiters if e <= last_epoch]
        return Progress(durable, tuple(t for e in ready for t in waiters.pop(e)))

    # ------------------------------------------------------------------ waiters

    def add_waiter(self, epoch: int, token: Token) -> bool:
        """Register ``token`` to be handed back once ``epoch`` is durable. False if it already
        is (nothing registered); raises :class:`BrokenLogError` if the log broke first."""
        if epoch <= self._durable.epoch:
            return False
        if self._broken is not None:
            message, cause = self._broken
            raise BrokenLogError(message) from cause
        self._waiters.setdefault(epoch, []).append(token)
        return True

    def remove_waiter(self, epoch: int, token: Token) -> None:
        """Forget ``token`` (its wait timed out); nothing if it was already handed back."""
        tokens = self._waiters.get(epoch)
        if tokens is not None and token in tokens:
            tokens.remove(token)
            if not tokens:
                del self._waiters[epoch]
