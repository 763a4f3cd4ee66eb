"""Edge cases found in review: closing from callbacks, fatal exceptions in
handlers and nested loops, several loops on one context, GC of dropped loops,
the GIL during GLib's turn, bad fds and numbers."""
import asyncio
import ctypes
import gc
import sys
import threading
import time
import warnings
import weakref

import pytest

import glibloop

GLib = pytest.importorskip("gi.repository.GLib", reason="PyGObject is installed by make test")


def test_close_from_callback_during_foreign_iteration_is_refused(loop):
    outcome = []

    def try_close():
        try:
            loop.close()
        except RuntimeError as exc:
            outcome.append(str(exc))

    loop.call_soon(try_close)
    loop.call_soon(outcome.append, "next callback ran")
    ctx = GLib.MainContext.default()
    deadline = time.monotonic() + 5
    while len(outcome) < 2 and time.monotonic() < deadline:
        ctx.iteration(False)
    assert outcome == ["Cannot close a running event loop", "next callback ran"]
    assert not loop.is_closed()


def test_system_exit_from_custom_exception_handler_stops_the_loop(loop):
    def handler(lp, context):
        sys.exit(3)

    def failing():
        raise ValueError("boom")

    loop.set_exception_handler(handler)
    loop.call_soon(failing)
    loop.call_later(5, loop.stop)
    with pytest.raises(SystemExit) as info:
        loop.run_forever()
    assert info.value.code == 3


def test_two_loops_on_the_default_context_keep_their_running_loop():
    a = glibloop.new_event_loop()
    b = glibloop.new_event_loop()
    wrong = []
    try:
        def check_b():
            if asyncio.get_running_loop() is not b:
                wrong.append("b")

        # b is open, not running, and has work: a's run dispatches it too
        for _ in range(50):
            b.call_soon(check_b)

        async def main():
            for _ in range(200):
                if asyncio.get_running_loop() is not a:
                    wrong.append("a")
                await asyncio.sleep(0)
            await asyncio.sleep(0.01)

        a.run_until_complete(main())
        assert wrong == []
    finally:
        a.close()
        b.close()


def test_dropped_unclosed_loop_with_sleeping_task_is_collected():
    loop = glibloop.new_event_loop()
    ref = weakref.ref(loop)
    task = loop.create_task(asyncio.sleep(3600))
    loop.call_soon(loop.stop)
    loop.run_forever()  # the task now waits on a kept TimerHandle
    del task, loop
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(3):
            gc.collect()
    assert ref() is None


def test_keyboard_interrupt_in_nested_loop_stops_asyncio_at_once(loop):
    ran_after = []

    def nested():
        inner = GLib.MainLoop()

        def boom():
            inner.quit()
            raise KeyboardInterrupt

        loop.call_soon(boom)
        GLib.timeout_add(2000, inner.quit)  # safety net
        inner.run()

    def ticker(i):
        ran_after.append(i)
        loop.call_soon(ticker, i + 1)

    loop.call_soon(nested)
    loop.call_soon(ticker, 0)
    with pytest.raises(KeyboardInterrupt):
        loop.run_forever()
    # the ticker ran at most in the nested dispatch's round before the raise
    assert len(ran_after) <= 2


def test_glib_turn_releases_the_gil(loop):
    # A C GLib source (here usleep as a GSourceFunc) dispatched in the turn
    # the loop takes when asyncio runs dry must not hold other Python
    # threads back, any more than GLib's own main loop does.
    glib = ctypes.CDLL("libglib-2.0.so.0")
    glib.g_idle_add.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    glib.g_idle_add.restype = ctypes.c_uint
    usleep = ctypes.cast(ctypes.CDLL(None).usleep, ctypes.c_void_p)
    gaps = []
    stop = threading.Event()

    def other_thread():
        last = time.monotonic()
        while not stop.is_set():
            now = time.monotonic()
            gaps.append(now - last)
            last = now
            time.sleep(0.001)

    async def main():
        t = threading.Thread(target=other_thread)
        t.start()
        for _ in range(3):
            fut = loop.create_future()
            GLib.idle_add(lambda f=fut: (f.set_result(None), GLib.SOURCE_REMOVE)[1])
            glib.g_idle_add(usleep, ctypes.c_void_p(150000))  # 150 ms in C
            await fut
        stop.set()
        await loop.run_in_executor(None, t.join)

    loop.run_until_complete(main())
    # with the GIL held the other thread would stall for the whole 150 ms
    assert max(gaps) < 0.12, max(gaps)


def test_running_protocol_inside_foreign_dispatch_keeps_running_loop(loop):
    seen = []

    def callback():
        with loop.running(lambda: None):
            pass
        seen.append(asyncio.get_running_loop())

    loop.call_soon(callback)
    ctx = GLib.MainContext.default()
    deadline = time.monotonic() + 5
    while not seen and time.monotonic() < deadline:
        ctx.iteration(False)
    assert seen == [loop]


def test_huge_bogus_fd_is_ebadf_without_allocating(loop):
    with pytest.raises(OSError) as info:
        loop.add_reader(2**28, print)
    assert info.value.errno == 9
    assert loop._fd_count == 0


def test_nan_delays_are_rejected(loop):
    with pytest.raises(ValueError, match="delay must not be NaN"):
        loop.call_later(float("nan"), print)
    with pytest.raises(ValueError, match="when must not be NaN"):
        loop.call_at(float("nan"), print)


def test_create_task_coro_by_keyword(loop):
    async def coro():
        return 5

    assert loop.run_until_complete(loop.create_task(coro=coro())) == 5
    with pytest.raises(TypeError, match="create_task"):
        loop.create_task()


def test_uninitialised_loop_is_refused():
    class Broken(glibloop.Loop):
        def __init__(self):
            pass  # forgets super().__init__()

    lp = Broken()
    with pytest.raises(RuntimeError, match="not initialised"):
        lp.call_soon(print)
    with pytest.raises(RuntimeError, match="not initialised"):
        lp.run_forever()
