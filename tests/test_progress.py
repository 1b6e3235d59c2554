"""Progress bars: drawn on a terminal only; printed lines stay whole above the bar."""

from __future__ import annotations

import io
import re
import sys

import pytest

from pagewal._progress import progress_bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_off_a_terminal_there_is_no_hook_and_nothing_is_drawn(
    capsys: pytest.CaptureFixture[str]
) -> None:
    stream = io.StringIO()
    with progress_bar("work", unit="step", stream=stream) as progress:
        print("result")
    assert progress is None
    assert stream.getvalue() == ""
    assert capsys.readouterr().out == "result\n"


def test_on_a_terminal_the_bar_is_drawn_and_printed_lines_stay_whole(
    capsys: pytest.CaptureFixture[str]
) -> None:
    terminal = Terminal()
    with progress_bar("work", unit="step", stream=terminal) as progress:
        assert progress is not None
        print("first", "line")
        progress(1, 2)
        sys.stdout.write("second ")
        progress(2, 2)
        sys.stdout.write("line\nunfinished")
    drawn = terminal.getvalue()
    assert "work" in drawn and "2/2" in drawn
    assert capsys.readouterr().out == "first line\nsecond line\nunfinished"


def test_on_a_shared_terminal_each_line_is_written_after_the_bar_is_cleared(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    terminal = Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    with progress_bar("work", unit="step", stream=terminal) as progress:
        assert progress is not None
        progress(1, 3)
        print("a line")
        progress(3, 3)
    drawn = terminal.getvalue()
    # The bar's line is blanked ("\r   \r") before the output, never continued by it.
    assert re.search(r"\r +\ra line\n", drawn), repr(drawn)
    assert "3/3" in drawn.split("a line\n", 1)[1]  # and drawn again below it
