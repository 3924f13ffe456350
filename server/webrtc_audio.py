"""WebRTC audio: the microphone track as `input_audio_buffer.append` messages, and the reply's
audio (PCM16 at 24 kHz from the session) as a 48 kHz track paced at real time.

The reply track keeps the server-side output buffer of OpenAI's WebRTC flavour: it announces
`output_audio_buffer.started` when a response's audio begins to play and `.stopped` when all of it
has played, and `clear()` drops what is left (barge-in).
"""

from __future__ import annotations

import asyncio
import base64
import fractions
import json
import time
from collections.abc import Callable
from typing import Any

import av
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from voice.audio import WIRE_RATE, StreamResampler, float_to_pcm16, pcm16_to_float

TRACK_RATE = 48_000  # what aiortc's Opus encoder takes
FRAME_S = 0.02
FRAME_SAMPLES = int(TRACK_RATE * FRAME_S)
_COMPACT_BYTES = 1 << 20  # played audio is cut from the buffer's front once this much has gathered


def frame_to_mono(frame: av.AudioFrame) -> np.ndarray:
    """A decoded frame (s16 or float, packed or planar, any channels) as mono float32 samples."""
    data = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if frame.format.is_planar:
        mono = data.mean(axis=0)
    else:
        mono = data.reshape(-1, channels).mean(axis=1)
    if np.issubdtype(data.dtype, np.integer):
        return (mono / 32768.0).astype(np.float32)
    return mono.astype(np.float32)


async def read_microphone(track: MediaStreamTrack, deliver: Callable[[str], None]) -> None:
    """Turn each frame of the client's audio track into an append message (PCM16, 24 kHz), until the track ends."""
    resampler: StreamResampler | None = None
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        if resampler is None or resampler.in_rate != frame.sample_rate:
            resampler = StreamResampler(frame.sample_rate, WIRE_RATE)
        pcm = float_to_pcm16(resampler.process(frame_to_mono(frame)))
        if pcm:
            deliver(json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()}))


class ReplyTrack(MediaStreamTrack):
    """The assistant's voice: reply audio queued by `push`, sent in 20 ms frames at real time
    (silence between replies, as a call's line carries)."""

    kind = "audio"

    def __init__(self, announce: Callable[[dict[str, Any]], None]) -> None:
        super().__init__()
        self._announce = announce  # sends an output_audio_buffer.* event to the client
        self._pending = bytearray()  # 48 kHz PCM16 mono, from `_read` on
        self._read = 0
        self._resampler = StreamResampler(WIRE_RATE, TRACK_RATE)
        self._response_id: str | None = None  # the response whose audio is queued
        self._item_id: str | None = None  # and its item
        self._complete = False  # its audio has all been queued
        self._queued_total = 0  # bytes ever queued, and ever played: where each response starts
        self._played_total = 0
        self._response_start = 0
        self._playing = False  # `started` was announced and `stopped` or a clear has not followed
        self._start: float | None = None
        self._timestamp = 0

    @property
    def buffered_s(self) -> float:
        """Reply audio queued and not yet played."""
        return (len(self._pending) - self._read) / 2 / TRACK_RATE

    @property
    def response_id(self) -> str | None:
        """The response whose audio was queued last."""
        return self._response_id

    def push(self, response_id: str, item_id: str, pcm: bytes) -> None:
        """Queue a piece of a response's audio (PCM16, 24 kHz)."""
        if response_id != self._response_id:
            self._response_id, self._item_id, self._complete = response_id, item_id, False
            self._resampler = StreamResampler(WIRE_RATE, TRACK_RATE)
            self._response_start = self._queued_total
        self._queue(float_to_pcm16(self._resampler.process(pcm16_to_float(pcm))))

    def _queue(self, pcm: bytes) -> None:
        self._pending += pcm
        self._queued_total += len(pcm)

    def finish(self, response_id: str) -> None:
        """The response is done: no more of its audio comes."""
        if response_id == self._response_id and not self._complete:
            self._complete = True
            self._queue(float_to_pcm16(self._resampler.process(np.zeros(0, np.float32), last=True)))
            self._stop_if_drained()

    def clear(self) -> tuple[str, int] | None:
        """Drop the audio not yet played (the client heard `output_audio_buffer.cleared`); the item
        cut short and how much of it was played (ms), if some of it was and some was not."""
        cut = None
        played_ms = (self._played_total - self._response_start) * 1000 // (2 * TRACK_RATE)
        if self._item_id is not None and self._read < len(self._pending) and played_ms > 0:
            cut = self._item_id, played_ms
        self._queued_total -= len(self._pending) - self._read
        self._pending.clear()
        self._read = 0
        self._complete = True
        self._playing = False
        return cut

    def _stop_if_drained(self) -> None:
        if self._playing and self._complete and self._read >= len(self._pending):
            self._playing = False
            self._announce({"type": "output_audio_buffer.stopped", "response_id": self._response_id})

    def _next_frame(self) -> bytes:
        size = FRAME_SAMPLES * 2
        piece = bytes(self._pending[self._read:self._read + size])
        self._read += len(piece)
        self._played_total += len(piece)
        if self._read >= _COMPACT_BYTES:
            del self._pending[:self._read]
            self._read = 0
        if piece and not self._playing:
            self._playing = True
            self._announce({"type": "output_audio_buffer.started", "response_id": self._response_id})
        self._stop_if_drained()
        return piece.ljust(size, b"\0")

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        # Paced as aiortc's own tracks are: frame n leaves at start + n * 20 ms.
        if self._start is None:
            self._start = time.monotonic()
        else:
            self._timestamp += FRAME_SAMPLES
            await asyncio.sleep(max(0.0, self._start + self._timestamp / TRACK_RATE - time.monotonic()))
        frame = av.AudioFrame(format="s16", layout="mono", samples=FRAME_SAMPLES)
        frame.planes[0].update(self._next_frame())
        frame.sample_rate = TRACK_RATE
        frame.pts = self._timestamp
        frame.time_base = fractions.Fraction(1, TRACK_RATE)
        return frame
