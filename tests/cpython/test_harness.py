"""Checks of the harness itself: the loop under test really is the one the CPython tests
get, the policy does not leak, and known_failures.txt names tests that exist."""

import asyncio
import importlib
import pathlib
import sys
import unittest

import pytest
from test.test_asyncio import utils as test_utils

from . import _harness
from ._known_failures import (
    KnownFailures,
    KnownFailuresError,
    parse,
    sections_to_run,
)

HERE = pathlib.Path(__file__).resolve().parent
LOOP_CLASS = _harness.LOOP.loop_class


def _adopted_test_ids():
    loader = unittest.TestLoader()
    ids = set()
    for path in sorted(HERE.glob("test_*.py")):
        if path.name == pathlib.Path(__file__).name:
            continue
        module = importlib.import_module(f"{__package__}.{path.stem}")
        for name, cls in vars(module).items():
            if isinstance(cls, type) and issubclass(cls, unittest.TestCase):
                for method in loader.getTestCaseNames(cls):
                    ids.add(f"{path.name}::{name}::{method}")
    return ids


def test_every_known_failure_names_an_existing_test():
    ids = _adopted_test_ids()
    stale = [
        f"known_failures.txt:{entry.lineno}: {entry.pattern}"
        for entry in KnownFailures.load().entries
        # An entry for other Pythons may name a test only they have.
        if entry.for_this_python()
        and not any(entry.matches(test_id) for test_id in ids)
    ]
    assert not stale, "entries that match no test:\n" + "\n".join(stale)


def test_policy_hands_out_the_loop_under_test():
    assert isinstance(_harness.current_policy(), _harness.LoopUnderTestPolicy)
    loop = asyncio.new_event_loop()
    try:
        assert isinstance(loop, LOOP_CLASS)
    finally:
        loop.close()


def test_asyncio_run_uses_the_loop_under_test():
    async def running_loop_type():
        return type(asyncio.get_running_loop())

    assert issubclass(asyncio.run(running_loop_type()), LOOP_CLASS)


def test_adopted_event_loop_tests_create_the_loop_under_test():
    events_module = importlib.import_module(f"{__package__}.test_events")
    for name in ("EventLoopTests", "SubprocessTests"):
        loop = getattr(events_module, name).create_event_loop(None)
        try:
            assert isinstance(loop, LOOP_CLASS), name
        finally:
            loop.close()


def test_subprocess_tests_do_not_rerun_the_event_loop_tests():
    events_module = importlib.import_module(f"{__package__}.test_events")
    names = unittest.TestLoader().getTestCaseNames(events_module.SubprocessTests)
    assert names and all(name.startswith("test_subprocess") for name in names)


class IsolatedAsyncioCaseRunsOnLoopUnderTest(unittest.IsolatedAsyncioTestCase):
    async def test_running_loop(self):
        self.assertIsInstance(asyncio.get_running_loop(), LOOP_CLASS)


class NewTestLoopChoice(_harness.NewTestLoopIsLoopUnderTest, test_utils.TestCase):
    test_loop_kept = {"NewTestLoopChoice::test_kept_*": "checks the keep list"}

    def test_without_generator_is_loop_under_test(self):
        self.assertIsInstance(self.new_test_loop(), LOOP_CLASS)

    def test_with_generator_is_virtual_time(self):
        def gen():
            yield

        self.assertIsInstance(self.new_test_loop(gen), test_utils.TestLoop)

    def test_kept_test_keeps_test_loop(self):
        self.assertIsInstance(self.new_test_loop(), test_utils.TestLoop)


def test_known_failures_parser():
    entries = parse(
        "# comment\n[later]\na.py::C::test_x  needs sockets\n[stock]\nb.py::*  broken here\n"
    )
    assert [(e.section, e.pattern, e.reason) for e in entries] == [
        ("later", "a.py::C::test_x", "needs sockets"),
        ("stock", "b.py::*", "broken here"),
    ]
    known = KnownFailures(entries)
    assert known.lookup("a.py::C::test_x", "glibloop").section == "later"
    assert known.lookup("a.py::C::test_x", "asyncio") is None
    assert known.lookup("b.py::D::test_y", "uvloop").section == "stock"


def test_known_failures_version_sections():
    import sys

    now = sys.version_info[:2]
    later = (now[0], now[1] + 1)
    entries = parse(
        f"[later {now[0]}.{now[1]}+]\na.py::C::test_x  from this Python on\n"
        f"[later {later[0]}.{later[1]}+]\nb.py::C::test_y  from the next one on\n"
        "[later]\nc.py::C::test_z  always\n"
    )
    known = KnownFailures(entries)
    assert known.lookup("a.py::C::test_x", "glibloop") is not None
    assert known.lookup("b.py::C::test_y", "glibloop") is None
    assert known.lookup("c.py::C::test_z", "glibloop") is not None


@pytest.mark.parametrize(
    "text",
    ["a.py::C::test_x  no section\n", "[nope]\n", "[later]\na.py::C::test_x\n", "[later]\ntest_x reason\n"],
)
def test_known_failures_parser_rejects(text):
    with pytest.raises(KnownFailuresError):
        parse(text)


def test_sections_to_run():
    assert sections_to_run("") == frozenset()
    assert sections_to_run("0") == frozenset()
    assert sections_to_run("1") == frozenset({"stock", "later", "glibloop", "uvloop"})
    assert sections_to_run("later, glibloop") == frozenset({"later", "glibloop"})
    with pytest.raises(KnownFailuresError):
        sections_to_run("sockets")
