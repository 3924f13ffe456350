"""A smoke run of the brain benchmark (benchmarks/brain.py) against a real server with the bundled
models: it asks, transcribes and scores as it says, and its counts add up. No accuracy threshold:
the bundled LLM's answers are what they are."""

from __future__ import annotations

import dataclasses
import json

import pytest

from benchmarks.brain import (
    Answer,
    build_parser,
    load_profiles,
    load_requests,
    markdown,
    rescore,
    run_brain,
    score,
    summarise,
)
from benchmarks.brain_score import is_correct, score_call

pytestmark = pytest.mark.slow

IDS = ("fact-capital-france", "arithmetic-17x23", "kiosk-pharmacy", "tool-living-room-on")


@pytest.fixture(scope="module")
def chosen():
    requests = {r.id: r for r in load_requests()}
    return [requests[i] for i in IDS]


@pytest.fixture(scope="module")
async def answers(voice_server, chosen):
    url = f"ws://127.0.0.1:{voice_server}/v1/realtime"
    spoken = [chosen[0], chosen[3]]
    return await run_brain(url, chosen, spoken, load_profiles(), ("piper", "flite"),
                           ("typed_text", "typed_audio", "spoken"), progress=False)


async def test_every_request_is_asked_in_every_mode_and_scored_as_the_scorer_says(answers, chosen):
    profiles = load_profiles()
    by_id = {r.id: r for r in chosen}
    assert [(a.request, a.mode) for a in answers] == [
        ("fact-capital-france", "typed_text"), ("fact-capital-france", "typed_audio"),
        ("arithmetic-17x23", "typed_text"), ("arithmetic-17x23", "typed_audio"),
        ("tool-living-room-on", "typed_text"), ("tool-living-room-on", "typed_audio"),
        ("fact-capital-france", "spoken"), ("tool-living-room-on", "spoken"),
        ("kiosk-pharmacy", "typed_text"), ("kiosk-pharmacy", "typed_audio")]  # a profile at a time
    for answer in answers:
        assert answer.failure is None, answer
        request = by_id[answer.request]
        assert answer.latency_ms is not None or request.call  # a bare function call has no audio
        if request.call:
            items = [{"type": "function_call", **c} for c in answer.calls]
            assert answer.correct == score_call(request.call, items, list(profiles[request.profile].tools)).correct
            assert answer.call_valid is not None
        else:
            assert answer.reply
            assert answer.correct == is_correct(answer.reply, list(request.accept), list(request.reject))
    spoken = [a for a in answers if a.mode == "spoken"]
    assert [a.voice for a in spoken] == ["piper", "flite"]
    assert "france" in spoken[0].heard.lower()
    assert "living room" in spoken[1].heard.lower()


def test_a_known_right_and_a_known_wrong_reply_score_as_such(chosen):
    profiles = load_profiles()
    fact, _, _, tool = chosen
    right = score(Answer(fact.id, fact.category, "typed_text", reply="It's Paris."), fact, [], profiles["assistant"])
    wrong = score(Answer(fact.id, fact.category, "typed_text", reply="It's **Lyon** 😀"), fact, [],
                  profiles["assistant"])
    assert right.correct and not right.leaks and right.words == 2
    assert not wrong.correct and wrong.leaks == ["markdown", "emoji"]
    spurious = score(Answer(fact.id, fact.category, "typed_text", reply="Paris."), fact,
                     [{"type": "function_call", "name": "get_weather", "arguments": '{"city": "Paris"}'}],
                     profiles["assistant"])
    assert spurious.spurious_call and not spurious.correct
    call = {"type": "function_call", "name": "set_light", "arguments": '{"room": "living room", "on": true}'}
    acted = score(Answer(tool.id, tool.category, "spoken"), tool, [call], profiles["assistant"])
    assert acted.correct and acted.call_valid
    talked = score(Answer(tool.id, tool.category, "spoken", reply="Turning it on."), tool, [], profiles["assistant"])
    assert not talked.correct and talked.call_valid is False


def test_the_summary_counts_add_up(answers):
    summary = summarise(answers)
    assert summary["asks"] == {"typed_text": 4, "typed_audio": 4, "spoken": 2}
    assert {m: r["of"] for m, r in summary["accuracy"].items()} == {"typed_text": 3, "typed_audio": 3, "spoken": 1}
    assert {m: r["of"] for m, r in summary["tool_calls"].items()} == {"typed_text": 1, "typed_audio": 1, "spoken": 1}
    questions = [a for a in answers if a.call_valid is None]
    assert sum(r["correct"] for r in summary["accuracy"].values()) == sum(a.correct for a in questions)
    assert sum(r["correct"] for r in summary["tool_calls"].values()) == sum(
        a.correct for a in answers if a.call_valid is not None)
    assert sum(r["of"] for r in summary["accuracy_by_category"]["fact"].values()) == 3
    assert summary["leaks"]["of"] == 4
    assert summary["first_text_ms"]["n"] == 4 and summary["first_audio_typed_ms"]["n"] >= 3
    assert summary["asr_wer"] is not None
    report = {"date": "today", "command": "python -m benchmarks.brain", "machine": {"cpu": "cpu", "cores": 2},
              "requests": {"typed": 4, "spoken": 2}, "voices": ["piper", "flite"],
              "brains": {"bundled": {"summary": summary}}}
    table = markdown(report)
    assert "| bundled |" in table and "| kiosk |" in table


def test_stored_answers_rescore_to_the_same_summary(answers):
    summary = summarise(answers)
    report = {"brains": {"bundled": {"summary": summary, "answers": [dataclasses.asdict(a) for a in answers]}}}
    again = rescore(json.loads(json.dumps(report)), load_requests(), load_profiles())
    assert again["brains"]["bundled"]["summary"] == json.loads(json.dumps(summary))


def test_the_command_line_names_every_brain_by_default():
    args = build_parser().parse_args(["--typed", "30", "--spoken", "10", "--server-args", "--threads", "2"])
    assert args.brains == ["bundled", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"]
    assert (args.typed, args.spoken, args.server_args) == (30, 10, ["--threads", "2"])
