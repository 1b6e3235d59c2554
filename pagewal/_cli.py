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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "demo":
            return _demo(args)
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
