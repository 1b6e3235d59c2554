"""The log for trio programs: open it in an ``async with`` block, commit without blocking the loop.

::

    async with pagewal.trio.open_wal(db_path) as wal:
        ticket = await wal.commit({7: image})  # returns once the commit is durable

Everything that can block runs in a worker thread (``trio.to_thread.run_sync``): opening and
recovering, staging (which waits while staging memory is full), waiting for durability and
closing. The event loop keeps running meanwhile.

**Lifetime.** The block opens a nursery whose one task runs the log's epoch ticker (in a
worker thread of its own). Leaving the block closes the log: everything staged is sealed and
published, the ticker task returns, and the lock file is released; only then does the block
exit. Nothing the log started is left running afterwards.

**Cancellation.** Trio's ``Cancelled`` carries no data, so the guarantees are per call:

* :meth:`TrioWal.submit` never abandons staging once it has begun (a staged commit cannot be
  un-staged). If it raises ``Cancelled``, nothing was staged and no ``commit_seq`` was used.
  If it returns a :class:`~pagewal.Ticket`, the commit is staged, even when a cancellation
  arrived meanwhile: that cancellation is raised at the caller's next checkpoint.
* :meth:`TrioWal.wait_durable` and :meth:`TrioWal.flush` may be cancelled at any time, and
  cancelling them changes nothing in the log: a staged commit becomes durable with its epoch
  unless the log breaks first (then it is never acknowledged; recovery may or may not find
  it). Ask :meth:`TrioWal.is_durable`, or wait again.
* :meth:`TrioWal.commit` is :meth:`~TrioWal.submit` then :meth:`~TrioWal.wait_durable`. When it
  is cancelled you cannot tell which of the two was interrupted: the commit may be unstaged
  or staged, and if staged it becomes durable unless the log breaks. A caller that must know
  calls ``submit`` and ``wait_durable`` itself and keeps the ticket.

A cancelled wait abandons its worker thread (``abandon_on_cancel=True``). That thread stops
waiting as soon as the epoch is durable or the log breaks, and leaving the block brings about
one or the other before it exits, so no abandoned wait outlives the block.

**Threads.** Each pending ``submit``, ``wait_durable`` and ``flush`` holds a token of trio's
default thread limiter (``trio.to_thread.current_default_thread_limiter()``, 40 tokens unless
changed) while it blocks; further calls queue for a token. The ticker and the close use a
limiter of their own, so a full default limiter delays commits but never stops epochs from
being sealed.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import final

import trio

from ._chain import RecoveryResult
from ._codec import ChainPosition, PagesInput
from ._config import WalConfig
from ._errors import BrokenLogError
from ._fs import FileSystem
from ._stats import Ticket, WalStats
from ._wal import Wal

__all__ = ["TrioWal", "open_wal"]


def open_wal(
    db_path: str | os.PathLike[str],
    config: WalConfig | None = None,
    *,
    fs: FileSystem | None = None,
    clock: Callable[[], float] = time.monotonic,
    skip_corrupt: bool = False,
) -> AbstractAsyncContextManager[TrioWal]:
    """Open the log of ``db_path`` for the duration of an ``async with`` block.

    Arguments and errors are those of :meth:`pagewal.Wal.open` (recovery runs in a worker
    thread; :attr:`TrioWal.recovery` has its result). A cancellation that arrives before that
    thread starts leaves nothing open; once it has started, opening completes, the block is
    entered and the cancellation is raised at its first checkpoint.

    On leaving the block the log is closed as by :meth:`pagewal.Wal.close`: everything staged
    is published, the ticker task ends and the lock file is released. This step is shielded
    from cancellation, because staged commits must be published (or the log found broken)
    before the lock is released; a disk that stalls therefore stalls the exit. If the log is
    broken, leaving the block raises :class:`~pagewal.BrokenLogError` unless the block already
    raised, whose exception then propagates unchanged (as with ``Wal``'s ``with`` block).
    Exceptions from the block are never wrapped in an ``ExceptionGroup``.
    """
    return _WalBlock(functools.partial(
        Wal.open, db_path, config, fs=fs, clock=clock, skip_corrupt=skip_corrupt,
        start_ticker=False))


@final
class TrioWal:
    """An open log, for trio tasks; get one from :func:`open_wal`, do not construct it.

    Any number of tasks may use it at once. Durability is that of :class:`pagewal.Wal`: with
    ``fsync=full`` (the default) a commit that :meth:`commit` or :meth:`wait_durable` returned
    for survives power loss. The module docstring states what cancelling each call means.
    """

    __slots__ = ("_wal",)

    def __init__(self, wal: Wal) -> None:
        self._wal = wal

    @property
    def recovery(self) -> RecoveryResult:
        """What opening recovered: the durable commits that existed before this block."""
        return self._wal.recovery

    def statistics(self) -> WalStats:
        """A snapshot of the log's counters (:meth:`pagewal.Wal.statistics`); never blocks."""
        return self._wal.statistics()

    def is_durable(self, ticket: Ticket) -> bool:
        """Whether ``ticket``'s commit is durable; never blocks."""
        return self._wal.is_durable(ticket)

    async def submit(
        self, pages: PagesInput, *, db_size_pages: int | None = None, txn_id: int = 0
    ) -> Ticket:
        """Stage a commit and return its ticket, without waiting for durability.

        Arguments and errors are those of :meth:`pagewal.Wal.submit`: ``pages`` is
        ``{page_no: image}`` or ``[(page_no, image), ...]``; :class:`~pagewal.ClosedError`
        after the block has exited, :class:`~pagewal.BrokenLogError` once the log is broken.
        It runs in a worker thread because staging waits while staging memory is full
        (backpressure); another task must not modify the images until it returns.

        Cancellation: raising ``Cancelled`` means nothing was staged; returning a ticket means
        the commit is staged, even if a cancellation arrived while staging (it is raised at
        your next checkpoint).
        """
        stage = functools.partial(self._wal.submit, pages, db_size_pages=db_size_pages,
                                  txn_id=txn_id)
        # Never abandoned: the thread's ticket is the caller's only handle on a staged commit.
        return await trio.to_thread.run_sync(stage, thread_name="pagewal submit")

    async def wait_durable(self, ticket: Ticket) -> None:
        """Wait until ``ticket``'s commit is durable.

        Raises :class:`~pagewal.BrokenLogError` if the log broke first: the commit was never
        acknowledged, and recovery may or may not find it. For a time limit, use a cancel
        scope (``trio.fail_after``). Cancelling the wait leaves the commit staged; it becomes
        durable unless the log breaks. The worker thread of a cancelled wait is abandoned and
        ends when the epoch is durable or the log breaks, at the latest when the block exits.
        """
        if self._wal.is_durable(ticket):
            await trio.lowlevel.checkpoint()
            return
        wait = functools.partial(self._wal.wait_durable, ticket)
        await trio.to_thread.run_sync(wait, thread_name="pagewal wait_durable",
                                      abandon_on_cancel=True)

    async def commit(
        self,
        pages: PagesInput,
        *,
        db_size_pages: int | None = None,
        txn_id: int = 0,
        durable: bool = True,
    ) -> Ticket:
        """Stage a commit and (unless ``durable=False``) wait until it is durable.

        Exactly ``ticket = await submit(...)`` then ``await wait_durable(ticket)``. If it is
        cancelled, the commit may or may not have been staged, and if it was, it becomes
        durable unless the log breaks; call :meth:`submit` and :meth:`wait_durable` yourself
        when you must know which. Staging never continues after the call has ended, so one
        task's commits are staged (and ordered by ``commit_seq``) in the order it made them,
        cancelled or not.
        """
        # Not one abandonable thread for both steps: a cancelled commit still staging in the
        # background could then take a later commit_seq than the task's next commit, and its
        # stale images would win recovery.
        ticket = await self.submit(pages, db_size_pages=db_size_pages, txn_id=txn_id)
        if durable:
            await self.wait_durable(ticket)
        return ticket

    async def flush(self) -> None:
        """Seal now and wait until every commit staged before this call is durable.

        Raises :class:`~pagewal.BrokenLogError` if the log broke first. Cancelling it changes
        nothing in the log; its abandoned worker thread ends as a cancelled
        :meth:`wait_durable`'s does.
        """
        await trio.to_thread.run_sync(self._wal.flush, thread_name="pagewal flush",
                                      abandon_on_cancel=True)

    @property
    def retired_position(self) -> ChainPosition:
        """Where the log's checkpoint record stands (:attr:`pagewal.Wal.retired_position`)."""
        return self._wal.retired_position

    async def retire(self, through: Ticket | ChainPosition) -> ChainPosition:
        """Let the log forget the commits up to ``through`` that you have stored elsewhere.

        :meth:`pagewal.Wal.retire` in a worker thread: the same semantics, errors and return
        value (the position actually retired through; whole segments only). Every commit up
        to ``through`` must be durable in your own store first, including the recovered ones.

        Cancellation: none once it has started. It waits for the commits up to ``through`` to
        be durable (about an epoch, unless the disk stalls), records the checkpoint and
        deletes what it covers, and a cancellation arriving meanwhile is raised at your next
        checkpoint, so whether the record was written is never left unknown.
        """
        retire = functools.partial(self._wal.retire, through)
        return await trio.to_thread.run_sync(retire, thread_name="pagewal retire")


async def _tick(wal: Wal, limiter: trio.CapacityLimiter) -> None:
    """The nursery task that runs the log's ticker until close() stops it or the log breaks."""
    # Shielded: cancelling the ticker would leave staged commits waiting forever; it is
    # stopped by closing the log instead. A ticker that fails has already broken the log with
    # the failure as the cause, so every waiter and the closing block report it as
    # BrokenLogError; raising it here too would cancel the block and wrap its exceptions.
    with trio.CancelScope(shield=True), contextlib.suppress(Exception):
        await trio.to_thread.run_sync(wal.run_ticker, thread_name="pagewal ticker",
                                      limiter=limiter)


@final
class _WalBlock:
    """The ``async with`` block of :func:`open_wal` (one use): a nursery holding the ticker.

    The block's own exceptions never pass through the nursery: the log is closed first, which
    ends the only child task, and the nursery is then exited as if the block had succeeded.
    """

    def __init__(self, open_log: Callable[[], Wal]) -> None:
        self._open_log = open_log
        # Opening, the ticker and closing get threads of their own, so that waiters holding
        # every token of the default limiter can never keep the ticker from sealing.
        self._limiter = trio.CapacityLimiter(2)
        self._wal: Wal | None = None
        self._nursery: AbstractAsyncContextManager[trio.Nursery] | None = None
        self._used = False

    @trio.lowlevel.enable_ki_protection
    async def __aenter__(self) -> TrioWal:
        if self._used:
            raise RuntimeError("open_wal(...) opens one block; call open_wal again to reopen")
        self._used = True
        wal = await trio.to_thread.run_sync(self._open_log, thread_name="pagewal open",
                                            limiter=self._limiter)
        # No checkpoint from here to the end: once the log is open, the ticker task is always
        # started and __aexit__ always runs.
        self._wal = wal
        self._nursery = trio.open_nursery()
        nursery = await self._nursery.__aenter__()
        nursery.start_soon(_tick, wal, self._limiter, name="pagewal ticker")
        return TrioWal(wal)

    @trio.lowlevel.enable_ki_protection
    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._wal is not None and self._nursery is not None
        try:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self._wal.close, thread_name="pagewal close",
                                              limiter=self._limiter)
        except BrokenLogError:
            if exc is None:
                raise  # otherwise the exception already propagating says more
        finally:
            # close() returned after the ticker did; this collects the finished ticker task.
            await self._nursery.__aexit__(None, None, None)
