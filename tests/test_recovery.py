"""Recovery against real files: oracle replay, chain continuation, stale temporaries, corruption,
quarantine, checkpoints (DESIGN §2 invariants 4 and 5, §3, §4).

Logs written by :class:`Wal` are format 2; the tests that damage, rename or remove segment
files work on format 1 logs written with the version 1 encoders (:func:`write_v1_segments`),
which recovery still reads and continues; damage to format 2 log files is judged by the
end-of-log rule (torn tail or :class:`CorruptSegmentError`, DESIGN §4)."""

from __future__ import annotations

import os
import queue
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from pagewal import (
    ChainPosition,
    CheckpointMissingError,
    CorruptSegmentError,
    ForeignFileError,
    LogLockedError,
    RecoveryResult,
    Ticket,
    Wal,
    WalConfig,
    rebuild_checkpoint,
    recover,
)
from pagewal._codec import DecodedSegment, SegmentHeader, encode_commits, make_commit
from pagewal._layout import (
    SEGMENT_HEADER_SIZE,
    CheckpointRecord,
    decode_file_header,
    decode_segment_v2,
    encode_checkpoint_v1,
    segment_span,
)
from pagewal._recovery import read_log

FAST = WalConfig(lanes=2, epoch_interval_ms=1, fsync="off", lane_capacity_bytes=256 * 1024)

Pages = Sequence[tuple[int, bytes]]
RecordTuple = tuple[int, int, int, int | None, bool, bytes]


# --------------------------------------------------------------------------- oracle


@dataclass(frozen=True)
class Committed:
    seq: int
    epoch: int
    pages: tuple[tuple[int, bytes], ...]
    db_size_pages: int | None
    txn_id: int


@dataclass
class Oracle:
    """What was acknowledged, replayed the way DESIGN §3 says recovery must."""

    commits: list[Committed] = field(default_factory=list)

    def add(self, ticket: Ticket, pages: Pages, db_size_pages: int | None, txn_id: int) -> None:
        self.commits.append(
            Committed(ticket.commit_seq, ticket.epoch, tuple(pages), db_size_pages, txn_id))

    def ordered(self) -> list[Committed]:
        return sorted(self.commits, key=lambda c: c.seq)

    def upto(self, last_seq: int) -> Oracle:
        return Oracle([c for c in self.commits if c.seq <= last_seq])

    def after(self, seq: int) -> Oracle:
        return Oracle([c for c in self.commits if c.seq > seq])

    def __add__(self, other: Oracle) -> Oracle:
        return Oracle(self.commits + other.commits)

    def records(self) -> list[RecordTuple]:
        return [
            (c.seq, c.txn_id, page_no, c.db_size_pages, index == len(c.pages) - 1, image)
            for c in self.ordered()
            for index, (page_no, image) in enumerate(c.pages)
        ]

    def page_images(self) -> dict[int, bytes]:
        pages: dict[int, bytes] = {}
        for c in self.ordered():
            pages.update(c.pages)
        return pages

    def db_size_pages(self) -> int | None:
        sizes = [c.db_size_pages for c in self.ordered() if c.db_size_pages is not None]
        return sizes[-1] if sizes else None

    def all_images(self) -> dict[int, set[bytes]]:
        images: dict[int, set[bytes]] = {}
        for c in self.commits:
            for page_no, image in c.pages:
                images.setdefault(page_no, set()).add(image)
        return images

    @property
    def last_seq(self) -> int:
        return max((c.seq for c in self.commits), default=0)

    @property
    def last_epoch(self) -> int:
        return max((c.epoch for c in self.commits), default=0)

    def epoch_of(self, seq: int) -> int:
        return next(c.epoch for c in self.commits if c.seq == seq)

    def last_seq_before_epoch(self, epoch: int) -> int:
        return max((c.seq for c in self.commits if c.epoch < epoch), default=0)


def recovered_records(result: RecoveryResult) -> list[RecordTuple]:
    return [
        (r.commit_seq, r.txn_id, r.page_no, r.db_size_pages, r.last_in_commit, r.image)
        for r in result.iter_records()
    ]


def assert_matches(result: RecoveryResult, oracle: Oracle, *, base: ChainPosition | None = None,
                   lanes: int = 2) -> None:
    """``result`` holds exactly ``oracle``'s commits, in canonical order, and its chain is whole."""
    base = ChainPosition() if base is None else base
    assert recovered_records(result) == oracle.records()
    assert result.page_images() == oracle.page_images()
    assert result.db_size_pages == oracle.db_size_pages()
    assert result.base == base
    expected_last = (ChainPosition(oracle.last_epoch, oracle.last_seq) if oracle.commits
                     else base)
    assert result.last == expected_last
    assert result.last_commit_seq == expected_last.commit_seq
    assert result.last_epoch == expected_last.epoch
    assert result.commit_count == len(oracle.commits)
    assert all(r.lane_id < lanes for r in result.iter_records())
    assert_chained(result)


def assert_chained(result: RecoveryResult) -> None:
    position = result.base
    for info in result.segments:
        assert info.header.prev_epoch == position.epoch
        assert info.header.commit_seq_lo == position.commit_seq + 1
        position = ChainPosition(info.header.epoch, info.header.commit_seq_hi)
    assert position == result.last


# --------------------------------------------------------------------------- files


def seg_path(db: Path, epoch: int) -> Path:
    return db.with_name(f"{db.name}-wal-seg-{epoch:016x}")


def log_file_path(db: Path, file_no: int) -> Path:
    return db.with_name(f"{db.name}-wal-{file_no:016x}")


def checkpoint_path(db: Path) -> Path:
    return db.with_name(f"{db.name}-wal-checkpoint")


def segment_epochs(db: Path) -> list[int]:
    pattern = re.compile(re.escape(db.name) + r"-wal-seg-([0-9a-f]{16})")
    return sorted(int(m.group(1), 16) for p in db.parent.iterdir()
                  if (m := pattern.fullmatch(p.name)))


def segment_bytes_total(db: Path) -> int:
    return sum(seg_path(db, e).stat().st_size for e in segment_epochs(db))


def record_at(position: ChainPosition, page_size: int = 0) -> bytes:
    """The checkpoint file recording ``position`` (and ``page_size``)."""
    return CheckpointRecord(position=position, page_size=page_size).encode()


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}


def flip(path: Path, offset: int, mask: int = 0xFF) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= mask
    path.write_bytes(bytes(data))


# --------------------------------------------------------------------------- writing


def make_commits(count: int, start: int = 0) -> list[tuple[list[tuple[int, bytes]], int | None]]:
    """Distinct, overlapping commits: page k % 3 is rewritten, page 10 + k is new."""
    commits = []
    for k in range(start, start + count):
        pages = [(k % 3, f"commit {k} page {k % 3} ".encode() * 8), (10 + k, f"new {k}".encode())]
        commits.append((pages, None if k % 2 else 20 + k))
    return commits


def write_commits(
    db: Path,
    commits: Iterable[tuple[Pages, int | None]],
    config: WalConfig = FAST,
    *,
    skip_corrupt: bool = False,
) -> Oracle:
    """Commit each one durably (so each lands in its own epoch and segment); close the log."""
    oracle = Oracle()
    with Wal.open(db, config, skip_corrupt=skip_corrupt) as wal:
        for index, (pages, db_size) in enumerate(commits):
            txn_id = 1000 + index
            ticket = wal.commit(pages, db_size_pages=db_size, txn_id=txn_id)
            oracle.add(ticket, pages, db_size, txn_id)
    return oracle


def write_v1_segments(
    db: Path, commits: Iterable[tuple[Pages, int | None]], after: ChainPosition | None = None,
) -> Oracle:
    """Write ``commits`` as a version 1 writer did: one segment file per commit (epoch ``n``
    holds commit ``n``), continuing the chain at ``after``. The files come from the version 1
    encoders, so what the tests below prove about them is what recovery does with the
    segment-per-file logs pagewal 0.1 left (it reads them, then continues in format 2)."""
    oracle = Oracle()
    position = after or ChainPosition()
    for index, (pages, db_size) in enumerate(commits):
        epoch, seq, txn_id = position.epoch + 1, position.commit_seq + 1, 1000 + index
        body = encode_commits([(seq, index % 2, make_commit(pages, txn_id=txn_id,
                                                             db_size_pages=db_size))])
        header = SegmentHeader(epoch=epoch, record_count=len(pages), lane_count=2,
                               commit_seq_lo=seq, commit_seq_hi=seq, prev_epoch=position.epoch,
                               body_length=len(body))
        seg_path(db, epoch).write_bytes(header.encode() + bytes(body))
        oracle.commits.append(Committed(seq, epoch, tuple(pages), db_size, txn_id))
        position = ChainPosition(epoch, seq)
    db.with_name(f"{db.name}-wal-lock").touch()  # a version 1 writer left its lock file too
    return oracle


def continue_v1(db: Path, commits: Iterable[tuple[Pages, int | None]]) -> Oracle:
    """Append ``commits`` to the version 1 log of ``db`` where its chain ends (after its
    checkpoint, if it has no segment after it)."""
    return write_v1_segments(db, commits, after=read_log(db).last)


def one_segment_per_commit(db: Path, count: int) -> Oracle:
    """A version 1 log of ``count`` commits, one segment file each (epochs 1..count)."""
    oracle = write_v1_segments(db, make_commits(count))
    assert [c.epoch for c in oracle.ordered()] == list(range(1, count + 1))
    assert segment_epochs(db) == list(range(1, count + 1))
    return oracle


# --------------------------------------------------------------------------- round trips


def test_recover_of_a_directory_without_a_log_returns_an_empty_result(tmp_path: Path) -> None:
    result = recover(tmp_path / "db")
    assert result.records.size == 0
    assert result.last == result.base == ChainPosition(0, 0)
    assert result.db_size_pages is None
    assert result.page_images() == {}
    assert result.segments == result.skipped == result.removed_temp_files == ()
    assert result.bytes_read == 0


def test_recover_returns_the_oracle_replay_with_positions_size_and_bytes_read(
    tmp_path: Path,
) -> None:
    db = tmp_path / "db"
    oracle = one_segment_per_commit(db, 5)
    size_on_disk = segment_bytes_total(db)

    result = recover(db)

    assert_matches(result, oracle)
    assert result.last_commit_seq == 5
    assert result.last_epoch == 5
    assert result.db_size_pages == 20 + 4  # commit 4 (the 5th) is the last that set a size
    assert result.bytes_read == size_on_disk
    assert [Path(s.path) for s in result.segments] == [seg_path(db, e) for e in range(1, 6)]
    assert result.skipped == result.removed_temp_files == ()
    # Recovery without delete_after changes nothing on disk.
    assert segment_epochs(db) == [1, 2, 3, 4, 5]


def test_db_size_pages_is_that_of_the_last_commit_that_set_one(tmp_path: Path) -> None:
    db = tmp_path / "db"
    oracle = write_commits(db, [([(0, b"a")], 7), ([(1, b"b")], None), ([(2, b"c")], None)])
    result = recover(db)
    assert_matches(result, oracle)
    assert result.db_size_pages == 7


commit_strategy = st.tuples(
    st.lists(
        st.tuples(
            st.one_of(st.integers(0, 6), st.sampled_from([0, 2**32 - 1])),
            st.one_of(st.binary(min_size=1, max_size=96),
                      st.sampled_from([b"\x00", bytes(range(256)) * 256])),  # 65,536 bytes
        ),
        min_size=1, max_size=4,
    ),
    st.one_of(st.none(), st.integers(1, 2**32 - 1)),
    st.integers(0, 2**64 - 1),
    st.booleans(),  # wait for durability before the next commit
)
config_strategy = st.sampled_from([
    FAST,
    WalConfig(lanes=1, epoch_interval_ms=1, fsync="off", lane_capacity_bytes=64 * 1024),
    WalConfig(mode="conservative", epoch_interval_ms=1, fsync="off"),
    # Small lanes and batches: commits mix the parallel and serialized paths in one epoch.
    WalConfig(lanes=3, epoch_interval_ms=1, fsync="off", lane_capacity_bytes=4096,
              max_batch_bytes=200),
])


@settings(max_examples=40, deadline=None)
@given(commits=st.lists(commit_strategy, min_size=1, max_size=8), config=config_strategy)
def test_recovered_records_equal_an_oracle_replay_in_commit_seq_order(
    commits: list[tuple[list[tuple[int, bytes]], int | None, int, bool]], config: WalConfig
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        db = Path(directory) / "db"
        oracle = Oracle()
        with Wal.open(db, config) as wal:
            for pages, db_size, txn_id, durable in commits:
                ticket = wal.commit(pages, db_size_pages=db_size, txn_id=txn_id, durable=durable)
                oracle.add(ticket, pages, db_size, txn_id)
        assert [c.seq for c in oracle.commits] == list(range(1, len(commits) + 1))

        result = recover(db)

        assert_matches(result, oracle, lanes=config.effective_lanes)
        # Format 2: every segment's header and records are read, padding is not.
        assert result.bytes_read == sum(SEGMENT_HEADER_SIZE + info.header.body_length
                                        for info in result.segments)
        assert [info.header.epoch for info in result.segments] == sorted(
            {c.epoch for c in oracle.commits})
        assert result.torn_tail is None and result.clean_shutdown


class LaneThread:
    """A thread that runs submitted calls one at a time, so it keeps one lane of a log."""

    def __init__(self) -> None:
        self._jobs: queue.Queue[Callable[[], object] | None] = queue.Queue()
        self._results: queue.Queue[object] = queue.Queue()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                self._results.put(job())
            except BaseException as error:  # handed back to the caller
                self._results.put(error)

    def call(self, job: Callable[[], object]) -> object:
        self._jobs.put(job)
        result = self._results.get(timeout=30)
        if isinstance(result, BaseException):
            raise result
        return result

    def stop(self) -> None:
        self._jobs.put(None)
        self._thread.join(timeout=30)


def test_records_laid_out_lane_by_lane_are_recovered_in_commit_seq_order(tmp_path: Path) -> None:
    db = tmp_path / "db"
    # A long interval: nothing seals until flush(), so every commit shares one epoch.
    config = WalConfig(lanes=2, epoch_interval_ms=60_000, fsync="off", lane_capacity_bytes=65536)
    oracle = Oracle()
    threads = [LaneThread(), LaneThread()]
    try:
        with Wal.open(db, config) as wal:
            for k, (pages, db_size) in enumerate(make_commits(8)):
                ticket = threads[k % 2].call(
                    lambda p=pages, s=db_size, t=k: wal.submit(p, db_size_pages=s, txn_id=t))
                assert isinstance(ticket, Ticket)
                oracle.add(ticket, pages, db_size, k)
            wal.flush(timeout=30)
    finally:
        for thread in threads:
            thread.stop()
    assert {c.epoch for c in oracle.commits} == {1}
    # Epoch 1 is the first segment of the first log file, right after its header block.
    log_file = log_file_path(db, 1)
    data = log_file.read_bytes()
    file_header = decode_file_header(data, str(log_file))
    on_disk = decode_segment_v2(data, str(log_file), file_header.alignment, file_header)
    assert isinstance(on_disk, DecodedSegment) and on_disk.header.epoch == 1
    file_order = on_disk.records["commit_seq"].tolist()
    assert file_order != sorted(file_order), "both lanes must be used for this test to mean much"
    assert set(on_disk.records["lane_id"].tolist()) == {0, 1}

    result = recover(db)

    assert_matches(result, oracle)
    assert [r.commit_seq for r in result.iter_records()] == sorted(file_order)


# --------------------------------------------------------------------------- reopening


def test_reopen_continues_at_the_next_epoch_and_seq_and_the_whole_chain_validates(
    tmp_path: Path,
) -> None:
    db = tmp_path / "db"
    first = one_segment_per_commit(db, 3)

    with Wal.open(db, FAST) as wal:
        assert wal.recovery.last == ChainPosition(3, 3)
        assert_matches(wal.recovery, first)
        recovered = wal.recovery.last
        tickets = [wal.commit(pages, db_size_pages=size) for pages, size in make_commits(2, 3)]
    assert [(t.commit_seq, t.epoch) for t in tickets] == [
        (recovered.commit_seq + 1, recovered.epoch + 1),
        (recovered.commit_seq + 2, recovered.epoch + 2),
    ]
    second = Oracle()
    for ticket, (pages, size) in zip(tickets, make_commits(2, 3), strict=True):
        second.add(ticket, pages, size, 0)

    # An open with no commits adds nothing and breaks nothing.
    with Wal.open(db, FAST) as wal:
        assert wal.recovery.last == ChainPosition(5, 5)
    third = write_commits(db, make_commits(1, 5))
    assert [(c.seq, c.epoch) for c in third.commits] == [(6, 6)]

    result = recover(db)

    assert_matches(result, first + second + third)
    assert [info.header.prev_epoch for info in result.segments] == [0, 1, 2, 3, 4, 5]


# --------------------------------------------------------------------------- temporary files


def test_segment_left_under_its_tmp_name_is_not_data_and_is_deleted(tmp_path: Path) -> None:
    db = tmp_path / "db"
    oracle = one_segment_per_commit(db, 3)
    # Publish of epoch 3 interrupted after the write, before the rename: a complete, valid file.
    tmp3 = Path(f"{seg_path(db, 3)}.tmp")
    seg_path(db, 3).rename(tmp3)
    size_on_disk = segment_bytes_total(db)

    result = recover(db)

    assert_matches(result, oracle.upto(2))
    assert result.removed_temp_files == (str(tmp3),)
    assert not tmp3.exists()
    assert result.bytes_read == size_on_disk
    # The log continues at epoch 3 with a fresh segment of that name.
    more = write_commits(db, make_commits(1, 10))
    assert [(c.seq, c.epoch) for c in more.commits] == [(3, 3)]
    assert_matches(recover(db), oracle.upto(2) + more)


def test_stale_tmp_files_beside_valid_segments_are_ignored_deleted_and_listed(
    tmp_path: Path,
) -> None:
    db = tmp_path / "db"
    oracle = one_segment_per_commit(db, 3)
    copy_of_2 = Path(f"{seg_path(db, 2)}.tmp")
    shutil.copyfile(seg_path(db, 2), copy_of_2)
    garbage_4 = Path(f"{seg_path(db, 4)}.tmp")
    garbage_4.write_bytes(os.urandom(300))
    empty_9 = Path(f"{seg_path(db, 9)}.tmp")
    empty_9.write_bytes(b"")
    size_on_disk = segment_bytes_total(db)

    result = recover(db)

    assert_matches(result, oracle)
    assert sorted(result.removed_temp_files) == sorted(map(str, [copy_of_2, garbage_4, empty_9]))
    assert not copy_of_2.exists()
    assert not garbage_4.exists()
    assert not empty_9.exists()
    assert result.bytes_read == size_on_disk
    assert recover(db).removed_temp_files == ()


def test_wal_open_also_deletes_stale_tmp_files(tmp_path: Path) -> None:
    db = tmp_path / "db"
    oracle = one_segment_per_commit(db, 2)
    # Epoch 9, not 3: the open log creates the next epochs' temporary files ahead of time.
    garbage = Path(f"{seg_path(db, 9)}.tmp")
    garbage.write_bytes(b"\x00" * 100)
    with Wal.open(db, FAST) as wal:
        assert wal.recovery.removed_temp_files == (str(garbage),)
        assert not garbage.exists()
        assert_matches(wal.recovery, oracle)


# --------------------------------------------------------------------------- missing segments


def test_missing_middle_segment_raises_a_chain_error_naming_the_segment_after_the_gap(
    tmp_path: Path,
) -> None:
    db = tmp_path / "db"
    one_segment_per_commit(db, 4)
    seg_path(db, 2).unlink()

    with pytest.raises(CorruptSegmentError) as info:
        recover(db)

    error = info.value
    assert Path(error.path) == seg_path(db, 3)
    assert "chain" in error.reason
    assert 0 <= error.offset < seg_path(db, 3).stat().st_size
    assert str(seg_path(db, 3)) in str(error)
    assert segment_epochs(db) == [1, 3, 4]  # default recovery leaves every file in place


def test_missing_middle_segment_with_skip_corrupt_returns_exactly_the_prefix(
    tmp_path: Path,
) -> None:
    db = tmp_path / "db"
    oracle = one_segment_per_commit(db, 4)
    seg_path(db, 2).unlink()

    result = recover(db, skip_corrupt=True)

    assert_matches(result, oracle.upto(1))
    assert [Path(s.path) for s in result.skipped] == [seg_path(db, 3), seg_path(db, 4)]
    assert "chain" in result.skipped[0].reason
    assert segment_epochs(db) == [1, 3, 4]  # skipped files are left in place


@pytest.mark.parametrize("skip_corrupt", [False, True], ids=["default", "skip_corrupt"])
def test_missing_first_segment_without_a_checkpoint_is_refused_not_restarted(
    tmp_path: Path, skip_corrupt: bool
) -> None:
    # From what is on disk a lost first segment and a lost checkpoint record look the same:
    # segment 2 continues from (1, 1). Neither may restart the numbering at 1 silently.
    db = tmp_path / "db"
    one_segment_per_commit(db, 3)
    seg_path(db, 1).unlink()
    before = snapshot(tmp_path)

    with pytest.raises(CheckpointMissingError) as info:
        recover(db, skip_corrupt=skip_corrupt)
    assert Path(info.value.path) == checkpoint_path(db)
    assert info.value.continues_from == ChainPosition(1, 1)
    assert snapshot(tmp_path) == before


# --------------------------------------------------------------------------- corrupt bytes


def test_every_single_byte_corruption_of_a_middle_segment_is_detected(tmp_path: Path) -> None:
    db = tmp_path / "db"
    oracle = one_segment_per_commit(db, 4)
    middle = seg_path(db, 2)
    original = middle.read_bytes()
    prefix = oracle.upto(1)
    committed_images = oracle.all_images()

    for offset in range(len(original)):
        for mask in (0x01, 0x80, 0xFF):
            corrupted = bytearray(original)
            corrupted[offset] ^= mask
            middle.write_bytes(bytes(corrupted))

            with pytest.raises(CorruptSegmentError) as info:
                recover(db)
            error = info.value
            assert Path(error.path) == middle, (offset, mask, error)
            assert 0 <= error.offset < len(original), (offset, mask, error)
            assert error.reason

            result = recover(db, skip_corrupt=True)
            assert recovered_records(result) == prefix.records(), (offset, mask)
            assert result.last == ChainPosition(1, 1)
            assert [Path(s.path) for s in result.skipped] == [
                middle, seg_path(db, 3), seg_path(db, 4)]
            assert (result.skipped[0].offset, result.skipped[0].reason) == (
                error.offset, error.reason)
            for page_no, image in result.page_images().items():
                assert image in committed_images[page_no]
    middle.write_bytes(original)
    assert_matches(recover(db), oracle)


@pytest.fixture(scope="module")
def golden_log(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, bytes], Oracle]:
    """A four-segment log (one commit per segment), as file name → bytes."""
    db = tmp_path_factory.mktemp("golden") / "db"
    oracle = one_segment_per_commit(db, 4)
    return snapshot(db.parent), oracle


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_arbitrary_damage_to_one_segment_yields_the_exact_prefix_before_it(
    golden_log: tuple[dict[str, bytes], Oracle], data: st.DataObject
) -> None:
    files, oracle = golden_log
    epoch = data.draw(st.integers(1, 4), label="epoch")
    name = seg_path(Path("db"), epoch).name
    original = files[name]
    kind = data.draw(st.sampled_from(["overwrite", "truncate", "append", "replace"]))
    if kind == "overwrite":
        offset = data.draw(st.integers(0, len(original) - 1), label="offset")
        patch = data.draw(st.binary(min_size=1, max_size=16), label="patch")
        damaged = (original[:offset] + patch + original[offset + len(patch):])[: len(original)]
    elif kind == "truncate":
        damaged = original[: data.draw(st.integers(0, len(original) - 1), label="length")]
    elif kind == "append":
        damaged = original + data.draw(st.binary(min_size=1, max_size=64), label="tail")
    else:
        damaged = data.draw(st.binary(max_size=len(original) + 8), label="content")
    assume(damaged != original)

    with tempfile.TemporaryDirectory() as directory:
        for file_name, content in files.items():
            Path(directory, file_name).write_bytes(content)
        db = Path(directory) / "db"
        seg_path(db, epoch).write_bytes(damaged)

        with pytest.raises(CorruptSegmentError) as info:
            recover(db)
        assert Path(info.value.path) == seg_path(db, epoch)
        assert 0 <= info.value.offset <= len(damaged)

        result = recover(db, skip_corrupt=True)
        assert_matches(result, oracle.upto(epoch - 1))
        assert [Path(s.path) for s in result.skipped] == [
            seg_path(db, e) for e in range(epoch, 5)]


# --------------------------------------------------------------------------- renamed segments


def test_segment_renamed_to_a_later_epochs_name_is_an_epoch_mismatch(tmp_path: Path) -> None:
    db = tmp_path / "db"
    oracle = one_segment_per_commit(db, 3)
    seg_path(db, 3).rename(seg_path(db, 7))

    with pytest.raises(CorruptSegmentError) as info:
        recover(db)
    error = info.value
    assert Path(error.path) == seg_path(db, 7)
    assert "epoch" in error.reason
    assert "3" in error.reason
    assert "7" in error.reason

    result = recover(db, skip_corrupt=True)
    assert_matches(result, oracle.upto(2))
    assert [Path(s.path) for s in result.skipped] == [seg_path(db, 7)]


def test_copy_of_another_segment_under_a_segments_name_is_an_epoch_mismatch(
    tmp_path: Path,
) -> None:
    db = tmp_path / "db"
    one_segment_per_commit(db, 3)
    shutil.copyfile(seg_path(db, 1), seg_path(db, 2))  # epoch 1's bytes under epoch 2's name

    with pytest.raises(CorruptSegmentError) as info:
        recover(db)
    assert Path(info.value.path) == seg_path(db, 2)
    assert "epoch" in info.value.reason
    assert "match" in info.value.reason


def test_swapped_segment_names_are_detected_at_the_first_one(tmp_path: Path) -> None:
    db = tmp_path / "db"
    one_segment_per_commit(db, 3)
    swap = tmp_path / "swap"
    seg_path(db, 2).rename(swap)
    seg_path(db, 3).rename(seg_path(db, 2))
    swap.rename(seg_path(db, 3))

    with pytest.raises(CorruptSegmentError) as info:
        recover(db)
    assert Path(info.value.path) == seg_path(db, 2)
    assert "epoch" in info.value.reason


# --------------------------------------------------------------------------- truncation


@pytest.mark.parametrize(
    "cut",
    [lambda size: 0, lambda size: 10, lambda size: 63, lambda size: 64,
     lambda size: size // 2, lambda size: size - 1],
    ids=["empty", "10-bytes", "63-bytes", "header-only", "half", "one-short"],
)
def test_truncated_last_segment_raises_by_default_and_is_left_out_by_skip_corrupt(
    tmp_path: Path, cut: Callable[[int], int]
) -> None:
    db = tmp_path / "db"
    oracle = one_segment_per_commit(db, 3)
    last = seg_path(db, 3)
    data = last.read_bytes()
    last.write_bytes(data[: cut(len(data))])

    with pytest.raises(CorruptSegmentError) as info:
        recover(db)
    assert Path(info.value.path) == last
    assert 0 <= info.value.offset <= cut(len(data))

    result = recover(db, skip_corrupt=True)
    assert_matches(result, oracle.upto(2))
    assert [Path(s.path) for s in result.skipped] == [last]
    assert last.exists()


# --------------------------------------------------------------------------- format 2 damage


def v2_segments(db: Path) -> list[tuple[Path, int, int]]:
    """``(log file, offset, epoch)`` of each segment of a log one Wal session wrote: in each
    file they follow each other from the end of the header block (DESIGN §4.1)."""
    located: list[tuple[Path, int, int]] = []
    path, offset = None, 0
    for info in read_log(db).segments:
        if Path(info.path) != path:
            path = Path(info.path)
            offset = decode_file_header(path.read_bytes(), str(path)).alignment
        located.append((path, offset, info.header.epoch))
        offset += segment_span(info.header.body_length, LOG_ALIGNMENT)
    return located


LOG_ALIGNMENT = 4096


def crash_copy(db: Path, target: Path) -> Path:
    """The log's files as they are now (the log still open): what a process crash leaves.
    A log file the pool may be creating meanwhile (``.tmp``) is left out, so the copy does not
    depend on how far the pool's thread got (that leftover has a test of its own)."""
    target.mkdir()
    for entry in db.parent.iterdir():
        if (entry.is_file() and entry.name.startswith(db.name)
                and not entry.name.endswith(".tmp")):
            shutil.copyfile(entry, target / entry.name)
    return target / db.name


def four_durable_commits(db: Path, crashed: Path) -> tuple[Oracle, Path]:
    """Four commits, each durable before the next (so each later segment records the earlier
    ones as acknowledged); a copy of the files taken before the clean close."""
    oracle = Oracle()
    with Wal.open(db, FAST) as wal:
        for index, (pages, db_size) in enumerate(make_commits(4)):
            ticket = wal.commit(pages, db_size_pages=db_size, txn_id=1000 + index)
            oracle.add(ticket, pages, db_size, 1000 + index)
        copy = crash_copy(db, crashed)
    assert [c.epoch for c in oracle.ordered()] == [1, 2, 3, 4]
    return oracle, copy


@pytest.mark.parametrize("where", ["header", "body"])
def test_damage_to_an_acknowledged_v2_segment_is_a_corrupt_segment_error(
    tmp_path: Path, where: str
) -> None:
    db = tmp_path / "db"
    oracle, _ = four_durable_commits(db, tmp_path / "crashed")
    path, offset, epoch = v2_segments(db)[1]
    assert epoch == 2
    flip(path, offset + (8 if where == "header" else SEGMENT_HEADER_SIZE + 5))
    before = snapshot(tmp_path)

    # Epochs 3 and 4 record epoch 2 as acknowledged: this is damage, not a torn tail.
    for attempt in (lambda: recover(db), lambda: read_log(db), lambda: Wal.open(db, FAST)):
        with pytest.raises(CorruptSegmentError) as info:
            attempt()
        assert Path(info.value.path) == path
        assert info.value.offset >= offset
        assert "acknowledged" in info.value.reason
    assert snapshot(tmp_path) == before

    result = read_log(db, skip_corrupt=True)
    assert_matches(result, oracle.upto(1))
    assert result.skipped


def test_damage_to_the_newest_v2_segment_after_a_crash_is_a_torn_tail(tmp_path: Path) -> None:
    db = tmp_path / "db"
    oracle, crashed = four_durable_commits(db, tmp_path / "crashed")
    path, offset, epoch = v2_segments(crashed)[-1]
    assert epoch == 4
    flip(path, offset + SEGMENT_HEADER_SIZE + 5)

    # Nothing after epoch 4 records it as acknowledged: DESIGN §4's documented limit, a torn
    # tail, reported, never an error and never a quiet prefix.
    result = recover(crashed)
    assert_matches(result, oracle.upto(3))
    assert result.torn_tail is not None
    assert (Path(result.torn_tail.path), result.torn_tail.offset) == (path, offset)
    assert not result.clean_shutdown
    with Wal.open(crashed, FAST) as wal:  # the reopened log numbers above the discarded tail
        ticket = wal.commit([(1, b"after the torn tail")])
        assert ticket.commit_seq == 4 and ticket.epoch > 4
    again = recover(crashed)
    assert again.last.commit_seq == 4 and again.torn_tail is None
    assert again.page_images()[1] == b"after the torn tail"


def test_damage_to_the_newest_v2_segment_before_a_clean_shutdown_marker_is_an_error(
    tmp_path: Path,
) -> None:
    db = tmp_path / "db"
    four_durable_commits(db, tmp_path / "crashed")
    path, offset, epoch = v2_segments(db)[-1]
    assert epoch == 4
    flip(path, offset + SEGMENT_HEADER_SIZE + 5)

    # The clean-shutdown marker after it records epoch 4: the damage is proven.
    with pytest.raises(CorruptSegmentError) as info:
        recover(db)
    assert Path(info.value.path) == path


def test_a_log_file_creation_cut_short_by_a_crash_does_not_stop_the_log(tmp_path: Path) -> None:
    db = tmp_path / "db"
    oracle, crashed = four_durable_commits(db, tmp_path / "crashed")
    names = sorted(p.name for p in crashed.parent.iterdir() if p.name.startswith("db-wal-0"))
    next_no = max(int(name[len("db-wal-"):], 16) for name in names) + 1
    # The pool had created the next file under its temporary name and zero-filled part of it.
    Path(f"{log_file_path(crashed, next_no)}.tmp").write_bytes(bytes(8192))

    assert_matches(recover(crashed), oracle)
    with Wal.open(crashed, FAST) as wal:
        for k in range(40):  # enough 4 KiB commits to need several new 64 KiB log files
            wal.commit([(k, bytes([k]) * 4096)])
    result = recover(crashed)
    assert result.last.commit_seq == 44


# --------------------------------------------------------------------------- Wal.open skip_corrupt


def test_open_refuses_a_corrupt_log_by_default_and_renames_nothing(tmp_path: Path) -> None:
    db = tmp_path / "db"
    one_segment_per_commit(db, 3)
    flip(seg_path(db, 2), 100)
    before = snapshot(tmp_path)

    with pytest.raises(CorruptSegmentError) as info:
        Wal.open(db, FAST)

    assert Path(info.value.path) == seg_path(db, 2)
    assert snapshot(tmp_path) == before


def test_open_with_skip_corrupt_quarantines_skipped_segments_and_continues_after_the_prefix(
    tmp_path: Path,
) -> None:
    db = tmp_path / "db"
    oracle = one_segment_per_commit(db, 4)
    flip(seg_path(db, 2), 100)
    left_out = {e: seg_path(db, e).read_bytes() for e in (2, 3, 4)}

    new = Oracle()
    with Wal.open(db, FAST, skip_corrupt=True) as wal:
        assert_matches(wal.recovery, oracle.upto(1))
        assert [Path(s.path) for s in wal.recovery.skipped] == [seg_path(db, e) for e in (2, 3, 4)]
        for epoch, content in left_out.items():
            assert not seg_path(db, epoch).exists()
            assert Path(f"{seg_path(db, epoch)}.corrupt").read_bytes() == content
        for pages, size in make_commits(2, 20):
            new.add(wal.commit(pages, db_size_pages=size), pages, size, 0)
    assert [(c.seq, c.epoch) for c in new.commits] == [(2, 2), (3, 3)]

    result = recover(db)

    assert_matches(result, oracle.upto(1) + new)
    assert result.skipped == ()
    for epoch, content in left_out.items():
        assert Path(f"{seg_path(db, epoch)}.corrupt").read_bytes() == content


def test_a_second_quarantine_keeps_the_segments_an_earlier_one_set_aside(tmp_path: Path) -> None:
    db = tmp_path / "db"
    one_segment_per_commit(db, 3)
    flip(seg_path(db, 2), 100)
    Wal.open(db, FAST, skip_corrupt=True).close()
    set_aside = [p.read_bytes() for p in tmp_path.iterdir() if ".corrupt" in p.name]
    assert len(set_aside) == 2
    continue_v1(db, make_commits(2, 10))  # new epochs 2 and 3
    flip(seg_path(db, 2), 100)

    Wal.open(db, FAST, skip_corrupt=True).close()

    kept = [p.read_bytes() for p in tmp_path.iterdir() if ".corrupt" in p.name]
    for content in set_aside:
        assert content in kept


# --------------------------------------------------------------------------- checkpoints


def test_delete_after_returns_the_records_deletes_segments_and_writes_a_checkpoint(
    tmp_path: Path,
) -> None:
    db = tmp_path / "db"
    oracle = one_segment_per_commit(db, 3)

    result = recover(db, delete_after=True)

    assert_matches(result, oracle)
    assert segment_epochs(db) == []
    assert checkpoint_path(db).read_bytes() == record_at(ChainPosition(3, 3))
    # The result still serves the images although the segments are gone.
    assert result.page_images() == oracle.page_images()

    again = recover(db)
    assert again.records.size == 0
    assert again.base == again.last == ChainPosition(3, 3)
    assert again.commit_count == 0
    assert again.db_size_pages is None


def test_log_continues_after_a_checkpoint_and_recovery_validates_the_continuation(
    tmp_path: Path,
) -> None:
    db = tmp_path / "db"
    one_segment_per_commit(db, 3)
    recover(db, delete_after=True)

    new = continue_v1(db, make_commits(2, 3))

    assert [(c.seq, c.epoch) for c in new.commits] == [(4, 4), (5, 5)]
    assert segment_epochs(db) == [4, 5]
    result = recover(db)
    assert_matches(result, new, base=ChainPosition(3, 3))
    assert result.segments[0].header.prev_epoch == 3
    assert result.segments[0].header.commit_seq_lo == 4


@pytest.mark.parametrize(
    "position", [ChainPosition(3, 2), ChainPosition(3, 4), ChainPosition(2, 3)],
    ids=["seq-behind", "seq-ahead", "epoch-behind"])
def test_first_segment_that_does_not_continue_the_checkpoint_is_a_chain_error(
    tmp_path: Path, position: ChainPosition
) -> None:
    db = tmp_path / "db"
    one_segment_per_commit(db, 3)
    recover(db, delete_after=True)
    new = continue_v1(db, make_commits(2, 3))
    checkpoint_path(db).write_bytes(record_at(position))

    with pytest.raises(CorruptSegmentError) as info:
        recover(db)
    assert Path(info.value.path) == seg_path(db, 4)
    assert "chain" in info.value.reason

    result = recover(db, skip_corrupt=True)
    assert result.records.size == 0
    assert result.last == position
    assert [Path(s.path) for s in result.skipped] == [seg_path(db, 4), seg_path(db, 5)]
    assert new.last_seq == 5


def test_segments_a_checkpoint_covers_are_deleted_not_replayed(tmp_path: Path) -> None:
    db = tmp_path / "db"
    one_segment_per_commit(db, 3)
    covered = {e: seg_path(db, e).read_bytes() for e in (1, 2, 3)}
    recover(db, delete_after=True)
    new = continue_v1(db, make_commits(2, 3))
    # A checkpoint interrupted after writing itself, before deleting what it covers.
    for epoch, content in covered.items():
        seg_path(db, epoch).write_bytes(content)

    result = recover(db)

    assert_matches(result, new, base=ChainPosition(3, 3))
    assert sorted(result.removed_temp_files) == [str(seg_path(db, e)) for e in (1, 2, 3)]
    assert segment_epochs(db) == [4, 5]


def test_covered_leftover_that_is_not_a_segment_is_refused_and_kept_until_moved(
    tmp_path: Path,
) -> None:
    db = tmp_path / "db"
    one_segment_per_commit(db, 2)
    recover(db, delete_after=True)
    seg_path(db, 2).write_bytes(b"garbage")

    with pytest.raises(ForeignFileError) as raised:
        recover(db)
    assert raised.value.path == str(seg_path(db, 2))
    assert seg_path(db, 2).read_bytes() == b"garbage"
    seg_path(db, 2).rename(tmp_path / "garbage")
    result = recover(db)

    assert result.records.size == 0
    assert result.removed_temp_files == ()
    with Wal.open(db, FAST) as wal:
        ticket = wal.commit([(1, b"x")])
    assert (ticket.commit_seq, ticket.epoch) == (3, 3)


def test_delete_after_on_a_checkpointed_log_advances_the_checkpoint(tmp_path: Path) -> None:
    db = tmp_path / "db"
    one_segment_per_commit(db, 2)
    recover(db, delete_after=True)
    new = write_commits(db, make_commits(2, 2))

    result = recover(db, delete_after=True)

    assert_matches(result, new, base=ChainPosition(2, 2))
    assert checkpoint_path(db).read_bytes() == record_at(ChainPosition(4, 4))
    assert segment_epochs(db) == []


CHECKPOINT_DAMAGE: list[tuple[str, Callable[[bytes], bytes]]] = [
    ("magic", lambda b: bytes([b[0] ^ 1]) + b[1:]),
    ("version", lambda b: b[:4] + bytes([b[4] ^ 1]) + b[5:]),
    ("epoch", lambda b: b[:8] + bytes([b[8] ^ 1]) + b[9:]),
    ("seq", lambda b: b[:16] + bytes([b[16] ^ 1]) + b[17:]),
    ("crc", lambda b: b[:-1] + bytes([b[-1] ^ 1])),
    ("truncated", lambda b: b[:-1]),
    ("extended", lambda b: b + b"\x00"),
    ("empty", lambda b: b""),
    ("garbage", lambda b: bytes(range(len(b)))),
]


@pytest.mark.parametrize("version", [1, 2], ids=["v1", "v2-both-copies"])
@pytest.mark.parametrize("skip_corrupt", [False, True], ids=["default", "skip_corrupt"])
@pytest.mark.parametrize(
    "damage", [d for _, d in CHECKPOINT_DAMAGE], ids=[n for n, _ in CHECKPOINT_DAMAGE])
def test_unreadable_checkpoint_raises_naming_the_rebuild_command_and_deletes_nothing(
    tmp_path: Path, damage: Callable[[bytes], bytes], skip_corrupt: bool, version: int
) -> None:
    db = tmp_path / "db"
    one_segment_per_commit(db, 2)
    recover(db, delete_after=True)
    continue_v1(db, make_commits(2, 2))
    checkpoint = checkpoint_path(db)
    if version == 1:
        checkpoint.write_bytes(damage(encode_checkpoint_v1(ChainPosition(2, 2))))
    else:
        intact = checkpoint.read_bytes()
        checkpoint.write_bytes(damage(intact[:48]) + damage(intact[48:]))
    before = snapshot(tmp_path)

    with pytest.raises(CheckpointMissingError) as info:
        recover(db, skip_corrupt=skip_corrupt)
    assert Path(info.value.path) == checkpoint
    assert f"pagewal recover {db} --rebuild-checkpoint" in str(info.value)
    assert info.value.continues_from == ChainPosition(2, 2)
    with pytest.raises(CheckpointMissingError):
        Wal.open(db, FAST, skip_corrupt=skip_corrupt)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("skip_corrupt", [False, True], ids=["default", "skip_corrupt"])
def test_a_deleted_checkpoint_is_refused_never_quarantining_segments_or_restarting_numbering(
    tmp_path: Path, skip_corrupt: bool
) -> None:
    db = tmp_path / "db"
    one_segment_per_commit(db, 2)
    recover(db, delete_after=True)
    write_commits(db, make_commits(2, 2))
    checkpoint_path(db).unlink()
    before = snapshot(tmp_path)

    with pytest.raises(CheckpointMissingError) as info:
        recover(db, skip_corrupt=skip_corrupt)
    assert info.value.continues_from == ChainPosition(2, 2)
    message = str(info.value)
    assert "missing" in message and "epoch 2, commit_seq 2" in message
    assert f"pagewal recover {db} --rebuild-checkpoint" in message
    with pytest.raises(CheckpointMissingError):
        Wal.open(db, FAST, skip_corrupt=skip_corrupt)
    with pytest.raises(CheckpointMissingError):
        read_log(db, skip_corrupt=True)
    assert snapshot(tmp_path) == before  # nothing renamed to *.corrupt, nothing deleted


def test_a_log_without_checkpoint_whose_first_segment_is_corrupt_still_skips_as_before(
    tmp_path: Path,
) -> None:
    # The first segment continues from (0, 0): nothing was ever checkpointed, so skipping it
    # restarts nothing that existed.
    db = tmp_path / "db"
    one_segment_per_commit(db, 2)
    flip(seg_path(db, 1), 100)
    result = recover(db, skip_corrupt=True)
    assert result.last == ChainPosition(0, 0)
    assert [Path(s.path) for s in result.skipped] == [seg_path(db, 1), seg_path(db, 2)]


@pytest.mark.parametrize("copy", [0, 1], ids=["first-copy", "second-copy"])
def test_one_damaged_checkpoint_copy_is_reported_and_rewritten_when_the_log_is_recovered(
    tmp_path: Path, copy: int
) -> None:
    db = tmp_path / "db"
    one_segment_per_commit(db, 2)
    recover(db, delete_after=True)
    more = write_commits(db, make_commits(2, 2))
    intact = checkpoint_path(db).read_bytes()
    flip(checkpoint_path(db), copy * 48 + 20)
    damaged = checkpoint_path(db).read_bytes()

    read_only = read_log(db)
    assert_matches(read_only, more, base=ChainPosition(2, 2))
    assert len(read_only.warnings) == 1
    assert f"copy {copy + 1} " in read_only.warnings[0]
    assert "the next checkpoint or open rewrites" in read_only.warnings[0]
    assert checkpoint_path(db).read_bytes() == damaged  # read_log changes nothing

    result = recover(db)
    assert_matches(result, more, base=ChainPosition(2, 2))
    assert "rewritten" in result.warnings[0]
    assert checkpoint_path(db).read_bytes() == intact
    assert recover(db).warnings == ()


def test_a_version_1_checkpoint_is_read_and_kept_without_a_page_size(tmp_path: Path) -> None:
    db = tmp_path / "db"
    one_segment_per_commit(db, 2)
    recover(db, delete_after=True)
    more = write_commits(db, make_commits(2, 2))
    checkpoint_path(db).write_bytes(encode_checkpoint_v1(ChainPosition(2, 2)))

    result = recover(db)
    assert_matches(result, more, base=ChainPosition(2, 2))
    assert (result.page_size, result.warnings) == (0, ())


def test_delete_after_keeps_the_page_size_the_checkpoint_records(tmp_path: Path) -> None:
    db = tmp_path / "db"
    one_segment_per_commit(db, 2)
    checkpoint_path(db).write_bytes(record_at(ChainPosition(), page_size=4096))
    recover(db, delete_after=True)
    assert checkpoint_path(db).read_bytes() == record_at(ChainPosition(2, 2), page_size=4096)


# --------------------------------------------------------------------------- rebuilding


def checkpointed_log_with_later_segments(db: Path) -> Oracle:
    """Commits 1..2 checkpointed (as if applied to a data file), 3..5 in segments 3..5."""
    one_segment_per_commit(db, 2)
    recover(db, delete_after=True)
    return continue_v1(db, make_commits(3, 2))


@pytest.mark.parametrize("loss", ["deleted", "both-copies-damaged"])
def test_rebuild_records_where_the_first_segment_continues_from_and_the_log_reopens(
    tmp_path: Path, loss: str
) -> None:
    db = tmp_path / "db"
    more = checkpointed_log_with_later_segments(db)
    if loss == "deleted":
        checkpoint_path(db).unlink()
    else:
        flip(checkpoint_path(db), 30)
        flip(checkpoint_path(db), 48 + 30)

    rebuilt = rebuild_checkpoint(db)

    assert rebuilt.written
    assert rebuilt.record == CheckpointRecord(position=ChainPosition(2, 2))
    assert str(seg_path(db, 3)) in rebuilt.reason and "epoch 2, commit_seq 2" in rebuilt.reason
    assert checkpoint_path(db).read_bytes() == record_at(ChainPosition(2, 2))
    assert_matches(recover(db), more, base=ChainPosition(2, 2))
    with Wal.open(db, FAST) as wal:
        assert wal.commit([(1, b"next")]).commit_seq == 6


def test_rebuild_records_the_page_size_it_is_given(tmp_path: Path) -> None:
    db = tmp_path / "db"
    checkpointed_log_with_later_segments(db)
    checkpoint_path(db).unlink()
    rebuilt = rebuild_checkpoint(db, page_size=4096)
    assert rebuilt.record == CheckpointRecord(position=ChainPosition(2, 2), page_size=4096)
    assert recover(db).page_size == 4096


def test_rebuild_refuses_segments_that_do_not_chain_among_themselves(tmp_path: Path) -> None:
    db = tmp_path / "db"
    checkpointed_log_with_later_segments(db)
    checkpoint_path(db).unlink()
    seg_path(db, 4).unlink()
    before = snapshot(tmp_path)

    with pytest.raises(CorruptSegmentError) as info:
        rebuild_checkpoint(db)
    assert Path(info.value.path) == seg_path(db, 5)
    assert "do not chain among themselves" in info.value.reason
    assert snapshot(tmp_path) == before


def test_rebuild_with_no_segment_to_vouch_needs_an_explicit_position(tmp_path: Path) -> None:
    db = tmp_path / "db"
    one_segment_per_commit(db, 2)
    recover(db, delete_after=True)
    checkpoint_path(db).unlink()

    with pytest.raises(CheckpointMissingError, match="nothing vouches"):
        rebuild_checkpoint(db)
    assert not checkpoint_path(db).exists()

    rebuilt = rebuild_checkpoint(db, position=ChainPosition(2, 2), page_size=4096)
    assert "recorded as given" in rebuilt.reason
    assert recover(db).base == ChainPosition(2, 2)


def test_rebuild_refuses_a_position_the_segments_contradict(tmp_path: Path) -> None:
    db = tmp_path / "db"
    checkpointed_log_with_later_segments(db)
    checkpoint_path(db).unlink()
    with pytest.raises(ValueError, match="continue from epoch 2, commit_seq 2"):
        rebuild_checkpoint(db, position=ChainPosition(1, 1))
    assert not checkpoint_path(db).exists()


def test_rebuild_leaves_an_intact_record_alone_and_repairs_a_damaged_copy(
    tmp_path: Path,
) -> None:
    db = tmp_path / "db"
    checkpointed_log_with_later_segments(db)
    intact = checkpoint_path(db).read_bytes()

    assert not rebuild_checkpoint(db).written
    flip(checkpoint_path(db), 60)
    repaired = rebuild_checkpoint(db)
    assert repaired.written and "copy 2" in repaired.reason
    assert checkpoint_path(db).read_bytes() == intact


def test_rebuild_refuses_while_the_log_is_open(tmp_path: Path) -> None:
    db = tmp_path / "db"
    with Wal.open(db, FAST), pytest.raises(LogLockedError):
        rebuild_checkpoint(db)


# --------------------------------------------------------------------------- unrelated files


def test_unrelated_files_are_untouched_and_other_databases_logs_are_separate(
    tmp_path: Path,
) -> None:
    db = tmp_path / "main.db"
    other = tmp_path / "other.db"
    main_oracle = write_commits(db, make_commits(3))
    other_oracle = write_commits(other, make_commits(2, 50))
    unrelated = {
        "notes.txt": b"hello",
        "main.db": b"the database file itself",
        "main.db2-wal-seg-0000000000000001": b"another db's name prefix",
        "xmain.db-wal-seg-0000000000000002": b"x",
        "main.db-wal-seg-000000000000000A": b"upper-case hex is not a segment name",
        "main.db-wal-seg-1": b"short epoch",
        "main.db-wal-seg-0000000000000001.bak": b"backup",
        "main.db-wal-seg-0000000000000001.tmp.old": b"not a temp of ours",
        "main.db-wal-checkpoint.bak": b"backup",
        "other.db-wal-seg-0000000000000009.tmp": b"another db's temp file",
    }
    for name, content in unrelated.items():
        (tmp_path / name).write_bytes(content)
    (tmp_path / "main.db-wal-seg-dir").mkdir()
    other_files = {n: c for n, c in snapshot(tmp_path).items() if n.startswith("other.db")}

    result = recover(db)
    assert_matches(result, main_oracle)
    assert result.removed_temp_files == ()
    assert result.skipped == ()

    recover(db, delete_after=True)
    more = write_commits(db, make_commits(1, 3))
    assert_matches(recover(db), more, base=ChainPosition(3, 3))

    after = snapshot(tmp_path)
    for name, content in {**unrelated, **other_files}.items():
        assert after[name] == content, name
    assert (tmp_path / "main.db-wal-seg-dir").is_dir()
    # The other database's log is intact, and its own stale temp file is its own to remove.
    other_result = recover(other)
    assert_matches(other_result, other_oracle)
    assert other_result.removed_temp_files == (
        str(tmp_path / "other.db-wal-seg-0000000000000009.tmp"),)


# --------------------------------------------------------------------------- read-only, progress


def test_progress_is_reported_once_per_segment_of_the_chain(tmp_path: Path) -> None:
    db = tmp_path / "db"
    one_segment_per_commit(db, 4)
    calls: list[tuple[int, int]] = []
    recover(db, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_progress_counts_segments_skipped_after_a_corrupt_one(tmp_path: Path) -> None:
    db = tmp_path / "db"
    one_segment_per_commit(db, 4)
    flip(seg_path(db, 2), 80)
    calls: list[tuple[int, int]] = []
    result = read_log(db, skip_corrupt=True, progress=lambda d, t: calls.append((d, t)))
    assert len(result.skipped) == 3
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_read_log_validates_like_recover_and_changes_nothing_on_disk(tmp_path: Path) -> None:
    db = tmp_path / "db"
    oracle = one_segment_per_commit(db, 3)
    (tmp_path / "db-wal-lock").unlink()
    Path(f"{seg_path(db, 4)}.tmp").write_bytes(b"a segment being written")
    before = snapshot(tmp_path)

    assert_matches(read_log(db), oracle)
    flip(seg_path(db, 2), 100)
    damaged = snapshot(tmp_path)
    with pytest.raises(CorruptSegmentError) as raised:
        read_log(db)
    assert Path(raised.value.path) == seg_path(db, 2)

    assert snapshot(tmp_path) == damaged  # no lock file created, no temp file removed
    assert damaged.keys() == before.keys()


def test_read_log_of_a_missing_directory_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_log(tmp_path / "nowhere" / "db")
