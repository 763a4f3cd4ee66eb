"""``python -m glibloop``: the REPL (glibloop._repl) or a script run with
glibloop as asyncio's event loop.

A script is run the way ``python script.py`` runs it: as ``__main__``, with
``sys.argv`` and ``sys.path[0]`` set as the interpreter sets them, and an
uncaught exception printed with the script's frames only (not ours or
runpy's) and ending the process as the interpreter would (status 1; death
by SIGINT for KeyboardInterrupt).  glibloop becomes asyncio's loop through
the event loop policy, which is what ``asyncio.run()``, ``asyncio.Runner``
and ``asyncio.new_event_loop()`` consult on Python 3.11 to 3.14 when no
loop factory is given.
"""

from __future__ import annotations

import os
import runpy
import sys
import warnings

USAGE = """\
usage: python -m glibloop [-h] [-V] [-m module | script.py] [args ...]

  (no arguments)   an asyncio REPL running on the GLib main loop: top-level
                   "await" works, and GTK windows made at the prompt stay
                   responsive while it waits for input
  script.py args   run the script as __main__ with glibloop as asyncio's
                   event loop: asyncio.run() inside it runs on glibloop
  -m module args   the same for a module, as "python -m module" finds it
  -V, --version    print glibloop's and GLib's versions
  -h, --help       print this help
"""


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if not args:
        from . import _repl

        return _repl.run()
    first = args[0]
    if first in ("-h", "--help"):
        sys.stdout.write(USAGE)
        return 0
    if first in ("-V", "--version"):
        from . import GLIB_VERSION, __version__

        print(f"glibloop {__version__} (GLib {GLIB_VERSION})")
        return 0
    if first == "-m":
        if len(args) < 2:
            return _usage_error("-m needs a module name")
        return _run_module(args[1], args[2:])
    if first.startswith("-") and first != "-":
        return _usage_error(f"unknown option {first}")
    return _run_path(first, args[1:])


def _usage_error(message: str) -> int:
    sys.stderr.write(f"python -m glibloop: {message}\n\n{USAGE}")
    return 2


def install_policy() -> None:
    """glibloop.install() without its DeprecationWarning (3.12+): here the
    user asked for glibloop as the loop of code that cannot be changed."""
    import glibloop

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        glibloop.install()


def _run_path(path: str, args: list[str]) -> int:
    if not os.path.exists(path):
        sys.stderr.write(
            f"{sys.executable}: can't open file {os.path.abspath(path)!r}: "
            "[Errno 2] No such file or directory\n"
        )
        return 2
    install_policy()
    sys.argv[:] = [path, *args]
    if not sys.flags.safe_path:
        # ``python -m`` put the working directory first; ``python script.py``
        # puts the script's directory there (a directory or zip file with
        # a __main__.py is itself the entry, which run_path also adds).
        entry = os.path.realpath(path)
        if os.path.isfile(entry) and not _is_zip(entry):
            entry = os.path.dirname(entry)
        sys.path[0] = entry
    return _run(runpy.run_path, path, run_name="__main__")


def _run_module(name: str, args: list[str]) -> int:
    import importlib.util

    try:
        found = importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        sys.stderr.write(f"{sys.executable}: No module named {name}\n")
        return 1
    install_policy()
    sys.argv[:] = [name, *args]  # runpy puts the module's file in argv[0]
    return _run(runpy.run_module, name, run_name="__main__", alter_sys=True)


def _is_zip(path: str) -> bool:
    import zipfile

    try:
        return zipfile.is_zipfile(path)
    except OSError:
        return False


def _run(runner, *args, **kwargs) -> int:
    try:
        runner(*args, **kwargs)
    except SystemExit:
        raise
    except BaseException as exc:
        tb = _user_frames(exc.__traceback__)
        exc = exc.with_traceback(tb)
        sys.excepthook(type(exc), exc, tb)
        if isinstance(exc, KeyboardInterrupt):
            # The interpreter ends a process whose main module raised
            # KeyboardInterrupt by SIGINT, after the usual finalization;
            # let it, with the traceback already shown.
            sys.excepthook = _quiet_excepthook
            raise KeyboardInterrupt from None
        return 1
    return 0


def _quiet_excepthook(*exc_info) -> None:
    pass


_OWN_FILES = {os.path.abspath(__file__), os.path.abspath(runpy.__file__), "<frozen runpy>"}


def _user_frames(tb):
    """The traceback without its leading frames of this module and runpy."""
    while tb is not None and _frame_file(tb) in _OWN_FILES:
        tb = tb.tb_next
    return tb


def _frame_file(tb) -> str:
    name = tb.tb_frame.f_code.co_filename
    return name if name.startswith("<") else os.path.abspath(name)
