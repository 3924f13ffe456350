"""Sans-I/O: how far ahead of real time a session may send audio (the allowance, and the session's
error when it runs out)."""

from __future__ import annotations

import base64
import json

import pytest

from clients.python.client import load_wav_pcm24
from server.audio_rate import AudioAllowance
from server.config import SessionConfig
from server.session import RealtimeSession
from tests.helpers import DATA
from voice.turn_taking import Transcribe


# ---------------------------------------------------------------- the audio allowance
def test_audio_at_real_time_is_always_accepted():
    allowance = AudioAllowance(5.0, now=0.0)
    assert all(allowance.take(0.02, now=i * 0.02) for i in range(1, 10_000))


def test_a_burst_within_the_allowance_is_accepted_and_more_is_refused():
    allowance = AudioAllowance(5.0, now=0.0)
    accepted = sum(allowance.take(0.1, now=0.0) for _ in range(100))
    assert accepted == 50  # 5 s at once, no more


def test_a_flood_is_held_to_real_time_plus_the_allowance():
    allowance = AudioAllowance(5.0, now=0.0)
    accepted, now = 0.0, 0.0
    for _ in range(50 * 600):  # 100 ms messages at 50 times real time for 60 s
        now += 0.1 / 50
        if allowance.take(0.1, now):
            accepted += 0.1
    assert accepted <= now + 5.0 + 1e-6
    assert accepted >= now + 5.0 - 0.2  # and what real time allows does get through


def test_the_allowance_refills_at_real_time_up_to_its_size():
    allowance = AudioAllowance(2.0, now=0.0)
    assert allowance.take(2.0, now=0.0)
    assert not allowance.take(0.5, now=0.4)
    assert allowance.take(0.5, now=0.5)
    assert allowance.balance(now=1000.0) == 2.0  # an idle session saves up no more than the allowance


def test_one_message_longer_than_the_allowance_needs_a_full_allowance():
    allowance = AudioAllowance(5.0, now=0.0)
    assert allowance.take(11.0, now=0.0)  # a whole recording in one message
    assert not allowance.take(0.02, now=5.0)  # ...then paid back at real time
    assert allowance.take(0.02, now=6.1)
    allowance = AudioAllowance(5.0, now=0.0)
    assert allowance.take(1.0, now=0.0)
    assert not allowance.take(11.0, now=0.5)


def test_time_running_backwards_refills_nothing():
    allowance = AudioAllowance(1.0, now=10.0)
    assert allowance.take(1.0, now=10.0)
    assert not allowance.take(0.1, now=5.0)
    assert not allowance.take(0.1, now=10.05)


def test_the_allowance_must_be_positive():
    with pytest.raises(ValueError):
        AudioAllowance(0.0, now=0.0)


# ---------------------------------------------------------------- the session
def append(pcm: bytes, event_id: str) -> str:
    return json.dumps({"type": "input_audio_buffer.append", "event_id": event_id,
                       "audio": base64.b64encode(pcm).decode()})


def test_audio_beyond_the_allowance_gets_an_error_and_is_dropped_and_the_session_goes_on(silero):
    session = RealtimeSession(SessionConfig(turn_detection=None), silero, max_audio_ahead_s=2.0)
    session.start()
    chunk = bytes(4_800)  # 100 ms of silence
    errors = []
    for n in range(30):  # 3 s at once
        errors += [e for e in session.receive_client(append(chunk, f"a{n}"), 100.0).events if e["type"] == "error"]
    assert 1.8 * 16_000 < session.turns.buffered_samples <= 2 * 16_000  # 2 s kept (less the resampler's delay)
    assert [e["error"]["code"] for e in errors] == ["input_audio_rate_exceeded"] * 10
    assert [e["error"]["event_id"] for e in errors] == [f"a{n}" for n in range(20, 30)]
    assert "dropped" in errors[0]["error"]["message"]
    out = session.receive_client(append(chunk, "later"), 100.5)  # real time caught up a little
    assert not [e for e in out.events if e["type"] == "error"]
    out = session.receive_client(json.dumps({"type": "input_audio_buffer.commit"}), 100.5)
    assert [e["type"] for e in out.events][:1] == ["input_audio_buffer.committed"]


def test_the_allowance_is_an_option_of_voice_serve():
    from server.cli import build_parser

    assert build_parser().parse_args(["serve"]).max_audio_ahead == 5.0
    assert build_parser().parse_args(["serve", "--max-audio-ahead", "2.5"]).max_audio_ahead == 2.5
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--max-audio-ahead", "0"])


def test_a_session_counts_as_flooding_while_its_audio_is_refused(silero):
    session = RealtimeSession(SessionConfig(turn_detection=None), silero, max_audio_ahead_s=1.0)
    session.start()
    assert not session.flooding(100.0)
    for n in range(12):
        session.receive_client(append(bytes(4_800), f"a{n}"), 100.0)
    assert session.flooding(100.0) and session.flooding(101.9)
    assert not session.flooding(102.1)  # it has not been refused for a while


def test_a_flooding_session_gets_no_partial_or_speculative_passes_until_it_slows_down(silero):
    session = RealtimeSession(SessionConfig(), silero, max_audio_ahead_s=1.0)
    session.start()
    reading = load_wav_pcm24(DATA / "18_rstt_LJ001-0004.wav")  # 5 s of reading without a pause
    chunks = [reading[at:at + 4_800] for at in range(0, len(reading), 4_800)]
    now, flooded = 100.0, []
    for n, chunk in enumerate(chunks * 4):  # 20 s of speech at 50 times real time
        now += 0.1 / 50
        out = session.receive_client(append(chunk, f"f{n}"), now)
        if session.flooding(now):
            flooded += [e for e in out.effects if isinstance(e, Transcribe)]
    assert session.flooding(now) and not [e for e in flooded if not e.final]
    asked = []
    for n, chunk in enumerate(chunks * 2):  # then 10 s at real time: a live speaker again
        now += 0.1
        asked += [e for e in session.receive_client(append(chunk, f"r{n}"), now).effects
                  if isinstance(e, Transcribe) and not e.final]
    assert not session.flooding(now) and asked
