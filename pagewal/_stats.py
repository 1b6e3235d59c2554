"""Value objects a running log hands out: tickets, statistics, fallback reasons."""

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
    """Identifies a staged commit: its ``commit_seq`` and the ``epoch`` that will carry it."""

    commit_seq: int
    epoch: int


@attrs.frozen(kw_only=True)
class WalStats:
    """A snapshot of a log's counters (``Wal.statistics()``); times are in seconds."""

    mode: str
    lanes: int
    open_epoch: int
    durable_epoch: int
    durable_commit_seq: int
    commits_staged: int
    epochs_sealed: int
    segments_written: int
    records_written: int
    bytes_written: int
    fsync_count: int
    fsync_seconds_total: float
    fsync_seconds_max: float
    seal_seconds_total: float
    write_seconds_total: float
    last_epoch_seal_seconds: float
    last_epoch_write_seconds: float
    last_epoch_fsync_seconds: float
    fallbacks: Mapping[str, int]
    lane_backlog_bytes: tuple[int, ...]
    serialized_backlog_bytes: int
    shadow_compares: int
    shadow_divergences: int
    last_shadow_divergence: str | None
    broken: bool
    closed: bool
