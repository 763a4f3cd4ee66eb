"""Run every benchmark workload on every event loop, side by side.

    python bench/run.py [--loops a,b] [--workloads x,y] [--repeat N] [--quick]

Each (workload, loop) pair runs in a fresh interpreter (``sys.executable
bench/workloads.py ...``), one after another, so no loop sees another's
imports, allocator state or leftover threads.  The result is a Markdown table
of ops/s per loop and the ratio of glibloop to each other loop, followed by one
line per project target saying whether it was met.  The same report is written
to bench/results/latest.md (raw numbers in latest.json).

A loop that cannot be imported is shown as n/a.  The exit status is 0 even
when targets are missed: this is a report, not a test.  It is 2 only if a run
crashed or timed out, since then a number is missing for a reason other than
"not installed".
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
WORKLOADS_SCRIPT = BENCH_DIR / "workloads.py"
RESULTS_DIR = BENCH_DIR / "results"

sys.path.insert(0, str(BENCH_DIR))
import workloads as wl  # noqa: E402 - stdlib-only at import time
import http_wrk  # noqa: E402 - the aiohttp-under-wrk section
import fairness  # noqa: E402 - the asyncio/GLib fairness section
import soak  # noqa: E402 - the soak section
import dbus_calls  # noqa: E402 - the D-Bus section

SUBJECT = "glibloop"
#: Issue 13: glibloop at least this far ahead of the best other loop on
#: every row.
BEST_PEER_GOAL = 1.05
DEFAULT_REPEAT = 3
DEFAULT_PROCESSES = 2
QUICK_REPEAT = 1
QUICK_SCALE = 0.25

# Debug modes make every loop several times slower and would not be the
# configuration anyone ships; children run without them.
_STRIPPED_ENV = ("PYTHONASYNCIODEBUG", "PYTHONDEVMODE")


def child_env() -> dict:
    env = dict(os.environ)
    for name in _STRIPPED_ENV:
        env.pop(name, None)
    return env


def run_child(args: list[str], timeout: float) -> tuple[dict | None, str, int | None]:
    """Run workloads.py with args; return (last JSON object, stderr, returncode)."""
    cmd = [sys.executable, str(WORKLOADS_SCRIPT), *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True,
                              timeout=timeout, env=child_env())
    except subprocess.TimeoutExpired as exc:
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) \
            else (exc.stderr or "")
        return None, stderr, None
    parsed = None
    for line in reversed(proc.stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                parsed = json.loads(line)
            except json.JSONDecodeError:
                continue
            break
    return parsed, proc.stderr, proc.returncode


def measure(loop: str, workload: str, repeat: int, scale: float, timeout: float) -> dict:
    args = ["--loop", loop, "--workload", workload,
            "--repeat", str(repeat), "--scale", repr(scale)]
    parsed, stderr, returncode = run_child(args, timeout)
    if returncode is None:
        error = f"no result after {timeout:g} s"
        tail = stderr.strip().splitlines()[-1:]
        if tail:
            error += f"; last stderr line: {tail[0]}"
        return {"status": "timeout", "loop": loop, "workload": workload,
                "error": error}
    if parsed is None:
        tail = stderr.strip().splitlines()[-1:] or [f"exit status {returncode}"]
        return {"status": "error", "loop": loop, "workload": workload,
                "error": tail[0]}
    if parsed.get("status") == "error" and stderr.strip():
        parsed["stderr"] = stderr.strip()
    return parsed


def lower_is_better(workload: str) -> bool:
    spec = wl.WORKLOADS.get(workload)
    return bool(spec and spec.lower_is_better)


def better(workload: str, a: float, b: float) -> bool:
    """a is a better number than b on this row."""
    return a < b if lower_is_better(workload) else a > b


def best_of(previous: dict | None, new: dict) -> dict:
    """Merge one process's result into the best so far; a failure is sticky."""
    if previous is None:
        new.setdefault("processes", [new.get("runs") or new.get("status")])
        return new
    runs = previous["processes"] + [new.get("runs") or new.get("status")]
    if previous.get("status") != "ok":
        winner = previous
    elif new.get("status") != "ok" or better(new["workload"], new["value"],
                                             previous["value"]):
        winner = new
    else:
        winner = previous
    winner["processes"] = runs
    return winner


# --------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------

def fmt_rate(value: float) -> str:
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.3g}"


def fmt_count(value: int) -> str:
    return f"{value:,}"


def fmt_value(value: float, unit: str) -> str:
    if unit == "ops/s":
        return fmt_rate(value)
    if unit == "B/conn":
        return f"{value / 1000:.2f} KB"
    return f"{value:.3g} {unit}"


def cell(result: dict | None) -> str:
    if result is None:
        return "n/a"
    status = result.get("status")
    if status == "ok":
        return fmt_value(result["value"], result.get("unit", "ops/s"))
    if status == "unavailable":
        return "n/a"
    if status == "not applicable":
        return "-"
    return status or "error"  # "error" / "timeout"


def ratio(results: dict, loop: str, other: str) -> float | None:
    """How far `loop` is ahead of `other` on one row: loop/other for rates,
    other/loop where lower is better, so above 1 is ahead on every row."""
    a, b = results.get(loop), results.get(other)
    if not a or not b or a.get("status") != "ok" or b.get("status") != "ok":
        return None
    if lower_is_better(a["workload"]):
        return b["value"] / a["value"] if a["value"] > 0 else None
    return a["value"] / b["value"]


def best_peer(results: dict) -> str | None:
    """The loop other than SUBJECT with the best number on one row."""
    best = None
    for name, r in results.items():
        if name == SUBJECT or name in wl.EXTRA_LOOPS or r.get("status") != "ok":
            continue
        if best is None or better(r["workload"], r["value"], results[best]["value"]):
            best = name
    return best


def fmt_ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def build_table(workload_names, loops, results, scale, extra_rows=()) -> list[str]:
    """One row per workload: each loop's number, the best other loop and how
    far glibloop is ahead of it.  extra_rows: (name, unit, per-loop results)
    of the sections that are not workloads (aiohttp under wrk)."""
    # A loop that only runs some workloads (GLib alone) gets a column only
    # when one of them is in the table.
    loops = [name for name in loops if name not in wl.EXTRA_LOOPS
             or any(wl.WORKLOADS[w].runs_on(name) for w in workload_names)]
    header = ["workload", "unit", "size"] + loops + ["best peer", f"{SUBJECT} / best peer"]
    align = ["---", "---", "---:"] + ["---:"] * (len(header) - 3)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    rows = [(w, wl.WORKLOADS[w].unit + (" (lower is better)" if lower_is_better(w) else ""),
             fmt_count(wl.WORKLOADS[w].size_for(SUBJECT, scale)), results[w])
            for w in workload_names]
    rows += [(name, unit, "", per_loop) for name, unit, per_loop in extra_rows]
    for workload, unit, size, per_loop in rows:
        peer = best_peer(per_loop)
        row = [workload, unit, size] + [cell(per_loop.get(name)) for name in loops]
        row += [peer or "n/a", fmt_ratio(ratio(per_loop, SUBJECT, peer) if peer else None)]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def best_peer_lines(workload_names, results, extra_rows=()) -> tuple[list[str], int, int]:
    """Issue 13's target on every row: glibloop >= BEST_PEER_GOAL x the best peer."""
    lines, met, missed = [], 0, 0
    rows = [(w, results[w]) for w in workload_names]
    rows += [(name, per_loop) for name, _, per_loop in extra_rows]
    for workload, per_loop in rows:
        peer = best_peer(per_loop)
        label = f"{workload}: {SUBJECT} >= {BEST_PEER_GOAL:.2f}x the best peer"
        value = ratio(per_loop, SUBJECT, peer) if peer else None
        if value is None:
            lines.append(f"- {label}: n/a (no result for {SUBJECT} or any peer)")
            continue
        line, was_met, was_missed = http_wrk.verdict(f"{label} ({peer})", value,
                                                     BEST_PEER_GOAL)
        lines.append(line)
        met, missed = met + was_met, missed + was_missed
    return lines, met, missed


def target_lines(workload_names, loops, results) -> tuple[list[str], int, int]:
    lines, met, missed = [], 0, 0
    for workload in workload_names:
        for other, goal in wl.WORKLOADS[workload].targets.items():
            label = f"{workload}: {SUBJECT} >= {goal:.1f}x {other}"
            if SUBJECT not in loops or other not in loops:
                lines.append(f"- {label}: n/a (not run)")
                continue
            value = ratio(results[workload], SUBJECT, other)
            if value is None:
                missing = [name for name in (SUBJECT, other)
                           if results[workload].get(name, {}).get("status") != "ok"]
                lines.append(f"- {label}: n/a (no result for {', '.join(missing)})")
            else:
                line, was_met, was_missed = http_wrk.verdict(label, value, goal)
                lines.append(line)
                met, missed = met + was_met, missed + was_missed
    return lines, met, missed


def version_lines(versions: dict, loops) -> list[str]:
    lines = [f"- Python {versions.get('python', '?')} "
             f"({versions.get('python_impl', '?')}), {versions.get('platform', '?')}, "
             f"{os.cpu_count()} CPUs",
             f"- GLib {versions.get('glib', '?')} (runtime library)"]
    for name in loops:
        info = versions.get("loops", {}).get(name, {})
        if info.get("available"):
            lines.append(f"- {name}: {info.get('version', '?')}")
        else:
            lines.append(f"- {name}: not importable ({info.get('error', 'unknown')})")
    return lines


def note_lines(workload_names, loops, results, scale) -> list[str]:
    lines = []
    for workload in workload_names:
        spec = wl.WORKLOADS[workload]
        lines.append(f"- `{workload}`: {spec.description}")
        skipped = [name for name in loops if not spec.runs_on(name)
                   and name not in wl.EXTRA_LOOPS and name not in spec.skip]
        if skipped and spec.not_applicable:
            lines.append(f"  - not run on {', '.join(skipped)} (`-`): {spec.not_applicable}")
        for name, reason in spec.skip.items():
            if name in loops:
                lines.append(f"  - not run on {name} (`-`): {reason}")
        for name in loops:
            size = spec.size_for(name, scale)
            if size != spec.size_for(SUBJECT, scale):
                lines.append(f"  - {name} runs {fmt_count(size)} ops per run "
                             "(scaled down: slow loop); ops/s is comparable")
    problems = [r for per_loop in results.values() for r in per_loop.values()
                if r.get("status") in ("error", "timeout")]
    if problems:
        lines.append("")
        lines.append("Failed runs:")
        for r in problems:
            lines.append(f"- {r['workload']} on {r['loop']}: {r['status']}: "
                         f"{r.get('error', '')}")
    return lines


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------

def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loops", default=",".join(wl.LOOPS),
                        help="comma-separated loops (default: %(default)s)")
    parser.add_argument("--workloads", default=None,
                        help="comma-separated workloads (default: all)")
    parser.add_argument("--http", action="store_true",
                        help="also run the aiohttp/wrk section when --workloads is given")
    parser.add_argument("--no-http", action="store_true",
                        help="skip the aiohttp/wrk section")
    parser.add_argument("--http-only", action="store_true",
                        help="run only the aiohttp/wrk section")
    parser.add_argument("--fairness", action="store_true",
                        help="also run the fairness section (bench/fairness.py) when "
                             "--workloads is given")
    parser.add_argument("--no-fairness", action="store_true",
                        help="skip the fairness section")
    parser.add_argument("--soak", action="store_true",
                        help="also run the soak section (bench/soak.py) when --workloads "
                             "is given")
    parser.add_argument("--no-soak", action="store_true", help="skip the soak section")
    parser.add_argument("--dbus", action="store_true",
                        help="also run the D-Bus section (bench/dbus_calls.py) when "
                             "--workloads is given")
    parser.add_argument("--no-dbus", action="store_true", help="skip the D-Bus section")
    parser.add_argument("--soak-scale", type=float, default=None,
                        help="fraction of the soak's counts (default 1, 0.02 with --quick)")
    parser.add_argument("--plot", type=Path, default=None,
                        help="write the fairness section's frame-time plot (PNG) there")
    parser.add_argument("--http-duration", type=float, default=None,
                        help=f"seconds of each wrk run (default "
                             f"{http_wrk.DEFAULT_DURATION:g}, 2 with --quick)")
    parser.add_argument("--repeat", type=int, default=None,
                        help=f"measured runs per process, best kept "
                             f"(default {DEFAULT_REPEAT}, {QUICK_REPEAT} with --quick)")
    parser.add_argument("--processes", type=int, default=None,
                        help="fresh processes per (workload, loop), best kept; "
                             "some processes run slow as a whole (memory layout, "
                             f"neighbours) (default {DEFAULT_PROCESSES}, 1 with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: work x{QUICK_SCALE:g} (fixed-size workloads "
                             f"excepted), {QUICK_REPEAT} repeat")
    parser.add_argument("--scale", type=float, default=None,
                        help="multiply every workload's size")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds before one (workload, loop) process is killed")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "latest.md",
                        help="where to write the Markdown report (default: %(default)s)")
    args = parser.parse_args(argv)

    def split(value, known, what):
        names = [n.strip() for n in value.split(",") if n.strip()]
        unknown = [n for n in names if n not in known]
        if unknown:
            parser.error(f"unknown {what}: {', '.join(unknown)} "
                         f"(known: {', '.join(known)})")
        return names

    args.loops = split(args.loops, list(wl.LOOPS), "loop")
    args.run_http = (args.http or args.http_only or args.workloads is None) and not args.no_http
    args.run_fairness = ((args.fairness or args.workloads is None) and not args.no_fairness
                         and not args.http_only)
    args.run_soak = ((args.soak or args.workloads is None) and not args.no_soak
                     and not args.http_only)
    args.run_dbus = ((args.dbus or args.workloads is None) and not args.no_dbus
                     and not args.http_only)
    if args.soak_scale is None:
        args.soak_scale = 0.02 if args.quick else 1.0
    if args.http_only:
        args.workloads = []
    else:
        args.workloads = split(args.workloads or ",".join(wl.WORKLOADS),
                               list(wl.WORKLOADS), "workload")
    if args.repeat is None:
        args.repeat = QUICK_REPEAT if args.quick else DEFAULT_REPEAT
    if args.processes is None:
        args.processes = 1 if args.quick else DEFAULT_PROCESSES
    args.processes = max(1, args.processes)
    if args.scale is None:
        args.scale = QUICK_SCALE if args.quick else 1.0
    return args


def main(argv=None) -> int:
    args = parse_args(argv)

    versions, _, _ = run_child(["--versions"], args.timeout)
    versions = versions or {}
    available = {name: versions.get("loops", {}).get(name, {}).get("available", True)
                 for name in args.loops}

    for loop in args.loops:
        if not available[loop]:
            error = versions["loops"][loop].get("error", "")
            print(f"{loop}: not importable, shown as n/a ({error})",
                  file=sys.stderr, flush=True)

    results: dict[str, dict[str, dict]] = {w: {} for w in args.workloads}
    total = len(args.workloads) * len(args.loops) * args.processes
    done = 0
    for workload in args.workloads:
        # Rounds go over all loops before repeating, so a slow spell of the
        # machine hits every loop's round, not one loop's every process.
        for _ in range(args.processes):
            for loop in args.loops:
                done += 1
                if not wl.WORKLOADS[workload].runs_on(loop):
                    results[workload][loop] = {"status": "not applicable", "loop": loop,
                                               "workload": workload}
                    continue
                if not available[loop]:
                    results[workload][loop] = {"status": "unavailable", "loop": loop,
                                               "workload": workload}
                    continue
                result = measure(loop, workload, args.repeat, args.scale, args.timeout)
                if result.get("status") == "unavailable":
                    available[loop] = False  # import failed after all: skip the rest
                results[workload][loop] = best_of(results[workload].get(loop), result)
                print(f"[{done}/{total}] {workload} on {loop}: {cell(result)}"
                      + (f" ({result.get('error')})" if result.get("status") != "ok" else ""),
                      file=sys.stderr, flush=True)

    http_report = None
    if args.run_http:
        http_report = http_wrk.run(
            args.loops,
            duration=args.http_duration or (2.0 if args.quick else http_wrk.DEFAULT_DURATION),
            runs=1 if args.quick else http_wrk.DEFAULT_RUNS, rounds=args.processes,
            progress=lambda line: print(line, file=sys.stderr, flush=True))
        http_lines, http_met, http_missed, http_crashed = http_wrk.section(http_report)
    else:
        http_lines, http_met, http_missed, http_crashed = [], 0, 0, False

    fairness_report = None
    if args.run_fairness:
        fairness_report = fairness.run(
            args.loops, duration=1.0 if args.quick else fairness.DEFAULT_DURATION,
            progress=lambda line: print(line, file=sys.stderr, flush=True))
        if args.plot is not None and not fairness.plot(fairness_report, args.plot):
            print("matplotlib is not installed: no fairness plot", file=sys.stderr)

    dbus_report = None
    if args.run_dbus:
        dbus_report = dbus_calls.run(
            args.loops, duration=0.5 if args.quick else dbus_calls.DEFAULT_DURATION,
            progress=lambda line: print(line, file=sys.stderr, flush=True))

    soak_report = None
    if args.run_soak:
        soak_loops = [name for name in args.loops if name in soak.LOOPS]
        print(f"soak: {', '.join(soak_loops)}", file=sys.stderr, flush=True)
        soak_report = soak.run(soak_loops, args.soak_scale)

    extra_rows = http_wrk.table_rows(http_report) if http_report else []
    table = build_table(args.workloads, args.loops, results, args.scale, extra_rows)
    targets, met, missed = target_lines(args.workloads, args.loops, results)
    peer_targets, peer_met, peer_missed = best_peer_lines(args.workloads, results,
                                                          extra_rows)
    targets += peer_targets
    met, missed = met + http_met + peer_met, missed + http_missed + peer_missed
    targets += [line for line in http_lines if line.startswith(f"- {http_wrk.NAME}:")]
    command = " ".join(shlex.quote(a) for a in [Path(sys.executable).name,
                                                 "bench/run.py", *(argv or sys.argv[1:])])
    report = [
        "# glibloop benchmarks",
        "",
        f"{datetime.datetime.now().isoformat(timespec='seconds')}, `{command}`, "
        f"best of {args.processes} process(es) x {args.repeat} run(s), "
        "each process warmed up first"
        + (f", work scaled x{args.scale:g} except fixed-size workloads"
           if args.scale != 1.0 else "") + ".",
        "",
        *version_lines(versions, args.loops),
        "",
        *(table + [""] if args.workloads else []),
        f"Targets ({met} met, {missed} missed):",
        "",
        *targets,
    ]
    if args.workloads:
        report += ["", "Workloads:", "",
                   *note_lines(args.workloads, args.loops, results, args.scale)]
    if http_lines:
        report += ["", *http_lines]
    if fairness_report is not None and fairness_report["loops"]:
        report += ["", *fairness.section(fairness_report)]
    if dbus_report is not None and dbus_report["loops"]:
        report += ["", *dbus_calls.section(dbus_report)]
    if soak_report is not None and soak_report["results"]:
        report += ["", *soak.section(soak_report)]
    text = "\n".join(report) + "\n"
    print(text, end="")

    try:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
        args.output.with_suffix(".json").write_text(json.dumps(
            {"versions": versions, "repeat": args.repeat, "scale": args.scale,
             "processes": args.processes,
             "results": results, "http": http_report,
             "fairness": fairness_report, "dbus": dbus_report, "soak": soak_report},
            indent=2) + "\n")
        print(f"\n(report written to {args.output})", file=sys.stderr)
    except OSError as exc:
        print(f"\ncould not write {args.output}: {exc}", file=sys.stderr)

    crashed = http_crashed or any(r.get("status") in ("error", "timeout")
                                  for per_loop in results.values() for r in per_loop.values())
    return 2 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
