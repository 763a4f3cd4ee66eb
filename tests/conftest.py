import asyncio
import gc
import os

import pytest

import glibloop


def pytest_report_header(config):
    return f"glibloop {glibloop.__version__} from {glibloop._core.__file__} (GLib {glibloop.GLIB_VERSION})"


def pytest_sessionstart(session):
    # The sanitizer run must test the sanitizer build, not an installed one.
    if os.environ.get("GLIBLOOP_EXPECT_BUILD") == "asan":
        assert "build/asan" in glibloop._core.__file__, glibloop._core.__file__


@pytest.fixture
def loop():
    loop = glibloop.new_event_loop()
    asyncio.set_event_loop(loop)
    yield loop
    asyncio.set_event_loop(None)
    if not loop.is_closed():
        if loop._default_executor is not None:
            loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()
    gc.collect()


def open_fds():
    return set(os.listdir("/proc/self/fd"))


def assert_fails_as_asyncio(cases, clean=str):
    """Each case(loop) -> awaitable must fail on a fresh glibloop loop with
    the exception type and message (passed through clean) that stock
    asyncio's selector loop gives."""

    def outcome(factory, case):
        lp = factory()
        try:
            lp.run_until_complete(case(lp))
        except Exception as exc:  # noqa: BLE001 - compared
            return type(exc), clean(str(exc))
        finally:
            lp.close()
        return "ok"

    for case in cases:
        ours = outcome(glibloop.new_event_loop, case)
        assert ours == outcome(asyncio.SelectorEventLoop, case)
        assert ours != "ok"
