"""Micro-benchmarks of the hot paths (not part of the default test run).

Run: ``python3 -m pytest bench/test_micro.py --benchmark-only``
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from pagewal import Wal, WalConfig, decode_segment
from pagewal._codec import SegmentHeader, encode_commits, make_commit
from pagewal._lanes import Lane

PAGE = os.urandom(4096)


@pytest.mark.parametrize("pages", [1, 16])
def test_stage_one_commit_into_a_lane(benchmark: Any, pages: int) -> None:
    commit = make_commit([(n, PAGE) for n in range(pages)])
    lane = Lane(0, 64 << 20)
    lane.prepare()

    def stage() -> None:
        if not lane.fits(commit):
            lane.swap()
            lane.prepare()  # the next buffer of the ring, allocated on first use
        lane.append(commit, 1, shadow_copy=None)

    benchmark(stage)


def test_validate_a_commit(benchmark: Any) -> None:
    pages = [(n, PAGE) for n in range(16)]
    benchmark(make_commit, pages)


def test_decode_a_4_mib_segment(benchmark: Any) -> None:
    commits = [(seq, 0, make_commit([(seq, PAGE)])) for seq in range(1, 1001)]
    body = encode_commits(commits)
    header = SegmentHeader(epoch=1, record_count=1000, lane_count=1, commit_seq_lo=1,
                           commit_seq_hi=1000, prev_epoch=0, body_length=len(body))
    data = header.encode() + bytes(body)
    result = benchmark(decode_segment, data, "bench")
    assert result.records.size == 1000


def test_commit_and_seal_without_fsync(benchmark: Any, tmp_path: Path) -> None:
    # Small log files keep the open from zero-filling the 64 MiB default; 4 MiB still holds
    # hundreds of these commits, so rolling over to the next file stays a small share.
    config = WalConfig(lanes=2, fsync="off", log_file_bytes=4 << 20)
    with Wal.open(tmp_path / "bench.db", config) as wal:
        benchmark(wal.commit, {1: PAGE})
