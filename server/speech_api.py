"""`voice tts-api`: this project's voices as an OpenAI-compatible speech server.

It answers what OpenAI's `POST /v1/audio/speech` takes, and streams the audio as it is made
(chunked), so `voice serve --tts-url` (or any OpenAI client) hears the first sentence before the
last is synthesised. A heavy voice can so run on its own machine, the way `--llm-url` reaches an LLM.

    GET  /healthz            200 once the voices are loaded
    GET  /v1/models          the model's id
    GET  /v1/audio/voices    {"voices": [id, ...]}: the default first
    POST /v1/audio/speech    input, voice (an id, or one of OpenAI's names), response_format pcm or wav
"""

from __future__ import annotations

import json
import logging
import select
import socket
import struct
import threading
import time
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from typing import Any

import numpy as np

from server.json_http import JsonApiHandler, RequestError
from voice.audio import WIRE_RATE, StreamResampler, float_to_pcm16
from voice.tts.base import Synthesizer
from voice.tts.voices import OPENAI_VOICES, Voice, VoiceBook

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
MAX_INPUT_CHARS = 4096
"""OpenAI's limit on `input`."""
FORMATS = {"pcm": "audio/pcm", "wav": "audio/wav"}


def wav_header(rate: int = WIRE_RATE) -> bytes:
    """A 16-bit mono WAV header of unknown length (the largest), as streaming servers send it."""
    unknown = 0xFFFFFFFF
    return (b"RIFF" + struct.pack("<I", unknown) + b"WAVEfmt "
            + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16) + b"data" + struct.pack("<I", unknown))


class SpeechServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], voices: list[tuple[Voice, Synthesizer]], model_id: str = "voice-tts",
                 api_key: str | None = None) -> None:
        super().__init__(address, SpeechHandler)
        self.book = VoiceBook(tuple(voice for voice, _ in voices))
        self.synthesizers = {voice.id: synthesizer for voice, synthesizer in voices}
        self.model_id = model_id
        self.api_key = api_key


class SpeechHandler(JsonApiHandler):
    server: SpeechServer
    def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
        path = self.path.rstrip("/")
        if path == "/healthz":
            self._send_json(200, {"status": "ok", "voices": list(self.server.book.ids)})
        elif not self._authorized():
            self._send_error(RequestError("invalid API key", status=401, code="invalid_api_key"))
        elif path == "/v1/models":
            self._send_json(200, {"object": "list", "data": [
                {"id": self.server.model_id, "object": "model", "created": 0, "owned_by": "voice"}]})
        elif path == "/v1/audio/voices":
            self._send_json(200, {"voices": list(self.server.book.ids)})
        else:
            self._send_error(RequestError(f"no route {self.path}", status=404, code="not_found"))

    def do_POST(self) -> None:  # noqa: N802
        if not self._authorized():
            self._send_error(RequestError("invalid API key", status=401, code="invalid_api_key"))
            return
        if self.path.rstrip("/") != "/v1/audio/speech":
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
            text, voice, fmt = self._parse(body)
        except json.JSONDecodeError as exc:
            self._send_error(RequestError(f"the body is not JSON: {exc}"))
            return
        except RequestError as exc:
            self._send_error(exc)
            return
        self._speak(text, voice, fmt)

    def _parse(self, body: Any) -> tuple[str, str, str]:
        """The text, the id of the voice and the format a request asks for."""
        if not isinstance(body, dict):
            raise RequestError("the body must be a JSON object")
        text = body.get("input")
        if not isinstance(text, str) or not text.strip() or len(text) > MAX_INPUT_CHARS:
            raise RequestError(f"input must be text of 1 to {MAX_INPUT_CHARS} characters", "input")
        name = body.get("voice", "alloy")
        name = name.get("id") if isinstance(name, dict) else name
        voice = self.server.book.resolve(name) if isinstance(name, str) else None
        if voice is None:
            raise RequestError(f"unknown voice {name!r}: this server's voices are {', '.join(self.server.book.ids)} "
                               f"(or OpenAI's names: {', '.join(OPENAI_VOICES)})", "voice")
        fmt = body.get("response_format", "pcm")
        if fmt not in FORMATS:
            raise RequestError(f"response_format {fmt!r}: this server streams {' or '.join(FORMATS)}",
                               "response_format")
        if body.get("stream_format", "audio") != "audio":
            raise RequestError("stream_format must be audio (raw bytes, streamed)", "stream_format")
        speed = body.get("speed", 1.0)
        if not isinstance(speed, int | float) or isinstance(speed, bool) or speed != 1.0:
            raise RequestError("speed: only 1.0 is supported", "speed")
        return text, voice, fmt

    def _speak(self, text: str, voice: str, fmt: str) -> None:
        started = time.perf_counter()
        self.send_response(200)
        self.send_header("Content-Type", FORMATS[fmt])
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        sent = count = 0
        pieces = _wire_pcm(self.server.synthesizers[voice], text)
        try:
            if fmt == "wav":
                self._chunk(wav_header())
            # Whether the client is still there is asked before each piece: one that left (a barge-in)
            # costs the piece under way at most.
            while not self._client_left() and (pcm := next(pieces, None)) is not None:
                self._chunk(pcm)
                sent, count = sent + len(pcm), count + 1
            if self._client_left():
                raise ConnectionResetError
            self._chunk(b"")
            log.info("%s: %.1f s of speech in %d pieces, %.0f ms", voice, sent / 2 / WIRE_RATE, count,
                     (time.perf_counter() - started) * 1000)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
            log.info("%s: the client left after %d pieces (%.1f s of speech); synthesis stopped", voice, count,
                     sent / 2 / WIRE_RATE)
        except Exception:  # noqa: BLE001 (the headers are sent: ending the stream short is all that is left)
            self.close_connection = True
            log.exception("synthesis failed")
        finally:
            pieces.close()

    def _client_left(self) -> bool:
        """Whether the client closed its end (it sends nothing while it reads a reply)."""
        readable, _, _ = select.select([self.connection], [], [], 0)
        if not readable:
            return False
        try:
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


def _wire_pcm(synthesizer: Synthesizer, text: str) -> Iterator[bytes]:
    """`text` in the voice as 24 kHz PCM16, piece by piece (`soon`: the client waits for the first)."""
    resampler = StreamResampler(synthesizer.sample_rate, WIRE_RATE)
    for piece in synthesizer.synthesize(text, soon=True):
        if (resampled := resampler.process(piece)).size:
            yield float_to_pcm16(resampled)
    if (tail := resampler.process(np.zeros(0, np.float32), last=True)).size:
        yield float_to_pcm16(tail)


def serve(voices: list[tuple[Voice, Synthesizer]], host: str, port: int, api_key: str | None = None,
          ready: threading.Event | None = None) -> None:
    """Serve until SIGINT or SIGTERM."""
    import signal

    server = SpeechServer((host, port), voices, api_key=api_key)

    def stop(*_: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("speech API on http://%s:%d/v1 (voices %s)", host, server.server_address[1], ", ".join(server.book.ids))
    if ready:
        ready.set()
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
