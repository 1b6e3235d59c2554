"""One benchmark cell of pagewal alone, for a profiler to watch.

    python3 -m bench.commit_loop --fsync off --threads 16 --seconds 10
    py-spy record --format raw -t -o commit.txt -- python3 -m bench.commit_loop --threads 16
    py-spy record --gil --format raw -o commit.txt -- python3 -m bench.commit_loop --fsync off

T threads commit K random 4 KiB pages in a loop (the workload of ``bench.compare``) for
``--warmup`` + ``--seconds``, then it prints commits/s, p99 latency and process CPU time per
commit over the measured part. Without ``--gil``, py-spy also counts threads blocked on a lock
(a committer waiting for its epoch) as busy; with it, only time holding the GIL. A profiler
that samples only the main thread (pyinstrument) sees nothing here: the main thread waits.
"""

from __future__ import annotations

import argparse
import tempfile

from .compare import run_cell
from .peers import PagewalPeer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fsync", default="full", choices=("full", "normal", "off"))
    parser.add_argument("--mode", default="auto")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--pages", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--dir", default=None, help="where the log is written (default: $TMPDIR)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pagewal-commit-loop-", dir=args.dir) as directory:
        cell = run_cell(PagewalPeer(args.mode, fsync=args.fsync), directory, pages=args.pages,
                        threads=args.threads, seconds=args.seconds, warmup=args.warmup)
    print(f"{cell['system']} K={args.pages} T={args.threads}: {cell['commits_per_s']:,.0f} "
          f"commits/s, p99 {cell['p99_ms']:.2f} ms, CPU {cell['cpu_percent']:.0f}% "
          f"({cell['cpu_us_per_commit']:.1f} µs/commit), {cell.get('epochs', 0):,} epochs")


if __name__ == "__main__":
    main()
