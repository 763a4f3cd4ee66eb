"""A KeyboardInterrupt or SystemExit raised by a custom exception handler
reaches the caller of run_until_complete, whichever path reported the
error: a callback, a transport's protocol call (each of them), a server's
protocol factory, a datagram endpoint, a pipe, a child process.  Each case runs on stock asyncio and
on glibloop side by side.
"""

import asyncio
import gc
import os
import socket
import subprocess
import sys

import pytest

import glibloop
from conftest import open_fds

LOOPS = {"asyncio": asyncio.SelectorEventLoop, "glibloop": glibloop.new_event_loop}


class Boom(Exception):
    pass


def outcome(loop_name, case, fatal):
    """Runs case(loop, cleanup) with a handler that raises fatal; returns
    what escaped run_until_complete and what the handler was given."""
    loop = LOOPS[loop_name]()
    reports = []

    def handler(lp, context):
        reports.append(context)
        raise fatal("raised by the exception handler")

    loop.set_exception_handler(handler)
    cleanup = []
    task = loop.create_task(case(loop, cleanup))
    try:
        loop.run_until_complete(task)
        escaped = None
    except BaseException as exc:  # noqa: BLE001 - compared
        escaped = (type(exc), str(exc))
    finally:
        loop.set_exception_handler(None)
        task.cancel()
        for step in cleanup:
            step()
        loop.run_until_complete(asyncio.gather(task, return_exceptions=True))
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()
    return escaped, reports


def summary(report):
    """What the handler got, without reprs of loop-specific objects."""
    message = report["message"].split("(")[0]
    return message, type(report["exception"]), sorted(report)


async def tcp_pair(loop, cleanup, server_protocol, *, debug=False):
    """A server with server_protocol and a client that sends b"x" and
    waits until its connection is lost (or echoed)."""
    loop.set_debug(debug)
    server = await loop.create_server(server_protocol, "127.0.0.1", 0)
    cleanup.append(server.close)
    reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
    cleanup.append(writer.close)
    writer.write(b"x")
    await reader.read(1)


def closes_on_cleanup(cleanup):
    class Protocol(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport
            cleanup.append(transport.close)

    return Protocol


async def data_received_raises(loop, cleanup):
    class Raising(closes_on_cleanup(cleanup)):
        def data_received(self, data):
            raise Boom("data_received")

    await tcp_pair(loop, cleanup, Raising)


async def connection_made_raises(loop, cleanup):
    class Raising(closes_on_cleanup(cleanup)):
        def connection_made(self, transport):
            super().connection_made(transport)
            raise Boom("connection_made")

        def data_received(self, data):
            self.transport.write(data)

    await tcp_pair(loop, cleanup, Raising)


async def protocol_factory_raises(loop, cleanup):
    def factory():
        raise Boom("factory")

    # asyncio reports a failed connection set-up in debug mode only
    await tcp_pair(loop, cleanup, factory, debug=True)


async def datagram_received_raises(loop, cleanup):
    class Raising(asyncio.DatagramProtocol):
        def datagram_received(self, data, addr):
            self.transport.sendto(data, addr)  # the echo the sender waits for
            raise Boom("datagram_received")

        def connection_made(self, transport):
            self.transport = transport

    class Sender(asyncio.DatagramProtocol):
        def datagram_received(self, data, addr):
            echoed.set_result(data)

    echoed = loop.create_future()
    server, _ = await loop.create_datagram_endpoint(Raising, local_addr=("127.0.0.1", 0))
    cleanup.append(server.close)
    client, _ = await loop.create_datagram_endpoint(
        Sender, remote_addr=server.get_extra_info("sockname")
    )
    cleanup.append(client.close)
    client.sendto(b"x")
    await echoed


async def pipe_protocol_raises(loop, cleanup):
    class Raising(asyncio.Protocol):
        def data_received(self, data):
            raise Boom("pipe")

        def connection_lost(self, exc):
            lost.set_result(None)

    lost = loop.create_future()
    rfd, wfd = os.pipe()
    transport, _ = await loop.connect_read_pipe(Raising, os.fdopen(rfd, "rb", 0))
    cleanup.append(transport.close)
    os.write(wfd, b"x")
    os.close(wfd)
    await lost


async def eof_received_raises(loop, cleanup):
    class Raising(closes_on_cleanup(cleanup)):
        def eof_received(self):
            raise Boom("eof_received")

    server = await loop.create_server(Raising, "127.0.0.1", 0)
    cleanup.append(server.close)
    reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
    cleanup.append(writer.close)
    writer.write_eof()
    await reader.read()  # the server's transport closes after the error


def buffered(cleanup, raising_in):
    class Raising(asyncio.BufferedProtocol):
        def connection_made(self, transport):
            cleanup.append(transport.close)

        def get_buffer(self, sizehint):
            if raising_in == "get_buffer":
                raise Boom("get_buffer")
            return bytearray(16)

        def buffer_updated(self, nbytes):
            raise Boom("buffer_updated")

    return Raising


async def get_buffer_raises(loop, cleanup):
    try:
        await tcp_pair(loop, cleanup, buffered(cleanup, "get_buffer"))
    except ConnectionResetError:
        pass  # the server closed with b"x" unread


async def buffer_updated_raises(loop, cleanup):
    await tcp_pair(loop, cleanup, buffered(cleanup, "buffer_updated"))


def writes_too_much(cleanup, raising_in):
    """A server protocol that writes more than its buffer holds at once."""

    class Raising(closes_on_cleanup(cleanup)):
        def connection_made(self, transport):
            super().connection_made(transport)
            transport.set_write_buffer_limits(high=1)
            transport.write(b"y" * BULK)

        def pause_writing(self):
            if raising_in == "pause_writing":
                raise Boom("pause_writing")

        def resume_writing(self):
            if raising_in == "resume_writing":
                raise Boom("resume_writing")

    return Raising


BULK = 4_000_000


async def read_bulk(loop, cleanup, server_protocol):
    server = await loop.create_server(server_protocol, "127.0.0.1", 0)
    cleanup.append(server.close)
    reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
    cleanup.append(writer.close)
    await reader.readexactly(BULK)


async def pause_writing_raises(loop, cleanup):
    await read_bulk(loop, cleanup, writes_too_much(cleanup, "pause_writing"))


async def resume_writing_raises(loop, cleanup):
    # called when the client's reads have drained the server's buffer
    await read_bulk(loop, cleanup, writes_too_much(cleanup, "resume_writing"))


async def connection_lost_raises(loop, cleanup):
    class Raising(closes_on_cleanup(cleanup)):
        def data_received(self, data):
            self.transport.close()

        def connection_lost(self, exc):
            raise Boom("connection_lost")

    await tcp_pair(loop, cleanup, Raising)


async def error_received_raises(loop, cleanup):
    class Raising(asyncio.DatagramProtocol):
        def error_received(self, exc):
            called.set_result(None)
            raise Boom("error_received")

    # a connected UDP socket whose peer is gone: the ICMP error comes back
    # as ECONNREFUSED
    called = loop.create_future()
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    addr = peer.getsockname()
    peer.close()
    transport, _ = await loop.create_datagram_endpoint(Raising, remote_addr=addr)
    cleanup.append(transport.close)
    transport.sendto(b"x")
    await called


async def pipe_eof_received_raises(loop, cleanup):
    class Raising(asyncio.Protocol):
        def eof_received(self):
            called.set_result(None)
            raise Boom("pipe eof_received")

    called = loop.create_future()
    rfd, wfd = os.pipe()
    transport, _ = await loop.connect_read_pipe(Raising, os.fdopen(rfd, "rb", 0))
    cleanup.append(transport.close)
    os.close(wfd)
    await called


def subprocess_raising(called, exited, raising_in):
    class Raising(asyncio.SubprocessProtocol):
        def pipe_data_received(self, fd, data):
            if raising_in == "pipe_data_received":
                called.set_result(None)
                raise Boom("pipe_data_received")

        def process_exited(self):
            exited.set_result(None)
            if raising_in == "process_exited":
                called.set_result(None)
                raise Boom("process_exited")

    return Raising


async def run_child(loop, cleanup, raising_in):
    called, exited = loop.create_future(), loop.create_future()
    transport, _ = await loop.subprocess_exec(
        subprocess_raising(called, exited, raising_in), sys.executable, "-c", "print('x')",
        stdin=None, stdout=subprocess.PIPE, stderr=None,
    )
    cleanup.append(transport.close)
    # the loop sees the child exit (a child still running when the loop
    # closes is left to a reaper, with fds of its own)
    cleanup.append(lambda: loop.run_until_complete(exited))
    await called


async def pipe_data_received_raises(loop, cleanup):
    await run_child(loop, cleanup, "pipe_data_received")


async def process_exited_raises(loop, cleanup):
    await run_child(loop, cleanup, "process_exited")


async def callback_raises(loop, cleanup):
    def raising():
        raise Boom("callback")

    loop.call_soon(raising)
    await asyncio.sleep(0.01)


# For these asyncio's transport has the protocol called by a queued reader
# callback, so the failure is reported as that callback's (message
# "Exception in callback ...", with its handle); glibloop's C transport
# calls the protocol from the poll and reports it with the transport and
# protocol, as asyncio does for its other protocol calls.
OUR_REPORT = {
    datagram_received_raises: (
        "Fatal error: protocol.datagram_received",
        Boom,
        ["exception", "message", "protocol", "transport"],
    ),
    pipe_protocol_raises: (
        "Fatal error: protocol.data_received",
        Boom,
        ["exception", "message", "protocol", "transport"],
    ),
    error_received_raises: (
        "Fatal error: protocol.error_received",
        Boom,
        ["exception", "message", "protocol", "transport"],
    ),
    # the same callback; only the transport's class name differs
    connection_lost_raises: (
        "Exception in callback StreamTransport._call_connection_lost",
        Boom,
        ["exception", "handle", "message"],
    ),
}

CASES = [
    data_received_raises,
    connection_made_raises,
    protocol_factory_raises,
    datagram_received_raises,
    pipe_protocol_raises,
    callback_raises,
    eof_received_raises,
    get_buffer_raises,
    buffer_updated_raises,
    pause_writing_raises,
    resume_writing_raises,
    connection_lost_raises,
    error_received_raises,
    pipe_eof_received_raises,
    pipe_data_received_raises,
    process_exited_raises,
]


@pytest.mark.parametrize("fatal", [KeyboardInterrupt, SystemExit])
@pytest.mark.parametrize("case", CASES, ids=lambda case: case.__name__)
def test_fatal_exception_from_the_handler_reaches_the_caller(case, fatal):
    theirs, their_reports = outcome("asyncio", case, fatal)
    glibloop.new_event_loop().close()  # GLib's own fds, made on first use
    fds = open_fds()
    ours, our_reports = outcome("glibloop", case, fatal)
    assert ours == theirs == (fatal, "raised by the exception handler")
    # the handler was called once, for the error, and raised: nothing more
    assert len(our_reports) == len(their_reports) == 1
    assert our_reports[0]["exception"].args == their_reports[0]["exception"].args
    if case in OUR_REPORT:
        assert summary(our_reports[0]) == OUR_REPORT[case]
    else:
        assert summary(our_reports[0]) == summary(their_reports[0])
    gc.collect()
    assert open_fds() <= fds


# Not the protocol factory: asyncio's failed accept keeps the accepted
# socket in a reference cycle (its frame, the handler's context, the
# exception's traceback) until the garbage collector runs, so its client
# waits for the end of the connection until then; glibloop closes it.
@pytest.mark.parametrize(
    "case", [c for c in CASES if c is not protocol_factory_raises], ids=lambda c: c.__name__
)
def test_the_loop_goes_on_after_the_handler_returns(case):
    """The same errors with a handler that returns: reported once, and the
    loop goes on (each case then ends by itself)."""

    def outcome_returning(loop_name):
        loop = LOOPS[loop_name]()
        reports = []
        loop.set_exception_handler(
            lambda lp, context: reports.append(type(context["exception"]))
        )
        cleanup = []
        try:
            loop.run_until_complete(case(loop, cleanup))
        finally:
            for step in cleanup:
                step()
            loop.run_until_complete(asyncio.sleep(0))
            loop.close()
        return reports

    assert outcome_returning("glibloop") == outcome_returning("asyncio") == [Boom]
