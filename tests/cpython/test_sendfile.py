"""CPython's test_sendfile (loop.sendfile, loop.sock_sendfile) on the loop under test.

CPython runs SendfileTestsBase once per stock selector loop; here SendfileTests runs it
once, on the loop under test.
"""

from test.test_asyncio import utils as test_utils

from ._harness import adopt, load_cpython_tests, new_loop

cpython_tests = load_cpython_tests("test_sendfile")


class SendfileTests(cpython_tests.SendfileTestsBase, test_utils.TestCase):
    def create_event_loop(self):
        return new_loop()


STOCK = "runs SendfileTestsBase on a stock selector loop; SendfileTests runs it on ours"

adopt(
    cpython_tests,
    globals(),
    not_adopted={
        name: STOCK
        for name in (
            "SelectEventLoopTests",
            "PollEventLoopTests",
            "EPollEventLoopTests",
            "KqueueEventLoopTests",
            "ProactorEventLoopTests",
        )
    },
)
