"""``pagewal crash-test``: every part of the harness in one run, with figures.

Quick (the default, under a minute): exhaustive power-loss search over small workloads, the
fault matrix, the corruption campaign and 20 + 10 kills (log, pager). ``long``: at least 10,000
crash states and 200 + 100 kills. The exit status is non-zero on any violation.
"""

from __future__ import annotations

import errno
import tempfile
from collections.abc import Callable

import attrs

from .._recovery import Progress
from ._corruption import run_corruption
from ._kill import run_kill_campaign
from ._mutants import MUTANTS, PAGER_MUTANTS, READER_MUTANTS
from ._pager_power_loss import run_pager_power_loss
from ._power_loss import PowerLossReport, run_power_loss
from ._simfs import Fault
from ._workload import Report

FIRST_LOG_FILE = "-wal-0000000000000001"
"""Faults limited to the first log file (once renamed from ``.tmp``: its segments and
ACTIVE header, not its creation) fail the same write or sync whatever the pool's thread does
meanwhile."""

FAULT_PLANS: tuple[tuple[str, tuple[Fault, ...], bool | None], ...] = (
    ("EIO on the 1st fsync (making the first log file ready)", (Fault("fsync", 1),), True),
    ("EIO on the 4th sync of the first log file (its 3rd segment)",
     (Fault("fsync", 4, path=FIRST_LOG_FILE),), True),
    ("EIO on every sync of the first log file from the 3rd",
     (Fault("fsync", 3, repeat=True, path=FIRST_LOG_FILE),), True),
    ("EIO on the 3rd segment write", (Fault("writev", 3),), True),
    ("ENOSPC on the 2nd segment write", (Fault("writev", 2, errno.ENOSPC),), True),
    ("EIO zero-filling the 2nd log file", (Fault("pwritev", 1, path="-wal-0000000000000002.tmp"),),
     True),
    ("EIO on the 2nd directory fsync (the 2nd log file's name)", (Fault("fsync_dir", 2),), True),
    ("EIO on the 2nd rename (the 2nd log file's name)", (Fault("rename", 2),), True),
    ("EIO creating every log file from the 2nd", (Fault("open_for_write", 2, repeat=True),),
     True),
    ("short writes (must be completed, not fail)",
     (Fault("writev", 1, short_write=True, repeat=True),
      Fault("pwritev", 1, short_write=True, repeat=True)), False),
)
"""(label, faults, whether the log must break). Every plan's workload fills its first log
file, so a fault on the second one's creation is met when the log moves on to it."""

PAGER_FAULT_PLANS: tuple[tuple[str, tuple[Fault, ...], bool | None], ...] = (
    ("pager: EIO on the 1st data file write", (Fault("pwritev", 1, path=".db"),), True),
    ("pager: EIO on the 2nd data file fsync", (Fault("fsync", 2, path=".db"),), True),
    # The 1st checkpoint file records the page size when the store is created; the 2nd is
    # the first checkpoint's.
    ("pager: EIO on the 2nd checkpoint file fsync",
     (Fault("fsync", 2, path="-wal-checkpoint.tmp"),), True),
    # A failed recycle is the pool's error, raised by the next file the log needs: whether
    # the workload needs one after it is a matter of timing, so either outcome is right.
    ("pager: EIO recycling the first log file (its rename)",
     (Fault("rename", 1, path=f"store.db{FIRST_LOG_FILE}"),), None),
    ("pager: EIO on the header write recycling a log file",
     (Fault("pwritev", 1, path=f"store.db{FIRST_LOG_FILE}"),), None),
    ("pager: short data file writes (must be completed, not fail)",
     (Fault("pwritev", 1, short_write=True, repeat=True),), False),
)
"""Faults in the pager's checkpoint and in recycling: (label, faults, whether the pager must
break; None: either, with every promise kept)."""

_SAMPLED_POINTS = 300
_MUTANT_FAULTS = {"high-water-mark-durability": (Fault("fsync", 5, path=FIRST_LOG_FILE),)}
_CORRUPTION_MUTANTS = {"leaves-acked-epoch-zero"}
"""Broken logs whose bug shows only when a disk damages what they wrote."""
_MUTANT_HEADER_STRIDE = 16


@attrs.frozen
class CampaignSettings:
    seeds: int
    threads: int
    commits_per_thread: int
    min_states: int
    kills: int
    sampled_workloads: int = 0  # large workloads whose crash points are sampled, not all tried
    pager_seeds: int = 2  # pager workloads (checkpoints running), every crash point tried
    header_stride: int = 8  # corruption: flip every n-th header bit (1: every bit)

    @classmethod
    def quick(cls) -> CampaignSettings:
        return cls(seeds=4, threads=3, commits_per_thread=8, min_states=0, kills=20,
                   pager_seeds=1)

    @classmethod
    def long(cls) -> CampaignSettings:
        return cls(seeds=10, threads=4, commits_per_thread=12, min_states=10_000, kills=200,
                   sampled_workloads=3, pager_seeds=8, header_stride=1)


def run_campaign(
    settings: CampaignSettings, *, seed: int, directory: str | None = None,
    say: Callable[[str], None] = print, progress: Progress | None = None,
) -> int:
    """Run every part; print figures; return the number of violations.

    ``progress(done, total)`` counts workloads, fault plans, the corruption campaign and kills;
    the total grows when the long campaign needs more workloads to reach its crash states.
    """
    steps = _Steps(progress, total=settings.seeds + settings.sampled_workloads
                   + settings.pager_seeds + len(FAULT_PLANS) + len(PAGER_FAULT_PLANS) + 1
                   + settings.kills + settings.kills // 2)
    violations = 0
    states = 0

    def tally(report: PowerLossReport) -> None:
        nonlocal violations, states
        states += report.states
        violations += report.violation_count
        for line in report.lines():
            say(line)
        steps.advance()

    run = 0
    while run < settings.seeds or states < settings.min_states:
        if run >= settings.seeds:
            steps.total += 1  # one more workload to reach min_states
        tally(run_power_loss(seed=seed + run, threads=settings.threads,
                             commits_per_thread=settings.commits_per_thread))
        run += 1
    for number in range(settings.sampled_workloads):
        tally(run_power_loss(seed=seed + run + number, threads=8, commits_per_thread=30,
                             max_points=_SAMPLED_POINTS))
    for number in range(settings.pager_seeds):
        # The pager's own workload size: enough commits that checkpoints recycle log files.
        tally(run_pager_power_loss(seed=seed + number))
    say(f"power loss total: {states} crash states over "
        f"{run + settings.sampled_workloads + settings.pager_seeds} workloads "
        f"({settings.pager_seeds} on the pager)")

    plans_ok = 0
    plans = [(label, faults, must_break, False) for label, faults, must_break in FAULT_PLANS]
    plans += [(label, faults, must_break, True) for label, faults, must_break in PAGER_FAULT_PLANS]
    for number, (label, faults, must_break, pager) in enumerate(plans):
        report = (run_pager_power_loss(seed=seed + number, faults=faults) if pager
                  else run_power_loss(seed=seed + number, faults=faults))
        fault_violations = report.violation_count
        if must_break is not None and report.broken_log != must_break:
            fault_violations += 1
            say(f"  VIOLATION {label}: the log {'did not break' if must_break else 'broke'}")
        else:
            plans_ok += 1
        violations += fault_violations
        say(f"fault: {label}: {report.states} crash states, acked {report.acked_commits}, "
            f"lost = {report.lost}, partial = {report.partial}, log broken: "
            f"{report.broken_log}; violations = {fault_violations}")
        for violation in report.violations:
            say(f"  VIOLATION {violation}")
        steps.advance()
    say(f"faults total: {plans_ok} / {len(plans)} plans failed closed as required")

    corruption = run_corruption(seed=seed, header_stride=settings.header_stride)
    violations += corruption.violation_count
    for line in corruption.lines():
        say(line)
    steps.advance()

    for workload, kills in (("wal", settings.kills), ("pager", settings.kills // 2)):
        with tempfile.TemporaryDirectory(dir=directory) as work:
            kill = run_kill_campaign(work, seed=seed, kills=kills, workload=workload,
                                     after_each=steps.advance)
        violations += kill.violation_count
        for line in kill.lines():
            say(line)
    say(f"violations: {violations}")
    return violations


@attrs.define
class _Steps:
    """Finished steps of a campaign, reported to a ``progress(done, total)`` hook."""

    progress: Progress | None
    total: int
    done: int = 0

    def advance(self) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, max(self.done, self.total))


def run_mutant(name: str, *, seed: int, say: Callable[[str], None] = print) -> int:
    """Run the power-loss search against a broken variant (and, for those a power loss alone
    cannot show, the corruption campaign); return its violation count."""
    reports: list[Report] = []
    if name in PAGER_MUTANTS:
        reports.append(run_pager_power_loss(seed=seed, commits_per_thread=6,
                                            pager_class=PAGER_MUTANTS[name]))
    elif name in READER_MUTANTS:
        with READER_MUTANTS[name]():
            reports.append(run_power_loss(seed=seed, commits_per_thread=6))
        reports.append(run_corruption(seed=seed, header_stride=_MUTANT_HEADER_STRIDE,
                                      reader=READER_MUTANTS[name]))
    else:
        reports.append(run_power_loss(seed=seed, wal_class=MUTANTS[name], commits_per_thread=6,
                                      faults=_MUTANT_FAULTS.get(name, ())))
        if name in _CORRUPTION_MUTANTS:
            reports.append(run_corruption(seed=seed, header_stride=_MUTANT_HEADER_STRIDE,
                                          wal_class=MUTANTS[name]))
    say(f"mutant {name}:")
    for report in reports:
        lines = report.lines()
        say_lines = lines[: len(report.summary())]
        say_lines += lines[len(report.summary()) : len(report.summary()) + 2]
        for line in say_lines:
            say(line)
    return sum(report.violation_count for report in reports)


def mutant_names() -> list[str]:
    """Every broken variant: logs, readers, then pagers."""
    return [*MUTANTS, *READER_MUTANTS, *PAGER_MUTANTS]


def self_check(
    *, seed: int, say: Callable[[str], None] = print, progress: Progress | None = None
) -> bool:
    """True when the harness reports violations for every broken variant."""
    names = mutant_names()
    caught = []
    for done, name in enumerate(names, 1):
        if run_mutant(name, seed=seed, say=say) > 0:
            caught.append(name)
        if progress is not None:
            progress(done, len(names))
    say(f"self-check: harness caught {len(caught)} / {len(names)} broken variants")
    return len(caught) == len(names)
