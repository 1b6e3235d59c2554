"""The crash-recovery harness: its disk model, and that it passes the log and fails its mutants."""

from __future__ import annotations

import errno
import random
from pathlib import Path

import pytest

from pagewal import Wal, WalConfig, recover
from pagewal.harness import (
    MUTANTS,
    PAGER_MUTANTS,
    Fault,
    SimulatedFileSystem,
    crash_states,
    run_pager_power_loss,
    run_power_loss,
)
from pagewal.harness._campaign import (
    FAULT_PLANS,
    FIRST_LOG_FILE,
    PAGER_FAULT_PLANS,
    CampaignSettings,
    run_campaign,
)
from pagewal.harness._corruption import run_corruption
from pagewal.harness._kill import run_kill_campaign
from pagewal.harness._mutants import READER_MUTANTS
from pagewal.harness._simfs import SECTOR

OLD = bytes(range(256)) * 8  # 2048 bytes, 4 sectors
NEW = bytes(255 - (i % 256) for i in range(3000))  # longer, every sector differs


def states_after_all(fs: SimulatedFileSystem) -> list[dict[str, bytes]]:
    return [state for count, _, state in
            crash_states(fs.initial, fs.ops, rng=random.Random(0)) if count == len(fs.ops)]


def write(fs: SimulatedFileSystem, path: str, data: bytes, *, sync: bool) -> None:
    fd = fs.open_for_update(path)  # open_for_write only creates new files (O_EXCL)
    fs.pwritev(fd, [data], 0)
    if sync:
        fs.fsync(fd)
    fs.close(fd)


def test_unsynced_data_may_be_kept_lost_or_torn_by_sector() -> None:
    fs = SimulatedFileSystem({"/d/f": OLD})
    write(fs, "/d/f", NEW, sync=False)
    contents = [state["/d/f"] for state in states_after_all(fs)]
    assert OLD in contents and NEW in contents
    torn = [c for c in contents if c not in (OLD, NEW)]
    assert torn, "torn variants must be produced"
    base = OLD.ljust(len(NEW), b"\0")
    for content in torn:
        assert len(content) == len(NEW)
        for start in range(0, len(NEW), SECTOR):
            sector = content[start : start + SECTOR]
            assert sector in (NEW[start : start + SECTOR], base[start : start + SECTOR])


def test_unsynced_overwrites_of_durable_blocks_may_be_lost_or_torn_by_sector() -> None:
    # A preallocated file written in place: every byte was durable before the overwrite.
    durable = bytes(range(256)) * 16  # 4096 bytes, 8 sectors
    fs = SimulatedFileSystem({"/d/f": durable})
    fd = fs.open_for_update("/d/f")
    fs.pwritev(fd, [b"\xee" * 2048], 1024)  # sectors 2..5, not synced
    contents = {state["/d/f"] for state in states_after_all(fs)}
    assert durable in contents
    new = durable[:1024] + b"\xee" * 2048 + durable[3072:]
    assert new in contents
    torn = contents - {durable, new}
    assert torn
    for content in torn:
        assert len(content) == len(durable)
        for start in range(0, len(durable), SECTOR):
            sector = content[start : start + SECTOR]
            assert sector in (durable[start : start + SECTOR], new[start : start + SECTOR])


def test_a_dsync_write_makes_its_own_range_durable_not_the_rest_of_the_file() -> None:
    fs = SimulatedFileSystem({"/d/f": bytes(4096)})
    fd = fs.open_for_update("/d/f")
    fs.pwritev(fd, [b"a" * SECTOR], 0)  # in flight, never synced
    fs.pwritev_dsync(fd, [b"b" * SECTOR], 2048)
    contents = {state["/d/f"] for state in states_after_all(fs)}
    assert all(c[2048 : 2048 + SECTOR] == b"b" * SECTOR for c in contents)
    assert {c[:SECTOR] for c in contents} == {bytes(SECTOR), b"a" * SECTOR}


def test_writes_in_flight_together_persist_in_any_subset() -> None:
    fs = SimulatedFileSystem({"/d/f": bytes(8192)})
    fd = fs.open_for_update("/d/f")
    for index, byte in enumerate(b"xyz"):  # three segments written, none synced yet
        fs.pwritev(fd, [bytes([byte]) * SECTOR], 4096 + index * 1024)
    kept = {tuple(state["/d/f"][4096 + i * 1024] != 0 for i in range(3))
            for state in states_after_all(fs)}
    # Among others: a later write durable while an earlier one was lost.
    assert (False, True, False) in kept and (False, False, True) in kept
    assert (True, False, True) in kept and (False, True, True) in kept


def test_a_descriptor_writes_its_file_after_a_rename() -> None:
    fs = SimulatedFileSystem()
    fd = fs.open_for_write("/d/f.tmp")
    fs.rename("/d/f.tmp", "/d/f")
    fs.pwritev_dsync(fd, [b"after"], 0)
    assert fs.read_file("/d/f") == b"after"


def test_recovery_removes_a_log_file_left_half_created() -> None:
    # A crash while the pool created a log file leaves its .tmp; the reopened log must be
    # able to create the file of that number again.
    fs = SimulatedFileSystem({"/d/db-wal-0000000000000001.tmp": bytes(100)})
    assert recover("/d/db", fs=fs).removed_temp_files == ("/d/db-wal-0000000000000001.tmp",)
    with Wal.open("/d/db", WalConfig(lanes=2, log_file_bytes=64 << 10), fs=fs) as wal:
        wal.commit({1: b"x"}, timeout=60)
    assert recover("/d/db", fs=fs).page_images() == {1: b"x"}


def test_fsynced_data_survives_every_crash_state() -> None:
    fs = SimulatedFileSystem({"/d/f": OLD})
    write(fs, "/d/f", NEW, sync=True)
    assert {state["/d/f"] for state in states_after_all(fs)} == {NEW}


def test_a_rename_without_a_directory_fsync_may_be_undone() -> None:
    fs = SimulatedFileSystem()
    write(fs, "/d/f.tmp", b"data", sync=True)
    fs.rename("/d/f.tmp", "/d/f")
    names = [sorted(state) for state in states_after_all(fs)]
    assert [] in names and ["/d/f.tmp"] in names and ["/d/f"] in names
    fs.fsync_dir("/d")
    assert [sorted(state) for state in states_after_all(fs)] == [["/d/f"]]


def test_an_fsync_after_a_failed_fsync_makes_nothing_durable() -> None:
    fs = SimulatedFileSystem({"/d/f": OLD}, faults=[Fault("fsync", 1)])
    fd = fs.open_for_update("/d/f")
    fs.writev(fd, [NEW])
    with pytest.raises(OSError) as info:
        fs.fsync(fd)
    assert info.value.errno == errno.EIO
    fs.fsync(fd)  # "succeeds", as Linux reports after dropping the dirty pages
    assert OLD in [state["/d/f"] for state in states_after_all(fs)]


def test_faults_fail_the_nth_call_and_short_writes_write_less() -> None:
    fs = SimulatedFileSystem(faults=[Fault("writev", 2, errno.ENOSPC),
                                     Fault("writev", 3, short_write=True)])
    fd = fs.open_for_write("/d/f")
    assert fs.writev(fd, [b"a" * 10]) == 10
    with pytest.raises(OSError) as info:
        fs.writev(fd, [b"b" * 10])
    assert info.value.errno == errno.ENOSPC
    assert fs.writev(fd, [b"c" * 3000]) == 1024  # cut at a sector boundary
    assert fs.read_file("/d/f") == b"a" * 10 + b"c" * 1024
    short = SimulatedFileSystem(faults=[Fault("writev", 1, short_write=True)])
    fd = short.open_for_write("/d/g")
    assert short.writev(fd, [b"d" * 200]) == 200  # one sector is never split


def test_the_log_survives_every_simulated_power_loss() -> None:
    for seed in (11, 12):
        report = run_power_loss(seed=seed)
        assert report.ok, report.lines()
        assert report.states > 50 and report.acked_commits == 36
        # The commits hold more than a 64 KiB log file: the log moves on to the next file.
        assert report.log_files >= 2
        assert report.acked_verified > report.acked_commits
        assert report.reopened > 0


@pytest.mark.parametrize("name", sorted(set(MUTANTS) - {"leaves-acked-epoch-zero",
                                                        "appends-after-torn-tail"}))
def test_the_harness_reports_violations_for_each_broken_log(name: str) -> None:
    faults = ((Fault("fsync", 5, path=FIRST_LOG_FILE),) if name == "high-water-mark-durability"
              else ())
    report = run_power_loss(seed=21, commits_per_thread=6, wal_class=MUTANTS[name],
                            faults=faults)
    assert not report.ok
    assert report.lost + report.recovery_failures > 0
    assert all("seed 21, crash after op" in v for v in report.violations)


def test_a_log_that_appends_after_its_torn_tail_is_caught_on_reopen() -> None:
    report = run_power_loss(seed=21, commits_per_thread=6,
                            wal_class=MUTANTS["appends-after-torn-tail"])
    assert not report.ok
    assert all("not to a fresh file" in v for v in report.violations), report.lines()


def test_acked_epoch_zero_is_caught_by_damage_to_an_acknowledged_segment() -> None:
    # A power loss alone cannot show it (nothing acknowledged is ever damaged by one) ...
    assert run_power_loss(seed=21, commits_per_thread=6,
                          wal_class=MUTANTS["leaves-acked-epoch-zero"]).ok
    # ... but damage inside an acknowledged segment then passes for a torn tail.
    report = run_corruption(seed=21, header_stride=64, body_bits=2, tears=1,
                            wal_class=MUTANTS["leaves-acked-epoch-zero"])
    assert not report.ok
    assert "called it a torn tail" in report.violations[0]


def test_a_reader_that_ignores_salt_and_file_no_is_caught_reading_stale_segments() -> None:
    report = run_corruption(seed=21, header_stride=64, body_bits=2, tears=1,
                            reader=READER_MUTANTS["accepts-stale-segment"])
    assert report.violation_count > 0
    assert all("recycled (a new salt)" in v or "names another log file" in v
               for v in report.violations), report.lines()


def test_the_straddling_mutant_is_caught_with_a_single_writer_and_no_help_from_timing() -> None:
    # One writer: no other thread ever stages while it commits, so a seal can only slip in
    # because the mutant makes it; every seed must catch it.
    for seed in (1, 2, 3):
        report = run_power_loss(seed=seed, threads=1, commits_per_thread=3,
                                wal_class=MUTANTS["commit-straddles-epochs"])
        assert report.lost > 0, report.lines()


@pytest.mark.parametrize(("label", "faults", "must_break"), FAULT_PLANS,
                         ids=[label for label, _, _ in FAULT_PLANS])
def test_injected_faults_fail_closed_and_keep_every_acknowledged_commit(
    label: str, faults: tuple[Fault, ...], must_break: bool | None
) -> None:
    report = run_power_loss(seed=31, faults=faults)
    assert report.ok, report.lines()
    assert report.broken_log == must_break, report.lines()


def test_the_pager_survives_every_simulated_power_loss_with_checkpoints_running() -> None:
    report = run_pager_power_loss(seed=13, threads=3, checkpoint_every=2)
    assert report.ok, report.lines()
    assert report.states > 100 and report.acked_commits == 60
    assert report.acked_verified > report.acked_commits
    # Checkpoints hand filled log files back and one is recycled under a new number and salt
    # over its old segments; the search covered every crash point around that.
    assert report.log_files >= 2 and report.recycled >= 1, report.lines()


@pytest.mark.parametrize("name", sorted(PAGER_MUTANTS))
def test_the_harness_reports_violations_for_each_broken_pager(name: str) -> None:
    report = run_pager_power_loss(seed=22, commits_per_thread=6, pager_class=PAGER_MUTANTS[name])
    assert not report.ok
    assert report.partial + report.lost > 0


@pytest.mark.parametrize(("label", "faults", "must_break"), PAGER_FAULT_PLANS,
                         ids=[label for label, _, _ in PAGER_FAULT_PLANS])
def test_injected_checkpoint_faults_fail_closed_and_keep_every_committed_page(
    label: str, faults: tuple[Fault, ...], must_break: bool | None
) -> None:
    report = run_pager_power_loss(seed=32, faults=faults)
    assert report.ok, report.lines()
    assert must_break is None or report.broken_log == must_break, report.lines()


def test_corruption_of_acknowledged_segments_raises_and_of_the_tail_reads_as_torn() -> None:
    report = run_corruption(seed=41, header_stride=8, body_bits=4, tears=2)
    assert report.ok, report.lines()
    assert report.detected == report.tried > 16 * 128 // 8 * 8
    assert report.raised > 0 and report.torn_tails > 0


def test_kill_minus_nine_loses_no_acknowledged_commit(tmp_path: Path) -> None:
    report = run_kill_campaign(str(tmp_path), seed=51, kills=3, threads=4, max_delay=0.2)
    assert report.ok, report.lines()
    assert report.acked_commits > 0
    assert report.recovered_commits >= report.acked_commits
    with Wal.open(tmp_path / "crash-0.db", WalConfig(lanes=2)) as wal:  # the chain continues
        assert wal.recovery.last_commit_seq == report.recovered_commits


def test_kill_minus_nine_under_the_pager_loses_no_acknowledged_transaction(
    tmp_path: Path,
) -> None:
    report = run_kill_campaign(str(tmp_path), seed=52, kills=3, threads=4, max_delay=0.3,
                               workload="pager")
    assert report.ok, report.lines()
    assert report.acked_commits > 0
    assert report.acked_verified >= report.acked_commits  # each is checked after every kill
    assert "kill -9 (pager)" in report.lines()[0]


def test_the_campaign_prints_figures_and_counts_no_violation(tmp_path: Path) -> None:
    lines: list[str] = []
    # No kill -9 here (the kill tests above cover it) and few header bits.
    settings = CampaignSettings(seeds=1, threads=2, commits_per_thread=3, min_states=0, kills=0,
                                pager_seeds=0, header_stride=64)
    assert run_campaign(settings, seed=61, directory=str(tmp_path), say=lines.append) == 0
    text = "\n".join(lines)
    for figure in ("crash states tried", "lost = 0", "partial = 0", "corruptions detected",
                   "0 kills", "faults total: 16 / 16", "violations: 0"):
        assert figure in text


def test_segments_a_crashed_fsync_normal_run_left_unsynced_are_fsynced_on_reopen() -> None:
    # Run 1 (fsync=normal) is killed: its segments exist only in the page cache. Run 2
    # (fsync=full) chains onto them; its acknowledged commits must survive any power loss.
    db = "/reopen/db"
    first = SimulatedFileSystem()
    small = 64 << 10
    wal = Wal.open(db, WalConfig(lanes=2, epoch_interval_ms=60_000, fsync="normal",
                                 log_file_bytes=small), fs=first)
    for page in range(3):
        wal.commit({page: b"run one"})
    second = first.process_crash()
    wal.close()  # the first process is gone; what it does now reaches only `first`
    with Wal.open(db, WalConfig(lanes=2, epoch_interval_ms=1, log_file_bytes=small),
                  fs=second) as reopened:
        acked = reopened.commit({9: b"run two"})
    final_states = [s for _, _, s in crash_states(second.initial, second.ops,
                                                  points=[len(second.ops)],
                                                  rng=random.Random(0))]
    for state in final_states:
        result = recover(db, fs=SimulatedFileSystem(state))
        assert result.last_commit_seq == acked.commit_seq
        assert result.page_images()[9] == b"run two"
