"""Piper text-to-speech (ONNX), CPU by default."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np


class PiperSynthesizer:
    """A Piper voice loaded once; onnxruntime sessions are safe to run from several threads."""

    def __init__(self, model_path: str | Path, config_path: str | Path | None = None, *, threads: int = 2,
                 length_scale: float | None = None, speaker_id: int | None = None) -> None:
        import json

        import onnxruntime
        from piper import PiperVoice
        from piper.config import PiperConfig, SynthesisConfig

        config_path = Path(config_path or f"{model_path}.json")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.enable_cpu_mem_arena = False  # sentence lengths vary: an arena would keep the largest forever
        self._voice = PiperVoice(
            session=onnxruntime.InferenceSession(str(model_path), sess_options=options,
                                                 providers=["CPUExecutionProvider"]),
            config=PiperConfig.from_dict(json.loads(config_path.read_text(encoding="utf-8"))),
        )
        self._syn_config = SynthesisConfig(length_scale=length_scale, speaker_id=speaker_id, volume=0.9)
        self.sample_rate = self._voice.config.sample_rate
        self.name = Path(model_path).stem

    def synthesize(self, text: str) -> Iterator[np.ndarray]:
        for chunk in self._voice.synthesize(text, syn_config=self._syn_config):
            yield chunk.audio_float_array.astype(np.float32)
