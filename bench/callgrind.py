"""Instructions per operation of the loops' hot paths, under callgrind.

    python bench/callgrind.py [--loops glibloop,rloop,uvloop] [--paths call_soon,...]
                              [--n 20000] [--keep DIR] [--top 12]

Wall time on a shared 2-core machine moves by 10-20% from one minute to the
next; instruction counts do not.  Each (path, loop) runs twice under
``valgrind --tool=callgrind`` in a fresh interpreter, once with N operations
and once with 2N, and the report is (Ir(2N) - Ir(N)) / N: interpreter
start-up, imports, loop creation and teardown cancel out, what is left is
what one more operation costs, every thread of the process included (the
producer thread of call_soon_threadsafe, for one).  Child processes (`cat`
in the pipe path) are not traced.

With ``--top K`` the per-function self cost of that difference is printed
for each pair too (where one more operation spends its instructions), from
``callgrind_annotate`` of the two runs.

As a child (``--child PATH LOOP N``) it runs one path and exits; only the
parent calls valgrind.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
import workloads as wl  # noqa: E402

PATHS = {}


def path(name, doc, scale=1.0):
    def register(fn):
        PATHS[name] = (fn, doc, scale)
        return fn
    return register


def noop():
    pass


@path("call_soon", "call_soon(noop) from a callback, then run it: one schedule + one run")
def p_call_soon(loop, n):
    def burst():
        for _ in range(n):
            loop.call_soon(noop)
        loop.call_soon(loop.stop)
    loop.call_soon(burst)
    loop.run_forever()


@path("task_step", "one `await asyncio.sleep(0)` in one of 10 tasks: a Task step")
def p_task_step(loop, n):
    async def sleeper(k):
        for _ in range(k):
            await asyncio.sleep(0)

    async def main():
        await asyncio.gather(*(sleeper(n // 10) for _ in range(10)))
    loop.run_until_complete(main())


@path("timer_arm", "call_later(1000, noop) kept until the loop closes: arm + release")
def p_timer_arm(loop, n):
    handles = []

    def arm():
        call_later = loop.call_later
        for _ in range(n):
            handles.append(call_later(1000.0, noop))
        loop.stop()
    loop.call_soon(arm)
    loop.run_forever()
    handles.clear()


@path("timer_arm_cancel", "call_later(1000, noop) then cancel(), the loop runs on: "
      "arm + cancel + purge")
def p_timer_arm_cancel(loop, n):
    def arm():
        call_later = loop.call_later
        for _ in range(n):
            call_later(1000.0, noop).cancel()
        loop.call_soon(loop.stop)
    loop.call_soon(arm)
    loop.run_forever()
    loop.call_soon(loop.stop)
    loop.run_forever()


@path("timer_arm_fire", "call_later(d, cb) with d spread over 0-1 ms, all fire: arm + fire")
def p_timer_arm_fire(loop, n):
    fired = 0

    def cb():
        nonlocal fired
        fired += 1
        if fired == n:
            loop.stop()

    def arm():
        call_later = loop.call_later
        for i in range(n):
            call_later((i * 7919 % n) * (0.001 / n), cb)
    loop.call_soon(arm)
    loop.run_forever()
    assert fired == n


@path("call_later_cancel_row", "bench row call_later_cancel: one timer fired of "
      "50,000 half cancelled and re-armed (ops = timers fired)")
def p_call_later_row(loop, n):
    wl.call_later_cancel(loop, n)


@path("call_soon_threadsafe", "call_soon_threadsafe(cb) from another thread, run on the loop")
def p_threadsafe(loop, n):
    wl.call_soon_threadsafe(loop, n)


@path("streams_echo_1k", "one 1 KiB round trip through asyncio streams (both ends)",
      scale=0.1)
def p_streams(loop, n):
    wl.tcp_echo_streams_1k(loop, n)


@path("pipe_64mib", "one MiB of the 64 MiB pipe row through `cat` (ops = MiB)",
      scale=0.0004)
def p_pipe(loop, n):
    wl.subprocess_pipe_64mib(loop, n)


def child(path_name, loop_name, n):
    fn = PATHS[path_name][0]
    loop = wl.LOOPS[loop_name]()()
    try:
        fn(loop, n)
    finally:
        loop.close()


# --------------------------------------------------------------------------
# The parent
# --------------------------------------------------------------------------

def callgrind(path_name, loop_name, n, out_file, cache_sim=False):
    """{event: count} of one run (Ir; with cache_sim also the D1/LL misses)."""
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_file}",
           *(["--cache-sim=yes"] if cache_sim else []),
           sys.executable, str(Path(__file__).resolve()), "--child", path_name,
           loop_name, str(n)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{path_name} on {loop_name}: exit {proc.returncode}: "
                           + proc.stderr.strip().splitlines()[-1])
    events = None
    with open(out_file) as f:
        for line in f:
            if line.startswith("events:"):
                events = line.split()[1:]
            elif line.startswith("summary:") or line.startswith("totals:"):
                return dict(zip(events or ["Ir"], map(int, line.split()[1:])))
    raise RuntimeError(f"no summary in {out_file}")


def self_costs(out_file):
    """{function: self Ir} from callgrind_annotate."""
    proc = subprocess.run(["callgrind_annotate", "--threshold=100", out_file],
                          capture_output=True, text=True)
    costs = {}
    for line in proc.stdout.splitlines():
        m = re.match(r"\s*([\d,]+)\s+(?:\([^)]*\)\s+)?(\S.*)$", line)
        if m and ":" in m.group(2):
            name = m.group(2).split(" [")[0]
            name = name.rsplit("/", 1)[-1]  # file:function, without the directory
            costs[name] = costs.get(name, 0) + int(m.group(1).replace(",", ""))
    return costs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", nargs=3, metavar=("PATH", "LOOP", "N"))
    parser.add_argument("--loops", default="glibloop,rloop,uvloop")
    parser.add_argument("--paths", default=",".join(PATHS))
    parser.add_argument("--n", type=int, default=20000,
                        help="operations of the shorter run (scaled per path)")
    parser.add_argument("--top", type=int, default=0,
                        help="also print the K functions that cost most per operation")
    parser.add_argument("--cache-sim", action="store_true",
                        help="also count data-cache misses (D1mr+D1mw, DLmr+DLmw) per "
                             "operation; about twice as slow")
    parser.add_argument("--keep", type=Path, default=None,
                        help="keep the callgrind output files there")
    args = parser.parse_args(argv)
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]))
        return 0
    loops = [x for x in args.loops.split(",") if x]
    paths = [x for x in args.paths.split(",") if x]
    tmp = args.keep or Path(tempfile.mkdtemp(prefix="callgrind-"))
    tmp.mkdir(parents=True, exist_ok=True)
    table = {}
    for path_name in paths:
        n = max(1, int(args.n * PATHS[path_name][2]))
        for loop_name in loops:
            files = [tmp / f"{path_name}.{loop_name}.{k}.out" for k in (n, 2 * n)]
            try:
                small = callgrind(path_name, loop_name, n, files[0], args.cache_sim)
                large = callgrind(path_name, loop_name, 2 * n, files[1], args.cache_sim)
            except RuntimeError as exc:
                table[path_name, loop_name] = None
                print(f"{path_name} {loop_name}: {exc}", file=sys.stderr, flush=True)
                continue
            per_op = (large["Ir"] - small["Ir"]) / n
            table[path_name, loop_name] = per_op
            misses = ""
            if args.cache_sim:
                def delta(*keys):
                    return sum(large.get(k, 0) - small.get(k, 0) for k in keys) / n
                misses = (f", D1 misses {delta('D1mr', 'D1mw'):,.1f}/op, "
                          f"LL data misses {delta('DLmr', 'DLmw'):,.1f}/op")
            print(f"{path_name} {loop_name}: {per_op:,.0f} Ir/op{misses} (n={n})",
                  file=sys.stderr, flush=True)
            if args.top:
                a, b = self_costs(files[0]), self_costs(files[1])
                diff = sorted(((b.get(k, 0) - a.get(k, 0)) / n, k) for k in set(a) | set(b))
                for cost, name in reversed(diff[-args.top:]):
                    print(f"    {cost:10,.0f}  {name}", file=sys.stderr)
    header = ["path"] + loops
    print("| " + " | ".join(header) + " |")
    print("|---|" + "---:|" * len(loops))
    for path_name in paths:
        cells = []
        for loop_name in loops:
            v = table.get((path_name, loop_name))
            cells.append("n/a" if v is None else f"{v:,.0f}")
        print(f"| {path_name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
