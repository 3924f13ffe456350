"""Guards against Whisper's habit of inventing text on silence, noise and music."""

from __future__ import annotations

import re

# Phrases Whisper produces from silence or noise (subtitle credits from its training data).
_KNOWN_PHRASES = {
    "thank you",
    "thank you very much",
    "thanks for watching",
    "thank you for watching",
    "thanks for watching and see you next time",
    "please subscribe",
    "subtitles by the amaraorg community",
    "you",
    "bye",
    "so",
    "oh",
    "woohoo",
    "whoo",
    "woo",
    "whoa",
    "ooh",
    "ah",
    "hmm",
    "mm",
    "uh",
    "um",
    "huh",
    "music",
    "applause",
    "silence",
    "the end",
}
_NON_WORD = re.compile(r"[^a-z0-9' ]+")
_BRACKETED = re.compile(r"\[[^\]]*\]|\([^)]*\)|\*[^*]*\*|♪[^♪]*♪?")


def normalise(text: str) -> str:
    """Lower-case words without punctuation, single-spaced."""
    return " ".join(_NON_WORD.sub(" ", text.lower().replace("-", " ")).split())


def strip_non_speech(text: str) -> str:
    """Remove sound-event annotations such as `[Music]`, `(laughs)`, `♪ ... ♪`."""
    return " ".join(_BRACKETED.sub(" ", text).split())


def is_hallucination(text: str, speech_seconds: float) -> bool:
    """True for a transcript that is very likely invented rather than heard.

    A transcript that is nothing but a known filler phrase is rejected when it comes from a short
    stretch of audio, or from a long one that should have held far more words; the same words
    inside a longer transcript are kept.
    """
    words = normalise(text)
    if not words:
        return True
    sparse = len(words.split()) / max(speech_seconds, 1e-3) < 0.5
    return words in _KNOWN_PHRASES and (speech_seconds < 3.0 or sparse)


def has_repetition_loop(text: str, max_repeats: int = 4) -> bool:
    """True when an n-gram repeats back to back more than `max_repeats` times (decoder loop)."""
    words = normalise(text).split()
    for size in range(1, 6):
        run = 1
        for start in range(size, len(words) - size + 1, size):
            if words[start : start + size] == words[start - size : start]:
                run += 1
                if run > max_repeats:
                    return True
            else:
                run = 1
    return False
