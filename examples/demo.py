"""A headless tour of glibloop: asyncio and GLib on one thread.

Runs for about three seconds and prints a live line twice a second:
  * GLib's own timeout source (through PyGObject) ticking on the same
    main context that asyncio runs on;
  * a thousand tasks sleeping and waking;
  * worker threads feeding the loop with call_soon_threadsafe and
    run_coroutine_threadsafe;
  * a burst of call_soon callbacks, timed;
  * a blocking job in the default executor.
"""

import asyncio
import random
import threading
import time

import glibloop

try:
    from gi.repository import GLib
except ImportError:  # PyGObject is optional for glibloop, not for this demo
    GLib = None

DURATION = 3.0


class Stats:
    def __init__(self):
        self.glib_ticks = 0
        self.tasks_done = 0
        self.thread_msgs = 0
        self.thread_coros = 0
        self.burst_rate = 0.0
        self.executor_result = None

    def line(self, elapsed):
        return (
            f"t={elapsed:4.1f}s  GLib ticks={self.glib_ticks:3d}  "
            f"tasks done={self.tasks_done:4d}/1000  "
            f"thread msgs={self.thread_msgs:5d}  thread coros={self.thread_coros:3d}  "
            f"call_soon burst={self.burst_rate / 1e6:5.2f} M/s"
        )


async def sleeper(stats, i):
    await asyncio.sleep(random.uniform(0.05, DURATION - 0.5))
    stats.tasks_done += 1


async def doubled(x):
    await asyncio.sleep(0.001)
    return 2 * x


def worker_thread(loop, stats, stop_event, k):
    """Another thread talking to the loop the thread-safe ways."""
    i = 0
    while not stop_event.is_set():
        loop.call_soon_threadsafe(setattr, stats, "thread_msgs", stats.thread_msgs + 1)
        if i % 50 == 0:
            fut = asyncio.run_coroutine_threadsafe(doubled(i), loop)
            assert fut.result(timeout=5) == 2 * i
            loop.call_soon_threadsafe(setattr, stats, "thread_coros", stats.thread_coros + 1)
        i += 1
        time.sleep(0.002)


async def burst(stats):
    loop = asyncio.get_running_loop()
    n = 200_000
    done = loop.create_future()
    count = 0

    def cb():
        nonlocal count
        count += 1
        if count == n:
            done.set_result(None)

    t0 = time.perf_counter()
    for _ in range(n):
        loop.call_soon(cb)
    await done
    stats.burst_rate = n / (time.perf_counter() - t0)


def blocking_job():
    time.sleep(0.2)
    return sum(range(1_000_000))


async def main():
    loop = asyncio.get_running_loop()
    stats = Stats()
    print(f"glibloop {glibloop.__version__} on GLib {glibloop.GLIB_VERSION}; loop: {loop!r}")

    if GLib is not None:
        def on_glib_timeout():
            stats.glib_ticks += 1
            return GLib.SOURCE_CONTINUE

        # A plain GLib source on the default main context: dispatched by the
        # same GLib iteration that runs asyncio.
        glib_source = GLib.timeout_add(50, on_glib_timeout)
    else:
        print("(PyGObject not installed: skipping the GLib timeout)")

    stop_event = threading.Event()
    threads = [
        threading.Thread(target=worker_thread, args=(loop, stats, stop_event, k), daemon=True)
        for k in range(3)
    ]
    for t in threads:
        t.start()

    sleepers = [asyncio.create_task(sleeper(stats, i)) for i in range(1000)]
    executor_job = loop.run_in_executor(None, blocking_job)
    await burst(stats)

    start = loop.time()
    while (elapsed := loop.time() - start) < DURATION:
        print(stats.line(elapsed), flush=True)
        await asyncio.sleep(0.5)

    await asyncio.gather(*sleepers)
    stats.executor_result = await executor_job
    stop_event.set()
    await asyncio.gather(*(asyncio.to_thread(t.join) for t in threads))
    if GLib is not None:
        GLib.source_remove(glib_source)

    print(stats.line(loop.time() - start))
    print("summary:")
    print(f"  GLib timeout fired {stats.glib_ticks} times while asyncio ran (every 50 ms)")
    print(f"  1000 tasks slept and finished: {stats.tasks_done == 1000}")
    print(f"  {stats.thread_msgs} call_soon_threadsafe messages and "
          f"{stats.thread_coros} run_coroutine_threadsafe round trips from 3 threads")
    print(f"  200,000 call_soon callbacks at {stats.burst_rate:,.0f} per second")
    print(f"  executor job returned {stats.executor_result}")
    ok = stats.tasks_done == 1000 and (GLib is None or stats.glib_ticks > 10)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(glibloop.run(main()))
