"""Plain English sentences for the "repeat what I said" task, beyond the assistant-request templates.

So that the projector learns to hear words it will meet in real speech, not only the templates'
vocabulary, they come from one of three Debian packages (SOURCES):
- `fortunes`: the fortune files (quotations, jokes, proverbs, verse; many words and styles);
- `wordnet`: the example sentences of WordNet's word senses (`wordnet-base`: everyday modern
  English, ordinary words used in context, "She powdered her nose.");
- `gcide`: the quotations of the Collaborative International Dictionary (`dict-gcide`, Webster's
  1913: Shakespeare, Milton, the Bible, Dryden and hundreds more; older, literary English, "Who
  first seduced them to that foul revolt?").
Sentences that share four words in a row with a held-out text (the evaluation's transcripts) are
left out, so the evaluation stays unseen.
"""

from __future__ import annotations

import gzip
import random
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NamedTuple

FORTUNE_DIRS = (Path("/usr/share/games/fortunes"), Path("/usr/share/fortune"))
# The files of mostly ordinary prose; ASCII art, jargon, foreign-language and offensive ones are not taken.
FORTUNE_FILES = ("fortunes", "humorists", "literature", "wisdom", "education", "food", "kids", "love", "people",
                 "pets", "platitudes", "science", "work", "miscellaneous", "law", "medicine", "sports",
                 "songs-poems", "news", "politics", "magic", "men-women", "goedel", "computers")
WORDNET_DIR = Path("/usr/share/wordnet")
WORDNET_FILES = ("data.noun", "data.verb", "data.adj", "data.adv")
GCIDE_DICT = Path("/usr/share/dictd/gcide.dict.dz")
GCIDE_QUOTE_INDENT = 8  # definitions are indented 3 or 6 spaces, the quotations under them more
MIN_WORDS, MAX_WORDS = 4, 20
HOLDOUT_NGRAM = 4

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_SPEAKABLE = re.compile(r"[A-Z][A-Za-z ,.'?!;-]*[.?!]")  # no digits, symbols or quotes to be spoken
_ATTRIBUTION = re.compile(r"^\s*(--|-- |\u2014)")
_QUOTED = re.compile(r'"([^"]+)"')
_GCIDE_ATTRIBUTION = re.compile(r"^(.*?)\s*--\s?[A-Z]\S.*$")  # "... my train.  --Shak."
_SPACE_BEFORE_STOP = re.compile(r"\s+(?=[.,;?!])")


def fortune_dir() -> Path | None:
    """Where the fortune files are, or None when the package is not installed."""
    return next((path for path in FORTUNE_DIRS if (path / "fortunes").is_file()), None)


def fortunes_installed() -> bool:
    return fortune_dir() is not None


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


def fortune_sentences(max_words: int = MAX_WORDS) -> list[str]:
    """Every speakable sentence of the fortune files, in file order."""
    directory = fortune_dir()
    assert directory is not None, "general_sentences checks that the source is installed"
    return [sentence for entry in read_entries(directory) for sentence in split_sentences(entry, max_words)]


def wordnet_examples(line: str, max_words: int = MAX_WORDS) -> list[str]:
    """The speakable example sentences of one line of a WordNet data file (the quoted parts of its
    gloss, after "|"), capitalised and ended with a full stop where they lack one."""
    if line.startswith("  ") or "|" not in line:  # the licence header
        return []
    examples = []
    for quoted in _QUOTED.findall(line.split("|", 1)[1]):
        text = " ".join(quoted.split())
        if not text:
            continue
        text = text[0].upper() + text[1:] + ("" if text[-1] in ".?!" else ".")
        if _SPEAKABLE.fullmatch(text) and MIN_WORDS <= len(text.split()) <= max_words:
            examples.append(text)
    return examples


def wordnet_installed() -> bool:
    return (WORDNET_DIR / WORDNET_FILES[0]).is_file()


def wordnet_sentences(max_words: int = MAX_WORDS) -> list[str]:
    """Every speakable example sentence of WordNet, in file order."""
    return [example for name in WORDNET_FILES
            for line in (WORDNET_DIR / name).read_text(encoding="latin-1").splitlines()
            for example in wordnet_examples(line, max_words)]


def gcide_quotations(lines: Iterable[str]) -> list[str]:
    """The quotations of GCIDE's text: runs of deeply indented lines that end in an attribution
    ("--Shak."), the attribution dropped and the lines joined. Definitions, etymologies and
    "[1913 Webster]" source marks are not quotations."""
    quotations: list[str] = []
    run: list[str] = []
    for line in lines:
        text = line.strip()
        if not text or text.startswith("[") or len(line) - len(line.lstrip(" ")) < GCIDE_QUOTE_INDENT:
            run = []
            continue
        attributed = _GCIDE_ATTRIBUTION.match(text)
        run.append(attributed.group(1) if attributed else text)
        if attributed:
            quotations.append(_SPACE_BEFORE_STOP.sub("", " ".join(run)))
            run = []
    return quotations


def gcide_installed() -> bool:
    return GCIDE_DICT.is_file()


def gcide_sentences(max_words: int = MAX_WORDS) -> list[str]:
    """Every speakable sentence of GCIDE's quotations, in dictionary order."""
    with gzip.open(GCIDE_DICT, "rt", encoding="utf-8", errors="replace") as dictionary:
        quotations = gcide_quotations(dictionary)
    return [sentence for quotation in quotations for sentence in split_sentences(quotation, max_words)]


class SentenceSource(NamedTuple):
    read: Callable[[int], list[str]]
    """Every speakable sentence of at most so many words, in a fixed order."""
    installed: Callable[[], bool]
    """Whether the Debian package it reads is installed."""
    package: str
    """That Debian package."""


SOURCES = {"fortunes": SentenceSource(fortune_sentences, fortunes_installed, "fortunes"),
           "wordnet": SentenceSource(wordnet_sentences, wordnet_installed, "wordnet-base"),
           "gcide": SentenceSource(gcide_sentences, gcide_installed, "dict-gcide")}


def source_installed(source: str) -> bool:
    """Whether the Debian package a source reads is installed."""
    return SOURCES[source].installed()


def general_sentences(count: int, seed: int = 0, holdout: Iterable[str] = (), max_words: int = MAX_WORDS,
                      source: str = "fortunes") -> list[str]:
    """Up to `count` distinct sentences of `source` of at most `max_words` words (fewer if it holds
    fewer), in a seeded random order; none shares HOLDOUT_NGRAM words in a row with any text in `holdout`."""
    if source not in SOURCES:
        raise SystemExit(f"unknown sentence source {source!r}: one of {', '.join(SOURCES)}")
    package = SOURCES[source].package
    if not SOURCES[source].installed():
        raise SystemExit(f"no {source} sentences: install Debian's `{package}` package (apt-get install {package})")
    held_out = set().union(*(ngrams(text) for text in holdout)) if holdout else set()
    seen: set[str] = set()
    sentences = []
    for sentence in SOURCES[source].read(max_words):
        key = " ".join(words(sentence))
        if key not in seen and not (ngrams(sentence) & held_out):
            seen.add(key)
            sentences.append(sentence)
    random.Random(seed).shuffle(sentences)
    return sentences[:count]
