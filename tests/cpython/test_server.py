"""CPython's test_server (start_server, start_unix_server, Server) on the loop under
test.  BaseStartServer's new_loop() asks the policy, which conftest.py points at the
loop under test; CPython's SelectorStartServerTests overrides it with a stock selector
loop, so StartServerTests takes its place."""

import unittest

from ._harness import adopt, load_cpython_tests, new_loop

cpython_tests = load_cpython_tests("test_server")


class StartServerTests(cpython_tests.BaseStartServer, unittest.TestCase):
    def new_loop(self):
        return new_loop()


adopt(
    cpython_tests,
    globals(),
    not_adopted={
        "SelectorStartServerTests": "builds a stock SelectorEventLoop; StartServerTests runs the same tests on ours",
        "ProactorStartServerTests": "Windows only",
    },
)
