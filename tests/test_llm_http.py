"""The OpenAI-compatible LLM backend against a real server: llama.cpp's own (`python -m llama_cpp.server`)."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import threading

import pytest

from tests.helpers import ROOT, free_port, pipe, start_voice_server, stop, wait_http
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


class RecordingProxy:
    """A TCP proxy in front of the LLM server that keeps every byte each way: what went through it."""

    def __init__(self, target: str) -> None:
        self.target_port = int(re.search(r":(\d+)/", target).group(1))
        self.sent = bytearray()  # requests
        self.received = bytearray()  # responses
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/v1"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target_port)

        await asyncio.gather(pipe(reader, upstream_writer, self.sent), pipe(upstream_reader, writer, self.received))

    def chat_requests(self) -> int:
        return bytes(self.sent).count(b"POST /v1/chat/completions ")

    def streamed_texts(self) -> list[str]:
        """The text of each chat-completions stream that came back (a speculative one may be among them)."""
        streams: dict[str, str] = {}
        for line in bytes(self.received).split(b"\n"):
            if line.startswith(b"data: {"):
                try:
                    chunk = json.loads(line[6:])
                except ValueError:
                    continue
                content = "".join(choice.get("delta", {}).get("content") or "" for choice in chunk.get("choices", []))
                streams[chunk.get("id", "")] = streams.get(chunk.get("id", ""), "") + content
        return list(streams.values())

    def close(self) -> None:
        if self._server is not None:
            self._server.close()


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def said_in_order(spoken: list[str], streamed: list[str]) -> bool:
    """Whether every spoken word comes in the streamed text, in order (speech drops markup, like "1.")."""
    rest = iter(streamed)
    return all(word in rest for word in spoken)


async def test_voice_server_with_llm_url_answers_a_spoken_turn(llama_server, artifacts):
    # Through a proxy that records the traffic: the reply is proven to come through --llm-url, not
    # from a log another test may have written.
    proxy = RecordingProxy(llama_server)
    url = await proxy.start()
    process, port = await asyncio.to_thread(start_voice_server, "--llm-url", url,
                                            log_path=artifacts / "voice-server-llm-url.log")
    requests_at_start = proxy.chat_requests()
    try:
        recorder = Recorder()
        async with sdk_client(port).realtime.connect(model="voice-cascade") as connection:
            receiver = asyncio.create_task(record(connection, recorder))
            await stream_pcm(connection, clip("03_v2j_turn_on_living_room_lamp.wav"), trailing_silence_ms=1500)
            done = await recorder.wait_for(lambda e: e.type == "response.done")
            receiver.cancel()
        assert done.response.status == "completed"
        transcript = done.response.output[0].content[0].transcript
        assert transcript
        assert recorder.of("response.output_audio.delta")
    finally:
        stop(process)
        proxy.close()
    # The turn's request went through the URL, and what came back is what was said.
    assert proxy.chat_requests() > requests_at_start
    spoken = words(transcript)
    assert spoken and any(said_in_order(spoken, words(text)) for text in proxy.streamed_texts())
