"""Event-loop micro-benchmarks: one workload on one loop, in this process.

Run as a script, it measures one (loop, workload) pair and prints a single JSON
line on stdout for bench/run.py to parse:

    python bench/workloads.py --loop uvloop --workload call_soon_chain --repeat 3

The process does one warm-up run, then ``--repeat`` measured runs, each on a
fresh loop, and reports the best (highest) ops/s.  Only the loop's work is
timed: loop creation and closing are outside the clock.

Adding a workload
-----------------
Write ``def my_workload(loop, size) -> (ops, seconds)`` and decorate it with
``@workload("name", size=..., description=...)``.  The function gets a fresh,
not-yet-running loop, does ``size`` units of work on it, checks that the work
really happened (raise ``WorkloadError`` if not), and returns how many
operations it counted and the seconds they took, measured with
``time.perf_counter``.  It must not close the loop.  ``run.py`` picks every
registered workload up automatically.

Adding a loop works the same way: register a factory in ``LOOPS`` with
``@loop_factory("name")``.  The factory imports lazily, so a loop that is not
installed only makes its own runs report "unavailable".
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import json
import os
import platform
import socket
import sys
import threading
import time
import traceback
from typing import Callable

# Exit codes of the script, so the parent can tell "loop not installed" from
# "workload crashed" even when it cannot parse the JSON line.
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_UNAVAILABLE = 3


class WorkloadError(RuntimeError):
    """The loop did not do the work it was asked to do (wrong count, lost timer...)."""


# --------------------------------------------------------------------------
# Loops
# --------------------------------------------------------------------------

LoopFactory = Callable[[], asyncio.AbstractEventLoop]

#: name -> function returning a callable that creates a fresh loop.
#: The outer call does the imports (and may raise ImportError), the returned
#: callable is then used once per run.
LOOPS: dict[str, Callable[[], LoopFactory]] = {}


def loop_factory(name: str):
    def register(fn):
        LOOPS[name] = fn
        return fn
    return register


@loop_factory("glibloop")
def _glibloop():
    import glibloop
    return glibloop.new_event_loop


@loop_factory("asyncio")
def _asyncio():
    # Stock asyncio on Linux: the selector loop (epoll), as asyncio.run() uses.
    return asyncio.SelectorEventLoop


@loop_factory("uvloop")
def _uvloop():
    import uvloop
    return uvloop.new_event_loop


@loop_factory("gi.events")
def _gi_events():
    # PyGObject >= 3.50.  The policy's new_event_loop() creates a GLibEventLoop
    # on a new GMainContext, which is what we want for an isolated run.
    from gi.events import GLibEventLoopPolicy
    policy = GLibEventLoopPolicy()
    return policy.new_event_loop


@loop_factory("rloop")
def _rloop():
    # An asyncio loop in Rust (PyPI rloop); requirements/bench.txt.
    import rloop
    return rloop.new_event_loop


@loop_factory("veloxloop")
def _veloxloop():
    # An asyncio loop in Rust (PyPI veloxloop); it has no subprocess support.
    import veloxloop
    return veloxloop.new_event_loop


@loop_factory("loopmini")
def _loopmini():
    # An asyncio loop in Rust (PyPI loopmini).
    import loopmini
    return loopmini.new_event_loop


#: The asyncio loops on PyPI that are not GLib-based: they share no thread
#: with GLib, so the GLib rows do not run on them.
PYPI_PEERS = ("uvloop", "rloop", "veloxloop", "loopmini")


class GLibAlone:
    """Not an event loop: the "loop" of workloads that measure what PyGObject
    alone does, as the bound the asyncio-on-GLib loops are compared with."""

    def close(self):
        pass


@loop_factory("GLib alone")
def _glib_alone():
    from gi.repository import GLib  # noqa: F401 - availability check
    return GLibAlone


#: Loops that only run the workloads that name them.
EXTRA_LOOPS = {"GLib alone"}


def loop_versions() -> dict:
    """Python, GLib and each loop's version (or why it cannot be imported)."""
    info = {
        "python": platform.python_version(),
        "python_impl": platform.python_implementation(),
        "platform": platform.platform(),
        "glib": _glib_runtime_version(),
        "loops": {},
    }
    for name, get_factory in LOOPS.items():
        try:
            get_factory()
        except Exception as exc:  # noqa: BLE001 - any import problem means n/a
            info["loops"][name] = {"available": False,
                                   "error": f"{type(exc).__name__}: {exc}"}
            continue
        info["loops"][name] = {"available": True, "version": _version_of(name)}
    return info


def _version_of(loop_name: str) -> str:
    if loop_name == "asyncio":
        return platform.python_version()
    if loop_name in PYPI_PEERS:
        from importlib import metadata
        return metadata.version(loop_name)
    if loop_name == "gi.events":
        import gi
        return "PyGObject " + gi.__version__
    if loop_name == "glibloop":
        import glibloop
        version = getattr(glibloop, "__version__", "unknown")
        return f"{version} ({glibloop.__file__})"
    return "unknown"


def _glib_runtime_version() -> str:
    """The GLib the process actually loads, not the one a typelib was built for."""
    try:
        import ctypes
        lib = ctypes.CDLL("libglib-2.0.so.0")
        parts = [ctypes.c_uint.in_dll(lib, name).value
                 for name in ("glib_major_version", "glib_minor_version",
                              "glib_micro_version")]
        return ".".join(map(str, parts))
    except (OSError, ValueError):
        return "unknown"


# --------------------------------------------------------------------------
# Workload registry
# --------------------------------------------------------------------------

WorkloadFn = Callable[[asyncio.AbstractEventLoop, int], "tuple[int, float]"]


@dataclasses.dataclass(frozen=True)
class Workload:
    name: str
    fn: WorkloadFn
    #: Units of work per measured run at scale 1.0.
    size: int
    description: str
    #: Per-loop multiplier on ``size``; keeps very slow loops (gi.events) from
    #: dominating the suite's run time.  ops/s is still comparable because the
    #: per-operation cost does not depend on the count.
    loop_scale: dict = dataclasses.field(default_factory=dict)
    #: Minimum glibloop/<loop> ratio the project aims for on this workload.
    targets: dict = dataclasses.field(default_factory=dict)
    #: Smallest size worth measuring (e.g. the timer workload needs enough
    #: timers for cancellation to matter).
    min_size: int = 1000
    #: The size is part of the workload's definition (per-op cost depends on
    #: it, e.g. through GC passes over every live handle): ``--scale`` and
    #: ``--quick`` leave it alone.
    fixed_size: bool = False
    #: The loops this workload runs on; None means every loop that is not
    #: ``EXTRA_LOOPS`` (e.g. GLib workloads cannot run on asyncio or uvloop).
    loops: tuple | None = None
    #: What the row's number is.  Rate rows return (ops, seconds) and show
    #: ops/s; reading rows return a ``Reading`` in this unit.
    unit: str = "ops/s"
    #: A smaller number is better (memory, lateness): the best run is the
    #: lowest, and a ratio "glibloop against X" is X / glibloop, so above 1
    #: means glibloop ahead on every row.
    lower_is_better: bool = False
    #: One measured run per process and no warm-up: for readings that a
    #: second run in the same process would not see again (RSS growth: the
    #: first run's freed memory is reused by the next).
    single_run: bool = False
    #: Why the loops that are not in ``loops`` cannot run it (for the report).
    not_applicable: str = ""
    #: Loops that would otherwise run it but are known to hang or fail on it
    #: (a peer's bug, not a measurement): loop name -> reason for the report.
    skip: dict = dataclasses.field(default_factory=dict)

    def runs_on(self, loop_name: str) -> bool:
        if loop_name in self.skip:
            return False
        if self.loops is None:
            return loop_name not in EXTRA_LOOPS
        return loop_name in self.loops

    def size_for(self, loop_name: str, scale: float = 1.0) -> int:
        if self.fixed_size:
            scale = 1.0
        n = int(self.size * scale * self.loop_scale.get(loop_name, 1.0))
        return max(n, self.min_size)


WORKLOADS: dict[str, Workload] = {}


@dataclasses.dataclass(frozen=True)
class Reading:
    """What a workload returns when its number is not a rate: one value in
    the workload's ``unit`` (bytes per connection, milliseconds late...)."""
    value: float

#: Every workload in the original issue aims at glibloop >= 1.0x uvloop.
DEFAULT_TARGETS = {"uvloop": 1.0}


def workload(name: str, *, size: int, description: str,
             loop_scale: dict | None = None, targets: dict | None = None,
             min_size: int = 1000, fixed_size: bool = False,
             loops: tuple | None = None, **reading):
    def register(fn):
        WORKLOADS[name] = Workload(
            name=name, fn=fn, size=size, description=description,
            loop_scale=dict(loop_scale or {}),
            targets=dict(DEFAULT_TARGETS if targets is None else targets),
            min_size=min_size, fixed_size=fixed_size, loops=loops, **reading)
        return fn
    return register


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise WorkloadError(message)


# gi.events runs asyncio's Python _run_once once per GLib iteration, with a
# Python GSource prepare/check around it: several times slower than asyncio per
# round.  Its share of the work is scaled down where that cost dominates, so
# the suite stays short; ops/s stays comparable (per-op cost is flat in N).
_SLOW_GI = {"gi.events": 0.2}
_HALF_GI = {"gi.events": 0.5}


# --------------------------------------------------------------------------
# Workloads
# --------------------------------------------------------------------------

@workload("call_soon_chain", size=200_000, loop_scale=_SLOW_GI,
          targets={"uvloop": 1.0, "gi.events": 5.0},
          description="one callback that reschedules itself with call_soon; "
                      "ops = callbacks run (one per loop iteration)")
def call_soon_chain(loop, size):
    left = size
    call_soon = loop.call_soon

    def step():
        nonlocal left
        left -= 1
        if left:
            call_soon(step)
        else:
            loop.stop()

    call_soon(step)
    t0 = time.perf_counter()
    loop.run_forever()
    elapsed = time.perf_counter() - t0
    _check(left == 0, f"chain stopped with {left} steps left")
    return size, elapsed


@workload("call_soon_burst", size=300_000, fixed_size=True,
          description="one callback schedules 300,000 call_soon callbacks, the "
                      "loop runs them; ops = callbacks run (scheduling is timed)")
def call_soon_burst(loop, size):
    ran = 0
    call_soon = loop.call_soon

    def tick():
        nonlocal ran
        ran += 1

    def burst():
        for _ in range(size):
            call_soon(tick)
        # FIFO order: stop runs after every tick of the burst.
        call_soon(loop.stop)

    call_soon(burst)
    t0 = time.perf_counter()
    loop.run_forever()
    elapsed = time.perf_counter() - t0
    _check(ran == size, f"burst ran {ran} of {size} callbacks")
    return size, elapsed


SLEEP_TASKS = 10


@workload("sleep0_10_tasks", size=200_000, loop_scale=_HALF_GI,
          description=f"{SLEEP_TASKS} tasks each looping on "
                      "`await asyncio.sleep(0)`; ops = total sleeps")
def sleep0_tasks(loop, size):
    per_task = size // SLEEP_TASKS
    done = [0] * SLEEP_TASKS

    async def sleeper(index):
        sleep = asyncio.sleep
        for _ in range(per_task):
            await sleep(0)
        done[index] = per_task

    async def main():
        await asyncio.gather(*(sleeper(i) for i in range(SLEEP_TASKS)))

    t0 = time.perf_counter()
    loop.run_until_complete(main())
    elapsed = time.perf_counter() - t0
    total = sum(done)
    _check(total == per_task * SLEEP_TASKS, f"only {total} sleeps completed")
    return total, elapsed


TIMER_SPREAD = 0.005  # seconds


@workload("call_later_cancel", size=50_000, min_size=2000, fixed_size=True,
          description="50,000 call_later timers with delays spread over "
                      f"0-{TIMER_SPREAD * 1000:g} ms, every second one cancelled "
                      "and rescheduled; ops = timers fired (all must fire)")
def call_later_cancel(loop, size):
    # Delays are a deterministic permutation, so the timer heap is filled out of
    # order, and short enough that every loop is limited by its own timer
    # handling, not by waiting for the clock.
    fired = bytearray(size)
    count = 0
    half = size // 2
    # Multiplying by a prime that does not divide size permutes 0..size-1.
    stride = 7919 if size % 7919 else 7907

    def spread(salt):
        return [((i * stride + salt) % size) * (TIMER_SPREAD / size)
                for i in range(size)]

    first_delays, second_delays = spread(0), spread(half)

    def fire(i):
        nonlocal count
        fired[i] += 1
        count += 1
        if count == size:
            loop.stop()

    def start():
        call_later = loop.call_later
        handles = [call_later(first_delays[i], fire, i) for i in range(size)]
        # Cancel every second timer and put a new one in its place, with a
        # different delay; the new one fires under the same index.
        for i in range(1, size, 2):
            handles[i].cancel()
            call_later(second_delays[i], fire, i)

    loop.call_soon(start)
    t0 = time.perf_counter()
    loop.run_forever()
    elapsed = time.perf_counter() - t0
    _check(count == size, f"{count} of {size} timers fired")
    # A cancelled timer that fired anyway shows up as an index fired twice.
    _check(fired.count(1) == size, "some timer fired twice or never: "
           f"{fired.count(0)} never, {size - fired.count(0) - fired.count(1)} twice")
    return count, elapsed


@workload("queue_ping_pong", size=50_000, loop_scale={"gi.events": 0.25},
          description="two tasks bounce one item over two asyncio.Queue "
                      "objects; ops = round trips")
def queue_ping_pong(loop, size):
    trips = 0

    async def ping(to_pong, to_ping):
        nonlocal trips
        for i in range(size):
            await to_pong.put(i)
            reply = await to_ping.get()
            if reply != i:
                raise WorkloadError(f"expected {i}, got {reply}")
            trips += 1

    async def pong(to_pong, to_ping):
        for _ in range(size):
            await to_ping.put(await to_pong.get())

    async def main():
        # Queues are created inside the running loop (3.9 and older bound them
        # to get_event_loop() at construction).
        to_pong, to_ping = asyncio.Queue(), asyncio.Queue()
        await asyncio.gather(ping(to_pong, to_ping), pong(to_pong, to_ping))

    t0 = time.perf_counter()
    loop.run_until_complete(main())
    elapsed = time.perf_counter() - t0
    _check(trips == size, f"{trips} of {size} round trips")
    return trips, elapsed


@workload("call_soon_threadsafe", size=100_000, loop_scale=_HALF_GI,
          description="another thread calls call_soon_threadsafe N times; the "
                      "loop counts callbacks until all N arrived; ops = callbacks")
def call_soon_threadsafe(loop, size):
    arrived = 0

    def on_arrival():
        nonlocal arrived
        arrived += 1
        if arrived == size:
            loop.stop()

    def producer():
        call = loop.call_soon_threadsafe
        for _ in range(size):
            call(on_arrival)

    thread = threading.Thread(target=producer, name="bench-producer")
    # The thread starts from inside the running loop, so the loop is already
    # waiting when the first callback arrives.
    loop.call_soon(thread.start)
    t0 = time.perf_counter()
    loop.run_forever()
    elapsed = time.perf_counter() - t0
    thread.join()
    _check(arrived == size, f"{arrived} of {size} callbacks arrived")
    return arrived, elapsed


def _loop_context(loop):
    """The GMainContext a GLib-based asyncio loop runs on."""
    from gi.repository import GLib
    ctx = getattr(loop, "_context", None)
    return ctx if ctx is not None else GLib.MainContext.default()


@workload("glib_idle_roundtrip", size=50_000,
          loops=("glibloop", "gi.events", "GLib alone"),
          not_applicable="no GLib main context to attach a GLib source to",
          loop_scale={"gi.events": 0.5},
          targets={"GLib alone": 0.8, "gi.events": 1.0},
          description="a task attaches a GLib idle source that resolves a future "
                      "the task awaits; ops = round trips. 'GLib alone' chains the "
                      "same idle sources with PyGObject and no asyncio: the bound")
def glib_idle_roundtrip(loop, size):
    from gi.repository import GLib

    if isinstance(loop, GLibAlone):
        ctx = GLib.MainContext.default()
        mainloop = GLib.MainLoop(ctx)
        count = 0

        def on_idle(*_user_data):
            nonlocal count
            count += 1
            if count < size:
                attach_next()
            else:
                mainloop.quit()
            return GLib.SOURCE_REMOVE

        def attach_next():
            source = GLib.idle_source_new()
            source.set_callback(on_idle)
            source.attach(ctx)

        attach_next()
        t0 = time.perf_counter()
        mainloop.run()
        elapsed = time.perf_counter() - t0
        _check(count == size, f"{count} of {size} idle callbacks")
        return count, elapsed

    ctx = _loop_context(loop)
    trips = 0

    def resolve(fut):
        fut.set_result(None)
        return GLib.SOURCE_REMOVE

    async def main():
        nonlocal trips
        for _ in range(size):
            fut = loop.create_future()
            source = GLib.idle_source_new()
            source.set_callback(resolve, fut)
            source.attach(ctx)
            await fut
            trips += 1

    t0 = time.perf_counter()
    loop.run_until_complete(main())
    elapsed = time.perf_counter() - t0
    _check(trips == size, f"{trips} of {size} round trips")
    return trips, elapsed


# --------------------------------------------------------------------------
# Networking workloads
# --------------------------------------------------------------------------
#
# Both ends of every connection run on the loop under test, over loopback,
# so each round trip costs the loop two reads and two writes.  Set-up
# (servers, connections, the idle clients' process) is outside the clock.

_NET_TARGETS = {"uvloop": 1.0, "gi.events": 3.0}
_NET_GI = {"gi.events": 0.1}
# Seen on every run here: veloxloop 0.2 stops making progress with 64 KiB
# messages and fails with "OSError: SQ full" (its io_uring submission queue)
# when many connections are busy at once.
_VELOX_64K = {"veloxloop": "veloxloop 0.2 stalls with 64 KiB messages (no result in 60 s)"}
_VELOX_MANY = {"veloxloop": "veloxloop 0.2 fails with `OSError: SQ full` with 100 "
                            "connections or more at once"}


async def _stream_echo_handler(reader, writer):
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


def _streams_echo(loop, size, msg_size):
    msg = b"x" * msg_size
    trips = 0

    async def main():
        nonlocal trips
        server = await asyncio.start_server(_stream_echo_handler, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
        t0 = time.perf_counter()
        for _ in range(size):
            writer.write(msg)
            await reader.readexactly(msg_size)
            trips += 1
        elapsed = time.perf_counter() - t0
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return elapsed

    elapsed = loop.run_until_complete(main())
    _check(trips == size, f"{trips} of {size} round trips")
    return trips, elapsed


@workload("tcp_echo_streams_1k", size=20_000, loop_scale=_NET_GI, targets=_NET_TARGETS,
          description="TCP echo over loopback with asyncio streams (start_server/"
                      "open_connection), 1 KiB messages; ops = round trips")
def tcp_echo_streams_1k(loop, size):
    return _streams_echo(loop, size, 1024)


@workload("tcp_echo_streams_64k", size=5_000, loop_scale=_NET_GI, targets=_NET_TARGETS,
          min_size=500, skip=_VELOX_64K,
          description="the same with 64 KiB messages; ops = round trips")
def tcp_echo_streams_64k(loop, size):
    return _streams_echo(loop, size, 65536)


class _EchoServerProtocol(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


class _EchoClientProtocol(asyncio.Protocol):
    """Sends msg, waits for all of it to come back, sends it again, `trips`
    times; `done` resolves with the number of round trips."""

    def __init__(self, loop, msg, trips):
        self.msg = msg
        self.left = trips
        self.trips = 0
        self.pending = 0
        self.done = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport

    def start(self):
        self.pending = len(self.msg)
        self.transport.write(self.msg)

    def data_received(self, data):
        self.pending -= len(data)
        if self.pending > 0:
            return
        self.trips += 1
        self.left -= 1
        if self.left > 0:
            self.start()
        elif not self.done.done():
            self.done.set_result(self.trips)


def _protocol_echo(loop, size, msg_size, clients=1):
    msg = b"x" * msg_size
    per_client = size // clients

    async def main():
        server = await loop.create_server(_EchoServerProtocol, "127.0.0.1", 0)
        addr = server.sockets[0].getsockname()
        protos = []
        for _ in range(clients):
            _, proto = await loop.create_connection(
                lambda: _EchoClientProtocol(loop, msg, per_client), *addr)
            protos.append(proto)
        t0 = time.perf_counter()
        for proto in protos:
            proto.start()
        trips = sum(await asyncio.gather(*(p.done for p in protos)))
        elapsed = time.perf_counter() - t0
        for proto in protos:
            proto.transport.close()
        server.close()
        await server.wait_closed()
        return trips, elapsed

    trips, elapsed = loop.run_until_complete(main())
    _check(trips == per_client * clients, f"{trips} of {per_client * clients} round trips")
    return trips, elapsed


@workload("tcp_echo_protocol_1k", size=30_000, loop_scale=_NET_GI, targets=_NET_TARGETS,
          description="TCP echo over loopback with Protocols (create_server/"
                      "create_connection), 1 KiB messages; ops = round trips")
def tcp_echo_protocol_1k(loop, size):
    return _protocol_echo(loop, size, 1024)


@workload("tcp_echo_protocol_64k", size=5_000, loop_scale=_NET_GI, targets=_NET_TARGETS,
          min_size=500, skip=_VELOX_64K,
          description="the same with 64 KiB messages; ops = round trips")
def tcp_echo_protocol_64k(loop, size):
    return _protocol_echo(loop, size, 65536)


def _sock_echo(loop, size, msg_size):
    msg = b"x" * msg_size

    async def serve(listener):
        conn, _ = await loop.sock_accept(listener)
        try:
            while data := await loop.sock_recv(conn, 65536):
                await loop.sock_sendall(conn, data)
        finally:
            conn.close()

    async def main():
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        server = asyncio.ensure_future(serve(listener))
        client = socket.socket()
        client.setblocking(False)
        await loop.sock_connect(client, listener.getsockname())
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        trips = 0
        t0 = time.perf_counter()
        for _ in range(size):
            await loop.sock_sendall(client, msg)
            got = 0
            while got < msg_size:
                got += len(await loop.sock_recv(client, 65536))
            trips += 1
        elapsed = time.perf_counter() - t0
        client.close()
        await server
        listener.close()
        return trips, elapsed

    trips, elapsed = loop.run_until_complete(main())
    _check(trips == size, f"{trips} of {size} round trips")
    return trips, elapsed


@workload("tcp_echo_sock_1k", size=20_000, loop_scale=_NET_GI, targets=_NET_TARGETS,
          description="TCP echo over loopback with loop.sock_recv/sock_sendall on "
                      "both ends, 1 KiB messages; ops = round trips")
def tcp_echo_sock_1k(loop, size):
    return _sock_echo(loop, size, 1024)


@workload("tcp_echo_sock_64k", size=5_000, loop_scale=_NET_GI, targets=_NET_TARGETS,
          min_size=500,
          description="the same with 64 KiB messages; ops = round trips")
def tcp_echo_sock_64k(loop, size):
    return _sock_echo(loop, size, 65536)


@workload("tcp_streams_100_conns", size=30_000, loop_scale=_NET_GI, targets=_NET_TARGETS,
          skip=_VELOX_MANY,
          description="100 concurrent stream connections, each a task doing 1 KiB "
                      "echo round trips; ops = round trips over all of them")
def tcp_streams_100_conns(loop, size):
    clients = 100
    per_client = max(1, size // clients)
    msg = b"x" * 1024

    async def client(addr):
        reader, writer = await asyncio.open_connection(*addr)
        await start.wait()
        done = 0
        for _ in range(per_client):
            writer.write(msg)
            await reader.readexactly(len(msg))
            done += 1
        writer.close()
        return done

    accepted = 0

    async def handler(reader, writer):
        nonlocal accepted
        accepted += 1
        await _stream_echo_handler(reader, writer)

    async def main():
        nonlocal start
        start = asyncio.Event()
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        addr = server.sockets[0].getsockname()
        tasks = [asyncio.ensure_future(client(addr)) for _ in range(clients)]
        while accepted < clients:  # every connection accepted
            await asyncio.sleep(0.001)
        t0 = time.perf_counter()
        start.set()
        trips = sum(await asyncio.gather(*tasks))
        elapsed = time.perf_counter() - t0
        server.close()
        await server.wait_closed()
        return trips, elapsed

    start = None
    trips, elapsed = loop.run_until_complete(main())
    _check(trips == per_client * clients, f"{trips} of {per_client * clients} round trips")
    return trips, elapsed


@workload("udp_ping_pong", size=30_000, loop_scale=_NET_GI, targets=_NET_TARGETS,
          description="UDP over loopback: a datagram endpoint sends 64 bytes, the "
                      "other echoes them, the next goes when the echo is back; "
                      "ops = round trips")
def udp_ping_pong(loop, size):
    msg = b"p" * 64

    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport):
            self.transport = transport

        def datagram_received(self, data, addr):
            self.transport.sendto(data, addr)

    class Pinger(asyncio.DatagramProtocol):
        def __init__(self):
            self.trips = 0
            self.done = loop.create_future()

        def connection_made(self, transport):
            self.transport = transport

        def datagram_received(self, data, addr):
            self.trips += 1
            if self.trips < size:
                self.transport.sendto(msg)
            else:
                self.done.set_result(None)

        def error_received(self, exc):
            if not self.done.done():
                self.done.set_exception(exc)

    async def main():
        server, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
        client, pinger = await loop.create_datagram_endpoint(
            Pinger, remote_addr=server.get_extra_info("sockname"))
        t0 = time.perf_counter()
        client.sendto(msg)
        await pinger.done
        elapsed = time.perf_counter() - t0
        client.close()
        server.close()
        return pinger.trips, elapsed

    trips, elapsed = loop.run_until_complete(main())
    _check(trips == size, f"{trips} of {size} round trips")
    return trips, elapsed


_IDLE_CLIENTS_SCRIPT = """
import socket, sys
port, count = int(sys.argv[1]), int(sys.argv[2])
socks = []
for _ in range(count):
    s = socket.socket()
    s.connect(("127.0.0.1", port))
    socks.append(s)
sys.stdout.write("connected\\n")
sys.stdout.flush()
sys.stdin.read()   # hold the connections until the parent closes our stdin
"""


def _raise_fd_limit(needed):
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= needed


def _active_with_idle(loop, size, idle):
    """100 active protocol clients doing 1 KiB echo round trips while `idle`
    connections, opened by a second process, sit in the server's epoll set."""
    import subprocess
    clients = 100
    per_client = max(1, size // clients)
    msg = b"x" * 1024
    if idle and not _raise_fd_limit(idle + 1000):
        raise WorkloadError(f"RLIMIT_NOFILE too low for {idle} idle connections")

    class Counting(_EchoServerProtocol):
        accepted = 0

        def connection_made(self, transport):
            super().connection_made(transport)
            Counting.accepted += 1

    async def main():
        Counting.accepted = 0
        server = await loop.create_server(Counting, "127.0.0.1", 0, backlog=4096)
        addr = server.sockets[0].getsockname()
        proc = None
        if idle:
            proc = subprocess.Popen(
                [sys.executable, "-c", _IDLE_CLIENTS_SCRIPT, str(addr[1]), str(idle)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            while Counting.accepted < idle:
                await asyncio.sleep(0.01)
        try:
            protos = []
            for _ in range(clients):
                _, proto = await loop.create_connection(
                    lambda: _EchoClientProtocol(loop, msg, per_client), *addr)
                protos.append(proto)
            t0 = time.perf_counter()
            for proto in protos:
                proto.start()
            trips = sum(await asyncio.gather(*(p.done for p in protos)))
            elapsed = time.perf_counter() - t0
            for proto in protos:
                proto.transport.close()
        finally:
            if proc is not None:
                proc.stdin.close()
                proc.wait()
        server.close()
        await server.wait_closed()
        return trips, elapsed

    trips, elapsed = loop.run_until_complete(main())
    _check(trips == per_client * clients, f"{trips} of {per_client * clients} round trips")
    return trips, elapsed


# gi.events registers every fd with GLib; 10,000 of them is the case the issue
# says it cannot handle, so the scaling rows compare glibloop with asyncio and
# the PyPI loops only.
_SCALING_LOOPS = ("glibloop", "asyncio", *PYPI_PEERS)
_SCALING_NA = ("gi.events puts every fd into GLib's own poll (O(n) per iteration), "
               "the case these rows are about")


@workload("tcp_100_active", size=30_000, loops=_SCALING_LOOPS, targets={"uvloop": 1.0},
          not_applicable=_SCALING_NA,
          description="100 active Protocol connections doing 1 KiB echo round trips; "
                      "the baseline of tcp_100_active_10k_idle; ops = round trips")
def tcp_100_active(loop, size):
    return _active_with_idle(loop, size, 0)


@workload("tcp_100_active_10k_idle", size=30_000, loops=_SCALING_LOOPS,
          targets={"uvloop": 1.0}, not_applicable=_SCALING_NA, skip=_VELOX_MANY,
          description="as tcp_100_active while 10,000 idle connections (clients in "
                      "a second process) are open on the same server; target: "
                      ">= 80% of tcp_100_active's rate")
def tcp_100_active_10k_idle(loop, size):
    return _active_with_idle(loop, size, 10_000)


def _rss_bytes():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# Connections opened (and kept) before the RSS baseline: the code paths,
# the allocator's pools and the loop's own tables for the first few are not
# what one more connection costs.
_MEMORY_WARM = 200


@workload("memory_idle_streams", size=9_000, fixed_size=True, min_size=100,
          loops=_SCALING_LOOPS, not_applicable=_SCALING_NA, targets={},
          unit="B/conn", lower_is_better=True, single_run=True,
          description="RSS growth per idle stream connection with both ends in this "
                      "process: 9,000 `asyncio.open_connection` clients against an "
                      "`asyncio.start_server` whose handler waits in `read()`; bytes "
                      "per connection (client and server side, the handler's task "
                      "included), one run per process after 200 warm connections")
def memory_idle_streams(loop, size):
    if not _raise_fd_limit(2 * (size + _MEMORY_WARM) + 200):
        raise WorkloadError(f"RLIMIT_NOFILE too low for {size} connections")
    handlers = set()

    async def handler(reader, writer):
        handlers.add(asyncio.current_task())
        await reader.read(1)  # idle until the client closes
        writer.close()
        handlers.discard(asyncio.current_task())

    async def connect(addr, count, into):
        # One at a time: veloxloop 0.2 fails ("SQ full") with many at once.
        for _ in range(count):
            into.append(await asyncio.open_connection(*addr))
        while len(handlers) < len(into):
            await asyncio.sleep(0.001)

    async def main():
        server = await asyncio.start_server(handler, "127.0.0.1", 0, backlog=1024)
        addr = server.sockets[0].getsockname()
        conns = []
        await connect(addr, _MEMORY_WARM, conns)
        gc.collect()
        before = _rss_bytes()
        await connect(addr, size, conns)
        gc.collect()
        after = _rss_bytes()
        for _, writer in conns:
            writer.close()
        # Outside the reading: rloop 0.5's server side never sees these
        # clients' EOF, so handlers still waiting after a while are cancelled.
        deadline = time.monotonic() + 5
        while handlers and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for task in list(handlers):
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        server.close()
        await server.wait_closed()
        return len(conns) - _MEMORY_WARM, after - before

    opened, grown = loop.run_until_complete(main())
    _check(opened == size, f"{opened} of {size} connections")
    return Reading(grown / size)


@workload("glib_60hz_p99_under_load", size=5, fixed_size=True, min_size=1,
          loops=("glibloop", "gi.events"), targets={"gi.events": 1.0},
          not_applicable="no GLib main context to attach a GLib timeout to",
          unit="ms", lower_is_better=True, single_run=True,
          description="a 60 Hz GLib timeout (priority 0) on the loop's GMainContext "
                      "while 100 stream connections echo 1 KiB flat out, for 5 s; "
                      "p99 of how late each frame fired, ms (issue 13: under 2 ms); "
                      "bench/fairness.py's frames_p0 case")
def glib_60hz_p99_under_load(loop, size):
    import fairness
    result = fairness.case_frames(loop, 0, float(size))
    frames = result["count"]
    _check(frames >= size * 60 // 4,
           f"the GLib timeout fired {frames} times in {size} s (60 Hz asked)")
    _check(result["asyncio_trips_per_sec"] > 0, "the echo load made no round trip")
    return Reading(result["p99_ms"])


# --------------------------------------------------------------------------
# Subprocess workloads
# --------------------------------------------------------------------------

# The comparison is glibloop against asyncio and uvloop (gi.events
# spawns through asyncio's own code and its per-iteration cost would only
# slow the suite down).  Target: at least the faster of the two.
# veloxloop 0.2 raises NotImplementedError on subprocess_exec.
_PROC_LOOPS = ("glibloop", "asyncio", "uvloop", "rloop", "loopmini")
_PROC_TARGETS = {"asyncio": 1.0, "uvloop": 1.0}
_PROC_NA = ("gi.events spawns through asyncio's own code; veloxloop has no "
            "subprocess support (NotImplementedError)")


@workload("subprocess_spawn_wait", size=400, min_size=40, loops=_PROC_LOOPS,
          targets=_PROC_TARGETS, not_applicable=_PROC_NA,
          description="asyncio.create_subprocess_exec('/bin/true') then wait(), one "
                      "after another; ops = processes")
def subprocess_spawn_wait(loop, size):
    async def main():
        done = 0
        for _ in range(size):
            proc = await asyncio.create_subprocess_exec("/bin/true")
            if await proc.wait() != 0:
                raise WorkloadError(f"/bin/true exited with {proc.returncode}")
            done += 1
        return done

    t0 = time.perf_counter()
    done = loop.run_until_complete(main())
    elapsed = time.perf_counter() - t0
    _check(done == size, f"{done} of {size} processes")
    return done, elapsed


_MIB = 1024 * 1024


@workload("subprocess_pipe_64mib", size=64, min_size=8, fixed_size=True,
          loops=_PROC_LOOPS, targets=_PROC_TARGETS, not_applicable=_PROC_NA,
          description="64 MiB through `cat` with Process.communicate() (stdin and "
                      "stdout pipes); ops = MiB")
def subprocess_pipe_64mib(loop, size):
    data = bytes(range(256)) * (size * _MIB // 256)

    async def main():
        proc = await asyncio.create_subprocess_exec(
            "cat", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate(data)
        return out, proc.returncode

    t0 = time.perf_counter()
    out, returncode = loop.run_until_complete(main())
    elapsed = time.perf_counter() - t0
    _check(returncode == 0, f"cat exited with {returncode}")
    _check(out == data, f"{len(out)} of {len(data)} bytes came back intact")
    return size, elapsed


# --------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------

def measure(loop_name: str, workload_name: str, *, repeat: int = 3,
            scale: float = 1.0, warmup: bool = True) -> dict:
    """Run one workload on one loop; raises ImportError if the loop is missing."""
    make_loop = LOOPS[loop_name]()
    spec = WORKLOADS[workload_name]
    size = spec.size_for(loop_name, scale)

    def one_run(n):
        loop = make_loop()
        try:
            # Earlier runs' garbage must not be collected on this run's clock.
            gc.collect()
            return spec.fn(loop, n)
        finally:
            loop.close()

    if spec.single_run:
        warmup, repeat = False, 1
    if warmup:
        # A shorter run: imports, code paths and allocator pools get warm.
        one_run(max(spec.min_size, size // 5))

    runs = []
    for _ in range(max(1, repeat)):
        out = one_run(size)
        if isinstance(out, Reading):
            runs.append({"value": out.value})
            continue
        ops, seconds = out
        rate = ops / seconds if seconds > 0 else float("inf")
        runs.append({"ops": ops, "seconds": seconds, "ops_per_sec": rate, "value": rate})
    pick = min if spec.lower_is_better else max
    best = pick(runs, key=lambda r: r["value"])
    return {"status": "ok", "loop": loop_name, "workload": workload_name,
            "size": size, "unit": spec.unit, **best,
            "runs": [r["value"] for r in runs]}


def _parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loop", choices=sorted(LOOPS))
    parser.add_argument("--workload", choices=sorted(WORKLOADS))
    parser.add_argument("--repeat", type=int, default=3,
                        help="measured runs after the warm-up; best is reported")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply every workload's size (e.g. 0.25 for a quick run)")
    parser.add_argument("--no-warmup", action="store_true")
    parser.add_argument("--list", action="store_true",
                        help="print the registered workloads and loops as JSON")
    parser.add_argument("--versions", action="store_true",
                        help="print Python/GLib/loop versions as JSON")
    args = parser.parse_args(argv)
    if not (args.list or args.versions) and not (args.loop and args.workload):
        parser.error("--loop and --workload are required")
    return args


def _emit(obj) -> None:
    print(json.dumps(obj), flush=True)


def main(argv=None) -> int:
    args = _parse_args(argv)
    if args.versions:
        _emit(loop_versions())
        return EXIT_OK
    if args.list:
        _emit({"loops": list(LOOPS),
               "workloads": {name: {"size": w.size, "description": w.description,
                                    "loop_scale": w.loop_scale, "targets": w.targets,
                                    "fixed_size": w.fixed_size}
                             for name, w in WORKLOADS.items()}})
        return EXIT_OK

    base = {"loop": args.loop, "workload": args.workload}
    try:
        LOOPS[args.loop]()
    except Exception as exc:  # noqa: BLE001 - import failure of any kind
        _emit({**base, "status": "unavailable",
               "error": f"{type(exc).__name__}: {exc}"})
        return EXIT_UNAVAILABLE
    try:
        result = measure(args.loop, args.workload, repeat=args.repeat,
                         scale=args.scale, warmup=not args.no_warmup)
    except Exception as exc:  # noqa: BLE001 - reported to the parent, not hidden
        traceback.print_exc()
        _emit({**base, "status": "error", "error": f"{type(exc).__name__}: {exc}"})
        return EXIT_ERROR
    _emit(result)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
