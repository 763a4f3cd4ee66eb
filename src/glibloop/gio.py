"""Await Gio asynchronous operations and GObject signals from asyncio.

Gio's asynchronous API is callback based: ``X_async(..., cancellable,
callback)`` starts an operation and ``X_finish(result)`` collects its outcome
from inside the callback.  On a glibloop loop those callbacks are dispatched
by the same GLib main context that runs asyncio, so turning a pair into an
awaitable needs no threads and no ``gi.events``::

    ok, data, etag = await glibloop.gio.call(file.load_contents_async)
    async for info in glibloop.gio.enumerate(directory):
        print(info.get_name())

Cancelling the awaiting task cancels the operation's ``Gio.Cancellable`` and
waits for Gio to report back, so when the task sees ``CancelledError`` the
operation is over and its object (a stream, say) is free for the next one.  A
failed operation raises its ``GLib.Error``.

GObject signals become awaitables too::

    args = await glibloop.gio.wait_signal(button, "clicked")
    async with glibloop.gio.signal_stream(entry, "notify::text") as changes:
        async for args in changes: ...

A D-Bus object whose methods are coroutines::

    async with glibloop.gio.register_object(connection, path, xml, handlers):
        ...  # each call runs handlers.Method(*args) in a task and replies

The signal helpers only call ``obj.connect``/``obj.disconnect``, so this
module imports without PyGObject; ``call``, ``enumerate`` and
``register_object`` import it when first used and say how to install it if
it is missing (PyGObject is the optional ``glibloop[gtk]`` dependency).
"""

from __future__ import annotations

import asyncio
import builtins
import collections
import collections.abc
import contextvars
import functools
import importlib
import inspect
import sys
import threading

# enumerate is public but left out of __all__: a star import must not
# shadow the builtin.
__all__ = [
    "call", "wait_signal", "signal_stream", "SignalStream",
    "register_object", "DBusRegistration", "DBusError", "dbus_invocation",
]


def _gi_modules(what):
    """Import Gio and GLib on first use; say how to get them if missing."""
    try:
        from gi.repository import Gio, GLib
    except ImportError as exc:
        raise ImportError(
            f"{what} needs PyGObject (the gi package): "
            "pip install 'glibloop[gtk]'"
        ) from exc
    return Gio, GLib


# ---------------------------------------------------------------------------
# call(): one X_async / X_finish pair as a coroutine


class _Signature:
    """What call() must know about one async method, read from its
    introspection data once (keyed by C symbol) instead of on every call."""

    __slots__ = ("cancellable", "callback", "callback_index", "priority_index", "finish")

    def __init__(self, cancellable, callback, callback_index, priority_index, finish):
        self.cancellable = cancellable        # argument name, or None
        self.callback = callback              # argument name
        self.callback_index = callback_index  # position among Python arguments
        self.priority_index = priority_index  # position of io_priority, or None
        self.finish = finish                  # (source_object, result) -> value


_signatures: dict[str, _Signature] = {}


def _finish_name(name):
    base = name[: -len("_async")] if name.endswith("_async") else name
    return base + "_finish"


def _is_function_info(method):
    # PyGObject exposes introspected functions as gi.FunctionInfo objects,
    # bound or not; Python overrides are plain functions or methods.
    return callable(getattr(method, "get_arguments", None)) and callable(
        getattr(method, "get_container", None)
    )


# PyGObject renamed some introspection getters when it moved to
# girepository-2.0; these accept both spellings.


def _type_of(arg):
    getter = getattr(arg, "get_type_info", None)  # newer PyGObject
    return getter() if getter is not None else arg.get_type()


def _index(info, *names):
    for name in names:
        getter = getattr(info, name, None)
        if getter is not None:
            return getter()
    return -1


def _python_arguments(info):
    """The argument infos PyGObject lets Python pass, in order: in and inout
    arguments, minus array lengths and destroy notifiers it fills itself."""
    arguments = info.get_arguments()
    hidden = set()
    for arg in arguments:
        hidden.add(_index(_type_of(arg), "get_array_length", "get_array_length_index"))
        hidden.add(_index(arg, "get_destroy", "get_destroy_index"))
    out = 1  # GIDirection.OUT
    return [
        arg
        for index, arg in builtins.enumerate(arguments)
        if index not in hidden and arg.get_direction() != out
    ]


def _interface_name(arg):
    iface = _type_of(arg).get_interface()
    return None if iface is None else (iface.get_namespace(), iface.get_name())


def _introspected_signature(info):
    key = info.get_symbol()
    signature = _signatures.get(key)
    if signature is not None:
        return signature
    cancellable = callback = callback_index = priority_index = None
    for index, arg in builtins.enumerate(_python_arguments(info)):
        iface = _interface_name(arg)
        if iface == ("Gio", "Cancellable"):
            cancellable = arg.get_name()
        elif iface == ("Gio", "AsyncReadyCallback"):
            callback, callback_index = arg.get_name(), index
        elif arg.get_name() == "io_priority":
            priority_index = index
    if callback is None:
        raise TypeError(f"{info.get_name()}() takes no GAsyncReadyCallback: not a Gio async method")

    name = _finish_name(info.get_name())
    module = importlib.import_module("gi.repository." + info.get_namespace())
    container = info.get_container()
    owner = module if container is None else getattr(module, container.get_name())
    finish = getattr(owner, name, None)
    if finish is None:
        signature = _Signature(cancellable, callback, callback_index, priority_index, None)
    elif info.is_method():
        # Gio's convention: the result's source object is the instance the
        # operation was started on, and X_finish is its method.
        signature = _Signature(cancellable, callback, callback_index, priority_index, finish)
    else:
        signature = _Signature(
            cancellable, callback, callback_index, priority_index,
            functools.partial(_call_without_source, finish),
        )
    _signatures[key] = signature
    return signature


def _python_signature(method):
    """A Python callable (an override, or your own function) is assumed to
    take Gio's usual cancellable= and callback= keywords."""
    owner = getattr(method, "__self__", None)
    name = getattr(method, "__name__", None)
    finish = getattr(owner, _finish_name(name), None) if owner is not None and name else None
    if finish is not None:
        finish = functools.partial(_call_without_source, finish)
    return _Signature("cancellable", "callback", None, None, finish)


def _call_without_source(finish, source, result):
    return finish(result)


class _Operation:
    """One started operation: receives Gio's callback, keeps the outcome and
    wakes whichever future the awaiting coroutine is blocked on."""

    __slots__ = ("finish", "outcome", "waiter")

    def __init__(self, finish):
        self.finish = finish
        self.outcome = None  # (value, exception) once Gio reported back
        self.waiter = None

    def on_ready(self, source, result, *user_data):
        try:
            self.outcome = (self.finish(source, result), None)
        except BaseException as exc:  # handed to the awaiting task, not lost in GLib
            self.outcome = (None, exc)
        _wake(self.waiter)


def _wake(waiter):
    if waiter is not None and not waiter.done() and not waiter.get_loop().is_closed():
        waiter.set_result(None)


async def call(async_method, /, *args, finish=None, cancellable=None, **kwargs):
    """Run a Gio ``X_async`` method and return what ``X_finish`` returns.

    ``async_method`` is the (usually bound) async method or function, e.g.
    ``file.load_contents_async`` or ``Gio.bus_get``; ``args`` and ``kwargs``
    are its arguments up to, not including, the cancellable and callback,
    which call() supplies.  ``io_priority`` defaults to
    ``GLib.PRIORITY_DEFAULT`` when the method takes one and it is not given.

    The finish function is found by name (``X_async`` -> ``X_finish``, and
    ``X`` -> ``X_finish`` for functions such as ``Gio.bus_get``); pass
    ``finish=`` (a callable taking the ``Gio.AsyncResult``) for methods that
    do not follow that convention.  The return value is exactly what the
    finish function returns, e.g. ``(ok, contents, etag)`` for
    ``load_contents``.

    A ``GLib.Error`` from the operation is raised as is.  When the awaiting
    task is cancelled, the operation's cancellable (``cancellable=`` if given,
    else a new one) is cancelled and call() waits for Gio's callback before
    raising ``CancelledError``; cancelling the task a second time stops that
    wait.  A result that arrives together with the cancellation is dropped.
    If you cancel your own ``cancellable=`` yourself, the operation fails
    with ``GLib.Error`` (``Gio.IOErrorEnum.CANCELLED``) instead.
    """
    Gio, GLib = _gi_modules("glibloop.gio.call()")
    if _is_function_info(async_method):
        signature = _introspected_signature(async_method)
    else:
        signature = _python_signature(async_method)
    if finish is not None:
        finish = functools.partial(_call_without_source, finish)
    elif signature.finish is not None:
        finish = signature.finish
    else:
        raise TypeError(
            f"cannot find the finish method of {async_method!r}; pass finish= to call()"
        )
    operation = _Operation(finish)

    for name in (signature.callback, signature.cancellable):
        if name is not None and name in kwargs:
            raise TypeError(f"call() supplies {name}=; pass a cancellable as cancellable=")
    if signature.callback_index is not None and len(args) >= signature.callback_index:
        raise TypeError(
            f"too many positional arguments for {async_method!r}: call() supplies "
            "the cancellable and the callback"
        )
    if (
        signature.priority_index is not None
        and len(args) <= signature.priority_index
        and "io_priority" not in kwargs
    ):
        kwargs["io_priority"] = GLib.PRIORITY_DEFAULT
    if signature.cancellable is not None:
        if cancellable is None:
            cancellable = Gio.Cancellable()
        kwargs[signature.cancellable] = cancellable
    elif cancellable is not None:
        raise TypeError(f"{async_method!r} takes no cancellable")
    kwargs[signature.callback] = operation.on_ready

    loop = asyncio.get_running_loop()
    operation.waiter = loop.create_future()
    async_method(*args, **kwargs)
    try:
        await operation.waiter
    except asyncio.CancelledError:
        if operation.outcome is None and cancellable is not None:
            cancellable.cancel()
            await _wait_for_outcome(loop, operation)
        raise
    value, exc = operation.outcome
    operation.outcome = None
    if exc is not None:
        try:
            raise exc
        finally:
            exc = None
    return value


async def _wait_for_outcome(loop, operation):
    """After cancelling: wait until Gio reports, unless cancelled again."""
    while operation.outcome is None:
        operation.waiter = loop.create_future()
        try:
            await operation.waiter
        except asyncio.CancelledError:
            return


# ---------------------------------------------------------------------------
# enumerate(): the children of a directory as an async iterator


async def enumerate(
    file,
    attributes="standard::*",
    *,
    flags=None,
    batch=64,
    io_priority=None,
    cancellable=None,
):
    """Yield a ``Gio.FileInfo`` for each child of the directory ``file``.

    Children are fetched ``batch`` at a time with
    ``enumerate_children_async`` and ``next_files_async``; ``attributes`` and
    ``flags`` (default ``Gio.FileQueryInfoFlags.NONE``) are those of
    ``Gio.File.enumerate_children``.  ``file.get_child(info.get_name())``
    gives the child's ``Gio.File``.

    The enumerator is closed when the iteration ends, fails or is cancelled.
    If you stop iterating early, close the iterator (``contextlib.aclosing``)
    to release the directory at once rather than when it is collected.
    """
    Gio, GLib = _gi_modules("glibloop.gio.enumerate()")
    if flags is None:
        flags = Gio.FileQueryInfoFlags.NONE
    if io_priority is None:
        io_priority = GLib.PRIORITY_DEFAULT
    if batch < 1:
        raise ValueError("batch must be at least 1")

    enumerator = await call(
        file.enumerate_children_async, attributes, flags, io_priority, cancellable=cancellable
    )
    try:
        while True:
            infos = await call(
                enumerator.next_files_async, batch, io_priority, cancellable=cancellable
            )
            if not infos:
                break
            for info in infos:
                yield info
    except BaseException:
        # Cancelled, failed or closed early: we may not be allowed to await
        # any more, so close in the background and ignore how that ends.
        enumerator.close_async(io_priority, None, _finish_quietly)
        raise
    await call(enumerator.close_async, io_priority, cancellable=cancellable)


def _finish_quietly(enumerator, result, *user_data):
    try:
        enumerator.close_finish(result)
    except Exception:
        pass


# ---------------------------------------------------------------------------
# GObject signals


def _signal_methods(obj):
    """obj's connect and disconnect.  GObject's own are used when obj is a
    GObject, because some classes shadow them (Gio.Cancellable.connect
    connects a plain callback, not a signal handler)."""
    GObject = sys.modules.get("gi.repository.GObject")
    if GObject is not None and isinstance(obj, GObject.Object):
        return (
            functools.partial(GObject.Object.connect, obj),
            functools.partial(GObject.Object.disconnect, obj),
        )
    return obj.connect, obj.disconnect


def _default_return(obj, name):
    """What the helpers' handlers return: the zero of the signal's return
    type (False, 0 -- e.g. GST_FLOW_OK for appsink's new-sample --, 0.0),
    None for the others, which leaves the emission's default."""
    GObject = sys.modules.get("gi.repository.GObject")
    if GObject is None or not isinstance(obj, GObject.Object):
        return None
    signal_id = GObject.signal_lookup(name.partition("::")[0], obj.__gtype__)
    if not signal_id:
        return None  # connect() reports the unknown signal
    fundamental = GObject.signal_query(signal_id).return_type.fundamental
    if fundamental == GObject.TYPE_BOOLEAN:
        return False
    if fundamental in (GObject.TYPE_FLOAT, GObject.TYPE_DOUBLE):
        return 0.0
    if fundamental in (
        GObject.TYPE_ENUM, GObject.TYPE_FLAGS, GObject.TYPE_CHAR, GObject.TYPE_UCHAR,
        GObject.TYPE_INT, GObject.TYPE_UINT, GObject.TYPE_LONG, GObject.TYPE_ULONG,
        GObject.TYPE_INT64, GObject.TYPE_UINT64,
    ):
        return 0
    return None


def _kept(args):
    """A handler's arguments, made to outlive the emission.  PyGObject lends
    boxed values (a GstBuffer, a GstMessage) to a Python handler for the
    emission only, unless the handler keeps them by reference and the
    signal is introspected; the helpers keep them for later, so they take
    their own copy (for reference-counted boxed types, a reference) now,
    on the emitting thread, while the value is still alive."""
    GObject = sys.modules.get("gi.repository.GObject")
    if GObject is None:
        return args
    boxed = GObject.GBoxed
    return tuple(boxed.copy(arg) if isinstance(arg, boxed) else arg for arg in args)


def _call_in_loop(loop, thread_id, function, *args):
    """Run function now if we are on the loop's thread, else hand it over:
    a signal can be emitted from any thread (GStreamer does)."""
    if threading.get_ident() == thread_id:
        function(*args)
    else:
        try:
            loop.call_soon_threadsafe(function, *args)
        except RuntimeError:  # the loop is closed: nobody is waiting
            pass


def _resolve(waiter, value):
    if not waiter.done():
        waiter.set_result(value)


async def wait_signal(obj, name):
    """Wait for the next emission of signal ``name`` on ``obj``.

    Returns the tuple a handler would receive: the emitter first, then the
    signal's arguments.  The handler is disconnected when the wait ends,
    whether by the signal, cancellation or timeout.  For a signal with a
    return value the handler returns its type's zero (False, 0, 0.0), or
    None, which leaves the emission's default.
    """
    loop = asyncio.get_running_loop()
    thread_id = threading.get_ident()
    waiter = loop.create_future()
    result = _default_return(obj, name)

    def on_signal(*args):
        _call_in_loop(loop, thread_id, _resolve, waiter, _kept(args))
        return result

    connect, disconnect = _signal_methods(obj)
    handler_id = connect(name, on_signal)
    try:
        return await waiter
    finally:
        disconnect(handler_id)


class _SignalBuffer:
    """The handler side of a SignalStream.  It refers to neither the stream
    nor the object, so dropping the stream disconnects (see __del__)."""

    __slots__ = ("items", "lock", "waiter", "loop", "thread_id", "closed", "dropped", "result")

    def __init__(self, maxsize, result):
        self.result = result  # what the handler returns: see _default_return
        self.items = collections.deque(maxlen=maxsize or None)
        self.lock = threading.Lock()
        self.waiter = None
        self.loop = None
        self.thread_id = None
        self.closed = False
        self.dropped = 0

    def push(self, *args):
        with self.lock:
            if self.closed:
                return self.result
            if len(self.items) == self.items.maxlen:
                self.dropped += 1
            self.items.append(_kept(args))
            waiter, self.waiter = self.waiter, None
            loop, thread_id = self.loop, self.thread_id
        if waiter is not None:
            _call_in_loop(loop, thread_id, _resolve, waiter, None)
        return self.result

    def close(self):
        with self.lock:
            self.closed = True
            self.items.clear()
            waiter, self.waiter = self.waiter, None
            loop, thread_id = self.loop, self.thread_id
        if waiter is not None:
            _call_in_loop(loop, thread_id, _resolve, waiter, None)


class SignalStream:
    """Emissions of one signal as an async iterator; see signal_stream()."""

    _disconnect = None  # set once connected; __del__ may see a failed __init__

    def __init__(self, obj, name, *, maxsize=0):
        if maxsize < 0:
            raise ValueError("maxsize must be 0 (unbounded) or positive")
        self._buffer = _SignalBuffer(maxsize, _default_return(obj, name))
        self._name = name
        connect, disconnect = _signal_methods(obj)
        self.handler_id = connect(name, self._buffer.push)
        self._disconnect = disconnect

    @property
    def dropped(self):
        """How many emissions were discarded because the buffer was full."""
        return self._buffer.dropped

    @property
    def closed(self):
        return self._buffer.closed

    def close(self):
        """Disconnect the handler and end the iteration (idempotent)."""
        if self._disconnect is not None:
            disconnect, self._disconnect = self._disconnect, None
            disconnect(self.handler_id)
        self._buffer.close()

    async def aclose(self):
        self.close()

    def __aiter__(self):
        return self

    async def __anext__(self):
        buffer = self._buffer
        while True:
            with buffer.lock:
                if buffer.items:
                    return buffer.items.popleft()
                if buffer.closed:
                    raise StopAsyncIteration
                if buffer.waiter is not None:
                    raise RuntimeError("another task is already waiting on this signal stream")
                loop = asyncio.get_running_loop()
                waiter = loop.create_future()
                buffer.waiter, buffer.loop, buffer.thread_id = waiter, loop, threading.get_ident()
            try:
                await waiter
            except BaseException:
                # Like an async generator: an exception (cancellation)
                # thrown into the iteration ends it.
                self.close()
                raise
            finally:
                with buffer.lock:
                    if buffer.waiter is waiter:
                        buffer.waiter = None

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc_info):
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __del__(self):
        if self._disconnect is None:
            return
        try:
            self.close()
        except Exception:  # interpreter shutdown, or the object is gone
            pass

    def __repr__(self):
        state = "closed" if self.closed else f"{len(self._buffer.items)} pending"
        return f"<{type(self).__name__} {self._name!r} {state}>"


def signal_stream(obj, name, *, maxsize=0):
    """Return an async iterator over emissions of signal ``name`` on ``obj``.

    The handler is connected at once, so emissions between this call and the
    first ``async for`` step are kept.  Each item is the tuple a handler
    would receive (the emitter first).  ``maxsize`` > 0 bounds the buffer:
    when full, the oldest emission is discarded (counted in ``.dropped``).

    The handler is disconnected by ``close()``/``aclose()``, on leaving
    ``async with``/``with``, when the awaiting task is cancelled, or when
    the stream is garbage collected.  Iteration never ends on its own.
    """
    return SignalStream(obj, name, maxsize=maxsize)


# ---------------------------------------------------------------------------
# D-Bus objects whose methods are coroutines

_FAILED = "org.freedesktop.DBus.Error.Failed"
_UNKNOWN_OBJECT = "org.freedesktop.DBus.Error.UnknownObject"

_invocation = contextvars.ContextVar("glibloop.gio.dbus_invocation")


class DBusError(Exception):
    """Raise it from a method handler of register_object(): the caller gets
    the D-Bus error ``name`` (``"com.example.Error.NotFound"``) and
    ``message``."""

    def __init__(self, name, message=""):
        super().__init__(name, message)
        self.name = name
        self.message = message

    def __str__(self):
        return f"{self.name}: {self.message}" if self.message else self.name


def dbus_invocation():
    """The ``Gio.DBusMethodInvocation`` of the call being handled.

    Valid inside a method handler of register_object() and in the task that
    runs it (it is a context variable), e.g. for
    ``dbus_invocation().get_sender()``.  Reply through the handler's return
    value or exception, not through the invocation.
    """
    try:
        return _invocation.get()
    except LookupError:
        raise RuntimeError("dbus_invocation() is only valid in a D-Bus method handler") from None


class _Method:
    __slots__ = ("name", "handler", "signature", "outputs")

    def __init__(self, name, handler, out_args):
        self.name = name
        self.handler = handler
        self.signature = "(" + "".join(arg.signature for arg in out_args) + ")"
        self.outputs = len(out_args)


def _interface_info(Gio, interface):
    if not isinstance(interface, str):
        return interface
    interfaces = Gio.DBusNodeInfo.new_for_xml(interface).interfaces
    if len(interfaces) != 1:
        raise ValueError(
            f"the XML describes {len(interfaces)} interfaces, not one: pass a "
            "Gio.DBusInterfaceInfo (Gio.DBusNodeInfo.new_for_xml(xml).lookup_interface(name))"
        )
    return interfaces[0]


def _handler_for(handlers, name):
    if isinstance(handlers, collections.abc.Mapping):
        return handlers.get(name)
    return getattr(handlers, name, None)


def _invocation_releaser(connection, GLib):
    """How to register, and what to do with an invocation once answered.

    ``register_object_with_closures2`` (GLib 2.84+) hands the closure a
    reference PyGObject manages.  The older ``register_object`` (GLib's
    ``register_object_with_closures``) keeps one reference per call that
    only a C ``return_*`` call would consume, and PyGObject's ``return_*``
    consume a reference of their own: every invocation would leak, so that
    reference is dropped here once the reply is sent (GLib 2.82.3 alone
    passed it on, and needs nothing).
    """
    register = getattr(connection, "register_object_with_closures2", None)
    if register is not None:
        return register, None
    if GLib.check_version(2, 82, 3) is None and GLib.check_version(2, 82, 4) is not None:
        return connection.register_object, None
    from gi.module import get_introspection_module

    # GObject.Object.unref itself is refused by PyGObject's override.
    return connection.register_object, get_introspection_module("GObject").Object.unref


class DBusRegistration:
    """An object exported by register_object(); see there."""

    def __init__(self, connection, object_path, interface, handlers):
        Gio, self._GLib = _gi_modules("glibloop.gio.register_object()")
        info = _interface_info(Gio, interface)
        self._methods = {}
        for method in info.methods:
            handler = _handler_for(handlers, method.name)
            if not callable(handler):
                raise TypeError(f"{handlers!r} has no handler for D-Bus method {method.name}()")
            self._methods[method.name] = _Method(method.name, handler, method.out_args)
        self._loop = asyncio.get_running_loop()
        self._tasks = set()
        self._closed = False
        self.connection = connection
        self.object_path = object_path
        self.interface_name = info.name
        register, self._release = _invocation_releaser(connection, self._GLib)
        self.id = register(object_path, info, self._on_method_call, None, None)

    @property
    def pending(self):
        """How many calls are being handled (their tasks have not ended)."""
        return len(self._tasks)

    @property
    def closed(self):
        return self._closed

    def unregister(self):
        """Remove the object from the connection and cancel the calls in
        flight; each is answered with an error when its task ends.
        Idempotent; call it on the loop's thread."""
        if self._closed:
            return
        self._closed = True
        self.connection.unregister_object(self.id)
        for task in list(self._tasks):
            task.cancel()

    async def aclose(self):
        """unregister(), then wait until every call in flight is answered."""
        self.unregister()
        if self._tasks:
            await asyncio.wait(list(self._tasks))

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc_info):
        await self.aclose()

    def __repr__(self):
        state = "closed" if self._closed else f"{len(self._tasks)} pending"
        return f"<{type(self).__name__} {self.interface_name} at {self.object_path} {state}>"

    # -- one call

    def _on_method_call(self, connection, sender, object_path, interface_name,
                        method_name, parameters, invocation):
        method = self._methods.get(method_name)
        if self._closed or method is None:  # a call queued before unregister()
            invocation.return_dbus_error(_UNKNOWN_OBJECT, f"{object_path} is not exported")
            self._done(invocation)
            return
        contextvars.copy_context().run(self._start, method, parameters.unpack(), invocation)

    def _start(self, method, args, invocation):
        _invocation.set(invocation)  # the task copies this context
        try:
            result = method.handler(*args)
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(result, loop=self._loop)
            else:
                task = None
        except BaseException as exc:
            self._reply(invocation, method, None, exc)
            if not isinstance(exc, Exception):
                raise
            return
        if task is None:
            self._reply(invocation, method, result, None)
            return
        self._tasks.add(task)
        task.add_done_callback(functools.partial(self._finished, invocation, method))

    def _finished(self, invocation, method, task):
        self._tasks.discard(task)
        if task.cancelled():
            invocation.return_dbus_error(_FAILED, f"{method.name}() was cancelled")
            self._done(invocation)
        else:
            exc = task.exception()
            self._reply(invocation, method, None if exc is not None else task.result(), exc)

    def _reply(self, invocation, method, result, exc):
        GLib = self._GLib
        if exc is None:
            try:
                value = self._reply_value(method, result)
            except (TypeError, ValueError, OverflowError) as error:
                exc = TypeError(
                    f"{method.name}() returned {result!r}, not a value of D-Bus type "
                    f"{method.signature}: {error}"
                )
            else:
                invocation.return_value(value)
                self._done(invocation)
                return
        if isinstance(exc, DBusError):
            invocation.return_dbus_error(exc.name, exc.message)
        elif isinstance(exc, GLib.Error):
            invocation.return_error_literal(
                GLib.quark_from_string(exc.domain), exc.code, exc.message
            )
        else:
            invocation.return_dbus_error(_FAILED, f"{type(exc).__name__}: {exc}")
            self._loop.call_exception_handler({
                "message": f"D-Bus method {self.interface_name}.{method.name}() failed",
                "exception": exc,
            })
        self._done(invocation)

    def _reply_value(self, method, result):
        GLib = self._GLib
        if isinstance(result, GLib.Variant):
            return result
        if method.outputs == 0:
            if result is not None:
                raise TypeError("the method has no out arguments: return None")
            return None
        return GLib.Variant(method.signature, (result,) if method.outputs == 1 else tuple(result))

    def _done(self, invocation):
        if self._release is not None:
            self._release(invocation)


def register_object(connection, object_path, interface, handlers):
    """Export a D-Bus object on ``connection`` whose methods may be coroutines.

    ``interface`` is the D-Bus introspection XML of one interface (a
    ``<node>`` with one ``<interface>``) or a ``Gio.DBusInterfaceInfo``.
    ``handlers`` has a callable for each method of the interface: an
    attribute of that name, or a key of a mapping.  A call runs
    ``handler(*args)`` with the call's arguments unpacked to Python values;
    when it returns a coroutine (an ``async def`` handler), that runs in a
    task and the reply is sent when the task ends.

    The reply is what the handler returns: None for a method without out
    arguments, the value for one out argument, a tuple for several (or a
    ``GLib.Variant`` of the whole reply tuple).  An exception becomes a D-Bus
    error: ``DBusError(name, message)`` as given, ``GLib.Error`` as Gio
    encodes it, anything else as ``org.freedesktop.DBus.Error.Failed`` and
    is also reported to the loop's exception handler.  A cancelled call is
    answered ``org.freedesktop.DBus.Error.Failed`` too.

    Call it on the loop's thread with the loop running: Gio delivers the
    calls to the thread-default main context, the loop's.  The returned
    ``DBusRegistration`` unregisters on ``unregister()``, ``aclose()`` or
    leaving ``async with``, cancelling calls still in flight; ``aclose()``
    and ``async with`` wait until they are answered.
    """
    return DBusRegistration(connection, object_path, interface, handlers)
