"""The crash-recovery harness: simulated power loss, fault injection, real ``kill -9`` and
corruption campaigns against pagewal's log and its pager, with figures and a non-zero exit on
a violation.

Run it with ``pagewal crash-test`` (``--long`` for the full campaign) or from Python.

A seed reproduces the workload, not the thread timing: every commit's pages are a function of
``(seed, txn_id)``, and the seed also picks the crash points and torn writes sampled, the
corruptions and the kill -9 delays. How threads group commits into epochs (so the exact file
operations, and what a killed child had done) varies between runs; a violation's report names
the crash state it was found in.
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
