"""The temporary-file pre-creator: files ready ahead, never two opens of one file, no leftovers."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from conftest import RecordingFileSystem, wait_until

from pagewal import Wal, WalConfig
from pagewal._precreate import AHEAD, TempFilePrecreator


def test_the_next_epochs_files_are_created_ahead_and_handed_out_once(tmp_path: Path) -> None:
    fs = RecordingFileSystem()
    precreator = TempFilePrecreator(fs, lambda e: str(tmp_path / f"{e}.tmp"), first_epoch=1)
    try:
        assert wait_until(lambda: fs.counts.get("open", 0) == AHEAD)
        first = precreator.take(1)
        assert first is not None and os.path.exists(tmp_path / "1.tmp")
        fs.close(first)
        assert precreator.take(1) is None  # handed out once
        assert wait_until(lambda: (tmp_path / f"{1 + AHEAD}.tmp").exists())
    finally:
        precreator.close()
    assert sorted(os.listdir(tmp_path)) == ["1.tmp"]  # unused files removed at close


def test_taking_an_epoch_being_created_waits_for_it_instead_of_opening_twice(
    tmp_path: Path
) -> None:
    fs = RecordingFileSystem()
    gate = threading.Event()
    fs.gate["open"] = gate
    precreator = TempFilePrecreator(fs, lambda e: str(tmp_path / f"{e}.tmp"), first_epoch=7)
    taken: list[int | None] = []
    taker = threading.Thread(target=lambda: taken.append(precreator.take(7)))
    try:
        assert wait_until(lambda: fs.counts.get("open", 0) == 1)  # epoch 7 is being opened
        taker.start()
        # take() waits for the open; one that did not would usually have returned by now
        # (a correct one is never reported wrongly, however slow the machine).
        threading.Event().wait(0.1)
        assert not taken
        gate.set()
        taker.join(timeout=60)
        assert taken and taken[0] is not None  # it got the file instead of making its own
        fs.close(taken[0])
    finally:
        gate.set()
        precreator.close()


def test_a_closed_log_leaves_no_temporary_files(tmp_path: Path) -> None:
    db = tmp_path / "p.db"
    with Wal.open(db, WalConfig(lanes=2, epoch_interval_ms=1)) as wal:
        for n in range(20):
            wal.commit({n: b"x" * 100})
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]
