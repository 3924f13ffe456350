"""End to end: `voice serve` on the bundled models, driven by the official openai SDK realtime client."""

from __future__ import annotations

import asyncio
import base64

import numpy as np

from tests.helpers import reference, wer
from tests.realtime_sdk import Recorder, clip, record, sdk_client, stream_pcm
from voice.asr.hallucination import normalise
from voice.audio import ASR_RATE, WIRE_RATE, pcm16_to_float, resample, rms_dbfs

LAMP = "04_v2j_would_you_please_turn_on_living_room_lamp.wav"
BOOKS = "18_rstt_LJ001-0004.wav"
NOISE = "23_leopard_empty_synthetic_nospeech.wav"
FORWARD = "06_ps_goforward.wav"


async def converse(port: int, wav: str, *, session: dict | None = None):
    recorder = Recorder()
    async with sdk_client(port).realtime.connect(model="voice-cascade") as connection:
        receiver = asyncio.create_task(record(connection, recorder))
        await recorder.wait_for(lambda e: e.type == "session.created")
        if session:
            await connection.session.update(session={"type": "realtime", **session})
            await recorder.wait_for(lambda e: e.type == "session.updated")
        await stream_pcm(connection, clip(wav), trailing_silence_ms=2500)
        return recorder, receiver, connection


async def test_a_spoken_question_gets_a_spoken_answer(voice_server, artifacts):
    from voice.asr.whisper import WhisperTranscriber
    from voice.models import whisper_model

    for wav in (LAMP, BOOKS):
        recorder = Recorder()
        async with sdk_client(voice_server).realtime.connect(model="voice-cascade") as connection:
            receiver = asyncio.create_task(record(connection, recorder))
            await stream_pcm(connection, clip(wav), trailing_silence_ms=2500)
            done = await recorder.wait_for(lambda e: e.type == "response.done")
            receiver.cancel()
        types = recorder.types()
        assert types[0] == "session.created"
        assert types.index("input_audio_buffer.speech_started") < types.index("input_audio_buffer.speech_stopped")
        assert len(recorder.of("input_audio_buffer.speech_started")) == 1
        transcript = recorder.of("conversation.item.input_audio_transcription.completed")[0].transcript
        assert wer(reference(wav), transcript) <= 0.25, transcript
        deltas = "".join(e.delta for e in recorder.of("conversation.item.input_audio_transcription.delta"))
        # The partial deltas grow into the final transcript (the final pass may still fix case and punctuation).
        assert deltas and normalise(transcript).startswith(normalise(deltas))

        assert done.response.status == "completed"
        spoken = done.response.output[0].content[0].transcript
        assert spoken and recorder.of("response.output_audio_transcript.done")[0].transcript == spoken
        audio = b"".join(base64.b64decode(e.delta) for e in recorder.of("response.output_audio.delta"))
        samples = pcm16_to_float(audio)
        assert len(samples) / WIRE_RATE > 0.3
        assert rms_dbfs(samples) > -35  # not silence
        # It is speech, and it says what the transcript says: Whisper hears the reply's own words.
        heard = WhisperTranscriber(whisper_model("bundled")).transcribe(resample(samples, WIRE_RATE, ASR_RATE))
        assert wer(spoken, heard) <= 0.5, (spoken, heard)
        timings = done.response.metadata
        for key in ("end_of_turn_ms", "transcript_ms", "llm_first_token_ms", "tts_first_audio_ms",
                    "first_audio_sent_ms"):
            assert float(timings[key]) > 0, key
        ms = {key: float(value) for key, value in timings.items() if key.endswith("_ms")}
        assert ms["end_of_turn_ms"] <= ms["transcript_ms"] <= ms["first_audio_sent_ms"], timings
        assert ms["llm_first_token_ms"] <= ms["tts_first_audio_ms"] <= ms["first_audio_sent_ms"], timings
        if timings.get("speculative") != "true":  # a speculative reply may start before the turn ends
            assert ms["transcript_ms"] <= ms["llm_first_token_ms"], timings
        import soundfile

        soundfile.write(artifacts / f"reply-{wav}", np.frombuffer(audio, "<i2"), WIRE_RATE)


async def test_noise_produces_no_turn_and_no_transcript(voice_server):
    recorder, receiver, _ = await converse(voice_server, NOISE)
    await asyncio.sleep(1.0)
    receiver.cancel()
    assert recorder.types() == ["session.created"]


async def test_turn_detection_null_with_manual_commit(voice_server):
    recorder = Recorder()
    async with sdk_client(voice_server).realtime.connect(model="voice-cascade") as connection:
        receiver = asyncio.create_task(record(connection, recorder))
        await connection.session.update(session={"type": "realtime", "output_modalities": ["text"],
                                                 "audio": {"input": {"turn_detection": None}}})
        await recorder.wait_for(lambda e: e.type == "session.updated")
        await connection.input_audio_buffer.append(audio=base64.b64encode(clip(FORWARD)).decode())
        await connection.input_audio_buffer.commit()
        await connection.response.create()
        done = await recorder.wait_for(lambda e: e.type == "response.done")
        receiver.cancel()
    assert "input_audio_buffer.speech_started" not in recorder.types()
    transcript = recorder.of("conversation.item.input_audio_transcription.completed")[0].transcript
    assert wer(reference(FORWARD), transcript) <= 0.25
    assert done.response.status == "completed"
    assert recorder.of("response.output_text.done")[0].text


async def test_barge_in_stops_the_reply_and_keeps_only_what_was_played(voice_server):
    recorder = Recorder()
    # Greedy decoding of this request gives a reply of about 330 words: long enough to interrupt.
    session = {"type": "realtime", "max_output_tokens": 400, "temperature": 0.0,
               "instructions": "You are a storyteller who tells long, detailed stories."}
    async with sdk_client(voice_server).realtime.connect(model="voice-cascade") as connection:
        receiver = asyncio.create_task(record(connection, recorder))
        await connection.session.update(session=session)
        await recorder.wait_for(lambda e: e.type == "session.updated")
        await connection.conversation.item.create(item={
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "Tell me a long story about a brave dragon."}]})
        await connection.response.create()
        first_audio = await recorder.wait_for(lambda e: e.type == "response.output_audio.delta")
        played_from = next(t for t, e in recorder.events if e is first_audio)
        response_id = first_audio.response_id
        item_id = first_audio.item_id
        # The user talks over the reply while it plays.
        await stream_pcm(connection, clip(FORWARD), trailing_silence_ms=2500)
        interrupted = await recorder.wait_for(lambda e: e.type == "response.done" and e.response.id == response_id)
        assert interrupted.response.status == "cancelled"
        assert interrupted.response.status_details.reason == "turn_detected"
        position = {id(e): i for i, (_, e) in enumerate(recorder.events)}
        barge_at = next(t for t, e in recorder.events if e.type == "input_audio_buffer.speech_started")
        assert position[id(interrupted)] > position[id(recorder.of("input_audio_buffer.speech_started")[0])]
        late = [e for e in recorder.of("response.output_audio.delta")
                if e.response_id == response_id and position[id(e)] > position[id(interrupted)]]
        assert late == []  # no audio of the cancelled reply after its response.done
        sent = [e for e in recorder.of("response.output_audio.delta") if e.response_id == response_id]
        sent_ms = sum(len(base64.b64decode(e.delta)) for e in sent) / 2 / WIRE_RATE * 1000
        # The client played from the first delta until the barge-in, never more than it received.
        played_ms = int(min(sent_ms, (barge_at - played_from) * 1000))
        await connection.conversation.item.truncate(item_id=item_id, content_index=0, audio_end_ms=played_ms)
        truncated = await recorder.wait_for(lambda e: e.type == "conversation.item.truncated")
        assert truncated.audio_end_ms == played_ms
        await connection.conversation.item.retrieve(item_id=item_id)
        kept = (await recorder.wait_for(lambda e: e.type == "conversation.item.retrieved")).item.content[0].transcript
        generated = interrupted.response.output[0].content[0].transcript
        assert generated.startswith(kept)
        assert len(kept.split()) < len(generated.split())
        # Roughly what fits in the played audio (Piper speaks about 2-4 words a second).
        assert len(kept.split()) <= played_ms / 1000 * 5 + 3
        # The interruption is answered in turn.
        second = await recorder.wait_for(lambda e: e.type == "response.done" and e.response.id != response_id)
        receiver.cancel()
    assert second.response.status == "completed"
    transcripts = [e.transcript for e in recorder.of("conversation.item.input_audio_transcription.completed")]
    assert wer(reference(FORWARD), transcripts[-1]) <= 0.25
