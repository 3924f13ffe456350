"""Plain English sentences for the "repeat what I said" task, beyond the assistant-request templates.

They come from the fortune files of Debian's `fortunes` package when it is installed (`apt-get
install fortunes`: quotations, jokes, proverbs, verse; many words and styles), so that the
projector learns to hear words it will meet in real speech, not only the templates' vocabulary.
Sentences that share four words in a row with a held-out text (the evaluation's transcripts) are
left out, so the evaluation stays unseen.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable
from pathlib import Path

FORTUNE_DIRS = (Path("/usr/share/games/fortunes"), Path("/usr/share/fortune"))
# The files of mostly ordinary prose; ASCII art, jargon, foreign-language and offensive ones are not taken.
FORTUNE_FILES = ("fortunes", "humorists", "literature", "wisdom", "education", "food", "kids", "love", "people",
                 "pets", "platitudes", "science", "work", "miscellaneous", "law", "medicine", "sports",
                 "songs-poems", "news", "politics", "magic", "men-women", "goedel", "computers")
MIN_WORDS, MAX_WORDS = 4, 20
HOLDOUT_NGRAM = 4

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_SPEAKABLE = re.compile(r"[A-Z][A-Za-z ,.'?!;-]*[.?!]")  # no digits, symbols or quotes to be spoken
_ATTRIBUTION = re.compile(r"^\s*(--|-- |\u2014)")


def fortune_dir() -> Path | None:
    """Where the fortune files are, or None when the package is not installed."""
    return next((path for path in FORTUNE_DIRS if (path / "fortunes").is_file()), None)


def words(text: str) -> list[str]:
    """Lower-case words, punctuation dropped (what a word error rate compares)."""
    return re.findall(r"[a-z']+", text.lower())


def ngrams(text: str, n: int = HOLDOUT_NGRAM) -> set[tuple[str, ...]]:
    tokens = words(text)
    return {tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)}


def split_sentences(entry: str, max_words: int = MAX_WORDS) -> list[str]:
    """The speakable sentences of one fortune (attribution lines dropped, lines joined), of
    MIN_WORDS to `max_words` words."""
    lines = [line for line in entry.splitlines() if not _ATTRIBUTION.match(line)]
    text = " ".join(" ".join(lines).split())
    return [sentence for sentence in _SENTENCE_END.split(text)
            if _SPEAKABLE.fullmatch(sentence) and MIN_WORDS <= len(sentence.split()) <= max_words]


def read_entries(directory: Path, names: Iterable[str] = FORTUNE_FILES) -> list[str]:
    entries: list[str] = []
    for name in names:
        path = directory / name
        if path.is_file():
            entries += path.read_text(encoding="utf-8", errors="replace").split("\n%\n")
    return entries


def general_sentences(count: int, seed: int = 0, holdout: Iterable[str] = (),
                      directory: Path | None = None, max_words: int = MAX_WORDS) -> list[str]:
    """Up to `count` distinct sentences of at most `max_words` words (fewer if the files hold
    fewer), in a seeded random order; none shares HOLDOUT_NGRAM words in a row with any text in `holdout`."""
    directory = directory or fortune_dir()
    if directory is None:
        raise SystemExit("no fortune files: install Debian's `fortunes` package (apt-get install fortunes)")
    held_out = set().union(*(ngrams(text) for text in holdout)) if holdout else set()
    seen: set[str] = set()
    sentences = []
    for entry in read_entries(directory):
        for sentence in split_sentences(entry, max_words):
            key = " ".join(words(sentence))
            if key not in seen and not (ngrams(sentence) & held_out):
                seen.add(key)
                sentences.append(sentence)
    random.Random(seed).shuffle(sentences)
    return sentences[:count]
