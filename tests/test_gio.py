"""glibloop.gio: Gio async operations and GObject signals awaited on the loop."""
import asyncio
import contextlib
import gc
import os
import subprocess
import sys
import textwrap
import threading
import weakref

import pytest

pytest.importorskip("gi", reason="PyGObject is installed by make test")
from gi.repository import Gio, GLib, GObject  # noqa: E402

from glibloop import gio  # noqa: E402


def is_io_error(exc, code):
    return isinstance(exc, GLib.Error) and exc.matches(Gio.io_error_quark(), code)


def run(loop, coro, timeout=10):
    """run_until_complete, but a lost wake-up fails the test instead of hanging it."""
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


async def until(predicate, timeout=5):
    """Let the loop run until predicate() holds (thread-pool work is slow under load)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


async def cancel_and_wait(task, timeout=5):
    """Cancel task and check it ends cancelled, without hanging the run."""
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=timeout)
    assert task in done, "the task did not end after cancel()"
    assert task.cancelled()


# --- call() -----------------------------------------------------------------


def test_call_load_contents(loop, tmp_path):
    path = tmp_path / "hello.txt"
    path.write_bytes(b"hello from gio\n")
    file = Gio.File.new_for_path(str(path))

    ok, data, _etag = run(loop, gio.call(file.load_contents_async))
    assert ok is True
    assert data == b"hello from gio\n"


def test_call_missing_file_raises_glib_error(loop, tmp_path):
    file = Gio.File.new_for_path(str(tmp_path / "missing"))

    with pytest.raises(GLib.Error) as info:
        run(loop, gio.call(file.load_contents_async))
    assert info.value.domain == "g-io-error-quark"
    assert info.value.code == int(Gio.IOErrorEnum.NOT_FOUND)
    assert is_io_error(info.value, Gio.IOErrorEnum.NOT_FOUND)


@pytest.fixture
def pipe_stream():
    read_fd, write_fd = os.pipe()
    stream = Gio.UnixInputStream.new(read_fd, True)
    yield stream, write_fd
    stream.close(None)
    os.close(write_fd)


def test_cancel_cancels_the_gio_operation_and_waits_for_it(loop, pipe_stream):
    stream, write_fd = pipe_stream
    finished = []  # what every finish call saw: the callback must come once

    def finish(result):
        try:
            value = stream.read_bytes_finish(result)
        except GLib.Error as exc:
            finished.append(exc)
            raise
        finished.append(value)
        return value

    async def main():
        task = asyncio.ensure_future(gio.call(stream.read_bytes_async, 16, finish=finish))
        await asyncio.sleep(0.05)
        assert not task.done() and stream.has_pending()  # really blocked on the pipe
        await cancel_and_wait(task)
        # By the time the task saw CancelledError Gio had already reported.
        assert len(finished) == 1 and is_io_error(finished[0], Gio.IOErrorEnum.CANCELLED)
        assert not stream.has_pending()
        await asyncio.sleep(0.05)
        assert len(finished) == 1  # no late callback
        # The cancelled read consumed nothing: the stream still works.
        os.write(write_fd, b"after")
        data = await gio.call(stream.read_bytes_async, 16)
        return data.get_data()

    assert run(loop, main()) == b"after"


def test_cancel_uses_the_given_cancellable(loop, pipe_stream):
    stream, _ = pipe_stream
    cancellable = Gio.Cancellable()

    async def main():
        task = asyncio.ensure_future(
            gio.call(stream.read_bytes_async, 16, cancellable=cancellable)
        )
        await asyncio.sleep(0.02)
        assert not cancellable.is_cancelled()
        await cancel_and_wait(task)

    run(loop, main())
    assert cancellable.is_cancelled()
    assert not stream.has_pending()


def test_cancelling_own_cancellable_raises_glib_error(loop, pipe_stream):
    stream, _ = pipe_stream
    cancellable = Gio.Cancellable()

    async def main():
        loop.call_later(0.02, cancellable.cancel)
        await gio.call(stream.read_bytes_async, 16, cancellable=cancellable)

    with pytest.raises(GLib.Error) as info:
        run(loop, main())
    assert is_io_error(info.value, Gio.IOErrorEnum.CANCELLED)


class StubbornOperation:
    """A Python async method whose operation ignores its cancellable."""

    def __init__(self):
        self.callback = None
        self.cancellable = None

    def work_async(self, *, cancellable, callback):
        self.cancellable, self.callback = cancellable, callback

    def work_finish(self, result):
        return ("finished", result)


def test_second_cancel_stops_waiting_for_a_stubborn_operation(loop):
    op = StubbornOperation()

    async def main():
        task = asyncio.ensure_future(gio.call(op.work_async))
        await asyncio.sleep(0)
        assert op.callback is not None
        task.cancel()
        await asyncio.sleep(0.02)
        assert op.cancellable.is_cancelled()
        assert not task.done()  # still waiting for the operation to report
        await cancel_and_wait(task)
        op.callback(op, "late result")  # a late report is dropped quietly

    run(loop, main())


def test_python_method_finish_found_by_name(loop):
    op = StubbornOperation()

    async def main():
        task = asyncio.ensure_future(gio.call(op.work_async))
        await asyncio.sleep(0)
        op.callback(op, "the-result")
        return await task

    assert run(loop, main()) == ("finished", "the-result")


def test_missing_finish_is_reported_before_starting(loop):
    callbacks = []

    def lonely_async(*, cancellable, callback):
        callbacks.append(callback)

    with pytest.raises(TypeError, match="finish="):
        run(loop, gio.call(lonely_async))
    assert callbacks == []

    async def explicit():
        task = asyncio.ensure_future(gio.call(lonely_async, finish=lambda res: res * 2))
        await asyncio.sleep(0)
        assert len(callbacks) == 1 and not task.done()
        callbacks[0](None, 21)
        return await task

    assert run(loop, explicit()) == 42


def test_cancellable_and_callback_are_call_s_job(loop, tmp_path):
    file = Gio.File.new_for_path(str(tmp_path))
    with pytest.raises(TypeError, match="cancellable"):
        run(loop, gio.call(file.load_contents_async, None))
    with pytest.raises(TypeError, match="callback"):
        run(loop, gio.call(file.load_contents_async, callback=print))


def test_io_priority_defaults_and_can_be_given(loop, pipe_stream):
    stream, write_fd = pipe_stream
    os.write(write_fd, b"abcdef")

    async def main():
        first = await gio.call(stream.read_bytes_async, 3)
        second = await gio.call(stream.read_bytes_async, 3, io_priority=GLib.PRIORITY_LOW)
        return first.get_data(), second.get_data()

    assert run(loop, main()) == (b"abc", b"def")


def test_io_priority_found_after_hidden_array_length(loop):
    # write_all_async(buffer, count, io_priority, ...): PyGObject fills count
    # from buffer, so io_priority is the second Python argument.
    read_fd, write_fd = os.pipe()
    out = Gio.UnixOutputStream.new(write_fd, True)
    try:

        async def main():
            first = await gio.call(out.write_all_async, b"positional ")
            second = await gio.call(out.write_all_async, b"priority", GLib.PRIORITY_LOW)
            return first, second

        (ok1, n1), (ok2, n2) = run(loop, main())
        assert (ok1, n1, ok2, n2) == (True, 11, True, 8)
        assert os.read(read_fd, 100) == b"positional priority"
    finally:
        out.close(None)
        os.close(read_fd)


def test_static_and_namespace_functions(loop, monkeypatch, tmp_path):
    # Gio.File.new_tmp_async is a static function of an interface.
    file, iostream = run(loop, gio.call(Gio.File.new_tmp_async, "glibloop-XXXXXX"))
    try:
        assert isinstance(iostream, Gio.FileIOStream)
        assert os.path.exists(file.get_path())
    finally:
        iostream.close(None)
        os.unlink(file.get_path())

    # Gio.bus_get is a namespace-level function; its finish is Gio.bus_get_finish.
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", f"unix:path={tmp_path}/no-bus")
    with pytest.raises(GLib.Error):
        run(loop, gio.call(Gio.bus_get, Gio.BusType.SESSION))


def test_call_leaves_no_reference_behind(loop, tmp_path, pipe_stream):
    path = tmp_path / "f"
    path.write_bytes(b"x")
    file = Gio.File.new_for_path(str(path))
    stream, _ = pipe_stream

    async def main():
        await gio.call(file.load_contents_async)
        task = asyncio.ensure_future(gio.call(stream.read_bytes_async, 4))
        await asyncio.sleep(0.01)
        await cancel_and_wait(task)

    run(loop, main())
    file_ref = weakref.ref(file)
    del file
    gc.collect()
    assert file_ref() is None


# --- enumerate() ------------------------------------------------------------


@pytest.fixture
def closed_enumerators(monkeypatch):
    """Every Gio.FileEnumerator whose close_async was called."""
    seen = []
    original = Gio.FileEnumerator.close_async

    def close_async(self, *args, **kwargs):
        seen.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Gio.FileEnumerator, "close_async", close_async)
    return seen


def make_dir(tmp_path, count):
    for index in range(count):
        (tmp_path / f"file{index:02d}").write_bytes(b"x" * index)
    return Gio.File.new_for_path(str(tmp_path))


def test_enumerate_directory(loop, tmp_path, closed_enumerators):
    directory = make_dir(tmp_path, 11)

    async def main():
        return [
            (info.get_name(), info.get_size())
            async for info in gio.enumerate(directory, "standard::name,standard::size", batch=4)
        ]

    entries = run(loop, main())
    assert sorted(entries) == [(f"file{i:02d}", i) for i in range(11)]
    assert len(closed_enumerators) == 1
    assert closed_enumerators[0].is_closed()


def test_enumerate_closed_when_stopped_early(loop, tmp_path, closed_enumerators):
    directory = make_dir(tmp_path, 10)

    async def main():
        names = []
        async with contextlib.aclosing(gio.enumerate(directory, batch=2)) as infos:
            async for info in infos:
                names.append(info.get_name())
                if len(names) == 3:
                    break
        assert len(closed_enumerators) == 1
        await until(closed_enumerators[0].is_closed)  # closed in the background
        return names

    assert len(run(loop, main())) == 3


def test_enumerate_closed_when_cancelled(loop, tmp_path, closed_enumerators):
    directory = make_dir(tmp_path, 5)
    seen = []

    async def consume():
        async with contextlib.aclosing(gio.enumerate(directory, batch=1)) as infos:
            async for info in infos:
                seen.append(info.get_name())
                await asyncio.sleep(10)

    async def main():
        task = asyncio.ensure_future(consume())
        await until(lambda: seen)
        await cancel_and_wait(task)
        assert len(closed_enumerators) == 1
        await until(closed_enumerators[0].is_closed)

    run(loop, main())
    assert len(seen) == 1


def test_enumerate_missing_directory(loop, tmp_path):
    async def main():
        return [info async for info in gio.enumerate(Gio.File.new_for_path(str(tmp_path / "nope")))]

    with pytest.raises(GLib.Error) as info:
        run(loop, main())
    assert is_io_error(info.value, Gio.IOErrorEnum.NOT_FOUND)


# --- signals ------------------------------------------------------------------


class Emitter(GObject.Object):
    __gsignals__ = {"ping": (GObject.SignalFlags.RUN_FIRST, None, (int, str))}
    label = GObject.Property(type=str, default="")
    count = GObject.Property(type=int, default=0)


def handler_pending(obj, detailed_name):
    signal_id, detail = GObject.signal_parse_name(detailed_name, type(obj).__gtype__, True)
    return GObject.signal_has_handler_pending(obj, signal_id, detail, True)


def test_wait_signal_returns_handler_arguments(loop):
    emitter = Emitter()

    async def main():
        GLib.timeout_add(10, lambda: (emitter.emit("ping", 7, "seven"), GLib.SOURCE_REMOVE)[1])
        return await asyncio.wait_for(gio.wait_signal(emitter, "ping"), 5)

    args = run(loop, main())
    assert args == (emitter, 7, "seven")
    assert not handler_pending(emitter, "ping")
    ref = weakref.ref(emitter)
    del args, emitter
    gc.collect()
    assert ref() is None


def test_wait_signal_detailed_notify(loop):
    emitter = Emitter()

    async def main():
        waiter = asyncio.ensure_future(gio.wait_signal(emitter, "notify::label"))
        await asyncio.sleep(0)
        assert handler_pending(emitter, "notify::label")
        emitter.props.count = 3  # another property: must not wake the waiter
        await asyncio.sleep(0.01)
        assert not waiter.done()
        emitter.props.label = "new"
        return await waiter

    obj, pspec = run(loop, main())
    assert obj is emitter and pspec.name == "label"
    assert not handler_pending(emitter, "notify::label")


def test_wait_signal_cancelled_disconnects(loop):
    emitter = Emitter()

    async def main():
        assert not handler_pending(emitter, "ping")
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(gio.wait_signal(emitter, "ping"), 0.02)
        assert not handler_pending(emitter, "ping")

    run(loop, main())
    emitter.emit("ping", 1, "after")  # nobody listens; must not raise
    ref = weakref.ref(emitter)
    del emitter
    gc.collect()
    assert ref() is None


def test_wait_signal_emitted_from_another_thread(loop):
    emitter = Emitter()
    thread_ids = []

    async def main():
        waiter = asyncio.ensure_future(gio.wait_signal(emitter, "ping"))
        await asyncio.sleep(0)

        def emit():
            thread_ids.append(threading.get_ident())
            emitter.emit("ping", 2, "thread")

        thread = threading.Thread(target=emit)
        started = loop.time()
        thread.start()
        result = await asyncio.wait_for(waiter, 5)
        thread.join()
        # The emitting thread must wake the loop, not leave it to a timer.
        assert loop.time() - started < 2
        return result

    assert run(loop, main()) == (emitter, 2, "thread")
    assert thread_ids and thread_ids[0] != threading.get_ident()


def test_wait_signal_on_class_that_shadows_connect(loop):
    # Gio.Cancellable.connect is not GObject's signal connect.
    cancellable = Gio.Cancellable()

    async def main():
        loop.call_later(0.01, cancellable.cancel)
        return await asyncio.wait_for(gio.wait_signal(cancellable, "cancelled"), 5)

    assert run(loop, main()) == (cancellable,)
    assert not handler_pending(cancellable, "cancelled")


def test_unknown_signal_raises_at_once(loop):
    emitter = Emitter()
    with pytest.raises(TypeError):
        run(loop, gio.wait_signal(emitter, "no-such-signal"))
    with pytest.raises(TypeError):
        gio.signal_stream(emitter, "no-such-signal")
    with pytest.raises(ValueError):
        gio.signal_stream(emitter, "ping", maxsize=-1)
    assert not handler_pending(emitter, "ping")


class Asker(GObject.Object):
    """Signals that want a value back from their handlers."""

    __gsignals__ = {
        f"want-{kind}": (GObject.SignalFlags.RUN_LAST, return_type, ())
        for kind, return_type in (
            ("bool", bool), ("int", int), ("float", float), ("str", str),
            ("enum", Gio.FileType), ("flags", GLib.IOCondition), ("object", GObject.Object),
        )
    }


def test_signal_helpers_answer_signals_that_want_a_value(loop, capfd):
    """The handlers return the zero of the return type, which PyGObject can
    convert (None is refused for an enum: GStreamer's appsink new-sample)."""
    asker = Asker()
    kinds = ("bool", "int", "float", "str", "enum", "flags", "object")

    async def main():
        results = {}
        for kind in kinds:
            with gio.signal_stream(asker, f"want-{kind}") as stream:
                first = asker.emit(f"want-{kind}")
                waiter = asyncio.ensure_future(gio.wait_signal(asker, f"want-{kind}"))
                await asyncio.sleep(0)
                second = asker.emit(f"want-{kind}")
                assert (await waiter) == (asker,)
                assert (await anext(stream)) == (asker,)
            results[kind] = (first, second)
        return results

    results = run(loop, main())
    assert results == {
        "bool": (False, False), "int": (0, 0), "float": (0.0, 0.0), "str": (None, None),
        "enum": (0, 0), "flags": (0, 0), "object": (None, None),
    }
    assert "TypeError" not in capfd.readouterr().err


def test_signal_stream_keeps_early_emissions_and_disconnects_on_exit(loop):
    emitter = Emitter()

    async def main():
        received = []
        async with gio.signal_stream(emitter, "ping") as stream:
            handler_id = stream.handler_id
            assert GObject.signal_handler_is_connected(emitter, handler_id)
            emitter.emit("ping", 0, "before iterating")
            loop.call_later(0.01, emitter.emit, "ping", 1, "later")
            async for args in stream:
                received.append(args[1:])
                if len(received) == 2:
                    break
        assert not GObject.signal_handler_is_connected(emitter, handler_id)
        assert stream.closed
        return received

    assert run(loop, main()) == [(0, "before iterating"), (1, "later")]
    ref = weakref.ref(emitter)
    del emitter
    gc.collect()
    assert ref() is None


def test_signal_stream_notify_property_changes(loop):
    emitter = Emitter()

    async def main():
        labels = []
        async with gio.signal_stream(emitter, "notify::label") as stream:
            for text in ("a", "b", "c"):
                loop.call_soon(setattr, emitter.props, "label", text)
                loop.call_soon(setattr, emitter.props, "count", len(labels))
                obj, pspec = await stream.__anext__()
                labels.append((pspec.name, obj.props.label))
        return labels

    assert run(loop, main()) == [("label", "a"), ("label", "b"), ("label", "c")]
    assert not handler_pending(emitter, "notify::label")


def test_signal_stream_bounded_drops_oldest(loop):
    emitter = Emitter()

    async def main():
        with gio.signal_stream(emitter, "ping", maxsize=2) as stream:
            for number in range(5):
                emitter.emit("ping", number, "")
            first = await stream.__anext__()
            second = await stream.__anext__()
            return first[1], second[1], stream.dropped

    assert run(loop, main()) == (3, 4, 3)


def test_signal_stream_cancelled_disconnects(loop):
    emitter = Emitter()

    async def consume(stream):
        async for _ in stream:
            pass

    async def main():
        stream = gio.signal_stream(emitter, "ping")
        task = asyncio.ensure_future(consume(stream))
        await asyncio.sleep(0.01)
        assert handler_pending(emitter, "ping")
        await cancel_and_wait(task)
        assert stream.closed
        assert not handler_pending(emitter, "ping")
        emitter.emit("ping", 9, "ignored")
        with pytest.raises(StopAsyncIteration):
            await stream.__anext__()

    run(loop, main())
    ref = weakref.ref(emitter)
    del emitter
    gc.collect()
    assert ref() is None


def test_signal_stream_close_ends_a_waiting_iteration(loop):
    emitter = Emitter()

    async def main():
        stream = gio.signal_stream(emitter, "ping")
        collected = []

        async def consume():
            async for args in stream:
                collected.append(args[1])
            return "ended"

        task = asyncio.ensure_future(consume())
        await asyncio.sleep(0)
        emitter.emit("ping", 1, "")
        await asyncio.sleep(0.01)
        await stream.aclose()
        assert await asyncio.wait_for(task, 5) == "ended"
        assert not handler_pending(emitter, "ping")
        return collected

    assert run(loop, main()) == [1]


def test_signal_stream_dropped_without_close_disconnects(loop):
    emitter = Emitter()
    stream = gio.signal_stream(emitter, "ping")
    handler_id = stream.handler_id
    emitter.emit("ping", 1, "buffered, holds the emitter")
    assert GObject.signal_handler_is_connected(emitter, handler_id)
    del stream
    gc.collect()
    assert not GObject.signal_handler_is_connected(emitter, handler_id)
    ref = weakref.ref(emitter)
    del emitter
    gc.collect()
    assert ref() is None


def test_signal_stream_close_releases_buffered_emissions(loop):
    emitter = Emitter()
    stream = gio.signal_stream(emitter, "ping")
    emitter.emit("ping", 1, "buffered")
    stream.close()
    ref = weakref.ref(emitter)
    del emitter
    gc.collect()
    assert ref() is None  # the closed stream no longer holds the emitter

    async def main():
        return [args async for args in stream]

    assert run(loop, main()) == []


def test_signal_stream_from_another_thread(loop):
    emitter = Emitter()

    async def main():
        async with gio.signal_stream(emitter, "ping") as stream:

            def emit_all():
                for number in range(50):
                    emitter.emit("ping", number, "t")

            thread = threading.Thread(target=emit_all)
            started = loop.time()
            thread.start()
            numbers = []
            async for args in stream:
                numbers.append(args[1])
                if len(numbers) == 50:
                    break
            thread.join()
            assert loop.time() - started < 2
            return numbers

    assert run(loop, main()) == list(range(50))


def test_signal_stream_single_consumer(loop):
    emitter = Emitter()

    async def main():
        with gio.signal_stream(emitter, "ping") as stream:
            first = asyncio.ensure_future(stream.__anext__())
            await asyncio.sleep(0)
            with pytest.raises(RuntimeError, match="already waiting"):
                await stream.__anext__()
            emitter.emit("ping", 5, "")
            return (await first)[1]

    assert run(loop, main()) == 5


# --- without PyGObject --------------------------------------------------------


def test_signal_helpers_work_without_gi():
    script = textwrap.dedent(
        """
        import sys
        sys.modules["gi"] = None  # as if PyGObject were not installed
        import asyncio, glibloop
        from glibloop import gio

        class Duck:
            def __init__(self):
                self.handlers = {}
            def connect(self, name, handler):
                self.handlers[len(self.handlers) + 1] = handler
                return len(self.handlers)
            def disconnect(self, handler_id):
                del self.handlers[handler_id]

        async def main():
            duck = Duck()
            asyncio.get_running_loop().call_soon(lambda: [h(duck, 42) for h in list(duck.handlers.values())])
            args = await gio.wait_signal(duck, "quack")
            assert args == (duck, 42) and duck.handlers == {}, (args, duck.handlers)
            try:
                await gio.call(print)
            except ImportError as exc:
                assert "glibloop[gtk]" in str(exc), exc
            else:
                raise AssertionError("call() without gi did not raise")
            print("ok")

        glibloop.run(main())
        """
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
