"""Corruption campaign: damage a valid format 2 log every way a disk or an operator can, and
check what recovery makes of it.

Two logs are built, every epoch acknowledged before the next is sealed: one closed cleanly (a
clean-shutdown marker records the last acknowledged epoch), one left as a crash leaves it (its
last segment acknowledged by no later header: the in-flight tail, as far as the disk can tell).

* A bit flip, or a tear (the rest of the segment reading as zeros, as an interrupted in-place
  write leaves it), or a truncation of the file, inside a segment whose acknowledgement a later
  header records, must raise :class:`CorruptSegmentError` naming a place in the damaged log
  (DESIGN §4: damage to an acknowledged epoch is never a torn tail), and ``skip_corrupt`` must
  return exactly the segments before it.
* The same damage to the in-flight tail must read as a torn tail: no error, exactly the
  segments before it, ``torn_tail`` set (never silent, never wrong bytes).
* Every single-bit flip of a file header (of a file holding segments) and of a segment header
  is detected: it raises, or the result reports it (a torn tail, skipped segments or a
  warning) and holds only a prefix of the right commits.
* Stale segments: a file whose header was rewritten with a new salt (recycled) while its old
  segments remain, and a segment naming another file, must never be read as the file's own.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Callable, Iterator

import attrs
import crc32c

from .._chain import RecoveryResult
from .._config import WalConfig
from .._errors import CheckpointMissingError, CorruptSegmentError
from .._layout import FILE_HEADER_SIZE, SEGMENT_HEADER_SIZE, parse_log_file_name, segment_span
from .._recovery import recover
from .._wal import Wal
from ._simfs import SimulatedFileSystem
from ._workload import SMALL_LOG_FILE, Report, commit_pages, txn_id_for, verify

DB_PATH = "/corruption/db"
_DIRECTORY, _DB_NAME = os.path.split(DB_PATH)
_CHECKPOINT = DB_PATH + "-wal-checkpoint"
_ALIGNMENT = 4096
_SALT = slice(40, 48)  # in a file header
_SEGMENT_FILE_NO = slice(72, 80)  # in a segment header


@attrs.frozen(kw_only=True)
class CorruptionReport(Report):
    segments: int
    tried: int
    detected: int
    raised: int
    torn_tails: int
    prefix_exact: int
    no_prefix: int  # the first log file's header damaged: the log's start is unknown

    def summary(self) -> list[str]:
        return [
            f"corruption: seed {self.seed}, {self.segments} segments in two logs (closed, "
            f"crashed), corruptions detected {self.detected} / tried {self.tried} (raised "
            f"{self.raised}, torn tail reported {self.torn_tails}); skip_corrupt or the torn "
            f"tail left exactly the valid prefix {self.prefix_exact} / "
            f"{self.tried - self.no_prefix} (the other {self.no_prefix} damaged the first "
            "log file's header, which recovery reports as a missing checkpoint record "
            "naming where it belongs: no prefix to keep)",
        ]


@attrs.frozen
class _Segment:
    path: str
    offset: int
    span: int
    body_length: int
    epoch: int


@attrs.frozen
class _Log:
    files: dict[str, bytes]
    segments: tuple[_Segment, ...]
    closed: bool  # cleanly, with a clean-shutdown marker


def build_log(seed: int, *, closed: bool, wal_class: type[Wal] = Wal, epochs: int = 12,
              commits_per_epoch: int = 3) -> _Log:
    """A valid log of ``epochs`` segments over at least two 64 KiB log files, each epoch
    acknowledged before the next is sealed; closed cleanly, or as a crash leaves it."""
    fs = SimulatedFileSystem()
    config = WalConfig(lanes=2, epoch_interval_ms=60_000, log_file_bytes=SMALL_LOG_FILE)
    wal = wal_class.open(DB_PATH, config, fs=fs)
    try:
        for epoch in range(epochs):
            for counter in range(commits_per_epoch):
                txn = txn_id_for(0, epoch, counter)
                wal.submit(commit_pages(seed, txn), txn_id=txn)
            wal.flush(timeout=60)
        crashed = fs.snapshot()  # what a kill now would leave: no clean-shutdown marker
    finally:
        wal.close()
    files = fs.snapshot() if closed else crashed
    files = {path: data for path, data in files.items() if not path.endswith("-wal-lock")}
    result = recover(DB_PATH, fs=SimulatedFileSystem(files))
    assert result.log_scan is not None
    segments = []
    next_offset: dict[str, int] = {}
    for segment in result.log_scan.segments:
        offset = next_offset.get(segment.path, _ALIGNMENT)
        span = segment_span(segment.header.body_length, _ALIGNMENT)
        next_offset[segment.path] = offset + span
        segments.append(_Segment(segment.path, offset, span, segment.header.body_length,
                                 segment.header.epoch))
    if len({s.path for s in segments}) < 2:  # pragma: no cover - a workload too small
        raise AssertionError(f"seed {seed}: the log's {epochs} epochs fit in one log file")
    # A clean shutdown's marker records the last epoch as acknowledged, if the file had room.
    return _Log(files, tuple(segments), result.log_scan.clean_shutdown)


def _cases(
    log: _Log, rng: random.Random, body_bits: int, tears: int, header_stride: int,
) -> Iterator[tuple[str, dict[str, bytes], int, str]]:
    """``(description, damaged files, index of the damaged segment, expectation)``.

    Expectation: ``raise`` (an acknowledged segment), ``torn`` (the in-flight tail),
    ``detect`` (raise, or report it with only a prefix), ``stale`` (never read the segments
    from ``index`` on)."""
    files, segments = log.files, log.segments
    first_bit = rng.randrange(header_stride)  # over seeds, every bit gets its turn
    kind = "closed" if log.closed else "crashed (or closed with no room for a marker)"
    for index, segment in enumerate(segments):
        # Acknowledged as far as the disk can tell: a later header (or the marker) says so.
        expect = "raise" if log.closed or index < len(segments) - 1 else "torn"
        path, data = segment.path, files[segment.path]
        name = f"{kind} log, {os.path.basename(path)} segment {segment.epoch} (offset " \
               f"{segment.offset})"
        for bit in range(first_bit, SEGMENT_HEADER_SIZE * 8, header_stride):
            yield (f"{name}: header bit {bit} flipped",
                   {**files, path: _flip(data, segment.offset * 8 + bit)}, index, expect)
        body_start = segment.offset + SEGMENT_HEADER_SIZE
        for _ in range(body_bits):
            bit = rng.randrange(body_start * 8, (body_start + segment.body_length) * 8)
            yield f"{name}: body bit {bit} flipped", {**files, path: _flip(data, bit)}, index, \
                expect
        end = segment.offset + segment.span
        cuts = {segment.offset + 512, body_start + segment.body_length - 1}
        cuts.update(rng.randrange(segment.offset + 1, body_start + segment.body_length)
                    for _ in range(tears))
        for cut in sorted(cuts):
            torn = data[:cut] + bytes(end - cut) + data[end:]
            yield f"{name}: torn in place from byte {cut}", {**files, path: torn}, index, expect
        later_files = any(s.path != path for s in segments[index + 1 :])
        if later_files:  # a truncation leaves the later files' headers as evidence
            cut = rng.randrange(segment.offset + 1, body_start + segment.body_length)
            yield (f"{name}: file truncated to {cut} bytes", {**files, path: data[:cut]},
                   index, "raise")
    holding = sorted({s.path for s in segments},
                     key=lambda p: parse_log_file_name(_DB_NAME, os.path.basename(p)) or 0)
    for path in holding:
        first = next(i for i, s in enumerate(segments) if s.path == path)
        for bit in range(first_bit, FILE_HEADER_SIZE * 8, header_stride):
            yield (f"{kind} log, {os.path.basename(path)}: file header bit {bit} flipped",
                   {**files, path: _flip(files[path], bit)}, first, "detect")
    for path in holding[1:]:
        first = next(i for i, s in enumerate(segments) if s.path == path)
        salted = bytearray(files[path])
        salted[_SALT] = (int.from_bytes(salted[_SALT], "little") ^ 0x5A5A).to_bytes(8, "little")
        yield (f"{kind} log, {os.path.basename(path)}: recycled (a new salt) over its old "
               "segments", {**files, path: _with_crc(bytes(salted), 0)}, first, "stale")
        segment = segments[first]
        moved = bytearray(files[path])
        at = segment.offset + _SEGMENT_FILE_NO.start
        moved[at : at + 8] = (int.from_bytes(moved[at : at + 8], "little") + 7).to_bytes(
            8, "little")
        yield (f"{kind} log, {os.path.basename(path)} segment {segment.epoch}: names another "
               "log file", {**files, path: _with_crc(bytes(moved), segment.offset)}, first,
               "stale")


def _flip(data: bytes, bit: int) -> bytes:
    damaged = bytearray(data)
    damaged[bit // 8] ^= 1 << (bit % 8)
    return bytes(damaged)


def _with_crc(data: bytes, offset: int) -> bytes:
    """``data`` with the header CRC32C (bytes 124..127 over 0..123) of the 128-byte header at
    ``offset`` recomputed: the damage is then only what the identity check can see."""
    crc = crc32c.crc32c(data[offset : offset + 124]).to_bytes(4, "little")
    return data[: offset + 124] + crc + data[offset + 128 :]


def run_corruption(
    *, seed: int, body_bits: int = 12, tears: int = 3, header_stride: int = 1,
    wal_class: type[Wal] = Wal,
    reader: Callable[[], contextlib.AbstractContextManager[None]] = contextlib.nullcontext,
) -> CorruptionReport:
    """Try every corruption of two freshly built logs; see the module docstring.

    ``header_stride``: flip every n-th header bit only, from one the seed picks (1: all).
    ``wal_class`` builds the logs and ``reader`` is entered around every recovery (both: for
    broken variants)."""
    rng = random.Random(seed)
    with reader():
        logs = [build_log(seed, closed=True, wal_class=wal_class),
                build_log(seed, closed=False, wal_class=wal_class)]
        figures = dict.fromkeys(("tried", "detected", "raised", "torn", "exact", "none"), 0)
        violations: list[str] = []
        for log in logs:
            epochs = [s.epoch for s in log.segments]
            for description, damaged, index, expect in _cases(log, rng, body_bits, tears,
                                                              header_stride):
                figures["tried"] += 1
                problems = _check(damaged, seed, epochs, index, expect, figures)
                violations.extend(f"seed {seed}, {description}: {p}" for p in problems)
    return CorruptionReport(
        seed=seed, segments=sum(len(log.segments) for log in logs), tried=figures["tried"],
        detected=figures["detected"], raised=figures["raised"], torn_tails=figures["torn"],
        prefix_exact=figures["exact"], no_prefix=figures["none"],
        violation_count=len(violations),
        violations=Report.kept(violations))


def _check(damaged: dict[str, bytes], seed: int, epochs: list[int], index: int, expect: str,
           figures: dict[str, int]) -> list[str]:
    prefix = epochs[:index]
    try:
        result = recover(DB_PATH, fs=SimulatedFileSystem(damaged))
    except CorruptSegmentError as error:
        if expect == "torn":
            return [f"recovery raised for damage to the in-flight tail, which is a torn tail: "
                    f"{error}"]
        figures["raised"] += 1
        # With the first file unreadable the later ones continue a log whose start is
        # unknown: recovery says the checkpoint record is missing, naming where it belongs.
        if isinstance(error, CheckpointMissingError) and error.path == _CHECKPOINT:
            figures["detected"] += 1
            figures["none"] += 1
            return []
        if error.path not in damaged or not 0 <= error.offset <= len(damaged[error.path]):
            return [f"error names {error.path} offset {error.offset}, not a place in the "
                    "damaged log"]
        figures["detected"] += 1
        skipped = recover(DB_PATH, skip_corrupt=True, fs=SimulatedFileSystem(damaged))
        # A truncated file no longer has its header's capacity: skip_corrupt may leave the
        # whole file out, so only a prefix is asked for then.
        exact = expect == "raise" and all(len(damaged[p]) % _ALIGNMENT == 0 for p in damaged)
        problems = _prefix_problems(skipped, seed, prefix, exact=exact)
        figures["exact"] += not problems
        return problems
    kept = [info.header.epoch for info in result.segments]
    if expect == "raise":
        return [f"recovery accepted damage to an acknowledged segment (a later header records "
                f"it): kept epochs {kept}" + (", called it a torn tail" if result.torn_tail
                                              else "")]
    if expect == "stale":
        figures["detected"] += 1
        problems = _prefix_problems(result, seed, prefix, exact=False)
        figures["exact"] += not problems
        return problems
    reported = result.torn_tail is not None or result.skipped or result.warnings
    if not reported:
        return [f"the damage went unreported (kept epochs {kept})"]
    figures["detected"] += 1
    figures["torn"] += result.torn_tail is not None
    problems = _prefix_problems(result, seed, prefix, exact=expect == "torn")
    figures["exact"] += not problems
    return problems


def _prefix_problems(result: RecoveryResult, seed: int, prefix: list[int], *,
                     exact: bool) -> list[str]:
    """Problems unless ``result`` holds ``prefix`` (or, not ``exact``, a prefix of it) and
    only the right commits."""
    kept = [info.header.epoch for info in result.segments]
    problems = [f"{v}" for v in verify(result, seed=seed, acked={}).violations[:2]]
    if kept != prefix if exact else kept != prefix[: len(kept)]:
        problems.append(f"kept epochs {kept}, expected {'' if exact else 'a prefix of '}"
                        f"{prefix}")
    return problems
