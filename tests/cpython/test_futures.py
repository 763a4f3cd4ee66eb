"""CPython's test_futures on the loop under test (README.md explains the choices)."""

from ._harness import adopt, load_cpython_tests

adopt(load_cpython_tests("test_futures"), globals())
