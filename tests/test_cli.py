"""The command line: demo verifies itself; env reports sources; bad input is one line, exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pagewal import WalConfig
from pagewal._cli import main
from pagewal._demo import run_demo


def test_demo_runs_transactions_checkpoints_reopens_and_verifies_every_page(
    tmp_path: Path
) -> None:
    lines: list[str] = []
    config = WalConfig(lanes=2, epoch_interval_ms=2, checkpoint_bytes=256 << 10)
    report = run_demo(str(tmp_path), threads=4, seconds=0.3, config=config, say=lines.append)
    assert report.ok
    assert report.transactions > 0 and report.pages >= report.transactions
    assert report.checkpoints >= 1  # ~1 MB of pages against a 256 KiB threshold
    assert report.pages_verified == 10_000 and report.wrong == 0
    assert report.latency_p50_ms <= report.latency_p99_ms
    assert report.lines()[-1] == "verified 10000 pages against the oracle after reopening: 0 wrong"
    assert "demo.db" in lines[0]


def test_demo_starts_from_a_fresh_store_each_run(tmp_path: Path) -> None:
    config = WalConfig(lanes=2, epoch_interval_ms=2, fsync="off")
    run_demo(str(tmp_path), threads=2, seconds=0.1, config=config, say=lambda _: None)
    second = run_demo(str(tmp_path), threads=2, seconds=0.1, config=config, say=lambda _: None)
    assert second.ok and second.pages_verified == 10_000


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


def test_crash_test_quick_configuration_passes_and_prints_its_figures(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "pagewal", "crash-test", "--seed", "5", "--dir", str(tmp_path)],
        capture_output=True, text=True, timeout=600, check=False)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    out = completed.stdout
    assert "seed 5 (rerun with --seed 5)" in out
    for figure in ("power loss total:", "(2 on the pager)", "power loss (pager)",
                   "faults total: 14 / 14", "corruptions detected",
                   "20 kills", "lost = 0, partial = 0", "violations: 0"):
        assert figure in out


def test_crash_test_self_check_catches_every_broken_log() -> None:
    assert main(["crash-test", "--self-check", "--seed", "3"]) == 0
