"""Transports as Python objects, side by side with asyncio's: code and tests
set attributes on them and replace their methods (mock.patch.object), and
such a transport is still collected."""
import asyncio
import gc
import os
import socket
import weakref
from unittest import mock

import pytest

import glibloop

FACTORIES = {"asyncio": asyncio.new_event_loop, "glibloop": glibloop.new_event_loop}


async def _stream(loop):
    a, b = socket.socketpair()
    tr, _ = await loop.connect_accepted_socket(asyncio.Protocol, a)
    return tr, b


async def _datagram(loop):
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    tr, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, sock=a)
    return tr, b


async def _write_pipe(loop):
    rfd, wfd = os.pipe()
    tr, _ = await loop.connect_write_pipe(asyncio.BaseProtocol, open(wfd, "wb", 0))
    return tr, open(rfd, "rb", 0)


async def _read_pipe(loop):
    rfd, wfd = os.pipe()
    tr, _ = await loop.connect_read_pipe(asyncio.Protocol, open(rfd, "rb", 0))
    return tr, open(wfd, "wb", 0)


KINDS = {"stream": _stream, "datagram": _datagram, "write-pipe": _write_pipe,
         "read-pipe": _read_pipe}


def _observe(loop, kind):
    """What code sees when it sets attributes and patches a transport."""
    async def main():
        tr, peer = await KINDS[kind](loop)
        seen = {}
        tr.tag = "mine"
        seen["attribute"] = (tr.tag, "tag" in vars(tr))
        method = "write" if hasattr(tr, "write") else "pause_reading"
        with mock.patch.object(tr, method) as fake:
            if method == "write":
                tr.write(b"not sent")
            else:
                tr.pause_reading()
            seen["patched_called"] = fake.call_count
        seen["restored"] = method not in vars(tr)
        del tr.tag
        seen["deleted"] = hasattr(tr, "tag")
        # A cycle through the instance dict is collected.
        tr.me = tr
        tr.close()
        await asyncio.sleep(0.01)
        ref = weakref.ref(tr)
        del tr
        gc.collect()
        seen["collected"] = ref() is None
        peer.close()
        return seen

    return loop.run_until_complete(main())


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_attributes_and_mocks_as_asyncio(kind):
    results = {}
    for name, factory in FACTORIES.items():
        loop = factory()
        try:
            results[name] = _observe(loop, kind)
        finally:
            loop.close()
    assert results["glibloop"] == results["asyncio"]
    assert results["glibloop"]["attribute"] == ("mine", True)
    assert results["glibloop"]["patched_called"] == 1
    assert results["glibloop"]["collected"] is True


def test_patched_write_sends_nothing_and_the_real_one_returns(loop):
    async def main():
        tr, peer = await _stream(loop)
        peer.setblocking(False)
        with mock.patch.object(tr, "write"):
            tr.write(b"lost")
        tr.write(b"kept")
        await asyncio.sleep(0.01)
        data = peer.recv(100)
        tr.close()
        peer.close()
        return data

    assert loop.run_until_complete(main()) == b"kept"
