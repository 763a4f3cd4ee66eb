"""anyio on its asyncio backend, with glibloop as the loop:

    anyio.run(main, backend="asyncio",
              backend_options={"loop_factory": glibloop.new_event_loop})

Every scenario runs on stock asyncio and on glibloop and returns a
transcript; the test checks the content and that both transcripts are equal,
so where glibloop behaves differently from asyncio, the test fails.  The
scenario also records the type of the loop it ran on.
"""

import asyncio
import gc
import socket
import threading
import time

import anyio
import pytest
from anyio.abc import SocketAttribute
from anyio.streams.buffered import BufferedByteReceiveStream
from anyio.streams.tls import TLSListener, TLSStream

import glibloop
from conftest import open_fds
from test.test_asyncio import utils as test_utils

LOOPS = {
    "asyncio": asyncio.SelectorEventLoop,
    "glibloop": glibloop.new_event_loop,
}


def run_scenario(factory, scenario):
    problems = []

    async def main():
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, context: problems.append(context))
        with anyio.fail_after(60):
            return type(loop), await scenario()

    loop_type, result = anyio.run(main, backend="asyncio",
                                  backend_options={"loop_factory": factory})
    gc.collect()
    assert not problems, [f"{p.get('message')}: {p.get('exception')!r}" for p in problems]
    return loop_type, result


def on_both(scenario):
    """The scenario's transcript on glibloop, checked equal to asyncio's."""
    glibloop.run(asyncio.sleep(0))  # GLib's default context opens its wake-up fd once
    fds = open_fds()
    transcripts = {}
    for name, factory in LOOPS.items():
        loop_type, transcripts[name] = run_scenario(factory, scenario)
        expected = glibloop.Loop if name == "glibloop" else asyncio.SelectorEventLoop
        assert loop_type is expected, (name, loop_type)
    assert transcripts["glibloop"] == transcripts["asyncio"]
    assert open_fds() <= fds, "file descriptors leaked"
    return transcripts["glibloop"]


def test_the_loop_factory_is_used():
    async def main():
        return type(asyncio.get_running_loop()), anyio.get_current_task().name

    loop_type, name = anyio.run(main, backend="asyncio",
                                backend_options={"loop_factory": glibloop.new_event_loop})
    assert loop_type is glibloop.Loop
    assert name.endswith("main")


# -- task groups ------------------------------------------------------------------


async def task_groups():
    out = {}
    results = {}

    async def worker(n, delay):
        await anyio.sleep(delay)
        results[n] = n * n

    async with anyio.create_task_group() as tg:
        for n in range(20):
            tg.start_soon(worker, n, (20 - n) * 0.001)
    out["results"] = sorted(results.items())

    # tg.start(): the child reports a value once it is ready, and goes on
    # running inside the group after that.
    go_on = anyio.Event()

    async def server(task_status=anyio.TASK_STATUS_IGNORED):
        await anyio.sleep(0.01)
        task_status.started("ready")
        await go_on.wait()
        results["after_start"] = True

    async with anyio.create_task_group() as tg:
        out["started"] = await tg.start(server)
        out["child_still_running"] = "after_start" not in results
        go_on.set()
    out["child_finished"] = results.get("after_start")

    # A failing child cancels its siblings; the error comes out in a group.
    cancelled = []

    async def sibling(n):
        try:
            await anyio.sleep(10)
        except anyio.get_cancelled_exc_class():
            cancelled.append(n)
            raise

    async def failing():
        await anyio.sleep(0.01)
        raise ValueError("boom")

    start = time.monotonic()
    try:
        async with anyio.create_task_group() as tg:
            for n in range(5):
                tg.start_soon(sibling, n)
            tg.start_soon(failing)
    except ExceptionGroup as group:
        out["group"] = [(type(e).__name__, str(e)) for e in group.exceptions]
    out["siblings_cancelled"] = sorted(cancelled)
    out["fast"] = time.monotonic() - start < 5

    # Cancelling the group's own scope from inside.
    async with anyio.create_task_group() as tg:
        for n in range(5):
            tg.start_soon(anyio.sleep, 10)
        await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    out["scope_cancel_caught"] = tg.cancel_scope.cancel_called
    return out


def test_task_groups():
    t = on_both(task_groups)
    assert t == {"results": [(n, n * n) for n in range(20)],
                 "started": "ready", "child_still_running": True, "child_finished": True,
                 "group": [("ValueError", "boom")], "siblings_cancelled": [0, 1, 2, 3, 4],
                 "fast": True, "scope_cancel_caught": True}


# -- cancel scopes ----------------------------------------------------------------


async def cancel_scopes():
    out = {}
    loop_time = anyio.current_time

    start = loop_time()
    try:
        with anyio.fail_after(0.05):
            await anyio.sleep(10)
    except TimeoutError:
        out["fail_after"] = "TimeoutError"
    out["fail_after_in_time"] = 0.04 <= loop_time() - start < 2

    start = loop_time()
    with anyio.move_on_after(0.05) as scope:
        await anyio.sleep(10)
    out["move_on_after"] = scope.cancelled_caught
    out["move_on_in_time"] = 0.04 <= loop_time() - start < 2

    # Shielding: the inner shielded sleep completes although the outer scope
    # expired meanwhile; the next checkpoint outside the shield is cancelled.
    steps = []
    with anyio.move_on_after(0.02) as outer:
        with anyio.CancelScope(shield=True):
            await anyio.sleep(0.1)
            steps.append("shielded sleep finished")
        steps.append("after shield")
        await anyio.sleep(10)
        steps.append("not reached")
    out["shield_steps"] = steps
    out["shield_outer_caught"] = outer.cancelled_caught

    # Nested deadlines: the nearer one wins, the outer one is untouched.
    with anyio.move_on_after(5) as far:
        with anyio.move_on_after(0.02) as near:
            out["effective_deadline_is_near"] = (
                anyio.current_effective_deadline() == near.deadline)
            await anyio.sleep(10)
        out["near_caught"] = near.cancelled_caught
    out["far_caught"] = far.cancelled_caught

    # Cancelling another task's scope from outside.
    scope_box = {}
    woke = anyio.Event()

    async def sleeper():
        with anyio.CancelScope() as scope:
            scope_box["scope"] = scope
            woke.set()
            await anyio.sleep(10)
        scope_box["caught"] = scope.cancelled_caught

    async with anyio.create_task_group() as tg:
        tg.start_soon(sleeper)
        await woke.wait()
        scope_box["scope"].cancel()
    out["external_cancel_caught"] = scope_box["caught"]

    # A deadline moved while the scope waits.
    start = loop_time()
    with anyio.CancelScope() as scope:
        scope.deadline = loop_time() + 10

        async def shorten():
            await anyio.sleep(0.01)
            scope.deadline = loop_time() + 0.02

        async with anyio.create_task_group() as tg:
            tg.start_soon(shorten)
            await anyio.sleep(10)
    out["moved_deadline_caught"] = scope.cancelled_caught
    out["moved_deadline_in_time"] = loop_time() - start < 2
    return out


def test_cancel_scopes_timeouts_and_shielding():
    t = on_both(cancel_scopes)
    assert t == {"fail_after": "TimeoutError", "fail_after_in_time": True,
                 "move_on_after": True, "move_on_in_time": True,
                 "shield_steps": ["shielded sleep finished", "after shield"],
                 "shield_outer_caught": True,
                 "effective_deadline_is_near": True, "near_caught": True, "far_caught": False,
                 "external_cancel_caught": True,
                 "moved_deadline_caught": True, "moved_deadline_in_time": True}


# -- memory object streams --------------------------------------------------------


async def memory_streams():
    out = {}
    # Unbuffered: every send waits for its receive.
    send, receive = anyio.create_memory_object_stream[int](0)
    received = []

    async def consume(stream):
        async with stream:
            async for item in stream:
                received.append(item)

    async with anyio.create_task_group() as tg:
        tg.start_soon(consume, receive)
        async with send:
            for i in range(1000):
                await send.send(i)
    out["unbuffered"] = received == list(range(1000))

    # Bounded buffer: the third send blocks until someone receives.
    send, receive = anyio.create_memory_object_stream[str](2)
    send.send_nowait("a")
    send.send_nowait("b")
    try:
        send.send_nowait("c")
    except anyio.WouldBlock:
        out["would_block"] = True
    with anyio.move_on_after(0.02) as scope:
        await send.send("c")
    out["blocked_send_timed_out"] = scope.cancelled_caught
    out["stats"] = (send.statistics().current_buffer_used,
                    send.statistics().max_buffer_size)

    # Several producers on clones; the stream ends when the last clone closes.
    results = []

    async def producer(stream, name):
        async with stream:
            for i in range(100):
                await stream.send(f"{name}{i}")

    async def collector(stream):
        async with stream:
            async for item in stream:
                results.append(item)

    send2, receive2 = anyio.create_memory_object_stream[str](10)
    async with anyio.create_task_group() as tg:
        tg.start_soon(collector, receive2)
        async with send2:
            for name in "xyz":
                tg.start_soon(producer, send2.clone(), name)
    out["producers"] = sorted(results) == sorted(f"{n}{i}" for n in "xyz" for i in range(100))
    out["per_producer_order"] = all(
        [r for r in results if r[0] == n] == [f"{n}{i}" for i in range(100)] for n in "xyz")

    # Receiving from a stream whose senders are all gone ends it.
    async with receive:
        out["drain"] = [receive.receive_nowait(), receive.receive_nowait()]
        await send.aclose()
        try:
            await receive.receive()
        except anyio.EndOfStream:
            out["end_of_stream"] = True
    return out


def test_memory_object_streams():
    t = on_both(memory_streams)
    assert t == {"unbuffered": True, "would_block": True, "blocked_send_timed_out": True,
                 "stats": (2, 2), "producers": True, "per_producer_order": True,
                 "drain": ["a", "b"], "end_of_stream": True}


# -- TCP streams --------------------------------------------------------------------


def payload(n, seed):
    return bytes((i * 13 + seed) % 256 for i in range(n))


async def tcp_streams():
    """An anyio TCP listener serving an echo that uppercases lines, many
    clients at once, a large echo with send_eof, and the same over TLS."""
    out = {}
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(SocketAttribute.local_port)
    served = []

    async def handle(stream):
        async with stream:
            served.append(stream.extra(SocketAttribute.remote_address)[0])
            buffered = BufferedByteReceiveStream(stream)
            first = await buffered.receive_until(b"\n", 1 << 20)
            if first == b"BULK":
                # echo everything until the client's EOF
                try:
                    while True:
                        await stream.send(await buffered.receive())
                except anyio.EndOfStream:
                    pass
                return
            await stream.send(first.upper() + b"\n")
            while True:
                try:
                    line = await buffered.receive_until(b"\n", 1 << 20)
                except (anyio.EndOfStream, anyio.IncompleteRead):
                    return
                await stream.send(line.upper() + b"\n")

    async def line_client(n):
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            buffered = BufferedByteReceiveStream(stream)
            answers = []
            for i in range(5):
                await stream.send(f"client {n} line {i}\n".encode())
                answers.append(await buffered.receive_until(b"\n", 1000))
            return answers

    async def bulk_client():
        data = payload(4 << 20, 1)
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            got = bytearray()

            async def reader():
                try:
                    while True:
                        got.extend(await stream.receive())
                except anyio.EndOfStream:
                    pass

            async with anyio.create_task_group() as tg:
                tg.start_soon(reader)
                await stream.send(b"BULK\n")
                for i in range(0, len(data), 100_000):
                    await stream.send(data[i:i + 100_000])
                await stream.send_eof()
            return bytes(got) == data, len(got)

    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        answers = {}

        async def record(n):
            answers[n] = await line_client(n)

        async with anyio.create_task_group() as clients:
            for n in range(50):
                clients.start_soon(record, n)
        out["lines"] = all(answers[n] == [f"CLIENT {n} LINE {i}".encode() for i in range(5)]
                           for n in range(50)) and len(answers) == 50
        out["bulk"] = await bulk_client()
        tg.cancel_scope.cancel()
    await listener.aclose()
    out["served"] = len(served), set(served)

    # TLS on top of anyio's TCP streams.
    tls_listener = TLSListener(
        await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0),
        test_utils.simple_server_sslcontext())
    tls_port = tls_listener.listener.extra(SocketAttribute.local_port)

    async def tls_echo(stream):
        async with stream:
            try:
                while True:
                    await stream.send((await stream.receive())[::-1])
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                pass

    async with anyio.create_task_group() as tg:
        tg.start_soon(tls_listener.serve, tls_echo)
        async with await anyio.connect_tcp(
                "127.0.0.1", tls_port, tls=True,
                ssl_context=test_utils.simple_client_sslcontext(),
                tls_standard_compatible=False) as stream:
            assert isinstance(stream, TLSStream)
            await stream.send(b"secret message")
            out["tls"] = await stream.receive()
        tg.cancel_scope.cancel()
    await tls_listener.aclose()
    return out


def test_tcp_streams():
    t = on_both(tcp_streams)
    assert t == {"lines": True, "bulk": (True, 4 << 20),
                 "served": (51, {"127.0.0.1"}), "tls": b"egassem terces"}


async def udp_and_sockets():
    """A UDP echo with anyio's UDP sockets, and wait_readable on a socket
    pair (the loop's add_reader under anyio)."""
    out = {}
    async with await anyio.create_udp_socket(local_host="127.0.0.1") as server, \
            await anyio.create_connected_udp_socket(
                "127.0.0.1", server.extra(SocketAttribute.local_port)) as client:

        async def echo():
            for _ in range(20):
                data, addr = await server.receive()
                await server.sendto(data.upper(), *addr)

        async with anyio.create_task_group() as tg:
            tg.start_soon(echo)
            replies = []
            for i in range(20):
                await client.send(f"datagram {i}".encode())
                replies.append(await client.receive())
    out["udp"] = replies == [f"DATAGRAM {i}".encode() for i in range(20)]

    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    with a, b:
        async with anyio.create_task_group() as tg:
            async def later():
                await anyio.sleep(0.02)
                b.send(b"wake")
            tg.start_soon(later)
            with anyio.fail_after(5):
                await anyio.wait_readable(a)
            out["readable"] = a.recv(10)
    return out


def test_udp_and_wait_readable():
    t = on_both(udp_and_sockets)
    assert t == {"udp": True, "readable": b"wake"}


# -- to_thread ----------------------------------------------------------------------


async def threads():
    out = {}
    main_thread = threading.get_ident()

    def blocking(x):
        time.sleep(0.01)
        return x * 2, threading.get_ident() != main_thread

    out["run_sync"] = await anyio.to_thread.run_sync(blocking, 21)

    # Concurrency is bounded by the limiter: 12 jobs, at most 3 at a time,
    # and the barrier makes each group of 3 provably run together.
    running = peak = 0
    lock = threading.Lock()
    three_together = threading.Barrier(3)

    def counted(_):
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        three_together.wait(10)
        time.sleep(0.002)
        with lock:
            running -= 1

    limiter = anyio.CapacityLimiter(3)
    async with anyio.create_task_group() as tg:
        for i in range(12):
            tg.start_soon(lambda i=i: anyio.to_thread.run_sync(counted, i, limiter=limiter))
    out["peak"] = peak

    # The worker calls back into the loop's thread.
    async def on_loop(value):
        await anyio.sleep(0)
        return value + 1, threading.get_ident() == main_thread

    def calls_back():
        return (anyio.from_thread.run(on_loop, 41),
                anyio.from_thread.run_sync(lambda: threading.get_ident() == main_thread))

    out["from_thread"] = await anyio.to_thread.run_sync(calls_back)

    # An abandoned thread: the caller is cancelled, the thread finishes later.
    release = threading.Event()
    finished = threading.Event()

    def stuck():
        release.wait(10)
        finished.set()

    with anyio.move_on_after(0.02) as scope:
        await anyio.to_thread.run_sync(stuck, abandon_on_cancel=True)
    out["abandoned"] = scope.cancelled_caught
    release.set()
    await anyio.to_thread.run_sync(finished.wait, 10)
    out["abandoned_thread_finished"] = finished.is_set()

    # An exception in the thread comes out in the caller.
    def fails():
        raise KeyError("in thread")

    try:
        await anyio.to_thread.run_sync(fails)
    except KeyError as exc:
        out["exception"] = exc.args
    return out


def test_to_thread():
    t = on_both(threads)
    assert t == {"run_sync": (42, True), "peak": 3, "from_thread": ((42, True), True),
                 "abandoned": True, "abandoned_thread_finished": True,
                 "exception": ("in thread",)}


async def processes():
    result = await anyio.run_process(["cat"], input=b"through a pipe\n" * 1000)
    async with await anyio.open_process(["sh", "-c", "read x; echo got $x; exit 3"]) as proc:
        await proc.stdin.send(b"hello\n")
        await proc.stdin.aclose()
        line = await proc.stdout.receive()
        code = await proc.wait()
    return result.returncode, result.stdout == b"through a pipe\n" * 1000, line, code


def test_processes():
    assert on_both(processes) == (0, True, b"got hello\n", 3)


# -- anyio's own pytest plugin on glibloop ----------------------------------------


@pytest.fixture
def anyio_backend():
    return "asyncio", {"loop_factory": glibloop.new_event_loop}


@pytest.mark.anyio
async def test_anyio_pytest_plugin_runs_on_glibloop():
    assert type(asyncio.get_running_loop()) is glibloop.Loop
    send, receive = anyio.create_memory_object_stream[int](1)
    async with anyio.create_task_group() as tg:
        tg.start_soon(send.send, 7)
        assert await receive.receive() == 7
    send.close()
    receive.close()
