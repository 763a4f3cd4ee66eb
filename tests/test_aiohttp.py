"""aiohttp on glibloop: a server and a client in one process, over loopback.

Every scenario runs twice, on stock asyncio (the selector loop that
asyncio.run uses) and on glibloop, and returns a transcript of what it saw
(bodies, digests, counts, close codes).  The test asserts the content and
that both transcripts are equal, so a place where glibloop behaves
differently from asyncio fails here.  Anything reported to the loop's
exception handler (an unclosed transport, a task destroyed while pending,
an exception in a callback) fails the run too, and so do leaked fds.
"""

import asyncio
import gc
import hashlib
import os
import re
import signal
import subprocess
import sys
import urllib.request

import aiohttp
import pytest
from aiohttp import web

import glibloop
from conftest import open_fds
from test.test_asyncio import utils as test_utils

LOOPS = {
    "asyncio": asyncio.SelectorEventLoop,
    "glibloop": glibloop.new_event_loop,
}

TIMEOUT = 60  # seconds for one scenario on one loop; the real time is far less


def run_scenario(factory, scenario, *args):
    """Run scenario(*args) on a fresh loop from factory; (loop type, transcript)."""
    problems = []

    async def main():
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, context: problems.append(context))
        return type(loop), await asyncio.wait_for(scenario(*args), TIMEOUT)

    with asyncio.Runner(loop_factory=factory) as runner:
        loop_type, result = runner.run(main())
    gc.collect()  # unclosed-resource reports come from finalizers
    assert not problems, [f"{p.get('message')}: {p.get('exception')!r}" for p in problems]
    return loop_type, result


def on_both(scenario, *args):
    """The scenario's transcript on glibloop, checked equal to asyncio's."""
    # GLib's default main context opens its wake-up fd once, on first use.
    glibloop.run(asyncio.sleep(0))
    fds = open_fds()
    transcripts = {}
    for name, factory in LOOPS.items():
        loop_type, transcripts[name] = run_scenario(factory, scenario, *args)
        assert (loop_type is glibloop.Loop) == (name == "glibloop"), loop_type
    assert transcripts["glibloop"] == transcripts["asyncio"]
    assert open_fds() <= fds, "file descriptors leaked"
    return transcripts["glibloop"]


class Server:
    """An aiohttp application served on 127.0.0.1, on an ephemeral port."""

    def __init__(self, app, ssl_context=None, **runner_kwargs):
        self.ssl_context = ssl_context
        self.runner = web.AppRunner(app, handle_signals=False, **runner_kwargs)

    async def __aenter__(self):
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=self.ssl_context)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        self.url = f"{'https' if self.ssl_context else 'http'}://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc):
        await self.runner.cleanup()


def sha(data):
    return hashlib.sha256(data).hexdigest()


def pattern(n, seed=0):
    """n bytes that are not all alike, so a misplaced or lost chunk shows."""
    block = bytes((i * 7 + seed) % 251 for i in range(65521))
    return (block * (n // len(block) + 1))[:n]


# -- many requests at once -----------------------------------------------------

CONCURRENT = 200


async def concurrent_posts():
    """200 POSTs in flight at once.  The handler answers only when all 200
    are inside it, so the server provably holds 200 open requests on 200
    connections, and every answer must go back to the request it belongs to."""
    in_flight = peak = 0
    everyone_here = asyncio.Event()
    peers = set()

    async def handler(request):
        nonlocal in_flight, peak
        payload = await request.json()
        peers.add(request.transport.get_extra_info("peername"))
        in_flight += 1
        peak = max(peak, in_flight)
        if in_flight == CONCURRENT:
            everyone_here.set()
        await everyone_here.wait()
        in_flight -= 1
        return web.json_response({"n": payload["n"], "square": payload["n"] ** 2,
                                  "reversed": payload["text"][::-1]})

    app = web.Application()
    app.router.add_post("/square", handler)
    async with Server(app) as server:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

            async def one(n):
                async with session.post(server.url + "/square",
                                        json={"n": n, "text": f"request {n} é"}) as resp:
                    return resp.status, resp.content_type, await resp.json()

            answers = await asyncio.gather(*(one(n) for n in range(CONCURRENT)))
    return {"answers": answers, "peak": peak, "connections": len(peers)}


def test_200_concurrent_requests():
    t = on_both(concurrent_posts)
    assert t["peak"] == CONCURRENT
    assert t["connections"] == CONCURRENT
    assert t["answers"] == [
        (200, "application/json",
         {"n": n, "square": n * n, "reversed": f"request {n} é"[::-1]})
        for n in range(CONCURRENT)]


async def keep_alive_pool():
    """400 GETs through a pool of at most 20 keep-alive connections."""
    peers = set()

    async def hello(request):
        peers.add(request.transport.get_extra_info("peername"))
        return web.Response(text=f"hello {request.query['n']}")

    app = web.Application()
    app.router.add_get("/hello", hello)
    async with Server(app) as server:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=20)) as session:

            async def get(n):
                async with session.get(server.url + "/hello", params={"n": n}) as resp:
                    return resp.status, await resp.text()

            replies = await asyncio.gather(*(get(n) for n in range(400)))
    return {"replies": replies, "at_most_20": 1 <= len(peers) <= 20}


def test_keep_alive_pool_reuses_connections():
    t = on_both(keep_alive_pool)
    assert t["replies"] == [(200, f"hello {n}") for n in range(400)]
    assert t["at_most_20"]


# -- streaming bodies ------------------------------------------------------------

UPLOAD_CHUNKS = [pattern(size, seed) for seed, size in
                 enumerate([1, 100, 4096, 65536, 1 << 20, 3, 300_000, 2 << 20, 17])]


async def chunked_upload():
    """The client streams a chunked body from an async generator; the server
    reads it incrementally.  After the first chunk the generator waits until
    the server has read it, which only happens if the server reads while the
    upload is still going (a buffered read would deadlock into the timeout)."""
    first_chunk_read = asyncio.Event()
    seen = {}

    async def upload(request):
        seen["transfer-encoding"] = request.headers.get("Transfer-Encoding")
        seen["content-length"] = request.content_length
        digest = hashlib.sha256()
        total = reads = 0
        async for chunk in request.content.iter_chunked(32768):
            if not first_chunk_read.is_set() and total + len(chunk) >= len(UPLOAD_CHUNKS[0]):
                first_chunk_read.set()
            assert 0 < len(chunk) <= 32768
            digest.update(chunk)
            total += len(chunk)
            reads += 1
        seen["several_reads"] = reads > 1
        return web.json_response({"bytes": total, "sha256": digest.hexdigest()})

    async def body():
        yield UPLOAD_CHUNKS[0]
        await asyncio.wait_for(first_chunk_read.wait(), 10)
        for chunk in UPLOAD_CHUNKS[1:]:
            yield chunk
            await asyncio.sleep(0)

    app = web.Application(client_max_size=64 << 20)
    app.router.add_post("/upload", upload)
    async with Server(app) as server:
        async with aiohttp.ClientSession() as session:
            async with session.post(server.url + "/upload", data=body()) as resp:
                reply = resp.status, await resp.json()
    return {"reply": reply, **seen}


def test_chunked_upload_read_incrementally():
    t = on_both(chunked_upload)
    everything = b"".join(UPLOAD_CHUNKS)
    assert t["reply"] == (200, {"bytes": len(everything), "sha256": sha(everything)})
    assert t["transfer-encoding"] == "chunked"
    assert t["content-length"] is None
    assert t["several_reads"]


DOWNLOAD_PARTS = 64
DOWNLOAD_PART = 128 * 1024 + 5  # 8 MiB in all: more than any socket buffer


async def streamed_response():
    """The server writes a StreamResponse part by part; after every 8th part
    it waits until the client has read what was sent so far, so the response
    is provably consumed while it is being produced.  8 MiB in all, so the
    server's transport is paused and resumed by flow control on the way."""
    client_has = 0
    progress = asyncio.Condition()
    sent_parts = []

    async def download(request):
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        sent = 0
        for i in range(DOWNLOAD_PARTS):
            part = pattern(DOWNLOAD_PART, i)
            await resp.write(part)
            sent += len(part)
            sent_parts.append(i)
            if i % 8 == 7 and i != DOWNLOAD_PARTS - 1:
                async with progress:
                    await asyncio.wait_for(progress.wait_for(lambda: client_has >= sent), 10)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/download", download)
    digest = hashlib.sha256()
    chunk_sizes_ok = True
    async with Server(app) as server:
        async with aiohttp.ClientSession() as session:
            async with session.get(server.url + "/download") as resp:
                headers = resp.status, resp.headers.get("Transfer-Encoding"), resp.content_type
                async for chunk in resp.content.iter_chunked(50_000):
                    chunk_sizes_ok &= 0 < len(chunk) <= 50_000
                    digest.update(chunk)
                    async with progress:
                        client_has += len(chunk)
                        progress.notify_all()
    return {"headers": headers, "bytes": client_has, "sha256": digest.hexdigest(),
            "chunk_sizes_ok": chunk_sizes_ok, "parts": len(sent_parts)}


def test_streamed_response_read_by_chunks():
    t = on_both(streamed_response)
    expected = b"".join(pattern(DOWNLOAD_PART, i) for i in range(DOWNLOAD_PARTS))
    assert t == {"headers": (200, "chunked", "application/octet-stream"),
                 "bytes": len(expected), "sha256": sha(expected),
                 "chunk_sizes_ok": True, "parts": DOWNLOAD_PARTS}


async def large_bodies_and_files(path):
    """A 16 MiB Content-Length response, a file served with FileResponse
    (loop.sendfile on a plain transport), a byte range of it, and a 16 MiB
    request body echoed back."""
    big = pattern(16 << 20, 3)

    async def whole(request):
        return web.Response(body=big)

    async def echo(request):
        data = await request.read()
        return web.Response(body=data, headers={"X-Sha": sha(data)})

    app = web.Application(client_max_size=32 << 20)
    app.router.add_get("/big", whole)
    async def file(request):
        return web.FileResponse(path)

    app.router.add_get("/file", file)
    app.router.add_post("/echo", echo)
    out = {}
    async with Server(app) as server:
        async with aiohttp.ClientSession() as session:
            async with session.get(server.url + "/big") as resp:
                out["big"] = resp.content_length, sha(await resp.read())
            async with session.get(server.url + "/file") as resp:
                out["file"] = resp.status, resp.content_length, sha(await resp.read())
            async with session.get(server.url + "/file",
                                   headers={"Range": "bytes=1000-1999999"}) as resp:
                out["range"] = resp.status, resp.content_length, sha(await resp.read())
            async with session.post(server.url + "/echo", data=big) as resp:
                body = await resp.read()
                out["echo"] = resp.headers["X-Sha"], sha(body), len(body)
    return out


def test_large_bodies_and_sendfile(tmp_path):
    data = pattern(5_000_000, 9)
    path = tmp_path / "payload.bin"
    path.write_bytes(data)
    t = on_both(large_bodies_and_files, path)
    big = pattern(16 << 20, 3)
    assert t == {"big": (len(big), sha(big)),
                 "file": (200, len(data), sha(data)),
                 "range": (206, 1_999_000, sha(data[1000:2_000_000])),
                 "echo": (sha(big), sha(big), len(big))}


# -- websocket -------------------------------------------------------------------

WS_TEXTS = ["hello", "", "unicode: ĝlib ✓ 🐍", "x" * 70_000]
WS_BINARIES = [b"\x00\x01\x02", b"", pattern(1 << 20, 5)]


async def websocket_echo():
    """Text and binary echo, then a close from each side with its own code."""
    server_saw = []

    async def ws_handler(request):
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                if msg.data == "close me":
                    await ws.close(code=4000, message=b"server says bye")
                else:
                    await ws.send_str("echo:" + msg.data)
            elif msg.type == aiohttp.WSMsgType.BINARY:
                await ws.send_bytes(msg.data[::-1])
        # The loop ends on the client's close frame (or after our own close).
        server_saw.append(ws.close_code)
        return ws

    app = web.Application()
    app.router.add_get("/ws", ws_handler)
    out = {}
    async with Server(app) as server:
        async with aiohttp.ClientSession() as session:
            # 1. echo, then the server closes with 4000
            async with session.ws_connect(server.url + "/ws") as ws:
                texts = []
                for text in WS_TEXTS:
                    await ws.send_str(text)
                    msg = await ws.receive()
                    texts.append((msg.type, msg.data))
                binaries = []
                for data in WS_BINARIES:
                    await ws.send_bytes(data)
                    msg = await ws.receive()
                    binaries.append((msg.type, sha(msg.data)))
                # several in flight at once come back in order
                for i in range(50):
                    await ws.send_str(str(i))
                in_order = [(await ws.receive_str()) for _ in range(50)]
                await ws.send_str("close me")
                msg = await ws.receive()
                out["server_close"] = (msg.type, msg.data, msg.extra)
                out["client_close_code"] = ws.close_code
                out["closed"] = ws.closed
            out["texts"] = texts
            out["binaries"] = binaries
            out["in_order"] = in_order

            # 2. the client closes with 4002
            async with session.ws_connect(server.url + "/ws") as ws:
                await ws.send_str("ping?")
                out["before_close"] = await ws.receive_str()
                out["client_close"] = await ws.close(code=4002, message=b"client says bye")
                out["client_side_code"] = ws.close_code
    out["server_saw"] = server_saw
    return out


def test_websocket_echo_and_close_codes():
    t = on_both(websocket_echo)
    text = aiohttp.WSMsgType.TEXT
    assert t["texts"] == [(text, "echo:" + s) for s in WS_TEXTS]
    assert t["binaries"] == [(aiohttp.WSMsgType.BINARY, sha(b[::-1])) for b in WS_BINARIES]
    assert t["in_order"] == [f"echo:{i}" for i in range(50)]
    assert t["server_close"] == (aiohttp.WSMsgType.CLOSE, 4000, "server says bye")
    assert t["client_close_code"] == 4000 and t["closed"]
    assert t["before_close"] == "echo:ping?"
    # The server answers the client's close frame with its own (1000).
    assert t["client_close"] is True and t["client_side_code"] == 1000
    # close_code is the peer's code: the client's reply to the server's close
    # (1000), then the client's own 4002.
    assert t["server_saw"] == [1000, 4002]


# -- timeouts, disconnects, TLS ---------------------------------------------------


async def timeouts_and_disconnects():
    """A client timeout on a slow handler; the server's handler learns that
    the client went away (its transport closes)."""
    handler_done = asyncio.Event()
    server_view = {}

    async def slow(request):
        transport = request.transport
        try:
            await asyncio.sleep(30)
        finally:
            # The client gave up: aiohttp sees the connection lost.
            server_view["transport_closing"] = transport is None or transport.is_closing()
            handler_done.set()
        return web.Response(text="too late")

    app = web.Application()
    app.router.add_get("/slow", slow)
    out = {}
    async with Server(app, handler_cancellation=True) as server:
        async with aiohttp.ClientSession() as session:
            loop = asyncio.get_running_loop()
            start = loop.time()
            try:
                async with session.get(server.url + "/slow",
                                       timeout=aiohttp.ClientTimeout(total=0.3)) as resp:
                    out["timeout"] = await resp.text()
            except asyncio.TimeoutError as exc:
                out["timeout"] = "TimeoutError"
                out["timeout_type"] = type(exc).__name__
            elapsed = loop.time() - start
            out["timed_out_in_time"] = 0.25 <= elapsed < 5
            await asyncio.wait_for(handler_done.wait(), 10)
    out.update(server_view)
    return out


def test_client_timeout_and_server_sees_disconnect():
    t = on_both(timeouts_and_disconnects)
    assert t["timeout"] == "TimeoutError"
    assert t["timed_out_in_time"] and t["transport_closing"]


async def https_round_trip():
    async def hello(request):
        body = await request.read()
        return web.json_response({"secure": request.secure, "bytes": len(body),
                                  "sha256": sha(body)})

    app = web.Application(client_max_size=8 << 20)
    app.router.add_post("/", hello)
    async with Server(app, ssl_context=test_utils.simple_server_sslcontext()) as server:
        async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=test_utils.simple_client_sslcontext())) as session:

            async def one(n):
                async with session.post(server.url + "/", data=f"tls {n}") as resp:
                    return await resp.json()

            replies = await asyncio.gather(*(one(n) for n in range(20)))
            async with session.post(server.url + "/", data=pattern(3 << 20)) as resp:
                big = await resp.json()
    return {"replies": replies, "big": big}


def test_https_on_loopback():
    t = on_both(https_round_trip)
    assert t["replies"] == [{"secure": True, "bytes": len(f"tls {n}"),
                             "sha256": sha(f"tls {n}".encode())} for n in range(20)]
    assert t["big"] == {"secure": True, "bytes": 3 << 20, "sha256": sha(pattern(3 << 20))}


# -- other ways in: unix sockets, "localhost", compression, run_app ----------------


async def unix_and_localhost(tmp_dir):
    """A UnixSite served to a UnixConnector client; a TCP server on
    127.0.0.1 reached by the name "localhost" (the resolver in the executor,
    then aiohappyeyeballs' connection attempts, ::1 being refused on the way
    when it resolves)."""
    async def who(request):
        return web.Response(text=f"{request.method} {request.path_qs}")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", who)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    path = os.path.join(tmp_dir, "aiohttp.sock")
    unix_site = web.UnixSite(runner, path)
    tcp_site = web.TCPSite(runner, "127.0.0.1", 0)
    await unix_site.start()
    await tcp_site.start()
    port = tcp_site._server.sockets[0].getsockname()[1]
    out = {}
    try:
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=path)) as session:
            replies = []
            for method in ("GET", "POST", "PUT", "DELETE"):
                async with session.request(method, f"http://unix/x?m={method}") as resp:
                    replies.append(await resp.text())
            out["unix"] = replies
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://localhost:{port}/by-name") as resp:
                out["localhost"] = await resp.text()
    finally:
        await runner.cleanup()
    out["socket_removed"] = not os.path.exists(path)
    return out


def test_unix_socket_and_localhost(tmp_path):
    t = on_both(unix_and_localhost, str(tmp_path))
    assert t["unix"] == [f"{m} /x?m={m}" for m in ("GET", "POST", "PUT", "DELETE")]
    assert t["localhost"] == "GET /by-name"


async def compression():
    """Compressed answers both ways: a large body is compressed by aiohttp
    in the loop's default executor (run_in_executor), the client inflates."""
    text = "".join(f"line {i}: glib main loop\n" for i in range(100_000))  # ~2.5 MB

    async def big(request):
        resp = web.Response(text=text)
        resp.enable_compression()
        return resp

    async def upload(request):
        return web.json_response({"encoding": request.headers.get("Content-Encoding"),
                                  "sha256": sha(await request.read())})

    app = web.Application(client_max_size=16 << 20)
    app.router.add_get("/big", big)
    app.router.add_post("/upload", upload)
    async with Server(app) as server:
        async with aiohttp.ClientSession() as session:
            async with session.get(server.url + "/big",
                                   headers={"Accept-Encoding": "gzip"}) as resp:
                encoding = resp.headers.get("Content-Encoding")
                wire = resp.content_length
                body = await resp.text()
            async with session.post(server.url + "/upload", data=text.encode(),
                                    compress="deflate") as resp:
                up = await resp.json()
    return {"encoding": encoding, "smaller_on_the_wire": wire is None or wire < len(text),
            "body_ok": body == text, "upload": up, "expected": sha(text.encode())}


def test_compression_in_the_executor():
    t = on_both(compression)
    assert t["encoding"] == "gzip" and t["smaller_on_the_wire"] and t["body_ok"]
    assert t["upload"] == {"encoding": "deflate", "sha256": t["expected"]}


RUN_APP = """
import asyncio, sys
import glibloop
from aiohttp import web

async def hello(request):
    return web.Response(text="run_app on " + type(asyncio.get_running_loop()).__qualname__)

async def on_cleanup(app):
    print("cleanup ran", flush=True)

app = web.Application()
app.router.add_get("/", hello)
app.on_cleanup.append(on_cleanup)
loop = glibloop.new_event_loop() if sys.argv[1] == "glibloop" else asyncio.new_event_loop()
web.run_app(app, host="127.0.0.1", port=0, loop=loop,
            print=lambda line: print(line, flush=True))
print("run_app returned", flush=True)
"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_run_app_stops_on_signal(tmp_path, signum):
    """web.run_app on glibloop, as an application runs it: the signal
    handlers it installs (loop.add_signal_handler) stop it cleanly, the
    cleanup hooks run and the process exits 0, as on asyncio."""
    script = tmp_path / "app.py"
    script.write_text(RUN_APP)
    env = dict(os.environ)
    glibloop_root = os.path.dirname(os.path.dirname(glibloop.__file__))
    env["PYTHONPATH"] = os.pathsep.join(
        [glibloop_root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    outcomes = {}
    for name in ("asyncio", "glibloop"):
        proc = subprocess.Popen([sys.executable, str(script), name], env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            first = proc.stdout.readline()
            match = re.search(r"http://127\.0\.0\.1:(\d+)", first)
            assert match, first + proc.stdout.read()
            with urllib.request.urlopen(f"http://127.0.0.1:{match.group(1)}/",
                                        timeout=30) as resp:
                body = resp.read().decode()
            proc.send_signal(signum)
            rest, _ = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        outcomes[name] = (proc.returncode, body.split(" on ")[0],
                          [line for line in rest.splitlines() if line.strip()])
        if name == "glibloop":
            assert body == "run_app on Loop"
    assert outcomes["glibloop"] == outcomes["asyncio"]
    code, _, lines = outcomes["glibloop"]
    assert code == 0 and lines[-2:] == ["cleanup ran", "run_app returned"], lines
