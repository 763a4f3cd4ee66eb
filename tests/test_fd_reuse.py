"""An fd number closed and reused behind the loop's back.

A registration belongs to the file it was made for: once that file is
closed, nothing left of it (an idle sock_* waiter, a pending operation, a
reader) may refuse a new registration of the same number or be called for
the new file.  Every scenario runs on stock asyncio and on glibloop and
both outcomes must be equal.
"""

import asyncio
import os
import socket

import pytest

import glibloop
from conftest import open_fds

LOOPS = (asyncio.SelectorEventLoop, glibloop.new_event_loop)


def outcomes(scenario):
    """scenario(loop) run to completion on each loop: a list of results
    (or exception types and messages), asyncio's first."""
    results = []
    for factory in LOOPS:
        loop = factory()
        try:
            results.append(("ok", loop.run_until_complete(asyncio.wait_for(scenario(loop), 10))))
        except Exception as exc:  # noqa: BLE001 - compared
            results.append((type(exc).__name__, str(exc)))
        finally:
            loop.close()
    return results


def assert_same(scenario, expected):
    theirs, ours = outcomes(scenario)
    assert theirs == ("ok", expected)
    assert ours == theirs


def socket_at(fd, family=socket.AF_INET, type=socket.SOCK_STREAM):
    """A new socket whose file descriptor is exactly fd (a free number)."""
    fresh = socket.socket(family, type)
    if fresh.fileno() != fd:
        os.dup2(fresh.fileno(), fd)
        fresh.close()
        fresh = socket.socket(family, type, fileno=fd)
    fresh.setblocking(False)
    return fresh


async def serve_on(loop, fd):
    """A TCP server whose listening socket gets fd; proves it accepts and
    answers (the listener acts on the new file)."""
    listener = socket_at(fd)
    listener.bind(("127.0.0.1", 0))

    class Echo(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            self.transport.write(data.upper())

    server = await loop.create_server(Echo, sock=listener)
    try:
        reader, writer = await asyncio.open_connection(*listener.getsockname()[:2])
        writer.write(b"ping")
        reply = await reader.readexactly(4)
        writer.close()
        await writer.wait_closed()
        return reply
    finally:
        server.close()
        await server.wait_closed()


def pair():
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    return a, b


async def read_waited(loop, cancel, start):
    """start(a) waited for data on a, then got it or was cancelled."""
    a, b = pair()
    task = asyncio.ensure_future(start(a))
    await asyncio.sleep(0)
    assert not task.done()  # it had to wait
    if cancel:
        task.cancel()
    else:
        b.send(b"x")
    await asyncio.gather(task, return_exceptions=True)
    return a, b


def recv_waited(loop, cancel):
    return read_waited(loop, cancel, lambda a: loop.sock_recv(a, 10))


def recv_into_waited(loop, cancel):
    return read_waited(loop, cancel, lambda a: loop.sock_recv_into(a, bytearray(10)))


async def sendall_waited(loop, cancel):
    a, b = pair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    task = asyncio.ensure_future(loop.sock_sendall(a, b"x" * 4_000_000))
    await asyncio.sleep(0)
    assert not task.done()  # it had to wait
    if cancel:
        task.cancel()
    else:
        while not task.done():
            try:
                b.recv(1 << 20)
            except BlockingIOError:
                pass
            await asyncio.sleep(0)
    await asyncio.gather(task, return_exceptions=True)
    return a, b


async def accept_waited(loop, cancel):
    listener = socket.socket()
    listener.setblocking(False)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    task = asyncio.ensure_future(loop.sock_accept(listener))
    await asyncio.sleep(0)
    client = socket.socket()
    if cancel:
        task.cancel()
    else:
        client.connect(listener.getsockname())
    results = await asyncio.gather(task, return_exceptions=True)
    if not cancel:
        results[0][0].close()
    client.close()
    return listener, None


async def connect_waited(loop, cancel, refused):
    """A TCP connect waits at least for the handshake (EINPROGRESS); to be
    cancelled while waiting, it waits behind a full accept queue."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    address = listener.getsockname()
    filler = None
    if refused:
        listener.close()
    else:
        listener.listen(0)
    if cancel:
        filler = socket.create_connection(address)  # the queue's one place
    sock = socket.socket()
    sock.setblocking(False)
    task = asyncio.ensure_future(loop.sock_connect(sock, address))
    await asyncio.sleep(0)
    if cancel:
        assert not task.done()
        task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    listener.close()
    if filler is not None:
        filler.close()
    return sock, None


WAITS = {
    "recv completed": lambda loop: recv_waited(loop, False),
    "recv cancelled": lambda loop: recv_waited(loop, True),
    "recv_into completed": lambda loop: recv_into_waited(loop, False),
    "recv_into cancelled": lambda loop: recv_into_waited(loop, True),
    "sendall completed": lambda loop: sendall_waited(loop, False),
    "sendall cancelled": lambda loop: sendall_waited(loop, True),
    "accept completed": lambda loop: accept_waited(loop, False),
    "accept cancelled": lambda loop: accept_waited(loop, True),
    "connect completed": lambda loop: connect_waited(loop, False, False),
    "connect cancelled": lambda loop: connect_waited(loop, True, False),
    "connect refused": lambda loop: connect_waited(loop, False, True),
}


@pytest.mark.parametrize("wait", WAITS)
def test_server_gets_fd_of_socket_that_waited(wait):
    """A sock_* operation that had to wait, its socket closed: a server
    whose listening socket gets the same number starts and serves."""

    async def scenario(loop):
        sock, peer = await WAITS[wait](loop)
        fd = sock.fileno()
        sock.close()
        if peer is not None:
            peer.close()
        return await serve_on(loop, fd)

    assert_same(scenario, b"PING")


def test_unix_server_gets_fd_of_socket_that_waited(tmp_path):
    async def scenario(loop):
        sock, peer = await recv_waited(loop, False)
        fd = sock.fileno()
        sock.close()
        peer.close()
        listener = socket_at(fd, socket.AF_UNIX)
        path = str(tmp_path / f"s{id(loop)}")
        listener.bind(path)
        server = await loop.create_unix_server(asyncio.Protocol, sock=listener)
        try:
            reader, writer = await asyncio.open_unix_connection(path)
            writer.close()
            await writer.wait_closed()
            return server.sockets[0].fileno() == fd
        finally:
            server.close()
            await server.wait_closed()

    assert_same(scenario, True)


def test_server_after_refused_create_connection():
    async def scenario(loop):
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        address = probe.getsockname()
        probe.close()  # nothing listens there now
        try:
            await loop.create_connection(asyncio.Protocol, *address)
        except ConnectionRefusedError:
            pass
        # create_connection's socket was the lowest free number, closed on
        # the failure; the server's socket takes the lowest free number too.
        listener = socket.socket()
        fd = listener.fileno()
        listener.close()
        return await serve_on(loop, fd)

    assert_same(scenario, b"PING")


def test_server_on_socket_after_its_own_sock_accept():
    """sock_accept on a listening socket, then create_server(sock=) on it:
    the idle waiter gives way to the server."""

    async def scenario(loop):
        listener, _ = await accept_waited(loop, False)
        server = await loop.create_server(asyncio.Protocol, sock=listener)
        try:
            reader, writer = await asyncio.open_connection(*listener.getsockname())
            writer.close()
            await writer.wait_closed()
            return "served"
        finally:
            server.close()
            await server.wait_closed()

    assert_same(scenario, "served")


def pair_at(fd):
    """A connected socket pair whose first socket is at fd (a free number)."""
    c, d = pair()
    if c.fileno() != fd:
        os.dup2(c.fileno(), fd)
        c.close()
        c = socket.socket(fileno=fd)
        c.setblocking(False)
    return c, d


async def orphaned_recv(loop):
    """A sock_recv waiting on a socket that is then closed behind the
    loop's back (os.close: the socket object still says its fd)."""
    a, b = pair()
    orphan = asyncio.ensure_future(loop.sock_recv(a, 10))
    await asyncio.sleep(0)
    fd = a.detach()
    os.close(fd)
    b.close()
    return orphan, fd


def on_glibloop(scenario):
    loop = glibloop.new_event_loop()
    try:
        return loop.run_until_complete(asyncio.wait_for(scenario(loop), 10))
    finally:
        loop.close()


# asyncio's selector keeps the orphan's key for the number, so a new
# registration of it never reaches epoll and these two wait forever there
# (docs/differences.md): glibloop only.


def test_orphaned_recv_never_reads_the_new_file_with_reader():
    async def scenario(loop):
        orphan, fd = await orphaned_recv(loop)
        c, d = pair_at(fd)
        got = loop.create_future()
        try:
            loop.add_reader(c, lambda: got.done() or got.set_result(c.recv(10)))
            d.send(b"new")
            data = await got
            return data, loop.remove_reader(c), orphan.done()
        finally:
            orphan.cancel()
            c.close()
            d.close()

    assert on_glibloop(scenario) == (b"new", True, False)


def test_orphaned_recv_never_reads_the_new_file_with_sock_recv():
    async def scenario(loop):
        orphan, fd = await orphaned_recv(loop)
        c, d = pair_at(fd)
        try:
            task = asyncio.ensure_future(loop.sock_recv(c, 10))
            await asyncio.sleep(0)
            d.send(b"new")
            return await task, orphan.done()
        finally:
            orphan.cancel()
            c.close()
            d.close()

    assert on_glibloop(scenario) == (b"new", False)


def test_no_fd_left_behind():
    before = open_fds()

    async def scenario(loop):
        for wait in WAITS.values():
            sock, peer = await wait(loop)
            fd = sock.fileno()
            sock.close()
            if peer is not None:
                peer.close()
            await serve_on(loop, fd)
        return "done"

    assert_same(scenario, "done")
    assert open_fds() <= before


def test_remove_reader_of_closed_socket_as_anyio_does():
    """anyio closes a raw socket, then removes its reader from the done
    callback of the future the reader resolves: the registration is found
    by the object (its fileno() is -1 by then) and removed, so a new socket
    with the same number never gets the old callback."""

    async def scenario(loop):
        a, b = pair()
        fired = []
        waiter = loop.create_future()
        loop.add_reader(a, fired.append, "old")
        removed = []
        waiter.add_done_callback(lambda _: removed.append(loop.remove_reader(a)))
        fd = a.fileno()
        a.close()
        b.close()
        waiter.set_result(None)
        await asyncio.sleep(0)
        c, d = pair_at(fd)
        try:
            got = loop.create_future()
            loop.add_writer(c, lambda: got.done() or got.set_result("writable"))
            d.send(b"data for c")
            await got
            await asyncio.sleep(0.01)
            return removed, fired, loop.remove_writer(c), c.recv(100)
        finally:
            c.close()
            d.close()

    assert_same(scenario, ([True], [], True, b"data for c"))


@pytest.mark.parametrize("method", ["remove_reader", "remove_writer"])
def test_remove_closed_socket_never_registered(method):
    async def scenario(loop):
        a, b = pair()
        a.close()
        b.close()
        return getattr(loop, method)(a)

    results = outcomes(scenario)
    assert results[0] == ("ValueError", "Invalid file descriptor: -1")
    assert results[1] == results[0]


def test_remove_closed_socket_on_closed_loop():
    for factory in LOOPS:
        loop = factory()
        a, b = pair()
        loop.add_reader(a, print)
        a.close()
        b.close()
        loop.close()
        assert loop.remove_reader(a) is False
