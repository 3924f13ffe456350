"""The stable-prefix policy for partial transcripts, and the hallucination guards."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from voice.asr.hallucination import has_repetition_loop, is_hallucination, strip_non_speech
from voice.asr.stable_prefix import StablePrefix


def test_words_are_committed_once_two_hypotheses_agree():
    policy = StablePrefix()
    assert policy.update("turn on") == ""
    assert policy.update("turn on the") == "turn on"
    assert policy.update("turn on the living") == " the"
    assert policy.update("turn on the living room lamp") == " living"
    assert policy.text == "turn on the living"
    assert policy.remainder("Turn on the living room lamp.") == " room lamp."


def test_punctuation_and_case_do_not_block_agreement():
    policy = StablePrefix()
    policy.update("Hello, world")
    assert policy.update("hello world again") == "hello world"


def test_a_diverging_final_adds_nothing():
    policy = StablePrefix()
    policy.update("go forward")
    policy.update("go forward ten")
    assert policy.remainder("no forward ten meters") == ""


@given(st.lists(st.lists(st.sampled_from(["a", "b", "c", "d"]), max_size=8), max_size=12))
def test_committed_text_only_grows(hypotheses):
    policy = StablePrefix()
    seen: list[str] = []
    emitted = ""
    for words in hypotheses:
        emitted += policy.update(" ".join(words))
        assert policy.committed[: len(seen)] == seen
        seen = list(policy.committed)
        assert emitted.split() == policy.committed


def test_silence_phrases_are_rejected_only_when_short():
    assert is_hallucination("Thank you.", 1.0)
    assert is_hallucination("", 1.0)
    assert not is_hallucination("Thank you.", 3.5)
    assert is_hallucination("Thank you.", 8.0)  # two words from eight seconds: made up
    assert not is_hallucination("Turn on the lamp.", 1.0)


def test_sound_annotations_are_removed():
    assert strip_non_speech("[Music] hello (laughs) there ♪ la la ♪") == "hello there"


def test_decoder_loops_are_detected():
    assert has_repetition_loop("the the the the the the")
    assert has_repetition_loop("I am here. I am here. I am here. I am here. I am here.")
    assert not has_repetition_loop("ask not what your country can do for you, ask what you can do")
