"""call_soon, rounds, stop/run semantics, timers."""
import asyncio
import contextvars
import gc
import statistics
import sys
import weakref

import pytest

import glibloop


def test_loop_is_asyncio_loop(loop):
    assert isinstance(loop, asyncio.AbstractEventLoop)
    assert isinstance(loop, glibloop.Loop)
    assert not loop.is_running() and not loop.is_closed()
    assert repr(loop) == "<Loop running=False closed=False debug=False>"


def test_call_soon_runs_in_order_with_args(loop):
    seen = []
    for i in range(5):
        loop.call_soon(seen.append, i)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == [0, 1, 2, 3, 4]


def test_call_soon_returns_handle_that_cancels(loop):
    seen = []
    h = loop.call_soon(seen.append, "x")
    assert type(h).__name__ == "Handle"
    assert not h.cancelled()
    h.cancel()
    h.cancel()
    assert h.cancelled()
    assert h._callback is None and h._args is None
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == []
    assert "cancelled" in repr(h)


def test_handle_repr_names_callback(loop):
    def my_callback(a, b):
        pass

    h = loop.call_soon(my_callback, 1, "two")
    r = repr(h)
    assert r.startswith("<Handle ") and "my_callback(" in r and "test_scheduling.py" in r
    # asyncio shows the arguments always before 3.13, only in debug mode after
    shows_args = sys.version_info < (3, 13)
    assert ("my_callback(1, 'two')" in r) is shows_args
    loop.set_debug(True)
    assert "my_callback(1, 'two')" in repr(h)
    h.cancel()


def test_context_kwarg_runs_callback_in_that_context(loop):
    var = contextvars.ContextVar("var", default="default")
    ctx = contextvars.copy_context()
    ctx.run(var.set, "in ctx")
    seen = []
    h = loop.call_soon(lambda: seen.append(var.get()), context=ctx)
    assert h.get_context() is ctx
    loop.call_soon(lambda: seen.append(var.get()))
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == ["in ctx", "default"]


def test_callback_without_context_gets_a_copy_of_current(loop):
    var = contextvars.ContextVar("var", default="default")
    var.set("caller")
    seen = []

    def cb():
        seen.append(var.get())
        var.set("changed in callback")

    loop.call_soon(cb)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == ["caller"]
    assert var.get() == "caller"


@pytest.mark.parametrize("method", ["call_soon", "call_soon_threadsafe"])
def test_bad_callbacks_raise_type_error(loop, method):
    call = getattr(loop, method)
    with pytest.raises(TypeError, match=rf"a callable object was expected by {method}\(\), got 1"):
        call(1)

    async def coro_func():
        pass

    with pytest.raises(TypeError, match=rf"coroutines cannot be used with {method}\(\)"):
        call(coro_func)
    coro = coro_func()
    with pytest.raises(TypeError, match="coroutines cannot be used"):
        call(coro)
    coro.close()
    with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'"):
        call(print, bogus=1)
    with pytest.raises(TypeError, match="context must be a contextvars.Context, not int"):
        call(print, context=42)
    with pytest.raises(TypeError, match="missing"):
        call()


def test_bound_coroutine_method_rejected(loop):
    class A:
        async def m(self):
            pass

    with pytest.raises(TypeError, match="coroutines cannot be used with call_later"):
        loop.call_later(1, A().m)


def test_closed_loop_rejects_scheduling(loop):
    loop.close()
    coro = asyncio.sleep(0)
    for call in (
        lambda: loop.call_soon(print),
        lambda: loop.call_later(1, print),
        lambda: loop.call_at(1, print),
        lambda: loop.call_soon_threadsafe(print),
        lambda: loop.run_forever(),
        lambda: loop.create_task(coro),
        lambda: loop.add_reader(0, print),
    ):
        with pytest.raises(RuntimeError, match="Event loop is closed"):
            r = call()
            if asyncio.iscoroutine(r):
                r.close()
    coro.close()
    loop.close()  # twice is fine
    assert loop.remove_reader(0) is False


def test_round_semantics_rescheduled_callback_waits_for_next_round(loop):
    seen = []

    def a():
        seen.append("a")
        loop.call_soon(c)

    def b():
        seen.append("b")

    def c():
        seen.append("c")
        loop.stop()

    loop.call_soon(a)
    loop.call_soon(b)
    loop.run_forever()
    assert seen == ["a", "b", "c"]


def test_stop_runs_current_round_then_keeps_rest_for_next_run(loop):
    seen = []

    def first():
        seen.append(1)
        loop.stop()
        loop.call_soon(seen.append, 3)

    loop.call_soon(first)
    loop.call_soon(seen.append, 2)
    loop.run_forever()
    assert seen == [1, 2]
    assert loop._ready_count == 1
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == [1, 2, 3]


def test_stop_before_run_runs_one_round(loop):
    seen = []
    loop.call_soon(seen.append, 1)
    loop.stop()
    loop.run_forever()
    assert seen == [1]
    assert not loop.is_running()


def test_self_rescheduling_callback_lets_io_in(loop):
    # A callback that reschedules itself forever must not starve I/O:
    # each round polls the epoll set first.
    import socket

    a, b = socket.socketpair()
    try:
        count = [0]
        got = []

        def spin():
            count[0] += 1
            if not got:
                loop.call_soon(spin)

        def on_read():
            got.append(a.recv(10))
            loop.remove_reader(a)
            loop.stop()

        loop.add_reader(a, on_read)
        loop.call_soon(spin)
        loop.call_soon(b.send, b"ping")
        loop.run_forever()
        assert got == [b"ping"]
        assert count[0] < 10
    finally:
        a.close()
        b.close()


def test_time_is_monotonic_seconds(loop):
    import time

    t1 = loop.time()
    m = time.monotonic()
    t2 = loop.time()
    assert t1 <= t2
    assert abs(m - t1) < 0.5


def test_call_later_never_early_and_in_order(loop):
    fired = []
    start = loop.time()
    for d in (0.03, 0.01, 0.02, 0.0, -1):
        loop.call_later(d, lambda d=d: fired.append((d, loop.time())))
    loop.call_later(0.05, loop.stop)
    loop.run_forever()
    assert [d for d, _ in fired] == [-1, 0.0, 0.01, 0.02, 0.03]
    for d, t in fired:
        assert t >= start + d


def test_equal_deadlines_run_fifo(loop):
    seen = []
    when = loop.time() + 0.01
    for i in range(20):
        loop.call_at(when, seen.append, i)
    loop.call_at(when + 0.001, loop.stop)
    loop.run_forever()
    assert seen == list(range(20))


def test_timer_handle_api(loop):
    when = loop.time() + 100
    h = loop.call_at(when, print, "x")
    assert h.when() == when and h._when == when
    assert type(h).__name__ == "TimerHandle"
    assert f"when={when!r}" in repr(h)
    h2 = loop.call_at(when + 1, print)
    assert h < h2 and h2 > h and h != h2 and h == h
    assert hash(h) == hash(when)
    assert loop._timer_count == 2
    h.cancel()
    h2.cancel()
    assert loop._timer_count == 0


def test_call_later_rejects_bad_delay(loop):
    with pytest.raises(TypeError, match="delay must not be None"):
        loop.call_later(None, print)
    with pytest.raises(TypeError, match="delay must be a number, not str"):
        loop.call_later("1", print)
    with pytest.raises(TypeError, match="when cannot be None"):
        loop.call_at(None, print)


def test_many_timers_half_cancelled(loop):
    fired = []
    handles = [loop.call_later(0.001 * (i % 20), fired.append, i) for i in range(5000)]
    for h in handles[::2]:
        h.cancel()
    assert loop._timer_count == 2500
    loop.call_later(0.05, loop.stop)
    loop.run_forever()
    assert sorted(fired) == list(range(1, 5000, 2))
    assert loop._timer_count == 0


def _timer_firing_order(loop):
    """Schedules 3,000 timers at distinct past times in a scrambled order,
    cancels 70% of them (past the compaction threshold), schedules 500 more,
    and returns the ranks of the kept ones' times in the order they fired."""
    import random

    rng = random.Random(13)
    fired = []
    base = loop.time() - 10
    ranks = list(range(3500))
    rng.shuffle(ranks)
    handles = [loop.call_at(base + k * 1e-4, fired.append, k) for k in ranks[:3000]]
    for h in rng.sample(handles, 2100):
        h.cancel()
    for k in ranks[3000:]:
        loop.call_at(base + k * 1e-4, fired.append, k)
    loop.call_soon(loop.stop)
    loop.run_forever()
    return fired


def test_timer_heap_order_matches_asyncio(loop):
    stock = asyncio.SelectorEventLoop()
    try:
        expected = _timer_firing_order(stock)
    finally:
        stock.close()
    got = _timer_firing_order(loop)
    assert len(got) == 1400
    assert got == expected == sorted(expected)
    assert loop._timer_count == 0


def test_cancelled_timers_are_released(loop):
    class Token:
        pass

    refs = []
    for _ in range(200):
        t = Token()
        refs.append(weakref.ref(t))
        loop.call_later(3600, lambda t=t: None).cancel()
    del t
    gc.collect()
    assert all(r() is None for r in refs)
    # compaction happens on the next batch
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert loop._timer_count == 0


def test_sub_millisecond_timers_are_not_late_by_a_millisecond(loop):
    lateness = []

    def fire(when):
        lateness.append(loop.time() - when)

    async def main():
        for _ in range(40):
            when = loop.time() + 0.0003
            loop.call_at(when, fire, when)
            await asyncio.sleep(0.002)

    loop.run_until_complete(main())
    assert len(lateness) == 40
    assert min(lateness) >= 0
    # GLib's poll() works in whole milliseconds; the timerfd makes these
    # punctual. The median guards against a noisy shared machine.
    assert statistics.median(lateness) < 0.001, lateness


def test_handles_released_after_running(loop):
    class Token:
        pass

    t = Token()
    before = sys.getrefcount(t)
    for _ in range(100):
        loop.call_soon(lambda x: None, t)
    assert sys.getrefcount(t) == before + 100
    loop.call_soon(loop.stop)
    loop.run_forever()
    gc.collect()
    assert sys.getrefcount(t) == before


def test_loop_with_pending_callbacks_is_collected():
    loop = glibloop.new_event_loop()
    ref = weakref.ref(loop)
    loop.call_soon(print, loop)  # cycle through the ready queue
    loop.call_later(10, print, loop)
    loop.close()
    del loop
    gc.collect()
    assert ref() is None


def test_batch_budget_setting(loop):
    assert loop.batch_budget == pytest.approx(0.001)
    loop.batch_budget = 0.0005
    assert loop.batch_budget == pytest.approx(0.0005)
    with pytest.raises(ValueError):
        loop.batch_budget = 5
    with pytest.raises(TypeError):
        loop.batch_budget = "x"


def test_unclosed_loop_with_queued_callbacks_is_collected():
    import warnings

    loop = glibloop.new_event_loop()
    ref = weakref.ref(loop)
    loop.call_soon(print, loop)
    loop.call_later(10, print, loop)
    loop.call_soon_threadsafe(print, loop)
    del loop
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    assert ref() is None


def test_kept_handle_cycle_is_collected(loop):
    class Owner:
        def __init__(self):
            self.timer = loop.call_later(0, self.fire)
            self.soon = loop.call_soon(self.fire)

        def fire(self):
            pass

    o = Owner()
    ref = weakref.ref(o)
    del o
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    gc.collect()
    assert ref() is None


def test_unclosed_loop_with_kept_timers_in_a_cycle_is_collected():
    import warnings

    class Owner:
        pass

    loop = glibloop.new_event_loop()
    ref = weakref.ref(loop)
    made_idle = Owner()  # scheduled while the loop is not running
    made_idle.timer = loop.call_later(10, print, made_idle)

    def during_run():
        made_running = Owner()  # scheduled by a callback, kept past the run
        made_running.timer = loop.call_later(10, print, made_running)
        loop.stop()

    loop.call_soon(during_run)
    loop.run_forever()
    assert loop._timer_count == 2
    del loop, made_idle
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    assert ref() is None


def test_kept_handle_survives_collection_while_queued(loop):
    seen = []
    h = loop.call_soon(seen.append, "still here")
    gc.collect()
    assert h._callback is not None
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == ["still here"] and h._args == ("still here",)
