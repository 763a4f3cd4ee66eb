"""Servers: create_server, create_unix_server, start_server, the Server
object, accept batches, EMFILE, failing protocol factories."""

import asyncio
import os
import socket
import subprocess
import sys
import textwrap

import pytest

import glibloop
from conftest import assert_fails_as_asyncio, open_fds


def has_ipv6():
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


async def echo(reader, writer):
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()
    await writer.wait_closed()


def test_start_server_100_concurrent_clients(loop):
    async def main():
        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        async with server:
            assert server.is_serving()
            assert server.get_loop() is loop
            port = server.sockets[0].getsockname()[1]

            async def client(i):
                r, w = await asyncio.open_connection("127.0.0.1", port)
                msg = f"hello {i}".encode() * 100
                w.write(msg)
                got = await r.readexactly(len(msg))
                w.close()
                await w.wait_closed()
                return got == msg

            results = await asyncio.gather(*(client(i) for i in range(100)))
        assert not server.is_serving()
        await server.wait_closed()
        return results

    assert all(loop.run_until_complete(main()))


def test_start_serving_later_and_serve_forever(loop):
    async def main():
        server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0, start_serving=False)
        assert not server.is_serving()
        await server.start_serving()
        assert server.is_serving()
        task = asyncio.ensure_future(server.serve_forever())
        await asyncio.sleep(0)
        sock = socket.create_connection(server.sockets[0].getsockname())
        sock.close()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not server.is_serving()
        await server.wait_closed()
        return server.sockets

    assert loop.run_until_complete(main()) == ()


def test_closed_server_refuses(loop):
    async def main():
        server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
        addr = server.sockets[0].getsockname()
        server.close()
        await server.wait_closed()
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection(*addr)

    loop.run_until_complete(main())


@pytest.mark.skipif(not has_ipv6(), reason="no IPv6 loopback")
def test_multiple_hosts_and_reuse_port(loop):
    async def main():
        server = await loop.create_server(
            asyncio.Protocol, ["127.0.0.1", "::1"], 0, reuse_port=True, backlog=5
        )
        families = sorted(s.family for s in server.sockets)
        for s in server.sockets:
            assert s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)
            conn = socket.socket(s.family)
            conn.connect(s.getsockname()[:2])
            conn.close()
        server.close()
        await server.wait_closed()
        return families

    assert loop.run_until_complete(main()) == [socket.AF_INET, socket.AF_INET6]


def test_server_errors_as_asyncio():
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    cases = [
        lambda lp: lp.create_server(asyncio.Protocol, "127.0.0.1", port),
        lambda lp: lp.create_server(asyncio.Protocol, "127.0.0.1", 0, sock=socket.socket()),
        lambda lp: lp.create_server(asyncio.Protocol),
        lambda lp: lp.create_unix_server(asyncio.Protocol, "/nonexistent/dir/sock"),
    ]
    try:
        assert_fails_as_asyncio(cases)
    finally:
        taken.close()


def test_unix_server_path_and_abstract(loop, tmp_path):
    path = str(tmp_path / "srv.sock")

    async def main():
        server = await asyncio.start_unix_server(echo, path)
        r, w = await asyncio.open_unix_connection(path)
        w.write(b"unix")
        assert await r.readexactly(4) == b"unix"
        w.close()
        await w.wait_closed()
        server.close()
        await server.wait_closed()

        abstract = b"\0glibloop-test-%d" % os.getpid()
        server = await asyncio.start_unix_server(echo, abstract)
        assert server.sockets[0].getsockname() == abstract
        r, w = await asyncio.open_unix_connection(abstract)
        w.write(b"abs")
        assert await r.readexactly(3) == b"abs"
        w.close()
        await w.wait_closed()
        server.close()
        await server.wait_closed()

    loop.run_until_complete(main())


def test_failing_protocol_factory_keeps_serving(loop):
    made = []

    def factory():
        made.append(1)
        if len(made) == 1:
            raise RuntimeError("no protocol for you")
        return asyncio.Protocol()

    async def main():
        server = await loop.create_server(factory, "127.0.0.1", 0)
        addr = server.sockets[0].getsockname()
        first = socket.create_connection(addr)
        first.setblocking(False)
        # The failed connection is closed: the client sees EOF.
        assert await loop.sock_recv(first, 1) == b""
        second = socket.create_connection(addr)
        for _ in range(10):
            await asyncio.sleep(0)
        first.close()
        second.close()
        server.close()
        await server.wait_closed()

    loop.run_until_complete(main())
    assert len(made) == 2


def attached(server):
    """Transports attached to an asyncio Server: a count up to 3.12, a
    weak set of the transports from 3.13 on."""
    clients = getattr(server, "_clients", None)
    return len(clients) if clients is not None else server._active_count


def test_accepted_transports_detach_on_close(loop):
    async def main():
        lost = loop.create_future()

        class P(asyncio.Protocol):
            def connection_lost(self, exc):
                lost.set_result(exc)

        server = await loop.create_server(P, "127.0.0.1", 0)
        client = socket.create_connection(server.sockets[0].getsockname())
        while attached(server) == 0:
            await asyncio.sleep(0)
        client.close()
        assert await lost is None
        await asyncio.sleep(0)
        count = attached(server)
        server.close()
        await server.wait_closed()
        return count

    assert loop.run_until_complete(main()) == 0


def test_no_fd_leak(loop):
    before = open_fds()

    async def main():
        for _ in range(5):
            server = await asyncio.start_server(echo, "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            for _ in range(5):
                r, w = await asyncio.open_connection("127.0.0.1", port)
                w.write(b"x")
                await r.readexactly(1)
                w.close()
                await w.wait_closed()
            server.close()
            await server.wait_closed()
        await asyncio.sleep(0)

    loop.run_until_complete(main())
    loop.close()
    assert open_fds() <= before


EMFILE_SCRIPT = textwrap.dedent(
    """
    import asyncio, resource, socket, sys
    import glibloop

    errors = []
    accepted = []

    class P(asyncio.Protocol):
        def connection_made(self, transport):
            accepted.append(transport)

    async def main():
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))
        server = await loop.create_server(P, "127.0.0.1", 0, backlog=50)
        addr = server.sockets[0].getsockname()
        clients = [socket.create_connection(addr) for _ in range(10)]
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        highest = max(c.fileno() for c in clients)
        # Room for about three accepted sockets.
        resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 4, hard))
        while not errors:
            await asyncio.sleep(0.01)
        stuck = len(accepted)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        # The server retries after a pause and accepts the rest.
        async with asyncio.timeout(30):
            while len(accepted) < 10:
                await asyncio.sleep(0.01)
        print(errors[0]["message"], type(errors[0]["exception"]).__name__,
              "socket" in errors[0], stuck < 10, len(accepted))
        for t in accepted:
            t.close()
        for c in clients:
            c.close()
        server.close()
        await server.wait_closed()

    glibloop.run(main())
    """
)


def test_emfile_on_accept_pauses_and_recovers(tmp_path):
    script = tmp_path / "emfile.py"
    script.write_text(EMFILE_SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120,
        env=dict(os.environ),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [
        "socket.accept()", "out", "of", "system", "resource", "OSError", "True", "True", "10",
    ]
