"""Cutting streamed LLM text into speakable chunks."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from voice.text import RepetitionGuard, SpeechChunker, clean_for_speech, split_for_speech


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


def test_the_first_chunks_may_end_at_a_clause():
    assert feed_words("Sure, I can do that.") == ["Sure,", "I can do that."]
    # The second chunk ends at a clause once it is long enough to cover the first one's playback.
    chunks = feed_words("Sure thing, with a light breeze from the west, and warm, and dry, and bright.")
    assert chunks == ["Sure thing,", "with a light breeze from the west,", "and warm, and dry, and bright."]
    chunks = feed_words("By turning on the lamp we are creating a space that is not only a room but a reflection.")
    assert chunks == ["By turning on", "the lamp we are creating a space that",
                      "is not only a room but a reflection."]


def test_the_first_chunk_does_not_wait_for_a_long_sentence():
    chunker = SpeechChunker()
    assert chunker.feed("I will turn") == []  # "turn" may go on ("turning")
    assert chunker.feed(" on the living room lamp for you right now.") == ["I will turn"]
    assert chunker.flush() == ["on the living room lamp for you right now."]


def test_a_sentence_ends_where_the_llm_left_out_the_space():
    assert split_for_speech("Sure.You're welcome!Bye.") == ["Sure.", "You're welcome!", "Bye."]
    chunks = split_for_speech("We went to the U.S.A and saw many cities, e.g.Paris, Texas.")
    assert any("U.S.A and" in c for c in chunks) and any("e.g.Paris," in c for c in chunks)


def test_a_sentence_said_a_third_time_in_a_row_is_a_loop():
    guard = RepetitionGuard()
    assert [guard.looping(c) for c in ["You're welcome.", "you're welcome!", "You're welcome.", "Bye."]] == [
        False, False, True, False]


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
