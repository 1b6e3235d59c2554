"""Soak: run the self-verifying demo across modes and thread counts, stop at the first loss.

Not part of the default test run. Example: ``python3 scripts/soak.py --seconds 5 --rounds 3``
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile

from pagewal import WalConfig
from pagewal._demo import run_demo


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    failures = 0
    matrix = itertools.product(range(args.rounds), ["auto", "conservative", "shadow_compare"],
                               [1, 4, 16], [4096, 1 << 20])
    for _, mode, threads, capacity in matrix:
        config = WalConfig(mode=mode, lane_capacity_bytes=capacity, epoch_interval_ms=2)
        with tempfile.TemporaryDirectory() as directory:
            report = run_demo(directory, threads=threads, seconds=args.seconds, config=config,
                              say=lambda _: None)
        status = "ok" if report.ok else "FAILED"
        print(f"{status}: mode={mode} threads={threads} lane_capacity={capacity}: "
              f"{report.transactions} transactions, {report.wrong} wrong pages, "
              f"fallbacks {report.fallbacks}", flush=True)
        failures += not report.ok
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
