"""CPython's test_sslproto (SSLProtocol, start_tls, TLS over the transport) on the
loop under test.  CPython's SelectorStartTLSTests builds a stock selector loop;
StartTLSTests runs BaseStartTLS on ours instead."""

import unittest

from ._harness import adopt, load_cpython_tests, new_loop

cpython_tests = load_cpython_tests("test_sslproto")


class StartTLSTests(cpython_tests.BaseStartTLS, unittest.TestCase):
    def new_loop(self):
        return new_loop()


adopt(
    cpython_tests,
    globals(),
    not_adopted={
        "SelectorStartTLSTests": "builds a stock SelectorEventLoop; StartTLSTests runs the same tests on ours",
        "ProactorStartTLSTests": "Windows only",
    },
)
