"""Put the loop under test behind CPython's test.test_asyncio test classes.

CPython's tests reach an event loop in four ways, and each gets the loop under test:

* ``asyncio.new_event_loop()``, ``asyncio.run()``, ``asyncio.Runner()`` and
  ``unittest.IsolatedAsyncioTestCase`` ask the event loop policy.  conftest.py installs
  ``LoopUnderTestPolicy`` around every test and restores the previous policy after it.
* ``create_event_loop()`` of test_events' mixins: the module defines subclasses whose
  ``create_event_loop`` returns ``new_loop()``.
* ``test_utils.TestCase.new_test_loop()``: with a time generator the test wants virtual
  time and keeps CPython's fake-time ``TestLoop``; without one it gets the loop under
  test (``NewTestLoopIsLoopUnderTest``), unless the module lists the test as one that
  pokes ``TestLoop``/``BaseEventLoop`` internals.
* a hand-built ``asyncio.BaseEventLoop`` with a mocked selector (test_runners,
  test_pep492): the module overrides the method that builds it.

``adopt()`` creates, in one of our test modules, a subclass of every TestCase class of
a CPython test module with the right mixins, under the same class name, so that test
ids here read like CPython's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import fnmatch
import importlib
import os
import unittest
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from test.test_asyncio import utils as test_utils

LOOP_ENV = "GLIBLOOP_CPYTHON_LOOP"
DEFAULT_LOOP = "glibloop"


class HarnessError(RuntimeError):
    """The harness is misconfigured (unknown loop name, loop not importable)."""


@dataclasses.dataclass(frozen=True)
class LoopUnderTest:
    name: str
    factory: Callable[[], asyncio.AbstractEventLoop]
    loop_class: type


def _glibloop() -> LoopUnderTest:
    import glibloop

    return LoopUnderTest("glibloop", glibloop.new_event_loop, glibloop.Loop)


def _stock_asyncio() -> LoopUnderTest:
    # Not asyncio.new_event_loop: that asks the policy, which is ours during tests.
    return LoopUnderTest("asyncio", asyncio.SelectorEventLoop, asyncio.SelectorEventLoop)


def _uvloop() -> LoopUnderTest:
    import uvloop

    return LoopUnderTest("uvloop", uvloop.new_event_loop, uvloop.Loop)


LOOPS: Mapping[str, Callable[[], LoopUnderTest]] = {
    "glibloop": _glibloop,
    "asyncio": _stock_asyncio,
    "uvloop": _uvloop,
}


def _resolve_loop() -> LoopUnderTest:
    name = os.environ.get(LOOP_ENV, "").strip() or DEFAULT_LOOP
    try:
        resolve = LOOPS[name]
    except KeyError:
        raise HarnessError(
            f"{LOOP_ENV}={name!r} is not one of {', '.join(LOOPS)}"
        ) from None
    try:
        return resolve()
    except ImportError as exc:
        hint = (
            " (build and install it first, e.g. `pip install -e . --no-build-isolation`,"
            f" or set {LOOP_ENV}=asyncio to check the harness on stock asyncio)"
            if name == "glibloop"
            else ""
        )
        raise HarnessError(
            f"{LOOP_ENV}={name}: cannot import {name}: {exc}{hint}"
        ) from exc


LOOP = _resolve_loop()


def new_loop() -> asyncio.AbstractEventLoop:
    """A fresh loop of the kind under test."""
    loop = LOOP.factory()
    if not isinstance(loop, LOOP.loop_class):
        loop.close()
        raise HarnessError(
            f"{LOOP.name} factory returned {type(loop).__qualname__},"
            f" not a {LOOP.loop_class.__qualname__}"
        )
    return loop


# --- event loop policy ------------------------------------------------------------------

# The Unix default policy keeps the child-watcher API that test_events' subprocess tests
# set up (asyncio.set_child_watcher), so only new_event_loop changes.
class LoopUnderTestPolicy(asyncio.DefaultEventLoopPolicy):
    """Default policy whose new loops are loops under test."""

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        return new_loop()


def current_policy() -> asyncio.AbstractEventLoopPolicy | None:
    """The installed policy, or None while asyncio would still create its default lazily."""
    # Reading the module global avoids instantiating a default policy just to save it.
    return asyncio.events._event_loop_policy


# CPython 3.14 deprecates the public setter; its private twin does the same silently.
_set_policy = getattr(asyncio.events, "_set_event_loop_policy", asyncio.set_event_loop_policy)


def install_policy(policy: asyncio.AbstractEventLoopPolicy | None) -> None:
    _set_policy(policy)


# --- new_test_loop() -----------------------------------------------------------------------

def _id_in(patterns: Iterable[str], class_name: str, method_name: str) -> bool:
    """Whether "Class::method" matches a pattern; a pattern without "::" names classes."""
    test_id = f"{class_name}::{method_name}"
    return any(
        fnmatch.fnmatchcase(test_id if "::" in p else class_name, p) for p in patterns
    )


class NewTestLoopIsLoopUnderTest:
    """Mixin for test_utils.TestCase classes: ``new_test_loop()`` without a time generator
    returns the loop under test.

    With a generator the test drives virtual time (it asserts ``loop.time()`` values and
    advances the clock), which only CPython's TestLoop can do; that tests Task and Future
    logic, not the loop, so it stays.  Without one, TestLoop is an ordinary loop that
    never blocks and whose timers cannot fire, so any loop can stand in for it.
    """

    # "Class" or "Class::test_*" patterns -> why new_test_loop() stays CPython's TestLoop;
    # set per class by adopt().
    test_loop_kept: Mapping[str, str] = {}

    def new_test_loop(self, gen=None):
        if gen is None and not _id_in(
            self.test_loop_kept, type(self).__name__, self._testMethodName
        ):
            loop = new_loop()
            self.set_event_loop(loop)
            return loop
        return super().new_test_loop(gen)


# --- adopting CPython's test classes -----------------------------------------------------

def load_cpython_tests(name: str):
    """Import ``test.test_asyncio.<name>`` from the running interpreter's stdlib."""
    return importlib.import_module(f"test.test_asyncio.{name}")


def _mixins_for(
    cls: type, mixins: Mapping[str, tuple[type, ...]], test_loop_kept: Mapping[str, str]
) -> tuple[tuple[type, ...], dict[str, Any]]:
    bases: list[type] = []
    namespace: dict[str, Any] = {}
    ancestors = {klass.__name__ for klass in cls.__mro__}
    for ancestor, extra in mixins.items():
        if ancestor in ancestors:
            bases.extend(extra)
    if issubclass(cls, test_utils.TestCase):
        bases.append(NewTestLoopIsLoopUnderTest)
        namespace["test_loop_kept"] = dict(test_loop_kept)
    if issubclass(cls, unittest.IsolatedAsyncioTestCase):
        # 3.13+ builds its Runner from this; 3.11 and 3.12 go through the policy.
        namespace["loop_factory"] = staticmethod(new_loop)
    return tuple(bases), namespace


def adopt(
    cpython_tests,
    namespace: dict[str, Any],
    *,
    not_adopted: Mapping[str, str] | None = None,
    mixins: Mapping[str, tuple[type, ...]] | None = None,
    test_loop_kept: Mapping[str, str] | None = None,
) -> list[str]:
    """Subclass every TestCase class defined in the module ``cpython_tests`` into
    ``namespace`` (a test module's ``globals()``), under the same name.

    not_adopted:    class name -> why it is left out (keep the reason in README.md too).
    mixins:         ancestor class name -> mixins put in front of every class that has
                    that ancestor (e.g. one overriding how a hand-made loop is built).
    test_loop_kept: "Class" / "Class::test_*" patterns -> why new_test_loop() stays
                    CPython's TestLoop for those tests.
    Classes the module already defines by that name are left alone.  Returns the names
    of the classes created.
    """
    not_adopted = not_adopted or {}
    mixins = mixins or {}
    test_loop_kept = test_loop_kept or {}
    created = []
    for name, cls in vars(cpython_tests).items():
        if not (isinstance(cls, type) and issubclass(cls, unittest.TestCase)):
            continue
        if cls.__module__ != cpython_tests.__name__ or name in namespace:
            continue
        if name in not_adopted:
            continue
        extra_bases, attrs = _mixins_for(cls, mixins, test_loop_kept)
        attrs.update(
            __module__=namespace["__name__"],
            __qualname__=name,
            __doc__=cls.__doc__,
        )
        namespace[name] = type(name, (*extra_bases, cls), attrs)
        created.append(name)
    # CPython's tearDownModule only resets the policy, which conftest.py does around
    # every test; a setUpModule, if a module grows one, must still run.
    if hasattr(cpython_tests, "setUpModule") and "setUpModule" not in namespace:
        namespace["setUpModule"] = cpython_tests.setUpModule
    return created


def hide_tests_of(cls: type, mixin: type, keep: Iterable[str] = ()) -> None:
    """Hide from ``cls`` the test methods it inherits from ``mixin`` (they run in another
    class), keeping the names in ``keep``.  unittest and pytest collect only callables."""
    for name in dir(mixin):
        if name.startswith("test") and name not in keep and callable(getattr(mixin, name)):
            setattr(cls, name, None)
