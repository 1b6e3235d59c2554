"""DESIGN §2 invariants 1 and 4, checked against the real kernel with ``strace -f``.

A short multi-threaded workload runs under strace; after every acknowledged commit it writes
``ACK <epoch>`` to stdout with one ``write(2)``, so each acknowledgement is a line in the trace.
The checker then requires that before each ``ACK E`` the process completed, in this order:

1. ``openat`` of ``<db>-wal-seg-<E as 16 hex>.tmp`` (created),
2. at least one ``write``/``writev`` to that descriptor,
3. ``fsync``/``fdatasync`` of that descriptor, begun after the last of those writes finished,
4. ``rename(tmp, final)``, begun after that fsync finished,
5. ``fsync``/``fdatasync`` of a descriptor on the segment's directory, begun after the rename
   finished and finished before the ``ACK``.

A syscall counts as done at the line carrying its result (``<... fsync resumed>) = 0`` when
strace split it), and as begun at its first line. Descriptors are resolved by the kernel
(``strace -y`` prints the path behind every fd), so fd reuse, threads and any child process
cannot confuse the attribution.

The checker is also run on traces of deliberately broken logs and on hand-written traces, and
must report them: a checker that cannot fail proves nothing.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

COMMITS_PER_THREAD = 10
THREADS = 3

# "?" keeps strace quiet about syscalls this architecture lacks (open/rename on aarch64).
TRACED = ("?open,openat,?creat,write,writev,?pwrite64,?pwritev,?pwritev2,fsync,fdatasync,"
          "?rename,?renameat,?renameat2,close")

WORKLOAD = r"""
import importlib, os, random, sys, threading
import pagewal

module_name, _, class_name = sys.argv[2].partition(":")
wal_class = getattr(importlib.import_module(module_name), class_name)
config = pagewal.WalConfig(lanes=2, epoch_interval_ms=1)
assert config.fsync is pagewal.FsyncMode.FULL, config.fsync
wal = wal_class.open(sys.argv[1], config)
errors = []

def work(index):
    rng = random.Random(index)
    try:
        for n in range(int(sys.argv[3])):
            pages = {rng.randrange(64): rng.randbytes(rng.randint(100, 500))
                     for _ in range(rng.randint(1, 3))}
            ticket = wal.commit(pages)
            os.write(1, b"ACK %d\n" % ticket.epoch)  # one write(2) per acknowledgement
    except BaseException as error:
        errors.append(error)
        raise

threads = [threading.Thread(target=work, args=(i,)) for i in range(int(sys.argv[4]))]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
wal.close()
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
_RESULT_AT = re.compile(r"\)\s+= ")
_RESULT = re.compile(r"\)\s+= (-?\d+|\?)(?:<([^<>]*)>)?(?: [A-Z][A-Z0-9_]*)?(?: \([^()]*\))?")
_FD_PATH = re.compile(r"^-?\d+<(.*?)>(?:,|$)")
_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')
_ACK = re.compile(r'^\d+(?:<[^>]*>)?, "ACK (\d+)\\n", ')


def parse_trace(lines: Iterable[str]) -> list[Call]:
    """Completed syscalls of an ``strace -f`` trace, in the order they returned.

    Joins ``name(args <unfinished ...>`` with its ``<... name resumed>rest) = result`` line of
    the same tid; lines that are neither (signals, exits, ``= ?`` of exit_group) are skipped.
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
        # The result is the last ") = ..." that ends the line; one inside a quoted buffer
        # is followed by more text.
        for candidate in reversed([m.start() for m in _RESULT_AT.finditer(text)]):
            last = _RESULT.fullmatch(text, candidate)
            if last is not None:
                result = None if last.group(1) == "?" else int(last.group(1))
                calls.append(Call(tid, name, text[:candidate], result, last.group(2), entry,
                                  number))
                break
    return calls


# --------------------------------------------------------------------------- the checker


@dataclass
class Publish:
    """What the trace shows of publishing one epoch's segment (trace line numbers)."""

    opened: Call
    writes: list[Call] = field(default_factory=list)
    fsync: Call | None = None
    rename: Call | None = None
    dir_fsync: Call | None = None
    late_writes: list[Call] = field(default_factory=list)

    @property
    def bytes_before_fsync(self) -> int:
        return sum(w.result or 0 for w in self.writes)

    def missing_before(self, line: int) -> str | None:
        """The first step not finished before trace line ``line``, or None if all were."""
        if not self.writes or self.writes[0].exit >= line:
            return "a write to the temporary file"
        steps = (("fsync of the temporary file", self.fsync),
                 ("rename to the final name", self.rename),
                 ("fsync of the directory after the rename", self.dir_fsync))
        for what, call in steps:
            if call is None or call.exit >= line:
                return what
        return None

    def describe(self) -> str:
        parts = [f"openat@{self.opened.exit}"]
        parts += [f"write@{w.exit}" for w in self.writes]
        for what, call in (("fsync", self.fsync), ("rename", self.rename),
                           ("dir-fsync", self.dir_fsync)):
            parts.append(f"{what}@{call.entry}-{call.exit}" if call else f"no {what}")
        return ", ".join(parts)


@dataclass
class Report:
    acks: list[tuple[int, int]]  # (trace line of the ACK write, epoch)
    publishes: dict[int, Publish]
    violations: list[str]

    @property
    def acked_epochs(self) -> set[int]:
        return {epoch for _, epoch in self.acks}


def check_publish_order(calls: list[Call], db_path: str) -> Report:
    """Check invariants 1 and 4 on a parsed trace of a log for ``db_path``."""
    directory = os.path.realpath(os.path.dirname(os.path.abspath(db_path)))
    segment = re.compile(re.escape(os.path.basename(db_path))
                         + r"-wal-seg-([0-9a-f]{16})(\.tmp)?$")

    def classify(path: str | None) -> tuple[int, bool] | None:
        """(epoch, is_temporary) if ``path`` names a segment of this log."""
        if path is None or "-wal-seg-" not in path:
            return None
        match = segment.match(os.path.basename(path))
        if match is None or os.path.realpath(os.path.dirname(path)) != directory:
            return None
        return int(match.group(1), 16), match.group(2) is not None

    def is_directory(path: str | None) -> bool:
        return path is not None and os.path.realpath(path) == directory

    publishes: dict[int, Publish] = {}
    acks: list[tuple[int, int]] = []
    violations: list[str] = []
    for call in sorted(calls, key=lambda c: c.exit):
        fd_match = _FD_PATH.match(call.args)
        fd_path = fd_match.group(1) if fd_match else None
        ok = call.result is not None and call.result >= 0
        if call.name in ("open", "openat", "creat"):
            named = classify(call.result_path) if ok else None
            if named is not None and named[1] and named[0] not in publishes:
                publishes[named[0]] = Publish(opened=call)
        elif call.name in ("write", "writev", "pwrite64", "pwritev", "pwritev2"):
            ack = _ACK.match(call.args) if call.name == "write" else None
            if ack is not None:
                acks.append((call.entry, int(ack.group(1))))
                continue
            named = classify(fd_path)
            if named is None or not named[1] or named[0] not in publishes or not ok:
                continue
            publish = publishes[named[0]]
            # pwritev2 with RWF_DSYNC is a write and its data sync in one call.
            dsync = call.name == "pwritev2" and "RWF_DSYNC" in call.args
            if ((publish.fsync is None or (dsync and publish.rename is None))
                    and call.entry > publish.opened.exit):
                publish.writes.append(call)
                if dsync:
                    publish.fsync = call
            elif publish.fsync is not None:
                publish.late_writes.append(call)
        elif call.name in ("fsync", "fdatasync") and call.result == 0:
            named = classify(fd_path)
            if named is not None and named[1] and named[0] in publishes:
                publish = publishes[named[0]]
                if (publish.fsync is None and publish.writes
                        and call.entry > publish.writes[-1].exit):
                    publish.fsync = call
            elif is_directory(fd_path):
                for publish in publishes.values():
                    if (publish.rename is not None and publish.dir_fsync is None
                            and call.entry > publish.rename.exit):
                        publish.dir_fsync = call
        elif call.name in ("rename", "renameat", "renameat2") and call.result == 0:
            paths = _STRING.findall(call.args)
            if len(paths) < 2:
                continue
            source, target = classify(paths[0]), classify(paths[1])
            if (source is not None and target is not None and source[1] and not target[1]
                    and source[0] == target[0] and source[0] in publishes):
                publish = publishes[source[0]]
                if (publish.rename is None and publish.fsync is not None
                        and call.entry > publish.fsync.exit):
                    publish.rename = call

    for line, epoch in acks:
        publish = publishes.get(epoch)
        if publish is None:
            violations.append(f"ACK {epoch} at trace line {line}: segment {epoch:016x}.tmp was "
                              "never created before it")
            continue
        missing = publish.missing_before(line)
        if missing is not None:
            violations.append(f"ACK {epoch} at trace line {line} came before {missing} "
                              f"(epoch {epoch}: {publish.describe()})")
    for epoch, publish in sorted(publishes.items()):
        for write in publish.late_writes:
            violations.append(f"epoch {epoch}: write to the temporary file at trace line "
                              f"{write.entry} after its fsync began (not covered by it)")
    return Report(acks=acks, publishes=publishes, violations=violations)


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
    calls: list[Call]


def run_traced(strace: str, tmp_path: Path, wal_class: str) -> Traced:
    db_path = tmp_path / "db"
    trace = tmp_path / "strace.out"
    command = [strace, "-f", "-qq", "-y", "-e", "signal=none", "-e", f"trace={TRACED}",
               "-o", str(trace), sys.executable, "-c", WORKLOAD, str(db_path), wal_class,
               str(COMMITS_PER_THREAD), str(THREADS)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAGEWAL_")}
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env=env)
    assert done.returncode == 0, f"workload under strace failed:\n{done.stderr}"
    stdout_acks = [int(line.split()[1]) for line in done.stdout.splitlines()]
    with trace.open(encoding="utf-8", errors="replace") as file:
        calls = parse_trace(file)
    return Traced(db_path, stdout_acks, calls)


# --------------------------------------------------------------------------- the tests


def test_every_ack_follows_write_fsync_rename_and_directory_fsync(
    strace: str, tmp_path: Path
) -> None:
    traced = run_traced(strace, tmp_path, "pagewal:Wal")
    report = check_publish_order(traced.calls, str(traced.db_path))

    assert report.violations == []
    # Not vacuous: every acknowledgement the workload made is in the trace, over several
    # epochs, and each acked epoch was checked against a complete publish sequence.
    total = THREADS * COMMITS_PER_THREAD
    assert sorted(traced.stdout_acks) == sorted(e for _, e in report.acks)
    assert len(report.acks) == total
    assert len(report.acked_epochs) >= 3, report.acked_epochs
    assert report.acked_epochs <= set(report.publishes)
    for epoch in report.acked_epochs:
        publish = report.publishes[epoch]
        assert publish.dir_fsync is not None, (epoch, publish.describe())
        # The fsync covered every byte the published segment holds.
        final = traced.db_path.parent / f"{traced.db_path.name}-wal-seg-{epoch:016x}"
        assert final.stat().st_size == publish.bytes_before_fsync, (epoch, publish.describe())


def test_checker_reports_a_log_that_skips_the_directory_fsync(
    strace: str, tmp_path: Path
) -> None:
    traced = run_traced(strace, tmp_path, "pagewal.harness._mutants:SkipsDirectoryFsync")
    report = check_publish_order(traced.calls, str(traced.db_path))

    assert len(report.acks) == THREADS * COMMITS_PER_THREAD
    # Every ack is reported, each for the missing directory fsync (the rest was done).
    assert len(report.violations) == len(report.acks), report.violations
    assert all("before fsync of the directory after the rename" in v
               for v in report.violations), report.violations


def test_checker_reports_a_log_that_acks_before_writing(strace: str, tmp_path: Path) -> None:
    traced = run_traced(strace, tmp_path, "pagewal.harness._mutants:AcksBeforeFsync")
    report = check_publish_order(traced.calls, str(traced.db_path))

    assert len(report.acks) == THREADS * COMMITS_PER_THREAD
    assert report.violations, "an ack before its segment was written went unnoticed"


def _publish_lines(epoch: int, *, directory: str = "/d", split_dir_fsync: bool) -> list[str]:
    tmp = f"{directory}/db-wal-seg-{epoch:016x}.tmp"
    final = tmp[: -len(".tmp")]
    lines = [
        f'7 openat(AT_FDCWD</>, "{tmp}", O_WRONLY|O_CREAT|O_TRUNC|O_CLOEXEC, 0644) '
        f"= 4<{tmp}>",
        f'7 writev(4<{tmp}>, [{{iov_base="LAWP"..., iov_len=64}}], 1 <unfinished ...>',
        '8 write(1<pipe:[9]>, "unrelated) = 3", 14) = 14',
        "7 <... writev resumed>) = 64",
        f"7 fsync(4<{tmp}>) = 0",
        f"7 close(4<{tmp}>) = 0",
        f'7 rename("{tmp}", "{final}") = 0',
        f'7 openat(AT_FDCWD</>, "{directory}", O_RDONLY|O_CLOEXEC|O_DIRECTORY) '
        f"= 4<{directory}>",
    ]
    if split_dir_fsync:
        lines += [f"7 fsync(4<{directory}> <unfinished ...>",
                  f'8 write(1<pipe:[9]>, "ACK {epoch}\\n", 6) = 6',
                  "7 <... fsync resumed>) = 0"]
    else:
        lines += [f"7 fsync(4<{directory}>) = 0",
                  f'8 write(1<pipe:[9]>, "ACK {epoch}\\n", 6 <unfinished ...>',
                  "8 <... write resumed>) = 6"]
    return [*lines, f"7 close(4<{directory}>) = 0"]


def test_checker_on_hand_written_traces(tmp_path: Path) -> None:
    directory = str(tmp_path)
    db_path = os.path.join(directory, "db")

    good = _publish_lines(1, directory=directory, split_dir_fsync=False)
    report = check_publish_order(parse_trace(good), db_path)
    assert report.violations == []
    assert report.acks == [(len(good) - 2, 1)]

    # The ACK is written while the directory fsync has begun but not returned.
    racing = _publish_lines(1, directory=directory, split_dir_fsync=True)
    report = check_publish_order(parse_trace(racing), db_path)
    assert len(report.violations) == 1
    assert "before fsync of the directory" in report.violations[0]

    # Each step removed in turn is reported as the first one missing.
    removed = {"writev": "a write to the temporary file",
               "fsync(4<" + directory + "/": "fsync of the temporary file",
               "rename(": "rename to the final name",
               "fsync(4<" + directory + ">": "fsync of the directory"}
    for needle, expected in removed.items():
        lines = [line for line in good if needle not in line]
        report = check_publish_order(parse_trace(lines), db_path)
        assert len(report.violations) == 1, (needle, report.violations)
        assert f"came before {expected}" in report.violations[0], report.violations

    # Directory fsync *before* the rename does not count; an ACK of an unknown epoch is caught.
    reordered = [*good[:6], good[7], good[8], good[6], *good[9:]]
    report = check_publish_order(parse_trace(reordered), db_path)
    assert ["fsync of the directory" in v for v in report.violations] == [True]
    stray = check_publish_order(parse_trace(['8 write(1, "ACK 5\\n", 6) = 6']), db_path)
    assert stray.violations and "never created" in stray.violations[0]

    # A write into the temporary file after its fsync began is not covered by it.
    late = [*good[:5], f'7 write(4<{directory}/db-wal-seg-{1:016x}.tmp>, "x", 1) = 1',
            *good[5:]]
    report = check_publish_order(parse_trace(late), db_path)
    assert any("after its fsync began" in v for v in report.violations), report.violations


def test_checker_counts_a_dsync_pwritev2_as_write_and_fsync_but_not_a_plain_one(
    tmp_path: Path,
) -> None:
    directory = str(tmp_path)
    db_path = os.path.join(directory, "db")
    good = _publish_lines(1, directory=directory, split_dir_fsync=False)
    tmp = f"{directory}/db-wal-seg-{1:016x}.tmp"
    write_line = next(i for i, line in enumerate(good) if "writev(" in line)
    fsync_line = next(i for i, line in enumerate(good) if f"fsync(4<{tmp}>" in line)

    def with_pwritev2(flags: str) -> list[str]:
        lines = [line for i, line in enumerate(good) if i not in (fsync_line, write_line + 2)]
        lines[write_line] = (f'7 pwritev2(4<{tmp}>, [{{iov_base="LAWP"..., iov_len=64}}], 1, 0, '
                             f"{flags}) = 64")
        return lines

    assert check_publish_order(parse_trace(with_pwritev2("RWF_DSYNC")), db_path).violations == []
    report = check_publish_order(parse_trace(with_pwritev2("0")), db_path)
    assert len(report.violations) == 1
    assert "came before fsync of the temporary file" in report.violations[0]
