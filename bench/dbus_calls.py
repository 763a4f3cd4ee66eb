"""D-Bus method calls per second: a Gio service whose handler is a coroutine
(glibloop.gio.register_object), called by a dbus-fast client.

    python bench/dbus_calls.py [--loops glibloop,gi.events] [--duration 2]

A private message bus (``dbus-daemon --session`` on a socket in a temporary
folder) is started for the run.  For each loop, in fresh interpreters:

- ``one process``: the service and the client on the same loop, one thread;
- ``two processes``: the service in one process and the client in another,
  both on the loop under test;

each with 1 call in flight (round-trip latency) and with 32 (throughput).
Every reply is checked.  bench/run.py runs this as its D-Bus section
(``--no-dbus`` skips it).  A report, not a pass/fail check.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
import workloads as wl  # noqa: E402

LOOPS = ("glibloop", "gi.events")
DEFAULT_DURATION = 2.0
IN_FLIGHT = (1, 32)
CASES = ("one process", "two processes")
PATH = "/org/example/Bench"
IFACE = "org.example.Bench"
XML = """
<node>
  <interface name="org.example.Bench">
    <method name="Add">
      <arg name="a" type="i" direction="in"/>
      <arg name="b" type="i" direction="in"/>
      <arg name="sum" type="i" direction="out"/>
    </method>
  </interface>
</node>
"""


# --------------------------------------------------------------------------
# The children
# --------------------------------------------------------------------------

class Bench:
    async def Add(self, a, b):
        return a + b


async def serve(address):
    """Export the service on a new connection; its unique name."""
    from gi.repository import Gio

    from glibloop import gio

    flags = (Gio.DBusConnectionFlags.AUTHENTICATION_CLIENT
             | Gio.DBusConnectionFlags.MESSAGE_BUS_CONNECTION)
    connection = await gio.call(Gio.DBusConnection.new_for_address, address, flags, None)
    registration = gio.register_object(connection, PATH, XML, Bench())
    return connection, registration


async def call_for(address, name, in_flight, duration):
    """dbus-fast calls Add() for duration seconds with in_flight calls at a
    time; calls per second."""
    from dbus_fast.aio import MessageBus
    from dbus_fast.introspection import Node

    bus = await MessageBus(bus_address=address).connect()
    bench = bus.get_proxy_object(name, PATH, Node.parse(XML)).get_interface(IFACE)
    for i in range(100):  # warm-up
        assert await bench.call_add(i, 1) == i + 1
    calls = 0
    deadline = time.perf_counter() + duration

    async def caller(seed):
        nonlocal calls
        i = seed
        while time.perf_counter() < deadline:
            assert await bench.call_add(i, 1) == i + 1
            calls += 1
            i += in_flight

    start = time.perf_counter()
    await asyncio.gather(*(caller(seed) for seed in range(in_flight)))
    elapsed = time.perf_counter() - start
    bus.disconnect()
    await bus.wait_for_disconnect()
    return calls / elapsed


def new_loop(loop_name):
    """The loop as a D-Bus program has it: on the main thread's context,
    where Gio delivers its callbacks.  (gi.events' new_event_loop() makes a
    loop on a context of its own that it does not make thread-default, so
    Gio's callbacks would never run there.)"""
    if loop_name == "gi.events":
        from gi.events import GLibEventLoopPolicy

        return GLibEventLoopPolicy().get_event_loop()  # the default main context's
    return wl.LOOPS[loop_name]()()


def in_loop(loop_name, coro_factory):
    loop = new_loop(loop_name)
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(coro_factory())
    finally:
        loop.close()


def child_one_process(loop_name, address, in_flight, duration):
    async def main():
        connection, registration = await serve(address)
        try:
            return await call_for(address, connection.get_unique_name(), in_flight, duration)
        finally:
            await registration.aclose()

    return in_loop(loop_name, main)


def child_serve(loop_name, address):
    async def main():
        connection, registration = await serve(address)
        print(connection.get_unique_name(), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        await registration.aclose()

    in_loop(loop_name, main)


# --------------------------------------------------------------------------
# The parent
# --------------------------------------------------------------------------

class PrivateBus:
    """dbus-daemon with the session configuration on a socket of its own."""

    def __enter__(self):
        self.folder = tempfile.TemporaryDirectory(prefix="glibloop-bench-dbus-")
        socket = os.path.join(self.folder.name, "bus")
        self.process = subprocess.Popen(
            ["dbus-daemon", "--session", "--nofork", "--print-address=1",
             f"--address=unix:path={socket}"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        self.address = self.process.stdout.readline().strip()
        if not self.address:
            self.__exit__()
            raise RuntimeError("dbus-daemon did not start")
        return self

    def __exit__(self, *exc_info):
        self.process.terminate()
        self.process.wait(10)
        self.process.stdout.close()
        self.folder.cleanup()


def _child(*args):
    return [sys.executable, str(Path(__file__).resolve()), *args]


def _result(done):
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    tail = done.stderr.strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
    return {"status": "error", "error": tail[0]}


def measure(loop_name, case, in_flight, duration, address, timeout=120.0):
    common = ["--loop", loop_name, "--address", address]
    client = _child(*common, "--in-flight", str(in_flight), "--duration", repr(duration))
    server = None
    try:
        if case == "two processes":
            server = subprocess.Popen(_child(*common, "--serve"), stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            name = server.stdout.readline().strip()
            if not name:
                return {"status": "error", "error": server.stderr.read().strip()[-200:]}
            client += ["--name", name]
        return _result(subprocess.run(client, capture_output=True, text=True, timeout=timeout))
    except subprocess.TimeoutExpired:
        return {"status": "timeout"}
    finally:
        if server is not None:
            server.stdin.close()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
            server.stdout.close()
            server.stderr.close()


def run(loops, *, duration=DEFAULT_DURATION, progress=None):
    loops = [name for name in loops if name in LOOPS]
    report = {"duration": duration, "loops": loops, "results": {}}
    if not loops:
        return report
    with PrivateBus() as bus:
        for case in CASES:
            for in_flight in IN_FLIGHT:
                row = f"{case}, {in_flight} in flight"
                for loop_name in loops:
                    result = measure(loop_name, case, in_flight, duration, bus.address)
                    report["results"].setdefault(row, {})[loop_name] = result
                    if progress:
                        progress(f"dbus {row} on {loop_name}: "
                                 f"{result.get('calls_per_sec', result.get('status'))}")
    return report


def _rate(result):
    if result.get("status") != "ok":
        return result.get("status", "error")
    return f"{result['calls_per_sec']:,.0f}"


def section(report):
    loops = report["loops"]
    others = [name for name in loops if name != "glibloop"] if "glibloop" in loops else []
    lines = [
        f"## D-Bus calls per second (bench/dbus_calls.py, {report['duration']:g} s per cell)",
        "",
        "A Gio service with a coroutine handler (glibloop.gio.register_object), "
        "called by dbus-fast through a private dbus-daemon.",
        "",
        "| case | " + " | ".join(f"{name} calls/s" for name in loops)
        + "".join(f" | glibloop/{name}" for name in others) + " |",
        "|---|" + "---:|" * (len(loops) + len(others)),
    ]
    for row, per_loop in report["results"].items():
        cells = [_rate(per_loop.get(name, {})) for name in loops]
        for other in others:
            a, b = per_loop.get("glibloop", {}), per_loop.get(other, {})
            if a.get("status") == "ok" and b.get("status") == "ok":
                cells.append(f"{a['calls_per_sec'] / b['calls_per_sec']:.2f}x")
            else:
                cells.append("n/a")
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    failed = [f"- {row} on {name}: {r.get('error', r.get('status'))}"
              for row, per_loop in report["results"].items()
              for name, r in per_loop.items() if r.get("status") != "ok"]
    if failed:
        lines += ["", "Failed runs:", *failed]
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loops", default=",".join(LOOPS))
    parser.add_argument("--duration", type=float, default=DEFAULT_DURATION)
    parser.add_argument("--loop", help=argparse.SUPPRESS)
    parser.add_argument("--address", help=argparse.SUPPRESS)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--name", help=argparse.SUPPRESS)
    parser.add_argument("--in-flight", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.loop and args.serve:
        child_serve(args.loop, args.address)
        return 0
    if args.loop:
        if args.name:
            rate = in_loop(args.loop, lambda: call_for(
                args.address, args.name, args.in_flight, args.duration))
        else:
            rate = child_one_process(args.loop, args.address, args.in_flight, args.duration)
        print(json.dumps({"status": "ok", "loop": args.loop, "calls_per_sec": rate}))
        return 0
    loops = [name for name in args.loops.split(",") if name]
    report = run(loops, duration=args.duration,
                 progress=lambda line: print(line, file=sys.stderr, flush=True))
    print("\n".join(section(report)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
