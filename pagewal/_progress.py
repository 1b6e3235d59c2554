"""Progress bars for the long commands: drawn on a terminal, absent otherwise.

A bar is drawn only when its stream (stderr) is a terminal, so pipes, CI logs and files
receive the commands' output and nothing else. While a bar is shown, lines printed to stdout
go through it, so they appear above the bar instead of tearing it.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import TextIO, cast

from ._recovery import Progress


def is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


@contextlib.contextmanager
def progress_bar(
    description: str, *, unit: str, stream: TextIO | None = None
) -> Iterator[Progress | None]:
    """A ``progress(done, total)`` callback drawing a bar on ``stream`` (default: stderr), or
    ``None`` when ``stream`` is not a terminal (callers then skip the hook entirely)."""
    stream = sys.stderr if stream is None else stream
    if not is_terminal(stream):
        yield None
        return
    from tqdm import tqdm
    from tqdm.contrib import DummyTqdmFile

    with tqdm(desc=description, unit=unit, file=stream, leave=False, dynamic_ncols=True) as bar:

        def update(done: int, total: int) -> None:
            if bar.total != total:
                bar.total = total
            bar.update(done - bar.n)  # redrawn at most every mininterval
            if done >= total:
                bar.refresh()  # the finished state is always drawn, however fast

        with contextlib.redirect_stdout(cast(TextIO, DummyTqdmFile(sys.stdout))):
            yield update
