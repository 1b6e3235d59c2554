"""Progress bars for the long commands: drawn on a terminal, absent otherwise.

A bar is drawn only when its stream (stderr) is a terminal, so pipes, CI logs and files
receive the commands' output and nothing else. While a bar is shown, lines printed to stdout
are written above it instead of tearing it.
"""

from __future__ import annotations

import contextlib
import io
import sys
from collections.abc import Iterator
from typing import Any, TextIO, cast

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

    with tqdm(desc=description, unit=unit, file=stream, leave=False, dynamic_ncols=True) as bar:

        def update(done: int, total: int) -> None:
            if bar.total != total:
                bar.total = total
            bar.update(done - bar.n)  # redrawn at most every mininterval
            if done >= total:
                bar.refresh()  # the finished state is always drawn, however fast

        above = _LinesAboveBar(bar, sys.stdout)
        try:
            with contextlib.redirect_stdout(cast(TextIO, above)):
                yield update
        finally:
            above.close()


class _LinesAboveBar(io.TextIOBase):
    """Stands in for stdout while a bar is drawn: each whole line is written above the bar
    (bar cleared, line written, bar redrawn), so output and bar never share a line."""

    def __init__(self, bar: Any, stream: TextIO) -> None:
        super().__init__()
        self._bar = bar
        self._stream = stream
        self._pending = ""

    def write(self, text: str) -> int:
        lines, newline, self._pending = (self._pending + text).rpartition("\n")
        if newline:
            self._emit(lines + newline)
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def close(self) -> None:
        if self._pending:
            self._emit(self._pending)
            self._pending = ""
        super().close()

    def _emit(self, text: str) -> None:
        self._bar.clear()
        self._stream.write(text)
        self._stream.flush()
        self._bar.refresh()
