"""`voice talk FILE.wav`: stream a recording to a running server and show the conversation."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import soundfile

from clients.python.client import RealtimeClient, decode_audio_delta, load_wav_pcm24
from clients.python.events import session_update
from voice.audio import WIRE_RATE


@dataclass
class TalkResult:
    user_transcripts: list[str] = field(default_factory=list)
    assistant_transcripts: list[str] = field(default_factory=list)
    audio: bytearray = field(default_factory=bytearray)
    responses: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)
    """The function calls the assistant made (name, arguments, call_id)."""


class _Progress:
    """Tracks what is still under way, to know when the conversation has gone quiet."""

    def __init__(self) -> None:
        self.committed = 0
        self.transcribed = 0
        self.responses_open = 0
        self.turn_open = False  # the server heard speech start and has not committed it yet

    @property
    def busy(self) -> bool:
        return self.committed > self.transcribed or self.responses_open > 0


async def talk(url: str, wav: Path, *, out: Path | None = None, instructions: str | None = None,
               pipeline: str | None = None, api_key: str | None = None, speed: float = 1.0,
               trailing_silence_ms: int = 1500, quiet_s: float = 0.5, timeout_s: float = 120.0,
               stream: TextIO = sys.stdout, tools: list[dict[str, Any]] | None = None) -> TalkResult:
    client = await RealtimeClient.connect(url, api_key)
    result = TalkResult()
    progress = _Progress()
    sending_done = asyncio.Event()
    partial: dict[str, str] = {}

    def show(text: str) -> None:
        print(text, file=stream, flush=True)

    async def receive() -> None:
        async for received in client.events():
            event = received.event
            kind = event["type"]
            if kind == "input_audio_buffer.speech_started":
                progress.turn_open = True
                show(f"[speech started at {event['audio_start_ms']} ms]")
            elif kind == "input_audio_buffer.committed":
                progress.turn_open = False
                progress.committed += 1
            elif kind == "conversation.item.input_audio_transcription.delta":
                partial[event["item_id"]] = partial.get(event["item_id"], "") + event["delta"]
                show(f"  user (partial): {partial[event['item_id']].strip()}")
            elif kind == "conversation.item.input_audio_transcription.completed":
                progress.transcribed += 1
                result.user_transcripts.append(event["transcript"])
                show(f"user: {event['transcript']}")
            elif kind == "conversation.item.input_audio_transcription.failed":
                progress.transcribed += 1
            elif kind == "response.created":
                progress.responses_open += 1
            elif kind == "response.output_audio.delta":
                result.audio.extend(decode_audio_delta(event))
            elif kind == "response.function_call_arguments.done":
                result.calls.append({"name": event["name"], "arguments": event["arguments"],
                                     "call_id": event["call_id"]})
                show(f"assistant calls: {event['name']}({event['arguments']})")
            elif kind == "conversation.item.added" and event["item"].get("type") == "function_call_output":
                show(f"tool output: {event['item'].get('output')}")
            elif kind == "response.output_audio_transcript.done":
                result.assistant_transcripts.append(event["transcript"])
                show(f"assistant: {event['transcript']}")
            elif kind == "response.done":
                progress.responses_open -= 1
                result.responses.append(event["response"])
                response = event["response"]
                timings = response.get("metadata") or {}
                shown = ", ".join(f"{k.removesuffix('_ms')}={v}" for k, v in timings.items() if k.endswith("_ms"))
                show(f"[response {response['status']}; ms after speech end: {shown}]")
            elif kind == "error":
                result.errors.append(event["error"])
                show(f"[error {event['error'].get('code')}: {event['error'].get('message')}]")

    async def wait_quiet() -> None:
        await sending_done.wait()
        quiet_since = asyncio.get_running_loop().time()
        while True:
            await asyncio.sleep(0.05)
            now = asyncio.get_running_loop().time()
            if progress.busy:
                quiet_since = now
            elif now - quiet_since >= quiet_s:
                return

    receiver = asyncio.create_task(receive())
    try:
        settings = {"instructions": instructions, "pipeline": pipeline, "tools": tools}  # pipeline: an extension
        settings = {key: value for key, value in settings.items() if value}
        if settings:
            await client.send(session_update(**settings))
        pcm = load_wav_pcm24(wav)
        await client.stream_audio(pcm, speed=speed, trailing_silence_ms=trailing_silence_ms)
        # Like a microphone, the silence goes on while the server waits to see whether the user goes on.
        deadline = asyncio.get_running_loop().time() + timeout_s
        while progress.turn_open and asyncio.get_running_loop().time() < deadline:
            await client.stream_audio(bytes(WIRE_RATE * 2 // 10), speed=speed)
        sending_done.set()
        await asyncio.wait_for(wait_quiet(), timeout_s)
    finally:
        receiver.cancel()
        await client.close()
    if not result.audio:  # nothing to save: say why rather than write an empty WAV
        heard = any(text.strip() for text in result.user_transcripts)
        show("the assistant answered without audio: nothing saved" if heard else "no speech heard: no reply")
        return result
    if out is not None:
        samples = np.frombuffer(bytes(result.audio), dtype="<i2")
        soundfile.write(str(out), samples, WIRE_RATE, subtype="PCM_16")
        show(f"assistant audio: {out} ({len(samples) / WIRE_RATE:.1f} s)")
    return result
