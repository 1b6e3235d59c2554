"""Chain validation, canonical order and page replay (DESIGN §3, §4 "The chain").

Oracles here are plain Python: sorted tuples for canonical order and a dict replayed commit by
commit for the page contents.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pagewal
from pagewal import CorruptSegmentError
from pagewal._chain import canonical_records, check_continues, first_difference
from pagewal._codec import (
    ChainPosition,
    Commit,
    DecodedSegment,
    SegmentHeader,
    decode_segment,
    encode_commits,
    make_commit,
)
from pagewal._layout import segment_name

PagesSpec = list[tuple[int, bytes]]
# A commit spec: (pages, db_size_pages or None, txn_id).
CommitSpec = tuple[PagesSpec, "int | None", int]


def lane_by_lane_layout(lanes: Sequence[int], lane_order: Sequence[int]) -> list[int]:
    """Commit indexes grouped by lane (lanes visited in ``lane_order``), seq order in a lane."""
    return [i for lane in lane_order for i in range(len(lanes)) if lanes[i] == lane]


def build_segment(
    specs: Sequence[CommitSpec],
    *,
    epoch: int,
    prev_epoch: int,
    first_seq: int,
    lanes: Sequence[int] | None = None,
    layout: Sequence[int] | None = None,
    lane_count: int = 8,
) -> bytes:
    """Header + body for ``specs`` with dense seqs from ``first_seq``, laid out per ``layout``."""
    commits: list[Commit] = [make_commit(pages, txn_id=txn, db_size_pages=size)
                             for pages, size, txn in specs]
    lanes = list(lanes) if lanes is not None else [0] * len(specs)
    order = list(layout) if layout is not None else list(range(len(specs)))
    assert sorted(order) == list(range(len(specs)))
    body = encode_commits([(first_seq + i, lanes[i], commits[i]) for i in order])
    header = SegmentHeader(
        epoch=epoch, record_count=sum(len(pages) for pages, _, _ in specs),
        lane_count=lane_count, commit_seq_lo=first_seq,
        commit_seq_hi=first_seq + len(specs) - 1, prev_epoch=prev_epoch, body_length=len(body))
    return header.encode() + bytes(body)


def header(*, epoch: int, prev_epoch: int, lo: int, hi: int) -> SegmentHeader:
    return SegmentHeader(epoch=epoch, record_count=hi - lo + 1, lane_count=1, commit_seq_lo=lo,
                         commit_seq_hi=hi, prev_epoch=prev_epoch,
                         body_length=41 * (hi - lo + 1))


# ----------------------------------------------------------------------------- strategies

commit_specs = st.tuples(
    st.lists(st.tuples(st.integers(0, 6), st.binary(min_size=1, max_size=12)),
             min_size=1, max_size=4),
    st.none() | st.integers(1, 50),
    st.integers(0, 2**64 - 1),
)


@st.composite
def chains(draw: st.DrawFn, max_segments: int = 4) -> list[dict[str, Any]]:
    """Segments of a chain: epochs increasing (with gaps), seqs dense, lane-by-lane bodies."""
    segments = []
    epoch = 0
    for _ in range(draw(st.integers(1, max_segments))):
        specs = draw(st.lists(commit_specs, min_size=1, max_size=6))
        lanes = draw(st.lists(st.integers(0, 3), min_size=len(specs), max_size=len(specs)))
        lane_order = draw(st.permutations(range(4)))
        prev_epoch = epoch
        epoch += draw(st.integers(1, 3))
        segments.append({"specs": specs, "lanes": lanes,
                         "layout": lane_by_lane_layout(lanes, lane_order),
                         "epoch": epoch, "prev_epoch": prev_epoch})
    return segments


def chain_files(chain: list[dict[str, Any]]) -> list[tuple[int, bytes]]:
    """(epoch, segment bytes) for each segment of ``chain``, seqs continuing from 1."""
    files = []
    next_seq = 1
    for segment in chain:
        files.append((segment["epoch"], build_segment(
            segment["specs"], epoch=segment["epoch"], prev_epoch=segment["prev_epoch"],
            first_seq=next_seq, lanes=segment["lanes"], layout=segment["layout"])))
        next_seq += len(segment["specs"])
    return files


def all_commits(chain: list[dict[str, Any]]) -> list[CommitSpec]:
    """Every commit of the chain in seq order (seq = index + 1)."""
    return [spec for segment in chain for spec in segment["specs"]]


# ----------------------------------------------------------------------------- check_continues


def test_check_continues_accepts_the_first_segment_of_an_empty_log() -> None:
    after = check_continues(ChainPosition(), header(epoch=1, prev_epoch=0, lo=1, hi=3), "seg")
    assert after == ChainPosition(1, 3)


def test_check_continues_accepts_a_segment_continuing_epoch_and_seq() -> None:
    position = ChainPosition(epoch=4, commit_seq=10)
    # Epoch numbers may skip (empty epochs write no file); prev_epoch is what chains.
    after = check_continues(position, header(epoch=9, prev_epoch=4, lo=11, hi=12), "seg")
    assert after == ChainPosition(epoch=9, commit_seq=12)
    again = check_continues(after, header(epoch=10, prev_epoch=9, lo=13, hi=13), "seg2")
    assert again == ChainPosition(epoch=10, commit_seq=13)


@pytest.mark.parametrize("prev_epoch", [0, 3, 5, 8])
def test_check_continues_rejects_prev_epoch_mismatch_as_a_missing_segment(
    prev_epoch: int,
) -> None:
    with pytest.raises(CorruptSegmentError) as info:
        check_continues(ChainPosition(4, 10),
                        header(epoch=9, prev_epoch=prev_epoch, lo=11, hi=12), "/x/seg-9")
    assert info.value.path == "/x/seg-9"
    assert "/x/seg-9" in str(info.value)
    assert 0 <= info.value.offset < 64


@pytest.mark.parametrize("lo", [12, 20, 10, 9, 1], ids=["gap1", "gap9", "overlap1", "overlap2",
                                                        "restart"])
def test_check_continues_rejects_commit_seq_gap_or_overlap(lo: int) -> None:
    with pytest.raises(CorruptSegmentError) as info:
        check_continues(ChainPosition(4, 10), header(epoch=5, prev_epoch=4, lo=lo, hi=lo + 5),
                        "/x/seg-5")
    assert info.value.path == "/x/seg-5"
    assert 0 <= info.value.offset < 64


def test_check_continues_from_a_checkpoint_requires_its_epoch_and_seq() -> None:
    checkpoint = ChainPosition(epoch=7, commit_seq=100)
    with pytest.raises(CorruptSegmentError):
        check_continues(checkpoint, header(epoch=8, prev_epoch=0, lo=1, hi=1), "seg")
    with pytest.raises(CorruptSegmentError):
        check_continues(checkpoint, header(epoch=8, prev_epoch=7, lo=1, hi=1), "seg")
    assert check_continues(checkpoint, header(epoch=8, prev_epoch=7, lo=101, hi=101),
                           "seg") == ChainPosition(8, 101)


# ----------------------------------------------------------------------------- canonical order


def canonical_tuples(rows: Any, segments: Sequence[DecodedSegment]) -> list[tuple[Any, ...]]:
    return [
        (int(row["commit_seq"]), int(row["txn_id"]), int(row["page_no"]),
         int(row["db_size_pages"]), int(row["lane_id"]), int(row["flags"]),
         bytes(segments[int(row["segment"])].data[
             int(row["image_offset"]) : int(row["image_offset"]) + int(row["image_length"])]))
        for row in rows
    ]


def test_canonical_records_orders_a_lane_by_lane_body_by_seq_then_position() -> None:
    # Lane 0 holds commits 1, 3; lane 1 holds commits 2, 4: the body is 1, 3, 2, 4.
    specs: list[CommitSpec] = [
        ([(10, b"1a"), (11, b"1b")], None, 0),
        ([(20, b"2a")], None, 0),
        ([(30, b"3a"), (31, b"3b"), (32, b"3c")], None, 0),
        ([(40, b"4a")], None, 0),
    ]
    lanes = [0, 1, 0, 1]
    data = build_segment(specs, epoch=1, prev_epoch=0, first_seq=1, lanes=lanes,
                         layout=lane_by_lane_layout(lanes, [0, 1]))
    segment = decode_segment(data, "seg")
    assert [int(s) for s in segment.records["commit_seq"]] == [1, 1, 3, 3, 3, 2, 4]
    rows = canonical_records([segment])
    assert [int(r["commit_seq"]) for r in rows] == [1, 1, 2, 3, 3, 3, 4]
    assert [int(r["page_no"]) for r in rows] == [10, 11, 20, 30, 31, 32, 40]
    assert [int(r["lane_id"]) for r in rows] == [0, 0, 1, 0, 0, 0, 1]
    assert [t[-1] for t in canonical_tuples(rows, [segment])] == [
        b"1a", b"1b", b"2a", b"3a", b"3b", b"3c", b"4a"]


@settings(max_examples=150, deadline=None)
@given(chain=chains())
def test_canonical_records_matches_sorted_tuples_oracle(chain: list[dict[str, Any]]) -> None:
    segments = [decode_segment(data, f"seg-{epoch}", expected_epoch=epoch)
                for epoch, data in chain_files(chain)]
    oracle = []
    first_seq = 1
    for segment in chain:
        # Records as they lie in the body (lane by lane), keyed by (seq, position).
        for index in segment["layout"]:
            pages, size, txn = segment["specs"][index]
            for position, (page_no, image) in enumerate(pages):
                oracle.append(((first_seq + index, position),
                               (first_seq + index, txn, page_no, size or 0,
                                segment["lanes"][index], int(position == len(pages) - 1),
                                image)))
        first_seq += len(segment["specs"])
    expected = [record for _, record in sorted(oracle, key=lambda item: item[0])]

    rows = canonical_records(segments)

    assert canonical_tuples(rows, segments) == expected
    assert [int(r["segment"]) for r in rows] == [
        number for number, segment in enumerate(chain)
        for pages, _, _ in segment["specs"] for _ in pages]


def test_canonical_records_of_no_segments_is_empty() -> None:
    assert canonical_records([]).size == 0


# ----------------------------------------------------------------------------- replay


def replay_oracle(commits: Sequence[CommitSpec]) -> tuple[dict[int, bytes], int | None]:
    pages: dict[int, bytes] = {}
    db_size = None
    for commit_pages, size, _ in commits:  # seq order
        for page_no, image in commit_pages:  # commit order: later position wins
            pages[page_no] = image
        if size is not None:
            db_size = size
    return pages, db_size


def write_chain(directory: Path, chain: list[dict[str, Any]]) -> None:
    for epoch, data in chain_files(chain):
        (directory / segment_name("db", epoch)).write_bytes(data)


@settings(max_examples=60, deadline=None)
@given(chain=chains())
def test_recovered_pages_equal_replaying_commits_in_seq_order(
    chain: list[dict[str, Any]],
) -> None:
    commits = all_commits(chain)
    expected_pages, expected_size = replay_oracle(commits)
    with tempfile.TemporaryDirectory() as directory:
        write_chain(Path(directory), chain)
        result = pagewal.recover(Path(directory) / "db")

        assert result.page_images() == expected_pages
        assert result.db_size_pages == expected_size
        assert result.last_commit_seq == len(commits)
        assert result.last_epoch == chain[-1]["epoch"]
        assert result.commit_count == len(commits)
        # apply_to updates an existing mapping: untouched pages stay, touched ones are replaced.
        existing = {1000: b"untouched", 0: b"stale", 3: b"stale"}
        applied = result.apply_to(existing)
        assert applied is existing
        assert existing == {1000: b"untouched", 0: b"stale", 3: b"stale"} | expected_pages
        # iter_records walks the same canonical order the oracle replays.
        replayed = [(r.commit_seq, r.page_no, r.image, r.db_size_pages, r.last_in_commit,
                     r.txn_id) for r in result.iter_records()]
        assert replayed == [
            (seq, page_no, image, size, position == len(pages) - 1, txn)
            for seq, (pages, size, txn) in enumerate(commits, start=1)
            for position, (page_no, image) in enumerate(pages)]


def test_later_seq_wins_even_when_laid_out_first_in_the_body(tmp_path: Path) -> None:
    specs: list[CommitSpec] = [
        ([(1, b"seq1"), (2, b"seq1")], 9, 0),
        ([(1, b"seq2"), (1, b"seq2-again")], None, 0),  # same page twice: later position wins
        ([(2, b"seq3")], 4, 0),
    ]
    # Lane 1 (commit 2 and 3) is laid out before lane 0 (commit 1).
    data = build_segment(specs, epoch=1, prev_epoch=0, first_seq=1, lanes=[0, 1, 1],
                         layout=[1, 2, 0])
    (tmp_path / segment_name("db", 1)).write_bytes(data)
    result = pagewal.recover(tmp_path / "db")
    assert result.page_images() == {1: b"seq2-again", 2: b"seq3"}
    assert result.db_size_pages == 4


def test_db_size_pages_is_the_last_commit_that_set_it(tmp_path: Path) -> None:
    specs: list[CommitSpec] = [([(1, b"a")], 7, 0), ([(2, b"b")], 3, 0), ([(3, b"c")], None, 0)]
    (tmp_path / segment_name("db", 1)).write_bytes(
        build_segment(specs, epoch=1, prev_epoch=0, first_seq=1))
    assert pagewal.recover(tmp_path / "db").db_size_pages == 3


def test_empty_log_recovers_nothing(tmp_path: Path) -> None:
    result = pagewal.recover(tmp_path / "db")
    assert result.page_images() == {}
    assert result.db_size_pages is None
    assert result.last_commit_seq == 0


def test_recovery_rejects_a_missing_middle_segment_naming_the_next_file(tmp_path: Path) -> None:
    chain = [
        {"specs": [([(1, b"a")], None, 0)], "lanes": [0], "layout": [0], "epoch": 1,
         "prev_epoch": 0},
        {"specs": [([(1, b"b")], None, 0)], "lanes": [0], "layout": [0], "epoch": 2,
         "prev_epoch": 1},
        {"specs": [([(1, b"c")], None, 0)], "lanes": [0], "layout": [0], "epoch": 3,
         "prev_epoch": 2},
    ]
    write_chain(tmp_path, chain)
    (tmp_path / segment_name("db", 2)).unlink()
    with pytest.raises(CorruptSegmentError) as info:
        pagewal.recover(tmp_path / "db")
    assert info.value.path == str(tmp_path / segment_name("db", 3))


# ----------------------------------------------------------------------------- first_difference

BASE_SPECS: list[CommitSpec] = [
    ([(1, b"one"), (2, b"two")], 5, 11),
    ([(3, b"three")], None, 0),
    ([(4, b"four"), (1, b"uno"), (9, b"nine")], 12, 7),
]


def decoded(specs: Sequence[CommitSpec], lanes: Sequence[int], layout: Sequence[int]) -> Any:
    return decode_segment(build_segment(specs, epoch=3, prev_epoch=1, first_seq=20,
                                        lanes=lanes, layout=layout), "seg")


def test_first_difference_ignores_lane_layout_and_lane_ids() -> None:
    serialized = decoded(BASE_SPECS, [0, 0, 0], [0, 1, 2])
    parallel = decoded(BASE_SPECS, [2, 0, 2], lane_by_lane_layout([2, 0, 2], [0, 2]))
    assert [int(s) for s in parallel.records["commit_seq"]] != [
        int(s) for s in serialized.records["commit_seq"]]
    assert first_difference(serialized, parallel) is None
    assert first_difference(parallel, serialized) is None


@settings(max_examples=100, deadline=None)
@given(specs=st.lists(commit_specs, min_size=1, max_size=6), data=st.data())
def test_first_difference_is_none_for_any_two_layouts_of_the_same_commits(
    specs: list[CommitSpec], data: st.DataObject
) -> None:
    views = []
    for _ in range(2):
        lanes = data.draw(st.lists(st.integers(0, 7), min_size=len(specs), max_size=len(specs)))
        views.append(decoded(specs, lanes, data.draw(st.permutations(range(len(specs))))))
    assert first_difference(views[0], views[1]) is None


def _mutated(index: int, position: int, **change: Any) -> list[CommitSpec]:
    """BASE_SPECS with one record's page_no or image replaced."""
    specs = [(list(pages), size, txn) for pages, size, txn in BASE_SPECS]
    pages = specs[index][0]
    page_no, image = pages[position]
    pages[position] = (change.get("page_no", page_no), change.get("image", image))
    return specs


@pytest.mark.parametrize(
    "changed",
    [
        _mutated(2, 1, image=b"unO"),
        _mutated(0, 0, image=b"onf"),
        _mutated(1, 0, page_no=4),
        _mutated(2, 2, page_no=2**32 - 1),
        [BASE_SPECS[0], BASE_SPECS[1], ([(4, b"four"), (1, b"uno")], 12, 7)],
        [([(1, b"one")], 5, 11), BASE_SPECS[1], BASE_SPECS[2]],
        [BASE_SPECS[0], BASE_SPECS[1], (BASE_SPECS[2][0], 13, 7)],
        [BASE_SPECS[0], BASE_SPECS[1], (BASE_SPECS[2][0], 12, 8)],
        [BASE_SPECS[0], BASE_SPECS[1], ([(4, b"four"), (1, b"uno"), (9, b"nine!")], 12, 7)],
    ],
    ids=["image_byte", "image_byte_first", "page_no", "page_no_max", "missing_last_record",
         "missing_first_commit_record", "db_size", "txn_id", "image_length"],
)
def test_first_difference_reports_a_changed_or_missing_record(changed: list[CommitSpec]) -> None:
    expected = decoded(BASE_SPECS, [0, 1, 0], [0, 2, 1])
    actual = decoded(changed, [1, 1, 0], [2, 0, 1])
    message = first_difference(expected, actual)
    assert isinstance(message, str)
    assert message
    reverse = first_difference(actual, expected)
    assert isinstance(reverse, str)
    assert reverse


@settings(max_examples=100, deadline=None)
@given(specs=st.lists(commit_specs, min_size=1, max_size=5), data=st.data())
def test_first_difference_finds_any_single_flipped_image_bit(
    specs: list[CommitSpec], data: st.DataObject
) -> None:
    index = data.draw(st.integers(0, len(specs) - 1))
    pages, size, txn = specs[index]
    position = data.draw(st.integers(0, len(pages) - 1))
    page_no, image = pages[position]
    bit = data.draw(st.integers(0, len(image) * 8 - 1))
    flipped = bytearray(image)
    flipped[bit // 8] ^= 1 << (bit % 8)
    changed = list(specs)
    changed[index] = ([*pages[:position], (page_no, bytes(flipped)), *pages[position + 1:]],
                      size, txn)
    layout = data.draw(st.permutations(range(len(specs))))
    assert first_difference(decoded(specs, [0] * len(specs), range(len(specs))),
                            decoded(changed, [1] * len(specs), layout)) is not None
