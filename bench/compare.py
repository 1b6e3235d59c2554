"""pagewal against its peers, side by side in one run, on one disk.

    python3 -m pip install -e '.[bench]'
    python3 -m bench.compare                 # full matrix, ~12 minutes
    python3 -m bench.compare --quick         # a smoke run
    python3 -m bench.compare --ratios        # only the cells of the ratio table, and the table
    python3 -m bench.compare --ratios --quick

Workload: a commit writes K pages of 4 KiB (page numbers random in 1..100,000, contents from a
pre-generated pool) and is durable when the call returns; T threads commit in a loop; the
warm-up is excluded. Matrix K in {1, 16}, T in {1, 4, 16}. The same run measures the machine's
limits (4 KiB append+fsync, sequential write bandwidth in epoch-sized fsynced chunks), a
CPU-bound neighbour scenario, pagewal with fsync=off against a plain append loop without fsync
(the ceiling of the commit path), recovery against a raw read + CRC of the same files, and a
WalPager checkpoint against a raw write + fsync of the same bytes. Every cell also reports
process CPU time per commit. Writes results.json, results.md (ending with the ratio table) and
throughput.png to the results directory.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

import crc32c
import numpy as np

import pagewal

from .checkpoint import measure as checkpoint_benchmark
from .peers import PagewalPeer, Peer, all_peers, fsync_off_peers

PAGE_SIZE = 4096
PAGE_RANGE = 100_000
FSYNC_OFF = {peer.name for peer in fsync_off_peers()}
RATIO_CELLS = {  # the peer cells ratio_table() reads: (system, K, T); pagewal runs every cell
    ("naive serialized", 1, 1), ("naive group commit", 1, 16), ("sqlite wal full", 1, 16)}
POOL = [bytes(row) for row in np.random.default_rng(7).integers(0, 256, (256, PAGE_SIZE),
                                                                   dtype=np.uint8)]


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_cell(
    peer: Peer, directory: str, *, pages: int, threads: int, seconds: float, warmup: float,
    neighbour: bool = False,
) -> dict[str, Any]:
    """T threads commit K-page commits for warmup + seconds; figures over the measured part."""
    peer.open(directory)
    stop = threading.Event()
    measuring = threading.Event()
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []
    start = threading.Barrier(threads + 1)

    def work(index: int) -> None:
        try:
            commit = peer.committer()
            rng = random.Random(index)
            mine = latencies[index]
            start.wait()
            while not stop.is_set():
                batch = [(rng.randint(1, PAGE_RANGE), POOL[rng.randrange(len(POOL))])
                         for _ in range(pages)]
                began = time.perf_counter()
                commit(batch)
                if measuring.is_set():
                    mine.append(time.perf_counter() - began)
        except BaseException as error:
            errors.append(error)
            stop.set()

    def burn() -> None:
        while not stop.is_set():
            sum(range(2000))  # pure-Python work that holds the GIL

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    if neighbour:
        workers.append(threading.Thread(target=burn))
    for worker in workers:
        worker.start()
    start.wait()
    time.sleep(warmup)
    measuring.set()
    cpu_before, wall_before = _cpu_seconds(), time.perf_counter()
    time.sleep(seconds)
    measuring.clear()
    cpu, wall = _cpu_seconds() - cpu_before, time.perf_counter() - wall_before
    stop.set()
    for worker in workers:
        worker.join()
    stats = peer.wal.statistics() if isinstance(peer, PagewalPeer) and peer.wal else None
    peer.close()
    if errors:
        raise RuntimeError(f"{peer.name}: {errors[0]!r}") from errors[0]
    all_latencies = np.array([t for mine in latencies for t in mine]) * 1000
    commits = all_latencies.size
    cell: dict[str, Any] = {
        "system": peer.name, "pages": pages, "threads": threads, "neighbour": neighbour,
        "commits_per_s": commits / wall, "pages_per_s": commits * pages / wall,
        "mb_per_s": commits * pages * PAGE_SIZE / wall / 1e6,
        "p50_ms": float(np.percentile(all_latencies, 50)) if commits else None,
        "p99_ms": float(np.percentile(all_latencies, 99)) if commits else None,
        "cpu_percent": 100 * cpu / wall,
        # Process CPU (every thread: committers, pagewal's own, a neighbour) per commit.
        "cpu_us_per_commit": 1e6 * cpu / commits if commits else None,
    }
    if stats is not None:
        cell["epochs"] = stats.epochs_sealed
        cell["bytes_written"] = stats.bytes_written
        cell["fallbacks"] = {k: v for k, v in stats.fallbacks.items() if v}
    return cell


def fsync_latency(directory: str, seconds: float) -> dict[str, float]:
    """4 KiB append + fsync in a loop: the floor of any one-at-a-time durable commit."""
    fd = os.open(os.path.join(directory, "fsync.probe"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    times = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        began = time.perf_counter()
        os.write(fd, POOL[0])
        os.fsync(fd)
        times.append(time.perf_counter() - began)
    os.close(fd)
    array = np.array(times) * 1000
    return {"ops_per_s": len(times) / float(np.sum(times)),
            "p50_ms": float(np.percentile(array, 50)), "p99_ms": float(np.percentile(array, 99))}


def sequential_bandwidth(directory: str, total_bytes: int, chunk_bytes: int) -> dict[str, float]:
    """Write ``total_bytes`` in ``chunk_bytes`` chunks, one fsync per chunk: MB/s."""
    chunk = (b"".join(POOL) * (chunk_bytes // (len(POOL) * PAGE_SIZE) + 1))[:chunk_bytes]
    fd = os.open(os.path.join(directory, "bandwidth.probe"), os.O_WRONLY | os.O_CREAT)
    began = time.perf_counter()
    written = 0
    while written < total_bytes:
        os.write(fd, chunk)
        os.fsync(fd)
        written += len(chunk)
    elapsed = time.perf_counter() - began
    os.close(fd)
    return {"mb_per_s": written / elapsed / 1e6, "chunk_bytes": chunk_bytes,
            "total_bytes": written}


def recovery_benchmark(directory: str, gib: float) -> dict[str, float]:
    """Build ~``gib`` GiB of segments, then time recover() against raw read + CRC32C."""
    db = os.path.join(directory, "recovery.db")
    target = int(gib * (1 << 30))
    config = pagewal.WalConfig(lanes=2, fsync="off", lane_capacity_bytes=8 << 20,
                               epoch_interval_ms=50)
    with pagewal.Wal.open(db, config) as wal:
        written = 0
        rng = random.Random(1)
        while written < target:
            for _ in range(64):
                wal.submit([(rng.randint(1, PAGE_RANGE), POOL[rng.randrange(len(POOL))])
                            for _ in range(16)])
            written += 64 * 16 * (PAGE_SIZE + 40)
        wal.flush()
    # The log's files, either format (recover() reads every one of them, spares included).
    prefix = os.path.basename(db) + "-wal-"
    names = [n for n in os.listdir(directory)
             if n.startswith(prefix) and not n.endswith((".tmp", "-lock", "-checkpoint"))]
    size = sum(os.path.getsize(os.path.join(directory, n)) for n in names)
    began = time.perf_counter()
    for name in names:
        with open(os.path.join(directory, name), "rb") as file:
            crc32c.crc32c(file.read())
    raw = time.perf_counter() - began
    began = time.perf_counter()
    result = pagewal.recover(db)
    recovered = time.perf_counter() - began
    return {"bytes": size, "segments": len(names), "records": int(result.records.size),
            "raw_mb_per_s": size / raw / 1e6, "recover_mb_per_s": size / recovered / 1e6,
            "ratio": raw / recovered}


def _median_round(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the median throughput, whole (its latencies and CPU belong together)."""
    ordered = sorted(samples, key=lambda c: c["commits_per_s"])
    median = dict(ordered[len(ordered) // 2])
    median["rounds_commits_per_s"] = [round(c["commits_per_s"]) for c in samples]
    return median


def _ratio_rows(cells: list[dict[str, Any]]) -> list[str]:
    rows = ["| K | T | system | commits/s | pages/s | MB/s | p50 ms | p99 ms | CPU % | "
            "CPU µs/commit | pagewal / system |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for cell in cells:
        # Systems that never sync are compared with pagewal fsync=off, the rest with auto.
        reference = "pagewal auto fsync=off" if cell["system"] in FSYNC_OFF else "pagewal auto"
        auto = next(c for c in cells if c["system"] == reference
                    and c["pages"] == cell["pages"] and c["threads"] == cell["threads"]
                    and c["neighbour"] == cell["neighbour"])
        ratio = auto["commits_per_s"] / cell["commits_per_s"] if cell["commits_per_s"] else 0
        rows.append(
            f"| {cell['pages']} | {cell['threads']}{' +cpu' if cell['neighbour'] else ''} | "
            f"{cell['system']} | {cell['commits_per_s']:,.0f} | {cell['pages_per_s']:,.0f} | "
            f"{cell['mb_per_s']:.1f} | {cell['p50_ms']:.2f} | {cell['p99_ms']:.2f} | "
            f"{cell['cpu_percent']:.0f} | {cell['cpu_us_per_commit']:.1f} | {ratio:.2f} |")
    return rows


def ratio_table(cells: list[dict[str, Any]], machine: dict[str, Any]) -> list[str]:
    """The headline comparisons, one row each: pagewal's figure, the reference's, the ratio
    (always pagewal / reference; for rows marked "lower is better" a ratio below 1 wins).
    Rows whose cells or measurements this run did not make are left out."""

    def find(system: str, pages: int, threads: int, neighbour: bool = False) -> Any:
        return next((c for c in cells if c["system"] == system and c["pages"] == pages
                     and c["threads"] == threads and c["neighbour"] == neighbour), None)

    def field(cell: dict[str, Any] | None, key: str) -> float | None:
        return None if cell is None else cell.get(key)

    rows = ["| comparison | measure | pagewal | reference | pagewal / reference |",
            "|---|---|---|---|---|"]

    def add(what: str, measure: str, ours: float | None, theirs: float | None,
            digits: int) -> None:
        if ours is None or theirs is None:
            return
        ratio = f"{ours / theirs:.2f}" if theirs else "n/a"
        rows.append(f"| {what} | {measure} | {ours:,.{digits}f} | {theirs:,.{digits}f} | "
                    f"{ratio} |")

    def commits(what: str, ours: Any, theirs: Any) -> None:
        add(what, "commits/s", field(ours, "commits_per_s"), field(theirs, "commits_per_s"), 0)

    auto = "pagewal auto"
    commits("K=1 T=1 vs naive serialized append+fsync", find(auto, 1, 1),
            find("naive serialized", 1, 1))
    commits("K=1 T=16 vs naive group commit", find(auto, 1, 16), find("naive group commit", 1, 16))
    add("K=1 T=16 vs naive group commit", "p99 ms (lower is better)",
        field(find(auto, 1, 16), "p99_ms"), field(find("naive group commit", 1, 16), "p99_ms"), 2)
    commits("K=1 T=16 vs SQLite WAL synchronous=FULL", find(auto, 1, 16),
            find("sqlite wal full", 1, 16))
    sequential = machine.get("sequential_write")
    add("K=16 T=16 vs fsynced sequential bandwidth", "MB/s", field(find(auto, 16, 16), "mb_per_s"),
        None if sequential is None else sequential["mb_per_s"], 0)
    commits("K=1 T=16 + CPU-bound neighbour vs naive group commit", find(auto, 1, 16, True),
            find("naive group commit", 1, 16, True))
    for threads in (1, 16):
        ours = find("pagewal auto fsync=off", 1, threads)
        theirs = find("plain append (no fsync)", 1, threads)
        what = f"fsync=off K=1 T={threads} vs plain append, no fsync"
        commits(what, ours, theirs)
        add(what, "CPU µs/commit (lower is better)", field(ours, "cpu_us_per_commit"),
            field(theirs, "cpu_us_per_commit"), 1)
    recovery = machine.get("recovery")
    if recovery is not None:
        add("recover() vs raw read + CRC32C (the log this code writes)", "MB/s",
            recovery["recover_mb_per_s"], recovery["raw_mb_per_s"], 0)
    checkpoint = machine.get("checkpoint")
    if checkpoint is not None:
        add("WalPager checkpoint vs raw write + fsync", "s/GiB (lower is better)",
            checkpoint["checkpoint_s_per_gib"], checkpoint["raw_s_per_gib"], 2)
    for cell in cells:
        if cell["system"] == auto:
            conservative = find("pagewal conservative", cell["pages"], cell["threads"],
                                cell["neighbour"])
            commits(f"auto vs conservative, K={cell['pages']} T={cell['threads']}"
                    f"{' + CPU-bound neighbour' if cell['neighbour'] else ''}", cell, conservative)
    return rows


def plot(cells: list[dict[str, Any]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = sorted({c["pages"] for c in cells})
    figure, axes = plt.subplots(1, len(ks), figsize=(6 * len(ks), 4.5), squeeze=False)
    for axis, k in zip(axes[0], ks, strict=True):
        systems = sorted({c["system"] for c in cells})
        for system in systems:
            points = sorted((c["threads"], c["commits_per_s"]) for c in cells
                            if c["system"] == system and c["pages"] == k and not c["neighbour"])
            if points:
                axis.plot(*zip(*points, strict=True), marker="o", label=system)
        axis.set_title(f"K = {k} page(s) of 4 KiB per durable commit")
        axis.set_xlabel("committing threads")
        axis.set_ylabel("commits/s")
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main(
    argv: list[str] | None = None, *, progress: Callable[[int, int], None] | None = None
) -> int:
    """Run the suite. ``progress(done, total)`` is called after each cell and measurement
    (``pagewal bench`` draws it as a progress bar on a terminal)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=None,
                        help="measured time per cell (default 4; 1 with --quick)")
    parser.add_argument("--warmup", type=float, default=None,
                        help="excluded warm-up per cell (default 1; 0.3 with --quick)")
    parser.add_argument("--out", default="bench/results", help="results directory")
    parser.add_argument("--dir", default=None, help="where the systems write (default: --out)")
    parser.add_argument("--systems", default=None,
                        help="comma-separated subset of system names, e.g. 'pagewal auto,lmdb'")
    parser.add_argument("--ratios", action="store_true",
                        help="run only the cells the ratio table needs (pagewal auto and "
                             "conservative everywhere, fsync=off against a plain append, and "
                             "the naive and SQLite cells the table compares with) and print it")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: T in {1, 16} only and, unless given, one round of "
                             "1 s cells and 0.1 GiB for recovery and checkpoint")
    parser.add_argument("--recovery-gib", type=float, default=None, help="default 1")
    parser.add_argument("--checkpoint-gib", type=float, default=None, help="default 1")
    parser.add_argument("--rounds", type=int, default=None,
                        help="repeat the matrix, systems interleaved; report each cell's median "
                             "round (this disk's fsync cost drifts by 2-3x within minutes); "
                             "default 3")
    args = parser.parse_args(argv)
    if args.ratios and args.systems:
        parser.error("--ratios picks its own systems; leave out --systems")
    for name, full, quick in (("seconds", 4.0, 1.0), ("warmup", 1.0, 0.3), ("rounds", 3, 1),
                              ("recovery_gib", 1.0, 0.1), ("checkpoint_gib", 1.0, 0.1)):
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    os.makedirs(args.out, exist_ok=True)
    base = args.dir or args.out
    os.makedirs(base, exist_ok=True)
    peers = all_peers()
    off_peers = fsync_off_peers()
    if args.systems:
        wanted = {s.strip() for s in args.systems.split(",")}
        peers = [p for p in peers if p.name in wanted | {"pagewal auto"}]
        off_peers = [p for p in off_peers if p.name in wanted]
    thread_counts = [1, 16] if args.quick else [1, 4, 16]

    def needed(peer: Peer, pages: int, threads: int) -> bool:
        return (not args.ratios or peer.name.startswith("pagewal ")
                or (peer.name, pages, threads) in RATIO_CELLS)

    # One round: the matrix, the CPU-bound neighbour cells, then the fsync=off cells.
    plan: list[tuple[Peer, dict[str, Any]]] = [
        (peer, {"pages": pages, "threads": threads})
        for pages in (1, 16) for threads in thread_counts for peer in peers
        if needed(peer, pages, threads)]
    plan += [(peer, {"pages": 1, "threads": 16, "neighbour": True}) for peer in peers
             if peer.name in ("pagewal auto", "pagewal conservative", "naive group commit")]
    plan += [(peer, {"pages": 1, "threads": threads}) for threads in (1, 16)
             for peer in off_peers]
    total_steps = args.rounds * len(plan) + 4
    done_steps = 0

    def advance() -> None:
        nonlocal done_steps
        done_steps += 1
        if progress is not None:
            progress(done_steps, total_steps)

    def cell(peer: Peer, **kwargs: Any) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(dir=base) as directory:
            result = run_cell(peer, directory, seconds=args.seconds, warmup=args.warmup,
                              **kwargs)
        # Deleting a cell's files (thousands of segments for pagewal) leaves journal work that
        # would slow whichever system runs next: flush it before the next cell starts.
        os.sync()
        print(f"{result['system']:>23} K={result['pages']:<2} T={result['threads']:<2}"
              f"{' +cpu' if result['neighbour'] else ''}: {result['commits_per_s']:>9,.0f} "
              f"commits/s  p99 {result['p99_ms']:.2f} ms  CPU {result['cpu_percent']:.0f}% "
              f"{result['cpu_us_per_commit']:.1f} µs/commit", flush=True)
        advance()
        return result

    rounds = [[cell(peer, **kwargs) for peer, kwargs in plan] for _ in range(args.rounds)]
    cells = [_median_round([r[i] for r in rounds]) for i in range(len(plan))]

    machine: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(dir=base) as directory:
        machine["fsync_4k"] = fsync_latency(directory, 2.0)
        advance()
        big = next(c for c in cells if c["system"] == "pagewal auto" and c["pages"] == 16
                   and c["threads"] == 16 and not c["neighbour"])
        chunk = max(PAGE_SIZE, big["bytes_written"] // max(1, big["epochs"]))
        machine["sequential_write"] = sequential_bandwidth(
            directory, total_bytes=int(big["mb_per_s"] * 1e6 * args.seconds), chunk_bytes=chunk)
        advance()
    with tempfile.TemporaryDirectory(dir=base) as directory:
        machine["recovery"] = recovery_benchmark(directory, args.recovery_gib)
        advance()
    with tempfile.TemporaryDirectory(dir=base) as directory:
        machine["checkpoint"] = checkpoint_benchmark(directory, args.checkpoint_gib,
                                                     report=lambda line: None)
        advance()
    print(json.dumps(machine, indent=1))

    ratios = ratio_table(cells, machine)
    with open(os.path.join(args.out, "results.json"), "w") as file:
        json.dump({"cells": cells, "machine": machine, "python": sys.version,
                   "cpus": os.cpu_count()}, file, indent=1)
    lines = ["# pagewal vs peers", "", *_ratio_rows(cells), "",
             f"4 KiB append+fsync: {machine['fsync_4k']['ops_per_s']:,.0f} ops/s, "
             f"p50 {machine['fsync_4k']['p50_ms']:.3f} ms",
             f"sequential write, {machine['sequential_write']['chunk_bytes']:,} B chunks + "
             f"fsync: {machine['sequential_write']['mb_per_s']:.1f} MB/s",
             f"recovery: {machine['recovery']['recover_mb_per_s']:.0f} MB/s vs raw read+CRC "
             f"{machine['recovery']['raw_mb_per_s']:.0f} MB/s "
             f"(ratio {machine['recovery']['ratio']:.2f}) over "
             f"{machine['recovery']['bytes'] / 2**30:.2f} GiB",
             f"checkpoint: {machine['checkpoint']['checkpoint_s_per_gib']:.2f} s/GiB vs raw "
             f"write+fsync {machine['checkpoint']['raw_s_per_gib']:.2f} s/GiB (ratio "
             f"{machine['checkpoint']['ratio']:.2f}) over {machine['checkpoint']['gib']:.2f} GiB",
             "", "## Ratios", "", *ratios]
    with open(os.path.join(args.out, "results.md"), "w") as file:
        file.write("\n".join(lines) + "\n")
    written = ["results.json", "results.md"]
    if not args.ratios:  # a plot of a few scattered cells says nothing
        plot(cells, os.path.join(args.out, "throughput.png"))
        written.append("throughput.png")
    print("\n".join(ratios if args.ratios else lines))
    print(f"wrote {', '.join(os.path.join(args.out, name) for name in written)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
