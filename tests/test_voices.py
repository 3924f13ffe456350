"""The voices: Kokoro on CPU (its parts from PyPI, a voice shipped here), any OpenAI-compatible speech
server behind `--tts-url` (tested against this project's own `voice tts-api`, a real process), and
the choice among them through `session.update`. Real models throughout; Whisper (tiny.en) listens."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import websockets

from server.config import SessionConfig
from server.session_update import apply_session_update
from server.wire import ProtocolError
from tests.helpers import ROOT, free_port, start_voice_server, stop, wait_http, wer
from tests.test_faults import collect_until, send
from voice import models
from voice.audio import ASR_RATE, resample
from voice.llm.base import ChatMessage, GenerationOptions
from voice.response import ResponseRequest, run_response
from voice.response_events import ResponseFinished, SpeechSegment
from voice.tts.voices import Voice, VoiceBook

STORY = ("The old lighthouse stood on the cliff. Every night its lamp turned slowly. Ships passed far out at sea. "
         "The keeper wrote down each one in his book. In the morning he walked down to the village.")
SENTENCE = "The capital of France is Paris, and it is lovely in the spring."


def kokoro_or_skip() -> Path:
    try:
        import kokoro_onnx  # noqa: F401

        return models.kokoro_model()
    except (ImportError, models.ModelNotFoundError) as exc:
        pytest.skip(f"Kokoro is not installed (pip install 'voice-server[kokoro]'): {exc}")


@pytest.fixture(scope="module")
def kokoro():
    from voice.tts.kokoro import KokoroModel, KokoroSynthesizer

    return KokoroSynthesizer(KokoroModel(kokoro_or_skip()), models.kokoro_voice("af_heart"))


@pytest.fixture(scope="module")
def whisper():
    from voice.asr.whisper import WhisperTranscriber

    return WhisperTranscriber(models.whisper_model(None), compute_type="int8", cpu_threads=2)


def heard(whisper, pieces: list[np.ndarray], rate: int) -> str:  # noqa: ANN001 - a WhisperTranscriber
    return whisper.hear(resample(np.concatenate(pieces), rate, ASR_RATE)).text


class Timed:
    """A synthesiser whose every piece is timed: when it was asked for and when it came."""

    def __init__(self, tts) -> None:  # noqa: ANN001 - any Synthesizer
        self.tts, self.sample_rate, self.name = tts, tts.sample_rate, tts.name
        self.pieces: list[tuple[float, float]] = []

    def synthesize(self, text: str, soon: bool = False):  # noqa: ANN201
        pieces = self.tts.synthesize(text, soon=soon)
        try:
            while True:
                asked = time.monotonic()
                piece = next(pieces, None)
                if piece is None:
                    return
                self.pieces.append((asked, time.monotonic()))
                yield piece
        finally:
            pieces.close()


class Said:
    """The LLM's part in a reply, fixed (the voice is under test): the STORY, word by word."""

    name = "said"

    def stream_chat(self, messages, options, cancel):  # noqa: ANN001, ANN201
        for word in STORY.split(" "):
            if cancel.is_set():
                return
            yield word + " "


# ------------------------------------------------------------------ choosing a voice
BOOK = VoiceBook((Voice("en_US-joe-medium", "piper", "male"), Voice("af_heart", "kokoro", "female"),
                  Voice("am_michael", "kokoro", "male"), Voice("af_bella", "kokoro", "female")))


def test_openai_names_map_to_voices_of_the_same_sex_in_turn():
    assert BOOK.resolve("alloy") == "en_US-joe-medium"  # the default voice
    assert [BOOK.resolve(n) for n in ("coral", "sage", "shimmer")] == ["af_heart", "af_bella", "af_heart"]
    assert [BOOK.resolve(n) for n in ("ash", "ballad")] == ["en_US-joe-medium", "am_michael"]
    assert BOOK.resolve("am_michael") == "am_michael"  # the server's own names first
    assert BOOK.resolve("nova") is None
    assert VoiceBook((Voice("lessac", "piper"),)).resolve("coral") == "lessac"  # no voice of that sex: the default


def test_session_update_takes_the_servers_voices_and_openais_names_and_refuses_others():
    config = SessionConfig(voices=BOOK)
    from server.client_events import SessionSpec

    def update(voice: object) -> SessionConfig:
        return apply_session_update(config, SessionSpec.model_validate({"audio": {"output": {"voice": voice}}}), "e1")

    assert update("af_heart").voice == "af_heart"
    assert update({"id": "am_michael"}).voice == "am_michael"
    assert update("marin").voice == "marin"  # echoed as named; it speaks with af_heart
    with pytest.raises(ProtocolError) as refused:
        update("nova")
    assert refused.value.param == "session.audio.output.voice" and "af_heart" in str(refused.value)
    from server.client_events import ResponseSpec
    from server.session_update import validate_response_request

    def response(voice: str) -> dict:
        return validate_response_request(ResponseSpec.model_validate({"audio": {"output": {"voice": voice}}}), "e2",
                                         config)

    assert response("echo") == {"voice": "echo"}  # this response alone speaks with it
    with pytest.raises(ProtocolError, match="unknown voice"):
        response("nova")


# ------------------------------------------------------------------ Kokoro
@pytest.mark.slow
def test_the_kokoro_graph_is_joined_from_its_parts_once_and_checked(tmp_path, monkeypatch):
    kokoro_or_skip()
    monkeypatch.setenv("VOICE_MODELS_DIR", str(tmp_path))
    path = models.kokoro_model()
    assert path == tmp_path / "kokoro-v1.0.int8.onnx" and path.stat().st_size == models.KOKORO.size
    written = path.stat().st_mtime_ns
    assert models.kokoro_model() == path and path.stat().st_mtime_ns == written
    with pytest.raises(models.ModelNotFoundError, match="SHA-256.*voice-server\\[kokoro\\]"):
        models.join_parts(models.KOKORO, models.installed_parts(models.KOKORO)[:-1], tmp_path / "short")


def test_kokoro_speaks_a_sentence_that_whisper_transcribes_back(kokoro, whisper):
    pieces = list(kokoro.synthesize(SENTENCE, soon=True))
    assert all(piece.dtype == np.float32 and np.max(np.abs(piece)) <= 1.0 for piece in pieces)
    assert 2.0 < sum(piece.size for piece in pieces) / kokoro.sample_rate < 8.0
    assert wer(SENTENCE, heard(whisper, pieces, kokoro.sample_rate)) <= 0.15


def test_kokoro_streams_a_chunk_sentence_by_sentence(kokoro):
    timed = Timed(kokoro)
    started = time.monotonic()
    pieces = list(timed.synthesize("Hello there. How are you today? I am fine, thank you."))
    assert len(pieces) == 3
    assert timed.pieces[0][1] - started < 0.6 * (timed.pieces[-1][1] - started)  # the first before the rest
    for piece in pieces:
        assert 0.3 < piece.size / kokoro.sample_rate < 4.0


def test_a_barge_in_stops_kokoro_within_one_piece(kokoro):
    """The reply runner asks for no piece once cancelled: the one under way is the last made."""
    timed, cancel, events = Timed(kokoro), threading.Event(), []
    cancelled_at: list[float] = []

    def emit(event) -> None:  # noqa: ANN001
        events.append((time.monotonic(), event))
        if isinstance(event, SpeechSegment) and not cancelled_at:  # the user speaks over the first words
            threading.Timer(0.05, lambda: (cancelled_at.append(time.monotonic()), cancel.set())).start()

    request = ResponseRequest([ChatMessage("user", "Tell me a story.")], GenerationOptions(max_tokens=200))
    run_response(Said(), timed, request, cancel, emit)
    finished = [(at, e) for at, e in events if isinstance(e, ResponseFinished)]
    assert finished and finished[0][1].cancelled
    assert not any(asked > cancelled_at[0] for asked, _ in timed.pieces)  # nothing asked for after it
    longest = max(came - asked for asked, came in timed.pieces)
    assert finished[0][0] - cancelled_at[0] < longest + 0.3
    assert len(timed.pieces) <= 3  # of the story's many


# ------------------------------------------------------------------ a speech server: `voice tts-api`
@pytest.fixture(scope="module")
def tts_api(artifacts: Path):
    """`voice tts-api` serving Piper's bundled voice and Kokoro's af_heart; yields (base URL, log)."""
    kokoro_or_skip()
    port, log_path = free_port(), artifacts / "tts-api.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "server.cli", "tts-api", "--port", str(port),
                                    "--tts", "piper,kokoro:af_heart"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", process)
        yield f"http://127.0.0.1:{port}/v1", log_path
    finally:
        stop(process)


def log_lines(path: Path, marker: str, timeout: float = 20.0) -> list[str]:
    """The lines of the server's log that hold `marker`, once there is one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = [line for line in path.read_text(errors="replace").splitlines() if marker in line]
        if lines:
            return lines
        time.sleep(0.1)
    raise AssertionError(f"no {marker!r} in {path}")


@pytest.mark.slow
def test_the_speech_server_lists_its_voices_and_streams_pipers_speech(tts_api, whisper):
    from voice.tts.speech_api import SpeechApiSynthesizer, listed_voices

    url, _ = tts_api
    assert listed_voices(url) == ["en_US-joe-medium", "af_heart"]
    timed = Timed(SpeechApiSynthesizer(url, "en_US-joe-medium"))
    pieces = list(timed.synthesize(STORY, soon=True))
    assert len(pieces) >= 5  # one or more a sentence, as they are made
    assert wer(STORY, heard(whisper, pieces, timed.sample_rate)) <= 0.2


@pytest.mark.slow
@pytest.mark.parametrize(("voice", "spoken", "repeats", "most"), [
    ("coral", "af_heart", 1, 2),  # Kokoro's af_heart: a sentence a run, the client reads each as it comes
    ("en_US-joe-medium", "en_US-joe-medium", 6, 15),  # Piper: 30 sentences of a few ms each, some sent ahead
])
def test_leaving_mid_stream_stops_the_speech_server(tts_api, voice, spoken, repeats, most):
    from voice.tts.speech_api import SpeechApiSynthesizer

    url, log_path = tts_api
    before = len(log_lines(log_path, "speech_api", 1))
    pieces = SpeechApiSynthesizer(url, voice).synthesize(" ".join([STORY] * repeats))
    assert next(pieces).size > 0
    pieces.close()
    deadline = time.monotonic() + 20
    while not (left := [line for line in log_lines(log_path, "speech_api")[before:] if "client left" in line]):
        assert time.monotonic() < deadline, "the speech server went on to the end"
        time.sleep(0.1)
    assert f"{spoken}: the client left after" in left[0]
    assert int(left[0].split("after ")[1].split()[0]) <= most, left[0]  # of 5 or 30 sentences


@pytest.mark.slow
def test_a_barge_in_stops_a_reply_spoken_by_the_speech_server(tts_api):
    """The reply runner with Piper over --tts-url: cancelled after its first audio, it closes the
    stream at once, and the speech server stops too."""
    from voice.tts.speech_api import SpeechApiSynthesizer

    url, log_path = tts_api
    before = len(log_lines(log_path, "speech_api", 1))
    timed, cancel, events = Timed(SpeechApiSynthesizer(url, "en_US-joe-medium")), threading.Event(), []

    def emit(event) -> None:  # noqa: ANN001
        events.append((time.monotonic(), event))
        if isinstance(event, SpeechSegment):
            cancel.set()

    request = ResponseRequest([ChatMessage("user", "Tell me a story.")], GenerationOptions(max_tokens=200))
    run_response(Said(), timed, request, cancel, emit)
    assert isinstance(events[-1][1], ResponseFinished) and events[-1][1].cancelled
    assert len([e for _, e in events if isinstance(e, SpeechSegment)]) == 1
    requests = [line for line in log_lines(log_path, "speech_api")[before:] if "POST /v1/audio/speech" in line]
    assert len(requests) == 1  # the first chunk's: no other was asked for


@pytest.mark.slow
def test_the_speech_server_refuses_what_it_cannot_speak(tts_api):
    import openai

    from voice.tts.speech_api import SpeechApiSynthesizer, SpeechServerError

    url, _ = tts_api
    with pytest.raises(SpeechServerError, match="unknown voice 'nova'"):
        list(SpeechApiSynthesizer(url, "nova").synthesize("Hello."))
    client = openai.OpenAI(base_url=url, api_key="none", max_retries=0)
    with pytest.raises(openai.BadRequestError, match="response_format"):
        client.audio.speech.create(model="tts-1", voice="alloy", input="Hello.", response_format="mp3")
    wav = client.audio.speech.create(model="tts-1", voice="alloy", input="Hello.", response_format="wav").content
    assert wav[:4] == b"RIFF" and len(wav) > 44 + 24_000  # over half a second of speech


@pytest.mark.slow
async def test_session_update_chooses_the_voice_served_over_tts_url(tts_api, artifacts):
    """`voice serve --tts-url` with the speech server's voices: listed, chosen, and heard from it."""
    url, log_path = tts_api
    process, port = await asyncio.to_thread(start_voice_server, "--tts-url", url,
                                            log_path=artifacts / "voice-server-tts-url.log")
    try:
        async with websockets.connect(f"ws://127.0.0.1:{port}/v1/realtime", max_size=None) as websocket:
            created = json.loads(await websocket.recv())
            assert created["session"]["voices"] == ["en_US-joe-medium", "af_heart"]
            for voice, spoken in (("shimmer", "af_heart"), ("en_US-joe-medium", "en_US-joe-medium")):
                before = len(log_lines(log_path, "POST /v1/audio/speech"))
                await send(websocket, {"type": "session.update", "session": {
                    "type": "realtime", "audio": {"output": {"voice": voice}}}})
                updated = (await collect_until(websocket, "session.updated"))[-1]
                assert updated["session"]["audio"]["output"]["voice"] == voice
                await send(websocket, {"type": "conversation.item.create", "item": {
                    "type": "message", "role": "user", "content": [{"type": "input_text", "text": "Say hello."}]}},
                    {"type": "response.create"})
                events = await collect_until(websocket, "response.done", timeout=120)
                assert [e for e in events if e["type"] == "response.output_audio.delta"]
                assert events[-1]["response"]["status"] == "completed", events[-1]
                await asyncio.sleep(0.5)  # the speech server logs a request once it is answered
                spoken_lines = log_lines(log_path, "of speech in")
                assert len(log_lines(log_path, "POST /v1/audio/speech")) > before
                assert spoken_lines[-1].split(" [-] ")[-1].startswith(f"{spoken}:"), spoken_lines[-1]
            await send(websocket, {"type": "session.update", "session": {
                "type": "realtime", "audio": {"output": {"voice": "nova"}}}})
            error = (await collect_until(websocket, "error"))[-1]["error"]
            assert error["param"] == "session.audio.output.voice"
    finally:
        stop(process)
