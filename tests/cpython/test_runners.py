"""CPython's test_runners on the loop under test (README.md explains the choices).

CPython's BaseTest installs a policy whose loops are asyncio.BaseEventLoop objects with
a mocked selector and a stubbed shutdown_asyncgens() that only records it was called;
tearDown then asserts the runner closed the loop and shut its async generators down.
Here the policy hands out loops under test instead, with the real shutdown_asyncgens()
wrapped to record the call.
"""

from ._harness import adopt, load_cpython_tests, new_loop

cpython_tests = load_cpython_tests("test_runners")


class RunnerLoopIsLoopUnderTest:
    def new_loop(self):
        loop = new_loop()
        loop.shutdown_ag_run = False
        shutdown_asyncgens = loop.shutdown_asyncgens

        async def recording_shutdown_asyncgens():
            await shutdown_asyncgens()
            loop.shutdown_ag_run = True

        loop.shutdown_asyncgens = recording_shutdown_asyncgens
        return loop


adopt(cpython_tests, globals(), mixins={"BaseTest": (RunnerLoopIsLoopUnderTest,)})
