"""Checkpoint throughput: seconds per GiB of pages applied from the log to the data file.

``python -m bench.checkpoint [--gib 1] [--dir D]``: builds a log holding ``--gib`` GiB of
distinct 4 KiB pages (written with fsync off, checkpoints disabled), then reopens the store
with ``fsync=full``: the open replays the whole log into the data file (pwritev), fsyncs it,
records the checkpoint and deletes the segments. Prints the time and GiB/s, and compares with
reading the segments and writing the same bytes with plain ``os.write`` + one fsync.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable

import numpy as np

from pagewal import WalConfig, WalPager

PAGE = 4096
PAGES_PER_COMMIT = 64


def measure(directory: str, gib: float, report: Callable[[str], None] = print) -> dict[str, float]:
    """Build ~``gib`` GiB of pages in ``directory``, checkpoint them, and time the same bytes
    written raw. Returns seconds per GiB for both and their ratio (checkpoint / raw)."""
    path = os.path.join(directory, "store.db")
    pages = int(gib * (1 << 30)) // PAGE
    pool = np.random.default_rng(7).integers(0, 256, size=(256, PAGE), dtype=np.uint8)
    images = [bytes(row) for row in pool]
    build = WalConfig(fsync="off", checkpoint_bytes=1 << 40)
    started = time.perf_counter()
    with WalPager.open(path, PAGE, build) as pager:
        for first in range(0, pages, PAGES_PER_COMMIT):
            with pager.transaction() as tx:
                for page_no in range(first, min(first + PAGES_PER_COMMIT, pages)):
                    tx.write(page_no, images[page_no % len(images)])
    os.sync()
    log_bytes = sum(os.path.getsize(os.path.join(directory, n))
                    for n in os.listdir(directory) if "-wal-seg-" in n)
    report(f"built {pages * PAGE / (1 << 30):.2f} GiB of pages ({log_bytes / (1 << 30):.2f} "
           f"GiB of segments) in {time.perf_counter() - started:.1f} s")

    started = time.perf_counter()
    with WalPager.open(path, PAGE, WalConfig(fsync="full", checkpoint_bytes=1 << 40)) as p:
        stats = p.statistics()
    seconds = time.perf_counter() - started
    gib_done = stats.pages_checkpointed * PAGE / (1 << 30)
    checkpoint = stats.checkpoint_seconds_total
    report(f"open with fsync=full: {seconds:.2f} s, of which recovery (read, validate, fsync "
           f"the recovered segments) {seconds - checkpoint:.2f} s and the checkpoint "
           f"{checkpoint:.2f} s: {stats.pages_checkpointed} pages, {checkpoint / gib_done:.2f} s "
           f"per GiB ({gib_done / checkpoint:.2f} GiB/s)")

    raw = os.path.join(directory, "raw")
    started = time.perf_counter()
    fd = os.open(raw, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    chunk = b"".join(images) * 64  # 64 MiB
    written = 0
    while written < pages * PAGE:
        written += os.write(fd, chunk[: pages * PAGE - written])
    os.fsync(fd)
    os.close(fd)
    raw_seconds = time.perf_counter() - started
    report(f"raw sequential write + fsync of the same bytes: {raw_seconds:.2f} s "
           f"({gib_done / raw_seconds:.2f} GiB/s); checkpoint/raw time ratio "
           f"{checkpoint / raw_seconds:.2f}")
    return {"gib": gib_done, "checkpoint_s_per_gib": checkpoint / gib_done,
            "raw_s_per_gib": raw_seconds / gib_done, "ratio": checkpoint / raw_seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()
    directory = tempfile.mkdtemp(prefix="pagewal-checkpoint-", dir=args.dir)
    try:
        measure(directory, args.gib)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
