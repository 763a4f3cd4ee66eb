"""add_reader/add_writer on the epoll set; call_soon_threadsafe."""
import asyncio
import os
import socket
import sys
import threading

import pytest

import glibloop
from conftest import open_fds


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


def test_reader_fires_and_is_removed(loop, pair):
    a, b = pair
    got = []

    def on_read(tag):
        got.append((tag, a.recv(100)))
        if len(got) == 2:
            assert loop.remove_reader(a) is True
            loop.stop()

    loop.add_reader(a.fileno(), on_read, "t")
    loop.call_soon(b.send, b"one")
    loop.call_later(0.02, b.send, b"two")
    loop.run_forever()
    assert got == [("t", b"one"), ("t", b"two")]
    assert loop.remove_reader(a) is False
    assert loop._fd_count == 0


def test_writer_fires(loop, pair):
    a, b = pair
    n = []

    def on_write():
        n.append(a.send(b"x"))
        loop.remove_writer(a)
        loop.stop()

    loop.add_writer(a, on_write)
    loop.run_forever()
    assert n == [1] and b.recv(10) == b"x"
    assert loop.remove_writer(a) is False


def test_reader_and_writer_on_same_fd(loop, pair):
    a, b = pair
    events = []

    def on_read():
        events.append("r")
        a.recv(10)
        loop.remove_reader(a)
        if not loop._fd_count:
            loop.stop()

    def on_write():
        events.append("w")
        loop.remove_writer(a)
        if not loop._fd_count:
            loop.stop()

    loop.add_reader(a, on_read)
    loop.add_writer(a, on_write)
    b.send(b"z")
    loop.run_forever()
    assert sorted(events) == ["r", "w"]


def test_replacing_reader_cancels_old(loop, pair):
    a, b = pair
    seen = []
    loop.add_reader(a, seen.append, "old")
    loop.add_reader(a, lambda: (seen.append("new"), a.recv(10), loop.remove_reader(a), loop.stop()))
    b.send(b"1")
    loop.run_forever()
    assert seen == ["new"]


def test_hangup_wakes_reader(loop, pair):
    a, b = pair
    seen = []

    def on_read():
        seen.append(a.recv(10))
        loop.remove_reader(a)
        loop.stop()

    loop.add_reader(a, on_read)
    b.close()
    loop.run_forever()
    assert seen == [b""]


def test_bad_fds(loop):
    with pytest.raises(ValueError, match="Invalid file descriptor: -1"):
        loop.add_reader(-1, print)
    with pytest.raises(ValueError, match="Invalid file object: 'abc'"):
        loop.add_reader("abc", print)
    with pytest.raises(ValueError, match="Invalid file object"):
        loop.remove_writer(object())
    with pytest.raises(TypeError, match="a callable object was expected by add_writer"):
        loop.add_writer(0, None)
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    with pytest.raises(OSError):
        loop.add_reader(r, print)  # closed fd: EBADF from epoll
    assert loop._fd_count == 0


def test_regular_file_is_refused(loop, tmp_path):
    p = tmp_path / "f"
    p.write_text("x")
    with open(p) as f:
        with pytest.raises(PermissionError):
            loop.add_reader(f, print)


def test_fd_closed_and_reused_without_remove(loop):
    # asyncio code sometimes closes an fd before remove_reader; the fd number
    # may come back at once for a new file.
    seen = []
    r1, w1 = os.pipe()
    loop.add_reader(r1, seen.append, "first")
    os.close(r1)
    os.close(w1)
    r2, w2 = os.pipe()
    try:
        loop.add_reader(r2, lambda: (seen.append(os.read(r2, 10)), loop.stop()))
        os.write(w2, b"hi")
        loop.run_forever()
        assert seen == [b"hi"]
        loop.remove_reader(r2)
    finally:
        os.close(r2)
        os.close(w2)


def test_fds_released(loop, pair):
    before = open_fds()
    lp = glibloop.new_event_loop()
    lp.add_reader(pair[0], print)
    lp.close()
    assert open_fds() == before


def test_threadsafe_wakes_idle_loop(loop):
    seen = []

    def worker():
        for i in range(1000):
            loop.call_soon_threadsafe(seen.append, i)
        loop.call_soon_threadsafe(loop.stop)

    loop.call_soon(threading.Thread(target=worker).start)
    loop.run_forever()
    assert seen == list(range(1000))


def test_threadsafe_from_many_threads(loop):
    seen = []
    n_threads, per = 4, 2000
    done = []

    def worker(k):
        for i in range(per):
            loop.call_soon_threadsafe(seen.append, (k, i))
        loop.call_soon_threadsafe(done.append, k)

    def check():
        if len(done) == n_threads:
            loop.stop()
        else:
            loop.call_later(0.005, check)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    loop.call_soon(check)
    loop.run_forever()
    for t in threads:
        t.join()
    assert len(seen) == n_threads * per
    for k in range(n_threads):
        assert [i for kk, i in seen if kk == k] == list(range(per))


def test_run_coroutine_threadsafe_between_loops():
    results = []
    ready = threading.Event()
    holder = {}

    def thread_main():
        lp = glibloop.new_event_loop()
        holder["loop"] = lp
        ready.set()
        lp.run_forever()
        lp.close()

    t = threading.Thread(target=thread_main)
    t.start()
    ready.wait()
    other = holder["loop"]

    async def on_other():
        await asyncio.sleep(0.01)
        return threading.get_ident()

    async def main():
        fut = asyncio.run_coroutine_threadsafe(on_other(), other)
        results.append(await asyncio.wrap_future(fut))

    glibloop.run(main())
    other.call_soon_threadsafe(other.stop)
    t.join()
    assert results and results[0] == t.ident


def test_loops_on_several_threads_at_once():
    out = {}

    def thread_main(k):
        async def main():
            total = 0
            for _ in range(200):
                await asyncio.sleep(0)
                total += 1
            await asyncio.sleep(0.01)
            return total

        out[k] = glibloop.run(main())

    threads = [threading.Thread(target=thread_main, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert out == {k: 200 for k in range(4)}


# call_soon_threadsafe()'s handle against another thread, side by side with
# stock asyncio: from 3.14 asyncio's handle makes cancel() and cancelled() from
# another thread wait while its callback runs (earlier versions return at
# once); the callback cancelling itself does not wait.  Each scenario reports
# what the other thread saw, and both loops must report the same.

def _threadsafe_scenario(loop, action):
    seen = {}
    started = threading.Event()
    finished = threading.Event()
    handle_box = []

    def callback():
        started.set()
        if action == "self-cancel":
            handle_box[0].cancel()
            seen["cancelled_inside"] = handle_box[0].cancelled()
        else:
            # Long enough that a cancel() that does not wait returns first.
            finished.wait(0.3)
        finished.set()

    def other_thread():
        handle = loop.call_soon_threadsafe(callback)
        handle_box.append(handle)
        seen["repr"] = repr(handle).split()[0]
        gate.set()
        started.wait(5)
        if action == "cancel":
            handle.cancel()
            seen["finished_when_cancel_returned"] = finished.is_set()
        elif action == "cancelled":
            seen["cancelled"] = handle.cancelled()
            seen["finished_when_cancelled_returned"] = finished.is_set()
        finished.wait(5)
        seen["cancelled_after"] = handle.cancelled()
        loop.call_soon_threadsafe(loop.stop)

    gate = threading.Event()
    t = threading.Thread(target=other_thread)
    # The handle is in handle_box before the loop can run its callback.
    loop.call_soon(gate.wait, 5)
    t.start()
    loop.run_forever()
    t.join()
    return seen


@pytest.mark.parametrize("action", ["cancel", "cancelled", "self-cancel"])
def test_threadsafe_handle_against_other_thread_as_asyncio(action):
    results = {}
    for name, factory in (("asyncio", asyncio.new_event_loop),
                          ("glibloop", glibloop.new_event_loop)):
        loop = factory()
        try:
            results[name] = _threadsafe_scenario(loop, action)
        finally:
            loop.close()
    assert results["glibloop"] == results["asyncio"]
    if sys.version_info >= (3, 14) and action != "self-cancel":
        # The rule itself, not only agreement: the other thread waited.
        assert any(v is True for k, v in results["glibloop"].items()
                   if k.startswith("finished_when"))


def test_threadsafe_handle_cancelled_before_it_runs_as_asyncio():
    results = {}
    for name, factory in (("asyncio", asyncio.new_event_loop),
                          ("glibloop", glibloop.new_event_loop)):
        loop = factory()
        ran = []
        gate = threading.Event()

        def other_thread():
            handle = loop.call_soon_threadsafe(ran.append, 1)
            handle.cancel()
            results[name] = handle.cancelled()
            gate.set()
            loop.call_soon_threadsafe(loop.stop)

        loop.call_soon(gate.wait, 5)
        t = threading.Thread(target=other_thread)
        t.start()
        try:
            loop.run_forever()
        finally:
            t.join()
            loop.close()
        assert ran == []
    assert results == {"asyncio": True, "glibloop": True}
