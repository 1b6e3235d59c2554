"""The command line: demo verifies itself; env reports sources; the operator commands report
what recovery reads; bad input is one line, exit 2; a corrupt log exits 1."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import crc32c
import pytest

from pagewal import CorruptSegmentError, LogLockedError, SegmentHeader, Wal, WalConfig, recover
from pagewal import _cli as cli
from pagewal._cli import main
from pagewal._codec import encode_commits, make_commit
from pagewal._demo import run_demo
from pagewal._inspect import file_segments
from pagewal._layout import (
    decode_file_header,
    parse_log_file_name,
    parse_log_file_temp_name,
)


def test_demo_runs_transactions_checkpoints_reopens_and_verifies_every_page(
    tmp_path: Path
) -> None:
    lines: list[str] = []
    config = WalConfig(lanes=2, epoch_interval_ms=2, checkpoint_bytes=256 << 10)
    # 400 transactions write ~1,000 distinct pages (~4 MB): past twice the 256 KiB threshold
    # writers wait for a checkpoint, so one runs while committing however slow the machine.
    report = run_demo(str(tmp_path), threads=4, seconds=600, transactions=400, config=config,
                      say=lines.append)
    assert report.ok
    assert report.transactions >= 400 and report.pages >= report.transactions
    assert report.checkpoints >= 1
    assert any(line.startswith("checkpoints while committing: ") for line in report.lines())
    assert report.pages_verified == 10_000 and report.wrong == 0
    assert report.latency_p50_ms <= report.latency_p99_ms
    assert report.lines()[-1] == "verified 10000 pages against the oracle after reopening: 0 wrong"
    assert "demo.db" in lines[0]


def test_demo_refuses_a_directory_holding_a_store_naming_its_files_and_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAGEWAL_FSYNC", "off")
    (tmp_path / "demo.db").write_bytes(b"someone's pages")
    (tmp_path / "demo.db-wal-checkpoint").write_bytes(b"their checkpoint")
    (tmp_path / "demo.db-wal-seg-0000000000000007").write_bytes(b"their segment")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    code, out, err = run(capsys, "demo", tmp_path, "--threads", "2", "--seconds", "0.1")

    assert (code, out) == (2, "")
    assert err == (f"pagewal: error: {tmp_path} already holds a demo store (demo.db, "
                   "demo.db-wal-checkpoint, demo.db-wal-seg-0000000000000007) and the demo "
                   "never overwrites one: give it another directory (pagewal demo OTHER_DIR), "
                   "or remove those files yourself\n")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    config = WalConfig(lanes=2, epoch_interval_ms=2, fsync="off")
    for name in ("demo.db", "demo.db-wal-checkpoint", "demo.db-wal-seg-0000000000000007"):
        alone = tmp_path / f"only-{name}"
        alone.mkdir()
        (alone / name).write_bytes(b"x")
        with pytest.raises(FileExistsError, match=name):
            run_demo(str(alone), threads=2, seconds=0.1, config=config, say=lambda _: None)
        assert [p.name for p in alone.iterdir()] == [name]


def test_demo_never_deletes_files_that_are_not_its_store(tmp_path: Path) -> None:
    unrelated = {"demo.db-wal-notes": b"mine", "demo.db.bak": b"backup", "demo.dbx": b"x",
                 "demo.db-wal-seg-1": b"not a segment name"}
    for name, content in unrelated.items():
        (tmp_path / name).write_bytes(content)
    config = WalConfig(lanes=2, epoch_interval_ms=2, fsync="off")

    report = run_demo(str(tmp_path), threads=2, seconds=0.1, config=config, say=lambda _: None)

    assert report.ok
    for name, content in unrelated.items():
        assert (tmp_path / name).read_bytes() == content


def test_the_readme_demo_command_run_again_uses_a_fresh_directory_and_keeps_the_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PAGEWAL_FSYNC", "off")
    code, out, _ = run(capsys, "demo", "--threads", "2", "--seconds", "0.1")
    assert code == 0 and out.startswith("store: pagewal-demo/demo.db ")
    first = {p.name: p.read_bytes() for p in (tmp_path / "pagewal-demo").iterdir()}

    for number in (2, 3):
        code, out, _ = run(capsys, "demo", "--threads", "2", "--seconds", "0.1")
        assert code == 0 and "0 wrong" in out
        lines = out.splitlines()
        assert lines[0] == (f"pagewal-demo holds the store of an earlier run, so this one goes "
                            f"to pagewal-demo/run-{number} (rm -r pagewal-demo removes them all)")
        assert lines[1].startswith(f"store: pagewal-demo/run-{number}/demo.db ")
    after = {p.name: p.read_bytes() for p in (tmp_path / "pagewal-demo").iterdir()
             if p.is_file()}
    assert after == first


def test_module_entry_point_runs_the_demo(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "pagewal", "demo", str(tmp_path), "--threads", "2",
         "--seconds", "0.2"],
        capture_output=True, text=True, timeout=120, check=False,
        env={"PAGEWAL_FSYNC": "off", "PATH": "/usr/bin:/bin"})
    assert completed.returncode == 0, completed.stderr
    assert "0 wrong" in completed.stdout
    assert "pages/s" in completed.stdout and "p99" in completed.stdout


def test_env_reports_each_value_and_its_source(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PAGEWAL_LANES", "3")
    assert main(["env"]) == 0
    out = capsys.readouterr().out
    lanes_line = next(line for line in out.splitlines() if line.startswith("PAGEWAL_LANES "))
    assert "3" in lanes_line and "env PAGEWAL_LANES" in lanes_line
    fsync_line = next(line for line in out.splitlines() if line.startswith("PAGEWAL_FSYNC "))
    assert "full" in fsync_line and "default" in fsync_line


@pytest.mark.parametrize("command", [["env"], ["demo", "--seconds", "0.1"]])
def test_a_bad_variable_is_one_line_and_exit_status_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path,
    command: list[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PAGEWAL_EPOCH_INTERVAL_MS", "soon")
    assert main(command) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "PAGEWAL_EPOCH_INTERVAL_MS" in err and "'soon'" in err and "milliseconds" in err


@pytest.mark.timeout(660)  # a busy machine stretches the campaign; its own timeout reports first
def test_crash_test_quick_configuration_passes_and_prints_its_figures(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "pagewal", "crash-test", "--seed", "5", "--dir", str(tmp_path)],
        capture_output=True, text=True, timeout=600, check=False)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    out = completed.stdout
    assert "seed 5 (rerun with --seed 5)" in out
    for figure in ("power loss total:", "(1 on the pager)", "power loss (pager)", "recycled",
                   "faults total: 16 / 16", "corruptions detected",
                   "20 kills", "lost = 0, partial = 0", "violations: 0"):
        assert figure in out


def test_crash_test_self_check_catches_every_broken_log_with_progress_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(["crash-test", "--self-check", "--seed", "3"]) == 0
    assert "self-check" in terminal.getvalue() and "9/9" in terminal.getvalue()
    out = capsys.readouterr().out
    assert "harness caught 9 / 9 broken variants" in out
    for name in ("acks-out-of-prefix-order", "appends-after-torn-tail",
                 "leaves-acked-epoch-zero", "accepts-stale-segment"):
        assert f"mutant {name}:" in out


# --------------------------------------------------------------------------- operator commands

FAST = WalConfig(lanes=2, epoch_interval_ms=1, fsync="off", log_file_bytes=64 << 10)



@dataclass(frozen=True)
class Committed:
    commit_seq: int
    epoch: int
    pages: list[tuple[int, bytes]]
    db_size_pages: int | None
    txn_id: int


def commit_pages(wal: Wal, k: int) -> Committed:
    pages = [(k % 3, bytes([k % 256]) * (50 + k)), (100 + k, f"new {k}".encode())]
    size = None if k % 2 else 10 + k
    ticket = wal.commit(pages, db_size_pages=size, txn_id=1000 + k)
    return Committed(ticket.commit_seq, ticket.epoch, pages, size, 1000 + k)


def build_log(db: Path, count: int, start: int = 0) -> list[Committed]:
    """``count`` durable commits, one segment each (epochs follow the log's last one), then a
    clean close."""
    with Wal.open(db, FAST) as wal:
        return [commit_pages(wal, k) for k in range(start, start + count)]


def crashed_log(db: Path, count: int) -> list[Committed]:
    """``count`` durable commits, and the log's files as a crash would leave them: copied to
    ``db``'s directory while the log was still open (no clean-shutdown marker)."""
    live = db.parent / "live" / db.name
    live.parent.mkdir()
    with Wal.open(live, FAST) as wal:
        committed = [commit_pages(wal, k) for k in range(count)]
        for path in live.parent.iterdir():
            if path.name != f"{db.name}-wal-lock":
                try:
                    data = path.read_bytes()
                except FileNotFoundError:  # the pool made a ".tmp" file ready meanwhile
                    continue
                (db.parent / path.name).write_bytes(data)
    return committed


def log_path(db: Path, file_no: int = 1) -> Path:
    return db.with_name(f"{db.name}-wal-{file_no:016x}")


def seg_path(db: Path, epoch: int) -> Path:
    """A format 1 segment file's name."""
    return db.with_name(f"{db.name}-wal-seg-{epoch:016x}")


def segment_at(db: Path, epoch: int) -> tuple[Path, int]:
    """The log file holding ``epoch``'s segment and its offset there."""
    for file_no in range(1, 16):
        path = log_path(db, file_no)
        if not path.exists():
            continue
        data = path.read_bytes()
        try:
            header = decode_file_header(data, str(path))
        except CorruptSegmentError:
            continue
        for item in file_segments(data, str(path), header):
            if isinstance(item.header, SegmentHeader) and item.header.epoch == epoch:
                return path, item.offset
    raise AssertionError(f"no segment of epoch {epoch}")


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def flip_body(db: Path, epoch: int) -> tuple[Path, int]:
    """Flip a byte inside ``epoch``'s first record image: its header stays good."""
    path, offset = segment_at(db, epoch)
    flip(path, offset + 128 + 40)
    return path, offset


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def table_rows(out: str) -> dict[int, str]:
    """inspect's format 1 segment rows by epoch (unindented lines that start with a number)."""
    return {int(line.split()[0]): line for line in out.splitlines()
            if line.split() and line.split()[0].isdigit()}


def table(out: str, title: str) -> list[dict[str, str]]:
    """The rows of the indented table under ``title`` in inspect's output, by heading (the
    last column takes the rest of the line)."""
    lines = out.splitlines()
    start = lines.index(title) + 1
    headings = lines[start].split()
    rows = []
    for line in lines[start + 1 :]:
        if not line.startswith("  "):
            break
        cells = line.split(None, len(headings) - 1)
        rows.append(dict(zip(headings, cells, strict=False)))
    return rows


def expected_error(db: Path) -> CorruptSegmentError:
    with pytest.raises(CorruptSegmentError) as raised:
        recover(db)
    return raised.value


def test_inspect_of_a_cleanly_closed_log_shows_its_files_segments_and_marker(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "app.db"
    build_log(db, 3)
    recover(db, delete_after=True)  # checkpoint at epoch 3, commit_seq 3
    later = build_log(db, 3, start=3)

    code, out, err = run(capsys, "inspect", db)

    assert (code, err) == (0, "")
    assert "checkpoint: epoch 3, commit_seq 3" in out
    files = table(out, "log files:")
    chain_files = [row for row in files if row["role"] == "chain"]
    assert len(chain_files) == 1 and chain_files[0]["state"] == "ACTIVE"
    assert all(row["role"] == "spare" and row["state"] == "READY"
               for row in files if row is not chain_files[0])
    assert chain_files[0]["capacity"] == f"{64 << 10:,}"
    segments = table(out, "segments:")
    chained = [row for row in segments if row["status"] == "chain"]
    assert [int(row["epoch"]) for row in chained] == [c.epoch for c in later] == [4, 5, 6]
    for row, c in zip(chained, later, strict=True):
        path, offset = segment_at(db, c.epoch)
        assert row["file"] == chain_files[0]["file"] and path == log_path(db, int(row["file"]))
        assert int(row["offset"].replace(",", "")) == offset
        assert row["commit_seq"] == f"{c.commit_seq}..{c.commit_seq}"
        assert (row["records"], row["acked"], row["span"]) == ("2", str(c.epoch - 1), "4,096")
    assert int(chain_files[0]["fill"].replace(",", "")) == 4096 * len(segments)
    marker = segments[-1]
    assert (marker["epoch"], marker["status"]) == ("6", "marker")
    assert "torn tail: none" in out
    file_no = int(chain_files[0]["file"])
    assert f"shutdown: clean (marker at {log_path(db, file_no)} offset" in out
    assert "records epoch 6, commit_seq 6)" in out
    assert "ends at epoch 6, commit_seq 6" in out


def test_inspect_of_a_crashed_log_says_it_was_not_closed_cleanly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "app.db"
    crashed_log(db, 3)
    code, out, _ = run(capsys, "inspect", db)
    assert code == 0
    segments = table(out, "segments:")
    assert [(row["epoch"], row["status"]) for row in segments] == [
        ("1", "chain"), ("2", "chain"), ("3", "chain")]
    assert "torn tail: none" in out
    assert "shutdown: not clean (no clean-shutdown marker at the end of the log)" in out
    code, out, err = run(capsys, "verify", db)
    assert (code, err) == (0, "")
    assert out.startswith(f"{db}: valid: 3 segments")


def test_a_torn_tail_is_reported_by_inspect_and_verify_and_is_not_damage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "app.db"
    crashed_log(db, 4)
    path, offset = flip_body(db, 4)  # the newest epoch, which no later segment vouches for
    before = snapshot(tmp_path)

    code, out, _ = run(capsys, "inspect", db)
    assert code == 0
    segments = table(out, "segments:")
    assert [(row["epoch"], row["status"]) for row in segments][-2:] == [
        ("3", "chain"), ("4", "after end")]
    assert (f"torn tail: {path} offset {offset:,}, 4,096 bytes, highest epoch seen 4 "
            "(1 segment header after the end); never acknowledged, recovery discards it") in out
    assert "ends at epoch 3, commit_seq 3" in out

    code, out, err = run(capsys, "verify", db)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].startswith(f"{db}: valid: 3 segments")
    assert lines[1].startswith(f"torn tail: {path} offset {offset:,}")

    code, out, _ = run(capsys, "verify", db, "--json")
    report = json.loads(out)
    assert code == 0 and report["valid"] and report["error"] is None
    assert report["torn_tail"] == {"path": str(path), "offset": offset, "length": 4096,
                                   "highest_epoch": 4, "segments": 1}
    assert report["clean_shutdown"] is False
    assert snapshot(tmp_path) == before


def test_inspect_shows_damage_proven_by_later_segments_read_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "app.db"
    build_log(db, 4)
    path, offset = flip_body(db, 2)  # epochs 3 and 4 record epoch 2 as acknowledged
    error = expected_error(db)
    assert (Path(error.path), error.offset) == (path, offset)
    Path(f"{log_path(db, 9)}.tmp").write_bytes(b"half a log file")
    Path(f"{seg_path(db, 1)}.corrupt").write_bytes(b"set aside earlier")
    before = snapshot(tmp_path)

    code, out, _ = run(capsys, "inspect", db)

    assert code == 0
    segments = table(out, "segments:")
    assert [(row["epoch"], row["status"]) for row in segments] == [
        ("1", "chain"), ("2", "damaged"), ("3", "after end"), ("4", "after end"),
        ("4", "marker after end")]
    assert f"damage: {path} offset {offset:,}: {error.reason}" in out
    assert "torn tail:" not in out
    assert "chain: 1 of 4 segments valid" in out and "ends at epoch 1, commit_seq 1" in out
    assert f"{log_path(db, 9).name}.tmp (15 bytes)" in out
    assert f"{seg_path(db, 1).name}.corrupt (17 bytes)" in out
    assert snapshot(tmp_path) == before


def test_inspect_json_has_the_files_segments_tail_and_shutdown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "app.db"
    committed = build_log(db, 2)
    code, out, _ = run(capsys, "inspect", db, "--json")
    report = json.loads(out)
    assert code == 0
    assert report["checkpoint"] is None and report["damage"] is None
    assert report["torn_tail"] is None
    assert report["shutdown"] == {"clean": True, "epoch": 2, "commit_seq": 2}
    assert report["last"] == {"epoch": 2, "commit_seq": 2}
    chain = [file for file in report["log_files"] if file["role"] == "chain"]
    assert len(chain) == 1 and chain[0]["state"] == "ACTIVE"
    assert chain[0]["capacity"] == 64 << 10 and chain[0]["fill"] == 3 * 4096
    segments = chain[0]["segments"]
    assert [(s["epoch"], s["marker"], s["status"]) for s in segments] == [
        (1, False, "chain"), (2, False, "chain"), (2, True, "marker")]
    assert segments[1]["commit_seq"] == [committed[1].commit_seq] * 2
    assert (segments[1]["records"], segments[1]["acked_epoch"]) == (2, 1)
    assert segments[1]["offset"] == segment_at(db, 2)[1]


def test_verify_a_good_log_exits_0_and_prints_no_progress_off_a_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "app.db"
    build_log(db, 5)
    stored = recover(db).bytes_read  # headers and bodies, not the padding
    code, out, err = run(capsys, "verify", db)
    assert code == 0
    assert err == ""  # no progress bar: stderr is not a terminal
    assert out == (f"{db}: valid: 5 segments, 10 records, 5 commits (commit_seq 1..5), "
                   f"{stored:,} bytes\n")


def test_verify_json_matches_what_recovery_reads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "app.db"
    build_log(db, 4)
    result = recover(db)
    code, out, _ = run(capsys, "verify", db, "--json")
    report = json.loads(out)
    assert code == 0
    assert report == {
        "path": str(db), "valid": True, "segments": len(result.segments),
        "records": int(result.records.size), "commits": result.commit_count,
        "bytes": result.bytes_read, "checkpoint": {"epoch": 0, "commit_seq": 0},
        "last": {"epoch": 4, "commit_seq": 4}, "unusable_segments": 0, "error": None,
        "page_size": 0, "warnings": [], "torn_tail": None, "clean_shutdown": True,
    }


def test_verify_damage_exits_1_naming_the_file_offset_and_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "app.db"
    build_log(db, 5)
    path, offset = flip_body(db, 3)
    error = expected_error(db)
    assert (Path(error.path), error.offset) == (path, offset)
    assert "acknowledged" in error.reason

    code, out, err = run(capsys, "verify", db)
    assert code == 1
    assert err == f"pagewal: error: {path}: corrupt at offset {offset}: {error.reason}\n"
    assert "valid prefix: 2 segments" in out and "torn tail" not in out

    code, out, _ = run(capsys, "verify", db, "--json")
    report = json.loads(out)
    assert code == 1 and report["valid"] is False and report["torn_tail"] is None
    assert report["error"] == {"path": str(path), "offset": offset, "reason": error.reason}
    assert (report["segments"], report["commits"]) == (2, 2)
    assert report["unusable_segments"] >= 3  # the damaged epoch and the two after it


def test_verify_exit_statuses_and_one_line_errors_as_a_process(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    build_log(db, 3)

    def verify(path: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pagewal", "verify", str(path)],
                              capture_output=True, text=True, timeout=60, check=False)

    good = verify(db)
    assert (good.returncode, good.stderr) == (0, "")
    missing = verify(tmp_path / "nowhere" / "app.db")
    assert missing.returncode == 2
    assert missing.stderr == f"pagewal: error: no such directory: {tmp_path / 'nowhere'}\n"
    flip_body(db, 2)
    corrupt = verify(db)
    assert corrupt.returncode == 1
    assert corrupt.stderr.startswith("pagewal: error: ") and corrupt.stderr.count("\n") == 1
    assert "Traceback" not in missing.stderr + corrupt.stderr


def test_verify_is_read_only_beside_a_live_writer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "app.db"
    with Wal.open(db, FAST) as wal:
        wal.commit({1: b"live"})
        in_flight = Path(f"{log_path(db, 99)}.tmp")
        in_flight.write_bytes(b"a log file being created")
        # The writer's own log files are left out: its pool may create, fill or rename
        # them meanwhile.
        own = {name for name in snapshot(tmp_path) if name != in_flight.name and (
            parse_log_file_name(db.name, name) or parse_log_file_temp_name(db.name, name))}
        before = {name: data for name, data in snapshot(tmp_path).items() if name not in own}
        assert in_flight.name in before and "app.db-wal-lock" in before
        assert run(capsys, "verify", db)[0] == 0
        assert before.items() <= snapshot(tmp_path).items()  # nothing removed or changed
        wal.commit({2: b"still writing"})
    (tmp_path / "app.db-wal-lock").unlink()
    before = snapshot(tmp_path)
    assert run(capsys, "verify", db)[0] == 0
    assert snapshot(tmp_path) == before  # not even a lock file was created


def test_a_directory_or_a_database_without_a_log_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    build_log(tmp_path / "app.db", 1)
    code, _, err = run(capsys, "verify", tmp_path)
    assert code == 2
    assert err == (f"pagewal: error: {tmp_path} is a directory; give the database path whose "
                   f"log lies in it, e.g. {tmp_path / 'app.db'}\n")
    code, _, err = run(capsys, "inspect", tmp_path / "other.db")
    assert code == 2
    assert "no pagewal log for" in err and "(logs there: app.db)" in err


def test_dump_lists_exactly_the_records_committed_in_the_epoch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "app.db"
    build_log(db, 1)
    # A long interval: nothing seals until flush(), so these commits share epoch 2.
    config = WalConfig(lanes=1, epoch_interval_ms=60_000, fsync="off", log_file_bytes=64 << 10)
    commits = [([(5, b"five" * 10), (6, b"six")], 40, 77), ([(5, b"again")], None, 0),
               ([(9, b"n" * 700)], 41, 2**64 - 1)]
    with Wal.open(db, config) as wal:
        tickets = [wal.submit(pages, db_size_pages=size, txn_id=txn)
                   for pages, size, txn in commits]
        wal.flush(timeout=30)
    assert {t.epoch for t in tickets} == {2}
    path, offset = segment_at(db, 2)

    code, out, _ = run(capsys, "dump", db, "--epoch", 2)

    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith(f"segment {path} offset {offset:,} (file_no ")
    assert lines[1].startswith("epoch 2, prev_epoch 1, commit_seq 2..4, 4 records")
    assert lines[1].endswith(", acked_epoch 1")
    assert lines[2].split() == ["offset", "commit_seq", "txn_id", "page_no", "image_len",
                                "crc32c", "lane", "commit", "db_size_pages"]
    rows = [line.split() for line in lines[3:]]
    expected = [
        [str(ticket.commit_seq), str(txn), str(page_no), str(len(image)), "0",
         "last" if index == len(pages) - 1 else "-", "-" if size is None else str(size)]
        for ticket, (pages, size, txn) in zip(tickets, commits, strict=True)
        for index, (page_no, image) in enumerate(pages)]
    assert [row[1:5] + row[6:] for row in rows] == expected
    data = path.read_bytes()
    for row in rows:  # the CRC shown is the one stored after the record, and it is right
        record = int(row[0])  # a file offset, inside the segment
        assert offset + 128 <= record < offset + 4096
        end = record + 4 + int.from_bytes(data[record : record + 4], "little")
        assert int(row[5], 16) == int.from_bytes(data[end - 4 : end], "little")
        assert int(row[5], 16) == crc32c.crc32c(data[record + 4 : end - 4])


def test_dump_of_a_missing_epoch_exits_2_and_of_a_corrupt_segment_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "app.db"
    build_log(db, 3)
    code, _, err = run(capsys, "dump", db, "--epoch", 7)
    assert code == 2
    assert err == f"pagewal: error: no segment of epoch 7 beside {db} (segments: 1..3)\n"
    path, offset = flip_body(db, 2)
    code, _, err = run(capsys, "dump", db, "--epoch", 2)
    assert code == 1
    assert err == f"pagewal: error: {path}: corrupt at offset {offset + 120}: body checksum " \
                  "mismatch\n"


def test_recover_skip_corrupt_reports_the_skipped_segments(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "app.db"
    build_log(db, 4)
    path, offset = flip_body(db, 3)
    error = expected_error(db)

    code, _, err = run(capsys, "recover", db)
    assert code == 1
    assert err == f"pagewal: error: {error} (--skip-corrupt keeps the valid prefix)\n"

    code, out, _ = run(capsys, "recover", db, "--skip-corrupt")
    assert code == 0
    assert "commits: 2 (commit_seq 1..2)" in out
    assert f"  {path}: offset {offset}: {error.reason}\n" in out
    assert f"  {path}: after the damaged end of the log (epoch 4)\n" in out


# --------------------------------------------------------------------------- format 1 logs


def write_v1_log(db: Path, epochs: int, first_epoch: int = 1) -> None:
    """A format 1 log as pagewal 0.1 left it: one segment file per epoch (epoch ``e`` holds
    commits ``2e - 1`` and ``2e``), no checkpoint."""
    for epoch in range(first_epoch, epochs + 1):
        first = 2 * epoch - 1
        triples = [(seq, seq % 2, make_commit({seq: bytes([seq]) * 60}))
                   for seq in (first, first + 1)]
        triples.sort(key=lambda triple: triple[1])
        body = encode_commits(triples)
        header = SegmentHeader(epoch=epoch, record_count=2, lane_count=2, commit_seq_lo=first,
                               commit_seq_hi=first + 1, prev_epoch=epoch - 1,
                               body_length=len(body))
        seg_path(db, epoch).write_bytes(header.encode() + bytes(body))


def test_inspect_and_verify_read_a_format_1_log_as_before(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "app.db"
    write_v1_log(db, 3)
    code, out, _ = run(capsys, "inspect", db)
    assert code == 0
    rows = table_rows(out)
    assert sorted(rows) == [1, 2, 3]
    for epoch, row in rows.items():
        fields = row.split()
        assert fields[1] == f"{2 * epoch - 1}..{2 * epoch}" and fields[2] == "2"
        assert int(fields[3].replace(",", "")) == seg_path(db, epoch).stat().st_size
        assert fields[-1] == "ok"
    assert "log files:" not in out
    assert "ends at epoch 3, commit_seq 6" in out
    code, out, _ = run(capsys, "verify", db)
    size = sum(seg_path(db, epoch).stat().st_size for epoch in (1, 2, 3))
    assert (code, out) == (0, f"{db}: valid: 3 segments, 6 records, 6 commits "
                              f"(commit_seq 1..6), {size:,} bytes\n")


def test_a_format_1_bit_flip_and_missing_segment_are_reported_as_before(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "app.db"
    write_v1_log(db, 5)
    flip(seg_path(db, 3), 120)
    error = expected_error(db)
    assert Path(error.path) == seg_path(db, 3)
    code, out, err = run(capsys, "verify", db)
    assert code == 1
    assert err == f"pagewal: error: {seg_path(db, 3)}: corrupt at offset {error.offset}: " \
                  f"{error.reason}\n"
    assert "valid prefix: 2 segments" in out and "3 segments from the first bad one" in out
    code, out, _ = run(capsys, "inspect", db)
    rows = table_rows(out)
    assert rows[3].endswith(f"corrupt: offset {error.offset}: {error.reason}")
    assert rows[4].endswith("follows corrupt") and rows[5].endswith("follows corrupt")
    code, _, err = run(capsys, "dump", db, "--epoch", 3)
    assert code == 1 and f"{seg_path(db, 3)}: corrupt at offset" in err

    flip(seg_path(db, 3), 120)  # whole again
    seg_path(db, 3).unlink()
    code, _, err = run(capsys, "verify", db)
    assert code == 1 and err.count("\n") == 1
    assert f"{seg_path(db, 4)}: corrupt at offset 40: chain broken" in err
    code, out, _ = run(capsys, "inspect", db)
    assert "broken: offset 40" in table_rows(out)[4]


def test_dump_of_a_format_1_segment_reads_its_own_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "app.db"
    write_v1_log(db, 2)
    code, out, _ = run(capsys, "dump", db, "--epoch", 2)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"segment {seg_path(db, 2)}"
    assert lines[1] == ("epoch 2, prev_epoch 1, commit_seq 3..4, 2 records, 2 lanes, parallel "
                        f"path, {seg_path(db, 2).stat().st_size:,} bytes")
    assert [line.split()[1:4] for line in lines[3:]] == [["4", "0", "4"], ["3", "0", "3"]]


def test_recover_removes_leftover_temporary_files_and_lists_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "app.db"
    build_log(db, 2)
    leftover = Path(f"{seg_path(db, 3)}.tmp")
    leftover.write_bytes(b"interrupted")
    code, out, _ = run(capsys, "recover", db)
    assert code == 0
    assert "commits: 2 (commit_seq 1..2), records: 4, pages: 4" in out
    assert f"removed leftover files: 1\n  {leftover}\n" in out
    assert not leftover.exists()


def test_a_locked_log_is_one_line_and_exit_status_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "app.db"
    build_log(db, 1)

    def locked(*args: object, **kwargs: object) -> None:
        raise LogLockedError(f"{db}: the log kept changing while it was read; retry")

    monkeypatch.setattr(cli, "recover", locked)
    code, out, err = run(capsys, "recover", db)
    assert (code, out) == (1, "")
    assert err == f"pagewal: error: {db}: the log kept changing while it was read; retry\n"


def test_a_bad_variable_is_one_line_exit_2_and_no_traceback_as_a_process(
    tmp_path: Path
) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "pagewal", "demo", str(tmp_path), "--seconds", "0.1"],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "PAGEWAL_FSYNC": "sometimes"})
    assert completed.returncode == 2
    assert completed.stderr.startswith("pagewal: error: PAGEWAL_FSYNC='sometimes'")
    assert completed.stderr.count("\n") == 1 and "Traceback" not in completed.stderr


def test_usage_errors_are_one_line_with_a_pointer_to_help(
    capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["dump", "app.db", "--epoch", "first"])
    assert exited.value.code == 2
    assert capsys.readouterr().err == ("pagewal: error: argument --epoch: 'first' is not an "
                                       "epoch number (see 'pagewal dump --help')\n")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_drawn_on_a_terminal_with_output_kept_whole(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "app.db"
    write_v1_log(db, 3)  # the reader of format 2 log files draws no progress of its own
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(["verify", str(db)]) == 0
    assert "verify" in terminal.getvalue() and "3/3" in terminal.getvalue()
    assert capsys.readouterr().out.startswith(f"{db}: valid: 3 segments")


# --------------------------------------------------------------------------- bench


def test_bench_without_its_extras_is_one_line_and_exit_status_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli, "BENCH_EXTRAS", ("pagewal_no_such_module",))
    code, out, err = run(capsys, "bench", "--quick")
    assert (code, out) == (2, "")
    assert err == ("pagewal: error: the benchmark suite is not available (missing "
                   "pagewal_no_such_module): run it from a source checkout after pip install "
                   "-e '.[bench]'\n")


def test_bench_passes_its_arguments_to_the_suite(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli, "BENCH_EXTRAS", ())  # the fake suite below needs none of them
    compare = cli._load_bench()
    calls: list[tuple[list[str], object]] = []

    def fake_main(argv: list[str], *, progress: object = None) -> int:
        calls.append((argv, progress))
        return 3

    monkeypatch.setattr(compare, "main", fake_main)
    assert main(["bench", "--quick", "--seconds", "1", "--systems", "lmdb"]) == 3
    assert calls == [(["--quick", "--seconds", "1", "--systems", "lmdb"], None)]


def test_recover_checkpoint_writes_the_pages_into_the_data_file_and_retires_the_segments(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "store.db"
    pages = {n: bytes([n + 1]) * 1024 for n in (0, 3, 9)}
    with Wal.open(db, WalConfig(lanes=2, fsync="off")) as wal:
        for page_no, image in pages.items():
            wal.commit({page_no: image})
    assert main(["recover", str(db), "--checkpoint"]) == 0
    out = capsys.readouterr().out
    assert "checkpointed 3 pages of 1024 bytes" in out  # the page size is the log's
    data = db.read_bytes()
    for page_no, image in pages.items():
        assert data[page_no * 1024 : (page_no + 1) * 1024] == image
    assert not [n for n in os.listdir(tmp_path) if "-wal-seg-" in n]
    assert recover(db).base.commit_seq == 3


def test_recover_checkpoint_with_a_page_size_the_log_contradicts_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "store.db"
    with Wal.open(db, WalConfig(lanes=2, fsync="off")) as wal:
        wal.commit({0: b"x" * 1024})
    assert main(["recover", str(db), "--checkpoint", "--page-size", "4096"]) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "page_size=4096" in err
    assert recover(db).commit_count == 1  # nothing was applied or deleted


def test_crash_test_help_says_the_seed_reproduces_the_workload_not_thread_timing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["crash-test", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--seed SEED reproduce a run's workload" in text
    assert "Thread timing is not reproduced" in text


def test_recover_checkpoint_the_file_system_refuses_prints_the_way_out_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "store.db"
    with Wal.open(db, WalConfig(lanes=2, fsync="off")) as wal:
        wal.commit({0: b"a" * 4096})
        wal.commit({300: b"z" * 4096})  # ends past 1 MiB
    segments = sorted(n for n in os.listdir(tmp_path) if "-wal-seg-" in n)
    # A process whose RLIMIT_FSIZE (1 MiB) the data file would exceed: set in a child.
    script = ("import resource, sys\n"
              "resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, resource.RLIM_INFINITY))\n"
              "from pagewal._cli import main\n"
              "sys.exit(main(sys.argv[1:]))\n")
    source_root = str(Path(cli.__file__).resolve().parent.parent)
    completed = subprocess.run(
        [sys.executable, "-c", script, "recover", str(db), "--checkpoint"], capture_output=True,
        text=True, timeout=120, check=False,
        env={**os.environ, "PYTHONPATH": source_root, "PAGEWAL_FSYNC": "off"})
    assert completed.returncode == 1, completed.stderr
    assert completed.stderr.count("\n") == 1
    assert completed.stderr.startswith("pagewal: error: ")
    for words in ("page 300", "RLIMIT_FSIZE", "read_only=True", "then open the store again"):
        assert words in completed.stderr
    assert sorted(n for n in os.listdir(tmp_path) if "-wal-seg-" in n) == segments
    assert main(["recover", str(db), "--checkpoint"]) == 0  # here the file may grow
    assert "checkpointed 2 pages of 4096 bytes" in capsys.readouterr().out
    assert db.read_bytes()[300 * 4096 :] == b"z" * 4096
# --------------------------------------------------------------------------- checkpoint record


def checkpoint_file(db: Path) -> Path:
    return db.with_name(f"{db.name}-wal-checkpoint")


def test_recover_rebuild_checkpoint_records_where_the_log_files_continue_from(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "app.db"
    build_log(db, 2)
    recover(db, delete_after=True)  # checkpoint at epoch 2, commit_seq 2
    later = build_log(db, 2, start=2)
    checkpoint_file(db).unlink()

    code, out, err = run(capsys, "recover", db)
    assert (code, out) == (1, "")
    assert err.count("\n") == 1
    # The log file's header says where it continues from: the command to run names it.
    command = f"pagewal recover {db} --rebuild-checkpoint --epoch 2 --commit-seq 2"
    assert command in err and "--skip-corrupt" not in err

    code, out, err = run(capsys, *command.split()[1:], "--page-size", "4096")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == (f"checkpoint rebuilt: {checkpoint_file(db)} now records epoch 2, "
                        "commit_seq 2, page size 4096")
    assert f"recovered {db}" in out and "commits: 2 (commit_seq 3..4)" in out
    assert recover(db).last.commit_seq == later[-1].commit_seq


def test_recover_rebuild_checkpoint_of_format_1_segments_takes_the_first_ones_position(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "app.db"
    write_v1_log(db, 3, first_epoch=2)  # the record of epoch 1, commit_seq 2 was lost

    code, out, err = run(capsys, "recover", db)
    assert (code, out) == (1, "")
    assert err.count("\n") == 1
    assert f"pagewal recover {db} --rebuild-checkpoint" in err
    assert "epoch 1, commit_seq 2" in err and "--skip-corrupt" not in err

    code, out, err = run(capsys, "recover", db, "--rebuild-checkpoint", "--page-size", "4096")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == (f"checkpoint rebuilt: {checkpoint_file(db)} now records epoch 1, "
                        "commit_seq 2, page size 4096")
    assert lines[1].startswith("  why: the record was missing; segment ")
    assert f"recovered {db}" in out and "commits: 4 (commit_seq 3..6)" in out
    assert recover(db).last.commit_seq == 6


def test_recover_rebuild_checkpoint_without_segments_needs_epoch_and_commit_seq(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "app.db"
    build_log(db, 2)
    recover(db, delete_after=True)
    checkpoint_file(db).unlink()
    (tmp_path / "app.db-wal-lock").touch()  # the log's own files still name it

    code, _, err = run(capsys, "recover", db, "--rebuild-checkpoint")
    assert code == 1 and err.count("\n") == 1 and "--epoch E --commit-seq S" in err
    code, _, err = run(capsys, "recover", db, "--epoch", "2")
    assert code == 2 and "--rebuild-checkpoint" in err

    code, out, err = run(capsys, "recover", db, "--rebuild-checkpoint", "--epoch", "2",
                         "--commit-seq", "2")
    assert (code, err) == (0, "")
    assert "no segment vouches for a position: recorded as given" in out
    assert "page size: not recorded" in out
    assert recover(db).base.commit_seq == 2


def test_inspect_and_verify_warn_of_a_damaged_checkpoint_copy_and_change_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "app.db"
    build_log(db, 2)
    recover(db, delete_after=True)
    build_log(db, 1, start=2)
    flip(checkpoint_file(db), 48 + 10)
    before = snapshot(tmp_path)

    code, out, _ = run(capsys, "inspect", db)
    assert code == 0
    assert "checkpoint: epoch 2, commit_seq 2, page size not recorded" in out
    assert "warning: " in out and "copy 2" in out
    code, out, _ = run(capsys, "verify", db, "--json")
    report = json.loads(out)
    assert code == 0 and report["valid"] and len(report["warnings"]) == 1
    assert snapshot(tmp_path) == before


def test_inspect_of_a_log_that_lost_its_checkpoint_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "app.db"
    build_log(db, 2)
    recover(db, delete_after=True)
    build_log(db, 2, start=2)
    checkpoint_file(db).unlink()

    code, out, _ = run(capsys, "inspect", db)
    assert code == 0
    assert "checkpoint: lost: the checkpoint record is missing" in out
    assert {row["role"] for row in table(out, "log files:")} == {"unchecked"}
    segments = table(out, "segments:")
    assert [(row["epoch"], row["status"]) for row in segments] == [
        ("3", "unchecked"), ("4", "unchecked"), ("4", "unchecked")]
    assert "torn tail: unknown" in out and "shutdown: unknown" in out
    code, _, err = run(capsys, "verify", db)
    assert code == 1 and "--rebuild-checkpoint" in err
def test_ctrl_c_in_demo_closes_the_store_and_prints_one_line_without_a_traceback(
    tmp_path: Path
) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "pagewal", "demo", str(tmp_path), "--threads", "3",
         "--seconds", "300"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PAGEWAL_FSYNC": "off"})
    try:
        assert process.stdout is not None
        first = process.stdout.readline()  # printed once the threads are committing
        assert first.startswith("store: "), first
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert (process.returncode, err) == (130, "pagewal: error: interrupted\n"), err
    assert "verified" not in out
    # Closed cleanly: the lock is free, no temporary file is left, every segment validates.
    result = recover(tmp_path / "demo.db")
    assert result.removed_temp_files == () and result.read_only_reason is None


def test_help_names_the_way_it_was_run_and_has_no_markup() -> None:
    completed = subprocess.run([sys.executable, "-m", "pagewal", "--help"], capture_output=True,
                               text=True, timeout=60, check=False)
    assert completed.returncode == 0, completed.stderr
    python = os.path.basename(sys.executable)
    assert completed.stdout.startswith(f"usage: {python} -m pagewal "), completed.stdout
    assert "``" not in completed.stdout and "`" not in completed.stdout


def test_recover_checkpoint_of_a_log_open_elsewhere_prints_only_the_lock_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "app.db"
    with Wal.open(db, WalConfig(lanes=2, fsync="off")) as wal:
        wal.commit({1: b"p" * 4096, 2: b"q" * 4096})
        code, out, err = run(capsys, "recover", db, "--checkpoint")
    assert (code, out) == (1, "")
    assert err.count("\n") == 1 and "already open" in err and "Traceback" not in err
    assert recover(db).commit_count == 1  # nothing was applied or deleted
