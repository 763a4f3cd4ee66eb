"""The C stream transport: create_connection, create_unix_connection,
connect_accepted_socket, reading, writing, flow control, EOF, errors."""

import asyncio
import os
import socket
import struct
import sys

import pytest

import glibloop
from conftest import assert_fails_as_asyncio, open_fds


class Recorder(asyncio.Protocol):
    """Records every protocol call; `done` resolves at connection_lost."""

    def __init__(self, loop, keep_open=False):
        self.calls = []
        self.data = bytearray()
        self.transport = None
        self.keep_open = keep_open
        self.done = loop.create_future()
        self.got = asyncio.Event()

    def connection_made(self, transport):
        self.transport = transport
        self.calls.append("made")

    def data_received(self, data):
        assert isinstance(data, bytes)
        self.data += data
        self.got.set()

    def eof_received(self):
        self.calls.append("eof")
        return self.keep_open

    def pause_writing(self):
        self.calls.append("pause")

    def resume_writing(self):
        self.calls.append("resume")

    def connection_lost(self, exc):
        self.calls.append(("lost", type(exc)))
        if not self.done.done():
            self.done.set_result(exc)

    async def wait_for(self, n):
        while len(self.data) < n:
            self.got.clear()
            await self.got.wait()


async def accepted_pair(loop, family=socket.AF_INET, path=None, server_proto=None):
    """(client transport, client protocol, raw server socket)."""
    if family == socket.AF_UNIX:
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(path)
    else:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.setblocking(False)
    try:
        accept = asyncio.ensure_future(loop.sock_accept(listener))
        if family == socket.AF_UNIX:
            tr, pr = await loop.create_unix_connection(lambda: Recorder(loop), path)
        else:
            host, port = listener.getsockname()
            tr, pr = await loop.create_connection(lambda: Recorder(loop), host, port)
        conn, _ = await accept
    finally:
        listener.close()
    return tr, pr, conn


def test_create_connection_round_trips(loop):
    async def main():
        tr, pr, conn = await accepted_pair(loop)
        try:
            assert isinstance(tr, asyncio.Transport)
            assert pr.calls == ["made"]
            for size in (1, 1024, 65536, 1 << 20):
                payload = os.urandom(size)
                tr.write(payload)
                got = b""
                while len(got) < size:
                    got += await loop.sock_recv(conn, 1 << 20)
                assert got == payload
                await loop.sock_sendall(conn, payload)
                await pr.wait_for(size)
                assert bytes(pr.data) == payload
                pr.data.clear()
        finally:
            tr.close()
            conn.close()
        assert await pr.done is None
        return pr.calls

    assert loop.run_until_complete(main()) == ["made", ("lost", type(None))]


def test_extra_info_and_nodelay(loop):
    async def main():
        tr, pr, conn = await accepted_pair(loop)
        try:
            sock = tr.get_extra_info("socket")
            assert isinstance(sock, asyncio.trsock.TransportSocket)
            assert tr.get_extra_info("sockname") == sock.getsockname()
            assert tr.get_extra_info("peername") == conn.getsockname()
            assert tr.get_extra_info("nothing") is None
            assert tr.get_extra_info("nothing", 42) == 42
            assert tr.get_extra_info(name="nothing", default=7) == 7
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            assert tr.get_protocol() is pr
            assert tr.can_write_eof() is True
            assert tr.is_reading() and not tr.is_closing()
            assert "fd=" in repr(tr)
        finally:
            tr.close()
            conn.close()
        await pr.done
        assert tr.is_closing()
        assert tr.get_protocol() is None

    loop.run_until_complete(main())


def test_unix_connection(loop, tmp_path):
    async def main():
        tr, pr, conn = await accepted_pair(loop, socket.AF_UNIX, str(tmp_path / "s"))
        try:
            assert tr.get_extra_info("peername") == str(tmp_path / "s")
            tr.write(b"ping")
            assert await loop.sock_recv(conn, 10) == b"ping"
            conn.close()
            return await pr.done
        finally:
            tr.close()

    assert loop.run_until_complete(main()) is None


def test_pause_and_resume_reading_keep_data(loop):
    """Data that arrives while reading is paused comes when it resumes: the
    edge-triggered registration must not lose it."""

    async def main():
        tr, pr, conn = await accepted_pair(loop)
        try:
            await asyncio.sleep(0)
            tr.pause_reading()
            assert not tr.is_reading()
            await loop.sock_sendall(conn, b"while paused")
            for _ in range(5):
                await asyncio.sleep(0)
            assert pr.data == b""
            tr.resume_reading()
            await pr.wait_for(12)
            assert pr.data == b"while paused"
            tr.pause_reading()
            tr.pause_reading()  # twice is a no-op
            tr.resume_reading()
            tr.resume_reading()
            await loop.sock_sendall(conn, b"!")
            await pr.wait_for(13)
        finally:
            tr.close()
            conn.close()

    loop.run_until_complete(main())


def test_flow_control_pause_and_resume_writing(loop):
    async def main():
        tr, pr, conn = await accepted_pair(loop)
        try:
            tr.set_write_buffer_limits(high=1024, low=256)
            assert tr.get_write_buffer_limits() == (256, 1024)
            chunk = b"x" * 65536
            total = 0
            while "pause" not in pr.calls:
                tr.write(chunk)
                total += len(chunk)
            assert tr.get_write_buffer_size() > 1024
            got = 0
            while got < total:
                got += len(await loop.sock_recv(conn, 1 << 20))
            for _ in range(5):
                await asyncio.sleep(0)
            assert tr.get_write_buffer_size() == 0
            return pr.calls
        finally:
            tr.close()
            conn.close()

    calls = loop.run_until_complete(main())
    assert calls[:3] == ["made", "pause", "resume"]


WRITE_TYPE_ERROR = (
    "data argument must be a bytes, bytearray, or memoryview object, not 'str'"
    if sys.version_info >= (3, 14)
    else "data argument must be a bytes-like object, not 'str'"
)


def test_write_buffer_limits_errors_as_asyncio(loop):
    async def main():
        tr, pr, conn = await accepted_pair(loop)
        try:
            with pytest.raises(ValueError, match=r"high \(1\) must be >= low \(2\) must be >= 0"):
                tr.set_write_buffer_limits(high=1, low=2)
            tr.set_write_buffer_limits(low=100)
            assert tr.get_write_buffer_limits() == (100, 400)
            tr.set_write_buffer_limits(high=100)
            assert tr.get_write_buffer_limits() == (25, 100)
            # asyncio's words for it changed in 3.14
            with pytest.raises(TypeError, match=WRITE_TYPE_ERROR):
                tr.write("text")
            tr.write(b"")
            tr.write(bytearray(b"ba"))
            tr.write(memoryview(b"mv"))
            tr.writelines([b"a", bytearray(b"b"), memoryview(b"c")])
            assert await loop.sock_recv(conn, 10) == b"bamvabc"
        finally:
            tr.close()
            conn.close()

    loop.run_until_complete(main())


def test_write_eof_and_eof_received_keep_open(loop):
    async def main():
        tr, pr, conn = await accepted_pair(loop)
        pr.keep_open = True
        try:
            tr.write(b"last")
            tr.write_eof()
            with pytest.raises(RuntimeError, match=r"Cannot call write\(\) after write_eof\(\)"):
                tr.write(b"more")
            got = b""
            while True:
                data = await loop.sock_recv(conn, 100)
                if not data:
                    break
                got += data
            assert got == b"last"
            # The peer closes its side: eof_received() keeps us open.
            conn.shutdown(socket.SHUT_WR)
            while "eof" not in pr.calls:
                await asyncio.sleep(0)
            assert not tr.is_closing()
        finally:
            tr.close()
            conn.close()
        await pr.done
        return pr.calls

    assert loop.run_until_complete(main()) == ["made", "eof", ("lost", type(None))]


def test_peer_eof_closes_by_default(loop):
    async def main():
        tr, pr, conn = await accepted_pair(loop)
        conn.close()
        exc = await pr.done
        return exc, pr.calls, tr.is_closing()

    assert loop.run_until_complete(main()) == (None, ["made", "eof", ("lost", type(None))], True)


def test_peer_reset_reports_connection_lost(loop):
    async def main():
        tr, pr, conn = await accepted_pair(loop)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()
        return await pr.done

    assert isinstance(loop.run_until_complete(main()), ConnectionResetError)


def test_close_flushes_buffer_abort_does_not(loop):
    async def main():
        tr, pr, conn = await accepted_pair(loop)
        payload = os.urandom(8 << 20)
        tr.write(payload)
        assert tr.get_write_buffer_size() > 0
        tr.close()
        assert tr.is_closing()
        got = bytearray()
        while True:
            data = await loop.sock_recv(conn, 1 << 20)
            if not data:
                break
            got += data
        conn.close()
        assert await pr.done is None
        assert bytes(got) == payload

        tr2, pr2, conn2 = await accepted_pair(loop)
        tr2.write(payload)
        tr2.abort()
        assert tr2.get_write_buffer_size() == 0
        assert await pr2.done is None
        conn2.close()

    loop.run_until_complete(main())


def test_write_after_close_is_counted_and_logged(loop, caplog):
    async def main():
        tr, pr, conn = await accepted_pair(loop)
        tr.abort()
        await pr.done
        for _ in range(7):
            tr.write(b"x")
        conn.close()

    with caplog.at_level("WARNING", logger="asyncio"):
        loop.run_until_complete(main())
    assert "socket.send() raised exception." in caplog.text


def test_add_reader_on_transport_fd_raises(loop):
    async def main():
        tr, pr, conn = await accepted_pair(loop)
        fd = tr.get_extra_info("socket").fileno()
        try:
            with pytest.raises(RuntimeError, match=f"File descriptor {fd} is used by transport"):
                loop.add_reader(fd, print)
            with pytest.raises(RuntimeError, match="is used by transport"):
                loop.remove_writer(fd)
            tr.close()
            # A closing transport no longer owns it, as in asyncio.
            assert loop.remove_reader(fd) is False
        finally:
            tr.close()
            conn.close()

    loop.run_until_complete(main())


def test_protocol_error_goes_to_handler_and_closes(loop):
    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))

    class Bad(Recorder):
        def data_received(self, data):
            raise ZeroDivisionError("boom")

    async def main():
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        accept = asyncio.ensure_future(loop.sock_accept(listener))
        tr, pr = await loop.create_connection(lambda: Bad(loop), *listener.getsockname())
        conn, _ = await accept
        listener.close()
        await loop.sock_sendall(conn, b"x")
        exc = await pr.done
        conn.close()
        return exc, tr

    exc, tr = loop.run_until_complete(main())
    assert isinstance(exc, ZeroDivisionError)
    assert errors[0]["message"] == "Fatal error: protocol.data_received() call failed."
    assert errors[0]["transport"] is tr
    assert isinstance(errors[0]["exception"], ZeroDivisionError)


def test_buffered_protocol(loop):
    class Buffered(asyncio.BufferedProtocol):
        def __init__(self):
            self.buf = bytearray(100)
            self.received = bytearray()
            self.done = loop.create_future()

        def connection_made(self, transport):
            self.transport = transport

        def get_buffer(self, sizehint):
            assert sizehint == -1
            return self.buf

        def buffer_updated(self, nbytes):
            self.received += self.buf[:nbytes]

        def eof_received(self):
            return False

        def connection_lost(self, exc):
            self.done.set_result(exc)

    async def main():
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        accept = asyncio.ensure_future(loop.sock_accept(listener))
        tr, pr = await loop.create_connection(Buffered, *listener.getsockname())
        conn, _ = await accept
        listener.close()
        payload = os.urandom(100_000)
        await loop.sock_sendall(conn, payload)
        conn.close()
        await pr.done
        return bytes(pr.received) == payload

    assert loop.run_until_complete(main())


def test_set_protocol_switches_mid_stream(loop):
    async def main():
        tr, first, conn = await accepted_pair(loop)
        second = Recorder(loop)
        await loop.sock_sendall(conn, b"one")
        await first.wait_for(3)
        tr.set_protocol(second)
        assert tr.get_protocol() is second
        await loop.sock_sendall(conn, b"two")
        await second.wait_for(3)
        conn.close()
        await second.done
        return bytes(first.data), bytes(second.data)

    assert loop.run_until_complete(main()) == (b"one", b"two")


def test_connect_accepted_socket_server_side(loop):
    async def main():
        a, b = socket.socketpair()
        tr, pr = await loop.connect_accepted_socket(lambda: Recorder(loop), a)
        b.sendall(b"hello")
        await pr.wait_for(5)
        tr.write(b"back")
        b.setblocking(False)
        assert await loop.sock_recv(b, 10) == b"back"
        b.close()
        await pr.done
        return bytes(pr.data)

    assert loop.run_until_complete(main()) == b"hello"


def test_create_connection_errors_as_asyncio():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()

    cases = [
        lambda lp: lp.create_connection(asyncio.Protocol, "127.0.0.1", port),
        lambda lp: lp.create_connection(asyncio.Protocol),
        lambda lp: lp.create_connection(asyncio.Protocol, "127.0.0.1", port, sock=socket.socket()),
        lambda lp: lp.create_connection(asyncio.Protocol, "127.0.0.1", port, server_hostname="x"),
        lambda lp: lp.create_unix_connection(asyncio.Protocol, "/nonexistent/socket"),
    ]
    assert_fails_as_asyncio(cases)


def test_happy_eyeballs_localhost(loop):
    async def main():
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        tr, pr = await loop.create_connection(
            lambda: Recorder(loop), "localhost", port, happy_eyeballs_delay=0.05, interleave=1
        )
        peer = tr.get_extra_info("peername")
        tr.close()
        await pr.done
        listener.close()
        return peer

    assert loop.run_until_complete(main())[1] > 0


def test_no_fd_leak_many_connections(loop):
    before = open_fds()

    async def main():
        for _ in range(30):
            tr, pr, conn = await accepted_pair(loop)
            tr.write(b"x")
            assert await loop.sock_recv(conn, 1) == b"x"
            conn.close()
            await pr.done

    loop.run_until_complete(main())
    loop.close()
    assert open_fds() <= before


def test_unclosed_transport_warns_when_loop_closes():
    lp = glibloop.new_event_loop()
    a, b = socket.socketpair()
    try:
        tr, pr = lp.run_until_complete(lp.connect_accepted_socket(asyncio.Protocol, a))
        del tr, pr
        with pytest.warns(ResourceWarning, match="unclosed transport"):
            lp.close()
            import gc

            gc.collect()
        assert a.fileno() == -1
    finally:
        b.close()
        if not lp.is_closed():
            lp.close()


def test_all_errors(loop):
    # create_connection(all_errors=) is asyncio 3.12+; 3.11 refuses the
    # keyword, as stock asyncio does there.
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    if sys.version_info >= (3, 12):
        with pytest.raises(ExceptionGroup):
            loop.run_until_complete(
                loop.create_connection(asyncio.Protocol, "127.0.0.1", port, all_errors=True)
            )
    else:
        with pytest.raises(TypeError, match="all_errors"):
            loop.create_connection(asyncio.Protocol, "127.0.0.1", port, all_errors=True)


def test_write_after_flushed_close_never_touches_the_fd(loop):
    async def main():
        tr, pr, conn = await accepted_pair(loop)
        tr.write(os.urandom(4 << 20))  # more than the socket buffers take
        tr.close()
        got = 0
        while True:
            data = await loop.sock_recv(conn, 1 << 20)
            if not data:
                break
            got += len(data)
        await pr.done
        # The fd number may belong to a new socket now.
        a, b = socket.socketpair()
        try:
            tr.write(b"must not arrive")
            b.setblocking(False)
            with pytest.raises(BlockingIOError):
                b.recv(100)
            a.setblocking(False)
            with pytest.raises(BlockingIOError):
                a.recv(100)
        finally:
            a.close()
            b.close()
            conn.close()
        return got

    assert loop.run_until_complete(main()) == 4 << 20


@pytest.mark.parametrize("factory", [glibloop.new_event_loop, asyncio.SelectorEventLoop])
def test_queued_callbacks_run_before_the_io_of_the_next_poll(factory):
    # asyncio's order: a callback queued before a poll runs before what that
    # poll delivers, even though our C transport calls data_received without
    # a queued handle.  Checked against stock asyncio, many times over.
    lp = factory()

    async def main():
        order = []
        got = lp.create_future()

        class Sink(asyncio.Protocol):
            def data_received(self, data):
                order.append(("data", data))
                if data.endswith(b"9") and not got.done():
                    got.set_result(None)

        server = await lp.create_server(Sink, "127.0.0.1", 0)
        tr, _ = await lp.create_connection(asyncio.Protocol, *server.sockets[0].getsockname())
        await asyncio.sleep(0.05)
        for i in range(10):
            def send(i=i):
                tr.write(b"%d" % i)
                lp.call_soon(order.append, ("after", i))

            lp.call_soon(send)
            await asyncio.sleep(0.01)
        await got
        tr.close()
        server.close()
        await server.wait_closed()
        return order

    try:
        order = lp.run_until_complete(main())
    finally:
        lp.close()
    expected = []
    for i in range(10):
        expected += [("after", i), ("data", b"%d" % i)]
    assert order == expected
