"""run_until_complete, close, errors, exception handler, debug mode,
tasks, futures, executors, async generators."""
import asyncio
import concurrent.futures
import gc
import logging
import threading
import warnings

import pytest

import glibloop
from conftest import open_fds


def test_run_until_complete_returns_result(loop):
    async def main():
        await asyncio.sleep(0.01)
        return 42

    assert loop.run_until_complete(main()) == 42


def test_run_until_complete_raises_exception(loop):
    async def main():
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        loop.run_until_complete(main())


def test_run_until_complete_stopped_early(loop):
    fut = loop.create_future()
    loop.call_soon(loop.stop)
    with pytest.raises(RuntimeError, match="Event loop stopped before Future completed."):
        loop.run_until_complete(fut)


def test_running_twice_is_refused(loop):
    async def main():
        coro = asyncio.sleep(0)
        with pytest.raises(RuntimeError, match="already running"):
            loop.run_until_complete(coro)
        coro.close()
        with pytest.raises(RuntimeError, match="already running"):
            loop.run_forever()
        other = glibloop.new_event_loop()
        try:
            coro = asyncio.sleep(0)
            with pytest.raises(RuntimeError, match="another loop is running"):
                other.run_until_complete(coro)
            coro.close()
        finally:
            other.close()
        with pytest.raises(RuntimeError, match="Cannot close a running event loop"):
            loop.close()
        assert loop.is_running()
        assert asyncio.get_running_loop() is loop
        return True

    assert loop.run_until_complete(main())
    assert not loop.is_running()


def test_exception_in_callback_goes_to_handler(loop):
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append((lp, ctx)))

    def bad():
        raise ZeroDivisionError("x")

    h = loop.call_soon(bad)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert len(contexts) == 1
    lp, ctx = contexts[0]
    assert lp is loop
    assert ctx["message"].startswith("Exception in callback ") and "bad" in ctx["message"]
    assert isinstance(ctx["exception"], ZeroDivisionError)
    assert ctx["handle"] is h


def test_default_exception_handler_logs(loop, caplog):
    def bad():
        raise KeyError("logged")

    loop.call_soon(bad)
    loop.call_soon(loop.stop)
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        loop.run_forever()
    assert "Exception in callback" in caplog.text
    assert "KeyError: 'logged'" in caplog.text
    assert "handle: <Handle" in caplog.text


def test_failing_custom_handler_falls_back_to_default(loop, caplog):
    def handler(lp, ctx):
        raise RuntimeError("handler broke")

    loop.set_exception_handler(handler)
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        loop.call_exception_handler({"message": "original"})
    assert "Unhandled error in exception handler" in caplog.text
    assert "handler broke" in caplog.text


def test_custom_handler_runs_in_the_failing_callbacks_context(loop):
    import contextvars

    var = contextvars.ContextVar("var", default="outside")
    seen = []
    loop.set_exception_handler(lambda lp, ctx: seen.append(var.get()))

    def failing():
        var.set("inside")
        raise ValueError

    loop.call_soon(failing)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == ["inside"]


def test_set_exception_handler_validates(loop):
    with pytest.raises(TypeError, match="A callable object or None is expected, got 'nope'"):
        loop.set_exception_handler("nope")
    handler = lambda lp, ctx: None  # noqa: E731
    loop.set_exception_handler(handler)
    assert loop.get_exception_handler() is handler
    loop.set_exception_handler(None)
    assert loop.get_exception_handler() is None


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_base_exceptions_stop_run_forever_and_loop_stays_usable(loop, exc_type):
    seen = []

    def boom():
        raise exc_type()

    loop.call_soon(boom)
    loop.call_soon(seen.append, "after")
    with pytest.raises(exc_type):
        loop.run_forever()
    assert not loop.is_running()
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == ["after"]


def test_keyboard_interrupt_in_task_propagates(loop):
    async def main():
        await asyncio.sleep(0)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        loop.run_until_complete(main())


def test_create_task_name_and_context(loop):
    import contextvars

    var = contextvars.ContextVar("v", default=0)
    ctx = contextvars.copy_context()
    ctx.run(var.set, 7)

    async def get():
        return var.get()

    async def main():
        t = loop.create_task(get(), name="worker", context=ctx)
        assert t.get_name() == "worker"
        return await t

    assert loop.run_until_complete(main()) == 7


def test_task_factory(loop):
    made = []

    def factory(lp, coro, **kw):
        made.append(kw)
        return asyncio.Task(coro, loop=lp, **kw)

    with pytest.raises(TypeError, match="task factory must be a callable or None"):
        loop.set_task_factory(1)
    loop.set_task_factory(factory)
    assert loop.get_task_factory() is factory

    async def main():
        t = loop.create_task(asyncio.sleep(0, "r"), name="n")
        assert t.get_name() == "n"
        return await t

    assert loop.run_until_complete(main()) == "r"
    assert len(made) >= 1
    loop.set_task_factory(None)
    assert loop.get_task_factory() is None


def test_create_future(loop):
    fut = loop.create_future()
    assert isinstance(fut, asyncio.Future) and fut.get_loop() is loop
    loop.call_soon(fut.set_result, "ok")
    assert loop.run_until_complete(fut) == "ok"


def test_close_releases_fds_and_pending(loop):
    before = open_fds()
    loops = [glibloop.new_event_loop() for _ in range(20)]
    for lp in loops:
        lp.call_soon(print)
        lp.call_later(100, print)
    for lp in loops:
        lp.close()
    assert open_fds() == before


def test_unclosed_loop_warns():
    loop = glibloop.new_event_loop()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        del loop
        gc.collect()
    assert any(issubclass(x.category, ResourceWarning) and "unclosed event loop" in str(x.message) for x in w)


def test_run_in_executor_and_shutdown(loop):
    async def main():
        r = await loop.run_in_executor(None, sum, [1, 2, 3])
        return r, threading.get_ident()

    r, tid = loop.run_until_complete(main())
    assert r == 6
    executor = loop._default_executor
    assert executor is not None
    loop.run_until_complete(loop.shutdown_default_executor())
    with pytest.raises(RuntimeError, match="Executor shutdown has been called"):
        loop.run_in_executor(None, print)


def test_set_default_executor(loop):
    with pytest.raises(TypeError, match="executor must be ThreadPoolExecutor"):
        loop.set_default_executor(object())
    ex = concurrent.futures.ThreadPoolExecutor(1)
    loop.set_default_executor(ex)

    async def main():
        return await loop.run_in_executor(None, threading.current_thread)

    assert loop.run_until_complete(main()) is not threading.current_thread()
    loop.close()
    ex.shutdown()


def test_shutdown_asyncgens(loop):
    closed = []

    async def agen():
        try:
            yield 1
            yield 2
        finally:
            closed.append(True)

    async def main():
        g = agen()
        assert await g.__anext__() == 1
        return g

    g = loop.run_until_complete(main())
    assert len(loop._asyncgens) == 1
    loop.run_until_complete(loop.shutdown_asyncgens())
    assert closed == [True]
    del g


def test_debug_mode_slow_callback_and_source_traceback(loop, caplog):
    import time

    loop.set_debug(True)
    assert loop.get_debug()
    loop.slow_callback_duration = 0.01
    h = loop.call_soon(time.sleep, 0.03)
    assert h._source_traceback and h._source_traceback[-1][2] == "test_debug_mode_slow_callback_and_source_traceback"
    assert "created at" in repr(h)
    loop.call_soon(loop.stop)
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        loop.run_forever()
    assert "Executing <Handle" in caplog.text and "took" in caplog.text


def test_debug_mode_rejects_other_thread(loop):
    loop.set_debug(True)
    errors = []

    def from_thread():
        try:
            loop.call_soon(print)
        except RuntimeError as e:
            errors.append(str(e))

    async def main():
        t = threading.Thread(target=from_thread)
        t.start()
        await loop.run_in_executor(None, t.join)

    loop.run_until_complete(main())
    assert errors == ["Non-thread-safe operation invoked on an event loop other than the current one"]


def test_every_abstract_event_loop_method_is_implemented():
    # None is left to AbstractEventLoop's NotImplementedError stubs.
    inherited = [
        name
        for name, value in vars(asyncio.AbstractEventLoop).items()
        if callable(value) and not name.startswith("_") and getattr(glibloop.Loop, name) is value
    ]
    assert inherited == []


def test_glibloop_run_and_runner():
    async def main():
        return type(asyncio.get_running_loop())

    assert glibloop.run(main()) is glibloop.Loop
    with asyncio.Runner(loop_factory=glibloop.new_event_loop) as runner:
        assert runner.run(main()) is glibloop.Loop
    with pytest.raises(ValueError, match="a coroutine was expected"):
        glibloop.run(main)


def test_policy_and_install():
    policy = glibloop.EventLoopPolicy()
    loop = policy.new_event_loop()
    try:
        assert isinstance(loop, glibloop.Loop)
    finally:
        loop.close()
    old = asyncio.get_event_loop_policy()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            glibloop.install()
        assert isinstance(asyncio.get_event_loop_policy(), glibloop.EventLoopPolicy)

        async def main():
            return type(asyncio.get_running_loop())

        assert asyncio.run(main()) is glibloop.Loop
    finally:
        asyncio.set_event_loop_policy(old)


def test_version():
    assert glibloop.__version__.count(".") == 2
    assert glibloop.GLIB_VERSION.startswith("2.")
