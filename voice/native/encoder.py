"""Audio features for the native path: the Whisper encoder (faster-whisper / CTranslate2), frozen.

Whisper pads every input to a 30 s window; CTranslate2's encoder also accepts shorter log-mel
input, so a 3 s clip costs 150 frames (50 a second), not 1500. Longer audio is encoded in 30 s
pieces and the frames concatenated.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from voice.audio import ASR_RATE

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

FRAMES_PER_SECOND = 50
_MAX_SECONDS = 30
_MIN_SAMPLES = ASR_RATE // 10  # shorter clips are padded with silence to 0.1 s


class WhisperEncoder:
    """Whisper encoder states (frames, dim) for 16 kHz mono audio; safe to call from several threads.

    Pass the `WhisperModel` the ASR already loaded to share it, or a model spec for
    `voice.models.whisper_model` (None: the bundled tiny.en) to load one."""

    def __init__(self, model: WhisperModel | str | None = None, *, name: str | None = None,
                 compute_type: str = "int8", cpu_threads: int = 2) -> None:
        from faster_whisper import WhisperModel

        from voice import models

        if isinstance(model, WhisperModel):
            self._model = model
            self.name = name or "whisper"
        else:
            self._model = WhisperModel(models.whisper_model(model), device="cpu", compute_type=compute_type,
                                       cpu_threads=cpu_threads)
            self.name = name or f"faster-whisper:{model or models.DEFAULT}"
        n_mels = self._model.feature_extractor.mel_filters.shape[0]
        self.dim = self._encode_mel(np.zeros((n_mels, 2), np.float32)).shape[1]

    def encode(self, audio_16k: np.ndarray, pad_to_window: bool = False) -> np.ndarray:
        """Encoder states, float32 (frames, dim), about 50 frames a second of audio; with
        `pad_to_window`, each 30 s piece is padded to Whisper's whole window first (1500 frames a
        piece), as llama.cpp's libmtmd pads every clip (`training.mmproj`)."""
        audio = np.asarray(audio_16k, dtype=np.float32).reshape(-1)
        if audio.size < _MIN_SAMPLES:
            audio = np.pad(audio, (0, _MIN_SAMPLES - audio.size))
        step = _MAX_SECONDS * ASR_RATE
        pieces = [audio[start:start + step] for start in range(0, audio.size, step)]
        if len(pieces) > 1 and pieces[-1].size < _MIN_SAMPLES:
            pieces = pieces[:-1]
        return np.concatenate([self._encode_piece(piece, pad_to_window) for piece in pieces])

    def _encode_piece(self, audio: np.ndarray, pad_to_window: bool = False) -> np.ndarray:
        if pad_to_window:
            audio = np.pad(audio, (0, _MAX_SECONDS * ASR_RATE - audio.size))
        mel = self._model.feature_extractor(audio)[:, :-1]  # padding=160 adds one frame past the end
        return self._encode_mel(mel[:, : max(2, mel.shape[1] // 2 * 2)])  # the encoder's stride-2 convolution

    def _encode_mel(self, mel: np.ndarray) -> np.ndarray:
        import ctranslate2

        view = ctranslate2.StorageView.from_array(np.ascontiguousarray(mel[None], dtype=np.float32))
        return np.array(self._model.model.encode(view, to_cpu=True), dtype=np.float32)[0]

