"""The bundled Q4_1 model runs from a Q8_0 copy of the same weights: made once, reused, and
computing the same model."""

from __future__ import annotations

import numpy as np
import pytest
from gguf import GGUFReader
from llama_cpp import Llama

from voice import models
from voice.llm.requantize import q8_0_copy

pytestmark = pytest.mark.slow

PROMPT = b"<|im_start|>user\nWould you please turn on the living room lamp?<|im_end|>\n<|im_start|>assistant\nSure, I"


def _log_probs(path) -> np.ndarray:  # noqa: ANN001
    llm = Llama(model_path=str(path), n_ctx=128, n_threads=2, logits_all=True, verbose=False)
    tokens = llm.tokenize(PROMPT, special=True)
    llm.eval(tokens)
    logits = np.array(llm.scores[: len(tokens)], dtype=np.float64)
    logits -= logits.max(axis=1, keepdims=True)
    return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))


def test_the_copy_is_made_once_and_holds_q8_0_weights(tmp_path):
    source = models.gguf_model(None)
    copy = q8_0_copy(source, tmp_path)
    assert copy.parent == tmp_path and copy.stat().st_size > source.stat().st_size
    types = {tensor.tensor_type.name for tensor in GGUFReader(str(copy)).tensors}
    assert types == {"Q8_0", "F32"}  # every Q4_1 matrix re-stored; norms stay F32
    made = copy.stat().st_mtime_ns
    assert q8_0_copy(source, tmp_path) == copy and copy.stat().st_mtime_ns == made
    assert not list(tmp_path.glob(".*.part"))


def test_the_copy_computes_the_same_model(tmp_path, monkeypatch):
    monkeypatch.setenv("VOICE_MODELS_DIR", str(tmp_path))
    source = models.gguf_model(None)
    copy = models.llama_file(source)
    assert copy != source and copy.parent == tmp_path
    original, stored = _log_probs(source), _log_probs(copy)
    assert (original.argmax(axis=1) == stored.argmax(axis=1)).mean() >= 0.9
    # Total variation between the next-token distributions: quantization noise, not another model.
    variation = 0.5 * np.abs(np.exp(original) - np.exp(stored)).sum(axis=1)
    assert variation.mean() < 0.1


def test_other_files_and_a_failed_copy_load_as_they_are(tmp_path, monkeypatch):
    other = tmp_path / "mine.gguf"
    other.write_bytes(b"")
    assert models.llama_file(other) == other
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    monkeypatch.setenv("VOICE_MODELS_DIR", str(blocked / "models"))
    source = models.gguf_model(None)
    assert models.llama_file(source) == source
