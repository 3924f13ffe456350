"""Cutting streamed LLM text into speakable chunks."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from voice.text import MAX_WORD_CHARS, RepetitionGuard, SpeechChunker, clean_for_speech, split_for_speech


def feed_words(text: str) -> list[str]:
    chunker = SpeechChunker()
    out = []
    for word in text.split(" "):
        out += chunker.feed(word + " ")
    return out + chunker.flush()


def feed_in_steps(text: str, step: int) -> list[str]:
    """The chunks of `text` streamed in deltas of `step` characters."""
    chunker = SpeechChunker()
    out = []
    for i in range(0, len(text), step):
        out += chunker.feed(text[i:i + step])
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


def test_a_run_without_spaces_is_cut_before_the_reply_ends():
    # A native reply of the benchmark (2026-12-05): no space for 150 characters, so no word was ever
    # complete and the first audio waited 1.5 s for the reply's end.
    run = "A.K.I.B.E.A.E.I.A.I.S.E.I.A.I.N." + "I.N." * 10 + "I." * 40
    chunks = feed_in_steps(run, 2)  # tokens of two characters
    assert len(chunks) >= 4 and all(len(c) <= MAX_WORD_CHARS and c.endswith(".") for c in chunks)
    assert "".join(chunks) == run  # nothing lost


def test_long_words_are_kept_whole_and_longer_runs_cut_the_same_however_they_stream():
    for text in ["Say supercalifragilisticexpialidocious twice.", "Say antidisestablishmentarianism."]:
        assert feed_in_steps(text, 1) == [text]
    text = "See https://example.com/a/very/long/path/to/a/page/that/goes/on/and/on for it."
    chunks = feed_words(text)
    assert chunks == ["See https://example.com/a/very/long/path/to/", "a/page/that/goes/on/and/on for it."]
    assert " ".join(chunks).replace(" ", "") == text.replace(" ", "")
    assert feed_in_steps(text, 1) == chunks


@given(st.lists(st.sampled_from(["Hi", "there", "friend", ",", ".", "!", "?", " ", "Dr.", "3.5", "\n", "ok"]),
                max_size=60), st.integers(min_value=1, max_value=7))
def test_no_word_is_lost_or_invented(tokens, step):
    text = " ".join(tokens)
    out = feed_in_steps(text, step)
    words = lambda s: [w for w in s.replace(",", " ").replace(".", " ").replace("!", " ").replace("?", " ").split()]  # noqa: E731
    assert words(" ".join(out)) == words(clean_for_speech(text))


@given(st.lists(st.sampled_from(["Hi", "there", ",", ".", " ", "A.K.I.", "I.N.", "xxxxxxxxxxxxx", "/path", "\n"]),
                max_size=60), st.integers(min_value=1, max_value=7))
def test_runs_without_spaces_are_cut_without_losing_a_character(tokens, step):
    text = "".join(tokens)
    out = feed_in_steps(text, step)
    speakable = lambda s: "".join(c for c in s if c.isalnum())  # noqa: E731 - chunks of punctuation only are dropped
    assert speakable("".join(out)) == speakable(text)
