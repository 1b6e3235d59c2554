"""Per-lane staging buffers. Pure in-memory state; the log's locking protocol lives in _wal.

A lane owns two preallocated buffers (double buffering): writers encode commits straight into
the active one; sealing swaps it for the other and hands the filled one, as a memoryview, to
``os.writev``. The ticker publishes epochs one at a time, so the handed-off buffer is written
before the lane can fill and hand back the other one: no copy, no allocation per epoch.
Buffers are allocated when a lane is first used, so idle lanes cost nothing.
"""

from __future__ import annotations

import threading

import attrs

from ._codec import Commit, encode_commit_into


@attrs.frozen(eq=False)
class LaneSnapshot:
    """What one lane staged in a sealed epoch."""

    body: memoryview
    records: int
    commits: int
    shadow: list[tuple[int, int, Commit]]


class Lane:
    """A staging buffer of ``capacity`` bytes per epoch. Mutate only while holding ``lock``."""

    __slots__ = ("_buffers", "_shadow", "capacity", "commits", "lane_id", "lock", "records",
                 "used")

    def __init__(self, lane_id: int, capacity: int) -> None:
        self.lane_id = lane_id
        self.capacity = capacity
        self.lock = threading.Lock()
        self.used = 0
        self.records = 0
        self.commits = 0
        self._buffers: list[memoryview] = []
        self._shadow: list[tuple[int, int, Commit]] = []

    def fits(self, commit: Commit) -> bool:
        """Whether ``commit`` fits in what is left of this epoch's buffer."""
        return self.used + commit.encoded_size <= self.capacity

    def prepare(self) -> None:
        """Allocate both buffers (once), so that :meth:`append` allocates nothing."""
        if not self._buffers:
            self._buffers = [memoryview(bytearray(self.capacity)) for _ in range(2)]

    def append(self, commit: Commit, commit_seq: int, *, shadow_copy: Commit | None) -> None:
        """Encode ``commit`` into the active buffer; the caller checked :meth:`fits` and called
        :meth:`prepare`. ``shadow_copy`` is kept for this epoch's shadow compare, if any."""
        self.used = encode_commit_into(self._buffers[0], self.used, commit,
                                       commit_seq=commit_seq, lane_id=self.lane_id)
        self.records += len(commit.pages)
        self.commits += 1
        if shadow_copy is not None:
            self.capture_shadow(commit_seq, shadow_copy)

    def capture_shadow(self, commit_seq: int, commit: Commit) -> None:
        """Record a detached copy of a commit staged in this epoch, for its shadow compare."""
        self._shadow.append((commit_seq, self.lane_id, commit))

    def swap(self) -> LaneSnapshot:
        """Hand off what is staged and start the next epoch in the other buffer."""
        body = self._buffers[0][: self.used] if self._buffers else memoryview(b"")
        snapshot = LaneSnapshot(body=body, records=self.records, commits=self.commits,
                                shadow=self._shadow)
        self._buffers.reverse()
        self.used = 0
        self.records = 0
        self.commits = 0
        self._shadow = []
        return snapshot


def detached(commit: Commit) -> Commit:
    """A copy of ``commit`` that no longer refers to the caller's (mutable) buffers."""
    pages = tuple((page_no, memoryview(bytes(image))) for page_no, image in commit.pages)
    return attrs.evolve(commit, pages=pages)
