"""CPython's test_sock_lowlevel (loop.sock_*) on the loop under test.

CPython runs BaseSockTestsMixin once per stock selector loop (SelectEventLoopTests,
EPollEventLoopTests, ...); here SockTests runs it once, on the loop under test.
"""

from test.test_asyncio import utils as test_utils

from ._harness import adopt, load_cpython_tests, new_loop

cpython_tests = load_cpython_tests("test_sock_lowlevel")


class SockTests(cpython_tests.BaseSockTestsMixin, test_utils.TestCase):
    def create_event_loop(self):
        return new_loop()


STOCK = "runs BaseSockTestsMixin on a stock selector loop; SockTests runs it on ours"

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
