"""connect_read_pipe / connect_write_pipe: pipes, FIFOs, sockets, ptys;
flow control, end of file, a peer that goes away, errors, fds."""
import asyncio
import errno
import gc
import io
import os
import socket
import threading
import warnings

import pytest

import glibloop
from conftest import open_fds


class ReadProto(asyncio.Protocol):
    def __init__(self, loop):
        self.events = []
        self.data = bytearray()
        self.transport = None
        self.paused_data = 0
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport
        self.events.append("made")

    def data_received(self, data):
        assert self.events == ["made"], self.events
        if not self.transport.is_reading():
            self.paused_data += 1
        self.data += data

    def eof_received(self):
        self.events.append("eof")

    def connection_lost(self, exc):
        self.events.append("lost")
        self.lost.set_result(exc)


class BufferedReadProto(asyncio.BufferedProtocol):
    def __init__(self, loop):
        self.buf = bytearray(1000)
        self.data = bytearray()
        self.lost = loop.create_future()

    def get_buffer(self, sizehint):
        return self.buf

    def buffer_updated(self, nbytes):
        self.data += self.buf[:nbytes]

    def eof_received(self):
        pass

    def connection_lost(self, exc):
        self.lost.set_result(exc)


class WriteProto(asyncio.BaseProtocol):
    def __init__(self, loop):
        self.events = []
        self.lost = loop.create_future()
        self.resumed = asyncio.Event()

    def connection_made(self, transport):
        self.events.append("made")

    def pause_writing(self):
        self.events.append("pause")
        self.resumed.clear()

    def resume_writing(self):
        self.events.append("resume")
        self.resumed.set()

    def connection_lost(self, exc):
        self.events.append("lost")
        self.lost.set_result(exc)


async def _lost(protocol):
    """connection_lost's argument; a hang fails the test instead."""
    return await asyncio.wait_for(protocol.lost, 30)


def _fds_after_first_run(loop):
    # The first run makes the loop's signal wake-up socketpair; what earlier
    # tests left for the collector is closed first, so it cannot close
    # during the test and look like a change.
    loop.run_until_complete(asyncio.sleep(0))
    gc.collect()
    return open_fds()


def _read_all(fd, into, stop_at):
    while len(into) < stop_at:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        into += chunk


def test_read_pipe_data_then_eof(loop):
    before = _fds_after_first_run(loop)
    rfd, wfd = os.pipe()
    pipe = open(rfd, "rb", buffering=0)

    async def main():
        tr, pr = await loop.connect_read_pipe(lambda: ReadProto(loop), pipe)
        assert isinstance(tr, asyncio.ReadTransport)
        assert tr.get_extra_info("pipe") is pipe
        assert tr.is_reading()
        os.write(wfd, b"hello ")
        os.write(wfd, b"world")
        os.close(wfd)
        exc = await _lost(pr)
        return tr, pr, exc

    tr, pr, exc = loop.run_until_complete(main())
    assert exc is None
    assert bytes(pr.data) == b"hello world"
    assert pr.events == ["made", "eof", "lost"]
    assert pipe.closed  # the transport closed the file
    assert tr.is_closing()
    assert loop._fd_count == 0
    del tr, pr, pipe
    gc.collect()
    assert open_fds() == before


def test_data_written_before_connect_comes_after_connection_made(loop):
    rfd, wfd = os.pipe()
    os.write(wfd, b"early")
    os.close(wfd)

    async def main():
        tr, pr = await loop.connect_read_pipe(lambda: ReadProto(loop), open(rfd, "rb", 0))
        await _lost(pr)
        return pr

    pr = loop.run_until_complete(main())
    assert bytes(pr.data) == b"early"  # data_received asserts connection_made came first
    assert pr.events == ["made", "eof", "lost"]


def test_buffered_protocol_on_read_pipe(loop):
    rfd, wfd = os.pipe()
    payload = bytes(range(256)) * 40  # more than one buffer of 1000

    async def main():
        tr, pr = await loop.connect_read_pipe(lambda: BufferedReadProto(loop), open(rfd, "rb", 0))
        os.write(wfd, payload)
        os.close(wfd)
        assert await _lost(pr) is None
        return pr

    pr = loop.run_until_complete(main())
    assert bytes(pr.data) == payload


def test_pause_reading_holds_data_and_eof_until_resumed(loop):
    rfd, wfd = os.pipe()

    async def main():
        tr, pr = await loop.connect_read_pipe(lambda: ReadProto(loop), open(rfd, "rb", 0))
        tr.pause_reading()
        assert not tr.is_reading()
        # Data and the writer's hang-up both arrive while paused: the edge
        # that reports them is consumed now and no other comes.
        os.write(wfd, b"x" * 1000)
        os.close(wfd)
        for _ in range(20):
            await asyncio.sleep(0)
        assert pr.data == b"" and pr.events == ["made"]
        tr.resume_reading()
        assert await _lost(pr) is None
        return pr

    pr = loop.run_until_complete(main())
    assert len(pr.data) == 1000
    assert pr.paused_data == 0
    assert pr.events == ["made", "eof", "lost"]


def test_eof_after_full_pipe_read(loop):
    # The writer fills the pipe and hangs up before the loop reads: one read
    # returns exactly what was there, shorter than asked, and the end of
    # file must still be noticed (regression: it was not).
    for size in (65536, 65536 * 3 + 17):
        rfd, wfd = os.pipe()
        writer = threading.Thread(target=lambda: (os.write(wfd, b"y" * size), os.close(wfd)))

        async def main():
            tr, pr = await loop.connect_read_pipe(lambda: ReadProto(loop), open(rfd, "rb", 0))
            writer.start()
            assert await _lost(pr) is None
            return pr

        pr = loop.run_until_complete(main())
        writer.join()
        assert len(pr.data) == size


def test_close_read_pipe(loop):
    rfd, wfd = os.pipe()

    async def main():
        tr, pr = await loop.connect_read_pipe(lambda: ReadProto(loop), open(rfd, "rb", 0))
        tr.close()
        assert tr.is_closing()
        tr.close()  # twice is fine
        assert await _lost(pr) is None
        return pr

    pr = loop.run_until_complete(main())
    assert pr.events == ["made", "lost"]
    os.close(wfd)
    assert loop._fd_count == 0


def test_write_pipe_flow_control_and_close(loop):
    before = _fds_after_first_run(loop)
    rfd, wfd = os.pipe()
    received = bytearray()
    total = 4 * 1024 * 1024
    reader = threading.Thread(target=_read_all, args=(rfd, received, total))

    async def main():
        tr, pr = await loop.connect_write_pipe(lambda: WriteProto(loop), open(wfd, "wb", 0))
        assert isinstance(tr, asyncio.WriteTransport)
        assert tr.can_write_eof()
        tr.set_write_buffer_limits(high=64 * 1024)
        assert tr.get_write_buffer_limits() == (16 * 1024, 64 * 1024)
        chunk = b"z" * (256 * 1024)
        tr.write(chunk)
        assert tr.get_write_buffer_size() > 0  # nobody reads yet
        assert pr.events == ["made", "pause"]
        reader.start()
        written = len(chunk)
        while written < total:
            await pr.resumed.wait()
            tr.write(memoryview(chunk))
            written += len(chunk)
        tr.close()
        tr.write(b"after close")  # ignored, as asyncio
        assert await _lost(pr) is None
        return tr, pr

    tr, pr = loop.run_until_complete(main())
    reader.join()
    assert len(received) == total and set(received) == {ord("z")}
    assert pr.events[0] == "made" and pr.events[-1] == "lost"
    assert "resume" in pr.events
    assert tr.get_write_buffer_size() == 0
    os.close(rfd)
    del tr, pr
    gc.collect()
    assert open_fds() == before


def test_write_bytearray_is_copied(loop):
    rfd, wfd = os.pipe()

    async def main():
        tr, pr = await loop.connect_write_pipe(lambda: WriteProto(loop), open(wfd, "wb", 0))
        big = bytearray(b"a" * (1024 * 1024))
        tr.write(big)  # the pipe takes 64 KiB, the rest is queued
        big[:] = b"b" * len(big)  # must not change what is sent
        got = bytearray()
        t = threading.Thread(target=_read_all, args=(rfd, got, 1024 * 1024))
        t.start()
        tr.close()
        await _lost(pr)
        t.join()
        return got

    got = loop.run_until_complete(main())
    assert got == b"a" * (1024 * 1024)
    os.close(rfd)


def test_write_pipe_reader_goes_away_while_data_is_queued(loop):
    rfd, wfd = os.pipe()

    async def main():
        tr, pr = await loop.connect_write_pipe(lambda: WriteProto(loop), open(wfd, "wb", 0))
        tr.write(b"q" * (1024 * 1024))
        assert tr.get_write_buffer_size() > 0
        os.close(rfd)
        exc = await _lost(pr)
        return tr, exc

    tr, exc = loop.run_until_complete(main())
    assert isinstance(exc, BrokenPipeError)
    assert tr.get_write_buffer_size() == 0
    assert loop._fd_count == 0


def test_write_pipe_reader_goes_away_idle(loop):
    rfd, wfd = os.pipe()
    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))

    async def main():
        tr, pr = await loop.connect_write_pipe(lambda: WriteProto(loop), open(wfd, "wb", 0))
        os.close(rfd)
        exc = await _lost(pr)
        for _ in range(7):
            tr.write(b"dropped")  # after the loss: counted, not raised
        return exc

    assert loop.run_until_complete(main()) is None
    assert errors == []


def test_abort_drops_the_buffer(loop):
    rfd, wfd = os.pipe()

    async def main():
        tr, pr = await loop.connect_write_pipe(lambda: WriteProto(loop), open(wfd, "wb", 0))
        tr.write(b"w" * (1024 * 1024))
        tr.abort()
        assert tr.get_write_buffer_size() == 0
        return await _lost(pr)

    assert loop.run_until_complete(main()) is None
    os.close(rfd)


def test_write_eof_then_close(loop):
    rfd, wfd = os.pipe()

    async def main():
        tr, pr = await loop.connect_write_pipe(lambda: WriteProto(loop), open(wfd, "wb", 0))
        tr.write(b"last words")
        tr.write_eof()
        assert tr.is_closing()
        await _lost(pr)
        return os.read(rfd, 100), os.read(rfd, 100)

    assert loop.run_until_complete(main()) == (b"last words", b"")
    os.close(rfd)


def test_fifo_both_ways(loop, tmp_path):
    path = tmp_path / "fifo"
    os.mkfifo(path)
    rfd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    wfd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)

    async def main():
        rtr, rpr = await loop.connect_read_pipe(lambda: ReadProto(loop), open(rfd, "rb", 0))
        wtr, wpr = await loop.connect_write_pipe(lambda: WriteProto(loop), open(wfd, "wb", 0))
        wtr.write(b"through the fifo")
        wtr.close()
        await _lost(wpr)
        await _lost(rpr)
        return rpr

    rpr = loop.run_until_complete(main())
    assert bytes(rpr.data) == b"through the fifo"
    assert rpr.events == ["made", "eof", "lost"]


def test_socket_as_read_and_write_pipe(loop):
    a, b = socket.socketpair()

    async def main():
        rtr, rpr = await loop.connect_read_pipe(lambda: ReadProto(loop), a)
        wtr, wpr = await loop.connect_write_pipe(lambda: WriteProto(loop), b)
        wtr.write(b"sock")
        wtr.close()
        await _lost(wpr)
        await _lost(rpr)
        return rpr

    rpr = loop.run_until_complete(main())
    assert bytes(rpr.data) == b"sock"
    assert a.fileno() == -1 and b.fileno() == -1


def test_pty(loop):
    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))
    master, slave = os.openpty()

    async def main():
        rtr, rpr = await loop.connect_read_pipe(lambda: ReadProto(loop), open(master, "rb", 0))
        wtr, wpr = await loop.connect_write_pipe(lambda: WriteProto(loop), open(slave, "wb", 0))
        wtr.write(b"tty line\n")
        while b"tty line" not in rpr.data:
            await asyncio.sleep(0.01)
        wtr.close()
        await _lost(wpr)
        # The slave side is closed: the master reads EIO, which asyncio
        # treats as the end (logged only in debug mode).
        return await _lost(rpr), rpr

    exc, rpr = loop.run_until_complete(main())
    assert isinstance(exc, OSError) and exc.errno == errno.EIO
    assert errors == []
    assert rpr.events == ["made", "lost"]


def test_not_a_pipe(loop, tmp_path):
    f = open(tmp_path / "regular", "wb")
    with pytest.raises(ValueError, match="Pipe transport is"):
        loop.run_until_complete(loop.connect_write_pipe(lambda: WriteProto(loop), f))
    with pytest.raises(ValueError, match="Pipe transport is"):
        loop.run_until_complete(loop.connect_read_pipe(lambda: ReadProto(loop), open(tmp_path / "regular", "rb")))
    assert not f.closed  # still the caller's
    f.close()
    assert loop._fd_count == 0


def test_unpollable_character_device_fails_at_once(loop):
    # epoll cannot watch /dev/null: the error comes from connect_*_pipe.
    with open(os.devnull, "wb") as f:
        with pytest.raises(OSError) as info:
            loop.run_until_complete(loop.connect_write_pipe(lambda: WriteProto(loop), f))
        assert info.value.errno == errno.EPERM
    assert loop._fd_count == 0


def test_fd_owned_by_transport(loop):
    rfd, wfd = os.pipe()

    async def main():
        tr, pr = await loop.connect_read_pipe(lambda: ReadProto(loop), open(rfd, "rb", 0))
        with pytest.raises(RuntimeError, match="is used by transport"):
            loop.add_reader(rfd, lambda: None)
        tr.close()
        await _lost(pr)

    loop.run_until_complete(main())
    os.close(wfd)


def test_unclosed_transport_warns_and_closes_the_pipe(loop):
    rfd, wfd = os.pipe()
    pipe = open(rfd, "rb", 0)

    async def main():
        tr, pr = await loop.connect_read_pipe(lambda: ReadProto(loop), pipe)
        return tr

    tr = loop.run_until_complete(main())
    del tr
    gc.collect()
    assert not pipe.closed  # the loop watches it: alive, as in asyncio
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loop.close()  # lets go of it
        gc.collect()
    assert any(issubclass(w.category, ResourceWarning) for w in caught)
    assert pipe.closed
    os.close(wfd)


def test_loop_closed_with_open_transports(loop):
    rfd, wfd = os.pipe()
    rpipe, wpipe = open(rfd, "rb", 0), open(wfd, "wb", 0)

    async def main():
        rtr, _ = await loop.connect_read_pipe(lambda: ReadProto(loop), rpipe)
        wtr, _ = await loop.connect_write_pipe(lambda: WriteProto(loop), wpipe)
        return rtr, wtr

    rtr, wtr = loop.run_until_complete(main())
    loop.close()
    assert "open" in repr(rtr) and "open" in repr(wtr)
    rpipe.close()
    wpipe.close()
    rtr._pipe = None  # as CPython's test: the files are closed already
    wtr._pipe = None
    assert "closed" in repr(rtr)


def test_exception_in_data_received_is_reported_and_closes(loop):
    rfd, wfd = os.pipe()
    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))

    class Bad(ReadProto):
        def data_received(self, data):
            raise ZeroDivisionError

    async def main():
        tr, pr = await loop.connect_read_pipe(lambda: Bad(loop), open(rfd, "rb", 0))
        os.write(wfd, b"boom")
        return await _lost(pr)

    exc = loop.run_until_complete(main())
    assert isinstance(exc, ZeroDivisionError)
    assert len(errors) == 1 and errors[0]["message"].startswith("Fatal error: protocol.data_received()")
    os.close(wfd)


def test_stream_reader_on_pipe(loop):
    rfd, wfd = os.pipe()

    async def main():
        reader = asyncio.StreamReader(limit=16)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), open(rfd, "rb", 0))
        writer = threading.Thread(target=lambda: (os.write(wfd, b"line one\nline two\n" * 1000), os.close(wfd)))
        writer.start()
        lines = 0
        while await reader.readline():
            lines += 1
        writer.join()
        return lines

    assert loop.run_until_complete(main()) == 2000
