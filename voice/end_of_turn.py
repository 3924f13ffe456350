"""Smart Turn v3.2 (pipecat-ai's, BSD-2-Clause): how likely the user has finished, from the voice alone.

Its input is Whisper's log-mel features (80 bands) of the last 8 s of 16 kHz audio, zero-padded at
the start and normalised to zero mean and unit variance first; its output is a sigmoid probability
that the turn is complete. faster-whisper's feature extractor computes the same features as
pipecat's own code, so nothing of pipecat is imported.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime

from voice.audio import ASR_RATE

WINDOW_S = 8


class SmartTurn:
    """The end-of-turn model on onnxruntime; thread-safe (one inference at a time per caller)."""

    name = "smart-turn-v3.2"

    def __init__(self, path: str | Path, threads: int = 1) -> None:
        from faster_whisper.feature_extractor import FeatureExtractor

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        self._session = onnxruntime.InferenceSession(str(path), sess_options=options,
                                                     providers=["CPUExecutionProvider"])
        self._features = FeatureExtractor(feature_size=80, chunk_length=WINDOW_S)

    def features(self, audio_16k: np.ndarray) -> np.ndarray:
        samples = WINDOW_S * ASR_RATE
        window = np.zeros(samples, np.float32)
        tail = np.asarray(audio_16k, np.float32)[-samples:]
        window[samples - tail.size:] = tail
        window = (window - window.mean()) / np.sqrt(window.var() + 1e-7)
        return self._features(window, padding=0)[None].astype(np.float32)

    def probability(self, audio_16k: np.ndarray) -> float:
        """P(the turn is complete) for 16 kHz audio that ends now."""
        outputs = self._session.run(None, {"input_features": self.features(audio_16k)})
        return float(np.asarray(outputs[0]).reshape(-1)[0])
