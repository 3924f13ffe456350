"""Telephony audio: the G.711 codec against the standard's values, and sessions whose input and
output audio are μ-law or A-law at 8 kHz (sans-I/O: real VAD on a real recording)."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import warnings

import numpy as np
import pytest
import websockets

from clients.python.client import load_wav_pcm24
from server.audio_formats import PCMA, PCMU, InputDecoder, OutputEncoder
from server.config import SessionConfig, TurnDetection
from server.effects import StartResponse
from server.session import RealtimeSession
from tests.helpers import DATA, reference, wer
from tests.realtime_sdk import Recorder, record, sdk_client
from tests.test_protocol import Driver
from voice import g711
from voice.audio import ASR_RATE, WIRE_RATE, float_to_pcm16, pcm16_to_float, resample, rms_dbfs
from voice.response_events import ResponseFinished, SpeechSegment
from voice.turn_taking import Transcribe

LAMP = "03_v2j_turn_on_living_room_lamp.wav"


def telephone(name: str, encode=g711.ulaw_encode) -> bytes:  # noqa: ANN001 - one of voice.g711's encoders
    """A recording as a telephone line carries it: 8 kHz, G.711."""
    samples = pcm16_to_float(load_wav_pcm24(DATA / name))
    return encode(np.frombuffer(float_to_pcm16(resample(samples, WIRE_RATE, 8000)), "<i2"))


# ---------------------------------------------------------------- the codec
def test_ulaw_decodes_to_the_standard_values():
    # G.711 table 2a on its 14-bit scale (x4 in PCM16): zero at 0xFF and 0x7F, steps of 2 up to 30, then
    # of 4 from 33, the largest value +-8031; codes 0x80-0xFF are positive.
    decoded = g711.ulaw_decode(bytes([0xFF, 0x7F, 0xFE, 0x7E, 0xF0, 0xEF, 0x80, 0x00]))
    assert list(decoded) == [0, 0, 2 * 4, -2 * 4, 30 * 4, 33 * 4, 8031 * 4, -8031 * 4]


def test_alaw_decodes_to_the_standard_values():
    # G.711 table 1a on its 13-bit scale (x8 in PCM16): no zero, the first step +-1, the largest +-4032;
    # the even bits are inverted on the line (0xD5 is +1).
    decoded = g711.alaw_decode(bytes([0xD5, 0x55, 0xD4, 0xAA, 0x2A]))
    assert list(decoded) == [1 * 8, -1 * 8, 3 * 8, 4032 * 8, -4032 * 8]


@pytest.mark.parametrize(("encode", "decode"), [(g711.ulaw_encode, g711.ulaw_decode),
                                                (g711.alaw_encode, g711.alaw_decode)])
def test_every_code_survives_a_round_trip_and_every_sample_codes_to_its_nearest_step(encode, decode):
    codes = bytes(range(256))
    values = decode(codes)
    negative_zero = 0x7F if decode is g711.ulaw_decode else None  # (μ-law has two zeros: -0 codes as +0)
    assert encode(values) == bytes(0xFF if c == negative_zero else c for c in codes)
    pcm = np.arange(-32768, 32768, dtype=np.int16)
    error = np.abs(decode(encode(pcm)).astype(np.int32) - pcm)
    steps = np.abs(np.diff(np.unique(values.astype(np.int32))))
    assert error.max() <= steps.max()  # never off by more than a quantisation step (clipping aside)
    assert np.all(np.diff(decode(encode(pcm)).astype(np.int32)) >= 0)  # monotonic


def test_the_codec_matches_the_reference_implementation_bit_for_bit():
    audioop = pytest.importorskip("audioop")  # (the standard library's, until Python 3.13)
    pcm = np.arange(-32768, 32768, dtype="<i2")
    codes = bytes(range(256))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assert g711.ulaw_encode(pcm) == audioop.lin2ulaw(pcm.tobytes(), 2)
        assert g711.alaw_encode(pcm) == audioop.lin2alaw(pcm.tobytes(), 2)
        assert g711.ulaw_decode(codes).tobytes() == audioop.ulaw2lin(codes, 2)
        assert g711.alaw_decode(codes).tobytes() == audioop.alaw2lin(codes, 2)


def test_silence_codes():
    assert g711.ulaw_encode(np.zeros(3, np.int16)) == bytes([g711.ULAW_SILENCE] * 3)
    assert g711.alaw_encode(np.zeros(3, np.int16)) == bytes([g711.ALAW_SILENCE] * 3)


# ---------------------------------------------------------------- the format streams
def test_a_tone_keeps_its_pitch_and_level_through_the_8khz_streams():
    seconds, pitch = 1.0, 440.0
    tone = 0.5 * np.sin(2 * np.pi * pitch * np.arange(int(WIRE_RATE * seconds)) / WIRE_RATE)
    encoder = OutputEncoder(PCMU)
    pcm = float_to_pcm16(tone)
    coded = b"".join(encoder.encode(pcm[i:i + 960]) for i in range(0, len(pcm), 960)) + encoder.flush()
    assert abs(len(coded) - 8000 * seconds) <= 2  # one byte a sample at 8 kHz, none lost at the chunk seams
    samples = g711.ulaw_decode(coded).astype(np.float32) / 32768
    spectrum = np.abs(np.fft.rfft(samples[1000:7000]))
    assert abs(np.argmax(spectrum) * 8000 / 6000 - pitch) < 2
    assert abs(np.sqrt(np.mean(samples[1000:7000] ** 2)) - 0.5 / np.sqrt(2)) < 0.02
    decoder = InputDecoder(PCMA)
    heard = np.concatenate([decoder.process(g711.alaw_encode(g711.ulaw_decode(coded[i:i + 160])))
                            for i in range(0, len(coded), 160)])
    assert 0 <= 16_000 * seconds - len(heard) < 0.03 * 16_000  # 16 kHz for the ASR, less under 30 ms of delay
    assert decoder.asr_samples(160) == 320


# ---------------------------------------------------------------- sessions
def append(data: bytes) -> str:
    return json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(data).decode()})


def stream(driver: Driver, data: bytes, frame_bytes: int = 160) -> None:
    """20 ms frames of 8 kHz G.711, at the pace of the driver's clock."""
    for i in range(0, len(data), frame_bytes):
        driver.now += frame_bytes / 8000
        driver._take(driver.session.receive_client(append(data[i:i + frame_bytes]), driver.now))


@pytest.mark.parametrize(("name", "encode", "decode"), [("audio/pcmu", g711.ulaw_encode, g711.ulaw_decode),
                                                        ("audio/pcma", g711.alaw_encode, g711.alaw_decode)])
def test_a_telephone_turn_is_heard_and_answered_in_its_format(silero, name, encode, decode):
    driver = Driver(RealtimeSession(SessionConfig(turn_detection=TurnDetection()), silero))
    driver.send({"type": "session.update", "session": {"type": "realtime", "audio": {
        "input": {"format": {"type": name}}, "output": {"format": {"type": name}}}}})
    session = driver.of("session.updated")[-1]["session"]
    assert session["audio"]["input"]["format"] == {"type": name}
    assert session["audio"]["output"]["format"] == {"type": name}
    stream(driver, telephone(LAMP, encode) + encode(np.zeros(8000, np.int16)))
    assert "input_audio_buffer.speech_stopped" in driver.types()
    final = [e for e in driver.effects if isinstance(e, Transcribe) and (e.final or e.speculative)][-1]
    assert 1.0 < final.audio.size / 16_000 < 2.4  # the utterance, at the ASR's 16 kHz
    driver.answer(final, "Turn on the living room lamp.")
    start = next(e for e in driver.effects if isinstance(e, StartResponse))
    reply = float_to_pcm16(0.3 * np.sin(2 * np.pi * 300 * np.arange(WIRE_RATE) / WIRE_RATE))  # 1 s at 24 kHz
    driver.progress(start.response_id, SpeechSegment("Okay.", reply[:24_000]))
    driver.progress(start.response_id, SpeechSegment("", reply[24_000:]))
    driver.progress(start.response_id, ResponseFinished())
    deltas = [base64.b64decode(e["delta"]) for e in driver.of("response.output_audio.delta")]
    assert max(len(d) for d in deltas) == 1600  # 200 ms at 8 kHz, one byte a sample
    audio = decode(b"".join(deltas))
    assert abs(len(audio) - 8000) <= 2
    assert 0.15 < np.sqrt(np.mean((audio[500:-500] / 32768.0) ** 2)) < 0.25
    done = driver.of("response.done")[-1]["response"]
    assert done["audio"]["output"]["format"] == {"type": name}
    assert driver.of("conversation.item.done")[-1]["item"]["content"][0]["transcript"] == "Okay."


def test_a_response_may_choose_its_own_output_format(silero):
    driver = Driver(RealtimeSession(SessionConfig(turn_detection=None), silero))
    driver.send({"type": "conversation.item.create", "item": {"type": "message", "role": "user",
                                                               "content": [{"type": "input_text", "text": "Hi"}]}})
    driver.send({"type": "response.create", "response": {"audio": {"output": {"format": {"type": "audio/pcma"}}}}})
    start = next(e for e in driver.effects if isinstance(e, StartResponse))
    driver.progress(start.response_id, SpeechSegment("Hello.", bytes(48_000)))
    driver.progress(start.response_id, ResponseFinished())
    audio = b"".join(base64.b64decode(e["delta"]) for e in driver.of("response.output_audio.delta"))
    assert abs(len(audio) - 8000) <= 2 and set(audio) <= {0xD5, 0x55}  # silence, in A-law
    assert driver.of("response.done")[-1]["response"]["audio"]["output"]["format"] == {"type": "audio/pcma"}
    assert driver.session.config.output_format == "audio/pcm"  # the session's own is unchanged


@pytest.mark.parametrize("fmt", [{"type": "audio/pcm", "rate": 8000}, {"type": "audio/pcmu", "rate": 16_000},
                                 {"type": "audio/opus"}, {"type": "audio/pcma", "rate": 24_000}])
def test_formats_that_are_not_served_are_refused_clearly(silero, fmt):
    driver = Driver(RealtimeSession(SessionConfig(), silero))
    driver.send({"type": "session.update", "event_id": "e1",
                 "session": {"type": "realtime", "audio": {"output": {"format": fmt}}}})
    error = driver.of("error")[-1]["error"]
    assert error["code"] == "unsupported_audio_format" and error["param"] == "session.audio.output.format"
    assert "audio/pcmu" in error["message"]
    assert driver.session.config.output_format == "audio/pcm"


def test_g711_accepts_any_number_of_bytes_and_8khz_rate_given(silero):
    driver = Driver(RealtimeSession(SessionConfig(), silero))
    driver.send({"type": "session.update", "session": {"type": "realtime", "audio": {
        "input": {"format": {"type": "audio/pcmu", "rate": 8000}}}}})
    assert driver.of("session.updated")
    driver.send(append(bytes([0xFF] * 161)))  # an odd length is fine at one byte a sample
    assert not driver.of("error")


# ---------------------------------------------------------------- end to end
LAMP_PLEASE = "04_v2j_would_you_please_turn_on_living_room_lamp.wav"


@pytest.fixture(scope="module")
def whisper():
    from voice.asr.whisper import WhisperTranscriber
    from voice.models import whisper_model

    return WhisperTranscriber(whisper_model("bundled"))


def heard_reply(whisper, audio: np.ndarray) -> str:  # noqa: ANN001 - voice.asr.whisper.WhisperTranscriber
    """What Whisper hears in a telephone reply (int16 at 8 kHz)."""
    samples = audio.astype(np.float32) / 32768
    assert len(samples) / 8000 > 0.3
    assert rms_dbfs(samples) > -35  # not silence
    return whisper.transcribe(resample(samples, 8000, ASR_RATE))


async def test_an_alaw_call_through_the_sdk_is_heard_and_its_alaw_reply_transcribes_back(voice_server, whisper):
    recorder = Recorder()
    line = telephone(LAMP_PLEASE, g711.alaw_encode) + bytes([g711.ALAW_SILENCE] * 8000 * 3)
    async with sdk_client(voice_server).realtime.connect(model="voice-cascade") as connection:
        receiver = asyncio.create_task(record(connection, recorder))
        await connection.session.update(session={"type": "realtime", "audio": {
            "input": {"format": {"type": "audio/pcma"}, "turn_detection": {"type": "server_vad"}},
            "output": {"format": {"type": "audio/pcma"}}}})
        await recorder.wait_for(lambda e: e.type == "session.updated")
        start = time.monotonic()
        for index in range(0, len(line), 160):  # 20 ms frames at real-time pace, as a telephone line sends them
            await asyncio.sleep(max(0.0, start + index / 8000 - time.monotonic()))
            await connection.input_audio_buffer.append(audio=base64.b64encode(line[index:index + 160]).decode())
        done = await recorder.wait_for(lambda e: e.type == "response.done")
        receiver.cancel()
    transcript = recorder.of("conversation.item.input_audio_transcription.completed")[0].transcript
    assert wer(reference(LAMP_PLEASE), transcript) <= 0.25, transcript
    assert done.response.status == "completed"
    assert done.response.audio.output.format.type == "audio/pcma"
    deltas = [base64.b64decode(e.delta) for e in recorder.of("response.output_audio.delta")]
    assert max(len(delta) for delta in deltas) <= 1600  # 200 ms a delta at 8 kHz, a byte a sample
    spoken = done.response.output[0].content[0].transcript
    heard = heard_reply(whisper, g711.alaw_decode(b"".join(deltas)))
    assert wer(spoken, heard) <= 0.5, (spoken, heard)


async def test_a_twilio_call_through_the_bridge_gets_a_spoken_reply(voice_server, whisper):
    from clients.twilio.bridge import serve_bridge, session_config

    events: list[dict] = []
    bridge = await serve_bridge("127.0.0.1", 0, f"ws://127.0.0.1:{voice_server}/v1/realtime", session_config(),
                                on_event=events.append)
    port = bridge.sockets[0].getsockname()[1]
    line = telephone(LAMP_PLEASE) + bytes([g711.ULAW_SILENCE] * 8000 * 3)
    sid = "MZ00000000000000000000000000000000"
    received: list[dict] = []
    try:
        async with websockets.connect(f"ws://127.0.0.1:{port}/media") as twilio:
            async def listen() -> None:
                async for message in twilio:
                    received.append(json.loads(message))

            listener = asyncio.create_task(listen())
            # Twilio's Media Streams messages, as a call sends them.
            await twilio.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
            await twilio.send(json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": sid, "start": {
                "streamSid": sid, "accountSid": "AC0", "callSid": "CA0", "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                "customParameters": {}}}))
            start = time.monotonic()
            for chunk, index in enumerate(range(0, len(line), 160), start=1):
                await asyncio.sleep(max(0.0, start + index / 8000 - time.monotonic()))
                payload = base64.b64encode(line[index:index + 160]).decode()
                await twilio.send(json.dumps({"event": "media", "sequenceNumber": str(chunk + 1), "streamSid": sid,
                                              "media": {"track": "inbound", "chunk": str(chunk),
                                                        "timestamp": str(index // 8), "payload": payload}}))
            deadline = time.monotonic() + 90
            while not any(e["type"] == "response.done" for e in events) and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            await asyncio.sleep(0.5)  # (the last media messages on their way)
            await twilio.send(json.dumps({"event": "stop", "sequenceNumber": "999", "streamSid": sid,
                                          "stop": {"accountSid": "AC0", "callSid": "CA0"}}))
            listener.cancel()
    finally:
        bridge.close()
        await bridge.wait_closed()
    transcript = next(e for e in events if e["type"] == "conversation.item.input_audio_transcription.completed")
    assert wer(reference(LAMP_PLEASE), transcript["transcript"]) <= 0.25, transcript
    done = next(e for e in events if e["type"] == "response.done")["response"]
    assert done["status"] == "completed"
    media = [m for m in received if m["event"] == "media"]
    assert media and all(m["streamSid"] == sid for m in media)
    spoken = done["output"][0]["content"][0]["transcript"]
    heard = heard_reply(whisper, g711.ulaw_decode(b"".join(base64.b64decode(m["media"]["payload"]) for m in media)))
    assert wer(spoken, heard) <= 0.5, (spoken, heard)


class FakeSocket:
    """A websocket stand-in: the messages it will deliver, and those sent to it."""

    def __init__(self, incoming: list[dict]) -> None:
        self.incoming = [json.dumps(m) for m in incoming]
        self.sent: list[dict] = []

    async def send(self, message: str) -> None:
        self.sent.append(json.loads(message))

    def __aiter__(self):  # noqa: ANN204 - an async iterator of str
        async def messages():
            for message in self.incoming:
                yield message
        return messages()


async def test_the_bridge_clears_twilio_and_truncates_the_reply_at_what_the_caller_heard():
    from clients.twilio.bridge import CallBridge, session_config

    delta = base64.b64encode(bytes([g711.ULAW_SILENCE] * 1600)).decode()  # 200 ms each
    server = FakeSocket([{"type": "response.output_audio.delta", "item_id": "item_1", "delta": delta}] * 5
                        + [{"type": "output_audio_buffer.cleared", "response_id": "resp_1"}])
    twilio = FakeSocket([])
    bridge = CallBridge(twilio, "ws://unused", session_config())
    bridge.stream_sid, bridge.media_ms = "MZ1", 10_000
    original_send = twilio.send

    async def send(message: str) -> None:  # the caller's line goes on while the reply plays: 300 ms heard
        await original_send(message)
        bridge.media_ms = 10_300
    twilio.send = send
    await bridge._from_server(server)
    assert [m["event"] for m in twilio.sent] == ["media"] * 5 + ["clear"]
    assert all(m["streamSid"] == "MZ1" and m["media"]["payload"] == delta for m in twilio.sent[:5])
    assert server.sent == [{"type": "conversation.item.truncate", "item_id": "item_1", "content_index": 0,
                            "audio_end_ms": 300}]
    assert session_config()["audio"]["input"]["format"] == {"type": "audio/pcmu"}
