"""The interface every native backend implements: the user's speech in, reply text out."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from typing import Protocol

import numpy as np

from voice.audio import ASR_RATE
from voice.llm.base import ChatMessage, GenerationOptions

REPEAT_INSTRUCTION = "Repeat exactly what I said."
"""The instruction of the transcription task (the same text in training and at inference)."""
TRANSCRIPT_TOKENS_PER_S, TRANSCRIPT_BASE_TOKENS = 6, 8
"""A transcript's length cap: fast speech is about 4 words (5 tokens) a second, so a longer one is
the model looping or answering instead of repeating."""


def transcript_token_cap(seconds: float, max_tokens: int) -> int:
    """The token budget of the transcript of `seconds` of speech (at most `max_tokens`)."""
    return max(1, min(max_tokens, TRANSCRIPT_BASE_TOKENS + math.ceil(TRANSCRIPT_TOKENS_PER_S * seconds)))


class AudioChatModel(Protocol):
    """Answers the user's speech directly, with no transcript in between. Shared by all sessions
    (thread-safe); stops between tokens once `cancel` is set."""

    name: str

    def stream_reply(self, audio_16k: np.ndarray, messages: list[ChatMessage], options: GenerationOptions,
                     cancel: threading.Event, instruction: str | None = None) -> Iterator[str]:
        """Text deltas of the reply to `audio_16k` (16 kHz float32) after the conversation `messages`;
        `instruction` is text the user says before the audio in the same message."""
        ...

    def close(self) -> None:
        ...


def loop_start(words: list[str], longest: int = 6) -> int | None:
    """Where a looping transcript's repeats begin: when `words` end with the same phrase of up to
    `longest` words said over and over (a single word 4 times, a longer phrase 3), the number of
    words to keep (everything up to and with its first copy); None when they do not."""
    for size in range(1, longest + 1):
        copies = 4 if size == 1 else 3
        if len(words) < size * copies:
            break
        last = words[-size:]
        if all(words[len(words) - size * (k + 1): len(words) - size * k] == last for k in range(1, copies)):
            return len(words) - size * (copies - 1)
    return None


def transcribe(model: AudioChatModel, audio_16k: np.ndarray, cancel: threading.Event | None = None,
               max_tokens: int = 96) -> str:
    """What a native model hears: it is asked to repeat what the user said. The transcript is at
    most as long as that much speech could hold, and it ends at its first line break or where it
    starts to loop (greedy decoding of a small LLM can say one phrase over and over)."""
    options = GenerationOptions(max_tokens=transcript_token_cap(audio_16k.size / ASR_RATE, max_tokens), temperature=0.0)
    text = ""
    stream = model.stream_reply(audio_16k, [], options, cancel or threading.Event(), instruction=REPEAT_INSTRUCTION)
    try:
        for delta in stream:
            text += delta
            finished = finished_transcript(text)
            if finished is not None:
                return finished
    finally:
        close = getattr(stream, "close", None)
        if close:
            close()  # a generator's own cleanup (the served client's response, the embedded context)
    return text.strip()


def finished_transcript(text: str) -> str | None:
    """The transcript, once the text generated so far shows that it is over: at a line break (every
    transcript the projector learned from is one line, so what follows one is an answer or a loop, not
    what was said), or where it starts to loop; None while it may go on."""
    line, newline, _ = text.lstrip().partition("\n")
    words = line.split()
    keep = loop_start(words)
    if keep is not None:
        return " ".join(words[:keep]).rstrip(",;")
    return line.strip() if newline else None
