"""Client event parsing and the sans-I/O session state machine (real VAD on real audio; the
model jobs it asks for are answered by the test, since the session never runs them itself)."""

from __future__ import annotations

import base64
import json
from dataclasses import replace

import numpy as np
import pytest

from clients.python.client import load_wav_pcm24
from server.client_events import parse_client_event
from server.config import SessionConfig, TurnDetection
from server.conversation import Item
from server.effects import CancelResponse, DeferTranscription, PrefillPrompt, ResponseProgress, StartResponse
from server.session import RealtimeSession
from server.wire import ProtocolError
from tests.helpers import DATA
from voice.llm.base import ChatMessage
from voice.response_events import ResponseFinished, SpeechSegment, StageMark
from voice.turn_taking import END_POLICIES, EVALUATE_EVERY_MS, EndScored, ScoreEnd, Transcribe, TranscriptReady


def append(pcm: bytes) -> str:
    return json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()})


class Driver:
    """Feeds a session and keeps everything it said."""

    def __init__(self, session: RealtimeSession) -> None:
        self.session = session
        self.events: list[dict] = []
        self.effects: list = []
        self.now = 100.0
        self._take(session.start())

    def _take(self, out):
        self.events += out.events
        self.effects += out.effects
        return out

    def send(self, event: dict | str | bytes):
        raw = event if isinstance(event, str | bytes) else json.dumps(event)
        return self._take(self.session.receive_client(raw, self.now))

    def stream(self, pcm: bytes, frame_ms: int = 20):
        step = 48 * frame_ms
        for i in range(0, len(pcm), step):
            self.now += frame_ms / 1000
            self._take(self.session.receive_client(append(pcm[i:i + step]), self.now))

    def transcript(self, item_id: str, text: str, final: bool = True):
        return self._take(self.session.receive_transcript(TranscriptReady(item_id, text, final), self.now))

    def answer(self, job: Transcribe, text: str):
        """Answer a transcription job as the runtime would."""
        result = TranscriptReady(job.item_id, text, job.final, speculative=job.speculative,
                                 voiced_end_ms=job.voiced_end_ms, early=job.early, check=job.check)
        return self._take(self.session.receive_transcript(result, self.now))

    def turn_job(self) -> Transcribe:
        """The job whose answer completes the last turn: its final pass, or the speculative one
        that heard exactly the turn."""
        jobs = [e for e in self.effects if isinstance(e, Transcribe) and (e.final or e.speculative)]
        return jobs[-1]

    def progress(self, response_id: str, event):
        return self._take(self.session.receive_response(ResponseProgress(response_id, event), self.now))

    def types(self) -> list[str]:
        return [e["type"] for e in self.events]

    def of(self, kind: str) -> list[dict]:
        return [e for e in self.events if e["type"] == kind]


@pytest.fixture
def driver(silero) -> Driver:
    """A session with server_vad and a 500 ms silence window."""
    return Driver(RealtimeSession(SessionConfig(turn_detection=TurnDetection()), silero))


LAMP = load_wav_pcm24(DATA / "03_v2j_turn_on_living_room_lamp.wav")
SILENCE = bytes(48_000)  # one second at 24 kHz


# ---------------------------------------------------------------- parsing
@pytest.mark.parametrize(("raw", "code"), [
    ("{not json", "invalid_json"),
    ("[1, 2]", "invalid_event"),
    ('{"event_id": "e1"}', "missing_type"),
    ('{"type": "bogus.event", "event_id": "e2"}', "unknown_event_type"),
    (b"\x00\x01", "invalid_event"),
])
def test_malformed_messages_are_refused_clearly(raw, code):
    with pytest.raises(ProtocolError) as caught:
        parse_client_event(raw)
    assert caught.value.code == code


def test_every_bad_input_gets_an_error_event_and_the_session_goes_on(driver):
    bad = [
        "{not json",
        b"binary",
        {"type": "nope", "event_id": "evt_1"},
        {"type": "input_audio_buffer.append", "event_id": "evt_2", "audio": "%%%"},
        {"type": "input_audio_buffer.append", "event_id": "evt_3", "audio": base64.b64encode(b"abc").decode()},
        {"type": "input_audio_buffer.append", "event_id": "evt_4", "audio": 5},
        {"type": "session.update", "event_id": "evt_5", "session": {"audio": {"input": {"format": {"rate": 8000}}}}},
        {"type": "session.update", "event_id": "evt_6", "session": {"audio": {"input": {"turn_detection":
                                                                                            {"threshold": 7}}}}},
        {"type": "conversation.item.truncate", "event_id": "evt_7", "item_id": "missing", "audio_end_ms": 5},
        {"type": "response.cancel", "event_id": "evt_8"},
        {"type": "input_audio_buffer.commit", "event_id": "evt_9"},
        {"type": "conversation.item.create", "event_id": "evt_10", "item": {"type": "message", "role": "robot",
                                                                            "content": []}},
    ]
    for event in bad:
        before = len(driver.events)
        driver.send(event)
        new = driver.events[before:]
        assert [e["type"] for e in new] == ["error"], event
        error = new[0]["error"]
        assert error["message"] and error["code"] and error["type"]
        if isinstance(event, dict) and "event_id" in event:
            assert error["event_id"] == event["event_id"]
    # ... and a valid exchange still works.
    driver.send({"type": "conversation.item.create", "item": {"type": "message", "role": "user",
                                                               "content": [{"type": "input_text", "text": "Hi"}]}})
    driver.send({"type": "response.create"})
    assert any(isinstance(e, StartResponse) for e in driver.effects)


def test_session_update_is_applied_and_echoed(driver):
    driver.send({"type": "session.update", "session": {
        "type": "realtime", "instructions": "Be brief.",
        "audio": {"input": {"turn_detection": {"type": "server_vad", "silence_duration_ms": 300,
                                               "prefix_padding_ms": 100, "threshold": 0.6},
                            "transcription": None},
                  "output": {"voice": "marin"}}}})
    session = driver.of("session.updated")[-1]["session"]
    assert session["instructions"] == "Be brief."
    assert session["audio"]["input"]["turn_detection"]["silence_duration_ms"] == 300
    assert session["audio"]["input"]["transcription"] is None
    assert session["audio"]["output"]["voice"] == "marin"
    assert driver.session.config.turn_detection.vad.threshold == 0.6


# ---------------------------------------------------------------- a spoken turn
def run_turn(driver: Driver, text: str = "Turn on the living room lamp."):
    driver.stream(LAMP + SILENCE)
    job = driver.turn_job()
    driver.answer(job, text)
    return job


def test_a_spoken_turn_goes_through_every_stage(driver):
    driver.stream(LAMP[:48_000])
    assert "input_audio_buffer.speech_started" in driver.types()
    partials = [e for e in driver.effects if isinstance(e, Transcribe) and not e.final]
    assert partials, "partial transcriptions are requested while the user speaks"
    driver.transcript(partials[0].item_id, "turn on", final=False)
    driver.stream(LAMP[48_000:] + SILENCE)
    final = driver.turn_job()
    assert 1.0 < final.audio.size / 16_000 < 2.4  # the utterance, not the trailing silence
    driver.answer(final, "Turn on the living room lamp.")
    types = driver.types()
    order = ["input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
             "input_audio_buffer.committed", "conversation.item.added",
             "conversation.item.input_audio_transcription.completed", "response.created",
             "response.output_item.added", "conversation.item.added", "response.content_part.added"]
    assert [t for t in types if t in order] == order
    start = [e for e in driver.effects if isinstance(e, StartResponse)][0]
    assert start.messages[0].role == "system"
    assert start.messages[-1].content == "Turn on the living room lamp."

    driver.progress(start.response_id, StageMark("llm_first_token", driver.now + 0.1))
    driver.progress(start.response_id, SpeechSegment("Okay.", bytes(24_000)))  # 500 ms
    driver.progress(start.response_id, SpeechSegment("The lamp is on.", bytes(48_000)))
    driver.progress(start.response_id, ResponseFinished())
    assert len(driver.of("response.output_audio.delta")) == 3 + 5  # 200 ms deltas: 0.5 s -> 3, 1 s -> 5
    done = driver.of("response.done")[-1]["response"]
    assert done["status"] == "completed"
    assert done["output"][0]["content"][0]["transcript"] == "Okay. The lamp is on."
    metadata = done["metadata"]
    assert metadata["timing_origin"] == "speech_end"
    assert float(metadata["end_of_turn_ms"]) >= 500 - 64  # the silence window, within two VAD frames
    assert {"transcript_ms", "llm_first_token_ms", "first_audio_sent_ms", "speech_end_audio_ms"} <= set(metadata)


def test_the_words_heard_so_far_prefill_the_reply_prompt_while_the_user_speaks(driver):
    driver.stream(LAMP[:40_000])
    partial = next(e for e in driver.effects if isinstance(e, Transcribe) and not e.final and not e.speculative)
    driver.transcript(partial.item_id, "Turn on the", final=False)
    assert not [e for e in driver.effects if isinstance(e, PrefillPrompt)]  # nothing agreed on yet
    driver.transcript(partial.item_id, "Turn on the living,", final=False)
    prefill = [e for e in driver.effects if isinstance(e, PrefillPrompt)]
    assert len(prefill) == 1
    assert prefill[0].messages[0].role == "system"
    assert prefill[0].messages[-1] == ChatMessage("user", "Turn on the")  # the committed words only
    driver.transcript(partial.item_id, "Turn on the living,", final=False)
    prefill = [e for e in driver.effects if isinstance(e, PrefillPrompt)]
    assert prefill[-1].messages[-1] == ChatMessage("user", "Turn on the living")  # without its comma
    driver.transcript(partial.item_id, "Turn on the living,", final=False)
    assert len([e for e in driver.effects if isinstance(e, PrefillPrompt)]) == 2  # no new words: no prefill


def test_barge_in_cancels_the_reply_and_truncation_keeps_what_was_played(driver):
    run_turn(driver)
    start = [e for e in driver.effects if isinstance(e, StartResponse)][0]
    driver.progress(start.response_id, SpeechSegment("One two three four.", bytes(48_000)))  # 1 s
    driver.progress(start.response_id, SpeechSegment("Five six seven eight.", bytes(48_000)))
    item_id = driver.of("response.output_item.added")[0]["item"]["id"]
    driver.stream(LAMP[:24_000])  # the user talks over the reply
    check = [e for e in driver.effects if isinstance(e, Transcribe) and e.check][-1]  # interruption or backchannel?
    driver.answer(check, "Turn on")
    assert CancelResponse(start.response_id) not in driver.effects  # one pass could have misheard a "mm-hmm"
    driver.stream(LAMP[24_000:48_000])
    check = [e for e in driver.effects if isinstance(e, Transcribe) and e.check][-1]
    driver.answer(check, "Turn on the living")  # the next pass agrees
    assert CancelResponse(start.response_id) in driver.effects
    done = driver.of("response.done")[-1]["response"]
    assert done["status"] == "cancelled" and done["status_details"]["reason"] == "turn_detected"
    deltas = len(driver.of("response.output_audio.delta"))
    driver.progress(start.response_id, SpeechSegment("Nine ten.", bytes(48_000)))  # late: dropped
    assert len(driver.of("response.output_audio.delta")) == deltas
    driver.send({"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0, "audio_end_ms": 1500})
    assert driver.of("conversation.item.truncated")[-1]["audio_end_ms"] == 1500
    assert driver.session.conversation.get(item_id).text == "One two three four. Five six"


def answer_every_pass(driver: Driver, text: str) -> None:
    """Answer every transcription the session asked for and nobody answered yet with `text`."""
    for job in [e for e in driver.effects if isinstance(e, Transcribe)]:
        if id(job) not in driver.answered:
            driver.answered.add(id(job))
            driver.answer(job, text)


@pytest.mark.parametrize("heard", ["Mm-hmm.", "Yeah, okay.", ""])
def test_a_backchannel_or_a_noise_over_the_reply_does_not_cancel_it(driver, heard):
    run_turn(driver)
    start = [e for e in driver.effects if isinstance(e, StartResponse)][0]
    driver.progress(start.response_id, SpeechSegment("One two three four.", bytes(48_000)))
    driver.answered = {id(e) for e in driver.effects}
    for at in range(0, len(LAMP), 9_600):  # the user's sound over the reply, its passes answered as they come
        driver.stream(LAMP[at:at + 9_600])
        answer_every_pass(driver, heard)
    driver.stream(SILENCE)
    answer_every_pass(driver, heard)
    assert CancelResponse(start.response_id) not in driver.effects
    assert not driver.of("output_audio_buffer.cleared")
    assert driver.of("input_audio_buffer.committed")  # heard, and in the conversation
    assert len([e for e in driver.effects if isinstance(e, StartResponse)]) == 1  # not answered


def test_two_passes_that_disagree_do_not_cancel_the_reply_but_long_speech_does(driver):
    run_turn(driver)
    start = [e for e in driver.effects if isinstance(e, StartResponse)][0]
    driver.progress(start.response_id, SpeechSegment("One two three four.", bytes(48_000)))
    driver.answered = {id(e) for e in driver.effects}
    guesses = iter(["And I'm like", "In a month.", "No mom.", "A bit."])
    reading = load_wav_pcm24(DATA / "18_rstt_LJ001-0004.wav")  # 5 s of reading without a pause
    for at in range(0, len(reading), 4_800):  # each pass heard something else
        driver.stream(reading[at:at + 4_800])
        for job in [e for e in driver.effects if isinstance(e, Transcribe) and id(e) not in driver.answered]:
            driver.answered.add(id(job))
            driver.answer(job, next(guesses, "Mm."))
        if CancelResponse(start.response_id) in driver.effects:
            break
    assert CancelResponse(start.response_id) in driver.effects  # after CONFIRM_SPEECH_MS, whatever the words
    assert driver.of("output_audio_buffer.cleared")[0]["response_id"] == start.response_id


def test_truncate_keeps_whole_and_partly_played_segments():
    item = Item("i", "assistant", "output_audio", text="A b. C d e f.", audio_ms=3000,
                segments=[("A b.", 1000), ("C d e f.", 2000)])
    item.truncate(2000)
    assert item.text == "A b. C d"
    item.truncate(0)
    assert item.text == ""


def test_manual_turns_without_server_vad(driver):
    driver.send({"type": "session.update", "session": {"audio": {"input": {"turn_detection": None}}}})
    driver.stream(LAMP)
    assert "input_audio_buffer.speech_started" not in driver.types()
    driver.send({"type": "input_audio_buffer.commit"})
    final = [e for e in driver.effects if isinstance(e, Transcribe)][-1]
    assert final.final and final.audio.size > 30_000
    driver.send({"type": "response.create"})  # waits for the transcript
    assert not any(isinstance(e, StartResponse) for e in driver.effects)
    driver.transcript(final.item_id, "Turn on the living room lamp.")
    assert any(isinstance(e, StartResponse) for e in driver.effects)


def test_clear_drops_the_buffer(driver):
    driver.send({"type": "session.update", "session": {"audio": {"input": {"turn_detection": None}}}})
    driver.stream(LAMP)
    driver.send({"type": "input_audio_buffer.clear"})
    assert driver.types()[-1] == "input_audio_buffer.cleared"
    driver.send({"type": "input_audio_buffer.commit", "event_id": "c1"})
    assert driver.events[-1]["error"]["code"] == "input_audio_buffer_commit_empty"


def test_empty_transcript_starts_no_response(driver):
    run_turn(driver, text="")
    assert not any(isinstance(e, StartResponse) for e in driver.effects)


def test_text_only_responses(driver):
    driver.send({"type": "conversation.item.create", "item": {"type": "message", "role": "user",
                                                               "content": [{"type": "input_text", "text": "Hi"}]}})
    driver.send({"type": "response.create", "response": {"output_modalities": ["text"]}})
    start = [e for e in driver.effects if isinstance(e, StartResponse)][0]
    assert start.audio is False
    from voice.response_events import TextDelta

    driver.progress(start.response_id, TextDelta("Hello"))
    driver.progress(start.response_id, ResponseFinished())
    assert driver.of("response.output_text.done")[0]["text"] == "Hello"


def test_a_failed_job_reports_an_error_and_the_next_turn_works(driver):
    driver.send({"type": "conversation.item.create", "item": {"type": "message", "role": "user",
                                                               "content": [{"type": "input_text", "text": "Hi"}]}})
    driver.send({"type": "response.create"})
    start = [e for e in driver.effects if isinstance(e, StartResponse)][-1]
    driver.progress(start.response_id, ResponseFinished(error="llm: connection refused"))
    assert driver.of("error")[-1]["error"]["code"] == "llm_error"
    assert driver.of("response.done")[-1]["response"]["status"] == "failed"
    driver.send({"type": "response.create"})
    assert len([e for e in driver.effects if isinstance(e, StartResponse)]) == 2


def test_silence_and_noise_produce_no_turn(driver):
    noise = load_wav_pcm24(DATA / "23_leopard_empty_synthetic_nospeech.wav")
    driver.stream(noise + SILENCE)
    assert driver.types() == ["session.created"]
    assert driver.effects == []


def test_buffer_is_bounded_while_idle(driver):
    driver.stream(SILENCE * 10)
    assert driver.session.turns.window.samples.size <= 2 * 16_000 + 512
    assert np.all(driver.session.turns.window.samples == 0)


def test_timings_belong_to_their_own_turn_when_turns_overlap(driver):
    """A second utterance that starts before the first one's transcript is back must not
    move the first turn's clock, nor mix its partial words into the first item."""
    driver.stream(LAMP + SILENCE)
    first = driver.turn_job()
    for job in [e for e in driver.effects if isinstance(e, Transcribe) and not e.final and not e.speculative]:
        driver.transcript(job.item_id, "turn on", final=False)  # the partial job comes back late
    driver.stream(LAMP[:36_000])  # speaking again
    second_item = driver.of("input_audio_buffer.speech_started")[-1]["item_id"]
    partial = [e for e in driver.effects if isinstance(e, Transcribe) and not e.final and not e.speculative
               and e.item_id == second_item][0]
    driver.transcript(partial.item_id, "turn on the", final=False)
    driver.transcript(partial.item_id, "turn on the living", final=False)
    driver.answer(first, "Turn on the living room lamp.")
    deltas = [e for e in driver.of("conversation.item.input_audio_transcription.delta")
              if e["item_id"] == first.item_id]
    assert "".join(d["delta"] for d in deltas) == "Turn on the living room lamp."
    # The user is talking again, so no reply starts over them now.
    assert not any(isinstance(e, StartResponse) for e in driver.effects)
    driver.stream(LAMP[36_000:] + SILENCE)
    driver.answer(driver.turn_job(), "Turn on the living room lamp.")
    start = [e for e in driver.effects if isinstance(e, StartResponse)][0]
    assert [m.role for m in start.messages] == ["system", "user"]  # both utterances, merged
    driver.progress(start.response_id, SpeechSegment("Okay.", bytes(24_000)))
    driver.progress(start.response_id, ResponseFinished())
    metadata = driver.of("response.done")[-1]["response"]["metadata"]
    assert 500 - 64 <= float(metadata["end_of_turn_ms"]) <= 500 + 64


def test_speculative_transcript_becomes_the_final_one_when_the_turn_ends_there(driver):
    driver.stream(LAMP)  # the clip ends with about 0.9 s of silence: the turn is speculated on
    speculative = [e for e in driver.effects if isinstance(e, Transcribe) and e.speculative]
    assert speculative
    driver.answer(speculative[-1], "Turn on the living room lamp.")  # back before the window closes
    driver.stream(SILENCE)
    assert not any(isinstance(e, Transcribe) and e.final for e in driver.effects)  # no second pass
    completed = driver.of("conversation.item.input_audio_transcription.completed")
    assert completed[0]["transcript"] == "Turn on the living room lamp."
    assert any(isinstance(e, StartResponse) for e in driver.effects)


def test_an_early_speculation_declined_by_busy_models_is_asked_again_a_frame_later(driver):
    """After one silent frame the pass is asked for as `early` (run only if the models are idle);
    declined, it is asked for once more, as a regular pass, after the second silent frame."""
    pcm = LAMP + SILENCE
    for i in range(0, len(pcm), 960):
        driver.stream(pcm[i:i + 960])
        if [e for e in driver.effects if isinstance(e, Transcribe) and e.speculative]:
            break
    early = [e for e in driver.effects if isinstance(e, Transcribe) and e.speculative][-1]
    assert early.early
    silence = driver.session.turns.position_ms - early.voiced_end_ms
    assert 32 <= silence < 64
    driver.session.receive_transcript(TranscriptReady(early.item_id, "", final=False, error="skipped: models busy",
                                                      speculative=True, voiced_end_ms=early.voiced_end_ms, early=True),
                                      driver.now)
    driver.stream(pcm[i + 960:i + 960 + 960 * 3])
    again = [e for e in driver.effects if isinstance(e, Transcribe) and e.speculative and e is not early]
    assert len(again) == 1 and not again[0].early and again[0].voiced_end_ms == early.voiced_end_ms
    driver.answer(again[0], "Turn on the living room lamp.")
    driver.stream(SILENCE)
    completed = driver.of("conversation.item.input_audio_transcription.completed")
    assert [e["transcript"] for e in completed] == ["Turn on the living room lamp."]


def test_a_stale_speculation_is_not_used(driver):
    driver.stream(LAMP[:36_000] + bytes(16_800))  # a 350 ms pause, then the user goes on
    stale = [e for e in driver.effects if isinstance(e, Transcribe) and e.speculative]
    assert stale
    driver.stream(LAMP[36_000:] + SILENCE)
    driver.answer(stale[0], "Turn on")  # arrives late, for audio that is no longer the whole turn
    job = driver.turn_job()
    assert job is not stale[0]
    driver.answer(job, "Turn on the living room lamp.")
    completed = driver.of("conversation.item.input_audio_transcription.completed")
    assert [e["transcript"] for e in completed] == ["Turn on the living room lamp."]


def end_of_turn_silence(silero, text: str, score: EndScored | None, recheck: EndScored | None = None) -> int:
    """Stream the lamp command, answer its speculative transcription with `text` and its end-of-turn
    scoring with `score` (None: the scoring failed) and, if asked again later in the pause, with
    `recheck`; return how much silence passed before the turn ended (semantic_vad, default eagerness)."""
    driver = Driver(RealtimeSession(SessionConfig(), silero))
    assert driver.session.config.turn_detection.type == "semantic_vad"
    pcm = LAMP + SILENCE * 3
    answered = scored = False
    for i in range(0, len(pcm), 960):
        driver.stream(pcm[i:i + 960])
        speculative = [e for e in driver.effects if isinstance(e, Transcribe) and e.speculative]
        if speculative and not answered:
            driver.answer(speculative[-1], text)
            answered = True
        asked = [e for e in driver.effects if isinstance(e, ScoreEnd)]
        if asked and not scored:
            assert asked[-1].transcript == text
            result = replace(score, item_id=asked[-1].item_id, voiced_end_ms=asked[-1].voiced_end_ms) if score \
                else EndScored(asked[-1].item_id, asked[-1].voiced_end_ms, error="no model")
            driver.session.receive_end_score(result, driver.now)
            scored = True
        again = [e for e in asked if e.recheck]
        if again and recheck is not None:
            assert again[-1].audio.size > asked[0].audio.size  # the pause so far is heard too
            driver.session.receive_end_score(replace(recheck, item_id=again[-1].item_id,
                                                     voiced_end_ms=again[-1].voiced_end_ms, recheck=True), driver.now)
            recheck = None
        stopped = driver.of("input_audio_buffer.speech_stopped")
        if stopped:
            return driver.session.turns.position_ms - stopped[0]["audio_end_ms"]
    raise AssertionError("the turn never ended")


def test_semantic_vad_ends_a_turn_after_the_window_its_words_and_voice_give(silero):
    policy = END_POLICIES["auto"]
    finished = end_of_turn_silence(silero, "Turn on the living room lamp.", EndScored("", 0, 0.9, 0.8))
    assert policy.finished_ms <= finished < policy.finished_ms + 100
    words_go_on = end_of_turn_silence(silero, "Turn on the living room lamp and", EndScored("", 0, 0.1, 0.8))
    assert policy.hold_ms <= words_go_on < policy.hold_ms + 100
    voice_goes_on = end_of_turn_silence(silero, "Turn on the living room lamp.", EndScored("", 0, 0.9, 0.02))
    assert policy.hold_ms <= voice_goes_on < policy.hold_ms + 100  # the voice only ever holds the turn
    words_alone = end_of_turn_silence(silero, "Turn on the living room lamp.", None)  # no scorer: the rule
    assert policy.finished_ms <= words_alone < policy.finished_ms + 100


def test_a_pause_the_words_leave_open_ends_when_the_voice_asked_again_says_finished(silero):
    policy = END_POLICIES["auto"]
    assert policy.recheck_ms is not None
    unsure = EndScored("", 0, 0.6, 0.9)
    voice_finished = end_of_turn_silence(silero, "Turn on the living room lamp.", unsure, EndScored("", 0, 0.6, 0.99))
    assert policy.recheck_ms <= voice_finished < policy.recheck_ms + 100
    voice_unsure = end_of_turn_silence(silero, "Turn on the living room lamp.", unsure, EndScored("", 0, 0.6, 0.7))
    assert policy.hold_ms <= voice_unsure < policy.hold_ms + 100
    words_go_on = end_of_turn_silence(silero, "Turn on the living room lamp and", EndScored("", 0, 0.1, 0.9),
                                      EndScored("", 0, 0.1, 0.99))  # never asked again: the words say it goes on
    assert policy.hold_ms <= words_go_on < policy.hold_ms + 100


def test_reads_as_finished():
    from voice.text import reads_as_finished

    assert reads_as_finished("Turn on the lamp.")
    assert reads_as_finished("What time is it?")
    assert not reads_as_finished("Turn on the")
    assert not reads_as_finished("I want to go to the...")
    assert not reads_as_finished("Call my mother and.")


def test_a_reply_prepared_in_the_silence_window_is_sent_when_the_turn_ends(driver):
    driver.stream(LAMP[:84_000])  # speech ends at 1.47 s: 0.28 s of silence, the speculation runs
    speculative = [e for e in driver.effects if isinstance(e, Transcribe) and e.speculative][-1]
    driver.answer(speculative, "Turn on the living room lamp.")
    held = [e for e in driver.effects if isinstance(e, StartResponse)][-1]
    assert held.messages[-1].content == "Turn on the living room lamp."
    driver.progress(held.response_id, StageMark("llm_first_token", driver.now))
    driver.progress(held.response_id, SpeechSegment("Okay.", bytes(24_000)))
    assert "response.created" not in driver.types()  # nothing reaches the client before the turn ends
    driver.stream(SILENCE)
    assert len([e for e in driver.effects if isinstance(e, StartResponse)]) == 1  # adopted, not restarted
    created = driver.of("response.created")[0]["response"]
    assert created["id"] == held.response_id
    assert len(driver.of("response.output_audio.delta")) == 3  # the held audio, at once
    driver.progress(held.response_id, ResponseFinished())
    done = driver.of("response.done")[-1]["response"]
    assert done["status"] == "completed" and done["metadata"]["speculative"] == "true"


def test_a_reply_prepared_for_a_pause_is_dropped_when_the_user_goes_on(driver):
    driver.stream(LAMP[:36_000] + bytes(16_800))  # a pause...
    speculative = [e for e in driver.effects if isinstance(e, Transcribe) and e.speculative][-1]
    driver.answer(speculative, "Turn on.")
    held = [e for e in driver.effects if isinstance(e, StartResponse)][-1]
    driver.progress(held.response_id, SpeechSegment("Okay.", bytes(24_000)))
    driver.stream(LAMP[36_000:])  # ...and the user goes on
    assert CancelResponse(held.response_id) in driver.effects
    assert "response.created" not in driver.types()


def test_native_reply_starts_in_the_silence_window_and_is_adopted_when_the_turn_ends(silero):
    driver = Driver(RealtimeSession(SessionConfig(turn_detection=TurnDetection(), pipeline="native"), silero))
    for i in range(0, len(LAMP), 960):  # it ends with silence: once the user pauses, the native reply starts
        driver.stream(LAMP[i:i + 960])
        if any(isinstance(e, StartResponse) for e in driver.effects):
            break
    [held] = [e for e in driver.effects if isinstance(e, StartResponse)]
    assert held.user_audio is not None and len(held.user_audio) > 16_000
    assert not driver.of("response.created")  # the client hears nothing of it yet
    driver.progress(held.response_id, SpeechSegment("Okay.", bytes(24_000)))
    driver.stream(SILENCE)
    [created] = driver.of("response.created")
    assert created["response"]["id"] == held.response_id
    assert len([e for e in driver.effects if isinstance(e, StartResponse)]) == 1  # adopted, not restarted
    assert driver.of("response.output_audio.delta")  # what it made meanwhile is sent at once
    driver.progress(held.response_id, ResponseFinished())
    metadata = driver.of("response.done")[-1]["response"]["metadata"]
    assert metadata["pipeline"] == "native" and metadata["speculative"] == "true"


def test_native_reply_starts_after_one_silent_frame_and_outlives_a_declined_early_pass(silero):
    driver = Driver(RealtimeSession(SessionConfig(turn_detection=TurnDetection(), pipeline="native"), silero))
    for i in range(0, len(LAMP), 960):
        driver.stream(LAMP[i:i + 960])
        if any(isinstance(e, StartResponse) for e in driver.effects):
            break
    [early] = [e for e in driver.effects if isinstance(e, Transcribe) and e.speculative]
    assert early.early  # the first silent frame: the ASR pass is asked for first, then the reply
    assert isinstance(driver.effects[-1], StartResponse)
    [held] = [e for e in driver.effects if isinstance(e, StartResponse)]
    driver._take(driver.session.receive_transcript(
        TranscriptReady(early.item_id, "", False, error="skipped: models busy", speculative=True,
                        voiced_end_ms=early.voiced_end_ms, early=True), driver.now))
    driver.stream(SILENCE[:1920])  # one more silent frame: the pass is asked for again, not the reply
    passes = [e for e in driver.effects if isinstance(e, Transcribe) and e.speculative]
    assert len(passes) == 2 and not passes[1].early
    assert [e for e in driver.effects if isinstance(e, StartResponse)] == [held]
    assert not any(isinstance(e, CancelResponse) for e in driver.effects)
    driver.stream(SILENCE)
    assert [e["response"]["id"] for e in driver.of("response.created")] == [held.response_id]


def test_a_native_reply_started_too_early_is_cancelled_when_the_user_goes_on(silero):
    driver = Driver(RealtimeSession(SessionConfig(turn_detection=TurnDetection(), pipeline="native"), silero))
    driver.stream(LAMP[:36_000] + bytes(16_800))  # a 350 ms pause, then the user goes on
    [early] = [e for e in driver.effects if isinstance(e, StartResponse)]
    driver.stream(LAMP[36_000:] + SILENCE)
    assert any(isinstance(e, CancelResponse) and e.response_id == early.response_id for e in driver.effects)
    starts = [e for e in driver.effects if isinstance(e, StartResponse)]
    assert starts[-1].response_id != early.response_id
    assert len(starts[-1].user_audio) > len(early.user_audio)  # the reply hears the whole turn
    assert [e["response"]["id"] for e in driver.of("response.created")] == [starts[-1].response_id]


def test_native_history_is_evaluated_ahead_while_the_user_speaks(silero):
    driver = Driver(RealtimeSession(SessionConfig(turn_detection=TurnDetection(), pipeline="native"), silero))
    driver.stream(LAMP + SILENCE)
    [first] = [e for e in driver.effects if isinstance(e, PrefillPrompt) and e.audio is None]  # at the speech start
    assert first.pipeline == "native" and [m.role for m in first.messages] == ["system"]
    [start] = [e for e in driver.effects if isinstance(e, StartResponse)]
    # The speech itself, every EVALUATE_EVERY_MS while the user speaks: each time the turn so far.
    speech = [e.audio for e in driver.effects if isinstance(e, PrefillPrompt) and e.audio is not None]
    sizes = [0, *(e.size for e in speech)]
    assert len(speech) >= 4 and all(b - a >= EVALUATE_EVERY_MS * 16 for a, b in zip(sizes, sizes[1:], strict=False))
    assert all(np.array_equal(start.user_audio[: e.size], e) for e in speech)  # what the reply goes on from
    driver.answer(driver.turn_job(), "Turn on the living room lamp.")
    driver.progress(start.response_id, SpeechSegment("Done.", bytes(24_000)))
    driver.progress(start.response_id, ResponseFinished())
    driver.stream(LAMP[:24_000])  # the next turn begins
    prefills = [e for e in driver.effects if isinstance(e, PrefillPrompt) and e.audio is None]
    assert [(m.role, m.content) for m in prefills[-1].messages[1:]] == [
        ("user", "Turn on the living room lamp."), ("assistant", "Done.")]
    assert all(e.pipeline == "native" for e in prefills)


@pytest.mark.parametrize("pipeline", ["cascade", "native"])
def test_push_to_talk_evaluates_the_history_when_the_user_starts_talking(silero, pipeline):
    driver = Driver(RealtimeSession(SessionConfig(turn_detection=None, pipeline=pipeline), silero))
    driver.stream(LAMP)
    [first] = [e for e in driver.effects if isinstance(e, PrefillPrompt) and e.audio is None]  # at the first audio
    assert first.pipeline == pipeline and [m.role for m in first.messages] == ["system"]
    speech = [e.audio for e in driver.effects if isinstance(e, PrefillPrompt) and e.audio is not None]
    driver.send({"type": "input_audio_buffer.commit"})
    [job] = [e for e in driver.effects if isinstance(e, Transcribe) and e.final]
    driver.answer(job, "Turn on the living room lamp.")
    driver.send({"type": "response.create"})
    [start] = [e for e in driver.effects if isinstance(e, StartResponse)]
    if pipeline == "cascade":
        assert not speech
    else:  # the speech so far, every EVALUATE_EVERY_MS (at 16 kHz)
        sizes = [0, *(e.size for e in speech)]
        assert all(b - a >= EVALUATE_EVERY_MS * 16 for a, b in zip(sizes, sizes[1:], strict=False))
        assert start.user_audio.size - sizes[-1] < 2 * EVALUATE_EVERY_MS * 16
        assert all(np.array_equal(start.user_audio[: e.size], e) for e in speech)
    driver.progress(start.response_id, SpeechSegment("Done.", bytes(24_000)))
    driver.progress(start.response_id, ResponseFinished())
    driver.stream(LAMP[:9600])  # the button is pressed again
    prefills = [e for e in driver.effects if isinstance(e, PrefillPrompt) and e.audio is None]
    assert len(prefills) == 2
    assert [(m.role, m.content) for m in prefills[1].messages[1:]] == [
        ("user", "Turn on the living room lamp."), ("assistant", "Done.")]


@pytest.mark.parametrize("pipeline", ["cascade", "native"])
def test_native_push_to_talk_transcribes_the_turn_once_its_reply_is_heard(silero, pipeline):
    driver = Driver(RealtimeSession(SessionConfig(turn_detection=None, pipeline=pipeline), silero))
    driver.stream(LAMP)
    driver.send({"type": "input_audio_buffer.commit"})
    [job] = [e for e in driver.effects if isinstance(e, Transcribe) and e.final]
    if pipeline == "cascade":  # the reply waits for this transcript: it runs at once
        assert job.defer_ms is None
        return
    assert job.defer_ms and job.defer_ms > 0  # held, in case a reply is asked for
    driver.send({"type": "response.create"})
    [start] = [e for e in driver.effects if isinstance(e, StartResponse)]
    assert [e for e in driver.effects if isinstance(e, DeferTranscription)] == [DeferTranscription(job.item_id, False)]
    driver.progress(start.response_id, SpeechSegment("Done.", bytes(24_000)))  # the reply is heard
    assert [e for e in driver.effects if isinstance(e, DeferTranscription)][-1] == DeferTranscription(job.item_id, True)
    driver.progress(start.response_id, ResponseFinished())
    assert len([e for e in driver.effects if isinstance(e, DeferTranscription)]) == 2  # released once
    driver.answer(job, "Turn on the living room lamp.")
    assert driver.of("conversation.item.input_audio_transcription.completed")[-1]["transcript"] == \
        "Turn on the living room lamp."

    # A reply cancelled before any audio releases it too.
    driver.stream(LAMP)
    driver.send({"type": "input_audio_buffer.commit"})
    job = [e for e in driver.effects if isinstance(e, Transcribe) and e.final][-1]
    driver.send({"type": "response.create"})
    driver.send({"type": "response.cancel"})
    assert [e for e in driver.effects if isinstance(e, DeferTranscription)][-1] == DeferTranscription(job.item_id, True)
