"""Cutting streamed LLM text into speakable chunks."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from voice.text import SpeechChunker, clean_for_speech, split_for_speech


def feed_words(text: str) -> list[str]:
    chunker = SpeechChunker()
    out = []
    for word in text.split(" "):
        out += chunker.feed(word + " ")
    return out + chunker.flush()


def test_sentences_are_released_as_soon_as_they_end():
    chunker = SpeechChunker()
    assert chunker.feed("Hello there") == []
    assert chunker.feed(". How") == ["Hello there."]
    assert chunker.feed(" are you?") == []  # no space after "?" yet: it may go on
    assert chunker.feed(" Fine") == ["How are you?"]
    assert chunker.flush() == ["Fine"]


def test_the_first_chunk_may_end_at_a_clause():
    chunks = feed_words("Sure thing, with a light breeze from the west, and warm.")
    assert chunks[0] == "Sure thing,"
    assert chunks[1:] == ["with a light breeze from the west, and warm."]


def test_the_first_chunk_does_not_wait_for_a_long_sentence():
    chunker = SpeechChunker()
    assert chunker.feed("I will turn on") == []  # "on" may go on ("onto")
    assert chunker.feed(" the living room lamp for you right now.") == ["I will turn on"]
    assert chunker.flush() == ["the living room lamp for you right now."]


def test_abbreviations_and_numbers_do_not_end_a_sentence():
    assert split_for_speech("Dr. Smith paid 3.50 dollars. Then he left.") == ["Dr. Smith paid 3.50 dollars.",
                                                                              "Then he left."]


def test_markdown_and_emoji_are_not_spoken():
    assert clean_for_speech("**Sure!** Here is [a link](http://x.y) 😀") == "Sure! Here is a link "
    assert split_for_speech("- one\n- two") == ["one", "two"]


def test_a_long_sentence_without_punctuation_is_cut():
    chunks = split_for_speech(" ".join(["word"] * 70))
    assert all(len(c.split()) <= 30 for c in chunks)
    assert sum(len(c.split()) for c in chunks) == 70


@given(st.lists(st.sampled_from(["Hi", "there", "friend", ",", ".", "!", "?", " ", "Dr.", "3.5", "\n", "ok"]),
                max_size=60), st.integers(min_value=1, max_value=7))
def test_no_word_is_lost_or_invented(tokens, step):
    text = " ".join(tokens)
    chunker = SpeechChunker()
    out = []
    for i in range(0, len(text), step):
        out += chunker.feed(text[i:i + step])
    out += chunker.flush()
    words = lambda s: [w for w in s.replace(",", " ").replace(".", " ").replace("!", " ").replace("?", " ").split()]  # noqa: E731
    assert words(" ".join(out)) == words(clean_for_speech(text))
