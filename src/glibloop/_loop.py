"""The public Loop class: the C core plus asyncio's cold paths.

Everything that runs per callback, per timer or per I/O event is C
(``_core.Loop``).  What stays here runs once per loop, per run or per
executor job, or is naturally a coroutine: run_forever's bookkeeping,
run_until_complete, close, the executor, async generators, and the
default exception handler (which logs).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import sys
import threading
import traceback
import warnings
import weakref
from asyncio import base_events as _base_events
from asyncio import events as _events
from asyncio import futures as _futures
from asyncio import tasks as _tasks

from . import _core, _pygobject
from ._net import NetworkMixin
from ._proc import ProcessMixin, iscoroutinefunction

__all__ = ["Loop"]

_PY312 = sys.version_info >= (3, 12)
# Depth of coroutine origin tracking in debug mode, as asyncio uses.
_DEBUG_STACK_DEPTH = 10


def _env_debug() -> bool:
    """asyncio's debug switch: -X dev or PYTHONASYNCIODEBUG."""
    # asyncio's own check first, looked up each time (tests patch it).
    check = getattr(asyncio.coroutines, "_is_debug_mode", None)
    if check is not None:
        return bool(check())
    if sys.flags.dev_mode:
        return True
    return not sys.flags.ignore_environment and bool(os.environ.get("PYTHONASYNCIODEBUG"))


def _logger():
    # Looked up on each use: tests patch asyncio.base_events.logger.
    return _base_events.logger


def _stop_loop_when_done(fut):
    if not fut.cancelled():
        exc = fut.exception()
        if isinstance(exc, (SystemExit, KeyboardInterrupt)):
            # run_forever() is already unwinding with this exception.
            return
    _futures._get_loop(fut).stop()


class Loop(_core.Loop, NetworkMixin, ProcessMixin, asyncio.AbstractEventLoop):
    """An asyncio event loop running on a GLib main context.

    ``context`` is a ``GLib.MainContext`` (PyGObject) to run on.  Without
    it, a loop made on the main thread uses GLib's default context (the
    one GTK and Gio use), and a loop made on another thread a new context
    that is pushed as that thread's default while the loop runs.
    """

    def __init__(self, context=None):
        use_default = context is None and threading.current_thread() is threading.main_thread()
        super().__init__(context, default_context=use_default)
        self._given_context = context
        self._uses_default_context = use_default
        self._default_executor = None
        self._executor_shutdown_called = False
        self._asyncgens = weakref.WeakSet()
        # Unix server sockets to unlink when they stop (filled by 3.13+'s
        # create_unix_server, see NetworkMixin._stop_serving_unlinking).
        self._unix_server_sockets = {}
        self._asyncgens_shutdown_called = False
        self._coroutine_origin_tracking_enabled = False
        self._coroutine_origin_tracking_saved_depth = None
        self.set_debug(_env_debug())
        _pygobject.register(self)

    # Ahead of _core.Loop's in the method order: it calls that one.
    _stop_serving = NetworkMixin._stop_serving_unlinking

    def __repr__(self):
        return (
            f"<{type(self).__name__} running={self.is_running()} "
            f"closed={self.is_closed()} debug={self.get_debug()}>"
        )

    # -- running ---------------------------------------------------------

    def _check_running(self):
        if self.is_running():
            raise RuntimeError("This event loop is already running")
        if _events._get_running_loop() is not None:
            raise RuntimeError("Cannot run the event loop while another loop is running")

    @contextlib.contextmanager
    def _running_as_asyncio_loop(self):
        """What asyncio sets up for the time a loop runs: the running loop,
        async generator hooks, origin tracking in debug mode, and (on the
        main thread) the signal wake-up fd in our epoll set."""
        self._set_coroutine_origin_tracking(self.get_debug())
        saved_hooks = sys.get_asyncgen_hooks()
        previous_loop = _events._get_running_loop()
        holds_wakeup = False
        try:
            sys.set_asyncgen_hooks(
                firstiter=self._asyncgen_firstiter_hook,
                finalizer=self._asyncgen_finalizer_hook,
            )
            # Shared with add_signal_handler(), which keeps it after the run
            # (see ProcessMixin._hold_signal_wakeup).
            holds_wakeup = self._hold_signal_wakeup()
            _events._set_running_loop(self)
            yield
        finally:
            _events._set_running_loop(previous_loop)
            if holds_wakeup:
                self._release_signal_wakeup()
            self._set_coroutine_origin_tracking(False)
            sys.set_asyncgen_hooks(*saved_hooks)

    def run_forever(self):
        """Run until stop() is called."""
        self._check_closed()
        self._check_running()
        with self._running_as_asyncio_loop():
            self._run_forever_native()

    def run_application(self, app, argv=None):
        """Run a Gio.Application (or Gtk.Application) with this loop as the
        running asyncio loop for its whole life; return its exit status.

        stop() quits the application; KeyboardInterrupt and SystemExit from a
        callback quit it and are raised from here."""
        self._check_closed()
        self._check_running()
        if argv is None:
            argv = sys.argv
        with self._external_run(app.quit):
            return app.run(argv)

    @contextlib.contextmanager
    def _external_run(self, quit_func):
        with self._running_as_asyncio_loop():
            self._begin_external_run(quit_func)
            try:
                yield
            finally:
                self._end_external_run()

    # PyGObject >= 3.50 asks for the asyncio loop whose ``_context`` is the
    # context being iterated (answered by _pygobject.py) to wrap
    # GLib.MainLoop.run(), Gio.Application.run() (``running``) and
    # MainContext.iteration() (``paused``).  Our source dispatches asyncio in
    # all of them, nested or not, so there is nothing to pause; an
    # application run while the loop is not running makes it the running
    # loop for that time.

    @property
    def _context(self):
        if self._given_context is not None:
            return self._given_context
        try:
            from gi.repository import GLib
        except ImportError:
            return None
        if self._uses_default_context:
            return GLib.MainContext.default()
        if self.is_running() and self._thread_id == threading.get_ident():
            # Our private context is the thread default while we run.
            return GLib.MainContext.ref_thread_default()
        return None

    @contextlib.contextmanager
    def running(self, quit_func):
        # Already running, or dispatched by GLib right now (then the batch
        # made us the running loop): nothing to set up or tear down.
        if self.is_running() or _events._get_running_loop() is self:
            yield
            return
        with self._external_run(quit_func):
            yield

    @contextlib.contextmanager
    def paused(self):
        yield

    def run_until_complete(self, future):
        """Run until the future (or coroutine) is done; return its result."""
        self._check_closed()
        self._check_running()
        wrapped = not _futures.isfuture(future)
        future = _tasks.ensure_future(future, loop=self)
        if wrapped:
            # The task is ours: don't warn that it was destroyed pending if
            # run_forever() is interrupted.
            future._log_destroy_pending = False
        future.add_done_callback(_stop_loop_when_done)
        try:
            self.run_forever()
        except BaseException:
            if wrapped and future.done() and not future.cancelled():
                # Mark the exception retrieved: it is propagating anyway.
                future.exception()
            raise
        finally:
            future.remove_done_callback(_stop_loop_when_done)
        if not future.done():
            raise RuntimeError("Event loop stopped before Future completed.")
        return future.result()

    def close(self):
        """Close the loop: drop pending callbacks, release the GLib source
        and the epoll fd, and shut the default executor down without waiting."""
        if not self.is_running() and not self.is_closed():
            self._remove_all_signal_handlers()
            # Children still running are reaped by a thread, not left zombies.
            self._orphan_children()
        self._close_native()
        executor = self._default_executor
        if executor is not None:
            self._default_executor = None
            executor.shutdown(wait=False)

    def set_debug(self, enabled):
        self._set_debug_flag(enabled)
        if self.is_running():
            self.call_soon_threadsafe(self._set_coroutine_origin_tracking, enabled)

    def _set_coroutine_origin_tracking(self, enabled):
        if bool(enabled) == bool(self._coroutine_origin_tracking_enabled):
            return
        if enabled:
            self._coroutine_origin_tracking_saved_depth = sys.get_coroutine_origin_tracking_depth()
            sys.set_coroutine_origin_tracking_depth(_DEBUG_STACK_DEPTH)
        else:
            sys.set_coroutine_origin_tracking_depth(self._coroutine_origin_tracking_saved_depth)
        self._coroutine_origin_tracking_enabled = enabled

    # -- async generators ------------------------------------------------

    def _asyncgen_firstiter_hook(self, agen):
        if self._asyncgens_shutdown_called:
            warnings.warn(
                f"asynchronous generator {agen!r} was scheduled after "
                f"loop.shutdown_asyncgens() call",
                ResourceWarning,
                source=self,
            )
        self._asyncgens.add(agen)

    def _asyncgen_finalizer_hook(self, agen):
        self._asyncgens.discard(agen)
        if not self.is_closed():
            self.call_soon_threadsafe(self.create_task, agen.aclose())

    async def shutdown_asyncgens(self):
        """Close every async generator still open on this loop."""
        self._asyncgens_shutdown_called = True
        if not len(self._asyncgens):
            return
        agens = list(self._asyncgens)
        self._asyncgens.clear()
        results = await _tasks.gather(*[ag.aclose() for ag in agens], return_exceptions=True)
        for agen, result in zip(agens, results):
            if isinstance(result, Exception):
                self.call_exception_handler(
                    {
                        "message": f"an error occurred during closing of "
                        f"asynchronous generator {agen!r}",
                        "exception": result,
                        "asyncgen": agen,
                    }
                )

    # -- executor --------------------------------------------------------

    def run_in_executor(self, executor, func, *args):
        """Run func(*args) in an executor; return an asyncio future."""
        self._check_closed()
        if self.get_debug():
            self._check_executor_callback(func)
        if executor is None:
            if self._executor_shutdown_called:
                raise RuntimeError("Executor shutdown has been called")
            executor = self._default_executor
            if executor is None:
                executor = concurrent.futures.ThreadPoolExecutor(thread_name_prefix="asyncio")
                self._default_executor = executor
        return _futures.wrap_future(executor.submit(func, *args), loop=self)

    @staticmethod
    def _check_executor_callback(func):
        if asyncio.iscoroutine(func) or iscoroutinefunction(func):
            raise TypeError("coroutines cannot be used with run_in_executor()")
        if not callable(func):
            raise TypeError(
                f"a callable object was expected by run_in_executor(), got {func!r}"
            )

    def set_default_executor(self, executor):
        if not isinstance(executor, concurrent.futures.ThreadPoolExecutor):
            raise TypeError("executor must be ThreadPoolExecutor instance")
        self._default_executor = executor

    async def shutdown_default_executor(self, timeout=None):
        """Wait for the default executor's jobs, then shut it down."""
        self._executor_shutdown_called = True
        executor = self._default_executor
        if executor is None:
            return
        done = self.create_future()

        def join_executor():
            try:
                executor.shutdown(wait=True)
                if not self.is_closed():
                    self.call_soon_threadsafe(_set_result_unless_done, done)
            except Exception as exc:  # pragma: no cover - reported to the waiter
                if not self.is_closed():
                    self.call_soon_threadsafe(_set_exception_unless_done, done, exc)

        thread = threading.Thread(target=join_executor, name="glibloop-executor-shutdown")
        thread.start()
        try:
            async with asyncio.timeout(timeout):
                await done
        except TimeoutError:
            warnings.warn(
                "The executor did not finish joining its threads within "
                f"{timeout} seconds.",
                RuntimeWarning,
                stacklevel=2,
            )
            executor.shutdown(wait=False)
        else:
            thread.join()

    # -- errors ----------------------------------------------------------

    def default_exception_handler(self, context):
        """Log the exception context the way asyncio's loops do."""
        message = context.get("message") or "Unhandled exception in event loop"
        exception = context.get("exception")
        exc_info = (type(exception), exception, exception.__traceback__) if exception is not None else False
        handle = self._current_handle
        if "source_traceback" not in context and handle is not None and handle._source_traceback:
            context = dict(context, handle_traceback=handle._source_traceback)
        lines = [message]
        for key in sorted(context):
            if key in ("message", "exception"):
                continue
            value = context[key]
            if key == "source_traceback":
                value = "Object created at (most recent call last):\n" + "".join(
                    traceback.format_list(value)
                ).rstrip()
            elif key == "handle_traceback":
                value = "Handle created at (most recent call last):\n" + "".join(
                    traceback.format_list(value)
                ).rstrip()
            else:
                value = repr(value)
            lines.append(f"{key}: {value}")
        _logger().error("\n".join(lines), exc_info=exc_info)

    def call_exception_handler(self, context):
        """Pass an error context to the handler set with
        set_exception_handler(), or to default_exception_handler()."""
        handler = self.get_exception_handler()
        if handler is None:
            try:
                self.default_exception_handler(context)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException:
                _logger().error("Exception in default exception handler", exc_info=True)
            return
        try:
            # A custom handler runs in the Context of the task, future or
            # handle the error came from (as CPython does since 3.12), so it
            # sees the context variables the failing code saw.
            source = context.get("task") or context.get("future") or context.get("handle")
            get_context = getattr(source, "get_context", None)
            ctx = get_context() if get_context is not None else None
            if ctx is not None and hasattr(ctx, "run"):
                ctx.run(handler, self, context)
            else:
                handler(self, context)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            try:
                self.default_exception_handler(
                    {
                        "message": "Unhandled error in exception handler",
                        "exception": exc,
                        "context": context,
                    }
                )
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException:
                _logger().error(
                    "Exception in default exception handler while handling an "
                    "unexpected error in custom exception handler",
                    exc_info=True,
                )

    def _log_slow_callback(self, handle, seconds):
        callback = handle._callback
        owner = getattr(callback, "__self__", None)
        what = repr(owner) if isinstance(owner, asyncio.Task) else str(handle)
        _logger().warning("Executing %s took %.3f seconds", what, seconds)


def _set_result_unless_done(fut):
    if not fut.done():
        fut.set_result(None)


def _set_exception_unless_done(fut, exc):
    if not fut.done():
        fut.set_exception(exc)
