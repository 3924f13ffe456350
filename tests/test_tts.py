"""Piper with its graph cut at the decoder: a reply's first chunk in pieces that make the very audio
of the whole graph, at a fixed gain (the bundled voice, no fake)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voice import models
from voice.audio import rms_dbfs
from voice.tts.piper import FIRST_FRAMES, PiperSynthesizer
from voice.tts.vits_graph import find_context, split_at_decoder


@pytest.fixture(scope="module")
def voice_files():
    return models.piper_voice(None)


@pytest.fixture(scope="module")
def cut(voice_files):
    tts = PiperSynthesizer(*voice_files)
    assert tts.streams, "the bundled voice must cut at its decoder"
    return tts


@pytest.fixture(scope="module")
def piper(voice_files):
    """Piper's own voice, for the whole graph's audio."""
    from piper import PiperVoice

    return PiperVoice.load(str(voice_files[0]))


def _whole_graph(piper, tts: PiperSynthesizer, phonemes: list[str]) -> np.ndarray:
    return piper.session.run(None, tts._inputs(phonemes, noise=False))[0].reshape(-1)


@pytest.mark.parametrize("text", ["Sure,", "I'm glad to", "That sounds like a wonderful idea for the weekend."])
def test_the_pieces_of_a_soon_chunk_are_the_whole_graphs_audio(cut, piper, text):
    for phonemes in cut._voice.phonemize(text):
        whole = _whole_graph(piper, cut, phonemes)
        soon = list(cut._pieces(phonemes, FIRST_FRAMES, noise=False))
        later = list(cut._pieces(phonemes, 0, noise=False))
        assert len(later) == 1
        np.testing.assert_allclose(np.concatenate(soon), whole, atol=1e-4)
        np.testing.assert_allclose(later[0], whole, atol=1e-4)
        if whole.size > (FIRST_FRAMES + cut._context) * cut._samples_per_frame:
            assert len(soon) == 2 and soon[0].size == FIRST_FRAMES * cut._samples_per_frame


def test_a_soon_chunk_starts_with_a_short_piece_and_others_come_whole(cut):
    soon = list(cut.synthesize("That sounds like a wonderful idea for the weekend.", soon=True))
    later = list(cut.synthesize("That sounds like a wonderful idea for the weekend.", soon=False))
    assert len(soon) == 2 and soon[0].size == FIRST_FRAMES * cut._samples_per_frame
    assert len(later) == 1 and later[0].size > 10 * soon[0].size
    # Only a chunk's first sentence is asked for soon: the rest follow whole.
    assert len(list(cut.synthesize("Okay. That sounds like a wonderful idea.", soon=True))) in (2, 3)
    for piece in soon + later:
        assert piece.dtype == np.float32 and np.max(np.abs(piece)) <= 1.0


def test_the_fixed_gain_keeps_pipers_level(cut, voice_files):
    as_piper = PiperSynthesizer(*voice_files, stream=False)
    assert not as_piper.streams
    text = "The capital of France is Paris, and it is lovely in the spring."
    levels = [rms_dbfs(np.concatenate(list(t.synthesize(text)))) for t in (cut, as_piper)]
    assert abs(levels[0] - levels[1]) < 3.0, levels


def test_a_graph_with_no_decoder_does_not_cut():
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="/enc/Relu")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    assert split_at_decoder(helper.make_model(graph).SerializeToString()) is None
    assert split_at_decoder(onnx.load(str(models.piper_voice(None)[0])).SerializeToString()) is not None


@settings(max_examples=20, deadline=None)
@given(st.integers(min_value=0, max_value=6))
def test_the_context_found_is_the_decoders_reach(reach):
    """A 'decoder' whose every output frame reads `reach` frames on each side needs that context;
    one that reads the whole latent (a global mean) has none that works."""
    rng = np.random.default_rng(reach)
    z = rng.standard_normal((1, 2, 96)).astype(np.float32)

    def local(latent: np.ndarray) -> np.ndarray:  # a moving sum over 2 * reach + 1 frames, 4 samples a frame
        padded = np.pad(latent[0].sum(0), reach)
        frames = np.convolve(padded, np.ones(2 * reach + 1), mode="valid")
        return np.repeat(frames, 4)

    assert find_context(local, z, 4, candidates=tuple(range(0, 12))) == reach
    assert find_context(lambda latent: np.repeat(latent[0].sum(0) - latent.mean(), 4), z, 4) is None


@pytest.mark.slow
def test_a_cut_voice_is_kept_in_the_cache_and_read_back(voice_files, piper, tmp_path, monkeypatch):
    first = PiperSynthesizer(*voice_files, cache_dir=tmp_path)
    kept = list(tmp_path.glob("*.cut-*.npz"))
    assert first.streams and len(kept) == 1

    def no_cutting(model):  # noqa: ANN001, ANN202
        raise AssertionError("the cached cut should have been used")

    monkeypatch.setattr("voice.tts.piper.split_at_decoder", no_cutting)
    again = PiperSynthesizer(*voice_files, cache_dir=tmp_path)
    assert again.streams and (again._context, again._gain) == (first._context, first._gain)
    for phonemes in again._voice.phonemize("That sounds like a wonderful idea."):
        whole = _whole_graph(piper, again, phonemes)
        np.testing.assert_allclose(np.concatenate(list(again._pieces(phonemes, FIRST_FRAMES, noise=False))), whole,
                                   atol=1e-4)
    # Another length scale is another file: cutting again, which fails here, so Piper's own way speaks.
    fallback = PiperSynthesizer(*voice_files, cache_dir=tmp_path, length_scale=1.2)
    assert not fallback.streams and len(list(tmp_path.glob("*.cut-*.npz"))) == 1
    assert np.concatenate(list(fallback.synthesize("Okay.", soon=True))).size > 0


@pytest.mark.slow
def test_a_cache_that_cannot_be_written_still_cuts(voice_files, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")  # even root cannot make a directory under a file
    tts = PiperSynthesizer(*voice_files, cache_dir=blocker / "cache")
    assert tts.streams and blocker.is_file()


def test_a_reply_speaks_its_first_chunk_soon_and_every_sample_of_it(cut):
    """voice/response.py with SmolLM2 and the cut voice: the first chunk is asked for soon, its first
    piece goes out alone, and the pieces of each chunk are resampled as one stream, to the last
    sample (so no click where two pieces meet, and no tail lost)."""
    import threading

    from voice.audio import WIRE_RATE, StreamResampler
    from voice.llm.base import ChatMessage, GenerationOptions
    from voice.llm.llamacpp import LlamaCppChat
    from voice.response import ResponseRequest, run_response
    from voice.response_events import SpeechSegment

    class Recorded:
        """The cut voice, keeping what it yields for each chunk."""

        sample_rate, name = cut.sample_rate, cut.name

        def __init__(self) -> None:
            self.chunks: list[tuple[bool, list[np.ndarray]]] = []

        def synthesize(self, text: str, soon: bool = False):  # noqa: ANN202
            self.chunks.append((soon, []))
            for piece in cut.synthesize(text, soon=soon):
                self.chunks[-1][1].append(piece)
                yield piece

    tts, events = Recorded(), []
    request = ResponseRequest([ChatMessage("system", "You are a helpful voice assistant."),
                               ChatMessage("user", "Tell me about the moon in two sentences.")],
                              GenerationOptions(max_tokens=40, temperature=0.0))
    run_response(LlamaCppChat(models.gguf_model(None), n_ctx=512, parallel=1), tts, request, threading.Event(),
                 events.append)
    segments = [e for e in events if isinstance(e, SpeechSegment)]
    assert len(tts.chunks) >= 2 and [soon for soon, _ in tts.chunks] == [True] + [False] * (len(tts.chunks) - 1)
    assert len(tts.chunks[0][1]) == 2  # the head's 0.19 s, then the rest
    assert segments[0].text and len(segments[0].audio) < 0.2 * WIRE_RATE * 2  # PCM16: 2 bytes a sample
    heard = np.frombuffer(b"".join(bytes(s.audio) for s in segments), dtype=np.int16)
    expected = []
    for _, pieces in tts.chunks:
        resampler = StreamResampler(cut.sample_rate, WIRE_RATE)
        expected += [resampler.process(np.concatenate(pieces)), resampler.process(np.zeros(0, np.float32), last=True)]
    expected = np.clip(np.concatenate(expected), -1.0, 32767 / 32768)  # PCM16 clips resampling's overshoot
    assert heard.size == expected.size
    np.testing.assert_allclose(heard / 32768.0, expected, atol=2 / 32768)
