"""Signals, pipes and subprocesses: the cold glue around the C core.

What runs per signal, per read, per write and per child exit is C
(``_core``: signals.c, pipe.c, process.c).  What stays here runs once per
call: argument checks, the Python-level signal dispositions, and the
subprocess transport's bookkeeping (see docs/design.md, "Subprocesses and
signals").
"""

from __future__ import annotations

import errno
import signal
import subprocess
import sys
import threading
import warnings

from asyncio import base_events as _base_events
from asyncio import base_subprocess as _base_subprocess
from asyncio import coroutines as _coroutines
from asyncio import log as _log

from . import _core

# asyncio's own test for coroutine functions (it also knows the marker that
# unittest.mock's AsyncMock sets), without the DeprecationWarning that
# asyncio.iscoroutinefunction gives from 3.14 on.
iscoroutinefunction = getattr(_coroutines, "_iscoroutinefunction", None) or _coroutines.iscoroutinefunction


def _borrow(name):
    """asyncio's own BaseEventLoop.<name> (a plain function)."""
    return _base_events.BaseEventLoop.__dict__[name]


class _SubprocessTransport(_base_subprocess.BaseSubprocessTransport):
    """asyncio's subprocess transport, with the child started by
    subprocess.Popen (so every Popen argument works as in asyncio) and
    watched by the loop's C ChildWatch (a pidfd in the epoll set) instead
    of a child watcher.  The stdio pipes are the loop's C pipe transports
    (asyncio's _connect_pipes calls connect_read_pipe/connect_write_pipe)."""

    _child_watch = None

    def _start(self, args, shell, stdin, stdout, stderr, bufsize, **kwargs):
        self._proc = subprocess.Popen(
            args,
            shell=shell,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            universal_newlines=False,
            bufsize=bufsize,
            **kwargs,
        )
        self._child_watch = self._loop._watch_child(self._proc.pid, self._child_exited)

    def _child_exited(self, returncode):
        self._child_watch = None
        if returncode is None:
            # Reaped by someone else first: Popen.poll() in close(), the
            # application's own Popen.wait(), or a waitpid(-1) reaper.
            returncode = self._proc.returncode
            if returncode is None:
                _log.logger.warning(
                    "child process pid %d exit status already read: "
                    "will report returncode 255",
                    self._pid,
                )
                returncode = 255
        self._process_exited(returncode)


class ProcessMixin:
    """The signal, pipe and subprocess methods of glibloop.Loop."""

    __slots__ = ()

    # Python's signal wakeup fd points at our epoll set while it is held:
    # by a run on the main thread, and by the registered signal handlers
    # (from the first add_signal_handler() to the last removal, running or
    # not, as asyncio keeps it).  The fd found when the first hold was
    # taken is put back when the last one goes.
    _wakeup_holds = 0
    _wakeup_saved = -1
    _signal_wakeup_held = False

    # -- the wakeup fd ---------------------------------------------------

    def _hold_signal_wakeup(self):
        """Take a hold on the wakeup fd.  Returns False, holding nothing,
        off the main thread (Python allows the wakeup fd only there)."""
        if threading.current_thread() is not threading.main_thread():
            return False
        if self._wakeup_holds == 0:
            try:
                self._wakeup_saved = signal.set_wakeup_fd(
                    self._signal_wakeup_fd(), warn_on_full_buffer=False
                )
            except ValueError:  # not the main interpreter
                return False
        self._wakeup_holds += 1
        return True

    def _release_signal_wakeup(self):
        self._wakeup_holds -= 1
        if self._wakeup_holds > 0:
            return
        saved, self._wakeup_saved = self._wakeup_saved, -1
        try:
            ours = self._signal_wakeup_fd() if not self.is_closed() else None
            current = signal.set_wakeup_fd(saved)
            if ours is not None and current != ours:
                # Someone pointed it elsewhere while we held it (another
                # loop, PyGObject): theirs stays.
                signal.set_wakeup_fd(current)
        except (ValueError, OSError) as exc:
            _log.logger.info("set_wakeup_fd(%s) failed: %s", saved, exc)

    # -- pipes -----------------------------------------------------------

    # asyncio's coroutines; the transports they make are C (pipe.c).
    connect_read_pipe = _borrow("connect_read_pipe")
    connect_write_pipe = _borrow("connect_write_pipe")

    # -- subprocesses ----------------------------------------------------

    # Argument checks and debug logs are asyncio's; they end in
    # _make_subprocess_transport below.
    subprocess_exec = _borrow("subprocess_exec")
    subprocess_shell = _borrow("subprocess_shell")
    _log_subprocess = _borrow("_log_subprocess")

    async def _make_subprocess_transport(
        self, protocol, args, shell, stdin, stdout, stderr, bufsize, extra=None, **kwargs
    ):
        """No child watcher: asyncio.get_child_watcher() is not consulted;
        the child is watched by the loop itself (process.c)."""
        waiter = self.create_future()
        transp = _SubprocessTransport(
            self,
            protocol,
            args,
            shell,
            stdin,
            stdout,
            stderr,
            bufsize,
            waiter=waiter,
            extra=extra,
            **kwargs,
        )
        try:
            await waiter
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException:
            transp.close()
            await transp._wait()
            raise
        return transp

    # -- signals ---------------------------------------------------------

    @property
    def _signal_handlers(self):
        """{signal number: Handle} (a copy), as asyncio's Unix loop has."""
        return self._signal_table()

    @staticmethod
    def _check_signal(sig):
        if not isinstance(sig, int):
            raise TypeError(f"sig must be an int, not {sig!r}")
        if sig not in signal.valid_signals():
            raise ValueError(f"invalid signal number {sig}")

    def add_signal_handler(self, sig, callback, *args):
        """Run callback(*args) in the loop whenever signal sig arrives.

        Any signal Python can catch; main thread only, as in asyncio."""
        if _coroutines.iscoroutine(callback) or iscoroutinefunction(callback):
            raise TypeError("coroutines cannot be used with add_signal_handler()")
        self._check_signal(sig)
        self._check_closed()
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("set_wakeup_fd only works in main thread of the main interpreter")
        took_hold = False
        if not self._signal_wakeup_held:
            if not self._hold_signal_wakeup():
                raise RuntimeError("set_wakeup_fd only works in the main interpreter")
            self._signal_wakeup_held = took_hold = True
        self._signal_install(sig, callback, args)
        try:
            signal.signal(sig, _core._signal_handler)
            # SA_RESTART: fewer EINTRs in code that does not expect them.
            signal.siginterrupt(sig, False)
        except (OSError, ValueError) as exc:
            self._signal_uninstall(sig)
            if took_hold:
                self._signal_wakeup_held = False
                self._release_signal_wakeup()
            if isinstance(exc, OSError) and exc.errno == errno.EINVAL:
                raise RuntimeError(f"sig {sig:d} cannot be caught") from None
            raise

    def remove_signal_handler(self, sig):
        """Remove the handler of sig and restore the default disposition
        (default_int_handler for SIGINT).  Returns True if there was one."""
        self._check_signal(sig)
        if not self._signal_uninstall(sig):
            return False
        try:
            handler = signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL
            try:
                signal.signal(sig, handler)
            except OSError as exc:
                if exc.errno == errno.EINVAL:
                    raise RuntimeError(f"sig {sig:d} cannot be caught") from None
                raise
        finally:
            if self._signal_wakeup_held and not self._signal_table():
                self._signal_wakeup_held = False
                self._release_signal_wakeup()
        return True

    def _remove_all_signal_handlers(self):
        """At close(): as asyncio, restore every disposition, except at
        interpreter shutdown, where it only warns."""
        table = self._signal_table()
        if not table:
            return
        if not sys.is_finalizing():
            for sig in table:
                self.remove_signal_handler(sig)
            return
        warnings.warn(
            f"Closing the loop {self!r} on interpreter shutdown stage, "
            "skipping signal handlers removal",
            ResourceWarning,
            source=self,
        )
        for sig in table:
            self._signal_uninstall(sig)
        if self._signal_wakeup_held:
            self._signal_wakeup_held = False
            self._release_signal_wakeup()
