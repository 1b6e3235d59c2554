"""Crafted and hostile inputs: numbers that leave no room to continue the log, logs of tiny
records (memory bounded by a small factor of the bytes read), read-only file systems."""

from __future__ import annotations

import contextlib
import errno
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import pytest

from pagewal import (
    BrokenLogError,
    ChainPosition,
    CorruptSegmentError,
    FileMode,
    OsFileSystem,
    RecoveryResult,
    Wal,
    WalConfig,
    WalPager,
    read_log,
    recover,
)
from pagewal._cli import main
from pagewal._codec import MAX_POSITION, MAX_U64, SegmentHeader, encode_commits, make_commit
from pagewal._layout import CheckpointRecord, checkpoint_name, encode_checkpoint_v1, segment_name

T = TypeVar("T")
FAST = WalConfig(lanes=2, epoch_interval_ms=1, fsync="off")


def write_segment(
    db: Path, *, epoch: int, prev_epoch: int, first_seq: int, commits: int, lanes: int = 1,
    image: bytes = b"x",
) -> Path:
    """A checksum-valid segment of ``commits`` one-page commits, laid out lane by lane (commit
    ``n`` on lane ``n % lanes``), as the writer lays out an epoch of several lanes."""
    triples = [(first_seq + n, n % lanes, make_commit({n: image})) for n in range(commits)]
    triples.sort(key=lambda triple: triple[1])  # lane by lane, each lane in commit order
    body = encode_commits(triples)
    header = SegmentHeader(epoch=epoch, record_count=commits, lane_count=lanes,
                           commit_seq_lo=first_seq, commit_seq_hi=first_seq + commits - 1,
                           prev_epoch=prev_epoch, body_length=len(body))
    path = db.parent / segment_name(db.name, epoch)
    path.write_bytes(header.encode() + body)
    return path


# --------------------------------------------------------------------------- numbers near 2**64


@pytest.mark.parametrize(("epoch", "first_seq", "offset"), [
    (MAX_U64, 1, 8),                 # the epoch
    (1, MAX_U64, 32),                # commit_seq_hi
    (MAX_POSITION + 1, 1, 8),
    (1, MAX_POSITION + 1, 32),
])
def test_a_segment_numbered_near_2_64_is_a_typed_error_at_open_not_at_the_next_commit(
    tmp_path: Path, epoch: int, first_seq: int, offset: int
) -> None:
    db = tmp_path / "app.db"
    path = write_segment(db, epoch=epoch, prev_epoch=0, first_seq=first_seq, commits=1)
    with pytest.raises(CorruptSegmentError) as raised:
        Wal.open(db, FAST)
    assert (raised.value.path, raised.value.offset) == (str(path), offset)
    assert "no room to continue the log" in raised.value.reason
    with pytest.raises(CorruptSegmentError, match="no room to continue"):
        recover(db)
    assert main(["verify", str(db)]) == 1


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("position", [ChainPosition(MAX_U64, 5), ChainPosition(5, MAX_U64),
                                      ChainPosition(MAX_POSITION + 1, MAX_POSITION + 1)])
def test_a_checkpoint_numbered_near_2_64_is_a_typed_error_at_open(
    tmp_path: Path, position: ChainPosition, version: int
) -> None:
    db = tmp_path / "app.db"
    path = tmp_path / checkpoint_name(db.name)
    path.write_bytes(encode_checkpoint_v1(position) if version == 1
                     else CheckpointRecord(position=position).encode())
    for open_it in (lambda: Wal.open(db, FAST), lambda: WalPager.open(db, 4096, FAST)):
        with pytest.raises(CorruptSegmentError) as raised:
            open_it()
        assert raised.value.path == str(path)
        assert "no room to continue the log" in raised.value.reason


def test_a_log_at_the_largest_position_refuses_to_go_past_it_and_stays_readable(
    tmp_path: Path
) -> None:
    db = tmp_path / "app.db"
    write_segment(db, epoch=MAX_POSITION, prev_epoch=0, first_seq=1, commits=1)
    wal = Wal.open(db, FAST)
    try:
        assert wal.recovery.last.epoch == MAX_POSITION
        with pytest.raises(BrokenLogError, match="no room"):
            wal.commit({1: b"y"})
    finally:
        with contextlib.suppress(BrokenLogError):
            wal.close()
    result = recover(db)  # nothing the reader would reject was written
    assert result.last == ChainPosition(MAX_POSITION, 1)


# --------------------------------------------------------------------------- memory


RECORDS = 50_000


@pytest.fixture(scope="module")
def tiny_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One 2 MB segment of 50,000 one-byte images from two lanes (so recovery must sort):
    the most records a byte of log can hold. (Kept small: tracemalloc slows the decoder.)"""
    db = tmp_path_factory.mktemp("tiny") / "tiny.db"
    write_segment(db, epoch=1, prev_epoch=0, first_seq=1, commits=RECORDS, lanes=2)
    return db


def heap_peak(run: Callable[[], T]) -> tuple[int, int, T]:
    """Peak and final size of the Python and numpy heap allocations of ``run()``
    (tracemalloc: numpy reports its arrays to it; mapped segment files are not heap)."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        value = run()
        current, peak = tracemalloc.get_traced_memory()
        return peak - before, current - before, value
    finally:
        tracemalloc.stop()


def test_recovery_of_tiny_records_needs_a_small_factor_of_the_bytes_it_reads(
    tiny_log: Path
) -> None:
    peak, _, result = heap_peak(lambda: recover(tiny_log))
    assert isinstance(result, RecoveryResult)
    assert result.records.size == RECORDS
    # The kept index is 43 bytes per 41-byte record (1.05x); one segment's decoded index and
    # sort scratch come and go beside it. Before bounding: 3.4x.
    assert peak <= 2.6 * result.bytes_read, peak / result.bytes_read


def test_page_images_of_tiny_records_costs_the_dict_not_a_view_per_page(tiny_log: Path) -> None:
    result = recover(tiny_log)
    peak, kept, pages = heap_peak(result.page_images)
    assert len(pages) == RECORDS
    # The dict itself is 100-200 bytes per page (int key, 1-byte bytes, slots); building it
    # must not add a memoryview and Python ints per page (before: ~370 bytes per page).
    assert kept <= 250 * RECORDS, kept / RECORDS
    assert peak - kept <= 80 * RECORDS, (peak - kept) / RECORDS


def test_verify_keeps_no_records_so_it_needs_about_one_segments_index(tiny_log: Path) -> None:
    peak, _, result = heap_peak(lambda: read_log(tiny_log, keep_records=False))
    assert isinstance(result, RecoveryResult)
    assert result.records.size == 0 and result.segments[0].header.record_count == RECORDS
    assert peak <= 1.3 * result.bytes_read, peak / result.bytes_read
    assert main(["verify", str(tiny_log)]) == 0


# --------------------------------------------------------------------------- read-only


class ReadOnlyFileSystem(OsFileSystem):
    """A file system mounted read-only: every change raises EROFS, reads work."""

    def _refuse(self, path: str) -> None:
        raise OSError(errno.EROFS, "Read-only file system", path)

    def open_for_write(self, path: str, mode: FileMode | None = None) -> int:
        self._refuse(path)
        raise AssertionError

    def open_for_update(self, path: str) -> int:
        self._refuse(path)
        raise AssertionError

    def try_lock(self, path: str, mode: FileMode | None = None) -> int | None:
        self._refuse(path)  # O_CREAT (or O_RDWR) on a read-only mount
        raise AssertionError

    def unlink(self, path: str) -> None:
        self._refuse(path)

    def rename(self, source: str, target: str) -> None:
        self._refuse(source)

    def fsync_dir(self, directory: str) -> None:
        self._refuse(directory)

    def pwritev(self, fd: int, buffers: Sequence[bytes | bytearray | memoryview],
                offset: int) -> int:
        self._refuse(str(fd))
        raise AssertionError

    def writev(self, fd: int, buffers: Sequence[bytes | bytearray | memoryview]) -> int:
        self._refuse(str(fd))
        raise AssertionError


class NoRemovalFileSystem(OsFileSystem):
    """The lock can be taken (its file exists) but the directory refuses removals."""

    def unlink(self, path: str) -> None:
        raise OSError(errno.EACCES, "Permission denied", path)


def log_with_leftovers(db: Path) -> list[Path]:
    with Wal.open(db, FAST) as wal:
        for n in range(3):
            wal.commit({n: bytes([65 + n]) * 100})
    leftover = Path(f"{db.parent / segment_name(db.name, 9)}.tmp")
    leftover.write_bytes(b"interrupted")
    return [leftover]


def test_recover_on_a_read_only_file_system_reads_and_says_what_it_could_not_tidy(
    tmp_path: Path
) -> None:
    db = tmp_path / "app.db"
    leftovers = log_with_leftovers(db)
    (tmp_path / "app.db-wal-lock").unlink()
    before = sorted(p.name for p in tmp_path.iterdir())

    result = recover(db, fs=ReadOnlyFileSystem())

    assert result.commit_count == 3 and result.page_images()[2] == b"C" * 100
    assert result.read_only_reason is not None
    assert "app.db-wal-lock" in result.read_only_reason
    assert "Read-only file system" in result.read_only_reason
    assert result.not_removed == tuple(str(p) for p in leftovers)
    assert result.removed_temp_files == ()
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_recover_that_may_not_remove_leftovers_lists_them_instead_of_failing(
    tmp_path: Path
) -> None:
    db = tmp_path / "app.db"
    leftovers = log_with_leftovers(db)
    result = recover(db, fs=NoRemovalFileSystem())
    assert result.commit_count == 3
    assert result.read_only_reason is None  # it held the lock
    assert result.not_removed == tuple(str(p) for p in leftovers)
    assert all(p.exists() for p in leftovers)


def test_recover_with_delete_after_on_a_read_only_file_system_raises(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    log_with_leftovers(db)
    with pytest.raises(OSError) as raised:
        recover(db, delete_after=True, fs=ReadOnlyFileSystem())
    assert raised.value.errno == errno.EROFS


def test_pagewal_recover_on_a_read_only_file_system_reports_what_it_left(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import pagewal._recovery

    db = tmp_path / "app.db"
    leftovers = log_with_leftovers(db)
    (tmp_path / "app.db-wal-lock").unlink()
    monkeypatch.setattr(pagewal._recovery, "OsFileSystem", ReadOnlyFileSystem)
    assert main(["recover", str(db)]) == 0
    out = capsys.readouterr().out
    assert "commits: 3 (commit_seq 1..3)" in out
    assert "read only: could not create or lock" in out
    assert f"left in place: 1\n  {leftovers[0]}\n" in out
