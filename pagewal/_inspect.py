"""Reports of the operator commands (``pagewal inspect``, ``verify``, ``dump``, ``recover``).

Pure: file names, file bytes, decoded headers and recovery results in; rows and printable
lines out. Nothing here reads a file or judges a segment by itself: the verdicts (chain, torn
tail, damage, clean shutdown) come from the :class:`RecoveryResult` of the one validation loop
recovery uses and its :class:`LogScan`, and header fields from the codec's decoders, so a tool
can never see a log differently from recovery. The one thing computed here is where each
segment header of a log file lies (:func:`file_segments`, for the table of segments per file):
the reader keeps only the chain's segments.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np

from ._chain import RecoveryResult, SkippedSegment, check_continues
from ._codec import HEADER_SIZE, RECORD_FLAG_LAST, ChainPosition, DecodedSegment, SegmentHeader
from ._errors import CheckpointMissingError, CorruptSegmentError, ForeignFileError
from ._layout import (
    SEGMENT_HEADER_SIZE,
    Buffer,
    CheckpointRebuild,
    CheckpointRecord,
    FileState,
    LogFileHeader,
    ShutdownMarker,
    check_identity,
    decode_file_header,
    decode_segment_header_v2,
    describe_checkpoint,
    is_unwritten,
    segment_span,
)
from ._logreader import FileRole, LogScan, TornTail

# --------------------------------------------------------------------------- the directory


# --------------------------------------------------------------------------- inspect


class SegmentStatus(enum.Enum):
    """A segment's place in the chain, as recovery judges it."""

    OK = "ok"
    BROKEN = "broken"  # intact, but does not continue the segment (or checkpoint) before it
    CORRUPT = "corrupt"
    FOLLOWS_CORRUPT = "follows corrupt"  # after the first bad segment: recovery stops before it
    COVERED = "covered by checkpoint"  # already applied; recovery deletes it when tidying
    UNCHECKED = "unchecked"
    FOREIGN = "not the log's own"  # not a regular file: recovery refuses to read or delete it


@attrs.frozen
class SegmentFile:
    """A segment file as found: its size and what the codec made of its header (or, for
    something that is not a regular file, what it is)."""

    epoch: int
    path: str
    size: int
    header: SegmentHeader | CorruptSegmentError | ForeignFileError


@attrs.frozen
class SegmentRow:
    epoch: int
    path: str
    size: int
    header: SegmentHeader | None
    status: SegmentStatus
    offset: int | None = None  # where the problem is, for BROKEN and CORRUPT
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        header = self.header
        return {
            "epoch": self.epoch, "path": self.path, "size": self.size,
            "commit_seq": [header.commit_seq_lo, header.commit_seq_hi] if header else None,
            "records": header.record_count if header else None,
            "status": self.status.value, "offset": self.offset, "reason": self.reason,
        }

    def cells(self) -> tuple[str, ...]:
        header = self.header
        status = self.status.value
        if self.offset is not None:
            # The chain check's reasons start by saying so; the status already does.
            status += f": offset {self.offset}: {self.reason.removeprefix('chain broken: ')}"
        elif self.reason:
            status += f" ({self.reason})"
        if self.status is SegmentStatus.FOREIGN:
            return (str(self.epoch), "?", "?", "-", "?", "?", status)
        if header is None:
            return (str(self.epoch), "?", "?", f"{self.size:,}", "?", "?", status)
        # The epoch column is the file name's: that names the file even when the header differs.
        return (str(self.epoch), f"{header.commit_seq_lo}..{header.commit_seq_hi}",
                f"{header.record_count:,}", f"{self.size:,}", str(header.lane_count),
                "serialized" if header.serialized else "-", status)


SEGMENT_HEADINGS = ("epoch", "commit_seq", "records", "bytes", "lanes", "flags", "status")


def segment_rows(
    chain: RecoveryResult | None, files: Sequence[SegmentFile],
    unchecked: str = "the checkpoint record is lost",
) -> list[SegmentRow]:
    """One row per segment file, its status taken from ``chain``.

    ``chain`` is what the read-only recovery loop found with ``skip_corrupt=True``; ``None``
    when it could not start (a corrupt checkpoint, or one that is not a regular file: say
    which as ``unchecked``), and then every segment is unchecked.
    """
    kept = {info.path for info in chain.segments} if chain else set()
    skipped = {item.path: (index, item) for index, item in
               enumerate(chain.skipped if chain else ())}
    rows: list[SegmentRow] = []
    for file in files:
        if isinstance(file.header, ForeignFileError):
            rows.append(SegmentRow(file.epoch, file.path, file.size, None, SegmentStatus.FOREIGN,
                                   reason=file.header.files[0][1]))
            continue
        header = file.header if isinstance(file.header, SegmentHeader) else None
        header_problem = "" if header else f"header: {_reason(file.header)}"
        row = SegmentRow(file.epoch, file.path, file.size, header, SegmentStatus.UNCHECKED,
                         reason=header_problem or "appeared while the log was read")
        if chain is None:
            row = attrs.evolve(row, reason=header_problem or unchecked)
        elif file.epoch <= chain.base.epoch:
            row = attrs.evolve(row, status=SegmentStatus.COVERED, reason=header_problem and (
                f"{header_problem}; not this segment, so recovery refuses to delete it"))
        elif file.path in kept:
            row = attrs.evolve(row, status=SegmentStatus.OK, reason="")
        elif file.path in skipped:
            index, item = skipped[file.path]
            if index:  # recovery stopped before this one: it was not validated
                row = attrs.evolve(row, status=SegmentStatus.FOLLOWS_CORRUPT, reason=header_problem)
            else:
                broken = header is not None and _breaks_chain(chain.last, header, file.path,
                                                              (item.offset, item.reason))
                row = attrs.evolve(
                    row, status=SegmentStatus.BROKEN if broken else SegmentStatus.CORRUPT,
                    offset=item.offset, reason=item.reason)
        rows.append(row)
    return rows


def _reason(header: SegmentHeader | CorruptSegmentError | ForeignFileError) -> str:
    return header.reason if isinstance(header, CorruptSegmentError) else ""


def _breaks_chain(
    position: ChainPosition, header: SegmentHeader, path: str, found: tuple[int, str]
) -> bool:
    """Whether recovery's finding ``(offset, reason)`` is the chain check's, not the codec's."""
    try:
        check_continues(position, header, path)
    except CorruptSegmentError as error:
        return (error.offset, error.reason) == found
    return False


@attrs.frozen
class InspectReport:
    db_path: str
    # None: no checkpoint file
    checkpoint: CheckpointRecord | CorruptSegmentError | ForeignFileError | None
    rows: tuple[SegmentRow, ...]
    temporary: tuple[tuple[str, int], ...]  # (name, size)
    quarantined: tuple[tuple[str, int], ...]
    last: ChainPosition | None  # where the valid chain ends; None when it could not be read
    foreign: tuple[tuple[str, str], ...] = ()  # (name, what): what recovery refuses to touch
    warnings: tuple[str, ...] = ()
    # Version 2: the log files and their segments, what lies beyond the end, how it closed.
    log_files: tuple[LogFileRow, ...] = ()
    scan: LogScan | None = None
    damage: SkippedSegment | None = None  # the reader's first finding in the log files

    def lines(self) -> list[str]:
        lines = [f"log of {self.db_path}"]
        if self.checkpoint is None:
            lines.append("checkpoint: none")
        elif isinstance(self.checkpoint, CheckpointMissingError):
            lines.append(f"checkpoint: lost: {self.checkpoint.reason}")
        elif isinstance(self.checkpoint, CorruptSegmentError):
            lines.append(f"checkpoint: corrupt: offset {self.checkpoint.offset}: "
                         f"{self.checkpoint.reason}")
        elif isinstance(self.checkpoint, ForeignFileError):
            lines.append(f"checkpoint: unreadable: {self.checkpoint.files[0][1]}")
        else:
            lines.append(f"checkpoint: {describe_checkpoint(self.checkpoint)}")
        lines += [f"warning: {warning}" for warning in self.warnings]
        if self.rows:
            if self.log_files:
                lines.append("format 1 segment files (read only):")
            lines += format_table(SEGMENT_HEADINGS, [row.cells() for row in self.rows],
                                  left={1, 5, 6})
        if self.log_files:
            lines.append("log files:")
            lines += ["  " + line for line in format_table(
                LOG_FILE_HEADINGS, [row.cells() for row in self.log_files], left={1, 2, 7})]
            segments = [row for file in self.log_files for row in file.segments]
            if segments:
                lines.append("segments:")
                lines += ["  " + line for line in format_table(
                    LOG_SEGMENT_HEADINGS, [row.cells() for row in segments], left={4, 7})]
            if self.damage is not None:
                lines.append(f"damage: {self.damage.path} offset {self.damage.offset:,}: "
                             f"{self.damage.reason}")
            elif self.scan is None:
                lines.append("torn tail: unknown (the log files were not read)")
            else:
                lines.append(torn_tail_line(self.scan.torn_tail))
            lines.append(shutdown_line(self.scan, self.log_files))
        valid = [row for row in self.rows if row.status is SegmentStatus.OK]
        in_chain = [row for row in self.rows if row.status is not SegmentStatus.COVERED]
        valid_bytes = sum(row.size for row in valid)
        count, unusable = len(valid), len(in_chain) - len(valid)
        for file in self.log_files:
            chained = [row for row in file.segments if row.status == "chain"]
            count += len(chained)
            valid_bytes += sum(_stored_size(row.header) for row in chained
                               if isinstance(row.header, SegmentHeader))
        if self.damage is not None:
            unusable += sum(row.status in ("damaged", "after end")
                            for file in self.log_files for row in file.segments)
        total = count + unusable
        summary = (f"chain: {count} of {total} segment{_plural(total)} valid "
                   f"({valid_bytes:,} bytes)")
        if self.last is not None:
            summary += f", ends at epoch {self.last.epoch}, commit_seq {self.last.commit_seq}"
        if unusable:
            summary += f"; {unusable} not usable"
        lines.append(summary)
        lines.append(_file_list("temporary files (recovery deletes them)", self.temporary))
        lines.append(_file_list("set aside as corrupt", self.quarantined))
        if self.foreign:
            lines.append("not the log's own (recover and open refuse to start, and delete "
                         "nothing, until they are moved away): "
                         + ", ".join(f"{name} ({what})" for name, what in self.foreign))
        return lines


    def to_json(self) -> dict[str, Any]:
        checkpoint: dict[str, Any] | None
        if self.checkpoint is None:
            checkpoint = None
        elif isinstance(self.checkpoint, CorruptSegmentError):
            checkpoint = {"error": {"path": self.checkpoint.path, "offset":
                                    self.checkpoint.offset, "reason": self.checkpoint.reason}}
        elif isinstance(self.checkpoint, ForeignFileError):
            checkpoint = {"error": {"path": self.checkpoint.files[0][0], "offset": 0,
                                    "reason": self.checkpoint.files[0][1]}}
        else:
            checkpoint = {**_position_json(self.checkpoint.position),
                          "page_size": self.checkpoint.page_size}
        return {
            "path": self.db_path,
            "checkpoint": checkpoint,
            "last": _position_json(self.last) if self.last is not None else None,
            "segment_files": [row.to_json() for row in self.rows],
            "log_files": [row.to_json() for row in self.log_files],
            "torn_tail": torn_tail_json(self.scan.torn_tail if self.scan else None),
            "shutdown": shutdown_json(self.scan, self.log_files),
            "damage": attrs.asdict(self.damage) if self.damage is not None else None,
            "temporary": [name for name, _ in self.temporary],
            "quarantined": [name for name, _ in self.quarantined],
            "foreign": [name for name, _ in self.foreign],
            "warnings": list(self.warnings),
        }


def _file_list(title: str, files: Sequence[tuple[str, int]]) -> str:
    if not files:
        return f"{title}: none"
    return f"{title}: " + ", ".join(f"{name} ({size:,} bytes)" for name, size in files)


def _plural(count: int) -> str:
    return "" if count == 1 else "s"


def epoch_ranges(epochs: Sequence[int]) -> str:
    """``[1, 2, 3, 5]`` as ``"1..3, 5"``."""
    runs: list[list[int]] = []
    for epoch in sorted(set(epochs)):
        if runs and epoch == runs[-1][1] + 1:
            runs[-1][1] = epoch
        else:
            runs.append([epoch, epoch])
    return ", ".join(str(lo) if lo == hi else f"{lo}..{hi}" for lo, hi in runs)


# --------------------------------------------------------------------------- inspect: log files


@attrs.frozen
class FoundSegment:
    """A segment header (or clean-shutdown marker) of a log file's own, as found in its bytes:
    valid header CRC and the file's identity (log id, file_no, salt). Its body is not checked
    here; whether it is in the chain is the reader's verdict (:attr:`status`)."""

    offset: int
    span: int
    header: SegmentHeader | ShutdownMarker


def file_segments(data: Buffer, path: str, header: LogFileHeader) -> list[FoundSegment]:
    """Every segment header of this life of the file, walking from ``alignment``: one found is
    stepped over whole (its span), anything else (unwritten, torn, an earlier life's) block by
    block, so that a damaged segment does not hide the ones after it."""
    view = memoryview(data).cast("B")
    alignment = header.alignment
    size = min(len(view), header.capacity)
    found: list[FoundSegment] = []
    offset = alignment
    while offset + SEGMENT_HEADER_SIZE <= size:
        if is_unwritten(view[offset : offset + SEGMENT_HEADER_SIZE]):
            offset += alignment
            continue
        try:
            decoded = decode_segment_header_v2(view, path, offset, file_size=size)
            check_identity(decoded, header, path, offset)
        except CorruptSegmentError:
            offset += alignment
            continue
        body = 0 if isinstance(decoded, ShutdownMarker) else decoded.body_length
        span = segment_span(body, alignment)
        found.append(FoundSegment(offset, span, decoded))
        offset += span
    return found


@attrs.frozen
class LogSegmentRow:
    """One segment (or marker) of a log file with what the reader made of it. ``header``
    None: where the reader found damage or a torn tail, no segment header could be read."""

    file_no: int
    path: str
    offset: int
    span: int
    header: SegmentHeader | ShutdownMarker | None
    status: str

    def cells(self) -> tuple[str, ...]:
        header = self.header
        if header is None:
            return (str(self.file_no), "?", f"{self.offset:,}", "?", "?", "?", "?",
                    f"{self.status} (header unreadable)")
        if isinstance(header, ShutdownMarker):
            return (str(self.file_no), str(header.epoch), f"{self.offset:,}", f"{self.span:,}",
                    str(header.commit_seq), "0", str(header.epoch), self.status)
        return (str(self.file_no), str(header.epoch), f"{self.offset:,}", f"{self.span:,}",
                f"{header.commit_seq_lo}..{header.commit_seq_hi}", f"{header.record_count:,}",
                str(header.acked_epoch), self.status)

    def to_json(self) -> dict[str, Any]:
        header = self.header
        if header is None:
            return {"file_no": self.file_no, "offset": self.offset, "span": None,
                    "epoch": None, "marker": False, "commit_seq": None, "records": None,
                    "acked_epoch": None, "status": self.status}
        marker = isinstance(header, ShutdownMarker)
        return {
            "file_no": self.file_no, "offset": self.offset, "span": self.span,
            "epoch": header.epoch, "marker": marker,
            "commit_seq": ([header.commit_seq, header.commit_seq] if isinstance(
                header, ShutdownMarker) else [header.commit_seq_lo, header.commit_seq_hi]),
            "records": 0 if isinstance(header, ShutdownMarker) else header.record_count,
            "acked_epoch": header.epoch if isinstance(header, ShutdownMarker)
            else header.acked_epoch,
            "status": self.status,
        }


LOG_SEGMENT_HEADINGS = ("file", "epoch", "offset", "span", "commit_seq", "records", "acked",
                        "status")


@attrs.frozen
class LogFileRow:
    """A version 2 log file: its header's fields, its role in the chain and its fill (bytes
    its segments and markers take, header block excluded)."""

    file_no: int
    path: str
    size: int
    header: LogFileHeader | None
    role: str
    fill: int
    segments: tuple[LogSegmentRow, ...]
    note: str = ""

    @property
    def state(self) -> str:
        return self.header.state.name if self.header is not None else "?"

    def cells(self) -> tuple[str, ...]:
        header = self.header
        if header is None:
            return (str(self.file_no), "?", self.role, "?", f"{self.size:,}", "?", "-",
                    self.note)
        return (str(self.file_no), self.state, self.role, f"{header.salt:#018x}",
                f"{header.capacity:,}", f"{self.fill:,}", str(len(self.segments)), self.note)

    def to_json(self) -> dict[str, Any]:
        header = self.header
        return {
            "file_no": self.file_no, "path": self.path, "size": self.size,
            "state": self.state if header is not None else None, "role": self.role,
            "salt": header.salt if header is not None else None,
            "capacity": header.capacity if header is not None else None,
            "alignment": header.alignment if header is not None else None,
            "continues_from": _position_json(header.continues_from) if header else None,
            "min_epoch": header.min_epoch if header is not None else None,
            "fill": self.fill, "note": self.note,
            "segments": [row.to_json() for row in self.segments],
        }


LOG_FILE_HEADINGS = ("file", "state", "role", "salt", "capacity", "fill", "segments", "note")


@attrs.frozen
class LogFileImageOrError:
    """A version 2 log file as the command found it: its bytes, or why they could not be
    read (not a regular file)."""

    path: str
    file_no: int
    data: Buffer | str = attrs.field(repr=False)


def log_file_rows(
    images: Sequence[LogFileImageOrError], chain: RecoveryResult | None
) -> list[LogFileRow]:
    """One row per version 2 log file, with its segments.

    Roles come from the reader's :attr:`LogScan.files` (``chain.log_scan``); when the reader
    did not get to the log files (the chain could not start, or stopped in the version 1
    segments before them) every file is ``unchecked``. A segment's status: ``chain`` (read
    and kept by recovery), ``covered`` (before the checkpoint), ``damaged`` (where the
    reader found damage), ``after end`` (beyond the end of the log: a torn tail, or the
    evidence that proves damage), ``discarded`` (in a tail an earlier recovery discarded),
    ``marker`` (the clean-shutdown marker at the end).
    """
    scan = chain.log_scan if chain is not None else None
    infos = {info.path: info for info in scan.files} if scan is not None else {}
    kept = {(info.path, info.header.epoch) for info in chain.segments} if chain else set()
    damage = _v2_damage(chain)
    damaged_at = (damage.path, damage.offset) if damage is not None else None
    end = scan.end if scan is not None else None
    rows: list[LogFileRow] = []
    for image in sorted(images, key=lambda image: image.file_no):
        if isinstance(image.data, str):
            rows.append(LogFileRow(image.file_no, image.path, 0, None, "foreign", 0, (),
                                   image.data))
            continue
        size = memoryview(image.data).nbytes
        info = infos.get(image.path)
        header: LogFileHeader | None = info.header if info is not None else None
        note = info.note if info is not None else ""
        if info is None:
            try:
                header = decode_file_header(image.data, image.path)
            except CorruptSegmentError as error:
                note = f"log file header unreadable at offset {error.offset}: {error.reason}"
        role = info.role.value if info is not None else "unchecked"
        walk = (header is not None and header.state is FileState.ACTIVE and header.file_no ==
                image.file_no and (info is None or info.role not in (
                    FileRole.SPARE, FileRole.FOREIGN, FileRole.DAMAGED)))
        found = file_segments(image.data, image.path, header) if walk and header else []
        segments: list[LogSegmentRow] = []
        for item in found:
            if (image.path, item.offset) == damaged_at:
                status = "damaged"
            elif info is None:
                status = "unchecked"
            elif isinstance(item.header, ShutdownMarker):
                at_end = end is not None and (end.path, end.offset) == (image.path, item.offset)
                status = "marker" if at_end else "marker after end"
            elif (image.path, item.header.epoch) in kept:
                status = "chain"
            elif info.role is FileRole.CHAIN and item.offset < info.chain_end:
                status = "covered"
            elif info.role is FileRole.CHAIN:
                status = ("after end" if end is not None and end.path == image.path
                          else "discarded")
            else:
                status = {FileRole.COVERED: "covered", FileRole.STALE: "discarded"}.get(
                    info.role, "after end")
            segments.append(LogSegmentRow(image.file_no, image.path, item.offset, item.span,
                                          item.header, status))
        # Where the reader found damage or a torn tail but no header could be read there.
        tail = scan.torn_tail if scan is not None else None
        for where, status in ((damaged_at, "damaged"),
                              ((tail.path, tail.offset) if tail else None, "torn")):
            if (where is not None and where[0] == image.path and where[1] > 0
                    and all(row.offset != where[1] for row in segments)):
                segments.append(LogSegmentRow(image.file_no, image.path, where[1], 0, None,
                                              status))
        segments.sort(key=lambda row: row.offset)
        rows.append(LogFileRow(image.file_no, image.path, size, header, role,
                               sum(item.span for item in found), tuple(segments), note))
    return rows


def _v2_damage(chain: RecoveryResult | None) -> SkippedSegment | None:
    """The reader's finding of damage in the version 2 log files (the first one it left
    out), if the version 1 segments before them were whole."""
    if chain is None or chain.log_scan is None or not chain.log_scan.skipped:
        return None
    return chain.log_scan.skipped[0]


def torn_tail_line(tail: TornTail | None) -> str:
    if tail is None:
        return "torn tail: none"
    seen = (f"highest epoch seen {tail.highest_epoch} ({tail.segments} segment header"
            f"{_plural(tail.segments)} after the end)" if tail.segments
            else "no whole segment header after the end")
    return (f"torn tail: {tail.path} offset {tail.offset:,}, {tail.length:,} bytes, {seen}; "
            "never acknowledged, recovery discards it")


def torn_tail_json(tail: TornTail | None) -> dict[str, Any] | None:
    return attrs.asdict(tail) if tail is not None else None


def shutdown_line(scan: LogScan | None, rows: Sequence[LogFileRow]) -> str:
    if scan is None:
        return "shutdown: unknown (the log files were not read)"
    marker = next((row for file in rows for row in file.segments if row.status == "marker"),
                  None)
    if scan.clean_shutdown and marker is not None:
        # A marker at the end of a clean log records the chain's last position (the reader
        # checked it).
        return (f"shutdown: clean (marker at {marker.path} offset {marker.offset:,} records "
                f"epoch {scan.last.epoch}, commit_seq {scan.last.commit_seq})")
    return "shutdown: not clean (no clean-shutdown marker at the end of the log)"


def shutdown_json(scan: LogScan | None, rows: Sequence[LogFileRow]) -> dict[str, Any] | None:
    if scan is None:
        return None
    clean = scan.clean_shutdown and any(
        row.status == "marker" for file in rows for row in file.segments)
    return {"clean": clean, "epoch": scan.last.epoch if clean else None,
            "commit_seq": scan.last.commit_seq if clean else None}


# --------------------------------------------------------------------------- verify


@attrs.frozen
class Problem:
    """The first thing found wrong: the file, the byte offset and why."""

    path: str
    offset: int
    reason: str


@attrs.frozen
class VerifyReport:
    """What ``pagewal verify`` found: the valid prefix of the chain and the first problem."""

    db_path: str
    segments: int
    records: int
    commits: int
    bytes: int
    base: ChainPosition
    last: ChainPosition
    unusable_segments: int
    error: Problem | None
    foreign: bool = False  # the problem is a file at a log name that is not the log's own
    page_size: int = 0  # recorded in the checkpoint; 0: none
    warnings: tuple[str, ...] = ()
    # Version 2 (DESIGN §4): never-acknowledged epochs after the end, which recovery discards
    # (not damage: the log is valid); whether a clean-shutdown marker ends the log.
    torn_tail: TornTail | None = None
    clean_shutdown: bool = False

    @property
    def valid(self) -> bool:
        return self.error is None

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.db_path,
            "valid": self.valid,
            "segments": self.segments,
            "records": self.records,
            "commits": self.commits,
            "bytes": self.bytes,
            "checkpoint": _position_json(self.base),
            "last": _position_json(self.last),
            "unusable_segments": self.unusable_segments,
            "error": attrs.asdict(self.error) if self.error else None,
            "page_size": self.page_size,
            "warnings": list(self.warnings),
            "torn_tail": torn_tail_json(self.torn_tail),
            "clean_shutdown": self.clean_shutdown,
        }

    def lines(self) -> list[str]:
        """The summary; the problem itself (:attr:`error`) is the caller's one error line."""
        figures = (f"{self.segments} segment{_plural(self.segments)}, {self.records:,} "
                   f"record{_plural(self.records)}, {self.commits:,} "
                   f"commit{_plural(self.commits)}")
        if self.commits:
            figures += f" (commit_seq {self.base.commit_seq + 1}..{self.last.commit_seq})"
        figures += f", {self.bytes:,} bytes"
        warnings = [f"warning: {warning}" for warning in self.warnings]
        if self.error is None:
            tail = [torn_tail_line(self.torn_tail)] if self.torn_tail is not None else []
            return [f"{self.db_path}: valid: {figures}", *tail, *warnings]
        if self.foreign:
            return [f"{self.db_path}: not verified: a file at one of its log's names is not the "
                    "log's own, so recovery refuses to start"]
        return [f"{self.db_path}: corrupt; valid prefix: {figures}; {self.unusable_segments} "
                f"segment{_plural(self.unusable_segments)} from the first bad one on not usable "
                "(recover --skip-corrupt keeps the prefix)", *warnings]


def _position_json(position: ChainPosition) -> dict[str, int]:
    return {"epoch": position.epoch, "commit_seq": position.commit_seq}


def verify_report(db_path: str, chain: RecoveryResult) -> VerifyReport:
    """``chain`` is the read-only recovery loop's result with ``skip_corrupt=True``: its
    segments are the valid prefix, its first skipped segment the first problem."""
    first = chain.skipped[0] if chain.skipped else None
    return VerifyReport(
        db_path=db_path, segments=len(chain.segments),
        records=sum(info.header.record_count for info in chain.segments),
        commits=chain.commit_count,
        bytes=sum(_stored_size(info.header) for info in chain.segments),
        base=chain.base, last=chain.last, unusable_segments=len(chain.skipped),
        error=Problem(first.path, first.offset, first.reason) if first else None,
        page_size=chain.page_size, warnings=chain.warnings, torn_tail=chain.torn_tail,
        clean_shutdown=chain.clean_shutdown)


def _stored_size(header: SegmentHeader) -> int:
    """Header and body bytes (a version 2 segment's padding is not counted, as in
    :attr:`RecoveryResult.bytes_read`)."""
    return (HEADER_SIZE if header.version == 1 else SEGMENT_HEADER_SIZE) + header.body_length


def unreadable_log_report(
    db_path: str, error: CorruptSegmentError | ForeignFileError
) -> VerifyReport:
    """A log whose chain cannot even start: its checkpoint record is lost or unreadable, or a
    file at one of its names is not the log's own (the first one is the problem, at offset 0)."""
    problem = (Problem(error.path, error.offset, error.reason)
               if isinstance(error, CorruptSegmentError)
               else Problem(error.path, 0, error.files[0][1]))
    return VerifyReport(db_path=db_path, segments=0, records=0, commits=0, bytes=0,
                        base=ChainPosition(), last=ChainPosition(), unusable_segments=0,
                        error=problem, foreign=isinstance(error, ForeignFileError))


# --------------------------------------------------------------------------- dump


@attrs.frozen
class RecordRow:
    offset: int
    commit_seq: int
    txn_id: int
    page_no: int
    image_length: int
    crc: int
    lane_id: int
    last_in_commit: bool
    db_size_pages: int | None

    def cells(self) -> tuple[str, ...]:
        return (str(self.offset), str(self.commit_seq), str(self.txn_id), str(self.page_no),
                str(self.image_length), f"{self.crc:08x}", str(self.lane_id),
                "last" if self.last_in_commit else "-",
                "-" if self.db_size_pages is None else str(self.db_size_pages))


RECORD_HEADINGS = ("offset", "commit_seq", "txn_id", "page_no", "image_len", "crc32c", "lane",
                   "commit", "db_size_pages")


def record_rows(segment: DecodedSegment) -> list[RecordRow]:
    """Every record of a decoded segment, in file order."""
    rows: list[RecordRow] = []
    for index, record in enumerate(segment.records):
        size = int(record["db_size_pages"])
        rows.append(RecordRow(
            offset=segment.record_offset(index), commit_seq=int(record["commit_seq"]),
            txn_id=int(record["txn_id"]), page_no=int(record["page_no"]),
            image_length=int(record["image_length"]), crc=segment.record_crc(index),
            lane_id=int(record["lane_id"]), last_in_commit=bool(record["flags"] & RECORD_FLAG_LAST),
            db_size_pages=size or None))
    return rows


def dump_lines(segment: DecodedSegment, offset: int | None = None) -> list[str]:
    """``offset``: where a version 2 segment starts in its log file (record offsets are file
    offsets either way)."""
    header = segment.header
    where = f"segment {segment.path}"
    if offset is not None:
        where += f" offset {offset:,} (file_no {header.file_no}, salt {header.salt:#018x})"
    figures = (f"epoch {header.epoch}, prev_epoch {header.prev_epoch}, commit_seq "
               f"{header.commit_seq_lo}..{header.commit_seq_hi}, {header.record_count:,} "
               f"record{_plural(header.record_count)}, {header.lane_count} lane"
               f"{_plural(header.lane_count)}, "
               f"{'serialized' if header.serialized else 'parallel'} path, "
               f"{_stored_size(header):,} bytes")
    if header.version != 1:
        figures += f", acked_epoch {header.acked_epoch}"
    lines = [where, figures]
    return lines + format_table(RECORD_HEADINGS, [row.cells() for row in record_rows(segment)],
                                left={5, 7})


# --------------------------------------------------------------------------- recover


def recovery_lines(db_path: str, result: RecoveryResult) -> list[str]:
    """What ``pagewal recover`` reports."""
    pages = int(np.unique(result.records["page_no"]).size)
    base = result.base
    lines = [
        f"recovered {db_path}",
        f"commits: {result.commit_count:,}"
        + (f" (commit_seq {base.commit_seq + 1}..{result.last_commit_seq})"
           if result.commit_count else "")
        + f", records: {result.records.size:,}, pages: {pages:,}, db_size_pages: "
        + ("unset" if result.db_size_pages is None else f"{result.db_size_pages}"),
        f"last: epoch {result.last_epoch}, commit_seq {result.last_commit_seq}; checkpoint: "
        + (f"epoch {base.epoch}, commit_seq {base.commit_seq}" if base != ChainPosition()
           else "none")
        + (f", page size {result.page_size}" if result.page_size else ""),
        f"segments kept: {len(result.segments)}, bytes read: {result.bytes_read:,}",
        *(f"warning: {warning}" for warning in result.warnings),
    ]
    if result.skipped:
        lines.append(f"skipped {len(result.skipped)} segment{_plural(len(result.skipped))} "
                     "(left in place; Wal.open(skip_corrupt=True) renames them to *.corrupt):")
        lines += [f"  {item.path}: offset {item.offset}: {item.reason}" if index == 0
                  else f"  {item.path}: {item.reason}"
                  for index, item in enumerate(result.skipped)]
    else:
        lines.append("skipped: none")
    if result.removed_temp_files:
        lines.append(f"removed leftover files: {len(result.removed_temp_files)}")
        lines += [f"  {path}" for path in result.removed_temp_files]
    else:
        lines.append("removed leftover files: none")
    if result.read_only_reason is not None:
        lines.append(f"read only: {result.read_only_reason}")
    if result.not_removed:
        lines.append(f"left in place: {len(result.not_removed)}")
        lines += [f"  {path}" for path in result.not_removed]
    return lines


# --------------------------------------------------------------------------- tables


def format_table(
    headings: Sequence[str], rows: Sequence[Sequence[str]], *, left: set[int] | None = None
) -> list[str]:
    """Columns padded to their widest cell; numbers right-aligned, ``left`` columns not."""
    left = left or set()
    widths = [max(len(cell) for cell in column) for column in zip(headings, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        padded = [cell.ljust(width) if index in left else cell.rjust(width)
                  for index, (cell, width) in enumerate(zip(cells, widths, strict=True))]
        return "  ".join(padded).rstrip()

    return [line(headings), *(line(row) for row in rows)]


# --------------------------------------------------------------------------- rebuild


def rebuild_lines(rebuild: CheckpointRebuild) -> list[str]:
    """What ``pagewal recover --rebuild-checkpoint`` reports."""
    record = rebuild.record
    if not rebuild.written:
        return [f"checkpoint {rebuild.path}: {describe_checkpoint(record)}; {rebuild.reason}"]
    lines = [f"checkpoint rebuilt: {rebuild.path} now records {describe_checkpoint(record)}",
             f"  why: {rebuild.reason}"]
    if not record.page_size:
        lines.append("  page size: not recorded; WalPager.open records the size it is next "
                     "opened with (give --page-size N to record it now)")
    return lines
