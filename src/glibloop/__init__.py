"""glibloop: an asyncio event loop written in C on the GLib main loop.

    import asyncio, glibloop
    glibloop.run(main())
    asyncio.run(main(), loop_factory=glibloop.new_event_loop)   # 3.12+
"""

from __future__ import annotations

import asyncio as _asyncio
import sys as _sys
import warnings as _warnings

from . import _core, _pygobject
from ._loop import Loop
from .gio import SignalStream, signal_stream, wait_signal

__version__ = _core.__version__
GLIB_VERSION = _core.GLIB_VERSION

__all__ = [
    "Loop",
    "new_event_loop",
    "run",
    "install",
    "EventLoopPolicy",
    "wait_signal",
    "signal_stream",
    "SignalStream",
    "__version__",
]


def new_event_loop(context=None) -> Loop:
    """Return a new glibloop event loop.

    ``context`` is an optional ``GLib.MainContext`` to run on; by default the
    main thread uses GLib's default context and other threads a new one.
    """
    return Loop(context)


def run(main, *, debug=None, **run_kwargs):
    """Run a coroutine on a new glibloop loop, like asyncio.run()."""
    if not _asyncio.iscoroutine(main):
        raise ValueError(f"a coroutine was expected, got {main!r}")
    with _asyncio.Runner(debug=debug, loop_factory=new_event_loop, **run_kwargs) as runner:
        return runner.run(main)


# Event loop policies: deprecated by CPython 3.14, removed in 3.16.  glibloop
# needs none (run(), new_event_loop() as a loop factory, run_application());
# EventLoopPolicy and install() exist for code that still sets a policy.
_PolicyBase = getattr(_asyncio.events, "BaseDefaultEventLoopPolicy", None) or getattr(
    _asyncio.events, "_BaseDefaultEventLoopPolicy", None
)

if _PolicyBase is not None:

    class EventLoopPolicy(_PolicyBase):
        """An event loop policy whose new_event_loop() returns glibloop loops."""

        def _loop_factory(self):
            return new_event_loop()

        def get_event_loop_for_context(self, ctx):
            """PyGObject 3.50-3.57 ask this when GLib.MainLoop.run() or
            Application.run() starts with no asyncio loop running: the loop
            set for this thread, if it runs on that context."""
            loop = self._local._loop
            if isinstance(loop, Loop) and not loop.is_closed() and _pygobject.same_context(loop, ctx):
                return loop
            return None

        def __repr__(self):
            return f"<{type(self).__name__}>"

else:  # pragma: no cover - Python 3.16+
    __all__.remove("EventLoopPolicy")

_INSTEAD = "glibloop.run(), asyncio.run(..., loop_factory=glibloop.new_event_loop) or asyncio.Runner(loop_factory=glibloop.new_event_loop)"


def install() -> None:
    """Make glibloop the loop of asyncio.new_event_loop() and asyncio.run()
    for code that cannot pass a loop factory: sets glibloop's event loop
    policy.  Deprecated on Python 3.12+ (CPython deprecates policies in 3.14
    and removes them in 3.16, where this raises RuntimeError)."""
    if _PolicyBase is None:  # pragma: no cover - Python 3.16+
        raise RuntimeError(
            f"glibloop.install() sets the event loop policy, which Python {_sys.version_info[0]}."
            f"{_sys.version_info[1]} no longer has; use {_INSTEAD}"
        )
    if _sys.version_info >= (3, 12):
        _warnings.warn(
            "glibloop.install() sets the event loop policy, which CPython "
            "deprecates (3.14) and removes (3.16); use " + _INSTEAD,
            DeprecationWarning,
            stacklevel=2,
        )
    # From 3.14 on, asyncio.set_event_loop_policy() warns too: say it once.
    setter = getattr(_asyncio.events, "_set_event_loop_policy", None) or _asyncio.set_event_loop_policy
    setter(EventLoopPolicy())
