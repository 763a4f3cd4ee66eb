"""An aiohttp hello-world server on one event loop, for bench/http_wrk.py.

    python bench/http_server.py --loop glibloop [--port 0]

Prints one JSON line {"port": N, "loop": "...", "loop_type": "..."} on stdout
when it is listening on 127.0.0.1, then serves until it receives SIGTERM or
SIGINT (or its stdin closes).  GET / answers "Hello, World!"; GET /stats
answers the number of hello requests served so far, so the driver can check
that the server really did the work wrk counted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import workloads as wl  # noqa: E402 - loop factories, stdlib-only at import

HELLO = "Hello, World!"


def build_app():
    from aiohttp import web

    served = 0

    async def hello(request):
        nonlocal served
        served += 1
        return web.Response(text=HELLO)

    async def stats(request):
        return web.json_response({"served": served})

    app = web.Application()
    app.router.add_get("/", hello)
    app.router.add_get("/stats", stats)
    return app


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loop", required=True, choices=sorted(wl.LOOPS))
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)

    from aiohttp import web

    loop = wl.LOOPS[args.loop]()()
    asyncio.set_event_loop(loop)
    # No access log: nobody benchmarks a server that formats a log line per
    # request it then throws away.
    runner = web.AppRunner(build_app(), access_log=None, handle_signals=False)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", args.port, backlog=1024)
    loop.run_until_complete(site.start())
    port = site._server.sockets[0].getsockname()[1]

    # Stop on SIGTERM/SIGINT, or when the driver goes away (stdin closes).
    # The signal only sets a flag through call_soon_threadsafe from a
    # watcher thread, so it works the same on every loop.
    stop = threading.Event()

    def watch_stdin():
        # os.read on the fd, not sys.stdin: a daemon thread blocked inside
        # a buffered reader aborts the interpreter's shutdown.
        try:
            while os.read(0, 4096):
                pass
        except OSError:
            pass
        stop.set()

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    threading.Thread(target=watch_stdin, daemon=True).start()

    def stopper():
        stop.wait()
        loop.call_soon_threadsafe(loop.stop)

    threading.Thread(target=stopper, daemon=True).start()

    print(json.dumps({"port": port, "loop": args.loop,
                      "loop_type": f"{type(loop).__module__}.{type(loop).__qualname__}",
                      "pid": os.getpid()}), flush=True)
    try:
        loop.run_forever()
    finally:
        loop.run_until_complete(runner.cleanup())
        loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
