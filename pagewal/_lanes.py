"""Per-lane staging buffers. Pure in-memory state; the log's locking protocol lives in _wal.

A lane owns a ring of ``inflight_epochs + 1`` buffers: writers encode commits straight into
the current one; sealing hands it, as a memoryview, to the segment's write and moves on to the
next one in the ring: no copy, no allocation per epoch. The buffer a seal moves on to held
the epoch sealed ``inflight_epochs + 1`` seals earlier, and the log seals an epoch only while
fewer than ``inflight_epochs`` sealed epochs are not yet durable (invariant 3's window), so that
epoch's write has completed and its bytes are no longer needed. (A lane that staged nothing
in an epoch is not swapped: its ring moves only with its own seals, which are at least as far
apart.) Buffers are allocated when
first used, so idle lanes (and ring slots a log never reaches) cost nothing.
"""

from __future__ import annotations

import threading
from typing import NamedTuple

import attrs

from ._codec import Commit, encode_commit_into


class LaneSnapshot(NamedTuple):
    """What one lane staged in a sealed epoch (a tuple: built per lane per seal)."""

    body: memoryview
    records: int
    commits: int
    shadow: list[tuple[int, int, Commit]]


class Lane:
    """A staging buffer of ``capacity`` bytes per epoch. Mutate only while holding ``lock``."""

    __slots__ = ("_buffers", "_current", "_shadow", "capacity", "commits", "lane_id", "lock",
                 "records", "used")

    def __init__(self, lane_id: int, capacity: int, *, ring: int = 2) -> None:
        self.lane_id = lane_id
        self.capacity = capacity
        self.lock = threading.Lock()
        self.used = 0
        self.records = 0
        self.commits = 0
        self._buffers: list[memoryview | None] = [None] * ring
        self._current = 0
        self._shadow: list[tuple[int, int, Commit]] = []

    @property
    def has_staged(self) -> bool:
        """Whether this epoch staged anything here (records, or a serialized-path commit's
        shadow copy)."""
        return bool(self.commits or self._shadow)

    def fits(self, commit: Commit) -> bool:
        """Whether ``commit`` fits in what is left of this epoch's buffer."""
        return self.used + commit.encoded_size <= self.capacity

    def prepare(self) -> None:
        """Allocate the current buffer (once), so that :meth:`append` allocates nothing."""
        if self._buffers[self._current] is None:
            self._buffers[self._current] = memoryview(bytearray(self.capacity))

    def append(self, commit: Commit, commit_seq: int, *, shadow_copy: Commit | None) -> None:
        """Encode ``commit`` into the active buffer; the caller checked :meth:`fits` and called
        :meth:`prepare`. ``shadow_copy`` is kept for this epoch's shadow compare, if any."""
        buffer = self._buffers[self._current]
        assert buffer is not None, "prepare() first"
        self.used = encode_commit_into(buffer, self.used, commit,
                                       commit_seq=commit_seq, lane_id=self.lane_id)
        self.records += len(commit.pages)
        self.commits += 1
        if shadow_copy is not None:
            self.capture_shadow(commit_seq, shadow_copy)

    def capture_shadow(self, commit_seq: int, commit: Commit) -> None:
        """Record a detached copy of a commit staged in this epoch, for its shadow compare."""
        self._shadow.append((commit_seq, self.lane_id, commit))

    def swap(self) -> LaneSnapshot:
        """Hand off what is staged and start the next epoch in the next buffer of the ring."""
        buffer = self._buffers[self._current]
        body = buffer[: self.used] if buffer is not None else memoryview(b"")
        snapshot = LaneSnapshot(body, self.records, self.commits, self._shadow)
        self._current = (self._current + 1) % len(self._buffers)
        self.used = 0
        self.records = 0
        self.commits = 0
        self._shadow = []
        return snapshot


def detached(commit: Commit) -> Commit:
    """A copy of ``commit`` that no longer refers to the caller's (mutable) buffers."""
    pages = tuple((page_no, memoryview(bytes(image))) for page_no, image in commit.pages)
    return attrs.evolve(commit, pages=pages)
