"""Simulated power loss under the pager: transactions from several threads with checkpoints
running, then every state a power loss at any file operation could leave.

For each state the store is reopened (recovery: checkpoint file + remaining segments applied to
the data file) and every page is compared with a replay of commits 1..S in commit_seq order,
where S is where the reopened log's durable chain ends: every acknowledged commit must be
within S, and no torn, partial or foreign page may appear. Checkpoints run both on request
(one writer calls ``checkpoint()`` every few commits) and automatically (a small threshold).
"""

from __future__ import annotations

import hashlib
import random
import threading

from .._config import WalConfig
from .._errors import BrokenLogError, CorruptSegmentError, InvalidPageError
from .._pager import WalPager
from ._power_loss import AckTracker, PowerLossReport
from ._simfs import Fault, SimulatedFileSystem, crash_states
from ._workload import (
    PAGE_RANGE,
    SMALL_LOG_FILE,
    RecyclingWal,
    Report,
    crash_points,
    log_files_written,
    recycled_log_files,
    run_then_close,
    txn_id_for,
)

DB_PATH = "/simulated/store.db"
PAGE_SIZE = 512  # one sector: a torn data-file write tears between pages, and states stay few


def pager_commit_pages(seed: int, txn_id: int) -> dict[int, bytes]:
    """The pages of transaction ``txn_id``: 1..3 whole pages, a pure function of the ids."""
    rng = random.Random(f"pager:{seed}:{txn_id}")
    return {rng.randrange(PAGE_RANGE): rng.randbytes(PAGE_SIZE) for _ in range(rng.randint(1, 3))}


def default_pager_config() -> WalConfig:
    """Short epochs, the smallest automatic-checkpoint threshold and the smallest log files:
    checkpoints hand filled files back to be recycled while the workload runs."""
    return WalConfig(lanes=2, epoch_interval_ms=1, lane_capacity_bytes=8192, fsync="full",
                     checkpoint_bytes=64 << 10, log_file_bytes=SMALL_LOG_FILE)


def run_pager_power_loss(
    *,
    seed: int,
    threads: int = 3,
    commits_per_thread: int = 20,
    checkpoint_every: int = 3,
    config: WalConfig | None = None,
    faults: tuple[Fault, ...] = (),
    pager_class: type[WalPager] = WalPager,
    max_points: int | None = None,
    torn_samples: int = 1,
) -> PowerLossReport:
    """Run the pager workload once, then check crash states (all points, or ``max_points``)."""
    config = config or default_pager_config()
    rng = random.Random(seed)
    fs = SimulatedFileSystem(faults=faults)
    # Covered log files come back to be recycled as soon as the next file is needed (see
    # RecyclingWal), so the search always covers a recycled file's old segments.
    recycling: type[WalPager] = type(pager_class.__name__, (pager_class,),
                                     {"_wal_class": RecyclingWal})
    pager = recycling.open(DB_PATH, PAGE_SIZE, config, fs=fs)
    acks = AckTracker(pager.wal)
    fs.before_op = acks.observe
    transactions: dict[int, int] = {}  # commit_seq -> txn_id, for every staged commit
    lock = threading.Lock()
    broken: str | None = None

    def writer(index: int) -> None:
        nonlocal broken
        for counter in range(commits_per_thread):
            txn = txn_id_for(0, index, counter)
            try:
                with pager.transaction(txn_id=txn) as tx:
                    for page_no, data in pager_commit_pages(seed, txn).items():
                        tx.write(page_no, data)
                    ticket = tx.commit(durable=False)
                assert ticket is not None
                with lock:
                    transactions[ticket.commit_seq] = txn
                acks.watch(ticket, txn)
                pager.wait_durable(ticket)
                acks.observe(fs.op_count())
                if index == 0 and (counter + 1) % checkpoint_every == 0:
                    pager.checkpoint()
            except BrokenLogError as error:
                broken = str(error)
                return

    def close() -> None:
        # A last checkpoint covers every file but the active one: they are recycled.
        try:
            pager.checkpoint()
        finally:
            pager.close()

    broken = run_then_close(writer, threads, close) or broken
    acks.observe(fs.op_count())

    points = crash_points(len(fs.ops), max_points, rng)
    figures = dict.fromkeys(("states", "verified", "lost", "partial", "failures"), 0)
    violations: list[str] = []
    # Many crash states are byte for byte the same (a point before and after an operation
    # that changed nothing durable); the store is reopened once per distinct state.
    reopened: dict[bytes, tuple[int, dict[int, bytes]] | Exception] = {}
    for count, description, state in crash_states(fs.initial, fs.ops, points=points, rng=rng,
                                                  torn_samples=torn_samples):
        figures["states"] += 1
        where = f"seed {seed}, pager, crash after op {count}/{len(fs.ops)} ({description})"
        acked = acks.acked_by(count)
        key = state_key(state)
        if key not in reopened:
            try:
                reopened[key] = _reopen(state, config)
            except (CorruptSegmentError, InvalidPageError) as error:
                reopened[key] = error
        try:
            outcome = reopened[key]
            if isinstance(outcome, Exception):
                raise outcome
            problems = _check_state(outcome, seed, acked, transactions, figures)
        except (CorruptSegmentError, InvalidPageError) as error:
            figures["failures"] += 1
            problems = [f"reopening failed: {error}"]
        violations.extend(f"{where}: {p}" for p in problems)
    return PowerLossReport(
        seed=seed, operations=len(fs.ops),
        crash_points=len(fs.ops) + 1 if points is None else len(points), states=figures["states"],
        acked_commits=acks.count, acked_verified=figures["verified"], lost=figures["lost"],
        partial=figures["partial"], recovery_failures=figures["failures"],
        reopened=len(reopened), broken_log=broken is not None,
        broken_reason=broken or "", violation_count=len(violations),
        violations=Report.kept(violations), workload="pager", log_files=log_files_written(fs.ops),
        recycled=recycled_log_files(fs.ops))


def state_key(state: dict[str, bytes]) -> bytes:
    """A digest of a crash state: its file names and contents."""
    digest = hashlib.blake2b(digest_size=20)
    for path in sorted(state):
        digest.update(path.encode() + b"\0" + len(state[path]).to_bytes(8, "little"))
        digest.update(state[path])
    return digest.digest()


def _reopen(state: dict[str, bytes], config: WalConfig) -> tuple[int, dict[int, bytes]]:
    """Open the store in ``state``: where its durable chain ends, and every page."""
    with WalPager.open(DB_PATH, PAGE_SIZE, config, fs=SimulatedFileSystem(state)) as pager:
        durable = pager.wal.durable_position.commit_seq
        pages = {page_no: pager.read(page_no) for page_no in range(PAGE_RANGE)}
    return durable, pages


def _check_state(
    reopened: tuple[int, dict[int, bytes]], seed: int, acked: dict[int, int],
    transactions: dict[int, int], figures: dict[str, int],
) -> list[str]:
    durable, pages = reopened
    problems = []
    missing = [seq for seq in acked if seq > durable]
    figures["lost"] += len(missing)
    figures["verified"] += len(acked) - len(missing)
    if missing:
        problems.append(f"acknowledged commits {missing} are missing (the store recovered "
                        f"commits 1..{durable})")
    expected: dict[int, bytes] = {}
    for seq in range(1, durable + 1):
        if seq not in transactions:
            problems.append(f"the store recovered commit {seq}, which was never made")
            return problems
        expected.update(pager_commit_pages(seed, transactions[seq]))
    wrong = [page_no for page_no, data in pages.items()
             if data != expected.get(page_no, bytes(PAGE_SIZE))]
    if wrong:
        figures["partial"] += 1
        problems.append(f"pages {wrong} differ from a replay of commits 1..{durable}")
    return problems
