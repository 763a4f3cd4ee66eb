"""A GTK 4 window with asyncio inside it, on glibloop.

"Start" launches an asyncio task that counts down with asyncio.sleep() and,
alongside, reads a file with Gio through glibloop.gio and shows its first
lines.  While it counts, the spinner turns and "Click me" keeps counting:
GTK and asyncio share one thread and one GLib main loop, and neither waits
for the other.  Clicking "Stop" cancels the task.

    python examples/gtk_counter.py [FILE]      # FILE defaults to this script
"""

import asyncio
import os
import sys

import gi

gi.require_version("Gtk", "4.0")
from gi.repository import Gio, GLib, Gtk, Pango  # noqa: E402

import glibloop  # noqa: E402
import glibloop.gio  # noqa: E402

APP_ID = "org.glibloop.GtkCounter"
PREVIEW_LINES = 4


def first_lines(data, count=PREVIEW_LINES):
    """The first ``count`` lines of a file's bytes, as text for a label."""
    text = data.decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[:count])


class CounterWindow(Gtk.ApplicationWindow):
    """The window: its widgets are attributes so a test can drive them."""

    def __init__(self, app, path, *, steps, tick):
        super().__init__(application=app, title="glibloop: asyncio in GTK 4")
        self.set_titlebar(Gtk.HeaderBar())
        self.set_default_size(520, -1)
        self.path = path
        self.steps = steps
        self.tick = tick
        self.countdown = None  # the running countdown task, if any
        self.clicks = 0

        self.countdown_label = Gtk.Label(label="Ready")
        self.countdown_label.add_css_class("title-1")
        self.progress = Gtk.ProgressBar(show_text=True, text="elapsed 0 s")

        self.start_button = Gtk.Button(label="Start")
        self.start_button.connect("clicked", self.on_start_clicked)
        self.spinner = Gtk.Spinner()
        self.click_button = Gtk.Button(label="Click me")
        self.click_button.connect("clicked", self.on_click_me)
        self.clicks_label = Gtk.Label(label="0 clicks", hexpand=True, xalign=1)
        buttons = Gtk.Box(orientation=Gtk.Orientation.HORIZONTAL, spacing=12)
        for widget in (self.start_button, self.spinner, self.click_button, self.clicks_label):
            buttons.append(widget)

        self.file_label = Gtk.Label(label="(not read yet)", xalign=0, selectable=True)
        self.file_label.add_css_class("monospace")
        self.file_label.set_ellipsize(Pango.EllipsizeMode.END)
        self.file_frame = Gtk.Frame(label=os.path.basename(path), child=self.file_label)

        content = Gtk.Box(orientation=Gtk.Orientation.VERTICAL, spacing=12)
        for side in ("top", "bottom", "start", "end"):
            getattr(content, f"set_margin_{side}")(18)
        for widget in (self.countdown_label, self.progress, buttons, self.file_frame):
            content.append(widget)
        self.set_child(content)
        self.connect("close-request", self.on_close_request)

    # GTK signal handlers run while the loop is the running asyncio loop,
    # so they can start tasks directly.

    def on_start_clicked(self, button):
        if self.countdown is not None and not self.countdown.done():
            self.countdown.cancel()
        else:
            self.countdown = asyncio.create_task(self.run_countdown())

    def on_click_me(self, button):
        self.clicks += 1
        self.clicks_label.set_text(f"{self.clicks} click{'s' if self.clicks != 1 else ''}")

    def on_close_request(self, window):
        if self.countdown is not None:
            self.countdown.cancel()
        return False  # let the window close

    async def run_countdown(self):
        self.start_button.set_label("Stop")
        self.spinner.start()
        reader = asyncio.create_task(self.show_file())
        try:
            for left in range(self.steps, 0, -1):
                self.countdown_label.set_text(f"{left * self.tick:g} s left")
                self.show_elapsed(self.steps - left)
                await asyncio.sleep(self.tick)
            self.show_elapsed(self.steps)
            self.countdown_label.set_text("Done")
            await reader
        except asyncio.CancelledError:
            reader.cancel()
            self.countdown_label.set_text("Stopped")
            raise
        finally:
            self.spinner.stop()
            self.start_button.set_label("Start")

    def show_elapsed(self, ticks):
        self.progress.set_fraction(ticks / self.steps)
        self.progress.set_text(f"elapsed {ticks * self.tick:g} s of {self.steps * self.tick:g} s")

    async def show_file(self):
        self.file_label.set_text("reading...")
        gfile = Gio.File.new_for_path(self.path)
        try:
            ok, data, etag = await glibloop.gio.call(gfile.load_contents_async)
        except GLib.Error as error:
            self.file_label.set_text(f"cannot read: {error.message}")
            return
        self.file_label.set_text(first_lines(data))


class CounterApp(Gtk.Application):
    """One window per run; NON_UNIQUE also lets it start without a session bus."""

    def __init__(self, path, *, steps=10, tick=1.0):
        super().__init__(application_id=APP_ID, flags=Gio.ApplicationFlags.NON_UNIQUE)
        self.path = path
        self.steps = steps
        self.tick = tick
        self.window = None

    def do_activate(self):
        if self.window is None:
            self.window = CounterWindow(self, self.path, steps=self.steps, tick=self.tick)
        self.window.present()


def finish_tasks(loop):
    """After the application quits, cancel what is left and let it unwind,
    as asyncio.run() does, so no task is destroyed while pending."""
    tasks = asyncio.all_tasks(loop)
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())


def main(argv=None):
    argv = sys.argv if argv is None else argv
    path = argv[1] if len(argv) > 1 else __file__
    app = CounterApp(path)
    loop = glibloop.new_event_loop()
    try:
        # The file is ours to read, not an argument for GApplication.
        return loop.run_application(app, argv[:1])
    finally:
        finish_tasks(loop)
        loop.close()


if __name__ == "__main__":
    sys.exit(main())
