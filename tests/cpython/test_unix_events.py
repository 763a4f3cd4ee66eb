"""CPython's test_unix_events on the loop under test (README.md explains the choices).

Four of its classes test asyncio's own Unix classes rather than a loop, and are not
adopted, nor is the sendfile class (the reasons are in NOT_ADOPTED and README.md).  The behaviour they cover is
tested on our loop by test_events' signal, pipe and pty tests and by tests/test_signals.py
and tests/test_pipes.py.
"""

from ._harness import adopt, load_cpython_tests

NOT_ADOPTED = {
    "SelectorEventLoopSignalTests": (
        "builds a stock SelectorEventLoop and checks its private implementation "
        "(_handle_signal, a writable _signal_handlers dict, calls into a mocked "
        "asyncio.unix_events.signal module)"
    ),
    "SelectorEventLoopUnixSocketTests": "builds a stock SelectorEventLoop",
    "SelectorEventLoopUnixSockSendfileTests": (
        "sock_sendfile belongs to the networking issue; most of its tests read "
        "BaseSelectorEventLoop._selector"
    ),
    "UnixReadPipeTransportTests": (
        "constructs asyncio's own unix_events._UnixReadPipeTransport with os.read "
        "mocked; glibloop's read pipe transport is C (pipe.c)"
    ),
    "UnixWritePipeTransportTests": (
        "constructs asyncio's own unix_events._UnixWritePipeTransport with os.write "
        "mocked; glibloop's write pipe transport is C (pipe.c)"
    ),
    # 3.14+
    "PidfdChildWatcherTests": (
        "mocks os.waitpid and waits until asyncio's Python pidfd watcher calls it; "
        "glibloop reaps its children in C (process.c) and never calls os.waitpid"
    ),
}

adopt(load_cpython_tests("test_unix_events"), globals(), not_adopted=NOT_ADOPTED)
