"""A KeyboardInterrupt or SystemExit raised by a custom exception handler
reaches the caller of run_until_complete, whichever path reported the
error: a callback, a transport's protocol call, a server's protocol
factory, a datagram endpoint, a pipe.  Each case runs on stock asyncio and
on glibloop side by side.
"""

import asyncio
import gc
import os

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
}

CASES = [
    data_received_raises,
    connection_made_raises,
    protocol_factory_raises,
    datagram_received_raises,
    pipe_protocol_raises,
    callback_raises,
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
