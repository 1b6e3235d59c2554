"""The suite's own guards (tests/conftest.py): a hung or thread-leaking test fails, and the
session ends instead of waiting forever for a thread at exit. Each runs a small pytest session
in a subprocess with this conftest (its join bound cut to 1 s)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

_CONFTEST = (Path(__file__).parent / "conftest.py").read_text()


def run_session(pytester: pytest.Pytester, test_source: str,
                *args: str) -> pytest.RunResult:
    pytester.makeconftest(_CONFTEST.replace("JOIN_SECONDS = 60.0", "JOIN_SECONDS = 1.0"))
    pytester.makepyfile(test_source)
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=240)


def test_a_test_leaving_a_stuck_thread_fails_and_the_session_still_exits(
    pytester: pytest.Pytester,
) -> None:
    result = run_session(pytester, """
        import threading

        def test_leaves_a_thread_waiting_forever():
            threading.Thread(target=threading.Event().wait, name="stuck-forever").start()

        def test_after_it():
            pass
    """)
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*the test left non-daemon threads running*stuck-forever*"])
    assert "non-daemon threads still running after the session: stuck-forever" in "\n".join(
        result.errlines)
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_a_failing_test_releases_and_joins_the_threads_it_started(
    pytester: pytest.Pytester,
) -> None:
    result = run_session(pytester, """
        import threading

        def test_fails_while_a_thread_waits_on_its_gate(background):
            gate = threading.Event()
            background.release_on_exit(gate)
            background.start(gate.wait, "gated")
            assert False, "failed before opening the gate"
    """)
    result.assert_outcomes(failed=1)
    assert "still running" not in result.stdout.str() + "\n".join(result.errlines)
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_an_exception_in_a_background_thread_fails_the_test(pytester: pytest.Pytester) -> None:
    result = run_session(pytester, """
        def test_thread_raises(background):
            def boom():
                raise ValueError("raised in the thread")
            background.start(boom)
            background.join()
    """)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*ValueError: raised in the thread*"])


def test_a_test_stuck_waiting_fails_at_its_timeout(pytester: pytest.Pytester) -> None:
    result = run_session(pytester, """
        import threading

        def test_waits_forever(background):
            gate = threading.Event()
            background.release_on_exit(gate)
            background.start(gate.wait, "gated")
            threading.Event().wait()

        def test_after_it():
            pass
    """, "-o", "timeout=2", "-o", "timeout_method=signal")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*Timeout (>2.0s)*"])
