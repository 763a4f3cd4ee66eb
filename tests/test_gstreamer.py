"""GStreamer pipelines on glibloop: real pipelines (audiotestsrc,
videotestsrc into fakesink and appsink) whose bus watch runs on the loop's
GLib context.  Bus messages are read with `async for`, appsink samples
arrive in a coroutine, examples/gst_player.py's aiohttp endpoints play,
pause and seek a pipeline on the same thread, and under a saturating
asyncio load not one buffer is lost."""
import asyncio
import sys
from pathlib import Path

import aiohttp
import gi
import pytest

gi.require_version("Gst", "1.0")
gi.require_version("GstApp", "1.0")
from gi.repository import GLib, Gst, GstApp  # noqa: E402, F401 - GstApp: appsink's methods

import glibloop  # noqa: E402
from _saturation import Saturation  # noqa: E402

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
sys.path.insert(0, str(EXAMPLES))
import gst_player  # noqa: E402

Gst.init(None)
TIMEOUT = 30
MessageType = Gst.MessageType


def run(loop, coro):
    """run_until_complete with a timeout; what reached the loop's exception
    handler is returned beside the result."""
    problems = []
    loop.set_exception_handler(lambda _loop, context: problems.append(context))
    result = loop.run_until_complete(asyncio.wait_for(coro, TIMEOUT))
    return result, problems


class Watched:
    """A pipeline with a bus watch on the running loop's context, its
    messages as a signal stream; stopped (NULL) and unwatched on exit."""

    def __init__(self, description):
        self.pipeline = Gst.parse_launch(description)
        self.bus = self.pipeline.get_bus()

    async def __aenter__(self):
        self.bus.add_signal_watch()
        self.messages = glibloop.signal_stream(self.bus, "message")
        return self

    async def __aexit__(self, *exc_info):
        self.messages.close()
        self.pipeline.set_state(Gst.State.NULL)
        self.bus.remove_signal_watch()

    async def until(self, *types):
        """Every message up to and including the first of one of types."""
        seen = []
        async for _bus, message in self.messages:
            seen.append(message)
            if message.type in types:
                return seen
        raise AssertionError("the message stream ended")


def pipeline_states(messages, pipeline):
    return [
        message.parse_state_changed()[1].value_nick
        for message in messages
        if message.type == MessageType.STATE_CHANGED and message.src == pipeline
    ]


# --- bus messages --------------------------------------------------------------


def test_bus_messages_in_order_up_to_eos(loop):
    async def main():
        async with Watched("audiotestsrc num-buffers=20 ! fakesink name=sink") as watched:
            assert watched.pipeline.set_state(Gst.State.PLAYING) != Gst.StateChangeReturn.FAILURE
            messages = await watched.until(MessageType.EOS, MessageType.ERROR)
            return [m.type for m in messages], pipeline_states(messages, watched.pipeline)

    (types, states), problems = run(loop, main())
    assert states == ["ready", "paused", "playing"]
    assert types[-1] == MessageType.EOS
    for expected in (MessageType.STREAM_START, MessageType.ASYNC_DONE, MessageType.NEW_CLOCK):
        assert expected in types
    assert types.index(MessageType.STREAM_START) < types.index(MessageType.EOS)
    assert not problems


def test_bus_error_message(loop, tmp_path):
    missing = tmp_path / "missing.wav"

    async def main():
        async with Watched(f"filesrc location={missing} ! fakesink") as watched:
            outcome = watched.pipeline.set_state(Gst.State.PLAYING)
            messages = await watched.until(MessageType.ERROR, MessageType.EOS)
            error, debug = messages[-1].parse_error()
            return outcome, messages[-1].src.get_name(), error, debug

    (outcome, source, error, debug), problems = run(loop, main())
    assert outcome == Gst.StateChangeReturn.FAILURE
    assert source.startswith("filesrc")
    assert error.matches(Gst.ResourceError.quark(), Gst.ResourceError.NOT_FOUND)
    assert str(missing) in debug
    assert not problems


def test_state_changes_awaited_one_by_one(loop):
    """Each set_state is awaited through the bus: the messages of one
    change are all read before the next change starts."""

    async def main():
        async with Watched("audiotestsrc is-live=true ! fakesink") as watched:
            steps = []
            for target in (Gst.State.READY, Gst.State.PAUSED, Gst.State.PLAYING,
                           Gst.State.PAUSED, Gst.State.READY):
                watched.pipeline.set_state(target)
                while True:
                    messages = await watched.until(MessageType.STATE_CHANGED, MessageType.ERROR)
                    states = pipeline_states(messages, watched.pipeline)
                    if states and states[-1] == target.value_nick:
                        break
                steps.append(watched.pipeline.get_state(0)[1].value_nick)
            return steps

    steps, problems = run(loop, main())
    assert steps == ["ready", "paused", "playing", "paused", "ready"]
    assert not problems


# --- samples and buffers, nothing dropped --------------------------------------


async def pull_samples(samples, count):
    """Pull count samples in this coroutine as the appsink's new-sample
    stream announces them (each emission: pull all that wait); returns
    their timestamps (ns).  Open the stream before the pipeline plays."""
    timestamps = []
    async for (sink,) in samples:
        while (sample := sink.try_pull_sample(0)) is not None:
            timestamps.append(sample.get_buffer().pts)
        if len(timestamps) >= count:
            return timestamps


def test_appsink_samples_arrive_in_a_coroutine(loop):
    frames = 120

    async def main():
        description = (
            f"videotestsrc num-buffers={frames} ! video/x-raw,width=32,height=24,framerate=30/1 "
            "! appsink name=sink emit-signals=true sync=false"
        )
        async with Watched(description) as watched:
            sink = watched.pipeline.get_by_name("sink")
            with glibloop.signal_stream(sink, "new-sample") as samples:
                watched.pipeline.set_state(Gst.State.PLAYING)
                timestamps = await pull_samples(samples, frames)
            messages = await watched.until(MessageType.EOS, MessageType.ERROR)
            return timestamps, messages[-1].type, sink.is_eos()

    (timestamps, last, eos), problems = run(loop, main())
    frame = Gst.SECOND // 30
    assert [round(t / frame) for t in timestamps] == list(range(frames))
    assert last == MessageType.EOS and eos
    assert not problems


def test_nothing_dropped_under_a_saturating_load(loop):
    """100 echo connections and bursts of 1000 tasks keep asyncio always
    busy while an appsink and a fakesink (handoff signals) stream as fast as
    they can: every buffer reaches its coroutine, in order."""
    video_frames, audio_buffers = 1000, 1000

    async def main():
        load = Saturation(bursts=True)
        await load.start()
        description = (
            f"videotestsrc num-buffers={video_frames} ! video/x-raw,width=16,height=16 "
            "! appsink name=video emit-signals=true sync=false "
            f"audiotestsrc num-buffers={audio_buffers} samplesperbuffer=64 "
            "! fakesink name=audio signal-handoffs=true sync=false"
        )
        try:
            async with Watched(description) as watched:
                video = watched.pipeline.get_by_name("video")
                audio = watched.pipeline.get_by_name("audio")
                trips_before = load.trips
                samples = glibloop.signal_stream(video, "new-sample")
                async with samples, glibloop.signal_stream(audio, "handoff") as handoffs:
                    puller = asyncio.ensure_future(pull_samples(samples, video_frames))
                    watched.pipeline.set_state(Gst.State.PLAYING)
                    offsets = []
                    async for _sink, buffer, _pad in handoffs:
                        offsets.append(buffer.offset)
                        if len(offsets) == audio_buffers:
                            break
                    dropped = handoffs.dropped
                    timestamps = await puller
                messages = await watched.until(MessageType.EOS, MessageType.ERROR)
                return (timestamps, offsets, dropped, messages[-1].type,
                        load.trips - trips_before, load.burst_tasks)
        finally:
            await load.stop()

    (timestamps, offsets, dropped, last, trips, bursts), problems = run(loop, main())
    assert len(timestamps) == video_frames
    assert timestamps == sorted(set(timestamps))  # each frame once, in order
    assert offsets == [64 * i for i in range(audio_buffers)]  # audio offsets count samples
    assert dropped == 0
    assert last == MessageType.EOS
    assert trips > 0 and bursts > 0  # the load really ran meanwhile
    assert not problems


# --- examples/gst_player.py: aiohttp controls the pipeline ------------------------


def test_http_plays_pauses_and_seeks_the_pipeline(loop):
    async def main():
        player = gst_player.Player()
        follower = asyncio.ensure_future(player.run())
        runner = aiohttp.web.AppRunner(gst_player.make_app(player))
        await runner.setup()
        site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        base = f"http://127.0.0.1:{runner.addresses[0][1]}"
        seen = {}
        try:
            async with aiohttp.ClientSession() as http:
                async def post(path):
                    async with http.post(base + path) as response:
                        assert response.status == 200, await response.text()
                        return await response.json()

                async def get():
                    async with http.get(base + "/") as response:
                        return await response.json()

                seen["initial"] = await get()
                seen["play"] = await post("/play")
                await player.until(lambda: player.frames >= 5)
                seen["pause"] = await post("/pause")
                frames_paused = player.frames
                await asyncio.sleep(0.2)
                seen["still paused"] = await get()
                assert player.frames <= frames_paused + 1  # a preroll frame at most
                seen["seek"] = await post("/seek?seconds=30")
                seen["play again"] = await post("/play")
                await player.until(lambda: player.last_pts is not None and player.last_pts > 30.1)
                seen["after seek"] = await get()
                async with http.post(base + "/seek?seconds=x") as response:
                    seen["bad seek"] = response.status
        finally:
            await runner.cleanup()
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)
        return seen, player.pipeline.get_state(0)[1]

    (seen, final), problems = run(loop, main())
    assert seen["initial"]["state"] == "null"
    assert seen["play"]["state"] == "playing"
    assert seen["pause"]["state"] == "paused"
    assert seen["still paused"]["state"] == "paused"
    assert seen["still paused"]["position"] == pytest.approx(seen["pause"]["position"], abs=0.05)
    assert seen["seek"]["state"] == "paused"
    assert seen["seek"]["position"] == pytest.approx(30.0, abs=0.05)
    assert seen["play again"]["state"] == "playing"
    assert seen["after seek"]["position"] >= 30.0
    assert 30.0 < seen["after seek"]["last_pts"] < 40.0
    assert seen["after seek"]["errors"] == []
    assert seen["bad seek"] == 400
    assert final == Gst.State.NULL  # run() stops the pipeline when cancelled
    assert not problems


def test_pipeline_error_reaches_the_http_client(loop, tmp_path):
    async def main():
        player = gst_player.Player(f"filesrc location={tmp_path / 'nothing'} ! fakesink")
        follower = asyncio.ensure_future(player.run())
        try:
            with pytest.raises(RuntimeError, match="cannot go to playing") as info:
                await player.set_state(Gst.State.PLAYING)
            await player.until(lambda: player.errors)
            return str(info.value), player.errors, player.describe()["state"]
        finally:
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)

    (message, errors, state), problems = run(loop, main())
    assert message.startswith("cannot go to playing")
    assert errors[0].startswith("filesrc") and "not found" in errors[0]
    assert state in ("null", "ready")
    assert not problems


def test_bus_watch_is_on_the_loops_context(loop):
    """add_signal_watch() attaches to the thread-default context when it is
    called: inside a coroutine on a loop of another thread, that loop's own
    GMainContext, not the default one."""
    found = {}

    def thread_main():
        async def main():
            async with Watched("audiotestsrc num-buffers=3 ! fakesink") as watched:
                watched.pipeline.set_state(Gst.State.PLAYING)
                await watched.until(MessageType.EOS)
                found["context"] = GLib.MainContext.get_thread_default()
                found["loop"] = asyncio.get_running_loop()

        other = glibloop.new_event_loop()
        try:
            other.run_until_complete(asyncio.wait_for(main(), TIMEOUT))
            found["other context"] = other._context
        finally:
            other.close()

    import threading

    thread = threading.Thread(target=thread_main)
    thread.start()
    thread.join(TIMEOUT)
    assert "context" in found, "the pipeline on the other thread did not finish"
    assert found["context"] is not None
    assert found["context"] != GLib.MainContext.default()
