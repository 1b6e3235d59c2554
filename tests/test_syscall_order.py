"""DESIGN §2 invariants 1 and 4 for format 2 log files, checked against the real kernel.

A multi-threaded workload runs under ``strace -f -y -xx -s 96`` (every string, path and the
first 96 bytes of every written buffer in hex, every descriptor with the path behind it). Each
committing thread writes ``SUBMIT`` with one ``write(2)`` just before ``wal.commit(...)`` and
``ACK <epoch>`` just after it returns, so each commit is a window of trace lines on its thread.
The files are small (64 KiB), so the log moves to new log files several times during the run.
The checker requires:

1. **Ack ⇒ durable write** (invariant 1). Before each ``ACK E`` began, a write of epoch E's
   segment to a log file ``<db>-wal-<16 hex>`` finished in full and was durable: a ``pwritev2``
   with ``RWF_DSYNC``, or a write followed by an ``fsync``/``fdatasync`` of that file begun
   after the write finished and finished before the ACK. The segment is recognised by its first
   buffer: magic ``0x5057414D`` at offset 0, the epoch (u64) at offset 8, the clean-shutdown
   flag clear at offset 6.
2. **The file was durable before the segment went in** (invariant 4). The log file that write
   went to was, before the write began: created as ``<name>.tmp`` (``openat`` with
   ``O_CREAT``), written, fsynced (begun after the last write to it finished), renamed to
   ``<name>`` (begun after that fsync finished), and its directory fsynced (begun after the
   rename finished); no write to the temporary file came after its fsync began. A file that
   existed before the traced process started (a reopened log) is accepted as durable, and only
   if the caller names it; a file the log recycled under a new name would be reported (the
   workload makes no checkpoints, so none is).
3. **No file-system metadata operation on the commit path** (invariant 4). While any commit
   is between its ``SUBMIT`` and its ``ACK``, no thread other than the log-file pool thread
   makes an ``openat``/``creat`` with ``O_CREAT``, a ``rename*``, ``unlink*``, ``ftruncate``,
   ``fallocate`` or an ``fsync``/``fdatasync`` of a directory. The pool thread is the one that
   creates the ``.tmp`` log files and renames them (strace shows thread ids, not names); a
   committing thread is never taken for it. (An epoch larger than a log file gets a file made
   in the committing thread, the contract's one exception; the workload's epochs are far
   smaller, so that would be reported too.) The pool thread's own work may overlap
   commits; a commit that had to *wait* for it is counted by the log (``log_file_waits``). Such
   a wait is invisible in the trace (it blocks on a lock), but it implies that the file it
   waited for became ready after every commit of the epoch that first went into it was
   submitted; the test prints the count and checks it against those candidates.

A syscall counts as done at the line carrying its result (``<... fsync resumed>) = 0`` when
strace split it), and as begun at its first line. strace prints a thread's syscall exit before
letting it run on, so "finished before trace line n" holds in real time, whatever order the
threads ran in. The checker is also run on hand-written traces and on deliberately broken logs,
and must report them: a checker that cannot fail proves nothing.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pagewal._layout import SEGMENT_FLAG_CLEAN_SHUTDOWN, SEGMENT_MAGIC

COMMITS_PER_THREAD = 40
THREADS = 2

# "?" keeps strace quiet about syscalls this architecture lacks (open/rename on aarch64).
TRACED = ("?open,openat,?creat,write,writev,pwrite64,pwritev,pwritev2,fsync,fdatasync,"
          "?rename,renameat,?renameat2,?unlink,unlinkat,ftruncate,fallocate,close")

WORKLOAD = r"""
import importlib, os, random, sys, threading
import pagewal

db, wal_spec, commits, thread_count, hold = sys.argv[1:6]
module_name, _, class_name = wal_spec.partition(":")
wal_class = getattr(importlib.import_module(module_name), class_name)
config = pagewal.WalConfig(lanes=2, epoch_interval_ms=1, log_file_bytes=64 << 10)
assert config.fsync is pagewal.FsyncMode.FULL, config.fsync
wal = wal_class.open(db, config)
errors = []
acked = set()
acked_cv = threading.Condition()

if hold == "hold":
    # Makes the race a log that acknowledges before writing would lose happen every time,
    # instead of hoping for it: a segment whose epoch is already durable when its write begins
    # (impossible in a correct log) is written only once one of its commits has printed its
    # ACK. Commits then wait with a timeout, so the ticker thread (never a committing thread)
    # writes every segment.
    writer = wal._writer
    real_write = writer.write
    def held_write(placement, buffers):
        epoch = int.from_bytes(bytes(memoryview(buffers[0])[8:16]), "little")
        if wal.durable_position.epoch >= epoch:
            with acked_cv:
                acked_cv.wait_for(lambda: epoch in acked, timeout=30)
        return real_write(placement, buffers)
    writer.write = held_write

def work(index):
    rng = random.Random(index)
    try:
        for n in range(int(commits)):
            pages = {rng.randrange(64): rng.randbytes(rng.randint(500, 2000))
                     for _ in range(rng.randint(1, 3))}
            os.write(1, b"SUBMIT\n")  # one write(2) each: the commit's window in the trace
            if hold == "hold":
                ticket = wal.commit(pages, timeout=60)
            else:
                ticket = wal.commit(pages)
            os.write(1, b"ACK %d\n" % ticket.epoch)
            with acked_cv:
                acked.add(ticket.epoch)
                acked_cv.notify_all()
    except BaseException as error:
        errors.append(error)
        raise

threads = [threading.Thread(target=work, args=(i,)) for i in range(int(thread_count))]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
stats = wal.statistics()
waits = getattr(stats, "log_file_waits", None)
if waits is None:
    waits = wal._writer.statistics["log_file_waits"]
wal.close()
os.write(1, b"LOG_FILE_WAITS %d\n" % waits)
sys.exit(1 if errors else 0)
"""


# --------------------------------------------------------------------------- trace parsing


@dataclass(frozen=True)
class Call:
    """One completed syscall: its text, the trace lines where it began and where it returned."""

    tid: int
    name: str
    args: str
    result: int | None
    result_path: str | None
    entry: int
    exit: int


_LINE = re.compile(r"^(\d+)\s+(.*)$")
_RESUMED = re.compile(r"^<\.\.\. (\w+) resumed>(.*)$")
_CALL = re.compile(r"^(\w+)\((.*)$")
_UNFINISHED = " <unfinished ...>"
_HEX = r"((?:\\x[0-9a-f]{2})*)"  # a string or path as strace -xx prints it
_RESULT = re.compile(r"\)\s+= (-?\d+|\?)(?:<" + _HEX + r">)?(?: [A-Z][A-Z0-9_]*)?"
                     r"(?: \([^()]*\))?$")
_FD_PATH = re.compile(r"^(?:-?\d+|AT_FDCWD)<" + _HEX + ">")
_DIRFD_STRING = re.compile(r"(?:(?:-?\d+|AT_FDCWD)<" + _HEX + '>, )?"' + _HEX + '"')
_IOVEC = re.compile(r'\{iov_base="' + _HEX + r'"(?:\.\.\.)?, iov_len=(\d+)\}')
_AFTER_IOVECS = re.compile(r"\], (\d+), (\d+)(?:, ([A-Z_|0-9x]+))?$")
_PWRITE64 = re.compile(r'^[^,]*, "' + _HEX + r'"(?:\.\.\.)?, (\d+), (\d+)$')
_WRITE = re.compile(r'^[^,]*, "' + _HEX + r'"(?:\.\.\.)?, (\d+)$')


def unhex(text: str) -> bytes:
    """The bytes of a string strace printed with ``-xx`` (every byte as ``\\xNN``)."""
    return bytes.fromhex(text.replace("\\x", ""))


def unhex_path(text: str) -> str:
    return os.fsdecode(unhex(text))


def parse_trace(lines: Iterable[str]) -> list[Call]:
    """Completed syscalls of an ``strace -f -y -xx`` trace, in the order they returned.

    Joins ``name(args <unfinished ...>`` with its ``<... name resumed>rest) = result`` line of
    the same tid; lines that are neither (signals, exits, ``= ?`` of exit_group) are skipped.
    With ``-xx`` every string is ``\\xNN`` escapes, so no ``) = `` can hide inside one.
    """
    pending: dict[int, tuple[str, str, int]] = {}
    calls: list[Call] = []
    for number, raw in enumerate(lines, start=1):
        match = _LINE.match(raw.rstrip("\n"))
        if match is None:
            continue
        tid, text = int(match.group(1)), match.group(2)
        resumed = _RESUMED.match(text)
        if resumed is not None:
            if tid not in pending or pending[tid][0] != resumed.group(1):
                continue
            name, head, entry = pending.pop(tid)
            text = head + resumed.group(2)
        else:
            call = _CALL.match(text)
            if call is None:
                continue
            name, entry = call.group(1), number
            if text.endswith(_UNFINISHED):
                pending[tid] = (name, call.group(2)[: -len(_UNFINISHED)], number)
                continue
            text = call.group(2)
        result = _RESULT.search(text)
        if result is None:
            continue
        value = None if result.group(1) == "?" else int(result.group(1))
        path = None if result.group(2) is None else unhex_path(result.group(2))
        calls.append(Call(tid, name, text[: result.start()], value, path, entry, number))
    return calls


@dataclass(frozen=True)
class Write:
    """A write the trace shows: where it went, the first bytes of its first buffer."""

    call: Call
    path: str | None
    offset: int | None
    head: bytes
    length: int  # bytes asked for

    @property
    def complete(self) -> bool:
        return self.call.result == self.length

    @property
    def dsync(self) -> bool:
        return self.call.name == "pwritev2" and bool(
            re.search(r", \d+, \d+, [A-Z_|]*RWF_(?:D)?SYNC", self.call.args))


def as_write(call: Call) -> Write | None:
    fd = _FD_PATH.match(call.args)
    path = unhex_path(fd.group(1)) if fd else None
    if call.name in ("pwritev", "pwritev2", "writev"):
        iovecs = _IOVEC.findall(call.args)
        after = _AFTER_IOVECS.search(call.args) if call.name != "writev" else None
        head = unhex(iovecs[0][0]) if iovecs else b""
        return Write(call, path, int(after.group(2)) if after else None, head,
                     sum(int(n) for _, n in iovecs))
    if call.name == "pwrite64":
        match = _PWRITE64.match(call.args)
        if match:
            return Write(call, path, int(match.group(3)), unhex(match.group(1)),
                         int(match.group(2)))
    if call.name == "write":
        match = _WRITE.match(call.args)
        if match:
            return Write(call, path, None, unhex(match.group(1)), int(match.group(2)))
    return None


def call_paths(call: Call) -> list[str]:
    """The paths a path-taking call names, made absolute by the directory descriptor strace
    resolved before each (``AT_FDCWD</cwd>``)."""
    paths = []
    for directory, name in _DIRFD_STRING.findall(call.args):
        path = unhex_path(name)
        if directory and not os.path.isabs(path):
            path = os.path.join(unhex_path(directory), path)
        paths.append(os.path.normpath(path))
    return paths


# --------------------------------------------------------------------------- the checker


@dataclass
class LogFile:
    """How a log file came to be, as the trace shows it (None: the step is not in the trace)."""

    name: str
    created: Call | None = None
    tmp_writes: list[Call] = field(default_factory=list)
    extent: int = 0  # bytes of the file the writes before its fsync reached
    fsync: Call | None = None
    rename: Call | None = None
    dir_fsync: Call | None = None
    late_writes: list[Call] = field(default_factory=list)

    def missing_before(self, line: int) -> str | None:
        """The first step of making the file durable not finished before trace line ``line``."""
        if self.created is None or self.created.exit >= line:
            return f"creation of {self.name}.tmp"
        if not self.tmp_writes or self.tmp_writes[0].exit >= line:
            return "a write to the temporary file"
        steps = (("fsync of the temporary file", self.fsync),
                 ("rename to the final name", self.rename),
                 ("fsync of the directory after the rename", self.dir_fsync))
        for what, call in steps:
            if call is None or call.exit >= line:
                return what
        return None

    def describe(self) -> str:
        parts = [f"created@{self.created.exit}" if self.created else "not created"]
        parts.append(f"{len(self.tmp_writes)} writes" + (
            f"@{self.tmp_writes[0].entry}-{self.tmp_writes[-1].exit}" if self.tmp_writes else ""))
        for what, call in (("fsync", self.fsync), ("rename", self.rename),
                           ("dir-fsync", self.dir_fsync)):
            parts.append(f"{what}@{call.entry}-{call.exit}" if call else f"no {what}")
        return ", ".join(parts)


@dataclass(frozen=True)
class Segment:
    """A write of one epoch's segment into a log file, and when it was durable."""

    epoch: int
    file: str
    write: Write
    durable_at: int | None  # trace line where it became durable (None: never)


@dataclass
class Report:
    acks: list[tuple[int, int, int]]  # (trace line of the ACK write, tid, epoch)
    submits: list[tuple[int, int]]  # (trace line, tid)
    files: dict[str, LogFile]
    segments: dict[int, list[Segment]]
    pool_tids: set[int]
    committing_tids: set[int]
    metadata_ops: Counter[tuple[int, str]]  # (tid, syscall) over the whole trace
    pool_ops_during_commits: int
    wait_candidates: int  # activations a commit may have waited for (see the docstring)
    violations: list[str]

    @property
    def acked_epochs(self) -> set[int]:
        return {epoch for _, _, epoch in self.acks}

    def files_written(self) -> list[str]:
        """Log files that got segments, in the order their first segment was written."""
        first: dict[str, int] = {}
        for segments in self.segments.values():
            for segment in segments:
                line = segment.write.call.entry
                first[segment.file] = min(first.get(segment.file, line), line)
        return sorted(first, key=first.__getitem__)


_SEGMENT_HEAD = struct.Struct("<IHHQ")
_METADATA = ("rename", "renameat", "renameat2", "unlink", "unlinkat", "ftruncate", "fallocate")


def check_log_order(calls: Sequence[Call], db_path: str, *,
                    preexisting: Iterable[str] = ()) -> Report:
    """Check the rules of the module docstring on a parsed trace of a log for ``db_path``.

    ``preexisting``: names of log files that existed before the traced process started.
    """
    directory = os.path.realpath(os.path.dirname(os.path.abspath(db_path)))
    log_name = re.compile(re.escape(os.path.basename(db_path)) + r"-wal-[0-9a-f]{16}(\.tmp)?$")
    preexisting = set(preexisting)

    def log_file(path: str | None) -> tuple[str, bool] | None:
        """(final name, is_temporary) if ``path`` names a log file of this log."""
        if path is None:
            return None
        match = log_name.match(os.path.basename(path))
        if match is None or os.path.realpath(os.path.dirname(path)) != directory:
            return None
        temporary = match.group(1) is not None
        base = os.path.basename(path)
        return (base[: -len(".tmp")] if temporary else base), temporary

    def is_directory(path: str | None) -> bool:
        return path is not None and (os.path.realpath(path) == directory or os.path.isdir(path))

    files: dict[str, LogFile] = {}
    writes: dict[str, list[Write]] = defaultdict(list)  # final-name writes, by file
    syncs: dict[str, list[Call]] = defaultdict(list)
    acks: list[tuple[int, int, int]] = []
    submits: list[tuple[int, int]] = []
    metadata: list[Call] = []
    creators: set[int] = set()
    violations: list[str] = []

    for call in sorted(calls, key=lambda c: c.exit):
        ok = call.result is not None and call.result >= 0
        fd = _FD_PATH.match(call.args)
        fd_path = unhex_path(fd.group(1)) if fd else None
        if call.name in ("open", "openat", "creat"):
            if "O_CREAT" in call.args or call.name == "creat":
                metadata.append(call)
                named = log_file(call.result_path) if ok else None
                if named is not None and named[1]:
                    creators.add(call.tid)
                    files.setdefault(named[0], LogFile(named[0]))
                    if files[named[0]].created is None:
                        files[named[0]].created = call
        elif call.name in ("write", "writev", "pwrite64", "pwritev", "pwritev2"):
            write = as_write(call)
            if write is None or not ok:
                continue
            if call.name == "write" and write.head == b"SUBMIT\n":
                submits.append((call.entry, call.tid))
                continue
            if call.name == "write" and write.head.startswith(b"ACK "):
                acks.append((call.entry, call.tid, int(write.head[4:].strip())))
                continue
            named = log_file(write.path)
            if named is None:
                continue
            if named[1]:
                item = files.get(named[0])
                if item is None or item.created is None or call.entry <= item.created.exit:
                    continue
                if item.fsync is None:
                    item.tmp_writes.append(call)
                    end = (write.offset or 0) + (call.result or 0)
                    item.extent = max(item.extent, end if write.offset is not None else 0)
                else:
                    item.late_writes.append(call)
            else:
                writes[named[0]].append(write)
        elif call.name in ("fsync", "fdatasync"):
            if is_directory(fd_path):
                metadata.append(call)
                if call.result == 0:
                    for item in files.values():
                        if (item.rename is not None and item.dir_fsync is None
                                and call.entry > item.rename.exit):
                            item.dir_fsync = call
                continue
            named = log_file(fd_path)
            if named is None or call.result != 0:
                continue
            if named[1]:
                item = files.get(named[0])
                if (item is not None and item.fsync is None and item.tmp_writes
                        and call.entry > item.tmp_writes[-1].exit):
                    item.fsync = call
            else:
                syncs[named[0]].append(call)
        elif call.name in _METADATA:
            metadata.append(call)
            paths = call_paths(call)
            if call.name.startswith("rename") and len(paths) >= 2 and call.result == 0:
                source, target = log_file(paths[0]), log_file(paths[1])
                if target is not None:
                    creators.add(call.tid)
                if (source is not None and target is not None and source[1] and not target[1]
                        and source[0] == target[0] and source[0] in files):
                    item = files[source[0]]
                    if (item.rename is None and item.fsync is not None
                            and call.entry > item.fsync.exit):
                        item.rename = call

    # Segment writes of each epoch, and when each became durable.
    segments: dict[int, list[Segment]] = defaultdict(list)
    for name, file_writes in writes.items():
        for write in file_writes:
            if len(write.head) < _SEGMENT_HEAD.size:
                continue
            magic, _, flags, epoch = _SEGMENT_HEAD.unpack_from(write.head)
            if magic != SEGMENT_MAGIC or flags & SEGMENT_FLAG_CLEAN_SHUTDOWN:
                continue
            durable_at: int | None = None
            if write.complete and write.dsync:
                durable_at = write.call.exit
            elif write.complete:
                later = [s.exit for s in syncs[name] if s.entry > write.call.exit]
                durable_at = min(later, default=None)
            segments[epoch].append(Segment(epoch, name, write, durable_at))

    # Rules 1 and 2, for every acknowledgement.
    for line, _, epoch in acks:
        candidates = segments.get(epoch, [])
        if not candidates:
            violations.append(f"ACK {epoch} at trace line {line}: no segment of epoch {epoch} "
                              "was ever written to a log file")
            continue
        done = [s for s in candidates if s.durable_at is not None and s.durable_at < line]
        if not done:
            described = ", ".join(
                f"{s.write.call.name}@{s.write.call.entry}-{s.write.call.exit} to {s.file}"
                + ("" if s.write.complete else " (short)")
                + (f" durable@{s.durable_at}" if s.durable_at else " never made durable")
                for s in candidates)
            violations.append(f"ACK {epoch} at trace line {line} came before the durable "
                              f"write of segment {epoch} finished ({described})")
            continue
        segment = done[0]
        begun = segment.write.call.entry
        if segment.file in preexisting:
            continue
        item = files.get(segment.file)
        missing = (f"creation of {segment.file}.tmp" if item is None
                   else item.missing_before(begun))
        if missing is None and item is not None and segment.write.offset is not None and (
                item.extent < segment.write.offset + segment.write.length):
            missing = (f"zero-filling the file past the segment (the writes before its fsync "
                       f"reach byte {item.extent})")
        if missing is not None:
            violations.append(
                f"ACK {epoch} at trace line {line}: segment {epoch} was written to {segment.file} "
                f"at trace line {begun}, before {missing} "
                f"({item.describe() if item else 'never created'})")
    for name, item in sorted(files.items()):
        for call in item.late_writes:
            violations.append(f"{name}: write to the temporary file at trace line {call.entry} "
                              "after its fsync began (not covered by it)")

    # Rule 3: commit windows, and metadata operations by anyone but the pool thread.
    committing = {tid for _, tid in submits} | {tid for _, tid, _ in acks}
    pool_tids = creators - committing
    windows: list[tuple[int, int, int]] = []  # (SUBMIT line, ACK line, tid)
    open_submit: dict[int, int] = {}
    for line, tid, kind in sorted([(line, tid, "S") for line, tid in submits]
                                  + [(line, tid, "A") for line, tid, _ in acks]):
        if kind == "S":
            open_submit[tid] = line
        elif tid in open_submit:
            windows.append((open_submit.pop(tid), line, tid))
        else:
            violations.append(f"ACK at trace line {line} (thread {tid}) has no SUBMIT before it")
    pool_ops_during_commits = 0
    for call in metadata:
        overlapping = [w for w in windows if call.entry < w[1] and call.exit > w[0]]
        if not overlapping:
            continue
        if call.tid in pool_tids:
            pool_ops_during_commits += 1
            continue
        start, end, tid = overlapping[0]
        violations.append(f"{call.name} by thread {call.tid} at trace lines {call.entry}-"
                          f"{call.exit}, while thread {tid}'s commit was between SUBMIT "
                          f"(line {start}) and ACK (line {end}): a file-system metadata "
                          f"operation on the commit path ({call.args[:120]})")

    # Waits for a ready file: a commit that waited for file F had submitted before F was ready,
    # and so had every other commit of the epoch whose segment first went into F.
    last_submit: dict[int, int] = {}
    window_of_ack = {end: start for start, end, _ in windows}
    for line, _, epoch in acks:
        if line in window_of_ack:
            last_submit[epoch] = max(last_submit.get(epoch, 0), window_of_ack[line])
    first_epoch: dict[str, tuple[int, int]] = {}  # file -> (offset, epoch) of its first segment
    for epoch, epoch_segments in segments.items():
        for segment in epoch_segments:
            offset = segment.write.offset or 0
            if segment.file not in first_epoch or offset < first_epoch[segment.file][0]:
                first_epoch[segment.file] = (offset, epoch)
    wait_candidates = 0
    for name, (_, epoch) in first_epoch.items():
        item = files.get(name)
        ready = item.dir_fsync.exit if item is not None and item.dir_fsync else None
        if ready is not None and ready > last_submit.get(epoch, 0):
            wait_candidates += 1

    return Report(acks=acks, submits=submits, files=files, segments=dict(segments),
                  pool_tids=pool_tids, committing_tids=committing,
                  metadata_ops=Counter((c.tid, c.name) for c in metadata),
                  pool_ops_during_commits=pool_ops_during_commits,
                  wait_candidates=wait_candidates, violations=violations)


# --------------------------------------------------------------------------- running strace


@pytest.fixture(scope="module")
def strace() -> str:
    path = shutil.which("strace")
    if path is None:
        pytest.skip("strace is not installed (apt-get install strace); it is needed to observe "
                    "the real syscall order")
    try:
        probe = subprocess.run([path, "-f", "-o", os.devnull, "true"], capture_output=True,
                               text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        pytest.skip(f"`strace -f true` cannot run here: {error}")
    if probe.returncode != 0:
        pytest.skip(f"`strace -f true` fails here (ptrace not permitted?), exit "
                    f"{probe.returncode}: {probe.stderr.strip()}")
    return path


@dataclass
class Traced:
    db_path: Path
    stdout_acks: list[int]
    log_file_waits: int
    report: Report


def run_traced(strace: str, tmp_path: Path, wal_class: str, *, commits: int = COMMITS_PER_THREAD,
               hold: bool = False) -> Traced:
    db_path = tmp_path / "db"
    trace = tmp_path / "strace.out"
    log_name = re.compile(r"db-wal-[0-9a-f]{16}$")
    preexisting = [name for name in os.listdir(tmp_path) if log_name.match(name)]
    command = [strace, "-f", "-qq", "-y", "-xx", "-s", "96", "-e", "signal=none",
               "-e", f"trace={TRACED}", "-o", str(trace), sys.executable, "-c", WORKLOAD,
               str(db_path), wal_class, str(commits), str(THREADS),
               "hold" if hold else "free"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAGEWAL_")}
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env=env)
    assert done.returncode == 0, f"workload under strace failed:\n{done.stderr}"
    lines = done.stdout.splitlines()
    stdout_acks = [int(line.split()[1]) for line in lines if line.startswith("ACK ")]
    waits = int(next(line.split()[1] for line in lines if line.startswith("LOG_FILE_WAITS")))
    with trace.open(encoding="ascii", errors="replace") as file:
        report = check_log_order(parse_trace(file), str(db_path), preexisting=preexisting)
    return Traced(db_path, stdout_acks, waits, report)


def summary(traced: Traced) -> str:
    report = traced.report
    ops = ", ".join(f"{name} x{count} on thread {tid}"
                    f" ({'pool' if tid in report.pool_tids else 'other'})"
                    for (tid, name), count in sorted(report.metadata_ops.items()))
    return (f"{len(report.acks)} acks, {len(report.acked_epochs)} acked epochs, "
            f"{len(report.segments)} segments written, {len(report.files_written())} log "
            f"files written ({len(report.files)} created), pool thread(s) "
            f"{sorted(report.pool_tids)}, committing threads {sorted(report.committing_tids)}, "
            f"metadata ops: {ops}; {report.pool_ops_during_commits} by the pool during commits; "
            f"log_file_waits={traced.log_file_waits}, wait candidates {report.wait_candidates}")


# --------------------------------------------------------------------------- the tests


def test_every_ack_follows_a_durable_write_into_a_durable_file(
    strace: str, tmp_path: Path
) -> None:
    traced = run_traced(strace, tmp_path, "pagewal:Wal")
    report = traced.report
    print(summary(traced))

    assert report.violations == []
    # Not vacuous: every acknowledgement the workload made is in the trace, over many epochs
    # and at least three log files (two switches), each written by one pool thread.
    total = THREADS * COMMITS_PER_THREAD
    assert sorted(traced.stdout_acks) == sorted(e for _, _, e in report.acks)
    assert len(report.acks) == total == len(report.submits)
    assert len(report.acked_epochs) >= 3, report.acked_epochs
    assert len(report.files_written()) >= 3, summary(traced)
    assert len(report.pool_tids) == 1, summary(traced)
    assert report.committing_tids.isdisjoint(report.pool_tids)
    for files in report.files_written():
        assert report.files[files].dir_fsync is not None, report.files[files].describe()
    # A wait for a ready file is a commit that submitted before the file it went into was
    # ready: the trace shows at least as many such activations as the log counted waits.
    assert traced.log_file_waits <= report.wait_candidates, summary(traced)


def test_a_reopened_log_writes_into_its_existing_file(strace: str, tmp_path: Path) -> None:
    run_traced(strace, tmp_path, "pagewal:Wal", commits=5)
    traced = run_traced(strace, tmp_path, "pagewal:Wal", commits=5)
    report = traced.report
    print(summary(traced))

    assert report.violations == []
    assert len(report.acks) == 5 * THREADS
    # After a clean shutdown the log goes on in the file it ended in: that file was made
    # durable by the first process, which this trace does not show.
    assert report.files_written()[0] not in report.files
    # The same trace, not told the file existed, reports every segment written to it.
    calls = parse_trace((tmp_path / "strace.out").read_text(encoding="ascii").splitlines())
    strict = check_log_order(calls, str(traced.db_path))
    reused = report.files_written()[0]
    in_reused = {e for e, segs in report.segments.items() if any(s.file == reused for s in segs)}
    flagged = [v for v in strict.violations if f"before creation of {reused}.tmp" in v]
    assert len(flagged) == len([a for a in report.acks if a[2] in in_reused]) > 0


def test_checker_reports_a_log_that_skips_the_directory_fsync(
    strace: str, tmp_path: Path
) -> None:
    traced = run_traced(strace, tmp_path, "pagewal.harness._mutants:SkipsDirectoryFsync",
                        commits=10)
    report = traced.report
    print(summary(traced))

    assert len(report.acks) == THREADS * 10
    # Every ack is reported by rule 2, for the missing directory fsync of its log file.
    missing = [v for v in report.violations
               if "before fsync of the directory after the rename" in v]
    assert len(missing) == len(report.acks), report.violations


def test_checker_reports_a_log_that_acks_before_writing(strace: str, tmp_path: Path) -> None:
    traced = run_traced(strace, tmp_path, "pagewal.harness._mutants:AcksBeforeFsync",
                        commits=10, hold=True)
    report = traced.report
    print(summary(traced))

    assert len(report.acks) == THREADS * 10
    # The workload holds each write of an already durable epoch until one of its ACKs is out.
    assert any("came before the durable write of segment" in v for v in report.violations), (
        report.violations)


def test_a_correct_log_is_not_reported_when_its_writes_are_held(
    strace: str, tmp_path: Path
) -> None:
    # The hold of the test above changes nothing for a log that acks only after writing.
    traced = run_traced(strace, tmp_path, "pagewal:Wal", commits=10, hold=True)
    assert traced.report.violations == []
    assert len(traced.report.acks) == THREADS * 10


# --------------------------------------------------------------------------- hand-written traces


def _hex(data: bytes | str) -> str:
    raw = os.fsencode(data) if isinstance(data, str) else data
    return "".join(f"\\x{b:02x}" for b in raw)


def _segment_head(epoch: int, flags: int = 0) -> bytes:
    return _SEGMENT_HEAD.pack(SEGMENT_MAGIC, 2, flags, epoch) + bytes(16)


def _lines(directory: str, *, epoch: int = 1, file_no: int = 1, flags: str = "RWF_DSYNC",
           split_write: bool = False) -> dict[str, list[str]]:
    """The steps of a good trace, by name: the pool (thread 7) makes a file ready, a
    committing thread (8) submits, the ticker (9) writes the segment, 8 acks."""
    final = f"{directory}/db-wal-{file_no:016x}"
    tmp = final + ".tmp"
    d, f, t = _hex(directory), _hex(final), _hex(tmp)
    zeros = _hex(bytes(16))
    segment = (f'9 pwritev2(5<{f}>, [{{iov_base="{_hex(_segment_head(epoch))}"..., '
               f'iov_len=128}}, {{iov_base="{zeros}"..., iov_len=3968}}], 2, 4096, {flags}) '
               "= 4096")
    pipe, ack_text, submit_text = _hex("pipe:[9]"), _hex(f"ACK {epoch}\n"), _hex("SUBMIT\n")
    ack = f'8 write(1<{pipe}>, "{ack_text}", 6) = 6'
    steps = {
        "create": [f'7 openat(AT_FDCWD<{d}>, "{t}", O_WRONLY|O_CREAT|O_EXCL|O_CLOEXEC, 0644) '
                   f"= 5<{t}>"],
        "zero-fill": [f'7 pwritev(5<{t}>, [{{iov_base="{zeros}"..., iov_len=65536}}], 1, 0) '
                      "= 65536"],
        "header": [f'7 pwritev(5<{t}>, [{{iov_base="{_hex(b"PGWALLOG")}"..., iov_len=128}}], '
                   "1, 0) = 128"],
        "fsync": [f"7 fsync(5<{t}>) = 0"],
        "rename": [f'7 rename("{t}", "{f}") = 0'],
        "dir-fsync": [f"7 fsync(4<{d}>) = 0"],
        "submit": [f'8 write(1<{pipe}>, "{submit_text}", 7) = 7'],
    }
    if split_write:
        head = segment[: segment.rindex(")")]
        steps["segment"] = [f"{head} <unfinished ...>", ack, "9 <... pwritev2 resumed>) = 4096"]
        steps["ack"] = []
    else:
        steps["segment"] = [segment]
        steps["ack"] = [ack]
    return steps


def _join(steps: dict[str, list[str]], *, without: str = "") -> list[str]:
    return [line for name, lines in steps.items() if name != without for line in lines]


def _check(lines: list[str], directory: str, **kwargs: Iterable[str]) -> Report:
    return check_log_order(parse_trace(lines), os.path.join(directory, "db"), **kwargs)


def test_checker_accepts_a_good_hand_written_trace(tmp_path: Path) -> None:
    directory = str(tmp_path)
    report = _check(_join(_lines(directory)), directory)
    assert report.violations == []
    assert [e for _, _, e in report.acks] == [1]
    assert report.pool_tids == {7}
    assert report.committing_tids == {8}
    assert report.files_written() == [f"db-wal-{1:016x}"]
    # The file was ready before the commit was submitted: no wait was possible.
    assert report.wait_candidates == 0


def test_checker_reports_each_missing_step_of_making_the_file_durable(tmp_path: Path) -> None:
    directory = str(tmp_path)
    expected = {"create": "before creation of db-wal-0000000000000001.tmp",
                "zero-fill": "zero-filling the file past the segment",
                "fsync": "before fsync of the temporary file",
                "rename": "before rename to the final name",
                "dir-fsync": "before fsync of the directory after the rename"}
    for step, message in expected.items():
        report = _check(_join(_lines(directory), without=step), directory)
        assert len(report.violations) == 1, (step, report.violations)
        assert message in report.violations[0], (step, report.violations)
    both = {k: v for k, v in _lines(directory).items() if k not in ("zero-fill", "header")}
    report = _check(_join(both), directory)
    assert ["before a write to the temporary file" in v for v in report.violations] == [True]


def test_checker_reports_steps_out_of_order(tmp_path: Path) -> None:
    directory = str(tmp_path)
    steps = _lines(directory)
    # The directory fsync before the rename does not count.
    steps["rename"], steps["dir-fsync"] = steps["dir-fsync"], steps["rename"]
    report = _check(_join(steps), directory)
    assert ["fsync of the directory after the rename" in v for v in report.violations] == [True]
    # A file made ready only after the segment was written into it.
    steps = _lines(directory)
    order = ["create", "zero-fill", "header", "fsync", "rename", "submit", "segment",
             "dir-fsync", "ack"]
    report = _check([line for name in order for line in steps[name]], directory)
    assert ["before fsync of the directory" in v for v in report.violations] == [True]
    # A write into the temporary file after its fsync began is not covered by it.
    steps = _lines(directory)
    steps["fsync"] = [*steps["fsync"], *steps["header"]]
    report = _check(_join(steps, without="header"), directory)
    assert any("after its fsync began" in v for v in report.violations), report.violations


def test_checker_reports_an_ack_without_a_durable_write(tmp_path: Path) -> None:
    directory = str(tmp_path)
    report = _check(_join(_lines(directory), without="segment"), directory)
    assert ["no segment of epoch 1" in v for v in report.violations] == [True]
    # An ACK while the durable write has begun but not returned.
    report = _check(_join(_lines(directory, split_write=True)), directory)
    assert ["came before the durable write of segment 1" in v
            for v in report.violations] == [True]
    # A plain pwritev2 is not durable; a later fdatasync of the file makes it so, an earlier
    # one does not; the clean-shutdown marker of that epoch is not its segment.
    steps = _lines(directory, flags="0")
    report = _check(_join(steps), directory)
    assert ["never made durable" in v for v in report.violations] == [True]
    sync = [f"9 fdatasync(5<{_hex(directory + '/db-wal-' + format(1, '016x'))}>) = 0"]
    steps["segment"] = [*steps["segment"], *sync]
    assert _check(_join(steps), directory).violations == []
    steps["segment"] = [*sync, steps["segment"][0]]
    assert len(_check(_join(steps), directory).violations) == 1
    steps = _lines(directory)
    marker = _hex(_segment_head(1, SEGMENT_FLAG_CLEAN_SHUTDOWN))
    steps["segment"] = [steps["segment"][0].replace(_hex(_segment_head(1)), marker)]
    assert ["no segment of epoch 1" in v
            for v in _check(_join(steps), directory).violations] == [True]


def test_checker_reports_metadata_operations_on_the_commit_path(tmp_path: Path) -> None:
    directory = str(tmp_path)
    other = _hex(f"{directory}/other")
    ops = {"unlink": f'{{tid}} unlink("{other}") = 0',
           "rename": f'{{tid}} rename("{other}", "{other}2") = 0',
           "creat": f'{{tid}} openat(AT_FDCWD<{_hex(directory)}>, "{other}", '
                    f"O_WRONLY|O_CREAT|O_CLOEXEC, 0644) = 6<{other}>",
           "ftruncate": f"{{tid}} ftruncate(6<{other}>, 0) = 0",
           "fallocate": f"{{tid}} fallocate(6<{other}>, 0, 0, 4096) = 0",
           "dir-fsync": f"{{tid}} fsync(4<{_hex(directory)}>) = 0"}
    for name, op in ops.items():
        for tid, inside, reported in ((8, True, True), (9, True, True), (7, True, False),
                                      (8, False, False)):
            steps = _lines(directory)
            if inside:
                steps["submit"] = [*steps["submit"], op.format(tid=tid)]
            else:
                steps["ack"] = [*steps["ack"], op.format(tid=tid)]
            report = _check(_join(steps), directory)
            found = [v for v in report.violations if "metadata operation on the commit path" in v]
            assert len(found) == int(reported), (name, tid, inside, report.violations)
            assert len(report.violations) == len(found), report.violations
    # A committing thread that creates a log file is not taken for the pool thread: outside
    # its commit window that is allowed, inside it is reported.
    steps = _lines(directory)
    steps["create"] = [line.replace("7 ", "8 ", 1) for line in steps["create"]]
    report = _check(_join(steps), directory)
    assert report.pool_tids == {7}
    assert report.violations == []
    report = _check([*steps["submit"], *_join(steps, without="submit")], directory)
    assert report.pool_tids == {7}
    assert any("openat by thread 8" in v for v in report.violations), report.violations


def test_checker_accepts_a_file_named_as_existing_and_counts_wait_candidates(
    tmp_path: Path,
) -> None:
    directory = str(tmp_path)
    steps = {k: v for k, v in _lines(directory).items() if k in ("submit", "segment", "ack")}
    name = f"db-wal-{1:016x}"
    assert ["before creation of" in v for v in _check(_join(steps), directory).violations] == [
        True]
    assert _check(_join(steps), directory, preexisting=[name]).violations == []
    # The commit was submitted before its file was ready: a wait was possible.
    steps = _lines(directory)
    order = ["submit", "create", "zero-fill", "header", "fsync", "rename", "dir-fsync",
             "segment", "ack"]
    report = _check([line for step in order for line in steps[step]], directory)
    assert report.violations == []
    assert report.wait_candidates == 1
