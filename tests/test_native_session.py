"""The native pipeline through the websocket: a real recording in, a spoken reply out, with no
transcript in between (the ASR runs beside it for the user's transcript and the history)."""

from __future__ import annotations

import base64

from tests.helpers import reference, wer
from tests.realtime_sdk import clip
from tests.test_faults import collect_until, connect, native_push_to_talk, of_type, send, speak
from voice.audio import WIRE_RATE, pcm16_to_float, rms_dbfs

CLIP = "04_v2j_would_you_please_turn_on_living_room_lamp.wav"


def reply_audio(events: list[dict]):
    deltas = of_type(events, "response.output_audio.delta")
    return pcm16_to_float(b"".join(base64.b64decode(e["delta"]) for e in deltas))


async def test_the_server_offers_both_pipelines_and_refuses_an_unknown_one(voice_server):
    websocket = await connect(voice_server)
    await send(websocket, {"type": "session.update", "session": {"type": "realtime", "pipeline": "telepathy"}})
    [error] = of_type(await collect_until(websocket, "error"), "error")
    assert error["error"]["param"] == "session.pipeline"
    await send(websocket, {"type": "session.update", "session": {"type": "realtime", "pipeline": "native"}})
    updated = (await collect_until(websocket, "session.updated"))[-1]["session"]
    assert updated["pipeline"] == "native" and updated["pipelines"] == ["cascade", "native"]
    await websocket.close()


async def test_a_spoken_turn_is_answered_natively(voice_server):
    websocket = await connect(voice_server)
    await send(websocket, {"type": "session.update", "session": {"type": "realtime", "pipeline": "native"}})
    await collect_until(websocket, "session.updated")
    await speak(websocket, clip(CLIP))
    events = await collect_until(websocket, "response.done", timeout=120)
    assert of_type(events, "input_audio_buffer.speech_stopped")
    done = events[-1]["response"]
    assert done["status"] == "completed", done
    metadata = done["metadata"]
    assert metadata["pipeline"] == "native"
    for key in ("end_of_turn_ms", "llm_first_token_ms", "tts_first_audio_ms", "first_audio_sent_ms"):
        assert float(metadata[key]) > 0, key
    assert metadata["speculative"] == "true"  # started in the silence window on exactly this turn, then adopted
    samples = reply_audio(events)
    assert len(samples) / WIRE_RATE > 0.3 and rms_dbfs(samples) > -35  # speech, not silence
    assert done["output"][0]["content"][0]["transcript"]

    # The user's transcript still comes (from the ASR running beside the reply) and joins the history.
    if not of_type(events, "conversation.item.input_audio_transcription.completed"):
        events += await collect_until(websocket, "conversation.item.input_audio_transcription.completed")
    [completed] = of_type(events, "conversation.item.input_audio_transcription.completed")
    assert wer(reference(CLIP), completed["transcript"]) < 0.3
    user_item = completed["item_id"]
    await send(websocket, {"type": "conversation.item.retrieve", "item_id": user_item})
    item = (await collect_until(websocket, "conversation.item.retrieved"))[-1]["item"]
    assert item["content"][0]["transcript"] == completed["transcript"]
    await websocket.close()


async def test_native_turn_with_manual_commit(voice_server):
    websocket = await connect(voice_server)
    pcm = clip(CLIP)
    await native_push_to_talk(websocket, pcm)
    events = await collect_until(websocket, "response.done", timeout=120)
    assert events[-1]["response"]["status"] == "completed"
    assert events[-1]["response"]["metadata"]["pipeline"] == "native"
    assert len(of_type(events, "response.created")) == 1
    assert len(reply_audio(events)) > 0
    # The user's transcript waits for the reply's first audio (push-to-talk: nothing else waits
    # for it), then comes: with the reply, or after it.
    if not of_type(events, "conversation.item.input_audio_transcription.completed"):
        events += await collect_until(websocket, "conversation.item.input_audio_transcription.completed", timeout=60)
    first_audio = next(i for i, e in enumerate(events) if e["type"] == "response.output_audio.delta")
    done = next(i for i, e in enumerate(events) if e["type"] == "conversation.item.input_audio_transcription.completed")
    assert done > first_audio and "lamp" in events[done]["transcript"].lower()

    # A commit with no response asked for still gets its transcript (once the hold runs out).
    for start in range(0, len(pcm), 9600):
        await send(websocket, {"type": "input_audio_buffer.append",
                               "audio": base64.b64encode(pcm[start:start + 9600]).decode()})
    await send(websocket, {"type": "input_audio_buffer.commit"})
    events = await collect_until(websocket, "conversation.item.input_audio_transcription.completed", timeout=60)
    assert "lamp" in events[-1]["transcript"].lower() and not of_type(events, "response.created")
    await websocket.close()
