"""loop.sock_*() and the resolver, on real loopback and Unix sockets.

Where asyncio words an error, the same operation runs on asyncio's own
selector loop too and both must raise the same exception with the same
message.
"""

import asyncio
import errno
import os
import socket
import ssl
import struct
import tempfile

import pytest

import glibloop
from conftest import open_fds


def run_both(make_coro):
    """Run make_coro(loop) on glibloop and on stock asyncio; return both
    outcomes as (kind, value) where kind is "ok" or the exception."""
    outcomes = []
    for factory in (glibloop.new_event_loop, asyncio.SelectorEventLoop):
        loop = factory()
        try:
            try:
                outcomes.append(("ok", loop.run_until_complete(make_coro(loop))))
            except Exception as exc:  # noqa: BLE001 - compared below
                outcomes.append((type(exc), str(exc)))
        finally:
            loop.close()
    return outcomes


def tcp_pair():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    listener.close()
    client.setblocking(False)
    server.setblocking(False)
    return client, server


def test_recv_waits_then_gets_data(loop):
    a, b = socket.socketpair()
    a.setblocking(False)

    async def main():
        task = asyncio.create_task(loop.sock_recv(a, 100))
        await asyncio.sleep(0)
        assert not task.done()
        b.send(b"hello")
        return await task

    try:
        assert loop.run_until_complete(main()) == b"hello"
    finally:
        a.close()
        b.close()


def test_recv_into_and_eof(loop):
    client, server = tcp_pair()

    async def main():
        buf = bytearray(10)
        task = asyncio.create_task(loop.sock_recv_into(server, buf))
        await asyncio.sleep(0)
        await loop.sock_sendall(client, b"abc")
        n = await task
        client.close()
        eof = await loop.sock_recv(server, 10)
        return n, bytes(buf[:n]), eof

    try:
        assert loop.run_until_complete(main()) == (3, b"abc", b"")
    finally:
        server.close()


def test_sendall_large_blocks_until_read(loop):
    client, server = tcp_pair()
    payload = os.urandom(4 * 1024 * 1024)

    async def reader():
        chunks = []
        total = 0
        while total < len(payload):
            data = await loop.sock_recv(server, 65536)
            assert data
            chunks.append(data)
            total += len(data)
        return b"".join(chunks)

    async def main():
        send = asyncio.create_task(loop.sock_sendall(client, payload))
        await asyncio.sleep(0)
        # 4 MiB do not fit in loopback's socket buffers: the send waits.
        assert not send.done()
        received = await reader()
        assert await send is None
        return received

    try:
        assert loop.run_until_complete(main()) == payload
    finally:
        client.close()
        server.close()


def test_cancelled_recv_then_new_recv(loop):
    client, server = tcp_pair()

    async def main():
        first = asyncio.create_task(loop.sock_recv(server, 10))
        await asyncio.sleep(0)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        second = asyncio.create_task(loop.sock_recv(server, 10))
        await asyncio.sleep(0)
        await loop.sock_sendall(client, b"x")
        return await second

    try:
        assert loop.run_until_complete(main()) == b"x"
    finally:
        client.close()
        server.close()


def test_cancelled_sendall_then_new_sendall(loop):
    client, server = tcp_pair()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)

    async def main():
        big = asyncio.create_task(loop.sock_sendall(client, b"a" * 8 * 1024 * 1024))
        await asyncio.sleep(0)
        assert not big.done()
        big.cancel()
        with pytest.raises(asyncio.CancelledError):
            await big
        # Drain what was sent, then a new sendall must go through.
        while True:
            try:
                if not server.recv(1 << 20):
                    break
            except BlockingIOError:
                break
        await loop.sock_sendall(client, b"end")
        data = b""
        while not data.endswith(b"end"):
            data += await loop.sock_recv(server, 1 << 20)
        return data[-3:]

    try:
        assert loop.run_until_complete(main()) == b"end"
    finally:
        client.close()
        server.close()


def test_connect_and_accept_unix(loop, tmp_path):
    path = str(tmp_path / "sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen()
    listener.setblocking(False)
    client = socket.socket(socket.AF_UNIX)
    client.setblocking(False)

    async def main():
        accept = asyncio.create_task(loop.sock_accept(listener))
        await asyncio.sleep(0)
        assert not accept.done()
        await loop.sock_connect(client, path)
        conn, addr = await accept
        try:
            assert conn.gettimeout() == 0.0
            await loop.sock_sendall(conn, b"ping")
            return addr, await loop.sock_recv(client, 10)
        finally:
            conn.close()

    try:
        assert loop.run_until_complete(main()) == ("", b"ping")
    finally:
        client.close()
        listener.close()


def test_connect_resolves_and_connects_tcp(loop):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    client = socket.socket()
    client.setblocking(False)

    async def main():
        await loop.sock_connect(client, ("localhost", port))
        return client.getpeername()

    try:
        assert loop.run_until_complete(main()) == ("127.0.0.1", port)
    finally:
        client.close()
        listener.close()


def test_connect_refused_as_asyncio():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()

    async def main(loop):
        sock = socket.socket()
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, ("127.0.0.1", port))
        finally:
            sock.close()

    ours, theirs = run_both(main)
    assert ours == theirs
    assert ours[0] is ConnectionRefusedError


def test_udp_sendto_recvfrom(loop):
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    a.bind(("127.0.0.1", 0))
    b.bind(("127.0.0.1", 0))
    a.setblocking(False)
    b.setblocking(False)

    async def main():
        pending = asyncio.create_task(loop.sock_recvfrom(b, 100))
        await asyncio.sleep(0)
        assert not pending.done()
        sent = await loop.sock_sendto(a, b"one", b.getsockname())
        data, addr = await pending
        buf = bytearray(8)
        await loop.sock_sendto(a, b"two", b.getsockname())
        n, addr2 = await loop.sock_recvfrom_into(b, buf)
        two = bytes(buf[:n])
        await loop.sock_sendto(a, b"three", b.getsockname())
        n3, _ = await loop.sock_recvfrom_into(b, buf, 2)
        return sent, data, addr, n, two, addr2, n3

    try:
        sent, data, addr, n, two, addr2, n3 = loop.run_until_complete(main())
    finally:
        a.close()
        b.close()
    assert (sent, data, n, two, n3) == (3, b"one", 3, b"two", 2)
    assert addr == addr2 and addr[0] == "127.0.0.1"


def test_peer_reset_raises_connection_reset(loop):
    client, server = tcp_pair()
    # Linger 0: close() sends RST instead of FIN.
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    async def main():
        task = asyncio.create_task(loop.sock_recv(server, 10))
        await asyncio.sleep(0)
        client.close()
        return await task

    try:
        with pytest.raises(ConnectionResetError):
            loop.run_until_complete(main())
    finally:
        server.close()


def test_errors_match_asyncio():
    async def ssl_socket(loop):
        ctx = ssl.create_default_context()
        sock = ctx.wrap_socket(socket.socket(), server_hostname="x", do_handshake_on_connect=False)
        try:
            await loop.sock_recv(sock, 1)
        finally:
            sock.close()

    async def negative(loop):
        a, b = socket.socketpair()
        a.setblocking(False)
        try:
            await loop.sock_recv(a, -1)
        finally:
            a.close()
            b.close()

    async def closed_socket(loop):
        a, b = socket.socketpair()
        a.setblocking(False)
        a.close()
        b.close()
        await loop.sock_sendall(a, b"x")

    async def blocking_in_debug(loop):
        loop.set_debug(True)
        a, b = socket.socketpair()
        try:
            await loop.sock_recv(a, 1)
        finally:
            a.close()
            b.close()

    # sock_connect checks the socket before it resolves the name.
    async def connect_ssl_socket(loop):
        ctx = ssl.create_default_context()
        sock = ctx.wrap_socket(socket.socket(), server_hostname="x", do_handshake_on_connect=False)
        try:
            await loop.sock_connect(sock, ("no-such-host.invalid", 80))
        finally:
            sock.close()

    async def connect_blocking_in_debug(loop):
        loop.set_debug(True)
        sock = socket.socket()
        try:
            await loop.sock_connect(sock, ("no-such-host.invalid", 80))
        finally:
            sock.close()

    for make in (ssl_socket, negative, closed_socket, blocking_in_debug, connect_ssl_socket,
                 connect_blocking_in_debug):
        ours, theirs = run_both(make)
        assert ours == theirs, make.__name__
        assert ours[0] is not "ok"  # noqa: F632 - the outcome is an exception class


def test_wait_on_closed_loop_raises():
    loop = glibloop.new_event_loop()
    loop.close()
    a, b = socket.socketpair()
    a.setblocking(False)
    coro = loop.sock_recv(a, 1)
    try:
        with pytest.raises(RuntimeError, match="Event loop is closed"):
            coro.send(None)
    finally:
        coro.close()
        a.close()
        b.close()


def test_sock_op_on_transport_fd_raises(loop):
    client, server = tcp_pair()

    async def main():
        transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, sock=server)
        try:
            with pytest.raises(RuntimeError, match="is used by transport"):
                await loop.sock_recv(server, 1)
        finally:
            transport.close()
            await asyncio.sleep(0)

    try:
        if not hasattr(glibloop.Loop, "_make_socket_transport"):
            pytest.skip("stream transports come with step 2")
        loop.run_until_complete(main())
    finally:
        client.close()


def test_add_reader_beside_pending_recv(loop):
    a, b = socket.socketpair()
    a.setblocking(False)
    seen = []

    async def main():
        task = asyncio.create_task(loop.sock_recv(a, 10))
        await asyncio.sleep(0)
        loop.add_writer(a, seen.append, "w")
        b.send(b"z")
        data = await task
        await asyncio.sleep(0)
        loop.remove_writer(a)
        return data

    try:
        assert loop.run_until_complete(main()) == b"z"
        assert "w" in seen
    finally:
        a.close()
        b.close()


def test_fd_reused_after_close_with_idle_wait(loop):
    """A socket closed after a completed wait frees its fd number; a new
    socket that gets the same number must still be waited on."""

    async def main():
        for _ in range(3):
            a, b = socket.socketpair()
            a.setblocking(False)
            task = asyncio.create_task(loop.sock_recv(a, 10))
            await asyncio.sleep(0)
            b.send(b"q")
            assert await task == b"q"
            a.close()
            b.close()

    loop.run_until_complete(asyncio.wait_for(main(), 10))


def test_no_fd_leak(loop):
    before = open_fds()

    async def main():
        for _ in range(20):
            client, server = tcp_pair()
            task = asyncio.create_task(loop.sock_recv(server, 10))
            await asyncio.sleep(0)
            await loop.sock_sendall(client, b"hi")
            assert await task == b"hi"
            client.close()
            server.close()

    loop.run_until_complete(main())
    loop.close()
    assert open_fds() <= before


def test_getaddrinfo_numeric_without_thread(loop):
    async def main():
        v4 = await loop.getaddrinfo("127.0.0.1", 80, type=socket.SOCK_STREAM)
        v6 = await loop.getaddrinfo("::1", "80", family=socket.AF_INET6, type=socket.SOCK_STREAM)
        none = await loop.getaddrinfo(None, 0, flags=socket.AI_PASSIVE, type=socket.SOCK_STREAM)
        return v4, v6, none

    v4, v6, none = loop.run_until_complete(main())
    assert loop._default_executor is None
    assert v4 == socket.getaddrinfo("127.0.0.1", 80, type=socket.SOCK_STREAM)
    assert v6 == socket.getaddrinfo("::1", "80", socket.AF_INET6, socket.SOCK_STREAM)
    assert none == socket.getaddrinfo(None, 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)


def test_getaddrinfo_name_uses_executor(loop):
    result = loop.run_until_complete(loop.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM))
    assert loop._default_executor is not None
    assert result == socket.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM)


def test_getaddrinfo_errors_as_asyncio():
    async def bad_port(loop):
        return await loop.getaddrinfo("127.0.0.1", "no-such-service-x")

    ours, theirs = run_both(bad_port)
    assert ours == theirs and ours[0] is socket.gaierror


def test_getnameinfo(loop):
    numeric = loop.run_until_complete(
        loop.getnameinfo(("127.0.0.1", 80), socket.NI_NUMERICHOST | socket.NI_NUMERICSERV)
    )
    assert numeric == ("127.0.0.1", "80")
    assert loop._default_executor is None
    named = loop.run_until_complete(loop.getnameinfo(("127.0.0.1", 80)))
    assert named == socket.getnameinfo(("127.0.0.1", 80), 0)


def test_sock_sendfile(loop):
    client, server = tcp_pair()
    data = os.urandom(300_000)

    async def main(f):
        sending = asyncio.create_task(loop.sock_sendfile(client, f, offset=1000, count=200_000))
        received = b""
        while len(received) < 200_000:
            received += await loop.sock_recv(server, 65536)
        return await sending, received, f.tell()

    try:
        with tempfile.TemporaryFile() as f:
            f.write(data)
            f.flush()
            f.seek(0)
            sent, received, pos = loop.run_until_complete(main(f))
    finally:
        client.close()
        server.close()
    assert sent == 200_000
    assert received == data[1000:201_000]
    assert pos == 201_000


def test_recv_on_unconnected_socket(loop):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        with pytest.raises(OSError) as info:
            loop.run_until_complete(loop.sock_recv(sock, 1))
        assert info.value.errno == errno.ENOTCONN
    finally:
        sock.close()
