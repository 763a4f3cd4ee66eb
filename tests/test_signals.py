"""add_signal_handler / remove_signal_handler: every catchable signal, the
wakeup fd, SIGINT, GLib-driven loops, closing and errors."""
import asyncio
import contextvars
import gc
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import warnings

import pytest

import glibloop
from conftest import open_fds

gi = pytest.importorskip("gi")
gi.require_version("GLib", "2.0")
gi.require_version("Gio", "2.0")
from gi.repository import Gio, GLib  # noqa: E402

SAFETY = 30  # seconds: a fallback that fails the test, never a timing assertion


def _kill_later(sig, delay=0.05):
    """Send sig to this process from another thread while the loop sleeps."""

    def fire():
        time.sleep(delay)
        os.kill(os.getpid(), sig)

    t = threading.Thread(target=fire)
    t.start()
    return t


def _wakeup_fd():
    fd = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(fd)
    return fd


@pytest.fixture
def restore_dispositions():
    saved = {s: signal.getsignal(s) for s in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT,
                                             signal.SIGALRM, signal.SIGHUP)}
    yield
    for s, h in saved.items():
        if h is not None:
            signal.signal(s, h)


def test_handler_runs_with_args_and_stops(loop, restore_dispositions):
    got = []
    fallback = []

    def on_usr1(*args):
        got.append(args)
        loop.stop()

    loop.add_signal_handler(signal.SIGUSR1, on_usr1, "a", 2)
    loop.call_later(SAFETY, fallback.append, True)
    t = _kill_later(signal.SIGUSR1)
    loop.run_forever()
    t.join()
    assert got == [("a", 2)]
    assert not fallback  # woken by the signal, not by the fallback timer
    assert loop.remove_signal_handler(signal.SIGUSR1) is True
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL
    assert loop.remove_signal_handler(signal.SIGUSR1) is False


def test_signal_sent_outside_a_run_is_handled_by_the_next_run(loop, restore_dispositions):
    got = []
    loop.add_signal_handler(signal.SIGUSR2, got.append, "usr2")
    os.kill(os.getpid(), signal.SIGUSR2)  # the loop is not running
    assert got == []
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert got == ["usr2"]
    loop.remove_signal_handler(signal.SIGUSR2)


def test_handler_runs_in_the_context_it_was_added_in(loop, restore_dispositions):
    var = contextvars.ContextVar("var", default="outer")
    seen = []

    def add():
        var.set("inner")
        loop.add_signal_handler(signal.SIGUSR1, lambda: (seen.append(var.get()), loop.stop()))

    contextvars.copy_context().run(add)
    os.kill(os.getpid(), signal.SIGUSR1)
    loop.run_forever()
    assert seen == ["inner"]
    loop.remove_signal_handler(signal.SIGUSR1)


def test_argument_errors(loop):
    def cb():
        pass

    async def coro_fn():
        pass

    with pytest.raises(TypeError):
        loop.add_signal_handler("boom", cb)
    with pytest.raises(TypeError):
        loop.remove_signal_handler("boom")
    for bad in (0, -1, signal.NSIG, signal.NSIG + 1):
        with pytest.raises(ValueError):
            loop.add_signal_handler(bad, cb)
        with pytest.raises(ValueError):
            loop.remove_signal_handler(bad)
    for uncatchable in (signal.SIGKILL, signal.SIGSTOP):
        with pytest.raises(RuntimeError, match="cannot be caught"):
            loop.add_signal_handler(uncatchable, cb)
        assert loop.remove_signal_handler(uncatchable) is False
    with pytest.raises(TypeError, match="coroutines cannot be used"):
        loop.add_signal_handler(signal.SIGUSR1, coro_fn)
    coro = coro_fn()
    with pytest.raises(TypeError, match="coroutines cannot be used"):
        loop.add_signal_handler(signal.SIGUSR1, coro)
    coro.close()
    # A failed add leaves nothing behind.
    assert loop._signal_handlers == {}
    assert _wakeup_fd() == -1


def test_main_thread_only(loop, restore_dispositions):
    errors = []

    def other_thread():
        try:
            loop.add_signal_handler(signal.SIGUSR1, lambda: None)
        except RuntimeError as exc:
            errors.append(exc)

    t = threading.Thread(target=other_thread)
    t.start()
    t.join()
    assert len(errors) == 1
    assert loop._signal_handlers == {}
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL


def test_closed_loop_refuses(loop):
    loop.close()
    with pytest.raises(RuntimeError, match="closed"):
        loop.add_signal_handler(signal.SIGUSR1, lambda: None)


def test_wakeup_fd_held_while_handlers_exist_and_restored(loop, restore_dispositions):
    a, b = socket.socketpair()
    a.setblocking(False)
    try:
        signal.set_wakeup_fd(a.fileno())
        loop.add_signal_handler(signal.SIGUSR1, lambda: None)
        ours = _wakeup_fd()
        assert ours != a.fileno()
        # A run keeps it, and it stays ours after the run ends.
        loop.call_soon(loop.stop)
        loop.run_forever()
        assert _wakeup_fd() == ours
        loop.add_signal_handler(signal.SIGUSR2, lambda: None)
        loop.remove_signal_handler(signal.SIGUSR1)
        assert _wakeup_fd() == ours  # one handler left
        loop.remove_signal_handler(signal.SIGUSR2)
        assert _wakeup_fd() == a.fileno()  # what was there before
    finally:
        signal.set_wakeup_fd(-1)
        a.close()
        b.close()


def test_handler_added_during_run_keeps_wakeup_after_run(loop, restore_dispositions):
    got = []

    async def main():
        loop.add_signal_handler(signal.SIGUSR1, got.append, 1)

    loop.run_until_complete(main())
    assert _wakeup_fd() != -1
    os.kill(os.getpid(), signal.SIGUSR1)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert got == [1]
    loop.remove_signal_handler(signal.SIGUSR1)
    assert _wakeup_fd() == -1


def test_replacing_a_handler(loop, restore_dispositions):
    got = []
    loop.add_signal_handler(signal.SIGUSR1, got.append, "first")
    loop.add_signal_handler(signal.SIGUSR1, lambda: (got.append("second"), loop.stop()))
    assert list(loop._signal_handlers) == [signal.SIGUSR1]
    os.kill(os.getpid(), signal.SIGUSR1)
    loop.run_forever()
    assert got == ["second"]
    loop.remove_signal_handler(signal.SIGUSR1)
    assert _wakeup_fd() == -1


def test_cancelled_handle_is_removed_when_its_signal_comes(loop, restore_dispositions):
    got = []
    loop.add_signal_handler(signal.SIGUSR1, got.append, 1)
    handle = loop._signal_handlers[signal.SIGUSR1]
    assert isinstance(handle, glibloop._core.Handle)
    handle.cancel()
    os.kill(os.getpid(), signal.SIGUSR1)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert got == []
    assert loop._signal_handlers == {}
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL
    assert _wakeup_fd() == -1


def test_exception_in_handler_goes_to_exception_handler(loop, restore_dispositions):
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))

    def boom():
        loop.call_soon(loop.stop)
        raise ZeroDivisionError

    loop.add_signal_handler(signal.SIGUSR1, boom)
    os.kill(os.getpid(), signal.SIGUSR1)
    loop.run_forever()
    assert len(contexts) == 1
    assert isinstance(contexts[0]["exception"], ZeroDivisionError)
    loop.remove_signal_handler(signal.SIGUSR1)


def test_sigint_handler_and_restore(loop, restore_dispositions):
    got = []
    loop.add_signal_handler(signal.SIGINT, lambda: (got.append("int"), loop.stop()))
    t = _kill_later(signal.SIGINT)
    loop.run_forever()  # no KeyboardInterrupt: the handler takes it
    t.join()
    assert got == ["int"]
    assert loop.remove_signal_handler(signal.SIGINT)
    # As asyncio: SIGINT goes back to Python's default, which raises.
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_sigint_handler_inside_asyncio_runner(restore_dispositions):
    got = []

    async def main():
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        loop.add_signal_handler(signal.SIGINT, done.set_result, "handled")
        t = _kill_later(signal.SIGINT)
        result = await asyncio.wait_for(done, SAFETY)
        t.join()
        got.append(result)
        assert loop.remove_signal_handler(signal.SIGINT)

    glibloop.run(main())
    assert got == ["handled"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_close_removes_handlers_and_restores(restore_dispositions):
    before_fds = open_fds()
    loop = glibloop.new_event_loop()
    loop.add_signal_handler(signal.SIGUSR1, lambda: None)
    loop.add_signal_handler(signal.SIGINT, lambda: None)
    loop.close()
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert _wakeup_fd() == -1
    gc.collect()
    assert open_fds() == before_fds


def test_loop_collected_with_handlers_restores(restore_dispositions):
    loop = glibloop.new_event_loop()
    loop.add_signal_handler(signal.SIGUSR1, lambda: None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del loop
        gc.collect()
    assert any(issubclass(w.category, ResourceWarning) for w in caught)
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL
    assert _wakeup_fd() == -1


def test_two_loops_each_get_their_signal(restore_dispositions):
    a, b = glibloop.new_event_loop(), glibloop.new_event_loop()
    try:
        got = []
        a.add_signal_handler(signal.SIGUSR1, lambda: (got.append("a"), a.stop()))
        b.add_signal_handler(signal.SIGUSR2, lambda: (got.append("b"), b.stop()))
        os.kill(os.getpid(), signal.SIGUSR2)
        b.run_forever()
        os.kill(os.getpid(), signal.SIGUSR1)
        a.run_forever()
        assert got == ["b", "a"]
    finally:
        b.close()
        a.close()
    assert _wakeup_fd() == -1


def test_fds_do_not_leak_over_add_remove(loop, restore_dispositions):
    loop.add_signal_handler(signal.SIGUSR1, lambda: None)  # makes the socketpair
    loop.remove_signal_handler(signal.SIGUSR1)
    before = open_fds()
    for _ in range(50):
        loop.add_signal_handler(signal.SIGUSR1, lambda: None)
        loop.remove_signal_handler(signal.SIGUSR1)
    assert open_fds() == before


# -- GLib drives the loop -------------------------------------------------


def test_glib_mainloop_without_policy_runs_handler(loop, restore_dispositions):
    # PyGObject points the wakeup fd at its own socket during MainLoop.run()
    # when it finds no asyncio loop for the context; the handler runs anyway.
    got = []
    ml = GLib.MainLoop()
    loop.add_signal_handler(signal.SIGUSR1, lambda: (got.append(asyncio.get_running_loop()), ml.quit()))
    fallback = GLib.timeout_add_seconds(SAFETY, ml.quit)
    t = _kill_later(signal.SIGUSR1)
    ml.run()
    t.join()
    GLib.source_remove(fallback)
    assert got == [loop]
    loop.remove_signal_handler(signal.SIGUSR1)


def test_glib_mainloop_with_policy_runs_handler(loop, restore_dispositions):
    policy = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(glibloop.EventLoopPolicy())
    try:
        asyncio.set_event_loop(loop)
        got = []
        ml = GLib.MainLoop()
        loop.add_signal_handler(signal.SIGRTMIN, lambda: (got.append(loop.is_running()), ml.quit()))
        fallback = GLib.timeout_add_seconds(SAFETY, ml.quit)
        t = _kill_later(signal.SIGRTMIN)
        ml.run()
        t.join()
        GLib.source_remove(fallback)
        # PyGObject >= 3.50 asks the policy, which makes the loop the running
        # loop for the run; 3.42 has no such protocol: the handler still runs.
        import gi

        assert got == [gi.version_info >= (3, 50)]
        loop.remove_signal_handler(signal.SIGRTMIN)
    finally:
        asyncio.set_event_loop_policy(policy)


def test_context_iteration_runs_handler(loop, restore_dispositions):
    got = []
    loop.add_signal_handler(signal.SIGHUP, got.append, "hup")
    os.kill(os.getpid(), signal.SIGHUP)
    ctx = GLib.MainContext.default()
    for _ in range(100):
        if got:
            break
        ctx.iteration(False)
    assert got == ["hup"]
    loop.remove_signal_handler(signal.SIGHUP)


def test_run_application_runs_handler(loop, restore_dispositions):
    app = Gio.Application(application_id=None, flags=Gio.ApplicationFlags.NON_UNIQUE)
    app.connect("activate", lambda a: a.hold())
    got = []
    loop.add_signal_handler(signal.SIGALRM, lambda: (got.append("alrm"), app.quit()))
    fallback = GLib.timeout_add_seconds(SAFETY, app.quit)
    signal.setitimer(signal.ITIMER_REAL, 0.05)
    loop.run_application(app, [])
    GLib.source_remove(fallback)
    assert got == ["alrm"]
    loop.remove_signal_handler(signal.SIGALRM)


# -- every catchable signal, in a child (faulthandler and pytest own some) --

EVERY_SIGNAL = textwrap.dedent(
    """
    import os, signal, glibloop
    loop = glibloop.new_event_loop()
    caught, refused = [], []
    for sig in sorted(signal.valid_signals()):
        try:
            loop.add_signal_handler(sig, lambda s=sig: (caught.append(s), loop.stop()))
        except RuntimeError:
            refused.append(int(sig))
            continue
        os.kill(os.getpid(), sig)
        loop.run_forever()
        assert loop.remove_signal_handler(sig)
        expected = signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL
        assert signal.getsignal(sig) is expected, sig
    loop.close()
    print(repr((sorted(int(s) for s in caught), refused)))
    """
)


def test_every_catchable_signal():
    out = subprocess.run(
        [sys.executable, "-c", EVERY_SIGNAL],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, PYTHONFAULTHANDLER=""),
    )
    assert out.returncode == 0, out.stderr
    caught, refused = eval(out.stdout)
    valid = sorted(int(s) for s in signal.valid_signals())
    assert refused == [signal.SIGKILL, signal.SIGSTOP]
    assert caught == [s for s in valid if s not in refused]
    # Far beyond GLib's six (HUP, INT, TERM, USR1, USR2, WINCH).
    assert signal.SIGRTMAX in caught and signal.SIGPWR in caught and signal.SIGCHLD in caught
