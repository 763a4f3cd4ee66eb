"""TLS over the C stream transport (asyncio's SSLProtocol), the C datagram
transport, and loop.sendfile."""

import asyncio
import io
import os
import re
import socket
import ssl
import tempfile

import pytest

import glibloop
from conftest import assert_fails_as_asyncio, open_fds
from test.test_asyncio import utils as test_utils


def server_ctx():
    return test_utils.simple_server_sslcontext()


def client_ctx():
    return test_utils.simple_client_sslcontext()


async def echo(reader, writer):
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


# -- TLS ---------------------------------------------------------------------


def test_tls_echo_streams(loop):
    async def main():
        server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=server_ctx())
        reader, writer = await asyncio.open_connection(
            *server.sockets[0].getsockname(), ssl=client_ctx()
        )
        assert writer.get_extra_info("sslcontext") is not None
        assert writer.get_extra_info("peercert") is not None
        payload = os.urandom(300_000)
        writer.write(payload)
        got = await reader.readexactly(len(payload))
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return got == payload

    assert loop.run_until_complete(main())


def test_start_tls_upgrade(loop):
    async def server_side(reader, writer):
        assert await reader.readexactly(8) == b"STARTTLS"
        # The client starts TLS only after this answer: bytes of its
        # handshake read before start_tls() would go to the plain reader
        # (stock asyncio fails the same way without it).
        writer.write(b"GO")
        await writer.drain()
        await writer.start_tls(server_ctx())
        writer.write(await reader.readexactly(6))
        await writer.drain()
        writer.close()

    async def main():
        server = await asyncio.start_server(server_side, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
        writer.write(b"STARTTLS")
        await writer.drain()
        assert await reader.readexactly(2) == b"GO"
        await writer.start_tls(client_ctx(), server_hostname="localhost")
        assert writer.get_extra_info("ssl_object") is not None
        writer.write(b"secret")
        got = await reader.readexactly(6)
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return got

    assert loop.run_until_complete(main()) == b"secret"


def test_tls_verify_failure_as_asyncio():
    async def attempt(lp):
        server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=server_ctx())
        try:
            strict = ssl.create_default_context()
            await asyncio.open_connection(*server.sockets[0].getsockname(), ssl=strict)
        finally:
            server.close()
            await server.wait_closed()

    outcomes = []
    for factory in (glibloop.new_event_loop, asyncio.SelectorEventLoop):
        lp = factory()
        lp.set_exception_handler(lambda *a: None)
        try:
            lp.run_until_complete(attempt(lp))
            outcomes.append("ok")
        except Exception as exc:  # noqa: BLE001 - compared
            outcomes.append(type(exc))
        finally:
            lp.close()
    assert outcomes[0] == outcomes[1] == ssl.SSLCertVerificationError


def test_tls_handshake_timeout(loop):
    async def main():
        # A server that never answers the handshake.
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        try:
            with pytest.raises(ConnectionAbortedError, match="SSL handshake is taking longer"):
                await loop.create_connection(
                    asyncio.Protocol,
                    *listener.getsockname(),
                    ssl=client_ctx(),
                    server_hostname="localhost",
                    ssl_handshake_timeout=0.1,
                )
        finally:
            listener.close()

    loop.run_until_complete(main())


def test_start_tls_rejects_foreign_transport(loop):
    class Fake(asyncio.Transport):
        pass

    with pytest.raises(TypeError, match="is not supported by start_tls"):
        loop.run_until_complete(loop.start_tls(Fake(), asyncio.Protocol(), client_ctx()))


# -- UDP -----------------------------------------------------------------------


class Datagrams(asyncio.DatagramProtocol):
    def __init__(self, loop):
        self.received = asyncio.Queue()
        self.errors = []
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.received.put_nowait((data, addr))

    def error_received(self, exc):
        self.errors.append(exc)
        self.received.put_nowait(("error", exc))

    def connection_lost(self, exc):
        self.lost.set_result(exc)


def test_udp_ping_pong(loop):
    async def main():
        server_tr, server = await loop.create_datagram_endpoint(
            lambda: Datagrams(loop), local_addr=("127.0.0.1", 0)
        )
        addr = server_tr.get_extra_info("sockname")
        client_tr, client = await loop.create_datagram_endpoint(
            lambda: Datagrams(loop), remote_addr=addr
        )
        assert isinstance(client_tr, asyncio.DatagramTransport)
        assert client_tr.get_extra_info("peername") == addr
        for i in range(100):
            msg = b"%d" % i
            client_tr.sendto(msg)
            data, peer = await server.received.get()
            assert data == msg
            server_tr.sendto(data, peer)
            assert (await client.received.get())[0] == msg
        with pytest.raises(ValueError, match="Invalid address: must be None or"):
            client_tr.sendto(b"x", ("127.0.0.2", 1))
        with pytest.raises(TypeError, match="data argument must be a bytes-like object, not 'str'"):
            client_tr.sendto("x")
        client_tr.close()
        server_tr.close()
        return await client.lost, await server.lost

    assert loop.run_until_complete(main()) == (None, None)


def test_udp_sendto_keywords_as_asyncio(loop):
    # sendto(data, addr=None) takes keywords, as the selector transport does
    # (3.13's CPython tests call sendto(b'a', addr=...)).
    async def main():
        server_tr, server = await loop.create_datagram_endpoint(
            lambda: Datagrams(loop), local_addr=("127.0.0.1", 0)
        )
        addr = server_tr.get_extra_info("sockname")
        client_tr, _ = await loop.create_datagram_endpoint(
            lambda: Datagrams(loop), local_addr=("127.0.0.1", 0)
        )
        client_tr.sendto(b"one", addr=addr)
        client_tr.sendto(data=b"two", addr=addr)
        got = [(await server.received.get())[0] for _ in range(2)]
        errors = []
        for bad in (
            lambda: client_tr.sendto(b"x", addr, None),
            lambda: client_tr.sendto(b"x", address=addr),
            lambda: client_tr.sendto(b"x", data=b"y"),
            lambda: client_tr.sendto(addr=addr),
        ):
            with pytest.raises(TypeError) as info:
                bad()
            errors.append(str(info.value))
        client_tr.close()
        server_tr.close()
        return got, errors

    got, errors = loop.run_until_complete(main())
    assert got == [b"one", b"two"]
    assert "at most 2 arguments" in errors[0]
    assert "unexpected keyword argument 'address'" in errors[1]
    assert "multiple values for argument 'data'" in errors[2]
    assert "missing required argument 'data'" in errors[3]


def test_udp_error_received_on_refused(loop):
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    closed_addr = probe.getsockname()
    probe.close()

    async def main():
        tr, pr = await loop.create_datagram_endpoint(lambda: Datagrams(loop), remote_addr=closed_addr)
        tr.sendto(b"anyone?")
        kind, exc = await pr.received.get()
        tr.close()
        await pr.lost
        return kind, exc

    kind, exc = loop.run_until_complete(main())
    assert kind == "error" and isinstance(exc, ConnectionRefusedError)


def test_udp_ipv6_names_and_sock(loop):
    async def main():
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        tr, pr = await loop.create_datagram_endpoint(lambda: Datagrams(loop), sock=sock)
        port = sock.getsockname()[1]
        other, other_pr = await loop.create_datagram_endpoint(
            lambda: Datagrams(loop), local_addr=("127.0.0.1", 0)
        )
        # A host name goes through the socket module's own resolution.
        other.sendto(b"by name", ("localhost", port))
        data, _ = await pr.received.get()
        tr.close()
        other.close()
        await pr.lost
        return data

    assert loop.run_until_complete(main()) == b"by name"


def test_unix_datagram(loop, tmp_path):
    async def main():
        path = str(tmp_path / "dgram")
        tr, pr = await loop.create_datagram_endpoint(
            lambda: Datagrams(loop), local_addr=path, family=socket.AF_UNIX
        )
        client = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        client.bind(str(tmp_path / "client"))
        client.sendto(b"hi", path)
        data, addr = await pr.received.get()
        tr.sendto(b"back", addr)
        client.setblocking(False)
        reply = await loop.sock_recv(client, 10)
        client.close()
        tr.close()
        await pr.lost
        return data, addr, reply

    data, addr, reply = loop.run_until_complete(main())
    assert (data, reply) == (b"hi", b"back")
    assert addr.endswith("client")


def test_udp_no_fd_leak(loop):
    before = open_fds()

    async def main():
        for _ in range(20):
            tr, pr = await loop.create_datagram_endpoint(
                lambda: Datagrams(loop), local_addr=("127.0.0.1", 0)
            )
            tr.sendto(b"self", tr.get_extra_info("sockname"))
            await pr.received.get()
            tr.close()
            await pr.lost

    loop.run_until_complete(main())
    loop.close()
    assert open_fds() <= before


def test_udp_errors_as_asyncio():
    cases = [
        lambda lp: lp.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=("256.0.0.1", 0)),
        lambda lp: lp.create_datagram_endpoint(asyncio.DatagramProtocol, family=socket.AF_INET, sock=socket.socket()),
        lambda lp: lp.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=1),
    ]
    assert_fails_as_asyncio(cases, clean=lambda message: re.sub(r"fd=\d+", "fd=N", message))


# -- sendfile -------------------------------------------------------------------


class Collect(asyncio.Protocol):
    def __init__(self, loop, expect):
        self.data = bytearray()
        self.expect = expect
        self.done = loop.create_future()

    def data_received(self, data):
        self.data += data
        if len(self.data) >= self.expect and not self.done.done():
            self.done.set_result(None)


@pytest.mark.parametrize("kind", ["native", "fallback"])
def test_loop_sendfile(loop, kind):
    data = os.urandom(2_000_000)

    async def main(f):
        collected = []
        server = await loop.create_server(
            lambda: collected.append(Collect(loop, len(data) - 100)) or collected[-1],
            "127.0.0.1",
            0,
        )
        tr, _ = await loop.create_connection(asyncio.Protocol, *server.sockets[0].getsockname())
        tr.write(b"")
        sent = await loop.sendfile(tr, f, offset=100)
        while not collected:
            await asyncio.sleep(0)
        await collected[0].done
        tr.write(b"still usable")
        tr.close()
        server.close()
        await server.wait_closed()
        return sent, bytes(collected[0].data)

    if kind == "native":
        with tempfile.TemporaryFile() as f:
            f.write(data)
            f.seek(0)
            sent, got = loop.run_until_complete(main(f))
    else:
        sent, got = loop.run_until_complete(main(io.BytesIO(data)))
    assert sent == len(data) - 100
    assert got[: len(data) - 100] == data[100:]
