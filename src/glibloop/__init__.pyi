import asyncio
import contextvars
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from gi.repository import GLib  # type: ignore[import-not-found]

_T = TypeVar("_T")

__version__: str
GLIB_VERSION: str

class Loop(asyncio.AbstractEventLoop):
    slow_callback_duration: float
    batch_budget: float
    def __init__(self, context: GLib.MainContext | None = ...) -> None: ...

def new_event_loop(context: GLib.MainContext | None = ...) -> Loop: ...
def run(main: Coroutine[Any, Any, _T], *, debug: bool | None = ...) -> _T: ...
def install() -> None: ...

class EventLoopPolicy(asyncio.AbstractEventLoopPolicy):
    def get_event_loop(self) -> asyncio.AbstractEventLoop: ...
    def set_event_loop(self, loop: asyncio.AbstractEventLoop | None) -> None: ...
    def new_event_loop(self) -> Loop: ...
