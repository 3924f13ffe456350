"""Measure turns over WebRTC (`POST /v1/realtime/calls`, aiortc as the client), as benchmarks/turns.py
measures them over the websocket: a recording on the microphone's track at real time, silence after it.

Voice-to-voice runs from the moment the last voiced sample left on the track to the moment the first
sound of the reply came out of the client's decoder (the browser's path: Opus both ways, the jitter
buffer included). The turns are summarised by turns.py's own rules: each received frame with sound
stands for an audio delta of the response under way.
"""

from __future__ import annotations

import asyncio
import base64
import fractions
import json
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable
from typing import Any

import av
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from benchmarks.turns import FRAME_MS, Clip, TurnResult, _summarise
from server.webrtc_audio import FRAME_SAMPLES, TRACK_RATE, frame_to_mono
from voice.audio import WIRE_RATE, float_to_pcm16, pcm16_to_float, resample, rms_dbfs

SOUND_DBFS = -100.0  # a received frame louder than this is the reply's (the server sends digital silence between)
AUDIO_GRACE_S = 30.0  # how long a turn waits after response.done for its audio to finish playing


class Microphone(MediaStreamTrack):
    """Plays queued 20 ms frames at real time, silence otherwise; a frame may carry a callback, called
    with the time it left."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._frames: deque[tuple[bytes, Callable[[float], None] | None]] = deque()
        self._start: float | None = None
        self._timestamp = 0

    def play(self, pcm: bytes, marks: dict[int, Callable[[float], None]]) -> None:
        """Queue 24 kHz PCM16; `marks`: callbacks by 20 ms frame index."""
        samples = float_to_pcm16(resample(pcm16_to_float(pcm), WIRE_RATE, TRACK_RATE))
        size = FRAME_SAMPLES * 2
        for index, offset in enumerate(range(0, len(samples), size)):
            self._frames.append((samples[offset:offset + size].ljust(size, b"\0"), marks.get(index)))

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        else:
            self._timestamp += FRAME_SAMPLES
            await asyncio.sleep(max(0.0, self._start + self._timestamp / TRACK_RATE - time.monotonic()))
        data, mark = self._frames.popleft() if self._frames else (bytes(FRAME_SAMPLES * 2), None)
        frame = av.AudioFrame(format="s16", layout="mono", samples=FRAME_SAMPLES)
        frame.planes[0].update(data)
        frame.sample_rate = TRACK_RATE
        frame.pts = self._timestamp
        frame.time_base = fractions.Fraction(1, TRACK_RATE)
        if mark is not None:
            mark(time.monotonic())
        return frame


def calls_url(websocket_url: str) -> str:
    """http://host/v1/realtime/calls for the server of ws://host/v1/realtime."""
    return websocket_url.replace("wss://", "https://").replace("ws://", "http://").rstrip("/") + "/calls"


class WebRtcCall:
    """One call: the events it received and the sound it heard, each with its arrival time."""

    def __init__(self) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.channel = self.pc.createDataChannel("oai-events")
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.heard: list[tuple[float, bytes, bool]] = []  # every frame received (24 kHz PCM16), and if it has sound
        self.microphone = Microphone()
        self.pc.addTrack(self.microphone)
        self.opened = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.channel.on("open", self.opened.set)
        self.channel.on("message", lambda m: self.events.append((time.monotonic(), json.loads(m))))
        self.pc.on("track", lambda track: self._tasks.append(asyncio.ensure_future(self._listen(track))))

    async def _listen(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            mono = frame_to_mono(frame)
            pcm = float_to_pcm16(resample(mono, frame.sample_rate, WIRE_RATE))
            self.heard.append((time.monotonic(), pcm, rms_dbfs(mono) > SOUND_DBFS))

    async def connect(self, url: str, api_key: str | None = None) -> None:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        headers = {"Content-Type": "application/sdp", **({"Authorization": f"Bearer {api_key}"} if api_key else {})}
        request = urllib.request.Request(url, data=self.pc.localDescription.sdp.encode(), headers=headers,
                                         method="POST")

        def post() -> str:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.read().decode()

        answer = await asyncio.to_thread(post)
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        await asyncio.wait_for(self.opened.wait(), 20)

    async def close(self) -> None:
        await self.pc.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _with_sound_as_deltas(events: list[tuple[float, dict[str, Any]]],
                          heard: list[tuple[float, bytes, bool]]) -> list[tuple[float, dict[str, Any]]]:
    """The turn's events, with each frame received from a response's first sound on (its pauses
    included) as an audio delta of that response."""
    starts = [(at, e["response"]["id"]) for at, e in events if e["type"] == "response.created"]
    deltas: list[tuple[float, dict[str, Any]]] = []
    sounding: set[str] = set()
    for at, pcm, sound in heard:
        current = [response_id for started, response_id in starts if started <= at]
        if not current or (current[-1] not in sounding and not sound):
            continue
        sounding.add(current[-1])
        deltas.append((at, {"type": "response.output_audio.delta", "response_id": current[-1],
                            "delta": base64.b64encode(pcm).decode()}))
    return sorted(events + deltas, key=lambda pair: pair[0])


async def run_turn(call: WebRtcCall, clip: Clip, *, timeout_s: float = 30.0) -> TurnResult:
    """One turn on an open call (the session must be idle)."""
    first_event, first_frame = len(call.events), len(call.heard)
    frames = -(-len(clip.pcm) // (WIRE_RATE * 2 * FRAME_MS // 1000))
    last_voiced_frame = min(frames - 1, int(clip.speech_end_ms // FRAME_MS))
    within = (clip.speech_end_ms - last_voiced_frame * FRAME_MS) / 1000
    speech_end: list[float] = []
    call.microphone.play(clip.pcm, {last_voiced_frame: lambda left: speech_end.append(left - FRAME_MS / 1000 + within)})
    deadline = time.monotonic() + frames * FRAME_MS / 1000 + timeout_s

    def seen(kind: str) -> bool:
        return any(e["type"] == kind for _, e in call.events[first_event:])

    while not seen("response.done") and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    done_at = time.monotonic()
    while seen("response.done") and not (seen("output_audio_buffer.stopped") or seen("output_audio_buffer.cleared")) \
            and time.monotonic() < done_at + AUDIO_GRACE_S:
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)  # the last frames through the jitter buffer
    events = _with_sound_as_deltas(call.events[first_event:], call.heard[first_frame:])
    return _summarise(clip, events, speech_end[0] if speech_end else None)


async def run_webrtc_session(url: str, clips: list[Clip], *, pause_s: float = 0.0,
                             api_key: str | None = None) -> list[TurnResult]:
    """Several turns on one call (`url`: the server's websocket address), one after another, with a
    pause of silence between them."""
    call = WebRtcCall()
    try:
        await call.connect(calls_url(url), api_key)
    except (OSError, urllib.error.URLError, TimeoutError) as exc:
        await call.close()
        return [TurnResult(clip=c.name, ok=False, failure=f"connect: {exc}") for c in clips]
    results: list[TurnResult] = []
    try:
        for number, clip in enumerate(clips):
            if number and pause_s:
                await asyncio.sleep(pause_s)
            results.append(await run_turn(call, clip))
    finally:
        await call.close()
    return results
