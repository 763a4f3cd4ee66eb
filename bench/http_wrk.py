"""aiohttp hello world under wrk, one server per loop, over loopback.

    python bench/http_wrk.py [--loops glibloop,uvloop] [--duration 5] [--connections 50]

For each loop, bench/http_server.py serves GET / in a fresh interpreter
pinned to one CPU, and wrk (Debian's package `wrk`) loads it from the other
CPU: one thread, 50 keep-alive connections, `--duration` seconds, after a
1-second warm-up.  In each round every loop gets a fresh server; all of them
are started first (an idle one waits in its poll), then wrk loads one at a
time, one run per loop in turn, the order reversed every other pass, so a
slow spell of a shared machine hits every loop.  The best and the median
requests/s of each loop are kept.  bench/run.py runs this as its HTTP
section; run alone, it prints the same Markdown section.

A run counts only if wrk saw no socket errors and no non-2xx answers, the
answer body was checked before the load, and the server's own count of
served requests is at least what wrk reports as completed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
SERVER_SCRIPT = BENCH_DIR / "http_server.py"

sys.path.insert(0, str(BENCH_DIR))
import workloads as wl  # noqa: E402

SUBJECT = "glibloop"
NAME = "aiohttp_hello_wrk"
#: glibloop/<loop> ratios the project aims for (issue: at least uvloop).
TARGETS = {"uvloop": 1.0}
#: What the issue measured with aiohttp 3.8, for the report.
ISSUE_REFERENCE = "asyncio 15.7k, uvloop 17.8k, gi.events 12.1k req/s (aiohttp 3.8)"

DEFAULT_DURATION = 5.0
DEFAULT_CONNECTIONS = 50
DEFAULT_RUNS = 2
WARMUP = 1.0


class HttpBenchError(RuntimeError):
    pass


def cpu_split():
    """(server CPUs, wrk CPUs): one CPU each when there are two or more."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return None, None
    if len(cpus) < 2:
        return None, None
    return {cpus[-1]}, {cpus[0]}


def _pinned(cpus):
    if not cpus:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def child_env():
    env = dict(os.environ)
    for name in ("PYTHONASYNCIODEBUG", "PYTHONDEVMODE"):
        env.pop(name, None)
    return env


def start_server(loop, cpus, timeout=30.0):
    proc = subprocess.Popen(
        [sys.executable, str(SERVER_SCRIPT), "--loop", loop],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=child_env(), preexec_fn=_pinned(cpus))
    deadline = time.monotonic() + timeout
    line = proc.stdout.readline()  # the server prints its port when listening
    if not line.startswith("{") or time.monotonic() > deadline:
        stop_server(proc)
        err = proc.stderr.read().strip().splitlines()
        raise HttpBenchError(f"server did not start: {err[-1] if err else line.strip()!r}")
    return proc, json.loads(line)


def stop_server(proc):
    if proc.poll() is None:
        try:
            proc.stdin.close()
        except OSError:
            pass
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    for stream in (proc.stdout, proc.stderr):
        if stream:
            stream.close()
    return proc.returncode


def fetch(url):
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.status, resp.read()


_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
_TOTAL = re.compile(r"(\d+) requests in ([\d.]+)(\w+),")
_SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")


def parse_wrk(text):
    rps = _RPS.search(text)
    total = _TOTAL.search(text)
    if not rps or not total:
        raise HttpBenchError(f"could not read wrk's output: {text.strip()[-200:]!r}")
    errors = _SOCKET_ERRORS.search(text)
    non_2xx = _NON_2XX.search(text)
    return {"requests_per_sec": float(rps.group(1)), "requests": int(total.group(1)),
            "socket_errors": sum(map(int, errors.groups())) if errors else 0,
            "non_2xx": int(non_2xx.group(1)) if non_2xx else 0}


def run_wrk(wrk, url, duration, connections, cpus):
    cmd = [wrk, "-t1", f"-c{connections}", f"-d{duration:g}s", "--latency", url]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60,
                          preexec_fn=_pinned(cpus))
    if proc.returncode != 0:
        raise HttpBenchError(f"wrk failed ({proc.returncode}): {proc.stderr.strip()[-200:]}")
    return parse_wrk(proc.stdout)


class ServerUnderTest:
    """One server process for one loop, checked before and after each run."""

    def __init__(self, loop, cpus):
        self.loop = loop
        self.proc, self.info = start_server(loop, cpus)
        self.base = f"http://127.0.0.1:{self.info['port']}"
        status, body = fetch(self.base + "/")
        if (status, body) != (200, b"Hello, World!"):
            self.stop()
            raise HttpBenchError(f"wrong answer before the load: {status} {body[:60]!r}")

    def served(self):
        return json.loads(fetch(self.base + "/stats")[1])["served"]

    def cpu_seconds(self):
        """user + system CPU time of the server process so far (Linux), or None."""
        try:
            with open(f"/proc/{self.info['pid']}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def load(self, wrk, duration, connections, cpus):
        before = self.served()
        cpu_before = self.cpu_seconds()
        result = run_wrk(wrk, self.base + "/", duration, connections, cpus)
        cpu_after = self.cpu_seconds()
        served = self.served() - before
        if cpu_before is not None and cpu_after is not None and served:
            # Of the server's CPU time during the run; the two /stats
            # requests around it are noise next to thousands of requests.
            result["cpu_us_per_request"] = (cpu_after - cpu_before) / served * 1e6
        if result["socket_errors"] or result["non_2xx"]:
            raise HttpBenchError(f"wrk saw {result['socket_errors']} socket errors and "
                                 f"{result['non_2xx']} non-2xx answers")
        if served < result["requests"]:
            raise HttpBenchError(f"wrk counted {result['requests']} requests, "
                                 f"the server served {served}")
        return result

    def stop(self):
        code = stop_server(self.proc)
        if code not in (0, None):
            raise HttpBenchError(f"server exited with status {code}")


def measure_round(loops, wrk, duration, connections, runs, progress=None):
    """One round: a fresh server per loop, all started before the load (an
    idle server waits in its poll and costs nothing), then `runs` passes of
    one wrk run per loop, the order reversed on every other pass, so a slow
    spell of the machine hits every loop.  Returns {loop: [req/s...] | error}."""
    server_cpus, wrk_cpus = cpu_split()
    servers, out = {}, {}
    try:
        for loop in loops:
            try:
                servers[loop] = ServerUnderTest(loop, server_cpus)
                run_wrk(wrk, servers[loop].base + "/", WARMUP, connections, wrk_cpus)
                out[loop] = []
            except (HttpBenchError, OSError, subprocess.SubprocessError) as exc:
                out[loop] = exc
        for index in range(runs):
            order = loops if index % 2 == 0 else loops[::-1]
            for loop in order:
                if not isinstance(out.get(loop), list):
                    continue
                try:
                    rps = servers[loop].load(wrk, duration, connections, wrk_cpus)
                    out[loop].append((rps["requests_per_sec"],
                                      rps.get("cpu_us_per_request")))
                    if progress:
                        progress(f"[http] {loop}: {rps['requests_per_sec']:.0f} req/s")
                except (HttpBenchError, OSError, subprocess.SubprocessError) as exc:
                    out[loop] = exc
    finally:
        for loop, server in servers.items():
            try:
                server.stop()
            except HttpBenchError as exc:
                out[loop] = exc
    return out, {loop: server.info["loop_type"] for loop, server in servers.items()}


def aiohttp_version():
    try:
        import aiohttp
    except ImportError as exc:
        return None, f"{type(exc).__name__}: {exc}"
    return aiohttp.__version__, None


def wrk_version(wrk):
    proc = subprocess.run([wrk, "-v"], capture_output=True, text=True)
    first = (proc.stdout + proc.stderr).strip().splitlines()
    return first[0].split(" Copyright")[0] if first else "?"


def run(loops, *, duration=DEFAULT_DURATION, connections=DEFAULT_CONNECTIONS,
        runs=DEFAULT_RUNS, rounds=2, progress=None):
    """Measure every loop; return {"results": {loop: result}, "problem": str|None, ...}."""
    loops = [name for name in loops if name not in wl.EXTRA_LOOPS]
    report = {"loops": loops, "duration": duration, "connections": connections,
              "runs": runs, "rounds": rounds, "results": {}, "problem": None}
    wrk = shutil.which("wrk")
    version, error = aiohttp_version()
    if wrk is None:
        report["problem"] = "wrk is not installed (Debian package `wrk`)"
    elif version is None:
        report["problem"] = f"aiohttp is not importable ({error})"
    if report["problem"]:
        return report
    report["aiohttp"] = version
    report["wrk"] = wrk_version(wrk)
    server_cpus, wrk_cpus = cpu_split()
    report["cpus"] = (f"server on CPU {min(server_cpus)}, wrk on CPU {min(wrk_cpus)}"
                      if server_cpus else "not pinned (fewer than 2 CPUs)")
    results = report["results"]
    runnable = []
    for loop in loops:
        try:
            wl.LOOPS[loop]()
            runnable.append(loop)
        except Exception as exc:  # noqa: BLE001 - not installed: n/a
            results[loop] = {"status": "unavailable", "loop": loop,
                             "error": f"{type(exc).__name__}: {exc}"}
    for index in range(max(1, rounds)):
        current = [loop for loop in runnable
                   if results.get(loop, {}).get("status") != "error"]
        if not current:
            break
        # Each round starts (and first loads) another loop.
        shift = index % len(current)
        current = current[shift:] + current[:shift]
        per_loop, loop_types = measure_round(current, wrk, duration, connections, runs,
                                             progress)
        for loop, value in per_loop.items():
            if isinstance(value, Exception):
                results[loop] = {"status": "error", "loop": loop, "error": str(value)}
                if progress:
                    progress(f"[http] {loop}: error ({value})")
                continue
            entry = results.setdefault(loop, {"status": "ok", "loop": loop, "runs": [],
                                              "cpu_us_per_request": []})
            entry["runs"] += [rate for rate, _ in value]
            entry["cpu_us_per_request"] += [cpu for _, cpu in value if cpu is not None]
            entry["loop_type"] = loop_types[loop]
    for entry in results.values():
        if entry.get("status") == "ok":
            entry["requests_per_sec"] = max(entry["runs"])
            entry["median"] = statistics.median(entry["runs"])
            cpu = entry["cpu_us_per_request"]
            entry["cpu_median"] = statistics.median(cpu) if cpu else None
    return report


def verdict(label, value, goal):
    """A target line and whether it was met: (line, met 0/1, missed 0/1)."""
    if value >= goal:
        return f"- {label}: met ({value:.2f}x)", 1, 0
    return f"- {label}: MISSED ({value:.2f}x)", 0, 1


def _ratio(results, a, b, key="requests_per_sec"):
    ra, rb = results.get(a, {}), results.get(b, {})
    if ra.get("status") != "ok" or rb.get("status") != "ok":
        return None
    return ra[key] / rb[key]


def table_rows(report):
    """The aiohttp row of run.py's main table: (name, unit, {loop: result})
    with each loop's median req/s as the value."""
    if report.get("problem"):
        return []
    per_loop = {}
    for name, r in report["results"].items():
        per_loop[name] = dict(r, workload=NAME, unit="ops/s",
                              value=r.get("median")) if r.get("status") == "ok" else r
    return [(NAME, "req/s (median)", per_loop)]


def section(report):
    """(Markdown lines, targets met, targets missed, crashed?)."""
    lines = ["## aiohttp hello world under wrk", ""]
    if report["problem"]:
        lines += [f"Not run: {report['problem']}.", ""]
        return lines, 0, 0, False
    loops, results = report["loops"], report["results"]
    lines += [f"aiohttp {report['aiohttp']}, {report['wrk']}; `wrk -t1 "
              f"-c{report['connections']} -d{report['duration']:g}s` on "
              f"http://127.0.0.1/ after a {WARMUP:g} s warm-up, {report['cpus']}; "
              f"{report['rounds']} round(s) of fresh servers x {report['runs']} "
              "interleaved run(s) per loop; the target uses the median run. "
              "Server CPU is the server process's user + system time per request served.",
              f"The issue measured {ISSUE_REFERENCE}.", ""]
    others = [name for name in loops if name != SUBJECT] if SUBJECT in loops else []
    header = ["loop", "median req/s", "best req/s", "runs (k req/s)",
              "server CPU µs/request"] + (
        [f"{SUBJECT}/loop median", f"{SUBJECT}/loop best"] if others else [])
    lines += ["| " + " | ".join(header) + " |",
              "|---|---:|---:|---|---:|" + ("---:|---:|" if others else "")]
    for name in loops:
        r = results.get(name, {})
        if r.get("status") == "ok":
            cpu = r.get("cpu_median")
            cells = [f"{r['median']:,.0f}", f"{r['requests_per_sec']:,.0f}",
                     " ".join(f"{v / 1000:.1f}" for v in r["runs"]),
                     "n/a" if cpu is None else f"{cpu:.1f}"]
        else:
            cells = ["n/a" if r.get("status") == "unavailable" else r.get("status", "n/a"),
                     "", "", ""]
        row = [name, *cells]
        if others:
            for key in ("median", "requests_per_sec"):
                ratio = _ratio(results, SUBJECT, name, key) if name != SUBJECT else None
                row.append("" if name == SUBJECT else
                           ("n/a" if ratio is None else f"{ratio:.2f}x"))
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    met = missed = 0
    for other, goal in TARGETS.items():
        label = f"{NAME}: {SUBJECT} >= {goal:.1f}x {other} (median req/s)"
        ratio = _ratio(results, SUBJECT, other, "median")
        if SUBJECT not in loops or other not in loops:
            lines.append(f"- {label}: n/a (not run)")
        elif ratio is None:
            lines.append(f"- {label}: n/a (no result)")
        else:
            line, was_met, was_missed = verdict(label, ratio, goal)
            lines.append(line)
            met, missed = met + was_met, missed + was_missed
    types = [f"{name}: `{results[name]['loop_type']}`" for name in loops
             if results.get(name, {}).get("status") == "ok"]
    if types:
        lines.append(f"- servers ran on {', '.join(types)}")
    failed = [r for r in results.values() if r.get("status") == "error"]
    for r in failed:
        lines.append(f"- {r['loop']} failed: {r['error']}")
    return lines, met, missed, bool(failed)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loops", default=",".join(n for n in wl.LOOPS
                                                    if n not in wl.EXTRA_LOOPS))
    parser.add_argument("--duration", type=float, default=DEFAULT_DURATION)
    parser.add_argument("--connections", type=int, default=DEFAULT_CONNECTIONS)
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS,
                        help="measured wrk runs per loop in each round")
    parser.add_argument("--rounds", type=int, default=2,
                        help="rounds, each with a fresh server process per loop")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args(argv)
    loops = [n.strip() for n in args.loops.split(",") if n.strip()]
    unknown = [n for n in loops if n not in wl.LOOPS]
    if unknown:
        parser.error(f"unknown loop(s): {', '.join(unknown)}")
    report = run(loops, duration=args.duration, connections=args.connections,
                 runs=args.runs, rounds=args.rounds,
                 progress=lambda s: print(s, file=sys.stderr, flush=True))
    lines, _, _, crashed = section(report)
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 2 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
