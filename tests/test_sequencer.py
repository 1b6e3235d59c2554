"""The sequencer (``pagewal._sequencer``), driven directly: lifecycle, epochs in flight,
prefix durability (invariant 3) and failure (invariant 6), over random orders of events.

The expected results come from a model written here, not from the module's own table: the
durable position is the end of the longest run of completed epochs after the starting point.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from pagewal import BrokenLogError
from pagewal._codec import ChainPosition
from pagewal._sequencer import LogState, Sequencer, SequencerError

START = ChainPosition(4, 40)


def sealed_sequencer(epochs: list[tuple[int, int]], limit: int = 64) -> Sequencer[str]:
    """A sequencer after ``START`` with ``epochs`` ((epoch, commit_seq_hi), ascending) sealed."""
    sequencer: Sequencer[str] = Sequencer(START, inflight_limit=limit)
    prev = START.epoch
    for epoch, hi in epochs:
        sequencer.seal(epoch, prev, hi)
        prev = epoch
    return sequencer


# ----------------------------------------------------------------------------- examples


def test_after_an_epoch_of_several_commits_one_epoch_is_written_at_a_time() -> None:
    sequencer: Sequencer[str] = Sequencer(START, inflight_limit=4, batched_limit=1,
                                          single_limit=2)
    sequencer.seal(5, 4, 41)  # one commit
    assert sequencer.can_seal()  # single commits overlap: up to two in flight
    sequencer.seal(6, 5, 42)
    assert not sequencer.can_seal()
    sequencer.completed(5)
    sequencer.seal(7, 6, 45)  # three commits: the next epoch waits until nothing is in flight
    assert not sequencer.can_seal()
    sequencer.completed(6)
    assert not sequencer.can_seal()
    sequencer.completed(7)
    assert sequencer.can_seal() and sequencer.durable == ChainPosition(7, 45)


def test_an_epoch_completed_before_an_earlier_one_is_durable_only_with_it() -> None:
    sequencer = sealed_sequencer([(5, 41), (6, 45), (7, 46)])
    sequencer.add_waiter(6, "six")
    assert sequencer.completed(6).durable is None  # epoch 5 is still being written
    assert sequencer.durable == START and sequencer.inflight == 3
    progress = sequencer.completed(5)
    assert progress.durable == ChainPosition(6, 45) == sequencer.durable
    assert progress.release == ("six",)
    assert sequencer.acked_epoch == 6 and sequencer.inflight == 1


def test_a_completion_after_a_failure_acknowledges_nothing() -> None:
    sequencer = sealed_sequencer([(5, 41), (6, 42)])
    sequencer.add_waiter(6, "six")
    broke = sequencer.failed(5, "write failed", OSError(5, "EIO"))
    assert broke.release == ("six",) and sequencer.state is LogState.BROKEN
    progress = sequencer.completed(6)
    assert progress.durable is None and progress.release == ()
    assert sequencer.durable == START


def test_a_waiter_of_a_durable_epoch_need_not_wait_even_on_a_broken_log() -> None:
    sequencer = sealed_sequencer([(5, 41)])
    sequencer.completed(5)
    sequencer.fail("lock lost", OSError(2, "ENOENT"))
    assert sequencer.add_waiter(5, "five") is False


def test_a_waiter_on_a_broken_log_gets_broken_log_error_with_its_cause() -> None:
    sequencer = sealed_sequencer([(5, 41)])
    cause = OSError(5, "EIO")
    sequencer.failed(5, "fsync failed", cause)
    with pytest.raises(BrokenLogError, match="fsync failed") as raised:
        sequencer.add_waiter(5, "five")
    assert raised.value.__cause__ is cause
    assert sequencer.broken == ("fsync failed", cause)


def test_the_first_failure_is_the_one_reported() -> None:
    sequencer: Sequencer[str] = Sequencer(START, inflight_limit=1)
    first = OSError(5, "EIO")
    sequencer.fail("first", first)
    sequencer.fail("second", OSError(28, "ENOSPC"))
    assert sequencer.broken == ("first", first)


def test_the_in_flight_limit_refuses_a_seal_until_the_prefix_advances() -> None:
    sequencer = sealed_sequencer([(5, 41), (6, 42)], limit=2)
    assert not sequencer.can_seal()
    with pytest.raises(SequencerError, match="2 of 2 epochs in flight"):
        sequencer.seal(7, 6, 43)
    sequencer.completed(6)  # out of order: still in flight behind epoch 5
    assert not sequencer.can_seal()
    sequencer.completed(5)
    sequencer.seal(7, 6, 43)


def test_an_epoch_out_of_order_or_off_the_chain_is_refused() -> None:
    sequencer = sealed_sequencer([(5, 41)])
    for epoch, prev, hi in [(5, 5, 42), (6, 4, 42), (6, 5, 41), (3, 5, 42)]:
        with pytest.raises(SequencerError):
            sequencer.seal(epoch, prev, hi)
    assert sequencer.sealed == ChainPosition(5, 41) and sequencer.inflight == 1


def test_completing_an_epoch_not_in_flight_is_refused() -> None:
    sequencer = sealed_sequencer([(5, 41)])
    with pytest.raises(SequencerError):
        sequencer.completed(6)
    sequencer.completed(5)
    with pytest.raises(SequencerError):
        sequencer.completed(5)


def test_closing_runs_open_closing_closed_and_each_step_once() -> None:
    sequencer = sealed_sequencer([(5, 41)])
    with pytest.raises(SequencerError):
        sequencer.finish_close()
    sequencer.begin_close()
    assert sequencer.state is LogState.CLOSING and sequencer.closing
    with pytest.raises(SequencerError):
        sequencer.begin_close()
    sequencer.completed(5)  # the last epoch is still published while closing
    sequencer.seal(6, 5, 42)
    sequencer.completed(6)
    sequencer.finish_close()
    assert sequencer.state is LogState.CLOSED and not sequencer.can_seal()
    with pytest.raises(SequencerError):
        sequencer.seal(7, 6, 43)
    with pytest.raises(SequencerError):
        sequencer.finish_close()


def test_a_broken_log_is_closed_and_stays_reported_broken() -> None:
    sequencer: Sequencer[str] = Sequencer(START, inflight_limit=1)
    sequencer.fail("broken", OSError(5, "EIO"))
    assert not sequencer.can_seal()
    sequencer.begin_close()
    assert sequencer.state is LogState.BROKEN and sequencer.closing
    sequencer.finish_close()
    assert sequencer.state is LogState.CLOSED and sequencer.broken is not None


def test_a_timed_out_waiter_is_forgotten() -> None:
    sequencer = sealed_sequencer([(5, 41)])
    assert sequencer.add_waiter(5, "a") and sequencer.add_waiter(5, "b")
    sequencer.remove_waiter(5, "a")
    sequencer.remove_waiter(5, "a")  # already gone: nothing happens
    assert sequencer.completed(5).release == ("b",)


def test_an_in_flight_limit_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="inflight_limit"):
        Sequencer(START, inflight_limit=0)
    with pytest.raises(ValueError, match="batched_limit"):
        Sequencer(START, inflight_limit=4, batched_limit=0)


# ----------------------------------------------------------------------------- any order


@st.composite
def completion_orders(draw: st.DrawFn) -> tuple[list[tuple[int, int]], list[int], int | None]:
    """Sealed epochs (gaps allowed, >= 1 commit each), a permutation of them to complete in,
    and the step at which a failure is injected (None: no failure)."""
    count = draw(st.integers(1, 10))
    epochs, epoch, hi = [], START.epoch, START.commit_seq
    for _ in range(count):
        epoch += draw(st.integers(1, 3))
        hi += draw(st.integers(1, 5))
        epochs.append((epoch, hi))
    order = draw(st.permutations([e for e, _ in epochs]))
    fail_at = draw(st.none() | st.integers(0, count))
    return epochs, order, fail_at


@given(completion_orders())
def test_durable_is_the_longest_completed_prefix_in_any_completion_order(
    case: tuple[list[tuple[int, int]], list[int], int | None],
) -> None:
    epochs, order, fail_at = case
    sequencer = sealed_sequencer(epochs)
    tokens = {epoch: [f"{epoch}a", f"{epoch}b"] for epoch, _ in epochs}
    for epoch, epoch_tokens in tokens.items():
        for token in epoch_tokens:
            assert sequencer.add_waiter(epoch, token)
    released: list[str] = []
    done: set[int] = set()
    broken = False
    for step, epoch in enumerate(order):
        if step == fail_at:
            progress = sequencer.failed(epoch, "write failed", OSError(5, "EIO"))
            broken = True
            assert progress.durable is None
            # Every waiter not yet released is released by the break, exactly once.
            assert sorted(released + list(progress.release)) == sorted(
                t for ts in tokens.values() for t in ts)
            released += progress.release
            continue
        before = sequencer.durable
        progress = sequencer.completed(epoch)
        if broken:
            assert progress.durable is None and progress.release == ()
            assert sequencer.durable == before
            continue
        done.add(epoch)
        prefix = START
        for sealed_epoch, hi in epochs:
            if sealed_epoch not in done:
                break
            prefix = ChainPosition(sealed_epoch, hi)
        assert sequencer.durable == prefix  # never skips an epoch, never a high-water mark
        assert sequencer.durable.epoch >= before.epoch  # never backwards
        assert progress.durable == (prefix if prefix != before else None)
        assert sorted(progress.release) == sorted(
            t for e, ts in tokens.items() if before.epoch < e <= prefix.epoch for t in ts)
        released += progress.release
    if not broken:
        assert sequencer.durable == ChainPosition(*epochs[-1])
        assert sequencer.inflight == 0
    assert sorted(released) == sorted(t for ts in tokens.values() for t in ts)


# ----------------------------------------------------------------------------- lifecycle


class SequencerMachine(RuleBasedStateMachine):
    """Random interleavings of seals, completions, waiters, failures and closing, checked
    against a model after every step."""

    def __init__(self) -> None:
        super().__init__()
        self.limit = self.batched = self.single = 1
        self.sequencer: Sequencer[int] = Sequencer(START, inflight_limit=1)
        self.sealed: list[tuple[int, int]] = []  # (epoch, commit_seq_hi), ascending
        self.done: set[int] = set()
        self.durable = START
        self.close_begun = self.closed = self.broken = False
        self.waiting: dict[int, int] = {}  # token -> epoch, not yet released
        self.next_token = 0

    @rule(limit=st.integers(1, 4), batched=st.none() | st.integers(1, 4),
          single=st.none() | st.integers(1, 4))
    def restart_with_limit(self, limit: int, batched: int | None, single: int | None) -> None:
        if self.sealed or self.close_begun or self.broken or self.waiting:
            return
        self.limit = limit
        self.batched = limit if batched is None else min(limit, batched)
        self.single = limit if single is None else min(limit, single)
        self.sequencer = Sequencer(START, inflight_limit=limit, batched_limit=batched,
                                   single_limit=single)

    def model_prefix(self) -> ChainPosition:
        position = START
        for epoch, hi in self.sealed:
            if epoch not in self.done:
                break
            position = ChainPosition(epoch, hi)
        return position

    def inflight(self) -> int:
        return sum(1 for epoch, _ in self.sealed if epoch > self.durable.epoch)

    def release(self, tokens: tuple[int, ...], upto: int | None) -> None:
        for token in tokens:
            epoch = self.waiting.pop(token)  # KeyError: released twice or never added
            assert upto is None or epoch <= upto
        if upto is not None:  # nothing that is durable now may still be waiting
            assert all(epoch > upto for epoch in self.waiting.values())

    @rule(gap=st.integers(1, 3), commits=st.integers(1, 4))
    def seal(self, gap: int, commits: int) -> None:
        last_epoch, last_hi = self.sealed[-1] if self.sealed else (START.epoch, START.commit_seq)
        epoch, hi = last_epoch + gap, last_hi + commits
        before_last = self.sealed[-2][1] if len(self.sealed) > 1 else START.commit_seq
        # After an epoch of several commits the batched limit holds, else the single one.
        limit = self.batched if self.sealed and last_hi - before_last > 1 else self.single
        assert limit <= self.limit
        legal = not self.closed and not self.broken and self.inflight() < limit
        assert self.sequencer.can_seal() == legal
        if legal:
            self.sequencer.seal(epoch, last_epoch, hi)
            self.sealed.append((epoch, hi))
        else:
            with pytest.raises(SequencerError):
                self.sequencer.seal(epoch, last_epoch, hi)

    @rule(data=st.data())
    def complete(self, data: st.DataObject) -> None:
        candidates = [e for e, _ in self.sealed if e > self.durable.epoch and e not in self.done]
        if not candidates:
            return
        epoch = data.draw(st.sampled_from(candidates))
        progress = self.sequencer.completed(epoch)
        if self.broken:
            assert progress.durable is None and progress.release == ()
            return
        self.done.add(epoch)
        prefix = self.model_prefix()
        assert progress.durable == (prefix if prefix != self.durable else None)
        self.durable = prefix
        self.release(progress.release, prefix.epoch)

    @rule(ahead=st.integers(0, 4))
    def add_waiter(self, ahead: int) -> None:
        epoch = max(1, self.durable.epoch - 1 + ahead)
        token, self.next_token = self.next_token, self.next_token + 1
        if epoch <= self.durable.epoch:
            assert self.sequencer.add_waiter(epoch, token) is False
        elif self.broken:
            with pytest.raises(BrokenLogError):
                self.sequencer.add_waiter(epoch, token)
        else:
            assert self.sequencer.add_waiter(epoch, token) is True
            self.waiting[token] = epoch

    @rule(data=st.data())
    def remove_waiter(self, data: st.DataObject) -> None:
        if self.waiting:
            token = data.draw(st.sampled_from(sorted(self.waiting)))
            self.sequencer.remove_waiter(self.waiting.pop(token), token)

    @rule(write_failure=st.booleans())
    def fail(self, write_failure: bool) -> None:
        if write_failure and self.sealed:
            progress = self.sequencer.failed(self.sealed[-1][0], "write", OSError(5, "EIO"))
        else:
            progress = self.sequencer.fail("other", RuntimeError("lock lost"))
        self.broken = True
        assert progress.durable is None
        self.release(progress.release, None)
        assert not self.waiting  # every waiter is told at once

    @rule()
    def begin_close(self) -> None:
        if self.close_begun:
            with pytest.raises(SequencerError):
                self.sequencer.begin_close()
        else:
            self.sequencer.begin_close()
            self.close_begun = True

    @rule()
    def finish_close(self) -> None:
        if self.close_begun and not self.closed:
            self.sequencer.finish_close()
            self.closed = True
        else:
            with pytest.raises(SequencerError):
                self.sequencer.finish_close()

    @invariant()
    def matches_the_model(self) -> None:
        sequencer = self.sequencer
        assert sequencer.durable == self.durable
        if not self.broken:
            assert self.durable == self.model_prefix()
        assert sequencer.acked_epoch == self.durable.epoch
        assert sequencer.inflight == self.inflight() <= self.limit
        assert sequencer.closing == self.close_begun
        assert (sequencer.broken is not None) == self.broken
        expected = (LogState.CLOSED if self.closed else LogState.BROKEN if self.broken
                    else LogState.CLOSING if self.close_begun else LogState.OPEN)
        assert sequencer.state is expected


TestSequencerLifecycle = SequencerMachine.TestCase
