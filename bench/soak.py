"""Soak: many connections, abrupt peers and children, and what is left after.

    python bench/soak.py [--loops glibloop,asyncio,uvloop] [--scale 1.0]

Each loop runs in a fresh interpreter (``--loop NAME`` prints one JSON line)
through three phases on one loop, then reports what the process holds
compared with before the phases (after a warm-up round of each phase, so
allocator pools and caches that stay for the process's life are counted in
"before"):

- ``connections``: 100,000 TCP connections to a stream server on the loop
  (``asyncio.open_connection`` against ``asyncio.start_server``), 200 at a
  time, each echoing 100 bytes once and closing.
- ``abrupt``: 20,000 peers in a plain thread (blocking sockets, so they do
  not run on the loop under test) against a protocol server that answers
  every read with 64 KiB: half of them reset the connection (SO_LINGER 0)
  while the server writes, half shut their side (SHUT_WR) and read to EOF.
- ``children``: 5,000 ``create_subprocess_exec('/bin/true')`` with stdout
  and stderr piped, 50 at a time.

Reported per loop: seconds per phase, errors (exceptions the loop's code
raised to us, and exception-handler calls), and RSS (MiB), open fds and
zombie children before and after.  A report, not a pass/fail check; it
belongs to ``make bench`` (bench/run.py's soak section), never to the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
import workloads as wl  # noqa: E402

LOOPS = ("glibloop", "asyncio", "uvloop")
CONNECTIONS = 100_000
ABRUPT = 20_000
CHILDREN = 5_000
CONCURRENCY = 200
CHILD_CONCURRENCY = 50
WARMUP_SHARE = 0.02


# --------------------------------------------------------------------------
# What the process holds
# --------------------------------------------------------------------------

def rss_mib():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def open_fds():
    return len(os.listdir("/proc/self/fd"))


def zombies():
    me, count = os.getpid(), 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z" and int(fields[1]) == me:
            count += 1
    return count


def holdings():
    gc.collect()
    return {"rss_mib": round(rss_mib(), 1), "fds": open_fds(), "zombies": zombies()}


# --------------------------------------------------------------------------
# The phases
# --------------------------------------------------------------------------

async def workers(one, count, concurrency):
    """count calls of one(), concurrency at a time, by that many tasks (not a
    task per call: 100,000 tasks alive at once would be the RSS measured)."""
    left = iter(range(count))

    async def worker():
        for _ in left:
            await one()

    await asyncio.gather(*(worker() for _ in range(min(concurrency, count))))


async def connections(count, errors):
    async def echo(reader, writer):
        try:
            data = await reader.read(100)
            writer.write(data)
            await writer.drain()
        except ConnectionError:
            errors["connections"] += 1
        finally:
            writer.close()

    # a backlog above the concurrency: a full one drops SYNs, retried after 1 s
    server = await asyncio.start_server(echo, "127.0.0.1", 0, backlog=4 * CONCURRENCY)
    host, port = server.sockets[0].getsockname()[:2]

    async def one():
        try:
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(b"x" * 100)
            if len(await reader.readexactly(100)) != 100:
                errors["connections"] += 1
            writer.close()
            await writer.wait_closed()
        except (OSError, asyncio.IncompleteReadError):
            errors["connections"] += 1

    await workers(one, count, CONCURRENCY)
    server.close()
    await server.wait_closed()


class Answer(asyncio.Protocol):
    """Answers every read with 64 KiB; the peer may reset meanwhile."""

    BLOCK = b"a" * 65536

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(self.BLOCK)

    def eof_received(self):
        self.transport.close()


def abrupt_peers(host, port, count, failures):
    linger = struct.pack("ii", 1, 0)
    for i in range(count):
        try:
            with socket.create_connection((host, port)) as peer:
                peer.sendall(b"hello")
                if i % 2:
                    peer.recv(1024)  # the server is writing its 64 KiB
                    peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                else:
                    peer.shutdown(socket.SHUT_WR)
                    while peer.recv(65536):
                        pass
        except OSError:
            failures.append(i)


async def abrupt(count, errors):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Answer, "127.0.0.1", 0, backlog=4 * CONCURRENCY)
    host, port = server.sockets[0].getsockname()[:2]
    failures = []
    await loop.run_in_executor(None, abrupt_peers, host, port, count, failures)
    errors["abrupt_peers"] += len(failures)
    server.close()
    await server.wait_closed()


async def children(count, errors):
    async def one():
        proc = await asyncio.create_subprocess_exec(
            "/bin/true", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        await proc.communicate()
        if proc.returncode != 0:
            errors["children"] += 1

    await workers(one, count, CHILD_CONCURRENCY)


async def phases(scale, share, errors, seconds):
    for name, phase, count in (("connections", connections, CONNECTIONS),
                               ("abrupt", abrupt, ABRUPT),
                               ("children", children, CHILDREN)):
        n = max(1, int(count * scale * share))
        t0 = time.perf_counter()
        await phase(n, errors)
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - t0


def run_child(loop_name, scale):
    loop = wl.LOOPS[loop_name]()()
    asyncio.set_event_loop(loop)  # stock asyncio's child watcher looks for it (3.11)
    handler_calls = []
    loop.set_exception_handler(lambda lp, context: handler_calls.append(context.get("message")))
    errors = {"connections": 0, "abrupt_peers": 0, "children": 0}
    seconds = {}
    try:
        loop.run_until_complete(phases(scale, WARMUP_SHARE, errors, {}))
        before = holdings()
        loop.run_until_complete(phases(scale, 1.0, errors, seconds))
        after = holdings()
    finally:
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()
    return {"loop": loop_name, "scale": scale, "seconds": seconds, "errors": errors,
            "handler_calls": len(handler_calls),
            "handler_messages": sorted(set(map(str, handler_calls)))[:5],
            "before": before, "after": after}


# --------------------------------------------------------------------------
# The parent
# --------------------------------------------------------------------------

def run(loops, scale=1.0, timeout=1800):
    results = []
    for name in loops:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--loop", name, "--scale", str(scale)]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            results.append({"loop": name, "crashed": f"timed out after {timeout} s"})
            continue
        if done.returncode != 0 or not done.stdout.strip():
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            results.append({"loop": name, "crashed": tail})
            continue
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return {"scale": scale, "results": results}


def section(report):
    scale = report["scale"]
    lines = [
        f"## Soak ({int(CONNECTIONS * scale):,} connections, {int(ABRUPT * scale):,} abrupt "
        f"peers, {int(CHILDREN * scale):,} children; bench/soak.py)",
        "",
        "| loop | connections s | abrupt s | children s | errors | handler calls "
        "| RSS MiB before → after | fds before → after | zombies after |",
        "|---|---:|---:|---:|---:|---:|---|---|---:|",
    ]
    for r in report["results"]:
        if "crashed" in r:
            lines.append(f"| {r['loop']} | crashed: {r['crashed']} | | | | | | | |")
            continue
        s, b, a = r["seconds"], r["before"], r["after"]
        lines.append(
            f"| {r['loop']} | {s['connections']:.1f} | {s['abrupt']:.1f} | {s['children']:.1f} "
            f"| {sum(r['errors'].values())} | {r['handler_calls']} "
            f"| {b['rss_mib']} → {a['rss_mib']} | {b['fds']} → {a['fds']} | {a['zombies']} |"
        )
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loops", default=",".join(LOOPS))
    parser.add_argument("--scale", type=float, default=1.0,
                        help="fraction of the counts to run (0.01 for a quick look)")
    parser.add_argument("--loop", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.loop:
        print(json.dumps(run_child(args.loop, args.scale)))
        return 0
    loops = [name for name in args.loops.split(",") if name]
    print("\n".join(section(run(loops, args.scale))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
