"""subprocess_exec / subprocess_shell: Popen arguments, the transport API,
pidfd watching next to GLib's own child watches, the fallback without
pidfd, faults, zombies and fds."""
import asyncio
import contextlib
import gc
import logging
import os
import signal
import subprocess
import sys
import time

import pytest

import glibloop
from conftest import open_fds

gi = pytest.importorskip("gi")
gi.require_version("GLib", "2.0")
gi.require_version("Gio", "2.0")
from gi.repository import Gio, GLib  # noqa: E402

PY = sys.executable
PIPE = asyncio.subprocess.PIPE
SAFETY = 30


def _state(pid):
    """'Z' for a zombie, another letter while it runs, None once reaped."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):  # reaped, maybe while reading
        return None


def _children_states():
    """States of this process's children (zombies included)."""
    me = os.getpid()
    states = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me:
            states[int(entry)] = fields[0]
    return states


def _wait_until(predicate, what):
    """Poll predicate until true; the deadline only turns a hang into a failure."""
    deadline = time.monotonic() + SAFETY
    while not predicate():
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        time.sleep(0.01)


@pytest.fixture(scope="module", autouse=True)
def glib_machinery_started():
    """GLib's child watches and our orphan reaper keep fds of their own once
    started (GLib's worker context, the reaper's context): start them before
    any test counts fds."""
    ctx = GLib.MainContext.new()
    pid, *_ = GLib.spawn_async([PY, "-c", "pass"], flags=GLib.SpawnFlags.DO_NOT_REAP_CHILD)
    done = []
    source = GLib.child_watch_source_new(pid)
    source.set_callback(lambda *args: done.append(True))
    source.attach(ctx)
    while not done:
        ctx.iteration(True)
    GLib.spawn_close_pid(pid)
    gproc = Gio.Subprocess.new([PY, "-c", "pass"], Gio.SubprocessFlags.NONE)
    gproc.wait_check(None)  # and Gio's, which keeps an eventfd
    loop = glibloop.new_event_loop()
    with _without_pidfd():
        proc = loop.run_until_complete(asyncio.create_subprocess_exec(PY, "-c", "import time; time.sleep(60)"))
    loop.close()  # hands the child to the reaper (and its GLib child watch)
    os.kill(proc.pid, signal.SIGKILL)
    _wait_until(lambda: _state(proc.pid) is None, "warm-up orphan reaped")
    proc._transport._proc.returncode = -9  # no "still running" warning later
    yield


@pytest.fixture
def clean(loop):
    """Checks that the test leaves no zombie child and no new fd."""
    loop.run_until_complete(asyncio.sleep(0))  # the loop's own fds exist now
    gc.collect()  # what earlier tests left to the GC
    before_fds = open_fds()
    before_children = set(_children_states())
    yield loop
    gc.collect()
    zombies = {p: s for p, s in _children_states().items() if p not in before_children}
    assert not zombies, f"children left behind: {zombies}"
    assert open_fds() == before_fds


async def _run(*args, **kwargs):
    proc = await asyncio.create_subprocess_exec(*args, **kwargs)
    out, err = await asyncio.wait_for(proc.communicate(), SAFETY)
    return proc.returncode, out, err


# -- basics and the Popen arguments ----------------------------------------


def test_exec_stdout_stderr_returncode(clean):
    code = "import sys; sys.stdout.write('out'); sys.stderr.write('err'); sys.exit(7)"
    rc, out, err = clean.run_until_complete(_run(PY, "-c", code, stdout=PIPE, stderr=PIPE))
    assert (rc, out, err) == (7, b"out", b"err")


def test_shell_and_stdin(clean):
    async def main():
        proc = await asyncio.create_subprocess_shell("tr a-z A-Z; exit 3", stdin=PIPE, stdout=PIPE)
        out, _ = await proc.communicate(b"shout")
        return proc.returncode, out

    assert clean.run_until_complete(main()) == (3, b"SHOUT")


def test_stderr_to_stdout_devnull_file_and_fd(clean, tmp_path):
    code = "import sys; print('o', flush=True); print('e', file=sys.stderr)"
    rc, out, err = clean.run_until_complete(
        _run(PY, "-c", code, stdout=PIPE, stderr=subprocess.STDOUT)
    )
    assert out.split() == [b"o", b"e"] and err is None
    rc, out, err = clean.run_until_complete(
        _run(PY, "-c", code, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    )
    assert (rc, out, err) == (0, None, None)
    with open(tmp_path / "out", "wb") as f:
        clean.run_until_complete(_run(PY, "-c", code, stdout=f, stderr=f.fileno()))
    assert sorted((tmp_path / "out").read_bytes().split()) == [b"e", b"o"]


def test_popen_arguments(clean, tmp_path):
    r, w = os.pipe()
    os.write(w, b"passed fd")
    os.close(w)
    probe = (
        "import os, sys\n"
        "print(os.getcwd())\n"
        "print(os.environ.get('GLIBLOOP_PROBE'))\n"
        f"print(os.read({r}, 100).decode())\n"
        "print(os.getsid(0) == os.getpid())\n"
        "print(oct(os.umask(0)))\n"
        "print(os.nice(0))\n"
    )

    def preexec():
        os.nice(3)  # runs in the child before exec

    rc, out, _ = clean.run_until_complete(
        _run(
            PY, "-c", probe,
            stdout=PIPE,
            cwd=tmp_path,
            env={"GLIBLOOP_PROBE": "env ok", "PATH": os.environ.get("PATH", "")},
            pass_fds=(r,),
            start_new_session=True,
            umask=0o027,
            preexec_fn=preexec,
            user=os.getuid(),
            group=os.getgid(),
            close_fds=True,
        )
    )
    os.close(r)
    lines = out.decode().splitlines()
    assert rc == 0
    assert lines == [str(tmp_path), "env ok", "passed fd", "True", "0o27", str(os.nice(0) + 3)]


def test_process_group(clean):
    code = "import os; print(os.getpgid(0) == os.getpid())"
    rc, out, _ = clean.run_until_complete(_run(PY, "-c", code, stdout=PIPE, process_group=0))
    assert out.strip() == b"True"


def test_asyncio_argument_checks(loop):
    for bad in ({"text": True}, {"encoding": "utf-8"}, {"errors": "strict"},
                {"universal_newlines": True}, {"bufsize": 1}):
        with pytest.raises(ValueError):
            loop.run_until_complete(asyncio.create_subprocess_exec(PY, "-c", "pass", **bad))
    with pytest.raises(ValueError, match="cmd must be a string"):
        loop.run_until_complete(loop.subprocess_shell(asyncio.SubprocessProtocol, ["ls"]))


def test_transport_api(clean):
    async def main():
        loop = asyncio.get_running_loop()
        tr, pr = await loop.subprocess_exec(
            asyncio.SubprocessProtocol, PY, "-c", "import sys; sys.stdin.read()",
            stdin=PIPE, stdout=PIPE, stderr=PIPE,
        )
        popen = tr.get_extra_info("subprocess")
        assert isinstance(popen, subprocess.Popen) and popen.pid == tr.get_pid()
        assert tr.get_returncode() is None
        stdin, stdout, stderr = (tr.get_pipe_transport(fd) for fd in (0, 1, 2))
        assert isinstance(stdin, glibloop._core.WritePipeTransport)
        assert isinstance(stdout, glibloop._core.ReadPipeTransport)
        assert isinstance(stderr, glibloop._core.ReadPipeTransport)
        # Watched by a pidfd in the loop, and no SIGCHLD handler anywhere.
        assert tr._child_watch.pidfd >= 0 and tr._child_watch.active
        assert signal.getsignal(signal.SIGCHLD) == signal.SIG_DFL
        tr.send_signal(signal.SIGTERM)
        await asyncio.wait_for(tr._wait(), SAFETY)
        assert tr.get_returncode() == -signal.SIGTERM
        tr.close()

    clean.run_until_complete(main())


@pytest.mark.parametrize("method, signum", [("terminate", signal.SIGTERM), ("kill", signal.SIGKILL)])
def test_terminate_kill(clean, method, signum):
    async def main():
        proc = await asyncio.create_subprocess_exec(PY, "-c", "import time; time.sleep(60)")
        getattr(proc, method)()
        return await asyncio.wait_for(proc.wait(), SAFETY)

    assert clean.run_until_complete(main()) == -signum


def test_many_concurrent_children(clean):
    async def one(i):
        proc = await asyncio.create_subprocess_exec(
            PY, "-c", f"import sys; print({i}); sys.exit({i % 7})", stdout=PIPE
        )
        out, _ = await proc.communicate()
        return int(out), proc.returncode

    async def main():
        return await asyncio.gather(*(one(i) for i in range(40)))

    assert clean.run_until_complete(main()) == [(i, i % 7) for i in range(40)]


def test_wait_from_several_tasks(clean):
    async def main():
        proc = await asyncio.create_subprocess_exec(PY, "-c", "import sys; sys.exit(5)")
        return await asyncio.gather(proc.wait(), proc.wait(), proc.wait())

    assert clean.run_until_complete(main()) == [5, 5, 5]


# -- next to GLib's own child watches --------------------------------------


def _glib_child(loop, code):
    """Spawn with GLib and watch with GLib.child_watch_add; a future of the
    wait status."""
    status = loop.create_future()
    pid, *_ = GLib.spawn_async([PY, "-c", code], flags=GLib.SpawnFlags.DO_NOT_REAP_CHILD)

    def exited(pid, wait_status):
        GLib.spawn_close_pid(pid)
        status.set_result(wait_status)

    GLib.child_watch_add(GLib.PRIORITY_DEFAULT, pid, exited)
    return status


def test_side_by_side_with_glib_child_watch_and_gio_subprocess(loop):
    # GLib's child-watch machinery keeps an fd of its own once used: start it
    # before counting.
    loop.run_until_complete(asyncio.wait_for(_glib_child(loop, "pass"), SAFETY))
    before_fds = open_fds()
    before_children = set(_children_states())

    async def main():
        gio_status = loop.create_future()
        # GLib.spawn_async + GLib.child_watch_add: GLib reaps its own pid.
        glib_status = _glib_child(loop, "import sys; sys.exit(11)")
        # Gio.Subprocess: GLib's child watch again, inside Gio.
        gproc = Gio.Subprocess.new([PY, "-c", "import sys; sys.exit(12)"], Gio.SubprocessFlags.NONE)

        def gio_done(p, res):
            p.wait_finish(res)
            gio_status.set_result(p.get_exit_status())

        gproc.wait_async(None, gio_done)
        # Ours, several, all at the same time.
        procs = [await asyncio.create_subprocess_exec(PY, "-c", f"import sys; sys.exit({20 + i})")
                 for i in range(5)]
        ours = await asyncio.wait_for(asyncio.gather(*(p.wait() for p in procs)), SAFETY)
        glib_rc = await asyncio.wait_for(glib_status, SAFETY)
        gio_rc = await asyncio.wait_for(gio_status, SAFETY)
        return ours, os.waitstatus_to_exitcode(glib_rc), gio_rc

    ours, glib_rc, gio_rc = loop.run_until_complete(main())
    assert ours == [20, 21, 22, 23, 24]
    assert glib_rc == 11
    assert gio_rc == 12
    gc.collect()
    assert set(_children_states()) <= before_children
    assert open_fds() == before_fds, {f: os.readlink(f"/proc/self/fd/{f}") for f in open_fds() - before_fds}


@contextlib.contextmanager
def _without_pidfd():
    was = glibloop._core._use_pidfd(False)
    try:
        yield
    finally:
        glibloop._core._use_pidfd(was)


def test_fallback_without_pidfd(clean):
    async def main():
        procs = [await asyncio.create_subprocess_exec(
                     PY, "-c", f"import sys; sys.stdin.read(); print('x'); sys.exit({i})",
                     stdin=PIPE, stdout=PIPE)
                 for i in range(5)]
        # They wait for stdin: still watched, by GLib.
        assert all(p._transport._child_watch.pidfd == -1 for p in procs)
        assert all("glib" in repr(p._transport._child_watch) for p in procs)
        results = [await asyncio.wait_for(p.communicate(b""), SAFETY) for p in procs]
        return [p.returncode for p in procs], results

    with _without_pidfd():
        rcs, results = clean.run_until_complete(main())
    assert rcs == [0, 1, 2, 3, 4]
    assert all(out == b"x\n" for out, _ in results)


def test_fallback_loop_closed_while_child_runs(loop):
    async def main():
        return await asyncio.create_subprocess_exec(PY, "-c", "import time; time.sleep(60)")

    with _without_pidfd():
        proc = loop.run_until_complete(main())
    pid = proc.pid
    loop.close()
    os.kill(pid, signal.SIGKILL)
    _wait_until(lambda: _state(pid) is None, "the reaper thread reaps the orphan (GLib child watch)")


# -- somebody else reaps ---------------------------------------------------


def test_child_reaped_behind_our_back_reports_255(clean, caplog):
    async def main():
        proc = await asyncio.create_subprocess_exec(PY, "-c", "pass")
        os.waitpid(proc.pid, 0)  # steals the status before the loop sees it
        with caplog.at_level(logging.WARNING, logger="asyncio"):
            return await asyncio.wait_for(proc.wait(), SAFETY)

    assert clean.run_until_complete(main()) == 255
    assert "exit status already read" in caplog.text


def test_child_reaped_by_popen_keeps_its_status(clean):
    async def main():
        proc = await asyncio.create_subprocess_exec(PY, "-c", "import sys; sys.exit(9)")
        popen = proc._transport.get_extra_info("subprocess")
        assert popen.wait() == 9  # Popen reaps it itself
        return await asyncio.wait_for(proc.wait(), SAFETY)

    assert clean.run_until_complete(main()) == 9


def test_with_a_waitpid_minus_one_reaper(clean, caplog):
    # asyncio's FastChildWatcher reaps every child on SIGCHLD with
    # waitpid(-1): glibloop's pidfd event is read first in the same round.
    reaped = []

    def reap_everything():
        with contextlib.suppress(ChildProcessError):
            while True:
                pid, status = os.waitpid(-1, os.WNOHANG)
                if pid == 0:
                    break
                reaped.append(pid)

    async def main():
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGCHLD, reap_everything)
        try:
            procs = [await asyncio.create_subprocess_exec(PY, "-c", f"import sys; sys.exit({i})")
                     for i in range(10)]
            return [await asyncio.wait_for(p.wait(), SAFETY) for p in procs]
        finally:
            loop.remove_signal_handler(signal.SIGCHLD)

    with caplog.at_level(logging.WARNING, logger="asyncio"):
        rcs = clean.run_until_complete(main())
    # The pidfd event is read before the SIGCHLD handle runs, so the reaper
    # mostly finds nothing; a child that exits in between is the reaper's,
    # and then (as asyncio) the status is 255 with a warning.  Never a hang.
    stolen = [i for i, rc in enumerate(rcs) if rc != i]
    assert all(rcs[i] == 255 for i in stolen), rcs
    assert caplog.text.count("exit status already read") == len(stolen)


# -- faults ----------------------------------------------------------------


def test_child_dies_at_once(clean):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            PY, "-c", "import os; os._exit(4)", stdin=PIPE, stdout=PIPE, stderr=PIPE
        )
        out, err = await asyncio.wait_for(proc.communicate(b"x" * 1_000_000), SAFETY)
        return proc.returncode, out, err

    assert clean.run_until_complete(main()) == (4, b"", b"")


def test_program_not_found(clean):
    async def main():
        with pytest.raises(FileNotFoundError):
            await asyncio.create_subprocess_exec("/nonexistent/program", stdin=PIPE, stdout=PIPE)

    clean.run_until_complete(main())
    assert clean._fd_count == 0


def test_child_closes_its_pipes_early(clean):
    code = (
        "import os, sys, time\n"
        "os.write(1, b'bye')\n"
        "os.close(0); os.close(1); os.close(2)\n"
        "time.sleep(0.2)\n"
        "sys.exit(6)\n"
    )

    async def main():
        proc = await asyncio.create_subprocess_exec(PY, "-c", code, stdin=PIPE, stdout=PIPE, stderr=PIPE)
        out = await asyncio.wait_for(proc.stdout.read(), SAFETY)  # EOF before the exit
        assert proc.returncode is None
        # Writing to the closed stdin: BrokenPipeError from drain, not a crash.
        proc.stdin.write(b"y" * 1_000_000)
        with pytest.raises((BrokenPipeError, ConnectionResetError)):
            await proc.stdin.drain()
        return out, await asyncio.wait_for(proc.wait(), SAFETY)

    assert clean.run_until_complete(main()) == (b"bye", 6)


def test_child_floods_stdout(clean):
    size = 32 * 1024 * 1024
    code = f"import sys; sys.stdout.buffer.write(b'f' * {size})"

    async def main():
        limit = 64 * 1024
        proc = await asyncio.create_subprocess_exec(PY, "-c", code, stdout=PIPE, limit=limit)
        transport = proc._transport.get_pipe_transport(1)
        # Nobody reads: the StreamReader pauses the pipe transport, and the
        # flood stops filling memory.
        deadline = time.monotonic() + SAFETY
        while transport.is_reading():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.005)
        for _ in range(20):
            await asyncio.sleep(0.005)
        buffered = len(proc.stdout._buffer)
        total = 0
        while True:
            chunk = await proc.stdout.read(65536)
            if not chunk:
                break
            total += len(chunk)
        return total, buffered, limit, await proc.wait()

    total, buffered, limit, rc = clean.run_until_complete(main())
    assert (total, rc) == (size, 0)
    # Bounded by the pause threshold plus what one epoll event may read.
    assert buffered <= 2 * limit + 16 * 65536


def test_cancelled_while_starting_leaves_nothing(clean):
    async def main():
        task = asyncio.ensure_future(asyncio.create_subprocess_exec(
            PY, "-c", "import time; time.sleep(60)", stdin=PIPE, stdout=PIPE))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    clean.run_until_complete(main())


def test_loop_closed_while_children_run(loop):
    loop.run_until_complete(asyncio.sleep(0))
    before_fds = open_fds()

    async def main():
        procs = [await asyncio.create_subprocess_exec(PY, "-c", "import time; time.sleep(60)",
                                                      stdin=PIPE, stdout=PIPE)
                 for _ in range(3)]
        return [p.pid for p in procs], procs

    pids, procs = loop.run_until_complete(main())
    assert all(_state(pid) not in (None, "Z") for pid in pids)
    loop.close()  # the children still run: they are not killed
    assert all(_state(pid) not in (None, "Z") for pid in pids)
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    # Nobody's loop runs any more; the reaper thread reaps them.
    _wait_until(lambda: all(_state(pid) is None for pid in pids), "orphans reaped")
    # Their pidfds went with them; the pipes close with the transports: at
    # once on close() before 3.14, when the transports are collected on 3.14+
    # (asyncio's BaseSubprocessTransport no longer closes the pipes of a
    # closed loop, gh-114177).
    for p in procs:
        p._transport.close()
    del procs, p
    gc.collect()
    _wait_until(lambda: open_fds() <= before_fds, "pidfds and pipes closed")
    assert open_fds() <= before_fds


def test_no_zombies_or_fds_after_many_spawns(clean):
    async def main():
        for _ in range(50):
            proc = await asyncio.create_subprocess_exec("/bin/true", stdout=PIPE, stderr=PIPE)
            await proc.communicate()
            assert proc.returncode == 0

    clean.run_until_complete(main())


def test_subprocess_while_glib_drives_the_loop(clean):
    # The loop is not running: GLib.MainLoop dispatches it.
    result = []
    ml = GLib.MainLoop()

    async def main():
        rc, out, _ = await _run(PY, "-c", "print('driven')", stdout=PIPE)
        result.append((rc, out))
        ml.quit()

    task = clean.create_task(main())
    fallback = GLib.timeout_add_seconds(SAFETY, ml.quit)
    ml.run()
    GLib.source_remove(fallback)
    assert task.done()
    assert result == [(0, b"driven\n")]


def test_debug_mode_logs_as_asyncio(clean, caplog):
    clean.set_debug(True)

    async def main():
        proc = await asyncio.create_subprocess_exec(
            PY, "-c", "import sys; sys.stdout.write(sys.stdin.read())", stdin=PIPE, stdout=PIPE
        )
        out, _ = await proc.communicate(b"dbg")
        return out, proc.returncode

    with caplog.at_level(logging.DEBUG, logger="asyncio"):
        assert clean.run_until_complete(main()) == (b"dbg", 0)
    text = caplog.text
    assert "execute program" in text
    assert "Write pipe" in text and "Read pipe" in text
    assert "was closed by peer" in text
    assert "exited with return code 0" in text
