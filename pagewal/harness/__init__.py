"""The crash-recovery harness: simulated power loss, fault injection, real ``kill -9`` and
corruption campaigns against pagewal's log and its pager, with figures and a non-zero exit on
a violation.

Run it with ``pagewal crash-test`` (``--long`` for the full campaign) or from Python.
"""

from ._mutants import MUTANTS, PAGER_MUTANTS
from ._pager_power_loss import pager_commit_pages, run_pager_power_loss
from ._power_loss import PowerLossReport, run_power_loss
from ._simfs import Fault, Op, SimulatedFileSystem, crash_states
from ._workload import Verdict, commit_pages, verify

__all__ = [
    "MUTANTS",
    "PAGER_MUTANTS",
    "Fault",
    "Op",
    "PowerLossReport",
    "SimulatedFileSystem",
    "Verdict",
    "commit_pages",
    "crash_states",
    "pager_commit_pages",
    "run_pager_power_loss",
    "run_power_loss",
    "verify",
]
