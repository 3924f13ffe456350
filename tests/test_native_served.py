"""The served native backend: `voice audio-api` (a real OpenAI-compatible server taking
`input_audio`, what vLLM takes from Ultravox) and `voice serve --native-url` talking to it."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import openai
import pytest

from tests.helpers import ROOT, free_port, start_voice_server, stop, wait_http
from tests.realtime_sdk import clip
from tests.test_faults import collect_until, connect, of_type, speak
from voice.audio import ASR_RATE, WIRE_RATE, pcm16_to_float, resample
from voice.llm.base import ChatMessage, GenerationOptions
from voice.native.served import ServedAudioChat, audio_message

pytestmark = pytest.mark.slow

CLIP = "04_v2j_would_you_please_turn_on_living_room_lamp.wav"
KEY = "test-native-key"


@pytest.fixture(scope="module")
def audio_api(artifacts: Path, native_projector: Path):
    """`voice audio-api` with one generation slot (so a leaked slot would hang the next request)."""
    port = free_port()
    with open(artifacts / "audio-api.log", "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "server.cli", "audio-api", "--port", str(port), "--parallel", "1",
             "--native-projector", str(native_projector), "--api-key", KEY],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", process)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        stop(process)


def speech_16k():
    return resample(pcm16_to_float(clip(CLIP)), WIRE_RATE, ASR_RATE)


def post(url: str, body: bytes, key: str = KEY) -> tuple[int, dict]:
    request = urllib.request.Request(f"{url}/chat/completions", data=body, method="POST", headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_the_served_model_answers_real_speech(audio_api):
    native = ServedAudioChat(audio_api, api_key=KEY)
    options = GenerationOptions(max_tokens=24, temperature=0.0)
    deltas = list(native.stream_reply(speech_16k(), [ChatMessage("system", "You are a helpful assistant.")],
                                      options, threading.Event()))
    assert len(deltas) > 1 and "".join(deltas).strip()  # streamed, token by token
    assert isinstance(native.transcribe(speech_16k(), max_tokens=16), str)


def test_bad_requests_get_clear_errors_and_the_server_goes_on(audio_api):
    good = {"messages": [audio_message(speech_16k())], "max_tokens": 4}
    wav = good["messages"][0]["content"][0]["input_audio"]["data"]
    cases = [
        (b"{not json", 400, None),
        (json.dumps([1, 2]).encode(), 400, None),
        (json.dumps({"messages": [{"role": "user", "content": "hello"}]}).encode(), 400, "messages"),
        (json.dumps({"messages": [{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": "@@@", "format": "wav"}}]}]}).encode(),
         400, "messages[0].content[0].data"),
        (json.dumps({"messages": [{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": base64.b64encode(b"not audio").decode(),
                                                    "format": "wav"}}]}]}).encode(),
         400, "messages[0].content[0].data"),
        (json.dumps({**good, "max_tokens": -3}).encode(), 400, "max_tokens"),
        (json.dumps({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "x"}}]}]}).encode(), 400, "messages[0].content[0]"),
    ]
    for body, status, param in cases:
        code, payload = post(audio_api, body)
        assert code == status, (body[:60], payload)
        assert payload["error"]["message"] and payload["error"]["param"] == param, payload
    code, payload = post(audio_api, json.dumps(good).encode(), key="wrong")
    assert code == 401 and payload["error"]["code"] == "invalid_api_key"
    code, payload = post(audio_api, json.dumps(good).encode())
    assert code == 200 and isinstance(payload["choices"][0]["message"]["content"], str), payload
    assert wav  # the audio really went in the request


def test_a_client_that_leaves_mid_reply_frees_the_model(audio_api):
    client = openai.OpenAI(base_url=audio_api, api_key=KEY, timeout=120, max_retries=0)
    model = client.models.list().data[0].id
    message = audio_message(speech_16k())
    stream = client.chat.completions.create(model=model, messages=[message], max_tokens=400, stream=True)
    next(iter(stream))
    stream.close()  # gone after the first chunk: the server must stop and free its only slot
    reply = client.chat.completions.create(model=model, messages=[message], max_tokens=4)
    assert reply.choices[0].message.content is not None


async def test_voice_serve_answers_native_turns_through_the_served_model(audio_api, artifacts):
    await answers_a_native_turn(audio_api, KEY, artifacts / "voice-server-native-url.log")


async def answers_a_native_turn(native_url: str, key: str, log_path: Path, timeout: float = 120) -> None:
    """`voice serve --native-url` answers a spoken turn through the server at `native_url`, in audio."""
    process, port = start_voice_server("--native-url", native_url, "--native-api-key", key, "--pipeline", "native",
                                       log_path=log_path)
    try:
        websocket = await connect(port)
        await speak(websocket, clip(CLIP))
        events = await collect_until(websocket, "response.done", timeout=timeout)
        done = events[-1]["response"]
        assert done["status"] == "completed", done
        assert done["metadata"]["pipeline"] == "native"
        assert float(done["metadata"]["llm_first_token_ms"]) > 0
        assert of_type(events, "response.output_audio.delta")
        await websocket.close()
    finally:
        stop(process)
