"""The ``pagewal`` command line (also ``python -m pagewal``).

Argument parsing and printing only: the operator commands read logs through the same recovery
loop and codec as everything else (``_recovery``, ``_codec``) and build their reports with
the pure functions of ``_inspect``.

Expected failures (a bad variable, a corrupt segment, a missing directory, a locked log)
print one line, ``pagewal: error: ...``, to stderr and exit non-zero: 1 when the log is
corrupt or the operation failed, 2 for usage and I/O errors. Only bugs produce a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import stat
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import NoReturn

import numpy as np

from ._chain import RecoveryResult
from ._codec import ChainPosition, SegmentHeader, decode_header, decode_segment
from ._config import WalConfig, config_sources, knob_variables
from ._demo import fresh_directory, run_demo
from ._errors import (
    CheckpointMissingError,
    ConfigError,
    CorruptSegmentError,
    ForeignFileError,
    PagewalError,
)
from ._fs import OsFileSystem, not_a_regular_file
from ._inspect import (
    InspectReport,
    LogFileImageOrError,
    SegmentFile,
    dump_lines,
    epoch_ranges,
    file_segments,
    log_file_rows,
    rebuild_lines,
    recovery_lines,
    segment_rows,
    unreadable_log_report,
    verify_report,
)
from ._layout import (
    CheckpointRecord,
    FileState,
    LogFiles,
    LogListing,
    ShutdownMarker,
    databases_with_logs,
    decode_file_header,
    decode_segment_v2,
    list_log_files,
)
from ._pager import WalPager
from ._progress import progress_bar
from ._recovery import read_log, rebuild_checkpoint, recover, survey_log

DEMO_DIRECTORY = "pagewal-demo"
"""Where ``pagewal demo`` keeps its store when no directory is given."""

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

BENCH_EXTRAS = ("matplotlib", "rocksdict", "lmdb")
"""Modules ``bench.compare`` needs beyond pagewal's own dependencies (the ``bench`` extra)."""


class UsageError(Exception):
    """The command line names something that is not there (exit status 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, like every other failure, instead of argparse's usage block.
        self.exit(EXIT_USAGE, f"pagewal: error: {message} (see '{self.prog} --help')\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def _epoch(text: str) -> int:
    try:
        value = int(text, 0)  # decimal, or 0x... as in segment file names
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an epoch number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not an epoch (epochs start at 1)")
    return value


DESCRIPTION = ("Inspect, verify, dump and recover the write-ahead log beside a database file; "
               "run the demo, the crash tests and the benchmarks.")


def _program_name() -> str:
    """How the user ran us: ``pagewal`` (the installed script) or ``python3 -m pagewal``."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name == "pagewal.__main__":
        return f"{os.path.basename(sys.executable) or 'python3'} -m pagewal"
    return "pagewal"


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=_program_name(), description=DESCRIPTION)
    commands = parser.add_subparsers(dest="command", required=True)
    path_help = "the database path; its log files lie beside it (as for Wal.open)"
    inspect = commands.add_parser(
        "inspect", help="list a log's files and segments, their chain status, the torn tail, "
        "the clean-shutdown marker, the checkpoint and stray files")
    inspect.add_argument("path", help=path_help)
    inspect.add_argument("--json", action="store_true", help="print a machine-readable report")
    verify = commands.add_parser(
        "verify", help="validate a log read-only; exit 0 if valid (a torn tail of epochs never "
        "acknowledged is reported, and is not damage), 1 if corrupt, 2 on errors")
    verify.add_argument("path", help=path_help)
    verify.add_argument("--json", action="store_true", help="print a machine-readable report")
    dump = commands.add_parser(
        "dump", help="print the records of one segment in file order (found in its log file, "
        "or its format 1 segment file)")
    dump.add_argument("path", help=path_help)
    dump.add_argument("--epoch", type=_epoch, required=True, help="the segment's epoch")
    recover_command = commands.add_parser(
        "recover", help="recover the log (takes its lock, removes leftover temporary files)")
    recover_command.add_argument("path", help=path_help)
    recover_command.add_argument(
        "--skip-corrupt", action="store_true",
        help="keep the valid prefix of the chain and list the segments left out")
    recover_command.add_argument(
        "--checkpoint", action="store_true",
        help="then write the recovered pages into the data file PATH (WalPager layout: page_no "
             "x page size), record a checkpoint and delete the applied segments")
    recover_command.add_argument(
        "--page-size", type=_positive_int, default=None,
        help="page size for --checkpoint (default: the recorded one, else the log's image size, "
             "else 4096); with --rebuild-checkpoint, the page size to record")
    recover_command.add_argument(
        "--rebuild-checkpoint", action="store_true",
        help="first rebuild a lost or damaged checkpoint record from the surviving segments "
             "(the first one's prev_epoch and commit_seq_lo - 1), then recover")
    recover_command.add_argument(
        "--epoch", type=_non_negative_int, default=None, dest="rebuild_epoch",
        help="with --rebuild-checkpoint and no segment to vouch: the epoch to record")
    recover_command.add_argument(
        "--commit-seq", type=_non_negative_int, default=None, dest="rebuild_commit_seq",
        help="with --rebuild-checkpoint and no segment to vouch: the commit_seq to record")
    commands.add_parser(
        "bench", add_help=False,
        help="run the benchmark suite (bench.compare; source checkout only); arguments are "
             "passed through, see 'pagewal bench --help'")
    demo = commands.add_parser(
        "demo", help="commit random pages from many threads, then recover and verify them")
    demo.add_argument("directory", nargs="?", default=None,
                      help="where to keep the demo store; refused if it already holds one "
                           f"(default: ./{DEMO_DIRECTORY}, or a fresh run-N directory in it "
                           "when it already holds one)")
    demo.add_argument("--threads", type=_positive_int, default=4, help="committing threads")
    demo.add_argument("--seconds", type=_positive_float, default=3.0, help="how long to commit")
    commands.add_parser("env", help="print the effective configuration and where it came from")
    crash = commands.add_parser(
        "crash-test", help="power-loss, fault, corruption and kill -9 campaigns; exit 1 on a "
        "violation")
    crash.add_argument("--long", action="store_true",
                       help="at least 10,000 crash states and 200 kills")
    crash.add_argument(
        "--seed", type=int, default=None,
        help="reproduce a run's workload (default: random): every commit's pages, the crash "
             "points and torn writes sampled, the corruptions and the kill delays. Thread "
             "timing is not reproduced: a rerun may group commits into epochs differently, "
             "so a violation it found may not recur; its report names the state")
    crash.add_argument("--dir", default=None, help="where the kill -9 children write")
    crash.add_argument("--mutant", default=None,
                       help="run against a deliberately broken log (must report violations)")
    crash.add_argument("--self-check", action="store_true",
                       help="check the harness catches every deliberately broken log")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args, passed_through = parser.parse_known_args(argv)
    if passed_through and args.command != "bench":
        parser.error(f"unrecognized arguments: {' '.join(passed_through)}")
    try:
        if args.command == "bench":
            return _bench(passed_through)
        if args.command == "demo":
            return _demo(args)
        if args.command == "crash-test":
            return _crash_test(args)
        if args.command == "inspect":
            return _inspect(args)
        if args.command == "verify":
            return _verify(args)
        if args.command == "dump":
            return _dump(args)
        if args.command == "recover":
            return _recover(args)
        return _env()
    except (ConfigError, UsageError) as error:
        return _fail(str(error), EXIT_USAGE)
    except PagewalError as error:  # corrupt segment, locked or broken log
        return _fail(str(error), EXIT_FAILED)
    except BrokenPipeError:
        # The reader went away (``pagewal dump ... | head``): not an error worth a line.
        _silence_stdout()
        return EXIT_FAILED
    except OSError as error:
        return _fail(str(error), EXIT_USAGE)
    except KeyboardInterrupt:
        return _fail("interrupted", EXIT_INTERRUPTED)


def _fail(message: str, status: int) -> int:
    print(f"pagewal: error: {message}", file=sys.stderr)
    return status


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a real file (tests capture it)
        pass


def _print_lines(lines: Sequence[str]) -> None:
    sys.stdout.write("".join(f"{line}\n" for line in lines))


# --------------------------------------------------------------------------- operator commands


def _find_log(path: str) -> tuple[LogFiles, LogListing]:
    """The log beside database ``path``; a :class:`UsageError` when there is none."""
    if os.path.isdir(path):
        names = os.listdir(path)
        found = [os.path.join(path, name) for name in databases_with_logs(names)]
        raise UsageError(f"{path} is a directory; give the database path whose log lies in it"
                         + (f", e.g. {found[0]}" if found else " (no pagewal log is there)"))
    try:
        files = LogFiles.for_db(path)
    except ValueError as error:
        raise UsageError(str(error)) from None
    try:
        names = os.listdir(files.directory)
    except FileNotFoundError:
        raise UsageError(f"no such directory: {files.directory}") from None
    except NotADirectoryError:
        raise UsageError(f"not a directory: {files.directory}") from None
    listing = list_log_files(files.db_name, names)
    if listing.empty:
        others = databases_with_logs(names)
        raise UsageError(
            f"no pagewal log for {files.path(files.db_name)}: no {files.db_name}-wal-* files in "
            f"{files.directory}" + (f" (logs there: {', '.join(others)})" if others else ""))
    return files, listing


def _inspect(args: argparse.Namespace) -> int:
    files, listing = _find_log(args.path)
    db_path = files.path(files.db_name)
    fs = OsFileSystem()
    checkpoint: CheckpointRecord | CorruptSegmentError | ForeignFileError | None = None
    chain: RecoveryResult | None = None
    with progress_bar("inspect", unit="segment") as progress:
        try:
            # Files recovery would refuse are left out here and listed below.
            chain = read_log(db_path, skip_corrupt=True, keep_records=False, fs=fs,
                             progress=progress, tolerate_foreign=True)
        except (CorruptSegmentError, ForeignFileError) as error:  # the checkpoint record: the
            checkpoint = error                                    # chain cannot start
        else:
            if listing.checkpoint or chain.base != ChainPosition():
                checkpoint = CheckpointRecord(position=chain.base, page_size=chain.page_size)
        segments: list[SegmentFile] = []
        for epoch, name in listing.segments:
            path = files.path(name)
            header: SegmentHeader | CorruptSegmentError | ForeignFileError
            try:
                # Looked at before it is opened: a fifo there must not block inspect.
                what = not_a_regular_file(fs, path)
                if what is not None:
                    segments.append(SegmentFile(epoch, path, 0, ForeignFileError(((path, what),))))
                    continue
                data = fs.read_file(path)
            except FileNotFoundError:  # a live log's checkpoint removed it meanwhile
                continue
            except ForeignFileError as error:  # replaced since it was looked at
                segments.append(SegmentFile(epoch, path, 0, error))
                continue
            try:
                header = decode_header(data, path)
            except CorruptSegmentError as error:
                header = error
            segments.append(SegmentFile(epoch, path, len(data), header))
        images: list[LogFileImageOrError] = []
        for file_no, name in listing.log_files:
            path = files.path(name)
            try:
                what = not_a_regular_file(fs, path)
                images.append(LogFileImageOrError(path, file_no, what if what is not None
                                                  else fs.read_file(path)))
            except FileNotFoundError:  # recycled or deleted meanwhile
                continue
            except ForeignFileError as error:
                images.append(LogFileImageOrError(path, file_no, error.files[0][1]))
        log_files = log_file_rows(images, chain)
        try:
            foreign = survey_log(files, fs, sorted(fs.listdir(files.directory))).foreign
        except ForeignFileError as error:
            foreign = error.files
        except (CorruptSegmentError, FileNotFoundError):  # reported above, or vanished
            foreign = ()
    unchecked = ("the checkpoint is not a regular file" if isinstance(checkpoint, ForeignFileError)
                 else "the checkpoint record is lost")
    report = InspectReport(
        db_path=db_path, checkpoint=checkpoint,
        rows=tuple(segment_rows(chain, segments, unchecked)),
        temporary=_sizes(files, listing.temporary), quarantined=_sizes(files, listing.quarantined),
        last=chain.last if chain else None, warnings=chain.warnings if chain else (),
        foreign=tuple((os.path.basename(path), what) for path, what in foreign),
        log_files=tuple(log_files), scan=chain.log_scan if chain else None,
        damage=(chain.log_scan.skipped[0] if chain and chain.log_scan and chain.log_scan.skipped
                else None))
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        _print_lines(report.lines())
    return 0


def _sizes(files: LogFiles, names: Sequence[str]) -> tuple[tuple[str, int], ...]:
    """Regular files only, never following a symbolic link: the others are listed as not the
    log's own."""
    sizes = []
    for name in names:
        try:
            status = os.lstat(files.path(name))
        except FileNotFoundError:  # a live writer published or removed it meanwhile
            continue
        if stat.S_ISREG(status.st_mode):
            sizes.append((name, status.st_size))
    return tuple(sizes)


def _verify(args: argparse.Namespace) -> int:
    files, _ = _find_log(args.path)
    db_path = files.path(files.db_name)
    foreign: ForeignFileError | None = None
    with progress_bar("verify", unit="segment") as progress:
        try:
            # Read-only and lock-free (safe beside a live writer), through the same loop as
            # recovery; skip_corrupt so the valid prefix is measured too.
            # keep_records=False: the report needs the chain, not the records, so memory
            # stays that of the largest segment, not of the log.
            report = verify_report(db_path, read_log(db_path, skip_corrupt=True,
                                                     keep_records=False, progress=progress))
        except CorruptSegmentError as error:  # the checkpoint file: the chain cannot start
            report = unreadable_log_report(db_path, error)
        except ForeignFileError as error:  # recovery would refuse to start
            report, foreign = unreadable_log_report(db_path, error), error
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        _print_lines(report.lines())
    if report.error is None:
        return 0
    if foreign is not None:
        return _fail(str(foreign), EXIT_FAILED)
    problem = report.error
    return _fail(f"{problem.path}: corrupt at offset {problem.offset}: {problem.reason}",
                 EXIT_FAILED)


def _dump(args: argparse.Namespace) -> int:
    files, listing = _find_log(args.path)
    fs = OsFileSystem()
    epochs = [epoch for epoch, _ in listing.segments]
    if args.epoch in epochs:  # a format 1 segment file of its own
        path = files.segment_path(args.epoch)
        segment = decode_segment(fs.read_file(path), path, expected_epoch=args.epoch)
        _print_lines(dump_lines(segment))
        return 0
    # Newest file first: should an earlier life's or a discarded tail's segment carry the
    # same epoch, the one a later file holds is the one the chain went on with.
    for file_no, name in reversed(listing.log_files):
        path = files.path(name)
        if not_a_regular_file(fs, path) is not None:
            continue
        try:
            data = fs.read_file(path)
        except FileNotFoundError:  # recycled or deleted meanwhile
            continue
        try:
            header = decode_file_header(data, path)
        except CorruptSegmentError:
            continue
        if header.state is not FileState.ACTIVE or header.file_no != file_no:
            continue  # a spare: whatever it holds is not this file's
        for item in file_segments(data, path, header):
            if not isinstance(item.header, SegmentHeader):
                continue
            epochs.append(item.header.epoch)
            if item.header.epoch == args.epoch:
                found = decode_segment_v2(data, path, item.offset, header)
                assert not isinstance(found, ShutdownMarker)
                _print_lines(dump_lines(found, item.offset))
                return 0
    raise UsageError(
        f"no segment of epoch {args.epoch} beside {files.path(files.db_name)} "
        f"(segments: {epoch_ranges(epochs) or 'none'})")


def _recover(args: argparse.Namespace) -> int:
    files, _ = _find_log(args.path)
    db_path = files.path(files.db_name)
    given = (args.rebuild_epoch, args.rebuild_commit_seq)
    if given != (None, None) and (None in given or not args.rebuild_checkpoint):
        raise UsageError("--epoch and --commit-seq go together, with --rebuild-checkpoint")
    if args.rebuild_checkpoint:
        position = None if None in given else ChainPosition(*given)
        try:
            rebuilt = rebuild_checkpoint(db_path, page_size=args.page_size, position=position)
        except ValueError as error:
            raise UsageError(str(error)) from None
        _print_lines(rebuild_lines(rebuilt))
    try:
        with progress_bar("recover", unit="segment") as progress:
            result = recover(db_path, skip_corrupt=args.skip_corrupt, progress=progress)
    except CheckpointMissingError as error:
        return _fail(str(error), EXIT_FAILED)
    except CorruptSegmentError as error:
        return _fail(f"{error} (--skip-corrupt keeps the valid prefix)", EXIT_FAILED)
    # The checkpoint runs before anything is printed: if it cannot (the log is open elsewhere,
    # the file system is read-only), its error is the whole output.
    checkpoint = _checkpoint_lines(db_path, result, args) if args.checkpoint else []
    _print_lines(recovery_lines(db_path, result) + checkpoint)
    return 0


def _checkpoint_lines(db_path: str, result: RecoveryResult, args: argparse.Namespace) -> list[str]:
    """``recover --checkpoint``: open the store as a pager, which applies the log and retires
    the applied segments (``skip_corrupt`` quarantines what recovery left out)."""
    lengths = np.unique(result.records["image_length"]).tolist()
    if len(lengths) > 1:
        raise UsageError(f"--checkpoint needs pages of one size, but the log holds images of "
                         f"{', '.join(map(str, lengths))} bytes: it was not written by a "
                         "WalPager; nothing was changed")
    page_size = args.page_size or result.page_size or (int(lengths[0]) if lengths else 4096)
    started = time.perf_counter()
    with WalPager.open(db_path, page_size, WalConfig.from_env(),
                       skip_corrupt=args.skip_corrupt) as pager:
        stats = pager.statistics()
    position = stats.checkpoint_position
    return [f"checkpointed {stats.pages_checkpointed:,} pages of {page_size} bytes into "
            f"{db_path} in {time.perf_counter() - started:.3f} s; checkpoint at epoch "
            f"{position.epoch}, commit_seq {position.commit_seq}; segments applied were deleted"]


def _bench(arguments: Sequence[str]) -> int:
    compare = _load_bench()
    program = sys.argv[0]
    sys.argv[0] = "pagewal bench"  # the suite's own usage and errors then name this command
    try:
        with progress_bar("bench", unit="step") as progress:
            status = compare.main(list(arguments), progress=progress)
    finally:
        sys.argv[0] = program
    return int(status)


def _load_bench() -> ModuleType:
    """``bench.compare`` of the source checkout this pagewal comes from.

    ``bench`` is not part of the installed package; an editable install or a clone has it
    beside ``pagewal/``, which is put on the path so ``pagewal bench`` works from anywhere.
    """
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "bench" / "compare.py").is_file() and str(checkout) not in sys.path:
        sys.path.insert(0, str(checkout))
    missing = [name for name in BENCH_EXTRAS if importlib.util.find_spec(name) is None]
    try:
        if missing:
            raise ImportError(f"missing {', '.join(missing)}")
        return importlib.import_module("bench.compare")
    except ImportError as error:
        raise UsageError(
            f"the benchmark suite is not available ({error}): run it from a source checkout "
            "after pip install -e '.[bench]'") from None


def _demo(args: argparse.Namespace) -> int:
    config = WalConfig.from_env()
    directory = args.directory
    if directory is None:
        directory = fresh_directory(DEMO_DIRECTORY)
        if directory != DEMO_DIRECTORY:
            print(f"{DEMO_DIRECTORY} holds the store of an earlier run, so this one goes to "
                  f"{directory} (rm -r {DEMO_DIRECTORY} removes them all)")
    report = run_demo(os.fspath(directory), threads=args.threads, seconds=args.seconds,
                      config=config)
    for line in report.lines():
        print(line)
    return 0 if report.ok else EXIT_FAILED


def _crash_test(args: argparse.Namespace) -> int:
    import random

    from .harness import _campaign

    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 30)
    print(f"seed {seed} (rerun with --seed {seed})", flush=True)

    def say(line: str) -> None:
        print(line, flush=True)

    if args.self_check:
        with progress_bar("self-check", unit="variant") as progress:
            passed = _campaign.self_check(seed=seed, say=say, progress=progress)
        return 0 if passed else EXIT_FAILED
    if args.mutant is not None:
        names = _campaign.mutant_names()
        if args.mutant not in names:
            raise UsageError(f"unknown mutant {args.mutant!r}; one of {', '.join(names)}")
        return EXIT_FAILED if _campaign.run_mutant(args.mutant, seed=seed, say=say) else 0
    settings = (_campaign.CampaignSettings.long() if args.long
                else _campaign.CampaignSettings.quick())
    with progress_bar("crash-test", unit="step") as progress:
        violations = _campaign.run_campaign(settings, seed=seed, directory=args.dir, say=say,
                                            progress=progress)
    return EXIT_FAILED if violations else 0


def _env() -> int:
    config = WalConfig.from_env()
    sources = config_sources()
    variables = knob_variables()
    effective = {
        "lanes": f"{config.lanes} (effective {config.effective_lanes})",
        "max_batch_bytes": f"{config.max_batch_bytes} (effective "
                           f"{config.effective_max_batch_bytes})",
        "max_flush_delay_ms": f"{config.max_flush_delay_ms} (effective "
                              f"{config.effective_max_flush_delay_ms:g})",
    }
    width = max(len(v) for v in variables.values())
    for field, variable in variables.items():
        value = effective.get(field, str(getattr(config, field)))
        print(f"{variable:<{width}}  {value:<28}  {sources[field]}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
