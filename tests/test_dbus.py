"""D-Bus on glibloop against a real message bus (a private dbus-daemon).

A Gio service exported with glibloop.gio.register_object(), whose method
handlers are coroutines, is called from dbus-fast (an asyncio D-Bus library)
on the same loop and from Gio.DBusProxy awaited with glibloop.gio.call();
D-Bus signals are awaited with wait_signal()/signal_stream() while aiohttp
serves on the same thread.  dbus-fast's behaviour on glibloop is compared
with the same client on stock asyncio.
"""
import asyncio
import contextlib
import gc
import threading

import aiohttp
import pytest
from aiohttp import web
from dbus_fast import Message
from dbus_fast.errors import DBusError as FastDBusError
from dbus_fast.introspection import Node
from gi.repository import Gio, GLib

import glibloop
from _dbus import PrivateBus, close_dbus_fast, close_gio, dbus_fast_bus, gio_connection
from glibloop import gio

PATH = "/com/example/Calc"
IFACE = "com.example.Calc"
NAME = "com.example.Calc"
XML = """
<node>
  <interface name="com.example.Calc">
    <method name="Add">
      <arg name="a" type="i" direction="in"/>
      <arg name="b" type="i" direction="in"/>
      <arg name="sum" type="i" direction="out"/>
    </method>
    <method name="Echo">
      <arg name="seconds" type="d" direction="in"/>
      <arg name="text" type="s" direction="in"/>
      <arg name="text" type="s" direction="out"/>
    </method>
    <method name="DivMod">
      <arg name="a" type="i" direction="in"/>
      <arg name="b" type="i" direction="in"/>
      <arg name="quotient" type="i" direction="out"/>
      <arg name="remainder" type="i" direction="out"/>
    </method>
    <method name="Fail">
      <arg name="how" type="s" direction="in"/>
    </method>
    <method name="Hang"/>
    <method name="Sender">
      <arg name="sender" type="s" direction="out"/>
    </method>
    <signal name="Changed">
      <arg name="what" type="s"/>
      <arg name="count" type="i"/>
    </signal>
  </interface>
</node>
"""
INFO = Gio.DBusNodeInfo.new_for_xml(XML).interfaces[0]
TIMEOUT = 20


class Calc:
    """The service: coroutine handlers, and one plain function (DivMod)."""

    def __init__(self):
        self.freed = 0  # invocations finalized by GLib
        self.calls = 0
        self.hanging = []  # tasks of Hang() calls in flight

    def _track(self):
        self.calls += 1
        gio.dbus_invocation().weak_ref(self._freed)

    def _freed(self, *args):
        self.freed += 1

    async def Add(self, a, b):
        self._track()
        await asyncio.sleep(0)
        return a + b

    async def Echo(self, seconds, text):
        self._track()
        await asyncio.sleep(seconds)
        return text

    def DivMod(self, a, b):
        self._track()
        if b == 0:
            raise gio.DBusError("com.example.Calc.Error.DivisionByZero", f"{a} / 0")
        return divmod(a, b)

    async def Fail(self, how):
        self._track()
        await asyncio.sleep(0)
        if how == "dbus":
            raise gio.DBusError("com.example.Calc.Error.Bad", "bad input")
        if how == "glib":
            raise GLib.Error("no entry", "g-dbus-error-quark", int(Gio.DBusError.ACCESS_DENIED))
        if how == "python":
            raise ValueError("a bug in the handler")
        if how == "type":
            return "Fail() has no out argument"

    async def Hang(self):
        self._track()
        self.hanging.append(asyncio.current_task())
        await asyncio.Event().wait()

    async def Sender(self):
        self._track()
        await asyncio.sleep(0)
        return gio.dbus_invocation().get_sender()


@pytest.fixture(scope="module")
def bus_address(tmp_path_factory):
    with PrivateBus(tmp_path_factory.mktemp("dbus")) as bus:
        yield bus.address


def run(loop, coro):
    """run_until_complete with a timeout; anything reported to the loop's
    exception handler is returned beside the result."""
    problems = []
    loop.set_exception_handler(lambda _loop, context: problems.append(context))
    result = loop.run_until_complete(asyncio.wait_for(coro, TIMEOUT))
    return result, problems


@contextlib.asynccontextmanager
async def service(address, handlers=None):
    """A Gio connection exporting Calc at PATH: (connection, registration, calc)."""
    calc = Calc() if handlers is None else handlers
    connection = await gio_connection(address)
    try:
        async with gio.register_object(connection, PATH, XML, calc) as registration:
            yield connection, registration, calc
    finally:
        await close_gio(connection)


@contextlib.asynccontextmanager
async def fast_client(address, destination):
    """A dbus-fast bus and its proxy interface for Calc at destination."""
    bus = await dbus_fast_bus(address)
    try:
        proxy = bus.get_proxy_object(destination, PATH, Node.parse(XML))
        yield bus, proxy.get_interface(IFACE)
    finally:
        await close_dbus_fast(bus)


async def gio_proxy(connection, destination, flags=Gio.DBusProxyFlags.DO_NOT_LOAD_PROPERTIES):
    return await gio.call(
        Gio.DBusProxy.new, connection, flags, INFO, destination, PATH, IFACE
    )


async def until(predicate, timeout=5):
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


async def all_freed(calc):
    """Every invocation the service saw was finalized by GLib: none leaked."""
    for _ in range(3):
        gc.collect()
        await asyncio.sleep(0.01)
    await until(lambda: calc.freed == calc.calls)
    return calc.freed


# --- the service, called from dbus-fast on the same loop ----------------------


def test_async_handlers_answer_dbus_fast_on_the_same_loop(loop, bus_address):
    async def main():
        async with service(bus_address) as (connection, registration, calc):
            async with fast_client(bus_address, connection.get_unique_name()) as (bus, calc_iface):
                assert await calc_iface.call_add(2, 3) == 5
                assert await calc_iface.call_div_mod(17, 5) == [3, 2]
                # Calls in flight at once are answered as their tasks end,
                # the slowest last, each with its own reply.
                delays = [0.05, 0.0, 0.03, 0.01, 0.02] * 4
                finished = []

                async def echo(i, delay):
                    text = await calc_iface.call_echo(delay, f"call {i}")
                    finished.append(i)
                    return text

                texts = await asyncio.gather(*(echo(i, d) for i, d in enumerate(delays)))
                assert texts == [f"call {i}" for i in range(len(delays))]
                assert set(finished[-4:]) == {0, 5, 10, 15}  # the 0.05 s ones
                assert await calc_iface.call_sender() == bus.unique_name
            assert registration.pending == 0
            return await all_freed(calc)

    freed, problems = run(loop, main())
    assert freed == 23
    assert not problems


def test_exceptions_become_dbus_errors(loop, bus_address):
    async def main():
        errors = {}
        async with service(bus_address) as (connection, registration, calc):
            async with fast_client(bus_address, connection.get_unique_name()) as (bus, calc_iface):
                for how in ("dbus", "glib", "python", "type"):
                    with pytest.raises(FastDBusError) as info:
                        await calc_iface.call_fail(how)
                    errors[how] = (info.value.type, info.value.text)
                with pytest.raises(FastDBusError) as info:
                    await calc_iface.call_div_mod(1, 0)  # raised by a plain function
                errors["sync"] = (info.value.type, info.value.text)
                assert await calc_iface.call_add(1, 1) == 2  # the service lives on
            await all_freed(calc)
        return errors

    errors, problems = run(loop, main())
    assert errors == {
        "dbus": ("com.example.Calc.Error.Bad", "bad input"),
        "glib": ("org.freedesktop.DBus.Error.AccessDenied", "no entry"),
        "python": ("org.freedesktop.DBus.Error.Failed", "ValueError: a bug in the handler"),
        "type": ("org.freedesktop.DBus.Error.Failed", errors["type"][1]),
        "sync": ("com.example.Calc.Error.DivisionByZero", "1 / 0"),
    }
    assert errors["type"][1].startswith("TypeError: Fail() returned 'Fail() has no out argument'")
    # The handler's bugs (not the errors it raised on purpose) are reported.
    assert [type(p["exception"]) for p in problems] == [ValueError, TypeError]
    assert "com.example.Calc.Fail()" in problems[0]["message"]


def test_gio_client_sees_the_remote_error_names(loop, bus_address):
    async def main():
        async with service(bus_address) as (connection, registration, calc):
            client = await gio_connection(bus_address)
            proxy = await gio_proxy(client, connection.get_unique_name())
            reply = await gio.call(
                proxy.call, "DivMod", GLib.Variant("(ii)", (7, 2)), Gio.DBusCallFlags.NONE, -1
            )
            names = []
            for how in ("dbus", "glib"):
                with pytest.raises(GLib.Error) as info:
                    await gio.call(
                        proxy.call, "Fail", GLib.Variant("(s)", (how,)), Gio.DBusCallFlags.NONE, -1
                    )
                names.append(Gio.DBusError.get_remote_error(info.value))
            await close_gio(client)
            await all_freed(calc)
            return reply.unpack(), names, info.value

    (reply, names, last), problems = run(loop, main())
    assert reply == (3, 1)
    assert names == ["com.example.Calc.Error.Bad", "org.freedesktop.DBus.Error.AccessDenied"]
    # A registered error domain comes back as the same GLib.Error.
    assert last.matches(Gio.dbus_error_quark(), Gio.DBusError.ACCESS_DENIED)
    assert not problems


def test_cancelled_calls_are_answered_and_nothing_is_left(loop, bus_address):
    async def main():
        outcomes = []
        async with service(bus_address) as (connection, registration, calc):
            async with fast_client(bus_address, connection.get_unique_name()) as (bus, calc_iface):
                # A call whose task is cancelled (here by hand; a timeout
                # inside the handler is the same) gets an error reply.
                call = asyncio.ensure_future(calc_iface.call_hang())
                await until(lambda: registration.pending == 1)
                calc.hanging[0].cancel()
                with pytest.raises(FastDBusError) as info:
                    await call
                outcomes.append((info.value.type, info.value.text))
                assert registration.pending == 0

                # Calls in flight when the object is unregistered: each task
                # is cancelled, each caller answered, and aclose() waits for it.
                calls = [asyncio.ensure_future(calc_iface.call_hang()) for _ in range(3)]
                await until(lambda: registration.pending == 3)
                await registration.aclose()
                assert registration.pending == 0 and registration.closed
                assert [task.cancelled() for task in calc.hanging] == [True] * 4
                calc.hanging.clear()  # a task refers to its context, so to the invocation
                for call in calls:
                    with pytest.raises(FastDBusError) as info:
                        await call
                    outcomes.append((info.value.type, info.value.text))
                # The object is gone from the bus.
                with pytest.raises(FastDBusError) as info:
                    await calc_iface.call_add(1, 2)
                outcomes.append(info.value.type)
            return outcomes, await all_freed(calc)

    (outcomes, freed), problems = run(loop, main())
    cancelled = ("org.freedesktop.DBus.Error.Failed", "Hang() was cancelled")
    assert outcomes == [cancelled] * 4 + ["org.freedesktop.DBus.Error.UnknownMethod"]
    assert freed == 4
    assert not problems


def test_handlers_from_a_mapping_and_a_variant_reply(loop, bus_address):
    async def add(a, b):
        return GLib.Variant("(i)", (a * 100 + b,))  # the whole reply, as is

    handlers = {
        "Add": add, "Echo": None, "DivMod": lambda a, b: (b, a), "Fail": print,
        "Hang": print, "Sender": print,
    }

    async def main():
        connection = await gio_connection(bus_address)
        with pytest.raises(TypeError, match=r"no handler for D-Bus method Echo\(\)"):
            gio.register_object(connection, PATH, XML, handlers)
        handlers["Echo"] = lambda seconds, text: text.upper()
        with pytest.raises(ValueError, match="2 interfaces"):
            gio.register_object(
                connection, PATH, XML.replace("</node>", '<interface name="b.C"/></node>'), handlers
            )
        async with gio.register_object(connection, PATH, INFO, handlers) as registration:
            assert repr(registration) == f"<DBusRegistration {IFACE} at {PATH} 0 pending>"
            async with fast_client(bus_address, connection.get_unique_name()) as (bus, calc_iface):
                results = [
                    await calc_iface.call_add(4, 2),
                    await calc_iface.call_echo(0, "quiet"),
                    await calc_iface.call_div_mod(1, 2),
                ]
        assert repr(registration).endswith(" closed>")
        await close_gio(connection)
        return results

    results, problems = run(loop, main())
    assert results == [402, "QUIET", [2, 1]]
    assert not problems


def test_dbus_invocation_outside_a_handler():
    with pytest.raises(RuntimeError, match="only valid in a D-Bus method handler"):
        gio.dbus_invocation()


# --- Gio.DBusProxy awaited with glibloop.gio.call(), and a well-known name ---


def test_gio_proxy_calls_a_well_known_name(loop, bus_address):
    async def main():
        async with service(bus_address) as (connection, registration, calc):
            loop = asyncio.get_running_loop()
            acquired = loop.create_future()
            owner = Gio.bus_own_name_on_connection(
                connection, NAME, Gio.BusNameOwnerFlags.NONE,
                lambda conn, name: acquired.set_result(name), None,
            )
            assert await acquired == NAME
            client = await gio_connection(bus_address)
            proxy = await gio_proxy(client, NAME)
            assert proxy.get_name_owner() == connection.get_unique_name()
            replies = await asyncio.gather(*(
                gio.call(
                    proxy.call, "Add", GLib.Variant("(ii)", (i, i)), Gio.DBusCallFlags.NONE, -1
                )
                for i in range(50)
            ))
            # dbus-fast reaches the same object by the well-known name.
            async with fast_client(bus_address, NAME) as (bus, calc_iface):
                fast = await calc_iface.call_echo(0.0, "by name")
            Gio.bus_unown_name(owner)
            await close_gio(client)
            await all_freed(calc)
            return [r.unpack()[0] for r in replies], fast, calc.calls

    (sums, fast, calls), problems = run(loop, main())
    assert sums == [2 * i for i in range(50)]
    assert fast == "by name"
    assert calls == 51
    assert not problems


# --- signals, with aiohttp serving on the same thread --------------------------


def test_signals_awaited_while_aiohttp_serves(loop, bus_address):
    """An aiohttp endpoint emits D-Bus signals and another calls the service
    over D-Bus; a Gio proxy's signals are read with signal_stream() and
    wait_signal(), and dbus-fast receives the same signals: all on one thread."""

    async def main():
        async with service(bus_address) as (connection, registration, calc):
            client = await gio_connection(bus_address)
            proxy = await gio_proxy(client, connection.get_unique_name())

            async def emit(request):
                count = int(request.match_info["count"])
                for i in range(count):
                    connection.emit_signal(
                        None, PATH, IFACE, "Changed", GLib.Variant("(si)", (request.path, i))
                    )
                return web.Response(text=str(count))

            async def add(request):
                reply = await gio.call(
                    proxy.call, "Add",
                    GLib.Variant("(ii)", (int(request.query["a"]), int(request.query["b"]))),
                    Gio.DBusCallFlags.NONE, -1,
                )
                return web.json_response(reply.unpack()[0])

            app = web.Application()
            app.router.add_post("/emit/{count}", emit)
            app.router.add_get("/add", add)
            runner = web.AppRunner(app)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = runner.addresses[0][1]

            fast_signals = []
            async with fast_client(bus_address, connection.get_unique_name()) as (bus, calc_iface):
                calc_iface.on_changed(lambda what, count: fast_signals.append((what, count)))
                await calc_iface.call_add(0, 0)  # AddMatch has been handled by now
                async with aiohttp.ClientSession() as http:
                    base = f"http://127.0.0.1:{port}"
                    # One signal, awaited while the request that causes it runs.
                    waiter = asyncio.ensure_future(glibloop.wait_signal(proxy, "g-signal"))
                    await asyncio.sleep(0)
                    async with http.post(f"{base}/emit/1") as response:
                        assert await response.text() == "1"
                    _proxy, sender, name, params = await waiter
                    first = (sender == connection.get_unique_name(), name, params.unpack())

                    # Many, read as a stream while requests keep coming.
                    async with glibloop.signal_stream(proxy, "g-signal") as signals:
                        async def requests():
                            sums = []
                            for batch in range(10):
                                async with http.post(f"{base}/emit/20") as response:
                                    assert response.status == 200
                                query = {"a": batch, "b": 1}
                                async with http.get(f"{base}/add", params=query) as r:
                                    sums.append(await r.json())
                            return sums

                        sender_task = asyncio.ensure_future(requests())
                        seen = []
                        async for _proxy, _sender, name, params in signals:
                            seen.append(params.unpack())
                            if len(seen) == 200:
                                break
                        sums = await sender_task
                        assert signals.dropped == 0
                await until(lambda: len(fast_signals) == 201)
            await runner.cleanup()
            await close_gio(client)
            return first, seen, sums, fast_signals

    (first, seen, sums, fast_signals), problems = run(loop, main())
    assert first == (True, "Changed", ("/emit/1", 0))
    assert seen == [("/emit/20", i) for i in range(20)] * 10  # all of them, in order
    assert sums == [b + 1 for b in range(10)]
    assert fast_signals == [("/emit/1", 0)] + [("/emit/20", i) for i in range(20)] * 10
    assert not problems


# --- dbus-fast on glibloop behaves as on asyncio -----------------------------


class ServiceThread(threading.Thread):
    """The Calc service on a glibloop loop of its own thread (its own
    GMainContext, thread-default while it runs), owning NAME."""

    def __init__(self, address):
        super().__init__(daemon=True)
        self.address = address
        self.ready = threading.Event()
        self.error = None

    def run(self):
        try:
            glibloop.run(self.serve())
        except BaseException as exc:  # reported by the test
            self.error = exc
            self.ready.set()

    async def serve(self):
        self.loop = asyncio.get_running_loop()
        self.stopping = asyncio.Event()
        async with service(self.address) as (connection, registration, self.calc):
            reply = await gio.call(
                connection.call, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                "org.freedesktop.DBus", "RequestName", GLib.Variant("(su)", (NAME, 0)),
                GLib.VariantType("(u)"), Gio.DBusCallFlags.NONE, -1,
            )
            assert reply.unpack() == (1,)  # DBUS_REQUEST_NAME_REPLY_PRIMARY_OWNER
            self.ready.set()
            await self.stopping.wait()
            self.freed = await all_freed(self.calc)

    def stop(self):
        self.loop.call_soon_threadsafe(self.stopping.set)
        self.join(TIMEOUT)


async def fast_transcript(address):
    """What a dbus-fast client sees of the service: results, errors, names."""
    transcript = []
    async with fast_client(address, NAME) as (bus, calc_iface):
        transcript.append(await calc_iface.call_add(20, 22))
        transcript.append(sorted(await asyncio.gather(
            *(calc_iface.call_echo(0.01 * (i % 3), str(i)) for i in range(12))
        )))
        for how in ("dbus", "glib"):
            try:
                await calc_iface.call_fail(how)
            except FastDBusError as error:
                transcript.append((error.type, error.text))
        try:
            await asyncio.wait_for(calc_iface.call_echo(5.0, "too slow"), 0.05)
        except asyncio.TimeoutError:
            transcript.append("timed out")
        transcript.append(await calc_iface.call_echo(0.0, "after the timeout"))
        introspection = await bus.introspect(NAME, PATH)
        transcript.append(sorted(m.name for m in introspection.interfaces[-1].methods))
        reply = await bus.call(Message(
            destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus", member="GetNameOwner", signature="s",
            body=["com.example.Nobody"],
        ))
        transcript.append((reply.message_type.name, reply.error_name))
    return transcript


def test_dbus_fast_client_same_on_glibloop_and_asyncio(bus_address):
    thread = ServiceThread(bus_address)
    thread.start()
    assert thread.ready.wait(TIMEOUT) and thread.error is None, thread.error
    try:
        transcripts = {}
        for name, factory in (("asyncio", asyncio.SelectorEventLoop),
                              ("glibloop", glibloop.new_event_loop)):
            with asyncio.Runner(loop_factory=factory) as runner:
                transcripts[name] = runner.run(fast_transcript(bus_address))
    finally:
        thread.stop()
    assert not thread.is_alive() and thread.error is None, thread.error
    assert transcripts["glibloop"] == transcripts["asyncio"]
    assert transcripts["glibloop"][:5] == [
        42,
        sorted(str(i) for i in range(12)),
        ("com.example.Calc.Error.Bad", "bad input"),
        ("org.freedesktop.DBus.Error.AccessDenied", "no entry"),
        "timed out",
    ]
    assert transcripts["glibloop"][5] == "after the timeout"
    assert transcripts["glibloop"][6] == ["Add", "DivMod", "Echo", "Fail", "Hang", "Sender"]
    assert transcripts["glibloop"][7] == ("ERROR", "org.freedesktop.DBus.Error.NameHasNoOwner")
    assert thread.freed == thread.calc.calls == 2 * 17
