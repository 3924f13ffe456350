"""Text for speech: cleaning LLM output and cutting it into speakable chunks as it streams."""

from __future__ import annotations

import re

_MARKDOWN = re.compile(r"(\*\*|__|`+|^#+\s*|^\s*[-*+]\s+|^\s*\d+\.\s+)", re.MULTILINE)
_LINK = re.compile(r"\[([^\]]+)\]\([^)]+\)")
_EMOJI = re.compile("[\U0001f000-\U0001faff\u2600-\u27bf\ufe0f]")
# A sentence ends at its punctuation and a space, or, where a small LLM left the space out
# ("Sure.You're welcome."), at its punctuation and a capital letter.
_SENTENCE_END = re.compile(r"[.!?…]+[\"')\]]*(?=\s)|(?<=[a-z])[.!?]+(?=[A-Z])|\n+")
_CLAUSE_END = re.compile(r"[,;:—–]+(?=\s)")
# A run of this many characters without a space (longer than English words: a small LLM's
# "A.K.I.B.E.A.E.I..." reply) is cut anyway, else nothing would be spoken until the reply ends.
MAX_WORD_CHARS = 40
_RUN_BREAK = re.compile(r"[.,;:!?/\-]")
_ABBREVIATIONS = {"mr", "mrs", "ms", "dr", "st", "vs", "etc", "e.g", "i.e", "no", "jr", "sr", "prof"}


def clean_for_speech(text: str) -> str:
    """Drop markdown, links and emoji that a voice should not read out."""
    text = _LINK.sub(r"\1", text)
    text = _MARKDOWN.sub("", text)
    return _EMOJI.sub("", text)


def _is_abbreviation(text: str, end: int) -> bool:
    word = text[:end].rstrip(".").split()[-1:] or [""]
    return word[0].lower() in _ABBREVIATIONS or (len(word[0]) == 1 and word[0].isalpha())


class SpeechChunker:
    """Accumulates streamed text and releases speakable chunks.

    A chunk ends at a sentence end. The first chunk of a reply also ends at a clause boundary
    ("Sure,"), or after `first_chunk_max_words` words, so that speech starts sooner: on a 2-core
    CPU each LLM token costs about 20 ms, and the first audio waits for every token of the first
    chunk. That chunk then plays for under a second, so the second one also ends at a clause
    boundary once it has `second_clause_words` words, or after `second_chunk_max_words`, to be
    ready before the first has been heard; later chunks are cut only when a sentence runs past
    `max_words`. Any chunk also ends within a run of MAX_WORD_CHARS characters without a space.
    """

    def __init__(self, first_clause_words: int = 1, first_chunk_max_words: int = 3, second_clause_words: int = 4,
                 second_chunk_max_words: int = 8, max_words: int = 30) -> None:
        self._clause_words = {0: first_clause_words, 1: second_clause_words}
        self._max_words = {0: first_chunk_max_words, 1: second_chunk_max_words}
        self.max_words = max_words
        self._buffer = ""
        self._emitted = 0

    def feed(self, delta: str) -> list[str]:
        """Add streamed text; return the chunks that are now complete."""
        self._buffer += delta
        chunks: list[str] = []
        while True:
            cut = self._find_cut()
            if cut is None:
                break
            chunk, self._buffer = self._buffer[:cut], self._buffer[cut:]
            chunk = clean_for_speech(chunk).strip()
            if any(c.isalnum() for c in chunk):
                chunks.append(chunk)
                self._emitted += 1
        return chunks

    def flush(self) -> list[str]:
        """Return whatever is left at the end of the reply."""
        rest, self._buffer = clean_for_speech(self._buffer).strip(), ""
        return [rest] if any(c.isalnum() for c in rest) else []

    def _find_cut(self) -> int | None:
        text = self._buffer
        for match in _SENTENCE_END.finditer(text):
            if match.group().startswith(".") and _is_abbreviation(text, match.start() + 1):
                continue
            return match.end()
        clause_words = self._clause_words.get(self._emitted)
        if clause_words is not None:
            for match in _CLAUSE_END.finditer(text):
                if len(text[: match.start()].split()) >= clause_words:
                    return match.end()
        limit = self._max_words.get(self._emitted, self.max_words)
        # Cut after `limit` complete words (a word is complete once whitespace follows it).
        complete = list(re.finditer(r"\S+(?=\s)", text))
        if len(complete) >= limit + (0 if self._emitted == 0 else 1):
            return complete[limit - 1].end()
        return _cut_in_run(text)


def _cut_in_run(text: str) -> int | None:
    """Where to cut the first run of MAX_WORD_CHARS or more characters without a space: after its
    last punctuation in that span (a break a voice can read), else right at the span's end."""
    run = next((m for m in re.finditer(r"\S+", text) if m.end() - m.start() >= MAX_WORD_CHARS), None)
    if run is None:
        return None
    span = text[run.start():run.start() + MAX_WORD_CHARS]
    breaks = [m.end() for m in _RUN_BREAK.finditer(span)]
    return run.start() + (breaks[-1] if breaks else MAX_WORD_CHARS)


class RepetitionGuard:
    """Spots a reply caught in a loop: a small LLM sometimes says the same sentence over and over
    until its token limit ("You're welcome. You're welcome. ..."), minutes of speech."""

    def __init__(self, max_repeats: int = 2) -> None:
        self.max_repeats = max_repeats
        self._last = ""
        self._run = 0

    def looping(self, chunk: str) -> bool:
        """Feed the next chunk; True once it is the same as the `max_repeats` chunks before it."""
        key = " ".join(re.sub(r"[^\w\s']", " ", chunk.lower()).split())
        self._run = self._run + 1 if key == self._last else 1
        self._last = key
        return self._run > self.max_repeats


def split_for_speech(text: str) -> list[str]:
    """Cut a complete text into the chunks SpeechChunker would produce."""
    chunker = SpeechChunker()
    return chunker.feed(text) + chunker.flush()


_TRAILING_CONTINUATIONS = {
    "and", "but", "or", "so", "because", "the", "a", "an", "to", "of", "in", "on", "with", "for", "my", "your",
    "um", "uh", "like", "then", "if", "that", "which", "when", "is", "are", "was", "i", "you", "we",
}


def reads_as_finished(text: str) -> bool:
    """Whether a transcript reads like a finished utterance: it ends a sentence, and not on a word
    that usually goes on ("and", "the", "um")."""
    text = text.strip()
    if not text or text[-1] not in ".?!" or text.endswith("..."):
        return False
    words = text.rstrip(".?!").split()
    return bool(words) and words[-1].lower().strip(",;:\"'") not in _TRAILING_CONTINUATIONS


BACKCHANNEL_WORDS = {
    "mm", "mmm", "mhm", "mmhmm", "hmm", "uh", "huh", "uhhuh", "um", "yeah", "yep", "yes", "yup", "ok", "okay", "right",
    "sure", "oh", "ah", "aha", "cool", "nice", "wow", "alright", "great", "gotcha",
}
BACKCHANNEL_PHRASES = ("mm hmm", "uh huh", "i see", "got it", "all right", "thank you", "thanks")
"""What a listener says to show it follows, not to take the turn."""


def is_backchannel(text: str) -> bool:
    """Whether a transcript is only a listener's backchannel ("mm-hmm", "yeah, okay", "I see"), or no words."""
    words = " " + " ".join(re.sub(r"[^a-z' ]+", " ", text.lower().replace("-", " ")).split()) + " "
    for phrase in BACKCHANNEL_PHRASES:
        words = words.replace(f" {phrase} ", " ")
    return all(word in BACKCHANNEL_WORDS for word in words.split())
