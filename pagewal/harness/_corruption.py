"""Corruption campaign: damage a valid log every way a disk or an operator can, and check that
recovery fails closed (a typed error naming the file and offset) and that ``skip_corrupt``
returns exactly the valid prefix of the chain, never a wrong page.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator

import attrs

from .._codec import HEADER_SIZE
from .._config import WalConfig
from .._errors import CorruptSegmentError
from .._layout import parse_segment_name, segment_name
from .._recovery import recover
from .._wal import Wal
from ._simfs import SimulatedFileSystem
from ._workload import Report, commit_pages, txn_id_for, verify

DB_PATH = "/corruption/db"
_DIRECTORY, _DB_NAME = os.path.split(DB_PATH)


@attrs.frozen(kw_only=True)
class CorruptionReport(Report):
    segments: int
    tried: int
    detected: int
    prefix_exact: int

    def summary(self) -> list[str]:
        return [
            f"corruption: seed {self.seed}, {self.segments} segments, corruptions detected "
            f"{self.detected} / tried {self.tried}, skip_corrupt returned the exact valid "
            f"prefix {self.prefix_exact} / {self.tried}",
        ]


def build_log(seed: int, epochs: int = 6, commits_per_epoch: int = 3) -> dict[str, bytes]:
    """A valid log of ``epochs`` segments, as ``{path: bytes}``."""
    fs = SimulatedFileSystem()
    with Wal.open(DB_PATH, WalConfig(lanes=2, epoch_interval_ms=60_000), fs=fs) as wal:
        for epoch in range(epochs):
            for counter in range(commits_per_epoch):
                txn = txn_id_for(0, epoch, counter)
                wal.submit(commit_pages(seed, txn), txn_id=txn)
            wal.flush(timeout=60)
    return {path: data for path, data in fs.snapshot().items()
            if parse_segment_name(_DB_NAME, os.path.basename(path)) is not None}


def _cases(
    log: dict[str, bytes], rng: random.Random, body_bits: int, random_cuts: int
) -> Iterator[tuple[str, dict[str, bytes], int]]:
    """``(description, damaged log, epochs in the valid prefix)`` for each corruption."""
    epochs = sorted(parse_segment_name(_DB_NAME, os.path.basename(p)) or 0 for p in log)
    path_of = {e: os.path.join(_DIRECTORY, segment_name(_DB_NAME, e)) for e in epochs}
    for index, epoch in enumerate(epochs):
        path = path_of[epoch]
        data = log[path]
        name = os.path.basename(path)
        for bit in range(HEADER_SIZE * 8):
            yield f"{name}: header bit {bit} flipped", {**log, path: _flip(data, bit)}, index
        for _ in range(body_bits):
            bit = rng.randrange(HEADER_SIZE * 8, len(data) * 8)
            yield f"{name}: body bit {bit} flipped", {**log, path: _flip(data, bit)}, index
        cuts = set(_record_boundaries(data))
        cuts.update(rng.randrange(len(data)) for _ in range(random_cuts))
        for cut in sorted(cuts):
            yield f"{name}: truncated to {cut} bytes", {**log, path: data[:cut]}, index
        yield f"{name}: one byte appended", {**log, path: data + b"\0"}, index
    for index, epoch in enumerate(epochs[1:-1], start=1):
        damaged = dict(log)
        del damaged[path_of[epoch]]
        yield f"segment {epoch} deleted", damaged, index
    if len(epochs) >= 3:
        middle = epochs[len(epochs) // 2]
        renamed = dict(log)
        renamed[os.path.join(_DIRECTORY, segment_name(_DB_NAME, epochs[-1] + 5))] = renamed.pop(
            path_of[middle])
        yield f"segment {middle} renamed past the end", renamed, epochs.index(middle)
        swapped = dict(log)
        first, second = path_of[epochs[1]], path_of[epochs[2]]
        swapped[first], swapped[second] = log[second], log[first]
        yield f"segments {epochs[1]} and {epochs[2]} swapped", swapped, 1


def _flip(data: bytes, bit: int) -> bytes:
    damaged = bytearray(data)
    damaged[bit // 8] ^= 1 << (bit % 8)
    return bytes(damaged)


def _record_boundaries(data: bytes) -> Iterator[int]:
    """Every cut point at a header or record boundary, short of the whole file."""
    position = HEADER_SIZE
    yield 0
    while position < len(data):
        yield position
        position += 4 + int.from_bytes(data[position : position + 4], "little")


def run_corruption(*, seed: int, body_bits: int = 40, random_cuts: int = 8) -> CorruptionReport:
    """Try every corruption of a freshly built log; see the module docstring for the checks."""
    rng = random.Random(seed)
    log = build_log(seed)
    epochs = sorted(parse_segment_name(_DB_NAME, os.path.basename(p)) or 0 for p in log)
    tried = detected = exact = 0
    violations: list[str] = []
    for description, damaged, prefix in _cases(log, rng, body_bits, random_cuts):
        tried += 1
        where = f"seed {seed}, {description}"
        try:
            recover(DB_PATH, fs=SimulatedFileSystem(damaged))
            violations.append(f"{where}: recovery accepted a damaged log")
        except CorruptSegmentError as error:
            size = len(damaged.get(error.path, b""))
            if error.path in damaged and 0 <= error.offset <= size:
                detected += 1
            else:
                violations.append(f"{where}: error names {error.path} offset {error.offset}, "
                                  "not a place in the damaged log")
        result = recover(DB_PATH, skip_corrupt=True, fs=SimulatedFileSystem(damaged))
        kept = [info.header.epoch for info in result.segments]
        verdict = verify(result, seed=seed, acked={})
        if kept == epochs[:prefix] and not verdict.violations:
            exact += 1
        else:
            violations.append(f"{where}: skip_corrupt kept epochs {kept}, expected "
                              f"{epochs[:prefix]}; {list(verdict.violations)[:2]}")
    return CorruptionReport(seed=seed, segments=len(log), tried=tried, detected=detected,
                            prefix_exact=exact, violation_count=len(violations),
                            violations=Report.kept(violations))
