"""Run every test listed in known_failures.txt on its own, and say which now pass.

GLIBLOOP_CPYTHON_ALL=1 does this inside one pytest run, but the first listed test that
hangs (a transport that never completes its connect, say) makes the watchdog end the
whole run.  This runs each listed test in its own pytest process instead, so a hang costs
one timeout:

    python tests/cpython/sweep.py [-j 2] [--timeout 60] [--section later] [-k create_]

Prints one line per listed test: PASSES (drop it from the list), fails, HANGS or skipped,
and the reason it is listed.  Exit status 0.  The loop is GLIBLOOP_CPYTHON_LOOP's.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import pathlib
import re
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _known_failures import KnownFailures  # noqa: E402

LOOP_ENV = "GLIBLOOP_CPYTHON_LOOP"
PYTEST = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", f"--confcutdir={HERE}"]


def collected_node_ids() -> list[str]:
    out = subprocess.run(
        [*PYTEST, "--collect-only", "-q", str(HERE)],
        capture_output=True, text=True, check=False,
    ).stdout
    return [line for line in out.splitlines() if "::" in line and not line.startswith(" ")]


def harness_id(node_id: str) -> str:
    path, _, rest = node_id.partition("::")
    return f"{pathlib.PurePath(path).name}::{rest}"


def run_one(node_id: str, timeout: float) -> str:
    env = dict(os.environ, GLIBLOOP_CPYTHON_ALL="1", GLIBLOOP_CPYTHON_TIMEOUT=str(timeout))
    try:
        proc = subprocess.run(
            [*PYTEST, "-q", "-rN", node_id],
            capture_output=True, text=True, env=env, timeout=timeout + 60, check=False,
        )
    except subprocess.TimeoutExpired:
        return "HANGS"
    output = proc.stdout + proc.stderr
    if "Timeout (" in output:
        return "HANGS"
    for word, outcome in (("xpassed", "PASSES"), ("xfailed", "fails"), ("skipped", "skipped")):
        if re.search(rf"\b1 {word}\b", output):
            return outcome
    return f"unclear (exit {proc.returncode})"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per test")
    parser.add_argument("--section", action="append", help="only entries of this section")
    parser.add_argument("-k", dest="substring", help="only test ids containing this")
    args = parser.parse_args(argv)

    loop_name = os.environ.get(LOOP_ENV, "").strip() or "glibloop"
    known = KnownFailures.load()
    listed = []
    for node_id in collected_node_ids():
        entry = known.lookup(harness_id(node_id), loop_name)
        if entry is None or (args.section and entry.section not in args.section):
            continue
        if args.substring and args.substring not in node_id:
            continue
        listed.append((node_id, entry))
    print(f"{len(listed)} listed tests for {loop_name}, {args.jobs} at a time", flush=True)

    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        outcomes = pool.map(lambda item: run_one(item[0], args.timeout), listed)
        tally: dict[str, int] = {}
        for (node_id, entry), outcome in zip(listed, outcomes):
            tally[outcome] = tally.get(outcome, 0) + 1
            print(f"{outcome:8} {harness_id(node_id)}  [{entry.section}] {entry.reason}", flush=True)
    print(", ".join(f"{n} {outcome}" for outcome, n in sorted(tally.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
