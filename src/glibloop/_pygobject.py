"""Which asyncio loop runs a GLib context: glibloop's answer to PyGObject.

PyGObject's overrides of ``GLib.MainLoop.run()`` and ``Gio.Application.run()``
(3.50 and later) ask ``gi._ossighelper.get_event_loop(context)`` for the asyncio
loop of the context they are about to iterate, and wrap the run in that loop's
``running(quit)``; ``MainContext.iteration()`` in its ``paused()``.  PyGObject
3.50 to 3.57 ask the running loop, then the event loop policy; 3.58 asks the
running loop and its own policy class, and accepts only its own
``GLibEventLoop``, so a glibloop loop is never found there and is not the
running loop while ``app.run()`` runs.

glibloop answers the question itself, the same way on every PyGObject version
and with or without a policy: the running loop if it is a glibloop loop on that
context, else the newest open glibloop loop on that context, else whatever
PyGObject would have answered.  The answer is installed in the two override
modules that ask (``get_event_loop`` is imported there by name), as soon as a
glibloop loop exists and the modules are imported, in either order.
"""

from __future__ import annotations

import sys
import threading
import weakref
from asyncio import events as _events

from . import _core

_OVERRIDES = ("gi.overrides.GLib", "gi.overrides.Gio")
_loops: list[weakref.ref] = []  # every glibloop loop made, oldest first
_lock = threading.Lock()


def same_context(loop, ctx):
    """Whether a glibloop loop runs on the GLib.MainContext ``ctx``: PyGObject
    gives each lookup of a context a new wrapper, whose hash is the
    GMainContext's address."""
    if ctx is None:
        return False
    mine = loop._context
    return mine is not None and hash(mine) == hash(ctx)


def loop_for_context(ctx):
    """The glibloop loop PyGObject should run ``ctx`` with, or None."""
    if ctx is None:
        return None
    running = _events._get_running_loop()
    if running is not None:
        return running if isinstance(running, _core.Loop) and same_context(running, ctx) else None
    for ref in reversed(_loops):
        loop = ref()
        if loop is not None and not loop.is_closed() and same_context(loop, ctx):
            return loop
    return None


def _answer(original):
    def get_event_loop(ctx):
        loop = loop_for_context(ctx)
        return loop if loop is not None else original(ctx)

    get_event_loop.glibloop_original = original
    return get_event_loop


def _patch(module):
    original = getattr(module, "get_event_loop", None)
    if original is not None and not hasattr(original, "glibloop_original"):
        module.get_event_loop = _answer(original)


def _patch_loaded():
    """Patch the override modules already imported; True if both were."""
    done = 0
    for name in _OVERRIDES:
        module = sys.modules.get(name)
        if module is not None:
            _patch(module)
            done += 1
    return done == len(_OVERRIDES)


class _OverridesFinder:
    """Patches an override module right after PyGObject imports it."""

    @staticmethod
    def find_spec(name, path, target=None):
        if name not in _OVERRIDES:
            return None
        for finder in sys.meta_path:
            if finder is _OverridesFinder or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        exec_module = loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            _patch(module)
            if _patch_loaded():
                _remove_finder()

        # The spec's loader is made for this import alone (PathFinder makes a
        # new one per spec), so the instance attribute touches nothing else.
        loader.exec_module = exec_and_patch
        return spec


def _remove_finder():
    try:
        sys.meta_path.remove(_OverridesFinder)
    except ValueError:
        pass


def register(loop):
    """Called for every new glibloop loop."""
    with _lock:
        _loops[:] = [ref for ref in _loops if ref() is not None]
        _loops.append(weakref.ref(loop))
        if _patch_loaded():
            _remove_finder()
        elif _OverridesFinder not in sys.meta_path:
            sys.meta_path.insert(0, _OverridesFinder)
