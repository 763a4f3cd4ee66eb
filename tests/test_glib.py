"""The loop on GLib main contexts, seen from PyGObject."""
import asyncio
import threading

import pytest

import glibloop

GLib = pytest.importorskip("gi.repository.GLib", reason="PyGObject is installed by make test")


def test_glib_timeout_dispatched_while_asyncio_runs(loop):
    fired = []

    def on_timeout():
        fired.append(loop.time())
        return GLib.SOURCE_REMOVE

    async def main():
        GLib.timeout_add(10, on_timeout)
        await asyncio.sleep(0.05)

    loop.run_until_complete(main())
    assert len(fired) == 1


def test_glib_callback_resolves_future(loop):
    async def main():
        fut = loop.create_future()
        GLib.idle_add(lambda: (fut.set_result("from glib"), GLib.SOURCE_REMOVE)[1])
        return await asyncio.wait_for(fut, 5)

    assert loop.run_until_complete(main()) == "from glib"


def test_loop_on_given_context():
    ctx = GLib.MainContext()
    loop = glibloop.new_event_loop(context=ctx)
    try:
        fired = []

        async def main():
            src = GLib.timeout_source_new(5)
            src.set_callback(lambda *a: (fired.append(True), GLib.SOURCE_REMOVE)[1])
            src.attach(ctx)
            await asyncio.sleep(0.05)
            return GLib.MainContext.get_thread_default()

        default_while_running = loop.run_until_complete(main())
        assert fired == [True]
        assert default_while_running is not None
    finally:
        loop.close()


def test_bad_context_type():
    with pytest.raises(TypeError, match="GLib.MainContext or None"):
        glibloop.new_event_loop(context=42)
    with pytest.raises(TypeError, match="GLib.MainContext or None"):
        glibloop.new_event_loop(context=GLib.MainLoop())


def test_thread_loop_gets_own_context_pushed_as_thread_default():
    seen = {}

    def thread_main():
        async def main():
            ctx = GLib.MainContext.get_thread_default()
            seen["ctx"] = ctx
            fired = []
            GLib.timeout_add(5, lambda: (fired.append(1), GLib.SOURCE_REMOVE)[1])  # default ctx: must not fire here
            src = GLib.idle_source_new()
            src.set_callback(lambda *a: (fired.append(2), GLib.SOURCE_REMOVE)[1])
            src.attach(ctx)
            await asyncio.sleep(0.05)
            seen["fired"] = fired

        glibloop.run(main())

    t = threading.Thread(target=thread_main)
    t.start()
    t.join()
    assert seen["ctx"] is not None
    assert seen["ctx"] != GLib.MainContext.default()
    assert seen["fired"] == [2]
    # drain the timeout added to the default context
    ctx = GLib.MainContext.default()
    while ctx.iteration(False):
        pass
