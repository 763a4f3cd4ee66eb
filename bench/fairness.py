"""Fairness between asyncio and GLib on one thread, under load.

    python bench/fairness.py [--loops glibloop,gi.events] [--duration 3] [--plot PNG]

Each case runs in a fresh interpreter (``--case NAME --loop NAME`` prints
one JSON line), with asyncio saturated by 100 stream connections echoing
1 KiB as fast as they can on the loop under test:

- ``frames_p0``, ``frames_p120``, ``frames_p200``: a 60 Hz GLib timeout
  (16 ms) at GLib priority 0 (``G_PRIORITY_DEFAULT``), 120 (GTK's redraw,
  ``GDK_PRIORITY_REDRAW``) or 200 (``G_PRIORITY_DEFAULT_IDLE``) on the
  loop's context stands for a GTK frame clock.  Reported: frames per
  second and how late each one fired (p50, p99, max, in ms).  A source
  that never fires shows 0 frames and no lateness.
- ``busy_idle``: the echo load's round trips per second beside an
  always-ready GLib idle (default idle priority), as a share of the same
  load alone.
- ``timer_flood``: ``asyncio.sleep(0.01)`` in a loop while 4 threads call
  ``call_soon_threadsafe`` as fast as they can: how late each sleep ended
  (p50, p99, max, in ms).  No echo load here.

bench/run.py runs this as its fairness section and draws the frame times of
``frames_p120`` for each loop into ``docs/images/frame-times.png`` (with
``--plot``; matplotlib, when installed, else the plot is skipped).  These
are measurements for a report, not pass/fail checks.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
import workloads as wl  # noqa: E402

LOOPS = ("glibloop", "gi.events")
FRAME_MS = 16
CONNECTIONS = 100
DEFAULT_DURATION = 3.0
CASES = ("frames_p0", "frames_p120", "frames_p200", "busy_idle", "timer_flood")


# --------------------------------------------------------------------------
# The child: one case on one loop
# --------------------------------------------------------------------------

class EchoLoad:
    """CONNECTIONS stream clients echoing 1 KiB through a stream server on
    the loop, until stop(); `trips` counts the round trips."""

    def __init__(self, loop):
        self.loop = loop
        self.trips = 0
        self.running = True
        self.tasks = []
        self.server = None

    async def start(self):
        msg = b"x" * 1024

        async def handler(reader, writer):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            writer.close()

        async def client(addr):
            reader, writer = await asyncio.open_connection(*addr)
            while self.running:
                writer.write(msg)
                await reader.readexactly(len(msg))
                self.trips += 1
            writer.close()

        self.server = await asyncio.start_server(handler, "127.0.0.1", 0)
        addr = self.server.sockets[0].getsockname()
        self.tasks = [asyncio.ensure_future(client(addr)) for _ in range(CONNECTIONS)]
        await asyncio.sleep(0.2)  # connected and echoing

    async def stop(self):
        self.running = False
        await asyncio.gather(*self.tasks)
        self.server.close()
        await self.server.wait_closed()


def percentile(values, p):
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def lateness_summary(late_ms):
    return {"count": len(late_ms), "p50_ms": percentile(late_ms, 50),
            "p99_ms": percentile(late_ms, 99),
            "max_ms": max(late_ms) if late_ms else None}


def case_frames(loop, priority, duration):
    from gi.repository import GLib
    ctx = wl._loop_context(loop)
    stamps = []

    def on_frame(*_user_data):
        stamps.append(time.monotonic())
        return GLib.SOURCE_CONTINUE

    async def main():
        load = EchoLoad(loop)
        await load.start()
        source = GLib.timeout_source_new(FRAME_MS)
        source.set_priority(priority)
        source.set_callback(on_frame)
        source.attach(ctx)
        t0 = time.monotonic()
        trips0 = load.trips
        await asyncio.sleep(duration)
        trips = load.trips - trips0
        source.destroy()
        await load.stop()
        return t0, trips

    t0, trips = loop.run_until_complete(main())
    # GLib schedules the next timeout FRAME_MS after it dispatched the last.
    intervals = [(b - a) * 1e3 for a, b in zip([t0] + stamps, stamps)]
    late = [max(0.0, i - FRAME_MS) for i in intervals]
    return {"priority": priority, "frames_per_sec": len(stamps) / duration,
            "asyncio_trips_per_sec": trips / duration,
            "intervals_ms": intervals, **lateness_summary(late)}


def case_busy_idle(loop, duration):
    from gi.repository import GLib
    ctx = wl._loop_context(loop)
    idles = [0]

    def on_idle(*_user_data):
        idles[0] += 1
        return GLib.SOURCE_CONTINUE

    async def main():
        load = EchoLoad(loop)
        await load.start()
        rates = {}
        for label in ("alone", "with_idle"):
            source = None
            if label == "with_idle":
                source = GLib.idle_source_new()
                source.set_callback(on_idle)
                source.attach(ctx)
            trips0 = load.trips
            await asyncio.sleep(duration / 2)
            rates[label] = (load.trips - trips0) / (duration / 2)
            if source is not None:
                source.destroy()
        await load.stop()
        return rates

    rates = loop.run_until_complete(main())
    return {"alone_trips_per_sec": rates["alone"],
            "with_idle_trips_per_sec": rates["with_idle"],
            "share": rates["with_idle"] / rates["alone"] if rates["alone"] else None,
            "idle_calls_per_sec": idles[0] / (duration / 2)}


def case_timer_flood(loop, duration, threads=4, delay=0.01):
    stop = threading.Event()
    pushed = [0] * threads

    def noop():
        pass

    def flood(i):
        call = loop.call_soon_threadsafe
        n = 0
        while not stop.is_set():
            call(noop)
            n += 1
        pushed[i] = n

    async def main():
        workers = [threading.Thread(target=flood, args=(i,)) for i in range(threads)]
        for w in workers:
            w.start()
        late = []
        try:
            end = time.monotonic() + duration
            while time.monotonic() < end:
                t = time.monotonic()
                await asyncio.sleep(delay)
                late.append((time.monotonic() - t - delay) * 1e3)
        finally:
            stop.set()
            for w in workers:
                w.join()
        return late

    late = loop.run_until_complete(main())
    return {"delay_ms": delay * 1e3, "pushed": sum(pushed), **lateness_summary(late)}


def run_case(loop_name, case, duration):
    make_loop = wl.LOOPS[loop_name]()
    loop = make_loop()
    asyncio.set_event_loop(loop)
    try:
        if case.startswith("frames_p"):
            result = case_frames(loop, int(case[len("frames_p"):]), duration)
        elif case == "busy_idle":
            result = case_busy_idle(loop, duration)
        elif case == "timer_flood":
            result = case_timer_flood(loop, duration)
        else:
            raise ValueError(case)
    finally:
        loop.close()
    return {"status": "ok", "loop": loop_name, "case": case, **result}


# --------------------------------------------------------------------------
# The parent: every case on every loop, the report and the plot
# --------------------------------------------------------------------------

def measure(loop_name, case, duration, timeout=120.0):
    cmd = [sys.executable, str(Path(__file__).resolve()), "--loop", loop_name,
           "--case", case, "--duration", repr(duration)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "loop": loop_name, "case": case}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    tail = proc.stderr.strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
    return {"status": "error", "loop": loop_name, "case": case, "error": tail[0]}


def run(loops, *, duration=DEFAULT_DURATION, progress=None):
    loops = [name for name in loops if name in LOOPS]
    report = {"duration": duration, "loops": loops, "results": {}}
    for case in CASES:
        for loop_name in loops:
            result = measure(loop_name, case, duration)
            report["results"].setdefault(case, {})[loop_name] = result
            if progress:
                progress(f"fairness {case} on {loop_name}: {result.get('status')}")
    return report


def _ms(value):
    return "-" if value is None else f"{value:.1f}"


def section(report):
    """Markdown lines for bench/run.py's report."""
    loops = report["loops"]
    if not loops:
        return []
    res = report["results"]
    lines = ["## Fairness between asyncio and GLib under load", "",
             f"100 stream connections echo 1 KiB flat out on the loop; {report['duration']:g} s "
             "per case, one process each (bench/fairness.py).", "",
             "| case | " + " | ".join(loops) + " |",
             "|---|" + "---|" * len(loops)]

    def row(label, fmt, case):
        cells = []
        for name in loops:
            r = res.get(case, {}).get(name, {})
            cells.append(fmt(r) if r.get("status") == "ok" else r.get("status", "n/a"))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")

    for prio in (0, 120, 200):
        row(f"60 Hz GLib timeout at priority {prio}: frames/s, lateness p50 / p99 / max ms",
            lambda r: f"{r['frames_per_sec']:.0f}/s, {_ms(r['p50_ms'])} / {_ms(r['p99_ms'])}"
                      f" / {_ms(r['max_ms'])}", f"frames_p{prio}")
    row("asyncio beside an always-ready GLib idle: share of its throughput alone",
        lambda r: f"{r['share']:.2f} ({r['with_idle_trips_per_sec'] / 1e3:.1f}k of "
                  f"{r['alone_trips_per_sec'] / 1e3:.1f}k trips/s)", "busy_idle")
    row("sleep(0.01) under a 4-thread call_soon_threadsafe flood: lateness p50 / p99 / max ms",
        lambda r: f"{_ms(r['p50_ms'])} / {_ms(r['p99_ms'])} / {_ms(r['max_ms'])}",
        "timer_flood")
    return lines


def plot(report, path):
    """Frame times of frames_p120 per loop; returns False without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(8, 3.6), dpi=100)
    for name in report["loops"]:
        r = report["results"].get("frames_p120", {}).get(name, {})
        if r.get("status") != "ok":
            continue
        times, t = [], 0.0
        for interval in r["intervals_ms"]:
            t += interval
            times.append(t / 1e3)
        label = f"{name}: {r['frames_per_sec']:.0f} frames/s"
        if times:
            ax.plot(times, r["intervals_ms"], marker=".", linewidth=0.8, label=label)
        else:
            # frozen: the whole measurement went by without a frame
            duration = report["duration"]
            ax.plot([0, duration], [duration * 1e3] * 2, linewidth=3,
                    label=f"{name}: no frame in {duration:g} s")
    ax.axhline(1000 / 60, color="grey", linestyle=":", linewidth=0.8)
    ax.set_yscale("log")
    ticks = [10, 1000 / 60, 30, 100, 300, 1000, 3000]
    ax.set_yticks(ticks)
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:.1f}".rstrip("0").rstrip(".")))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_ylim(8, 5000)
    ax.set_xlabel("seconds of load (100 echoing stream connections)")
    ax.set_ylabel("time between frames (ms)")
    ax.set_title("A 60 Hz GLib timeout at GTK's redraw priority (120) under asyncio load")
    ax.legend(loc="center right")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return True


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loops", default=",".join(LOOPS))
    parser.add_argument("--loop", choices=LOOPS)
    parser.add_argument("--case", choices=CASES)
    parser.add_argument("--duration", type=float, default=DEFAULT_DURATION)
    parser.add_argument("--plot", type=Path, default=None,
                        help="write the frame-time plot (PNG) there")
    args = parser.parse_args(argv)
    if args.case:
        print(json.dumps(run_case(args.loop or "glibloop", args.case, args.duration)),
              flush=True)
        return 0
    report = run(args.loops.split(","), duration=args.duration,
                 progress=lambda line: print(line, file=sys.stderr, flush=True))
    print("\n".join(section(report)))
    if args.plot is not None and not plot(report, args.plot):
        print("matplotlib is not installed: no plot", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
