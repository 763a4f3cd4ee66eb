"""asyncio alive while GLib drives: GLib.MainLoop, MainContext.iteration,
Gio.Application, nested main loops, priorities, Ctrl-C."""
import asyncio
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

import glibloop

GLib = pytest.importorskip("gi.repository.GLib", reason="PyGObject is installed by make test")
from gi.repository import Gio  # noqa: E402


@pytest.fixture
def errors(loop):
    seen = []
    loop.set_exception_handler(lambda lp, ctx: seen.append(ctx))
    return seen


def test_glib_mainloop_runs_asyncio(loop, errors):
    ml = GLib.MainLoop()
    result = {}

    async def main():
        result["loop"] = asyncio.get_running_loop()
        await asyncio.sleep(0.01)
        result["value"] = await asyncio.gather(asyncio.sleep(0.01, "a"), asyncio.sleep(0, "b"))
        ml.quit()

    task = loop.create_task(main())
    GLib.timeout_add(5000, ml.quit)  # safety net
    ml.run()
    assert task.done() and task.exception() is None
    assert result == {"loop": loop, "value": ["a", "b"]}
    assert not loop.is_running()
    assert errors == []


def test_context_iteration_runs_asyncio(loop):
    done = []

    async def main():
        await asyncio.sleep(0)
        done.append(asyncio.get_running_loop())

    loop.create_task(main())
    ctx = GLib.MainContext.default()
    deadline = time.monotonic() + 5
    while not done and time.monotonic() < deadline:
        ctx.iteration(True)
    assert done == [loop]
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()  # only while dispatching


def test_future_set_from_glib_callback_wakes_task_at_once(loop):
    async def main():
        fut = loop.create_future()
        GLib.timeout_add(20, lambda: (fut.set_result(time.monotonic()), GLib.SOURCE_REMOVE)[1])
        set_at = await asyncio.wait_for(fut, 10)
        return time.monotonic() - set_at

    # Nothing else is scheduled: a missed wake-up would wait for the 10 s
    # timeout. The bound is generous on purpose (a shared, noisy machine).
    assert loop.run_until_complete(main()) < 1.0


def test_run_application_makes_loop_running_for_handlers(loop, errors):
    app = Gio.Application(application_id=None, flags=Gio.ApplicationFlags.NON_UNIQUE)
    seen = {}

    async def work():
        await asyncio.sleep(0.02)
        seen["task_loop"] = asyncio.get_running_loop()
        app.release()

    def on_activate(a):
        # A plain GLib signal handler, outside any asyncio callback.
        seen["handler_loop"] = asyncio.get_running_loop()
        a.hold()
        asyncio.create_task(work())

    app.connect("activate", on_activate)
    status = loop.run_application(app, [])
    assert status == 0
    assert seen == {"handler_loop": loop, "task_loop": loop}
    assert not loop.is_running()
    assert errors == []


def test_stop_quits_application(loop):
    app = Gio.Application(application_id=None, flags=Gio.ApplicationFlags.NON_UNIQUE)

    def on_activate(a):
        a.hold()
        loop.call_later(0.02, loop.stop)

    app.connect("activate", on_activate)
    assert loop.run_application(app, []) == 0
    # the loop runs normally afterwards
    assert loop.run_until_complete(asyncio.sleep(0, "ok")) == "ok"


def test_keyboard_interrupt_in_application_callback(loop):
    app = Gio.Application(application_id=None, flags=Gio.ApplicationFlags.NON_UNIQUE)

    def on_activate(a):
        a.hold()

        def boom():
            raise KeyboardInterrupt

        loop.call_soon(boom)

    app.connect("activate", on_activate)
    with pytest.raises(KeyboardInterrupt):
        loop.run_application(app, [])
    assert not loop.is_running()


def test_nested_main_loop_keeps_asyncio_running(loop, errors):
    ticks = []
    timer_hits = []
    log = []

    async def ticker():
        for i in range(20):
            ticks.append(i)
            await asyncio.sleep(0.001)

    async def nester():
        log.append("nest start")
        inner = GLib.MainLoop()

        async def quitter():
            while len(ticks) < 20:
                await asyncio.sleep(0.001)
            inner.quit()

        asyncio.ensure_future(quitter())
        inner.run()  # a modal loop, synchronously inside this task's step
        log.append("nest end")
        await asyncio.sleep(0)
        log.append("after")
        return "resumed"

    async def main():
        t = asyncio.ensure_future(ticker())
        loop.call_later(0.005, timer_hits.append, "timer")
        r = await nester()
        await t
        return r

    assert loop.run_until_complete(main()) == "resumed"
    assert ticks == list(range(20))  # every step once, in order
    assert timer_hits == ["timer"]
    assert log == ["nest start", "nest end", "after"]
    assert errors == []


def test_nest_inside_nest(loop, errors):
    order = []

    async def level(n):
        order.append(f"enter {n}")
        if n < 3:
            inner = GLib.MainLoop()

            async def run_next():
                await level(n + 1)
                inner.quit()

            asyncio.ensure_future(run_next())
            inner.run()
        order.append(f"leave {n}")

    async def background():
        for _ in range(30):
            await asyncio.sleep(0)
        order.append("background done")

    async def main():
        bg = asyncio.ensure_future(background())
        await level(1)
        await bg

    loop.run_until_complete(main())
    assert [x for x in order if x != "background done"] == [
        "enter 1", "enter 2", "enter 3", "leave 3", "leave 2", "leave 1"]
    assert order.count("background done") == 1
    assert errors == []


def test_task_waiting_on_nesting_task_step(loop, errors):
    # A future resolved inside the nest for the task that is blocked in the
    # nest: its wake-up must wait for the nest to end, then run once.
    steps = []

    async def nester():
        fut = loop.create_future()
        inner = GLib.MainLoop()
        loop.call_later(0.005, fut.set_result, "value")
        loop.call_later(0.02, inner.quit)
        inner.run()
        steps.append("nest returned")
        steps.append(await fut)

    loop.run_until_complete(nester())
    assert steps == ["nest returned", "value"]
    assert errors == []


def test_io_callbacks_run_inside_nest(loop):
    import socket

    a, b = socket.socketpair()
    got = []
    try:
        loop.add_reader(a, lambda: got.append(a.recv(10)))

        async def main():
            inner = GLib.MainLoop()
            loop.call_later(0.005, b.send, b"x")
            GLib.timeout_add(200, inner.quit)

            def check():
                if got:
                    inner.quit()
                else:
                    loop.call_later(0.002, check)

            loop.call_soon(check)
            inner.run()

        loop.run_until_complete(main())
        assert got == [b"x"]
    finally:
        loop.remove_reader(a)
        a.close()
        b.close()


# At PRIORITY_DEFAULT the idle runs in the GLib turns asyncio gives after
# each millisecond of continuous work (docs/design.md, fairness): a spin of
# 100,000 callbacks lasts several.
@pytest.mark.parametrize("asyncio_priority,idle_runs_during_spin", [
    (GLib.PRIORITY_DEFAULT, True),
    (GLib.PRIORITY_LOW, True),
])
def test_priority_against_idle(loop, asyncio_priority, idle_runs_during_spin):
    loop.priority = asyncio_priority
    assert loop.priority == asyncio_priority
    idle_hits = []
    spins = [0]
    idle_during = []

    def on_idle():
        # Bounded: a source that is always ready starves every source of a
        # lower priority, asyncio's included (GLib's strict priorities).
        idle_hits.append(spins[0])
        return GLib.SOURCE_CONTINUE if len(idle_hits) < 5 else GLib.SOURCE_REMOVE

    GLib.idle_add(on_idle, priority=GLib.PRIORITY_DEFAULT_IDLE)

    def spin():
        spins[0] += 1
        if spins[0] < 100_000:
            loop.call_soon(spin)
        else:
            idle_during.extend(x for x in idle_hits if x < 100_000)
            loop.stop()

    loop.batch_budget = 0.0001
    loop.call_soon(spin)
    loop.run_forever()
    ctx = GLib.MainContext.default()
    while len(idle_hits) < 5:
        ctx.iteration(True)
    assert bool(idle_during) is idle_runs_during_spin


def test_priority_validation(loop):
    with pytest.raises(TypeError):
        loop.priority = "high"
    loop.close()
    with pytest.raises(RuntimeError, match="closed"):
        loop.priority = 0


def _send_sigint_later(delay):
    def fire():
        time.sleep(delay)
        os.kill(os.getpid(), signal.SIGINT)

    t = threading.Thread(target=fire)
    t.start()
    return t


def test_ctrl_c_stops_idle_run_forever(loop):
    loop.call_later(30, loop.stop)  # safety net: far away
    t = _send_sigint_later(0.1)
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        loop.run_forever()
    t.join()
    assert time.monotonic() - start < 10  # woken by the signal, not the timer
    assert not loop.is_running()


def test_ctrl_c_cancels_main_task_with_runner():
    cancelled = []

    async def main():
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    t = _send_sigint_later(0.1)
    with pytest.raises(KeyboardInterrupt):
        glibloop.run(main())
    t.join()
    assert cancelled == [True]


def test_ctrl_c_quits_application(loop):
    app = Gio.Application(application_id=None, flags=Gio.ApplicationFlags.NON_UNIQUE)
    app.connect("activate", lambda a: a.hold())
    GLib.timeout_add(30000, app.quit)  # safety net
    t = _send_sigint_later(0.1)
    with pytest.raises(KeyboardInterrupt):
        loop.run_application(app, [])
    t.join()


def test_pygobject_protocol_with_policy(loop):
    # With glibloop's policy, a plain GLib.MainLoop().run() on the loop's
    # context makes it asyncio's running loop for GLib handlers as well
    # (PyGObject >= 3.50 asks the policy). PyGObject 3.42 has no such
    # protocol: there GLib's handlers see it only when asyncio's dispatch
    # is what runs them.
    import gi

    has_protocol = gi.version_info >= (3, 50)
    old = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(glibloop.EventLoopPolicy())
    try:
        asyncio.set_event_loop(loop)
        ml = GLib.MainLoop()
        seen = []

        def on_idle():
            try:
                seen.append(asyncio.get_running_loop())
            except RuntimeError:
                seen.append(None)
            return GLib.SOURCE_REMOVE

        async def task():
            seen.append(("task", asyncio.get_running_loop()))
            while len(seen) < 2:
                await asyncio.sleep(0.001)
            ml.quit()

        GLib.idle_add(on_idle)
        loop.create_task(task())
        GLib.timeout_add(5000, ml.quit)  # safety net
        ml.run()
        assert seen[0] == ("task", loop)
        if has_protocol:
            assert seen[1] is loop
        else:
            # Only where asyncio's own dispatch runs GLib's callbacks (the
            # nested turn it takes when it runs dry) is the loop running.
            assert seen[1] in (loop, None)
        assert not loop.is_running()
    finally:
        asyncio.set_event_loop(None)
        asyncio.set_event_loop_policy(old)


def _running_loop_or_none():
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _has_pygobject_protocol():
    # PyGObject 3.50+ asks for the asyncio loop of a context before
    # GLib.MainLoop.run() and Gio.Application.run(); glibloop answers it
    # (glibloop/_pygobject.py). 3.42 never asks.
    import gi

    return gi.version_info >= (3, 50)


def test_glib_mainloop_without_policy_marks_loop_running(loop):
    # No policy, no set_event_loop: a loop on the default context is the
    # running loop of a plain GLib.MainLoop().run() for its whole length,
    # in GLib's own handlers too (PyGObject 3.58 no longer asks policies).
    ml = GLib.MainLoop()
    seen = []

    def on_idle():
        seen.append(_running_loop_or_none())
        GLib.timeout_add(1, ml.quit)
        return GLib.SOURCE_REMOVE

    GLib.idle_add(on_idle)
    GLib.timeout_add(5000, ml.quit)  # safety net
    ml.run()
    if _has_pygobject_protocol():
        assert seen == [loop]
    else:
        assert seen in ([loop], [None])
    assert _running_loop_or_none() is None and not loop.is_running()


def test_application_run_without_policy_marks_loop_running(loop):
    app = Gio.Application(application_id=None, flags=Gio.ApplicationFlags.NON_UNIQUE)
    seen = []

    def on_activate(app):
        running = _running_loop_or_none()
        seen.append(running)
        if running is not None:
            app.hold()
            running.call_later(0.01, app.release)

    app.connect("activate", on_activate)
    GLib.timeout_add(5000, app.quit)  # safety net
    assert app.run([]) == 0
    assert seen == ([loop] if _has_pygobject_protocol() else [None])
    assert _running_loop_or_none() is None


def test_newest_open_loop_of_the_context_is_chosen(loop):
    newer = glibloop.new_event_loop()
    newest_closed = glibloop.new_event_loop()
    newest_closed.close()
    other_context = glibloop.new_event_loop(GLib.MainContext())
    try:
        ml = GLib.MainLoop()
        seen = []
        GLib.idle_add(lambda: seen.append(_running_loop_or_none()) or ml.quit())
        GLib.timeout_add(5000, ml.quit)  # safety net
        ml.run()
        if _has_pygobject_protocol():
            assert seen == [newer]
        else:
            assert seen in ([None], [loop], [newer])
    finally:
        other_context.close()
        newer.close()


def test_pygobject_imported_after_the_loop_was_made(tmp_path):
    # glibloop answers PyGObject's question from the moment PyGObject's
    # overrides are imported, also when that happens after the loop exists.
    script = tmp_path / "late_gi.py"
    script.write_text(
        "import asyncio, glibloop\n"
        "loop = glibloop.new_event_loop()\n"
        "import gi\n"
        "from gi.repository import Gio, GLib\n"
        "app = Gio.Application(application_id=None, flags=Gio.ApplicationFlags.NON_UNIQUE)\n"
        "seen = []\n"
        "def on_activate(app):\n"
        "    try:\n"
        "        seen.append(asyncio.get_running_loop() is loop)\n"
        "    except RuntimeError:\n"
        "        seen.append(False)\n"
        "app.connect('activate', on_activate)\n"
        "assert app.run([]) == 0\n"
        "assert seen == [gi.version_info >= (3, 50)], seen\n"
        "loop.close()\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout == "ok\n", done.stderr
