"""The contextvars.Context each protocol callback runs in, for every kind
of transport, on stock asyncio and on glibloop side by side.

asyncio runs the callbacks of a transport, server or endpoint in a copy of
the context that was current when it was made (each accepted connection in
its own copy), so a ContextVar set before ``create_server`` /
``create_connection`` / ``create_datagram_endpoint`` / ``connect_*_pipe`` /
``subprocess_exec`` is seen there, and one set inside a callback never
leaks into the caller's context.  Each scenario below records, for the first
call of each callback, the values of two variables: CREATED (set by the
caller just before the transport, server or endpoint is made) and MINE (set
by every callback of a transport after it recorded what it saw, so that its
later callbacks show whether they share its context).  It runs on a fresh
loop of each kind, in an empty Context of its own, which must hold nothing
afterwards, nor may the scenario's task.
"""

import asyncio
import contextvars
import os
import socket
import sys

import pytest

import glibloop
from test.test_asyncio import utils as test_utils

CREATED = contextvars.ContextVar("CREATED", default="-")
MINE = contextvars.ContextVar("MINE", default="-")

LOOPS = {"asyncio": asyncio.SelectorEventLoop, "glibloop": glibloop.new_event_loop}
STREAM_KINDS = ("tcp", "tcp_sock", "unix", "tls", "accepted")


class Recorder:
    """Records (CREATED, MINE) at the first call of each callback, under
    "tag.name"; then sets MINE, unless told not to for that callback
    (connection_made: see test_connection_made_shares_the_context;
    pause_writing runs inside write(), in the writer's context)."""

    keep_mine = ("connection_made", "pause_writing")

    def __init__(self, log, tag):
        self.log = log
        self.tag = tag

    def see(self, name):
        self.log.setdefault(f"{self.tag}.{name}", (CREATED.get(), MINE.get()))
        if name not in self.keep_mine:
            MINE.set(f"{self.tag}.{name}")


def observe(loop_name, scenario):
    """scenario(loop, log) on a fresh loop, in an empty Context: returns
    the log, then what the scenario's task and the caller's context hold
    afterwards."""

    def body():
        loop = LOOPS[loop_name]()
        log = {}

        async def main():
            await scenario(loop, log)
            return MINE.get()

        try:
            task_mine = loop.run_until_complete(main())
        finally:
            loop.close()
        return log, task_mine, (CREATED.get(), MINE.get())

    return contextvars.Context().run(body)


def compare(scenario, differs=(), rule=None):
    """Runs scenario on both loops: the logs must be equal except for the
    callbacks in differs (asyncio of this version does otherwise, see
    docs/differences.md), where glibloop's values must be rule[name]; and
    nothing may leak into the task or the caller on either loop."""
    theirs, their_task, their_caller = observe("asyncio", scenario)
    ours, our_task, our_caller = observe("glibloop", scenario)
    assert (our_task, our_caller) == ("-", ("-", "-"))
    assert (their_task, their_caller) == ("-", ("-", "-"))
    assert sorted(ours) == sorted(theirs)
    for name in differs:
        assert ours.pop(name) == rule[name], name
        theirs.pop(name)
    assert ours == theirs
    return ours


# -- streams: TCP, Unix, TLS, sock=, connect_accepted_socket -------------------


class EchoServer(asyncio.Protocol, Recorder):
    def connection_made(self, transport):
        self.see("connection_made")
        self.transport = transport

    def data_received(self, data):
        self.see("data_received")
        self.transport.write(data)

    def eof_received(self):
        self.see("eof_received")

    def connection_lost(self, exc):
        self.see("connection_lost")


class Client(asyncio.Protocol, Recorder):
    """Sends a line, half-closes once it is echoed, ends at the server's
    EOF: every call comes from the transport, none from the task."""

    def __init__(self, log, tag, done):
        super().__init__(log, tag)
        self.done = done

    def connection_made(self, transport):
        self.see("connection_made")
        self.transport = transport
        transport.write(b"ping\n")

    def data_received(self, data):
        self.see("data_received")
        if self.transport.can_write_eof():
            self.transport.write_eof()
        else:  # TLS
            self.transport.close()

    def eof_received(self):
        self.see("eof_received")

    def connection_lost(self, exc):
        self.see("connection_lost")
        self.done.set_result(None)


def tls_contexts():
    return test_utils.simple_server_sslcontext(), test_utils.simple_client_sslcontext()


async def stream_server(loop, kind, factory, path):
    if kind == "unix":
        return await loop.create_unix_server(factory, path)
    if kind == "tls":
        return await loop.create_server(factory, "127.0.0.1", 0, ssl=tls_contexts()[0])
    if kind == "tcp_sock":
        sock = socket.create_server(("127.0.0.1", 0))
        return await loop.create_server(factory, sock=sock)
    return await loop.create_server(factory, "127.0.0.1", 0)


async def stream_connect(loop, kind, factory, server, path):
    if kind == "unix":
        return await loop.create_unix_connection(factory, path)
    address = server.sockets[0].getsockname()
    if kind == "tls":
        return await loop.create_connection(
            factory, *address, ssl=tls_contexts()[1], server_hostname="localhost"
        )
    if kind == "tcp_sock":
        return await loop.create_connection(factory, sock=socket.create_connection(address))
    return await loop.create_connection(factory, *address)


def stream_scenario(kind, path, clients=2):
    async def scenario(loop, log):
        count = 0

        def factory():
            nonlocal count
            count += 1
            protocol = EchoServer(log, f"server{count}")
            protocol.see("factory")  # each connection its own copy
            return protocol

        CREATED.set("server")
        server = await stream_server(loop, kind, factory, path)
        for i in range(clients):
            done = loop.create_future()
            CREATED.set(f"client{i}")
            await stream_connect(loop, kind, lambda: Client(log, f"client{i}", done), server, path)
            await done
        CREATED.set("closing")
        server.close()
        await server.wait_closed()

    return scenario


async def accepted_scenario(loop, log):
    """connect_accepted_socket() on the server side, sock= on the client's."""
    listener = socket.create_server(("127.0.0.1", 0))
    with listener:
        for i in range(2):
            client_sock = socket.create_connection(listener.getsockname())
            server_sock, _ = listener.accept()
            done = loop.create_future()
            CREATED.set(f"server{i}")
            await loop.connect_accepted_socket(
                lambda: EchoServer(log, f"server{i}"), server_sock
            )
            CREATED.set(f"client{i}")
            await loop.create_connection(lambda: Client(log, f"client{i}", done), sock=client_sock)
            await done


def stream_rule(kind):
    """Every callback sees the value set before its transport was made;
    MINE as set by the callback before it in the same connection."""
    rule = {}
    for i in range(2):
        client, server = f"client{i}", f"server{i + 1}"
        rule[f"{client}.connection_made"] = (client, "-")
        rule[f"{client}.data_received"] = (client, "-")
        rule[f"{client}.eof_received"] = (client, f"{client}.data_received")
        rule[f"{client}.connection_lost"] = (client, f"{client}.eof_received")
        if kind == "tls":
            rule[f"{client}.connection_lost"] = (client, f"{client}.data_received")
        if kind == "accepted":
            server = f"server{i}"
            created = server
        else:
            created = "server"
            rule[f"{server}.factory"] = (created, "-")
        made = f"{server}.factory" if kind != "accepted" else "-"
        rule[f"{server}.connection_made"] = (created, made)
        rule[f"{server}.data_received"] = (created, made)
        rule[f"{server}.eof_received"] = (created, f"{server}.data_received")
        rule[f"{server}.connection_lost"] = (created, f"{server}.eof_received")
    return rule


@pytest.mark.parametrize("kind", STREAM_KINDS)
def test_stream_callbacks(kind, tmp_path):
    path = str(tmp_path / "sock")
    scenario = accepted_scenario if kind == "accepted" else stream_scenario(kind, path)
    rule = stream_rule(kind)
    if kind == "tls":
        # asyncio's SSLProtocol ends the client after its close_notify:
        # whether eof_received is called at all is TLS's business.
        rule = {k: v for k, v in rule.items() if not k.startswith("client")}
    ours = compare(scenario)
    assert {k: ours[k] for k in rule} == rule


def test_start_server_client_handler():
    """asyncio.start_server's handler is a task made in connection_made: it
    sees the server's context, and what it sets stays in it."""

    async def scenario(loop, log):
        async def handler(reader, writer):
            log.setdefault("handler", (CREATED.get(), MINE.get()))
            MINE.set("handler")
            writer.write(await reader.readline())
            await writer.drain()
            writer.close()
            await writer.wait_closed()

        CREATED.set("server")
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        for i in range(2):
            CREATED.set(f"client{i}")
            reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
            writer.write(b"ping\n")
            log[f"echo{i}"] = (await reader.readline(), MINE.get())
            writer.close()
            await writer.wait_closed()
        server.close()
        await server.wait_closed()

    ours = compare(scenario)
    assert ours == {
        "handler": ("server", "-"),
        "echo0": (b"ping\n", "-"),
        "echo1": (b"ping\n", "-"),
    }


# -- datagrams -----------------------------------------------------------------


class DatagramEcho(asyncio.DatagramProtocol, Recorder):
    """Echoes one datagram, then closes (from the callback: a close() made
    by the task would schedule connection_lost in the task's context)."""

    def __init__(self, log, tag, done):
        super().__init__(log, tag)
        self.done = done

    def connection_made(self, transport):
        self.see("connection_made")
        self.transport = transport

    def datagram_received(self, data, addr):
        self.see("datagram_received")
        self.transport.sendto(data, addr)
        self.transport.close()

    def error_received(self, exc):
        self.see("error_received")
        self.transport.close()

    def connection_lost(self, exc):
        self.see("connection_lost")
        self.done.set_result(None)


class DatagramClient(DatagramEcho):
    def connection_made(self, transport):
        super().connection_made(transport)
        transport.sendto(b"ping")


def free_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()


def test_datagram_callbacks():
    async def scenario(loop, log):
        server_done, client_done, refused_done = (loop.create_future() for _ in range(3))
        CREATED.set("server")
        server, _ = await loop.create_datagram_endpoint(
            lambda: DatagramEcho(log, "server", server_done), local_addr=("127.0.0.1", 0)
        )
        CREATED.set("client")
        await loop.create_datagram_endpoint(
            lambda: DatagramClient(log, "client", client_done),
            remote_addr=server.get_extra_info("sockname"),
        )
        await asyncio.gather(server_done, client_done)
        # a connected endpoint whose peer is not there: error_received
        CREATED.set("refused")
        await loop.create_datagram_endpoint(
            lambda: DatagramClient(log, "refused", refused_done), remote_addr=free_udp_port()
        )
        await refused_done

    ours = compare(scenario)
    assert ours == {
        "server.connection_made": ("server", "-"),
        "server.datagram_received": ("server", "-"),
        "server.connection_lost": ("server", "server.datagram_received"),
        "client.connection_made": ("client", "-"),
        "client.datagram_received": ("client", "-"),
        "client.connection_lost": ("client", "client.datagram_received"),
        "refused.connection_made": ("refused", "-"),
        "refused.error_received": ("refused", "-"),
        "refused.connection_lost": ("refused", "refused.error_received"),
    }


# -- pipes -----------------------------------------------------------------------


class PipeReader(asyncio.Protocol, Recorder):
    def __init__(self, log, done):
        super().__init__(log, "reader")
        self.done = done
        self.received = 0

    def connection_made(self, transport):
        self.see("connection_made")

    def data_received(self, data):
        self.see("data_received")
        self.received += len(data)

    def eof_received(self):
        self.see("eof_received")

    def connection_lost(self, exc):
        self.see("connection_lost")
        self.done.set_result(self.received)


class PipeWriter(asyncio.Protocol, Recorder):
    # The task closes the transport once resumed (asyncio's write pipe
    # calls connection_lost twice when closed from resume_writing), so
    # asyncio's connection_lost runs in a copy of the task's context,
    # glibloop's in the transport's: the same values, since neither this
    # transport's callbacks nor the task set MINE.
    keep_mine = Recorder.keep_mine + ("resume_writing",)

    def __init__(self, log, resumed, done):
        super().__init__(log, "writer")
        self.resumed = resumed
        self.done = done

    def connection_made(self, transport):
        self.see("connection_made")

    def pause_writing(self):
        self.see("pause_writing")

    def resume_writing(self):
        self.see("resume_writing")
        self.resumed.set_result(None)

    def connection_lost(self, exc):
        self.see("connection_lost")
        self.done.set_result(None)


def test_pipe_callbacks():
    size = 1024 * 1024  # more than a pipe holds: the writer pauses

    async def scenario(loop, log):
        rfd, wfd = os.pipe()
        read_done, resumed, write_done = (loop.create_future() for _ in range(3))
        CREATED.set("reader")
        await loop.connect_read_pipe(lambda: PipeReader(log, read_done), os.fdopen(rfd, "rb", 0))
        CREATED.set("writer")
        writer, _ = await loop.connect_write_pipe(
            lambda: PipeWriter(log, resumed, write_done), os.fdopen(wfd, "wb", 0)
        )
        writer.write(b"x" * size)
        await resumed
        writer.close()
        await write_done
        log["received"] = (await read_done, "-")

    # At EOF asyncio's read pipe queues eof_received and connection_lost
    # together, each in a copy of the reading context; glibloop queues
    # them in the transport's one context, so connection_lost sees what
    # eof_received set (as a socket transport's does on both).
    differs = ("reader.connection_lost",)
    rule = {"reader.connection_lost": ("reader", "reader.eof_received")}
    ours = compare(scenario, differs, rule)
    assert ours == {
        "reader.connection_made": ("reader", "-"),
        "reader.data_received": ("reader", "-"),
        "reader.eof_received": ("reader", "reader.data_received"),
        "writer.connection_made": ("writer", "-"),
        "writer.pause_writing": ("writer", "-"),
        "writer.resume_writing": ("writer", "-"),
        "writer.connection_lost": ("writer", "-"),
        "received": (size, "-"),
    }


# -- subprocesses ------------------------------------------------------------


class Child(asyncio.SubprocessProtocol, Recorder):
    # Which of the pipes and the exit comes last, and so whose context
    # connection_lost is scheduled from, is the kernel's choice.
    keep_mine = ("connection_made", "process_exited", "connection_lost")

    def __init__(self, log, done):
        super().__init__(log, "child")
        self.done = done

    def connection_made(self, transport):
        self.see("connection_made")

    def pipe_data_received(self, fd, data):
        self.see(f"pipe_data_received{fd}")

    def pipe_connection_lost(self, fd, exc):
        self.see(f"pipe_connection_lost{fd}")

    def process_exited(self):
        self.see("process_exited")

    def connection_lost(self, exc):
        self.log.setdefault("child.connection_lost", (CREATED.get(), "?"))
        self.done.set_result(None)


def test_subprocess_callbacks():
    async def scenario(loop, log):
        done = loop.create_future()
        CREATED.set("child")
        transport, _ = await loop.subprocess_exec(
            lambda: Child(log, done),
            sys.executable,
            "-c",
            "import os; os.write(1, b'out'); os.write(2, b'err')",
            stdin=None,
        )
        await done
        transport.close()

    # Python 3.11's asyncio waits for children in a thread
    # (ThreadedChildWatcher), whose empty context the exit callbacks then
    # run in; glibloop's child watch keeps the context, as 3.12+'s pidfd
    # watcher does.
    differs = ("child.process_exited", "child.connection_lost") if sys.version_info < (3, 12) else ()
    rule = {"child.process_exited": ("child", "-"), "child.connection_lost": ("child", "?")}
    ours = compare(scenario, differs, rule)
    assert ours == {
        "child.connection_made": ("child", "-"),
        "child.pipe_data_received1": ("child", "-"),
        "child.pipe_data_received2": ("child", "-"),
        # asyncio's transport calls pipe_data_received in a copy (call_soon)
        "child.pipe_connection_lost1": ("child", "-"),
        "child.pipe_connection_lost2": ("child", "-"),
        **({} if differs else rule),
    }


# -- one context per transport -----------------------------------------------


class SetsInConnectionMade(asyncio.Protocol):
    def __init__(self, log, done):
        self.log = log
        self.done = done

    def connection_made(self, transport):
        MINE.set("made")
        transport.write(b"ping\n")
        self.transport = transport

    def data_received(self, data):
        self.log.setdefault("data_received", MINE.get())
        self.transport.close()

    def connection_lost(self, exc):
        self.done.set_result(None)


@pytest.mark.parametrize("loop_name", ["asyncio", "glibloop"])
def test_connection_made_shares_the_context(loop_name):
    """glibloop runs connection_made in the transport's one context, as
    3.15's asyncio does for sockets.  Older asyncio (and 3.15 for datagrams
    and pipes) runs it in a copy of its own: what it sets is not seen by
    data_received there (docs/differences.md)."""

    async def scenario(loop, log):
        done = loop.create_future()
        server = await loop.create_server(lambda: EchoServer({}, "s"), "127.0.0.1", 0)
        await loop.create_connection(
            lambda: SetsInConnectionMade(log, done), *server.sockets[0].getsockname()
        )
        await done
        server.close()
        await server.wait_closed()

    log, _, caller = observe(loop_name, scenario)
    shared = loop_name == "glibloop" or sys.version_info >= (3, 15)
    assert log == {"data_received": "made" if shared else "-"}
    assert caller == ("-", "-")


def test_given_context_is_used_as_is(loop):
    """The hooks take asyncio 3.15's context=: a transport's calls run in
    that very Context (what they set stays in it), a listener's connections
    each in a copy of its own."""
    given = contextvars.copy_context()
    given.run(CREATED.set, "given")

    async def main():
        done = loop.create_future()
        log = {}
        server_sock = socket.create_server(("127.0.0.1", 0))
        server_sock.setblocking(False)
        server_log = {}
        loop._start_serving(lambda: EchoServer(server_log, "server"), server_sock, context=given)
        client_sock = socket.create_connection(server_sock.getsockname())
        client_sock.setblocking(False)
        waiter = loop.create_future()
        loop._make_socket_transport(
            client_sock, Client(log, "client", done), waiter, context=given
        )
        await waiter
        await done
        loop._stop_serving(server_sock)
        return log, server_log

    log, server_log = loop.run_until_complete(main())
    assert log["client.data_received"] == ("given", "-")
    assert server_log["server.data_received"] == ("given", "-")
    # the client's calls ran in `given` itself; the server's in a copy
    assert given[MINE] == "client.connection_lost"


def test_nested_main_loop_waits_for_the_transport_context(loop):
    """A callback of the transport's context queued while one of its
    protocol calls runs a nested main loop waits until that call returns
    (the context cannot be entered twice), then runs once."""
    from gi.repository import GLib

    order = []

    class Nesting(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            self.transport.close()  # connection_lost queued in our context
            context = GLib.MainContext.default()
            for _ in range(20):
                context.iteration(False)
            order.append("nested loop done")
            nested_done.set_result(None)

        def connection_lost(self, exc):
            order.append("connection_lost")

    async def main():
        server = await loop.create_server(Nesting, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
        writer.write(b"x")
        await nested_done
        # requeued when data_received returned: it runs in the next round
        for _ in range(3):
            await asyncio.sleep(0)
        writer.close()
        server.close()
        await server.wait_closed()

    nested_done = loop.create_future()
    errors = []
    loop.set_exception_handler(lambda lp, context: errors.append(context))
    loop.run_until_complete(main())
    assert order == ["nested loop done", "connection_lost"]
    assert errors == []
