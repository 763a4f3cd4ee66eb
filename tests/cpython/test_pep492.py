"""CPython's test_pep492 on the loop under test (README.md explains the choices).

CPython's BaseTest.setUp builds an asyncio.BaseEventLoop with a mocked selector; here
setUp builds a loop under test instead and skips only that step.
"""

from ._harness import adopt, load_cpython_tests, new_loop

cpython_tests = load_cpython_tests("test_pep492")


class Pep492LoopIsLoopUnderTest:
    def setUp(self):
        # The next setUp after CPython's BaseTest: test_utils.TestCase's.
        super(cpython_tests.BaseTest, self).setUp()
        self.loop = new_loop()
        self.set_event_loop(self.loop)


adopt(cpython_tests, globals(), mixins={"BaseTest": (Pep492LoopIsLoopUnderTest,)})
