"""Write the format 1 log fixture in ``tests/data/v1-log/`` (run once; the output is committed).

A page store as pagewal 0.1 left it: the data file ``app.db`` holds the pages of epochs 1 and 2
(512-byte pages), the checkpoint file records position (2, 3) in the version 1 layout, and
three segment files of their own follow it:

- epoch 3: commits 4 and 5 on two lanes (lane 0: commit 4, lane 1: commit 5);
- epoch 4: commit 6 (one lane);
- epoch 5: commits 7, 8 and 9 on two lanes (lane 0: 7 and 9, lane 1: 8).

Every byte comes from the version 1 encoders of ``pagewal._codec`` and ``pagewal._layout``,
so the fixture is what a version 1 writer wrote. :data:`EXPECTED` is what recovering it must
give; the tests import it from here.

Run: ``PYTHONPATH=. python3 tests/data/make_v1_log.py``
"""

from __future__ import annotations

from pathlib import Path

from pagewal._codec import ChainPosition, SegmentHeader, encode_commits, make_commit
from pagewal._layout import checkpoint_name, encode_checkpoint_v1, segment_name

DIRECTORY = Path(__file__).parent / "v1-log"
DB_NAME = "app.db"
PAGE_SIZE = 512


def page(page_no: int, commit_seq: int) -> bytes:
    """The image commit ``commit_seq`` wrote for ``page_no``: recognizable and exact."""
    return f"page {page_no} of commit {commit_seq};".encode().ljust(PAGE_SIZE, b".")


# The pages the checkpoint covers (already in the data file): commits 1..3 of epochs 1 and 2.
CHECKPOINTED = {0: page(0, 1), 1: page(1, 2), 2: page(2, 3)}
CHECKPOINT = ChainPosition(2, 3)

# (epoch, prev_epoch, [(commit_seq, lane, {page_no: image})]) in commit order.
SEGMENTS: list[tuple[int, int, list[tuple[int, int, dict[int, bytes]]]]] = [
    (3, 2, [(4, 0, {1: page(1, 4), 3: page(3, 4)}), (5, 1, {4: page(4, 5)})]),
    (4, 3, [(6, 0, {0: page(0, 6)})]),
    (5, 4, [(7, 0, {3: page(3, 7)}), (8, 1, {5: page(5, 8), 1: page(1, 8)}),
            (9, 0, {6: page(6, 9)})]),
]

EXPECTED_LAST = ChainPosition(5, 9)
"""Where the recovered chain ends."""


def expected_images() -> dict[int, bytes]:
    """Each page's last image in the segments (what recovery returns, the checkpoint aside)."""
    images: dict[int, bytes] = {}
    for _, _, commits in SEGMENTS:
        for _, _, pages in commits:
            images.update(pages)
    return images


def expected_store() -> dict[int, bytes]:
    """Each page's last image in the store: the data file's, then the segments'."""
    return {**CHECKPOINTED, **expected_images()}


def segment_bytes(epoch: int, prev_epoch: int,
                  commits: list[tuple[int, int, dict[int, bytes]]]) -> bytes:
    lanes = max(lane for _, lane, _ in commits) + 1
    # A version 1 writer laid an epoch out lane by lane, each lane in commit order.
    triples = sorted(((seq, lane, make_commit(pages)) for seq, lane, pages in commits),
                     key=lambda triple: (triple[1], triple[0]))
    body = encode_commits(triples)
    seqs = [seq for seq, _, _ in commits]
    header = SegmentHeader(epoch=epoch, record_count=sum(len(p) for _, _, p in commits),
                           lane_count=lanes, commit_seq_lo=min(seqs), commit_seq_hi=max(seqs),
                           prev_epoch=prev_epoch, body_length=len(body))
    return header.encode() + bytes(body)


def fixture_files() -> dict[str, bytes]:
    """File name -> bytes of every file of the fixture."""
    data = bytearray(PAGE_SIZE * (max(CHECKPOINTED) + 1))
    for page_no, image in CHECKPOINTED.items():
        data[page_no * PAGE_SIZE:(page_no + 1) * PAGE_SIZE] = image
    files = {DB_NAME: bytes(data), checkpoint_name(DB_NAME): encode_checkpoint_v1(CHECKPOINT)}
    for epoch, prev_epoch, commits in SEGMENTS:
        files[segment_name(DB_NAME, epoch)] = segment_bytes(epoch, prev_epoch, commits)
    return files


def main() -> None:
    DIRECTORY.mkdir(exist_ok=True)
    for name, content in fixture_files().items():
        (DIRECTORY / name).write_bytes(content)


if __name__ == "__main__":
    main()
