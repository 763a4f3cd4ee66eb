"""CPython's test_streams (asyncio.streams over the loop's transports) on the loop under
test; StreamTests' setUp asks the policy."""

from ._harness import adopt, load_cpython_tests

adopt(load_cpython_tests("test_streams"), globals())
