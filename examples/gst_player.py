"""A GStreamer pipeline controlled over HTTP, on one thread, with glibloop.

The pipeline's bus messages are read with ``async for`` (state changes,
seeks done, end of stream, errors), the frames reaching its appsink are
counted by a coroutine, and an aiohttp server plays, pauses and seeks it:
GStreamer's bus watch, aiohttp and the coroutines all run on the GLib main
context of the one thread, and no call blocks it.

    python examples/gst_player.py [--port 8080] [--pipeline DESCRIPTION]

    curl localhost:8080/                    # state, position, frames so far
    curl -X POST localhost:8080/pause
    curl -X POST localhost:8080/play
    curl -X POST 'localhost:8080/seek?seconds=30'

The default pipeline is a test video into an appsink named "sink", paced in
real time; any pipeline works (``--pipeline "audiotestsrc ! autoaudiosink"``),
frames are counted when it has an appsink named "sink".
"""

import argparse
import asyncio

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstApp", "1.0")
from aiohttp import web  # noqa: E402
from gi.repository import Gst, GstApp  # noqa: E402, F401 - GstApp: appsink's methods

import glibloop  # noqa: E402

DEFAULT_PIPELINE = (
    "videotestsrc ! video/x-raw,width=160,height=120,framerate=30/1 "
    "! appsink name=sink emit-signals=true sync=true"
)
STATES = {"play": Gst.State.PLAYING, "pause": Gst.State.PAUSED}


class Player:
    """A pipeline and what its bus said.  Run run() in a task: it follows
    the bus and the appsink until the task is cancelled."""

    def __init__(self, description=DEFAULT_PIPELINE):
        self.pipeline = Gst.parse_launch(description)
        self.sink = self.pipeline.get_by_name("sink")
        self.state = Gst.State.NULL
        self.seeks_done = 0  # ASYNC_DONE messages: a seek or a state change finished
        self.frames = 0
        self.last_pts = None  # timestamp of the last frame, in seconds
        self.errors = []
        self.eos = False
        self._waiters = []
        # Connected now, before the pipeline can play: no emission is missed.
        self._messages = glibloop.signal_stream(self.pipeline.get_bus(), "message")
        self._samples = (
            None if self.sink is None else glibloop.signal_stream(self.sink, "new-sample")
        )

    async def run(self):
        bus = self.pipeline.get_bus()
        bus.add_signal_watch()  # on the thread-default context: the loop's
        try:
            async with self._messages as messages, asyncio.TaskGroup() as tasks:
                if self._samples is not None:
                    tasks.create_task(self._pull_frames())
                async for _bus, message in messages:
                    self._handle(message)
        finally:
            bus.remove_signal_watch()
            self.pipeline.set_state(Gst.State.NULL)
            if self._samples is not None:
                self._samples.close()

    def _handle(self, message):
        kind = message.type
        if kind == Gst.MessageType.STATE_CHANGED and message.src == self.pipeline:
            _old, self.state, _pending = message.parse_state_changed()
        elif kind == Gst.MessageType.ASYNC_DONE:
            self.seeks_done += 1
        elif kind == Gst.MessageType.EOS:
            self.eos = True
        elif kind == Gst.MessageType.ERROR:
            error, _debug = message.parse_error()
            self.errors.append(f"{message.src.get_name()}: {error.message}")
        self._wake()

    async def _pull_frames(self):
        # new-sample is emitted on GStreamer's streaming thread; the stream
        # hands each emission to this coroutine on the loop's thread.  Each
        # one is taken as "samples are waiting": all of them are pulled, so
        # the count stays right whatever a seek flushed meanwhile.
        async for (sink,) in self._samples:
            while (sample := sink.try_pull_sample(0)) is not None:
                self.frames += 1
                self.last_pts = sample.get_buffer().pts / Gst.SECOND
            self._wake()

    def _wake(self):
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def until(self, predicate):
        """Wait until predicate() holds, checked after each bus message
        and each frame."""
        while not predicate():
            if self.errors:
                raise RuntimeError(f"pipeline error: {self.errors[-1]}")
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter

    async def set_state(self, state):
        if self.pipeline.set_state(state) == Gst.StateChangeReturn.FAILURE:
            await asyncio.sleep(0)  # let the error message arrive
            raise RuntimeError(f"cannot go to {state.value_nick}: {self.errors}")
        await self.until(lambda: self.state == state)

    async def seek(self, seconds):
        done = self.seeks_done
        flags = Gst.SeekFlags.FLUSH | Gst.SeekFlags.ACCURATE
        if not self.pipeline.seek_simple(Gst.Format.TIME, flags, int(seconds * Gst.SECOND)):
            raise RuntimeError("the pipeline refused the seek")
        await self.until(lambda: self.seeks_done > done)

    def position(self):
        ok, position = self.pipeline.query_position(Gst.Format.TIME)
        return position / Gst.SECOND if ok else None

    def describe(self):
        return {
            "state": self.state.value_nick,
            "position": self.position(),
            "frames": self.frames,
            "last_pts": self.last_pts,
            "eos": self.eos,
            "errors": self.errors,
        }


def make_app(player):
    async def show(request):
        return web.json_response(player.describe())

    async def change_state(request):
        await player.set_state(STATES[request.match_info["action"]])
        return web.json_response(player.describe())

    async def seek(request):
        try:
            seconds = float(request.query["seconds"])
        except (KeyError, ValueError):
            raise web.HTTPBadRequest(text="seek?seconds=S") from None
        await player.seek(seconds)
        return web.json_response(player.describe())

    app = web.Application()
    app.router.add_get("/", show)
    app.router.add_post("/{action:play|pause}", change_state)
    app.router.add_post("/seek", seek)
    return app


async def serve(port, description):
    player = Player(description)
    follower = asyncio.create_task(player.run())
    runner = web.AppRunner(make_app(player))
    await runner.setup()
    await web.TCPSite(runner, "localhost", port).start()
    await player.set_state(Gst.State.PLAYING)
    print(f"serving on http://localhost:{port}/ (Ctrl-C stops)")
    try:
        await follower
    finally:
        await runner.cleanup()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--pipeline", default=DEFAULT_PIPELINE)
    args = parser.parse_args()
    Gst.init(None)
    try:
        glibloop.run(serve(args.port, args.pipeline))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
