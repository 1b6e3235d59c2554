"""The crash-recovery harness; the same as ``pagewal crash-test`` (see --help)."""

import sys

from pagewal._cli import main

if __name__ == "__main__":
    sys.exit(main(["crash-test", *sys.argv[1:]]))
