"""The ``pagewal`` command line (also ``python -m pagewal``).

Expected failures (a bad variable, a corrupt segment, a missing directory) print one line and
exit non-zero; only bugs produce a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from ._config import WalConfig, config_sources, knob_variables
from ._demo import run_demo
from ._errors import ConfigError, PagewalError

EXIT_FAILED = 1
EXIT_USAGE = 2


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pagewal", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="commit random pages from many threads, then recover and verify them")
    demo.add_argument("directory", nargs="?", default="pagewal-demo",
                      help="where to keep the demo log (default: ./pagewal-demo)")
    demo.add_argument("--threads", type=_positive_int, default=4, help="committing threads")
    demo.add_argument("--seconds", type=_positive_float, default=3.0, help="how long to commit")
    commands.add_parser("env", help="print the effective configuration and where it came from")
    crash = commands.add_parser(
        "crash-test", help="power-loss, fault, corruption and kill -9 campaigns; exit 1 on a "
        "violation")
    crash.add_argument("--long", action="store_true",
                       help="at least 10,000 crash states and 200 kills")
    crash.add_argument("--seed", type=int, default=None, help="reproduce a run (default: random)")
    crash.add_argument("--dir", default=None, help="where the kill -9 children write")
    crash.add_argument("--mutant", default=None,
                       help="run against a deliberately broken log (must report violations)")
    crash.add_argument("--self-check", action="store_true",
                       help="check the harness catches every deliberately broken log")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "demo":
            return _demo(args)
        if args.command == "crash-test":
            return _crash_test(args)
        return _env()
    except ConfigError as error:
        print(f"pagewal: configuration error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except PagewalError as error:
        print(f"pagewal: {error}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as error:
        print(f"pagewal: {error}", file=sys.stderr)
        return EXIT_USAGE


def _demo(args: argparse.Namespace) -> int:
    report = run_demo(os.fspath(args.directory), threads=args.threads, seconds=args.seconds,
                      config=WalConfig.from_env())
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
        return 0 if _campaign.self_check(seed=seed, say=say) else EXIT_FAILED
    if args.mutant is not None:
        if args.mutant not in _campaign.mutant_names():
            print(f"pagewal: unknown mutant {args.mutant!r}; one of "
                  f"{', '.join(_campaign.mutant_names())}", file=sys.stderr)
            return EXIT_USAGE
        return EXIT_FAILED if _campaign.run_mutant(args.mutant, seed=seed, say=say) else 0
    settings = (_campaign.CampaignSettings.long() if args.long
                else _campaign.CampaignSettings.quick())
    violations = _campaign.run_campaign(settings, seed=seed, directory=args.dir, say=say)
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
