"""pytest glue for running CPython's test.test_asyncio on the loop under test.

* picks the loop from GLIBLOOP_CPYTHON_LOOP (glibloop, asyncio or uvloop), failing loudly
  if it cannot be imported;
* installs a policy whose new loops are loops under test around every test, and
  restores the previous policy afterwards;
* after each test, puts back signal handlers and the wakeup fd it changed and fails it
  if it left a running loop set;
* turns tests listed in known_failures.txt into skips (or, with GLIBLOOP_CPYTHON_ALL,
  into non-strict xfails, so the ones that now pass show up as XPASS);
* kills the run with every thread's traceback if one test hangs
  (GLIBLOOP_CPYTHON_TIMEOUT seconds, default 120, 0 disables).
"""

from __future__ import annotations

import asyncio
import faulthandler
import os
import pathlib
import signal
import threading
import warnings

import pytest

from . import _harness
from ._known_failures import ALL_ENV, KnownFailures, sections_to_run

HERE = pathlib.Path(__file__).resolve().parent
TIMEOUT_ENV = "GLIBLOOP_CPYTHON_TIMEOUT"
DEFAULT_TIMEOUT = 120.0

LOOP = _harness.LOOP
KNOWN = KnownFailures.load()
RUN_LISTED = sections_to_run()

_stats = {"collected": 0, "skipped": 0, "xfail": 0}
_xpassed: list[str] = []


def harness_test_id(item: pytest.Item) -> str | None:
    """``test_events.py::Class::test_x`` for our items, None for anyone else's."""
    path = pathlib.Path(item.path).resolve()
    if path.parent != HERE:
        return None
    return "::".join([path.name, *item.nodeid.split("::")[1:]])


def pytest_report_header(config):
    return (
        f"cpython harness: loop under test {LOOP.name}"
        f" ({LOOP.loop_class.__module__}.{LOOP.loop_class.__qualname__})"
    )


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    for item in items:
        test_id = harness_test_id(item)
        if test_id is None:
            continue
        _stats["collected"] += 1
        entry = KNOWN.lookup(test_id, LOOP.name)
        if entry is None:
            continue
        if entry.section in RUN_LISTED:
            _stats["xfail"] += 1
            item.add_marker(pytest.mark.xfail(reason=entry.describe(), strict=False))
        else:
            _stats["skipped"] += 1
            item.add_marker(pytest.mark.skip(reason=entry.describe()))


def pytest_runtest_logreport(report):
    if report.when == "call" and report.passed and hasattr(report, "wasxfail"):
        _xpassed.append(report.nodeid)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not _stats["collected"]:
        return
    tr = terminalreporter
    tr.write_sep("-", "CPython test_asyncio harness")
    tr.write_line(
        f"loop under test: {LOOP.name} ({_harness.LOOP_ENV}); "
        f"{_stats['collected']} tests collected, known_failures.txt listed"
        f" {_stats['skipped']} as skipped and {_stats['xfail']} as xfail"
        f" ({ALL_ENV}={os.environ.get(ALL_ENV, '')!r})"
    )
    if _xpassed:
        tr.write_line(f"{len(_xpassed)} listed tests passed; drop them from known_failures.txt:")
        for nodeid in _xpassed:
            tr.write_line(f"  {nodeid}")


@pytest.fixture(autouse=True)
def loop_under_test_policy():
    """New loops come from the loop under test for the whole test, setUp and tearDown
    included; the policy in force before the test is put back afterwards."""
    saved = _harness.current_policy()
    _harness.install_policy(_harness.LoopUnderTestPolicy())
    try:
        yield
    finally:
        _harness.install_policy(saved)
        leaked = asyncio._get_running_loop()
        if leaked is not None:
            # Later tests would all fail with "another loop is running"; blame this one.
            asyncio.events._set_running_loop(None)
            pytest.fail(f"the test left {leaked!r} set as this thread's running loop")


class SignalStateLeaked(pytest.PytestWarning):
    """A test left a signal handler or the signal wakeup fd changed."""


def _python_signal_handlers():
    handlers = {}
    for signum in signal.valid_signals():
        try:
            handler = signal.getsignal(signum)
        except (OSError, ValueError):
            continue
        if handler is not None:  # None: not installed from Python, cannot be restored
            handlers[signum] = handler
    return handlers


@pytest.fixture(autouse=True)
def signal_state_restored():
    """A test that fails half way through (say, before remove_signal_handler) can leave a
    loop's handler installed; the next test that raises SIGINT would then hang.  Put
    handlers and the wakeup fd back and say which test left them."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = _python_signal_handlers()
    wakeup_fd = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(wakeup_fd)
    yield
    changed = []
    for signum, handler in before.items():
        if signal.getsignal(signum) is not handler:
            signal.signal(signum, handler)
            changed.append(signal.Signals(signum).name)
    leaked_fd = signal.set_wakeup_fd(wakeup_fd)
    if leaked_fd != wakeup_fd:
        changed.append(f"wakeup fd {leaked_fd}")
    if changed:
        warnings.warn(SignalStateLeaked(f"restored after the test: {', '.join(changed)}"))


@pytest.fixture(scope="session")
def hang_watchdog_fd(pytestconfig):
    """A duplicate of the real stderr to dump tracebacks to, or None when disabled."""
    timeout = float(os.environ.get(TIMEOUT_ENV, "") or DEFAULT_TIMEOUT)
    if timeout <= 0 or float(pytestconfig.getini("faulthandler_timeout") or 0):
        # Disabled, or pytest's own faulthandler_timeout is in charge of hangs.
        yield None
        return
    capman = pytestconfig.pluginmanager.getplugin("capturemanager")
    if capman is not None:
        # Output captured for a test is lost when the process exits; go past capture.
        with capman.global_and_fixture_disabled():
            fd = os.dup(2)
    else:
        fd = os.dup(2)
    try:
        yield fd, timeout
    finally:
        os.close(fd)


@pytest.fixture(autouse=True)
def hang_watchdog(hang_watchdog_fd):
    """A C loop stuck in a poll (possibly holding the GIL) would stall the whole run
    silently; faulthandler's watchdog thread needs no GIL to dump and exit."""
    if hang_watchdog_fd is None:
        yield
        return
    fd, timeout = hang_watchdog_fd
    faulthandler.dump_traceback_later(timeout, exit=True, file=fd)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()
