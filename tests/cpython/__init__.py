"""CPython's own test.test_asyncio suites, run on the loop under test.

See README.md in this folder for how the loop is chosen and why.
"""
