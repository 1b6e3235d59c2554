"""The version 2 log reader (DESIGN §4): where a log ends, and whether what lies beyond the
end is a torn tail or damage to acknowledged epochs.

One place owns the end-of-log rule. :func:`scan_log` is pure (log files' bytes in, a
:class:`LogScan` out); :func:`judge_tail` is the rule itself, a pure function over segment
headers already decoded; :func:`scan_log_files` adds the only I/O (``FileSystem.read_file``).

How the chain is walked. Log files are visited by ascending ``file_no``; in a file, segments
follow each other from offset ``alignment``, each ``segment_span`` bytes long. A file is
entered when its header's ``continues_from`` equals the chain's position, and a later file
that continues from the current position always wins over the rest of the current file: such
a file was made by a recovery that ended the log there, so whatever follows in the current
file is a discarded tail (invariant 4b: neither data nor evidence), however valid it looks.
The chain starts in the newest file whose ``continues_from`` is at or before the start
position (a checkpoint inside a file: the segments it covers are stepped over by header).

How the end is judged. The log ends at the first position where no later file continues it
and the next segment is missing, unwritten, stale (another log's, or an earlier life of the
file: identity mismatch), invalid or does not continue the chain. What lies beyond the end
(every ``alignment`` boundary of the rest of that file, and every boundary of every later file
the chain did not enter) is evidence. A segment header there that is valid and this file's
own proves damage when it records an ``acked_epoch`` beyond the end (an acknowledged epoch is
missing), or when its epoch is at least the in-flight limit past the first missing epoch (the
writer never had that many epochs in flight); a clean-shutdown marker proves damage when it
records an epoch beyond the end. Otherwise the epochs after the end were never acknowledged:
a torn tail, always reported (:class:`TornTail`), never silently dropped. Damage raises
:class:`CorruptSegmentError` naming file, offset and reason, or with ``skip_corrupt`` keeps the
prefix and lists what it left out (invariant 5).

Documented limit (DESIGN §4): damage confined to the newest acknowledged epochs, with no
later segment recording them as acknowledged, cannot be told from a torn write.

What a writer continuing the log needs: :attr:`LogScan.append_at` is where it may go on
writing in place (only after a clean shutdown: over the marker); otherwise (after a crash)
it continues in a fresh log file whose header continues from :attr:`LogScan.last`, with
``min_epoch`` :attr:`LogScan.next_epoch` (above every epoch seen, so that no epoch number ever
names two segments) and a ``file_no`` above :attr:`LogScan.max_file_no`. That fresh file,
once durable, is the durable discard of the torn tail.

What the writer must keep to, for these rules to hold: the chain only ever moves to a file
with a higher ``file_no`` (after an oversized epoch's file of its own, the next epoch goes
into a new file, not back); epoch ``e`` is written only once epoch ``e - inflight_limit`` is
durable (the window is anchored at the durable prefix, not a count of writes outstanding;
after a discarded tail, at ``min_epoch - 1``); and ``acked_epoch`` counts the epochs a reopened
log recovered as acknowledged, so that a later segment vouches for them too.
"""

from __future__ import annotations

import collections
import enum
from collections.abc import Sequence
from typing import TYPE_CHECKING

import attrs
import numpy as np

from ._chain import SkippedSegment, check_continues
from ._codec import ChainPosition, DecodedSegment, SegmentHeader
from ._errors import CorruptSegmentError, ForeignFileError
from ._layout import (
    FILE_HEADER_SIZE,
    NO_LOG_ID,
    SEGMENT_HEADER_SIZE,
    Buffer,
    FileState,
    LogFileHeader,
    ShutdownMarker,
    check_identity,
    decode_file_header,
    decode_segment_header_v2,
    decode_segment_v2,
    is_unwritten,
    segment_span,
)

if TYPE_CHECKING:
    from ._fs import FileSystem


class FileRole(enum.Enum):
    """What a log file is to the chain (:attr:`LogFileInfo.role`)."""

    CHAIN = "chain"
    """The chain passed through it (it may hold no segment of the chain)."""
    COVERED = "covered"
    """Active, but before the file the chain starts in: the checkpoint covers it."""
    STALE = "stale"
    """Active, skipped: the chain went on in a later file that continues it."""
    AFTER_END = "after-end"
    """Active, after the end of the log: its segments were examined as evidence."""
    SPARE = "spare"
    """Not data: ready (never written), header unwritten (being created), or a header naming
    another file_no (being recycled)."""
    DAMAGED = "damaged"
    """Its header is unreadable or it is shorter than its capacity; only ever ignored when the
    chain starts in a later file (or ``skip_corrupt`` set it aside)."""
    FOREIGN = "foreign"
    """Another log's file, left out because the caller tolerates foreign files."""


@attrs.frozen
class LogFileImage:
    """A log file as read: its path, the file_no its name gives, and its bytes (a mapping of
    a large file will do). What :func:`scan_log` takes; no I/O happens after this."""

    path: str
    file_no: int
    data: Buffer = attrs.field(repr=False)


@attrs.frozen
class LogFileInfo:
    """What the scan made of one log file. ``first_epoch``/``last_epoch``: the chain's
    segments in it (0: none); ``chain_end``: the offset after the chain's last segment in it
    (where the chain left it; 0 if the chain never entered it)."""

    path: str
    file_no: int
    role: FileRole
    header: LogFileHeader | None
    first_epoch: int = 0
    last_epoch: int = 0
    chain_end: int = 0
    note: str = ""


@attrs.frozen
class TornTail:
    """Epochs after the end of the log that were never acknowledged (DESIGN §4).

    ``path`` and ``offset``: where the log ends (the next segment would go there).
    ``length``: bytes from there to the end of what was written in that file (whole
    alignment blocks; a clean-shutdown marker at the end is not counted). ``highest_epoch``:
    the highest epoch of any valid segment of this log seen after the end (0: none whole
    enough to tell); ``segments``: how many such segment headers were seen, in that file and
    in every later file.
    """

    path: str
    offset: int
    length: int
    highest_epoch: int
    segments: int


@attrs.frozen
class LogEnd:
    """Where the chain ends: the log file and the offset of the next segment."""

    path: str
    file_no: int
    offset: int


@attrs.frozen
class Evidence:
    """A valid segment header (or clean-shutdown marker) of this log seen after the end:
    header CRC good, and its log id, file_no and salt are those of the file it is in."""

    path: str
    offset: int
    inflight_limit: int
    header: SegmentHeader | ShutdownMarker


@attrs.frozen
class TailVerdict:
    """What :func:`judge_tail` decided: ``damage`` says why an acknowledged epoch is missing
    (``None``: nothing proves it; what follows the end is a torn tail); ``clean_marker`` is the
    clean-shutdown marker found exactly at the end, if any."""

    damage: str | None
    witness: Evidence | None = None
    clean_marker: Evidence | None = None


@attrs.frozen(eq=False)
class LogScan:
    """What :func:`scan_log` found in a log's version 2 files.

    ``segments``: the chain's segments after ``start``, in chain order, validated (each
    one's ``data`` is its file's bytes; image offsets are file offsets). ``last``: the
    position after the last of them (``start`` if none). ``end``: where the chain ends
    (``None``: it entered no file). ``torn_tail``: what lay beyond the end when nothing
    proves it was acknowledged. ``clean_shutdown``: the log was closed cleanly (a marker
    exactly at the end, recording ``last``, and nothing after it). ``max_epoch_seen``: the
    highest epoch of any segment (or marker) of this log the scan saw, in the chain or beyond
    its end, and every file's ``min_epoch - 1``. ``skipped``: what ``skip_corrupt`` left out.
    """

    log_id: bytes
    start: ChainPosition
    last: ChainPosition
    segments: tuple[DecodedSegment, ...]
    files: tuple[LogFileInfo, ...]
    end: LogEnd | None
    torn_tail: TornTail | None
    clean_shutdown: bool
    max_epoch_seen: int
    skipped: tuple[SkippedSegment, ...] = ()

    @property
    def next_epoch(self) -> int:
        """The lowest epoch a writer continuing this log may use (``min_epoch`` of its next
        file): above every epoch seen, so no epoch number ever names two segments."""
        return max(self.max_epoch_seen, self.last.epoch) + 1

    @property
    def max_file_no(self) -> int:
        """The highest file_no among the log's file names (0: none); a new file goes above."""
        return max((info.file_no for info in self.files), default=0)

    @property
    def append_at(self) -> LogEnd | None:
        """Where a reopened writer may go on writing in the same file: the marker's offset,
        only after a clean shutdown. ``None``: continue in a fresh file (DESIGN §4: after
        a crash the log never appends to the file it was writing)."""
        return self.end if self.clean_shutdown else None


# --------------------------------------------------------------------------- the rule


def judge_tail(
    last: ChainPosition,
    first_missing_epoch: int,
    evidence: Sequence[Evidence],
    end: tuple[str, int] | None,
) -> TailVerdict:
    """The end-of-log rule (DESIGN §4), over the evidence found after the end.

    ``last`` is the chain's position at the end; ``first_missing_epoch`` the epoch the
    next segment would have had (``last.epoch + 1``, or a file's ``min_epoch`` when the chain
    ended in a file whose numbering starts above a discarded tail); ``end`` the (path,
    offset) where the next segment would be.
    """
    clean: Evidence | None = None
    for item in evidence:
        header = item.header
        where = f"{item.path} offset {item.offset}"
        if isinstance(header, ShutdownMarker):
            # close() writes the marker once every epoch it records is durable.
            if header.epoch > last.epoch:
                return TailVerdict(
                    f"the clean-shutdown marker at {where} records epoch {header.epoch} as "
                    f"the last durable one", item)
            if header.epoch == last.epoch and (item.path, item.offset) == end:
                if header.commit_seq != last.commit_seq:
                    return TailVerdict(
                        f"the clean-shutdown marker at {where} records commit_seq "
                        f"{header.commit_seq} at epoch {header.epoch}, but the chain there "
                        f"ends at commit_seq {last.commit_seq}", item)
                clean = item
            continue
        # A writer records in each segment the highest epoch it had acknowledged when it
        # sealed it: a later segment recording one past the end proves that epoch was
        # acknowledged, so its loss is damage, never a torn write.
        if header.acked_epoch > last.epoch:
            return TailVerdict(
                f"segment epoch {header.epoch} at {where} records epoch {header.acked_epoch} "
                f"as acknowledged", item)
        # The writer never has epochs `inflight_limit` or more past the first one not yet
        # durable in flight; a segment that far on means that first one had completed.
        if header.epoch >= first_missing_epoch + item.inflight_limit:
            return TailVerdict(
                f"segment epoch {header.epoch} at {where} is {item.inflight_limit} or more "
                f"epochs past the first missing epoch {first_missing_epoch}, more than its "
                f"writer had in flight", item)
    return TailVerdict(None, clean_marker=clean)


# --------------------------------------------------------------------------- the scan



@attrs.define
class _File:
    """A log file while it is being scanned (``role`` None: active, not yet placed)."""

    image: LogFileImage
    view: memoryview
    header: LogFileHeader | None
    role: FileRole | None
    note: str = ""
    first_epoch: int = 0
    last_epoch: int = 0
    chain_end: int = 0

    @property
    def path(self) -> str:
        return self.image.path

    @property
    def file_no(self) -> int:
        return self.image.file_no

    @property
    def own(self) -> LogFileHeader:
        assert self.header is not None, self
        return self.header

    @property
    def size(self) -> int:
        """Bytes that may hold segments: the file, up to its capacity."""
        return min(len(self.view), self.own.capacity)

    def info(self) -> LogFileInfo:
        assert self.role is not None, self
        return LogFileInfo(
            path=self.path, file_no=self.file_no, role=self.role, header=self.header,
            first_epoch=self.first_epoch, last_epoch=self.last_epoch,
            chain_end=self.chain_end, note=self.note)


def scan_log(
    images: Sequence[LogFileImage],
    start: ChainPosition,
    *,
    log_id: bytes = NO_LOG_ID,
    skip_corrupt: bool = False,
    tolerate_foreign: bool = False,
    through: ChainPosition | None = None,
) -> LogScan:
    """Walk a log's version 2 files from ``start`` and judge its end (see the module's
    docstring for the rules).

    ``through``: read a live log only as far as this durable position (a checkpoint of an
    open log). Once the chain reaches it nothing after it is judged: bytes being written
    beyond it are read at different moments, so no torn-tail or damage verdict about them
    could be sound, and none is needed.

    ``images``: the log's files, in any order. ``start``: the position the chain continues
    from (the checkpoint's, or the end of the version 1 segments after it). ``log_id``: the
    log's identity if known (the checkpoint's; all zeros: taken from the files, which must
    all agree). A file of another log raises :class:`ForeignFileError` (``tolerate_foreign``:
    it is left out). Damage raises :class:`CorruptSegmentError` naming file, offset and
    reason; with ``skip_corrupt`` the chain before it is returned and what was left out is
    listed in :attr:`LogScan.skipped`.
    """
    files, log_id = _identify(images, log_id, tolerate_foreign)
    active = [f for f in files if f.role is None]
    walked = _follow_chain(active, start)
    current, offset, position = walked.current, walked.offset, walked.position
    end_file_no = current.file_no if current is not None else 0
    for f in active:
        if f.role is None:
            f.role = (FileRole.COVERED if f.file_no < walked.first_file_no else
                      FileRole.STALE if f.file_no < end_file_no else FileRole.AFTER_END)
    if through is not None and position.epoch >= through.epoch:
        return LogScan(
            log_id=log_id, start=start, last=position, segments=tuple(walked.segments),
            files=tuple(f.info() for f in files), end=None, torn_tail=None,
            clean_shutdown=False, max_epoch_seen=position.epoch)

    # Everything beyond the end: the rest of the file it is in, and every later active file.
    evidence: list[Evidence] = []
    written_end = offset
    end_written = False
    if current is not None:
        evidence, written_end = _evidence(current, offset)
        end_written = offset < current.size and not is_unwritten(
            current.view[offset : offset + SEGMENT_HEADER_SIZE])
    later_written: list[_File] = []
    for f in active:
        if f.role is FileRole.AFTER_END:
            found, written_to = _evidence(f, f.own.alignment)
            evidence += found
            if written_to > f.own.alignment:
                later_written.append(f)
    end = LogEnd(current.path, current.file_no, offset) if current is not None else None
    end_at = (end.path, end.offset) if end is not None else None
    # After a discarded tail a file's numbering starts at its min_epoch, not last + 1.
    first_missing = max(position.epoch + 1, current.own.min_epoch if current else 0)
    verdict = judge_tail(position, first_missing, evidence, end_at)
    max_epoch = max([position.epoch, *(item.header.epoch for item in evidence),
                     *(f.own.min_epoch - 1 for f in active)])

    damage = walked.damage
    if damage is None and verdict.damage is not None:
        assert verdict.witness is not None
        path, at = end_at if end_at is not None else (verdict.witness.path,
                                                      verdict.witness.offset)
        damage = (path, at, f"the log ends here ({walked.break_reason}), but "
                            f"{verdict.damage}: an acknowledged epoch is missing or damaged, "
                            "not a torn tail")
    # A file whose header cannot be read, after the end: whether it continues the chain cannot
    # be told, so fail closed. (One before the end was passed over by a file continuing the
    # chain, or lies before where the chain starts: not needed.)
    unreadable = [f for f in files if f.role is FileRole.DAMAGED and f.file_no > end_file_no]
    if damage is None and unreadable:
        damage = (unreadable[0].path, 0, f"{unreadable[0].note}; the log ends before it "
                  f"(epoch {position.epoch}, commit_seq {position.commit_seq}) and whether "
                  "it continues the chain cannot be told")
    if damage is not None:
        if not skip_corrupt:
            raise CorruptSegmentError(*damage)
        skipped = [SkippedSegment(*damage)]
        skipped += [SkippedSegment(f.path, 0, f.note) for f in unreadable
                    if f.path != damage[0]]
        skipped += [SkippedSegment(item.path, item.offset, f"after the damaged end of the log "
                                   f"(epoch {item.header.epoch})") for item in evidence
                    if (item.path, item.offset) != damage[:2]]
        return LogScan(
            log_id=log_id, start=start, last=position, segments=tuple(walked.segments),
            files=tuple(f.info() for f in files), end=end, torn_tail=None,
            clean_shutdown=False, max_epoch_seen=max_epoch, skipped=tuple(skipped))

    clean = verdict.clean_marker
    beyond = [item for item in evidence if item is not clean]
    torn_tail = None
    # Something was written where the next segment would go, or a segment of this log lies
    # beyond the end, or a file after the end was written to: a tail was torn. Bytes after a
    # clean-shutdown marker that hold no segment of this log are a recycled file's earlier
    # life (recycled files are not zero-filled), not a tail.
    if (end_written and clean is None) or beyond or later_written:
        where = end or LogEnd((later_written or beyond)[0].path, 0, 0)
        tail_start = offset + (current.own.alignment if clean and current else 0)
        torn_tail = TornTail(
            path=where.path, offset=where.offset, length=max(0, written_end - tail_start),
            highest_epoch=max((item.header.epoch for item in beyond), default=0),
            segments=len(beyond))
    return LogScan(
        log_id=log_id, start=start, last=position, segments=tuple(walked.segments),
        files=tuple(f.info() for f in files), end=end, torn_tail=torn_tail,
        clean_shutdown=clean is not None and torn_tail is None, max_epoch_seen=max_epoch)


@attrs.frozen
class _Walked:
    """Where :func:`_follow_chain` stopped: the file and offset of the end (``current``
    None: the chain entered no file), the position there, the segments it went through, why
    it stopped, and damage that stopped it before the start position was even reached."""

    current: _File | None
    offset: int
    position: ChainPosition
    segments: list[DecodedSegment]
    break_reason: str
    first_file_no: int
    damage: tuple[str, int, str] | None = None


def _follow_chain(active: list[_File], start: ChainPosition) -> _Walked:
    # The chain starts in the newest file whose continuation is at or before `start`; a
    # newer one continuing from exactly `start` was made by a recovery that ended it there.
    starts = [f for f in active if f.own.continues_from.epoch <= start.epoch]
    if not starts:
        return _Walked(None, 0, start, [], f"no log file continues the chain from epoch "
                       f"{start.epoch}, commit_seq {start.commit_seq}", 0)
    first = starts[-1]
    first.role = FileRole.CHAIN
    offset = first.own.alignment
    position = first.own.continues_from
    # A start inside this file (a checkpoint): step over the segments it covers, by header.
    while position != start:
        step = (_covered_step(first, offset, position, start)
                if position.epoch < start.epoch else
                f"the chain in this file goes from epoch {position.epoch}, commit_seq "
                f"{position.commit_seq} without reaching it")
        if isinstance(step, str):
            reason = (f"cannot reach the chain's start (epoch {start.epoch}, commit_seq "
                      f"{start.commit_seq}): {step}")
            return _Walked(first, offset, start, [], reason, first.file_no,
                           (first.path, offset, reason))
        position, span = step
        offset += span
    segments: list[DecodedSegment] = []
    current, offset, reason = _walk(first, offset, position, active, segments)
    if segments:
        position = ChainPosition(segments[-1].header.epoch, segments[-1].header.commit_seq_hi)
    return _Walked(current, offset, position, segments, reason, first.file_no)


def _identify(
    images: Sequence[LogFileImage], log_id: bytes, tolerate_foreign: bool
) -> tuple[list[_File], bytes]:
    """Decode every file's header and sort the files out: spares, unreadable ones, other
    logs' (invariant 4b), and the active ones the chain may go through (role None)."""
    files: list[_File] = []
    for image in sorted(images, key=lambda image: image.file_no):
        view = memoryview(image.data).cast("B")
        if is_unwritten(view[:FILE_HEADER_SIZE]):
            files.append(_File(image, view, None, FileRole.SPARE,
                               "header unwritten: the file is being created"))
            continue
        try:
            decoded = decode_file_header(view, image.path)
        except CorruptSegmentError as error:
            files.append(_File(image, view, None, FileRole.DAMAGED,
                               f"log file header unreadable at offset {error.offset}: "
                               f"{error.reason}"))
            continue
        files.append(_File(image, view, decoded, None))
    if not any(log_id):
        # No checkpoint names the log: the id most files carry is the log's (ties: the
        # lowest-numbered file's), so one stray file of another log is the one named foreign.
        ids = collections.Counter(f.header.log_id for f in files if f.header is not None)
        log_id = max(ids, key=ids.__getitem__) if ids else NO_LOG_ID
    foreign: list[tuple[str, str]] = []
    for f in files:
        header = f.header
        if header is None:
            continue
        if header.log_id != log_id:
            f.role = FileRole.FOREIGN
            f.note = (f"a log file of another log (log id {header.log_id.hex()}; this log's "
                      f"is {log_id.hex()})")
            foreign.append((f.path, f.note))
        elif header.file_no != f.file_no:
            f.role = FileRole.SPARE
            f.note = f"its header names file_no {header.file_no}: the file is being recycled"
        elif header.state is FileState.READY:
            f.role = FileRole.SPARE
            f.note = "ready: never written"
        elif len(f.view) < header.capacity:
            f.role = FileRole.DAMAGED
            f.note = (f"the file is {len(f.view)} bytes, shorter than its capacity "
                      f"{header.capacity}")
    if foreign and not tolerate_foreign:
        raise ForeignFileError(tuple(foreign))
    return files, log_id


def _covered_step(
    file: _File, offset: int, position: ChainPosition, start: ChainPosition
) -> tuple[ChainPosition, int] | str:
    """Step over a segment the start position covers (its body is not needed, only its
    header: valid, this file's, chaining): the position after it and its span, or why not."""
    if offset + SEGMENT_HEADER_SIZE > file.size:
        return "the file ends first"
    try:
        header = decode_segment_header_v2(file.view, file.path, offset, file_size=file.size)
        check_identity(header, file.own, file.path, offset)
        if isinstance(header, ShutdownMarker):
            return "a clean-shutdown marker comes first"
        after = check_continues(position, header, file.path)
    except CorruptSegmentError as error:
        return error.reason
    if after.epoch > start.epoch:
        return (f"segment epoch {after.epoch} follows epoch {position.epoch}, passing the "
                "start position")
    return after, segment_span(header.body_length, file.own.alignment)


def _walk(
    current: _File, offset: int, position: ChainPosition, active: list[_File],
    segments: list[DecodedSegment],
) -> tuple[_File, int, str]:
    """Follow the chain from ``offset`` of ``current``, appending its segments; return the
    file and offset where it ends, and why. The files it goes through get role CHAIN and
    their chain fields."""
    continuing: dict[ChainPosition, list[_File]] = {}
    for f in active:
        continuing.setdefault(f.own.continues_from, []).append(f)
    while True:
        # A later file continuing from here wins over the rest of this one: it was made by a
        # recovery that ended the log here (DESIGN §4), so what follows here is a
        # discarded tail, not data and not evidence, however valid it looks.
        later = next((f for f in continuing.get(position, ()) if f.file_no > current.file_no),
                     None)
        if later is not None:
            current.chain_end = offset
            current, offset = later, later.own.alignment
            current.role = FileRole.CHAIN
            continue
        found = _segment_at(current, offset, position)
        if isinstance(found, str):
            current.chain_end = offset
            return current, offset, found
        header = found.header
        segments.append(found)
        current.first_epoch = current.first_epoch or header.epoch
        current.last_epoch = header.epoch
        position = ChainPosition(header.epoch, header.commit_seq_hi)
        offset += segment_span(header.body_length, current.own.alignment)


def _segment_at(file: _File, offset: int, position: ChainPosition) -> DecodedSegment | str:
    """The segment at ``offset`` if it is whole, this file's and continues ``position``;
    otherwise why the chain ends there."""
    if offset + SEGMENT_HEADER_SIZE > file.size:
        return f"the file ends at offset {file.size}"
    if is_unwritten(file.view[offset : offset + SEGMENT_HEADER_SIZE]):
        return "the next segment is unwritten"
    try:
        segment = decode_segment_v2(file.view, file.path, offset, file.own)
        if isinstance(segment, ShutdownMarker):
            return "a clean-shutdown marker follows the last segment"
        check_continues(position, segment.header, file.path)
    except CorruptSegmentError as error:
        return f"the next segment is not valid: {error.reason}"
    return segment


def _evidence(file: _File, start: int) -> tuple[list[Evidence], int]:
    """Every valid header of this file's own segments (and markers) at an alignment
    boundary from ``start`` on, and the end of the last written (not all-zero) block."""
    alignment = file.own.alignment
    size = file.size - file.size % alignment
    if start >= size:
        return [], start
    count = (size - start) // alignment
    blocks = np.frombuffer(file.view, dtype=np.uint8, count=count * alignment, offset=start)
    written = np.flatnonzero(blocks.reshape(count, alignment).any(axis=1))
    found: list[Evidence] = []
    for index in written.tolist():
        offset = start + index * alignment
        try:
            header = decode_segment_header_v2(file.view, file.path, offset,
                                              file_size=file.size)
            check_identity(header, file.own, file.path, offset)
        except CorruptSegmentError:
            continue  # torn, stale (an earlier life, another log) or not a header at all
        found.append(Evidence(file.path, offset, file.own.inflight_limit, header))
    written_end = start + (int(written[-1]) + 1) * alignment if written.size else start
    return found, written_end


# --------------------------------------------------------------------------- I/O


def scan_log_files(
    fs: FileSystem,
    paths: Sequence[tuple[str, int]],
    start: ChainPosition,
    *,
    log_id: bytes = NO_LOG_ID,
    skip_corrupt: bool = False,
    tolerate_foreign: bool = False,
    skip_vanished: bool = False,
    through: ChainPosition | None = None,
) -> LogScan:
    """Read the log files ``(path, file_no)`` through the file-system seam (large files are
    mapped, not copied) and :func:`scan_log` them. A path that is not a regular file raises
    :class:`ForeignFileError` naming every such file (``tolerate_foreign``: left out).
    ``skip_vanished``: a file gone since it was listed (a live log recycled it: every segment
    in it was covered by a checkpoint) is left out instead of raising ``FileNotFoundError``;
    a file the chain needs that vanished still makes the chain fall short."""
    images: list[LogFileImage] = []
    foreign: list[tuple[str, str]] = []
    for path, file_no in paths:
        try:
            images.append(LogFileImage(path, file_no, fs.read_file(path)))
        except FileNotFoundError:
            if not skip_vanished:
                raise
        except ForeignFileError as error:
            foreign += error.files
    if foreign and not tolerate_foreign:
        raise ForeignFileError(tuple(foreign))
    return scan_log(images, start, log_id=log_id, skip_corrupt=skip_corrupt,
                    tolerate_foreign=tolerate_foreign, through=through)
