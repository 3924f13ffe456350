"""Measure turns through the websocket protocol only, as a microphone client would.

A turn: stream a recording in 20 ms frames at real-time pace, then keep streaming silence (a
microphone never stops) until the reply's `response.done` arrives. Voice-to-voice latency runs
from the moment the last voiced sample of the recording was sent (found from the audio itself)
to the moment the first reply audio reaches the client.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile

from clients.python.client import RealtimeClient
from clients.python.events import audio_commit, response_create
from voice.asr.hallucination import normalise
from voice.audio import WIRE_RATE, float_to_pcm16, resample

FRAME_MS = 20
STALL_HEARD_MS = 60  # a gap inside a reply a listener notices (shorter ones pass for a pause)
TRANSCRIPT_GRACE_S = 10.0  # how long a turn waits after its reply for its transcript
FRAME_BYTES = WIRE_RATE * 2 * FRAME_MS // 1000
DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
STAGES = ("end_of_turn_ms", "transcript_ms", "response_start_ms", "llm_first_token_ms", "tts_first_audio_ms",
          "first_audio_sent_ms")


@dataclass(frozen=True)
class Clip:
    name: str
    pcm: bytes = field(repr=False)
    reference: str
    speech_end_ms: float
    """Where the last voiced sample of the recording is."""


def last_voiced_ms(samples: np.ndarray, rate: int) -> float:
    """End of speech, found from the recording alone, erring early (so latency is never flattered).

    Two independent estimates, and the earlier one wins: the last 10 ms frame louder than both
    the noise floor + 15 dB and the peak - 35 dB; and the end of Silero VAD's last speech segment
    on the whole file (offline, no padding).
    """
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    hop = rate // 100
    frames = samples[: len(samples) // hop * hop].reshape(-1, hop)
    level = 20 * np.log10(np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1)) + 1e-9)
    threshold = max(level.max() - 35.0, np.percentile(level, 10) + 15.0)
    voiced = np.nonzero(level > threshold)[0]
    energy_end = float((voiced[-1] + 1) * 10) if voiced.size else 0.0
    audio16 = resample(samples, rate, 16_000)
    segments = get_speech_timestamps(audio16, VadOptions(min_silence_duration_ms=100, speech_pad_ms=0))
    vad_end = segments[-1]["end"] / 16.0 if segments else energy_end
    return min(energy_end, vad_end)


def load_clip(name: str) -> Clip:
    path = DATA / name
    samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    mono = samples.mean(axis=1)
    with open(DATA / "manifest.tsv", newline="", encoding="utf-8") as handle:
        references = {row["file"]: row["reference_transcript"] for row in csv.DictReader(handle, delimiter="\t")}
    return Clip(name, float_to_pcm16(resample(mono, rate, WIRE_RATE)), references.get(name, ""),
                last_voiced_ms(mono, rate))


@dataclass
class TurnResult:
    clip: str
    ok: bool
    failure: str | None = None
    voice_to_voice_ms: float | None = None
    reference: str = ""
    transcript: str = ""
    wer: float | None = None
    reply: str = ""
    stages: dict[str, float] = field(default_factory=dict)
    first_audio_received_ms: float | None = None  # after speech end, by the server's clock origin
    status: str | None = None
    stall_ms: float | None = None
    """Silence inside the reply for a listener playing its audio from the first byte, in real time:
    the time playback would wait for audio that has not arrived yet."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def word_error_rate(reference: str, hypothesis: str) -> float | None:
    import jiwer

    ref = normalise(reference)
    if not ref:
        return None
    return float(jiwer.wer(ref, normalise(hypothesis))) if normalise(hypothesis) else 1.0


async def run_turn(client: RealtimeClient, clip: Clip, *, timeout_s: float = 30.0, push_to_talk: bool = False,
                   events: list[tuple[float, dict[str, Any]]] | None = None) -> TurnResult:
    """One turn on an open session (the session must be idle). With `push_to_talk` (a session
    without turn detection) the client commits the audio and asks for the response right after
    the last voiced frame, and sends no more audio: the button is released. The turn's events,
    with their arrival times, go to `events` when it is given."""
    events = [] if events is None else events
    done = asyncio.Event()
    heard = asyncio.Event()  # every item committed in this turn has its transcript (or its failure)
    committed: set[str] = set()
    transcribed: set[str] = set()

    async def receive() -> None:
        async for received in client.events():
            events.append((received.at, received.event))
            if received.type == "response.done":
                done.set()
            elif received.type == "input_audio_buffer.committed":
                committed.add(received.event["item_id"])
                heard.clear()
            elif received.type in ("conversation.item.input_audio_transcription.completed",
                                   "conversation.item.input_audio_transcription.failed"):
                transcribed.add(received.event["item_id"])
                if committed <= transcribed:
                    heard.set()

    receiver = asyncio.create_task(receive())
    frames = [clip.pcm[i:i + FRAME_BYTES] for i in range(0, len(clip.pcm), FRAME_BYTES)]
    last_voiced_frame = min(len(frames) - 1, int(clip.speech_end_ms // FRAME_MS))
    silence = bytes(FRAME_BYTES)
    start = time.monotonic()
    speech_end_sent = None
    index = 0
    try:
        while not done.is_set():
            if time.monotonic() - start > len(frames) * FRAME_MS / 1000 + timeout_s:
                break
            if push_to_talk and speech_end_sent is not None:
                await asyncio.wait_for(done.wait(), timeout_s)
                break
            due = start + index * FRAME_MS / 1000
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await client.append_audio(frames[index] if index < len(frames) else silence)
            if index == last_voiced_frame:
                # The frame holds the last voiced sample; it "happened" at its position in the frame.
                within = (clip.speech_end_ms - last_voiced_frame * FRAME_MS) / 1000
                speech_end_sent = time.monotonic() - FRAME_MS / 1000 + within
                if push_to_talk:
                    await client.send(audio_commit())
                    await client.send(response_create())
            index += 1
        if done.is_set() and committed and not heard.is_set():
            # The transcript may come after the reply (native push-to-talk): it belongs to this turn.
            await asyncio.wait_for(heard.wait(), TRANSCRIPT_GRACE_S)
    except TimeoutError:
        pass  # no response.done (a failed turn), or no transcript (its WER counts it as empty)
    finally:
        receiver.cancel()
        await asyncio.gather(receiver, return_exceptions=True)
    return _summarise(clip, events, speech_end_sent)


def _summarise(clip: Clip, events: list[tuple[float, dict[str, Any]]], speech_end_sent: float | None) -> TurnResult:
    # (Only this turn's own items: a late transcript of the turn before is not this one's.)
    committed = {e["item_id"] for _, e in events if e["type"] == "input_audio_buffer.committed"}
    result = TurnResult(clip=clip.name, ok=False, reference=clip.reference)
    errors = [e["error"] for _, e in events if e["type"] == "error"]
    transcripts = [e["transcript"] for _, e in events
                   if e["type"] == "conversation.item.input_audio_transcription.completed"
                   and e["item_id"] in committed]
    result.transcript = " ".join(transcripts)
    result.wer = word_error_rate(clip.reference, result.transcript)
    responses = [e["response"] for _, e in events if e["type"] == "response.done"]
    if errors:
        result.failure = f"error: {errors[0].get('code')}: {errors[0].get('message')}"
    if not responses:
        result.failure = result.failure or "no response"
        return result
    response = responses[-1]
    result.status = response["status"]
    metadata = response.get("metadata") or {}
    result.stages = {k: float(metadata[k]) for k in STAGES if k in metadata}
    output = response.get("output") or [{}]
    content = (output[0].get("content") or [{}])[0]
    result.reply = content.get("transcript") or content.get("text") or ""
    first_audio = next((at for at, e in events if e["type"] == "response.output_audio.delta"
                        and e["response_id"] == response["id"]), None)
    if response["status"] != "completed":
        result.failure = result.failure or f"response {response['status']}"
    elif len(responses) > 1:
        result.failure = f"the turn was split into {len(responses)} responses"
    elif first_audio is None or speech_end_sent is None:
        result.failure = "no reply audio"
    else:
        result.voice_to_voice_ms = (first_audio - speech_end_sent) * 1000
        result.stall_ms = playback_stall_ms(
            [(at, len(base64.b64decode(e["delta"])) / (2 * WIRE_RATE)) for at, e in events
             if e["type"] == "response.output_audio.delta" and e["response_id"] == response["id"]])
        result.ok = result.failure is None
    return result


def playback_stall_ms(deltas: list[tuple[float, float]]) -> float:
    """How long a listener's playback waits for audio, from the first delta on, given each audio
    delta's arrival time and duration (seconds): the reply's gaps as heard."""
    if not deltas:
        return 0.0
    cursor, stalled = deltas[0][0], 0.0
    for arrived, duration in deltas:
        stalled += max(0.0, arrived - cursor)
        cursor = max(cursor, arrived) + duration
    return stalled * 1000


async def run_session(url: str, clips: list[Clip], *, pause_s: float = 0.0, api_key: str | None = None,
                      session: dict[str, Any] | None = None, push_to_talk: bool = False) -> list[TurnResult]:
    """Several turns on one session, one after another, with a pause of silence between them
    (with `push_to_talk`: no turn detection, and no audio sent between turns)."""
    results: list[TurnResult] = []
    try:
        client = await RealtimeClient.connect(url, api_key)
    except Exception as exc:  # noqa: BLE001 - a refused session is a failed turn, reported
        return [TurnResult(clip=c.name, ok=False, failure=f"connect: {exc}") for c in clips]
    if push_to_talk:
        audio = (session or {}).get("audio", {})
        session = {**(session or {}), "audio": {**audio, "input": {**audio.get("input", {}), "turn_detection": None}}}
    try:
        if session:
            await client.send({"type": "session.update", "session": session})
        for number, clip in enumerate(clips):
            if number and pause_s and push_to_talk:
                await asyncio.sleep(pause_s)
            elif number and pause_s:
                pcm = bytes(FRAME_BYTES * int(pause_s * 1000 / FRAME_MS))
                await client.stream_audio(pcm, frame_ms=FRAME_MS)
            results.append(await run_turn(client, clip, push_to_talk=push_to_talk))
    except Exception as exc:  # noqa: BLE001
        results.append(TurnResult(clip="?", ok=False, failure=f"session: {exc}"))
    finally:
        await client.close()
    return results


async def sessions_at_once(url: str, clips: list[Clip], sessions: int, turns: int, *, first_clip: int = 0,
                           stagger_s: float = 0.45, pause_s: float = 1.5) -> list[TurnResult]:
    """`sessions` sessions opened together (`stagger_s` apart: people do not all start talking in
    the same 20 ms), each speaking `turns` clips in turn, from a different clip; all their turns."""
    async def one(index: int) -> list[TurnResult]:
        await asyncio.sleep(index * stagger_s)
        chosen = [clips[(first_clip + index + k) % len(clips)] for k in range(turns)]
        return await run_session(url, chosen, pause_s=pause_s)

    groups = await asyncio.gather(*(one(i) for i in range(sessions)))
    return [turn for group in groups for turn in group]
