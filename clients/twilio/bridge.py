"""A bridge from Twilio Media Streams to the voice server: a phone call talks to the assistant.

Twilio opens a websocket to the bridge for each call (`<Connect><Stream url="wss://HOST/media"/>`)
and sends the caller's audio as μ-law 8 kHz `media` events; the bridge opens a Realtime session on
the voice server with `audio/pcmu` in and out, so that the audio passes through both ways as it is,
base64 and all. When the server hears the caller interrupt a reply (`output_audio_buffer.cleared`),
the bridge tells Twilio to drop the reply audio it still holds (`clear`) and truncates the reply's
item to what the caller heard. See docs/telephony.md.

    python -m clients.twilio.bridge --server ws://127.0.0.1:8000/v1/realtime --port 8080
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import websockets
from websockets.asyncio.server import Server, ServerConnection, serve

log = logging.getLogger("twilio-bridge")

MS_PER_BYTE = 1000 / 8000  # μ-law at 8 kHz: one byte a sample


@dataclass
class Playback:
    """The reply audio sent to Twilio for one assistant item, to tell what the caller heard of it."""

    item_id: str
    started_ms: int  # the call's media timestamp when its first audio was sent
    sent_ms: float = 0.0


class CallBridge:
    """One call: Twilio's websocket on one side, a Realtime session on the other."""

    def __init__(self, twilio: ServerConnection, server_url: str, session: dict[str, Any],
                 api_key: str | None = None, on_event: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.twilio = twilio
        self.server_url = server_url
        self.session = session
        self.api_key = api_key
        self.on_event = on_event
        self.stream_sid: str | None = None
        self.media_ms = 0  # the latest media timestamp from Twilio: how far into the call we are
        self.playback: Playback | None = None

    async def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else None
        async with websockets.connect(self.server_url, additional_headers=headers, max_size=None) as realtime:
            await realtime.send(json.dumps({"type": "session.update", "session": self.session}))
            replies = asyncio.create_task(self._from_server(realtime))
            try:
                await self._from_twilio(realtime)
            finally:
                replies.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await replies

    async def _from_twilio(self, realtime: websockets.ClientConnection) -> None:
        """The caller's audio, passed on as it comes; the call's end ends the session."""
        async for message in self.twilio:
            event = json.loads(message)
            kind = event.get("event")
            if kind == "start":
                self.stream_sid = event["start"]["streamSid"]
                log.info("call %s started (stream %s)", event["start"].get("callSid"), self.stream_sid)
            elif kind == "media" and event["media"].get("track", "inbound") == "inbound":
                self.media_ms = int(event["media"]["timestamp"])
                await realtime.send(json.dumps({"type": "input_audio_buffer.append",
                                                "audio": event["media"]["payload"]}))
            elif kind == "stop":
                log.info("call ended")
                return

    async def _from_server(self, realtime: websockets.ClientConnection) -> None:
        """The assistant's audio to the caller; a barge-in clears what Twilio still has to play."""
        async for message in realtime:
            event = json.loads(message)
            if self.on_event is not None:
                self.on_event(event)
            kind = event["type"]
            if kind == "response.output_audio.delta" and self.stream_sid is not None:
                if self.playback is None or self.playback.item_id != event["item_id"]:
                    self.playback = Playback(event["item_id"], self.media_ms)
                self.playback.sent_ms += len(base64.b64decode(event["delta"])) * MS_PER_BYTE
                await self.twilio.send(json.dumps({"event": "media", "streamSid": self.stream_sid,
                                                   "media": {"payload": event["delta"]}}))
            elif kind == "output_audio_buffer.cleared" and self.playback is not None:
                await self._barge_in(realtime, self.playback)
            elif kind == "error":
                log.warning("server error: %s", event["error"].get("message"))

    async def _barge_in(self, realtime: websockets.ClientConnection, playback: Playback) -> None:
        """Twilio drops the reply audio it holds; the item keeps only what the caller heard."""
        self.playback = None
        await self.twilio.send(json.dumps({"event": "clear", "streamSid": self.stream_sid}))
        heard_ms = int(min(playback.sent_ms, max(0, self.media_ms - playback.started_ms)))
        if heard_ms < playback.sent_ms:
            await realtime.send(json.dumps({"type": "conversation.item.truncate", "item_id": playback.item_id,
                                            "content_index": 0, "audio_end_ms": heard_ms}))


def session_config(instructions: str | None = None, voice: str | None = None) -> dict[str, Any]:
    """The session a call gets: μ-law in and out (Twilio's format), server_vad turn detection."""
    session: dict[str, Any] = {"type": "realtime", "audio": {
        "input": {"format": {"type": "audio/pcmu"}, "turn_detection": {"type": "server_vad"}},
        "output": {"format": {"type": "audio/pcmu"}}}}
    if instructions:
        session["instructions"] = instructions
    if voice:
        session["audio"]["output"]["voice"] = voice
    return session


async def serve_bridge(host: str, port: int, server_url: str, session: dict[str, Any], api_key: str | None = None,
                       on_event: Callable[[dict[str, Any]], None] | None = None) -> Server:
    """Listen for Twilio's websockets (any path, `/media` by convention); returns the started server."""

    async def handle(twilio: ServerConnection) -> None:
        try:
            await CallBridge(twilio, server_url, session, api_key, on_event).run()
        except (OSError, websockets.ConnectionClosed) as exc:
            log.warning("call ended abnormally: %s", exc)

    return await serve(handle, host, port)


def main() -> None:
    parser = argparse.ArgumentParser(description="Bridge Twilio Media Streams calls to the voice server.")
    parser.add_argument("--server", default="ws://127.0.0.1:8000/v1/realtime", help="the voice server's Realtime URL")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--api-key", help="the voice server's API key, if it has one")
    parser.add_argument("--instructions", help="the assistant's instructions for calls")
    parser.add_argument("--voice")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    async def run() -> None:
        server = await serve_bridge(args.host, args.port, args.server, session_config(args.instructions, args.voice),
                                    args.api_key)
        log.info("bridging Twilio Media Streams on ws://%s:%d/media to %s", args.host, args.port, args.server)
        await server.serve_forever()

    asyncio.run(run())


if __name__ == "__main__":
    main()
