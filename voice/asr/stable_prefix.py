"""Stable-prefix policy for partial transcripts (LocalAgreement-2).

Each new partial hypothesis of the growing utterance is compared with the previous one;
the words on which the two agree (after the already committed ones) are committed and never
change again, so the text a user sees grows without flickering.
"""

from __future__ import annotations

from voice.asr.hallucination import normalise


class StablePrefix:
    """Commits the longest word prefix on which two consecutive hypotheses agree."""

    def __init__(self) -> None:
        self.committed: list[str] = []
        self._previous: list[str] = []

    @property
    def text(self) -> str:
        return " ".join(self.committed)

    def update(self, hypothesis: str) -> str:
        """Feed the newest hypothesis; return the newly committed text ("" if none)."""
        words = hypothesis.split()
        agreed = 0
        limit = min(len(words), len(self._previous))
        while agreed < limit and normalise(words[agreed]) == normalise(self._previous[agreed]):
            agreed += 1
        self._previous = words
        if agreed <= len(self.committed):
            return ""
        if [normalise(w) for w in words[: len(self.committed)]] != [normalise(w) for w in self.committed]:
            return ""  # the hypothesis rewrote committed words: wait for it to settle
        new = words[len(self.committed) : agreed]
        self.committed.extend(new)
        return (" " if len(self.committed) > len(new) else "") + " ".join(new)

    def remainder(self, final: str) -> str:
        """The part of the final transcript not yet committed, or "" if it diverged."""
        words = final.split()
        n = len(self.committed)
        if [normalise(w) for w in words[:n]] != [normalise(w) for w in self.committed]:
            return ""
        rest = " ".join(words[n:])
        return (" " + rest) if rest and n else rest
