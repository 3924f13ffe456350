"""The OpenAI-compatible LLM backend against a real server: llama.cpp's own (`python -m llama_cpp.server`)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading

import pytest

from tests.helpers import ROOT, free_port, start_voice_server, stop, wait_http
from tests.realtime_sdk import Recorder, clip, record, sdk_client, stream_pcm
from voice.llm.base import ChatMessage, GenerationOptions, LLMError
from voice.llm.openai_http import OpenAICompatibleChat
from voice.models import gguf_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def llama_server(artifacts):
    port = free_port()
    log = open(artifacts / "llama-server.log", "wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf_model(None)), "--model_alias", "smollm2",
         "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--n_threads", "2"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/v1/models", process)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        stop(process)


def test_streams_a_reply_from_a_real_server(llama_server):
    chat = OpenAICompatibleChat(llama_server)  # model name discovered from /v1/models
    deltas = list(chat.stream_chat([ChatMessage("user", "Say hello in one short sentence.")],
                                   GenerationOptions(max_tokens=40, temperature=0.0), threading.Event()))
    assert len(deltas) > 1  # streamed token by token, not in one piece
    assert "".join(deltas).strip()


def test_cancel_stops_the_stream(llama_server):
    chat = OpenAICompatibleChat(llama_server, model="smollm2")
    cancel = threading.Event()
    received = []
    for delta in chat.stream_chat([ChatMessage("user", "Tell me a long story about a brave dragon.")],
                                  GenerationOptions(max_tokens=300, temperature=0.0), cancel):
        received.append(delta)
        if len(received) == 5:
            cancel.set()
    assert len(received) == 5


def test_a_server_that_is_not_there_raises_a_clear_error():
    chat = OpenAICompatibleChat(f"http://127.0.0.1:{free_port()}/v1", model="x", timeout=5)
    with pytest.raises(LLMError, match="LLM server"):
        list(chat.stream_chat([ChatMessage("user", "hi")], GenerationOptions(), threading.Event()))


async def test_voice_server_with_llm_url_answers_a_spoken_turn(llama_server, artifacts):
    process, port = start_voice_server("--llm-url", llama_server, log_path=artifacts / "voice-server-llm-url.log")
    try:
        recorder = Recorder()
        async with sdk_client(port).realtime.connect(model="voice-cascade") as connection:
            receiver = asyncio.create_task(record(connection, recorder))
            await stream_pcm(connection, clip("03_v2j_turn_on_living_room_lamp.wav"), trailing_silence_ms=1500)
            done = await recorder.wait_for(lambda e: e.type == "response.done")
            receiver.cancel()
        assert done.response.status == "completed"
        assert done.response.output[0].content[0].transcript
        assert recorder.of("response.output_audio.delta")
    finally:
        stop(process)
    # The llama.cpp server really served the request.
    assert "chat/completions" in (artifacts / "llama-server.log").read_text(errors="replace")
