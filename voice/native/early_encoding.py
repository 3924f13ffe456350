"""The encoder states the native model evaluates when the user's speech is evaluated while spoken.

The session gives the model the speech so far every EVALUATE_EVERY_MS; each time the model keeps
the positions with a margin of audio after them, encoded from a window that starts a left context
before the first new one, and the reply encodes the rest with the whole turn's audio. Whisper's
encoder attends both ways, so those states are not what one encoding of the whole turn gives. This
module composes them without the LLM (`NativeAudioChat` does the same, step by step, in a KV
cache), to train the projector on them (`python -m training.data --streamed-margins`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from voice.audio import ASR_RATE
from voice.native.encoder import FRAMES_PER_SECOND
from voice.turn_taking import EVALUATE_EVERY_MS

SAMPLES_PER_FRAME = ASR_RATE // FRAMES_PER_SECOND


def encode_from(encode: Callable[[np.ndarray], np.ndarray], audio_16k: np.ndarray, first_row: int, stack: int,
                left_context_s: float | None) -> tuple[np.ndarray, int]:
    """The encoder states of the audio from position `first_row` on, and the whole audio's frame
    count. The encoder (`encode`: audio -> states) sees `left_context_s` of audio before that
    position (None: all of it), from a position boundary."""
    start = 0
    if left_context_s is not None:
        row_samples = stack * SAMPLES_PER_FRAME
        start = max(0, first_row * row_samples - int(left_context_s * ASR_RATE)) // row_samples * row_samples
    frames = encode(audio_16k[start:])
    offset = start // SAMPLES_PER_FRAME
    return frames[first_row * stack - offset:], offset + frames.shape[0]


def final_positions(frames: int, margin_s: float, stack: int) -> int:
    """How many leading positions of audio that encodes to `frames` frames have `margin_s` of
    encoded audio after them."""
    return max(0, (frames - int(margin_s * FRAMES_PER_SECOND)) // stack)


def complete_positions(samples: int, stack: int) -> int:
    """How many positions of `samples` audio samples have all their frames (the last frame may be short)."""
    return max(0, samples // SAMPLES_PER_FRAME - 1) // stack


def streamed_states(encode: Callable[[np.ndarray], np.ndarray], audio_16k: np.ndarray, *, margin_s: float,
                    left_context_s: float | None, stack: int,
                    step_samples: int = EVALUATE_EVERY_MS * ASR_RATE // 1000) -> tuple[np.ndarray, int]:
    """The encoder states (frames, dim) a reply to `audio_16k` evaluates after the speech was
    evaluated every `step_samples` while spoken, and how many positions of them were evaluated
    early. `encode` is the encoder (audio -> states)."""
    blocks: list[np.ndarray] = []
    evaluated = 0
    for end in range(step_samples, audio_16k.size, step_samples):
        frames, total = encode_from(encode, audio_16k[:end], evaluated, stack, left_context_s)
        final = final_positions(total, margin_s, stack)
        if final > evaluated:
            blocks.append(frames[: (final - evaluated) * stack])
            evaluated = final
    evaluated = min(evaluated, complete_positions(audio_16k.size, stack))
    rest, _ = encode_from(encode, audio_16k, evaluated, stack, left_context_s)
    early = [np.concatenate(blocks)[: evaluated * stack]] if blocks else []
    return np.concatenate([*early, rest]), evaluated
