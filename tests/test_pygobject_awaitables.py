"""PyGObject's own asyncio support on glibloop's loop: Gio's *_async methods
awaited with no callback (PyGObject 3.50+), Gio.Application.create_asyncio_task
(3.58+), beside glibloop.gio.call, and compared with gi.events where it exists."""

import asyncio

import pytest

import glibloop
import glibloop.gio

GLib = pytest.importorskip("gi.repository.GLib", reason="PyGObject is installed by make test")
import gi  # noqa: E402
from gi.repository import Gio  # noqa: E402

HAS_AWAITABLES = gi.version_info >= (3, 50)
THIS_FILE = Gio.File.new_for_path(__file__)
with open(__file__, "rb") as _f:
    THIS_DATA = _f.read()


def _on_gi_events(coro_function):
    """Runs a coroutine the way gi.events is used on the main thread: its
    policy installed, the policy's loop for the default context."""
    import warnings

    from gi.events import GLibEventLoopPolicy

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # policies, 3.14+
        saved = asyncio.get_event_loop_policy()
        policy = GLibEventLoopPolicy()
        asyncio.set_event_loop_policy(policy)
    try:
        reference = policy.get_event_loop()
        try:
            return reference.run_until_complete(coro_function())
        finally:
            reference.close()
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            asyncio.set_event_loop_policy(saved)


async def _read_three_ways():
    called = await glibloop.gio.call(THIS_FILE.load_contents_async)
    native = await THIS_FILE.load_contents_async()
    return called, tuple(native)


def test_gio_method_awaited_without_callback(loop):
    if not HAS_AWAITABLES:
        # PyGObject 3.42 has no awaitables: without a callback the call
        # starts the operation and returns nothing to await.
        assert THIS_FILE.load_contents_async(None) is None
        return
    called, native = loop.run_until_complete(_read_three_ways())
    assert called[0] is True and called[1] == THIS_DATA
    assert native[:2] == called[:2]


async def _cancel_native_read():
    task = asyncio.ensure_future(THIS_FILE.load_contents_async(Gio.Cancellable()))
    await asyncio.sleep(0)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        return "CancelledError"
    except GLib.Error as exc:
        return ("GLib.Error", exc.matches(Gio.io_error_quark(), Gio.IOErrorEnum.CANCELLED))
    return "completed"


def test_cancelling_a_native_awaitable_as_on_gi_events(loop):
    if not HAS_AWAITABLES:  # nor gi.events: nothing to compare
        assert gi.version_info < (3, 50)
        return
    ours = loop.run_until_complete(_cancel_native_read())
    assert ours == _on_gi_events(_cancel_native_read)
    assert ours in ("CancelledError", ("GLib.Error", True))


def test_application_create_asyncio_task(loop):
    app = Gio.Application(application_id=None, flags=Gio.ApplicationFlags.NON_UNIQUE)
    if not hasattr(app, "create_asyncio_task"):  # PyGObject < 3.58
        assert gi.version_info < (3, 58)
        return
    steps = []

    async def work():
        steps.append(asyncio.get_running_loop())
        called = await glibloop.gio.call(THIS_FILE.load_contents_async)
        await asyncio.sleep(0.01)
        steps.append(called[1] == THIS_DATA)

    def on_activate(app):
        # The application stays up until the task is done (it holds it).
        app.create_asyncio_task(work())

    app.connect("activate", on_activate)
    GLib.timeout_add(10000, app.quit)  # safety net
    assert app.run([]) == 0
    assert steps == [loop, True]


def test_application_run_awaits_native_gio_in_a_task(loop):
    # Plain app.run() (no run_application): the loop is the running loop, so
    # a signal handler starts a task that awaits Gio the PyGObject way.
    if not HAS_AWAITABLES:
        assert gi.version_info < (3, 50)
        return
    app = Gio.Application(application_id=None, flags=Gio.ApplicationFlags.NON_UNIQUE)
    results = []

    async def work():
        ok, data, _ = await THIS_FILE.load_contents_async()
        results.append((ok, data == THIS_DATA))
        app.release()

    def on_activate(app):
        app.hold()
        tasks.add(asyncio.get_running_loop().create_task(work()))

    tasks = set()
    app.connect("activate", on_activate)
    GLib.timeout_add(10000, app.quit)  # safety net
    assert app.run([]) == 0
    assert results == [(True, True)]
