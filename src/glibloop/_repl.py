"""The asyncio REPL of ``python -m glibloop``.

Two threads share the work:

- the main thread runs the glibloop loop, so GLib's default main context is
  iterated there all the time: asyncio tasks and GTK windows made at the
  prompt go on while the prompt waits for input.  Every command typed is
  executed there too, in a loop callback (GTK must be called from the thread
  that runs its main context); a command with top-level ``await`` becomes a
  task of the loop.
- a console thread reads and compiles the input (code.InteractiveConsole,
  compiling with top-level await allowed) and waits for each command's
  outcome before it shows the next prompt.

Ctrl-C is handled by a SIGINT handler of our own, which runs on the main
thread wherever it is: plain code typed at the prompt gets KeyboardInterrupt;
a command awaiting is cancelled (a second Ctrl-C, if it goes on, raises
KeyboardInterrupt and the prompt comes back); at the prompt, the line being
typed is dropped; anything else (a GTK handler, a background task) goes on
undisturbed.  For the prompt's part, the console reads lines itself (a
select() on stdin and a wake-up pipe) rather than through input(): input()
blocks in C and cannot be woken from another thread.  On a terminal, the line is edited by the terminal
driver (erase, kill, word-erase); there is no readline history.
"""

from __future__ import annotations

import ast
import asyncio
import builtins
import code
import codecs
import concurrent.futures
import inspect
import os
import select
import signal
import sys
import threading
import traceback
import types
import warnings

import glibloop

from ._cli import install_policy

EXIT_MESSAGE = "leaving the glibloop REPL"


def banner() -> str:
    return (
        f"glibloop {glibloop.__version__} asyncio REPL on the GLib "
        f"{glibloop.GLIB_VERSION} main loop\n"
        f"Python {sys.version} on {sys.platform}\n"
        'Use "await" at the prompt; asyncio and glibloop are imported, and the '
        "loop\nkeeps running (tasks, GTK windows) while the prompt waits.\n"
        'Type "help", "copyright", "credits" or "license" for more information.'
    )


class LineReader:
    """Lines from a file descriptor, for the console thread.

    interrupt() (from another thread) makes a readline() that is waiting
    raise KeyboardInterrupt, dropping the incomplete line."""

    def __init__(self, fd: int, encoding: str | None):
        self._fd = fd
        try:
            decoder = codecs.getincrementaldecoder(encoding or "utf-8")
        except LookupError:
            decoder = codecs.getincrementaldecoder("utf-8")
        self._decoder = decoder("replace")
        self._text = ""
        self._eof = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        # Re-entrant: the SIGINT handler may run on a thread inside interrupt().
        self._lock = threading.RLock()
        self._waiting = False

    def close(self) -> None:
        os.close(self._wake_r)
        os.close(self._wake_w)

    def readline(self, prompt: str = "") -> str:
        """Show the prompt and return the next line without its newline;
        EOFError at the end."""
        with self._lock:
            self._drain()  # an interrupt() that came too late for the last line
            self._waiting = True
        try:
            # Only now: a Ctrl-C once the prompt is visible must wake us.
            sys.stdout.write(prompt)
            sys.stdout.flush()
            while True:
                end = self._text.find("\n")
                if end >= 0:
                    line, self._text = self._text[:end], self._text[end + 1 :]
                    return line
                if self._eof:
                    line, self._text, self._eof = self._text, "", False
                    if line:
                        return line
                    raise EOFError
                ready, _, _ = select.select([self._fd, self._wake_r], [], [])
                if self._wake_r in ready:
                    with self._lock:
                        self._drain()
                    self._text = ""
                    raise KeyboardInterrupt
                try:
                    data = os.read(self._fd, 65536)
                except OSError:  # EIO: the terminal went away
                    data = b""
                if data:
                    self._text += self._decoder.decode(data)
                else:
                    self._text += self._decoder.decode(b"", True)
                    self._eof = True
        finally:
            with self._lock:
                self._waiting = False

    def interrupt(self) -> bool:
        """Wake a waiting readline(); False if none was waiting."""
        with self._lock:
            if self._waiting:
                try:
                    os.write(self._wake_w, b"!")
                except BlockingIOError:
                    pass
            return self._waiting

    def _drain(self) -> None:
        try:
            while os.read(self._wake_r, 512):
                pass
        except BlockingIOError:
            pass


class _Command:
    """One compiled input, run on the main thread; its outcome is passed to
    the console thread through a concurrent.futures.Future."""

    __slots__ = ("code", "outcome", "task", "interrupted", "in_code")

    def __init__(self, code_object):
        self.code = code_object
        self.outcome = concurrent.futures.Future()
        self.task = None
        self.interrupted = False  # by Ctrl-C
        self.in_code = False  # the main thread is executing the code itself

    def settle(self, error=None):
        """Pass the outcome on (main thread), unless it was given up on."""
        if self.outcome.done():
            return
        if error is None:
            self.outcome.set_result(None)
        else:
            self.outcome.set_exception(error)


_THIS_FILE = os.path.abspath(__file__)
_SKIPPED_FRAME_FILES = {_THIS_FILE, os.path.dirname(asyncio.__file__)}


class Console(code.InteractiveConsole):
    def __init__(self, namespace: dict, loop: asyncio.AbstractEventLoop, reader: LineReader):
        super().__init__(namespace, filename="<console>")
        self.compile.compiler.flags |= ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
        self.loop = loop
        self.reader = reader
        self.exit_status = 0
        self.finished = threading.Event()
        self._lock = threading.RLock()
        self._command: _Command | None = None

    # -- the console thread --------------------------------------------

    def raw_input(self, prompt=""):
        return self.reader.readline(prompt)

    def runcode(self, code_object):
        command = _Command(code_object)
        with self._lock:
            self._command = command
        try:
            self.loop.call_soon_threadsafe(self._start, command)
            error = command.outcome.exception()
        finally:
            with self._lock:
                self._command = None
        if error is None:
            return
        if isinstance(error, SystemExit):
            self.exit_status = error.code
            raise SystemExit(error.code)
        if command.interrupted and (
            isinstance(error, asyncio.CancelledError) or error.__traceback__ is None
        ):
            self.write("\nKeyboardInterrupt\n")
        else:
            self.show_exception(error)

    def show_exception(self, error: BaseException) -> None:
        """Print the traceback of the user's code alone: without the frames
        of the REPL (the first, and the SIGINT handler's last) and asyncio's."""
        entries = []
        tb = error.__traceback__
        while tb is not None:
            entries.append(tb)
            tb = tb.tb_next
        while entries and _frame_is_ours(entries[0].tb_frame):
            del entries[0]
        while entries and os.path.abspath(entries[-1].tb_frame.f_code.co_filename) == _THIS_FILE:
            del entries[-1]
        tb = None
        for entry in reversed(entries):
            tb = types.TracebackType(tb, entry.tb_frame, entry.tb_lasti, entry.tb_lineno)
        error = error.with_traceback(tb)
        sys.last_type, sys.last_value, sys.last_traceback = type(error), error, tb
        if sys.version_info >= (3, 12):
            sys.last_exc = error
        if sys.excepthook is sys.__excepthook__:
            self.write("".join(traceback.format_exception(type(error), error, tb)))
        else:
            sys.excepthook(type(error), error, tb)

    # -- the main thread ---------------------------------------------------

    def _start(self, command: _Command) -> None:
        """Run a command (a loop callback on the main thread)."""
        if command.interrupted:
            command.settle(KeyboardInterrupt())
            return
        command.in_code = True
        try:
            result = eval(command.code, self.locals)
        except BaseException as exc:  # reported by the console thread
            command.settle(exc)
            return
        finally:
            command.in_code = False
        if not command.code.co_flags & inspect.CO_COROUTINE:
            command.settle()
            return
        try:
            command.task = self.loop.create_task(result)
        except BaseException as exc:
            result.close()
            command.settle(exc)
            return
        command.task.add_done_callback(lambda task: self._finish(command, task))

    @staticmethod
    def _finish(command: _Command, task: asyncio.Task) -> None:
        try:
            task.result()
        except BaseException as exc:
            command.settle(exc)
        else:
            command.settle()

    def on_sigint(self, signum, frame) -> None:
        """The SIGINT handler while the REPL runs (main thread)."""
        with self._lock:
            command = self._command
        if command is None:
            self.reader.interrupt()  # at the prompt (if it is there yet)
            return
        if command.in_code:
            raise KeyboardInterrupt  # into the plain code running now
        task = command.task
        if task is None:
            command.interrupted = True  # not started: it will not start
        elif not task.done():
            if command.interrupted:
                raise KeyboardInterrupt  # the task goes on after a cancel()
            command.interrupted = True
            task.cancel()

    def give_up(self) -> None:
        """KeyboardInterrupt came out of the loop (main thread): the prompt
        stops waiting for the command running, if any."""
        with self._lock:
            command = self._command
        if command is not None:
            command.interrupted = True
            command.settle(KeyboardInterrupt())


def _frame_is_ours(frame) -> bool:
    name = frame.f_code.co_filename
    if name.startswith("<"):
        return False
    name = os.path.abspath(name)
    return name in _SKIPPED_FRAME_FILES or os.path.dirname(name) in _SKIPPED_FRAME_FILES


def _console_main(console: Console, loop: asyncio.AbstractEventLoop) -> None:
    try:
        console.interact(banner=banner(), exitmsg=EXIT_MESSAGE)
    except SystemExit:
        pass  # exit(), quit() or sys.exit() at the prompt: exit_status is set
    except BaseException:
        traceback.print_exc()
        console.exit_status = 1
    finally:
        console.finished.set()
        loop.call_soon_threadsafe(loop.stop)


def _run_startup_file(console: Console) -> None:
    """PYTHONSTARTUP, as the interactive interpreter runs it."""
    path = None if sys.flags.ignore_environment else os.environ.get("PYTHONSTARTUP")
    if not path:
        return
    try:
        with open(path, "rb") as f:
            startup = compile(f.read(), path, "exec")
        exec(startup, console.locals)
    except SystemExit:
        raise
    except BaseException as exc:
        console.show_exception(exc)


def _shutdown(loop: asyncio.AbstractEventLoop) -> None:
    # Coroutines made at the prompt and never awaited are not news now.
    warnings.filterwarnings("ignore", r"^coroutine .* was never awaited$", RuntimeWarning)
    tasks = asyncio.all_tasks(loop)
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.wait(tasks, timeout=5))
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()


def run() -> int:
    """Run the REPL until EOF or exit(); return the exit status."""
    install_policy()
    loop = glibloop.new_event_loop()
    asyncio.set_event_loop(loop)

    # The session's namespace is a fresh __main__ module, so that what is
    # defined at the prompt pickles and reports itself as __main__'s.
    main_module = types.ModuleType("__main__")
    main_module.__dict__.update(__builtins__=builtins, asyncio=asyncio, glibloop=glibloop)
    sys.modules["__main__"] = main_module

    reader = LineReader(sys.stdin.fileno(), getattr(sys.stdin, "encoding", None))
    console = Console(main_module.__dict__, loop, reader)
    _run_startup_file(console)
    thread = threading.Thread(
        target=_console_main, args=(console, loop), name="glibloop console", daemon=True
    )
    previous_handler = signal.signal(signal.SIGINT, console.on_sigint)
    try:
        thread.start()
        while not console.finished.is_set():
            try:
                loop.run_forever()  # until the console ends (or code typed stops it)
            except KeyboardInterrupt:
                console.give_up()
        thread.join()
    finally:
        signal.signal(signal.SIGINT, previous_handler)
    reader.close()
    _shutdown(loop)
    return console.exit_status
