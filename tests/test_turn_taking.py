"""Turn-taking through the websocket with real models and real recordings: a pause inside an
utterance does not end the turn, a finished question ends on the short window, noise and
backchannels during a reply leave it alone, and the documented defaults of turn detection.

Every check is made in audio time (how much audio the server had heard), never in wall time."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import numpy as np
import pytest
import websockets

from tests.realtime_sdk import FRAME_BYTES, clip
from voice.audio import WIRE_RATE, float_to_pcm16, resample
from voice.turn_taking import END_POLICIES

pytestmark = pytest.mark.slow

LAMP = "03_v2j_turn_on_living_room_lamp.wav"
QUESTION = "04_v2j_would_you_please_turn_on_living_room_lamp.wav"
NOISE = "23_leopard_empty_synthetic_nospeech.wav"
AUTO = END_POLICIES["auto"]


def silence(ms: int) -> bytes:
    return bytes(WIRE_RATE * 2 * ms // 1000)


class Session:
    """A websocket session that records every event with how much audio had been sent by then."""

    def __init__(self, websocket) -> None:  # noqa: ANN001 - a websockets client connection
        self.websocket = websocket
        self.sent_ms = 0.0
        self.events: list[tuple[float, dict]] = []
        self._receiver = asyncio.create_task(self._receive())

    async def _receive(self) -> None:
        async for message in self.websocket:
            self.events.append((self.sent_ms, json.loads(message)))

    def of(self, kind: str) -> list[dict]:
        return [event for _, event in self.events if event["type"] == kind]

    def sent_at(self, event: dict) -> float:
        return next(at for at, seen in self.events if seen is event)

    async def send(self, event: dict) -> None:
        await self.websocket.send(json.dumps(event))

    async def update(self, session: dict) -> dict:
        before = len(self.of("session.updated"))
        await self.send({"type": "session.update", "session": {"type": "realtime", **session}})
        return (await self.wait_for("session.updated", after=before))["session"]

    async def stream(self, pcm: bytes, until: str | None = None) -> None:
        """Send audio in 20 ms frames at real-time pace, as a microphone does (stopping early once
        an `until` event has arrived)."""
        start = time.monotonic()
        for index in range(0, len(pcm), FRAME_BYTES):
            if until and self.of(until):
                return
            await asyncio.sleep(max(0.0, start + index / (WIRE_RATE * 2) - time.monotonic()))
            frame = pcm[index:index + FRAME_BYTES]
            await self.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(frame).decode()})
            self.sent_ms += len(frame) / (WIRE_RATE * 2) * 1000

    async def wait_for(self, kind: str, timeout: float = 120.0, after: int = 0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.of(kind)
            if len(found) > after:
                return found[after]
            await asyncio.sleep(0.02)
        raise TimeoutError(f"no {kind} within {timeout} s")

    async def close(self) -> None:
        self._receiver.cancel()
        await self.websocket.close()


async def open_session(port: int) -> Session:
    session = Session(await websockets.connect(f"ws://127.0.0.1:{port}/v1/realtime", max_size=None))
    await session.wait_for("session.created")
    return session


def with_pause(name: str, after_word: str, pause_ms: int) -> bytes:
    """A real recording with a pause of `pause_ms` inserted after the word `after_word` (found by
    faster-whisper's word timestamps)."""
    from faster_whisper import WhisperModel

    from voice.models import whisper_model

    samples = np.frombuffer(clip(name), dtype="<i2").astype(np.float32) / 32768
    model = WhisperModel(whisper_model(None), device="cpu", compute_type="int8", cpu_threads=2)
    segments, _ = model.transcribe(resample(samples, WIRE_RATE, 16_000), word_timestamps=True, language="en")
    words = [word for segment in segments for word in segment.words]
    cut = next(word.end for word in words if word.word.strip(" ,.").lower() == after_word)
    at = int(cut * WIRE_RATE)
    return float_to_pcm16(samples[:at]) + silence(pause_ms) + float_to_pcm16(samples[at:])


def piper(text: str) -> bytes:
    """`text` spoken by the bundled Piper voice, as 24 kHz PCM16."""
    from voice.engine import EngineConfig, build_tts

    tts = build_tts(EngineConfig())
    audio = np.concatenate(list(tts.synthesize(text)))
    return float_to_pcm16(resample(audio, tts.sample_rate, WIRE_RATE))


async def test_a_pause_after_an_unfinished_phrase_does_not_end_the_turn(voice_server):
    """'Turn on the … living room lamp' with a 1.2 s pause after 'the': one turn, one reply."""
    session = await open_session(voice_server)
    try:
        await session.stream(with_pause(LAMP, "the", 1200) + silence(AUTO.hold_ms + 1000))
        await session.wait_for("response.done")
        assert len(session.of("input_audio_buffer.speech_started")) == 1
        assert len(session.of("input_audio_buffer.committed")) == 1
        transcript = session.of("conversation.item.input_audio_transcription.completed")[0]["transcript"]
        assert "lamp" in transcript.lower()
    finally:
        await session.close()


async def test_a_paused_list_is_one_turn(voice_server):
    """A list with 800 ms pauses between its items (the bundled Piper voice): one turn."""
    items = [piper(word) for word in ("Eggs,", "milk,", "and bread.")]
    pcm = items[0] + silence(800) + items[1] + silence(800) + items[2] + silence(AUTO.hold_ms + 1000)
    session = await open_session(voice_server)
    try:
        await session.stream(pcm)
        await session.wait_for("response.done")
        assert len(session.of("input_audio_buffer.committed")) == 1
    finally:
        await session.close()


async def test_a_finished_question_ends_on_the_short_window(voice_server):
    """The turn ends before the hold window could have passed: the words said it was finished."""
    session = await open_session(voice_server)
    try:
        await session.stream(clip(QUESTION) + silence(AUTO.hold_ms - 100), until="input_audio_buffer.speech_stopped")
        stopped = await session.wait_for("input_audio_buffer.speech_stopped", timeout=5)
        assert session.sent_at(stopped) - stopped["audio_end_ms"] < AUTO.hold_ms
    finally:
        await session.close()


async def long_reply(session: Session) -> dict:
    """Ask for a long spoken reply by text; return its response.created once its audio flows."""
    await session.update({"instructions": "You are a storyteller who tells long, detailed stories.",
                          "temperature": 0.0, "max_output_tokens": 120})
    text = {"type": "input_text", "text": "Tell me a story about a dragon."}
    await session.send({"type": "conversation.item.create",
                        "item": {"type": "message", "role": "user", "content": [text]}})
    await session.send({"type": "response.create"})
    await session.wait_for("response.output_audio.delta")
    return session.of("response.created")[0]


@pytest.mark.parametrize("sound", ["noise", "backchannel"])
async def test_a_noise_or_a_backchannel_during_a_reply_does_not_cancel_it(voice_server, sound):
    session = await open_session(voice_server)
    try:
        created = await long_reply(session)
        # (Piper's "Mm-hmm" is heard by tiny.en as "in a month", confidently: words, to the server.)
        heard = clip(NOISE)[: WIRE_RATE * 2 * 3] if sound == "noise" else piper("Uh-huh. Yeah.")
        await session.stream(silence(300) + heard + silence(1500))
        done = await session.wait_for("response.done")
        assert done["response"]["id"] == created["response"]["id"]
        assert done["response"]["status"] == "completed"
        assert not session.of("output_audio_buffer.cleared")
    finally:
        await session.close()


async def test_a_spoken_interruption_cancels_the_reply_and_tells_the_client_to_stop(voice_server):
    session = await open_session(voice_server)
    try:
        created = await long_reply(session)
        await session.stream(clip("06_ps_goforward.wav"), until="output_audio_buffer.cleared")
        done = await session.wait_for("response.done")
        assert done["response"]["id"] == created["response"]["id"]
        assert done["response"]["status"] == "cancelled"
        assert done["response"]["status_details"]["reason"] == "turn_detected"
        cleared = await session.wait_for("output_audio_buffer.cleared")
        assert cleared["response_id"] == created["response"]["id"]
        assert session.of("input_audio_buffer.speech_started")
    finally:
        await session.close()


async def test_server_vad_takes_the_documented_defaults(voice_server):
    """`{"type": "server_vad"}` alone: threshold 0.5, prefix 300 ms, silence 500 ms, no idle timeout, and it creates
    and interrupts responses; the turn ends once 500 ms of silence have followed the speech."""
    session = await open_session(voice_server)
    try:
        detection = (await session.update({"audio": {"input": {"turn_detection": {"type": "server_vad"}}}}))[
            "audio"]["input"]["turn_detection"]
        assert detection == {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                             "silence_duration_ms": 500, "create_response": True, "interrupt_response": True,
                             "idle_timeout_ms": None}
        await session.update({"audio": {"input": {"turn_detection": {"type": "server_vad", "create_response": False}}}})
        await session.stream(clip(LAMP) + silence(1500))
        stopped = await session.wait_for("input_audio_buffer.speech_stopped")
        # Audio time: the event came once the server had heard the silence window after the speech
        # (and at most a few frames more, the VAD's frame and the stream's).
        assert 500 <= session.sent_at(stopped) - stopped["audio_end_ms"] < 700
        assert len(session.of("input_audio_buffer.committed")) == 1
    finally:
        await session.close()


async def test_semantic_vad_takes_the_documented_defaults(voice_server):
    """`{"type": "semantic_vad"}` alone: eagerness auto, and it creates and interrupts responses."""
    session = await open_session(voice_server)
    try:
        short = {"type": "server_vad", "silence_duration_ms": 200}
        await session.update({"audio": {"input": {"turn_detection": short}}})
        detection = (await session.update({"audio": {"input": {"turn_detection": {"type": "semantic_vad"}}}}))[
            "audio"]["input"]["turn_detection"]
        assert detection == {"type": "semantic_vad", "eagerness": "auto", "create_response": True,
                             "interrupt_response": True}
        await session.stream(clip(QUESTION) + silence(AUTO.hold_ms + 500))
        assert (await session.wait_for("response.done"))["response"]["status"] == "completed"  # it answers
    finally:
        await session.close()

