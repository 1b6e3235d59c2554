"""A log written in format 1 (``tests/data/v1-log/``, made by ``tests/data/make_v1_log.py``) is
read exactly, continued in format 2, and its segment files are deleted once a checkpoint
covers them; a page store opened on it holds exactly its pages."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from conftest import SMALL_LOG_FILE_BYTES

from pagewal import ChainPosition, Wal, WalConfig, WalPager, read_log, recover
from pagewal._layout import (
    FileState,
    checkpoint_name,
    decode_file_header,
    parse_log_file_name,
    segment_name,
)

sys.path.insert(0, str(Path(__file__).parent / "data"))
import make_v1_log as v1  # the fixture's generator: what the fixture holds

CONFIG = WalConfig(lanes=2, epoch_interval_ms=1, fsync="off", log_file_bytes=SMALL_LOG_FILE_BYTES)
V1_SEGMENTS = [segment_name(v1.DB_NAME, epoch) for epoch, _, _ in v1.SEGMENTS]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A copy of the committed fixture (tests change it)."""
    shutil.copytree(v1.DIRECTORY, tmp_path / "log")
    return tmp_path / "log" / v1.DB_NAME


def log_file_names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()
                  if parse_log_file_name(v1.DB_NAME, p.name) is not None)


def v1_names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if "-wal-seg-" in p.name)


def test_the_committed_fixture_is_what_its_generator_writes() -> None:
    # The fixture's bytes are the test's input: a change to the v1 encoders must not change
    # what is checked without anyone noticing (regenerate deliberately if it must).
    on_disk = {p.name: p.read_bytes() for p in v1.DIRECTORY.iterdir()}
    assert on_disk == v1.fixture_files()


def test_recovery_reads_the_v1_log_exactly(db: Path) -> None:
    before = {p.name: p.read_bytes() for p in db.parent.iterdir()}
    for result in (recover(db), read_log(db)):
        assert result.base == v1.CHECKPOINT
        assert result.last == v1.EXPECTED_LAST
        assert [Path(s.path).name for s in result.segments] == V1_SEGMENTS
        assert [s.header.epoch for s in result.segments] == [3, 4, 5]
        assert [(s.header.commit_seq_lo, s.header.commit_seq_hi) for s in result.segments] == [
            (4, 5), (6, 6), (7, 9)]
        assert result.torn_tail is None and result.skipped == ()
        assert result.page_images() == v1.expected_images()
        # Canonical order: by commit sequence, each commit's pages as committed.
        expected = [(seq, page_no, image) for _, _, commits in v1.SEGMENTS
                    for seq, _, pages in commits for page_no, image in pages.items()]
        assert [(r.commit_seq, r.page_no, r.image) for r in result.iter_records()] == expected
    after = {p.name: p.read_bytes() for p in db.parent.iterdir()}
    assert after.pop("app.db-wal-lock") == b""  # recover() takes the log's lock
    assert after == before  # nothing else changed


def test_wal_open_continues_the_v1_log_in_format_2(db: Path) -> None:
    with Wal.open(db, CONFIG) as wal:
        assert wal.recovery.last == v1.EXPECTED_LAST
        assert wal.recovery.page_images() == v1.expected_images()
        first = wal.commit({7: b"after v1 " * 8})
        second = wal.commit({1: b"page 1 again", 8: b"new page"})
        assert first.commit_seq == 10 and second.commit_seq == 11

    # The chain's first log file continues from the last v1 segment.
    names = log_file_names(db.parent)
    assert names, "no format 2 log file was written"
    headers = [decode_file_header((db.parent / n).read_bytes(), n) for n in names]
    active = [h for h in headers if h.state is FileState.ACTIVE]
    first_file = min(active, key=lambda h: h.file_no)
    assert first_file.continues_from == v1.EXPECTED_LAST
    assert first_file.prev_file_no == 0
    assert first_file.min_epoch > v1.EXPECTED_LAST.epoch
    assert v1_names(db.parent) == V1_SEGMENTS  # still the log's: nothing covers them yet

    result = recover(db)
    assert result.base == v1.CHECKPOINT
    assert result.last.commit_seq == 11
    assert [Path(s.path).name for s in result.segments][:3] == V1_SEGMENTS
    assert all(parse_log_file_name(v1.DB_NAME, Path(s.path).name) is not None
               for s in result.segments[3:])
    assert [r.commit_seq for r in result.iter_records()][-3:] == [10, 11, 11]
    assert result.page_images() == {**v1.expected_images(), 7: b"after v1 " * 8,
                                    1: b"page 1 again", 8: b"new page"}
    assert result.torn_tail is None and result.clean_shutdown


def test_a_crash_after_reopening_loses_neither_the_v1_nor_the_v2_commits(db: Path) -> None:
    wal = Wal.open(db, CONFIG)
    wal.commit({2: b"durable v2 commit"})
    # No close: the files as they are now are what a process crash would leave.
    state = {p.name: p.read_bytes() for p in db.parent.iterdir() if p.is_file()}
    wal.close()
    crashed = db.parent.parent / "crashed"
    crashed.mkdir()
    for name, content in state.items():
        (crashed / name).write_bytes(content)
    result = recover(crashed / v1.DB_NAME)
    assert result.last.commit_seq == 10
    assert result.page_images() == {**v1.expected_images(), 2: b"durable v2 commit"}


def test_retire_deletes_the_v1_segment_files_it_covers(db: Path) -> None:
    with Wal.open(db, CONFIG) as wal:
        retired = wal.retire(ChainPosition(4, 6))  # epochs 3 and 4: their files go
        assert retired == ChainPosition(4, 6)
        assert v1_names(db.parent) == [segment_name(v1.DB_NAME, 5)]
        ticket = wal.commit({9: b"v2"})
        assert wal.retire(ticket) == ChainPosition(ticket.epoch, ticket.commit_seq)
        assert v1_names(db.parent) == []  # the last v1 segment is covered too
    result = recover(db)
    assert result.base.commit_seq == 10 and result.last.commit_seq == 10
    assert result.page_images() == {}
    assert (db.parent / checkpoint_name(v1.DB_NAME)).exists()


def test_a_pager_opened_on_the_v1_log_holds_exactly_its_pages(db: Path) -> None:
    with WalPager.open(db, v1.PAGE_SIZE, CONFIG) as pager:
        for page_no, image in v1.expected_store().items():
            assert pager.read(page_no) == image, page_no
        with pager.transaction() as txn:
            txn.write(2, b"2" * v1.PAGE_SIZE)
            txn.commit()
        pager.checkpoint()
        # The checkpoint covers every v1 segment: their files are gone.
        assert v1_names(db.parent) == []
    with WalPager.open(db, v1.PAGE_SIZE, CONFIG) as pager:
        assert pager.read(2) == b"2" * v1.PAGE_SIZE
        assert {n: pager.read(n) for n in v1.expected_store() if n != 2} == {
            n: image for n, image in v1.expected_store().items() if n != 2}
    assert v1_names(db.parent) == []
