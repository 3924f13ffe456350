"""The brain benchmark's scorer (benchmarks/brain_score.py) and its request data."""

from __future__ import annotations

import json

import jsonschema
import pytest

from benchmarks.brain import load_profiles, load_requests, spread
from benchmarks.brain_score import is_correct, leaks, normalise, score_call, word_count

LIGHT = {"type": "function", "name": "set_light", "parameters": {
    "type": "object", "properties": {"room": {"type": "string"}, "on": {"type": "boolean"}},
    "required": ["room", "on"], "additionalProperties": False}}
TIMER = {"type": "function", "name": "set_timer", "parameters": {
    "type": "object", "properties": {"minutes": {"type": "integer", "minimum": 1}}, "required": ["minutes"]}}


@pytest.mark.parametrize("reply, accept", [
    ("Seventeen times twenty-three is three hundred and ninety-one.", [{"number": 391}]),
    ("It's 391.", [{"number": 391}]),
    ("That comes to 1,024.", [{"number": 1024}]),
    ("A hundred kilometres is about sixty-two miles.", [{"number": 62.14, "tolerance": 1}]),
    ("Roughly 62.1 miles.", [{"number": 62.14, "tolerance": 1}]),
    ("Tomorrow is Wednesday, the fifteenth of October.", [["15", "october"]]),
    ("Tomorrow is Wednesday, October 15th, 2025.", [["15", "october"]]),
    ("The capital of France is PARIS!", ["paris"]),
    ("It was painted by Leonardo da Vinci.", ["leonardo", "da vinci"]),
    ("Toilets are on the first floor, next to the escalators.", ["first floor"]),
    ("The cinema is on the 2nd floor.", ["second floor"]),
    ("Only assistance dogs are allowed inside.", ["assistance"]),
    ("No, gift cards can't be refunded.", [r"re:^no\b"]),
    ("Gift cards cannot be refunded, sorry.", ["can't", "cannot"]),
    ("The network has no password.", ["no password"]),
    ("Its symbol is Au.", ["au"]),
    ("It's on the ground floor, next to the main entrance.", [r"re:^it s (on the ground floor|next to)"]),
    ("Water is H₂O.", ["h2o"]),
])
def test_accepted_answers_in_their_many_spellings(reply, accept):
    assert is_correct(reply, accept)


@pytest.mark.parametrize("reply, accept", [
    ("17 times 23 is 371.", [{"number": 391}]),
    ("It is 3910.", [{"number": 391}]),
    ("It is 39.1.", [{"number": 391}]),
    ("It's one point five.", [{"number": 5}]),
    ("In a week, there are 52 days.", [{"number": 7}]),
    ("A hundred kilometres is 160 miles.", [{"number": 62.14, "tolerance": 1}]),
    ("Tomorrow is the fifteenth of November.", [["15", "october"]]),
    ("Australia is a big country.", ["au"]),
    ("Because it is.", ["au"]),
    ("The only animal that says moo is a cheetah.", ["cow", "cattle"]),
    ("", ["paris"]),
])
def test_wrong_replies_are_refused(reply, accept):
    assert not is_correct(reply, accept)


def test_a_rejected_phrase_outweighs_an_accepted_one():
    assert not is_correct("Sydney is the capital, not Canberra.", ["canberra"], ["sydney is the capital"])
    assert is_correct("Canberra is the capital.", ["canberra"], ["sydney is the capital"])


def test_only_the_first_words_of_a_reply_count():
    ramble = "The information desk is by the fountain. " * 8 + "On Sunday we open at 10 am."
    assert not is_correct(ramble, ["10"])
    assert is_correct("On Sunday we open at 10 am. " + "The information desk is by the fountain. " * 8, ["10"])


def test_bad_accepted_answers_are_errors():
    with pytest.raises(ValueError):
        is_correct("yes", [])
    with pytest.raises(ValueError):
        is_correct("yes", [{"value": 3}])
    with pytest.raises(ValueError):
        is_correct("yes", ["?!"])


def test_normalise_keeps_decimals_and_clock_times_and_drops_the_rest():
    assert normalise("It's 10:30, and 1.5 km — OK?") == "it s 10:30 and 1.5 km ok"
    assert normalise("Twenty-three thousand four hundred.") == "23400"


@pytest.mark.parametrize("raw, found", [
    ("**Sure!** The answer is 4.", ["markdown"]),
    ("# Opening hours\nNine to eight.", ["markdown"]),
    ("Use `set_light`.", ["markdown"]),
    ("See [the map](http://example.com).", ["markdown"]),
    ("| day | hours |\n| Mon | 9-8 |", ["markdown"]),
    ("Here you go:\n- milk\n- eggs", ["list"]),
    ("Steps:\n1. Go up.\n2. Turn left.", ["list"]),
    ("Sure! 😀", ["emoji"]),
    ("Lights on ☀️", ["emoji"]),
    ("Paris is the capital. It has 2.1 million people - roughly.", []),
    ("Costs 3. Then 4.", []),
])
def test_leaks_are_found_in_raw_replies(raw, found):
    assert leaks(raw) == found


def test_words_are_counted_with_their_contractions():
    assert word_count("It’s nine, isn't it?") == 4


def call(name, arguments):
    return {"type": "function_call", "name": name, "call_id": "call_1",
            "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments)}


def test_a_tool_call_is_correct_when_its_name_schema_and_values_match():
    expected = {"name": "set_light", "arguments": {"room": "living room", "on": True}}
    score = score_call(expected, [call("set_light", {"room": "Living Room", "on": True})], [LIGHT, TIMER])
    assert (score.called, score.valid, score.correct) == (True, True, True)


@pytest.mark.parametrize("items, valid, detail", [
    ([], False, "no function_call"),
    ([{"type": "message", "content": [{"type": "audio", "transcript": "Turning it on."}]}], False, "no function_call"),
    ([call("set_timer", {"minutes": 5})], False, "called 'set_timer'"),
    ([call("set_light", "{room: kitchen}")], False, "arguments:"),
    ([call("set_light", {"room": "living room", "on": "yes"})], False, "arguments:"),
    ([call("set_light", {"room": "living room"})], False, "arguments:"),
    ([call("set_light", {"room": "living room", "on": True, "colour": "red"})], False, "arguments:"),
    ([call("set_light", {"room": "kitchen", "on": True})], True, "wrong room"),
    ([call("set_light", {"room": "living room", "on": False})], True, "wrong on"),
])
def test_tool_calls_that_are_not_what_was_asked(items, valid, detail):
    expected = {"name": "set_light", "arguments": {"room": "living room", "on": True}}
    score = score_call(expected, items, [LIGHT, TIMER])
    assert not score.correct
    assert score.valid == valid
    assert detail in score.detail


def test_numbers_in_tool_arguments_are_values_not_words():
    expected = {"name": "set_timer", "arguments": {"minutes": 10}}
    assert score_call(expected, [call("set_timer", {"minutes": 10})], [TIMER]).correct
    assert not score_call(expected, [call("set_timer", {"minutes": 15})], [TIMER]).correct
    assert not score_call(expected, [call("set_timer", {"minutes": "10"})], [TIMER]).valid


def test_the_request_data_is_consistent():
    profiles = load_profiles()
    requests = load_requests(profiles=profiles)
    assert len(requests) >= 150
    categories = {r.category for r in requests}
    assert categories == {"fact", "arithmetic", "date", "conversion", "kiosk", "tool"}
    for request in requests:
        if request.call:
            schema = next(t["parameters"] for t in profiles[request.profile].tools if t["name"] == request.call["name"])
            jsonschema.validate(request.call["arguments"], schema)  # the expected call is itself valid
            assert score_call(request.call, [call(request.call["name"], request.call["arguments"])],
                              list(profiles[request.profile].tools)).correct
        else:
            # Every accepted answer is well formed, and none is given away by the question itself.
            is_correct("", list(request.accept), list(request.reject))
            assert not is_correct(request.text, list(request.accept), list(request.reject)), request.id


def test_a_subset_is_spread_over_the_categories_in_file_order():
    requests = load_requests()
    chosen = spread(requests, 12)
    assert len(chosen) == 12
    assert {r.category for r in chosen} == {r.category for r in requests}
    positions = [requests.index(r) for r in chosen]
    assert positions == sorted(positions)
    assert spread(requests, None) == requests
