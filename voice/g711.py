"""G.711 (ITU-T) μ-law and A-law: 8-bit telephone codes to and from 16-bit PCM, by numpy tables.

The tables are built once from the reference algorithm (the one in Sun's public-domain g711.c,
which CPython's former `audioop` also follows): 256 decoded values per law, and one code for each of
the 65,536 PCM16 values, so that coding a stream is one table lookup per sample.
"""

from __future__ import annotations

import numpy as np

_MULAW_BIAS = 0x84  # 132: added to the magnitude so that each segment's step doubles
_MULAW_CLIP = 8159  # the largest magnitude μ-law codes, in its 14-bit scale
_SEGMENT_ENDS_MULAW = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])
_SEGMENT_ENDS_ALAW = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF])

ULAW_SILENCE = 0xFF
"""The μ-law code of zero (what a telephone line carries in silence)."""
ALAW_SILENCE = 0xD5
"""The A-law code of the smallest positive value (A-law has no zero code)."""


def _ulaw_decode_table() -> np.ndarray:
    code = ~np.arange(256, dtype=np.int32) & 0xFF
    magnitude = (((code & 0x0F) << 3) + _MULAW_BIAS) << ((code & 0x70) >> 4)
    return np.where(code & 0x80, _MULAW_BIAS - magnitude, magnitude - _MULAW_BIAS).astype(np.int16)


def _alaw_decode_table() -> np.ndarray:
    code = np.arange(256, dtype=np.int32) ^ 0x55  # (even bits are inverted on the line)
    segment = (code & 0x70) >> 4
    mantissa = (code & 0x0F) << 4
    magnitude = np.where(segment == 0, mantissa + 8, (mantissa + 0x108) << np.maximum(segment - 1, 0))
    return np.where(code & 0x80, magnitude, -magnitude).astype(np.int16)


def _ulaw_encode_table() -> np.ndarray:
    pcm = np.arange(-32768, 32768, dtype=np.int32) >> 2  # the 14-bit scale μ-law is defined on
    mask = np.where(pcm < 0, 0x7F, 0xFF)
    magnitude = np.minimum(np.abs(pcm), _MULAW_CLIP) + (_MULAW_BIAS >> 2)
    segment = np.searchsorted(_SEGMENT_ENDS_MULAW, magnitude)  # first end >= magnitude (8: over range)
    code = np.where(segment >= 8, 0x7F, (segment << 4) | ((magnitude >> (segment + 1)) & 0x0F))
    return (code ^ mask).astype(np.uint8)


def _alaw_encode_table() -> np.ndarray:
    pcm = np.arange(-32768, 32768, dtype=np.int32) >> 3  # the 13-bit scale A-law is defined on
    mask = np.where(pcm >= 0, 0xD5, 0x55)
    magnitude = np.where(pcm >= 0, pcm, -pcm - 1)
    segment = np.searchsorted(_SEGMENT_ENDS_ALAW, magnitude)
    mantissa = np.where(segment < 2, magnitude >> 1, magnitude >> np.maximum(segment, 1)) & 0x0F
    code = np.where(segment >= 8, 0x7F, (segment << 4) | mantissa)
    return (code ^ mask).astype(np.uint8)


ULAW_TO_PCM16 = _ulaw_decode_table()
ALAW_TO_PCM16 = _alaw_decode_table()
_PCM16_TO_ULAW = _ulaw_encode_table()
_PCM16_TO_ALAW = _alaw_encode_table()


def ulaw_decode(codes: bytes) -> np.ndarray:
    """μ-law codes to int16 samples."""
    return ULAW_TO_PCM16[np.frombuffer(codes, dtype=np.uint8)]


def alaw_decode(codes: bytes) -> np.ndarray:
    """A-law codes to int16 samples."""
    return ALAW_TO_PCM16[np.frombuffer(codes, dtype=np.uint8)]


def ulaw_encode(samples: np.ndarray) -> bytes:
    """int16 samples to μ-law codes."""
    return _PCM16_TO_ULAW[np.asarray(samples, dtype=np.int16).astype(np.int32) + 32768].tobytes()


def alaw_encode(samples: np.ndarray) -> bytes:
    """int16 samples to A-law codes."""
    return _PCM16_TO_ALAW[np.asarray(samples, dtype=np.int16).astype(np.int32) + 32768].tobytes()
