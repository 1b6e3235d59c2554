"""Value objects a running log hands out (tickets, statistics, fallback reasons) and the
counters behind its statistics."""

from __future__ import annotations

import enum
from collections.abc import Mapping

import attrs


class FallbackReason(enum.StrEnum):
    """Why a commit took the serialized path, or a writer waited (stable names, DESIGN §6)."""

    OPERATOR_FORCED = "operator_forced"  # conservative mode was configured
    LANE_OVERFLOW = "lane_overflow"  # the thread's lane had no room left in this epoch
    OVERSIZED_COMMIT = "oversized_commit"  # larger than max_batch_bytes
    SHADOW_DIVERGENCE = "shadow_divergence"  # shadow compare failed; the log went conservative
    BACKPRESSURE = "backpressure"  # staging memory was full; the writer waited for a seal


@attrs.frozen
class Ticket:
    """Identifies a staged commit: its ``commit_seq``, the ``epoch`` that will carry it, and
    the ``log_id`` of the log that staged it (DESIGN §1), so that a ticket is never taken for
    one of another log with the same numbers."""

    commit_seq: int
    epoch: int
    log_id: bytes = attrs.field(default=bytes(16), repr=False)


@attrs.define(kw_only=True)
class Counters:
    """What the publisher of a log counts as it goes (mutable; times in seconds).

    :class:`WalStats` is a frozen snapshot of these fields plus the log's state, so each
    counter is declared once, here.
    """

    epochs_sealed: int = 0
    records_written: int = 0
    bytes_written: int = 0
    fsync_count: int = 0
    fsync_seconds_total: float = 0.0
    fsync_seconds_max: float = 0.0
    seal_seconds_total: float = 0.0
    write_seconds_total: float = 0.0
    last_epoch_seal_seconds: float = 0.0
    last_epoch_write_seconds: float = 0.0
    last_epoch_fsync_seconds: float = 0.0
    shadow_compares: int = 0
    shadow_divergences: int = 0


@attrs.frozen(kw_only=True)
class WalStats(Counters):
    """A snapshot of a log's counters (``Wal.statistics()``, the fields of :class:`Counters`)
    and of its state; times are in seconds."""

    mode: str
    lanes: int
    open_epoch: int
    durable_epoch: int
    durable_commit_seq: int
    commits_staged: int
    segments_written: int
    fallbacks: Mapping[str, int]
    lane_backlog_bytes: tuple[int, ...]
    serialized_backlog_bytes: int
    last_shadow_divergence: str | None
    broken: bool
    closed: bool
    # Format 2 log files (DESIGN §4.1, §6).
    epochs_in_flight: int = 0  # sealed, not yet in the durable prefix
    log_file_waits: int = 0  # times an epoch waited for a ready log file (commit-path stalls)
    log_file_wait_seconds: float = 0.0
    log_files_created: int = 0  # zero-filled and made ready by the pool thread
    log_files_recycled: int = 0  # retired files given a new number and salt
    oversized_log_files: int = 0  # an epoch larger than a log file got a file of its own
    torn_tails_discarded: int = 0  # 1 if this open discarded a torn tail (DESIGN §4.4)
