"""Log files of format 2: made ready off the commit path, written in place, recycled."""

from __future__ import annotations

import errno
import os
import secrets
from pathlib import Path

import pytest

from pagewal import OsFileSystem
from pagewal._codec import ChainPosition, SegmentHeader, encode_commits, make_commit
from pagewal._layout import (
    FILE_HEADER_SIZE,
    FileState,
    decode_file_header,
    decode_segment_v2,
    encode_segment_v2,
    log_file_name,
    segment_span,
)
from pagewal._logfiles import LogFileSpec, LogFileWriter, OpenLogFile, ReadyFilePool
from pagewal.harness import Fault, SimulatedFileSystem

CAPACITY = 64 << 10
ALIGNMENT = 4096


def spec_for(directory: str, capacity: int = CAPACITY) -> LogFileSpec:
    return LogFileSpec(directory=directory, db_name="db", log_id=secrets.token_bytes(16),
                       capacity=capacity, alignment=ALIGNMENT, inflight_limit=4)


def segment(spec: LogFileSpec, file: OpenLogFile, epoch: int, seq: int, pages: int = 1) -> (
        tuple[SegmentHeader, list[bytes | bytearray | memoryview]]):
    body = encode_commits([(seq, 0, make_commit({p: bytes([epoch % 251]) * 100
                                                  for p in range(pages)}))])
    header = SegmentHeader(
        epoch=epoch, record_count=pages, lane_count=1, commit_seq_lo=seq, commit_seq_hi=seq,
        prev_epoch=epoch - 1, body_length=len(body), version=2, log_id=spec.log_id,
        file_no=file.file_no, salt=file.header.salt, acked_epoch=epoch - 1)
    return header, encode_segment_v2(header, [body], spec.alignment)


@pytest.fixture
def pool_and_spec(tmp_path: Path):
    fs = OsFileSystem()
    spec = spec_for(str(tmp_path))
    pool = ReadyFilePool(fs, spec, next_file_no=1)
    yield fs, spec, pool
    pool.close()
    fs.release()


def test_a_ready_file_is_zero_filled_at_full_size_with_a_durable_ready_header(
    pool_and_spec: tuple[OsFileSystem, LogFileSpec, ReadyFilePool], tmp_path: Path,
) -> None:
    fs, spec, pool = pool_and_spec
    ready = pool.take()
    assert ready.path == str(tmp_path / log_file_name("db", 1))
    data = (tmp_path / log_file_name("db", 1)).read_bytes()
    assert len(data) == CAPACITY
    header = decode_file_header(data, ready.path)
    assert (header.state, header.file_no, header.log_id) == (FileState.READY, 1, spec.log_id)
    assert not any(data[FILE_HEADER_SIZE:])
    assert log_file_name("db", 1) + ".tmp" not in os.listdir(tmp_path)
    fs.close(ready.fd)


def test_files_are_handed_out_in_number_order_and_the_pool_refills(
    pool_and_spec: tuple[OsFileSystem, LogFileSpec, ReadyFilePool],
) -> None:
    fs, _, pool = pool_and_spec
    taken = [pool.take() for _ in range(3)]
    assert [f.file_no for f in taken] == [1, 2, 3]
    assert len({f.header.salt for f in taken}) == 3
    for f in taken:
        fs.close(f.fd)


def test_segments_are_placed_back_to_back_at_aligned_offsets_and_read_back(
    pool_and_spec: tuple[OsFileSystem, LogFileSpec, ReadyFilePool],
) -> None:
    fs, spec, pool = pool_and_spec
    writer = LogFileWriter(fs, spec, pool, durable_writes=True, active=None,
                           position=ChainPosition(0, 0), min_epoch=1)
    placements = []
    for epoch in (1, 2, 3):
        probe_header, _ = segment(spec, pool_file_stub(spec), epoch, epoch, pages=epoch * 20)
        placement = writer.place(epoch, epoch, segment_span(probe_header.body_length,
                                                            ALIGNMENT))
        header, buffers = segment(spec, placement.file, epoch, epoch, pages=epoch * 20)
        writer.write(placement, buffers)
        placements.append((placement, header))
    offsets = [p.offset for p, _ in placements]
    assert offsets[0] == ALIGNMENT
    assert all(o % ALIGNMENT == 0 for o in offsets)
    assert offsets[1] == offsets[0] + placements[0][0].span
    data = memoryview(Path(placements[0][0].file.path).read_bytes())
    file_header = decode_file_header(data, "f")
    assert file_header.state is FileState.ACTIVE
    assert file_header.continues_from == ChainPosition(0, 0)
    for placement, header in placements:
        decoded = decode_segment_v2(data, "f", placement.offset, file_header)
        assert decoded.header.epoch == header.epoch
    writer.close()


def pool_file_stub(spec: LogFileSpec) -> OpenLogFile:
    """A stand-in file to size a segment before it is placed (its identity is irrelevant)."""
    return OpenLogFile(path="", fd=-1, header=spec.ready_header(1, CAPACITY), next_offset=0)


def test_an_epoch_that_does_not_fit_moves_to_the_next_file_which_continues_the_chain(
    pool_and_spec: tuple[OsFileSystem, LogFileSpec, ReadyFilePool],
) -> None:
    fs, spec, pool = pool_and_spec
    writer = LogFileWriter(fs, spec, pool, durable_writes=False, active=None,
                           position=ChainPosition(0, 0), min_epoch=1)
    span = 24 << 10
    first = writer.place(1, 10, span)
    second = writer.place(2, 20, span)
    third = writer.place(3, 30, span)  # 4 KiB header + 2 x 24 KiB leave 12 KiB: too little
    assert first.file is second.file is not third.file
    assert third.offset == ALIGNMENT
    header = decode_file_header(Path(third.file.path).read_bytes()[:FILE_HEADER_SIZE], "f")
    assert (header.prev_file_no, header.continues_from) == (first.file.file_no,
                                                            ChainPosition(2, 20))
    writer.close()


def test_an_epoch_larger_than_a_file_gets_a_file_of_its_own_and_is_counted(
    pool_and_spec: tuple[OsFileSystem, LogFileSpec, ReadyFilePool],
) -> None:
    fs, spec, pool = pool_and_spec
    writer = LogFileWriter(fs, spec, pool, durable_writes=True, active=None,
                           position=ChainPosition(0, 0), min_epoch=1)
    small = writer.place(1, 1, ALIGNMENT)
    big = writer.place(2, 2, 2 * CAPACITY)
    after = writer.place(3, 3, ALIGNMENT)
    assert writer.oversized_files == 1
    assert big.file.header.capacity == ALIGNMENT + 2 * CAPACITY
    assert small.file.file_no < big.file.file_no < after.file.file_no
    writer.close()


def test_a_retired_file_is_recycled_under_a_new_number_and_salt(
    pool_and_spec: tuple[OsFileSystem, LogFileSpec, ReadyFilePool], tmp_path: Path,
) -> None:
    fs, spec, pool = pool_and_spec
    writer = LogFileWriter(fs, spec, pool, durable_writes=True, active=None,
                           position=ChainPosition(0, 0), min_epoch=1)
    first = writer.place(1, 1, CAPACITY - ALIGNMENT).file
    writer.place(2, 2, ALIGNMENT)  # moves on to file 2
    old_salt = first.header.salt
    retired = writer.retire_before(2)
    assert retired == [first]
    pool.recycle([(f.path, f.fd) for f in retired])
    recycled = [pool.take() for _ in range(2)]
    reused = [f for f in recycled if f.fd == first.fd]
    assert reused, "the retired file was not reused"
    header = decode_file_header(Path(reused[0].path).read_bytes()[:FILE_HEADER_SIZE], "f")
    assert header.file_no > 2 and header.salt != old_salt and header.state is FileState.READY
    assert not (tmp_path / log_file_name("db", 1)).exists()
    for f in recycled:
        fs.close(f.fd)
    writer.close()


@pytest.mark.parametrize("op", ["open_for_write", "pwritev", "fsync", "rename", "fsync_dir"])
def test_a_failure_making_a_file_ready_reaches_the_writer_and_nothing_half_made_is_handed_out(
    op: str,
) -> None:
    fs = SimulatedFileSystem(faults=[Fault(op, 1, errno.EIO)])
    spec = spec_for("/d")
    pool = ReadyFilePool(fs, spec, next_file_no=1)
    try:
        with pytest.raises(OSError) as caught:
            pool.take()
        assert caught.value.errno == errno.EIO
        # No temporary file is left; a file renamed before the directory fsync failed is a
        # READY file of this log (recovery keeps it as a spare), never handed out.
        assert log_file_name("db", 1) + ".tmp" not in fs.listdir("/d")
        with pytest.raises(OSError):
            pool.take()  # the pool stays failed: the log breaks, it does not retry
    finally:
        pool.close()


def test_take_waits_when_no_file_is_ready_and_counts_the_wait() -> None:
    fs = SimulatedFileSystem()
    pool = ReadyFilePool(fs, spec_for("/d"), next_file_no=1, ahead=0)
    try:
        assert pool.waits == 0
        pool_file = pool.take()
        assert pool.waits == 1 and pool_file.file_no == 1
    finally:
        pool.close()
