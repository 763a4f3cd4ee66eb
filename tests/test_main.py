"""``python -m glibloop``: a script or module run with glibloop as asyncio's
loop, and the REPL, driven through a pseudo-terminal in a subprocess (the
REPL's own session, so that Ctrl-C typed there is a real SIGINT from the
terminal), with a GTK 4 window made at the prompt under Xvfb."""

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import glibloop
from glibloop import _repl

# The X server fixture and the GTK environment of test_gtk.py.
from test_gtk import _child_env, display  # noqa: F401

WAIT = 30.0  # bound for anything waited on, in seconds
PROMPT = ">>> "
SITE = str(Path(glibloop.__file__).resolve().parent.parent)


def _env(base=None):
    """The environment of a child that imports this glibloop."""
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (SITE, env.get("PYTHONPATH")) if p)
    env.pop("PYTHONSTARTUP", None)
    return env


def _run(args, cwd, **kwargs):
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=WAIT,
        **kwargs,
    )


# ---------------------------------------------------------------------------
# Scripts and modules


LOOP_REPORT = """\
import asyncio, json, os, sys

async def running_loop():
    return type(asyncio.get_running_loop()).__module__

with asyncio.Runner() as runner:
    runner_loop = type(runner.get_loop()).__module__
new_loop = asyncio.new_event_loop()
new_loop.close()
report = {
    "asyncio.run": asyncio.run(running_loop()),
    "Runner": runner_loop,
    "new_event_loop": type(new_loop).__module__,
    "argv": sys.argv,
    "name": __name__,
    "main_module_is_this": sys.modules["__main__"].__dict__ is globals(),
    "path0": sys.path[0],
}
print(json.dumps(report))
sys.exit(int(sys.argv[-1]))
"""


def test_script_runs_on_glibloop_with_argv_and_exit_status(tmp_path):
    script_dir = tmp_path / "scripts"
    script_dir.mkdir()
    script = script_dir / "report.py"
    script.write_text(LOOP_REPORT)
    done = _run(["-m", "glibloop", str(script), "two words", "-m", "3"], cwd=tmp_path)
    assert done.returncode == 3, done.stderr
    report = json.loads(done.stdout)
    assert report == {
        "asyncio.run": "glibloop._loop",
        "Runner": "glibloop._loop",
        "new_event_loop": "glibloop._loop",
        "argv": [str(script), "two words", "-m", "3"],
        "name": "__main__",
        "main_module_is_this": True,
        "path0": str(script_dir.resolve()),
    }
    assert "Warning" not in done.stderr


def test_module_runs_on_glibloop(tmp_path):
    (tmp_path / "reportmod.py").write_text(LOOP_REPORT)
    done = _run(["-m", "glibloop", "-m", "reportmod", "x", "0"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["asyncio.run"] == "glibloop._loop"
    assert report["argv"] == [str(tmp_path / "reportmod.py"), "x", "0"]
    assert report["name"] == "__main__"
    assert report["main_module_is_this"] is True


FAILING = """\
import sys

def inner():
    raise ValueError("no good: " + sys.argv[1])

def outer():
    try:
        inner()
    except ValueError as exc:
        raise RuntimeError("outer failed") from exc

print("before the failure", flush=True)
outer()
"""

INTERRUPTED = """\
import atexit
atexit.register(print, "atexit ran")

def wait():
    raise KeyboardInterrupt

wait()
"""


@pytest.mark.parametrize("source", [FAILING, INTERRUPTED], ids=["exception", "KeyboardInterrupt"])
def test_script_failure_looks_as_under_python(tmp_path, source):
    """Same traceback (no frame of ours or runpy's), same output, same exit
    status as ``python script.py``: 1, or death by SIGINT."""
    script = tmp_path / "failing.py"
    script.write_text(source)
    plain = _run([str(script), "arg"], cwd=tmp_path)
    ours = _run(["-m", "glibloop", str(script), "arg"], cwd=tmp_path)
    assert plain.returncode in (1, -signal.SIGINT), plain
    assert (ours.returncode, ours.stdout, ours.stderr) == (
        plain.returncode,
        plain.stdout,
        plain.stderr,
    )
    assert ours.stderr.startswith("Traceback (most recent call last):\n" f'  File "{script}"')


def test_script_failure_inside_asyncio_run(tmp_path):
    script = tmp_path / "failing_task.py"
    script.write_text(
        "import asyncio\n"
        "async def main():\n"
        "    await asyncio.sleep(0)\n"
        "    raise ValueError('failed on ' + type(asyncio.get_running_loop()).__module__)\n"
        "asyncio.run(main())\n"
    )
    done = _run(["-m", "glibloop", str(script)], cwd=tmp_path)
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert lines[:2] == ["Traceback (most recent call last):", f'  File "{script}", line 5, in <module>']
    assert lines[-1] == "ValueError: failed on glibloop._loop"
    assert "runpy" not in done.stderr and "_cli.py" not in done.stderr


def test_command_line_errors_help_and_version(tmp_path):
    missing = _run(["-m", "glibloop", "no_such_script.py"], cwd=tmp_path)
    assert missing.returncode == 2
    assert f"can't open file {str(tmp_path / 'no_such_script.py')!r}" in missing.stderr
    no_module = _run(["-m", "glibloop", "-m", "no_such_module"], cwd=tmp_path)
    assert no_module.returncode == 1
    assert no_module.stderr.endswith(": No module named no_such_module\n")
    unknown = _run(["-m", "glibloop", "--no-such-option"], cwd=tmp_path)
    assert unknown.returncode == 2 and "usage:" in unknown.stderr
    helped = _run(["-m", "glibloop", "--help"], cwd=tmp_path)
    assert helped.returncode == 0 and helped.stdout.startswith("usage: python -m glibloop")
    version = _run(["-m", "glibloop", "--version"], cwd=tmp_path)
    assert version.stdout == f"glibloop {glibloop.__version__} (GLib {glibloop.GLIB_VERSION})\n"


# ---------------------------------------------------------------------------
# The REPL


# The child becomes the terminal's session leader and takes it as its
# controlling terminal, then becomes the REPL: Ctrl-C written to the
# terminal is then SIGINT to it, with the terminal's own line handling.
_TAKE_TERMINAL = (
    "import fcntl, os, sys, termios\n"
    "fcntl.ioctl(0, termios.TIOCSCTTY, 0)\n"
    "os.execv(sys.executable, [sys.executable, '-m', 'glibloop'])\n"
)


class Repl:
    """``python -m glibloop`` on a pseudo-terminal."""

    def __init__(self, cwd, env=None):
        master, slave = pty.openpty()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _TAKE_TERMINAL],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=cwd,
            env=_env(env),
            start_new_session=True,
        )
        os.close(slave)
        self.fd = master
        self.output = ""  # everything, with the terminal's \r\n made \n
        self.seen = 0  # how much of it expect() has consumed
        self._raw = b""

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=WAIT)
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def _read(self, timeout):
        ready, _, _ = select.select([self.fd], [], [], max(timeout, 0))
        if not ready:
            return False
        try:
            data = os.read(self.fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            data = b""
        if not data:
            return None
        self._raw += data
        self.output = self._raw.decode("utf-8", "replace").replace("\r\n", "\n")
        return True

    def expect(self, pattern, timeout=WAIT):
        """Wait for a regex in the output not consumed yet; consume up to
        the end of the match and return the text before it."""
        regex = re.compile(pattern, re.MULTILINE)
        deadline = time.monotonic() + timeout
        while True:
            match = regex.search(self.output, self.seen)
            if match:
                before = self.output[self.seen : match.start()]
                self.seen = match.end()
                return before
            got = self._read(deadline - time.monotonic())
            if not got:
                raise AssertionError(
                    f"no {pattern!r} in the REPL's output "
                    f"({'it ended' if got is None else f'{timeout:g} s'}):\n"
                    + self.output[self.seen :]
                    + f"\n--- all of it:\n{self.output}"
                )

    def send(self, text):
        os.write(self.fd, text.encode())

    def run(self, source):
        """Type source (one or more lines; a block gets its closing empty
        line) and wait for the next prompt; return what it printed (the
        terminal's echo of the input removed)."""
        lines = source.split("\n")
        if len(lines) > 1:
            lines.append("")
        for i, line in enumerate(lines):
            self.send(line + "\n")
            self.expect(re.escape(line) + "\n")  # the echo
            if i < len(lines) - 1:
                self.expect(re.escape("... "))
        return self.expect("^" + re.escape(PROMPT), timeout=WAIT)

    def wait_exit(self):
        try:
            while self._read(WAIT):
                pass
            return self.proc.wait(timeout=WAIT)
        finally:
            self.close()


@pytest.fixture
def repl(tmp_path):
    session = Repl(tmp_path)
    try:
        session.expect("^" + re.escape(PROMPT), timeout=WAIT)
        yield session
    finally:
        session.close()


def test_repl_top_level_await_and_namespace(repl):
    banner = repl.output
    assert f"glibloop {glibloop.__version__} asyncio REPL" in banner
    assert f"Python {sys.version.split()[0]}" in banner

    assert repl.run("await asyncio.sleep(0.1)") == ""
    assert repl.run("x = await asyncio.sleep(0.1, result=41)") == ""
    assert repl.run("print('x + 1 is', x + 1)") == "x + 1 is 42\n"
    assert repl.run("isinstance(asyncio.get_running_loop(), glibloop.Loop)") == "True\n"
    # Code runs on the main thread (GTK needs that), in a __main__ module.
    assert repl.run("import threading; threading.current_thread() is threading.main_thread()") == (
        "True\n"
    )
    assert repl.run("import sys; sys.modules['__main__'].__dict__ is globals(), __name__") == (
        "(True, '__main__')\n"
    )
    # Tracebacks start at the code typed, not in the REPL's machinery.
    assert repl.run("1 / 0") == (
        "Traceback (most recent call last):\n"
        '  File "<console>", line 1, in <module>\n'
        "ZeroDivisionError: division by zero\n"
    )
    assert repl.run("async def fail():\n    await asyncio.sleep(0)\n    raise ValueError('in a task')") == ""
    assert repl.run("await fail()") == (
        "Traceback (most recent call last):\n"
        '  File "<console>", line 1, in <module>\n'
        '  File "<console>", line 3, in fail\n'
        "ValueError: in a task\n"
    )
    assert repl.run("def").startswith('  File "<console>", line 1\n')  # SyntaxError
    # Ctrl-D at the prompt leaves, with status 0.
    repl.send("\x04")
    repl.expect(re.escape(_repl.EXIT_MESSAGE))
    assert repl.wait_exit() == 0


def test_repl_task_runs_while_the_prompt_waits(repl):
    repl.run("import time; stamps = []")
    repl.run(
        "async def ticker():\n"
        "    while True:\n"
        "        stamps.append(time.monotonic())\n"
        "        await asyncio.sleep(0.05)"
    )
    repl.run("task = asyncio.create_task(ticker())")
    # Ctrl-C at the prompt leaves a task running in the background alone.
    repl.send("\x03")
    repl.expect(re.escape("\nKeyboardInterrupt\n" + PROMPT))
    # The prompt is back and nothing is typed for a second.
    idle_from = time.monotonic()
    time.sleep(1.0)
    idle_to = time.monotonic()
    out = repl.run(
        f"import json; print(json.dumps([s for s in stamps if {idle_from!r} <= s <= {idle_to!r}]))"
    )
    during = json.loads(out)
    # About 20 ticks; none at all if the loop stood still at the prompt.
    assert len(during) >= 10, during
    gaps = [b - a for a, b in zip([idle_from, *during], [*during, idle_to])]
    assert max(gaps) < 0.6, gaps
    assert repl.run("task.done()") == "False\n"
    repl.send("exit(3)\n")
    assert repl.wait_exit() == 3


def test_repl_ctrl_c(repl):
    # At the prompt: the line being typed is dropped.
    repl.send("this_name_is_not_defined")
    repl.expect(re.escape("this_name_is_not_defined"))
    repl.send("\x03")
    repl.expect(re.escape("\nKeyboardInterrupt\n" + PROMPT))
    assert repl.run("6 * 7") == "42\n"

    # A running await is cancelled, at once.
    repl.send("await asyncio.sleep(60)\n")
    repl.expect(re.escape("await asyncio.sleep(60)\n"))
    time.sleep(0.3)
    started = time.monotonic()
    repl.send("\x03")
    assert repl.expect("^" + re.escape(PROMPT)).endswith("\nKeyboardInterrupt\n")
    assert time.monotonic() - started < 10

    # A task that swallows the cancellation: a second Ctrl-C gives the
    # prompt back (the task goes on in the background).
    repl.run(
        "async def stubborn():\n"
        "    while True:\n"
        "        try:\n"
        "            await asyncio.sleep(60)\n"
        "        except asyncio.CancelledError:\n"
        "            print('not now')"
    )
    repl.send("await stubborn()\n")
    repl.expect(re.escape("await stubborn()\n"))
    time.sleep(0.3)
    repl.send("\x03")
    repl.expect("not now\n")
    repl.send("\x03")
    assert repl.expect("^" + re.escape(PROMPT)).endswith("\nKeyboardInterrupt\n")

    # Plain code gets the KeyboardInterrupt.
    repl.send("while True: pass\n\n")
    repl.expect(re.escape("... "))
    time.sleep(0.3)
    repl.send("\x03")
    out = repl.expect("^" + re.escape(PROMPT))
    assert out.endswith('  File "<console>", line 1, in <module>\nKeyboardInterrupt\n'), out

    # The loop goes on; sys.exit() leaves with its status.
    assert repl.run("await asyncio.sleep(0.05, result='still here')") == "'still here'\n"
    repl.send("import sys; sys.exit(5)\n")
    assert repl.wait_exit() == 5


def test_repl_reads_piped_input(tmp_path):
    done = _run(
        ["-m", "glibloop"],
        cwd=tmp_path,
        input="x = await asyncio.sleep(0, result=21)\nprint('doubled', x * 2)\n",
    )
    assert done.returncode == 0, done.stderr
    assert "doubled 42\n" in done.stdout
    assert done.stderr.rstrip().endswith(_repl.EXIT_MESSAGE)


# ---------------------------------------------------------------------------
# GTK at the prompt


GTK_SETUP = """\
import gi, json, time
gi.require_version("Gtk", "4.0")
from gi.repository import GLib, Gtk
events = {"tick": [], "paint": [], "timeout": [], "task": []}
win = Gtk.Window(title="made at the prompt", default_width=320, default_height=120)
label = Gtk.Label(label="0")
win.set_child(label)
win.add_tick_callback(lambda widget, clock: events["tick"].append(time.monotonic()) or True)
GLib.timeout_add(50, lambda: events["timeout"].append(time.monotonic()) or True)"""

GTK_TASK = """\
async def count():
    n = 0
    while True:
        n += 1
        label.set_markup(f"<span size='48000'>{n}</span>")
        events["task"].append(time.monotonic())
        await asyncio.sleep(0.1)"""


def _screenshot(display, path):
    shot = subprocess.run(
        ["import", "-display", display, "-window", "root", str(path)],
        capture_output=True,
        timeout=WAIT,
    )
    assert shot.returncode == 0, shot.stderr
    return path.read_bytes()


def test_repl_gtk_window_stays_responsive(display, tmp_path):  # noqa: F811
    env = _child_env(display)
    session = Repl(tmp_path, env=env)
    try:
        session.expect("^" + re.escape(PROMPT))
        for statement in GTK_SETUP.splitlines():
            session.run(statement)
        session.run(GTK_TASK)
        session.run("task = asyncio.create_task(count())")
        assert session.run("win.present(); win.get_mapped()") == "True\n"
        session.run(
            'win.get_frame_clock().connect("after-paint", '
            'lambda clock: events["paint"].append(time.monotonic()))'
        )
        # Nothing typed from here on for 1.5 s: the window must live.
        idle_from = time.monotonic()
        time.sleep(0.5)
        first = _screenshot(display, tmp_path / "first.ppm")
        time.sleep(0.5)
        second = _screenshot(display, tmp_path / "second.ppm")
        time.sleep(0.5)
        idle_to = time.monotonic()
        out = session.run(
            "print(json.dumps({key: [t for t in times if "
            f"{idle_from!r} <= t <= {idle_to!r}] for key, times in events.items()}}))"
        )
        during = json.loads(out)
        # GTK's frame clock ticked and painted, GLib timeouts fired and the
        # asyncio task ran, all while the prompt waited: none of it happens
        # if the loop stands still at the prompt.
        assert len(during["tick"]) >= 10, during
        assert len(during["paint"]) >= 5, during
        assert len(during["timeout"]) >= 10, during
        assert len(during["task"]) >= 5, during
        # And what the X server shows changed in between: the counter was
        # redrawn on screen.
        assert first != second
        session.run("win.destroy()")
        session.send("\x04")
        assert session.wait_exit() == 0
    finally:
        session.close()
