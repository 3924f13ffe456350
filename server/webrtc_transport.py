"""A WebRTC peer as a Connection's transport: events on the `oai-events` data channel, the
microphone's audio as append messages, the reply's audio on the answer's track."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from typing import Any

from aiortc import MediaStreamTrack, RTCDataChannel, RTCPeerConnection

from server.transport import TransportClosed
from server.webrtc_audio import ReplyTrack, read_microphone
from server.wire import Ids

log = logging.getLogger(__name__)

EVENTS_CHANNEL = "oai-events"
CONNECT_TIMEOUT_S = 20.0  # a peer whose data channel is not open by then is dropped
FLUSH_S = 1.0  # how long a call the server ends waits for its last events to leave


class WebRtcTransport:
    """One call's peer connection, as server/transport.py's Transport."""

    def __init__(self, pc: RTCPeerConnection, peer: str, connect_timeout_s: float = CONNECT_TIMEOUT_S) -> None:
        self.pc = pc
        self._peer = peer
        self.reply = ReplyTrack(self._announce)
        self._inbox: asyncio.Queue[str | bytes | None] = asyncio.Queue()
        self._channel: RTCDataChannel | None = None
        self._open = asyncio.Event()
        self._close_code: int | None = None
        self._ids = Ids()
        self._tasks: set[asyncio.Task[None]] = set()
        pc.on("datachannel", self._attach_channel)
        pc.on("track", self._attach_track)
        pc.on("connectionstatechange", self._on_state)
        self._spawn(self._connect_deadline(connect_timeout_s))

    # ------------------------------------------------------------------ the peer's side
    def _spawn(self, job: Any) -> None:
        task = asyncio.ensure_future(job)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _attach_channel(self, channel: RTCDataChannel) -> None:
        if channel.label != EVENTS_CHANNEL or self._channel is not None:
            return  # the protocol has one channel; others are ignored
        self._channel = channel
        channel.on("message", self._inbox.put_nowait)
        channel.on("close", lambda: self._ended(1000))  # the client hung up
        if channel.readyState == "open":
            self._open.set()
        else:
            channel.on("open", self._open.set)

    def _attach_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            self._spawn(read_microphone(track, self._inbox.put_nowait))

    def _on_state(self) -> None:
        if self.pc.connectionState in ("failed", "closed"):
            self._ended()

    def _ended(self, code: int = 1006) -> None:
        """The client is gone (1006: without hanging up): the session's next read ends it."""
        if self._close_code is None:
            self._close_code = code
        self._open.set()  # a send waiting for the channel fails at once
        self._inbox.put_nowait(None)

    async def _connect_deadline(self, timeout_s: float) -> None:
        try:
            await asyncio.wait_for(self._open.wait(), timeout_s)
        except TimeoutError:
            log.info("WebRTC peer %s did not open its data channel within %.0f s", self._peer, timeout_s)
            self._ended()

    def _announce(self, event: dict[str, Any]) -> None:
        """An output_audio_buffer.* event from the reply track, straight onto the channel."""
        channel = self._channel
        if channel is not None and channel.readyState == "open":
            channel.send(json.dumps({"event_id": self._ids.new("event"), **event}))

    # ------------------------------------------------------------------ Transport
    @property
    def peer(self) -> str:
        return self._peer

    @property
    def close_code(self) -> int | None:
        return self._close_code

    async def recv(self) -> str | bytes:
        message = await self._inbox.get()
        if message is None:
            self._inbox.put_nowait(None)  # every later read ends too
            raise TransportClosed
        return message

    async def send(self, data: str) -> None:
        await self._open.wait()
        channel = self._channel
        if channel is None or channel.readyState != "open":
            raise TransportClosed
        channel.send(data)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """End the call: the peer connection closes, and every task of this transport ends."""
        if self._close_code is None:
            self._close_code = code
            await self._flush()  # the server ends the call: its last events (an error) go out first
        self._ended()
        self.reply.stop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.pc.close()

    async def _flush(self, timeout_s: float = FLUSH_S) -> None:
        """Until the data channel has handed its queued messages to the network (at most `timeout_s`)."""
        channel = self._channel
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while channel is not None and channel.readyState == "open" and loop.time() < deadline:
            if channel.bufferedAmount == 0:
                await asyncio.sleep(0.05)  # and the transport to send them
                return
            await asyncio.sleep(0.02)

    def buffered_bytes(self) -> int:
        return self._channel.bufferedAmount if self._channel is not None else 0

    def takes(self, event: dict[str, Any]) -> bool:
        """Reply audio goes on the track, not the channel; the end of a response and a clear
        reach the track's buffer too (they are still sent)."""
        kind = event["type"]
        if kind == "response.output_audio.delta":
            self.reply.push(event["response_id"], event["item_id"], base64.b64decode(event["delta"]))
            return True
        if kind == "response.done":
            self.reply.finish(event["response"]["id"])
        elif kind == "output_audio_buffer.cleared":
            if event.get("response_id") is None:
                event["response_id"] = self.reply.response_id  # (a client's clear names none in the session)
            cut = self.reply.clear()
            if cut is not None:
                # The server knows what was played, as no websocket server does: the item is truncated
                # there, as a websocket client would truncate it, so the conversation holds what was heard.
                item_id, played_ms = cut
                self._inbox.put_nowait(json.dumps({"type": "conversation.item.truncate", "item_id": item_id,
                                                   "content_index": 0, "audio_end_ms": played_ms}))
        return False
