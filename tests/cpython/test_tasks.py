"""CPython's test_tasks on the loop under test (README.md explains the choices)."""

from ._harness import adopt, load_cpython_tests

adopt(
    load_cpython_tests("test_tasks"),
    globals(),
    test_loop_kept={
        # Their helper _run_loop() spins `while loop._ready`, BaseEventLoop's private
        # ready deque; they test gather() on two fake loops, not a loop.
        "FutureGatherTests": "drives the loop through BaseEventLoop._ready",
        "CoroutineGatherTests": "drives the loop through BaseEventLoop._ready",
        # Steps the loop by hand with loop._run_once() and reads loop._ready.
        "*::test_log_destroyed_pending_task": "steps the loop with BaseEventLoop._run_once",
    },
)
