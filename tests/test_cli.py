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

from pagewal import CorruptSegmentError, LogLockedError, Wal, WalConfig, recover
from pagewal import _cli as cli
from pagewal._cli import main
from pagewal._demo import run_demo

KILL_FINDING = (
    "kill -9 on format 2 finds recovery failing on a live log's files: a segment inside the "
    "acknowledged chain reads as damaged (body checksum, or records outside the header's "
    "commit_seq range) while a later header records it acknowledged; an open bug in the "
    "writer or the pager's checkpoint reads, not in the harness")


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
@pytest.mark.xfail(reason=KILL_FINDING, strict=False)
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

FAST = WalConfig(lanes=2, epoch_interval_ms=1, fsync="off")



@dataclass(frozen=True)
class Committed:
    commit_seq: int
    epoch: int
    pages: list[tuple[int, bytes]]
    db_size_pages: int | None
    txn_id: int


def build_log(db: Path, count: int, start: int = 0) -> list[Committed]:
    """``count`` durable commits, one segment each (epochs follow the log's last one)."""
    committed = []
    with Wal.open(db, FAST) as wal:
        for k in range(start, start + count):
            pages = [(k % 3, bytes([k % 256]) * (50 + k)), (100 + k, f"new {k}".encode())]
            size = None if k % 2 else 10 + k
            ticket = wal.commit(pages, db_size_pages=size, txn_id=1000 + k)
            committed.append(Committed(ticket.commit_seq, ticket.epoch, pages, size, 1000 + k))
    return committed


def seg_path(db: Path, epoch: int) -> Path:
    return db.with_name(f"{db.name}-wal-seg-{epoch:016x}")


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir()}


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def table_rows(out: str) -> dict[int, str]:
    """inspect's segment rows by epoch (the lines that start with an epoch number)."""
    return {int(line.split()[0]): line for line in out.splitlines()
            if line.split() and line.split()[0].isdigit()}


def expected_error(db: Path) -> CorruptSegmentError:
    with pytest.raises(CorruptSegmentError) as raised:
        recover(db)
    return raised.value


def test_inspect_shows_every_epoch_and_the_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "app.db"
    build_log(db, 3)
    recover(db, delete_after=True)  # checkpoint at epoch 3, commit_seq 3
    later = build_log(db, 3, start=3)

    code, out, err = run(capsys, "inspect", db)

    assert (code, err) == (0, "")
    assert "checkpoint: epoch 3, commit_seq 3" in out
    rows = table_rows(out)
    assert sorted(rows) == [c.epoch for c in later] == [4, 5, 6]
    for c in later:
        fields = rows[c.epoch].split()
        assert fields[1] == f"{c.commit_seq}..{c.commit_seq}"
        assert fields[2] == "2"  # records
        assert int(fields[3].replace(",", "")) == seg_path(db, c.epoch).stat().st_size
        assert fields[-1] == "ok"
    assert "ends at epoch 6, commit_seq 6" in out


def test_inspect_lists_a_corrupt_segment_with_its_header_and_stray_files_read_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "app.db"
    build_log(db, 4)
    flip(seg_path(db, 2), 64 + 40)  # inside the first record's image: the header stays good
    error = expected_error(db)
    Path(f"{seg_path(db, 5)}.tmp").write_bytes(b"half a segment")
    Path(f"{seg_path(db, 1)}.corrupt").write_bytes(b"set aside earlier")
    before = snapshot(tmp_path)

    code, out, _ = run(capsys, "inspect", db)

    assert code == 0
    rows = table_rows(out)
    assert sorted(rows) == [1, 2, 3, 4]
    assert rows[1].endswith(" ok")
    assert "2..2" in rows[2]
    assert rows[2].endswith(f"corrupt: offset {error.offset}: {error.reason}")
    assert rows[3].endswith("follows corrupt") and rows[4].endswith("follows corrupt")
    assert f"{seg_path(db, 5).name}.tmp (14 bytes)" in out
    assert f"{seg_path(db, 1).name}.corrupt (17 bytes)" in out
    assert snapshot(tmp_path) == before


def test_verify_a_good_log_exits_0_and_prints_no_progress_off_a_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "app.db"
    build_log(db, 5)
    code, out, err = run(capsys, "verify", db)
    assert code == 0
    assert err == ""  # no progress bar: stderr is not a terminal
    assert out == (f"{db}: valid: 5 segments, 10 records, 5 commits (commit_seq 1..5), "
                   f"{sum(seg_path(db, e).stat().st_size for e in range(1, 6)):,} bytes\n")


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
        "page_size": 0, "warnings": [],
    }


def test_verify_a_bit_flipped_segment_exits_1_naming_the_file_and_offset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "app.db"
    build_log(db, 5)
    flip(seg_path(db, 3), 120)
    error = expected_error(db)
    assert Path(error.path) == seg_path(db, 3)

    code, out, err = run(capsys, "verify", db)
    assert code == 1
    assert err == f"pagewal: error: {seg_path(db, 3)}: corrupt at offset {error.offset}: " \
                  f"{error.reason}\n"
    assert "valid prefix: 2 segments" in out and "3 segments from the first bad one" in out

    code, out, _ = run(capsys, "verify", db, "--json")
    report = json.loads(out)
    assert code == 1 and report["valid"] is False
    assert report["error"] == {"path": str(seg_path(db, 3)), "offset": error.offset,
                               "reason": error.reason}
    assert (report["segments"], report["commits"], report["unusable_segments"]) == (2, 2, 3)


def test_verify_a_missing_middle_segment_exits_1_as_a_broken_chain(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "app.db"
    build_log(db, 5)
    seg_path(db, 3).unlink()
    code, _, err = run(capsys, "verify", db)
    assert code == 1
    assert err.count("\n") == 1
    assert f"{seg_path(db, 4)}: corrupt at offset 40: chain broken" in err
    code, out, _ = run(capsys, "inspect", db)
    assert table_rows(out)[4].split()[-1] != "ok" and "broken: offset 40" in table_rows(out)[4]


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
    flip(seg_path(db, 2), 100)
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
        in_flight = Path(f"{seg_path(db, 99)}.tmp")
        in_flight.write_bytes(b"a segment being written")
        before = snapshot(tmp_path)
        assert run(capsys, "verify", db)[0] == 0
        # Nothing removed or changed (the writer's own background thread may add the next
        # epochs' temporary files meanwhile).
        assert before.items() <= snapshot(tmp_path).items()
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
    config = WalConfig(lanes=1, epoch_interval_ms=60_000, fsync="off")
    commits = [([(5, b"five" * 10), (6, b"six")], 40, 77), ([(5, b"again")], None, 0),
               ([(9, b"n" * 700)], 41, 2**64 - 1)]
    with Wal.open(db, config) as wal:
        tickets = [wal.submit(pages, db_size_pages=size, txn_id=txn)
                   for pages, size, txn in commits]
        wal.flush(timeout=30)
    assert {t.epoch for t in tickets} == {2}

    code, out, _ = run(capsys, "dump", db, "--epoch", 2)

    assert code == 0
    lines = out.splitlines()
    assert lines[2].split() == ["offset", "commit_seq", "txn_id", "page_no", "image_len",
                                "crc32c", "lane", "commit", "db_size_pages"]
    rows = [line.split() for line in lines[3:]]
    expected = [
        [str(ticket.commit_seq), str(txn), str(page_no), str(len(image)), "0",
         "last" if index == len(pages) - 1 else "-", "-" if size is None else str(size)]
        for ticket, (pages, size, txn) in zip(tickets, commits, strict=True)
        for index, (page_no, image) in enumerate(pages)]
    assert [row[1:5] + row[6:] for row in rows] == expected
    data = seg_path(db, 2).read_bytes()
    for row in rows:  # the CRC shown is the one stored after the record, and it is right
        offset = int(row[0])
        end = offset + 4 + int.from_bytes(data[offset : offset + 4], "little")
        assert int(row[5], 16) == int.from_bytes(data[end - 4 : end], "little")
        assert int(row[5], 16) == crc32c.crc32c(data[offset + 4 : end - 4])


def test_dump_of_a_missing_epoch_exits_2_and_of_a_corrupt_segment_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "app.db"
    build_log(db, 3)
    code, _, err = run(capsys, "dump", db, "--epoch", 7)
    assert code == 2
    assert err == f"pagewal: error: no segment of epoch 7 beside {db} (segments: 1..3)\n"
    flip(seg_path(db, 2), 100)
    code, _, err = run(capsys, "dump", db, "--epoch", 2)
    assert code == 1
    assert f"{seg_path(db, 2)}: corrupt at offset" in err and err.count("\n") == 1


def test_recover_skip_corrupt_reports_the_skipped_segments(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "app.db"
    build_log(db, 4)
    flip(seg_path(db, 3), 100)
    error = expected_error(db)

    code, _, err = run(capsys, "recover", db)
    assert code == 1
    assert err == f"pagewal: error: {error} (--skip-corrupt keeps the valid prefix)\n"

    code, out, _ = run(capsys, "recover", db, "--skip-corrupt")
    assert code == 0
    assert "commits: 2 (commit_seq 1..2)" in out
    assert "skipped 2 segments" in out
    assert f"  {seg_path(db, 3)}: offset {error.offset}: {error.reason}\n" in out
    assert f"  {seg_path(db, 4)}: follows a corrupt segment in the chain\n" in out


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
    build_log(db, 3)
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


def test_recover_rebuild_checkpoint_prints_what_it_wrote_and_why_after_a_lost_record(
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
    assert f"pagewal recover {db} --rebuild-checkpoint" in err
    assert "epoch 2, commit_seq 2" in err and "--skip-corrupt" not in err

    code, out, err = run(capsys, "recover", db, "--rebuild-checkpoint", "--page-size", "4096")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == (f"checkpoint rebuilt: {checkpoint_file(db)} now records epoch 2, "
                        "commit_seq 2, page size 4096")
    assert lines[1].startswith("  why: the record was missing; segment ")
    assert f"recovered {db}" in out and "commits: 2 (commit_seq 3..4)" in out
    assert recover(db).last.commit_seq == later[-1].commit_seq


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
    assert all(row.split()[-1] == "lost)" for row in table_rows(out).values())
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
