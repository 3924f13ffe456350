"""`voice audio-api`: the embedded native model as an OpenAI-compatible chat-completions server.

It takes what vLLM takes from an audio model: the last user message holds the speech as an
`input_audio` content part (base64 WAV, FLAC or OGG), earlier messages are text. Replies stream as
server-sent events (`"stream": true`) or come whole. So `voice serve --native-url` talks to this
server exactly as it talks to vLLM, and one machine can answer the native turns of several.

    GET  /v1/models             the model's id
    GET  /healthz               200 once the model is loaded
    POST /v1/chat/completions   messages, max_tokens (or max_completion_tokens), temperature, stream
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from typing import Any

import numpy as np
import soundfile

from server.json_http import JsonApiHandler, RequestError
from voice.audio import ASR_RATE, resample
from voice.llm.base import ChatMessage, GenerationOptions
from voice.native.base import AudioChatModel

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 32 * 1024 * 1024
MAX_AUDIO_SECONDS = 60.0
"""Longer speech is refused: the encoder reads 30 s, and this is a turn of a conversation."""


@dataclass
class ChatRequest:
    history: list[ChatMessage]
    audio_16k: np.ndarray
    instruction: str | None
    options: GenerationOptions
    stream: bool


def _text_of(content: Any, param: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        return "".join(str(p.get("text", "")) for p in content)
    raise RequestError("only the last user message may hold audio; earlier content must be text", param)


def decode_audio(part: dict[str, Any], param: str) -> np.ndarray:
    """An `input_audio` part to 16 kHz mono float32."""
    data = part.get("input_audio")
    if not isinstance(data, dict) or not isinstance(data.get("data"), str):
        raise RequestError("input_audio needs {data: base64, format}", param)
    try:
        raw = base64.b64decode(data["data"], validate=True)
        samples, rate = soundfile.read(io.BytesIO(raw), dtype="float32", always_2d=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestError(f"input_audio.data is not valid base64: {exc}", f"{param}.data") from exc
    except (soundfile.LibsndfileError, RuntimeError) as exc:
        raise RequestError(f"input_audio is not a readable audio file (wav, flac, ogg): {exc}",
                           f"{param}.data") from exc
    if samples.shape[0] / rate > MAX_AUDIO_SECONDS:
        raise RequestError(f"audio longer than {MAX_AUDIO_SECONDS:g} s", f"{param}.data")
    mono = samples.mean(axis=1)
    return resample(mono, rate, ASR_RATE) if rate != ASR_RATE else mono


def parse_request(body: dict[str, Any]) -> ChatRequest:
    """Validate a chat-completions request for the native model."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise RequestError("messages must be a non-empty list of objects", "messages")
    last = messages[-1]
    if last.get("role") != "user" or not isinstance(last.get("content"), list):
        raise RequestError("the last message must be the user's, with an input_audio content part", "messages")
    audio: np.ndarray | None = None
    texts: list[str] = []
    for index, part in enumerate(last["content"]):
        param = f"messages[{len(messages) - 1}].content[{index}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "input_audio":
            if audio is not None:
                raise RequestError("one input_audio part per request", param)
            audio = decode_audio(part, param)
        elif kind == "text":
            texts.append(str(part.get("text", "")))
        else:
            raise RequestError(f"unsupported content part type {kind!r} (text, input_audio)", param)
    if audio is None:
        raise RequestError("this model answers speech: the last user message needs an input_audio part", "messages")
    history = []
    for index, message in enumerate(messages[:-1]):
        role = message.get("role")
        if role not in ("system", "developer", "user", "assistant"):
            raise RequestError(f"unknown role {role!r}", f"messages[{index}].role")
        history.append(ChatMessage("system" if role == "developer" else role,
                                   _text_of(message.get("content"), f"messages[{index}].content")))
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens", 256))
    temperature = body.get("temperature", 0.7)
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or not 1 <= max_tokens <= 4096:
        raise RequestError("max_tokens must be an integer from 1 to 4096", "max_tokens")
    if not isinstance(temperature, int | float) or isinstance(temperature, bool) or not 0 <= temperature <= 2:
        raise RequestError("temperature must be a number from 0 to 2", "temperature")
    return ChatRequest(history, audio, " ".join(t for t in texts if t) or None,
                       GenerationOptions(max_tokens=max_tokens, temperature=float(temperature)),
                       bool(body.get("stream", False)))


class AudioChatServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], model: AudioChatModel, model_id: str,
                 api_key: str | None = None) -> None:
        super().__init__(address, AudioChatHandler)
        self.model = model
        self.model_id = model_id
        self.api_key = api_key


class AudioChatHandler(JsonApiHandler):
    server: AudioChatServer
    def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
        if self.path == "/healthz":
            self._send_json(200, {"status": "ok", "model": self.server.model_id})
        elif not self._authorized():
            self._send_error(RequestError("invalid API key", status=401, code="invalid_api_key"))
        elif self.path.rstrip("/") == "/v1/models":
            self._send_json(200, {"object": "list", "data": [
                {"id": self.server.model_id, "object": "model", "created": 0, "owned_by": "voice"}]})
        else:
            self._send_error(RequestError(f"no route {self.path}", status=404, code="not_found"))

    def do_POST(self) -> None:  # noqa: N802
        if not self._authorized():
            self._send_error(RequestError("invalid API key", status=401, code="invalid_api_key"))
            return
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._send_error(RequestError(f"no route {self.path}", status=404, code="not_found"))
            return
        try:
            length = int(self.headers.get("Content-Length", "-1"))
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY_BYTES:
            self.close_connection = True
            self._send_error(RequestError(f"a body of at most {MAX_BODY_BYTES} bytes with Content-Length is needed",
                                          status=413 if length > 0 else 411))
            return
        try:
            body = json.loads(self.rfile.read(length))
            if not isinstance(body, dict):
                raise RequestError("the body must be a JSON object")
            request = parse_request(body)
        except json.JSONDecodeError as exc:
            self._send_error(RequestError(f"the body is not JSON: {exc}"))
            return
        except RequestError as exc:
            self._send_error(exc)
            return
        self._answer(request)

    def _answer(self, request: ChatRequest) -> None:
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        cancel = threading.Event()
        started = time.perf_counter()
        deltas = self.server.model.stream_reply(request.audio_16k, request.history, request.options, cancel,
                                                instruction=request.instruction)
        if not request.stream:
            try:
                text = "".join(deltas)
            except Exception as exc:  # noqa: BLE001 (the client gets the reason)
                log.exception("native reply failed")
                self._send_error(RequestError(f"the model failed: {exc}", status=500, code="server_error"))
                return
            self._send_json(200, {"id": completion_id, "object": "chat.completion", "created": created,
                                  "model": self.server.model_id, "choices": [{
                                      "index": 0, "message": {"role": "assistant", "content": text},
                                      "finish_reason": "stop"}]})
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

        def chunk(delta: dict[str, Any], finish: str | None = None) -> None:
            payload = {"id": completion_id, "object": "chat.completion.chunk", "created": created,
                       "model": self.server.model_id,
                       "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            self.wfile.write(f"data: {json.dumps(payload)}\n\n".encode())
            self.wfile.flush()

        try:
            chunk({"role": "assistant", "content": ""})
            for text in deltas:
                chunk({"content": text})
            chunk({}, "stop")
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
            log.info("reply streamed in %.0f ms", (time.perf_counter() - started) * 1000)
        except (BrokenPipeError, ConnectionResetError):
            cancel.set()  # the client left: stop generating and free the model's context
            log.info("client disconnected mid-reply; generation stopped")
        except Exception as exc:  # noqa: BLE001 (headers are sent: tell the client in the stream)
            cancel.set()
            log.exception("native reply failed")
            try:
                self.wfile.write(f"data: {json.dumps({'error': {'message': f'the model failed: {exc}'}})}\n\n"
                                 .encode())
            except OSError:
                pass
        finally:
            close = getattr(deltas, "close", None)
            if close:
                close()


def serve(model: AudioChatModel, model_id: str, host: str, port: int, api_key: str | None = None,
          ready: threading.Event | None = None) -> None:
    """Serve until SIGINT or SIGTERM."""
    import signal

    server = AudioChatServer((host, port), model, model_id, api_key)

    def stop(*_: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("audio chat API on http://%s:%d/v1 (model %s)", host, server.server_address[1], model_id)
    if ready:
        ready.set()
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        model.close()

