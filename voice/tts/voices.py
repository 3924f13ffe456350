"""The voices a server offers, and how OpenAI's voice names map onto them."""

from __future__ import annotations

from dataclasses import dataclass

OPENAI_VOICES = {"alloy": None, "ash": "male", "ballad": "male", "coral": "female", "echo": "male", "sage": "female",
                 "shimmer": "female", "verse": "male", "marin": "female", "cedar": "male"}
"""OpenAI's Realtime voices, with the sex they sound (alloy, the default, is the server's default voice)."""


def sex_of(name: str) -> str | None:
    """The sex a voice name tells: OpenAI's names, and Kokoro's (`af_heart`: American female;
    `bm_george`: British male); None for any other."""
    if name in OPENAI_VOICES:
        return OPENAI_VOICES[name]
    if len(name) > 3 and name[2] == "_" and name[1] in "fm":
        return "female" if name[1] == "f" else "male"
    return None


@dataclass(frozen=True)
class Voice:
    id: str
    """What clients call it (`session.update`'s `voice`), and `session.created` lists."""
    engine: str
    """piper, kokoro or url (a speech server's)."""
    sex: str | None = None


@dataclass(frozen=True)
class VoiceBook:
    """The server's voices, the first being the default. Sans-I/O: the sessions' view of them."""

    voices: tuple[Voice, ...] = (Voice("default", "piper"),)

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(voice.id for voice in self.voices)

    def resolve(self, name: str) -> str | None:
        """The id of the voice `name` asks for: a voice of the server by its id, or one of OpenAI's
        names mapped to a voice of the same sex (OpenAI's voices of each sex in turn over the
        server's, so that different names sound different where the server has voices enough),
        else to the default; None for any other name."""
        if name in self.ids:
            return name
        if name not in OPENAI_VOICES:
            return None
        sex = OPENAI_VOICES[name]
        alike = [voice.id for voice in self.voices if sex is not None and voice.sex == sex]
        if not alike:
            return self.voices[0].id
        rank = [n for n, s in OPENAI_VOICES.items() if s == sex].index(name)
        return alike[rank % len(alike)]
