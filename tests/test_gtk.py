"""GTK on a real X server (Xvfb, started here): the example application
examples/gtk_counter.py on GTK 4, and GTK 3's Dialog.run() nested main loop
with asyncio alive.

Each GTK version runs in its own subprocess: GTK 3 and GTK 4 cannot share a
process, and GTK opens the display named by DISPLAY when it is imported.
This file is also the script those subprocesses run (see _child_main): the
application is driven by an asyncio task on the very loop that runs it, what
the task sees is written to a JSON file, and the assertions are made here.

Set GLIBLOOP_GTK_SCREENSHOT=/abs/path.png to keep a copy of the screenshot
(docs/images/gtk_counter.png is made that way).
"""

import asyncio
import functools
import json
import os
import select
import shutil
import struct
import subprocess
import sys
import time
import traceback
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE.parent / "examples" / "gtk_counter.py"

# What the GTK 4 run uses; the assertions below follow from these.
STEPS = 4
TICK = 0.5
PREVIEW_LINES = 4  # examples/gtk_counter.py shows this many lines of the file

# Gtk.ResponseType values (this process does not import GTK).
RESPONSE_OK = -5
RESPONSE_APPLY = -10

WAIT = 30.0  # generous bound for anything the child waits on, in seconds


# ---------------------------------------------------------------------------
# The X server and the subprocesses (this pytest process)


@pytest.fixture(scope="module")
def display(tmp_path_factory):
    """A private Xvfb; yields its DISPLAY string.  Xvfb picks a free display
    number itself (-displayfd) and writes it once it accepts connections."""
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        pytest.fail("Xvfb is not installed; `make test` installs the xvfb package")
    log_path = tmp_path_factory.mktemp("xvfb") / "xvfb.log"
    read_fd, write_fd = os.pipe()
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            [xvfb, "-displayfd", str(write_fd), "-screen", "0", "1024x768x24", "-nolisten", "tcp"],
            pass_fds=(write_fd,),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    os.close(write_fd)
    try:
        number = _read_display_number(read_fd, server, log_path)
        socket_path = f"/tmp/.X11-unix/X{number}"
        deadline = time.monotonic() + WAIT
        while not os.path.exists(socket_path):
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"Xvfb made no socket {socket_path}:\n{log_path.read_text()}")
            time.sleep(0.05)
        yield f":{number}"
    finally:
        os.close(read_fd)
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _read_display_number(read_fd, server, log_path):
    text = b""
    deadline = time.monotonic() + WAIT
    while not text.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([read_fd], [], [], remaining)[0]:
            pytest.fail(f"Xvfb did not report a display in {WAIT:g} s:\n{log_path.read_text()}")
        chunk = os.read(read_fd, 64)
        if not chunk:
            server.wait(timeout=10)
            pytest.fail(f"Xvfb exited with {server.returncode}:\n{log_path.read_text()}")
        text += chunk
    return int(text)


def _child_env(display):
    env = dict(os.environ)
    env.pop("WAYLAND_DISPLAY", None)
    env.update(
        DISPLAY=display,
        GDK_BACKEND="x11",
        GSK_RENDERER="cairo",  # no GL under Xvfb
        GTK_A11Y="none",  # GTK 4: no accessibility bus to look for
        NO_AT_BRIDGE="1",  # GTK 3: the same
        GIO_USE_VFS="local",  # no gvfs daemon
        G_DEBUG="fatal-criticals",  # a GTK critical fails the run
        # The same glibloop as this process, wherever it comes from.
        PYTHONPATH=os.pathsep.join(p for p in sys.path if p),
    )
    return env


def _run_child(mode, display, tmp_path, *args):
    out = tmp_path / f"{mode}.json"
    done = subprocess.run(
        [sys.executable, __file__, mode, str(out), *map(str, args)],
        env=_child_env(display),
        capture_output=True,
        text=True,
        timeout=4 * WAIT,
    )
    output = f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert done.returncode == 0, output
    seen = json.loads(out.read_text())
    assert seen.get("error") is None, seen["error"] + output
    assert seen["exit_status"] == 0, output
    assert seen["running_loop_is_ours"], "the loop was not the running loop in a GTK handler"
    return seen


def _png_size(path):
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


# ---------------------------------------------------------------------------
# Tests


def test_gtk4_counter_example(display, tmp_path):
    if shutil.which("import") is None:
        pytest.fail("ImageMagick's import is not installed; `make test` installs imagemagick")
    shot = tmp_path / "gtk_counter.png"
    seen = _run_child("gtk4", display, tmp_path, shot)

    assert seen["initial"] == "Ready"
    # Every value of the countdown, in order, then Done: each label change
    # was recorded by a notify::label handler, not by polling.
    texts = [text for _, text in seen["countdown_changes"]]
    lefts = [f"{left * TICK:g} s left" for left in range(STEPS, 0, -1)]
    assert texts == lefts + ["Done"]
    times = [when for when, _ in seen["countdown_changes"]]
    # asyncio.sleep() never returns early, so the label changed over time.
    for earlier, later in zip(times, times[1:]):
        assert later - earlier >= TICK * 0.9, times
    # GTK kept drawing frames while the countdown ran.
    assert seen["frames_during_countdown"] >= 2

    # The file was read through glibloop.gio while the countdown ran.
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()[:PREVIEW_LINES]
    assert seen["file_changes"] == ["reading...", "\n".join(lines)]
    assert seen["file_shown_while_counting"]

    # The second button worked while the countdown ran, from GLib timeouts
    # (the way GTK's own input dispatch would call it).
    assert seen["clicks_label"] == "3 clicks"
    assert len(seen["countdown_at_click"]) == 3
    assert all(text in lefts for text in seen["countdown_at_click"]), seen["countdown_at_click"]
    assert seen["spinning_while_counting"] is True
    assert seen["start_label_while_counting"] == "Stop"
    assert seen["spinning_after"] is False
    assert seen["start_label_after"] == "Start"

    # A second run: an unreadable file is reported, and Stop cancels.
    assert seen["missing_file_label"].startswith("cannot read:")
    assert seen["stopped_label"] == "Stopped"
    assert seen["second_run_changes"][0] == lefts[0]
    assert seen["second_run_changes"][-1] == "Stopped"
    assert seen["stopped_task_cancelled"] is True
    assert seen["spinning_after_stop"] is False

    # The screenshot shows the window, not an empty surface.
    width, height = _png_size(shot)
    assert (width, height) == (seen["screenshot"]["width"], seen["screenshot"]["height"])
    assert width >= 300 and height >= 150
    assert width >= seen["screenshot"]["window_width"]
    assert height >= seen["screenshot"]["window_height"]
    assert seen["screenshot"]["colors"] >= 16
    assert seen["screenshot"]["dark_pixels"] > 100  # text was drawn
    keep = os.environ.get("GLIBLOOP_GTK_SCREENSHOT")
    if keep:
        shutil.copyfile(shot, keep)


def test_gtk3_dialog_run_keeps_asyncio_running(display, tmp_path):
    data = tmp_path / "data.txt"
    data.write_text("read during a modal dialog\n")
    seen = _run_child("gtk3", display, tmp_path, data)

    # Dialog.run() called from a GLib callback, as from a real click: the
    # driving task itself ran inside the dialog's nested main loop.
    assert seen["glib_nest_depth"] >= 2
    assert seen["glib_nest_ticks"] > 0
    assert seen["glib_nest_read"] == "read during a modal dialog\n"
    assert seen["glib_nest_response"] == RESPONSE_OK

    # Dialog.run() called inside a task's step: that task waited for the
    # dialog while the others ran, one of them nesting a GLib.MainLoop.
    assert seen["task_nest_depth"] >= 2
    assert seen["task_nest_ticks"] > 0
    assert seen["task_nest_inner_ticks"] > 0
    assert seen["task_nest_read"] == "read during a modal dialog\n"
    assert seen["task_nest_response"] == RESPONSE_APPLY
    assert seen["closer_done_when_run_returned"] is True
    assert seen["ticks_while_task_waited"] > 0
    assert seen["label_followed_ticks"] is True


def test_gtk4_keeps_drawing_while_asyncio_is_saturated(display, tmp_path):
    # asyncio saturated (100 echoing stream connections, bursts of tasks,
    # one stream read flat out) with default settings: GTK's frame clock
    # still ticks near 60 Hz, and asyncio keeps most of its throughput.
    seen = _run_child("gtk4load", display, tmp_path)
    # 60 per second idle, none at all before the loop gave GLib its turns;
    # under load about 53 here, counted over 3 s (a loaded machine drops some)
    assert seen["idle_ticks_per_sec"] >= 50, seen
    assert seen["load_ticks_per_sec"] >= 0.75 * seen["idle_ticks_per_sec"], seen
    assert seen["load_trips_per_sec"] >= 0.5 * seen["alone_trips_per_sec"], seen
    assert seen["burst_tasks"] > 0 and seen["bytes_read"] > 0, seen


# ---------------------------------------------------------------------------
# The subprocesses: `python test_gtk.py gtk4|gtk3|gtk4load OUT.json ARGS...`


async def _until(predicate, what):
    deadline = asyncio.get_running_loop().time() + WAIT
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"gave up waiting {WAIT:g} s for {what}")
        await asyncio.sleep(0.01)


def _run_app(app, make_driver, seen):
    """Run app on a glibloop loop; on activate, start the driver task, and
    quit when it ends.  The driver's exception, if any, is raised here."""
    import glibloop
    from gi.repository import GLib

    loop = glibloop.new_event_loop()
    drivers = []

    def on_activate(app):
        seen["running_loop_is_ours"] = asyncio.get_running_loop() is loop
        driver = asyncio.create_task(make_driver(app))
        driver.add_done_callback(lambda task: app.quit())
        drivers.append(driver)

    def on_watchdog():
        seen["watchdog"] = "the application ran too long"
        app.quit()
        return GLib.SOURCE_REMOVE

    # connect_after: a Gtk.Application subclass makes its window in
    # do_activate, which runs after handlers connected the usual way.
    app.connect_after("activate", on_activate)
    GLib.timeout_add_seconds(int(3 * WAIT), on_watchdog)
    try:
        seen["exit_status"] = loop.run_application(app, [sys.argv[0]])
        assert len(drivers) == 1, "the application was not activated once"
        assert drivers[0].done(), seen.get("watchdog", "the driver did not finish")
        drivers[0].result()
    finally:
        tasks = asyncio.all_tasks(loop)
        for task in tasks:
            task.cancel()
        if tasks:
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        loop.close()


def _gtk4(seen, screenshot_path):
    sys.path.insert(0, str(EXAMPLE.parent))
    import gtk_counter

    app = gtk_counter.CounterApp(str(EXAMPLE), steps=STEPS, tick=TICK)
    _run_app(app, lambda app: _drive_gtk4(app.window, seen, screenshot_path), seen)


async def _drive_gtk4(win, seen, screenshot_path):
    loop = asyncio.get_running_loop()
    countdown_changes = []
    file_changes = []
    screenshot_moment = loop.create_future()
    frames = [0]

    def on_countdown(label, pspec):
        text = label.get_label()
        countdown_changes.append((loop.time(), text))
        if text == f"{(STEPS // 2) * TICK:g} s left" and not screenshot_moment.done():
            screenshot_moment.set_result(None)

    def on_frame(widget, clock):
        if win.countdown is not None and not win.countdown.done():
            frames[0] += 1
        return True  # keep ticking

    win.countdown_label.connect("notify::label", on_countdown)
    win.file_label.connect("notify::label", lambda label, _: file_changes.append(label.get_label()))
    win.add_tick_callback(on_frame)
    await _until(win.get_mapped, "the window to be mapped")
    seen["initial"] = win.countdown_label.get_label()

    win.start_button.emit("clicked")
    assert win.countdown is not None, "Start made no task"
    await _click_from_glib(win, seen)
    await _until(lambda: len(file_changes) == 2, "the file's first lines")
    seen["file_shown_while_counting"] = not win.countdown.done()
    seen["spinning_while_counting"] = win.spinner.get_spinning()
    seen["start_label_while_counting"] = win.start_button.get_label()

    await asyncio.wait_for(screenshot_moment, WAIT)
    await _next_paint(win)
    seen["screenshot"] = await _save_screenshot(win, screenshot_path)

    await asyncio.wait_for(win.countdown, WAIT)
    seen["frames_during_countdown"] = frames[0]
    seen["countdown_changes"] = list(countdown_changes)
    seen["file_changes"] = list(file_changes)
    del countdown_changes[:], file_changes[:]
    seen["spinning_after"] = win.spinner.get_spinning()
    seen["start_label_after"] = win.start_button.get_label()

    # Second run: a file that cannot be read, and Stop before the end.
    win.path = os.path.join(os.path.dirname(screenshot_path), "no such file")
    win.start_button.emit("clicked")
    await _until(lambda: win.file_label.get_label().startswith("cannot"), "the read error")
    seen["missing_file_label"] = win.file_label.get_label()
    win.start_button.emit("clicked")
    try:
        await win.countdown
    except asyncio.CancelledError:
        pass
    seen["stopped_label"] = win.countdown_label.get_label()
    seen["second_run_changes"] = [text for _, text in countdown_changes]
    seen["stopped_task_cancelled"] = win.countdown.cancelled()
    seen["spinning_after_stop"] = win.spinner.get_spinning()


async def _click_from_glib(win, seen):
    """Click "Click me" three times from a GLib timeout, outside asyncio."""
    from gi.repository import GLib

    done = asyncio.get_running_loop().create_future()
    at_click = seen["countdown_at_click"] = []

    def click():
        win.click_button.emit("clicked")
        at_click.append(win.countdown_label.get_label())
        if len(at_click) < 3:
            return GLib.SOURCE_CONTINUE
        done.set_result(None)
        return GLib.SOURCE_REMOVE

    GLib.timeout_add(20, click)
    await asyncio.wait_for(done, WAIT)
    seen["clicks_label"] = win.clicks_label.get_label()


async def _next_paint(widget):
    """Wait until GTK has laid out and painted the window once more."""
    painted = asyncio.get_running_loop().create_future()
    clock = widget.get_frame_clock()
    handler = clock.connect("after-paint", lambda clock: painted.done() or painted.set_result(None))
    widget.queue_draw()
    try:
        await asyncio.wait_for(painted, WAIT)
    finally:
        clock.disconnect(handler)


async def _save_screenshot(window, path):
    """Capture the window from the X server into a PNG with ImageMagick's
    import (Gsk render nodes do not pass through PyGObject 3.42, so GTK 4's
    own WidgetPaintable route is not open to every PyGObject we test);
    return the picture's size and a rough measure of its content."""
    import gi

    gi.require_version("GdkX11", "4.0")
    from gi.repository import GdkPixbuf, GdkX11

    surface = window.get_surface()
    assert isinstance(surface, GdkX11.X11Surface), "not on the X11 backend"
    window.get_display().sync()  # the X server has drawn all GTK sent
    capture = await asyncio.get_running_loop().run_in_executor(
        None,
        functools.partial(
            subprocess.run,
            ["import", "-window", hex(surface.get_xid()), str(path)],
            capture_output=True,
            text=True,
            timeout=WAIT,
        ),
    )
    assert capture.returncode == 0, f"import failed: {capture.stderr}"

    pixbuf = GdkPixbuf.Pixbuf.new_from_file(str(path))
    pixels = pixbuf.get_pixels()
    channels, stride = pixbuf.get_n_channels(), pixbuf.get_rowstride()
    colors, dark = set(), 0
    for y in range(pixbuf.get_height()):
        row = y * stride
        for x in range(0, pixbuf.get_width() * channels, channels):
            rgb = pixels[row + x : row + x + 3]
            colors.add(rgb)
            dark += sum(rgb) < 200
    return {
        "width": pixbuf.get_width(),
        "height": pixbuf.get_height(),
        "window_width": window.get_width(),
        "window_height": window.get_height(),
        "colors": len(colors),
        "dark_pixels": dark,
    }


def _gtk3(seen, data_path):
    import gi

    gi.require_version("Gtk", "3.0")
    from gi.repository import Gio, Gtk

    app = Gtk.Application(
        application_id="org.glibloop.TestGtk3", flags=Gio.ApplicationFlags.NON_UNIQUE
    )

    def driver(app):
        window = Gtk.ApplicationWindow(application=app, title="glibloop GTK 3")
        label = Gtk.Label(label="0")
        window.add(label)
        window.show_all()
        return _drive_gtk3(window, label, seen, data_path)

    _run_app(app, driver, seen)


async def _drive_gtk3(window, label, seen, data_path):
    import glibloop.gio
    from gi.repository import Gio, GLib, Gtk

    loop = asyncio.get_running_loop()
    ticks = [0]

    async def ticker():
        while True:
            ticks[0] += 1
            label.set_text(str(ticks[0]))
            await asyncio.sleep(0.005)

    async def read_data():
        gfile = Gio.File.new_for_path(data_path)
        ok, data, etag = await glibloop.gio.call(gfile.load_contents_async)
        return data.decode()

    def new_dialog():
        dialog = Gtk.Dialog(title="nested", transient_for=window, modal=True)
        dialog.add_button("OK", Gtk.ResponseType.OK)
        return dialog

    ticking = asyncio.create_task(ticker())

    # 1. Dialog.run() from a GLib callback; this task runs inside its nest.
    dialog = new_dialog()
    response = loop.create_future()

    def run_dialog():
        response.set_result(int(dialog.run()))
        return GLib.SOURCE_REMOVE

    GLib.idle_add(run_dialog)
    await _until(dialog.get_visible, "the dialog to show")
    seen["glib_nest_depth"] = GLib.main_depth()
    before = ticks[0]
    await asyncio.sleep(0.1)
    seen["glib_nest_read"] = await read_data()
    seen["glib_nest_ticks"] = ticks[0] - before
    dialog.response(Gtk.ResponseType.OK)
    seen["glib_nest_response"] = await asyncio.wait_for(response, WAIT)
    dialog.destroy()

    # 2. Dialog.run() inside this task's step: another task closes it.
    dialog = new_dialog()

    async def closer():
        await _until(dialog.get_visible, "the dialog to show")
        seen["task_nest_depth"] = GLib.main_depth()
        before = ticks[0]
        await asyncio.sleep(0.1)
        seen["task_nest_read"] = await read_data()
        inner = GLib.MainLoop()
        GLib.timeout_add(100, inner.quit)
        inner_before = ticks[0]
        inner.run()  # a nest inside the nest
        seen["task_nest_inner_ticks"] = ticks[0] - inner_before
        seen["task_nest_ticks"] = ticks[0] - before
        dialog.response(Gtk.ResponseType.APPLY)

    closing = asyncio.create_task(closer())
    before = ticks[0]
    seen["task_nest_response"] = int(dialog.run())
    seen["closer_done_when_run_returned"] = closing.done()
    seen["ticks_while_task_waited"] = ticks[0] - before
    await closing
    dialog.destroy()

    await asyncio.sleep(0.02)
    seen["label_followed_ticks"] = label.get_text() == str(ticks[0])
    ticking.cancel()


LOAD_SECONDS = 3.0


def _gtk4load(seen):
    import gi
    gi.require_version("Gtk", "4.0")
    from gi.repository import Gio, Gtk

    app = Gtk.Application(application_id="org.glibloop.TestSaturated",
                          flags=Gio.ApplicationFlags.NON_UNIQUE)
    windows = []

    def on_activate(app):
        # made in activate (it keeps the application running), shown later
        win = Gtk.ApplicationWindow(application=app, title="saturated")
        win.set_child(Gtk.Label(label="ticking"))
        windows.append(win)

    app.connect("activate", on_activate)
    _run_app(app, lambda app: _drive_gtk4load(windows[0], seen), seen)


async def _drive_gtk4load(win, seen):
    from _saturation import Saturation  # next to this file

    loop = asyncio.get_running_loop()
    ticks = [0]

    load = Saturation(bursts=True, pour=True)
    await load.start()
    # asyncio's throughput with no window on screen
    trips = load.trips
    await asyncio.sleep(LOAD_SECONDS / 2)
    seen["alone_trips_per_sec"] = (load.trips - trips) / (LOAD_SECONDS / 2)
    await load.stop()

    def on_tick(widget, clock):
        ticks[0] += 1
        return True
    win.add_tick_callback(on_tick)
    win.present()
    await _until(win.get_mapped, "the window to be mapped")
    await asyncio.sleep(0.5)  # the frame clock settles
    before, t0 = ticks[0], loop.time()
    await asyncio.sleep(1.0)
    seen["idle_ticks_per_sec"] = (ticks[0] - before) / (loop.time() - t0)

    load = Saturation(bursts=True, pour=True)
    await load.start()
    before, trips, t0 = ticks[0], load.trips, loop.time()
    await asyncio.sleep(LOAD_SECONDS)
    elapsed = loop.time() - t0
    seen["load_ticks_per_sec"] = (ticks[0] - before) / elapsed
    seen["load_trips_per_sec"] = (load.trips - trips) / elapsed
    seen["burst_tasks"] = load.burst_tasks
    seen["bytes_read"] = load.bytes_read
    await load.stop()
    win.destroy()


def _child_main(argv):
    mode, out_path, *args = argv
    seen = {}
    try:
        {"gtk4": _gtk4, "gtk3": _gtk3, "gtk4load": _gtk4load}[mode](seen, *args)
    except BaseException:
        seen["error"] = traceback.format_exc()
    with open(out_path, "w") as out:
        json.dump(seen, out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
