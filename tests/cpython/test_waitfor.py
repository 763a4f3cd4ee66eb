"""CPython's test_waitfor on the loop under test (README.md explains the choices)."""

from ._harness import adopt, load_cpython_tests

adopt(load_cpython_tests("test_waitfor"), globals())
