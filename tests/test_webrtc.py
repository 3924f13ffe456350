"""WebRTC (POST /v1/realtime/calls) end to end with aiortc as the client: a real VoiceServer on
stand-in models (the VAD is real), a recording on the microphone track, events on the `oai-events`
data channel, the reply's audio on the answer's track."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import soundfile
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from server.app import ServerOptions, VoiceServer
from server.config import SessionConfig
from server.connection import ConnectionLimits
from server.webrtc import CallOffer, OfferError, parse_offer
from server.webrtc_audio import ReplyTrack, frame_to_mono
from tests.helpers import DATA
from tests.stand_in import StandInASR, StandInEnd
from tests.standins import NoiseSynth, ScriptedChat
from voice.audio import WIRE_RATE, float_to_pcm16, resample, rms_dbfs
from voice.engine import Engine

LAMP = "04_v2j_would_you_please_turn_on_living_room_lamp.wav"
KEY = "test-key"


class Server:
    """A VoiceServer on stand-in models (noise for a voice), in a thread and event loop of its own."""

    def __init__(self, vad, sentences: int, api_key: str | None = None,  # noqa: ANN001 - the VAD model
                 max_sessions: int = 16, limits: ConnectionLimits | None = None) -> None:
        engine = Engine(StandInASR(), ScriptedChat(sentences), NoiseSynth(), vad, workers=4,  # type: ignore[arg-type]
                        end_of_turn=StandInEnd())  # type: ignore[arg-type]
        options = ServerOptions(port=0, api_key=api_key, max_sessions=max_sessions, limits=limits or ConnectionLimits())
        self.server = VoiceServer(engine, SessionConfig(), options)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="webrtc-server", daemon=True)
        self.thread.start()
        self.call(self.server.start())
        self.url = f"http://127.0.0.1:{self.server.port}/v1/realtime/calls"

    def call(self, coroutine):  # noqa: ANN001, ANN201 - any coroutine, its result
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=30)

    def close(self) -> None:
        async def stop() -> None:
            assert self.server._server is not None and self.server._calls is not None
            self.server._server.close()
            await self.server._calls.close_all()
            await self.server._server.wait_closed()
        self.call(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        assert self.server.engine is not None
        self.server.engine.close()


@contextmanager
def webrtc_server(vad, sentences: int = 2, api_key: str | None = None,  # noqa: ANN001 - the VAD model
                  max_sessions: int = 16, limits: ConnectionLimits | None = None) -> Iterator[Server]:
    server = Server(vad, sentences, api_key, max_sessions, limits)
    try:
        yield server
    finally:
        server.close()


def post(url: str, body: bytes, content_type: str, key: str | None = KEY) -> tuple[int, dict[str, str], bytes]:
    """A POST from a thread of its own: status, headers, body (errors included)."""
    headers = {"Content-Type": content_type, **({"Authorization": f"Bearer {key}"} if key else {})}
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def recording() -> bytes:
    """The lamp request as PCM16 at 24 kHz."""
    samples, rate = soundfile.read(DATA / LAMP, dtype="float32")
    return float_to_pcm16(resample(samples, rate, WIRE_RATE))


class Call:
    """An aiortc client: the microphone track plays what `say` queues (silence otherwise)."""

    def __init__(self) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.channel = self.pc.createDataChannel("oai-events")
        self.events: list[dict] = []
        self.channel.on("message", lambda message: self.events.append(json.loads(message)))
        self.microphone = ReplyTrack(lambda event: None)  # a paced track of queued audio: what a microphone needs
        self.pc.addTrack(self.microphone)
        self.heard: list[tuple[float, float]] = []  # (when, level in dBFS) of each frame of the reply track
        self._listening: list[asyncio.Task] = []
        self.pc.on("track", lambda track: self._listening.append(asyncio.ensure_future(self._listen(track))))

    async def _listen(self, track: MediaStreamTrack) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            self.heard.append((loop.time(), rms_dbfs(frame_to_mono(frame))))

    def say(self, pcm: bytes) -> None:
        self.microphone.push("microphone", "microphone", pcm + bytes(WIRE_RATE * 2 * 3))  # and 3 s of silence after it

    async def connect(self, url: str, key: str | None = KEY, session: dict | None = None) -> tuple[int, bytes]:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        sdp = self.pc.localDescription.sdp
        if session is None:
            status, headers, body = await asyncio.to_thread(post, url, sdp.encode(), "application/sdp", key)
        else:
            form = (f"--B\r\nContent-Disposition: form-data; name=\"sdp\"\r\n\r\n{sdp}\r\n--B\r\n"
                    f"Content-Disposition: form-data; name=\"session\"\r\n\r\n{json.dumps(session)}\r\n--B--\r\n")
            status, headers, body = await asyncio.to_thread(post, url, form.encode(), "multipart/form-data; boundary=B",
                                                            key)
        if status == 201:
            assert headers["Content-Type"] == "application/sdp"
            assert headers["Location"].startswith("/v1/realtime/calls/rtc_")
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=body.decode(), type="answer"))
        return status, body

    def send(self, event: dict) -> None:
        self.channel.send(json.dumps(event))

    def of(self, kind: str) -> list[dict]:
        return [e for e in self.events if e["type"] == kind]

    async def until(self, kind: str, timeout: float = 30.0, after: int = 0) -> dict:
        deadline = asyncio.get_running_loop().time() + timeout
        while not (found := [e for e in self.events[after:] if e["type"] == kind]):
            assert asyncio.get_running_loop().time() < deadline, (kind, [e["type"] for e in self.events])
            await asyncio.sleep(0.02)
        return found[0]

    def loud_s(self, since: float = 0.0, until: float = float("inf")) -> float:
        """How long the reply track carried sound (not silence) between two times."""
        return sum(0.02 for when, level in self.heard if since <= when < until and level > -50)

    async def close(self) -> None:
        await self.pc.close()
        for task in self._listening:
            task.cancel()
        await asyncio.gather(*self._listening, return_exceptions=True)


async def test_a_spoken_turn_over_webrtc(silero):
    with webrtc_server(silero, sentences=2, api_key=KEY) as server:
        call = Call()
        try:
            status, _ = await call.connect(server.url, session={"type": "realtime", "instructions": "Be brief."})
            assert status == 201
            created = await call.until("session.created")
            assert created["session"]["instructions"] == "Be brief."  # the offer's session applies
            call.say(recording())
            await call.until("input_audio_buffer.speech_started", timeout=20)
            transcript = await call.until("conversation.item.input_audio_transcription.completed", timeout=30)
            assert transcript["transcript"] == "Hello there."
            done = await call.until("response.done", timeout=30)
            assert done["response"]["status"] == "completed"
            started = await call.until("output_audio_buffer.started")
            stopped = await call.until("output_audio_buffer.stopped", timeout=30)
            assert started["response_id"] == stopped["response_id"] == done["response"]["id"]
            # The reply's audio came on the track, not as deltas on the channel; its transcript did come.
            assert not call.of("response.output_audio.delta")
            assert call.of("response.output_audio_transcript.done")
            assert call.loud_s() >= 2.0, call.loud_s()
            assert server.call(_metric(server, "sessions_active")) == 1
        finally:
            await call.close()
        await _until_idle(server)


async def test_clear_at_barge_in_drops_the_rest_of_the_reply(silero):
    with webrtc_server(silero, sentences=8) as server:
        call = Call()
        try:
            assert (await call.connect(server.url))[0] == 201
            await call.until("session.created")
            call.send({"type": "conversation.item.create", "item": {
                "type": "message", "role": "user", "content": [{"type": "input_text", "text": "Tell me a story."}]}})
            call.send({"type": "response.create"})
            started = await call.until("output_audio_buffer.started", timeout=30)
            # The reply is made faster than it plays: it is done, and most of its audio waits on the server.
            await call.until("response.done", timeout=30)
            await asyncio.sleep(1.0)
            call.send({"type": "output_audio_buffer.clear"})
            cleared = await call.until("output_audio_buffer.cleared")
            cut_at = asyncio.get_running_loop().time()
            await asyncio.sleep(1.5)
            assert call.loud_s(until=cut_at) >= 0.5
            assert call.loud_s(since=cut_at + 0.3) == 0, "the reply's audio went on after the clear"
            assert not call.of("output_audio_buffer.stopped"), cleared
            assert cleared["response_id"] == started["response_id"]
            # The server truncated the reply where its playing stopped: the conversation holds what was heard.
            truncated = await call.until("conversation.item.truncated")
            assert 800 <= truncated["audio_end_ms"] <= 2500, truncated
            assert not call.of("error")
        finally:
            await call.close()
        await _until_idle(server)


async def test_calls_are_admitted_as_websockets_are(silero):
    with webrtc_server(silero, api_key=KEY) as server:
        call = Call()
        try:
            status, body = await call.connect(server.url, key="wrong")
            assert status == 401, body
            status, _, body = await asyncio.to_thread(post, server.url, b"hello", "application/sdp")
            assert status == 400 and json.loads(body)["error"]["code"] == "invalid_offer"
            status, body = await call.connect(server.url, session={"type": "realtime", "temperature": "hot"})
            assert status == 400, body
            assert server.server.sessions == 0
            # A page of another origin may call: the preflight allows it, and the answer's Location is exposed.
            preflight = urllib.request.Request(server.url, method="OPTIONS", headers={
                "Origin": "http://page.example", "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type"})
            with await asyncio.to_thread(urllib.request.urlopen, preflight, timeout=10) as answer:
                assert answer.status == 204
                assert answer.headers["Access-Control-Allow-Origin"] == "http://page.example"
                assert answer.headers["Access-Control-Allow-Headers"] == "authorization, content-type"
            # Elsewhere a POST is still refused.
            status, headers, _ = await asyncio.to_thread(post, server.url.replace("/calls", ""), b"x", "text/plain")
            assert status == 405 and headers["Allow"] == "GET, HEAD"
        finally:
            await call.close()


async def test_a_call_past_the_session_limit_is_refused(silero):
    with webrtc_server(silero, max_sessions=0) as server:
        call = Call()
        try:
            status, body = await call.connect(server.url)
            assert status == 503 and json.loads(body)["error"]["code"] == "session_limit_reached"
            assert server.call(_refused(server, "busy")) == 1
        finally:
            await call.close()


async def test_a_call_the_server_ends_hears_why(silero):
    with webrtc_server(silero, limits=ConnectionLimits(max_session_s=2.0)) as server:
        call = Call()
        try:
            assert (await call.connect(server.url))[0] == 201
            error = await call.until("error", timeout=10)
            assert error["error"]["code"] == "session_expired"
            await _until_idle(server)
        finally:
            await call.close()


async def test_the_reply_track_keeps_the_output_buffer():
    """started when a response's audio first plays, stopped once it has all played after its end;
    a clear drops the rest and says how much of the item was played."""
    events: list[dict] = []
    track = ReplyTrack(events.append)
    track.push("resp_1", "item_1", bytes(WIRE_RATE * 2 // 10))  # 100 ms
    frames = [await track.recv() for _ in range(3)]
    assert [e["type"] for e in events] == ["output_audio_buffer.started"]
    assert all(f.sample_rate == 48_000 and f.samples == 960 for f in frames)
    track.finish("resp_1")
    for _ in range(4):
        await track.recv()
    assert [e["type"] for e in events] == ["output_audio_buffer.started", "output_audio_buffer.stopped"]
    assert events[1]["response_id"] == "resp_1"
    track.push("resp_2", "item_2", bytes(WIRE_RATE * 2))  # 1 s
    for _ in range(5):
        await track.recv()
    assert track.clear() == ("item_2", 100)
    assert track.buffered_s == 0 and track.clear() is None
    track.stop()


def test_offers_are_read_raw_or_from_a_form():
    sdp = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\n"
    assert parse_offer("application/sdp", sdp.encode()) == CallOffer(sdp)
    form = (f"--x\r\nContent-Disposition: form-data; name=\"sdp\"\r\n\r\n{sdp}\r\n--x\r\n"
            "Content-Disposition: form-data; name=\"session\"\r\nContent-Type: application/json\r\n\r\n"
            "{\"type\": \"realtime\"}\r\n--x--\r\n")
    assert parse_offer("multipart/form-data; boundary=x", form.encode()) == CallOffer(sdp, {"type": "realtime"})
    for content_type, body in [("application/json", b"{}"), ("application/sdp", b"hello"),
                               ("multipart/form-data; boundary=x", b"--x--\r\n")]:
        with pytest.raises(OfferError):
            parse_offer(content_type, body)


async def _metric(server: Server, name: str) -> float:
    return getattr(server.server.metrics, name)._value.get()


async def _refused(server: Server, reason: str) -> float:
    return server.server.metrics.sessions_refused.labels(reason=reason)._value.get()


async def _until_idle(server: Server, timeout: float = 10.0) -> None:
    """Until the server has closed every session (the client hung up)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while server.server.sessions:
        assert asyncio.get_running_loop().time() < deadline, "the call's session never ended"
        await asyncio.sleep(0.05)
    assert np.isclose(server.call(_metric(server, "sessions_active")), 0)
